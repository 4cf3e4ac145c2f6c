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
//! append, and a retried publish is also recognised by its `Nats-Msg-Id`. After a
//! relay reads the stream's head, its next batch's first message is acknowledged
//! before the rest is sent, so a relay with a stale view is refused at its first
//! message and appends nothing at all.
//!
//! **The audit chain.** Before a batch is published, each event's link in the
//! audit chain (`audit_chain`, see that module) is recorded at the stream sequence
//! it will get; after the batch is acknowledged, the chain's head is checkpointed
//! in the key-value bucket `ORDERS_AUDIT`. A republished event has the same link.
//!
//! **Never a gap skipped.** A long transaction holds the horizon back; the relay
//! waits for it, it never skips it. Our sessions end idle transactions after 5 s
//! (`idle_in_transaction_session_timeout`, see `database`).

pub mod audit_chain;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;

use async_nats::jetstream::{self, message::PublishMessage};
use futures::StreamExt as _;
use orders_nats::leader::LeaderLease;
pub use orders_nats::StreamHead;
use orders_nats::{LogEvent, LogPosition};

use crate::audit_chain::{ChainHead, ChainLink};
use orders_store::seal::{self, EventDigests, LogPlace, GENESIS};
use orders_store::stored_event::{StoredEventRow, STORED_EVENT_COLUMNS};
use sqlx::PgPool;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Events below the horizon after a log position, in log order.
fn events_after_statement() -> &'static str {
    static STATEMENT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    STATEMENT.get_or_init(|| {
        format!(
            "SELECT {STORED_EVENT_COLUMNS}
               FROM events
              WHERE (tx_id, global_position) > ($1::text::xid8, $2)
                AND tx_id < pg_snapshot_xmin(pg_current_snapshot())
              ORDER BY events.tx_id, events.global_position
              LIMIT $3"
        )
    })
}

/// An event to relay, with what its link in the audit chain needs.
struct Relayable {
    event: LogEvent,
    digests: EventDigests,
    seal: Option<Vec<u8>>,
    actor: String,
}

fn relayable(row: StoredEventRow, scratch: &mut Vec<u8>) -> anyhow::Result<Relayable> {
    let payload_value = row
        .payload_json()
        .context("a stored payload that is not JSON")?;
    let digests = row.digests(&payload_value, scratch);
    let actor = row.actor().to_owned();
    let StoredEventRow {
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
        seal,
    } = row;
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
    let event = LogEvent {
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
    };
    Ok(Relayable {
        event,
        digests,
        seal,
        actor,
    })
}

async fn relayables_after(
    pool: &PgPool,
    after: LogPosition,
    limit: i64,
) -> anyhow::Result<Vec<Relayable>> {
    let rows: Vec<StoredEventRow> = sqlx::query_as(events_after_statement())
        .bind(after.tx_id.to_string())
        .bind(after.global_position)
        .bind(limit)
        .fetch_all(pool)
        .await
        .context("reading events below the horizon")?;
    let mut scratch = Vec::with_capacity(1024);
    rows.into_iter()
        .map(|row| relayable(row, &mut scratch))
        .collect()
}

/// The links of `batch`, which follows the link `after` whose digest is `previous`.
fn links_after(mut previous: [u8; 32], after: u64, batch: &[Relayable]) -> Vec<ChainLink> {
    batch
        .iter()
        .zip(1..)
        .map(|(relayable, offset)| {
            let event = &relayable.event;
            let digest = seal::chain_digest(
                &previous,
                &relayable.digests,
                relayable.seal.as_deref(),
                LogPlace {
                    global_position: event.global_position,
                    recorded_at: &event.recorded_at,
                },
            );
            previous = digest;
            ChainLink {
                chain_position: i64::try_from(after + offset).unwrap_or(i64::MAX),
                global_position: event.global_position,
                aggregate_type: event.aggregate_type.clone(),
                aggregate_id: event.aggregate_id.clone(),
                sequence: event.sequence,
                actor: relayable.actor.clone(),
                recorded_at: event.recorded_at.clone(),
                digests: relayable.digests,
                digest,
            }
        })
        .collect()
}

