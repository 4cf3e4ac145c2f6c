//! `orders`: one CLI for every Orders service and tool.
//!
//! `main` only reads the configuration (flags, `ORDERS_*` variables, a `.env` file),
//! sets up telemetry and runs the chosen command; the services live in the library
//! crates and take their inputs.

use std::io::IsTerminal as _;
use std::net::SocketAddr;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand, ValueEnum};
use cli_args::{AuditKeyArgs, DatabaseArgs, NatsArgs, NatsReplicasArgs};
use futures::FutureExt as _;
use orders_command_api::{ApiConfig, AppState};
use orders_store::Secret;
use tokio::net::TcpListener;

mod admin_cli;
mod audit_cli;
mod bench;
mod bench_audit;
mod bench_checks;
mod bench_log;
mod cli_args;

#[derive(Debug, Parser)]
#[command(
    name = "orders",
    version,
    about = "Orders: event-sourced price tracking"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run one service, or all of them in one process.
    Serve(ServeArgs),
    /// Apply the database migrations (services also do this at start).
    Migrate(DatabaseArgs),
    /// NATS JetStream: `setup` creates or updates the stream and buckets.
    Nats {
        #[command(subcommand)]
        nats: NatsCommand,
    },
    /// Benchmarks, each beside the ceiling measured in the same run. Each creates a
    /// fresh database on the server of ORDERS_DATABASE_URL (the user needs CREATEDB)
    /// and drops it afterwards, unless --keep-database.
    Bench {
        #[command(subcommand)]
        bench: bench::BenchCommand,
    },
    /// Rebuild a view (or all) from the start of the log, while the live one serves.
    Replay(ReplayArgs),
    /// Read a product page as the scraper does and print what it found (one JSON
    /// object); exit 0 when it found the price, 1 when ambiguous or failed.
    Scrape(ScrapeArgs),
    /// Roles: `grant` or `revoke` `admin` / `auditor` for a user, by e-mail.
    Admin {
        #[command(subcommand)]
        admin: admin_cli::AdminCommand,
    },
    /// The audit trail: one aggregate's history, what one request caused, what one
    /// actor did.
    Audit {
        #[command(subcommand)]
        audit: audit_cli::AuditCommand,
    },
    /// How far the relay and each view's projector are behind the log.
    Lag {
        #[command(flatten)]
        database: DatabaseArgs,
        #[command(flatten)]
        nats: NatsArgs,
    },
    /// Dead letters: the messages workers gave up on; list them, or put them back.
    Dlq {
        #[command(subcommand)]
        dlq: DlqCommand,
    },
}

#[derive(Debug, Subcommand)]
enum DlqCommand {
    /// The dead letters in ORDERS_DEAD_LETTERS, oldest first.
    List(DlqListArgs),
    /// Put dead letters back for their workers (which handle them again) and remove
    /// them from the list.
    Retry(DlqRetryArgs),
}

#[derive(Debug, Args)]
struct DlqListArgs {
    /// Only this worker's: scraper, price-policy or email.
    #[arg(long)]
    worker: Option<String>,
    /// One JSON array instead of a table.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    nats: NatsArgs,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("which").required(true).args(["sequence", "all"])))]
struct DlqRetryArgs {
    /// The dead letter's sequence, as `orders dlq list` shows it.
    sequence: Option<u64>,
    /// Every dead letter (of --worker, if given).
    #[arg(long)]
    all: bool,
    /// With --all: only this worker's (scraper, price-policy or email).
    #[arg(long, requires = "all")]
    worker: Option<String>,
    #[command(flatten)]
    nats: NatsArgs,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("page").required(true).args(["target", "html"])))]
struct ScrapeArgs {
    /// The product page to fetch, as the scraper would (same address rules,
    /// robots.txt and limits).
    target: Option<String>,
    /// A saved page to read instead of fetching one.
    #[arg(long, conflicts_with = "target")]
    html: Option<std::path::PathBuf>,
    /// With --html: the page's address, checked as an order's URL would be.
    #[arg(long, requires = "html")]
    url: Option<String>,
    /// The order's own CSS selector for the price.
    #[arg(long)]
    selector: Option<String>,
    #[command(flatten)]
    scraper: ScraperArgs,
}

