//! Reads of the `admin_overview` view.

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
