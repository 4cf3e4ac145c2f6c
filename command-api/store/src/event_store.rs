//! The event store: cqrs-es's persisted event store over postgres-es's `events`
//! table, with one change in how events are written.
//!
//! postgres-es loads an aggregate with one `SELECT` and we keep that. It writes with
//! `BEGIN`, one `INSERT` per event and `COMMIT`, and cannot tell where in the log the
//! events landed. We write all of a command's events with a single `INSERT ...
//! SELECT FROM UNNEST(...) RETURNING`: one statement is one atomic transaction, so a
//! command costs one round trip to commit instead of three, and the same statement
//! answers the log position the `Orders-Position` header needs. The table, its
//! columns and the conflict semantics (any unique violation is an
//! `AggregateConflict`) are exactly postgres-es's.
//!
//! Aggregate streams are kept short, except two: an order checked every hour for
//! years gathers a price change (and alerts) for every change of its price, and a
//! product a reservation (and its release or shipping) for every purchase of it.
//! Orders and products are therefore loaded from a snapshot of our own plus the
//! events after it, in one statement (`LOAD_WITH_SNAPSHOT`). cqrs-es's snapshot *writing* is never used (its commit
//! re-applies events the sink already applied and would store a corrupt state, see
//! PITFALLS); only its loading path, which is sound: the state at sequence S plus the
//! events after S. Snapshots are written here, from a state just loaded (exact: the
//! events up to S never change), after a load that had to apply at least
//! [`SNAPSHOT_AFTER_EVENTS`] events. They are keyed by a fingerprint of what `apply`
//! makes of a fixed history ([`order_snapshot_version`]), so code that changes the
//! state or `apply` never reads a snapshot taken by older code. Deleting every row
//! of `aggregate_snapshots` is always safe.
//!
//! Every event is written with its seal (`crate::seal`: HMAC-SHA-256 under
//! `ORDERS_AUDIT_KEY` over a canonical form of the event), computed here from what
//! cqrs-es serialised, in the same statement as the event: an event in the table
//! without a seal that verifies was not written by this code.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use cqrs_es::persist::{
    PersistedEventRepository, PersistedEventStore, PersistenceError, ReplayStream, SerializedEvent,
    SerializedSnapshot,
};
use cqrs_es::{Aggregate, AggregateError, CqrsFramework, DomainEvent as _, EventStore as _};
use orders_domain::ids::UserId;
use orders_domain::order::{Order, OrderCommand, OrderError};
use orders_domain::price_check::PriceCheck;
use orders_domain::product::Product;
use orders_domain::purchase::Purchase;
use orders_domain::user::{User, UserCommand, UserError};
use postgres_es::PostgresEventRepository;
use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

use crate::seal::{AuditKey, EventContent};
use crate::statements::{
    Bound, INSERT_EVENTS, INSERT_GUARDED_PLACEMENT, INSERT_ORDER_EVENTS, INSERT_PRICE_CHECK_EVENTS,
    INSERT_PURCHASE_EVENTS, INSERT_USER_EVENTS,
};
use crate::writer_connections::{leaves_connection_usable, WriterConnections};

/// Who caused a command and why: written into the metadata of every event it stores.
#[derive(Debug, Clone)]
pub struct CommandMetadata {
    /// `user:<id>`, `admin:<id> for user:<id>`, `system:<component>` or `cli:<user>@<host>`.
    pub actor: String,
    /// One per incoming request or scheduled job, carried into everything it causes.
    pub correlation_id: Uuid,
    /// What caused these events: the HTTP request or CLI invocation (its request id),
    /// the scheduled job (its id), or, for a worker, the event it acted on (its id
    /// `<aggregate_type>/<aggregate_id>/<sequence>`), so an audit trace can follow
    /// causes from event to event.
    pub causation_id: String,
    /// The HTTP request (or CLI invocation) that carried the command.
    pub request_id: Uuid,
    /// `Idempotency-Key` of `POST /orders`; indexed, so a retry stores nothing new.
    pub idempotency_key: Option<String>,
}

impl CommandMetadata {
    /// The metadata of a command that starts something of its own (a scheduled
    /// job, an operator's CLI invocation, a test's setup): one new id as its
    /// correlation, cause and request.
    pub fn new_job(actor: impl Into<String>) -> Self {
        let job = Uuid::now_v7();
        Self {
            actor: actor.into(),
            correlation_id: job,
            causation_id: job.to_string(),
            request_id: job,
            idempotency_key: None,
        }
    }

    fn to_map(&self) -> HashMap<String, String> {
        let mut map = HashMap::with_capacity(5);
        map.insert("actor".to_owned(), self.actor.clone());
        map.insert("correlation_id".to_owned(), self.correlation_id.to_string());
        map.insert("causation_id".to_owned(), self.causation_id.clone());
        map.insert("request_id".to_owned(), self.request_id.to_string());
        if let Some(key) = &self.idempotency_key {
            map.insert("idempotency_key".to_owned(), key.clone());
        }
        map
    }
}

pub use orders_nats::{InvalidLogPosition, LogPosition};

/// What a command did to the log.
#[derive(Debug, Clone, Copy)]
pub struct CommandReceipt {
    /// The place of the last event the command stored, or, when it stored none
    /// (an idempotent repeat), of the aggregate's last event.
    pub position: Option<LogPosition>,
    /// How many events the command stored.
    pub events_stored: usize,
    /// For a guarded placement: the owner's active orders after it.
    pub owner_active_orders: Option<u32>,
}

