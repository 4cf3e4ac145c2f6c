//! `orders`: one row per order, with its target, status, last price and availability.

use std::collections::{BTreeSet, HashMap};

use chrono::{DateTime, Utc};
use orders_domain::order::{Availability, OrderEvent, OrderStatus};
use rust_decimal::Decimal;
use sqlx::{PgConnection, Row as _};
use uuid::Uuid;

use crate::checkpoint::Generation;
use crate::record::{Event, LogRecord};
use crate::views::OutOfOrder;

pub(crate) const TABLES: &[&str] = &["view_orders"];

/// One row of the `orders` view.
#[derive(Debug, Clone, PartialEq)]
pub struct OrderRow {
    pub order_id: Uuid,
    pub owner_id: Uuid,
    pub url: String,
    pub target_price: Decimal,
    /// ISO 4217.
    pub currency: String,
    pub check_interval_secs: i32,
    pub selector: Option<String>,
    /// `active`, `paused` or `cancelled`.
    pub status: String,
    /// Whether reaching the target would alert.
    pub armed: bool,
    /// In the order's currency.
    pub last_price: Option<Decimal>,
    /// `InStock`, ..., `Unknown`.
    pub availability: String,
    pub placed_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// The order aggregate's last sequence applied.
    pub version: i64,
}

/// The row after one event (`None` before placement). Mirrors what the order
/// aggregate keeps, so the view and the aggregate cannot disagree.
pub fn fold(
    row: Option<OrderRow>,
    record: &LogRecord,
    event: &OrderEvent,
) -> Result<OrderRow, OutOfOrder> {
    let mut row = match (row, event) {
        (
            None,
            OrderEvent::OrderPlaced {
                order_id,
                owner,
                url,
                target,
                check_interval_secs,
                selector,
            },
        ) => OrderRow {
            order_id: order_id.as_uuid(),
            owner_id: owner.as_uuid(),
            url: url.as_str().to_owned(),
            target_price: target.amount(),
            currency: target.currency().code().to_owned(),
            check_interval_secs: i32::try_from(*check_interval_secs).unwrap_or(i32::MAX),
            selector: selector.clone(),
            status: OrderStatus::Active.as_str().to_owned(),
            armed: true,
            last_price: None,
            availability: Availability::Unknown.as_str().to_owned(),
            placed_at: record.recorded_at,
            updated_at: record.recorded_at,
            version: record.sequence,
        },
        (None, _) | (Some(_), OrderEvent::OrderPlaced { .. }) => {
            return Err(OutOfOrder::new(record))
        }
        (Some(row), _) => row,
    };
    match event {
        OrderEvent::OrderPlaced { .. } => {}
        OrderEvent::TargetChanged { target, .. } => {
            row.target_price = target.amount();
            row.armed = true;
        }
        OrderEvent::OrderPaused => row.status = OrderStatus::Paused.as_str().to_owned(),
        OrderEvent::OrderResumed => row.status = OrderStatus::Active.as_str().to_owned(),
        OrderEvent::OrderCancelled => row.status = OrderStatus::Cancelled.as_str().to_owned(),
        OrderEvent::PriceChanged { price, .. } => row.last_price = Some(price.amount()),
        OrderEvent::TargetReached { .. } => row.armed = false,
        OrderEvent::Rearmed { .. } => row.armed = true,
        OrderEvent::BecameUnavailable { availability, .. }
        | OrderEvent::BecameAvailable { availability, .. } => {
            row.availability = availability.as_str().to_owned();
        }
    }
    row.updated_at = record.recorded_at;
    row.version = record.sequence;
    Ok(row)
}

pub(crate) const COLUMNS: &str = "order_id, owner_id, url, target_price, currency, \
    check_interval_secs, selector, status, armed, last_price, availability, placed_at, \
    updated_at, version";

