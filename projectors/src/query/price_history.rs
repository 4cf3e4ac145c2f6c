//! Reads of the `price_history` view.

use sqlx::PgPool;
use uuid::Uuid;

pub use crate::views::price_history::PricePoint;
use crate::views::price_history::{from_row, COLUMNS};

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
