//! `orders bench order-latency`: the latency of a command on an order that has been
//! checked 10,000 times (over 1,000 of them changed its price) beside the same
//! command on a new order, in one run, interleaved. Target: within 2×.
//!
//! The long history is made through the command side itself (the price-check
//! policy's command, one per check, as the workers run it), so the order's stream is
//! what years of hourly checks would leave: a price change and an alert or re-arm
//! for every change of price. Each check's own two events are added to the table
//! beside it in bulk, so the order is loaded from a table of realistic size.

use std::time::Instant;

use anyhow::Context as _;
use clap::Args;
use orders_application::price_checks::record_observation_on_order;
use orders_domain::ids::{CheckId, OrderId, UserId};
use orders_domain::money::{Currency, Money};
use orders_domain::order::{Availability, Order, OrderCommand, ProductUrl};
use orders_domain::price_check::{FetchFacts, PriceCheckEvent};
use orders_store::event_store::{CommandMetadata, EventStore};
use sqlx::PgPool;
use uuid::Uuid;

use super::setup::BenchDatabase;

#[derive(Debug, Args)]
pub(crate) struct OrderLatencyArgs {
    #[command(flatten)]
    database: orders::cli_args::DatabaseArgs,
    /// Checks in the long order's past.
    #[arg(long, default_value_t = 10_000)]
    past_checks: u32,
    /// The price changes every this many checks.
    #[arg(long, default_value_t = 8)]
    change_every: u32,
    /// Measured commands on each side.
    #[arg(long, default_value_t = 2_000)]
    samples: u32,
    /// Keep the benchmark database afterwards.
    #[arg(long)]
    keep_database: bool,
}

fn scraper() -> CommandMetadata {
    CommandMetadata::new_job("system:scraper")
}

fn uah(amount: &str) -> Money {
    Money::parse(amount, Currency::UAH).expect("a valid amount")
}

async fn place(events: &EventStore, owner: UserId) -> anyhow::Result<OrderId> {
    orders_test_support::orders::place_in_hryvnias(
        events,
        owner,
        "https://shop.example/p/kettle",
        "3199",
    )
    .await
}

/// One check's observation recorded on the order, as the policy does it; returns
/// its latency in milliseconds.
async fn observe(events: &EventStore, order_id: OrderId, price: &str) -> anyhow::Result<f64> {
    let observed = PriceCheckEvent::PriceObserved {
        order_id,
        price: Some(uah(price)),
        availability: Availability::InStock,
        title: None,
        extractor: Some("json-ld".to_owned()),
        fetch: FetchFacts::default(),
    };
    let started = Instant::now();
    record_observation_on_order(events, CheckId::new(), &observed, &scraper())
        .await
        .map_err(|error| anyhow::anyhow!("recording an observation: {error}"))?;
    Ok(started.elapsed().as_secs_f64() * 1_000.0)
}

struct Latencies {
    p50: f64,
    p99: f64,
    mean: f64,
}

fn latencies(mut samples: Vec<f64>) -> Latencies {
    samples.sort_by(f64::total_cmp);
    let at = |fraction: f64| samples[((samples.len() - 1) as f64 * fraction).round() as usize];
    Latencies {
        p50: at(0.5),
        p99: at(0.99),
        mean: samples.iter().sum::<f64>() / samples.len() as f64,
    }
}

/// Interleaved: a command on a new order, then one on the long order.
async fn measure(
    events: &EventStore,
    owner: UserId,
    long_order: OrderId,
    samples: u32,
) -> anyhow::Result<(Latencies, Latencies)> {
    let mut fresh_orders = Vec::with_capacity(samples as usize);
    for _ in 0..samples {
        fresh_orders.push(place(events, owner).await?);
    }
    let mut on_new = Vec::with_capacity(samples as usize);
    let mut on_long = Vec::with_capacity(samples as usize);
    for (index, fresh) in fresh_orders.into_iter().enumerate() {
        // Both sides record a price change and an alert or re-arm.
        on_new.push(observe(events, fresh, "3100.00").await?);
        let price = if index % 2 == 0 { "3500.00" } else { "3100.00" };
        on_long.push(observe(events, long_order, price).await?);
    }
    Ok((latencies(on_new), latencies(on_long)))
}

