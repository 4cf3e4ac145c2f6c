//! `analytics`: the shop's and the tracker's figures per UTC day of the events'
//! times, and how many purchases are in each status now.
//!
//! Per day: purchases placed, confirmed, rejected, cancelled, shipped and delivered;
//! revenue per currency (never converted: a confirmation adds its total on its day,
//! the cancellation of a confirmed purchase subtracts it on the cancellation's day,
//! so past days never change); tracking orders placed, price checks done and failed,
//! alerts fired. Each purchase's status and confirmed total are kept beside them,
//! since what an event changes depends on them (a cancellation subtracts revenue only
//! if the purchase was confirmed; a change of status leaves the status it had).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use anyhow::Context as _;
use chrono::NaiveDate;
use orders_domain::order::OrderEvent;
use orders_domain::price_check::PriceCheckEvent;
use orders_domain::purchase::{PurchaseEvent, PurchaseStatus};
use rust_decimal::Decimal;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::checkpoint::Generation;
use crate::record::{Event, LogRecord};
use crate::views::OutOfOrder;

pub(crate) const TABLES: &[&str] = &[
    "view_analytics_daily",
    "view_analytics_purchases",
    "view_analytics_status",
];

/// The daily metric of revenue (one row per currency).
pub const REVENUE: &str = "revenue";

/// The daily metrics of purchases: each counts the purchases that reached a status
/// that day (`purchases_placed` those placed, that is, pending).
pub const PURCHASE_METRICS: [&str; 6] = [
    "purchases_placed",
    "purchases_confirmed",
    "purchases_rejected",
    "purchases_cancelled",
    "purchases_shipped",
    "purchases_delivered",
];

/// The daily metrics of the tracker: tracking orders placed, price checks that
/// observed the page and that failed, alerts fired (targets reached).
pub const TRACKING_METRICS: [&str; 4] = ["orders_placed", "checks_done", "checks_failed", "alerts"];

/// The daily metric that counts the purchases reaching `status`.
pub fn purchase_metric(status: PurchaseStatus) -> &'static str {
    match status {
        PurchaseStatus::Pending => PURCHASE_METRICS[0],
        PurchaseStatus::Confirmed => PURCHASE_METRICS[1],
        PurchaseStatus::Rejected => PURCHASE_METRICS[2],
        PurchaseStatus::Cancelled => PURCHASE_METRICS[3],
        PurchaseStatus::Shipped => PURCHASE_METRICS[4],
        PurchaseStatus::Delivered => PURCHASE_METRICS[5],
    }
}

/// What the view keeps of one purchase.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PurchaseFigures {
    pub status: PurchaseStatus,
    /// The confirmed total and its currency.
    pub total: Option<(Decimal, String)>,
}

/// What one record changes: amounts added to metrics of its day (`currency` is `""`
/// for counts), and to the number of purchases in each status.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Deltas {
    pub daily: Vec<(&'static str, String, Decimal)>,
    pub statuses: Vec<(PurchaseStatus, i64)>,
}

fn counted(metric: &'static str) -> Deltas {
    Deltas {
        daily: vec![(metric, String::new(), Decimal::ONE)],
        statuses: Vec::new(),
    }
}

