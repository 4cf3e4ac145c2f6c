//! `orders bench flash-sale`: every buyer asks for one unit of one product at
//! once, through a bounded number of keep-alive HTTP clients. Measured: from the
//! first `POST /purchases` to the moment the `purchases` view shows the last one
//! settled (the last settling event seen on the log, then the view's checkpoint
//! read until it reaches it), hence settled purchases/s. It fails unless exactly
//! `units` are confirmed, the rest rejected `out_of_stock`, the product's view
//! says available 0 and reserved `units`, and guarantee 10 holds in the events
//! table. Ceiling: placement alone, the same buyers through the same clients with
//! the workers stopped (a sale cannot settle faster than its buyers can place).
//! Target: ≥ 1,000 settled purchases/s.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Args;
use futures::StreamExt as _;
use orders_domain::ids::ProductId;
use orders_nats::LogPosition;
use orders_projectors::View;
use sqlx::PgPool;
use tokio::task::JoinSet;

use super::{decode, purchase_request, settles, Shop, PURCHASE_SUBJECTS, SETTLE_PATIENCE};
use crate::bench::setup::{median, BenchDatabase, KeepAliveConnection};

#[derive(Debug, Args)]
pub(crate) struct FlashSaleArgs {
    #[command(flatten)]
    database: orders::cli_args::DatabaseArgs,
    /// Buyers, each asking for one unit.
    #[arg(long, default_value_t = 2_000)]
    buyers: usize,
    /// Units of the product on sale.
    #[arg(long, default_value_t = 500)]
    units: u64,
    /// Keep-alive HTTP clients the buyers' requests share.
    #[arg(long, default_value_t = 32)]
    clients: usize,
    /// Sales, each on a product of its own, each followed by its ceiling; the
    /// medians are reported.
    #[arg(long, default_value_t = 3)]
    rounds: u32,
    /// Purchase events the saga works on at once (as `serve workers`).
    #[arg(long, env = "ORDERS_SAGA_CONCURRENCY", default_value_t = 256)]
    saga_concurrency: usize,
    #[arg(long)]
    keep_database: bool,
}

/// One sale and its ceiling, in seconds from the first `POST /purchases`.
struct SaleRound {
    /// To the last purchase settled in the `purchases` view.
    settled: f64,
    /// To the last 201 of the sale.
    placed: f64,
    /// To the last 201 of the same placements with the workers stopped.
    placed_alone: f64,
    /// Appends (distinct transactions) to the product's stream, and its events.
    appends: i64,
    product_events: i64,
}

pub(crate) async fn flash_sale(args: FlashSaleArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.units as usize <= args.buyers,
        "--units must not exceed --buyers"
    );
    let database = BenchDatabase::create(args.database.database_url.as_deref()).await?;
    let outcome = run_flash_sale(&args, &database.url).await;
    database.finish(args.keep_database).await?;
    let rounds = outcome?;
    let buyers = args.buyers as f64;
    println!();
    println!(
        "flash sale: {} buyers, {} units of one product, {} HTTP clients, saga concurrency {} \
         ({} round(s); seconds from the first POST /purchases):",
        args.buyers, args.units, args.clients, args.saga_concurrency, args.rounds
    );
    println!(
        "{:>5}  {:>10}  {:>10}  {:>11}  {:>13}  {:>13}  {:>6}  {:>18}",
        "round",
        "settled s",
        "placed s",
        "settled/s",
        "ceiling s",
        "ceiling /s",
        "ratio",
        "appends (events)"
    );
    for (index, round) in rounds.iter().enumerate() {
        println!(
            "{:>5}  {:>10.3}  {:>10.3}  {:>11.0}  {:>13.3}  {:>13.0}  {:>5.0}%  {:>18}",
            index + 1,
            round.settled,
            round.placed,
            buyers / round.settled,
            round.placed_alone,
            buyers / round.placed_alone,
            100.0 * round.placed_alone / round.settled,
            format!("{} ({})", round.appends, round.product_events),
        );
    }
    let settled_rate = median(rounds.iter().map(|r| buyers / r.settled).collect());
    let ceiling_rate = median(rounds.iter().map(|r| buyers / r.placed_alone).collect());
    println!(
        "median: {settled_rate:.0} settled purchases/s; ceiling (POST /purchases alone, workers \
         stopped, same buyers and clients) {ceiling_rate:.0} placements/s; {:.0}% of it",
        100.0 * settled_rate / ceiling_rate
    );
    println!(
        "every round: exactly {} confirmed, {} rejected out_of_stock, available 0, reserved {}, \
         guarantee 10 holds",
        args.units,
        args.buyers - args.units as usize,
        args.units
    );
    println!("target: >= 1,000 settled purchases/s, exactly the units confirmed");
    Ok(())
}