/// The precondition of a placement: its owner's `placement_guards` row takes the new
/// order (at most 100, by its CHECK) and the owner is not deactivated. The append and
/// the guard's update are one statement.
#[derive(Debug, Clone, Copy)]
pub struct PlacementGuard {
    pub owner: UserId,
    /// The credentials version the caller's access token names (`None`: a console
    /// session): the guard refuses the placement when the owner's is another.
    pub credentials_version: Option<u32>,
}

/// What `persist` wrote: the last position, how many events, the owner's count.
#[derive(Debug, Clone, Copy)]
struct Written {
    position: LogPosition,
    events: usize,
    owner_active_orders: Option<u32>,
}

/// A load that applied at least this many events after its snapshot (or from the
/// start) writes a new snapshot.
pub const SNAPSHOT_AFTER_EVENTS: usize = 64;

/// The snapshot of an order (or product) and the events after it, in one statement: a first row
/// with a null `event_type` when there is a snapshot (its state in `payload`), then
/// the events after it, in order.
const LOAD_WITH_SNAPSHOT: &str = "
WITH snapshot AS (
    SELECT sequence, state FROM aggregate_snapshots
     WHERE aggregate_type = $1 AND aggregate_id = $2 AND state_version = $3
)
SELECT NULL::text AS event_type, NULL::text AS event_version, sequence, state AS payload,
       NULL::jsonb AS metadata
  FROM snapshot
UNION ALL
(SELECT event_type, event_version, sequence, payload, metadata FROM events
  WHERE aggregate_type = $1 AND aggregate_id = $2
    AND sequence > COALESCE((SELECT sequence FROM snapshot), 0)
  ORDER BY sequence)";

/// A row of [`LOAD_WITH_SNAPSHOT`]: event type and version (both null for the snapshot),
/// sequence, payload (or state), metadata.
type LoadWithSnapshotRow = (Option<String>, Option<String>, i64, Value, Option<Value>);

/// A newer snapshot replaces an older one, never the reverse.
const SAVE_SNAPSHOT: &str = "
INSERT INTO aggregate_snapshots (aggregate_type, aggregate_id, sequence, state_version, state)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (aggregate_type, aggregate_id) DO UPDATE
   SET sequence = excluded.sequence, state_version = excluded.state_version,
       state = excluded.state, taken_at = now()
 WHERE aggregate_snapshots.sequence < excluded.sequence
    OR aggregate_snapshots.state_version <> excluded.state_version";

/// The version snapshots of orders are stored and read under: a digest of the state
/// [`Order::fingerprint_history`] folds into (its serialised form), so any change to
/// the state's fields or to `apply` gives another version.
pub fn order_snapshot_version() -> &'static str {
    static VERSION: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    VERSION.get_or_init(|| fingerprint::<Order>("order-snapshot/1", Order::fingerprint_history()))
}

/// The version snapshots of products are stored and read under (as
/// [`order_snapshot_version`], from [`Product::fingerprint_history`]).
pub fn product_snapshot_version() -> &'static str {
    static VERSION: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    VERSION.get_or_init(|| {
        fingerprint::<Product>("product-snapshot/1", Product::fingerprint_history())
    })
}

/// The snapshot version of an aggregate type that is loaded from snapshots: orders
/// (a price change per change of price, for years) and products (a reservation,
/// and its release or shipping, per purchase). The others' streams stay short.
fn snapshot_version(aggregate_type: &str) -> Option<&'static str> {
    match aggregate_type {
        Order::TYPE => Some(order_snapshot_version()),
        Product::TYPE => Some(product_snapshot_version()),
        _ => None,
    }
}

