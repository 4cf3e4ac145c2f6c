//! Tracking orders through the API: the walk-through of the brief, the rules, the
//! errors, idempotency, and what lands in the event store.

use reqwest::StatusCode;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::helpers::{position_of, problem, spawn_app, spawn_app_with_log};

fn order_body() -> Value {
    json!({"url": "http://127.0.0.1:8000/product", "target_price": "3199.00", "currency": "UAH"})
}

#[tokio::test]
async fn an_order_is_placed_changed_paused_resumed_and_cancelled() {
    let app = spawn_app_with_log().await;
    let user = app.signed_up_user().await;
    let placed = app.place_order(&user.token, &order_body()).await;
    assert_eq!(placed.status(), StatusCode::CREATED);
    let position = placed.headers()["orders-position"]
        .to_str()
        .unwrap()
        .to_owned();
    let location = placed.headers()["location"].to_str().unwrap().to_owned();
    let order_id = placed.json::<Value>().await.unwrap()["order_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(location, format!("/orders/{order_id}"));
    assert!(
        position.contains('.'),
        "an opaque <tx>.<position> token: {position}"
    );

    let order = app.get_fresh_json(&location, &user.token, &position).await;
    assert_eq!(order["status"], "active");
    assert_eq!(order["target_price"], "3199.00");
    assert_eq!(order["currency"], "UAH");
    assert_eq!(order["check_interval_secs"], 3600);

    let changed = app
        .http
        .patch(app.url(&location))
        .bearer_auth(&user.token)
        .json(&json!({"target_price": "2999.5"}))
        .send()
        .await
        .unwrap();
    assert_eq!(changed.status(), StatusCode::NO_CONTENT);
    assert!(changed.headers().contains_key("orders-position"));

    let pause = app
        .post_json(&format!("{location}/pause"), &json!({}), Some(&user.token))
        .await;
    assert_eq!(pause.status(), StatusCode::NO_CONTENT);
    let pause_again = app
        .post_json(&format!("{location}/pause"), &json!({}), Some(&user.token))
        .await;
    assert_eq!(pause_again.status(), StatusCode::CONFLICT);
    let resume = app
        .post_json(&format!("{location}/resume"), &json!({}), Some(&user.token))
        .await;
    assert_eq!(resume.status(), StatusCode::NO_CONTENT);
    let cancel = app
        .http
        .delete(app.url(&location))
        .bearer_auth(&user.token)
        .send()
        .await
        .unwrap();
    assert_eq!(cancel.status(), StatusCode::NO_CONTENT);
    let cancelled_at = position_of(&cancel);
    let change_cancelled = app
        .http
        .patch(app.url(&location))
        .bearer_auth(&user.token)
        .json(&json!({"target_price": "100"}))
        .send()
        .await
        .unwrap();
    assert_eq!(change_cancelled.status(), StatusCode::CONFLICT);
    let resume_cancelled = app
        .post_json(&format!("{location}/resume"), &json!({}), Some(&user.token))
        .await;
    assert_eq!(resume_cancelled.status(), StatusCode::CONFLICT);

    let order = app
        .get_fresh_json(&location, &user.token, &cancelled_at)
        .await;
    assert_eq!(order["status"], "cancelled");
    assert_eq!(order["target_price"], "2999.50");

    // Every event of the walk-through, in the event store, attributed.
    let rows: Vec<(String, i64, String, Value)> = sqlx::query_as(
        "SELECT event_type, global_position, tx_id::text, metadata FROM events
          WHERE aggregate_type = 'order' AND aggregate_id = $1 ORDER BY sequence",
    )
    .bind(&order_id)
    .fetch_all(&app.pool)
    .await
    .unwrap();
    let types: Vec<&str> = rows.iter().map(|row| row.0.as_str()).collect();
    assert_eq!(
        types,
        [
            "OrderPlaced",
            "TargetChanged",
            "OrderPaused",
            "OrderResumed",
            "OrderCancelled"
        ]
    );
    for (_, global_position, tx_id, metadata) in &rows {
        assert!(*global_position > 0);
        assert!(tx_id.parse::<u64>().is_ok());
        assert_eq!(metadata["actor"], format!("user:{}", user.user_id));
        for key in ["correlation_id", "causation_id", "request_id"] {
            assert!(
                metadata[key].as_str().unwrap().parse::<Uuid>().is_ok(),
                "{key}"
            );
        }
    }
    // Positions grow with the sequence, and the first command's token names its event.
    assert!(rows.windows(2).all(|pair| pair[0].1 < pair[1].1));
    assert_eq!(position, format!("{}.{}", rows[0].2, rows[0].1));
}

#[tokio::test]
async fn the_callers_correlation_id_is_recorded_on_the_events_it_causes() {
    let app = spawn_app().await;
    let user = app.signed_up_user().await;
    let correlation_id = Uuid::now_v7();
    let response = app
        .http
        .post(app.url("/orders"))
        .bearer_auth(&user.token)
        .header("x-correlation-id", correlation_id.to_string())
        .json(&order_body())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(
        response.headers()["x-correlation-id"],
        correlation_id.to_string().as_str()
    );
    let request_id = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let metadata: Value =
        sqlx::query_scalar("SELECT metadata FROM events WHERE event_type = 'OrderPlaced'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(metadata["correlation_id"], correlation_id.to_string());
    assert_eq!(metadata["request_id"], request_id);
    assert_eq!(metadata["causation_id"], request_id);
}

#[tokio::test]
async fn another_users_order_is_not_found_and_a_bad_token_is_401() {
    let app = spawn_app().await;
    let owner = app.signed_up_user().await;
    let other = app.signed_up_user().await;
    let order_id = app.placed_order(&owner.token).await;
    let path = format!("/orders/{order_id}");

    let read = app
        .http
        .get(app.url(&path))
        .bearer_auth(&other.token)
        .send()
        .await
        .unwrap();
    assert_eq!(read.status(), StatusCode::NOT_FOUND);
    let change = app
        .http
        .patch(app.url(&path))
        .bearer_auth(&other.token)
        .json(&json!({"target_price": "1.00"}))
        .send()
        .await
        .unwrap();
    assert_eq!(change.status(), StatusCode::NOT_FOUND);
    for action in ["pause", "resume"] {
        let response = app
            .post_json(&format!("{path}/{action}"), &json!({}), Some(&other.token))
            .await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{action}");
    }
    let cancel = app
        .http
        .delete(app.url(&path))
        .bearer_auth(&other.token)
        .send()
        .await
        .unwrap();
    assert_eq!(cancel.status(), StatusCode::NOT_FOUND);
    // An order that does not exist at all answers the same.
    let missing = app
        .http
        .get(app.url(&format!("/orders/{}", Uuid::now_v7())))
        .bearer_auth(&other.token)
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    assert_eq!(app.count_events("OrderPaused").await, 0);
    assert_eq!(app.count_events("OrderCancelled").await, 0);

    for token in ["not-a-jwt", "eyJhbGciOiJIUzI1NiJ9.e30.c2lnbmF0dXJl"] {
        let response = app
            .http
            .get(app.url(&path))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    }
    let anonymous = app
        .http
        .post(app.url("/orders"))
        .json(&order_body())
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(anonymous.headers()["www-authenticate"], "Bearer");
    assert_eq!(problem(anonymous).await["status"], 401);
}

#[tokio::test]
async fn bad_input_gets_a_problem_naming_the_field_and_stores_nothing() {
    let app = spawn_app().await;
    let user = app.signed_up_user().await;
    let cases = [
        (
            json!({"url": "http://x.example/p", "target_price": "12.345", "currency": "UAH"}),
            "target_price",
        ),
        (
            json!({"url": "http://x.example/p", "target_price": 12.5, "currency": "UAH"}),
            "target_price",
        ),
        (
            json!({"url": "http://x.example/p", "target_price": "-1", "currency": "UAH"}),
            "target_price",
        ),
        (
            json!({"url": "http://x.example/p", "target_price": "0", "currency": "UAH"}),
            "target_price",
        ),
        (
            json!({"url": "http://x.example/p", "target_price": "12", "currency": "XXY"}),
            "currency",
        ),
        (
            json!({"url": "ftp://x.example/p", "target_price": "12", "currency": "UAH"}),
            "url",
        ),
        (
            json!({"url": "not a url", "target_price": "12", "currency": "UAH"}),
            "url",
        ),
        (
            json!({"url": "http://x.example/p", "target_price": "12", "currency": "UAH", "check_interval_secs": 299}),
            "check_interval_secs",
        ),
        (
            json!({"url": "http://x.example/p", "target_price": "12", "currency": "UAH", "check_interval_secs": -5}),
            "check_interval_secs",
        ),
        (
            json!({"url": "http://x.example/p", "target_price": "12", "currency": "UAH", "colour": "red"}),
            "colour",
        ),
        (json!({"target_price": "12", "currency": "UAH"}), "url"),
    ];
    for (body, field) in cases {
        let response = app.place_order(&user.token, &body).await;
        assert_eq!(
            response.status(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "{body}"
        );
        let problem = problem(response).await;
        assert_eq!(problem["field"], field, "{body}: {problem}");
        assert_eq!(problem["status"], 422);
    }
    // Not JSON, or no body at all: 400.
    for raw in ["", "{\"url\": ", "[1, 2]"] {
        let response = app
            .http
            .post(app.url("/orders"))
            .bearer_auth(&user.token)
            .header("content-type", "application/json")
            .body(raw)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{raw:?}");
        assert_eq!(problem(response).await["status"], 400);
    }
    // Over 64 KiB: 413.
    let huge = json!({"url": format!("http://x.example/{}", "a".repeat(70 * 1024)), "target_price": "1", "currency": "UAH"});
    let response = app.place_order(&user.token, &huge).await;
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(problem(response).await["status"], 413);
    assert_eq!(app.count_events("OrderPlaced").await, 0);
}

#[tokio::test]
async fn a_retried_post_with_the_same_idempotency_key_creates_nothing_new() {
    let app = spawn_app().await;
    let user = app.signed_up_user().await;
    let key = Uuid::new_v4().to_string();
    let send = |body: Value| {
        app.http
            .post(app.url("/orders"))
            .bearer_auth(&user.token)
            .header("idempotency-key", key.clone())
            .json(&body)
            .send()
    };
    let first = send(order_body()).await.unwrap();
    assert_eq!(first.status(), StatusCode::CREATED);
    let first_id = first.json::<Value>().await.unwrap()["order_id"].clone();
    let retry = send(order_body()).await.unwrap();
    assert_eq!(retry.status(), StatusCode::CREATED);
    assert_eq!(retry.headers()["idempotent-replayed"], "true");
    assert!(retry.headers().contains_key("orders-position"));
    assert_eq!(retry.json::<Value>().await.unwrap()["order_id"], first_id);
    // The same key for a different order is a client mistake.
    let mut different = order_body();
    different["target_price"] = json!("1.00");
    let misuse = send(different).await.unwrap();
    assert_eq!(problem(misuse).await["field"], "Idempotency-Key");
    assert_eq!(app.count_events("OrderPlaced").await, 1);

    // Keys are per user: another user may use the same one.
    let other = app.signed_up_user().await;
    let theirs = app
        .http
        .post(app.url("/orders"))
        .bearer_auth(&other.token)
        .header("idempotency-key", key.clone())
        .json(&order_body())
        .send()
        .await
        .unwrap();
    assert_eq!(theirs.status(), StatusCode::CREATED);
    assert_ne!(theirs.json::<Value>().await.unwrap()["order_id"], first_id);
}

#[tokio::test]
async fn concurrent_retries_with_one_idempotency_key_store_one_order() {
    let app = spawn_app().await;
    let user = app.signed_up_user().await;
    let key = Uuid::new_v4().to_string();
    let attempts = (0..10).map(|_| {
        app.http
            .post(app.url("/orders"))
            .bearer_auth(&user.token)
            .header("idempotency-key", key.clone())
            .json(&order_body())
            .send()
    });
    let responses = futures::future::join_all(attempts).await;
    let mut ids = Vec::new();
    for response in responses {
        let response = response.unwrap();
        assert_eq!(response.status(), StatusCode::CREATED);
        ids.push(response.json::<Value>().await.unwrap()["order_id"].clone());
    }
    ids.dedup();
    assert_eq!(ids.len(), 1);
    assert_eq!(app.count_events("OrderPlaced").await, 1);
}

#[tokio::test]
async fn a_user_may_have_at_most_100_active_orders() {
    let app = spawn_app().await;
    let user = app.signed_up_user().await;
    let mut first = None;
    for _ in 0..100 {
        let id = app.placed_order(&user.token).await;
        first.get_or_insert(id);
    }
    let refused = app.place_order(&user.token, &order_body()).await;
    assert_eq!(refused.status(), StatusCode::CONFLICT);
    assert_eq!(app.count_events("OrderPlaced").await, 100);
    // Cancelling one frees a place.
    let cancel = app
        .http
        .delete(app.url(&format!("/orders/{}", first.unwrap())))
        .bearer_auth(&user.token)
        .send()
        .await
        .unwrap();
    assert_eq!(cancel.status(), StatusCode::NO_CONTENT);
    let placed = app.place_order(&user.token, &order_body()).await;
    assert_eq!(placed.status(), StatusCode::CREATED);
}

#[tokio::test]
async fn an_order_stored_in_the_old_v1_shape_is_upcast_when_loaded() {
    let app = spawn_app_with_log().await;
    let user = app.signed_up_user().await;
    let order_id = Uuid::now_v7();
    // OrderPlaced 1.0 kept the target flat, as the HTTP body had it.
    let v1_payload = json!({"OrderPlaced": {
        "order_id": order_id, "owner": user.user_id, "url": "https://shop.example.com/p/1",
        "target_price": "1299.00", "currency": "UAH", "check_interval_secs": 900, "selector": null
    }});
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
         VALUES ('order', $1, 1, 'OrderPlaced', '1.0', $2, $3)",
    )
    .bind(order_id.to_string())
    .bind(&v1_payload)
    .bind(json!({"actor": format!("user:{}", user.user_id), "correlation_id": order_id.to_string(),
                 "causation_id": order_id.to_string(), "request_id": order_id.to_string()}))
    .execute(&app.pool)
    .await
    .unwrap();

    // Commands on it work, appending to the old stream (the aggregate upcasts it) ...
    let pause = app
        .post_json(
            &format!("/orders/{order_id}/pause"),
            &json!({}),
            Some(&user.token),
        )
        .await;
    assert_eq!(pause.status(), StatusCode::NO_CONTENT);
    // ... and the view, built from the log, reads it in today's shape too.
    let order = app
        .get_fresh_json(
            &format!("/orders/{order_id}"),
            &user.token,
            &position_of(&pause),
        )
        .await;
    assert_eq!(order["target_price"], "1299.00");
    assert_eq!(order["currency"], "UAH");
    assert_eq!(order["check_interval_secs"], 900);
    assert_eq!(order["status"], "paused");
    // The stored event itself is never rewritten.
    let stored: (String, Value) = sqlx::query_as(
        "SELECT event_version, payload FROM events WHERE aggregate_id = $1 AND sequence = 1",
    )
    .bind(order_id.to_string())
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(stored, ("1.0".to_owned(), v1_payload));
}

#[tokio::test]
async fn racing_placements_never_take_a_user_past_100_active_orders() {
    let app = spawn_app().await;
    let user = app.signed_up_user().await;
    for _ in 0..90 {
        app.placed_order(&user.token).await;
    }
    let body = order_body();
    let racers = (0..20).map(|_| app.place_order(&user.token, &body));
    let statuses: Vec<StatusCode> = futures::future::join_all(racers)
        .await
        .into_iter()
        .map(|response| response.status())
        .collect();
    let created = statuses
        .iter()
        .filter(|s| **s == StatusCode::CREATED)
        .count();
    let refused = statuses
        .iter()
        .filter(|s| **s == StatusCode::CONFLICT)
        .count();
    assert_eq!((created, refused), (10, 10), "{statuses:?}");
    assert_eq!(app.count_events("OrderPlaced").await, 100);
}

#[tokio::test]
async fn two_instances_keep_the_limit_and_free_places_between_them() {
    let first = spawn_app().await;
    let second = crate::helpers::spawn_second_instance(&first).await;
    let user = first.signed_up_user().await;
    let mut on_second = Vec::new();
    for _ in 0..60 {
        first.placed_order(&user.token).await;
    }
    for _ in 0..40 {
        on_second.push(second.placed_order(&user.token).await);
    }
    // The first instance last saw 60 active orders; the guard knows there are 100.
    let refused = first.place_order(&user.token, &order_body()).await;
    assert_eq!(refused.status(), StatusCode::CONFLICT);
    assert_eq!(first.count_events("OrderPlaced").await, 100);

    // A place freed through the second instance is usable through the first, which
    // last saw 100.
    let cancel = second
        .http
        .delete(second.url(&format!("/orders/{}", on_second[0])))
        .bearer_auth(&user.token)
        .send()
        .await
        .unwrap();
    assert_eq!(cancel.status(), StatusCode::NO_CONTENT);
    let placed = first.place_order(&user.token, &order_body()).await;
    assert_eq!(placed.status(), StatusCode::CREATED);
    let refused_again = second.place_order(&user.token, &order_body()).await;
    assert_eq!(refused_again.status(), StatusCode::CONFLICT);
}

#[tokio::test]
async fn the_placement_guard_agrees_with_the_event_log() {
    let app = spawn_app().await;
    let user = app.signed_up_user().await;
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(app.placed_order(&user.token).await);
    }
    for id in &ids[..2] {
        let cancel = app
            .http
            .delete(app.url(&format!("/orders/{id}")))
            .bearer_auth(&user.token)
            .send()
            .await
            .unwrap();
        assert_eq!(cancel.status(), StatusCode::NO_CONTENT);
    }
    // Recomputed from the events alone, as a rebuild would.
    let from_events: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM events placed
          WHERE placed.event_type = 'OrderPlaced'
            AND placed.payload -> 'OrderPlaced' ->> 'owner' = $1
            AND NOT EXISTS (SELECT 1 FROM events cancelled
                             WHERE cancelled.event_type = 'OrderCancelled'
                               AND cancelled.aggregate_id = placed.aggregate_id)",
    )
    .bind(user.user_id.to_string())
    .fetch_one(&app.pool)
    .await
    .unwrap();
    let guard: (i32, bool) = sqlx::query_as(
        "SELECT active_orders, deactivated FROM placement_guards WHERE user_id = $1",
    )
    .bind(user.user_id.to_string())
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(from_events, 3);
    assert_eq!(guard, (3, false));
}