/// `orders scrape`: prints the brief's JSON object; `Ok(true)` when a price was found.
async fn scrape(args: ScrapeArgs) -> anyhow::Result<bool> {
    let html = match (&args.target, &args.html) {
        (Some(target), _) => {
            let url = orders_domain::order::ProductUrl::parse(target)
                .map_err(|error| anyhow::anyhow!("{target:?}: {error}"))?;
            orders_workers::fetch::install_crypto_provider();
            // One page (and its robots.txt) from one process: no one to space from.
            let gate = orders_workers::host_gate::HostGate::in_process(
                orders_workers::host_gate::HostGateConfig {
                    spacing: std::time::Duration::ZERO,
                    ..Default::default()
                },
            );
            let fetcher =
                orders_workers::fetch::PageFetcher::new(args.scraper.fetch_policy()?, gate)?;
            match fetcher.fetch(url.as_url()).await {
                Ok(page) => page.body,
                Err(failure) => {
                    println!(
                        "{}",
                        serde_json::json!({
                            "status": "failed",
                            "price": null,
                            "currency": null,
                            "availability": "Unknown",
                            "title": null,
                            "extractor": null,
                            "candidates": [],
                            "reason": failure.reason(),
                            "detail": failure.to_string(),
                            "http_status": failure.http_status(),
                        })
                    );
                    return Ok(false);
                }
            }
        }
        (None, Some(path)) => {
            if let Some(url) = &args.url {
                orders_domain::order::ProductUrl::parse(url)
                    .map_err(|error| anyhow::anyhow!("--url {url:?}: {error}"))?;
            }
            let bytes =
                std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
            String::from_utf8_lossy(&bytes).into_owned()
        }
        (None, None) => anyhow::bail!("give a URL to fetch, or --html <file>"),
    };
    let extraction = orders_workers::extract::extract(&html, args.selector.as_deref());
    println!("{}", extraction.to_json());
    Ok(extraction.status == orders_workers::extract::Status::Ok)
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("which").required(true).args(["view", "all"])))]
struct ReplayArgs {
    /// users, orders, price_history or admin_overview.
    view: Option<String>,
    /// Every view, one after the other.
    #[arg(long)]
    all: bool,
    /// Log messages applied per transaction.
    #[arg(long, env = "ORDERS_REPLAY_BATCH_SIZE", default_value_t = orders_projectors::projector::DEFAULT_BATCH_SIZE)]
    batch_size: usize,
    #[command(flatten)]
    database: DatabaseArgs,
    #[command(flatten)]
    nats: NatsArgs,
}

