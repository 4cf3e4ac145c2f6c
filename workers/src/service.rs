//! `orders serve workers`: the scheduler and the purchase saga's time bound
//! (leader-elected), the scraper, the price-check policy, the catalog policy, the
//! e-mail worker and the purchase saga (competing consumers), in one process.
//! Any number of such processes may run.

use std::time::Duration;
use tokio_util::sync::CancellationToken;

use anyhow::Context as _;
use async_nats::jetstream::{self, kv};
use orders_application::signed_tokens::SignedTokens;
use orders_store::event_store::EventStore;
use orders_store::seal::AuditKey;
use sqlx::PgPool;
use url::Url;

use crate::email_worker::EmailWorker;
use crate::fetch::{FetchPolicy, PageFetcher};
use crate::host_gate::{HostGate, HostGateConfig};
use crate::mail::Mailer;
use crate::scheduler::Scheduler;
use crate::scraper::ScraperWorker;

/// What the workers need besides the database and NATS.
pub struct WorkersConfig {
    pub mailer: Mailer,
    /// Signs the links in mails (from `ORDERS_JWT_SECRET`, as the API checks them).
    pub tokens: SignedTokens,
    /// `ORDERS_PUBLIC_URL`.
    pub public_url: Url,
    pub fetch: FetchPolicy,
    pub host_gate: HostGateConfig,
    /// Checks one instance runs at once.
    pub scraper_concurrency: usize,
    /// How often the scheduler looks for orders that are due.
    pub scheduler_tick: Duration,
    /// Seals the events the workers store (`ORDERS_AUDIT_KEY`).
    pub audit_key: AuditKey,
    /// How long a purchase may stay pending (`ORDERS_SAGA_TIMEOUT_SECS`).
    pub saga_timeout: Duration,
    /// Purchase events one instance's saga works on at once.
    pub saga_concurrency: usize,
}

/// Runs every worker until `shutdown` is cancelled.
pub async fn run(
    config: WorkersConfig,
    pool: PgPool,
    jetstream: jetstream::Context,
    leaders: kv::Store,
    instance: String,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let until_stopped = || shutdown.clone().cancelled_owned();
    let events = EventStore::new(pool.clone(), config.audit_key.clone());
    let gate = HostGate::nats(&jetstream, config.host_gate)
        .await
        .context("opening the scraper's host gate")?;
    let fetcher = PageFetcher::new(config.fetch, gate).context("building the page fetcher")?;
    let scraper = std::sync::Arc::new(ScraperWorker::new(events.clone(), fetcher));
    let email = std::sync::Arc::new(EmailWorker::new(
        pool.clone(),
        events.clone(),
        config.mailer,
        config.tokens,
        config.public_url,
    ));
    let scheduler = std::sync::Arc::new(Scheduler::new(pool.clone(), events.clone()));

    let saga = crate::saga::Saga::new(events.clone(), config.saga_timeout);

    // Every duty is boxed: in a debug build their futures are large, and a test
    // that runs `serve all` on its own thread's stack overflowed it.
    let scheduling = Box::pin({
        let lease =
            orders_nats::leader::LeaderLease::new(leaders.clone(), "scheduler", instance.clone());
        let tick = config.scheduler_tick;
        orders_nats::leader::lead(
            lease,
            orders_nats::LEADER_LEASE,
            shutdown.clone(),
            move || {
                let scheduler = scheduler.clone();
                async move { scheduler.run(tick).await }
            },
        )
    });
    let scraping = Box::pin(crate::consumer::consume(
        &jetstream,
        orders_nats::work::SCRAPER,
        config.scraper_concurrency,
        until_stopped(),
        move |event| {
            let scraper = scraper.clone();
            async move { scraper.handle(event).await }
        },
    ));
    let policy_events = events.clone();
    let recording = Box::pin(crate::consumer::consume(
        &jetstream,
        orders_nats::work::PRICE_POLICY,
        8,
        until_stopped(),
        move |event| {
            let events = policy_events.clone();
            async move { crate::policy::record_observation(&events, event).await }
        },
    ));
    let mailing = Box::pin(crate::consumer::consume(
        &jetstream,
        orders_nats::work::EMAIL,
        4,
        until_stopped(),
        move |event| {
            let email = email.clone();
            async move { email.handle(event).await }
        },
    ));
    let following_catalog = Box::pin(crate::catalog_policy::serve(
        events.clone(),
        &jetstream,
        until_stopped(),
    ));
    let purchase_saga = Box::pin(saga.serve(
        &jetstream,
        config.saga_concurrency,
        orders_nats::leader::LeaderLease::new(leaders, "saga-timeouts", instance),
        shutdown.clone(),
    ));
    tracing::info!(
        "workers running: scheduler (while leader), scraper, price policy, catalog policy, e-mail, purchase saga"
    );
    tokio::try_join!(
        async { scheduling.await.context("the scheduler") },
        async { purchase_saga.await.context("the purchase saga") },
        async { following_catalog.await.context("the catalog policy") },
        async { scraping.await.context("the scraper") },
        async { recording.await.context("the price policy") },
        async { mailing.await.context("the e-mail worker") },
    )?;
    events.close().await;
    Ok(())
}
