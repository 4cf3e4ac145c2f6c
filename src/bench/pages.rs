//! `orders bench pages`: the console's pages with 10,000 orders in the views. The
//! orders and their price history are written through the command side (placements,
//! and for a share of the orders checks requested, read and recorded as the
//! scheduler, scraper and policy do) and brought into the views by the relay and the
//! projectors. Then N keep-alive clients ask for one page after another, each
//! alternating the page and `GET /healthz` (which only answers: the floor of the same
//! run, on the same connections, under the same load). Reported per page: p50/p99
//! time to the full body beside the floor's, requests/s, and PASS/FAIL against the
//! brief's target (p99 < 20 ms). Every answer must be a 200 with the page's markers
//! in it, so an error page is never what was measured. The clients run in this
//! process beside the API, as in the other HTTP benchmarks, on the machine that also
//! runs PostgreSQL and nats-server: with more clients than cores, both the pages'
//! and the floor's times include waiting for a core.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Args;
use futures::{StreamExt as _, TryStreamExt as _};
use orders_application::accounts::{change_role, RoleChange};
use orders_application::orders::{place_order, OrderSource, PlaceOrder, Placed};
use orders_application::price_checks::{
    load_order, record_observation_on_order, record_result, request_check, CheckRequested,
};
use orders_domain::ids::{OrderId, UserId};
use orders_domain::money::{Currency, Money};
use orders_domain::order::{Availability, ProductUrl, MAX_ACTIVE_ORDERS_PER_USER};
use orders_domain::price_check::{
    CheckTrigger, FetchFacts, PagePrice, PageReading, PriceCheckCommand, PriceCheckEvent,
};
use orders_domain::user::Role;
use orders_store::event_store::{CommandMetadata, EventStore};
use sqlx::PgPool;

use super::setup::{
    bench_user_id, create_first_bench_users, percentile, sorted, BenchApi, BenchDatabase, BenchLog,
    KeepAliveConnection, BENCH_USERS,
};

/// Whose session asks for a page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Viewer {
    /// The shopper with the most orders.
    Shopper,
    /// An administrator (no orders of their own).
    Admin,
}

/// One page measured: its path (`{order}`: the shopper's order with a price
/// history), who asks, and what its answer must contain (`{prices}`: the prices
/// observed on that order).
struct Page {
    path: &'static str,
    viewer: Viewer,
    markers: &'static [&'static str],
}

