//! Benchmarks of the log, each beside a ceiling (or floor) measured in the same run
//! on the same servers. Each starts a nats-server of its own (`NATS_SERVER_BIN`, or
//! `nats-server` on the `PATH`) and creates a fresh database on the PostgreSQL server
//! of `ORDERS_DATABASE_URL`, dropped at the end.
//!
//! - `orders bench relay`: the relay catching up on a backlog, beside publishing the
//!   same messages straight to JetStream with the same window of acknowledgements
//!   in flight (target: ≥ 50%).
//! - `orders bench pipeline`: `POST /orders` at a steady rate with the relay and the
//!   projectors running; store→stream lag (from the event's `recorded_at` to its
//!   arrival on a subscriber of its subject; target p99 < 20 ms) beside a core NATS
//!   message's own latency, and command→view-visible (from the 201 to a read with
//!   `Orders-Min-Position` that is not stale; target p99 < 50 ms).
//! - `orders bench replay`: `orders replay <view>` (a process of its own, whose
//!   resident memory is sampled as it goes) over a log of a million events, beside
//!   reading the same stream without applying it (target: ≥ 50,000 events/s).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context as _;
use async_nats::jetstream::{self, message::PublishMessage, stream};
use clap::Args;
use futures::StreamExt as _;
use orders_command_api::AppState;
use orders_domain::order::MAX_ACTIVE_ORDERS_PER_USER;
use orders_nats::{ensure_topology, LogEvent, LOG_STREAM};
use orders_test_support::nats_server::NatsServer;
use sqlx::PgPool;

use super::setup::{
    bench_user_id, create_bench_users, lag_ms, measure_publish_floor, median, memory_mib,
    percentile, place_order_request, relay_all, sorted, store_log, BenchApi, BenchDatabase,
    BenchLog, KeepAliveConnection, Samples, BENCH_USERS,
};

#[derive(Debug, Args)]
pub(crate) struct RelayBenchArgs {
    #[command(flatten)]
    database: orders::cli_args::DatabaseArgs,
    /// Events in the backlog.
    #[arg(long, default_value_t = 100_000)]
    events: u64,
    /// Acknowledgements in flight (the relay's batch), for both measurements.
    #[arg(long, default_value_t = 1000)]
    window: i64,
    /// Interleaved rounds; the medians are reported.
    #[arg(long, default_value_t = 3)]
    rounds: u32,
    #[arg(long)]
    keep_database: bool,
}

/// The stored events as the relay would publish them, in log order.
async fn load_log(pool: &PgPool) -> anyhow::Result<Vec<LogEvent>> {
    orders_relay::events_after(pool, orders_nats::LogPosition::default(), i64::MAX).await
}

/// Publishes `events` to a stream of their own (configured like the log stream),
/// `window` acknowledgements in flight, as the relay does; returns messages/s.
async fn raw_publish(
    jetstream: &jetstream::Context,
    events: &[LogEvent],
    window: usize,
) -> anyhow::Result<f64> {
    let _ = jetstream.delete_stream("BENCH_RAW").await;
    jetstream
        .create_stream(stream::Config {
            name: "BENCH_RAW".to_owned(),
            subjects: vec!["bench.raw.>".to_owned()],
            storage: stream::StorageType::File,
            duplicate_window: Duration::from_secs(120),
            ..Default::default()
        })
        .await?;
    let started = Instant::now();
    let mut expected = 0_u64;
    for chunk in events.chunks(window.max(1)) {
        let mut acknowledgements = Vec::with_capacity(chunk.len());
        for event in chunk {
            let publish = PublishMessage::build()
                .headers(event.headers())
                .expected_last_sequence(expected)
                .payload(event.body());
            expected += 1;
            acknowledgements.push(
                jetstream
                    .send_publish(
                        format!("bench.raw.{}.{}", event.aggregate_type, event.aggregate_id),
                        publish,
                    )
                    .await?,
            );
        }
        for acknowledgement in acknowledgements {
            acknowledgement.await?;
        }
    }
    Ok(events.len() as f64 / started.elapsed().as_secs_f64())
}

