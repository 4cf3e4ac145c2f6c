//! One stored event as a row of `events`, read the one way every reader of the
//! whole row reads it: the relay (to publish it and link it into the audit chain),
//! `audit verify` (to check it against its link) and the audit trail's pages.
//!
//! The columns are named, not positional: [`STORED_EVENT_COLUMNS`] selects them and
//! [`StoredEventRow`] reads them by those names. Two of them (`tx_id`, `recorded_at`)
//! are text under their column's name, and PostgreSQL's ORDER BY prefers an output
//! name to a column: order by `events.tx_id`, qualified, or the log sorts as text.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::postgres::PgRow;
use sqlx::Row as _;

use crate::seal::{EventContent, EventDigests};

/// The select list of a [`StoredEventRow`]. The payload is its exact text (what the
/// relay publishes); the time is the UTC RFC 3339 text with microseconds that seals,
/// links and messages all carry.
pub const STORED_EVENT_COLUMNS: &str = "aggregate_type, aggregate_id, sequence, event_type, \
     event_version, payload::text AS payload, metadata, tx_id::text AS tx_id, global_position, \
     to_char(recorded_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') AS recorded_at, \
     seal";

/// A row of `events`, as [`STORED_EVENT_COLUMNS`] selects it.
#[derive(Debug, Clone)]
pub struct StoredEventRow {
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub sequence: i64,
    pub event_type: String,
    pub event_version: String,
    /// The payload's JSON text.
    pub payload: String,
    pub metadata: Value,
    /// The committing transaction's id (`xid8`), as text.
    pub tx_id: String,
    pub global_position: i64,
    /// UTC, RFC 3339 with microseconds.
    pub recorded_at: String,
    pub seal: Option<Vec<u8>>,
}

impl<'r> sqlx::FromRow<'r, PgRow> for StoredEventRow {
    fn from_row(row: &'r PgRow) -> sqlx::Result<Self> {
        Ok(Self {
            aggregate_type: row.try_get("aggregate_type")?,
            aggregate_id: row.try_get("aggregate_id")?,
            sequence: row.try_get("sequence")?,
            event_type: row.try_get("event_type")?,
            event_version: row.try_get("event_version")?,
            payload: row.try_get("payload")?,
            metadata: row.try_get("metadata")?,
            tx_id: row.try_get("tx_id")?,
            global_position: row.try_get("global_position")?,
            recorded_at: row.try_get("recorded_at")?,
            seal: row.try_get("seal")?,
        })
    }
}

impl StoredEventRow {
    /// `<aggregate_type>/<aggregate_id>/<sequence>`.
    pub fn event_id(&self) -> String {
        format!(
            "{}/{}/{}",
            self.aggregate_type, self.aggregate_id, self.sequence
        )
    }

    /// The metadata's `key`, if it is a string.
    pub fn metadata_text(&self, key: &str) -> Option<&str> {
        self.metadata.get(key).and_then(Value::as_str)
    }

    /// Who caused the event (`""` if the metadata does not say).
    pub fn actor(&self) -> &str {
        self.metadata_text("actor").unwrap_or_default()
    }

    /// The payload as JSON.
    pub fn payload_json(&self) -> serde_json::Result<Value> {
        serde_json::from_str(&self.payload)
    }

    /// When it was recorded, as a time.
    pub fn recorded_time(&self) -> chrono::ParseResult<DateTime<Utc>> {
        DateTime::parse_from_rfc3339(&self.recorded_at).map(|time| time.with_timezone(&Utc))
    }

    /// The digests of its canonical form (what its seal and its audit link cover),
    /// given its payload as JSON; `scratch` is reused between events.
    pub fn digests(&self, payload: &Value, scratch: &mut Vec<u8>) -> EventDigests {
        EventContent {
            aggregate_type: &self.aggregate_type,
            aggregate_id: &self.aggregate_id,
            sequence: self.sequence,
            event_type: &self.event_type,
            event_version: &self.event_version,
            payload,
            metadata: &self.metadata,
        }
        .digests_with(scratch)
    }
}