/// The pages measured (`command-api/src/console/`'s routes), one entry each.
const PAGES: &[Page] = &[
    // The shopper's list, the first of several pages.
    Page {
        path: "/app/",
        viewer: Viewer::Shopper,
        markers: &[r#"rel="next">More orders</a>"#],
    },
    // An order with its price history, the chart drawn.
    Page {
        path: "/app/orders/{order}",
        viewer: Viewer::Shopper,
        markers: &[r#"<svg class="chart""#, "Every price seen ({prices})"],
    },
    // Totals, the last 14 days, the relay's and the views' lag, dead letters.
    Page {
        path: "/app/admin/",
        viewer: Viewer::Admin,
        markers: &["<h1>Dashboard</h1>", "Behind (events)", "No dead letters"],
    },
    Page {
        path: "/app/admin/orders",
        viewer: Viewer::Admin,
        markers: &[
            "<h1>All tracking orders</h1>",
            r#"rel="next">More orders</a>"#,
        ],
    },
    Page {
        path: "/app/admin/users",
        viewer: Viewer::Admin,
        markers: &["<h1>Users</h1>", r#"rel="next">More users</a>"#],
    },
    // The event log viewer, newest first.
    Page {
        path: "/app/admin/events",
        viewer: Viewer::Admin,
        markers: &["<h1>Event log</h1>", r#"rel="next">Older events</a>"#],
    },
    Page {
        path: "/app/admin/dead-letters",
        viewer: Viewer::Admin,
        markers: &[
            "<h1>Dead letters</h1>",
            "None: the workers gave up on nothing.",
        ],
    },
];

/// The brief's target for each page's p99.
const TARGET_P99_MS: f64 = 20.0;

/// Owners of the orders that are not the shopper's, in turn (about 10 each at the
/// default size), when there are that many users.
const OTHER_OWNERS: i64 = 1_000;

/// Commands in flight while the fixture is written.
const WRITERS: usize = 16;

#[derive(Debug, Args)]
pub(crate) struct PagesBenchArgs {
    #[command(flatten)]
    database: orders::cli_args::DatabaseArgs,
    /// Tracking orders in the views (the shopper's among them).
    #[arg(long, default_value_t = 10_000)]
    orders: u32,
    /// The shopper's orders (at most the active orders a user may have, 100, and at
    /// most `--orders`): the list shows 20 a page.
    #[arg(long, default_value_t = MAX_ACTIVE_ORDERS_PER_USER)]
    shopper_orders: u32,
    /// Registered users (the shopper, the administrator, the other orders' owners
    /// and users with no orders).
    #[arg(long, default_value_t = BENCH_USERS)]
    users: i64,
    /// One order in this many gets a price history (the shopper's first among them).
    #[arg(long, default_value_t = 10)]
    history_every: u32,
    /// Prices observed on each order that gets a history: the points of its chart.
    #[arg(long, default_value_t = 30)]
    prices: u32,
    /// Concurrent keep-alive clients, one measurement of each page each: with one,
    /// a page's time is the server's; with more clients than cores it includes
    /// waiting for a core behind the other requests, PostgreSQL and nats-server.
    #[arg(long, value_delimiter = ',', default_values_t = vec![1, 8])]
    clients: Vec<u32>,
    /// Only these pages (their paths as the report prints them); all by default.
    #[arg(long)]
    page: Vec<String>,
    /// Measured seconds per page (after the warm-up).
    #[arg(long, default_value_t = 10)]
    duration_secs: u64,
    #[arg(long, default_value_t = 2)]
    warmup_secs: u64,
    /// Keep the benchmark database afterwards.
    #[arg(long)]
    keep_database: bool,
}

impl PagesBenchArgs {
    fn shopper_orders(&self) -> u32 {
        self.shopper_orders.min(self.orders)
    }

    /// How many users own the orders that are not the shopper's.
    fn other_owners(&self) -> i64 {
        (self.users - 2).min(OTHER_OWNERS)
    }

    /// The arguments' limits, checked before anything starts.
    fn check(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.shopper_orders >= 1 && self.shopper_orders <= MAX_ACTIVE_ORDERS_PER_USER,
            "--shopper-orders is 1 to {MAX_ACTIVE_ORDERS_PER_USER}"
        );
        anyhow::ensure!(
            (3..=BENCH_USERS).contains(&self.users),
            "--users is 3 to {BENCH_USERS}"
        );
        let most_orders = self.other_owners() * i64::from(MAX_ACTIVE_ORDERS_PER_USER);
        anyhow::ensure!(
            i64::from(self.orders - self.shopper_orders()) <= most_orders,
            "--orders is at most {most_orders} more than --shopper-orders with {} users",
            self.users
        );
        anyhow::ensure!(
            self.history_every >= 1 && self.prices >= 2,
            "--history-every ≥ 1, --prices ≥ 2"
        );
        anyhow::ensure!(
            !self.clients.is_empty() && !self.clients.contains(&0),
            "--clients: at least one each run"
        );
        for path in &self.page {
            anyhow::ensure!(
                PAGES.iter().any(|page| page.path == path),
                "no page {path:?}: {}",
                PAGES
                    .iter()
                    .map(|page| page.path)
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        Ok(())
    }
}

pub(crate) async fn pages(args: PagesBenchArgs) -> anyhow::Result<()> {
    args.check()?;
    let database = BenchDatabase::create(args.database.database_url.as_deref()).await?;
    let outcome = run_pages(&args, &database.url).await;
    database.finish(args.keep_database).await?;
    outcome
}

async fn run_pages(args: &PagesBenchArgs, url: &str) -> anyhow::Result<()> {
    let setup_started = Instant::now();
    let pool = orders_store::database::connect(url, 24).await?;
    orders_store::database::migrate(&pool).await?;
    create_first_bench_users(&pool, args.users).await?;
    let log = BenchLog::start(url, true).await?;
    let api = BenchApi::start(&pool, Some(&log)).await?;

    let fixture = write_fixture(&api, &pool, &log, args).await?;
    let setup_secs = setup_started.elapsed().as_secs_f64();

    println!(
        "console pages: {} orders in the views ({} of them the shopper's; {} with {} prices each), \
         {} users; {} keep-alive clients, {} s per page after {} s of warm-up, \
         each client alternating the page and GET /healthz (the floor)",
        args.orders,
        args.shopper_orders(),
        fixture.orders_with_history,
        args.prices,
        args.users,
        args.clients
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(" or "),
        args.duration_secs,
        args.warmup_secs
    );
    println!(
        "setup: {setup_secs:.1} s for {} events; of it {:.1} s placing the orders and recording \
         their prices through the commands (the projectors following), then {:.1} s until the \
         views had applied the whole log",
        fixture.events, fixture.writing_secs, fixture.catching_up_secs
    );
    print_header();
    let sessions = Sessions {
        shopper: orders_command_api::console::session::start(&pool, shopper_id()).await?,
        admin: orders_command_api::console::session::start(&pool, admin_id()).await?,
    };
    let outcome = measure_pages(api.addr, &sessions, &fixture, args).await;
    println!(
        "target: console pages p99 server time < {TARGET_P99_MS} ms with 10,000 orders in the views \
         (one client: the server's time; more clients than cores: also the wait for a core)"
    );
    api.stop().await?;
    log.stop().await;
    pool.close().await;
    outcome
}

/// The cookies' tokens of the two sessions that ask for the pages.
struct Sessions {
    shopper: String,
    admin: String,
}

/// Each page selected, at each number of clients, one after the other; the first
/// page that fails ends the run.
async fn measure_pages(
    addr: SocketAddr,
    sessions: &Sessions,
    fixture: &Fixture,
    args: &PagesBenchArgs,
) -> anyhow::Result<()> {
    let selected = PAGES
        .iter()
        .filter(|page| args.page.is_empty() || args.page.iter().any(|path| path == page.path));
    for page in selected {
        let path = page
            .path
            .replace("{order}", &fixture.shopper_order_with_history.to_string());
        let token = match page.viewer {
            Viewer::Shopper => &sessions.shopper,
            Viewer::Admin => &sessions.admin,
        };
        let markers: Vec<String> = page
            .markers
            .iter()
            .map(|marker| marker.replace("{prices}", &args.prices.to_string()))
            .collect();
        for &clients in &args.clients {
            let figures = measure_page(addr, &path, token, &markers, clients, args)
                .await
                .with_context(|| format!("measuring {path}"))?;
            print_row(page, clients, &figures);
        }
    }
    Ok(())
}

fn shopper_id() -> UserId {
    bench_user_id(1)
}

fn admin_id() -> UserId {
    bench_user_id(2)
}

/// The owner of the `index`th order placed: the shopper's first, then the others'
/// in turn.
fn owner_of(index: u32, args: &PagesBenchArgs) -> UserId {
    match index.checked_sub(args.shopper_orders()) {
        None => shopper_id(),
        Some(other) => bench_user_id(3 + i64::from(other) % args.other_owners()),
    }
}

struct Fixture {
    shopper_order_with_history: OrderId,
    orders_with_history: usize,
    events: i64,
    writing_secs: f64,
    catching_up_secs: f64,
}

/// The orders, their histories and the administrator's role, through the command
/// side; then waits for the views to apply the whole log.
async fn write_fixture(
    api: &BenchApi,
    pool: &PgPool,
    log: &BenchLog,
    args: &PagesBenchArgs,
) -> anyhow::Result<Fixture> {
    let started = Instant::now();
    change_role(
        &api.state.events,
        admin_id(),
        RoleChange::Grant(Role::Admin),
        &CommandMetadata::new_job("cli:bench"),
    )
    .await
    .context("granting the administrator's role")?;
    eprintln!("placing {} orders", args.orders);
    let orders = place_orders(api, args).await?;
    let with_history: Vec<OrderId> = orders
        .iter()
        .step_by(args.history_every as usize)
        .copied()
        .collect();
    eprintln!(
        "recording {} prices on each of {} orders",
        args.prices,
        with_history.len()
    );
    futures::stream::iter(with_history.iter().copied())
        .map(|order_id| record_history(&api.state.events, order_id, args.prices))
        .buffer_unordered(WRITERS)
        .try_collect::<()>()
        .await?;
    let writing_secs = started.elapsed().as_secs_f64();

    eprintln!("waiting for the relay and the projectors");
    let started = Instant::now();
    log.wait_until_caught_up(pool).await?;
    let catching_up_secs = started.elapsed().as_secs_f64();
    // The planner's statistics of the freshly filled views, as autovacuum would
    // have gathered them by the time a real system held this many orders.
    sqlx::query("ANALYZE").execute(pool).await?;
    let events: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(pool)
        .await?;
    Ok(Fixture {
        shopper_order_with_history: orders[0],
        orders_with_history: with_history.len(),
        events,
        writing_secs,
        catching_up_secs,
    })
}

/// Places the orders, `WRITERS` at a time; answers their ids in placement order.
async fn place_orders(api: &BenchApi, args: &PagesBenchArgs) -> anyhow::Result<Vec<OrderId>> {
    let target = Money::parse("3199.00", Currency::UAH)?;
    futures::stream::iter(0..args.orders)
        .map(|index| async move {
            let owner = owner_of(index, args);
            let order = PlaceOrder {
                owner,
                source: OrderSource::Page(ProductUrl::parse(&format!(
                    "https://shop.example.com/product/{index}"
                ))?),
                target,
                check_interval_secs: 3600,
                selector: None,
                credentials_version: None,
            };
            let metadata = CommandMetadata::new_job(format!("user:{owner}"));
            match place_order(
                &api.state.events,
                &api.state.placement_facts,
                order,
                &metadata,
            )
            .await
            .context("placing an order")?
            {
                Placed::Created { order_id, .. } | Placed::Replayed { order_id, .. } => {
                    Ok(order_id)
                }
            }
        })
        .buffered(WRITERS)
        .try_collect()
        .await
}

/// `prices` checks of one order, one after the other, each through the commands the
/// scheduler, the scraper and the policy issue; the price moves around the target
/// (3,199.00), so the order also alerts and re-arms.
async fn record_history(events: &EventStore, order_id: OrderId, prices: u32) -> anyhow::Result<()> {
    for point in 0..prices {
        let price = Money::parse(
            &format!("{}.{:02}", 2_900 + (point * 37) % 600, point % 100),
            Currency::UAH,
        )?;
        record_price(events, order_id, price).await?;
    }
    Ok(())
}

async fn record_price(events: &EventStore, order_id: OrderId, price: Money) -> anyhow::Result<()> {
    let order = load_order(events, order_id)
        .await
        .context("loading an order for its check")?;
    let requested = request_check(
        events,
        &order,
        CheckTrigger::Scheduled,
        &CommandMetadata::new_job("system:scheduler"),
    )
    .await
    .context("requesting a check")?;
    let CheckRequested::Requested { check_id, .. } = requested else {
        anyhow::bail!("order {order_id} already had a check in flight");
    };
    let title = Some(format!("Kettle {}", &order_id.to_string()[30..]));
    let reading = PageReading {
        price: Some(PagePrice {
            amount: price.amount(),
            currency: None,
        }),
        availability: Availability::InStock,
        title: title.clone(),
        extractor: Some("json-ld".to_owned()),
    };
    let scraper = CommandMetadata::new_job("system:scraper");
    let command = PriceCheckCommand::RecordReading {
        reading,
        fetch: FetchFacts::default(),
    };
    record_result(events, &check_id.to_string(), command, &scraper)
        .await
        .context("recording a check's reading")?;
    // What the check just stored, as the policy reads it from the log.
    let observed = PriceCheckEvent::PriceObserved {
        order_id,
        price: Some(price),
        availability: Availability::InStock,
        title,
        extractor: Some("json-ld".to_owned()),
        fetch: FetchFacts::default(),
    };
    let policy = CommandMetadata::new_job("system:policy");
    record_observation_on_order(events, check_id, &observed, &policy)
        .await
        .context("recording an observation on its order")?;
    Ok(())
}

/// One page's measurements, in milliseconds, over the measured window.
#[derive(Default)]
struct PageFigures {
    page: Vec<f64>,
    healthz: Vec<f64>,
    page_bytes: usize,
    seconds: f64,
}

/// Runs the clients on one page for the warm-up and the measured window.
async fn measure_page(
    addr: SocketAddr,
    path: &str,
    session_token: &str,
    markers: &[String],
    clients: u32,
    args: &PagesBenchArgs,
) -> anyhow::Result<PageFigures> {
    let request: Arc<[u8]> = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nCookie: {}={session_token}\r\n\r\n",
        orders_command_api::console::session::SESSION_COOKIE
    )
    .into_bytes()
    .into();
    let window_start = Instant::now() + Duration::from_secs(args.warmup_secs);
    let until = window_start + Duration::from_secs(args.duration_secs);
    let markers: Arc<[String]> = markers.into();
    let mut running = tokio::task::JoinSet::new();
    for _ in 0..clients {
        let page = PageRequest {
            addr,
            request: request.clone(),
            markers: markers.clone(),
        };
        running.spawn(page.drive(window_start, until));
    }
    let mut figures = PageFigures {
        seconds: args.duration_secs as f64,
        ..PageFigures::default()
    };
    while let Some(client) = running.join_next().await {
        let client = client.context("a client panicked")??;
        figures.page.extend(client.page);
        figures.healthz.extend(client.healthz);
        figures.page_bytes = figures.page_bytes.max(client.page_bytes);
    }
    figures.page = sorted(figures.page);
    figures.healthz = sorted(figures.healthz);
    Ok(figures)
}

/// What one client asks for, and what a good answer contains.
struct PageRequest {
    addr: SocketAddr,
    request: Arc<[u8]>,
    markers: Arc<[String]>,
}

impl PageRequest {
    /// One client: the page, then `GET /healthz`, again and again until `until`;
    /// the times of those that started in the window kept.
    async fn drive(self, window_start: Instant, until: Instant) -> anyhow::Result<PageFigures> {
        let healthz_request =
            format!("GET /healthz HTTP/1.1\r\nHost: {}\r\n\r\n", self.addr).into_bytes();
        let mut connection = KeepAliveConnection::open(self.addr).await?;
        let mut figures = PageFigures::default();
        loop {
            let started = Instant::now();
            if started >= until {
                return Ok(figures);
            }
            let status = connection.exchange(&self.request).await?;
            let page_ms = started.elapsed().as_secs_f64() * 1_000.0;
            self.check(status, &connection.body)?;
            figures.page_bytes = connection.body.len();

            let healthz_started = Instant::now();
            let status = connection.exchange(&healthz_request).await?;
            let healthz_ms = healthz_started.elapsed().as_secs_f64() * 1_000.0;
            anyhow::ensure!(
                status == 200 && connection.body == b"ok",
                "GET /healthz answered {status}"
            );
            if started >= window_start {
                figures.page.push(page_ms);
                figures.healthz.push(healthz_ms);
            }
        }
    }

    /// A 200 with every marker: the page itself, not an error page.
    fn check(&self, status: u16, body: &[u8]) -> anyhow::Result<()> {
        let body = String::from_utf8_lossy(body);
        let missing = self
            .markers
            .iter()
            .find(|marker| !body.contains(marker.as_str()));
        anyhow::ensure!(
            status == 200 && missing.is_none(),
            "the page answered {status}{}:\n{}",
            missing.map_or_else(String::new, |marker| format!(" without {marker:?}")),
            body.chars().take(3_000).collect::<String>()
        );
        Ok(())
    }
}

fn print_header() {
    println!(
        "{:<38} {:>7} {:>7} {:>7} {:>7} {:>8} {:>6} | {:>11} {:>11} | {:>6}",
        "page (time to full body)",
        "clients",
        "p50 ms",
        "p99 ms",
        "req/s",
        "requests",
        "KiB",
        "healthz p50",
        "healthz p99",
        "p99<20"
    );
}

fn print_row(page: &Page, clients: u32, figures: &PageFigures) {
    let p99 = percentile(&figures.page, 0.99);
    let label = format!(
        "{} ({})",
        page.path,
        match page.viewer {
            Viewer::Shopper => "shopper",
            Viewer::Admin => "admin",
        }
    );
    println!(
        "{label:<38} {clients:>7} {:>7.2} {:>7.2} {:>7.0} {:>8} {:>6.1} | {:>11.2} {:>11.2} | {:>6}",
        percentile(&figures.page, 0.5),
        p99,
        figures.page.len() as f64 / figures.seconds.max(f64::MIN_POSITIVE),
        figures.page.len(),
        figures.page_bytes as f64 / 1024.0,
        percentile(&figures.healthz, 0.5),
        percentile(&figures.healthz, 0.99),
        if p99 < TARGET_P99_MS { "PASS" } else { "FAIL" }
    );
}