fn fingerprint<A: Aggregate>(label: &str, history: Vec<A::Event>) -> String {
    use sha2::Digest as _;
    let mut aggregate = A::default();
    for event in history {
        aggregate.apply(event);
    }
    let state = serde_json::to_string(&aggregate).expect("an aggregate serialises");
    let digest = sha2::Sha256::digest(format!("{label}|{state}").as_bytes());
    digest
        .iter()
        .take(12)
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// What a load found, shared between the repository (which reads) and the event
/// store (which decides whether to write a snapshot).
#[derive(Debug, Default)]
struct LoadedStream {
    /// The events read after the snapshot (or from the start), kept by
    /// `get_snapshot` for cqrs-es's following `get_last_events`.
    tail: Option<(usize, Vec<SerializedEvent>)>,
    /// How many events the load applied after its snapshot.
    applied: usize,
}

/// Access to the event store for commands and for loading aggregates.
#[derive(Clone)]
pub struct EventStore {
    pool: PgPool,
    loader: Arc<PostgresEventRepository>,
    writers: Arc<WriterConnections>,
    relay_waker: Option<RelayWaker>,
    /// Whether orders load from (and write) snapshots; off only to measure what they
    /// save.
    snapshots: bool,
    /// Seals every event written (`ORDERS_AUDIT_KEY`).
    key: AuditKey,
}

/// Tells the relay, after a commit, that there is something to relay, so that it
/// does not wait for its next poll: a core NATS message on [`RELAY_WAKE_SUBJECT`],
/// sent after the event transaction (never inside it) and lost without harm (the
/// relay polls anyway). A command only raises a flag, which never blocks it (NATS may
/// be away); a task of the waker's own sends one message per raised flag, so a burst
/// of commits is one wake-up.
///
/// [`RELAY_WAKE_SUBJECT`]: orders_nats::RELAY_WAKE_SUBJECT
#[derive(Debug, Clone)]
pub struct RelayWaker {
    /// Holds at most one raised flag.
    flag: tokio::sync::mpsc::Sender<()>,
}

impl RelayWaker {
    /// Starts the sending task (on the current Tokio runtime); it ends when every
    /// copy of the waker is gone.
    pub fn new(client: async_nats::Client) -> Self {
        let (flag, mut raised) = tokio::sync::mpsc::channel(1);
        tokio::spawn(async move {
            while raised.recv().await.is_some() {
                if let Err(error) = client
                    .publish(orders_nats::RELAY_WAKE_SUBJECT, bytes::Bytes::new())
                    .await
                {
                    tracing::debug!(%error, "could not wake the relay; it will poll");
                }
            }
        });
        Self { flag }
    }

    pub fn wake(&self) {
        // Full: a wake-up is already on its way, and this commit will be in what it reads.
        let _ = self.flag.try_send(());
    }
}

impl EventStore {
    /// The event store on `pool`, sealing every event it writes under `key`.
    pub fn new(pool: PgPool, key: AuditKey) -> Self {
        let writers = WriterConnections::new(
            (*pool.connect_options()).clone(),
            pool.options().get_max_connections(),
        );
        Self {
            loader: Arc::new(PostgresEventRepository::new(pool.clone())),
            writers: Arc::new(writers),
            pool,
            relay_waker: None,
            snapshots: true,
            key,
        }
    }

    /// Wakes the relay after every command that stored events.
    pub fn with_relay_waker(mut self, waker: Option<RelayWaker>) -> Self {
        self.relay_waker = waker;
        self
    }

    /// Orders load from every event, without snapshots (for benchmarks).
    pub fn without_snapshots(mut self) -> Self {
        self.snapshots = false;
        self
    }

    fn snapshots_of<A: Aggregate>(&self) -> bool {
        self.snapshots && snapshot_version(A::TYPE).is_some()
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Connections for the hot statements of the command path (see
    /// `writer_connections`).
    pub fn writers(&self) -> &WriterConnections {
        &self.writers
    }

    /// Closes every connection (at shutdown).
    pub async fn close(&self) {
        self.writers.close().await;
        self.pool.close().await;
    }

    fn persisted_store<A: Aggregate>(
        &self,
        receipt: Arc<Mutex<Option<Written>>>,
        loaded: Arc<Mutex<LoadedStream>>,
        stream: Stream,
        extras: WriteExtras,
    ) -> PersistedEventStore<OrdersEventRepository, A> {
        let repository = self.repository(receipt, loaded, stream, extras);
        let store = if self.snapshots_of::<A>() {
            // cqrs-es's loading from a snapshot; never its snapshot writing (the
            // size is never reached, and `persist` ignores an update anyway).
            PersistedEventStore::new_snapshot_store(repository, usize::MAX)
        } else {
            PersistedEventStore::new_event_store(repository)
        };
        store.with_upcasters(orders_domain::upcasting::event_upcasters())
    }

    fn repository(
        &self,
        receipt: Arc<Mutex<Option<Written>>>,
        loaded: Arc<Mutex<LoadedStream>>,
        stream: Stream,
        extras: WriteExtras,
    ) -> OrdersEventRepository {
        OrdersEventRepository {
            writers: self.writers.clone(),
            loader: self.loader.clone(),
            pool: self.pool.clone(),
            loaded,
            receipt,
            stream,
            guard: extras.guard,
            password_hash: extras.password_hash,
            key: self.key.clone(),
        }
    }

    /// Loads an aggregate and the sequence number of its last event (0 when none).
    pub async fn load<A: Aggregate>(
        &self,
        aggregate_id: &str,
    ) -> Result<(A, usize), AggregateError<A::Error>> {
        let loaded = Arc::new(Mutex::new(LoadedStream::default()));
        let store = self.persisted_store::<A>(
            Arc::default(),
            loaded.clone(),
            Stream::Existing,
            WriteExtras::default(),
        );
        let context = store.load_aggregate(aggregate_id).await?;
        let applied = loaded.lock().expect("load lock poisoned").applied;
        if self.snapshots_of::<A>() && applied >= SNAPSHOT_AFTER_EVENTS {
            self.save_snapshot_in_background::<A>(
                aggregate_id,
                &context.aggregate,
                context.current_sequence,
            );
        }
        Ok((context.aggregate, context.current_sequence))
    }

    /// Stores `state` as the snapshot of an order at `sequence`, after the caller
    /// has its answer. Best effort: a failure only makes the next load longer.
    fn save_snapshot_in_background<A: Aggregate>(
        &self,
        aggregate_id: &str,
        state: &A,
        sequence: usize,
    ) {
        let state = match serde_json::to_value(state) {
            Ok(state) => state,
            Err(error) => {
                tracing::warn!(%error, aggregate_id, "could not serialise a snapshot");
                return;
            }
        };
        let Some(version) = snapshot_version(A::TYPE) else {
            return;
        };
        let pool = self.pool.clone();
        let aggregate_id = aggregate_id.to_owned();
        tokio::spawn(async move {
            let saved = sqlx::query(SAVE_SNAPSHOT)
                .bind(A::TYPE)
                .bind(&aggregate_id)
                .bind(i64::try_from(sequence).unwrap_or(i64::MAX))
                .bind(version)
                .bind(state)
                .execute(&pool)
                .await;
            if let Err(error) = saved {
                tracing::warn!(%error, aggregate_id, "could not store a snapshot");
            }
        });
    }

    /// Runs a command: loads the aggregate, lets it decide, stores the events it
    /// produced together with `metadata`.
    pub async fn execute<A>(
        &self,
        aggregate_id: &str,
        command: A::Command,
        metadata: &CommandMetadata,
    ) -> Result<CommandReceipt, AggregateError<A::Error>>
    where
        A: Aggregate<Services = ()>,
    {
        self.run::<A>(
            aggregate_id,
            command,
            metadata,
            Stream::Existing,
            WriteExtras::default(),
        )
        .await
    }

    /// Runs a command on an aggregate whose id the caller has just minted (a UUID
    /// v7 nobody else can know yet): its stream is empty, so it is not read. Safe
    /// even if the id were not new: the first event has sequence 1, and the primary
    /// key refuses a second one (`AggregateConflict`).
    pub async fn execute_on_new<A>(
        &self,
        aggregate_id: &str,
        command: A::Command,
        metadata: &CommandMetadata,
    ) -> Result<CommandReceipt, AggregateError<A::Error>>
    where
        A: Aggregate<Services = ()>,
    {
        self.run::<A>(
            aggregate_id,
            command,
            metadata,
            Stream::New,
            WriteExtras::default(),
        )
        .await
    }

    /// Runs a user command that sets the password (`Register` on a new user id,
    /// `ChangePassword`): the hash is stored with the user's credentials by the
    /// statement that appends the event, never in the event.
    pub async fn execute_with_password(
        &self,
        user_id: &str,
        command: UserCommand,
        metadata: &CommandMetadata,
        password_hash: String,
    ) -> Result<CommandReceipt, AggregateError<UserError>> {
        let stream = if matches!(command, UserCommand::Register { .. }) {
            Stream::New
        } else {
            Stream::Existing
        };
        let extras = WriteExtras {
            guard: None,
            password_hash: Some(password_hash),
        };
        self.run::<User>(user_id, command, metadata, stream, extras)
            .await
    }

    /// Places an order (a new aggregate, as `execute_on_new`) only if its owner's
    /// placement guard admits it (not deactivated, fewer than 100 active orders);
    /// otherwise nothing is stored and the answer is `AggregateConflict`.
    pub async fn execute_placement(
        &self,
        order_id: &str,
        command: OrderCommand,
        metadata: &CommandMetadata,
        guard: PlacementGuard,
    ) -> Result<CommandReceipt, AggregateError<OrderError>> {
        let extras = WriteExtras {
            guard: Some(guard),
            password_hash: None,
        };
        self.run::<Order>(order_id, command, metadata, Stream::New, extras)
            .await
    }

    async fn run<A>(
        &self,
        aggregate_id: &str,
        command: A::Command,
        metadata: &CommandMetadata,
        stream: Stream,
        extras: WriteExtras,
    ) -> Result<CommandReceipt, AggregateError<A::Error>>
    where
        A: Aggregate<Services = ()>,
    {
        let receipt = Arc::new(Mutex::new(None));
        let loaded = Arc::new(Mutex::new(LoadedStream::default()));
        let framework = CqrsFramework::new(
            self.persisted_store::<A>(receipt.clone(), loaded.clone(), stream, extras),
            vec![],
            (),
        );
        framework
            .execute_with_metadata(aggregate_id, command, metadata.to_map())
            .await?;
        self.snapshot_after_command::<A>(aggregate_id, &loaded);
        self.receipt_of::<A>(aggregate_id, &receipt).await
    }

    /// Appends `events`, decided by the caller on the aggregate as it stood at
    /// `after_sequence` (a state it loaded, or holds and keeps up to date), in one
    /// statement, each with its own metadata. If anything was appended after
    /// `after_sequence`: `AggregateConflict`, and nothing is stored. No events: the
    /// receipt of the aggregate's last event, and nothing is checked.
    pub async fn append_decided<A>(
        &self,
        aggregate_id: &str,
        after_sequence: usize,
        events: Vec<(A::Event, CommandMetadata)>,
    ) -> Result<CommandReceipt, AggregateError<A::Error>>
    where
        A: Aggregate<Services = ()>,
    {
        let receipt = Arc::new(Mutex::new(None));
        if !events.is_empty() {
            let mut serialized = Vec::with_capacity(events.len());
            for (offset, (event, metadata)) in events.into_iter().enumerate() {
                let payload = serde_json::to_value(&event)
                    .map_err(|error| AggregateError::UnexpectedError(Box::new(error)))?;
                let metadata = serde_json::to_value(metadata.to_map())
                    .map_err(|error| AggregateError::UnexpectedError(Box::new(error)))?;
                serialized.push(SerializedEvent::new(
                    aggregate_id.to_owned(),
                    after_sequence + offset + 1,
                    A::TYPE.to_owned(),
                    event.event_type(),
                    event.event_version(),
                    payload,
                    metadata,
                ));
            }
            self.repository(
                receipt.clone(),
                Arc::default(),
                Stream::Existing,
                WriteExtras::default(),
            )
            .persist::<A>(&serialized, None)
            .await?;
        }
        self.receipt_of::<A>(aggregate_id, &receipt).await
    }

    /// After a command whose load applied many events, loads again in the
    /// background to store a snapshot (the command's own load is inside cqrs-es).
    fn snapshot_after_command<A>(&self, aggregate_id: &str, loaded: &Mutex<LoadedStream>)
    where
        A: Aggregate<Services = ()>,
    {
        let applied = loaded.lock().expect("load lock poisoned").applied;
        if self.snapshots_of::<A>() && applied >= SNAPSHOT_AFTER_EVENTS {
            let store = self.clone();
            let aggregate_id = aggregate_id.to_owned();
            tokio::spawn(async move {
                let _ = store.load::<A>(&aggregate_id).await;
            });
        }
    }

    /// What a command did: where its events landed (waking the relay), or, when it
    /// stored none, where the aggregate's last event is.
    async fn receipt_of<A: Aggregate>(
        &self,
        aggregate_id: &str,
        receipt: &Mutex<Option<Written>>,
    ) -> Result<CommandReceipt, AggregateError<A::Error>> {
        let stored = *receipt.lock().expect("receipt lock poisoned");
        match stored {
            Some(written) => {
                if let Some(waker) = &self.relay_waker {
                    waker.wake();
                }
                Ok(CommandReceipt {
                    position: Some(written.position),
                    events_stored: written.events,
                    owner_active_orders: written.owner_active_orders,
                })
            }
            None => Ok(CommandReceipt {
                owner_active_orders: None,
                position: self
                    .last_position(A::TYPE, aggregate_id)
                    .await
                    .map_err(|error| AggregateError::DatabaseConnectionError(Box::new(error)))?,
                events_stored: 0,
            }),
        }
    }

    /// The log position of an aggregate's last event.
    pub async fn last_position(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
    ) -> Result<Option<LogPosition>, sqlx::Error> {
        let row: Option<(String, i64)> = sqlx::query_as(
            "SELECT tx_id::text, global_position FROM events
              WHERE aggregate_type = $1 AND aggregate_id = $2
              ORDER BY sequence DESC LIMIT 1",
        )
        .bind(aggregate_type)
        .bind(aggregate_id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|(tx_id, global_position)| LogPosition {
            tx_id: tx_id.parse().unwrap_or_default(),
            global_position,
        }))
    }

    /// The sequence of an aggregate's last event (0 when it has none).
    pub async fn last_sequence(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
    ) -> Result<usize, sqlx::Error> {
        let sequence: Option<i64> = sqlx::query_scalar(
            "SELECT sequence FROM events WHERE aggregate_type = $1 AND aggregate_id = $2
              ORDER BY sequence DESC LIMIT 1",
        )
        .bind(aggregate_type)
        .bind(aggregate_id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(sequence.map_or(0, |sequence| {
            usize::try_from(sequence).unwrap_or(usize::MAX)
        }))
    }

    /// The order `owner` already placed under an idempotency key, with its
    /// `OrderPlaced` payload (what it asked for), if any.
    pub async fn order_placed_with_idempotency_key(
        &self,
        owner: UserId,
        key: &str,
    ) -> Result<Option<(orders_domain::ids::OrderId, Value)>, sqlx::Error> {
        let row: Option<(String, Value)> = sqlx::query_as(
            "SELECT aggregate_id, payload -> 'OrderPlaced' FROM events
              WHERE event_type = 'OrderPlaced'
                AND payload -> 'OrderPlaced' ->> 'owner' = $1
                AND metadata ->> 'idempotency_key' = $2",
        )
        .bind(owner.to_string())
        .bind(key)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.and_then(|(id, placed)| Some((id.parse().ok()?, placed))))
    }

    /// The purchase `owner` already placed under an idempotency key, with its
    /// `PurchasePlaced` payload (what it asked for), if any.
    pub async fn purchase_placed_with_idempotency_key(
        &self,
        owner: UserId,
        key: &str,
    ) -> Result<Option<(orders_domain::ids::PurchaseId, Value)>, sqlx::Error> {
        let row: Option<(String, Value)> = sqlx::query_as(
            "SELECT aggregate_id, payload -> 'PurchasePlaced' FROM events
              WHERE event_type = 'PurchasePlaced' AND metadata ? 'idempotency_key'
                AND payload -> 'PurchasePlaced' ->> 'owner' = $1
                AND metadata ->> 'idempotency_key' = $2",
        )
        .bind(owner.to_string())
        .bind(key)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.and_then(|(id, placed)| Some((id.parse().ok()?, placed))))
    }

    /// The tracking orders that follow catalog product `product_id` (cancelled
    /// ones too: the order itself refuses what it no longer takes), read from the
    /// event store, so one placed a moment ago is never missed.
    pub async fn orders_following_product(
        &self,
        product_id: orders_domain::ids::ProductId,
    ) -> Result<Vec<orders_domain::ids::OrderId>, sqlx::Error> {
        let ids: Vec<String> = sqlx::query_scalar(
            "SELECT aggregate_id FROM events
              WHERE event_type = 'OrderPlaced' AND payload -> 'OrderPlaced' ? 'product_id'
                AND payload -> 'OrderPlaced' ->> 'product_id' = $1",
        )
        .bind(product_id.to_string())
        .fetch_all(&self.pool)
        .await?;
        Ok(ids.iter().filter_map(|id| id.parse().ok()).collect())
    }

    /// Catalog product `product_id`'s SKU and current name, or `None` if it was
    /// never added: two index lookups, where loading the product would read (and
    /// decode) every reservation it holds.
    pub async fn product_label(
        &self,
        product_id: orders_domain::ids::ProductId,
    ) -> Result<Option<(String, String)>, sqlx::Error> {
        sqlx::query_as(
            "SELECT added.payload -> 'ProductAdded' ->> 'sku',
                    coalesce(updated.payload -> 'ProductUpdated' ->> 'name',
                             added.payload -> 'ProductAdded' ->> 'name')
               FROM events added
               LEFT JOIN LATERAL (
                     SELECT payload FROM events
                      WHERE aggregate_type = 'product' AND aggregate_id = added.aggregate_id
                        AND event_type = 'ProductUpdated'
                      ORDER BY sequence DESC LIMIT 1) updated ON true
              WHERE added.aggregate_type = 'product' AND added.aggregate_id = $1
                AND added.sequence = 1 AND added.event_type = 'ProductAdded'",
        )
        .bind(product_id.to_string())
        .fetch_optional(&self.pool)
        .await
    }

    /// The saga's sweep: from the log past its cursor, in position order, up to
    /// `limit` events, stopping before the first one recorded at or after
    /// `recorded_before` (so the cursor never passes an event the sweep has not
    /// judged): the purchases that were rejected, cancelled or shipped, and the
    /// position the cursor may move to (`None`: nothing to move past).
    pub async fn purchases_to_sweep(
        &self,
        recorded_before: chrono::DateTime<chrono::Utc>,
        limit: i64,
    ) -> Result<(Vec<orders_domain::ids::PurchaseId>, Option<i64>), sqlx::Error> {
        let rows: Vec<(String, String, String, i64, chrono::DateTime<chrono::Utc>)> =
            sqlx::query_as(
                "SELECT aggregate_type, aggregate_id, event_type, global_position, recorded_at
                   FROM events
                  WHERE global_position >
                        coalesce((SELECT global_position FROM saga_sweep), 0)
                  ORDER BY global_position LIMIT $1",
            )
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        let mut purchases = Vec::new();
        let mut cursor = None;
        for (aggregate_type, aggregate_id, event_type, position, recorded_at) in rows {
            if recorded_at >= recorded_before {
                break;
            }
            cursor = Some(position);
            let leaves_stock = matches!(
                event_type.as_str(),
                "PurchaseRejected" | "PurchaseCancelled" | "PurchaseShipped"
            );
            if aggregate_type == "purchase" && leaves_stock {
                if let Ok(purchase_id) = aggregate_id.parse() {
                    purchases.push(purchase_id);
                }
            }
        }
        Ok((purchases, cursor))
    }

    /// Moves the saga's sweep cursor to `position`.
    pub async fn advance_saga_sweep(&self, position: i64) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO saga_sweep (one, global_position) VALUES (true, $1)
             ON CONFLICT (one) DO UPDATE SET global_position = excluded.global_position",
        )
        .bind(position)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The purchases still pending that were placed before `placed_before`, oldest
    /// first, at most `limit` (the saga's time bound).
    pub async fn pending_purchases_placed_before(
        &self,
        placed_before: chrono::DateTime<chrono::Utc>,
        limit: i64,
    ) -> Result<Vec<orders_domain::ids::PurchaseId>, sqlx::Error> {
        let ids: Vec<Uuid> = sqlx::query_scalar(
            "SELECT purchase_id FROM pending_purchases
              WHERE placed_at < $1 ORDER BY placed_at LIMIT $2",
        )
        .bind(placed_before)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(ids.into_iter().map(Into::into).collect())
    }

    /// Whether a log position is the place of a stored event. Every position a
    /// command answered with is (it was committed before the answer), so one that
    /// is not was never given out by this log: a read need not wait for it.
    pub async fn names_stored_event(&self, position: LogPosition) -> Result<bool, sqlx::Error> {
        sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM events
                             WHERE global_position = $1 AND tx_id = $2::text::xid8)",
        )
        .bind(position.global_position)
        .bind(position.tx_id.to_string())
        .fetch_one(&self.pool)
        .await
    }
}