pub(crate) async fn order_latency(args: OrderLatencyArgs) -> anyhow::Result<()> {
    let database = BenchDatabase::create(args.database.database_url.as_deref()).await?;
    let outcome = run(&args, &database.url).await;
    database.finish(args.keep_database).await?;
    outcome
}

async fn run(args: &OrderLatencyArgs, url: &str) -> anyhow::Result<()> {
    let pool = orders_store::database::connect(url, 8).await?;
    orders_store::database::migrate(&pool).await?;
    let events = EventStore::new(pool.clone(), super::setup::bench_audit_key());
    let owner = UserId::new();

    // The long order's past: every check observed, the price changing every
    // `change_every` checks, across the target each time.
    let long_order = place(&events, owner).await?;
    let started = Instant::now();
    for check in 0..args.past_checks {
        let change = check / args.change_every.max(1);
        let price = if change % 2 == 0 {
            "3500.00"
        } else {
            "3100.00"
        };
        observe(&events, long_order, price).await?;
    }
    // Each check's own stream (requested, observed), beside it in the table.
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
         SELECT 'price_check', check_id, step, kind, '1.0', '{}'::jsonb,
                '{\"actor\": \"system:scraper\"}'::jsonb
           FROM (SELECT gen_random_uuid()::text FROM generate_series(1, $1::bigint)) AS checks (check_id)
                CROSS JOIN (VALUES (1, 'PriceCheckRequested'), (2, 'PriceObserved')) AS steps (step, kind)",
    )
    .bind(i64::from(args.past_checks))
    .execute(&pool)
    .await
    .context("adding the checks' own events")?;
    sqlx::query("ANALYZE events").execute(&pool).await?;
    let (order_events, changes): (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(*) FILTER (WHERE event_type = 'PriceChanged')
           FROM events WHERE aggregate_type = 'order' AND aggregate_id = $1",
    )
    .bind(long_order.to_string())
    .fetch_one(&pool)
    .await?;
    println!(
        "long order: {} past checks ({changes} price changes, {order_events} events on its stream), made in {:.1} s",
        args.past_checks,
        started.elapsed().as_secs_f64()
    );

    for (label, store) in [
        ("with snapshots", events.clone()),
        (
            "without snapshots",
            EventStore::new(pool.clone(), super::setup::bench_audit_key()).without_snapshots(),
        ),
    ] {
        let (new, long) = measure(&store, owner, long_order, args.samples).await?;
        println!(
            "{label}: new order p50 {:.2} ms, p99 {:.2} ms, mean {:.2} ms | long order p50 {:.2} ms, p99 {:.2} ms, mean {:.2} ms | ratio p50 {:.2}, p99 {:.2}, mean {:.2}",
            new.p50,
            new.p99,
            new.mean,
            long.p50,
            long.p99,
            long.mean,
            long.p50 / new.p50,
            long.p99 / new.p99,
            long.mean / new.mean,
        );
    }
    events.close().await;
    Ok(())
}

#[derive(Debug, Args)]
pub(crate) struct ChecksBenchArgs {
    #[command(flatten)]
    database: orders::cli_args::DatabaseArgs,
    /// Shops, each a local HTTP server of its own (its own host:port).
    #[arg(long, default_value_t = 50)]
    hosts: u32,
    /// Orders, spread evenly over the shops.
    #[arg(long, default_value_t = 1_000)]
    orders: u32,
    /// ORDERS_SCRAPER_HOST_SPACING_MS of the scrapers.
    #[arg(long, default_value_t = 100)]
    spacing_ms: u64,
    /// Scraper processes (`orders serve workers`), competing for the checks.
    #[arg(long, default_value_t = 1)]
    scrapers: u32,
    /// Seconds measured, after as many of warm-up as it takes every shop's robots.txt
    /// to be read.
    #[arg(long, default_value_t = 20)]
    duration_secs: u64,
    /// Keep the benchmark database afterwards.
    #[arg(long)]
    keep_database: bool,
}

