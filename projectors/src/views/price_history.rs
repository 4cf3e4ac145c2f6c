//! `price_history`: every price an order was seen at, when it changed.

use chrono::{DateTime, Utc};
use orders_domain::order::OrderEvent;
use rust_decimal::Decimal;
use sqlx::{PgConnection, Row as _};
use uuid::Uuid;

use crate::checkpoint::Generation;
use crate::record::{Event, LogRecord};

pub(crate) const TABLES: &[&str] = &["view_price_history"];

/// One observed price change of an order.
#[derive(Debug, Clone, PartialEq)]
pub struct PricePoint {
    pub order_id: Uuid,
    /// The order aggregate's sequence of the event: orders the history.
    pub sequence: i64,
    pub observed_at: DateTime<Utc>,
    pub price: Decimal,
    pub currency: String,
    pub previous: Option<Decimal>,
    /// Which extractor found the price.
    pub extractor: Option<String>,
}

/// The point an event adds to the history, if any.
pub fn point(record: &LogRecord) -> Option<PricePoint> {
    let Event::Order(OrderEvent::PriceChanged {
        previous,
        price,
        extractor,
        ..
    }) = &record.event
    else {
        return None;
    };
    Some(PricePoint {
        order_id: record.aggregate_uuid(),
        sequence: record.sequence,
        observed_at: record.recorded_at,
        price: price.amount(),
        currency: price.currency().code().to_owned(),
        previous: previous.as_ref().map(|money| money.amount()),
        extractor: extractor.clone(),
    })
}

pub(crate) const COLUMNS: &str =
    "order_id, sequence, observed_at, price, currency, previous, extractor";

pub(crate) fn from_row(row: &sqlx::postgres::PgRow) -> sqlx::Result<PricePoint> {
    Ok(PricePoint {
        order_id: row.try_get("order_id")?,
        sequence: row.try_get("sequence")?,
        observed_at: row.try_get("observed_at")?,
        price: row.try_get("price")?,
        currency: row.try_get("currency")?,
        previous: row.try_get("previous")?,
        extractor: row.try_get("extractor")?,
    })
}

pub(crate) async fn apply(
    connection: &mut PgConnection,
    generation: Generation,
    records: &[LogRecord],
) -> anyhow::Result<()> {
    let points: Vec<PricePoint> = records.iter().filter_map(point).collect();
    if points.is_empty() {
        return Ok(());
    }
    let table = generation.table(TABLES[0]);
    sqlx::query(&format!(
        "INSERT INTO {table} ({COLUMNS})
         SELECT * FROM UNNEST($1::uuid[], $2::int8[], $3::timestamptz[], $4::numeric[],
                              $5::text[], $6::numeric[], $7::text[])
         ON CONFLICT (order_id, sequence) DO NOTHING"
    ))
    .bind(points.iter().map(|p| p.order_id).collect::<Vec<_>>())
    .bind(points.iter().map(|p| p.sequence).collect::<Vec<_>>())
    .bind(points.iter().map(|p| p.observed_at).collect::<Vec<_>>())
    .bind(points.iter().map(|p| p.price).collect::<Vec<_>>())
    .bind(
        points
            .iter()
            .map(|p| p.currency.clone())
            .collect::<Vec<_>>(),
    )
    .bind(points.iter().map(|p| p.previous).collect::<Vec<_>>())
    .bind(
        points
            .iter()
            .map(|p| p.extractor.clone())
            .collect::<Vec<_>>(),
    )
    .execute(connection)
    .await?;
    Ok(())
}