#[derive(Debug, Subcommand)]
enum NatsCommand {
    /// Create or update the log stream and the key-value buckets (idempotent).
    Setup {
        #[command(flatten)]
        nats: NatsArgs,
        #[command(flatten)]
        replicas: NatsReplicasArgs,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Service {
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
struct ServeArgs {
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
}

#[derive(Debug, Clone, Args)]
struct ScraperArgs {
    /// Networks the scraper may fetch although private (comma-separated CIDRs, e.g.
    /// 127.0.0.0/8 for tests); none by default.
    #[arg(long, env = "ORDERS_SCRAPER_ALLOW_PRIVATE", default_value = "")]
    scraper_allow_private: String,
    /// The ports the scraper connects to (commas), or * for any. An IP-literal URL
    /// inside an ORDERS_SCRAPER_ALLOW_PRIVATE network may use any port.
    #[arg(long, env = "ORDERS_SCRAPER_PORTS", default_value = orders_workers::fetch::DEFAULT_SCRAPER_PORTS)]
    scraper_ports: String,
    /// The least time between two requests to one host, across every scraper.
    #[arg(long, env = "ORDERS_SCRAPER_HOST_SPACING_MS", default_value_t = 5000)]
    scraper_host_spacing_ms: u64,
    /// The most one request may take, from connecting to the last byte of the page.
    #[arg(long, env = "ORDERS_SCRAPER_TIMEOUT_MS", default_value_t = 30_000)]
    scraper_timeout_ms: u64,
}

impl ScraperArgs {
    fn fetch_policy(&self) -> anyhow::Result<orders_workers::fetch::FetchPolicy> {
        let allow_private =
            orders_workers::fetch::parse_allowed_networks(&self.scraper_allow_private)
                .map_err(|error| anyhow::anyhow!("ORDERS_SCRAPER_ALLOW_PRIVATE: {error}"))?;
        let allowed_ports = orders_workers::fetch::parse_allowed_ports(&self.scraper_ports)
            .map_err(|error| anyhow::anyhow!("ORDERS_SCRAPER_PORTS: {error}"))?;
        let total_timeout = self.timeout();
        Ok(orders_workers::fetch::FetchPolicy {
            allow_private,
            allowed_ports,
            total_timeout,
            connect_timeout: total_timeout.min(std::time::Duration::from_secs(10)),
            ..Default::default()
        })
    }

    fn timeout(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.scraper_timeout_ms.max(100))
    }

    fn host_gate(&self) -> orders_workers::host_gate::HostGateConfig {
        orders_workers::host_gate::HostGateConfig {
            spacing: std::time::Duration::from_millis(self.scraper_host_spacing_ms),
            // A scraper that dies holding a host keeps it this long: a little more
            // than its longest request.
            lease: self.timeout() + std::time::Duration::from_secs(5),
            ..Default::default()
        }
    }
}

/// `default_filter`: what is logged when `ORDERS_LOG` is not set: `info` for the
/// services; `warn` for the tools, whose output is their answer (a tool's error is
/// one line on stderr, not buried under connection notices).
fn init_telemetry(default_filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("ORDERS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // JSON lines for log collectors; readable text on a terminal.
    if std::io::stderr().is_terminal() {
        builder.init();
    } else {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .init();
    }
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

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
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
    }
    tracing::info!("shutting down: finishing requests in flight");
}

/// Creates or updates the stream and buckets, waiting up to a minute for JetStream:
/// a cluster may still be electing its leader, and instances starting together
/// creating the same replicated stream can time each other out, so attempts are
/// short and spaced at random.
async fn ensure_topology_patiently(
    jetstream: &async_nats::jetstream::Context,
    replicas: usize,
) -> anyhow::Result<()> {
    let mut jetstream = jetstream.clone();
    jetstream.set_timeout(std::time::Duration::from_secs(2));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        match orders_nats::ensure_topology(&jetstream, replicas).await {
            Ok(()) => return Ok(()),
            Err(error) if std::time::Instant::now() < deadline => {
                tracing::warn!(error = %error, "JetStream is not ready; trying again");
                let jitter = u64::from(uuid::Uuid::new_v4().as_bytes()[0]) * 4;
                tokio::time::sleep(std::time::Duration::from_millis(200 + jitter)).await;
            }
            Err(error) => return Err(error.into()),
        }
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    // Everything that can be wrong with the configuration is reported before any
    // connection is made.
    let runs_api = matches!(args.service, Service::Api | Service::All);
    let runs_relay = matches!(args.service, Service::Relay | Service::All);
    let runs_projectors = matches!(args.service, Service::Projectors | Service::All);
    let runs_workers = matches!(args.service, Service::Workers | Service::All);
    let public_url = args
        .public_url
        .clone()
        .unwrap_or_else(|| format!("http://{}", args.http_addr));
    let workers_config = if runs_workers {
        let secret = Secret::from_env_value("ORDERS_JWT_SECRET", args.jwt_secret.clone())?;
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
        Some((
            secret,
            smtp_url,
            mail_from,
            public_url,
            args.scraper.fetch_policy()?,
        ))
    } else {
        None
    };
    let jwt_secret = if runs_api {
        Some(Secret::from_env_value(
            "ORDERS_JWT_SECRET",
            args.jwt_secret,
        )?)
    } else {
        None
    };
    // Everything that writes events seals them.
    let audit_key = if runs_api || runs_workers {
        Some(args.audit_key.key()?)
    } else {
        None
    };
    let database_url = args.database.url()?.to_owned();
    // The relay and the projectors need NATS; the API uses it, when given, to wake
    // the relay after each commit.
    let nats_url = match args.nats.given().map(str::to_owned) {
        Some(url) => Some(url),
        None if runs_relay || runs_projectors || runs_workers => {
            anyhow::bail!("ORDERS_NATS_URL is not set (e.g. nats://127.0.0.1:4222)")
        }
        None => None,
    };
    let pool =
        orders_store::database::connect(&database_url, args.database_max_connections).await?;
    orders_store::database::migrate(&pool).await?;

    // One shutdown signal for every service of this process.
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let stopped_receiver = stopped.clone();
    let stop = std::sync::Arc::new(stop);
    {
        let stop = stop.clone();
        tokio::spawn(async move {
            shutdown_signal().await;
            let _ = stop.send(true);
        });
    }
    let until_stopped = move || {
        let mut stopped = stopped.clone();
        async move {
            let _ = stopped.wait_for(|stop| *stop).await;
        }
    };

    let mut services = tokio::task::JoinSet::new();
    let nats = match &nats_url {
        // The relay and the projectors cannot start without NATS ...
        Some(nats_url) if runs_relay || runs_projectors || runs_workers => {
            Some(orders_nats::connect(nats_url).await.with_context(|| {
                format!(
                    "connecting to NATS at {} (ORDERS_NATS_URL)",
                    orders_nats::redacted(nats_url)
                )
            })?)
        }
        // ... the API can: it only wakes the relay, which polls anyway.
        Some(nats_url) => Some(
            orders_nats::connect_in_background(nats_url)
                .await
                .with_context(|| {
                    format!(
                        "NATS URL {} (ORDERS_NATS_URL)",
                        orders_nats::redacted(nats_url)
                    )
                })?,
        ),
        None => None,
    };
    if let (Some(nats_url), Some(client), true) = (
        &nats_url,
        &nats,
        runs_relay || runs_projectors || runs_workers,
    ) {
        let jetstream = async_nats::jetstream::new(client.clone());
        ensure_topology_patiently(&jetstream, args.replicas.nats_replicas).await?;
        let leaders = jetstream
            .get_key_value(orders_nats::LEADER_BUCKET)
            .await
            .context("opening the leader bucket")?;
        if runs_relay {
            let lease =
                orders_nats::leader::LeaderLease::new(leaders.clone(), "relay", instance_name());
            // The relay and the projectors have connections of their own, so that
            // neither they nor the API can starve the other of them.
            let relay_pool = orders_store::database::connect(&database_url, 2).await?;
            let relay =
                orders_relay::Relay::new(relay_pool, jetstream.clone(), args.relay_batch_size)
                    .with_wake_ups(orders_relay::listen_for_wake_ups(client).await?);
            let poll = std::time::Duration::from_millis(args.relay_poll_ms.max(1));
            let shutdown = until_stopped();
            tracing::info!(nats_url = %orders_nats::redacted(nats_url), "relaying events to the log stream while leader");
            services.spawn(async move {
                relay
                    .run_as_leader(lease, orders_nats::LEADER_LEASE, poll, shutdown)
                    .await
                    .context("the relay")
            });
        }
        if let Some((secret, smtp_url, mail_from, public_url, fetch)) = workers_config {
            let mailer = orders_workers::mail::Mailer::new(&smtp_url, &mail_from)?;
            let workers_pool = orders_store::database::connect(&database_url, 8).await?;
            let config = orders_workers::service::WorkersConfig {
                mailer,
                tokens: orders_application::signed_tokens::SignedTokens::new(secret.expose()),
                public_url,
                fetch,
                host_gate: args.scraper.host_gate(),
                scraper_concurrency: args.scraper_concurrency.max(1),
                scheduler_tick: std::time::Duration::from_millis(args.scheduler_tick_ms.max(10)),
                audit_key: audit_key.clone().context("the workers seal their events")?,
            };
            services.spawn(
                orders_workers::service::run(
                    config,
                    workers_pool,
                    jetstream.clone(),
                    leaders.clone(),
                    instance_name(),
                    stopped_receiver.clone(),
                )
                .map(|result| result.context("the workers")),
            );
        }
        if runs_projectors {
            tracing::info!(nats_url = %orders_nats::redacted(nats_url), "projecting the views while leader of each");
            let projectors_pool = orders_store::database::connect(
                &database_url,
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
                    stopped_receiver.clone(),
                )
                .map(|result| result.context("the projectors")),
            );
        }
    }
    if let (Some(jwt_secret), Some(audit_key)) = (jwt_secret, audit_key) {
        let mut config = ApiConfig::new(jwt_secret, audit_key, public_url.clone());
        config.relay_waker = nats.clone().map(orders_store::event_store::RelayWaker::new);
        let state = AppState::new(config, pool).await?;
        let listener = TcpListener::bind(args.http_addr)
            .await
            .with_context(|| format!("listening on {} (ORDERS_HTTP_ADDR)", args.http_addr))?;
        tracing::info!(addr = %listener.local_addr()?, %public_url, "serving the HTTP API");
        let shutdown = until_stopped();
        services.spawn(async move { orders_command_api::run(state, listener, shutdown).await });
    }
    // The first service to stop, for whatever reason, stops the others (each
    // finishing its work in flight): a half-running process would look alive to its
    // supervisor. The first error is the process's.
    let mut outcome = Ok(());
    while let Some(finished) = services.join_next().await {
        let _ = stop.send(true);
        let result = finished
            .unwrap_or_else(|join_error| Err(anyhow::anyhow!("a service panicked: {join_error}")));
        if let (Ok(()), Err(error)) = (&outcome, result) {
            outcome = Err(error);
        }
    }
    outcome
}

async fn replay(args: ReplayArgs) -> anyhow::Result<()> {
    let views = match (&args.view, args.all) {
        (Some(name), false) => vec![name.parse::<orders_projectors::View>()?],
        (None, true) => orders_projectors::View::ALL.to_vec(),
        _ => anyhow::bail!("name one view, or --all"),
    };
    let pool = orders_store::database::connect(args.database.url()?, 4).await?;
    orders_store::database::migrate(&pool).await?;
    let jetstream = args.nats.jetstream().await?;
    for view in views {
        let report =
            orders_projectors::replay::replay(&pool, &jetstream, view, args.batch_size).await?;
        println!(
            "{view}: rebuilt from {} log messages in {:.1} s ({:.0} messages/s), swapped in at position {}",
            report.checkpoint.stream_sequence,
            report.elapsed.as_secs_f64(),
            report.rate(),
            report.checkpoint.position
        );
    }
    Ok(())
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => serve(args).await,
        Command::Migrate(database) => {
            let pool = orders_store::database::connect(database.url()?, 2).await?;
            orders_store::database::migrate(&pool).await?;
            println!("database migrated");
            Ok(())
        }
        Command::Nats {
            nats: NatsCommand::Setup { nats, replicas },
        } => {
            let jetstream = nats.jetstream().await?;
            ensure_topology_patiently(&jetstream, replicas.nats_replicas).await?;
            println!(
                "NATS topology ready: stream {}, buckets {}, {}, {} and {}",
                orders_nats::LOG_STREAM,
                orders_nats::LEADER_BUCKET,
                orders_nats::RELAY_BUCKET,
                orders_nats::AUDIT_BUCKET,
                orders_nats::SCRAPER_HOSTS_BUCKET
            );
            Ok(())
        }
        Command::Bench { bench } => bench::run(bench).await,
        Command::Replay(args) => replay(args).await,
        Command::Audit { audit } => {
            if !audit_cli::run(audit).await? {
                std::process::exit(1);
            }
            Ok(())
        }
        Command::Admin { admin } => admin_cli::run(admin).await,
        Command::Scrape(args) => {
            if !scrape(args).await? {
                std::process::exit(1);
            }
            Ok(())
        }
        Command::Lag { database, nats } => {
            let pool = orders_store::database::connect(database.url()?, 2).await?;
            let jetstream = nats.jetstream().await?;
            println!(
                "{}",
                orders_projectors::lag::measure(&pool, &jetstream).await?
            );
            Ok(())
        }
        Command::Dlq { dlq: command } => dlq(command).await,
    }
}

