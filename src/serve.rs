//! `orders serve <service>`: one way to run the services. The arguments become a
//! [`ServePlan`], in which every configuration mistake is found before anything
//! connects (one line, exit 2); the plan then runs each service it holds as a task
//! of one set, all stopped by one [`CancellationToken`]: a signal cancels it, and
//! so does the first service to stop for any reason (a half-running process would
//! look alive to its supervisor). Each service finishes its work in flight.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, ValueEnum};
use futures::FutureExt as _;
use orders_command_api::{ApiConfig, AppState};
use orders_store::seal::AuditKey;
use orders_store::Secret;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::cli_args::{AuditKeyArgs, DatabaseArgs, NatsArgs, NatsReplicasArgs, ScraperArgs};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Service {
    /// The HTTP API.
    Api,
    /// The relay: stored events into the JetStream log stream, in commit order.
    Relay,
    /// The projectors of every view (each leader-elected).
    Projectors,
    /// The scheduler (leader-elected), the scraper, the price policy and the e-mail
    /// worker.
    Workers,
    /// Every service this build has, in one process.
    All,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    service: Service,
    #[command(flatten)]
    database: DatabaseArgs,
    /// Where the HTTP API listens.
    #[arg(long, env = "ORDERS_HTTP_ADDR", default_value = "127.0.0.1:8080")]
    http_addr: SocketAddr,
    /// Signs access tokens and mailed links; at least 32 bytes, no default.
    #[arg(long, env = "ORDERS_JWT_SECRET", hide_env_values = true)]
    jwt_secret: Option<String>,
    #[command(flatten)]
    audit_key: AuditKeyArgs,
    /// The base URL users reach the API at, for links in mails.
    #[arg(long, env = "ORDERS_PUBLIC_URL")]
    public_url: Option<String>,
    /// Database connections of this process.
    #[arg(long, env = "ORDERS_DATABASE_MAX_CONNECTIONS", default_value_t = 32)]
    database_max_connections: u32,
    #[command(flatten)]
    nats: NatsArgs,
    #[command(flatten)]
    replicas: NatsReplicasArgs,
    /// Events the relay reads and publishes (pipelined) per batch.
    #[arg(long, env = "ORDERS_RELAY_BATCH_SIZE", default_value_t = 1000)]
    relay_batch_size: i64,
    /// How often an idle relay looks for new events.
    #[arg(long, env = "ORDERS_RELAY_POLL_MS", default_value_t = 100)]
    relay_poll_ms: u64,
    /// The SMTP server the e-mail worker sends through, e.g. smtp://127.0.0.1:1025.
    #[arg(long, env = "ORDERS_SMTP_URL", hide_env_values = true)]
    smtp_url: Option<String>,
    /// The sender of every mail, e.g. "Orders <orders@example.com>".
    #[arg(long, env = "ORDERS_MAIL_FROM")]
    mail_from: Option<String>,
    #[command(flatten)]
    scraper: ScraperArgs,
    /// Checks one workers process runs at once.
    #[arg(long, env = "ORDERS_SCRAPER_CONCURRENCY", default_value_t = 32)]
    scraper_concurrency: usize,
    /// How often the scheduler looks for orders that are due.
    #[arg(long, env = "ORDERS_SCHEDULER_TICK_MS", default_value_t = 1000)]
    scheduler_tick_ms: u64,
    /// How long a purchase may stay pending before the saga rejects it
    /// (`timed_out`) and releases its stock, in seconds.
    #[arg(long, env = "ORDERS_SAGA_TIMEOUT_SECS", default_value_t = 30)]
    saga_timeout_secs: u64,
    /// Purchase events one saga instance works on at once.
    #[arg(long, env = "ORDERS_SAGA_CONCURRENCY", default_value_t = 256)]
    saga_concurrency: usize,
}

/// What the API needs beyond the shared settings.
struct ApiPlan {
    jwt_secret: Secret,
    http_addr: SocketAddr,
}

/// What the relay needs beyond the shared settings.
struct RelayPlan {
    batch_size: i64,
    poll: Duration,
}

