//! `admin_overview`: counters for administrators (users, orders by status, price
//! changes, alerts), and each order's status so that a cancellation is counted
//! against the status the order had.

use std::collections::{BTreeMap, HashMap};

use orders_domain::order::{OrderEvent, OrderStatus};
use orders_domain::price_check::PriceCheckEvent;
use orders_domain::user::UserEvent;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::checkpoint::Generation;
use crate::record::{Event, LogRecord};

pub(crate) const TABLES: &[&str] = &[
    "view_admin_overview",
    "view_admin_order_status",
    "view_admin_daily",
];

/// The metrics also counted per UTC day of the events' times, in the order the
/// dashboard shows them.
pub const DAILY_METRICS: [&str; 6] = [
    "users_registered",
    "orders_placed",
    "checks_requested",
    "checks_failed",
    "price_changes",
    "targets_reached",
];

/// The metrics, in the order `GET /admin/...` lists them.
pub const METRICS: [&str; 9] = [
    "users_registered",
    "users_verified",
    "users_deactivated",
    "orders_placed",
    "orders_active",
    "orders_paused",
    "orders_cancelled",
    "price_changes",
    "targets_reached",
];

fn status_metric(status: OrderStatus) -> &'static str {
    match status {
        OrderStatus::Active => "orders_active",
        OrderStatus::Paused => "orders_paused",
        OrderStatus::Cancelled => "orders_cancelled",
    }
}

