//! The audit chain: what the relay records of each event it publishes, the chain's
//! head it checkpoints in NATS, and `orders audit verify`, which recomputes both
//! from the events table and names the first place where they part.
//!
//! What is digested and sealed is `seal`'s business. Here: the chain's position of
//! an event is its stream sequence in the log stream (the relay publishes in log
//! order, one message per event), `audit_chain` holds one link per relayed event
//! (written before the event is published, so a link never lags its message), and
//! the head (the last published link) goes to the key-value bucket `ORDERS_AUDIT`
//! after every batch. Rewriting the events table *and* `audit_chain` consistently
//! still leaves the checkpoint, which is not in PostgreSQL, disagreeing.

use anyhow::Context as _;
use async_nats::jetstream;
use futures::StreamExt as _;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::{PgPool, Postgres};

use orders_store::seal::{self, AuditKey, EventDigests, LogPlace, GENESIS};
use orders_store::stored_event::{StoredEventRow, STORED_EVENT_COLUMNS};

/// One event's link in the chain, as the relay records it.
#[derive(Debug, Clone)]
pub struct ChainLink {
    pub chain_position: i64,
    pub global_position: i64,
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub sequence: i64,
    pub actor: String,
    pub recorded_at: String,
    pub digests: EventDigests,
    pub digest: [u8; 32],
}

impl ChainLink {
    pub fn event_id(&self) -> String {
        event_id(&self.aggregate_type, &self.aggregate_id, self.sequence)
    }
}

fn event_id(aggregate_type: &str, aggregate_id: &str, sequence: i64) -> String {
    format!("{aggregate_type}/{aggregate_id}/{sequence}")
}

/// The last link the relay published, checkpointed outside PostgreSQL.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainHead {
    pub chain_position: i64,
    pub global_position: i64,
    pub event_id: String,
    /// Lower-case hex.
    pub digest: String,
}

impl ChainHead {
    pub fn of(link: &ChainLink) -> Self {
        Self {
            chain_position: link.chain_position,
            global_position: link.global_position,
            event_id: link.event_id(),
            digest: seal::hex(&link.digest),
        }
    }
}

/// The digest of the link at `chain_position` (the genesis digest before the
/// first), if the chain has that link.
pub async fn link_digest(pool: &PgPool, chain_position: u64) -> anyhow::Result<Option<[u8; 32]>> {
    if chain_position == 0 {
        return Ok(Some(GENESIS));
    }
    let digest: Option<Vec<u8>> =
        sqlx::query_scalar("SELECT digest FROM audit_chain WHERE chain_position = $1")
            .bind(i64::try_from(chain_position).unwrap_or(i64::MAX))
            .fetch_optional(pool)
            .await
            .context("reading the audit chain")?;
    digest
        .map(|digest| {
            digest.try_into().map_err(|_| {
                anyhow::anyhow!("the audit chain's link {chain_position} is not a digest")
            })
        })
        .transpose()
}

/// Whether the chain has any link at all.
pub async fn has_links(pool: &PgPool) -> anyhow::Result<bool> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM audit_chain)")
        .fetch_one(pool)
        .await
        .context("reading the audit chain")
}

