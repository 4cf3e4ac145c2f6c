//! Reads of the `admin_overview` view.

use chrono::NaiveDate;
use sqlx::PgPool;

/// The administrators' counters, every metric listed (0 when nothing happened yet).
pub async fn counters(pool: &PgPool) -> sqlx::Result<Vec<(String, i64)>> {
    let counted: Vec<(String, i64)> =
        sqlx::query_as("SELECT metric, value FROM view_admin_overview")
            .fetch_all(pool)
            .await?;
    Ok(crate::views::admin_overview::METRICS
        .iter()
        .map(|metric| {
            let value = counted
                .iter()
                .find(|(name, _)| name == metric)
                .map_or(0, |(_, value)| *value);
            ((*metric).to_owned(), value)
        })
        .collect())
}

/// One UTC day of the dashboard: each of `DAILY_METRICS` (0 when nothing happened).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Day {
    pub day: NaiveDate,
    /// In the order of `views::admin_overview::DAILY_METRICS`.
    pub counts: Vec<(String, i64)>,
}

/// The days from `first` to `last` (UTC, both included), oldest first, every day
/// listed even when nothing happened on it.
pub async fn days(pool: &PgPool, first: NaiveDate, last: NaiveDate) -> sqlx::Result<Vec<Day>> {
    let rows: Vec<(NaiveDate, String, i64)> = sqlx::query_as(
        "SELECT day, metric, value FROM view_admin_daily WHERE day BETWEEN $1 AND $2",
    )
    .bind(first)
    .bind(last)
    .fetch_all(pool)
    .await?;
    Ok(first
        .iter_days()
        .take_while(|day| *day <= last)
        .map(|day| Day {
            day,
            counts: crate::views::admin_overview::DAILY_METRICS
                .iter()
                .map(|metric| {
                    let value = rows
                        .iter()
                        .find(|(on, name, _)| *on == day && name == metric)
                        .map_or(0, |(_, _, value)| *value);
                    ((*metric).to_owned(), value)
                })
                .collect(),
        })
        .collect())
}