/// What one event changes: counter deltas, and the order's new status.
pub fn changes(
    record: &LogRecord,
    status_before: Option<OrderStatus>,
) -> (Vec<(&'static str, i64)>, Option<OrderStatus>) {
    let moved = |to: OrderStatus| {
        let mut deltas = vec![(status_metric(to), 1)];
        if let Some(from) = status_before {
            deltas.push((status_metric(from), -1));
        }
        (deltas, Some(to))
    };
    match &record.event {
        Event::User(UserEvent::UserRegistered { .. }) => (vec![("users_registered", 1)], None),
        Event::User(UserEvent::EmailVerified) => (vec![("users_verified", 1)], None),
        Event::User(UserEvent::UserDeactivated { .. }) => (vec![("users_deactivated", 1)], None),
        Event::Order(OrderEvent::OrderPlaced { .. }) => {
            let (mut deltas, status) = moved(OrderStatus::Active);
            deltas.push(("orders_placed", 1));
            (deltas, status)
        }
        Event::Order(OrderEvent::OrderPaused) => moved(OrderStatus::Paused),
        Event::Order(OrderEvent::OrderResumed) => moved(OrderStatus::Active),
        Event::Order(OrderEvent::OrderCancelled) => moved(OrderStatus::Cancelled),
        Event::Order(OrderEvent::PriceChanged { .. }) => (vec![("price_changes", 1)], None),
        Event::Order(OrderEvent::TargetReached { .. }) => (vec![("targets_reached", 1)], None),
        Event::PriceCheck(PriceCheckEvent::PriceCheckRequested { .. }) => {
            (vec![("checks_requested", 1)], None)
        }
        Event::PriceCheck(PriceCheckEvent::PriceObserved { .. }) => {
            (vec![("checks_observed", 1)], None)
        }
        Event::PriceCheck(PriceCheckEvent::PriceCheckFailed { .. }) => {
            (vec![("checks_failed", 1)], None)
        }
        _ => (Vec::new(), None),
    }
}

fn parse_status(text: &str) -> Option<OrderStatus> {
    match text {
        "active" => Some(OrderStatus::Active),
        "paused" => Some(OrderStatus::Paused),
        "cancelled" => Some(OrderStatus::Cancelled),
        _ => None,
    }
}

pub(crate) async fn apply(
    connection: &mut PgConnection,
    generation: Generation,
    records: &[LogRecord],
) -> anyhow::Result<()> {
    let counters = generation.table(TABLES[0]);
    let statuses = generation.table(TABLES[1]);
    let status_changing = |record: &&LogRecord| {
        matches!(
            record.event,
            Event::Order(
                OrderEvent::OrderPlaced { .. }
                    | OrderEvent::OrderPaused
                    | OrderEvent::OrderResumed
                    | OrderEvent::OrderCancelled
            )
        )
    };
    let ids: Vec<Uuid> = records
        .iter()
        .filter(status_changing)
        .map(LogRecord::aggregate_uuid)
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut status: HashMap<Uuid, Option<OrderStatus>> = HashMap::new();
    if !ids.is_empty() {
        let rows: Vec<(Uuid, String)> = sqlx::query_as(&format!(
            "SELECT order_id, status FROM {statuses} WHERE order_id = ANY($1)"
        ))
        .bind(&ids)
        .fetch_all(&mut *connection)
        .await?;
        for (id, text) in rows {
            status.insert(id, parse_status(&text));
        }
    }
    let mut deltas: BTreeMap<&'static str, i64> = BTreeMap::new();
    let mut daily: BTreeMap<(chrono::NaiveDate, &'static str), i64> = BTreeMap::new();
    let mut changed: BTreeMap<Uuid, OrderStatus> = BTreeMap::new();
    for record in records {
        let id = record.aggregate_uuid();
        let before = status.get(&id).copied().flatten();
        let (record_deltas, after) = changes(record, before);
        for (metric, delta) in record_deltas {
            *deltas.entry(metric).or_default() += delta;
            if DAILY_METRICS.contains(&metric) {
                *daily
                    .entry((record.recorded_at.date_naive(), metric))
                    .or_default() += delta;
            }
        }
        if let Some(after) = after {
            status.insert(id, Some(after));
            changed.insert(id, after);
        }
    }
    if !changed.is_empty() {
        sqlx::query(&format!(
            "INSERT INTO {statuses} (order_id, status)
             SELECT * FROM UNNEST($1::uuid[], $2::text[])
             ON CONFLICT (order_id) DO UPDATE SET status = EXCLUDED.status"
        ))
        .bind(changed.keys().copied().collect::<Vec<_>>())
        .bind(
            changed
                .values()
                .map(|status| status.as_str().to_owned())
                .collect::<Vec<_>>(),
        )
        .execute(&mut *connection)
        .await?;
    }
    add_daily(connection, &generation.table(TABLES[2]), daily).await?;
    deltas.retain(|_, delta| *delta != 0);
    if !deltas.is_empty() {
        sqlx::query(&format!(
            "INSERT INTO {counters} (metric, value)
             SELECT * FROM UNNEST($1::text[], $2::int8[])
             ON CONFLICT (metric) DO UPDATE SET value = {counters}.value + EXCLUDED.value"
        ))
        .bind(deltas.keys().map(|m| (*m).to_owned()).collect::<Vec<_>>())
        .bind(deltas.values().copied().collect::<Vec<_>>())
        .execute(&mut *connection)
        .await?;
    }
    Ok(())
}

/// Adds each day's counts to the days they happened on.
async fn add_daily(
    connection: &mut PgConnection,
    table: &str,
    daily: BTreeMap<(chrono::NaiveDate, &'static str), i64>,
) -> anyhow::Result<()> {
    if daily.is_empty() {
        return Ok(());
    }
    let days: Vec<chrono::NaiveDate> = daily.keys().map(|(day, _)| *day).collect();
    let metrics: Vec<String> = daily.keys().map(|(_, m)| (*m).to_owned()).collect();
    let values: Vec<i64> = daily.values().copied().collect();
    sqlx::query(&format!(
        "INSERT INTO {table} (day, metric, value)
         SELECT * FROM UNNEST($1::date[], $2::text[], $3::int8[])
         ON CONFLICT (day, metric) DO UPDATE SET value = {table}.value + EXCLUDED.value"
    ))
    .bind(days)
    .bind(metrics)
    .bind(values)
    .execute(&mut *connection)
    .await?;
    Ok(())
}
