//! Waiting in a test for something another task or process does.

use std::future::Future;
use std::time::{Duration, Instant};

/// Asks `probe` every 20 ms until it answers `Some`, and returns that; panics naming
/// `what` if `within` passes first.
pub async fn eventually<T, F, Fut>(within: Duration, what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(found) = probe().await {
            return found;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not within {} s",
            within.as_secs_f64()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
