//! The shop's benchmarks: purchases settled by the saga, beside a ceiling measured
//! in the same run. Both stand up the whole path in this process, as `serve all`
//! runs it: a fresh database, a nats-server with the relay (woken by the API) and
//! the projectors (`setup::BenchLog`), the API (`setup::BenchApi`) and `serve
//! workers` (`orders_workers::service::run`: the saga, and beside it every other
//! worker, the e-mail worker mailing each buyer through a mail sink of this
//! process), each on a pool sized as `serve` sizes it. Buyers are verified users
//! stored as fixtures (`orders_test_support::shop`), not argon2 registrations.
//! Each measurement starts with the views caught up and the workers idle.
//!
//! - `orders bench flash-sale`: every buyer asks for one unit of one product at
//!   once, through a bounded number of keep-alive HTTP clients. Measured: from the
//!   first `POST /purchases` to the moment the `purchases` view shows the last one
//!   settled (the last settling event seen on the log, then the view's checkpoint
//!   read until it reaches it), hence settled purchases/s. It fails unless exactly
//!   `units` are confirmed, the rest rejected `out_of_stock`, the product's view
//!   says available 0 and reserved `units`, and guarantee 10 holds in the events
//!   table. Ceiling: placement alone, the same buyers through the same clients with
//!   the workers stopped (a sale cannot settle faster than its buyers can place).
//!   Target: ≥ 1,000 settled purchases/s.
//! - `orders bench purchases`: `POST /purchases` at a fixed rate (open loop: each
//!   is sent at its time, whatever the earlier ones are doing) spread over many
//!   products with stock for all. Placed → settled per purchase: from the 201 to
//!   the answer of `GET /purchases/{id}` that carries `Orders-Min-Position` of the
//!   purchase's `PurchaseConfirmed` (sent as soon as that event reaches a subscriber
//!   of the log) and is not stale: the read waits for the `purchases` view as a
//!   client would, so the figure is when the buyer can see it. Ceiling: the same
//!   read-your-writes of the placement itself (the 201's own position), at the same
//!   moments, and again with the workers stopped. Target: p99 < 100 ms.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use async_nats::jetstream::{self, consumer::PullConsumer};
use clap::Args;
use futures::{StreamExt as _, TryStreamExt as _};
use orders_application::signed_tokens::SignedTokens;
use orders_domain::ids::{ProductId, UserId};
use orders_domain::money::{Currency, Money};
use orders_nats::{LogEvent, LogPosition, LEADER_BUCKET};
use orders_projectors::View;
use orders_store::event_store::EventStore;
use orders_workers::fetch::FetchPolicy;
use orders_workers::host_gate::HostGateConfig;
use orders_workers::mail::Mailer;
use orders_workers::saga::DEFAULT_TIMEOUT;
use orders_workers::service::WorkersConfig;
use sqlx::PgPool;
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::setup::{
    bench_audit_key, median, percentile, sorted, BenchApi, BenchDatabase, BenchLog,
    KeepAliveConnection,
};

/// How long a benchmark waits for purchases to settle before it fails.
const SETTLE_PATIENCE: Duration = Duration::from_secs(120);
/// Purchase events on the log.
const PURCHASE_SUBJECTS: &str = "orders.events.purchase.>";
/// Connections of the workers' pool, as `serve workers` has it.
const WORKERS_POOL: u32 = 8;
/// Connections of the API's pool: `serve`'s default `ORDERS_DATABASE_MAX_CONNECTIONS`.
const API_POOL: u32 = 32;

