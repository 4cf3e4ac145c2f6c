//! `orders bench live`: many `GET /live` clients on one API instance, each a user
//! following their own events, while orders are placed at a steady rate spread over
//! those users. Reported: commit → client latency (the event's `recorded_at` to its
//! arrival at its client) beside the floor of the same run (a core NATS message
//! through the same server, publish → subscriber), the events that reached their
//! client, and the process's memory before and with the clients connected.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context as _;
use clap::Args;
use orders_application::orders::{place_order, OrderSource, PlaceOrder};
use orders_domain::money::{Currency, Money};
use orders_domain::order::ProductUrl;
use orders_store::event_store::CommandMetadata;
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::TcpStream;

use super::setup::{
    bench_user_id, create_bench_users, lag_ms, measure_publish_floor, memory_mib, percentile,
    sorted, BenchApi, BenchDatabase, BenchLog, Samples, BENCH_USERS,
};

#[derive(Debug, Args)]
pub(crate) struct LiveBenchArgs {
    #[command(flatten)]
    database: orders::cli_args::DatabaseArgs,
    /// Concurrent `GET /live` clients, each a different user.
    #[arg(long, default_value_t = 1000)]
    clients: u32,
    /// Events per second (orders placed, spread over the clients' users).
    #[arg(long, default_value_t = 200)]
    rate: u32,
    /// Measured seconds (after the warm-up).
    #[arg(long, default_value_t = 10)]
    duration_secs: u64,
    #[arg(long, default_value_t = 2)]
    warmup_secs: u64,
    /// Keep the benchmark database afterwards.
    #[arg(long)]
    keep_database: bool,
}

pub(crate) async fn live(args: LiveBenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        i64::from(args.clients) <= BENCH_USERS,
        "at most {BENCH_USERS} clients"
    );
    let database = BenchDatabase::create(args.database.database_url.as_deref()).await?;
    let outcome = run_live(&args, &database.url).await;
    database.finish(args.keep_database).await?;
    outcome
}

async fn run_live(args: &LiveBenchArgs, url: &str) -> anyhow::Result<()> {
    let pool = orders_store::database::connect(url, 16).await?;
    orders_store::database::migrate(&pool).await?;
    create_bench_users(&pool).await?;
    let log = BenchLog::start(url, false).await?;
    // The users' registrations reach the log first: measured from a caught-up log.
    eprintln!("waiting for the relay to publish the benchmark's users");
    log.wait_until_relayed(&pool).await?;
    let api = BenchApi::start(&pool, Some(&log)).await?;
    let memory_before = memory_mib(std::process::id());

    let lags = Samples::default();
    let window_of_lags = Arc::new(std::sync::Mutex::new(
        SystemTime::UNIX_EPOCH..SystemTime::UNIX_EPOCH,
    ));
    let received = Arc::new(AtomicU64::new(0));
    let connected = Arc::new(AtomicU64::new(0));
    let mut clients = tokio::task::JoinSet::new();
    for index in 1..=i64::from(args.clients) {
        let token = api.state.access_tokens.issue(bench_user_id(index), 0)?;
        let follower = Follower {
            addr: api.addr,
            token,
            window: window_of_lags.clone(),
            lags: lags.clone(),
            received: received.clone(),
            connected: connected.clone(),
        };
        clients.spawn(follower.follow());
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while connected.load(Ordering::SeqCst) < u64::from(args.clients) {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the clients did not all connect in 60 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let memory_connected = memory_mib(std::process::id());

    // The warm-up and the measured window start once every client is connected.
    let window_start = SystemTime::now() + Duration::from_secs(args.warmup_secs);
    let window = window_start..window_start + Duration::from_secs(args.duration_secs);
    let until = Instant::now() + Duration::from_secs(args.warmup_secs + args.duration_secs);
    *window_of_lags.lock().expect("not poisoned") = window.clone();

    let floor = Samples::default();
    let (pinging, pinger) =
        measure_publish_floor(&log.client, args.rate, window.clone(), until, floor.clone()).await?;
    let written = place_orders_steadily(&api, args, window, until).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    clients.abort_all();
    pinging.abort();
    pinger.abort();
    api.stop().await?;
    log.stop().await;
    pool.close().await;

    let lags = sorted(std::mem::take(&mut *lags.lock().expect("not poisoned")));
    let floor = sorted(std::mem::take(&mut *floor.lock().expect("not poisoned")));
    println!(
        "GET /live: {} clients (one user each), {} events/s asked, {} s measured; \
         {written} events written in the window, {} received by their client",
        args.clients,
        args.rate,
        args.duration_secs,
        lags.len()
    );
    println!(
        "{:<44} {:>8} {:>8} {:>8} {:>9}",
        "", "p50 ms", "p99 ms", "max ms", "samples"
    );
    for (name, samples) in [
        ("commit -> client (recorded_at -> SSE data)", &lags),
        ("  floor: core NATS publish -> subscriber", &floor),
    ] {
        println!(
            "{name:<44} {:>8.2} {:>8.2} {:>8.2} {:>9}",
            percentile(samples, 0.5),
            percentile(samples, 0.99),
            samples.last().copied().unwrap_or(f64::NAN),
            samples.len()
        );
    }
    let mib = |memory: Option<(f64, f64)>| memory.map_or(f64::NAN, |(resident, _)| resident);
    println!(
        "memory of this process (API, relay, clients): {:.1} MiB before the clients, {:.1} MiB with them \
         ({} events received in all)",
        mib(memory_before),
        mib(memory_connected),
        received.load(Ordering::SeqCst)
    );
    println!("target: p99 commit -> client < 100 ms at 200 events/s with 1,000 clients");
    Ok(())
}

/// Places orders at `args.rate` per second until `until`, each for the next of the
/// clients' users in turn; answers how many were placed inside `window`.
async fn place_orders_steadily(
    api: &BenchApi,
    args: &LiveBenchArgs,
    window: std::ops::Range<SystemTime>,
    until: Instant,
) -> anyhow::Result<u64> {
    let target = Money::parse("3199.00", Currency::from_code("UAH")?)?;
    let url = ProductUrl::parse("https://shop.example.com/product/42")?;
    let mut ticks =
        tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(args.rate.max(1))));
    let (mut next, mut written) = (0_i64, 0_u64);
    while Instant::now() < until {
        ticks.tick().await;
        let owner = bench_user_id(next % i64::from(args.clients) + 1);
        next += 1;
        let order = PlaceOrder {
            owner,
            source: OrderSource::Page(url.clone()),
            target,
            check_interval_secs: 3600,
            selector: None,
            credentials_version: None,
        };
        let metadata = CommandMetadata::new_job(format!("user:{owner}"));
        place_order(
            &api.state.events,
            &api.state.placement_facts,
            order,
            &metadata,
        )
        .await
        .context("placing an order")?;
        if window.contains(&SystemTime::now()) {
            written += 1;
        }
    }
    Ok(written)
}

