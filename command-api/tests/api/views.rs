//! The query views, built from the log by the projectors: what the API reads from
//! them, read-your-writes, exactly-once application, and replay.

use std::time::{Duration, Instant};

use orders_application::price_checks::{
    load_order, record_observation_on_order, request_check, CheckRequested,
};
use orders_domain::ids::{CheckId, OrderId};
use orders_domain::money::Currency;
use orders_domain::order::Availability;
use orders_domain::price_check::{
    CheckFailureReason, CheckTrigger, FetchFacts, PagePrice, PageReading, PriceCheck,
    PriceCheckCommand, PriceCheckEvent,
};
use orders_nats::{LogEvent, LOG_STREAM};
use orders_projectors::record::LogRecord;
use orders_projectors::{Applied, Checkpoint, Generation, Projector, View};
use orders_store::event_store::CommandMetadata;
use reqwest::StatusCode;
use serde_json::{json, Value};
use sqlx::PgPool;
use uuid::Uuid;

use crate::helpers::{
    fresh_database, position_of, problem, spawn_app, spawn_app_with_log, spawn_app_with_log_and,
    start_log_with, TestApp,
};

fn system_metadata() -> CommandMetadata {
    CommandMetadata::new_job("system:scraper")
}

/// One whole price check, as the workers do it: requested, the page's reading
/// recorded on the check, and the observation recorded on the order (the policy).
async fn observe(app: &TestApp, order_id: Uuid, price: &str) -> Option<String> {
    let events = &app.state.events;
    let check_id = requested_check(app, order_id).await;
    let reading = PriceCheckCommand::RecordReading {
        reading: PageReading {
            price: Some(PagePrice {
                amount: price.parse().unwrap(),
                currency: Some(Currency::from_code("UAH").unwrap()),
            }),
            availability: Availability::InStock,
            title: Some("Kettle".to_owned()),
            extractor: Some("json-ld".to_owned()),
        },
        fetch: FetchFacts::default(),
    };
    let receipt = events
        .execute::<PriceCheck>(&check_id.to_string(), reading, &system_metadata())
        .await
        .unwrap();
    let (check, _) = events
        .load::<PriceCheck>(&check_id.to_string())
        .await
        .unwrap();
    let observed = PriceCheckEvent::PriceObserved {
        order_id: OrderId::from_uuid(order_id),
        price: check.price(),
        availability: Availability::InStock,
        title: None,
        extractor: Some("json-ld".to_owned()),
        fetch: FetchFacts::default(),
    };
    let on_order = record_observation_on_order(events, check_id, &observed, &system_metadata())
        .await
        .unwrap();
    on_order
        .and_then(|receipt| receipt.position)
        .or(receipt.position)
        .map(|position| position.to_string())
}

/// A check that failed (the shop timed out).
async fn fail_check(app: &TestApp, order_id: Uuid) {
    let check_id = requested_check(app, order_id).await;
    let failure = PriceCheckCommand::RecordFailure {
        reason: CheckFailureReason::Timeout,
        detail: Some("no answer within 20 s".to_owned()),
        candidates: vec![],
        fetch: FetchFacts::default(),
    };
    app.state
        .events
        .execute::<PriceCheck>(&check_id.to_string(), failure, &system_metadata())
        .await
        .unwrap();
}

async fn requested_check(app: &TestApp, order_id: Uuid) -> CheckId {
    let events = &app.state.events;
    let order = load_order(events, OrderId::from_uuid(order_id))
        .await
        .unwrap();
    match request_check(events, &order, CheckTrigger::Manual, &system_metadata())
        .await
        .unwrap()
    {
        CheckRequested::Requested { check_id, .. } => check_id,
        CheckRequested::AlreadyInFlight => panic!("no check of {order_id} should be in flight"),
    }
}

async fn place(app: &TestApp, token: &str, target: &str) -> (Uuid, String) {
    let placed = app
        .place_order(
            token,
            &json!({"url": "http://127.0.0.1:9/product", "target_price": target, "currency": "UAH"}),
        )
        .await;
    assert_eq!(placed.status(), StatusCode::CREATED);
    let position = position_of(&placed);
    let id = placed.json::<Value>().await.unwrap()["order_id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    (id, position)
}

/// Every page of a list, following `next_cursor`.
async fn all_pages(app: &TestApp, path: &str, token: &str, position: &str) -> Vec<Vec<Value>> {
    let mut pages = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let separator = if path.contains('?') { '&' } else { '?' };
        let url = match &cursor {
            Some(cursor) => format!("{path}{separator}cursor={cursor}"),
            None => path.to_owned(),
        };
        let page = app.get_fresh_json(&url, token, position).await;
        pages.push(page["items"].as_array().unwrap().clone());
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return pages,
        }
        assert!(pages.len() < 100, "pagination does not end");
    }
}

