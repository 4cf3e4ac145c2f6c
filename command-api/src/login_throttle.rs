//! Login throttling per e-mail address and per client address, kept in PostgreSQL
//! so that every API instance sees the same counts.
//!
//! After `limit` failures within the window a key is locked; each further failure
//! doubles the lock, up to a cap. A locked login is refused with 429 and
//! `Retry-After` before the password is even looked at. The e-mail key is counted
//! whether or not the address belongs to anyone, so throttling reveals nothing about
//! which addresses exist. A successful login clears its e-mail key.

use std::net::IpAddr;

use chrono::{DateTime, Utc};
use sqlx::PgPool;

/// The throttling rules.
#[derive(Debug, Clone, Copy)]
pub struct ThrottlePolicy {
    /// Failures for one e-mail address before it is locked.
    pub failures_per_email: i32,
    /// Failures from one client address (any e-mail) before it is locked.
    pub failures_per_client: i32,
    /// Failures older than this are forgotten.
    pub window_secs: i64,
    /// The first lock; doubled for every failure beyond the limit.
    pub base_lock_secs: i64,
    pub max_lock_secs: i64,
}

impl Default for ThrottlePolicy {
    fn default() -> Self {
        Self {
            failures_per_email: 5,
            failures_per_client: 20,
            window_secs: 15 * 60,
            base_lock_secs: 30,
            max_lock_secs: 15 * 60,
        }
    }
}

/// The keys a login attempt is counted under.
#[derive(Debug, Clone)]
pub struct ThrottleKeys {
    email: String,
    client: String,
}

impl ThrottleKeys {
    pub fn new(normalized_email: &str, client: IpAddr) -> Self {
        Self {
            email: format!("email:{normalized_email}"),
            client: format!("client:{client}"),
        }
    }
}

pub struct LoginThrottle {
    pool: PgPool,
    policy: ThrottlePolicy,
}

impl LoginThrottle {
    pub fn new(pool: PgPool, policy: ThrottlePolicy) -> Self {
        Self { pool, policy }
    }

    /// Seconds until a login under these keys may be tried again, if it is locked.
    pub async fn locked_for(
        &self,
        keys: &ThrottleKeys,
        now: DateTime<Utc>,
    ) -> Result<Option<u64>, sqlx::Error> {
        let until: Option<DateTime<Utc>> = sqlx::query_scalar(
            "SELECT max(locked_until) FROM login_failures
              WHERE throttle_key IN ($1, $2) AND locked_until > $3",
        )
        .bind(&keys.email)
        .bind(&keys.client)
        .bind(now)
        .fetch_one(&self.pool)
        .await?;
        Ok(until.map(|until| {
            let millis = (until - now).num_milliseconds().max(0);
            // Round up: a client that waits the whole Retry-After must get through.
            u64::try_from((millis + 999) / 1000).unwrap_or(1).max(1)
        }))
    }

    /// Counts a failed login under both keys, locking those over their limit.
    pub async fn record_failure(
        &self,
        keys: &ThrottleKeys,
        now: DateTime<Utc>,
    ) -> Result<(), sqlx::Error> {
        // One statement for both keys: a failure costs one round trip. A window that
        // has passed starts over; over the limit, the lock doubles per failure.
        sqlx::query(
            "INSERT INTO login_failures AS f (throttle_key, failures, first_failure, locked_until)
             SELECT key, 1, $3, CASE WHEN lim <= 1 THEN $3 + make_interval(secs => $5) END
               FROM (VALUES ($1, $6::int), ($2, $7::int)) AS k(key, lim)
             ON CONFLICT (throttle_key) DO UPDATE SET
               failures = CASE WHEN f.first_failure < $3 - make_interval(secs => $4)
                               THEN 1 ELSE f.failures + 1 END,
               first_failure = CASE WHEN f.first_failure < $3 - make_interval(secs => $4)
                                    THEN $3 ELSE f.first_failure END,
               locked_until = CASE
                 WHEN f.first_failure < $3 - make_interval(secs => $4) THEN NULL
                 WHEN f.failures + 1 >= (CASE WHEN f.throttle_key = $1 THEN $6 ELSE $7 END)
                   THEN $3 + make_interval(secs => least($8::float8,
                          $5::float8 * power(2, f.failures + 1
                            - (CASE WHEN f.throttle_key = $1 THEN $6 ELSE $7 END))))
                 ELSE f.locked_until END",
        )
        .bind(&keys.email)
        .bind(&keys.client)
        .bind(now)
        .bind(self.policy.window_secs as f64)
        .bind(self.policy.base_lock_secs as f64)
        .bind(self.policy.failures_per_email)
        .bind(self.policy.failures_per_client)
        .bind(self.policy.max_lock_secs as f64)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Forgets the failures of an e-mail address after a successful login.
    pub async fn record_success(&self, keys: &ThrottleKeys) -> Result<(), sqlx::Error> {
        sqlx::query("DELETE FROM login_failures WHERE throttle_key = $1")
            .bind(&keys.email)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