/// What the workers need beyond the shared settings (the mailer is built when they
/// start).
struct WorkersPlan {
    jwt_secret: Secret,
    smtp_url: String,
    mail_from: String,
    public_url: url::Url,
    fetch: orders_workers::fetch::FetchPolicy,
    host_gate: orders_workers::host_gate::HostGateConfig,
    scraper_concurrency: usize,
    scheduler_tick: Duration,
    saga_timeout: Duration,
    saga_concurrency: usize,
}

/// The services one `orders serve` runs, with everything each needs, checked.
pub struct ServePlan {
    database_url: String,
    database_max_connections: u32,
    /// Required by the relay, the projectors and the workers; the API, when given
    /// one, wakes the relay through it after each commit.
    nats_url: Option<String>,
    nats_replicas: usize,
    /// Everything that writes events seals them: the API and the workers.
    audit_key: Option<AuditKey>,
    public_url: String,
    api: Option<ApiPlan>,
    relay: Option<RelayPlan>,
    projectors: bool,
    workers: Option<WorkersPlan>,
}

impl ServePlan {
    /// Checks the arguments for the services asked for, in the order an operator
    /// meets them (the first mistake is the one line printed).
    pub fn from_args(args: ServeArgs) -> anyhow::Result<Self> {
        let runs = |service: Service| args.service == service || args.service == Service::All;
        let public_url = args
            .public_url
            .clone()
            .unwrap_or_else(|| format!("http://{}", args.http_addr));
        let workers = if runs(Service::Workers) {
            Some(WorkersPlan::from_args(&args, &public_url)?)
        } else {
            None
        };
        let api = if runs(Service::Api) {
            Some(ApiPlan {
                jwt_secret: Secret::from_env_value("ORDERS_JWT_SECRET", args.jwt_secret.clone())?,
                http_addr: args.http_addr,
            })
        } else {
            None
        };
        let audit_key = if api.is_some() || workers.is_some() {
            Some(args.audit_key.key()?)
        } else {
            None
        };
        let database_url = args.database.url()?.to_owned();
        let needs_nats = runs(Service::Relay) || runs(Service::Projectors) || workers.is_some();
        let nats_url = match args.nats.given() {
            Some(url) => Some(url.to_owned()),
            None if needs_nats => {
                anyhow::bail!("ORDERS_NATS_URL is not set (e.g. nats://127.0.0.1:4222)")
            }
            None => None,
        };
        Ok(Self {
            database_url,
            database_max_connections: args.database_max_connections,
            nats_url,
            nats_replicas: args.replicas.nats_replicas,
            audit_key,
            public_url,
            api,
            relay: runs(Service::Relay).then(|| RelayPlan {
                batch_size: args.relay_batch_size,
                poll: Duration::from_millis(args.relay_poll_ms.max(1)),
            }),
            projectors: runs(Service::Projectors),
            workers,
        })
    }

    fn needs_the_log(&self) -> bool {
        self.relay.is_some() || self.projectors || self.workers.is_some()
    }