pub(crate) async fn relay(args: RelayBenchArgs) -> anyhow::Result<()> {
    let database = BenchDatabase::create(args.database.database_url.as_deref()).await?;
    let outcome = async {
        let pool = orders_store::database::connect(&database.url, 8).await?;
        orders_store::database::migrate(&pool).await?;
        eprintln!("storing {} events", args.events);
        let stored = store_log(&pool, args.events).await?;
        let events = load_log(&pool).await?;
        let server = NatsServer::start();
        let jetstream = jetstream::new(async_nats::connect(server.url()).await?);
        let mut rounds = Vec::new();
        for round in 1..=args.rounds {
            let raw = raw_publish(&jetstream, &events, args.window as usize).await?;
            let _ = jetstream.delete_stream(LOG_STREAM).await;
            ensure_topology(&jetstream, 1).await?;
            let (relayed, relay_rate) = relay_all(&pool, &jetstream, args.window, stored).await?;
            anyhow::ensure!(relayed == stored, "relayed {relayed} of {stored} events");
            eprintln!(
                "round {round}: relay {relay_rate:.0} events/s, raw publish {raw:.0} messages/s"
            );
            rounds.push((relay_rate, raw));
        }
        pool.close().await;
        anyhow::Ok((stored, rounds))
    }
    .await;
    database.finish(args.keep_database).await?;
    let (stored, rounds) = outcome?;
    let relay_rate = median(rounds.iter().map(|r| r.0).collect());
    let raw = median(rounds.iter().map(|r| r.1).collect());
    println!();
    println!(
        "relay catch-up of {stored} events, {} acknowledgements in flight (medians of {} interleaved rounds):",
        args.window, args.rounds
    );
    println!(
        "{:>16}  {:>22}  {:>6}",
        "relay events/s", "raw publish messages/s", "ratio"
    );
    println!(
        "{relay_rate:>16.0}  {raw:>22.0}  {:>5.0}%",
        100.0 * relay_rate / raw
    );
    println!("target: ratio >= 50%");
    Ok(())
}

#[derive(Debug, Args)]
pub(crate) struct PipelineBenchArgs {
    #[command(flatten)]
    database: orders::cli_args::DatabaseArgs,
    /// Commands (`POST /orders`, one event each) per second.
    #[arg(long, default_value_t = 1000)]
    rate: u32,
    /// Measured seconds (after the warm-up).
    #[arg(long, default_value_t = 20)]
    duration_secs: u64,
    #[arg(long, default_value_t = 3)]
    warmup_secs: u64,
    /// Client connections sharing the rate.
    #[arg(long, default_value_t = 32)]
    connections: u32,
    #[arg(long)]
    keep_database: bool,
}

pub(crate) async fn pipeline(args: PipelineBenchArgs) -> anyhow::Result<()> {
    let database = BenchDatabase::create(args.database.database_url.as_deref()).await?;
    let outcome = run_pipeline(&args, &database.url).await;
    database.finish(args.keep_database).await?;
    let (achieved, lags, floor, visible, stale) = outcome?;
    let lags = sorted(lags);
    let floor = sorted(floor);
    let visible = sorted(visible);
    println!();
    println!(
        "POST /orders at {} /s asked, {achieved:.0} /s done, {} s measured, relay woken by the API, projectors running:",
        args.rate, args.duration_secs
    );
    println!(
        "{:<44} {:>8} {:>8} {:>8} {:>9}",
        "", "p50 ms", "p99 ms", "max ms", "samples"
    );
    for (name, samples) in [
        ("store -> stream (recorded_at -> subscriber)", &lags),
        ("  floor: core NATS publish -> subscriber", &floor),
        ("command -> view visible (201 -> fresh read)", &visible),
    ] {
        println!(
            "{name:<44} {:>8.2} {:>8.2} {:>8.2} {:>9}",
            percentile(samples, 0.5),
            percentile(samples, 0.99),
            samples.last().copied().unwrap_or(f64::NAN),
            samples.len()
        );
    }
    println!("reads answered stale (after the 2 s bound): {stale}");
    println!("targets: store -> stream p99 < 20 ms; command -> view visible p99 < 50 ms");
    Ok(())
}

type PipelineOutcome = (f64, Vec<f64>, Vec<f64>, Vec<f64>, u64);

