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
use orders_command_api::event_store::{CommandMetadata, EventStore};
use orders_command_api::price_checks::record_observation_on_order;
use orders_domain::ids::{CheckId, OrderId, UserId};
use orders_domain::money::{Currency, Money};
use orders_domain::order::{Availability, Order, OrderCommand, ProductUrl};
use orders_domain::price_check::{FetchFacts, PriceCheckEvent};
use uuid::Uuid;

use crate::bench::BenchDatabase;

#[derive(Debug, Args)]
pub(crate) struct OrderLatencyArgs {
    /// A PostgreSQL URL; a fresh database is created on it and dropped afterwards.
    #[arg(long, env = "ORDERS_DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
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
    let id = Uuid::now_v7();
    CommandMetadata {
        actor: "system:scraper".to_owned(),
        correlation_id: id,
        causation_id: id,
        request_id: id,
        idempotency_key: None,
    }
}

fn uah(amount: &str) -> Money {
    Money::parse(amount, Currency::UAH).expect("a valid amount")
}

async fn place(events: &EventStore, owner: UserId) -> anyhow::Result<OrderId> {
    let order_id = OrderId::new();
    events
        .execute_on_new::<Order>(
            &order_id.to_string(),
            OrderCommand::Place {
                order_id,
                owner,
                url: ProductUrl::parse("https://shop.example/p/kettle")?,
                target: uah("3199"),
                check_interval_secs: 3600,
                selector: None,
                owner_active_orders: 0,
            },
            &scraper(),
        )
        .await
        .map_err(|error| anyhow::anyhow!("placing an order: {error}"))?;
    Ok(order_id)
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
    let database = BenchDatabase::create(args.database_url.as_deref()).await?;
    let outcome = run(&args, &database.url).await;
    database.finish(args.keep_database).await?;
    outcome
}

async fn run(args: &OrderLatencyArgs, url: &str) -> anyhow::Result<()> {
    let pool = orders_command_api::database::connect(url, 8).await?;
    orders_command_api::database::migrate(&pool).await?;
    let events = EventStore::new(pool.clone());
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
            EventStore::new(pool.clone()).without_snapshots(),
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