/// At most `limit` events after `after`, below the horizon, in log order: what the
/// relay publishes next.
pub async fn events_after(
    pool: &PgPool,
    after: LogPosition,
    limit: i64,
) -> anyhow::Result<Vec<LogEvent>> {
    Ok(relayables_after(pool, after, limit)
        .await?
        .into_iter()
        .map(|relayable| relayable.event)
        .collect())
}

pub struct Relay {
    pool: PgPool,
    jetstream: jetstream::Context,
    batch_size: i64,
    /// Notified when the command side says it committed events.
    wake: Arc<Notify>,
    /// Where the audit chain's head is checkpointed (opened at first use).
    heads: tokio::sync::OnceCell<jetstream::kv::Store>,
    /// A head published but not yet checkpointed (the checkpoint failed).
    unsaved_head: std::sync::Mutex<Option<ChainHead>>,
    /// Whether this relay's last batch was acknowledged whole since it last read the
    /// stream's head: its view of the stream is then the stream's own, and it
    /// pipelines whole batches; otherwise it sends a batch's first message alone.
    view_confirmed: std::sync::atomic::AtomicBool,
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
            heads: tokio::sync::OnceCell::new(),
            unsaved_head: std::sync::Mutex::new(None),
            view_confirmed: std::sync::atomic::AtomicBool::new(false),
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
        self.view_confirmed
            .store(false, std::sync::atomic::Ordering::Relaxed);
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
        let batch = relayables_after(&self.pool, after, self.batch_size).await?;
        if batch.is_empty() {
            self.save_unsaved_head().await?;
            return Ok(0);
        }
        // The links first: a link never lags its message.
        let previous = match audit_chain::link_digest(&self.pool, head.stream_sequence).await? {
            Some(digest) => digest,
            None => self.chain_what_was_relayed(head.stream_sequence).await?,
        };
        let links = links_after(previous, head.stream_sequence, &batch);
        audit_chain::record_links(&self.pool, &links).await?;
        let events: Vec<&LogEvent> = batch.iter().map(|relayable| &relayable.event).collect();
        let published = events.len();
        // A view of the stream just read (at start, on leading again, after an
        // error) may be stale: the batch's first message then goes alone, and its
        // acknowledgement proves the view before the rest is pipelined. Sent
        // together, a stale relay's first messages would be refused while a later
        // one, whose expected sequence had become the stream's end meanwhile, was
        // appended (the right event in the right place, since every relay reads one
        // fixed order, but behind the back of the relay that leads). Once a batch
        // was acknowledged whole, whole batches are pipelined: the extra round trip
        // per batch doubled the store-to-stream lag at 1,000 events/s.
        let confirmed = self
            .view_confirmed
            .load(std::sync::atomic::Ordering::Relaxed);
        let first_alone = if confirmed || events.len() == 1 {
            events.len()
        } else {
            1
        };
        let mut acknowledged = Ok(());
        for (round, range) in [(0, 0..first_alone), (1, first_alone..events.len())] {
            if round == 1 && acknowledged.is_err() {
                break;
            }
            let mut acknowledgements = Vec::with_capacity(range.len());
            for offset in range.clone() {
                let event = events[offset];
                let publish = PublishMessage::build()
                    .headers(event.headers())
                    .expected_last_sequence(head.stream_sequence + (offset - range.start) as u64)
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
            for (offset, acknowledgement) in range.zip(acknowledgements) {
                let event = events[offset];
                match acknowledgement.await {
                    Ok(ack) => {
                        *head = StreamHead {
                            stream_sequence: ack.sequence,
                            tx_id: event.tx_id,
                            global_position: event.global_position,
                        };
                        *self.unsaved_head.lock().expect("head lock poisoned") =
                            Some(ChainHead::of(&links[offset]));
                    }
                    Err(error) => {
                        acknowledged = Err(anyhow::Error::new(error)
                            .context(format!("publishing event {}", event.event_id())));
                        break;
                    }
                }
            }
        }
        self.view_confirmed
            .store(acknowledged.is_ok(), std::sync::atomic::Ordering::Relaxed);
        // Whatever was acknowledged is checkpointed, even when the rest failed.
        let saved = self.save_unsaved_head().await;
        acknowledged?;
        saved?;
        Ok(published)
    }

