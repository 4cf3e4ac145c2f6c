//! What every benchmark stands on: a fresh database of its own with the benchmark
//! users, the key it seals under, a minimal keep-alive HTTP client for `POST
//! /orders`, a log (nats-server, relay, projectors) of its own, a stored log to
//! relay, and the statistics the reports print. The benchmarks import this module
//! and nothing of one another.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context as _;
use async_nats::jetstream::{self};
use futures::StreamExt as _;
use orders_command_api::{ApiConfig, AppState};
use orders_domain::email::EmailAddress;
use orders_domain::ids::{OrderId, UserId};
use orders_domain::money::{Currency, Money};
use orders_domain::order::{OrderEvent, ProductUrl};
use orders_domain::user::UserEvent;
use orders_nats::{ensure_topology, LEADER_BUCKET, LEADER_LEASE};
use orders_relay::{listen_for_wake_ups, Relay};
use orders_store::event_store::RelayWaker;
use orders_store::Secret;
use orders_test_support::nats_server::NatsServer;
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions as _, PgPool};
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Users created up front; enough for millions of orders.
pub(crate) const BENCH_USERS: i64 = 50_000;

/// The key a benchmark run seals under: random, one per process, shared by the
/// API and workers the run starts (as `ORDERS_AUDIT_KEY`, see
/// [`bench_audit_key_text`]) and by the event stores it opens itself.
pub(crate) fn bench_audit_key_text() -> &'static str {
    static KEY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    KEY.get_or_init(|| format!("{}{}", Uuid::new_v4().simple(), Uuid::new_v4().simple()))
}

pub(crate) fn bench_audit_key() -> orders_store::seal::AuditKey {
    orders_store::seal::AuditKey::new(bench_audit_key_text().as_bytes())
}

pub(crate) fn bench_user_id(index: i64) -> UserId {
    let uuid = Uuid::parse_str(&format!("00000000-0000-7000-8000-{index:012x}"))
        .expect("a well-formed UUID");
    UserId::from_uuid(uuid)
}

/// A database created for one benchmark run, on the server of `ORDERS_DATABASE_URL`.
pub(crate) struct BenchDatabase {
    admin: sqlx::PgConnection,
    name: String,
    pub(crate) url: String,
}

impl BenchDatabase {
    pub(crate) async fn create(server_url: Option<&str>) -> anyhow::Result<Self> {
        let server_url = server_url
            .filter(|url| !url.is_empty())
            .context("ORDERS_DATABASE_URL is not set")?;
        let server: PgConnectOptions = server_url
            .parse()
            .context("ORDERS_DATABASE_URL is not a PostgreSQL URL")?;
        let name = format!("orders_bench_{}", Uuid::now_v7().simple());
        let mut admin = server
            .clone()
            .connect()
            .await
            .context("connecting to PostgreSQL")?;
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await
            .context("creating the benchmark database")?;
        // The same URL with the database swapped: libpq (pgbench) must read it too.
        let mut url = url::Url::parse(server_url).context("ORDERS_DATABASE_URL is not a URL")?;
        url.set_path(&name);
        Ok(Self {
            admin,
            name,
            url: url.to_string(),
        })
    }

    /// Drops the database, or says where it is when asked to keep it.
    pub(crate) async fn finish(mut self, keep: bool) -> anyhow::Result<()> {
        if keep {
            eprintln!("kept the benchmark database: {}", self.url);
            return Ok(());
        }
        sqlx::query(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        ))
        .execute(&mut self.admin)
        .await
        .context("dropping the benchmark database")?;
        Ok(())
    }
}

pub(crate) fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