/// Records links (a link already recorded at a position stays as it is: a
/// republished event has the same link).
pub async fn record_links(pool: &PgPool, links: &[ChainLink]) -> anyhow::Result<()> {
    let mut columns = LinkColumns::default();
    for link in links {
        columns.chain_positions.push(link.chain_position);
        columns.global_positions.push(link.global_position);
        columns.aggregate_types.push(&link.aggregate_type);
        columns.aggregate_ids.push(&link.aggregate_id);
        columns.sequences.push(link.sequence);
        columns.actors.push(&link.actor);
        columns.recorded_ats.push(&link.recorded_at);
        columns.body_digests.push(&link.digests.body);
        columns.metadata_digests.push(&link.digests.metadata);
        columns.digests.push(&link.digest);
    }
    sqlx::query(
        "INSERT INTO audit_chain (chain_position, global_position, aggregate_type, aggregate_id,
                                  sequence, actor, recorded_at, body_digest, metadata_digest,
                                  digest)
         SELECT * FROM UNNEST($1::bigint[], $2::bigint[], $3::text[], $4::text[], $5::bigint[],
                              $6::text[], $7::text[], $8::bytea[], $9::bytea[], $10::bytea[])
         ON CONFLICT (chain_position) DO NOTHING",
    )
    .bind(&columns.chain_positions)
    .bind(&columns.global_positions)
    .bind(&columns.aggregate_types)
    .bind(&columns.aggregate_ids)
    .bind(&columns.sequences)
    .bind(&columns.actors)
    .bind(&columns.recorded_ats)
    .bind(&columns.body_digests)
    .bind(&columns.metadata_digests)
    .bind(&columns.digests)
    .execute(pool)
    .await
    .context("recording the audit chain")?;
    Ok(())
}

#[derive(Default)]
struct LinkColumns<'a> {
    chain_positions: Vec<i64>,
    global_positions: Vec<i64>,
    aggregate_types: Vec<&'a str>,
    aggregate_ids: Vec<&'a str>,
    sequences: Vec<i64>,
    actors: Vec<&'a str>,
    recorded_ats: Vec<&'a str>,
    body_digests: Vec<&'a [u8; 32]>,
    metadata_digests: Vec<&'a [u8; 32]>,
    digests: Vec<&'a [u8; 32]>,
}

/// Where the chain's head is checkpointed.
pub async fn head_store(jetstream: &jetstream::Context) -> anyhow::Result<jetstream::kv::Store> {
    jetstream
        .get_key_value(orders_nats::AUDIT_BUCKET)
        .await
        .with_context(|| {
            format!(
                "opening the key-value bucket {} (run `orders nats setup`)",
                orders_nats::AUDIT_BUCKET
            )
        })
}

pub async fn checkpoint(store: &jetstream::kv::Store, head: &ChainHead) -> anyhow::Result<()> {
    let value = serde_json::to_vec(head).context("serialising the chain head")?;
    store
        .put(orders_nats::AUDIT_CHAIN_HEAD_KEY, value.into())
        .await
        .context("checkpointing the audit chain's head")?;
    Ok(())
}

pub async fn read_checkpoint(store: &jetstream::kv::Store) -> anyhow::Result<Option<ChainHead>> {
    let value = store
        .get(orders_nats::AUDIT_CHAIN_HEAD_KEY)
        .await
        .context("reading the audit chain's checkpoint")?;
    value
        .map(|bytes| {
            serde_json::from_slice(&bytes).context("the audit chain's checkpoint is not readable")
        })
        .transpose()
}

// ---------------------------------------------------------------------------------
// orders audit verify

/// Why the log and its records part.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum Tampering {
    /// The event's payload (or its type or version) is not what was sealed.
    PayloadChanged,
    /// Its actor is not the one it was sealed and relayed with.
    ActorChanged { recorded: String, found: String },
    /// Another metadata field (correlation, causation, request id) changed.
    MetadataChanged,
    /// The row holds another aggregate, id or sequence than was sealed.
    IdentityChanged { recorded: String },
    /// Its content is as relayed but its seal is not one the command side made.
    SealChanged,
    /// The time it was recorded was changed.
    RecordedAtChanged { recorded: String, found: String },
    /// An event the command side did not write (no seal that verifies).
    Inserted,
    /// The event recorded at this position is gone.
    Deleted { deleted: String },
    /// Two events changed places.
    Swapped { with_position: i64 },
    /// An event is not where it was relayed.
    Reordered { recorded_position: Option<i64> },
    /// The recorded link differs from the one recomputed from identical content:
    /// `audit_chain` itself was changed.
    LinkAltered,
    /// The chain recomputed up to the checkpointed position does not end in the
    /// checkpointed digest: the events and their links were rewritten together.
    CheckpointMismatch { checkpoint: String },
    /// The links end before the checkpointed position: links (and events) were
    /// removed at the tail.
    LinksMissing { checkpoint_position: i64 },
    /// The links skip this position: a link was removed from `audit_chain`.
    LinkMissing,
    /// Links were recorded but no checkpoint is in NATS.
    CheckpointMissing,
}

