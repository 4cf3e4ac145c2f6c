//! What the command side must know about users before it runs a command, read
//! straight from the event store's indexes (the query views come later and may lag;
//! these checks must not).
//!
//! Each lookup is one statement, because every round trip counts against command
//! throughput.

use orders_domain::ids::UserId;
use sqlx::PgPool;

use crate::problem::ApiError;
use crate::writer_connections::{leaves_connection_usable, WriterConnections};

/// Whether a user may act now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UserStanding {
    pub registered: bool,
    pub deactivated: bool,
}

impl UserStanding {
    /// Refuses a caller whose account is gone or deactivated, whatever their token
    /// says: a deactivation takes effect on the next request.
    pub fn require_active(self) -> Result<(), ApiError> {
        if !self.registered {
            return Err(ApiError::Unauthorized("the account does not exist"));
        }
        if self.deactivated {
            return Err(ApiError::Unauthorized("the account is deactivated"));
        }
        Ok(())
    }
}

/// The user registered under an e-mail address (compared case-insensitively).
pub async fn user_by_email(
    pool: &PgPool,
    normalized_email: &str,
) -> Result<Option<UserId>, sqlx::Error> {
    let id: Option<String> = sqlx::query_scalar(
        "SELECT aggregate_id FROM events
          WHERE event_type = 'UserRegistered'
            AND lower(payload -> 'UserRegistered' ->> 'email') = $1",
    )
    .bind(normalized_email)
    .fetch_optional(pool)
    .await?;
    Ok(id.and_then(|id| id.parse().ok()))
}

pub async fn standing(pool: &PgPool, user_id: UserId) -> Result<UserStanding, sqlx::Error> {
    let (registered, deactivated): (bool, bool) = sqlx::query_as(
        "SELECT count(*) > 0,
                count(*) FILTER (WHERE event_type = 'UserDeactivated') > 0
           FROM events
          WHERE aggregate_type = 'user' AND aggregate_id = $1",
    )
    .bind(user_id.to_string())
    .fetch_one(pool)
    .await?;
    Ok(UserStanding {
        registered,
        deactivated,
    })
}

/// A user's standing and the number of their orders that are not cancelled, for
/// placing an order: one statement, two primary-key lookups.
pub const PLACEMENT_CONTEXT_SQL: &str = "
SELECT standing.registered, standing.deactivated,
       coalesce((SELECT active_orders FROM active_orders WHERE user_id = $1), 0)::bigint
  FROM (SELECT count(*) > 0 AS registered,
               coalesce(bool_or(event_type = 'UserDeactivated'), false) AS deactivated
          FROM events WHERE aggregate_type = 'user' AND aggregate_id = $1) AS standing";

pub async fn placement_context(
    writers: &WriterConnections,
    user_id: UserId,
) -> Result<(UserStanding, u32), sqlx::Error> {
    let mut connection = writers.acquire().await?;
    let row: Result<(bool, bool, i64), sqlx::Error> = sqlx::query_as(PLACEMENT_CONTEXT_SQL)
        .bind(user_id.to_string())
        .fetch_one(connection.connection())
        .await;
    match &row {
        Ok(_) => connection.release(),
        Err(error) if leaves_connection_usable(error) => connection.release(),
        Err(_) => drop(connection),
    }
    let (registered, deactivated, active_orders) = row?;
    Ok((
        UserStanding {
            registered,
            deactivated,
        },
        u32::try_from(active_orders).unwrap_or(u32::MAX),
    ))
}