/// `serve workers` in this process (the saga among them), on a pool of its own
/// sized as `serve workers` sizes it, mailing through an [`smtp_sink`].
struct RunningWorkers {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl RunningWorkers {
    async fn start(
        database_url: &str,
        client: &async_nats::Client,
        smtp: SocketAddr,
        saga_concurrency: usize,
    ) -> anyhow::Result<Self> {
        let pool = orders_store::database::connect(database_url, WORKERS_POOL).await?;
        let config = WorkersConfig {
            mailer: Mailer::new(&format!("smtp://{smtp}"), "Orders <bench@orders.test>")?,
            tokens: SignedTokens::new(Uuid::new_v4().simple().to_string().repeat(2).as_bytes()),
            public_url: "http://127.0.0.1".parse()?,
            fetch: FetchPolicy::default(),
            host_gate: HostGateConfig::default(),
            scraper_concurrency: 32,
            scheduler_tick: Duration::from_secs(1),
            audit_key: bench_audit_key(),
            saga_timeout: DEFAULT_TIMEOUT,
            saga_concurrency,
        };
        let jetstream = jetstream::new(client.clone());
        let leaders = jetstream.get_key_value(LEADER_BUCKET).await?;
        let stop = CancellationToken::new();
        let task = tokio::spawn(orders_workers::service::run(
            config,
            pool,
            jetstream,
            leaders,
            "bench-workers".to_owned(),
            stop.clone(),
        ));
        Ok(Self { stop, task })
    }

    async fn stop(self) -> anyhow::Result<()> {
        self.stop.cancel();
        self.task.await?
    }
}

/// A mail server that accepts every mail and keeps none, so that the e-mail
/// worker runs as it does in production without a real mail server measured.
async fn smtp_sink() -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((connection, _)) = listener.accept().await {
            tokio::spawn(async move {
                if let Err(error) = smtp_session(connection).await {
                    tracing::debug!(%error, "the benchmark's mail sink lost a session");
                }
            });
        }
    });
    Ok(addr)
}

/// One SMTP session: every command is fine, every message is thrown away.
async fn smtp_session(connection: TcpStream) -> std::io::Result<()> {
    let (read, mut write) = connection.into_split();
    let mut read = BufReader::new(read);
    write.write_all(b"220 sink ESMTP\r\n").await?;
    let mut line = String::new();
    let mut in_data = false;
    loop {
        line.clear();
        if read.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        if in_data {
            if line == ".\r\n" {
                in_data = false;
                write.write_all(b"250 kept nowhere\r\n").await?;
            }
            continue;
        }
        let verb = line.get(..4).unwrap_or_default().to_ascii_uppercase();
        let reply: &[u8] = match verb.as_str() {
            "EHLO" => b"250-sink\r\n250 8BITMIME\r\n",
            "DATA" => {
                in_data = true;
                b"354 go on\r\n"
            }
            "QUIT" => {
                write.write_all(b"221 bye\r\n").await?;
                return Ok(());
            }
            _ => b"250 ok\r\n",
        };
        write.write_all(reply).await?;
    }
}