/// What `record` changes, given what the view knows of its purchase (`before`), and
/// what it knows after (`None`: the record is not a purchase's).
pub fn changes(
    record: &LogRecord,
    before: Option<&PurchaseFigures>,
) -> Result<(Deltas, Option<PurchaseFigures>), OutOfOrder> {
    let event = match &record.event {
        Event::Purchase(event) => event,
        Event::Order(OrderEvent::OrderPlaced { .. }) => {
            return Ok((counted("orders_placed"), None))
        }
        Event::Order(OrderEvent::TargetReached { .. }) => return Ok((counted("alerts"), None)),
        Event::PriceCheck(PriceCheckEvent::PriceObserved { .. }) => {
            return Ok((counted("checks_done"), None))
        }
        Event::PriceCheck(PriceCheckEvent::PriceCheckFailed { .. }) => {
            return Ok((counted("checks_failed"), None))
        }
        _ => return Ok((Deltas::default(), None)),
    };
    let (after, mut deltas) = match (before, event) {
        (None, PurchaseEvent::PurchasePlaced { .. }) => {
            let after = PurchaseFigures {
                status: PurchaseStatus::Pending,
                total: None,
            };
            (after, Deltas::default())
        }
        (None, _) | (Some(_), PurchaseEvent::PurchasePlaced { .. }) => {
            return Err(OutOfOrder::new(record))
        }
        (Some(before), event) => {
            let mut after = before.clone();
            let mut deltas = Deltas {
                statuses: vec![(before.status, -1)],
                daily: Vec::new(),
            };
            match event {
                PurchaseEvent::PurchaseConfirmed { total, .. } => {
                    let currency = total.currency().code().to_owned();
                    deltas
                        .daily
                        .push((REVENUE, currency.clone(), total.amount()));
                    after.total = Some((total.amount(), currency));
                    after.status = PurchaseStatus::Confirmed;
                }
                PurchaseEvent::PurchaseCancelled { .. } => {
                    if let (PurchaseStatus::Confirmed, Some((total, currency))) =
                        (before.status, &before.total)
                    {
                        deltas.daily.push((REVENUE, currency.clone(), -*total));
                    }
                    after.status = PurchaseStatus::Cancelled;
                }
                PurchaseEvent::PurchaseRejected { .. } => after.status = PurchaseStatus::Rejected,
                PurchaseEvent::PurchaseShipped => after.status = PurchaseStatus::Shipped,
                PurchaseEvent::PurchaseDelivered => after.status = PurchaseStatus::Delivered,
                PurchaseEvent::PurchasePlaced { .. } => {}
            }
            (after, deltas)
        }
    };
    deltas.statuses.push((after.status, 1));
    deltas
        .daily
        .push((purchase_metric(after.status), String::new(), Decimal::ONE));
    Ok((deltas, Some(after)))
}

/// The figures of the purchases `records` concern, from `table`.
async fn load_purchases(
    connection: &mut PgConnection,
    table: &str,
    records: &[LogRecord],
) -> anyhow::Result<HashMap<Uuid, PurchaseFigures>> {
    let ids: Vec<Uuid> = records
        .iter()
        .filter(|record| matches!(record.event, Event::Purchase(_)))
        .map(LogRecord::aggregate_uuid)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    let rows: Vec<(Uuid, String, Option<Decimal>, Option<String>)> = sqlx::query_as(&format!(
        "SELECT purchase_id, status, total, currency FROM {table} WHERE purchase_id = ANY($1)"
    ))
    .bind(&ids)
    .fetch_all(&mut *connection)
    .await?;
    rows.into_iter()
        .map(|(id, status, total, currency)| {
            let status = PurchaseStatus::parse(&status)
                .with_context(|| format!("purchase {id} has the unknown status {status:?}"))?;
            let figures = PurchaseFigures {
                status,
                total: total.zip(currency),
            };
            Ok((id, figures))
        })
        .collect()
}

pub(crate) async fn apply(
    connection: &mut PgConnection,
    generation: Generation,
    records: &[LogRecord],
) -> anyhow::Result<()> {
    let purchases_table = generation.table(TABLES[1]);
    let mut purchases = load_purchases(connection, &purchases_table, records).await?;
    let mut daily: BTreeMap<(NaiveDate, &'static str, String), Decimal> = BTreeMap::new();
    let mut statuses: BTreeMap<&'static str, i64> = BTreeMap::new();
    let mut changed: BTreeSet<Uuid> = BTreeSet::new();
    for record in records {
        let id = record.aggregate_uuid();
        let before = match record.event {
            Event::Purchase(_) => purchases.get(&id),
            _ => None,
        };
        let (deltas, after) = changes(record, before)?;
        let day = record.recorded_at.date_naive();
        for (metric, currency, value) in deltas.daily {
            *daily.entry((day, metric, currency)).or_default() += value;
        }
        for (status, delta) in deltas.statuses {
            *statuses.entry(status.as_str()).or_default() += delta;
        }
        if let Some(after) = after {
            purchases.insert(id, after);
            changed.insert(id);
        }
    }
    // Every key a batch touched is written, even when its deltas add up to nothing,
    // so the rows are the same however the log is cut into batches (a replay's).
    write_purchases(connection, &purchases_table, &changed, &purchases).await?;
    add_statuses(connection, &generation.table(TABLES[2]), statuses).await?;
    add_daily(connection, &generation.table(TABLES[0]), daily).await
}

async fn write_purchases(
    connection: &mut PgConnection,
    table: &str,
    changed: &BTreeSet<Uuid>,
    purchases: &HashMap<Uuid, PurchaseFigures>,
) -> anyhow::Result<()> {
    let rows: Vec<(Uuid, &PurchaseFigures)> = changed
        .iter()
        .filter_map(|id| purchases.get(id).map(|figures| (*id, figures)))
        .collect();
    if rows.is_empty() {
        return Ok(());
    }
    sqlx::query(&format!(
        "INSERT INTO {table} (purchase_id, status, total, currency)
         SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::numeric[], $4::text[])
         ON CONFLICT (purchase_id) DO UPDATE SET
                status = EXCLUDED.status, total = EXCLUDED.total, currency = EXCLUDED.currency"
    ))
    .bind(rows.iter().map(|(id, _)| *id).collect::<Vec<_>>())
    .bind(
        rows.iter()
            .map(|(_, figures)| figures.status.as_str().to_owned())
            .collect::<Vec<_>>(),
    )
    .bind(
        rows.iter()
            .map(|(_, figures)| figures.total.as_ref().map(|(total, _)| *total))
            .collect::<Vec<_>>(),
    )
    .bind(
        rows.iter()
            .map(|(_, figures)| figures.total.as_ref().map(|(_, currency)| currency.clone()))
            .collect::<Vec<_>>(),
    )
    .execute(&mut *connection)
    .await?;
    Ok(())
}