async fn run_flash_sale(args: &FlashSaleArgs, url: &str) -> anyhow::Result<Vec<SaleRound>> {
    let mut shop = Shop::start(url, args.saga_concurrency.max(1)).await?;
    shop.open().await?;
    let tokens = shop.buyers(args.buyers).await?;
    let mut rounds = Vec::new();
    for round in 1..=args.rounds {
        let on_sale = shop.products(1, args.units).await?[0];
        let for_ceiling = shop.products(1, args.buyers as u64).await?[0];
        shop.until_quiet().await?;
        eprintln!("round {round}: the sale");
        let (placed, settled) = sell(&shop, &tokens, on_sale, args.clients).await?;
        check_sale(&shop, on_sale, args.buyers, args.units).await?;
        let (appends, product_events) = appends_to(&shop.pool, on_sale).await?;

        eprintln!("round {round}: waiting for the workers to finish (the sale's mails)");
        shop.until_quiet().await?;
        eprintln!("round {round}: the ceiling, the same placements with the workers stopped");
        shop.stop_workers().await?;
        let (first, last) = place_all(shop.api()?.addr, &tokens, for_ceiling, args.clients).await?;
        shop.start_workers().await?;
        eprintln!("round {round}: letting the saga settle the ceiling's purchases");
        until_nothing_pending(&shop).await?;
        rounds.push(SaleRound {
            settled: settled.as_secs_f64(),
            placed: placed.as_secs_f64(),
            placed_alone: (last - first).as_secs_f64(),
            appends,
            product_events,
        });
    }
    let mismatches = orders_test_support::shop::reservation_mismatches(&shop.pool).await?;
    anyhow::ensure!(mismatches.is_empty(), "guarantee 10: {mismatches:?}");
    shop.stop().await?;
    Ok(rounds)
}

/// The sale: every buyer's placement through the clients, and the moment the
/// `purchases` view shows them all settled. Answers both durations from the first
/// placement.
async fn sell(
    shop: &Shop,
    tokens: &[String],
    product: ProductId,
    clients: usize,
) -> anyhow::Result<(Duration, Duration)> {
    // Subscribed before the first placement: every settling event is seen.
    let settling = shop.log.client.subscribe(PURCHASE_SUBJECTS).await?;
    let watching = tokio::spawn(settled_in_view(settling, tokens.len(), shop.pool.clone()));
    let (first, last) = place_all(shop.api()?.addr, tokens, product, clients).await?;
    let settled_at = watching.await??;
    Ok((last - first, settled_at.saturating_duration_since(first)))
}

/// Every buyer's `POST /purchases` of one unit of `product`, shared by `clients`
/// keep-alive connections opened beforehand; answers when the first request went
/// out and when the last 201 came back.
async fn place_all(
    addr: SocketAddr,
    tokens: &[String],
    product: ProductId,
    clients: usize,
) -> anyhow::Result<(Instant, Instant)> {
    let requests: Arc<Vec<Vec<u8>>> = Arc::new(
        tokens
            .iter()
            .map(|token| purchase_request(addr, token, product))
            .collect(),
    );
    let next = Arc::new(AtomicUsize::new(0));
    let clients = clients.clamp(1, requests.len().max(1));
    let start = Arc::new(tokio::sync::Barrier::new(clients + 1));
    let mut tasks = JoinSet::new();
    for _ in 0..clients {
        let mut connection = KeepAliveConnection::open(addr).await?;
        let (requests, next, start) = (requests.clone(), next.clone(), start.clone());
        tasks.spawn(async move {
            start.wait().await;
            let mut last = None;
            while let Some(request) = requests.get(next.fetch_add(1, Ordering::SeqCst)) {
                let status = connection.exchange(request).await?;
                anyhow::ensure!(
                    status == 201,
                    "POST /purchases answered {status}: {}",
                    String::from_utf8_lossy(&connection.body)
                );
                last = Some(Instant::now());
            }
            anyhow::Ok(last)
        });
    }
    start.wait().await;
    let first = Instant::now();
    let mut last = first;
    while let Some(finished) = tasks.join_next().await {
        if let Some(at) = finished?? {
            last = last.max(at);
        }
    }
    Ok((first, last))
}