/// Waits until every worker's consumer has nothing pending or unacknowledged (the
/// mails of a sale, say), so that a measurement starts on a quiet system.
async fn until_workers_idle(client: &async_nats::Client) -> anyhow::Result<()> {
    let jetstream = jetstream::new(client.clone());
    let stream = jetstream.get_stream(orders_nats::LOG_STREAM).await?;
    let deadline = Instant::now() + SETTLE_PATIENCE;
    loop {
        let mut busy = 0;
        for worker in orders_nats::work::WORKERS {
            let mut consumer: PullConsumer =
                stream.get_consumer(worker.name).await.map_err(|error| {
                    anyhow::anyhow!("opening the {} consumer: {error}", worker.name)
                })?;
            let info = consumer.info().await?;
            busy += info.num_pending + info.num_ack_pending as u64;
        }
        if busy == 0 {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the workers still have {busy} messages in hand"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Everything a shop benchmark runs on.
struct Shop {
    database_url: String,
    /// The benchmark's own reads, apart from the API's connections.
    pool: PgPool,
    events: EventStore,
    log: BenchLog,
    api: Option<BenchApi>,
    workers: Option<RunningWorkers>,
    smtp: SocketAddr,
    saga_concurrency: usize,
}

impl Shop {
    /// The database migrated, the log with the relay and projectors; the API and
    /// the workers start with [`Shop::open`].
    async fn start(database_url: &str, saga_concurrency: usize) -> anyhow::Result<Self> {
        let pool = orders_store::database::connect(database_url, 8).await?;
        orders_store::database::migrate(&pool).await?;
        let log = BenchLog::start(database_url, true).await?;
        Ok(Self {
            database_url: database_url.to_owned(),
            events: EventStore::new(pool.clone(), bench_audit_key()),
            pool,
            log,
            api: None,
            workers: None,
            smtp: smtp_sink().await?,
            saga_concurrency,
        })
    }

    /// Starts the API (on a pool of its own) and the workers.
    async fn open(&mut self) -> anyhow::Result<()> {
        let api_pool = orders_store::database::connect(&self.database_url, API_POOL).await?;
        self.api = Some(BenchApi::start(&api_pool, Some(&self.log)).await?);
        self.start_workers().await
    }

    fn api(&self) -> anyhow::Result<&BenchApi> {
        self.api.as_ref().context("the shop's API is not started")
    }

    async fn start_workers(&mut self) -> anyhow::Result<()> {
        if self.workers.is_none() {
            let workers = RunningWorkers::start(
                &self.database_url,
                &self.log.client,
                self.smtp,
                self.saga_concurrency,
            )
            .await?;
            self.workers = Some(workers);
        }
        Ok(())
    }

    /// Stops every worker, the saga with them.
    async fn stop_workers(&mut self) -> anyhow::Result<()> {
        match self.workers.take() {
            Some(workers) => workers.stop().await,
            None => Ok(()),
        }
    }

    /// Waits until the views have caught up with the log and the workers have
    /// nothing in hand.
    async fn until_quiet(&self) -> anyhow::Result<()> {
        self.log.wait_until_caught_up(&self.pool).await?;
        until_workers_idle(&self.log.client).await?;
        self.log.wait_until_caught_up(&self.pool).await
    }

    /// Verified buyers, 16 stored at a time, with their access tokens.
    async fn buyers(&self, count: usize) -> anyhow::Result<Vec<String>> {
        eprintln!("storing {count} verified buyers");
        let ids: Vec<UserId> = futures::stream::iter(0..count)
            .map(|index| {
                let email = format!("buyer-{index}@bench.example.com");
                let events = self.events.clone();
                async move { orders_test_support::shop::verified_user(&events, &email, None).await }
            })
            .buffer_unordered(16)
            .try_collect()
            .await?;
        let api = self.api()?;
        ids.into_iter()
            .map(|id| api.state.access_tokens.issue(id, 0))
            .collect()
    }

    /// `count` products with `stock` units each, 16 stored at a time.
    async fn products(&self, count: usize, stock: u64) -> anyhow::Result<Vec<ProductId>> {
        let price = Money::parse("19.99", Currency::USD)?;
        futures::stream::iter(0..count)
            .map(|_| orders_test_support::shop::product(&self.events, price, stock))
            .buffer_unordered(16)
            .try_collect()
            .await
    }

    async fn stop(mut self) -> anyhow::Result<()> {
        self.stop_workers().await?;
        if let Some(api) = self.api.take() {
            api.stop().await?;
        }
        self.log.stop().await;
        self.events.close().await;
        self.pool.close().await;
        Ok(())
    }
}

/// `POST /purchases` of one unit of `product`, under its own `Idempotency-Key`.
fn purchase_request(addr: SocketAddr, token: &str, product: ProductId) -> Vec<u8> {
    let body = format!(r#"{{"items": [{{"product_id": "{product}", "quantity": 1}}]}}"#);
    format!(
        "POST /purchases HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\
         Idempotency-Key: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        Uuid::now_v7(),
        body.len()
    )
    .into_bytes()
}

/// What a settling event says: `Some(true)` confirmed, `Some(false)` rejected.
fn settles(event: &LogEvent) -> Option<bool> {
    match event.event_type.as_str() {
        "PurchaseConfirmed" => Some(true),
        "PurchaseRejected" => Some(false),
        _ => None,
    }
}

fn decode(message: &async_nats::Message) -> Option<LogEvent> {
    LogEvent::decode(message.headers.as_ref()?, &message.payload).ok()
}

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
/// is one of them.
async fn settled_in_view(
    mut settling: async_nats::Subscriber,
    expected: usize,
    pool: PgPool,
) -> anyhow::Result<Instant> {
    let mut seen = 0;
    let mut last = LogPosition::default();
    let counting = async {
        while seen < expected {
            let message = settling.next().await.context("the subscription ended")?;
            if let Some(event) = decode(&message).filter(|event| settles(event).is_some()) {
                seen += 1;
                last = last.max(event.position());
            }
        }
        anyhow::Ok(())
    };
    let counted = tokio::time::timeout(SETTLE_PATIENCE, counting).await;
    anyhow::ensure!(
        counted.is_ok(),
        "{seen} of {expected} purchases settled on the log in {} s",
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

#[derive(Debug, Args)]
pub(crate) struct PurchasesBenchArgs {
    #[command(flatten)]
    database: orders::cli_args::DatabaseArgs,
    /// Purchases placed per second (open loop).
    #[arg(long, default_value_t = 200)]
    rate: u32,
    /// Products the purchases are spread over, in turn, each with stock for all.
    #[arg(long, default_value_t = 1_000)]
    products: usize,
    /// Buyers the purchases are spread over, in turn.
    #[arg(long, default_value_t = 200)]
    buyers: usize,
    /// Measured seconds of each phase (after the warm-up).
    #[arg(long, alias = "duration-secs", default_value_t = 20)]
    seconds: u64,
    #[arg(long, default_value_t = 3)]
    warmup_secs: u64,
    /// Purchase events the saga works on at once (as `serve workers`).
    #[arg(long, env = "ORDERS_SAGA_CONCURRENCY", default_value_t = 256)]
    saga_concurrency: usize,
    #[arg(long)]
    keep_database: bool,
}

/// The settling events seen on the log, by purchase id, each handed to whoever
/// waits for it (whichever of the two comes first).
#[derive(Default)]
struct Settlements {
    slots: Mutex<HashMap<String, Slot>>,
}

#[derive(Debug, Clone, Copy)]
struct Settled {
    confirmed: bool,
    position: LogPosition,
}

enum Slot {
    Arrived(Settled),
    Waiting(oneshot::Sender<Settled>),
}

impl Settlements {
    fn arrived(&self, purchase_id: String, settled: Settled) {
        let mut slots = self.slots.lock().expect("not poisoned");
        match slots.remove(&purchase_id) {
            Some(Slot::Waiting(waiter)) => {
                let _ = waiter.send(settled);
            }
            _ => {
                slots.insert(purchase_id, Slot::Arrived(settled));
            }
        }
    }

    fn wait(&self, purchase_id: &str) -> oneshot::Receiver<Settled> {
        let (waiter, settled) = oneshot::channel();
        let mut slots = self.slots.lock().expect("not poisoned");
        match slots.remove(purchase_id) {
            Some(Slot::Arrived(arrived)) => {
                let _ = waiter.send(arrived);
            }
            _ => {
                slots.insert(purchase_id.to_owned(), Slot::Waiting(waiter));
            }
        }
        settled
    }

    /// Follows the log's purchase events into `self` until aborted.
    async fn follow(self: Arc<Self>, mut events: async_nats::Subscriber) {
        while let Some(message) = events.next().await {
            let Some(event) = decode(&message) else {
                continue;
            };
            if let Some(confirmed) = settles(&event) {
                let position = event.position();
                self.arrived(
                    event.aggregate_id,
                    Settled {
                        confirmed,
                        position,
                    },
                );
            }
        }
    }
}

/// Keep-alive connections to the API, shared by the purchases in flight: one is
/// opened whenever none is idle, so a slow answer never holds up the next request.
#[derive(Clone)]
struct Connections {
    addr: SocketAddr,
    idle: Arc<Mutex<Vec<KeepAliveConnection>>>,
}

impl Connections {
    async fn open(addr: SocketAddr, count: usize) -> anyhow::Result<Self> {
        let mut idle = Vec::with_capacity(count);
        for _ in 0..count {
            idle.push(KeepAliveConnection::open(addr).await?);
        }
        Ok(Self {
            addr,
            idle: Arc::new(Mutex::new(idle)),
        })
    }

    async fn take(&self) -> anyhow::Result<KeepAliveConnection> {
        let idle = self.idle.lock().expect("not poisoned").pop();
        match idle {
            Some(connection) => Ok(connection),
            None => KeepAliveConnection::open(self.addr).await,
        }
    }

    fn give_back(&self, connection: KeepAliveConnection) {
        self.idle.lock().expect("not poisoned").push(connection);
    }

    /// `GET <location>` with `Orders-Min-Position`: fails unless it is a fresh 200;
    /// answers the purchase's status.
    async fn read_fresh(
        &self,
        location: &str,
        token: &str,
        position: LogPosition,
    ) -> anyhow::Result<String> {
        let request = format!(
            "GET {location} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {token}\r\n\
             Orders-Min-Position: {position}\r\n\r\n",
            self.addr
        );
        let mut connection = self.take().await?;
        let status = connection.exchange(request.as_bytes()).await?;
        anyhow::ensure!(status == 200, "GET {location} answered {status}");
        anyhow::ensure!(!connection.stale, "GET {location} answered stale after 2 s");
        let body: serde_json::Value = serde_json::from_slice(&connection.body)?;
        self.give_back(connection);
        body["status"]
            .as_str()
            .map(str::to_owned)
            .context("a purchase without a status")
    }
}

/// What one purchase of the open loop measured, in milliseconds from its 201.
struct Trip {
    sent: Instant,
    placement_visible: f64,
    /// `None` with the workers stopped.
    settled_visible: Option<f64>,
}

/// One purchase: placed, then read back at the 201's position and, with the saga
/// running, at its `PurchaseConfirmed`'s position, the two reads at once.
async fn one_purchase(
    connections: Connections,
    settlements: Option<Arc<Settlements>>,
    token: Arc<str>,
    product: ProductId,
) -> anyhow::Result<Trip> {
    let sent = Instant::now();
    let mut connection = connections.take().await?;
    let status = connection
        .exchange(&purchase_request(connections.addr, &token, product))
        .await?;
    anyhow::ensure!(
        status == 201,
        "POST /purchases answered {status}: {}",
        String::from_utf8_lossy(&connection.body)
    );
    let answered = Instant::now();
    let location = connection
        .location
        .take()
        .context("a 201 without Location")?;
    let position: LogPosition = connection
        .position
        .as_deref()
        .context("a 201 without Orders-Position")?
        .parse()?;
    connections.give_back(connection);
    let purchase_id = location.rsplit('/').next().unwrap_or_default().to_owned();
    let settled = settlements.map(|settlements| settlements.wait(&purchase_id));
    let placement_read = async {
        connections.read_fresh(&location, &token, position).await?;
        anyhow::Ok(answered.elapsed().as_secs_f64() * 1_000.0)
    };
    let settled_read = async {
        let Some(settled) = settled else {
            return Ok(None);
        };
        let settled = tokio::time::timeout(SETTLE_PATIENCE, settled)
            .await
            .with_context(|| format!("purchase {purchase_id} did not settle"))??;
        anyhow::ensure!(settled.confirmed, "purchase {purchase_id} was rejected");
        let status = connections
            .read_fresh(&location, &token, settled.position)
            .await?;
        anyhow::ensure!(status == "confirmed", "purchase {purchase_id} is {status}");
        Ok(Some(answered.elapsed().as_secs_f64() * 1_000.0))
    };
    let (placement_visible, settled_visible) = tokio::try_join!(placement_read, settled_read)?;
    Ok(Trip {
        sent,
        placement_visible,
        settled_visible,
    })
}

/// The measurements of one phase of the open loop.
#[derive(Default)]
struct Phase {
    sent_in_window: usize,
    placement_visible: Vec<f64>,
    settled_visible: Vec<f64>,
}

/// What the open loop sends: whose purchase of which product, in turn.
struct Load {
    connections: Connections,
    tokens: Vec<Arc<str>>,
    products: Vec<ProductId>,
    rate: u32,
    warmup: Duration,
    measured: Duration,
}

/// Sends a purchase every 1/rate s for the warm-up and the measured time (a late
/// tick is caught up at once: the load does not slow down with the answers), waits
/// for every one, and keeps those sent in the measured window.
async fn open_loop(
    load: &Load,
    settlements: Option<Arc<Settlements>>,
    first: usize,
) -> anyhow::Result<Phase> {
    let mut ticks = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(load.rate)));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let measure_from = Instant::now() + load.warmup;
    let until = measure_from + load.measured;
    let mut trips = JoinSet::new();
    let mut index = first;
    while Instant::now() < until {
        ticks.tick().await;
        trips.spawn(one_purchase(
            load.connections.clone(),
            settlements.clone(),
            load.tokens[index % load.tokens.len()].clone(),
            load.products[index % load.products.len()],
        ));
        index += 1;
    }
    let mut phase = Phase::default();
    while let Some(trip) = trips.join_next().await {
        let trip = trip??;
        if trip.sent >= measure_from && trip.sent < until {
            phase.sent_in_window += 1;
            phase.placement_visible.push(trip.placement_visible);
            phase.settled_visible.extend(trip.settled_visible);
        }
    }
    Ok(phase)
}

pub(crate) async fn purchases(args: PurchasesBenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.rate > 0 && args.products > 0 && args.buyers > 0,
        "--rate, --products and --buyers must be positive"
    );
    let database = BenchDatabase::create(args.database.database_url.as_deref()).await?;
    let outcome = run_purchases(&args, &database.url).await;
    database.finish(args.keep_database).await?;
    let (with_saga, saga_stopped) = outcome?;
    println!();
    println!(
        "POST /purchases at {} /s asked (open loop), {:.0} /s sent, {} s measured, over {} \
         products and {} buyers; relay, projectors and workers (saga concurrency {}) running:",
        args.rate,
        with_saga.sent_in_window as f64 / args.seconds.max(1) as f64,
        args.seconds,
        args.products,
        args.buyers,
        args.saga_concurrency
    );
    println!(
        "{:<52} {:>7} {:>7} {:>7} {:>7} {:>8}",
        "", "p50 ms", "p90 ms", "p99 ms", "max ms", "samples"
    );
    for (name, samples) in [
        (
            "placed -> settled (201 -> fresh read, confirmed)",
            with_saga.settled_visible,
        ),
        (
            "  ceiling: placement visible (201 -> fresh read)",
            with_saga.placement_visible,
        ),
        (
            "  ceiling, workers stopped: placement visible",
            saga_stopped.placement_visible,
        ),
    ] {
        let samples = sorted(samples);
        println!(
            "{name:<52} {:>7.2} {:>7.2} {:>7.2} {:>7.2} {:>8}",
            percentile(&samples, 0.5),
            percentile(&samples, 0.9),
            percentile(&samples, 0.99),
            samples.last().copied().unwrap_or(f64::NAN),
            samples.len()
        );
    }
    println!("target: placed -> settled p99 < 100 ms");
    Ok(())
}

async fn run_purchases(args: &PurchasesBenchArgs, url: &str) -> anyhow::Result<(Phase, Phase)> {
    let mut shop = Shop::start(url, args.saga_concurrency.max(1)).await?;
    shop.open().await?;
    let tokens = shop.buyers(args.buyers).await?;
    // Each product gets every `products`-th purchase of the saga's phase: stock for
    // all of them, twice over.
    let per_product =
        (u64::from(args.rate) * (args.warmup_secs + args.seconds)).div_ceil(args.products as u64);
    eprintln!("storing {} products", args.products);
    let products = shop.products(args.products, 2 * per_product + 2).await?;
    shop.until_quiet().await?;
    let settlements = Arc::new(Settlements::default());
    let following = tokio::spawn(
        settlements
            .clone()
            .follow(shop.log.client.subscribe(PURCHASE_SUBJECTS).await?),
    );
    let load = Load {
        connections: Connections::open(shop.api()?.addr, 32).await?,
        tokens: tokens.into_iter().map(Arc::from).collect(),
        products,
        rate: args.rate,
        warmup: Duration::from_secs(args.warmup_secs),
        measured: Duration::from_secs(args.seconds),
    };
    eprintln!(
        "the workers running: {} s + {} s warm-up",
        args.seconds, args.warmup_secs
    );
    let with_saga = open_loop(&load, Some(settlements), 0).await?;
    following.abort();
    eprintln!("waiting for the workers to finish (the mails)");
    shop.until_quiet().await?;
    shop.stop_workers().await?;
    eprintln!(
        "the workers stopped: {} s + {} s warm-up",
        args.seconds, args.warmup_secs
    );
    let saga_stopped = open_loop(&load, None, 0).await?;
    shop.stop().await?;
    Ok((with_saga, saga_stopped))
}
