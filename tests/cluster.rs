//! The whole pipeline, two instances of every service (`orders serve all` twice: API,
//! relay, projectors), on a 3-node JetStream cluster started here, with one node
//! killed with SIGKILL in the middle of the run: nothing lost, nothing doubled, and
//! the views equal to a rebuild from the log.

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use orders_test_support::nats_server::NatsCluster;
use serde_json::{json, Value};
use sqlx::PgPool;

mod common;
use common::{assert_stream_is_the_table, fresh_database, Service};

const JWT_SECRET: &str = "a secret that is long enough for HS256 signing";

fn free_address() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    format!("127.0.0.1:{port}")
}

fn serve_all(database_url: &str, nats_urls: &str, http_addr: &str) -> Service {
    Service::new(
        Command::new(env!("CARGO_BIN_EXE_orders"))
            .args(["serve", "all"])
            .env("ORDERS_DATABASE_URL", database_url)
            .env("ORDERS_NATS_URL", nats_urls)
            .env("ORDERS_NATS_REPLICAS", "3")
            .env("ORDERS_AUDIT_KEY", common::AUDIT_KEY)
            .env("ORDERS_JWT_SECRET", JWT_SECRET)
            .env(
                "ORDERS_SMTP_URL",
                std::env::var("ORDERS_TEST_SMTP_URL")
                    .expect("ORDERS_TEST_SMTP_URL (make test sets it)"),
            )
            .env("ORDERS_MAIL_FROM", "Orders <orders@cluster.test>")
            .env("ORDERS_HTTP_ADDR", http_addr)
            .env("ORDERS_DATABASE_MAX_CONNECTIONS", "8")
            .env("ORDERS_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

async fn wait_until_ready(http: &reqwest::Client, base: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(response) = http.get(format!("{base}/readyz")).send().await {
            if response.status().is_success() {
                return;
            }
        }
        assert!(Instant::now() < deadline, "{base} did not become ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Rounds each shopper plays: a placement and a change, pause or cancellation.
const ROUNDS: usize = 60;

/// A user who signs up on one instance and then uses both, alternately, for
/// [`ROUNDS`] rounds: places orders, changes, pauses and cancels some. Counts every
/// command answered 2xx in `answered`.
async fn shopper(http: reqwest::Client, bases: [String; 2], answered: Arc<AtomicU64>) {
    let email = format!("shopper-{}@example.com", uuid::Uuid::now_v7().simple());
    let password = "a long enough password";
    let registered = http
        .post(format!("{}/auth/register", bases[0]))
        .json(&json!({"email": email, "password": password}))
        .send()
        .await
        .unwrap();
    assert_eq!(registered.status(), 201);
    let login: Value = http
        .post(format!("{}/auth/login", bases[1]))
        .json(&json!({"email": email, "password": password}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = login["access_token"].as_str().unwrap().to_owned();
    answered.fetch_add(1, Ordering::SeqCst);
    let mut round = 0_usize;
    while round < ROUNDS {
        let base = &bases[round % 2];
        let placed = http
            .post(format!("{base}/orders"))
            .bearer_auth(&token)
            .json(&json!({"url": "https://shop.example.com/p/1", "target_price": "100.00", "currency": "UAH"}))
            .send()
            .await
            .unwrap();
        assert_eq!(placed.status(), 201, "POST /orders on {base}");
        answered.fetch_add(1, Ordering::SeqCst);
        let location = placed.headers()["location"].to_str().unwrap().to_owned();
        let other = &bases[(round + 1) % 2];
        let follow_up = match round % 3 {
            0 => http
                .patch(format!("{other}{location}"))
                .json(&json!({"target_price": "90.00"})),
            1 => http.post(format!("{other}{location}/pause")),
            _ => http.delete(format!("{other}{location}")),
        };
        let followed = follow_up.bearer_auth(&token).send().await.unwrap();
        assert_eq!(followed.status(), 204, "{location} on {other}");
        answered.fetch_add(1, Ordering::SeqCst);
        round += 1;
    }
}

/// Every view's tables as text, in a stable order.
async fn views(pool: &PgPool) -> Vec<String> {
    let mut contents = Vec::new();
    for view in orders_projectors::View::ALL {
        for table in view.tables() {
            let text: Option<String> = sqlx::query_scalar(&format!(
                "SELECT json_agg(t ORDER BY t::text)::text FROM {table} t"
            ))
            .fetch_one(pool)
            .await
            .unwrap();
            contents.push(text.unwrap_or_default());
        }
    }
    contents
}

/// Waits until the stream holds every stored event and every view has applied all.
async fn caught_up(pool: &PgPool, jetstream: &async_nats::jetstream::Context) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(lag) = orders_projectors::lag::measure(pool, jetstream).await {
            if lag.relay_behind == 0 && lag.views.iter().all(|view| view.behind == 0) {
                return;
            }
            assert!(Instant::now() < deadline, "not caught up: {lag}");
        }
        assert!(Instant::now() < deadline, "not caught up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_of_every_service_on_a_three_node_cluster_survive_a_node_killed_mid_run() {
    let started = Instant::now();
    let (database_url, pool) = fresh_database().await;
    let mut cluster = NatsCluster::start(3);
    let urls = cluster.urls();
    let addresses = [free_address(), free_address()];
    let services: Vec<Service> = addresses
        .iter()
        .map(|address| serve_all(&database_url, &urls, address))
        .collect();
    let _already_installed = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::new();
    let bases = addresses.clone().map(|address| format!("http://{address}"));
    for base in &bases {
        wait_until_ready(&http, base).await;
    }

    eprintln!("{:?}: two instances ready", started.elapsed());
    let answered = Arc::new(AtomicU64::new(0));
    let shoppers: Vec<_> = (0..4)
        .map(|_| tokio::spawn(shopper(http.clone(), bases.clone(), answered.clone())))
        .collect();
    // The node dies once a quarter of the workload is done, so that the rest of it
    // (and the relay and projectors behind it) runs on the two survivors.
    let total = 4 * (1 + 2 * ROUNDS as u64);
    while answered.load(Ordering::SeqCst) < total / 4 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    cluster.kill(0);
    let at_kill = answered.load(Ordering::SeqCst);
    for shopper in shoppers {
        shopper.await.unwrap();
    }
    let answered = answered.load(Ordering::SeqCst);
    assert_eq!(answered, total, "every command is answered");
    assert!(at_kill < total, "the node was killed after the workload");

    // The two surviving nodes hold the log (3 replicas, a quorum of 2).
    let client = orders_nats::connect(&urls).await.unwrap();
    let jetstream = async_nats::jetstream::new(client);
    eprintln!(
        "{:?}: {answered} commands answered, {at_kill} before the kill",
        started.elapsed()
    );
    // The workers of `serve all` keep adding events (scheduled checks of the
    // shoppers' orders): stop everything, and let one relay and one set of
    // projectors finish the log, so the comparisons below see a log at rest.
    drop(services);
    let finishers: Vec<Service> = ["relay", "projectors"]
        .into_iter()
        .map(|service| {
            Service::new(
                Command::new(env!("CARGO_BIN_EXE_orders"))
                    .args(["serve", service])
                    .env("ORDERS_DATABASE_URL", &database_url)
                    .env("ORDERS_NATS_URL", &urls)
                    .env("ORDERS_NATS_REPLICAS", "3")
                    .env("ORDERS_LOG", "warn")
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .unwrap(),
            )
        })
        .collect();
    caught_up(&pool, &jetstream).await;
    eprintln!("{:?}: caught up", started.elapsed());
    assert_stream_is_the_table(&pool, &jetstream).await;

    // The live views equal a rebuild from the log.
    let live = views(&pool).await;
    let replay = Command::new(env!("CARGO_BIN_EXE_orders"))
        .args(["replay", "--all"])
        .env("ORDERS_DATABASE_URL", &database_url)
        .env("ORDERS_NATS_URL", &urls)
        .env("ORDERS_LOG", "warn")
        .output()
        .unwrap();
    assert!(
        replay.status.success(),
        "{}",
        String::from_utf8_lossy(&replay.stderr)
    );
    assert_eq!(views(&pool).await, live);
    eprintln!("{:?}: views equal a rebuild", started.elapsed());
    drop(finishers);
}