#[tokio::test]
async fn the_callers_orders_and_price_history_are_served_from_the_views() {
    let app = spawn_app_with_log().await;
    let user = app.signed_up_user().await;
    let other = app.signed_up_user().await;
    let mut placed = Vec::new();
    let mut last = String::new();
    for target in ["100.00", "200.00", "300.00", "400.00", "3199.00"] {
        let (id, position) = place(&app, &user.token, target).await;
        placed.push(id);
        last = position;
    }

    // Five orders in pages of two, in placement order, nothing twice.
    let pages = all_pages(&app, "/orders?limit=2", &user.token, &last).await;
    assert_eq!(
        pages.iter().map(Vec::len).collect::<Vec<_>>(),
        vec![2, 2, 1]
    );
    let listed: Vec<Uuid> = pages
        .iter()
        .flatten()
        .map(|order| order["order_id"].as_str().unwrap().parse().unwrap())
        .collect();
    assert_eq!(listed, placed);
    let first = &pages[0][0];
    assert_eq!(first["target_price"], "100.00");
    assert_eq!(first["status"], "active");
    assert_eq!(first["availability"], "Unknown");
    assert_eq!(first["last_price"], Value::Null);

    // Another user sees none of them.
    let theirs = app.get_fresh_json("/orders", &other.token, &last).await;
    assert_eq!(theirs["items"], json!([]));
    assert_eq!(theirs["next_cursor"], Value::Null);
    let tracked = placed[4];
    for path in [
        format!("/orders/{tracked}"),
        format!("/orders/{tracked}/prices"),
    ] {
        let response = app.get_after(&path, &other.token, Some(&last)).await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{path}");
    }

    // Bad paging parameters name themselves.
    for (query, field) in [
        ("limit=0", "limit"),
        ("limit=101", "limit"),
        ("limit=ten", "limit"),
        ("cursor=not-a-cursor", "cursor"),
    ] {
        let response = app
            .get_after(&format!("/orders?{query}"), &user.token, None)
            .await;
        assert_eq!(
            response.status(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "{query}"
        );
        assert_eq!(problem(response).await["field"], field, "{query}");
    }

    // Price checks: one fails, then up, down to the target (the alert fires), the
    // same price again.
    fail_check(&app, tracked).await;
    let failed = app
        .get_fresh_json(
            &format!("/orders/{tracked}"),
            &user.token,
            &observe(&app, tracked, "3500.00").await.unwrap(),
        )
        .await;
    assert_eq!(
        failed["consecutive_failures"], 0,
        "a good check resets the count"
    );
    fail_check(&app, tracked).await;
    fail_check(&app, tracked).await;
    for price in ["3499.00", "3100.00", "3100.00"] {
        observe(&app, tracked, price).await.unwrap();
    }
    fail_check(&app, tracked).await;
    // The failure stored no position of its own to wait for: the log's last event.
    last = sqlx::query_scalar(
        "SELECT tx_id::text || '.' || global_position FROM events ORDER BY global_position DESC LIMIT 1",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    let order = app
        .get_fresh_json(&format!("/orders/{tracked}"), &user.token, &last)
        .await;
    assert_eq!(order["last_price"], "3100.00");
    assert_eq!(
        order["availability"], "InStock",
        "what the last check that read the page saw"
    );
    assert_eq!(order["alert_armed"], false);
    assert_eq!(order["title"], "Kettle");
    assert_eq!(order["last_error"], "timeout");
    assert_eq!(order["last_error_detail"], "no answer within 20 s");
    assert_eq!(order["consecutive_failures"], 1);
    assert!(order["last_checked_at"].is_string());
    let history = all_pages(
        &app,
        &format!("/orders/{tracked}/prices?limit=2"),
        &user.token,
        &last,
    )
    .await;
    let points: Vec<&Value> = history.iter().flatten().collect();
    let prices: Vec<&str> = points
        .iter()
        .map(|p| p["price"].as_str().unwrap())
        .collect();
    // Every observation, also the one that repeated the price; no failed check.
    assert_eq!(prices, ["3500.00", "3499.00", "3100.00", "3100.00"]);
    assert_eq!(points[2]["availability"], "InStock");
    assert_eq!(points[2]["extractor"], "json-ld");
    assert_eq!(points[2]["currency"], "UAH");
    assert!(points[2]["check_id"].is_string());

    // The alert it fired (3100.00 reached the target of 3199.00), once.
    let alerts = app
        .get_fresh_json(&format!("/orders/{tracked}/alerts"), &user.token, &last)
        .await;
    let alerts = alerts.as_array().unwrap();
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(alerts[0]["price"], "3100.00");
    assert_eq!(alerts[0]["previous"], "3499.00");
    assert_eq!(alerts[0]["target"], "3199.00");

    // Every check, newest first, with its outcome and why it failed.
    let checks = app
        .get_fresh_json(&format!("/orders/{tracked}/checks"), &user.token, &last)
        .await;
    let outcomes: Vec<(&str, &str)> = checks
        .as_array()
        .unwrap()
        .iter()
        .map(|check| {
            (
                check["outcome"].as_str().unwrap(),
                check["price"]
                    .as_str()
                    .or(check["reason"].as_str())
                    .unwrap(),
            )
        })
        .collect();
    assert_eq!(
        outcomes,
        [
            ("failed", "timeout"),
            ("ok", "3100.00"),
            ("ok", "3100.00"),
            ("ok", "3499.00"),
            ("failed", "timeout"),
            ("failed", "timeout"),
            ("ok", "3500.00"),
            ("failed", "timeout"),
        ]
    );
    assert_eq!(checks[0]["detail"], "no answer within 20 s");
    for path in [
        format!("/orders/{tracked}/alerts"),
        format!("/orders/{tracked}/checks"),
    ] {
        let response = app.get_after(&path, &other.token, Some(&last)).await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{path}");
    }
}

#[tokio::test]
async fn a_read_for_a_position_not_yet_applied_waits_then_says_stale() {
    let app = spawn_app_with_log_and(|config| {
        config.read_your_writes_timeout = Duration::from_millis(300);
    })
    .await;
    let user = app.signed_up_user().await;
    let (order_id, position) = place(&app, &user.token, "10.00").await;
    let path = format!("/orders/{order_id}");
    let fresh = app.get_after(&path, &user.token, Some(&position)).await;
    assert_eq!(fresh.status(), StatusCode::OK);
    assert!(!fresh.headers().contains_key("orders-stale"));

    // A stored event the views cannot have applied yet: a transaction with an id,
    // held open, keeps the relay's horizon below the next command's. The answer
    // comes after the bound, marked stale.
    let mut horizon = app.pool.begin().await.unwrap();
    sqlx::query("SELECT pg_current_xact_id()")
        .execute(&mut *horizon)
        .await
        .unwrap();
    let (_, held_back) = place(&app, &user.token, "11.00").await;
    let started = Instant::now();
    let stale = app
        .get_after("/orders", &user.token, Some(&held_back))
        .await;
    assert_eq!(stale.status(), StatusCode::OK);
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(stale.headers()["orders-stale"], "true");
    assert_eq!(
        stale.json::<Value>().await.unwrap()["items"][0]["order_id"],
        order_id.to_string()
    );
    horizon.rollback().await.unwrap();

    // A place that names no stored event (ahead of the log, or made up) is never
    // reached: 400 at once rather than a wait for nothing.
    let (tx_id, global_position) = held_back.split_once('.').unwrap();
    for never in [
        "999999999999.1".to_owned(),
        format!(
            "{tx_id}.{}",
            global_position.parse::<i64>().unwrap() + 1_000
        ),
        format!("{}.{global_position}", tx_id.parse::<u64>().unwrap() + 1),
    ] {
        let ahead = app.get_after("/orders", &user.token, Some(&never)).await;
        assert_eq!(ahead.status(), StatusCode::BAD_REQUEST, "{never}");
        assert!(problem(ahead).await["detail"]
            .as_str()
            .unwrap()
            .contains("names no event"));
    }

    let malformed = app.get_after(&path, &user.token, Some("yesterday")).await;
    assert_eq!(malformed.status(), StatusCode::BAD_REQUEST);
    assert!(problem(malformed).await["detail"]
        .as_str()
        .unwrap()
        .contains("Orders-Min-Position"));
}

/// The log stream's messages as the projectors read them.
async fn log_records(jetstream: &async_nats::jetstream::Context) -> Vec<LogRecord> {
    let mut stream = jetstream.get_stream(LOG_STREAM).await.unwrap();
    let last = stream.info().await.unwrap().state.last_sequence;
    let mut records = Vec::new();
    for sequence in 1..=last {
        let message = stream.get_raw_message(sequence).await.unwrap();
        let event = LogEvent::decode(&message.headers, &message.payload).unwrap();
        records.push(LogRecord::from_log_event(sequence, event).unwrap());
    }
    records
}

/// Waits until the relay has every stored event in the stream and every view has
/// applied the whole stream.
async fn caught_up(app: &TestApp) {
    let jetstream = &app.log.as_ref().unwrap().jetstream;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let lag = orders_projectors::lag::measure(&app.pool, jetstream)
            .await
            .unwrap();
        if lag.relay_behind == 0 && lag.views.iter().all(|view| view.behind == 0) {
            return;
        }
        assert!(Instant::now() < deadline, "not caught up: {lag}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Some users with orders, target changes, pauses, cancellations and price checks.
async fn workload(app: &TestApp, users: usize) {
    for _ in 0..users {
        let user = app.signed_up_user().await;
        for round in 0..3 {
            let (order_id, _) = place(app, &user.token, "1000.00").await;
            let path = format!("/orders/{order_id}");
            observe(app, order_id, "1200.00").await;
            fail_check(app, order_id).await;
            observe(app, order_id, "990.00").await;
            match round {
                0 => {
                    let response = app
                        .post_json(&format!("{path}/pause"), &json!({}), Some(&user.token))
                        .await;
                    assert_eq!(response.status(), StatusCode::NO_CONTENT);
                }
                1 => {
                    let response = app
                        .http
                        .delete(app.url(&path))
                        .bearer_auth(&user.token)
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(response.status(), StatusCode::NO_CONTENT);
                }
                _ => {}
            }
        }
    }
}

/// The shop's part of the workload: a product with two units, bought three times
/// (confirmed then shipped, rejected for want of stock, cancelled), each settled by
/// the saga's step.
async fn shop_workload(app: &TestApp) {
    use orders_application::purchases::{
        cancel_own_purchase, place_purchase, set_purchase_status, AdministratorStatus,
        PlacePurchase, PurchasePlacement,
    };
    use orders_domain::purchase::PurchaseLine;
    let events = &app.state.events;
    let price = orders_domain::money::Money::parse("9.99", Currency::USD).unwrap();
    let product_id = orders_test_support::shop::product(events, price, 2)
        .await
        .unwrap();
    let email = format!("buyer-{}@example.com", Uuid::now_v7().simple());
    let buyer = orders_test_support::shop::verified_user(events, &email, None)
        .await
        .unwrap();
    let saga = orders_workers::saga::Saga::new(events.clone(), Duration::from_secs(30));
    let metadata = CommandMetadata::new_job("cli:test-fixture");
    let mut purchases = Vec::new();
    for quantity in [1, 2, 1] {
        let placed = place_purchase(
            events,
            PlacePurchase {
                owner: buyer,
                lines: vec![PurchaseLine {
                    product_id,
                    quantity,
                }],
                credentials_version: None,
            },
            &metadata,
        )
        .await
        .unwrap();
        let PurchasePlacement::Created { purchase_id, .. } = placed else {
            panic!("a new purchase");
        };
        saga.settle(purchase_id, &metadata).await.unwrap();
        purchases.push(purchase_id);
    }
    set_purchase_status(
        events,
        purchases[0],
        AdministratorStatus::Shipped,
        &metadata,
    )
    .await
    .unwrap();
    cancel_own_purchase(events, buyer, purchases[2], &metadata)
        .await
        .unwrap();
    for purchase_id in [purchases[0], purchases[2]] {
        saga.settle(purchase_id, &metadata).await.unwrap();
    }
}

/// A view's tables as text, in key order, to compare two builds of it.
async fn contents(pool: &PgPool, view: View) -> Vec<String> {
    let mut tables = Vec::new();
    for table in view.tables() {
        let text: Option<String> = sqlx::query_scalar(&format!(
            "SELECT json_agg(t ORDER BY t::text)::text FROM {table} t"
        ))
        .fetch_one(pool)
        .await
        .unwrap();
        tables.push(text.unwrap_or_default());
    }
    tables
}

#[tokio::test]
async fn a_batch_delivered_twice_or_to_two_projectors_is_applied_once() {
    // The log, without projectors: this test drives them itself.
    let app = spawn_app().await;
    workload(&app, 2).await;
    let log = start_log_with(&app.pool, false).await;
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let records = loop {
        let records = log_records(&log.jetstream).await;
        if records.len() as i64 == stored {
            break records;
        }
        assert!(Instant::now() < deadline, "the relay did not catch up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let pool = fresh_database().await;
    let projector = Projector::new(
        pool.clone(),
        log.jetstream.clone(),
        View::AdminOverview,
        Generation::Live,
    );
    let applied = projector
        .apply_batch(Checkpoint::default(), &records)
        .await
        .unwrap();
    let Applied::Advanced(checkpoint) = applied else {
        panic!("a first delivery is applied: {applied:?}");
    };
    assert_eq!(checkpoint.stream_sequence, records.len() as u64);
    let once = contents(&pool, View::AdminOverview).await;
    // Delivered again (a redelivery, or a second projector that read the same batch):
    // refused by the checkpoint, nothing changes.
    let again = projector
        .apply_batch(Checkpoint::default(), &records)
        .await
        .unwrap();
    assert_eq!(again, Applied::Moved(checkpoint));
    assert_eq!(contents(&pool, View::AdminOverview).await, once);
    let counters: Vec<(String, i64)> =
        sqlx::query_as("SELECT metric, value FROM view_admin_overview ORDER BY metric")
            .fetch_all(&pool)
            .await
            .unwrap();
    let counter = |name: &str| {
        counters
            .iter()
            .find(|(metric, _)| metric == name)
            .map_or(0, |(_, value)| *value)
    };
    assert_eq!(counter("users_registered"), 2);
    assert_eq!(counter("orders_placed"), 6);
    assert_eq!(counter("orders_active"), 2);
    assert_eq!(counter("orders_paused"), 2);
    assert_eq!(counter("orders_cancelled"), 2);
    assert_eq!(counter("price_changes"), 12);
    assert_eq!(counter("targets_reached"), 6);

    // Two projectors of every view following the log at once, in small batches,
    // into another database: each view still counts every event once.
    let racing = fresh_database().await;
    let last = records.len() as u64;
    let mut tasks = Vec::new();
    for view in View::ALL {
        for _ in 0..2 {
            let projector = Projector::new(
                racing.clone(),
                log.jetstream.clone(),
                view,
                Generation::Live,
            )
            .with_batch_size(3);
            tasks.push(tokio::spawn(
                async move { projector.follow(Some(last)).await },
            ));
        }
    }
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    assert_eq!(contents(&racing, View::AdminOverview).await, once);
    let orders: i64 = sqlx::query_scalar("SELECT count(*) FROM view_orders")
        .fetch_one(&racing)
        .await
        .unwrap();
    assert_eq!(orders, 6);
    let points: i64 = sqlx::query_scalar("SELECT count(*) FROM view_price_history")
        .fetch_one(&racing)
        .await
        .unwrap();
    assert_eq!(points, 12);
}

async fn every_view(pool: &PgPool) -> Vec<Vec<String>> {
    let mut views = Vec::new();
    for view in View::ALL {
        views.push(contents(pool, view).await);
    }
    views
}

async fn replay_all(pool: &PgPool, jetstream: &async_nats::jetstream::Context, batch_size: usize) {
    for view in View::ALL {
        let report = orders_projectors::replay::replay(pool, jetstream, view, batch_size)
            .await
            .unwrap();
        assert_eq!(report.view, view);
    }
}

#[tokio::test]
async fn a_replay_rebuilds_every_view_equal_to_the_live_one_while_it_serves() {
    let app = spawn_app_with_log().await;
    let jetstream = app.log.as_ref().unwrap().jetstream.clone();
    workload(&app, 4).await;
    shop_workload(&app).await;
    caught_up(&app).await;
    let live = every_view(&app.pool).await;
    assert!(live.iter().flatten().all(|table| !table.is_empty()));
    replay_all(&app.pool, &jetstream, 7).await;
    assert_eq!(every_view(&app.pool).await, live, "rebuilt from the log");

    // Replays again, while a user keeps placing orders and reading them back.
    let user = app.signed_up_user().await;
    let replays = {
        let pool = app.pool.clone();
        let jetstream = jetstream.clone();
        tokio::spawn(async move { replay_all(&pool, &jetstream, 7).await })
    };
    let mut placed_during = 0;
    while !replays.is_finished() || placed_during < 5 {
        let (order_id, position) = place(&app, &user.token, "50.00").await;
        placed_during += 1;
        let order = app
            .get_fresh_json(&format!("/orders/{order_id}"), &user.token, &position)
            .await;
        assert_eq!(order["status"], "active");
    }
    replays.await.unwrap();
    caught_up(&app).await;
    let orders: i64 = sqlx::query_scalar("SELECT count(*) FROM view_orders")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(orders, 12 + placed_during);
    let live = every_view(&app.pool).await;
    replay_all(&app.pool, &jetstream, 1000).await;
    assert_eq!(
        every_view(&app.pool).await,
        live,
        "rebuilt after a replay under load"
    );
}