impl Tampering {
    pub fn explanation(&self) -> String {
        match self {
            Self::PayloadChanged => "the payload (or the event's type or version) is not what the command side sealed".to_owned(),
            Self::ActorChanged { recorded, found } => format!("the actor was changed from {recorded:?} to {found:?}"),
            Self::MetadataChanged => "its metadata (correlation, causation or request id) is not what the command side sealed".to_owned(),
            Self::IdentityChanged { recorded } => format!("the row was relayed as {recorded} and now claims another aggregate, id or sequence"),
            Self::SealChanged => "its content is as relayed but its seal was replaced".to_owned(),
            Self::RecordedAtChanged { recorded, found } => format!("the time it was recorded was changed from {recorded} to {found}"),
            Self::Inserted => "an event the command side did not write (its seal does not verify under ORDERS_AUDIT_KEY) was inserted here".to_owned(),
            Self::Deleted { deleted } => format!("the event relayed at this position, {deleted}, was deleted"),
            Self::Swapped { with_position } => format!("this event and the one at position {with_position} were swapped"),
            Self::Reordered { recorded_position: Some(position) } => format!("this event was relayed at position {position}: the log was reordered"),
            Self::Reordered { recorded_position: None } => "this event holds a valid seal but was never relayed here: the log was reordered".to_owned(),
            Self::LinkAltered => "the chain's recorded link differs from the one recomputed from the unchanged event: audit_chain was altered".to_owned(),
            Self::CheckpointMismatch { checkpoint } => format!("the chain recomputed to this position does not end in the checkpointed digest {checkpoint}: events and their links were rewritten together"),
            Self::LinksMissing { checkpoint_position } => format!("the chain's links end here, but the checkpoint is at position {checkpoint_position}: events and their links were removed at the tail"),
            Self::LinkMissing => "the chain has no link for this position: a link was removed from audit_chain".to_owned(),
            Self::CheckpointMissing => format!("links are recorded but the key-value bucket {} holds no checkpoint", orders_nats::AUDIT_BUCKET),
        }
    }
}

/// The first place where the log and its records part.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyFailure {
    /// The position in the log (and the log stream's sequence) where they part.
    pub position: i64,
    /// The row found there, if any.
    pub global_position: Option<i64>,
    pub event: Option<String>,
    #[serde(flatten)]
    pub tampering: Tampering,
    pub explanation: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    /// Events read from the table (up to the failure, if any).
    pub events: u64,
    /// Of those, relayed and checked against their links.
    pub chained: u64,
    /// Of those, not relayed yet (seals checked only).
    pub unrelayed: u64,
    pub checkpoint: Option<ChainHead>,
    pub failure: Option<VerifyFailure>,
}

impl VerifyReport {
    pub fn verified(&self) -> bool {
        self.failure.is_none()
    }
}

/// An event as verification reads it.
struct StoredEvent {
    aggregate_type: String,
    aggregate_id: String,
    sequence: i64,
    actor: String,
    seal: Option<Vec<u8>>,
    global_position: i64,
    recorded_at: String,
    /// Of its canonical form, as read.
    digests: EventDigests,
    /// Whether its seal verifies.
    sealed: bool,
}

impl StoredEvent {
    fn id(&self) -> String {
        event_id(&self.aggregate_type, &self.aggregate_id, self.sequence)
    }

    fn actor(&self) -> &str {
        &self.actor
    }
}

/// Every event in log order (the relay's order), committed ones only.
fn events_in_log_order() -> &'static str {
    static STATEMENT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    STATEMENT.get_or_init(|| {
        format!(
            "SELECT {STORED_EVENT_COLUMNS} FROM events ORDER BY events.tx_id, events.global_position"
        )
    })
}