async fn add_statuses(
    connection: &mut PgConnection,
    table: &str,
    statuses: BTreeMap<&'static str, i64>,
) -> anyhow::Result<()> {
    if statuses.is_empty() {
        return Ok(());
    }
    sqlx::query(&format!(
        "INSERT INTO {table} (status, purchases)
         SELECT * FROM UNNEST($1::text[], $2::int8[])
         ON CONFLICT (status) DO UPDATE SET purchases = {table}.purchases + EXCLUDED.purchases"
    ))
    .bind(
        statuses
            .keys()
            .map(|status| (*status).to_owned())
            .collect::<Vec<_>>(),
    )
    .bind(statuses.values().copied().collect::<Vec<_>>())
    .execute(&mut *connection)
    .await?;
    Ok(())
}

/// Adds each day's amounts to the days they happened on.
async fn add_daily(
    connection: &mut PgConnection,
    table: &str,
    daily: BTreeMap<(NaiveDate, &'static str, String), Decimal>,
) -> anyhow::Result<()> {
    if daily.is_empty() {
        return Ok(());
    }
    let days: Vec<NaiveDate> = daily.keys().map(|(day, _, _)| *day).collect();
    let metrics: Vec<String> = daily.keys().map(|(_, m, _)| (*m).to_owned()).collect();
    let currencies: Vec<String> = daily.keys().map(|(_, _, c)| c.clone()).collect();
    let values: Vec<Decimal> = daily.values().copied().collect();
    sqlx::query(&format!(
        "INSERT INTO {table} (day, metric, currency, value)
         SELECT * FROM UNNEST($1::date[], $2::text[], $3::text[], $4::numeric[])
         ON CONFLICT (day, metric, currency) DO UPDATE SET value = {table}.value + EXCLUDED.value"
    ))
    .bind(days)
    .bind(metrics)
    .bind(currencies)
    .bind(values)
    .execute(&mut *connection)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone as _, Utc};
    use orders_domain::ids::{ProductId, PurchaseId, UserId};
    use orders_domain::money::{Currency, Money};
    use orders_domain::purchase::{Canceller, PricedLine, PurchaseLine};

    use super::*;
    use crate::views::tests::record_at;

    fn jpy(amount: &str) -> Money {
        Money::parse(amount, Currency::from_code("JPY").unwrap()).unwrap()
    }

    fn on_day(day: u32, id: Uuid, sequence: i64, event: PurchaseEvent) -> LogRecord {
        let at = Utc.with_ymd_and_hms(2026, 11, day, 23, 59, 59).unwrap();
        record_at(id, sequence, at, Event::Purchase(event))
    }

    fn placed(id: Uuid) -> PurchaseEvent {
        PurchaseEvent::PurchasePlaced {
            purchase_id: PurchaseId::from_uuid(id),
            owner: UserId::from_uuid(Uuid::from_u128(9)),
            lines: vec![PurchaseLine {
                product_id: ProductId::from_uuid(Uuid::from_u128(1)),
                quantity: 2,
            }],
        }
    }

    fn confirmed() -> PurchaseEvent {
        PurchaseEvent::PurchaseConfirmed {
            lines: vec![PricedLine {
                product_id: ProductId::from_uuid(Uuid::from_u128(1)),
                quantity: 2,
                unit_price: jpy("1500"),
                line_total: jpy("3000"),
            }],
            total: jpy("3000"),
        }
    }

    type Daily = BTreeMap<(NaiveDate, &'static str, String), Decimal>;

    /// Folds the records as `apply` does, in memory: the daily amounts and the
    /// status mix.
    fn totals(records: &[LogRecord]) -> (Daily, BTreeMap<&'static str, i64>) {
        let mut purchases: HashMap<Uuid, PurchaseFigures> = HashMap::new();
        let mut daily = BTreeMap::new();
        let mut statuses = BTreeMap::new();
        for record in records {
            let id = record.aggregate_uuid();
            let (deltas, after) = changes(record, purchases.get(&id)).unwrap();
            for (metric, currency, value) in deltas.daily {
                *daily
                    .entry((record.recorded_at.date_naive(), metric, currency))
                    .or_insert(Decimal::ZERO) += value;
            }
            for (status, delta) in deltas.statuses {
                *statuses.entry(status.as_str()).or_insert(0) += delta;
            }
            if let Some(after) = after {
                purchases.insert(id, after);
            }
        }
        statuses.retain(|_, count| *count != 0);
        (daily, statuses)
    }

    fn day(day: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 11, day).unwrap()
    }

    #[test]
    fn a_cancellation_subtracts_revenue_on_its_own_day_and_only_if_confirmed() {
        let (kept, cancelled, never_confirmed) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        let records = [
            on_day(1, kept, 1, placed(kept)),
            on_day(1, cancelled, 1, placed(cancelled)),
            on_day(1, never_confirmed, 1, placed(never_confirmed)),
            on_day(2, kept, 2, confirmed()),
            on_day(2, cancelled, 2, confirmed()),
            on_day(
                3,
                cancelled,
                3,
                PurchaseEvent::PurchaseCancelled {
                    by: Canceller::Administrator,
                },
            ),
            on_day(
                3,
                never_confirmed,
                2,
                PurchaseEvent::PurchaseCancelled {
                    by: Canceller::Buyer,
                },
            ),
            on_day(4, kept, 3, PurchaseEvent::PurchaseShipped),
        ];
        let (daily, statuses) = totals(&records);
        let at = |d: u32, metric: &'static str, currency: &str| {
            daily
                .get(&(day(d), metric, currency.to_owned()))
                .copied()
                .unwrap_or_default()
        };
        assert_eq!(at(1, "purchases_placed", ""), Decimal::from(3));
        assert_eq!(at(2, "purchases_confirmed", ""), Decimal::from(2));
        assert_eq!(
            at(2, REVENUE, "JPY"),
            Decimal::from(6000),
            "both confirmations"
        );
        assert_eq!(at(3, "purchases_cancelled", ""), Decimal::from(2));
        assert_eq!(
            at(3, REVENUE, "JPY"),
            Decimal::from(-3000),
            "only the confirmed one's total, on the day it was cancelled"
        );
        assert_eq!(at(4, "purchases_shipped", ""), Decimal::from(1));
        assert_eq!(at(4, REVENUE, "JPY"), Decimal::ZERO);
        assert_eq!(
            statuses.into_iter().collect::<Vec<_>>(),
            [("cancelled", 2), ("shipped", 1)]
        );
    }

    #[test]
    fn the_trackers_events_count_on_their_day_and_a_stray_purchase_event_is_refused() {
        let at = Utc.with_ymd_and_hms(2026, 11, 5, 0, 0, 0).unwrap();
        let check = record_at(
            Uuid::now_v7(),
            2,
            at,
            Event::PriceCheck(PriceCheckEvent::PriceCheckFailed {
                order_id: orders_domain::ids::OrderId::from_uuid(Uuid::now_v7()),
                reason: orders_domain::price_check::CheckFailureReason::Timeout,
                detail: None,
                candidates: Vec::new(),
                fetch: Default::default(),
            }),
        );
        let (deltas, after) = changes(&check, None).unwrap();
        assert_eq!(
            deltas.daily,
            [("checks_failed", String::new(), Decimal::ONE)]
        );
        assert!(deltas.statuses.is_empty());
        assert_eq!(after, None);

        let id = Uuid::now_v7();
        assert!(changes(&on_day(1, id, 2, PurchaseEvent::PurchaseShipped), None).is_err());
        let figures = PurchaseFigures {
            status: PurchaseStatus::Pending,
            total: None,
        };
        assert!(changes(&on_day(1, id, 2, placed(id)), Some(&figures)).is_err());
    }
}