pub(crate) fn tempdir() -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("orders-bench-{}", Uuid::now_v7().simple()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// Registers the benchmark users with one statement each 10,000 (a fixture, not the
/// thing measured): real `UserRegistered` payloads, as the domain serialises them,
/// and the placement guards the command side keeps beside them.
pub(crate) async fn create_bench_users(pool: &PgPool) -> anyhow::Result<()> {
    create_first_bench_users(pool, BENCH_USERS).await
}

/// The first `users` of the benchmark users (`bench_user_id(1..=users)`), as
/// [`create_bench_users`] registers them all.
pub(crate) async fn create_first_bench_users(pool: &PgPool, users: i64) -> anyhow::Result<()> {
    let template = serde_json::to_value(UserEvent::UserRegistered {
        user_id: bench_user_id(0),
        email: EmailAddress::parse("bench@example.com").expect("a valid address"),
    })?;
    for start in (1..=users).step_by(10_000) {
        let end = (start + 9_999).min(users);
        sqlx::query(&format!(
            "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
             SELECT 'user', id, 1, 'UserRegistered', '2.0',
                    jsonb_set(jsonb_set($1::jsonb, '{{UserRegistered,user_id}}', to_jsonb(id)),
                              '{{UserRegistered,email}}', to_jsonb('bench-' || i || '@example.com')),
                    jsonb_build_object('actor', 'cli:bench', 'correlation_id', gen_random_uuid()::text,
                                       'causation_id', gen_random_uuid()::text, 'request_id', gen_random_uuid()::text)
               FROM generate_series($2::bigint, $3::bigint) AS i,
                    LATERAL (SELECT {} AS id) AS ids",
            BENCH_USER_ID_SQL.replace(":u", "i")
        ))
        .bind(&template)
        .bind(start)
        .bind(end)
        .execute(pool)
        .await
        .context("creating the benchmark users")?;
    }
    // Their placement guards, as registration through the command side creates them.
    sqlx::query(&format!(
        "INSERT INTO placement_guards (user_id, active_orders, deactivated)
         SELECT {}, 0, false FROM generate_series(1, $1::bigint) AS i",
        BENCH_USER_ID_SQL.replace(":u", "i")
    ))
    .bind(users)
    .execute(pool)
    .await
    .context("creating the benchmark users' placement guards")?;
    sqlx::query("ANALYZE events").execute(pool).await?;
    sqlx::query("ANALYZE placement_guards")
        .execute(pool)
        .await?;
    Ok(())
}

pub(crate) const PLACE_ORDER_BODY: &str = r#"{"url": "https://shop.example.com/product/42", "target_price": "3199.00", "currency": "UAH", "check_interval_secs": 3600}"#;

pub(crate) fn place_order_request(addr: SocketAddr, token: &str) -> Vec<u8> {
    format!(
        "POST /orders HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{PLACE_ORDER_BODY}",
        PLACE_ORDER_BODY.len()
    )
    .into_bytes()
}

/// The load generator's side of one HTTP/1.1 keep-alive connection: writes a
/// prepared request, reads the status and the body it announces. Deliberately
/// minimal, like pgbench's client, so that the two cores go to the server under test
/// rather than to a general-purpose client.
pub(crate) struct KeepAliveConnection {
    stream: BufReader<TcpStream>,
    line: String,
    /// Of the last response: `Location`, `Orders-Position`, and whether it said
    /// `Orders-Stale`.
    pub(crate) location: Option<String>,
    pub(crate) position: Option<String>,
    pub(crate) stale: bool,
    /// The last response's body.
    pub(crate) body: Vec<u8>,
}

impl KeepAliveConnection {
    pub(crate) async fn open(addr: SocketAddr) -> anyhow::Result<Self> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Self {
            stream: BufReader::new(stream),
            line: String::new(),
            location: None,
            position: None,
            stale: false,
            body: Vec::new(),
        })
    }

    pub(crate) async fn exchange(&mut self, request: &[u8]) -> anyhow::Result<u16> {
        self.stream.get_mut().write_all(request).await?;
        self.line.clear();
        self.stream.read_line(&mut self.line).await?;
        let status: u16 = self
            .line
            .split_whitespace()
            .nth(1)
            .and_then(|code| code.parse().ok())
            .with_context(|| format!("not an HTTP status line: {:?}", self.line))?;
        let mut content_length = 0_usize;
        self.location = None;
        self.position = None;
        self.stale = false;
        loop {
            self.line.clear();
            if self.stream.read_line(&mut self.line).await? == 0 {
                anyhow::bail!("the server closed the connection");
            }
            let header = self.line.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                let value = value.trim();
                if name.eq_ignore_ascii_case("content-length") {
                    content_length = value.parse()?;
                } else if name.eq_ignore_ascii_case("location") {
                    self.location = Some(value.to_owned());
                } else if name.eq_ignore_ascii_case("orders-position") {
                    self.position = Some(value.to_owned());
                } else if name.eq_ignore_ascii_case("orders-stale") {
                    self.stale = true;
                }
            }
        }
        self.body.resize(content_length, 0);
        self.stream.read_exact(&mut self.body).await?;
        Ok(status)
    }
}