async fn run_pipeline(args: &PipelineBenchArgs, url: &str) -> anyhow::Result<PipelineOutcome> {
    let pool = orders_store::database::connect(url, 32).await?;
    orders_store::database::migrate(&pool).await?;
    create_bench_users(&pool).await?;
    let log = BenchLog::start(url, true).await?;
    eprintln!("waiting for the views to take in the benchmark's users");
    log.wait_until_caught_up(&pool).await?;
    let api = BenchApi::start(&pool, Some(&log)).await?;

    let started = Instant::now();
    let measure_from = started + Duration::from_secs(args.warmup_secs);
    let measure_until = measure_from + Duration::from_secs(args.duration_secs);
    let window_start = SystemTime::now() + Duration::from_secs(args.warmup_secs);
    let window = window_start..window_start + Duration::from_secs(args.duration_secs);

    let lags = Samples::default();
    let collecting =
        collect_store_to_stream_lags(&log.client, window.clone(), lags.clone()).await?;
    let floor = Samples::default();
    let (pinging, pinger) =
        measure_publish_floor(&log.client, args.rate, window, measure_until, floor.clone()).await?;

    // The clients: each its share of the rate, on its own connection.
    let next_user = Arc::new(AtomicU64::new(1));
    let completed = Arc::new(AtomicU64::new(0));
    let stale = Arc::new(AtomicU64::new(0));
    let visible = Samples::default();
    let mut clients = Vec::new();
    let connections = args.connections.max(1);
    let period = Duration::from_secs_f64(f64::from(connections) / f64::from(args.rate.max(1)));
    for client_index in 0..connections {
        let run = ClientRun {
            addr: api.addr,
            state: api.state.clone(),
            next_user: next_user.clone(),
            completed: completed.clone(),
            stale: stale.clone(),
            visible: visible.clone(),
            period,
            measure_from,
            measure_until,
        };
        clients.push(tokio::spawn(async move {
            // Spread the clients' ticks over one period.
            tokio::time::sleep(period * client_index / connections).await;
            drive_client(run).await
        }));
    }
    for client in clients {
        client.await??;
    }
    let achieved = completed.load(Ordering::SeqCst) as f64 / args.duration_secs as f64;
    tokio::time::sleep(Duration::from_millis(200)).await;
    collecting.abort();
    pinging.abort();
    pinger.abort();
    api.stop().await?;
    log.stop().await;
    pool.close().await;
    let take = |samples: &Samples| std::mem::take(&mut *samples.lock().expect("not poisoned"));
    Ok((
        achieved,
        take(&lags),
        take(&floor),
        take(&visible),
        stale.load(Ordering::SeqCst),
    ))
}

/// Store -> stream: the lag of every order event as it reaches its subject, within
/// `window`.
async fn collect_store_to_stream_lags(
    client: &async_nats::Client,
    window: std::ops::Range<SystemTime>,
    lags: Samples,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let mut events = client.subscribe("orders.events.order.>").await?;
    Ok(tokio::spawn(async move {
        while let Some(message) = events.next().await {
            let received = SystemTime::now();
            let Some(recorded_at) = message
                .headers
                .as_ref()
                .and_then(|headers| headers.get("Orders-Recorded-At"))
                .map(|value| value.as_str().to_owned())
            else {
                continue;
            };
            if window.contains(&received) {
                if let Some(lag) = lag_ms(&recorded_at, received) {
                    lags.lock().expect("not poisoned").push(lag);
                }
            }
        }
    }))
}

struct ClientRun {
    addr: SocketAddr,
    state: Arc<AppState>,
    next_user: Arc<AtomicU64>,
    completed: Arc<AtomicU64>,
    stale: Arc<AtomicU64>,
    visible: Arc<Mutex<Vec<f64>>>,
    period: Duration,
    measure_from: Instant,
    measure_until: Instant,
}

