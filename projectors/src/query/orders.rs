//! Reads of the `orders` view: one order of its owner, an owner's orders, and the
//! administrators' list.

use sqlx::PgPool;
use uuid::Uuid;

pub use crate::views::orders::OrderRow;
use crate::views::orders::{from_row, COLUMNS};

/// One order of `owner`.
pub async fn one_of_owner(
    pool: &PgPool,
    owner: Uuid,
    order_id: Uuid,
) -> sqlx::Result<Option<OrderRow>> {
    let row = sqlx::query(&format!(
        "SELECT {} FROM view_orders WHERE order_id = $1 AND owner_id = $2",
        COLUMNS
    ))
    .bind(order_id)
    .bind(owner)
    .fetch_optional(pool)
    .await?;
    row.as_ref().map(from_row).transpose()
}

/// `owner`'s orders after the order `after` (ids are UUID v7: in placement order),
/// at most `limit`.
pub async fn of_owner(
    pool: &PgPool,
    owner: Uuid,
    after: Option<Uuid>,
    limit: i64,
) -> sqlx::Result<Vec<OrderRow>> {
    let rows = sqlx::query(&format!(
        "SELECT {} FROM view_orders
          WHERE owner_id = $1 AND order_id > $2
          ORDER BY order_id LIMIT $3",
        COLUMNS
    ))
    .bind(owner)
    .bind(after.unwrap_or(Uuid::nil()))
    .bind(limit)
    .fetch_all(pool)
    .await?;
    rows.iter().map(from_row).collect()
}

/// What narrows the administrators' list of orders.
#[derive(Debug, Clone, Default)]
pub struct OrderFilter {
    pub owner: Option<Uuid>,
    /// `active`, `paused` or `cancelled`.
    pub status: Option<String>,
}

/// Every order after `after` (in placement order) that the filter lets through, at
/// most `limit`.
pub async fn filtered(
    pool: &PgPool,
    filter: &OrderFilter,
    after: Option<Uuid>,
    limit: i64,
) -> sqlx::Result<Vec<OrderRow>> {
    let rows = sqlx::query(&format!(
        "SELECT {} FROM view_orders
          WHERE order_id > $1
            AND ($2::uuid IS NULL OR owner_id = $2)
            AND ($3::text IS NULL OR status = $3)
          ORDER BY order_id LIMIT $4",
        COLUMNS
    ))
    .bind(after.unwrap_or(Uuid::nil()))
    .bind(filter.owner)
    .bind(&filter.status)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    rows.iter().map(from_row).collect()
}