const LINKS_IN_ORDER: &str = "
SELECT chain_position, global_position, aggregate_type, aggregate_id, sequence, actor,
       recorded_at, body_digest, metadata_digest, digest
  FROM audit_chain
 ORDER BY chain_position";

type LinkRow = (
    i64,
    i64,
    String,
    String,
    i64,
    String,
    String,
    Vec<u8>,
    Vec<u8>,
    Vec<u8>,
);

fn link_of(row: LinkRow) -> ChainLink {
    let (
        chain_position,
        global_position,
        aggregate_type,
        aggregate_id,
        sequence,
        actor,
        recorded_at,
        body,
        metadata,
        digest,
    ) = row;
    let array = |bytes: Vec<u8>| <[u8; 32]>::try_from(bytes).unwrap_or([0xff; 32]);
    ChainLink {
        chain_position,
        global_position,
        aggregate_type,
        aggregate_id,
        sequence,
        actor,
        recorded_at,
        digests: EventDigests {
            body: array(body),
            metadata: array(metadata),
        },
        digest: array(digest),
    }
}

/// Rows read ahead, per chunk, by the task that reads them.
const CHUNK: usize = 1024;

/// Streams the rows of `query`, in a transaction on the given snapshot, in chunks
/// through a channel, decoded on a task of their own.
fn read_ahead<R, T>(
    pool: &PgPool,
    snapshot: String,
    query: &'static str,
    mut convert: impl FnMut(R) -> T + Send + 'static,
) -> tokio::sync::mpsc::Receiver<anyhow::Result<Vec<T>>>
where
    R: for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow> + Send + Unpin + 'static,
    T: Send + 'static,
{
    let (sender, receiver) = tokio::sync::mpsc::channel(8);
    let pool = pool.clone();
    tokio::spawn(async move {
        let result: anyhow::Result<()> = async {
            let mut transaction = begin_on_snapshot(&pool, Some(&snapshot)).await?;
            let mut rows = sqlx::query_as::<Postgres, R>(query).fetch(&mut *transaction);
            let mut chunk = Vec::with_capacity(CHUNK);
            while let Some(row) = rows.next().await {
                chunk.push(convert(row.context("reading the log")?));
                if chunk.len() == CHUNK
                    && sender
                        .send(Ok(std::mem::replace(&mut chunk, Vec::with_capacity(CHUNK))))
                        .await
                        .is_err()
                {
                    return Ok(());
                }
            }
            if !chunk.is_empty() {
                let _ = sender.send(Ok(chunk)).await;
            }
            Ok(())
        }
        .await;
        if let Err(error) = result {
            let _ = sender.send(Err(error)).await;
        }
    });
    receiver
}

/// A read-only transaction that sees `snapshot` (or exports its own).
async fn begin_on_snapshot(
    pool: &PgPool,
    snapshot: Option<&str>,
) -> anyhow::Result<sqlx::Transaction<'static, Postgres>> {
    let mut transaction = pool.begin().await.context("starting to read the log")?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .execute(&mut *transaction)
        .await?;
    // Reading a million events takes longer than our sessions' idle limit allows
    // between two statements; this transaction only reads.
    sqlx::query("SET LOCAL idle_in_transaction_session_timeout = 0")
        .execute(&mut *transaction)
        .await?;
    if let Some(snapshot) = snapshot {
        sqlx::query(&format!(
            "SET TRANSACTION SNAPSHOT '{}'",
            snapshot.replace('\'', "")
        ))
        .execute(&mut *transaction)
        .await
        .context("reading the log at one snapshot")?;
    }
    Ok(transaction)
}

/// Pulls items one by one out of a chunked channel.
struct Chunked<T> {
    receiver: tokio::sync::mpsc::Receiver<anyhow::Result<Vec<T>>>,
    chunk: std::vec::IntoIter<T>,
}

impl<T> Chunked<T> {
    fn new(receiver: tokio::sync::mpsc::Receiver<anyhow::Result<Vec<T>>>) -> Self {
        Self {
            receiver,
            chunk: Vec::new().into_iter(),
        }
    }

