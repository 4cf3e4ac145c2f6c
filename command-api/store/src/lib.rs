//! The write side's storage: the event store (cqrs-es over postgres-es's `events`
//! table, with our one-statement writer), every event's seal, the database pool and
//! the schema's migrations (the views' tables too), the reads a command needs about
//! a user, and the audit trail read from the events.
//!
//! **Invariant:** only this crate appends to `events`, and only through
//! `EventStore::execute` and its siblings.

use anyhow::Context as _;

pub mod audit;
pub mod database;
pub mod event_store;
pub mod seal;
pub mod statements;
pub mod stored_event;
pub mod user_lookup;
pub mod writer_connections;

/// The shortest service secret we accept (HS256 wants at least 256 bits).
pub const MIN_SECRET_BYTES: usize = 32;

/// A secret that is long enough; never printed.
#[derive(Clone)]
pub struct Secret(Vec<u8>);

impl Secret {
    /// Checks a secret from the environment; the error is one line naming `variable`.
    pub fn from_env_value(variable: &str, value: Option<String>) -> anyhow::Result<Self> {
        let value = value
            .filter(|value| !value.is_empty())
            .with_context(|| format!("{variable} is not set; it must be at least {MIN_SECRET_BYTES} bytes (e.g. `openssl rand -base64 48`)"))?;
        if value.len() < MIN_SECRET_BYTES {
            anyhow::bail!(
                "{variable} is {} bytes long; it must be at least {MIN_SECRET_BYTES} bytes",
                value.len()
            );
        }
        Ok(Self(value.into_bytes()))
    }

    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}
