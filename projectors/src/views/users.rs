//! `users`: one row per user (profile, verification, preferences, roles, status).

use chrono::{DateTime, Utc};
use orders_domain::user::UserEvent;
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Row as _};
use uuid::Uuid;

use crate::record::{Event, LogRecord};
use crate::views::folded::{column, FoldedView};
use crate::views::OutOfOrder;

pub(crate) const TABLES: &[&str] = &["view_users"];

/// One row of the `users` view.
#[derive(Debug, Clone, PartialEq)]
pub struct UserRow {
    pub user_id: Uuid,
    pub email: String,
    pub email_verified: bool,
    pub display_name: Option<String>,
    pub price_alerts: bool,
    /// Sorted role names.
    pub roles: Vec<String>,
    pub deactivated: bool,
    pub registered_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// The user aggregate's last sequence applied.
    pub version: i64,
}

/// The row after one event (`None` before registration).
pub fn fold(
    row: Option<UserRow>,
    record: &LogRecord,
    event: &UserEvent,
) -> Result<UserRow, OutOfOrder> {
    let mut row = match (row, event) {
        (None, UserEvent::UserRegistered { user_id, email }) => UserRow {
            user_id: user_id.as_uuid(),
            email: email.as_str().to_owned(),
            email_verified: false,
            display_name: None,
            price_alerts: true,
            roles: Vec::new(),
            deactivated: false,
            registered_at: record.recorded_at,
            updated_at: record.recorded_at,
            version: record.sequence,
        },
        (None, _) | (Some(_), UserEvent::UserRegistered { .. }) => {
            return Err(OutOfOrder::new(record))
        }
        (Some(row), _) => row,
    };
    match event {
        // Requests for mails change nothing the view shows.
        UserEvent::UserRegistered { .. }
        | UserEvent::PasswordChanged
        | UserEvent::VerificationMailRequested
        | UserEvent::PasswordResetRequested { .. } => {}
        UserEvent::EmailVerified => row.email_verified = true,
        UserEvent::ProfileUpdated { display_name } => row.display_name = display_name.clone(),
        UserEvent::NotificationPreferencesChanged { price_alerts } => {
            row.price_alerts = *price_alerts;
        }
        UserEvent::RoleGranted { role } => {
            let role = role.as_str().to_owned();
            if let Err(at) = row.roles.binary_search(&role) {
                row.roles.insert(at, role);
            }
        }
        UserEvent::RoleRevoked { role } => row.roles.retain(|held| held != role.as_str()),
        UserEvent::UserDeactivated { .. } => row.deactivated = true,
    }
    row.updated_at = record.recorded_at;
    row.version = record.sequence;
    Ok(row)
}

pub(crate) const COLUMNS: &str =
    "user_id, email, email_verified, display_name, price_alerts, roles, \
                       deactivated, registered_at, updated_at, version";

pub(crate) fn from_row(row: &sqlx::postgres::PgRow) -> sqlx::Result<UserRow> {
    Ok(UserRow {
        user_id: row.try_get("user_id")?,
        email: row.try_get("email")?,
        email_verified: row.try_get("email_verified")?,
        display_name: row.try_get("display_name")?,
        price_alerts: row.try_get("price_alerts")?,
        roles: row.try_get("roles")?,
        deactivated: row.try_get("deactivated")?,
        registered_at: row.try_get("registered_at")?,
        updated_at: row.try_get("updated_at")?,
        version: row.try_get("version")?,
    })
}

/// The `users` view: one row per user, folded from the user's events.
pub(crate) struct Users;

impl FoldedView for Users {
    type Row = UserRow;
    const TABLE: &'static str = TABLES[0];
    const KEY: &'static str = "user_id";
    const COLUMNS: &'static str = COLUMNS;

    fn key_of(record: &LogRecord) -> Option<Uuid> {
        matches!(record.event, Event::User(_)).then(|| record.aggregate_uuid())
    }

    fn key(row: &UserRow) -> Uuid {
        row.user_id
    }

    fn from_row(row: &PgRow) -> sqlx::Result<UserRow> {
        from_row(row)
    }

    fn fold(row: Option<UserRow>, record: &LogRecord) -> Result<Option<UserRow>, OutOfOrder> {
        match &record.event {
            Event::User(event) => fold(row, record, event).map(Some),
            _ => Ok(row),
        }
    }

    async fn upsert(
        connection: &mut PgConnection,
        table: &str,
        written: &[&UserRow],
    ) -> sqlx::Result<()> {
        sqlx::query(&format!(
            "INSERT INTO {table} ({COLUMNS})
             SELECT u.user_id, u.email, u.email_verified, u.display_name, u.price_alerts,
                    string_to_array(u.roles, ','), u.deactivated, u.registered_at, u.updated_at,
                    u.version
               FROM UNNEST($1::uuid[], $2::text[], $3::bool[], $4::text[], $5::bool[], $6::text[],
                           $7::bool[], $8::timestamptz[], $9::timestamptz[], $10::int8[])
                    AS u(user_id, email, email_verified, display_name, price_alerts, roles,
                         deactivated, registered_at, updated_at, version)
             ON CONFLICT (user_id) DO UPDATE SET
                    email = EXCLUDED.email, email_verified = EXCLUDED.email_verified,
                    display_name = EXCLUDED.display_name, price_alerts = EXCLUDED.price_alerts,
                    roles = EXCLUDED.roles, deactivated = EXCLUDED.deactivated,
                    registered_at = EXCLUDED.registered_at, updated_at = EXCLUDED.updated_at,
                    version = EXCLUDED.version"
        ))
        .bind(column(written, |r| r.user_id))
        .bind(column(written, |r| r.email.clone()))
        .bind(column(written, |r| r.email_verified))
        .bind(column(written, |r| r.display_name.clone()))
        .bind(column(written, |r| r.price_alerts))
        .bind(column(written, |r| r.roles.join(",")))
        .bind(column(written, |r| r.deactivated))
        .bind(column(written, |r| r.registered_at))
        .bind(column(written, |r| r.updated_at))
        .bind(column(written, |r| r.version))
        .execute(connection)
        .await?;
        Ok(())
    }
}