/// What a command writes beside its events, in the same statement.
#[derive(Debug, Default)]
struct WriteExtras {
    guard: Option<PlacementGuard>,
    password_hash: Option<String>,
}

/// Whether the aggregate's stream must be read before the command runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stream {
    Existing,
    /// Just minted by the caller: known to be empty.
    New,
}

/// postgres-es's repository for reading, our single-statement insert for writing.
struct OrdersEventRepository {
    stream: Stream,
    writers: Arc<WriterConnections>,
    loader: Arc<PostgresEventRepository>,
    pool: PgPool,
    /// What the last load read (orders only).
    loaded: Arc<Mutex<LoadedStream>>,
    /// Where `persist` leaves what it wrote, for the command that is running; one
    /// repository serves one command.
    receipt: Arc<Mutex<Option<Written>>>,
    /// The precondition of a guarded placement.
    guard: Option<PlacementGuard>,
    /// The password hash that goes with a registration or a password change.
    password_hash: Option<String>,
    key: AuditKey,
}

/// How long a check may stay in flight before its order may be checked again
/// anyway (the interval in the statement that claims a check, `statements.rs`).
pub const CHECK_CLAIM_LEASE: std::time::Duration = std::time::Duration::from_secs(30 * 60);

impl OrdersEventRepository {
    /// The statement that appends an aggregate's events (with what it keeps in step).
    fn statement_for<A: Aggregate>(&self) -> crate::statements::Statement {
        match (A::TYPE, &self.guard) {
            (Order::TYPE, Some(_)) => INSERT_GUARDED_PLACEMENT,
            (Order::TYPE, None) => INSERT_ORDER_EVENTS,
            (User::TYPE, _) => INSERT_USER_EVENTS,
            (PriceCheck::TYPE, _) => INSERT_PRICE_CHECK_EVENTS,
            (Purchase::TYPE, _) => INSERT_PURCHASE_EVENTS,
            _ => INSERT_EVENTS,
        }
    }