fn main() -> ExitCode {
    // A .env file is a convenience for development; real variables win.
    let _ = dotenvy::dotenv();
    let cli = Cli::parse();
    init_telemetry(if matches!(cli.command, Command::Serve(_)) {
        "info"
    } else {
        "warn"
    });
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: starting the async runtime: {error}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // One line, with the whole cause chain.
            eprintln!("error: {error:#}");
            ExitCode::from(2)
        }
    }
}

/// `orders dlq list|retry`.
async fn dlq(command: DlqCommand) -> anyhow::Result<()> {
    use orders_workers::dead_letters::{self, RetrySelection};
    match command {
        DlqCommand::List(args) => {
            let jetstream = args.nats.jetstream().await?;
            let letters = dead_letters::list(&jetstream, args.worker.as_deref()).await?;
            if args.json {
                println!("{}", serde_json::to_string(&letters)?);
            } else if letters.is_empty() {
                match &args.worker {
                    Some(worker) => println!("no dead letters of the {worker} worker"),
                    None => println!("no dead letters"),
                }
            } else {
                print!("{}", dead_letters::table(&letters));
            }
        }
        DlqCommand::Retry(args) => {
            let which = match (args.sequence, args.all) {
                (Some(sequence), false) => RetrySelection::One(sequence),
                (None, true) => RetrySelection::All {
                    worker: args.worker,
                },
                _ => anyhow::bail!("give one dead letter's sequence, or --all"),
            };
            let jetstream = args.nats.jetstream().await?;
            let retried = dead_letters::retry(&jetstream, which).await?;
            if retried.is_empty() {
                println!("no dead letters to retry");
            }
            for letter in retried {
                let event_type = if letter.event_type.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", letter.event_type)
                };
                println!(
                    "put back dead letter {} for the {} worker: {}{event_type}",
                    letter.stream_sequence, letter.worker, letter.event_id
                );
            }
        }
    }
    Ok(())
}
