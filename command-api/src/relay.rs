//! The relay: every stored event into the JetStream log stream, once, in commit
//! order.
//!
//! **Which order.** Events are read only from transactions below the *horizon*
//! `pg_snapshot_xmin(pg_current_snapshot())`: every transaction with a smaller id has
//! ended, and every transaction still running or yet to start has a larger one. So
//! the set of events below the horizon only grows at its end when it is ordered by
//! `(tx_id, global_position)`, and that is the order the relay publishes in. A
//! `global_position` alone is not enough: positions are taken when rows are
//! inserted, and transactions commit in another order.
//!
//! **Why an aggregate's events keep their sequence order.** The command side appends
//! each command's events with one statement in a transaction of its own, and
//! PostgreSQL gives a transaction its id at its first write. A command that appends
//! sequence n+1 has read sequence n, so n was committed before that statement ran,
//! and its transaction got its id before n+1's did.
//!
//! **Exactly once.** The relay's position is not kept anywhere but in the stream: at
//! start (and after any error) it reads the last message of the stream and resumes
//! after the event it carries, so a stream that lost its tail (JetStream flushes to
//! disk every two minutes) is healed by republishing. Every publish carries the
//! stream sequence it expects to follow (`Nats-Expected-Last-Sequence`): a relay
//! whose view of the stream is stale (another relay published meanwhile) cannot
//! append, and a retried publish is also recognised by its `Nats-Msg-Id`.
//!
//! **Never a gap skipped.** A long transaction holds the horizon back; the relay
//! waits for it, it never skips it. Our sessions end idle transactions after 5 s
//! (`idle_in_transaction_session_timeout`, see `database`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;

use async_nats::jetstream::{self, message::PublishMessage};
use futures::StreamExt as _;
use orders_nats::leader::{renewal_interval, LeaderLease};
pub use orders_nats::StreamHead;
use orders_nats::{LogEvent, LogPosition};
use sqlx::PgPool;
use tokio::sync::Notify;