    async fn insert_events<A: Aggregate>(
        &self,
        events: &[SerializedEvent],
    ) -> Result<Option<Written>, sqlx::Error> {
        if events.is_empty() {
            return Ok(None);
        }
        let count = events.len();
        let mut aggregate_types = Vec::with_capacity(count);
        let mut aggregate_ids = Vec::with_capacity(count);
        let mut sequences = Vec::with_capacity(count);
        let mut event_types = Vec::with_capacity(count);
        let mut event_versions = Vec::with_capacity(count);
        let mut payloads = Vec::with_capacity(count);
        let mut metadata = Vec::with_capacity(count);
        let mut seals = Vec::with_capacity(count);
        let mut scratch = Vec::with_capacity(512);
        for event in events {
            let sequence = i64::try_from(event.sequence).unwrap_or(i64::MAX);
            let digests = EventContent {
                aggregate_type: A::TYPE,
                aggregate_id: &event.aggregate_id,
                sequence,
                event_type: &event.event_type,
                event_version: &event.event_version,
                payload: &event.payload,
                metadata: &event.metadata,
            }
            .digests_with(&mut scratch);
            seals.push(self.key.seal(&digests));
            aggregate_types.push(A::TYPE);
            aggregate_ids.push(event.aggregate_id.as_str());
            sequences.push(sequence);
            event_types.push(event.event_type.as_str());
            event_versions.push(event.event_version.as_str());
            payloads.push(&event.payload);
            metadata.push(&event.metadata);
        }
        let statement = self.statement_for::<A>();
        let owner = self.guard.as_ref().map(|guard| guard.owner.to_string());
        let credentials_version = self
            .guard
            .as_ref()
            .and_then(|guard| guard.credentials_version)
            .map(|version| i32::try_from(version).unwrap_or(i32::MAX));
        let mut query = sqlx::query_as(statement.sql());
        for bound in statement.binds() {
            query = match bound {
                Bound::AggregateTypes => query.bind(&aggregate_types),
                Bound::AggregateIds => query.bind(&aggregate_ids),
                Bound::Sequences => query.bind(&sequences),
                Bound::EventTypes => query.bind(&event_types),
                Bound::EventVersions => query.bind(&event_versions),
                Bound::Payloads => query.bind(&payloads),
                Bound::Metadata => query.bind(&metadata),
                Bound::Seals => query.bind(&seals),
                Bound::Owner => query.bind(owner.as_deref()),
                Bound::PasswordHash => query.bind(self.password_hash.as_deref()),
                Bound::CredentialsVersion => query.bind(credentials_version),
            };
        }
        let mut connection = self.writers.acquire().await?;
        let inserted: Result<Vec<(String, i64, Option<i64>)>, sqlx::Error> =
            query.fetch_all(connection.connection()).await;
        match &inserted {
            Ok(_) => connection.release(),
            Err(error) if leaves_connection_usable(error) => connection.release(),
            Err(_) => drop(connection),
        }
        let rows = inserted?;
        if rows.is_empty() {
            // Only a guarded placement (its owner is deactivated, or the token's
            // password was changed) and a check
            // request (its order has a check in flight) store nothing without an
            // error.
            return Err(sqlx::Error::RowNotFound);
        }
        let owner_active_orders = rows
            .iter()
            .find_map(|(_, _, count)| *count)
            .and_then(|count| u32::try_from(count).ok());
        let last = rows
            .into_iter()
            .max_by_key(|(_, position, _)| *position)
            .map(|(tx_id, global_position, _)| LogPosition {
                tx_id: tx_id.parse().unwrap_or_default(),
                global_position,
            });
        Ok(last.map(|position| Written {
            position,
            events: count,
            owner_active_orders,
        }))
    }
}

