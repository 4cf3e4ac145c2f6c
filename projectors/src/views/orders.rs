//! `orders`: one row per order, with its target, status, last price and availability.

use chrono::{DateTime, Utc};
use orders_domain::order::{Availability, OrderEvent, OrderStatus};
use orders_domain::price_check::PriceCheckEvent;
use rust_decimal::Decimal;
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Row as _};
use uuid::Uuid;

use crate::record::{Event, LogRecord};
use crate::views::folded::{column, FoldedView};
use crate::views::OutOfOrder;

pub(crate) const TABLES: &[&str] = &["view_orders"];

/// One row of the `orders` view.
#[derive(Debug, Clone, PartialEq)]
pub struct OrderRow {
    pub order_id: Uuid,
    pub owner_id: Uuid,
    /// The page it follows; `None` for an order on a catalog product.
    pub url: Option<String>,
    /// The catalog product it follows; `None` for a page.
    pub product_id: Option<Uuid>,
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
    /// The product's title, from the last check that read one.
    pub title: Option<String>,
    /// When the last check's result was recorded.
    pub last_checked_at: Option<DateTime<Utc>>,
    /// Why the last check failed (`timeout`, `no_price`, ...); `None` after a good one.
    pub last_error: Option<String>,
    pub last_error_detail: Option<String>,
    /// Failed checks since the last good one.
    pub consecutive_failures: i32,
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
                product_id,
                target,
                check_interval_secs,
                selector,
            },
        ) => OrderRow {
            order_id: order_id.as_uuid(),
            owner_id: owner.as_uuid(),
            url: url.as_ref().map(|url| url.as_str().to_owned()),
            product_id: product_id.map(|id| id.as_uuid()),
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
            title: None,
            last_checked_at: None,
            last_error: None,
            last_error_detail: None,
            consecutive_failures: 0,
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

/// What a check's result tells the order's row (its owner reads it in
/// `GET /orders/{id}`): the title, the availability, when it was checked, the last
/// error and how many checks in a row failed. The aggregate's version is not touched: these are not
/// order events.
pub fn fold_check(mut row: OrderRow, record: &LogRecord, event: &PriceCheckEvent) -> OrderRow {
    match event {
        PriceCheckEvent::PriceCheckRequested { .. } => return row,
        PriceCheckEvent::PriceObserved {
            title,
            availability,
            ..
        } => {
            if title.is_some() {
                row.title = title.clone();
            }
            // What the page said at the last check (the order's own events record
            // only the changes between available and unavailable).
            row.availability = availability.as_str().to_owned();
            row.last_error = None;
            row.last_error_detail = None;
            row.consecutive_failures = 0;
        }
        PriceCheckEvent::PriceCheckFailed { reason, detail, .. } => {
            row.last_error = Some(reason.as_str().to_owned());
            row.last_error_detail = detail.clone();
            row.consecutive_failures = row.consecutive_failures.saturating_add(1);
        }
    }
    row.last_checked_at = Some(record.recorded_at);
    row
}

/// The order a record concerns: its own id for order events, the checked order's
/// for price-check events, none for the others.
fn order_of(record: &LogRecord) -> Option<Uuid> {
    match &record.event {
        Event::Order(_) => Some(record.aggregate_uuid()),
        Event::PriceCheck(
            PriceCheckEvent::PriceObserved { order_id, .. }
            | PriceCheckEvent::PriceCheckFailed { order_id, .. },
        ) => Some(order_id.as_uuid()),
        _ => None,
    }
}

pub(crate) const COLUMNS: &str = "order_id, owner_id, url, target_price, currency, \
    check_interval_secs, selector, status, armed, last_price, availability, placed_at, \
    updated_at, version, title, last_checked_at, last_error, last_error_detail, \
    consecutive_failures, product_id";

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
        title: row.try_get("title")?,
        last_checked_at: row.try_get("last_checked_at")?,
        last_error: row.try_get("last_error")?,
        last_error_detail: row.try_get("last_error_detail")?,
        consecutive_failures: row.try_get("consecutive_failures")?,
        product_id: row.try_get("product_id")?,
    })
}

