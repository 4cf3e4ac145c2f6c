//! The shop with every real part: two `orders serve all` processes on one
//! PostgreSQL and one nats-server. A flash sale (300 buyers for 50 units of one
//! product, through the HTTP API, at once) sells exactly the stock, also when one
//! of the processes, saga and all, is SIGKILLed in the middle and started again.
//! Afterwards the views agree with the log, and guarantee 10 holds recomputed from
//! the events table.

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use orders_command_api::auth::AccessTokens;
use orders_domain::ids::{ProductId, UserId};
use orders_domain::money::{Currency, Money};
use orders_domain::user::Role;
use orders_store::event_store::EventStore;
use orders_test_support::nats_server::NatsServer;
use serde_json::{json, Value};
use sqlx::PgPool;
use uuid::Uuid;

mod common;
use common::{fresh_database, Service};

const JWT_SECRET: &str = "the shop test's secret, more than 32 bytes";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run the tests with `make test`, or `set -a; . .data/test.env`")
    })
}

/// One `orders serve all` on `port`.
fn serve_all(database_url: &str, nats_url: &str, port: u16) -> Service {
    Service::new(
        Command::new(env!("CARGO_BIN_EXE_orders"))
            .args(["serve", "all"])
            .env("ORDERS_DATABASE_URL", database_url)
            .env("ORDERS_NATS_URL", nats_url)
            .env("ORDERS_HTTP_ADDR", format!("127.0.0.1:{port}"))
            .env("ORDERS_PUBLIC_URL", format!("http://127.0.0.1:{port}"))
            .env("ORDERS_AUDIT_KEY", common::AUDIT_KEY)
            .env("ORDERS_JWT_SECRET", JWT_SECRET)
            .env("ORDERS_SMTP_URL", env("ORDERS_TEST_SMTP_URL"))
            .env("ORDERS_MAIL_FROM", "Orders <shop@orders.test>")
            .env("ORDERS_RELAY_POLL_MS", "20")
            // Two processes per test, among the suite's other servers: a share of
            // PostgreSQL's connections each.
            .env("ORDERS_DATABASE_MAX_CONNECTIONS", "12")
            .env("ORDERS_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    )
}

/// Two `serve all` processes, a product and its buyers.
struct Shop {
    database_url: String,
    pool: PgPool,
    nats: NatsServer,
    ports: [u16; 2],
    processes: [Option<Service>; 2],
    events: EventStore,
    tokens: AccessTokens,
    http: reqwest::Client,
}

impl Shop {
    async fn start() -> Shop {
        orders_workers::fetch::install_crypto_provider();
        let (database_url, pool) = fresh_database().await;
        let nats = NatsServer::start();
        let ports = [free_port(), free_port()];
        let processes = ports.map(|port| Some(serve_all(&database_url, nats.url(), port)));
        let shop = Shop {
            events: EventStore::new(pool.clone(), common::audit_key()),
            tokens: AccessTokens::new(JWT_SECRET.as_bytes(), Duration::from_secs(3600)),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
            database_url,
            pool,
            nats,
            ports,
            processes,
        };
        for instance in 0..2 {
            shop.until_ready(instance).await;
        }
        shop
    }

    fn url(&self, instance: usize, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.ports[instance])
    }

    async fn until_ready(&self, instance: usize) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ready = self.http.get(self.url(instance, "/readyz")).send().await;
            if ready.is_ok_and(|answer| answer.status().is_success()) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "serve all {instance} did not start"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A verified user's access token (and `role`, if given).
    async fn user(&self, role: Option<Role>) -> (UserId, String) {
        let email = format!("buyer-{}@example.com", Uuid::now_v7().simple());
        let user_id = orders_test_support::shop::verified_user(&self.events, &email, role)
            .await
            .unwrap();
        (user_id, self.tokens.issue(user_id, 0).unwrap())
    }

    async fn count(&self, sql: &str) -> i64 {
        sqlx::query_scalar(sql).fetch_one(&self.pool).await.unwrap()
    }

    /// Waits until the `purchases` view holds `placed` purchases and none pending.
    async fn until_settled(&self, placed: i64) {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let (rows, pending): (i64, i64) = sqlx::query_as(
                "SELECT count(*), count(*) FILTER (WHERE status = 'pending') FROM view_purchases",
            )
            .fetch_one(&self.pool)
            .await
            .unwrap();
            if rows == placed && pending == 0 {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "not settled: {rows} of {placed} purchases in the view, {pending} pending"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Buys one unit of `product` as the buyer with `token`: POST /purchases to
/// `instances` in turn until one answers 201 (the same `Idempotency-Key` each
/// time, so a retry after a lost answer buys nothing twice).
async fn buy_one(
    http: reqwest::Client,
    urls: [String; 2],
    first: usize,
    token: String,
    product: ProductId,
) -> Uuid {
    let key = Uuid::now_v7().to_string();
    let body = json!({"items": [{"product_id": product, "quantity": 1}]});
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut attempt = first;
    loop {
        let sent = http
            .post(format!("{}/purchases", urls[attempt % 2]))
            .bearer_auth(&token)
            .header("Idempotency-Key", &key)
            .json(&body)
            .send()
            .await;
        if let Ok(answer) = sent {
            let status = answer.status();
            if status == reqwest::StatusCode::CREATED {
                let created: Value = answer.json().await.unwrap();
                return created["purchase_id"].as_str().unwrap().parse().unwrap();
            }
            assert!(
                status.is_server_error(),
                "POST /purchases answered {status}: {}",
                answer.text().await.unwrap_or_default()
            );
        }
        assert!(Instant::now() < deadline, "no instance took the purchase");
        attempt += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// 300 buyers race for 50 units; `crash` SIGKILLs the second process once 100
/// purchases are placed, and starts it again.
async fn flash_sale(crash: bool) {
    let mut shop = Shop::start().await;
    let price = Money::parse("19.99", Currency::USD).unwrap();
    let product = orders_test_support::shop::product(&shop.events, price, 50)
        .await
        .unwrap();
    let (_, admin) = shop.user(Some(Role::Admin)).await;
    let mut buyers = Vec::new();
    for _ in 0..300 {
        buyers.push(shop.user(None).await.1);
    }

    let urls = [shop.url(0, ""), shop.url(1, "")];
    let start = Arc::new(tokio::sync::Barrier::new(buyers.len() + 1));
    let mut racing = Vec::new();
    for (index, token) in buyers.into_iter().enumerate() {
        let (http, urls, start) = (shop.http.clone(), urls.clone(), start.clone());
        racing.push(tokio::spawn(async move {
            start.wait().await;
            buy_one(http, urls, index % 2, token, product).await
        }));
    }
    start.wait().await;
    if crash {
        let deadline = Instant::now() + Duration::from_secs(60);
        while shop
            .count("SELECT count(*) FROM events WHERE event_type = 'PurchasePlaced'")
            .await
            < 100
        {
            assert!(Instant::now() < deadline, "purchases were not placed");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        common::kill(shop.processes[1].take().unwrap());
        tokio::time::sleep(Duration::from_millis(200)).await;
        shop.processes[1] = Some(serve_all(
            &shop.database_url,
            shop.nats.url(),
            shop.ports[1],
        ));
        shop.until_ready(1).await;
    }
    let mut purchases = Vec::new();
    for buyer in racing {
        purchases.push(buyer.await.unwrap());
    }
    purchases.sort();
    purchases.dedup();
    assert_eq!(purchases.len(), 300, "one purchase per buyer");
    assert_eq!(
        shop.count("SELECT count(*) FROM events WHERE event_type = 'PurchasePlaced'")
            .await,
        300,
        "retries with the same Idempotency-Key placed nothing twice"
    );

    shop.until_settled(300).await;
    assert_eq!(
        shop.count("SELECT count(*) FROM view_purchases WHERE status = 'confirmed'")
            .await,
        50
    );
    assert_eq!(
        shop.count(
            "SELECT count(*) FROM view_purchases
              WHERE status = 'rejected' AND reason ->> 'code' = 'out_of_stock'"
        )
        .await,
        250
    );
    let public: Value = shop
        .http
        .get(shop.url(0, &format!("/products/{product}")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(public["available"], 0);
    let stock: Value = shop
        .http
        .get(shop.url(1, &format!("/admin/products/{product}")))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        (&stock["reserved"], &stock["on_hand"]),
        (&json!(50), &json!(50))
    );
    let mismatches = orders_test_support::shop::reservation_mismatches(&shop.pool)
        .await
        .unwrap();
    assert!(mismatches.is_empty(), "guarantee 10: {mismatches:?}");
    let reserved_events = shop
        .count("SELECT count(*) FROM events WHERE event_type = 'StockReserved'")
        .await;
    assert_eq!(reserved_events, 50, "no double reservation");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_flash_sale_on_two_instances_sells_exactly_the_stock() {
    flash_sale(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_flash_sale_survives_a_process_killed_in_the_middle() {
    flash_sale(true).await;
}

/// Waits until `sql` (a count) answers `expected`.
async fn until_count(shop: &Shop, what: &str, sql: &str, expected: i64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let count = shop.count(sql).await;
        if count == expected {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: {count}, not {expected}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Flow 7: a tracking order on a catalog product follows the product's events
/// with no scraping: the price at placement, a re-pricing below the target (one
/// alert mail), stock to zero and back.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_catalog_price_drop_alerts_the_orders_that_follow_it() {
    let shop = Shop::start().await;
    let price = Money::parse("40.00", Currency::USD).unwrap();
    let product = orders_test_support::shop::product(&shop.events, price, 2)
        .await
        .unwrap();
    let (_, admin) = shop.user(Some(Role::Admin)).await;
    let (_, tracker) = shop.user(None).await;
    let placed = shop
        .http
        .post(shop.url(0, "/orders"))
        .bearer_auth(&tracker)
        .json(&json!({"product_id": product, "target_price": "30.00"}))
        .send()
        .await
        .unwrap();
    assert_eq!(placed.status(), reqwest::StatusCode::CREATED);
    let order: Value = placed.json().await.unwrap();
    let order_id = order["order_id"].as_str().unwrap().to_owned();
    let events_of = |kind: &str| {
        format!(
            "SELECT count(*) FROM events WHERE aggregate_id = '{order_id}' AND event_type = '{kind}'"
        )
    };
    until_count(
        &shop,
        "the price at placement",
        &events_of("PriceChanged"),
        1,
    )
    .await;

    let repriced = shop
        .http
        .patch(shop.url(1, &format!("/admin/products/{product}")))
        .bearer_auth(&admin)
        .json(&json!({"price": "29.00"}))
        .send()
        .await
        .unwrap();
    assert_eq!(repriced.status(), reqwest::StatusCode::NO_CONTENT);
    until_count(&shop, "the alert", &events_of("TargetReached"), 1).await;
    until_count(
        &shop,
        "the alert mail",
        &format!(
            "SELECT count(*) FROM email_deliveries d JOIN events e
                 ON d.event_id = 'order/' || e.aggregate_id || '/' || e.sequence
              WHERE e.aggregate_id = '{order_id}' AND e.event_type = 'TargetReached'"
        ),
        1,
    )
    .await;

    for (quantity, kind) in [(-2, "BecameUnavailable"), (3, "BecameAvailable")] {
        let adjusted = shop
            .http
            .post(shop.url(0, &format!("/admin/products/{product}/stock")))
            .bearer_auth(&admin)
            .json(&json!({"quantity": quantity, "reason": "count"}))
            .send()
            .await
            .unwrap();
        assert_eq!(adjusted.status(), reqwest::StatusCode::NO_CONTENT);
        until_count(&shop, kind, &events_of(kind), 1).await;
    }
    assert_eq!(
        shop.count(&events_of("TargetReached")).await,
        1,
        "fired once"
    );
    assert_eq!(
        shop.count(&format!(
            "SELECT count(*) FROM events WHERE event_type = 'PriceCheckRequested'
                AND payload -> 'PriceCheckRequested' ->> 'order_id' = '{order_id}'"
        ))
        .await,
        0,
        "no scraping"
    );
}
