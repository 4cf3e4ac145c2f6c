//! What the command side must know about users before it runs a command, read
//! straight from the event store's indexes (the query views come later and may lag;
//! these checks must not).
//!
//! Each lookup is one statement, because every round trip counts against command
//! throughput.

use std::collections::HashMap;
use std::sync::Mutex;

use orders_domain::ids::UserId;
use sqlx::PgPool;

use crate::writer_connections::{leaves_connection_usable, WriterConnections};

/// Whether a user may act now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UserStanding {
    pub registered: bool,
    pub deactivated: bool,
    /// How many times the password has changed: an access token issued under an
    /// older version is refused.
    pub credentials_version: u32,
}

impl UserStanding {
    /// Why a caller may not act, whatever their token says (a deactivation takes
    /// effect on the next request): `None` when they may.
    pub fn inactive_reason(self) -> Option<&'static str> {
        if !self.registered {
            Some("the account does not exist")
        } else if self.deactivated {
            Some("the account is deactivated")
        } else {
            None
        }
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

/// A user's password hash (PHC string), kept apart from the events.
pub async fn password_hash(pool: &PgPool, user_id: UserId) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT password_hash FROM credentials WHERE user_id = $1")
        .bind(user_id.to_string())
        .fetch_optional(pool)
        .await
}

pub async fn standing(pool: &PgPool, user_id: UserId) -> Result<UserStanding, sqlx::Error> {
    let (registered, deactivated, credentials_version): (bool, bool, i64) = sqlx::query_as(
        "SELECT count(*) > 0,
                count(*) FILTER (WHERE event_type = 'UserDeactivated') > 0,
                count(*) FILTER (WHERE event_type = 'PasswordChanged')
           FROM events
          WHERE aggregate_type = 'user' AND aggregate_id = $1",
    )
    .bind(user_id.to_string())
    .fetch_one(pool)
    .await?;
    Ok(UserStanding {
        registered,
        deactivated,
        credentials_version: u32::try_from(credentials_version).unwrap_or(u32::MAX),
    })
}

/// What placing an order must know about its owner (the `placement_guards` row).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlacementFacts {
    /// Orders of the owner that are not cancelled.
    pub active_orders: u32,
    pub deactivated: bool,
    /// How many times the owner's password has changed.
    pub credentials_version: u32,
}

/// Reads a user's placement facts (`None`: not registered).
pub async fn placement_facts(
    writers: &WriterConnections,
    user_id: UserId,
) -> Result<Option<PlacementFacts>, sqlx::Error> {
    let mut connection = writers.acquire().await?;
    let row: Result<Option<(i32, bool, i32)>, sqlx::Error> =
        sqlx::query_as(crate::statements::PLACEMENT_FACTS.sql())
            .bind(user_id.to_string())
            .fetch_optional(connection.connection())
            .await;
    match &row {
        Ok(_) => connection.release(),
        Err(error) if leaves_connection_usable(error) => connection.release(),
        Err(_) => drop(connection),
    }
    Ok(row?.map(
        |(active_orders, deactivated, credentials_version)| PlacementFacts {
            active_orders: u32::try_from(active_orders).unwrap_or(0),
            deactivated,
            credentials_version: u32::try_from(credentials_version).unwrap_or(0),
        },
    ))
}

/// The placement facts this instance last saw, per user, so that a placement costs
/// one statement: the domain decides on them and the append's guard
/// (`PlacementGuard`) has the last word; a refusal, by the domain on cached facts
/// or by the guard, is judged again on facts read fresh. A stale entry costs one
/// re-read, never a wrong decision. Bounded: when full, it starts over.
pub struct PlacementFactsCache {
    entries: Mutex<HashMap<UserId, PlacementFacts>>,
    capacity: usize,
}

impl PlacementFactsCache {
    pub fn new(capacity: usize) -> Self {
        Self {
            entries: Mutex::new(HashMap::new()),
            capacity,
        }
    }

    pub fn get(&self, user_id: UserId) -> Option<PlacementFacts> {
        self.entries
            .lock()
            .expect("placement facts lock poisoned")
            .get(&user_id)
            .copied()
    }

    pub fn put(&self, user_id: UserId, facts: PlacementFacts) {
        let mut entries = self.entries.lock().expect("placement facts lock poisoned");
        if entries.len() >= self.capacity && !entries.contains_key(&user_id) {
            entries.clear();
        }
        entries.insert(user_id, facts);
    }

    pub fn forget(&self, user_id: UserId) {
        self.entries
            .lock()
            .expect("placement facts lock poisoned")
            .remove(&user_id);
    }
}