/// Counts settling events on the log until `expected` have passed, then waits
/// until the `purchases` view has applied the last of them; answers that moment.
/// Only the sale's purchases are pending while it runs, so every settling event
/// is one of them. Counted by purchase: a core subscription sees a publish the
/// relay retried (after a slow acknowledgement) twice, though the stream stored
/// it once.
async fn settled_in_view(
    mut settling: async_nats::Subscriber,
    expected: usize,
    pool: PgPool,
) -> anyhow::Result<Instant> {
    let mut settled = std::collections::HashSet::with_capacity(expected);
    let mut last = LogPosition::default();
    let counting = async {
        while settled.len() < expected {
            let message = settling.next().await.context("the subscription ended")?;
            if let Some(event) = decode(&message).filter(|event| settles(event).is_some()) {
                last = last.max(event.position());
                settled.insert(event.aggregate_id);
            }
        }
        anyhow::Ok(())
    };
    let counted = tokio::time::timeout(SETTLE_PATIENCE, counting).await;
    anyhow::ensure!(
        counted.is_ok(),
        "{} of {expected} purchases settled on the log in {} s",
        settled.len(),
        SETTLE_PATIENCE.as_secs()
    );
    counted??;
    let applied = orders_projectors::query::wait_for(&pool, View::Purchases, last, SETTLE_PATIENCE)
        .await
        .context("waiting for the purchases view")?;
    anyhow::ensure!(applied, "the purchases view did not reach {last}");
    Ok(Instant::now())
}

/// Fails loudly unless the sale sold exactly its units: the purchases view, the
/// product's view (once caught up) and guarantee 10 from the events table.
async fn check_sale(
    shop: &Shop,
    product: ProductId,
    buyers: usize,
    units: u64,
) -> anyhow::Result<()> {
    let (all, confirmed, out_of_stock): (i64, i64, i64) = sqlx::query_as(
        "SELECT count(*),
                count(*) FILTER (WHERE status = 'confirmed'),
                count(*) FILTER (WHERE status = 'rejected' AND reason ->> 'code' = 'out_of_stock')
           FROM view_purchases
          WHERE lines @> jsonb_build_array(jsonb_build_object('product_id', $1::text))",
    )
    .bind(product.as_uuid().to_string())
    .fetch_one(&shop.pool)
    .await
    .context("counting the sale's purchases")?;
    let rejected = buyers as i64 - units as i64;
    anyhow::ensure!(
        (all, confirmed, out_of_stock) == (buyers as i64, units as i64, rejected),
        "OVERSOLD OR LOST: {all} purchases in the view, {confirmed} confirmed, {out_of_stock} \
         rejected out_of_stock; expected {buyers}, {units}, {rejected}"
    );
    shop.log.wait_until_caught_up(&shop.pool).await?;
    let row = orders_projectors::query::products::get(&shop.pool, product.as_uuid())
        .await?
        .context("the product is not in its view")?;
    anyhow::ensure!(
        (row.available, row.reserved) == (0, units as i64),
        "the product's view says available {}, reserved {}; expected 0 and {units}",
        row.available,
        row.reserved
    );
    let mismatches = orders_test_support::shop::reservation_mismatches(&shop.pool).await?;
    anyhow::ensure!(mismatches.is_empty(), "guarantee 10: {mismatches:?}");
    Ok(())
}

/// How many appends (distinct transactions) the product's stream took after it was
/// added, and how many events they stored.
async fn appends_to(pool: &PgPool, product: ProductId) -> anyhow::Result<(i64, i64)> {
    Ok(sqlx::query_as(
        "SELECT count(DISTINCT tx_id), count(*) FROM events
          WHERE aggregate_type = 'product' AND aggregate_id = $1 AND sequence > 1",
    )
    .bind(product.to_string())
    .fetch_one(pool)
    .await?)
}

/// Waits until no purchase in the `purchases` view is pending, the views have
/// caught up with the log and the workers have nothing in hand.
async fn until_nothing_pending(shop: &Shop) -> anyhow::Result<()> {
    let deadline = Instant::now() + SETTLE_PATIENCE;
    loop {
        shop.until_quiet().await?;
        let pending: i64 =
            sqlx::query_scalar("SELECT count(*) FROM view_purchases WHERE status = 'pending'")
                .fetch_one(&shop.pool)
                .await?;
        if pending == 0 {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "{pending} purchases still pending"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
