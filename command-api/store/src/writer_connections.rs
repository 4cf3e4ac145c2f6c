//! Connections for the command path's hot statements (the placement lookup and the
//! event insert), kept without sqlx's pool.
//!
//! sqlx 0.8's pool sends a `Sync` and waits for the answer every time a connection is
//! given back (`PoolConnection::return_to_pool` pings unconditionally): one more
//! round trip, and one more wake-up of a PostgreSQL backend, for every statement. On
//! `POST /orders` that doubled the round trips PostgreSQL serves per command. These
//! connections are handed back without it.
//!
//! The ping protects against a connection left mid-protocol by a future that was
//! dropped during a statement. Here a connection goes back to the idle list only when
//! its user says the statement completed (`release`); a guard dropped any other way
//! (an error, a cancelled request) closes its connection instead.

use std::sync::{Arc, Mutex};

use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::Connection as _;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

pub struct WriterConnections {
    options: PgConnectOptions,
    idle: Mutex<Vec<PgConnection>>,
    permits: Arc<Semaphore>,
}

impl WriterConnections {
    pub fn new(options: PgConnectOptions, max_connections: u32) -> Self {
        Self {
            options,
            idle: Mutex::new(Vec::new()),
            permits: Arc::new(Semaphore::new(max_connections.max(1) as usize)),
        }
    }

    /// A connection for one statement (or a few): an idle one, or a new one while
    /// fewer than `max_connections` are open; otherwise waits for one.
    pub async fn acquire(&self) -> Result<WriterConnection<'_>, sqlx::Error> {
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| sqlx::Error::PoolClosed)?;
        let idle = self.idle.lock().expect("idle list lock poisoned").pop();
        let connection = match idle {
            Some(connection) => connection,
            None => PgConnection::connect_with(&self.options).await?,
        };
        Ok(WriterConnection {
            connection: Some(connection),
            owner: self,
            _permit: permit,
        })
    }

    /// Closes the idle connections (at shutdown).
    pub async fn close(&self) {
        let idle = std::mem::take(&mut *self.idle.lock().expect("idle list lock poisoned"));
        for connection in idle {
            let _ = connection.close().await;
        }
    }
}

/// A connection on loan. Dereferences to the connection; `release` gives it back.
pub struct WriterConnection<'a> {
    connection: Option<PgConnection>,
    owner: &'a WriterConnections,
    _permit: OwnedSemaphorePermit,
}

impl WriterConnection<'_> {
    pub fn connection(&mut self) -> &mut PgConnection {
        self.connection.as_mut().expect("present until released")
    }

    /// Gives the connection back for reuse: call only after its statements completed
    /// (successfully, or with an error PostgreSQL answered, such as a constraint
    /// violation); the protocol is then at a clean boundary.
    pub fn release(mut self) {
        if let Some(connection) = self.connection.take() {
            self.owner
                .idle
                .lock()
                .expect("idle list lock poisoned")
                .push(connection);
        }
    }
}

impl Drop for WriterConnection<'_> {
    fn drop(&mut self) {
        // Not released: the statement may have been interrupted half-way, so the
        // connection is closed (by dropping its socket) rather than reused.
        drop(self.connection.take());
    }
}

/// Whether a statement's error leaves its connection at a clean protocol boundary
/// (PostgreSQL answered it), so that the connection may be reused.
pub fn leaves_connection_usable(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(_) | sqlx::Error::RowNotFound)
}
