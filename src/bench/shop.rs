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
//! - `flash_sale`: `orders bench flash-sale`, settled purchases/s of a sold-out
//!   product beside placement alone.
//! - `purchases`: `orders bench purchases`, placed → settled latency at a steady
//!   rate beside the placement's own read-your-writes.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use async_nats::jetstream::{self, consumer::PullConsumer};
use futures::{StreamExt as _, TryStreamExt as _};
use orders_application::signed_tokens::SignedTokens;
use orders_domain::ids::{ProductId, UserId};
use orders_domain::money::{Currency, Money};
use orders_nats::{LogEvent, LEADER_BUCKET};
use orders_store::event_store::EventStore;
use orders_workers::fetch::FetchPolicy;
use orders_workers::host_gate::HostGateConfig;
use orders_workers::mail::Mailer;
use orders_workers::saga::DEFAULT_TIMEOUT;
use orders_workers::service::WorkersConfig;
use sqlx::PgPool;
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::setup::{bench_audit_key, BenchApi, BenchLog};

mod flash_sale;
mod purchases;

pub(crate) use flash_sale::{flash_sale, FlashSaleArgs};
pub(crate) use purchases::{purchases, PurchasesBenchArgs};

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
