//! The shop's part of the administrators' dashboard (`/app/admin/`): purchases per
//! day by status, revenue per day in each currency, the status mix now and the
//! all-time net revenue, over the last 14 or 30 UTC days. Read through the
//! analytics routes' functions (`http::analytics::orders_per_day_between`,
//! `revenue_between`) and the dashboard's summary, drawn by `charts`.

use chrono::{Days, Utc};
use orders_projectors::query::analytics::Summary;
use rust_decimal::Decimal;

use super::charts::{self, StackedDay, SERIES};
use crate::console::pages::{readable_amount, ErrorPage};
use crate::http::analytics::{orders_per_day_between, revenue_between};
use crate::problem::ApiError;
use crate::AppState;

/// The ranges the dashboard offers, in days.
pub(crate) const RANGES: [u64; 2] = [14, 30];

/// One currency's revenue chart and its days.
#[derive(Debug, Clone)]
pub(crate) struct RevenueChart {
    pub currency: String,
    pub chart: String,
    /// Newest first: the day and the amount as people read it.
    pub days: Vec<(String, String)>,
}

/// What the dashboard shows of the shop.
#[derive(Debug, Clone)]
pub(crate) struct ShopAnalytics {
    /// The range shown, in days ([`RANGES`]).
    pub days: u64,
    pub purchases_chart: String,
    pub series: [&'static str; 6],
    /// Newest first, for the table beside the chart.
    pub purchase_days: Vec<StackedDay>,
    pub revenue: Vec<RevenueChart>,
    /// All time, net of cancellations, per currency.
    pub revenue_totals: Vec<String>,
    pub statuses_chart: String,
    pub statuses: Vec<(String, i64)>,
}

/// The range asked for (`?days=`), one of [`RANGES`]; the shortest otherwise.
pub(crate) fn range(asked: Option<u64>) -> u64 {
    asked
        .filter(|days| RANGES.contains(days))
        .unwrap_or(RANGES[0])
}

fn failed(error: ApiError) -> ErrorPage {
    match error {
        ApiError::Internal(error) => ErrorPage::internal(error),
        other => ErrorPage::internal(anyhow::Error::new(other)),
    }
}

/// The shop's analytics over the last `days` UTC days, with `summary` (the
/// dashboard's, read with it).
pub(crate) async fn shop_analytics(
    state: &AppState,
    days: u64,
    summary: &Summary,
) -> Result<ShopAnalytics, ErrorPage> {
    let to = Utc::now().date_naive();
    let from = to.checked_sub_days(Days::new(days - 1)).unwrap_or(to);
    let (per_day, revenue) = tokio::try_join!(
        orders_per_day_between(state, from, to),
        revenue_between(state, from, to, None),
    )
    .map_err(failed)?;
    let stacked: Vec<StackedDay> = per_day
        .iter()
        .map(|day| {
            let counts = day.purchases;
            StackedDay {
                day: day.day.clone(),
                counts: [
                    counts.placed,
                    counts.confirmed,
                    counts.rejected,
                    counts.cancelled,
                    counts.shipped,
                    counts.delivered,
                ],
            }
        })
        .collect();
    let mut currencies: Vec<String> = revenue.iter().map(|item| item.currency.clone()).collect();
    currencies.sort();
    currencies.dedup();
    let revenue = currencies
        .into_iter()
        .map(|currency| {
            let days: Vec<(String, Decimal)> = revenue
                .iter()
                .filter(|item| item.currency == currency)
                .map(|item| (item.day.clone(), item.amount.parse().unwrap_or_default()))
                .collect();
            RevenueChart {
                chart: charts::revenue_per_day(&currency, &days),
                days: days
                    .iter()
                    .rev()
                    .map(|(day, amount)| (day.clone(), readable_amount(*amount, &currency)))
                    .collect(),
                currency,
            }
        })
        .collect();
    let statuses: Vec<(String, i64)> = summary
        .statuses
        .iter()
        .map(|status| (status.status.clone(), status.purchases))
        .collect();
    Ok(ShopAnalytics {
        days,
        purchases_chart: charts::purchases_per_day(&stacked),
        series: SERIES,
        purchase_days: stacked.into_iter().rev().collect(),
        revenue,
        revenue_totals: summary
            .revenue
            .iter()
            .map(|total| readable_amount(total.amount, &total.currency))
            .collect(),
        statuses_chart: charts::status_distribution(&statuses),
        statuses,
    })
}

#[cfg(test)]
mod tests {
    use super::range;

    #[test]
    fn the_range_is_14_or_30_days() {
        assert_eq!(range(None), 14);
        assert_eq!(range(Some(30)), 30);
        assert_eq!(range(Some(14)), 14);
        assert_eq!(range(Some(365)), 14);
    }
}