fn persistence_error(error: sqlx::Error) -> PersistenceError {
    match &error {
        // Any unique violation, the primary key's (a concurrent command on the same
        // aggregate) or one of our indexes' (e-mail, idempotency key), is a conflict,
        // as in postgres-es; so is the placement guard's CHECK (active orders): the
        // command may be retried and will then be judged on fresh state.
        sqlx::Error::Database(database_error)
            if database_error.code().as_deref() == Some("23505")
                || (database_error.code().as_deref() == Some("23514")
                    && database_error.table() == Some("placement_guards")) =>
        {
            PersistenceError::OptimisticLockError
        }
        // A guarded placement its owner's guard refused: judge it again.
        sqlx::Error::RowNotFound => PersistenceError::OptimisticLockError,
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed => {
            PersistenceError::ConnectionError(Box::new(error))
        }
        _ => PersistenceError::UnknownError(Box::new(error)),
    }
}

impl PersistedEventRepository for OrdersEventRepository {
    async fn get_events<A: Aggregate>(
        &self,
        aggregate_id: &str,
    ) -> Result<Vec<SerializedEvent>, PersistenceError> {
        if self.stream == Stream::New {
            return Ok(Vec::new());
        }
        self.loader.get_events::<A>(aggregate_id).await
    }

    async fn get_last_events<A: Aggregate>(
        &self,
        aggregate_id: &str,
        last_sequence: usize,
    ) -> Result<Vec<SerializedEvent>, PersistenceError> {
        if self.stream == Stream::New {
            return Ok(Vec::new());
        }
        // The tail `get_snapshot` read with the snapshot, when cqrs-es asks for the
        // events after that very snapshot (it asks from 0 when the snapshot did not
        // deserialise: then read them all).
        let kept = {
            let mut loaded = self.loaded.lock().expect("load lock poisoned");
            match loaded.tail.take() {
                Some((after, events)) if after == last_sequence => Some(events),
                _ => None,
            }
        };
        let events = match kept {
            Some(events) => events,
            None => {
                self.loader
                    .get_last_events::<A>(aggregate_id, last_sequence)
                    .await?
            }
        };
        self.loaded.lock().expect("load lock poisoned").applied = events.len();
        Ok(events)
    }