#[tokio::test]
async fn a_retry_of_the_request_that_placed_the_100th_order_gets_that_order_back() {
    let app = spawn_app().await;
    let user = app.signed_up_user().await;
    for _ in 0..99 {
        app.placed_order(&user.token).await;
    }
    let send = || {
        app.http
            .post(app.url("/orders"))
            .bearer_auth(&user.token)
            .header("idempotency-key", "the-hundredth")
            .json(&order_body())
            .send()
    };
    let first = send().await.unwrap();
    assert_eq!(first.status(), StatusCode::CREATED);
    let first_id = first.json::<Value>().await.unwrap()["order_id"].clone();
    let retry = send().await.unwrap();
    assert_eq!(retry.status(), StatusCode::CREATED);
    assert_eq!(retry.json::<Value>().await.unwrap()["order_id"], first_id);
    // A new placement is refused.
    assert_eq!(
        app.place_order(&user.token, &order_body()).await.status(),
        StatusCode::CONFLICT
    );
}

#[tokio::test]
async fn check_now_requests_one_check_at_a_time_and_never_for_a_cancelled_order() {
    let app = spawn_app().await;
    let user = app.signed_up_user().await;
    let other = app.signed_up_user().await;
    let order_id = app.placed_order(&user.token).await;
    let check = format!("/orders/{order_id}/check");

    let first = app.post_json(&check, &json!({}), Some(&user.token)).await;
    assert_eq!(first.status(), StatusCode::ACCEPTED);
    assert!(first.headers().contains_key("orders-position"));
    let first: Value = first.json().await.unwrap();
    assert_eq!(first["already_in_flight"], false);
    let check_id = first["check_id"].as_str().unwrap().to_owned();

    // While it is in flight, asking again is accepted and requests nothing new.
    let again = app.post_json(&check, &json!({}), Some(&user.token)).await;
    assert_eq!(again.status(), StatusCode::ACCEPTED);
    let again: Value = again.json().await.unwrap();
    assert_eq!(again["already_in_flight"], true);
    assert_eq!(again["check_id"], Value::Null);
    assert_eq!(app.count_events("PriceCheckRequested").await, 1);
    let stored: (String, Value) = sqlx::query_as(
        "SELECT aggregate_id, payload -> 'PriceCheckRequested' FROM events
          WHERE event_type = 'PriceCheckRequested'",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(stored.0, check_id);
    assert_eq!(stored.1["order_id"], order_id.to_string());
    assert_eq!(stored.1["trigger"], "manual");

    // Another user's order is not found; nothing is requested.
    let theirs = app.post_json(&check, &json!({}), Some(&other.token)).await;
    assert_eq!(theirs.status(), StatusCode::NOT_FOUND);
    assert_eq!(app.count_events("PriceCheckRequested").await, 1);

    // A paused order may be checked when its owner asks; a cancelled one never.
    let paused_id = app.placed_order(&user.token).await;
    let pause = app
        .post_json(
            &format!("/orders/{paused_id}/pause"),
            &json!({}),
            Some(&user.token),
        )
        .await;
    assert_eq!(pause.status(), StatusCode::NO_CONTENT);
    let paused_check = app
        .post_json(
            &format!("/orders/{paused_id}/check"),
            &json!({}),
            Some(&user.token),
        )
        .await;
    assert_eq!(paused_check.status(), StatusCode::ACCEPTED);
    let cancelled_id = app.placed_order(&user.token).await;
    let cancel = app
        .http
        .delete(app.url(&format!("/orders/{cancelled_id}")))
        .bearer_auth(&user.token)
        .send()
        .await
        .unwrap();
    assert_eq!(cancel.status(), StatusCode::NO_CONTENT);
    let cancelled_check = app
        .post_json(
            &format!("/orders/{cancelled_id}/check"),
            &json!({}),
            Some(&user.token),
        )
        .await;
    assert_eq!(cancelled_check.status(), StatusCode::CONFLICT);
    assert_eq!(app.count_events("PriceCheckRequested").await, 2);
}