/// The `orders` view: one row per order, folded from the order's events and its
/// checks' results.
pub(crate) struct Orders;

impl FoldedView for Orders {
    type Row = OrderRow;
    const TABLE: &'static str = TABLES[0];
    const KEY: &'static str = "order_id";
    const COLUMNS: &'static str = COLUMNS;

    fn key_of(record: &LogRecord) -> Option<Uuid> {
        order_of(record)
    }

    fn key(row: &OrderRow) -> Uuid {
        row.order_id
    }

    fn from_row(row: &PgRow) -> sqlx::Result<OrderRow> {
        from_row(row)
    }

    fn fold(row: Option<OrderRow>, record: &LogRecord) -> Result<Option<OrderRow>, OutOfOrder> {
        match (&record.event, row) {
            (Event::Order(event), row) => fold(row, record, event).map(Some),
            (Event::PriceCheck(event), Some(row)) => Ok(Some(fold_check(row, record, event))),
            // A check follows its order's placement in the log; a row that is not
            // there was never placed in this view (nothing to show).
            (_, row) => Ok(row),
        }
    }

    async fn upsert(
        connection: &mut PgConnection,
        table: &str,
        written: &[&OrderRow],
    ) -> sqlx::Result<()> {
        sqlx::query(&format!(
            "INSERT INTO {table} ({COLUMNS})
             SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::numeric[], $5::text[],
                                  $6::int4[], $7::text[], $8::text[], $9::bool[], $10::numeric[],
                                  $11::text[], $12::timestamptz[], $13::timestamptz[], $14::int8[],
                                  $15::text[], $16::timestamptz[], $17::text[], $18::text[],
                                  $19::int4[], $20::uuid[])
             ON CONFLICT (order_id) DO UPDATE SET
                    owner_id = EXCLUDED.owner_id, url = EXCLUDED.url,
                    target_price = EXCLUDED.target_price, currency = EXCLUDED.currency,
                    check_interval_secs = EXCLUDED.check_interval_secs,
                    selector = EXCLUDED.selector, status = EXCLUDED.status,
                    armed = EXCLUDED.armed, last_price = EXCLUDED.last_price,
                    availability = EXCLUDED.availability, placed_at = EXCLUDED.placed_at,
                    updated_at = EXCLUDED.updated_at, version = EXCLUDED.version,
                    title = EXCLUDED.title, last_checked_at = EXCLUDED.last_checked_at,
                    last_error = EXCLUDED.last_error,
                    last_error_detail = EXCLUDED.last_error_detail,
                    consecutive_failures = EXCLUDED.consecutive_failures,
                    product_id = EXCLUDED.product_id"
        ))
        .bind(column(written, |r| r.order_id))
        .bind(column(written, |r| r.owner_id))
        .bind(column(written, |r| r.url.clone()))
        .bind(column(written, |r| r.target_price))
        .bind(column(written, |r| r.currency.clone()))
        .bind(column(written, |r| r.check_interval_secs))
        .bind(column(written, |r| r.selector.clone()))
        .bind(column(written, |r| r.status.clone()))
        .bind(column(written, |r| r.armed))
        .bind(column(written, |r| r.last_price))
        .bind(column(written, |r| r.availability.clone()))
        .bind(column(written, |r| r.placed_at))
        .bind(column(written, |r| r.updated_at))
        .bind(column(written, |r| r.version))
        .bind(column(written, |r| r.title.clone()))
        .bind(column(written, |r| r.last_checked_at))
        .bind(column(written, |r| r.last_error.clone()))
        .bind(column(written, |r| r.last_error_detail.clone()))
        .bind(column(written, |r| r.consecutive_failures))
        .bind(column(written, |r| r.product_id))
        .execute(connection)
        .await?;
        Ok(())
    }
}
