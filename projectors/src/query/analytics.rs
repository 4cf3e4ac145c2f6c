//! Reads of the `analytics` view: purchases, revenue and the tracker's activity per
//! UTC day, the purchases' status mix now, and all-time totals for a dashboard.
//! Every day of a range is listed, oldest first, with zeros when nothing happened.
//! Amounts are in their currency's minor units (`"39.98"`, `"0.00"`), never
//! converted from one currency to another.

use chrono::NaiveDate;
use orders_domain::money::Currency;
use orders_domain::purchase::PurchaseStatus;
use rust_decimal::Decimal;
use serde::Serialize;
use sqlx::postgres::PgRow;
use sqlx::{PgPool, Row as _};

use crate::views::analytics::{PURCHASE_METRICS, REVENUE, TRACKING_METRICS};

/// How many purchases reached each status (`placed`: were placed, i.e. pending).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct PurchaseCounts {
    pub placed: i64,
    pub confirmed: i64,
    pub rejected: i64,
    pub cancelled: i64,
    pub shipped: i64,
    pub delivered: i64,
}

impl PurchaseCounts {
    /// Adds `value` to the count of `metric`, one of [`PURCHASE_METRICS`].
    fn add(&mut self, metric: &str, value: i64) {
        let counters = [
            &mut self.placed,
            &mut self.confirmed,
            &mut self.rejected,
            &mut self.cancelled,
            &mut self.shipped,
            &mut self.delivered,
        ];
        if let Some(at) = PURCHASE_METRICS.iter().position(|name| *name == metric) {
            *counters[at] += value;
        }
    }
}

/// The tracker's activity: tracking orders placed, price checks that observed the
/// page (`checks_done`) and that failed, alerts fired.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct TrackingCounts {
    pub orders_placed: i64,
    pub checks_done: i64,
    pub checks_failed: i64,
    pub alerts: i64,
}

impl TrackingCounts {
    /// Adds `value` to the count of `metric`, one of [`TRACKING_METRICS`].
    fn add(&mut self, metric: &str, value: i64) {
        let counters = [
            &mut self.orders_placed,
            &mut self.checks_done,
            &mut self.checks_failed,
            &mut self.alerts,
        ];
        if let Some(at) = TRACKING_METRICS.iter().position(|name| *name == metric) {
            *counters[at] += value;
        }
    }
}

/// One UTC day of purchases.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PurchasesDay {
    pub day: NaiveDate,
    #[serde(flatten)]
    pub counts: PurchaseCounts,
}

/// One UTC day of the tracker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct TrackingDay {
    pub day: NaiveDate,
    #[serde(flatten)]
    pub counts: TrackingCounts,
}

/// The revenue of one UTC day in one currency: the totals of the purchases confirmed
/// that day less those of the confirmed purchases cancelled that day (so it may be
/// negative).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RevenueDay {
    pub day: NaiveDate,
    /// ISO 4217.
    pub currency: String,
    /// A string in JSON.
    pub amount: Decimal,
}

/// An amount in one currency.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CurrencyAmount {
    /// ISO 4217.
    pub currency: String,
    /// A string in JSON.
    pub amount: Decimal,
}

/// How many purchases are in one status now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StatusCount {
    /// `pending`, `confirmed`, `rejected`, `cancelled`, `shipped` or `delivered`.
    pub status: String,
    pub purchases: i64,
}

/// The dashboard's all-time figures.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub purchases: PurchaseCounts,
    pub tracking: TrackingCounts,
    /// Net revenue per currency (confirmed less cancelled), by currency code.
    pub revenue: Vec<CurrencyAmount>,
    /// Every status, in the lifecycle's order.
    pub statuses: Vec<StatusCount>,
}

/// One row of `view_analytics_daily`.
struct DailyRow {
    day: NaiveDate,
    metric: String,
    currency: String,
    value: Decimal,
}

impl<'r> sqlx::FromRow<'r, PgRow> for DailyRow {
    fn from_row(row: &'r PgRow) -> sqlx::Result<Self> {
        Ok(DailyRow {
            day: row.try_get("day")?,
            metric: row.try_get("metric")?,
            currency: row.try_get("currency")?,
            value: row.try_get("value")?,
        })
    }
}

/// A count kept as `numeric` (it shares its column with amounts).
fn count(value: Decimal) -> i64 {
    i64::try_from(value).unwrap_or_default()
}

/// A metric's all-time total in one currency (`""` for counts).
struct TotalRow {
    metric: String,
    currency: String,
    value: Decimal,
}

impl<'r> sqlx::FromRow<'r, PgRow> for TotalRow {
    fn from_row(row: &'r PgRow) -> sqlx::Result<Self> {
        Ok(TotalRow {
            metric: row.try_get("metric")?,
            currency: row.try_get("currency")?,
            value: row.try_get("value")?,
        })
    }
}

/// One row of `view_analytics_status`.
struct StatusRow {
    status: String,
    purchases: i64,
}

impl<'r> sqlx::FromRow<'r, PgRow> for StatusRow {
    fn from_row(row: &'r PgRow) -> sqlx::Result<Self> {
        Ok(StatusRow {
            status: row.try_get("status")?,
            purchases: row.try_get("purchases")?,
        })
    }
}

