//! The Orders HTTP API: the routes of the brief, authentication and the login
//! throttle, problem documents, metrics. The write side it calls lives beside it:
//! `orders-store` (the event store), `orders-application` (the application
//! commands), `orders-relay` (the log relay); only this crate knows HTTP.
//!
//! `run(state, listener, shutdown)` serves until `shutdown` is cancelled, then
//! finishes the requests in flight. `main` (the `orders` binary) only reads the
//! configuration, connects and selects over services.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use sqlx::PgPool;
use tokio::net::TcpListener;

pub mod auth;
pub mod console;
pub mod http;
pub mod login_throttle;
pub mod metrics;
pub mod problem;

use crate::auth::AccessTokens;
use crate::login_throttle::{LoginThrottle, ThrottlePolicy};
use orders_application::signed_tokens::SignedTokens;
use orders_store::event_store::{self, EventStore};
use orders_store::{seal, user_lookup, Secret};

/// Request bodies larger than this are refused with 413.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// What the API needs to know to run.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    pub jwt_secret: Secret,
    /// Seals every event the API writes (`ORDERS_AUDIT_KEY`).
    pub audit_key: seal::AuditKey,
    /// Base URL for links in mails (verification, unsubscribe).
    pub public_url: String,
    pub access_token_lifetime: Duration,
    pub verification_token_lifetime: Duration,
    pub login_throttle: ThrottlePolicy,
    /// How long a read with `Orders-Min-Position` waits for its view.
    pub read_your_writes_timeout: Duration,
    /// How often the instance purges the login throttle's rows that count nothing.
    pub login_failures_purge_interval: Duration,
    /// Wakes the relay after each command (when the API has a NATS connection).
    pub relay_waker: Option<event_store::RelayWaker>,
    /// Feeds `GET /live` (when the API has a NATS connection; else it answers 503).
    pub live: Option<Arc<orders_projectors::live::LiveHub>>,
    /// The log's JetStream (when the API has a NATS connection): the dashboard's
    /// lag, the dead letters and `audit verify`'s chain heads are read from it.
    pub jetstream: Option<async_nats::jetstream::Context>,
}

impl ApiConfig {
    pub fn new(jwt_secret: Secret, audit_key: seal::AuditKey, public_url: String) -> Self {
        Self {
            jwt_secret,
            audit_key,
            public_url,
            access_token_lifetime: Duration::from_secs(3600),
            verification_token_lifetime: Duration::from_secs(48 * 3600),
            login_throttle: ThrottlePolicy::default(),
            read_your_writes_timeout: Duration::from_secs(2),
            login_failures_purge_interval: Duration::from_secs(5 * 60),
            relay_waker: None,
            live: None,
            jetstream: None,
        }
    }
}

/// Shared by every handler.
pub struct AppState {
    pub config: ApiConfig,
    pub events: EventStore,
    pub access_tokens: AccessTokens,
    pub signed_tokens: SignedTokens,
    pub login_throttle: LoginThrottle,
    pub metrics: metrics::Metrics,
    /// What this instance last saw of each user's placement facts.
    pub placement_facts: user_lookup::PlacementFactsCache,
    /// A hash of a random password, verified against when a login names an unknown
    /// e-mail, so that it takes as long as a wrong password.
    pub dummy_password_hash: String,
}

impl AppState {
    pub async fn new(config: ApiConfig, pool: PgPool) -> anyhow::Result<Arc<Self>> {
        let dummy_password_hash = auth::hash_password(uuid::Uuid::new_v4().to_string())
            .await
            .context("hashing the dummy password")?;
        Ok(Arc::new(Self {
            events: EventStore::new(pool.clone(), config.audit_key.clone())
                .with_relay_waker(config.relay_waker.clone()),
            access_tokens: AccessTokens::new(
                config.jwt_secret.expose(),
                config.access_token_lifetime,
            ),
            signed_tokens: SignedTokens::new(config.jwt_secret.expose()),
            login_throttle: LoginThrottle::new(pool, config.login_throttle),
            metrics: metrics::Metrics::new(),
            placement_facts: user_lookup::PlacementFactsCache::new(100_000),
            dummy_password_hash,
            config,
        }))
    }

    pub fn pool(&self) -> &PgPool {
        self.events.pool()
    }
}

/// Serves the API on `listener` until `shutdown` is cancelled, then lets the requests
/// in flight finish.
pub async fn run(
    state: Arc<AppState>,
    listener: TcpListener,
    shutdown: tokio_util::sync::CancellationToken,
) -> anyhow::Result<()> {
    let app = http::router(state.clone());
    let serving = axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown.cancelled_owned());
    let served = tokio::select! {
        served = serving => served.context("serving HTTP"),
        never = purge_login_failures(
            state.pool().clone(),
            state.config.login_failures_purge_interval,
        ) => match never {},
    };
    state.events.close().await;
    served
}

/// Purges `login_failures` every few minutes while the API serves (every instance
/// does; a purge that finds nothing costs a scan of two small tables).
async fn purge_login_failures(pool: PgPool, every: Duration) -> std::convert::Infallible {
    let mut interval = tokio::time::interval(every);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        match login_throttle::purge_expired(&pool, chrono::Utc::now()).await {
            Ok(0) => {}
            Ok(purged) => tracing::debug!(purged, "purged expired login throttling rows"),
            Err(error) => tracing::warn!(error = %error, "purging login throttling rows failed"),
        }
    }
}