    async fn next(&mut self) -> anyhow::Result<Option<T>> {
        loop {
            if let Some(item) = self.chunk.next() {
                return Ok(Some(item));
            }
            match self.receiver.recv().await {
                Some(chunk) => self.chunk = chunk?.into_iter(),
                None => return Ok(None),
            }
        }
    }
}

/// Checks one event against its link, given the digest of the link before: the
/// event's digest in the chain, or where and how they part.
fn check_link(
    event: StoredEvent,
    link: ChainLink,
    position: i64,
    previous: &[u8; 32],
    checkpoint: &Option<ChainHead>,
    checkpoint_digest: &Option<Vec<u8>>,
) -> Result<[u8; 32], Box<Mismatch>> {
    if link.chain_position != position {
        return Err(Box::new(Mismatch::LinkGap { event, position }));
    }
    let (digests, sealed) = (event.digests, event.sealed);
    let same = sealed
        && event.global_position == link.global_position
        && digests == link.digests
        && event.aggregate_type == link.aggregate_type
        && event.aggregate_id == link.aggregate_id
        && event.sequence == link.sequence;
    if !same {
        return Err(Box::new(Mismatch::Differs {
            event: Box::new(event),
            link: Box::new(link),
            digests,
            sealed,
            position,
            previous: *previous,
        }));
    }
    let digest = seal::chain_digest(
        previous,
        &digests,
        event.seal.as_deref(),
        LogPlace {
            global_position: event.global_position,
            recorded_at: &event.recorded_at,
        },
    );
    if digest != link.digest {
        let tampering = if event.recorded_at != link.recorded_at {
            Tampering::RecordedAtChanged {
                recorded: link.recorded_at.clone(),
                found: event.recorded_at.clone(),
            }
        } else {
            Tampering::LinkAltered
        };
        return Err(Box::new(Mismatch::Found {
            event: Some(event),
            position,
            tampering,
        }));
    }
    if let (Some(head), Some(expected)) = (&checkpoint, &checkpoint_digest) {
        if head.chain_position == position && digest.as_slice() != expected.as_slice() {
            return Err(Box::new(Mismatch::Found {
                event: Some(event),
                position,
                tampering: Tampering::CheckpointMismatch {
                    checkpoint: head.digest.clone(),
                },
            }));
        }
    }
    Ok(digest)
}

/// A stored event as verification reads it: its digests and whether its seal
/// verifies, computed as it is read.
fn stored_event_of(row: StoredEventRow, key: &AuditKey, scratch: &mut Vec<u8>) -> StoredEvent {
    // A payload that is not JSON digests as `null`: its seal then fails, and says so.
    let payload = row.payload_json().unwrap_or(Value::Null);
    let digests = row.digests(&payload, scratch);
    let sealed = key.verifies(&digests, row.seal.as_deref());
    let actor = row.actor().to_owned();
    StoredEvent {
        aggregate_type: row.aggregate_type,
        aggregate_id: row.aggregate_id,
        sequence: row.sequence,
        actor,
        seal: row.seal,
        global_position: row.global_position,
        recorded_at: row.recorded_at,
        digests,
        sealed,
    }
}

