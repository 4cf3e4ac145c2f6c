//! Reading the audit trail: who did what, when, and what it caused, straight from
//! the event store (the truth, never a view that may lag or be rebuilt).
//!
//! Three questions, each a page of events in log order (by global position, which
//! is also the order of one aggregate's sequence), filtered by time and event type:
//! the history of one aggregate, everything one request or scheduled job caused
//! (its correlation id), and everything one actor did. A trace is also shown as a
//! causal tree: every event's `causation_id` names the request, job or event that
//! caused it.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::PgPool;

use crate::stored_event::{StoredEventRow, STORED_EVENT_COLUMNS};

/// One event as the audit trail shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditEntry {
    /// The place in the log: `<tx_id>.<global_position>` (the `Orders-Position` form).
    pub position: String,
    pub global_position: i64,
    /// `<aggregate_type>/<aggregate_id>/<sequence>`.
    pub event_id: String,
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub sequence: i64,
    pub event_type: String,
    pub event_version: String,
    pub recorded_at: DateTime<Utc>,
    pub actor: Option<String>,
    pub correlation_id: Option<String>,
    pub causation_id: Option<String>,
    pub request_id: Option<String>,
    /// The payload as stored.
    pub payload: Value,
}

/// What narrows a page of the trail.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    /// Only events recorded at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Only events recorded before this time.
    pub until: Option<DateTime<Utc>>,
    /// Only events of these types (any, when empty).
    pub event_types: Vec<String>,
    /// The page after this global position (the previous page's `next_after`).
    pub after: Option<i64>,
    /// At most this many events (1 to 10,000).
    pub limit: i64,
}

/// The most events one page returns.
pub const MAX_PAGE: i64 = 10_000;

/// A page of the trail.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditPage {
    pub entries: Vec<AuditEntry>,
    /// Give this as `after` to read the next page; `None` on the last.
    pub next_after: Option<i64>,
}

