//! Reads of the `purchases` view: a buyer's purchases, one purchase, and the
//! administrators' list. Lists are newest first (purchase ids are UUID v7: in
//! placement order), and their cursors are ids.

use orders_domain::purchase::PurchaseStatus;
use sqlx::{PgPool, Postgres, QueryBuilder};
use uuid::Uuid;

use super::{decode_id_cursor, encode_cursor, fetch_size, page, ListError, Page};
use crate::views::purchases::COLUMNS;
pub use crate::views::purchases::{HistoryEntry, PurchaseLineRow, PurchaseRow};

/// One purchase, whoever owns it: the caller checks that its reader may see it
/// (`owner_id`).
pub async fn get(pool: &PgPool, purchase_id: Uuid) -> sqlx::Result<Option<PurchaseRow>> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM view_purchases WHERE purchase_id = $1"
    ))
    .bind(purchase_id)
    .fetch_optional(pool)
    .await
}

/// `owner`'s purchases (only those in `status`, if given), newest first: a page of at
/// most `limit` after `cursor` (the `next_cursor` of the page before; `None`: the
/// first page).
pub async fn of_owner(
    pool: &PgPool,
    owner: Uuid,
    status: Option<PurchaseStatus>,
    limit: i64,
    cursor: Option<&str>,
) -> Result<Page<PurchaseRow>, ListError> {
    listed(pool, Some(owner), status, limit, cursor).await
}

/// Every purchase (only those in `status`, and of `owner`, if given), newest first:
/// the administrators' list, paged as [`of_owner`].
pub async fn all(
    pool: &PgPool,
    status: Option<PurchaseStatus>,
    owner: Option<Uuid>,
    limit: i64,
    cursor: Option<&str>,
) -> Result<Page<PurchaseRow>, ListError> {
    listed(pool, owner, status, limit, cursor).await
}

async fn listed(
    pool: &PgPool,
    owner: Option<Uuid>,
    status: Option<PurchaseStatus>,
    limit: i64,
    cursor: Option<&str>,
) -> Result<Page<PurchaseRow>, ListError> {
    let before = cursor.map(decode_id_cursor).transpose()?;
    // Only the conditions set are in the statement, so each is planned on the index
    // that serves it: (owner_id, purchase_id), (status, purchase_id) or the key.
    let mut statement: QueryBuilder<'_, Postgres> =
        QueryBuilder::new(format!("SELECT {COLUMNS} FROM view_purchases WHERE true"));
    if let Some(owner) = owner {
        statement.push(" AND owner_id = ").push_bind(owner);
    }
    if let Some(status) = status {
        statement.push(" AND status = ").push_bind(status.as_str());
    }
    if let Some(before) = before {
        statement.push(" AND purchase_id < ").push_bind(before);
    }
    statement
        .push(" ORDER BY purchase_id DESC LIMIT ")
        .push_bind(fetch_size(limit));
    let rows: Vec<PurchaseRow> = statement.build_query_as().fetch_all(pool).await?;
    Ok(page(
        rows,
        limit,
        |row| encode_cursor(row.purchase_id.as_bytes()),
        |row| row,
    ))
}