/// Recomputes every seal and the chain from PostgreSQL and compares them with the
/// recorded links and the checkpoint; stops at the first place where they part.
pub async fn verify(
    pool: &PgPool,
    heads: &jetstream::kv::Store,
    key: &AuditKey,
) -> anyhow::Result<VerifyReport> {
    // The checkpoint first: the relay records links before it publishes and
    // checkpoints after, so every link the checkpoint covers is in what is read next.
    let checkpoint = read_checkpoint(heads).await?;
    let mut exporter = begin_on_snapshot(pool, None).await?;
    let snapshot: String = sqlx::query_scalar("SELECT pg_export_snapshot()")
        .fetch_one(&mut *exporter)
        .await
        .context("exporting a snapshot of the log")?;
    // The events' digests and seals are computed as they are read, beside the
    // comparison below (which must go in order).
    let reader_key = key.clone();
    let mut reader_scratch = Vec::with_capacity(1024);
    let mut events = Chunked::new(read_ahead(
        pool,
        snapshot.clone(),
        events_in_log_order(),
        move |row: StoredEventRow| stored_event_of(row, &reader_key, &mut reader_scratch),
    ));
    let mut links = Chunked::new(read_ahead(pool, snapshot, LINKS_IN_ORDER, link_of));
    let mut report = VerifyReport {
        events: 0,
        chained: 0,
        unrelayed: 0,
        checkpoint: checkpoint.clone(),
        failure: None,
    };
    let checkpoint_digest = checkpoint
        .as_ref()
        .map(|head| seal::from_hex(&head.digest).unwrap_or_default());
    let mut previous = GENESIS;
    let mut position: i64 = 0;
    let mismatch = loop {
        let event = events.next().await?;
        let link = links.next().await?;
        if event.is_some() {
            position += 1;
            report.events += 1;
        }
        match (event, link) {
            (None, None) => break None,
            (None, Some(link)) => {
                break Some(Mismatch::Missing {
                    position: link.chain_position,
                    link,
                })
            }
            (Some(event), None) => {
                // Not relayed yet: only its seal can be checked.
                if !event.sealed {
                    break Some(Mismatch::Unsealed { event, position });
                }
                report.unrelayed += 1;
            }
            (Some(event), Some(link)) => {
                match check_link(
                    event,
                    link,
                    position,
                    &previous,
                    &checkpoint,
                    &checkpoint_digest,
                ) {
                    Ok(digest) => previous = digest,
                    Err(mismatch) => break Some(*mismatch),
                }
                report.chained += 1;
            }
        }
    };
    drop(exporter);
    let chained = i64::try_from(report.chained).unwrap_or(i64::MAX);
    report.failure = failure_of(pool, mismatch, checkpoint.as_ref(), chained).await?;
    Ok(report)
}

/// The first failure, explained: where the comparison stopped, or, when it did not,
/// whether the links end before the checkpoint (or the checkpoint is missing).
async fn failure_of(
    pool: &PgPool,
    mismatch: Option<Mismatch>,
    checkpoint: Option<&ChainHead>,
    chained: i64,
) -> anyhow::Result<Option<VerifyFailure>> {
    let mut failure = match mismatch {
        Some(mismatch) => Some(diagnose(pool, mismatch).await?),
        None => match checkpoint {
            Some(head) if head.chain_position > chained => Some(VerifyFailure {
                position: chained + 1,
                global_position: None,
                event: None,
                tampering: Tampering::LinksMissing {
                    checkpoint_position: head.chain_position,
                },
                explanation: String::new(),
            }),
            None if chained > 0 => Some(VerifyFailure {
                position: chained,
                global_position: None,
                event: None,
                tampering: Tampering::CheckpointMissing,
                explanation: String::new(),
            }),
            _ => None,
        },
    };
    if let Some(failure) = &mut failure {
        failure.explanation = failure.tampering.explanation();
    }
    Ok(failure)
}

/// Where the comparison stopped, before it is explained.
enum Mismatch {
    /// The events end, but a link is recorded at `position`.
    Missing { link: ChainLink, position: i64 },
    /// A not yet relayed event without a seal that verifies.
    Unsealed { event: StoredEvent, position: i64 },
    /// The links skip `position`.
    LinkGap { event: StoredEvent, position: i64 },
    /// The event at `position` is not the one its link describes.
    Differs {
        event: Box<StoredEvent>,
        link: Box<ChainLink>,
        digests: EventDigests,
        sealed: bool,
        position: i64,
        /// The link before it.
        previous: [u8; 32],
    },
    Found {
        event: Option<StoredEvent>,
        position: i64,
        tampering: Tampering,
    },
}