    /// Runs every planned service until `shutdown` is cancelled or one of them
    /// stops; answers the first error.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        self.start(shutdown).await?.wait().await
    }

    /// Connects, migrates and starts every planned service as a task of one set;
    /// [`Running::wait`] then waits for them.
    pub async fn start(self, shutdown: CancellationToken) -> anyhow::Result<Running> {
        let pool =
            orders_store::database::connect(&self.database_url, self.database_max_connections)
                .await?;
        orders_store::database::migrate(&pool).await?;
        let nats = self.connect_nats().await?;
        let mut services = JoinSet::new();
        if let (Some(client), true) = (&nats, self.needs_the_log()) {
            self.start_the_log_services(client, &mut services, &shutdown)
                .await?;
        }
        let mut api_addr = None;
        if let Some(api) = &self.api {
            let audit_key = self.audit_key.clone().context("the API seals its events")?;
            let mut config =
                ApiConfig::new(api.jwt_secret.clone(), audit_key, self.public_url.clone());
            config.relay_waker = nats.clone().map(orders_store::event_store::RelayWaker::new);
            config.jetstream = nats.clone().map(async_nats::jetstream::new);
            config.live = nats.clone().map(|client| {
                orders_projectors::live::LiveHub::start(
                    async_nats::jetstream::new(client),
                    pool.clone(),
                    shutdown.clone(),
                )
            });
            let state = AppState::new(config, pool).await?;
            let listener = TcpListener::bind(api.http_addr)
                .await
                .with_context(|| format!("listening on {} (ORDERS_HTTP_ADDR)", api.http_addr))?;
            let addr = listener.local_addr()?;
            tracing::info!(%addr, public_url = %self.public_url, "serving the HTTP API");
            services.spawn(orders_command_api::run(state, listener, shutdown.clone()));
            api_addr = Some(addr);
        }
        Ok(Running {
            services,
            shutdown,
            api_addr,
        })
    }

    /// The relay, the projectors and the workers cannot start without NATS; the API
    /// can (it only wakes the relay, which polls anyway), so it connects in the
    /// background.
    async fn connect_nats(&self) -> anyhow::Result<Option<async_nats::Client>> {
        let Some(url) = &self.nats_url else {
            return Ok(None);
        };
        let redacted = orders_nats::redacted(url);
        let client = if self.needs_the_log() {
            orders_nats::connect(url)
                .await
                .with_context(|| format!("connecting to NATS at {redacted} (ORDERS_NATS_URL)"))?
        } else {
            orders_nats::connect_in_background(url)
                .await
                .with_context(|| format!("NATS URL {redacted} (ORDERS_NATS_URL)"))?
        };
        Ok(Some(client))
    }

    /// Starts the relay, the workers and the projectors that are planned, each
    /// with database connections of its own, so that none can starve another.
    async fn start_the_log_services(
        &self,
        client: &async_nats::Client,
        services: &mut JoinSet<anyhow::Result<()>>,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<()> {
        let jetstream = async_nats::jetstream::new(client.clone());
        ensure_topology_patiently(&jetstream, self.nats_replicas).await?;
        let leaders = jetstream
            .get_key_value(orders_nats::LEADER_BUCKET)
            .await
            .context("opening the leader bucket")?;
        let redacted = orders_nats::redacted(self.nats_url.as_deref().unwrap_or_default());
        if let Some(relay) = &self.relay {
            let lease =
                orders_nats::leader::LeaderLease::new(leaders.clone(), "relay", instance_name());
            let relay_pool = orders_store::database::connect(&self.database_url, 2).await?;
            let relayer = orders_relay::Relay::new(relay_pool, jetstream.clone(), relay.batch_size)
                .with_wake_ups(orders_relay::listen_for_wake_ups(client).await?);
            let (poll, shutdown) = (relay.poll, shutdown.clone());
            tracing::info!(nats_url = %redacted, "relaying events to the log stream while leader");
            services.spawn(async move {
                relayer
                    .run_as_leader(lease, orders_nats::LEADER_LEASE, poll, shutdown)
                    .await
                    .context("the relay")
            });
        }
        if let Some(workers) = &self.workers {
            let config = orders_workers::service::WorkersConfig {
                mailer: orders_workers::mail::Mailer::new(&workers.smtp_url, &workers.mail_from)?,
                tokens: orders_application::signed_tokens::SignedTokens::new(
                    workers.jwt_secret.expose(),
                ),
                public_url: workers.public_url.clone(),
                fetch: workers.fetch.clone(),
                host_gate: workers.host_gate.clone(),
                scraper_concurrency: workers.scraper_concurrency,
                scheduler_tick: workers.scheduler_tick,
                saga_timeout: workers.saga_timeout,
                saga_concurrency: workers.saga_concurrency,
                audit_key: self
                    .audit_key
                    .clone()
                    .context("the workers seal their events")?,
            };
            let workers_pool = orders_store::database::connect(&self.database_url, 8).await?;
            services.spawn(
                orders_workers::service::run(
                    config,
                    workers_pool,
                    jetstream.clone(),
                    leaders.clone(),
                    instance_name(),
                    shutdown.clone(),
                )
                .map(|result| result.context("the workers")),
            );
        }
        if self.projectors {
            tracing::info!(nats_url = %redacted, "projecting the views while leader of each");
            let projectors_pool = orders_store::database::connect(
                &self.database_url,
                orders_projectors::View::ALL.len() as u32 + 1,
            )
            .await?;
            services.spawn(
                orders_projectors::run(
                    projectors_pool,
                    jetstream,
                    leaders,
                    instance_name(),
                    orders_nats::LEADER_LEASE,
                    shutdown.clone(),
                )
                .map(|result| result.context("the projectors")),
            );
        }
        Ok(())
    }
}

