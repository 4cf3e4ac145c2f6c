//! Reads of the `price_history` view.

use sqlx::PgPool;
use uuid::Uuid;

pub use crate::views::checks::CheckRow;
use crate::views::price_history::{from_row, COLUMNS};
pub use crate::views::price_history::{Alert, PricePoint};

/// An order's price observations after the check `after`, oldest first.
pub async fn of_order(
    pool: &PgPool,
    order_id: Uuid,
    after: Option<Uuid>,
    limit: i64,
) -> sqlx::Result<Vec<PricePoint>> {
    let rows = sqlx::query(&format!(
        "SELECT {} FROM view_price_history
          WHERE order_id = $1 AND check_id > $2
          ORDER BY check_id LIMIT $3",
        COLUMNS
    ))
    .bind(order_id)
    .bind(after.unwrap_or(Uuid::nil()))
    .bind(limit)
    .fetch_all(pool)
    .await?;
    rows.iter().map(from_row).collect()
}

type AlertRow = (
    Uuid,
    i64,
    chrono::DateTime<chrono::Utc>,
    rust_decimal::Decimal,
    Option<rust_decimal::Decimal>,
    rust_decimal::Decimal,
    String,
);

/// The alerts an order fired, newest first, before the event `before` (the order's
/// sequence) when given.
pub async fn alerts_of_order(
    pool: &PgPool,
    order_id: Uuid,
    before: Option<i64>,
    limit: i64,
) -> sqlx::Result<Vec<Alert>> {
    let rows: Vec<AlertRow> = sqlx::query_as(
        "SELECT order_id, sequence, fired_at, price, previous, target, currency
               FROM view_order_alerts
              WHERE order_id = $1 AND sequence < $2
              ORDER BY sequence DESC LIMIT $3",
    )
    .bind(order_id)
    .bind(before.unwrap_or(i64::MAX))
    .bind(limit)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(
            |(order_id, sequence, fired_at, price, previous, target, currency)| Alert {
                order_id,
                sequence,
                fired_at,
                price,
                previous,
                target,
                currency,
            },
        )
        .collect())
}

type CheckColumns = (
    Uuid,
    Uuid,
    chrono::DateTime<chrono::Utc>,
    String,
    String,
    Option<chrono::DateTime<chrono::Utc>>,
    Option<rust_decimal::Decimal>,
    String,
    Option<String>,
    Option<String>,
);

/// An order's price checks, newest first, before the check `before` when given.
pub async fn checks_of_order(
    pool: &PgPool,
    order_id: Uuid,
    before: Option<Uuid>,
    limit: i64,
) -> sqlx::Result<Vec<CheckRow>> {
    let rows: Vec<CheckColumns> = sqlx::query_as(
        "SELECT check_id, order_id, requested_at, trigger, outcome, finished_at, price, currency,
                reason, detail
           FROM view_order_checks
          WHERE order_id = $1 AND ($2::uuid IS NULL OR check_id < $2)
          ORDER BY check_id DESC LIMIT $3",
    )
    .bind(order_id)
    .bind(before)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(
            |(
                check_id,
                order_id,
                requested_at,
                trigger,
                outcome,
                finished_at,
                price,
                currency,
                reason,
                detail,
            )| {
                CheckRow {
                    check_id,
                    order_id,
                    requested_at,
                    trigger,
                    outcome,
                    finished_at,
                    price,
                    currency,
                    reason,
                    detail,
                }
            },
        )
        .collect())
}
