//! Login throttling per e-mail address and per client address, kept in PostgreSQL
//! so that every API instance sees the same counts.
//!
//! **The count is the gate.** An attempt is counted under both of its keys, in one
//! transaction holding both rows, *before* its password is verified, and only if
//! neither key is locked; otherwise it is refused with 429 and `Retry-After` without
//! any password check. So however many attempts arrive at once, from however many
//! API instances, at most `limit` of them per key and window reach the password
//! check: the rows' locks order them, and each sees the counts of those before it.
//! (Checking a lock, verifying the password and then counting the failure, as this
//! module once did, let a burst of parallel logins all pass the check before any
//! failure was counted.)
//!
//! An attempt whose password was right gives its place back under both keys; the
//! failures before it stay counted until their window passes, so a success in the
//! middle of a burst cannot reopen the gate for the rest of it. When a key reaches
//! its limit it is locked, and every further attempt admitted after a lock doubles
//! the next one, up to a cap. The e-mail key is counted whether or not the address
//! belongs to anyone, so throttling reveals nothing about which addresses exist.
//! Keys hold a digest of the address, never the address itself: any text a client
//! sends (a NUL, kilobytes) makes a key of the same short shape.
//!
//! **Lock-outs by others.** A client address that signed in to an account in the
//! last [`KNOWN_CLIENT_DAYS`] days (`login_known_clients`) counts its attempts for
//! that account on a counter of its own instead of the account's: someone failing
//! on purpose elsewhere cannot keep the owner out from where they usually sign in,
//! and that address still gets no more guesses than the limit. Rows that count
//! nothing any more are deleted by [`purge_expired`].

use std::net::IpAddr;

use chrono::{DateTime, Duration, Utc};
use sha2::{Digest as _, Sha256};
use sqlx::PgPool;

/// The throttling rules.
#[derive(Debug, Clone, Copy)]
pub struct ThrottlePolicy {
    /// Attempts for one e-mail address (that did not succeed) before it is locked.
    pub failures_per_email: i32,
    /// Attempts from one client address (any e-mail) before it is locked.
    pub failures_per_client: i32,
    /// Attempts older than this are forgotten.
    pub window_secs: i64,
    /// The first lock; doubled for every attempt admitted beyond the limit.
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
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThrottleKeys {
    /// None for a request without a readable e-mail address.
    email: Option<String>,
    client: String,
}

impl ThrottleKeys {
    /// The keys of an attempt for an e-mail address as the client typed it (or as
    /// normalised, when it parses) from a client address.
    pub fn new(email: &str, client: IpAddr) -> Self {
        let digest = Sha256::digest(email.as_bytes());
        Self {
            email: Some(format!("email:{}", orders_store::seal::hex(&digest))),
            client: format!("client:{client}"),
        }
    }

    /// The key of an attempt whose body could not be read (malformed, or a field
    /// refused at the edge): it counts against its client only.
    pub fn client_only(client: IpAddr) -> Self {
        Self {
            email: None,
            client: format!("client:{client}"),
        }
    }
}

/// Whether an attempt may verify its password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// Counted: verify the password, and report a success with
    /// [`LoginThrottle::succeeded`].
    Admitted(Attempt),
    /// Refused before any password check: try again after this many seconds.
    Locked { retry_after_secs: u64 },
}

/// An admitted attempt: the counters it was counted under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    keys: ThrottleKeys,
    /// The account's counter, or this known client's own counter for the account.
    email_counter: Option<String>,
}

/// How long a client address that signed in to an account stays known to it.
pub const KNOWN_CLIENT_DAYS: i64 = 30;

/// One key's row of `login_failures`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Counter {
    throttle_key: String,
    /// Attempts in the window that did not succeed (in flight or failed).
    failures: i32,
    first_failure: DateTime<Utc>,
    locked_until: Option<DateTime<Utc>>,
}