/// The services of a started plan.
pub struct Running {
    services: JoinSet<anyhow::Result<()>>,
    shutdown: CancellationToken,
    api_addr: Option<SocketAddr>,
}

impl Running {
    /// Where the HTTP API listens, if the plan has it (the port the system chose
    /// for `:0`).
    pub fn api_addr(&self) -> Option<SocketAddr> {
        self.api_addr
    }

    /// Waits until the services have stopped: all of them, once the shutdown token
    /// is cancelled or the first of them stops for any reason (which cancels it);
    /// answers the first error.
    pub async fn wait(mut self) -> anyhow::Result<()> {
        let mut outcome = Ok(());
        while let Some(finished) = self.services.join_next().await {
            self.shutdown.cancel();
            let result = finished.unwrap_or_else(|join_error| {
                Err(anyhow::anyhow!("a service panicked: {join_error}"))
            });
            if let (Ok(()), Err(error)) = (&outcome, result) {
                outcome = Err(error);
            }
        }
        outcome
    }
}

impl WorkersPlan {
    fn from_args(args: &ServeArgs, public_url: &str) -> anyhow::Result<Self> {
        let jwt_secret = Secret::from_env_value("ORDERS_JWT_SECRET", args.jwt_secret.clone())?;
        let smtp_url = args
            .smtp_url
            .clone()
            .filter(|url| !url.is_empty())
            .context("ORDERS_SMTP_URL is not set (e.g. smtp://127.0.0.1:1025)")?;
        let mail_from = args
            .mail_from
            .clone()
            .filter(|from| !from.is_empty())
            .context("ORDERS_MAIL_FROM is not set (e.g. \"Orders <orders@example.com>\")")?;
        let public_url: url::Url = public_url
            .parse()
            .with_context(|| format!("ORDERS_PUBLIC_URL {public_url:?} is not a URL"))?;
        orders_workers::fetch::install_crypto_provider();
        Ok(Self {
            jwt_secret,
            smtp_url,
            mail_from,
            public_url,
            fetch: args.scraper.fetch_policy()?,
            host_gate: args.scraper.host_gate(),
            scraper_concurrency: args.scraper_concurrency.max(1),
            scheduler_tick: Duration::from_millis(args.scheduler_tick_ms.max(10)),
            saga_timeout: Duration::from_secs(args.saga_timeout_secs.max(1)),
            saga_concurrency: args.saga_concurrency.max(1),
        })
    }
}

/// Cancels `shutdown` on SIGINT or SIGTERM.
pub fn stop_on_signal(shutdown: CancellationToken) {
    tokio::spawn(async move {
        let interrupt = async {
            let _ = tokio::signal::ctrl_c().await;
        };
        #[cfg(unix)]
        let terminate = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut signal) => {
                    signal.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        #[cfg(not(unix))]
        let terminate = std::future::pending::<()>();
        tokio::select! {
            () = interrupt => {},
            () = terminate => {},
            () = shutdown.cancelled() => return,
        }
        tracing::info!("shutting down: finishing requests in flight");
        shutdown.cancel();
    });
}

/// This process among the instances of a service: host and process id, as leader
/// keys show it.
fn instance_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_owned())
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_else(|_| "unknown-host".to_owned());
    format!("{host}:{}", std::process::id())
}

/// Creates or updates the stream and buckets, waiting up to a minute for JetStream:
/// a cluster may still be electing its leader, and instances starting together
/// creating the same replicated stream can time each other out, so attempts are
/// short and spaced at random.
pub async fn ensure_topology_patiently(
    jetstream: &async_nats::jetstream::Context,
    replicas: usize,
) -> anyhow::Result<()> {
    let mut jetstream = jetstream.clone();
    jetstream.set_timeout(Duration::from_secs(2));
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        match orders_nats::ensure_topology(&jetstream, replicas).await {
            Ok(()) => return Ok(()),
            Err(error) if std::time::Instant::now() < deadline => {
                tracing::warn!(error = %error, "JetStream is not ready; trying again");
                let jitter = u64::from(uuid::Uuid::new_v4().as_bytes()[0]) * 4;
                tokio::time::sleep(Duration::from_millis(200 + jitter)).await;
            }
            Err(error) => return Err(error.into()),
        }
    }
}