async fn drive_client(run: ClientRun) -> anyhow::Result<()> {
    let mut commands = KeepAliveConnection::open(run.addr).await?;
    let mut reads = KeepAliveConnection::open(run.addr).await?;
    let mut ticks = tokio::time::interval(run.period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut placed_for_user = u32::MAX;
    let mut request = Vec::new();
    let mut token = String::new();
    while Instant::now() < run.measure_until {
        ticks.tick().await;
        if placed_for_user >= MAX_ACTIVE_ORDERS_PER_USER {
            let index = run.next_user.fetch_add(1, Ordering::SeqCst);
            anyhow::ensure!(
                index <= BENCH_USERS as u64,
                "the benchmark ran out of users; lower --rate or --duration-secs"
            );
            token = run
                .state
                .access_tokens
                .issue(bench_user_id(index as i64), 0)?;
            request = place_order_request(run.addr, &token);
            placed_for_user = 0;
        }
        let status = commands.exchange(&request).await?;
        anyhow::ensure!(status == 201, "POST /orders answered {status}");
        placed_for_user += 1;
        let answered = Instant::now();
        let (Some(location), Some(position)) =
            (commands.location.clone(), commands.position.clone())
        else {
            anyhow::bail!("POST /orders answered without Location or Orders-Position");
        };
        let read = format!(
            "GET {location} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {token}\r\n\
             Orders-Min-Position: {position}\r\n\r\n",
            run.addr
        );
        let status = reads.exchange(read.as_bytes()).await?;
        anyhow::ensure!(status == 200, "GET {location} answered {status}");
        let seen = Instant::now();
        if answered >= run.measure_from && answered < run.measure_until {
            run.completed.fetch_add(1, Ordering::SeqCst);
            if reads.stale {
                run.stale.fetch_add(1, Ordering::SeqCst);
            } else {
                run.visible
                    .lock()
                    .expect("not poisoned")
                    .push((seen - answered).as_secs_f64() * 1000.0);
            }
        }
    }
    Ok(())
}

#[derive(Debug, Args)]
pub(crate) struct ReplayBenchArgs {
    #[command(flatten)]
    database: orders::cli_args::DatabaseArgs,
    /// Events in the log.
    #[arg(long, default_value_t = 1_000_000)]
    events: u64,
    /// The view to rebuild.
    #[arg(long, default_value = "orders")]
    view: String,
    #[arg(long, default_value_t = orders_projectors::projector::DEFAULT_BATCH_SIZE)]
    batch_size: usize,
    #[arg(long)]
    keep_database: bool,
}

pub(crate) async fn replay(args: ReplayBenchArgs) -> anyhow::Result<()> {
    let view: orders_projectors::View = args.view.parse()?;
    let database = BenchDatabase::create(args.database.database_url.as_deref()).await?;
    let outcome = run_replay(&args, view, &database.url).await;
    database.finish(args.keep_database).await?;
    outcome
}

async fn run_replay(
    args: &ReplayBenchArgs,
    view: orders_projectors::View,
    url: &str,
) -> anyhow::Result<()> {
    let pool = orders_store::database::connect(url, 8).await?;
    orders_store::database::migrate(&pool).await?;
    eprintln!("storing {} events", args.events);
    let stored = store_log(&pool, args.events).await?;
    let server = NatsServer::start();
    let jetstream = jetstream::new(async_nats::connect(server.url()).await?);
    ensure_topology(&jetstream, 1).await?;
    eprintln!("relaying them");
    let (relayed, relay_rate) = relay_all(&pool, &jetstream, 1000, stored).await?;
    anyhow::ensure!(relayed == stored, "relayed {relayed} of {stored} events");

    // The ceiling: reading the stream the way a replay does, without applying it.
    let stream = jetstream.get_stream(LOG_STREAM).await?;
    let consumer = stream
        .create_consumer(jetstream::consumer::pull::OrderedConfig::default())
        .await?;
    let mut messages = consumer.messages().await?;
    let reading = Instant::now();
    let mut read = 0;
    while read < relayed {
        messages.next().await.context("the stream ended")??;
        read += 1;
    }
    let read_rate = read as f64 / reading.elapsed().as_secs_f64();
    drop(messages);

    eprintln!("replaying the {view} view in a process of its own");
    let mut child = tokio::process::Command::new(std::env::current_exe()?)
        .args(["replay", view.name(), "--batch-size"])
        .arg(args.batch_size.to_string())
        .env("ORDERS_DATABASE_URL", url)
        .env("ORDERS_NATS_URL", server.url())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("starting orders replay")?;
    let pid = child.id().context("the replay has no pid")?;
    let replaying = Instant::now();
    let mut samples: Vec<(f64, f64)> = Vec::new();
    let mut peak = 0.0_f64;
    let status = loop {
        tokio::select! {
            status = child.wait() => break status?,
            () = tokio::time::sleep(Duration::from_millis(25)) => {
                if let Some((rss, hwm)) = memory_mib(pid) {
                    peak = peak.max(hwm);
                    samples.push((replaying.elapsed().as_secs_f64(), rss));
                }
            }
        }
    };
    let elapsed = replaying.elapsed().as_secs_f64();
    anyhow::ensure!(status.success(), "orders replay failed: {status}");
    let mut said = String::new();
    if let Some(mut stdout) = child.stdout.take() {
        use tokio::io::AsyncReadExt as _;
        stdout.read_to_string(&mut said).await?;
    }
    let rate = relayed as f64 / elapsed;
    println!();
    println!("{}", said.trim());
    println!(
        "rebuilding the {view} view from {relayed} events (relayed at {relay_rate:.0} events/s):"
    );
    println!(
        "{:>22}  {:>26}  {:>6}  {:>13}",
        "replay events/s", "raw stream read messages/s", "ratio", "peak RSS MiB"
    );
    println!(
        "{rate:>22.0}  {read_rate:>26.0}  {:>5.0}%  {peak:>13.1}",
        100.0 * rate / read_rate
    );
    let quarter = |fraction: f64| {
        samples
            .iter()
            .find(|(at, _)| *at >= elapsed * fraction)
            .map_or(f64::NAN, |(_, rss)| *rss)
    };
    println!(
        "resident memory at 25/50/75/100% of the replay's time: {:.1} / {:.1} / {:.1} / {:.1} MiB",
        quarter(0.25),
        quarter(0.5),
        quarter(0.75),
        samples.last().map_or(f64::NAN, |(_, rss)| *rss)
    );
    println!("target: >= 50,000 events/s, memory flat");
    pool.close().await;
    Ok(())
}