/// `amount` in `currency`'s minor units (`0` → `0.00`).
fn in_minor_units(mut amount: Decimal, currency: &str) -> Decimal {
    if let Ok(currency) = Currency::from_code(currency) {
        amount.rescale(currency.minor_units());
    }
    amount
}

/// The days from `from` to `to`, both included (none if `to` is before `from`).
fn days(from: NaiveDate, to: NaiveDate) -> impl Iterator<Item = NaiveDate> {
    from.iter_days().take_while(move |day| *day <= to)
}

/// The rows of `metrics` from `from` to `to`.
async fn daily_rows(
    pool: &PgPool,
    from: NaiveDate,
    to: NaiveDate,
    metrics: &[&str],
) -> sqlx::Result<Vec<DailyRow>> {
    sqlx::query_as(
        "SELECT day, metric, currency, value FROM view_analytics_daily
          WHERE day BETWEEN $1 AND $2 AND metric = ANY($3)",
    )
    .bind(from)
    .bind(to)
    .bind(metrics.iter().map(|m| (*m).to_owned()).collect::<Vec<_>>())
    .fetch_all(pool)
    .await
}

/// The purchases that reached each status on each UTC day from `from` to `to`.
pub async fn purchases_per_day(
    pool: &PgPool,
    from: NaiveDate,
    to: NaiveDate,
) -> sqlx::Result<Vec<PurchasesDay>> {
    let rows = daily_rows(pool, from, to, &PURCHASE_METRICS).await?;
    Ok(days(from, to)
        .map(|day| {
            let mut counts = PurchaseCounts::default();
            for row in rows.iter().filter(|row| row.day == day) {
                counts.add(&row.metric, count(row.value));
            }
            PurchasesDay { day, counts }
        })
        .collect())
}

/// The tracker's activity on each UTC day from `from` to `to`.
pub async fn tracking_per_day(
    pool: &PgPool,
    from: NaiveDate,
    to: NaiveDate,
) -> sqlx::Result<Vec<TrackingDay>> {
    let rows = daily_rows(pool, from, to, &TRACKING_METRICS).await?;
    Ok(days(from, to)
        .map(|day| {
            let mut counts = TrackingCounts::default();
            for row in rows.iter().filter(|row| row.day == day) {
                counts.add(&row.metric, count(row.value));
            }
            TrackingDay { day, counts }
        })
        .collect())
}

/// The revenue of each UTC day from `from` to `to`, per currency: in `currency`
/// only if given (every day listed), else in each currency that had revenue in the
/// range (every day listed for each), by day then currency code.
pub async fn revenue(
    pool: &PgPool,
    from: NaiveDate,
    to: NaiveDate,
    currency: Option<Currency>,
) -> sqlx::Result<Vec<RevenueDay>> {
    let mut rows = daily_rows(pool, from, to, &[REVENUE]).await?;
    if let Some(currency) = currency {
        rows.retain(|row| row.currency == currency.code());
    }
    let mut currencies: Vec<String> = match currency {
        Some(currency) => vec![currency.code().to_owned()],
        None => rows.iter().map(|row| row.currency.clone()).collect(),
    };
    currencies.sort();
    currencies.dedup();
    Ok(days(from, to)
        .flat_map(|day| {
            currencies
                .iter()
                .map(|currency| {
                    let amount = rows
                        .iter()
                        .filter(|row| row.day == day && &row.currency == currency)
                        .map(|row| row.value)
                        .sum();
                    RevenueDay {
                        day,
                        currency: currency.clone(),
                        amount: in_minor_units(amount, currency),
                    }
                })
                .collect::<Vec<_>>()
        })
        .collect())
}

/// How many purchases are in each status now: every status, in the lifecycle's
/// order, zeros included.
pub async fn status_distribution(pool: &PgPool) -> sqlx::Result<Vec<StatusCount>> {
    let rows: Vec<StatusRow> =
        sqlx::query_as("SELECT status, purchases FROM view_analytics_status")
            .fetch_all(pool)
            .await?;
    Ok(PurchaseStatus::ALL
        .into_iter()
        .map(|status| StatusCount {
            status: status.as_str().to_owned(),
            purchases: rows
                .iter()
                .find(|row| row.status == status.as_str())
                .map_or(0, |row| row.purchases),
        })
        .collect())
}

/// The all-time figures: purchases per status reached, the tracker's activity, net
/// revenue per currency, and the status mix now.
pub async fn summary(pool: &PgPool) -> sqlx::Result<Summary> {
    // Summed per metric and currency over the days (a few rows per day).
    let totals: Vec<TotalRow> = sqlx::query_as(
        "SELECT metric, currency, sum(value) AS value
           FROM view_analytics_daily GROUP BY metric, currency ORDER BY metric, currency",
    )
    .fetch_all(pool)
    .await?;
    let mut purchases = PurchaseCounts::default();
    let mut tracking = TrackingCounts::default();
    let mut revenue = Vec::new();
    for row in &totals {
        if row.metric == REVENUE {
            revenue.push(CurrencyAmount {
                currency: row.currency.clone(),
                amount: in_minor_units(row.value, &row.currency),
            });
        } else {
            purchases.add(&row.metric, count(row.value));
            tracking.add(&row.metric, count(row.value));
        }
    }
    Ok(Summary {
        purchases,
        tracking,
        revenue,
        statuses: status_distribution(pool).await?,
    })
}
