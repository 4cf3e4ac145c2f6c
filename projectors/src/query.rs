//! What the API reads from the views. Every read of a user's data is scoped to its
//! owner in SQL, so another user's order is simply not found.

use std::time::Duration;

use orders_nats::LogPosition;
use sqlx::PgPool;
use uuid::Uuid;

use crate::checkpoint::{self, Generation};
use crate::views::orders::{self, OrderRow};
use crate::views::price_history::{self, PricePoint};
use crate::views::users::{self, UserRow};
use crate::View;

/// One order of `owner`.
pub async fn order_of(
    pool: &PgPool,
    owner: Uuid,
    order_id: Uuid,
) -> sqlx::Result<Option<OrderRow>> {
    let row = sqlx::query(&format!(
        "SELECT {} FROM view_orders WHERE order_id = $1 AND owner_id = $2",
        orders::COLUMNS
    ))
    .bind(order_id)
    .bind(owner)
    .fetch_optional(pool)
    .await?;
    row.as_ref().map(orders::from_row).transpose()
}

/// `owner`'s orders after the order `after` (ids are UUID v7: in placement order),
/// at most `limit`.
pub async fn orders_of(
    pool: &PgPool,
    owner: Uuid,
    after: Option<Uuid>,
    limit: i64,
) -> sqlx::Result<Vec<OrderRow>> {
    let rows = sqlx::query(&format!(
        "SELECT {} FROM view_orders
          WHERE owner_id = $1 AND order_id > $2
          ORDER BY order_id LIMIT $3",
        orders::COLUMNS
    ))
    .bind(owner)
    .bind(after.unwrap_or(Uuid::nil()))
    .bind(limit)
    .fetch_all(pool)
    .await?;
    rows.iter().map(orders::from_row).collect()
}

/// An order's price observations after the check `after`, oldest first.
pub async fn price_history(
    pool: &PgPool,
    order_id: Uuid,
    after: Option<Uuid>,
    limit: i64,
) -> sqlx::Result<Vec<PricePoint>> {
    let rows = sqlx::query(&format!(
        "SELECT {} FROM view_price_history
          WHERE order_id = $1 AND check_id > $2
          ORDER BY check_id LIMIT $3",
        price_history::COLUMNS
    ))
    .bind(order_id)
    .bind(after.unwrap_or(Uuid::nil()))
    .bind(limit)
    .fetch_all(pool)
    .await?;
    rows.iter().map(price_history::from_row).collect()
}

pub async fn user(pool: &PgPool, user_id: Uuid) -> sqlx::Result<Option<UserRow>> {
    let row = sqlx::query(&format!(
        "SELECT {} FROM view_users WHERE user_id = $1",
        users::COLUMNS
    ))
    .bind(user_id)
    .fetch_optional(pool)
    .await?;
    row.as_ref().map(users::from_row).transpose()
}

/// The administrators' counters, every metric listed (0 when nothing happened yet).
pub async fn overview(pool: &PgPool) -> sqlx::Result<Vec<(String, i64)>> {
    let counted: Vec<(String, i64)> =
        sqlx::query_as("SELECT metric, value FROM view_admin_overview")
            .fetch_all(pool)
            .await?;
    Ok(crate::views::admin_overview::METRICS
        .iter()
        .map(|metric| {
            let value = counted
                .iter()
                .find(|(name, _)| name == metric)
                .map_or(0, |(_, value)| *value);
            ((*metric).to_owned(), value)
        })
        .collect())
}

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

/// What narrows the administrators' list of users.
#[derive(Debug, Clone, Default)]
pub struct UserFilter {
    /// Part of the e-mail address, any case.
    pub email_contains: Option<String>,
    /// Only users with this role (`admin`, `auditor`).
    pub role: Option<String>,
    pub deactivated: Option<bool>,
}

/// Every user after `after` (ids are UUID v7: in registration order) that the filter
/// lets through, at most `limit`.
pub async fn users(
    pool: &PgPool,
    filter: &UserFilter,
    after: Option<Uuid>,
    limit: i64,
) -> sqlx::Result<Vec<UserRow>> {
    let pattern = filter.email_contains.as_ref().map(|part| {
        let escaped = part
            .replace('\\', "\\\\")
            .replace('%', "\\%")
            .replace('_', "\\_");
        format!("%{}%", escaped.to_lowercase())
    });
    let rows = sqlx::query(&format!(
        "SELECT {} FROM view_users
          WHERE user_id > $1
            AND ($2::text IS NULL OR lower(email) LIKE $2)
            AND ($3::text IS NULL OR $3 = ANY(roles))
            AND ($4::bool IS NULL OR deactivated = $4)
          ORDER BY user_id LIMIT $5",
        users::COLUMNS
    ))
    .bind(after.unwrap_or(Uuid::nil()))
    .bind(pattern)
    .bind(&filter.role)
    .bind(filter.deactivated)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    rows.iter().map(users::from_row).collect()
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
pub async fn orders(
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
        orders::COLUMNS
    ))
    .bind(after.unwrap_or(Uuid::nil()))
    .bind(filter.owner)
    .bind(&filter.status)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    rows.iter().map(orders::from_row).collect()
}