impl<'row> sqlx::FromRow<'row, sqlx::postgres::PgRow> for Counter {
    fn from_row(row: &'row sqlx::postgres::PgRow) -> Result<Self, sqlx::Error> {
        use sqlx::Row as _;
        Ok(Self {
            throttle_key: row.try_get("throttle_key")?,
            failures: row.try_get("failures")?,
            first_failure: row.try_get("first_failure")?,
            locked_until: row.try_get("locked_until")?,
        })
    }
}

impl Counter {
    /// Seconds until this key may be tried again, if it is locked at `now`.
    fn locked_for(&self, now: DateTime<Utc>) -> Option<u64> {
        let until = self.locked_until.filter(|until| *until > now)?;
        let millis = (until - now).num_milliseconds().max(0);
        // Round up: a client that waits the whole Retry-After must get through.
        Some(u64::try_from((millis + 999) / 1000).unwrap_or(1).max(1))
    }

    /// The counter once one more attempt is admitted at `now`.
    fn admit(&self, limit: i32, policy: &ThrottlePolicy, now: DateTime<Utc>) -> Counter {
        let window_passed = self.first_failure <= now - Duration::seconds(policy.window_secs);
        let (failures, first_failure) = if window_passed || self.failures <= 0 {
            (1, now)
        } else {
            (self.failures.saturating_add(1), self.first_failure)
        };
        let locked_until = (failures >= limit).then(|| {
            let doublings = u32::try_from(failures - limit).unwrap_or(0).min(30);
            let lock_secs = policy
                .base_lock_secs
                .saturating_mul(1_i64 << doublings)
                .min(policy.max_lock_secs);
            now + Duration::seconds(lock_secs)
        });
        Counter {
            throttle_key: self.throttle_key.clone(),
            failures,
            first_failure,
            locked_until,
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

    /// Counts an attempt under its keys, unless one is locked: then nothing is
    /// counted and the attempt must not verify its password. A client address that
    /// signed in to the account in the last [`KNOWN_CLIENT_DAYS`] days is counted
    /// under a counter of its own for the account instead of the account's, so
    /// that failures from elsewhere (someone locking the account on purpose) do not
    /// keep it out; it still gets no more than the account's limit of guesses.
    pub async fn admit(
        &self,
        keys: &ThrottleKeys,
        now: DateTime<Utc>,
    ) -> Result<Admission, sqlx::Error> {
        let mut transaction = self.pool.begin().await?;
        let email_counter = match &keys.email {
            None => None,
            Some(email) => {
                let known = is_known_client(&mut transaction, email, &keys.client, now).await?;
                Some(if known {
                    format!("{email}|{}", keys.client)
                } else {
                    email.clone()
                })
            }
        };
        let mut counter_keys: Vec<&str> = email_counter.iter().map(String::as_str).collect();
        counter_keys.push(&keys.client);
        let counters = lock_counters(&mut transaction, counter_keys, now).await?;
        let locked = counters
            .iter()
            .filter_map(|counter| counter.locked_for(now))
            .max();
        if let Some(retry_after_secs) = locked {
            transaction.rollback().await?;
            return Ok(Admission::Locked { retry_after_secs });
        }
        let limit_of = |key: &str| {
            if key == keys.client {
                self.policy.failures_per_client
            } else {
                self.policy.failures_per_email
            }
        };
        let admitted: Vec<Counter> = counters
            .iter()
            .map(|counter| counter.admit(limit_of(&counter.throttle_key), &self.policy, now))
            .collect();
        write_counters(&mut transaction, &admitted).await?;
        transaction.commit().await?;
        Ok(Admission::Admitted(Attempt {
            keys: keys.clone(),
            email_counter,
        }))
    }

    /// An admitted attempt had the right password: it gives its place back under
    /// its counters, a lock it set (by being the one that reached the limit) is
    /// lifted, and its client address becomes known to the account. The failures
    /// before it stay counted.
    pub async fn succeeded(
        &self,
        attempt: &Attempt,
        now: DateTime<Utc>,
    ) -> Result<(), sqlx::Error> {
        let mut transaction = self.pool.begin().await?;
        sqlx::query(
            "UPDATE login_failures
                SET failures = greatest(failures - 1, 0),
                    locked_until = CASE WHEN failures - 1 < (CASE WHEN throttle_key = $2
                                                                  THEN $4 ELSE $3 END)
                                        THEN NULL ELSE locked_until END
              WHERE throttle_key = $1 OR throttle_key = $2",
        )
        .bind(attempt.email_counter.as_deref())
        .bind(&attempt.keys.client)
        .bind(self.policy.failures_per_email)
        .bind(self.policy.failures_per_client)
        .execute(&mut *transaction)
        .await?;
        if let Some(email) = &attempt.keys.email {
            sqlx::query(
                "INSERT INTO login_known_clients (email_key, client_key, last_login)
                 VALUES ($1, $2, $3)
                 ON CONFLICT (email_key, client_key) DO UPDATE SET last_login = $3",
            )
            .bind(email)
            .bind(&attempt.keys.client)
            .bind(now)
            .execute(&mut *transaction)
            .await?;
        }
        transaction.commit().await
    }

    /// Forgets every failure of an e-mail address: its owner proved they hold the
    /// mailbox (a password reset), so a lock others caused must not keep them out.
    pub async fn forget_email(&self, keys: &ThrottleKeys) -> Result<(), sqlx::Error> {
        let Some(email) = &keys.email else {
            return Ok(());
        };
        // The account's counter and those of the addresses known to it.
        sqlx::query(
            "DELETE FROM login_failures
              WHERE throttle_key = $1 OR starts_with(throttle_key, $1 || '|')",
        )
        .bind(email)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}

type Transaction = sqlx::Transaction<'static, sqlx::Postgres>;

/// Whether `client` signed in to the account of `email` in the last
/// [`KNOWN_CLIENT_DAYS`] days.
async fn is_known_client(
    transaction: &mut Transaction,
    email: &str,
    client: &str,
    now: DateTime<Utc>,
) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM login_known_clients
                         WHERE email_key = $1 AND client_key = $2 AND last_login > $3)",
    )
    .bind(email)
    .bind(client)
    .bind(now - Duration::days(KNOWN_CLIENT_DAYS))
    .fetch_one(&mut **transaction)
    .await
}