/// Whose events a page reads.
#[derive(Debug, Clone)]
pub enum AuditSubject<'a> {
    Aggregate {
        aggregate_type: &'a str,
        aggregate_id: &'a str,
    },
    Correlation(&'a str),
    Actor(&'a str),
}

/// One page of the trail of `subject`. Each subject's condition is one an index
/// answers (the primary key; `events_correlation`; `events_actor`), in position
/// order, so a page costs the same on a log of a million events as on a small one.
pub async fn page(
    pool: &PgPool,
    subject: &AuditSubject<'_>,
    filter: &AuditFilter,
) -> sqlx::Result<AuditPage> {
    let limit = filter.limit.clamp(1, MAX_PAGE);
    let (condition, first, second) = match subject {
        AuditSubject::Aggregate {
            aggregate_type,
            aggregate_id,
        } => (
            "aggregate_type = $1 AND aggregate_id = $2",
            *aggregate_type,
            Some(*aggregate_id),
        ),
        // One statement shape for all: the second parameter is unused (null) here.
        AuditSubject::Correlation(correlation_id) => (
            "metadata ->> 'correlation_id' = $1 AND $2::text IS NULL",
            *correlation_id,
            None,
        ),
        AuditSubject::Actor(actor) => (
            "metadata ->> 'actor' = $1 AND $2::text IS NULL",
            *actor,
            None,
        ),
    };
    let statement = format!(
        "SELECT {STORED_EVENT_COLUMNS} FROM events
          WHERE {condition}
            AND global_position > $3
            AND ($4::timestamptz IS NULL OR recorded_at >= $4)
            AND ($5::timestamptz IS NULL OR recorded_at < $5)
            AND (cardinality($6::text[]) = 0 OR event_type = ANY($6))
          ORDER BY events.global_position
          LIMIT $7"
    );
    let rows: Vec<StoredEventRow> = sqlx::query_as(&statement)
        .bind(first)
        .bind(second)
        .bind(filter.after.unwrap_or(0))
        .bind(filter.since)
        .bind(filter.until)
        .bind(&filter.event_types)
        .bind(limit + 1)
        .fetch_all(pool)
        .await?;
    let more = rows.len() as i64 > limit;
    let entries: Vec<AuditEntry> = rows
        .into_iter()
        .take(usize::try_from(limit).unwrap_or(usize::MAX))
        .map(entry)
        .collect::<Result<_, _>>()?;
    let next_after = more
        .then(|| entries.last().map(|entry| entry.global_position))
        .flatten();
    Ok(AuditPage {
        entries,
        next_after,
    })
}

/// What the event log viewer narrows the log to: each filter that is set must hold.
#[derive(Debug, Clone, Default)]
pub struct LogFilter {
    /// Any of these event types (none: every type).
    pub event_types: Vec<String>,
    pub aggregate_type: Option<String>,
    pub aggregate_id: Option<String>,
    pub actor: Option<String>,
    pub correlation_id: Option<String>,
}

/// The newest events of the whole log that pass `filter`, newest first in the log's
/// order (transaction, then global position: the relay's order), starting before
/// `before` when given (the `global_position` of the last event of the previous
/// page). At most `limit` (1 to 1000), with the next page's `before`.
pub async fn recent(
    pool: &PgPool,
    filter: &LogFilter,
    before: Option<i64>,
    limit: i64,
) -> sqlx::Result<(Vec<AuditEntry>, Option<i64>)> {
    let limit = limit.clamp(1, 1_000);
    // Only the conditions a filter sets, so that each shape of the statement gets a
    // plan of its own: with every condition written as `$n IS NULL OR ...`, a
    // prepared statement's generic plan scans the whole table.
    let mut query = sqlx::QueryBuilder::<sqlx::Postgres>::new(format!(
        "SELECT {STORED_EVENT_COLUMNS} FROM events WHERE true"
    ));
    if !filter.event_types.is_empty() {
        query
            .push(" AND event_type = ANY(")
            .push_bind(&filter.event_types)
            .push(")");
    }
    let equal = [
        ("aggregate_type", &filter.aggregate_type),
        ("aggregate_id", &filter.aggregate_id),
        ("metadata ->> 'actor'", &filter.actor),
        ("metadata ->> 'correlation_id'", &filter.correlation_id),
    ];
    for (column, value) in equal {
        if let Some(value) = value {
            query
                .push(format!(" AND {column} = "))
                .push_bind(value.as_str());
        }
    }
    if let Some(before) = before {
        query
            .push(
                " AND (events.tx_id, global_position) <
                  (SELECT tx_id, global_position FROM events WHERE global_position = ",
            )
            .push_bind(before)
            .push(")");
    }
    query
        .push(" ORDER BY events.tx_id DESC, global_position DESC LIMIT ")
        .push_bind(limit + 1);
    let rows: Vec<StoredEventRow> = query.build_query_as().fetch_all(pool).await?;
    let more = rows.len() as i64 > limit;
    let entries: Vec<AuditEntry> = rows
        .into_iter()
        .take(usize::try_from(limit).unwrap_or(usize::MAX))
        .map(entry)
        .collect::<Result<_, _>>()?;
    let next_before = more
        .then(|| entries.last().map(|entry| entry.global_position))
        .flatten();
    Ok((entries, next_before))
}

/// The event at `global_position`, if there is one.
pub async fn at(pool: &PgPool, global_position: i64) -> sqlx::Result<Option<AuditEntry>> {
    let row: Option<StoredEventRow> = sqlx::query_as(&format!(
        "SELECT {STORED_EVENT_COLUMNS} FROM events WHERE global_position = $1"
    ))
    .bind(global_position)
    .fetch_optional(pool)
    .await?;
    row.map(entry).transpose()
}

fn entry(row: StoredEventRow) -> sqlx::Result<AuditEntry> {
    let decoding = |error: Box<dyn std::error::Error + Send + Sync>| sqlx::Error::Decode(error);
    let payload = row.payload_json().map_err(|error| decoding(error.into()))?;
    let recorded_at = row
        .recorded_time()
        .map_err(|error| decoding(error.into()))?;
    let text = |key: &str| row.metadata_text(key).map(str::to_owned);
    Ok(AuditEntry {
        position: format!("{}.{}", row.tx_id, row.global_position),
        global_position: row.global_position,
        event_id: row.event_id(),
        actor: text("actor"),
        correlation_id: text("correlation_id"),
        causation_id: text("causation_id"),
        request_id: text("request_id"),
        recorded_at,
        payload,
        aggregate_type: row.aggregate_type,
        aggregate_id: row.aggregate_id,
        sequence: row.sequence,
        event_type: row.event_type,
        event_version: row.event_version,
    })
}

/// One line of a causal tree: an event and how deep it sits under its root cause.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CausalNode {
    pub depth: usize,
    pub entry: AuditEntry,
}

/// The events of a trace as a tree, depth first, in log order among siblings: an
/// event whose `causation_id` is another event of the trace sits under it; the
/// others (caused by a request or a job) are roots.
pub fn causal_tree(entries: &[AuditEntry]) -> Vec<CausalNode> {
    use std::collections::{HashMap, HashSet};
    let ids: HashSet<&str> = entries
        .iter()
        .map(|entry| entry.event_id.as_str())
        .collect();
    let mut children: HashMap<&str, Vec<&AuditEntry>> = HashMap::new();
    let mut roots = Vec::new();
    for entry in entries {
        match entry.causation_id.as_deref() {
            Some(cause) if ids.contains(cause) && cause != entry.event_id => {
                children.entry(cause).or_default().push(entry)
            }
            _ => roots.push(entry),
        }
    }
    let mut tree = Vec::with_capacity(entries.len());
    let mut stack: Vec<(usize, &AuditEntry)> =
        roots.into_iter().rev().map(|root| (0, root)).collect();
    let mut seen = HashSet::new();
    while let Some((depth, entry)) = stack.pop() {
        if !seen.insert(entry.event_id.as_str()) {
            continue;
        }
        tree.push(CausalNode {
            depth,
            entry: entry.clone(),
        });
        if let Some(under) = children.get(entry.event_id.as_str()) {
            for child in under.iter().rev() {
                stack.push((depth + 1, child));
            }
        }
    }
    tree
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: &str, position: i64, causation: &str) -> AuditEntry {
        AuditEntry {
            position: format!("1.{position}"),
            global_position: position,
            event_id: id.to_owned(),
            aggregate_type: id.split('/').next().unwrap().to_owned(),
            aggregate_id: String::new(),
            sequence: 1,
            event_type: "E".to_owned(),
            event_version: "1.0".to_owned(),
            recorded_at: Utc::now(),
            actor: None,
            correlation_id: Some("c".to_owned()),
            causation_id: Some(causation.to_owned()),
            request_id: None,
            payload: Value::Null,
        }
    }

    #[test]
    fn events_sit_under_the_event_that_caused_them() {
        let entries = [
            entry("price_check/a/1", 1, "request-1"),
            entry("price_check/a/2", 2, "price_check/a/1"),
            entry("order/o/5", 3, "price_check/a/2"),
            entry("order/o/6", 4, "price_check/a/2"),
            entry("user/u/2", 5, "request-2"),
        ];
        let tree = causal_tree(&entries);
        let shape: Vec<(usize, &str)> = tree
            .iter()
            .map(|node| (node.depth, node.entry.event_id.as_str()))
            .collect();
        assert_eq!(
            shape,
            [
                (0, "price_check/a/1"),
                (1, "price_check/a/2"),
                (2, "order/o/5"),
                (2, "order/o/6"),
                (0, "user/u/2"),
            ]
        );
    }
}
