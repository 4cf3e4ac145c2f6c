//! `orders serve all` run in the test's own process, through the same plan the
//! binary runs (`orders::serve::ServePlan`): a price check goes through every
//! service (API, relay, projectors, scraper, policy), and cancelling the
//! plan's token stops them all cleanly.

mod common;

use std::time::Duration;

use clap::Parser;
use orders::serve::{ServeArgs, ServePlan};
use orders_test_support::fixture_shop::FixtureServer;
use orders_test_support::nats_server::NatsServer;
use orders_test_support::wait::eventually;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

/// `orders serve`'s arguments, as its command line has them.
#[derive(Debug, Parser)]
struct Serve {
    #[command(flatten)]
    args: ServeArgs,
}

const JWT_SECRET: &str = "the serve-plan test's secret, more than 32 bytes";

#[tokio::test]
async fn a_plan_runs_every_service_in_process_and_stops_on_its_token() {
    let _already_installed = rustls::crypto::ring::default_provider().install_default();
    let (database_url, _pool) = common::fresh_database().await;
    let nats = NatsServer::start();
    let smtp_url = std::env::var("ORDERS_TEST_SMTP_URL").expect("make services sets it");
    let shop = FixtureServer::start().await.unwrap();
    shop.set_html(
        "/p/kettle",
        r#"<!doctype html><html><head><title>Kettle</title><script type="application/ld+json">
{"@context": "https://schema.org", "@type": "Product", "name": "Kettle",
 "offers": {"@type": "Offer", "price": "2999.00", "priceCurrency": "UAH"}}</script></head>
<body><h1>Kettle</h1></body></html>"#,
    );
    let serve = Serve::try_parse_from([
        "orders-serve",
        "all",
        "--database-url",
        &database_url,
        "--nats-url",
        nats.url(),
        "--http-addr",
        "127.0.0.1:0",
        "--jwt-secret",
        JWT_SECRET,
        "--audit-key",
        common::AUDIT_KEY,
        "--smtp-url",
        &smtp_url,
        "--mail-from",
        "Orders <orders@example.com>",
        "--scraper-allow-private",
        "127.0.0.0/8",
        "--relay-poll-ms",
        "20",
        "--scheduler-tick-ms",
        "100",
        "--scraper-host-spacing-ms",
        "50",
    ])
    .unwrap();
    let plan = ServePlan::from_args(serve.args).unwrap();
    let shutdown = CancellationToken::new();
    let running = plan.start(shutdown.clone()).await.unwrap();
    let base = format!(
        "http://{}",
        running.api_addr().expect("the plan has the API")
    );

    let http = reqwest::Client::new();
    let post = |path: &str, body: Value, token: Option<&str>| {
        let mut request = http.post(format!("{base}{path}")).json(&body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send()
    };
    let credentials = json!({"email": "plan@example.com", "password": "a long enough password"});
    let registered = post("/auth/register", credentials.clone(), None)
        .await
        .unwrap();
    assert_eq!(registered.status(), 201);
    let login: Value = post("/auth/login", credentials, None)
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = login["access_token"].as_str().unwrap().to_owned();
    let order = json!({"url": shop.url("/p/kettle").as_str(), "target_price": "3199.00", "currency": "UAH"});
    let placed: Value = post("/orders", order, Some(&token))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let order_id = placed["order_id"].as_str().unwrap().to_owned();
    // (The scheduler's first check of a new order falls somewhere in its first
    // minute: the owner asks for one now.)
    let check = post(
        &format!("/orders/{order_id}/check"),
        json!({}),
        Some(&token),
    )
    .await
    .unwrap();
    assert_eq!(check.status(), 202);

    // The scraper reads the page, the policy records the price on the order, the
    // projectors show it.
    let details = eventually(Duration::from_secs(30), "the price in the view", || async {
        let details: Value = http
            .get(format!("{base}/orders/{order_id}"))
            .bearer_auth(&token)
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        (details["last_price"] == "2999.00").then_some(details)
    })
    .await;
    assert_eq!(details["title"], "Kettle", "{details}");

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(30), running.wait())
        .await
        .expect("every service stops within 30 s of its token")
        .expect("and none of them fails");
    assert!(
        http.get(format!("{base}/healthz")).send().await.is_err(),
        "the API no longer answers"
    );
}
