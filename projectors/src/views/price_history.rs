//! `price_history`: every price an order was observed at, one row per check that
//! saw a price (failed checks and checks that saw no price add none).

use chrono::{DateTime, Utc};
use orders_domain::price_check::PriceCheckEvent;
use rust_decimal::Decimal;
use sqlx::{PgConnection, Row as _};
use uuid::Uuid;

use crate::checkpoint::Generation;
use crate::record::{Event, LogRecord};
use crate::views::folded::column;

pub(crate) const TABLES: &[&str] = &["view_price_history"];

/// One observation of an order's price.
#[derive(Debug, Clone, PartialEq)]
pub struct PricePoint {
    pub order_id: Uuid,
    /// The check that saw it (UUID v7: orders the history by time of request).
    pub check_id: Uuid,
    pub observed_at: DateTime<Utc>,
    pub price: Decimal,
    pub currency: String,
    /// `InStock`, ..., `Unknown`, as the page said at the time.
    pub availability: String,
    /// Which extractor found the price.
    pub extractor: Option<String>,
}

/// The point an event adds to the history, if any.
pub fn point(record: &LogRecord) -> Option<PricePoint> {
    let Event::PriceCheck(PriceCheckEvent::PriceObserved {
        order_id,
        price: Some(price),
        availability,
        extractor,
        ..
    }) = &record.event
    else {
        return None;
    };
    Some(PricePoint {
        order_id: order_id.as_uuid(),
        check_id: record.aggregate_uuid(),
        observed_at: record.recorded_at,
        price: price.amount(),
        currency: price.currency().code().to_owned(),
        availability: availability.as_str().to_owned(),
        extractor: extractor.clone(),
    })
}

pub(crate) const COLUMNS: &str =
    "order_id, check_id, observed_at, price, currency, availability, extractor";

pub(crate) fn from_row(row: &sqlx::postgres::PgRow) -> sqlx::Result<PricePoint> {
    Ok(PricePoint {
        order_id: row.try_get("order_id")?,
        check_id: row.try_get("check_id")?,
        observed_at: row.try_get("observed_at")?,
        price: row.try_get("price")?,
        currency: row.try_get("currency")?,
        availability: row.try_get("availability")?,
        extractor: row.try_get("extractor")?,
    })
}

pub(crate) async fn apply(
    connection: &mut PgConnection,
    generation: Generation,
    records: &[LogRecord],
) -> anyhow::Result<()> {
    let points: Vec<PricePoint> = records.iter().filter_map(point).collect();
    let points: Vec<&PricePoint> = points.iter().collect();
    if points.is_empty() {
        return Ok(());
    }
    let table = generation.table(TABLES[0]);
    sqlx::query(&format!(
        "INSERT INTO {table} ({COLUMNS})
         SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::timestamptz[], $4::numeric[],
                              $5::text[], $6::text[], $7::text[])
         ON CONFLICT (order_id, check_id) DO NOTHING"
    ))
    .bind(column(&points, |p| p.order_id))
    .bind(column(&points, |p| p.check_id))
    .bind(column(&points, |p| p.observed_at))
    .bind(column(&points, |p| p.price))
    .bind(column(&points, |p| p.currency.clone()))
    .bind(column(&points, |p| p.availability.clone()))
    .bind(column(&points, |p| p.extractor.clone()))
    .execute(connection)
    .await?;
    Ok(())
}
