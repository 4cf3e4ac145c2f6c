//! What the API (and next, the console's pages) reads from the views: one module of
//! query functions per view, with the row types they answer, and the wait of
//! read-your-writes. Every read of a user's data is scoped to its owner in SQL, so
//! another user's order is simply not found. Callers use this module, never the
//! views' own modules.
//!
//! The shop's lists (`products`, `purchases`) answer a [`Page`] whose `next_cursor`
//! is opaque: the caller hands it back as it got it, and a cursor this module did
//! not give out is a [`ListError::BadCursor`] (a client's mistake, not a failure).

use std::time::Duration;

use orders_nats::LogPosition;
use serde::Serialize;
use sqlx::PgPool;

use crate::checkpoint::{self, Generation};
use crate::View;

pub mod admin_overview;
pub mod analytics;
pub mod orders;
pub mod price_history;
pub mod products;
pub mod purchases;
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

/// One page of a list, in the list's order.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// The cursor of the next page; `None` on the last one.
    pub next_cursor: Option<String>,
}

/// Why a page of a list could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ListError {
    /// The cursor is not one this list gave out.
    #[error("not a cursor this list gave out")]
    BadCursor,
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// The rows a page statement may fetch for a page of `limit` (at least one): one
/// more than the page, to know whether another page follows.
fn fetch_size(limit: i64) -> i64 {
    limit.max(1).saturating_add(1)
}

/// A page of at most `limit` of `rows` (fetched with [`fetch_size`]), and the cursor
/// of its last row when more followed.
fn page<R, T>(
    mut rows: Vec<R>,
    limit: i64,
    cursor: impl Fn(&R) -> String,
    item: impl Fn(R) -> T,
) -> Page<T> {
    let limit = usize::try_from(limit.max(1)).unwrap_or(usize::MAX);
    let more = rows.len() > limit;
    rows.truncate(limit);
    let next_cursor = if more { rows.last().map(cursor) } else { None };
    Page {
        items: rows.into_iter().map(item).collect(),
        next_cursor,
    }
}

/// A cursor's bytes as its text (lowercase hexadecimal: safe in a URL as it is).
fn encode_cursor(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// The bytes of a cursor made by [`encode_cursor`].
fn decode_cursor(text: &str) -> Result<Vec<u8>, ListError> {
    if text.len() % 2 != 0 || !text.bytes().all(|byte| byte.is_ascii_hexdigit()) {
        return Err(ListError::BadCursor);
    }
    (0..text.len())
        .step_by(2)
        .map(|at| u8::from_str_radix(&text[at..at + 2], 16).map_err(|_| ListError::BadCursor))
        .collect()
}

/// A cursor that is only an id (lists in the order of their UUID v7 ids).
fn decode_id_cursor(text: &str) -> Result<uuid::Uuid, ListError> {
    let bytes = decode_cursor(text)?;
    uuid::Uuid::from_slice(&bytes).map_err(|_| ListError::BadCursor)
}
