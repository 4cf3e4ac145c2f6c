//! What the process-level tests share: a fresh database, and checks of the log
//! stream against the event table.

#![allow(dead_code, unreachable_pub)]

use std::process::Child;
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use orders_nats::{LogEvent, LOG_STREAM};
use sqlx::PgPool;

/// The key the tests' services seal events under (`ORDERS_AUDIT_KEY`).
pub const AUDIT_KEY: &str = "the process tests' audit key, more than 32 bytes";

pub fn audit_key() -> orders_store::seal::AuditKey {
    orders_store::seal::AuditKey::new(AUDIT_KEY.as_bytes())
}

/// The `orders` binary away from any developer's `.env`, with none of the
/// `ORDERS_*` variables of the test's environment set.
pub fn orders() -> std::process::Command {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_orders"));
    command.current_dir(std::env::temp_dir());
    for (name, _) in std::env::vars() {
        if name.starts_with("ORDERS_") {
            command.env_remove(name);
        }
    }
    command
}

/// A fresh, migrated database; its URL and a pool on it.
pub async fn fresh_database() -> (String, PgPool) {
    orders_test_support::database::fresh_database(8).await
}

pub async fn stream_length(jetstream: &async_nats::jetstream::Context) -> u64 {
    match jetstream.get_stream(LOG_STREAM).await {
        Ok(mut stream) => stream
            .info()
            .await
            .map(|info| info.state.messages)
            .unwrap_or(0),
        Err(_) => 0,
    }
}

/// Waits until the stream holds `count` messages (or fails after `within`).
pub async fn wait_for_stream(
    jetstream: &async_nats::jetstream::Context,
    count: u64,
    within: Duration,
) {
    let deadline = Instant::now() + within;
    loop {
        let length = stream_length(jetstream).await;
        if length >= count {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the stream has {length} of {count} events after {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The stream = the event table: every event once, in log order, on its subject.
pub async fn assert_stream_is_the_table(pool: &PgPool, jetstream: &async_nats::jetstream::Context) {
    let table: Vec<(String, String, i64, String, i64)> = sqlx::query_as(
        "SELECT aggregate_type, aggregate_id, sequence, tx_id::text, global_position
           FROM events ORDER BY events.tx_id, events.global_position",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    let expected: Vec<(String, u64, i64)> = table
        .into_iter()
        .map(|(kind, id, sequence, tx, position)| {
            (
                format!("{kind}/{id}/{sequence}"),
                tx.parse().unwrap(),
                position,
            )
        })
        .collect();
    // On a cluster that just lost a node, a JetStream request may time out while the
    // stream elects a new leader: read again, from the start, for a while.
    let deadline = Instant::now() + Duration::from_secs(30);
    let streamed = loop {
        match read_stream(jetstream, expected.len()).await {
            Ok(streamed) => break streamed,
            Err(error) => {
                assert!(Instant::now() < deadline, "reading the stream: {error:#}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    assert_eq!(
        stream_length(jetstream).await,
        expected.len() as u64,
        "extra messages"
    );
    if streamed != expected {
        let first = streamed
            .iter()
            .zip(&expected)
            .position(|(got, want)| got != want);
        panic!("the stream differs from the table at index {first:?}");
    }
}

/// A service process of a test, killed (SIGKILL) when dropped, so that a failing
/// test leaves nothing running.
pub struct Service(Child);

impl Service {
    pub fn new(process: Child) -> Self {
        Self(process)
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Kills a service with SIGKILL, as a crash would.
pub fn kill(service: Service) {
    drop(service);
}

/// The first `count` messages of the log stream: event id and log position.
async fn read_stream(
    jetstream: &async_nats::jetstream::Context,
    count: usize,
) -> anyhow::Result<Vec<(String, u64, i64)>> {
    let stream = jetstream.get_stream(LOG_STREAM).await?;
    let consumer = stream
        .create_consumer(async_nats::jetstream::consumer::pull::OrderedConfig::default())
        .await?;
    let mut messages = consumer.messages().await?;
    let mut streamed = Vec::with_capacity(count);
    while streamed.len() < count {
        let message = tokio::time::timeout(Duration::from_secs(10), messages.next())
            .await?
            .ok_or_else(|| anyhow::anyhow!("the stream ended early"))??;
        let event = LogEvent::decode(
            message
                .headers
                .as_ref()
                .ok_or_else(|| anyhow::anyhow!("a message without headers"))?,
            &message.payload,
        )?;
        assert_eq!(message.subject.as_str(), event.subject()?);
        streamed.push((event.event_id(), event.tx_id, event.global_position));
    }
    Ok(streamed)
}

/// Waits until the relay has published every stored event and `worker`'s durable
/// consumer has nothing left to deliver and nothing unacknowledged: whatever the
/// worker does about the events stored so far is done. (Tests that check something
/// did *not* happen wait for this, never for a fixed time.)
pub async fn worker_caught_up(pool: &PgPool, nats_url: &str, worker: &str) {
    let jetstream = async_nats::jetstream::new(orders_nats::connect(nats_url).await.unwrap());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
            .fetch_one(pool)
            .await
            .unwrap();
        let streamed = stream_length(&jetstream).await;
        let mut consumer: async_nats::jetstream::consumer::PullConsumer = jetstream
            .get_stream(LOG_STREAM)
            .await
            .unwrap()
            .get_consumer(worker)
            .await
            .unwrap();
        let info = consumer.info().await.unwrap();
        if streamed == stored as u64 && info.num_pending == 0 && info.num_ack_pending == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the {worker} worker did not catch up: {stored} stored, {streamed} streamed, \
             {} pending, {} unacknowledged",
            info.num_pending,
            info.num_ack_pending
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
