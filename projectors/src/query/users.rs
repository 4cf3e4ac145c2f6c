//! Reads of the `users` view: one user, and the administrators' list.

use sqlx::PgPool;
use uuid::Uuid;

pub use crate::views::users::UserRow;
use crate::views::users::{from_row, COLUMNS};

pub async fn one(pool: &PgPool, user_id: Uuid) -> sqlx::Result<Option<UserRow>> {
    let row = sqlx::query(&format!(
        "SELECT {} FROM view_users WHERE user_id = $1",
        COLUMNS
    ))
    .bind(user_id)
    .fetch_optional(pool)
    .await?;
    row.as_ref().map(from_row).transpose()
}

/// What narrows the administrators' list of users.
#[derive(Debug, Clone, Default)]
pub struct UserFilter {
    /// Part of the e-mail address, any case.
    pub email_contains: Option<String>,
    /// Only users with this role (`admin`, `auditor`).
    pub role: Option<String>,
    pub deactivated: Option<bool>,
}

/// Every user after `after` (ids are UUID v7: in registration order) that the filter
/// lets through, at most `limit`.
pub async fn filtered(
    pool: &PgPool,
    filter: &UserFilter,
    after: Option<Uuid>,
    limit: i64,
) -> sqlx::Result<Vec<UserRow>> {
    let pattern = filter.email_contains.as_ref().map(|part| {
        let escaped = part
            .replace('\\', "\\\\")
            .replace('%', "\\%")
            .replace('_', "\\_");
        format!("%{}%", escaped.to_lowercase())
    });
    let rows = sqlx::query(&format!(
        "SELECT {} FROM view_users
          WHERE user_id > $1
            AND ($2::text IS NULL OR lower(email) LIKE $2)
            AND ($3::text IS NULL OR $3 = ANY(roles))
            AND ($4::bool IS NULL OR deactivated = $4)
          ORDER BY user_id LIMIT $5",
        COLUMNS
    ))
    .bind(after.unwrap_or(Uuid::nil()))
    .bind(pattern)
    .bind(&filter.role)
    .bind(filter.deactivated)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    rows.iter().map(from_row).collect()
}