/// A nats-server of the benchmark's own, with the relay (woken by the API) and,
/// if asked, the projectors running on it.
pub(crate) struct BenchLog {
    _server: NatsServer,
    pub(crate) client: async_nats::Client,
    stop: CancellationToken,
    tasks: tokio::task::JoinSet<anyhow::Result<()>>,
}

impl BenchLog {
    /// The relay and the projectors get connections of their own, as in `serve all`.
    pub(crate) async fn start(database_url: &str, projectors: bool) -> anyhow::Result<Self> {
        let relay_pool = orders_store::database::connect(database_url, 2).await?;
        let projectors_pool = orders_store::database::connect(database_url, 5).await?;
        let server = NatsServer::start();
        let client = async_nats::connect(server.url()).await?;
        let jetstream = jetstream::new(client.clone());
        ensure_topology(&jetstream, 1).await?;
        let stop = CancellationToken::new();
        let mut tasks = tokio::task::JoinSet::new();
        let relay = Relay::new(relay_pool, jetstream.clone(), 1000)
            .with_wake_ups(listen_for_wake_ups(&client).await?);
        let relay_stop = stop.clone();
        tasks.spawn(async move { relay.run(Duration::from_millis(100), relay_stop).await });
        if projectors {
            let leaders = jetstream.get_key_value(LEADER_BUCKET).await?;
            tasks.spawn(orders_projectors::run(
                projectors_pool,
                jetstream.clone(),
                leaders,
                "bench".to_owned(),
                LEADER_LEASE,
                stop.clone(),
            ));
        }
        Ok(Self {
            _server: server,
            client,
            stop,
            tasks,
        })
    }