pub(crate) fn from_row(row: &sqlx::postgres::PgRow) -> sqlx::Result<OrderRow> {
    Ok(OrderRow {
        order_id: row.try_get("order_id")?,
        owner_id: row.try_get("owner_id")?,
        url: row.try_get("url")?,
        target_price: row.try_get("target_price")?,
        currency: row.try_get("currency")?,
        check_interval_secs: row.try_get("check_interval_secs")?,
        selector: row.try_get("selector")?,
        status: row.try_get("status")?,
        armed: row.try_get("armed")?,
        last_price: row.try_get("last_price")?,
        availability: row.try_get("availability")?,
        placed_at: row.try_get("placed_at")?,
        updated_at: row.try_get("updated_at")?,
        version: row.try_get("version")?,
    })
}

pub(crate) async fn apply(
    connection: &mut PgConnection,
    generation: Generation,
    records: &[LogRecord],
) -> anyhow::Result<()> {
    let table = generation.table(TABLES[0]);
    let ids: Vec<Uuid> = records
        .iter()
        .filter(|record| matches!(record.event, Event::Order(_)))
        .map(LogRecord::aggregate_uuid)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    if ids.is_empty() {
        return Ok(());
    }
    let mut rows: HashMap<Uuid, OrderRow> = HashMap::new();
    for row in sqlx::query(&format!(
        "SELECT {COLUMNS} FROM {table} WHERE order_id = ANY($1)"
    ))
    .bind(&ids)
    .fetch_all(&mut *connection)
    .await?
    {
        let row = from_row(&row)?;
        rows.insert(row.order_id, row);
    }
    let mut touched = BTreeSet::new();
    for record in records {
        let Event::Order(event) = &record.event else {
            continue;
        };
        let id = record.aggregate_uuid();
        let next = fold(rows.remove(&id), record, event)?;
        rows.insert(id, next);
        touched.insert(id);
    }
    let written: Vec<&OrderRow> = touched.iter().filter_map(|id| rows.get(id)).collect();
    sqlx::query(&format!(
        "INSERT INTO {table} ({COLUMNS})
         SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::numeric[], $5::text[],
                              $6::int4[], $7::text[], $8::text[], $9::bool[], $10::numeric[],
                              $11::text[], $12::timestamptz[], $13::timestamptz[], $14::int8[])
         ON CONFLICT (order_id) DO UPDATE SET
                owner_id = EXCLUDED.owner_id, url = EXCLUDED.url,
                target_price = EXCLUDED.target_price, currency = EXCLUDED.currency,
                check_interval_secs = EXCLUDED.check_interval_secs, selector = EXCLUDED.selector,
                status = EXCLUDED.status, armed = EXCLUDED.armed, last_price = EXCLUDED.last_price,
                availability = EXCLUDED.availability, placed_at = EXCLUDED.placed_at,
                updated_at = EXCLUDED.updated_at, version = EXCLUDED.version"
    ))
    .bind(written.iter().map(|r| r.order_id).collect::<Vec<_>>())
    .bind(written.iter().map(|r| r.owner_id).collect::<Vec<_>>())
    .bind(written.iter().map(|r| r.url.clone()).collect::<Vec<_>>())
    .bind(written.iter().map(|r| r.target_price).collect::<Vec<_>>())
    .bind(
        written
            .iter()
            .map(|r| r.currency.clone())
            .collect::<Vec<_>>(),
    )
    .bind(
        written
            .iter()
            .map(|r| r.check_interval_secs)
            .collect::<Vec<_>>(),
    )
    .bind(
        written
            .iter()
            .map(|r| r.selector.clone())
            .collect::<Vec<_>>(),
    )
    .bind(written.iter().map(|r| r.status.clone()).collect::<Vec<_>>())
    .bind(written.iter().map(|r| r.armed).collect::<Vec<_>>())
    .bind(written.iter().map(|r| r.last_price).collect::<Vec<_>>())
    .bind(
        written
            .iter()
            .map(|r| r.availability.clone())
            .collect::<Vec<_>>(),
    )
    .bind(written.iter().map(|r| r.placed_at).collect::<Vec<_>>())
    .bind(written.iter().map(|r| r.updated_at).collect::<Vec<_>>())
    .bind(written.iter().map(|r| r.version).collect::<Vec<_>>())
    .execute(&mut *connection)
    .await?;
    Ok(())
}