    async fn get_snapshot<A: Aggregate>(
        &self,
        aggregate_id: &str,
    ) -> Result<Option<SerializedSnapshot>, PersistenceError> {
        let Some(version) = snapshot_version(A::TYPE).filter(|_| self.stream != Stream::New) else {
            return Ok(None);
        };
        let rows: Vec<LoadWithSnapshotRow> = sqlx::query_as(LOAD_WITH_SNAPSHOT)
            .bind(A::TYPE)
            .bind(aggregate_id)
            .bind(version)
            .fetch_all(&self.pool)
            .await
            .map_err(persistence_error)?;
        let mut snapshot = None;
        let mut tail = Vec::with_capacity(rows.len());
        for (event_type, event_version, sequence, payload, metadata) in rows {
            let sequence = usize::try_from(sequence).unwrap_or_default();
            match (event_type, event_version) {
                (Some(event_type), Some(event_version)) => tail.push(SerializedEvent::new(
                    aggregate_id.to_owned(),
                    sequence,
                    A::TYPE.to_owned(),
                    event_type,
                    event_version,
                    payload,
                    metadata.unwrap_or(Value::Null),
                )),
                _ => {
                    snapshot = Some(SerializedSnapshot {
                        aggregate_id: aggregate_id.to_owned(),
                        aggregate: payload,
                        current_sequence: sequence,
                        current_snapshot: 1,
                    })
                }
            }
        }
        let after = snapshot
            .as_ref()
            .map_or(0, |snapshot| snapshot.current_sequence);
        self.loaded.lock().expect("load lock poisoned").tail = Some((after, tail));
        Ok(snapshot)
    }

