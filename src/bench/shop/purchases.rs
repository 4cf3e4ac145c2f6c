//! `orders bench purchases`: `POST /purchases` at a fixed rate (open loop: each
//! is sent at its time, whatever the earlier ones are doing) spread over many
//! products with stock for all. Placed → settled per purchase: from the 201 to
//! the moment the `purchases` view has applied the purchase's `PurchaseConfirmed`
//! (its position taken from the event as it reaches a subscriber of the log; the
//! view's checkpoint, written in the same transaction as its rows, read every
//! 2 ms by one task); the buyer's `GET /purchases/{id}` with that
//! `Orders-Min-Position` must then answer `confirmed`, not stale. Ceiling: the
//! placement's own read-your-writes (the 201's position reached by the view), at
//! the same moments, and again with the workers stopped. Target: p99 < 100 ms.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Args;
use futures::StreamExt as _;
use orders_domain::ids::ProductId;
use orders_nats::LogPosition;
use orders_projectors::{checkpoint, Generation, View};
use sqlx::PgPool;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinSet;

use super::{decode, purchase_request, settles, Shop, PURCHASE_SUBJECTS, SETTLE_PATIENCE};
use crate::bench::setup::{percentile, sorted, BenchDatabase, KeepAliveConnection};

/// How often the `purchases` view's checkpoint is read.
const CHECKPOINT_POLL: Duration = Duration::from_millis(2);

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

/// The `purchases` view's applied position (its live checkpoint, written in the
/// transaction that writes its rows), read every [`CHECKPOINT_POLL`] by one task.
/// One reader for all purchases, not a read per waiting purchase: `Orders-Min-
/// Position` polls the checkpoint every 5 ms per waiting request, which loads
/// PostgreSQL the more the further the view falls behind, and so measured itself.
#[derive(Clone)]
struct ViewPosition {
    applied: watch::Receiver<LogPosition>,
}

impl ViewPosition {
    /// Starts the reader; it ends with the returned task.
    fn follow(pool: PgPool) -> (Self, tokio::task::JoinHandle<()>) {
        let (publish, applied) = watch::channel(LogPosition::default());
        let reading = tokio::spawn(async move {
            let mut every = tokio::time::interval(CHECKPOINT_POLL);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                every.tick().await;
                match checkpoint::read(&pool, View::Purchases, Generation::Live).await {
                    Ok(Some(checkpoint)) => {
                        publish.send_if_modified(|applied| {
                            let moved = checkpoint.position > *applied;
                            *applied = checkpoint.position.max(*applied);
                            moved
                        });
                    }
                    Ok(None) => {}
                    Err(error) => tracing::warn!(%error, "reading the purchases view's checkpoint"),
                }
            }
        });
        (Self { applied }, reading)
    }

    /// Waits until the view has applied `position`; answers when it was seen.
    async fn reached(&self, position: LogPosition) -> anyhow::Result<Instant> {
        let mut applied = self.applied.clone();
        tokio::time::timeout(SETTLE_PATIENCE, applied.wait_for(|at| *at >= position))
            .await
            .with_context(|| format!("the purchases view did not reach {position}"))?
            .context("the checkpoint reader ended")?;
        Ok(Instant::now())
    }
}

/// What one purchase of the open loop measured, in milliseconds from its 201.
struct Trip {
    sent: Instant,
    placement_visible: f64,
    /// `None` with the workers stopped.
    settled_visible: Option<f64>,
}

/// What every purchase of the open loop shares.
#[derive(Clone)]
struct Probe {
    connections: Connections,
    view: ViewPosition,
    /// The settling events as they reach the log; `None` with the workers stopped.
    settlements: Option<Arc<Settlements>>,
}

/// One purchase: placed, then when the `purchases` view shows the placement and,
/// with the workers running, its `PurchaseConfirmed`, which the buyer's read with
/// `Orders-Min-Position` must then answer at once (not timed).
async fn one_purchase(probe: Probe, token: Arc<str>, product: ProductId) -> anyhow::Result<Trip> {
    let sent = Instant::now();
    let connections = &probe.connections;
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
    let settled = probe
        .settlements
        .map(|settlements| settlements.wait(&purchase_id));
    let since_answer = |at: Instant| (at - answered).as_secs_f64() * 1_000.0;
    let placement_visible = async { anyhow::Ok(since_answer(probe.view.reached(position).await?)) };
    let settled_visible = async {
        let Some(settled) = settled else {
            return Ok(None);
        };
        let settled = tokio::time::timeout(SETTLE_PATIENCE, settled)
            .await
            .with_context(|| format!("purchase {purchase_id} did not settle"))??;
        anyhow::ensure!(settled.confirmed, "purchase {purchase_id} was rejected");
        let visible = probe.view.reached(settled.position).await?;
        let status = connections
            .read_fresh(&location, &token, settled.position)
            .await?;
        anyhow::ensure!(status == "confirmed", "purchase {purchase_id} is {status}");
        Ok(Some(since_answer(visible)))
    };
    let (placement_visible, settled_visible) =
        tokio::try_join!(placement_visible, settled_visible)?;
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
    tokens: Vec<Arc<str>>,
    products: Vec<ProductId>,
    rate: u32,
    warmup: Duration,
    measured: Duration,
}

/// Sends a purchase every 1/rate s for the warm-up and the measured time (a late
/// tick is caught up at once: the load does not slow down with the answers), waits
/// for every one, and keeps those sent in the measured window.
async fn open_loop(load: &Load, probe: Probe) -> anyhow::Result<Phase> {
    let mut ticks = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(load.rate)));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let measure_from = Instant::now() + load.warmup;
    let until = measure_from + load.measured;
    let mut trips = JoinSet::new();
    let mut index = 0;
    while Instant::now() < until {
        ticks.tick().await;
        trips.spawn(one_purchase(
            probe.clone(),
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
            "placed -> settled (201 -> view has PurchaseConfirmed)",
            with_saga.settled_visible,
        ),
        (
            "  ceiling: placement visible (201 -> view has it)",
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
    let (view, reading) = ViewPosition::follow(shop.pool.clone());
    let mut probe = Probe {
        connections: Connections::open(shop.api()?.addr, 32).await?,
        view,
        settlements: Some(settlements),
    };
    let load = Load {
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
    let with_saga = open_loop(&load, probe.clone()).await?;
    following.abort();
    eprintln!("waiting for the workers to finish (the mails)");
    shop.until_quiet().await?;
    shop.stop_workers().await?;
    eprintln!(
        "the workers stopped: {} s + {} s warm-up",
        args.seconds, args.warmup_secs
    );
    probe.settlements = None;
    let saga_stopped = open_loop(&load, probe).await?;
    reading.abort();
    shop.stop().await?;
    Ok((with_saga, saga_stopped))
}