async fn diagnose(pool: &PgPool, mismatch: Mismatch) -> anyhow::Result<VerifyFailure> {
    let failure =
        |event: Option<&StoredEvent>, position: i64, tampering: Tampering| VerifyFailure {
            position,
            global_position: event.map(|event| event.global_position),
            event: event.map(StoredEvent::id),
            tampering,
            explanation: String::new(),
        };
    Ok(match mismatch {
        Mismatch::Missing { link, position } => failure(
            None,
            position,
            Tampering::Deleted {
                deleted: link.event_id(),
            },
        ),
        Mismatch::Unsealed { event, position } => {
            failure(Some(&event), position, Tampering::Inserted)
        }
        Mismatch::LinkGap { event, position } => {
            failure(Some(&event), position, Tampering::LinkMissing)
        }
        Mismatch::Found {
            event,
            position,
            tampering,
        } => failure(event.as_ref(), position, tampering),
        Mismatch::Differs {
            event,
            link,
            digests,
            sealed,
            position,
            previous,
        } => {
            let same_identity = event.aggregate_type == link.aggregate_type
                && event.aggregate_id == link.aggregate_id
                && event.sequence == link.sequence;
            let tampering = if event.global_position == link.global_position && same_identity {
                // The row that was relayed here, changed.
                if digests.body != link.digests.body {
                    Tampering::PayloadChanged
                } else if event.actor() != link.actor {
                    Tampering::ActorChanged {
                        recorded: link.actor.clone(),
                        found: event.actor().to_owned(),
                    }
                } else if digests.metadata != link.digests.metadata {
                    Tampering::MetadataChanged
                } else {
                    // Relayed as it is now, yet not sealed by the command side: if its
                    // link still covers the seal it has, it was inserted before the
                    // relay read it.
                    let relayed_as_is = seal::chain_digest(
                        &previous,
                        &digests,
                        event.seal.as_deref(),
                        LogPlace {
                            global_position: event.global_position,
                            recorded_at: &event.recorded_at,
                        },
                    ) == link.digest;
                    if relayed_as_is {
                        Tampering::Inserted
                    } else {
                        Tampering::SealChanged
                    }
                }
            } else if !sealed {
                if event.global_position == link.global_position {
                    Tampering::IdentityChanged {
                        recorded: link.event_id(),
                    }
                } else {
                    Tampering::Inserted
                }
            } else {
                // A genuine event, but not the one relayed here.
                let recorded_at = position_recorded(pool, &event).await?;
                match current_position(pool, &link).await? {
                    None => Tampering::Deleted {
                        deleted: link.event_id(),
                    },
                    Some(now) if Some(now) == recorded_at => {
                        Tampering::Swapped { with_position: now }
                    }
                    Some(_) => Tampering::Reordered {
                        recorded_position: recorded_at,
                    },
                }
            };
            failure(Some(&event), position, tampering)
        }
    })
}

/// Where the chain recorded `event`, if anywhere.
async fn position_recorded(pool: &PgPool, event: &StoredEvent) -> anyhow::Result<Option<i64>> {
    Ok(sqlx::query_scalar(
        "SELECT chain_position FROM audit_chain
          WHERE aggregate_type = $1 AND aggregate_id = $2 AND sequence = $3
          ORDER BY chain_position LIMIT 1",
    )
    .bind(&event.aggregate_type)
    .bind(&event.aggregate_id)
    .bind(event.sequence)
    .fetch_optional(pool)
    .await?)
}

/// Where the event a link describes is in the log now, if it still exists.
async fn current_position(pool: &PgPool, link: &ChainLink) -> anyhow::Result<Option<i64>> {
    Ok(sqlx::query_scalar(
        "SELECT (SELECT count(*) FROM events AS other
                  WHERE (other.tx_id, other.global_position) <= (found.tx_id, found.global_position))
           FROM events AS found
          WHERE aggregate_type = $1 AND aggregate_id = $2 AND sequence = $3",
    )
    .bind(&link.aggregate_type)
    .bind(&link.aggregate_id)
    .bind(link.sequence)
    .fetch_optional(pool)
    .await?)
}