    async fn persist<A: Aggregate>(
        &self,
        events: &[SerializedEvent],
        snapshot_update: Option<(String, Value, usize)>,
    ) -> Result<(), PersistenceError> {
        // cqrs-es computes a snapshot by applying the new events to an aggregate
        // that already has them (PITFALLS): never store it. Snapshots are written
        // by `EventStore::save_snapshot_in_background` from a clean load.
        let _ = snapshot_update;
        let written = self
            .insert_events::<A>(events)
            .await
            .map_err(persistence_error)?;
        *self.receipt.lock().expect("receipt lock poisoned") = written;
        Ok(())
    }

    async fn stream_events<A: Aggregate>(
        &self,
        aggregate_id: &str,
    ) -> Result<ReplayStream, PersistenceError> {
        self.loader.stream_events::<A>(aggregate_id).await
    }

    async fn stream_all_events<A: Aggregate>(&self) -> Result<ReplayStream, PersistenceError> {
        self.loader.stream_all_events::<A>().await
    }
}

/// Runs a command again (up to 3 times in all) when another command on the same
/// aggregate got in first (`AggregateConflict`): each attempt loads the aggregate
/// afresh, so it is decided again on the state that one left. For commands whose
/// outcome does not depend on which of two concurrent callers went first (a role
/// change, a password-reset request); a conflict after the last attempt is the
/// caller's to answer (409).
pub async fn execute_retrying_conflicts<F, Fut, E>(
    mut execute: F,
) -> Result<CommandReceipt, AggregateError<E>>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<CommandReceipt, AggregateError<E>>>,
    E: std::error::Error,
{
    let mut attempts = 0;
    loop {
        attempts += 1;
        match execute().await {
            Err(AggregateError::AggregateConflict) if attempts < 3 => continue,
            outcome => return outcome,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_log_position_token_reads_back_as_written() {
        let position = LogPosition {
            tx_id: 7_345,
            global_position: 12,
        };
        assert_eq!(position.to_string(), "7345.12");
        assert_eq!("7345.12".parse::<LogPosition>(), Ok(position));
        assert_eq!("7345".parse::<LogPosition>(), Err(InvalidLogPosition));
        assert_eq!("a.1".parse::<LogPosition>(), Err(InvalidLogPosition));
    }
}
