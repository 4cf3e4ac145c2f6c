//! `orders`: one CLI for every Orders service and tool.
//!
//! `main` only reads the configuration (flags, `ORDERS_*` variables, a `.env` file),
//! sets up telemetry and runs the chosen command; the services live in the library
//! crates and take their inputs.

use std::io::IsTerminal as _;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use orders::cli_args::{DatabaseArgs, NatsArgs, NatsReplicasArgs};
use orders::serve;

mod admin_cli;
mod audit_cli;
mod bench;

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
    Serve(serve::ServeArgs),
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
    scraper: orders::cli_args::ScraperArgs,
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
    /// users, orders, price_history, admin_overview, products, purchases or analytics.
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
        Command::Serve(args) => {
            let shutdown = tokio_util::sync::CancellationToken::new();
            serve::stop_on_signal(shutdown.clone());
            serve::ServePlan::from_args(args)?.run(shutdown).await
        }
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
            serve::ensure_topology_patiently(&jetstream, replicas.nats_replicas).await?;
            println!(
                "NATS topology ready: stream {}, buckets {}, {} and {}",
                orders_nats::LOG_STREAM,
                orders_nats::LEADER_BUCKET,
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
    use orders_nats::dead_letters::{self, RetrySelection};
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