/// The rows of `keys`, created if missing and locked for the rest of the
/// transaction, in the order of their keys, so that two attempts never wait for
/// each other in opposite orders.
async fn lock_counters(
    transaction: &mut Transaction,
    mut keys: Vec<&str>,
    now: DateTime<Utc>,
) -> Result<Vec<Counter>, sqlx::Error> {
    keys.sort_unstable();
    sqlx::query(
        "INSERT INTO login_failures (throttle_key, failures, first_failure)
         SELECT key, 0, $2 FROM UNNEST($1::text[]) AS key
         ON CONFLICT (throttle_key) DO NOTHING",
    )
    .bind(&keys[..])
    .bind(now)
    .execute(&mut **transaction)
    .await?;
    sqlx::query_as(
        "SELECT throttle_key, failures, first_failure, locked_until
           FROM login_failures WHERE throttle_key = ANY($1)
          ORDER BY throttle_key FOR UPDATE",
    )
    .bind(&keys[..])
    .fetch_all(&mut **transaction)
    .await
}

async fn write_counters(
    transaction: &mut Transaction,
    counters: &[Counter],
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE login_failures AS f
            SET failures = n.failures, first_failure = n.first_failure,
                locked_until = n.locked_until
           FROM UNNEST($1::text[], $2::int[], $3::timestamptz[], $4::timestamptz[])
                AS n(throttle_key, failures, first_failure, locked_until)
          WHERE f.throttle_key = n.throttle_key",
    )
    .bind(
        counters
            .iter()
            .map(|c| c.throttle_key.clone())
            .collect::<Vec<_>>(),
    )
    .bind(counters.iter().map(|c| c.failures).collect::<Vec<_>>())
    .bind(counters.iter().map(|c| c.first_failure).collect::<Vec<_>>())
    .bind(counters.iter().map(|c| c.locked_until).collect::<Vec<_>>())
    .execute(&mut **transaction)
    .await?;
    Ok(())
}