fn product_page(price: &str) -> String {
    format!(
        r#"<!doctype html><html><head><title>Kettle</title><script type="application/ld+json">
{{"@context": "https://schema.org", "@type": "Product", "name": "Kettle",
  "offers": {{"@type": "Offer", "price": "{price}", "priceCurrency": "UAH",
             "availability": "https://schema.org/InStock"}}}}</script></head>
<body><h1>Kettle</h1><p class="price">{price} ₴</p></body></html>"#
    )
}

/// A child service process of the benchmark, killed when dropped.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_service(
    service: &str,
    database_url: &str,
    nats_url: &str,
    extra: &[(&str, String)],
) -> anyhow::Result<Child> {
    let mut command = std::process::Command::new(std::env::current_exe()?);
    command
        .args(["serve", service])
        .env("ORDERS_DATABASE_URL", database_url)
        .env("ORDERS_NATS_URL", nats_url)
        .env("ORDERS_LOG", "error")
        .stdout(std::process::Stdio::null());
    for (name, value) in extra {
        command.env(name, value);
    }
    Ok(Child(
        command
            .spawn()
            .with_context(|| format!("starting serve {service}"))?,
    ))
}

pub(crate) async fn checks(args: ChecksBenchArgs) -> anyhow::Result<()> {
    let database = BenchDatabase::create(args.database.database_url.as_deref()).await?;
    let outcome = run_checks(&args, &database.url).await;
    database.finish(args.keep_database).await?;
    outcome
}

async fn run_checks(args: &ChecksBenchArgs, url: &str) -> anyhow::Result<()> {
    use orders_test_support::fixture_shop::FixtureServer;

    let pool = orders_store::database::connect(url, 8).await?;
    orders_store::database::migrate(&pool).await?;
    let nats = orders_test_support::nats_server::NatsServer::start();
    let mut shops = Vec::with_capacity(args.hosts as usize);
    for _ in 0..args.hosts {
        shops.push(FixtureServer::start().await.context("starting a shop")?);
    }
    let events = EventStore::new(pool.clone(), super::setup::bench_audit_key());
    let orders = place_one_order_per_page(&events, &shops, args.orders).await?;
    let worker_env = checks_worker_env(args);
    let _relay = spawn_service("relay", url, nats.url(), &worker_env)?;
    let mut scrapers = Vec::new();
    for _ in 0..args.scrapers.max(1) {
        scrapers.push(spawn_service("workers", url, nats.url(), &worker_env)?);
    }

    let warm_up =
        std::time::Duration::from_secs(3) + std::time::Duration::from_millis(args.spacing_ms * 2);
    let measured = std::time::Duration::from_secs(args.duration_secs);
    let (window, requested) =
        keep_checks_in_flight(&pool, &events, &orders, warm_up, measured).await?;
    let (from, to) = window;
    let observed: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM events
          WHERE event_type = 'PriceObserved' AND recorded_at >= $1 AND recorded_at < $2",
    )
    .bind(from)
    .bind(to)
    .fetch_one(&pool)
    .await?;
    let failed: i64 =
        sqlx::query_scalar("SELECT count(*) FROM events WHERE event_type = 'PriceCheckFailed'")
            .fetch_one(&pool)
            .await?;
    let seconds = (to - from).num_milliseconds() as f64 / 1_000.0;
    let rate = observed as f64 / seconds;
    let ceiling = f64::from(args.hosts) * 1_000.0 / args.spacing_ms as f64;
    drop(scrapers);
    println!(
        "checks through the pipeline: {observed} observed in {seconds:.1} s = {rate:.1} checks/s; \
         ceiling hosts / spacing = {} / {} ms = {ceiling:.1} checks/s; {:.1}% of it \
         ({requested} requested, {failed} failed checks in all, {} scraper process(es))",
        args.hosts,
        args.spacing_ms,
        100.0 * rate / ceiling,
        args.scrapers.max(1),
    );
    report_spacing(&shops, args.spacing_ms);
    events.close().await;
    Ok(())
}

