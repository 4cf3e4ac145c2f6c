//! The `price_history` view's table of checks: every price check of an order, with
//! its outcome (`pending`, `ok`, `no_price`, `failed`) and, when it failed, why.
//! A check's row is inserted when it is requested and completed by its result; a
//! batch holding both writes the finished row at once.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use orders_domain::price_check::PriceCheckEvent;
use rust_decimal::Decimal;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::checkpoint::Generation;
use crate::record::{Event, LogRecord};
use crate::views::folded::column;

pub(crate) const TABLE: &str = "view_order_checks";

/// One price check of an order.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckRow {
    pub check_id: Uuid,
    pub order_id: Uuid,
    pub requested_at: DateTime<Utc>,
    /// `scheduled` or `manual`.
    pub trigger: String,
    pub outcome: String,
    pub finished_at: Option<DateTime<Utc>>,
    pub price: Option<Decimal>,
    pub currency: String,
    /// Why it failed (`timeout`, `no_price`, ...), with the detail if any.
    pub reason: Option<String>,
    pub detail: Option<String>,
}

/// A check's result, for a check requested in an earlier batch.
#[derive(Debug, Clone)]
struct Finish {
    outcome: &'static str,
    finished_at: DateTime<Utc>,
    price: Option<Decimal>,
    reason: Option<String>,
    detail: Option<String>,
}

fn finish_of(record: &LogRecord) -> Option<Finish> {
    match &record.event {
        Event::PriceCheck(PriceCheckEvent::PriceObserved { price, .. }) => Some(Finish {
            outcome: if price.is_some() { "ok" } else { "no_price" },
            finished_at: record.recorded_at,
            price: price.as_ref().map(|price| price.amount()),
            reason: None,
            detail: None,
        }),
        Event::PriceCheck(PriceCheckEvent::PriceCheckFailed { reason, detail, .. }) => {
            Some(Finish {
                outcome: "failed",
                finished_at: record.recorded_at,
                price: None,
                reason: Some(reason.as_str().to_owned()),
                detail: detail.clone(),
            })
        }
        _ => None,
    }
}

pub(crate) async fn apply(
    connection: &mut PgConnection,
    generation: Generation,
    records: &[LogRecord],
) -> anyhow::Result<()> {
    let mut requested: BTreeMap<Uuid, CheckRow> = BTreeMap::new();
    let mut finished: BTreeMap<Uuid, Finish> = BTreeMap::new();
    for record in records {
        let check_id = record.aggregate_uuid();
        if let Event::PriceCheck(PriceCheckEvent::PriceCheckRequested {
            order_id,
            currency,
            trigger,
            ..
        }) = &record.event
        {
            requested.insert(
                check_id,
                CheckRow {
                    check_id,
                    order_id: order_id.as_uuid(),
                    requested_at: record.recorded_at,
                    trigger: trigger.as_str().to_owned(),
                    outcome: "pending".to_owned(),
                    finished_at: None,
                    price: None,
                    currency: currency.code().to_owned(),
                    reason: None,
                    detail: None,
                },
            );
        } else if let Some(finish) = finish_of(record) {
            match requested.get_mut(&check_id) {
                Some(row) => {
                    row.outcome = finish.outcome.to_owned();
                    row.finished_at = Some(finish.finished_at);
                    row.price = finish.price;
                    row.reason = finish.reason;
                    row.detail = finish.detail;
                }
                None => {
                    finished.insert(check_id, finish);
                }
            }
        }
    }
    let table = generation.table(TABLE);
    if !requested.is_empty() {
        let rows: Vec<&CheckRow> = requested.values().collect();
        sqlx::query(&format!(
            "INSERT INTO {table} (check_id, order_id, requested_at, trigger, outcome, finished_at,
                                  price, currency, reason, detail)
             SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::timestamptz[], $4::text[], $5::text[],
                                  $6::timestamptz[], $7::numeric[], $8::text[], $9::text[], $10::text[])
             ON CONFLICT (check_id) DO NOTHING"
        ))
        .bind(column(&rows, |r| r.check_id))
        .bind(column(&rows, |r| r.order_id))
        .bind(column(&rows, |r| r.requested_at))
        .bind(column(&rows, |r| r.trigger.clone()))
        .bind(column(&rows, |r| r.outcome.clone()))
        .bind(column(&rows, |r| r.finished_at))
        .bind(column(&rows, |r| r.price))
        .bind(column(&rows, |r| r.currency.clone()))
        .bind(column(&rows, |r| r.reason.clone()))
        .bind(column(&rows, |r| r.detail.clone()))
        .execute(&mut *connection)
        .await?;
    }
    if !finished.is_empty() {
        let ids: Vec<Uuid> = finished.keys().copied().collect();
        let finishes: Vec<&Finish> = finished.values().collect();
        sqlx::query(&format!(
            "UPDATE {table} AS checks
                SET outcome = result.outcome, finished_at = result.finished_at,
                    price = result.price, reason = result.reason, detail = result.detail
               FROM UNNEST($1::uuid[], $2::text[], $3::timestamptz[], $4::numeric[], $5::text[],
                           $6::text[]) AS result (check_id, outcome, finished_at, price, reason, detail)
              WHERE checks.check_id = result.check_id"
        ))
        .bind(ids)
        .bind(column(&finishes, |f| f.outcome.to_owned()))
        .bind(column(&finishes, |f| f.finished_at))
        .bind(column(&finishes, |f| f.price))
        .bind(column(&finishes, |f| f.reason.clone()))
        .bind(column(&finishes, |f| f.detail.clone()))
        .execute(&mut *connection)
        .await?;
    }
    Ok(())
}
