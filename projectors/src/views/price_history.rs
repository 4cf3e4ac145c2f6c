//! `price_history`: every price an order was observed at, one row per check that
//! saw a price (failed checks and checks that saw no price add none), and every
//! alert an order fired (its `TargetReached` events). Both only insert. Its third
//! table, every check with its outcome, is `views::checks`.

use chrono::{DateTime, Utc};
use orders_domain::order::OrderEvent;
use orders_domain::price_check::PriceCheckEvent;
use rust_decimal::Decimal;
use sqlx::{PgConnection, Row as _};
use uuid::Uuid;

use crate::checkpoint::Generation;
use crate::record::{Event, LogRecord};
use crate::views::folded::column;

pub(crate) const TABLES: &[&str] = &[
    "view_price_history",
    "view_order_alerts",
    crate::views::checks::TABLE,
];

/// An alert an order fired: its price reached the target.
#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    pub order_id: Uuid,
    /// The order aggregate's sequence of the event.
    pub sequence: i64,
    pub fired_at: DateTime<Utc>,
    pub price: Decimal,
    /// The price known before the check that fired it.
    pub previous: Option<Decimal>,
    pub target: Decimal,
    pub currency: String,
}

/// The alert an event records, if any.
pub fn alert(record: &LogRecord) -> Option<Alert> {
    let Event::Order(OrderEvent::TargetReached {
        previous,
        price,
        target,
        ..
    }) = &record.event
    else {
        return None;
    };
    Some(Alert {
        order_id: record.aggregate_uuid(),
        sequence: record.sequence,
        fired_at: record.recorded_at,
        price: price.amount(),
        previous: previous.as_ref().map(|money| money.amount()),
        target: target.amount(),
        currency: price.currency().code().to_owned(),
    })
}

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
    insert_alerts(connection, generation, records).await?;
    crate::views::checks::apply(connection, generation, records).await?;
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

async fn insert_alerts(
    connection: &mut PgConnection,
    generation: Generation,
    records: &[LogRecord],
) -> anyhow::Result<()> {
    let alerts: Vec<Alert> = records.iter().filter_map(alert).collect();
    let alerts: Vec<&Alert> = alerts.iter().collect();
    if alerts.is_empty() {
        return Ok(());
    }
    let table = generation.table(TABLES[1]);
    sqlx::query(&format!(
        "INSERT INTO {table} (order_id, sequence, fired_at, price, previous, target, currency)
         SELECT * FROM UNNEST($1::uuid[], $2::int8[], $3::timestamptz[], $4::numeric[],
                              $5::numeric[], $6::numeric[], $7::text[])
         ON CONFLICT (order_id, sequence) DO NOTHING"
    ))
    .bind(column(&alerts, |a| a.order_id))
    .bind(column(&alerts, |a| a.sequence))
    .bind(column(&alerts, |a| a.fired_at))
    .bind(column(&alerts, |a| a.price))
    .bind(column(&alerts, |a| a.previous))
    .bind(column(&alerts, |a| a.target))
    .bind(column(&alerts, |a| a.currency.clone()))
    .execute(&mut *connection)
    .await?;
    Ok(())
}