    /// Waits until the stream holds every stored event and every view has applied it.
    pub(crate) async fn wait_until_caught_up(&self, pool: &PgPool) -> anyhow::Result<()> {
        let jetstream = jetstream::new(self.client.clone());
        loop {
            let lag = orders_projectors::lag::measure(pool, &jetstream).await?;
            if lag.relay_behind == 0 && lag.views.iter().all(|view| view.behind == 0) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until the relay has published every stored event (the views not
    /// considered: for a run without projectors).
    pub(crate) async fn wait_until_relayed(&self, pool: &PgPool) -> anyhow::Result<()> {
        let jetstream = jetstream::new(self.client.clone());
        while orders_projectors::lag::measure(pool, &jetstream)
            .await?
            .relay_behind
            > 0
        {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(())
    }

    pub(crate) fn relay_waker(&self) -> RelayWaker {
        RelayWaker::new(self.client.clone())
    }

    pub(crate) async fn stop(mut self) {
        self.stop.cancel();
        while self.tasks.join_next().await.is_some() {}
    }
}

pub(crate) fn percentile(sorted: &[f64], fraction: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let index = ((sorted.len() as f64 - 1.0) * fraction).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

pub(crate) fn sorted(mut values: Vec<f64>) -> Vec<f64> {
    values.sort_by(f64::total_cmp);
    values
}

/// Stores `events` real domain events (rounded down to whole users of 20 events: a
/// registration, two placements and 17 price changes), 10,000 per transaction.
pub(crate) async fn store_log(pool: &PgPool, events: u64) -> anyhow::Result<u64> {
    const PER_USER: u64 = 20;
    let users = (events / PER_USER).max(1);
    let uah = Currency::from_code("UAH")?;
    let url = ProductUrl::parse("https://shop.example.com/product/42")?;
    let mut stored = 0;
    let mut user = 0;
    while user < users {
        let mut columns = Columns::default();
        for _ in 0..(10_000 / PER_USER) {
            if user == users {
                break;
            }
            let user_id = UserId::from_uuid(Uuid::now_v7());
            columns.push(
                "user",
                user_id.as_uuid(),
                1,
                "UserRegistered",
                "2.0",
                serde_json::to_value(UserEvent::UserRegistered {
                    user_id,
                    email: EmailAddress::parse(&format!("bench-{user}@example.com"))?,
                })?,
                &format!("user:{user_id}"),
            );
            for (order, changes) in [(0, 9), (1, 8)] {
                let order_id = OrderId::from_uuid(Uuid::now_v7());
                let target = Money::parse(&format!("{}.00", 1000 + order), uah)?;
                columns.push(
                    "order",
                    order_id.as_uuid(),
                    1,
                    "OrderPlaced",
                    "2.0",
                    serde_json::to_value(OrderEvent::OrderPlaced {
                        order_id,
                        owner: user_id,
                        url: Some(url.clone()),
                        product_id: None,
                        target,
                        check_interval_secs: 3600,
                        selector: None,
                    })?,
                    &format!("user:{user_id}"),
                );
                let mut previous = None;
                for change in 0..changes {
                    let price = Money::parse(&format!("{}.50", 1500 - change * 10), uah)?;
                    columns.push(
                        "order",
                        order_id.as_uuid(),
                        2 + change,
                        "PriceChanged",
                        "1.0",
                        serde_json::to_value(OrderEvent::PriceChanged {
                            check_id: Uuid::now_v7(),
                            previous,
                            price,
                            extractor: Some("json-ld".to_owned()),
                        })?,
                        "system:scraper",
                    );
                    previous = Some(price);
                }
            }
            user += 1;
        }
        stored += columns.insert(pool).await?;
    }
    sqlx::query("ANALYZE events").execute(pool).await?;
    Ok(stored)
}

#[derive(Default)]
pub(crate) struct Columns {
    aggregate_types: Vec<&'static str>,
    aggregate_ids: Vec<String>,
    sequences: Vec<i64>,
    event_types: Vec<&'static str>,
    event_versions: Vec<&'static str>,
    payloads: Vec<serde_json::Value>,
    metadata: Vec<serde_json::Value>,
    /// Sealed under the run's key, as the command side seals.
    seals: Vec<Vec<u8>>,
}

impl Columns {
    #[allow(clippy::too_many_arguments)]
    fn push(
        &mut self,
        aggregate_type: &'static str,
        aggregate_id: Uuid,
        sequence: i64,
        event_type: &'static str,
        event_version: &'static str,
        payload: serde_json::Value,
        actor: &str,
    ) {
        let correlation = Uuid::now_v7().to_string();
        self.aggregate_types.push(aggregate_type);
        self.sequences.push(sequence);
        self.event_types.push(event_type);
        self.event_versions.push(event_version);
        let metadata = serde_json::json!({
            "actor": actor, "correlation_id": correlation,
            "causation_id": correlation, "request_id": correlation,
        });
        let aggregate_id = aggregate_id.to_string();
        let digests = orders_store::seal::EventContent {
            aggregate_type,
            aggregate_id: &aggregate_id,
            sequence,
            event_type,
            event_version,
            payload: &payload,
            metadata: &metadata,
        }
        .digests();
        self.seals
            .push(super::setup::bench_audit_key().seal(&digests));
        self.aggregate_ids.push(aggregate_id);
        self.payloads.push(payload);
        self.metadata.push(metadata);
    }

    async fn insert(self, pool: &PgPool) -> anyhow::Result<u64> {
        let inserted = sqlx::query(
            "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version,
                                 payload, metadata, seal)
             SELECT * FROM UNNEST($1::text[], $2::text[], $3::int8[], $4::text[], $5::text[],
                                  $6::jsonb[], $7::jsonb[], $8::bytea[])",
        )
        .bind(&self.aggregate_types)
        .bind(&self.aggregate_ids)
        .bind(&self.sequences)
        .bind(&self.event_types)
        .bind(&self.event_versions)
        .bind(&self.payloads)
        .bind(&self.metadata)
        .bind(&self.seals)
        .execute(pool)
        .await
        .context("storing the benchmark's events")?;
        Ok(inserted.rows_affected())
    }
}

/// Relays everything stored (from an empty stream) and returns events/s.
pub(crate) async fn relay_all(
    pool: &PgPool,
    jetstream: &jetstream::Context,
    window: i64,
    stored: u64,
) -> anyhow::Result<(u64, f64)> {
    let relay = Relay::new(pool.clone(), jetstream.clone(), window);
    let mut head = relay.stream_head().await?;
    let started = Instant::now();
    let mut relayed = 0;
    // A step that publishes nothing may only mean that a transaction elsewhere on
    // the server holds the horizon back (another test's, in `make test`): the relay
    // waits for it, never skips it, and so does this loop, for a while.
    let patience = Duration::from_secs(60);
    while relayed < stored {
        let published = relay.step(&mut head).await? as u64;
        if published == 0 {
            anyhow::ensure!(
                started.elapsed() < patience,
                "relayed {relayed} of {stored} events, then nothing for a minute"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        relayed += published;
    }
    Ok((relayed, relayed as f64 / started.elapsed().as_secs_f64()))
}

/// Reads `/proc/<pid>/status` for `VmRSS` and `VmHWM`, in MiB.
pub(crate) fn memory_mib(pid: u32) -> Option<(f64, f64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find(|line| line.starts_with(name))
            .and_then(|line| line.split_whitespace().nth(1))
            .and_then(|kib| kib.parse::<f64>().ok())
            .map(|kib| kib / 1024.0)
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// The same ids, computed by PostgreSQL (for pgbench).
pub(crate) const BENCH_USER_ID_SQL: &str =
    "('00000000-0000-7000-8000-' || lpad(to_hex((:u)::bigint), 12, '0'))";

/// The API, in this process, on a port of its own.
pub(crate) struct BenchApi {
    pub(crate) state: Arc<AppState>,
    pub(crate) addr: SocketAddr,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl BenchApi {
    /// With `log`, the API wakes its relay and serves `GET /live` from its stream,
    /// as `serve all` does.
    pub(crate) async fn start(pool: &PgPool, log: Option<&BenchLog>) -> anyhow::Result<Self> {
        let secret = Secret::from_env_value(
            "benchmark secret",
            Some(format!(
                "{}{}",
                Uuid::new_v4().simple(),
                Uuid::new_v4().simple()
            )),
        )?;
        let mut config = ApiConfig::new(secret, bench_audit_key(), "http://127.0.0.1".to_owned());
        if let Some(log) = log {
            config.relay_waker = Some(log.relay_waker());
            config.jetstream = Some(jetstream::new(log.client.clone()));
            config.live = Some(orders_projectors::live::LiveHub::start(
                jetstream::new(log.client.clone()),
                pool.clone(),
                log.stop.child_token(),
            ));
        }
        let state = AppState::new(config, pool.clone()).await?;
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let stop = CancellationToken::new();
        let task = tokio::spawn(orders_command_api::run(
            state.clone(),
            listener,
            stop.clone(),
        ));
        Ok(Self {
            state,
            addr,
            stop,
            task,
        })
    }

    pub(crate) async fn stop(self) -> anyhow::Result<()> {
        self.stop.cancel();
        self.task.await?
    }
}

/// Microseconds since the Unix epoch.
pub(crate) fn micros_since_epoch(time: SystemTime) -> i64 {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_micros() as i64)
        .unwrap_or_default()
}

/// Milliseconds from an `Orders-Recorded-At` header to `received`.
pub(crate) fn lag_ms(recorded_at: &str, received: SystemTime) -> Option<f64> {
    let recorded = chrono::DateTime::parse_from_rfc3339(recorded_at).ok()?;
    Some((micros_since_epoch(received) - recorded.timestamp_micros()) as f64 / 1000.0)
}

/// Measurements in milliseconds, gathered by several tasks.
pub(crate) type Samples = Arc<Mutex<Vec<f64>>>;

/// The floor of store -> stream: a core NATS message at the same rate, through the
/// same server, from publish to subscriber. Answers the receiving and the sending
/// task.
pub(crate) async fn measure_publish_floor(
    client: &async_nats::Client,
    rate: u32,
    window: std::ops::Range<SystemTime>,
    until: Instant,
    floor: Samples,
) -> anyhow::Result<(tokio::task::JoinHandle<()>, tokio::task::JoinHandle<()>)> {
    let mut pings = client.subscribe("bench.ping").await?;
    let receiving = tokio::spawn(async move {
        while let Some(message) = pings.next().await {
            let received = SystemTime::now();
            let sent: i64 = std::str::from_utf8(&message.payload)
                .ok()
                .and_then(|text| text.parse().ok())
                .unwrap_or_default();
            if window.contains(&received) {
                floor
                    .lock()
                    .expect("not poisoned")
                    .push((micros_since_epoch(received) - sent) as f64 / 1000.0);
            }
        }
    });
    let client = client.clone();
    let period = Duration::from_secs_f64(1.0 / f64::from(rate.max(1)));
    let sending = tokio::spawn(async move {
        let mut ticks = tokio::time::interval(period);
        while Instant::now() < until {
            ticks.tick().await;
            let now = micros_since_epoch(SystemTime::now()).to_string();
            let _ = client.publish("bench.ping", now.into()).await;
        }
    });
    Ok((receiving, sending))
}