/// One `GET /live` client: a raw HTTP/1.1 connection, its chunked body read and
/// split into lines, each `data:` line's `recorded_at` timed against its arrival.
struct Follower {
    addr: SocketAddr,
    token: String,
    /// Set once every client is connected; arrivals outside it are not timed.
    window: Arc<std::sync::Mutex<std::ops::Range<SystemTime>>>,
    lags: Samples,
    received: Arc<AtomicU64>,
    connected: Arc<AtomicU64>,
}

impl Follower {
    async fn follow(self) -> anyhow::Result<()> {
        let mut stream = BufReader::new(TcpStream::connect(self.addr).await?);
        let request = format!(
            "GET /live HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\nAccept: text/event-stream\r\n\r\n",
            self.addr, self.token
        );
        stream.get_mut().write_all(request.as_bytes()).await?;
        let mut line = String::new();
        stream.read_line(&mut line).await?;
        anyhow::ensure!(
            line.starts_with("HTTP/1.1 200"),
            "GET /live answered {line:?}"
        );
        loop {
            line.clear();
            stream.read_line(&mut line).await?;
            if line == "\r\n" {
                break;
            }
        }
        self.connected.fetch_add(1, Ordering::SeqCst);
        let mut text = String::new();
        let mut chunk = Vec::new();
        loop {
            // Chunked transfer encoding: a hexadecimal size line, the bytes, CRLF.
            line.clear();
            if stream.read_line(&mut line).await? == 0 {
                return Ok(());
            }
            let size = usize::from_str_radix(line.trim(), 16).context("a chunk size")?;
            if size == 0 {
                return Ok(());
            }
            chunk.resize(size + 2, 0);
            stream.read_exact(&mut chunk).await?;
            let arrived = SystemTime::now();
            text.push_str(std::str::from_utf8(&chunk[..size])?);
            while let Some(end) = text.find('\n') {
                let event_line: String = text.drain(..=end).collect();
                if let Some(data) = event_line.strip_prefix("data: ") {
                    self.received.fetch_add(1, Ordering::Relaxed);
                    let recorded_at = serde_json::from_str::<serde_json::Value>(data)
                        .ok()
                        .and_then(|data| data["recorded_at"].as_str().map(str::to_owned));
                    if let Some(lag) = recorded_at.and_then(|at| lag_ms(&at, arrived)) {
                        if self.window.lock().expect("not poisoned").contains(&arrived) {
                            self.lags.lock().expect("not poisoned").push(lag);
                        }
                    }
                }
            }
        }
    }
}
