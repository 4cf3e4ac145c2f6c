//! The shop's routes against a real PostgreSQL and log: the catalog's
//! administration and public reads, purchases' placement rules, ownership,
//! transitions and their 409s. The saga's step runs in process
//! (`orders_workers::saga::Saga::settle`), as `serve workers` runs it.

use std::time::Duration;

use orders_domain::ids::{PurchaseId, UserId};
use orders_domain::user::Role;
use orders_store::event_store::CommandMetadata;
use orders_workers::saga::Saga;
use reqwest::StatusCode;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::helpers::{position_of, problem, spawn_app_with_log, TestApp};
use crate::live::LiveConnection;

/// A verified user (with `role`, if given) and an access token of theirs.
async fn user(app: &TestApp, role: Option<Role>) -> (UserId, String) {
    let email = format!("shopper-{}@example.com", Uuid::now_v7().simple());
    let user_id = orders_test_support::shop::verified_user(&app.state.events, &email, role)
        .await
        .unwrap();
    (user_id, app.state.access_tokens.issue(user_id, 0).unwrap())
}

async fn send(
    app: &TestApp,
    method: reqwest::Method,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> reqwest::Response {
    let mut request = app.http.request(method, app.url(path)).bearer_auth(token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    request.send().await.unwrap()
}

/// Adds a product as `admin`; its id and the answer's position.
async fn add_product(
    app: &TestApp,
    admin: &str,
    sku: &str,
    price: &str,
    stock: u64,
) -> (String, String) {
    let body = json!({"sku": sku, "name": format!("Kettle {sku}"), "price": price,
                      "currency": "USD", "stock": stock, "description": "Boils water"});
    let answer = send(
        app,
        reqwest::Method::POST,
        "/admin/products",
        admin,
        Some(body),
    )
    .await;
    assert_eq!(answer.status(), StatusCode::CREATED);
    let position = position_of(&answer);
    let created: Value = answer.json().await.unwrap();
    (created["product_id"].as_str().unwrap().to_owned(), position)
}

async fn buy(app: &TestApp, token: &str, items: Value) -> reqwest::Response {
    send(
        app,
        reqwest::Method::POST,
        "/purchases",
        token,
        Some(json!({"items": items})),
    )
    .await
}

async fn settle(app: &TestApp, purchase_id: &str) {
    let saga = Saga::new(app.state.events.clone(), Duration::from_secs(30));
    saga.settle(
        purchase_id.parse::<PurchaseId>().unwrap(),
        &CommandMetadata::new_job("system:saga"),
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn administrators_manage_the_catalog_and_everyone_reads_it() {
    let app = spawn_app_with_log().await;
    let (_, admin) = user(&app, Some(Role::Admin)).await;
    let (_, shopper) = user(&app, None).await;
    let (kettle, position) = add_product(&app, &admin, "KETTLE-1", "29.99", 5).await;

    // Public reads, without a token.
    let listed: Value = app
        .http
        .get(app.url("/products?q=kettle"))
        .header("orders-min-position", &position)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed["items"][0]["product_id"], json!(kettle));
    assert_eq!(listed["items"][0]["price"], "29.99");
    assert_eq!(listed["items"][0]["available"], 5);

    // A shopper may not; the same SKU in another case is taken.
    let refused = send(
        &app,
        reqwest::Method::POST,
        "/admin/products",
        &shopper,
        Some(json!({"sku": "X-1", "name": "X", "price": "1", "currency": "USD"})),
    )
    .await;
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    let taken = send(
        &app,
        reqwest::Method::POST,
        "/admin/products",
        &admin,
        Some(json!({"sku": "kettle-1", "name": "Other", "price": "1", "currency": "USD"})),
    )
    .await;
    assert_eq!(taken.status(), StatusCode::CONFLICT);
    let bad_price = send(
        &app,
        reqwest::Method::POST,
        "/admin/products",
        &admin,
        Some(json!({"sku": "X-2", "name": "X", "price": "1.234", "currency": "USD"})),
    )
    .await;
    assert_eq!(problem(bad_price).await["field"], "price");

    // Re-price, restock, and the public page follows.
    let path = format!("/admin/products/{kettle}");
    let changed = send(
        &app,
        reqwest::Method::PATCH,
        &path,
        &admin,
        Some(json!({"price": "24.50", "name": "Kettle deluxe"})),
    )
    .await;
    assert_eq!(changed.status(), StatusCode::NO_CONTENT);
    let restocked = send(
        &app,
        reqwest::Method::POST,
        &format!("{path}/stock"),
        &admin,
        Some(json!({"quantity": 3, "reason": "delivery"})),
    )
    .await;
    assert_eq!(restocked.status(), StatusCode::NO_CONTENT);
    let position = position_of(&restocked);
    let product: Value = app
        .get_fresh_json(&format!("/products/{kettle}"), &shopper, &position)
        .await;
    assert_eq!(
        (product["price"].as_str(), product["available"].as_i64()),
        (Some("24.50"), Some(8))
    );
    assert_eq!(product["name"], "Kettle deluxe");

    // Retired: gone from the list, still readable, no longer changeable.
    let retired = send(&app, reqwest::Method::DELETE, &path, &admin, None).await;
    assert_eq!(retired.status(), StatusCode::NO_CONTENT);
    let position = position_of(&retired);
    let listed = app.get_fresh_json("/products", &shopper, &position).await;
    assert_eq!(listed["items"], json!([]));
    let product = app
        .get_fresh_json(&format!("/products/{kettle}"), &shopper, &position)
        .await;
    assert_eq!(product["status"], "retired");
    let again = send(&app, reqwest::Method::DELETE, &path, &admin, None).await;
    assert_eq!(again.status(), StatusCode::CONFLICT);
    let unknown = send(
        &app,
        reqwest::Method::PATCH,
        &format!("/admin/products/{}", Uuid::now_v7()),
        &admin,
        Some(json!({"name": "x"})),
    )
    .await;
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn concurrent_additions_of_one_sku_store_one_product() {
    let app = spawn_app_with_log().await;
    let (_, admin) = user(&app, Some(Role::Admin)).await;
    let attempts = (0..10).map(|n| {
        let body =
            json!({"sku": "RACE-1", "name": format!("Racer {n}"), "price": "1", "currency": "USD"});
        send(
            &app,
            reqwest::Method::POST,
            "/admin/products",
            &admin,
            Some(body),
        )
    });
    let answers = futures::future::join_all(attempts).await;
    let created = answers
        .iter()
        .filter(|a| a.status() == StatusCode::CREATED)
        .count();
    let conflicts = answers
        .iter()
        .filter(|a| a.status() == StatusCode::CONFLICT)
        .count();
    assert_eq!((created, conflicts), (1, 9));
    assert_eq!(app.count_events("ProductAdded").await, 1);
}

#[tokio::test]
async fn buying_needs_a_verified_address_and_valid_lines() {
    let app = spawn_app_with_log().await;
    let (_, admin) = user(&app, Some(Role::Admin)).await;
    let (kettle, _) = add_product(&app, &admin, "KETTLE-2", "10", 5).await;
    let (mug, _) = add_product(&app, &admin, "MUG-2", "3", 5).await;

    let unverified = app.signed_up_user().await;
    let answer = buy(
        &app,
        &unverified.token,
        json!([{"product_id": kettle, "quantity": 1}]),
    )
    .await;
    assert_eq!(answer.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        problem(answer).await["type"],
        "/problems/email-not-verified"
    );

    let (_, buyer) = user(&app, None).await;
    let cases = [
        (json!([]), "items"),
        (
            json!([{"product_id": kettle, "quantity": 1}, {"product_id": mug, "quantity": 1},
                {"product_id": kettle, "quantity": 2}]),
            "items[2].product_id",
        ),
        (
            json!([{"product_id": kettle, "quantity": 1001}]),
            "items[0].quantity",
        ),
        (
            json!([{"product_id": kettle, "quantity": 0}]),
            "items[0].quantity",
        ),
        (
            json!([{"product_id": "not-an-id", "quantity": 1}]),
            "items[0].product_id",
        ),
    ];
    for (items, field) in cases {
        let answer = buy(&app, &buyer, items.clone()).await;
        assert_eq!(answer.status(), StatusCode::UNPROCESSABLE_ENTITY, "{items}");
        assert_eq!(problem(answer).await["field"], field, "{items}");
    }
    let many: Vec<Value> = (0..51)
        .map(|_| json!({"product_id": Uuid::now_v7(), "quantity": 1}))
        .collect();
    assert_eq!(
        buy(&app, &buyer, json!(many)).await.status(),
        StatusCode::UNPROCESSABLE_ENTITY
    );
    assert_eq!(
        app.count_events("PurchasePlaced").await,
        0,
        "nothing stored"
    );
}

#[tokio::test]
async fn a_purchase_is_confirmed_shipped_and_delivered_and_its_steps_are_attributed() {
    let app = spawn_app_with_log().await;
    let (admin_id, admin) = user(&app, Some(Role::Admin)).await;
    let (buyer_id, buyer) = user(&app, None).await;
    let (kettle, _) = add_product(&app, &admin, "KETTLE-3", "29.99", 5).await;
    let (mug, _) = add_product(&app, &admin, "MUG-3", "4.50", 5).await;

    let placed = buy(
        &app,
        &buyer,
        json!([{"product_id": kettle, "quantity": 2},
                                         {"product_id": mug, "quantity": 1}]),
    )
    .await;
    assert_eq!(placed.status(), StatusCode::CREATED);
    let location = placed.headers()["location"].to_str().unwrap().to_owned();
    let position = position_of(&placed);
    let created: Value = placed.json().await.unwrap();
    assert_eq!(created["status"], "pending");
    let purchase_id = created["purchase_id"].as_str().unwrap().to_owned();
    assert_eq!(location, format!("/purchases/{purchase_id}"));
    let pending = app.get_fresh_json(&location, &buyer, &position).await;
    assert_eq!(pending["status"], "pending");

    // Shipping a pending purchase is refused, naming its status.
    let status_path = format!("/admin/purchases/{purchase_id}/status");
    let early = send(
        &app,
        reqwest::Method::POST,
        &status_path,
        &admin,
        Some(json!({"status": "shipped"})),
    )
    .await;
    assert_eq!(early.status(), StatusCode::CONFLICT);
    assert!(problem(early).await["detail"]
        .as_str()
        .unwrap()
        .contains("pending"));

    settle(&app, &purchase_id).await;
    for (status, next) in [("shipped", "delivered"), ("delivered", "")] {
        let answer = send(
            &app,
            reqwest::Method::POST,
            &status_path,
            &admin,
            Some(json!({"status": status})),
        )
        .await;
        assert_eq!(answer.status(), StatusCode::NO_CONTENT, "{status}");
        if next.is_empty() {
            let position = position_of(&answer);
            let delivered = app.get_fresh_json(&location, &buyer, &position).await;
            assert_eq!(delivered["status"], "delivered");
            assert_eq!(delivered["total"], "64.48");
            assert_eq!(delivered["currency"], "USD");
            assert_eq!(delivered["lines"][0]["unit_price"], "29.99");
            assert_eq!(delivered["lines"][0]["line_total"], "59.98");
            let steps: Vec<(&str, &str)> = delivered["history"]
                .as_array()
                .unwrap()
                .iter()
                .map(|step| {
                    (
                        step["status"].as_str().unwrap(),
                        step["actor"].as_str().unwrap(),
                    )
                })
                .collect();
            let buyer_actor = format!("user:{buyer_id}");
            let admin_actor = format!("user:{admin_id}");
            assert_eq!(
                steps,
                vec![
                    ("pending", buyer_actor.as_str()),
                    ("confirmed", "system:saga"),
                    ("shipped", admin_actor.as_str()),
                    ("delivered", admin_actor.as_str()),
                ]
            );
        }
    }
    // Delivered is final: no cancel, by anyone.
    let late = send(
        &app,
        reqwest::Method::POST,
        &format!("/purchases/{purchase_id}/cancel"),
        &buyer,
        None,
    )
    .await;
    assert_eq!(late.status(), StatusCode::CONFLICT);
    assert!(problem(late).await["detail"]
        .as_str()
        .unwrap()
        .contains("delivered"));
    settle(&app, &purchase_id).await;
    let product = app
        .get_fresh_json(
            &format!("/admin/products/{kettle}"),
            &admin,
            &position_of(
                &send(
                    &app,
                    reqwest::Method::POST,
                    &format!("/admin/products/{kettle}/stock"),
                    &admin,
                    Some(json!({"quantity": 1, "reason": "found one"})),
                )
                .await,
            ),
        )
        .await;
    assert_eq!(
        (product["on_hand"].as_i64(), product["reserved"].as_i64()),
        (Some(4), Some(0))
    );
}

#[tokio::test]
async fn cancelling_releases_the_stock_and_others_cannot_see_or_cancel() {
    let app = spawn_app_with_log().await;
    let (_, admin) = user(&app, Some(Role::Admin)).await;
    let (_, buyer) = user(&app, None).await;
    let (_, stranger) = user(&app, None).await;
    let (kettle, _) = add_product(&app, &admin, "KETTLE-4", "10", 3).await;
    let placed = buy(&app, &buyer, json!([{"product_id": kettle, "quantity": 3}])).await;
    let purchase_id = placed.json::<Value>().await.unwrap()["purchase_id"]
        .as_str()
        .unwrap()
        .to_owned();
    settle(&app, &purchase_id).await;

    // Stock below what is reserved: 409.
    let below = send(
        &app,
        reqwest::Method::POST,
        &format!("/admin/products/{kettle}/stock"),
        &admin,
        Some(json!({"quantity": -1, "reason": "damaged"})),
    )
    .await;
    assert_eq!(below.status(), StatusCode::CONFLICT);

    let path = format!("/purchases/{purchase_id}");
    assert_eq!(
        send(&app, reqwest::Method::GET, &path, &stranger, None)
            .await
            .status(),
        StatusCode::NOT_FOUND
    );
    let theirs = send(
        &app,
        reqwest::Method::POST,
        &format!("{path}/cancel"),
        &stranger,
        None,
    )
    .await;
    assert_eq!(theirs.status(), StatusCode::NOT_FOUND);

    let cancelled = send(
        &app,
        reqwest::Method::POST,
        &format!("{path}/cancel"),
        &buyer,
        None,
    )
    .await;
    assert_eq!(cancelled.status(), StatusCode::NO_CONTENT);
    settle(&app, &purchase_id).await;
    let again = send(
        &app,
        reqwest::Method::POST,
        &format!("{path}/cancel"),
        &buyer,
        None,
    )
    .await;
    assert_eq!(again.status(), StatusCode::CONFLICT);
    let position = position_of(
        &send(
            &app,
            reqwest::Method::POST,
            &format!("/admin/products/{kettle}/stock"),
            &admin,
            Some(json!({"quantity": 1, "reason": "count"})),
        )
        .await,
    );
    let product = app
        .get_fresh_json(&format!("/products/{kettle}"), &buyer, &position)
        .await;
    assert_eq!(product["available"], 4);
    let mine = app
        .get_fresh_json("/purchases?status=cancelled", &buyer, &position)
        .await;
    assert_eq!(mine["items"][0]["purchase_id"], json!(purchase_id));
    let admin_list = app
        .get_fresh_json("/admin/purchases?status=cancelled", &admin, &position)
        .await;
    assert_eq!(admin_list["items"].as_array().unwrap().len(), 1);
    assert_eq!(
        send(&app, reqwest::Method::GET, "/admin/purchases", &buyer, None)
            .await
            .status(),
        StatusCode::FORBIDDEN
    );
}

#[tokio::test]
async fn a_retried_purchase_with_its_idempotency_key_buys_once() {
    let app = spawn_app_with_log().await;
    let (_, admin) = user(&app, Some(Role::Admin)).await;
    let (_, buyer) = user(&app, None).await;
    let (kettle, _) = add_product(&app, &admin, "KETTLE-5", "10", 3).await;
    let body = json!({"items": [{"product_id": kettle, "quantity": 1}]});
    let mut ids = Vec::new();
    for _ in 0..2 {
        let answer = app
            .http
            .post(app.url("/purchases"))
            .bearer_auth(&buyer)
            .header("Idempotency-Key", "buy-once")
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), StatusCode::CREATED);
        ids.push(answer.json::<Value>().await.unwrap()["purchase_id"].clone());
    }
    assert_eq!(ids[0], ids[1]);
    let other = json!({"items": [{"product_id": kettle, "quantity": 2}]});
    let reused = app
        .http
        .post(app.url("/purchases"))
        .bearer_auth(&buyer)
        .header("Idempotency-Key", "buy-once")
        .json(&other)
        .send()
        .await
        .unwrap();
    assert_eq!(reused.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(app.count_events("PurchasePlaced").await, 1);
}

#[tokio::test]
async fn the_buyer_follows_a_purchase_live_and_nobody_else_does() {
    let app = spawn_app_with_log().await;
    let (_, admin) = user(&app, Some(Role::Admin)).await;
    let (_, buyer) = user(&app, None).await;
    let (_, stranger) = user(&app, None).await;
    let (kettle, start) = add_product(&app, &admin, "KETTLE-6", "10", 3).await;
    let mut buyers_feed = LiveConnection::open(&app, &buyer, None, Some(&start)).await;
    let mut strangers_feed = LiveConnection::open(&app, &stranger, None, Some(&start)).await;

    let placed = buy(&app, &buyer, json!([{"product_id": kettle, "quantity": 1}])).await;
    let purchase_id = placed.json::<Value>().await.unwrap()["purchase_id"]
        .as_str()
        .unwrap()
        .to_owned();
    settle(&app, &purchase_id).await;
    let shipped = send(
        &app,
        reqwest::Method::POST,
        &format!("/admin/purchases/{purchase_id}/status"),
        &admin,
        Some(json!({"status": "shipped"})),
    )
    .await;
    assert_eq!(shipped.status(), StatusCode::NO_CONTENT);
    settle(&app, &purchase_id).await;

    let mut seen = Vec::new();
    while seen.len() < 5 {
        let event = buyers_feed
            .next(Duration::from_secs(10))
            .await
            .expect("the buyer's events");
        seen.push(event.event.unwrap());
    }
    assert_eq!(
        seen,
        [
            "PurchasePlaced",
            "StockReserved",
            "PurchaseConfirmed",
            "PurchaseShipped",
            "StockShipped"
        ]
    );
    assert!(strangers_feed
        .next(Duration::from_millis(300))
        .await
        .is_none());
}

#[tokio::test]
async fn analytics_count_purchases_and_revenue_net_of_cancellations() {
    let app = spawn_app_with_log().await;
    let (_, admin) = user(&app, Some(Role::Admin)).await;
    let (_, buyer) = user(&app, None).await;
    let (kettle, _) = add_product(&app, &admin, "KETTLE-7", "10.00", 5).await;
    let mut purchases = Vec::new();
    for quantity in [1, 2, 9] {
        let placed = buy(
            &app,
            &buyer,
            json!([{"product_id": kettle, "quantity": quantity}]),
        )
        .await;
        let id = placed.json::<Value>().await.unwrap()["purchase_id"]
            .as_str()
            .unwrap()
            .to_owned();
        settle(&app, &id).await;
        purchases.push(id);
    }
    let cancelled = send(
        &app,
        reqwest::Method::POST,
        &format!("/purchases/{}/cancel", purchases[1]),
        &buyer,
        None,
    )
    .await;
    let position = position_of(&cancelled);
    settle(&app, &purchases[1]).await;

    let today = chrono::Utc::now().date_naive().to_string();
    let range = format!("?from={today}&to={today}");
    let days = app
        .get_fresh_json(
            &format!("/admin/analytics/orders-per-day{range}"),
            &admin,
            &position,
        )
        .await;
    let counts = &days["items"][0]["purchases"];
    assert_eq!(
        (
            &counts["placed"],
            &counts["confirmed"],
            &counts["rejected"],
            &counts["cancelled"]
        ),
        (&json!(3), &json!(2), &json!(1), &json!(1))
    );
    let revenue = app
        .get_fresh_json(
            &format!("/admin/analytics/revenue{range}&currency=USD"),
            &admin,
            &position,
        )
        .await;
    assert_eq!(
        revenue["items"],
        json!([{"day": today, "currency": "USD", "amount": "10.00"}])
    );
    let mix = app
        .get_fresh_json("/admin/analytics/status-distribution", &admin, &position)
        .await;
    let of = |status: &str| {
        mix["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|item| item["status"] == status)
            .unwrap()["purchases"]
            .clone()
    };
    assert_eq!(
        (
            of("confirmed"),
            of("rejected"),
            of("cancelled"),
            of("pending")
        ),
        (json!(1), json!(1), json!(1), json!(0))
    );

    let backwards = send(
        &app,
        reqwest::Method::GET,
        "/admin/analytics/revenue?from=2026-02-01&to=2026-01-01",
        &admin,
        None,
    )
    .await;
    assert_eq!(problem(backwards).await["field"], "from");
    let shopper = send(
        &app,
        reqwest::Method::GET,
        "/admin/analytics/status-distribution",
        &buyer,
        None,
    )
    .await;
    assert_eq!(shopper.status(), StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn a_tracking_order_can_follow_a_catalog_product() {
    let app = spawn_app_with_log().await;
    let (_, admin) = user(&app, Some(Role::Admin)).await;
    let (_, shopper) = user(&app, None).await;
    let (kettle, _) = add_product(&app, &admin, "KETTLE-8", "40.00", 5).await;

    let cases = [
        (
            json!({"product_id": Uuid::now_v7(), "target_price": "30"}),
            "product_id",
        ),
        (
            json!({"product_id": kettle, "target_price": "30", "currency": "EUR"}),
            "currency",
        ),
        (
            json!({"product_id": kettle, "target_price": "30.001"}),
            "target_price",
        ),
        (
            json!({"product_id": kettle, "target_price": "30", "selector": ".price"}),
            "selector",
        ),
        (
            json!({"product_id": kettle, "url": "https://shop.example/p", "target_price": "30"}),
            "product_id",
        ),
        (json!({"target_price": "30", "currency": "USD"}), "url"),
    ];
    for (body, field) in cases {
        let answer = app.place_order(&shopper, &body).await;
        assert_eq!(answer.status(), StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert_eq!(problem(answer).await["field"], field, "{body}");
    }

    let placed = app
        .place_order(
            &shopper,
            &json!({"product_id": kettle, "target_price": "30.00"}),
        )
        .await;
    assert_eq!(placed.status(), StatusCode::CREATED);
    let position = position_of(&placed);
    let order_id = placed.json::<Value>().await.unwrap()["order_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let order = app
        .get_fresh_json(&format!("/orders/{order_id}"), &shopper, &position)
        .await;
    assert_eq!(order["url"], Value::Null);
    assert_eq!(order["product_id"], json!(kettle));
    assert_eq!(order["currency"], "USD");

    // Nothing to scrape: a manual check is refused.
    let check = send(
        &app,
        reqwest::Method::POST,
        &format!("/orders/{order_id}/check"),
        &shopper,
        None,
    )
    .await;
    assert_eq!(check.status(), StatusCode::CONFLICT);

    // Retired products cannot be followed any more.
    send(
        &app,
        reqwest::Method::DELETE,
        &format!("/admin/products/{kettle}"),
        &admin,
        None,
    )
    .await;
    let retired = app
        .place_order(
            &shopper,
            &json!({"product_id": kettle, "target_price": "30.00"}),
        )
        .await;
    assert_eq!(problem(retired).await["field"], "product_id");
}