    /// The stream holds `relayed` messages but the chain has no link for the last:
    /// either the log was relayed before the chain existed (no link and no
    /// checkpoint at all), and the chain is built now over those events, in the
    /// order they were relayed, or links were removed, and the relay stops rather
    /// than write a new chain over them. Returns the digest of link `relayed`.
    async fn chain_what_was_relayed(&self, relayed: u64) -> anyhow::Result<[u8; 32]> {
        let store = self
            .heads
            .get_or_try_init(|| audit_chain::head_store(&self.jetstream))
            .await?;
        if audit_chain::has_links(&self.pool).await?
            || audit_chain::read_checkpoint(store).await?.is_some()
        {
            anyhow::bail!(
                "the audit chain has no link for stream sequence {relayed}, the last event in \
                 the log stream, though it was chained before: links were removed; the relay \
                 stops here (run `orders audit verify`)"
            );
        }
        tracing::warn!(
            relayed,
            "the log was relayed before the audit chain existed: chaining those events first"
        );
        let mut previous = GENESIS;
        let mut chained = 0;
        let mut after = LogPosition::default();
        let mut last_event = String::new();
        while chained < relayed {
            let limit = (relayed - chained).min(self.batch_size as u64);
            let batch = relayables_after(&self.pool, after, limit as i64).await?;
            let Some(last) = batch.last() else {
                anyhow::bail!(
                    "the log stream holds {relayed} events but only {chained} are below the horizon"
                );
            };
            after = LogPosition {
                tx_id: last.event.tx_id,
                global_position: last.event.global_position,
            };
            last_event = last.event.event_id();
            let links = links_after(previous, chained, &batch);
            audit_chain::record_links(&self.pool, &links).await?;
            previous = links.last().map_or(previous, |link| link.digest);
            chained += batch.len() as u64;
        }
        let last = audit_chain::ChainHead {
            chain_position: i64::try_from(relayed).unwrap_or(i64::MAX),
            global_position: after.global_position,
            event_id: last_event,
            digest: seal::hex(&previous),
        };
        *self.unsaved_head.lock().expect("head lock poisoned") = Some(last);
        Ok(previous)
    }

    /// Checkpoints the chain's head of what was last published, if not yet done.
    async fn save_unsaved_head(&self) -> anyhow::Result<()> {
        let unsaved = self
            .unsaved_head
            .lock()
            .expect("head lock poisoned")
            .clone();
        let Some(chain_head) = unsaved else {
            return Ok(());
        };
        let store = self
            .heads
            .get_or_try_init(|| audit_chain::head_store(&self.jetstream))
            .await?;
        audit_chain::checkpoint(store, &chain_head).await?;
        let mut unsaved = self.unsaved_head.lock().expect("head lock poisoned");
        if unsaved.as_ref() == Some(&chain_head) {
            *unsaved = None;
        }
        Ok(())
    }

    /// Relays until `shutdown` is cancelled: catches up in batches, then polls.
    pub async fn run(
        &self,
        poll_interval: Duration,
        shutdown: CancellationToken,
    ) -> anyhow::Result<()> {
        tokio::select! {
            () = shutdown.cancelled() => Ok(()),
            never = self.relay_forever(poll_interval) => never,
        }
    }

    /// Relays from where the stream ends, for as long as it is not dropped.
    async fn relay_forever(&self, poll_interval: Duration) -> anyhow::Result<()> {
        let mut head = self.stream_head().await?;
        loop {
            let stepped = self.step(&mut head).await;
            if self.pause_after(stepped, &mut head, poll_interval).await {
                self.idle(poll_interval).await;
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
    /// otherwise, until `shutdown` is cancelled (then gives the lease up): the shared
    /// leader loop (`orders_nats::leader::lead`). A relay dropped in the middle of a
    /// batch, when its lease is lost, leaves nothing wrong behind: the stream is the
    /// truth, and a stale relay cannot append.
    pub async fn run_as_leader(
        &self,
        lease: LeaderLease,
        lease_duration: Duration,
        poll_interval: Duration,
        shutdown: CancellationToken,
    ) -> anyhow::Result<()> {
        orders_nats::leader::lead(lease, lease_duration, shutdown, || async {
            // Leading (again): resume from what the stream holds, whoever wrote it. A
            // head this instance could not checkpoint while it led before is stale.
            *self.unsaved_head.lock().expect("head lock poisoned") = None;
            self.relay_forever(poll_interval).await
        })
        .await
    }
}
