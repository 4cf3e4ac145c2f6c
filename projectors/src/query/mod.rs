//! What the API (and next, the console's pages) reads from the views: one module of
//! query functions per view, with the row types they answer, and the wait of
//! read-your-writes. Every read of a user's data is scoped to its owner in SQL, so
//! another user's order is simply not found. Callers use this module, never the
//! views' own modules.

use std::time::Duration;

use orders_nats::LogPosition;
use sqlx::PgPool;

use crate::checkpoint::{self, Generation};
use crate::View;

pub mod admin_overview;
pub mod orders;
pub mod price_history;
pub mod users;

/// How often a read waiting for its view polls the view's checkpoint.
const POLL: Duration = Duration::from_millis(5);

/// Read-your-writes: waits until `view` has applied the log up to `position`, at most
/// `timeout`. `Ok(false)`: the view is still behind (the answer is stale).
pub async fn wait_for(
    pool: &PgPool,
    view: View,
    position: LogPosition,
    timeout: Duration,
) -> sqlx::Result<bool> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let applied = checkpoint::read(pool, view, Generation::Live)
            .await?
            .map(|checkpoint| checkpoint.position);
        if applied.is_some_and(|applied| applied >= position) {
            return Ok(true);
        }
        let now = tokio::time::Instant::now();
        if now >= deadline {
            return Ok(false);
        }
        tokio::time::sleep(POLL.min(deadline - now)).await;
    }
}