/// How long a row of `login_failures` is kept after its window began: the longest
/// window any of its users counts in (logins 15 minutes, password-reset requests
/// 15 minutes), with room to spare. A row still locked is kept until its lock ends.
pub const LOGIN_FAILURES_RETENTION: std::time::Duration = std::time::Duration::from_secs(60 * 60);

/// Deletes the rows of `login_failures` that count nothing any more (their window
/// began more than [`LOGIN_FAILURES_RETENTION`] ago and no lock holds), and the
/// client addresses no longer known to an account: without this, every address
/// anyone ever mistyped would stay for ever. Returns how many rows went. Every API instance runs it now and then; running it twice is harmless.
pub async fn purge_expired(pool: &PgPool, now: DateTime<Utc>) -> Result<u64, sqlx::Error> {
    let retention = Duration::from_std(LOGIN_FAILURES_RETENTION).unwrap_or(Duration::hours(1));
    let purged = sqlx::query(
        "DELETE FROM login_failures
          WHERE first_failure < $1 AND (locked_until IS NULL OR locked_until < $2)",
    )
    .bind(now - retention)
    .bind(now)
    .execute(pool)
    .await?;
    let forgotten = sqlx::query("DELETE FROM login_known_clients WHERE last_login <= $1")
        .bind(now - Duration::days(KNOWN_CLIENT_DAYS))
        .execute(pool)
        .await?;
    Ok(purged.rows_affected() + forgotten.rows_affected())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counter(failures: i32, first_failure: DateTime<Utc>) -> Counter {
        Counter {
            throttle_key: "email:x".to_owned(),
            failures,
            first_failure,
            locked_until: None,
        }
    }

    #[test]
    fn the_attempt_that_reaches_the_limit_locks_and_each_further_one_doubles_the_lock() {
        let policy = ThrottlePolicy::default();
        let now = Utc::now();
        let mut row = counter(0, now);
        for attempt in 1..5 {
            row = row.admit(5, &policy, now);
            assert_eq!(row.failures, attempt);
            assert_eq!(row.locked_until, None, "attempt {attempt}");
        }
        row = row.admit(5, &policy, now);
        assert_eq!(row.locked_for(now), Some(30));
        row = row.admit(5, &policy, now);
        assert_eq!(row.locked_for(now), Some(60));
        for _ in 0..20 {
            row = row.admit(5, &policy, now);
        }
        assert_eq!(row.locked_for(now), Some(15 * 60), "capped");
    }

    #[test]
    fn a_window_that_has_passed_starts_over() {
        let policy = ThrottlePolicy::default();
        let now = Utc::now();
        let old = counter(4, now - Duration::seconds(policy.window_secs + 1));
        let row = old.admit(5, &policy, now);
        assert_eq!((row.failures, row.first_failure), (1, now));
        assert_eq!(row.locked_until, None);
    }

    #[test]
    fn keys_have_one_short_shape_whatever_the_client_sends() {
        let client: IpAddr = "192.0.2.7".parse().unwrap();
        let nul = ThrottleKeys::new("a\0b@example.com", client);
        let huge = ThrottleKeys::new(&"x".repeat(10_000), client);
        assert_eq!(
            nul.email.as_ref().map(String::len),
            huge.email.as_ref().map(String::len)
        );
        assert!(!nul.email.as_ref().unwrap().contains('\0'));
        assert_ne!(nul.email, huge.email);
    }
}