/// Events below the horizon after a log position, in log order.
const EVENTS_AFTER: &str = "
SELECT aggregate_type, aggregate_id, sequence, event_type, event_version, payload::text, metadata,
       tx_id::text, global_position,
       to_char(recorded_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')
  FROM events
 WHERE (tx_id, global_position) > ($1::text::xid8, $2)
   AND tx_id < pg_snapshot_xmin(pg_current_snapshot())
 ORDER BY events.tx_id, events.global_position
 LIMIT $3";

type EventRow = (
    String,
    String,
    i64,
    String,
    String,
    String,
    serde_json::Value,
    String,
    i64,
    String,
);

fn log_event(row: EventRow) -> LogEvent {
    let (
        aggregate_type,
        aggregate_id,
        sequence,
        event_type,
        event_version,
        payload,
        metadata,
        tx_id,
        global_position,
        recorded_at,
    ) = row;
    let metadata = match metadata {
        serde_json::Value::Object(map) => map
            .into_iter()
            .map(|(key, value)| match value {
                serde_json::Value::String(text) => (key, text),
                other => (key, other.to_string()),
            })
            .collect(),
        _ => BTreeMap::new(),
    };
    LogEvent {
        aggregate_type,
        aggregate_id,
        sequence,
        event_type,
        event_version,
        tx_id: tx_id.parse().unwrap_or_default(),
        global_position,
        recorded_at,
        payload: bytes::Bytes::from(payload),
        metadata,
    }
}

/// At most `limit` events after `after`, below the horizon, in log order: what the
/// relay publishes next.
pub async fn events_after(
    pool: &PgPool,
    after: LogPosition,
    limit: i64,
) -> anyhow::Result<Vec<LogEvent>> {
    let rows: Vec<EventRow> = sqlx::query_as(EVENTS_AFTER)
        .bind(after.tx_id.to_string())
        .bind(after.global_position)
        .bind(limit)
        .fetch_all(pool)
        .await
        .context("reading events below the horizon")?;
    Ok(rows.into_iter().map(log_event).collect())
}

pub struct Relay {
    pool: PgPool,
    jetstream: jetstream::Context,
    batch_size: i64,
    /// Notified when the command side says it committed events.
    wake: Arc<Notify>,
}

/// Subscribes to the command side's wake-ups (see `event_store::RelayWaker`) and
/// turns them into notifications for [`Relay::with_wake_ups`]. Many wake-ups while
/// the relay is busy are one: the relay reads everything there is when it wakes.
pub async fn listen_for_wake_ups(client: &async_nats::Client) -> anyhow::Result<Arc<Notify>> {
    let mut subscription = client
        .subscribe(orders_nats::RELAY_WAKE_SUBJECT)
        .await
        .context("subscribing to the relay's wake-ups")?;
    let wake = Arc::new(Notify::new());
    let notify = wake.clone();
    tokio::spawn(async move {
        while subscription.next().await.is_some() {
            notify.notify_one();
        }
    });
    Ok(wake)
}

impl Relay {
    pub fn new(pool: PgPool, jetstream: jetstream::Context, batch_size: i64) -> Self {
        Self {
            pool,
            jetstream,
            batch_size: batch_size.max(1),
            wake: Arc::new(Notify::new()),
        }
    }

    /// Wakes up, when caught up, on these notifications as well as on its poll.
    pub fn with_wake_ups(mut self, wake: Arc<Notify>) -> Self {
        self.wake = wake;
        self
    }

    /// Waits for a wake-up or the next poll.
    async fn idle(&self, poll_interval: Duration) {
        tokio::select! {
            () = self.wake.notified() => {}
            () = tokio::time::sleep(poll_interval) => {}
        }
    }

    /// Reads where the stream really ends.
    pub async fn stream_head(&self) -> anyhow::Result<StreamHead> {
        orders_nats::stream_head(&self.jetstream).await
    }

    /// Publishes the next batch after `head`, pipelined, and moves `head` past what
    /// was acknowledged. Returns how many events were published (0: caught up).
    /// After an error `head` may be behind the stream: read it again.
    pub async fn step(&self, head: &mut StreamHead) -> anyhow::Result<usize> {
        let after = LogPosition {
            tx_id: head.tx_id,
            global_position: head.global_position,
        };
        let events = events_after(&self.pool, after, self.batch_size).await?;
        if events.is_empty() {
            return Ok(0);
        }
        let mut acknowledgements = Vec::with_capacity(events.len());
        for (offset, event) in events.iter().enumerate() {
            let publish = PublishMessage::build()
                .headers(event.headers())
                .expected_last_sequence(head.stream_sequence + offset as u64)
                .payload(event.body());
            let subject = event
                .subject()
                .context("an event id that cannot be a subject")?;
            acknowledgements.push(
                self.jetstream
                    .send_publish(subject, publish)
                    .await
                    .context("publishing to the log stream")?,
            );
        }
        let published = events.len();
        for (event, acknowledgement) in events.iter().zip(acknowledgements) {
            let ack = acknowledgement
                .await
                .with_context(|| format!("publishing event {}", event.event_id()))?;
            *head = StreamHead {
                stream_sequence: ack.sequence,
                tx_id: event.tx_id,
                global_position: event.global_position,
            };
        }
        Ok(published)
    }

    /// Relays until `shutdown` resolves: catches up in batches, then polls.
    pub async fn run(
        &self,
        poll_interval: Duration,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> anyhow::Result<()> {
        tokio::pin!(shutdown);
        let mut head = self.stream_head().await?;
        loop {
            let stepped = tokio::select! {
                () = &mut shutdown => return Ok(()),
                result = self.step(&mut head) => result,
            };
            if self.pause_after(stepped, &mut head, poll_interval).await {
                tokio::select! {
                    () = &mut shutdown => return Ok(()),
                    () = self.idle(poll_interval) => {}
                }
            }
        }
    }

    /// After a step: whether to wait before the next one (caught up, or failed; after a
    /// failure `head` is read again from the stream, which is the truth).
    async fn pause_after(
        &self,
        stepped: anyhow::Result<usize>,
        head: &mut StreamHead,
        poll_interval: Duration,
    ) -> bool {
        match stepped {
            Ok(0) => true,
            Ok(_) => false,
            Err(error) => {
                tracing::warn!(
                    error = format!("{error:#}"),
                    "relay step failed; resuming from the stream's head"
                );
                tokio::time::sleep(poll_interval).await;
                match self.stream_head().await {
                    Ok(fresh) => *head = fresh,
                    Err(error) => tracing::warn!(
                        error = format!("{error:#}"),
                        "reading the stream's head failed"
                    ),
                }
                false
            }
        }
    }

    /// Relays while this instance holds the relay's leader lease, and stands by
    /// otherwise, until `shutdown` resolves (then gives the lease up).
    pub async fn run_as_leader(
        &self,
        mut lease: LeaderLease,
        lease_duration: Duration,
        poll_interval: Duration,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> anyhow::Result<()> {
        tokio::pin!(shutdown);
        let renew_every = renewal_interval(lease_duration);
        loop {
            // Standing by.
            loop {
                match lease.try_acquire().await {
                    Ok(true) => break,
                    Ok(false) => {}
                    Err(error) => tracing::warn!(
                        error = format!("{error:#}"),
                        "contending for the relay's lease failed"
                    ),
                }
                tokio::select! {
                    () = &mut shutdown => return Ok(()),
                    () = tokio::time::sleep(renew_every) => {}
                }
            }
            // Leading: resume from what the stream holds, whoever wrote it.
            let mut head = match self.stream_head().await {
                Ok(head) => head,
                Err(error) => {
                    tracing::warn!(
                        error = format!("{error:#}"),
                        "reading the stream's head failed"
                    );
                    lease.release().await;
                    continue;
                }
            };
            let mut renew_at = tokio::time::Instant::now() + renew_every;
            loop {
                if tokio::time::Instant::now() >= renew_at {
                    match lease.renew().await {
                        Ok(true) => renew_at = tokio::time::Instant::now() + renew_every,
                        Ok(false) => break,
                        Err(error) => {
                            tracing::warn!(
                                error = format!("{error:#}"),
                                "renewing the relay's lease failed"
                            );
                            break;
                        }
                    }
                }
                let stepped = tokio::select! {
                    () = &mut shutdown => {
                        lease.release().await;
                        return Ok(());
                    }
                    result = self.step(&mut head) => result,
                };
                if self.pause_after(stepped, &mut head, poll_interval).await {
                    tokio::select! {
                        () = &mut shutdown => {
                            lease.release().await;
                            return Ok(());
                        }
                        () = self.idle(poll_interval) => {}
                    }
                }
            }
        }
    }
}