/// One order per product page, the pages spread over the shops in turn.
async fn place_one_order_per_page(
    events: &EventStore,
    shops: &[orders_test_support::fixture_shop::FixtureServer],
    count: u32,
) -> anyhow::Result<Vec<OrderId>> {
    let owner = UserId::new();
    let mut orders = Vec::with_capacity(count as usize);
    for index in 0..count {
        let shop = &shops[index as usize % shops.len()];
        let path = format!("/p/{index}");
        shop.set_html(&path, product_page("3500.00"));
        let order_id = OrderId::new();
        events
            .execute_on_new::<Order>(
                &order_id.to_string(),
                OrderCommand::Place {
                    order_id,
                    owner,
                    url: ProductUrl::parse(shop.url(&path).as_str())?,
                    target: uah("1"),
                    check_interval_secs: 3600,
                    selector: None,
                    owner_active_orders: 0,
                },
                &scraper(),
            )
            .await
            .map_err(|error| anyhow::anyhow!("placing an order: {error}"))?;
        orders.push(order_id);
    }
    Ok(orders)
}

/// The environment of the relay and worker processes of the checks benchmark.
fn checks_worker_env(args: &ChecksBenchArgs) -> [(&'static str, String); 8] {
    [
        (
            "ORDERS_AUDIT_KEY",
            super::setup::bench_audit_key_text().to_owned(),
        ),
        (
            "ORDERS_JWT_SECRET",
            "a benchmark secret of more than thirty-two bytes".to_owned(),
        ),
        // No mail is sent: the targets are never reached.
        ("ORDERS_SMTP_URL", "smtp://127.0.0.1:9".to_owned()),
        ("ORDERS_MAIL_FROM", "Orders <bench@orders.test>".to_owned()),
        ("ORDERS_SCRAPER_ALLOW_PRIVATE", "127.0.0.0/8".to_owned()),
        (
            "ORDERS_SCRAPER_HOST_SPACING_MS",
            args.spacing_ms.to_string(),
        ),
        ("ORDERS_SCRAPER_CONCURRENCY", args.orders.to_string()),
        ("ORDERS_RELAY_POLL_MS", "20".to_owned()),
    ]
}

type Window = (chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>);

/// Keeps every order's check in flight (an order without a claim gets a new one)
/// through the warm-up and the measured time; answers the measured window and how
/// many checks were requested.
async fn keep_checks_in_flight(
    pool: &PgPool,
    events: &EventStore,
    orders: &[OrderId],
    warm_up: std::time::Duration,
    measured: std::time::Duration,
) -> anyhow::Result<(Window, u64)> {
    use orders_application::price_checks::{load_order, request_check};
    use orders_domain::price_check::CheckTrigger;

    let ids: Vec<Uuid> = orders.iter().map(|id| id.as_uuid()).collect();
    let started = Instant::now();
    let mut window_start = None;
    let mut requested = 0_u64;
    while started.elapsed() < warm_up + measured {
        if window_start.is_none() && started.elapsed() >= warm_up {
            window_start = Some(chrono::Utc::now());
        }
        let idle: Vec<Uuid> = sqlx::query_scalar(
            "SELECT id FROM UNNEST($1::uuid[]) AS ids (id)
              WHERE NOT EXISTS (SELECT 1 FROM check_claims WHERE order_id = id)",
        )
        .bind(&ids)
        .fetch_all(pool)
        .await?;
        for id in idle {
            let order = load_order(events, OrderId::from_uuid(id))
                .await
                .map_err(|error| anyhow::anyhow!("{error}"))?;
            request_check(events, &order, CheckTrigger::Manual, &scraper())
                .await
                .map_err(|error| anyhow::anyhow!("{error}"))?;
            requested += 1;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let start = window_start.context("the measured window never started")?;
    Ok(((start, chrono::Utc::now()), requested))
}

/// The spacing, as the shops saw it: from the end of one request to the start of
/// the next, per shop (robots.txt included).
fn report_spacing(shops: &[orders_test_support::fixture_shop::FixtureServer], spacing_ms: u64) {
    let spacing = std::time::Duration::from_millis(spacing_ms);
    let mut gaps = Vec::new();
    let mut overlaps = 0;
    for shop in shops {
        let mut requests = shop.requests();
        requests.sort_by_key(|request| request.started_at);
        for pair in requests.windows(2) {
            match pair[0].finished_at {
                Some(finished) if pair[1].started_at >= finished => {
                    gaps.push(pair[1].started_at - finished);
                }
                _ => overlaps += 1,
            }
        }
    }
    gaps.sort();
    let below = gaps.iter().filter(|gap| **gap < spacing).count();
    let gap_ms =
        |gap: Option<&std::time::Duration>| gap.map_or(f64::NAN, |gap| gap.as_secs_f64() * 1_000.0);
    println!(
        "spacing held: {} gaps between requests to one shop, {below} shorter than {spacing_ms} ms, \
         {overlaps} overlapping; shortest {:.1} ms, median {:.1} ms",
        gaps.len(),
        gap_ms(gaps.first()),
        gap_ms(gaps.get(gaps.len() / 2)),
    );
}

#[derive(Debug, Args)]
pub(crate) struct IdleMemoryArgs {
    #[command(flatten)]
    database: orders::cli_args::DatabaseArgs,
    /// Seconds each service idles before its memory is read.
    #[arg(long, default_value_t = 10)]
    idle_secs: u64,
    /// Keep the benchmark database afterwards.
    #[arg(long)]
    keep_database: bool,
}

/// `orders bench idle-memory`: the resident memory of each service after it has
/// started and idled (target: under 50 MB each), against a fresh database and a
/// nats-server of its own.
pub(crate) async fn idle_memory(args: IdleMemoryArgs) -> anyhow::Result<()> {
    let database = BenchDatabase::create(args.database.database_url.as_deref()).await?;
    let outcome = run_idle_memory(&args, &database.url).await;
    database.finish(args.keep_database).await?;
    outcome
}

async fn run_idle_memory(args: &IdleMemoryArgs, url: &str) -> anyhow::Result<()> {
    let pool = orders_store::database::connect(url, 2).await?;
    orders_store::database::migrate(&pool).await?;
    pool.close().await;
    let nats = orders_test_support::nats_server::NatsServer::start();
    println!(
        "service      RSS after {} s idle   peak RSS",
        args.idle_secs
    );
    for service in ["api", "relay", "projectors", "workers", "all"] {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let env = [
            (
                "ORDERS_AUDIT_KEY",
                super::setup::bench_audit_key_text().to_owned(),
            ),
            (
                "ORDERS_JWT_SECRET",
                "a benchmark secret of more than thirty-two bytes".to_owned(),
            ),
            ("ORDERS_SMTP_URL", "smtp://127.0.0.1:9".to_owned()),
            ("ORDERS_MAIL_FROM", "Orders <bench@orders.test>".to_owned()),
            ("ORDERS_HTTP_ADDR", format!("127.0.0.1:{port}")),
        ];
        let child = spawn_service(service, url, nats.url(), &env)?;
        tokio::time::sleep(std::time::Duration::from_secs(args.idle_secs)).await;
        let (rss, peak) = super::setup::memory_mib(child.0.id())
            .with_context(|| format!("reading the memory of serve {service} (did it exit?)"))?;
        println!("{service:<12} {rss:>8.1} MiB          {peak:>8.1} MiB");
        drop(child);
    }
    Ok(())
}
