//! The console's admin pages as a browser without JavaScript uses them, and the
//! JSON routes they share their reads with: a shopper's 403 page, the dashboard's
//! counts per day, users and role changes, every order, the event log viewer with
//! its filters, an event's envelope, a trace, `audit verify` and the dead letters.

use orders_application::accounts::{change_role, RoleChange};
use orders_domain::ids::UserId;
use orders_domain::user::Role;
use orders_store::event_store::CommandMetadata;
use reqwest::StatusCode;
use serde_json::Value;
use uuid::Uuid;

use crate::console::{csrf_of, location, signed_up, Browser, PASSWORD};
use crate::helpers::{spawn_app_with_log, Session, TestApp};
use orders_test_support::wait::eventually;

/// An account with `role`, and a console browser signed in as it.
async fn signed_in_with(app: &TestApp, role: Role) -> (Session, Browser) {
    let session = app.signed_up_user().await;
    change_role(
        &app.state.events,
        UserId::from_uuid(session.user_id),
        RoleChange::Grant(role),
        &CommandMetadata::new_job("test:setup"),
    )
    .await
    .unwrap();
    let mut browser = Browser::new(app);
    let form = browser.get_page("/app/login").await;
    let csrf = csrf_of(&form);
    let response = browser
        .post(
            "/app/login",
            &[
                ("_csrf", &csrf),
                ("email", &session.email),
                ("password", PASSWORD),
                ("next", "/app/admin/"),
            ],
            None,
        )
        .await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&response), "/app/admin/");
    (session, browser)
}

async fn json(app: &TestApp, path: &str, token: &str) -> Value {
    let response = app
        .http
        .get(app.url(path))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK, "GET {path}");
    response.json().await.unwrap()
}

const ADMIN_PAGES: [&str; 6] = [
    "/app/admin/",
    "/app/admin/users",
    "/app/admin/orders",
    "/app/admin/events",
    "/app/admin/trace/0193a000-0000-7000-8000-000000000000",
    "/app/admin/dead-letters",
];

#[tokio::test]
async fn a_shopper_gets_the_403_page_on_every_admin_page_and_changes_nothing() {
    let app = spawn_app_with_log().await;
    let (mut shopper, _) = signed_up(&app).await;
    for path in ADMIN_PAGES {
        let response = shopper.get(path).await;
        assert_eq!(response.status(), StatusCode::FORBIDDEN, "{path}");
        let page = response.text().await.unwrap();
        assert!(page.contains("Not for this account"), "{path}: {page}");
    }
    let home = shopper.get_page("/app/").await;
    assert!(!home.contains("/app/admin/"), "no admin link for a shopper");
    let csrf = csrf_of(&home);
    let victim = app.signed_up_user().await;
    let response = shopper
        .post(
            &format!("/app/admin/users/{}/roles", victim.user_id),
            &[("_csrf", &csrf), ("role", "admin"), ("action", "grant")],
            None,
        )
        .await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    for path in ["/app/admin/verify", "/app/admin/dead-letters/1/retry"] {
        let response = shopper.post(path, &[("_csrf", &csrf)], None).await;
        assert_eq!(response.status(), StatusCode::FORBIDDEN, "{path}");
    }
    assert_eq!(app.count_events("RoleGranted").await, 0);
}

#[tokio::test]
async fn an_administrator_sees_the_day_changes_a_role_and_lists_every_order() {
    let app = spawn_app_with_log().await;
    let shopper = app.signed_up_user().await;
    let order_id = app.placed_order(&shopper.token).await;
    let (admin, mut browser) = signed_in_with(&app, Role::Admin).await;

    // The day's counts come from the view: wait until it has the order.
    let today = chrono::Utc::now().date_naive().to_string();
    let dashboard = eventually(
        std::time::Duration::from_secs(20),
        "the dashboard counts the order",
        || async {
            let dashboard = json(&app, "/admin/analytics/dashboard", &admin.token).await;
            (dashboard["totals"]["orders_placed"] == 1).then_some(dashboard)
        },
    )
    .await;
    let day = dashboard["days"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(day["day"], today.as_str());
    assert_eq!(day["counts"]["orders_placed"], 1);
    assert_eq!(day["counts"]["users_registered"], 2);
    assert_eq!(dashboard["days"].as_array().unwrap().len(), 14);
    assert_eq!(dashboard["dead_letters"], 0);
    assert!(dashboard["lag"]["views"].as_array().unwrap().len() >= 4);

    let page = browser.get_page("/app/admin/").await;
    assert!(
        page.contains("Orders placed") && page.contains(&today),
        "{page}"
    );
    assert!(page.contains("No dead letters"), "{page}");

    // Search the users and grant a role with the row's button.
    let users = browser
        .get_page(&format!("/app/admin/users?email={}", shopper.email))
        .await;
    assert!(users.contains(&shopper.email), "{users}");
    assert!(
        !users.contains(&format!("data-user=\"{}\"", admin.email)),
        "the search narrows the list"
    );
    let response = browser
        .post(
            &format!("/app/admin/users/{}/roles", shopper.user_id),
            &[
                ("_csrf", &csrf_of(&users)),
                ("role", "auditor"),
                ("action", "grant"),
            ],
            None,
        )
        .await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let after = location(&response);
    assert!(after.starts_with("/app/admin/users?at="), "{after}");
    let users = browser.get_page(&after).await;
    let row = &users[users
        .find(&format!("data-user=\"{}\"", shopper.email))
        .unwrap()..];
    let row = &row[..row.find("</tr>").unwrap()];
    assert!(
        row.contains("auditor") && row.contains("Revoke auditor"),
        "{row}"
    );
    let actor: String = sqlx::query_scalar(
        "SELECT metadata ->> 'actor' FROM events WHERE aggregate_id = $1 AND event_type = 'RoleGranted'",
    )
    .bind(shopper.user_id.to_string())
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(
        actor,
        format!("admin:{} for user:{}", admin.user_id, shopper.user_id)
    );

    // A hand-edited form (a role that does not exist) is the 422 page, nothing done.
    let refused = browser
        .post(
            &format!("/app/admin/users/{}/roles", shopper.user_id),
            &[
                ("_csrf", &csrf_of(&users)),
                ("role", "owner"),
                ("action", "grant"),
            ],
            None,
        )
        .await;
    assert_eq!(refused.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        app.count_events("RoleGranted").await,
        2,
        "the admin's and the auditor's"
    );

    let orders = browser.get_page("/app/admin/orders").await;
    assert!(orders.contains(&order_id.to_string()), "{orders}");
    let paused = browser.get_page("/app/admin/orders?status=paused").await;
    assert!(!paused.contains(&order_id.to_string()), "{paused}");
}

#[tokio::test]
async fn an_auditor_reads_the_admin_pages_but_cannot_change_a_role() {
    let app = spawn_app_with_log().await;
    let shopper = app.signed_up_user().await;
    let (_, mut auditor) = signed_in_with(&app, Role::Auditor).await;
    let users = auditor.get_page("/app/admin/users").await;
    assert!(users.contains(&shopper.email));
    assert!(
        !users.contains("Make admin"),
        "no role buttons for an auditor"
    );
    let response = auditor
        .post(
            &format!("/app/admin/users/{}/roles", shopper.user_id),
            &[
                ("_csrf", &csrf_of(&users)),
                ("role", "admin"),
                ("action", "grant"),
            ],
            None,
        )
        .await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        app.count_events("RoleGranted").await,
        1,
        "only the auditor's"
    );
}

#[tokio::test]
async fn the_event_log_viewer_filters_opens_an_envelope_and_a_trace() {
    let app = spawn_app_with_log().await;
    let shopper = app.signed_up_user().await;
    let correlation_id = Uuid::now_v7();
    let placed = app
        .http
        .post(app.url("/orders"))
        .bearer_auth(&shopper.token)
        .header("x-correlation-id", correlation_id.to_string())
        .json(&serde_json::json!({
            "url": "https://shop.example.com/p/1",
            "target_price": "100.00",
            "currency": "UAH"
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(placed.status(), StatusCode::CREATED);
    let (admin, mut browser) = signed_in_with(&app, Role::Auditor).await;

    // The whole log, newest first: the auditor's own role grant leads.
    let log = browser.get_page("/app/admin/events").await;
    let granted = log.find("data-type=\"RoleGranted\"").unwrap();
    let placed_at = log.find("data-type=\"OrderPlaced\"").unwrap();
    assert!(granted < placed_at, "newest first");

    // Filters: by type, and the same through the JSON route.
    let orders_only = browser.get_page("/app/admin/events?type=OrderPlaced").await;
    assert_eq!(
        orders_only.matches("data-type=").count(),
        1,
        "{orders_only}"
    );
    let through_json = json(&app, "/admin/audit/log?type=OrderPlaced", &admin.token).await;
    let event = &through_json["events"][0];
    assert_eq!(event["event_type"], "OrderPlaced");
    let order_id = event["aggregate_id"].as_str().unwrap().to_owned();
    let by_actor = browser
        .get_page(&format!("/app/admin/events?actor=user:{}", shopper.user_id))
        .await;
    assert!(by_actor.contains("data-type=\"OrderPlaced\""), "{by_actor}");
    assert!(
        !by_actor.contains("data-type=\"RoleGranted\""),
        "{by_actor}"
    );
    let history = browser
        .get_page(&format!(
            "/app/admin/events?aggregate_type=order&aggregate_id={order_id}"
        ))
        .await;
    assert_eq!(history.matches("data-type=").count(), 1, "{history}");
    let refused = browser.get("/app/admin/events?aggregate_type=basket").await;
    assert_eq!(refused.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(refused.text().await.unwrap().contains("aggregate_type"));

    // An event's envelope, and its correlation id's trace.
    let global_position = event["global_position"].as_i64().unwrap();
    let envelope = browser
        .get_page(&format!("/app/admin/events/{global_position}"))
        .await;
    assert!(envelope.contains(&correlation_id.to_string()), "{envelope}");
    assert!(
        envelope.contains("https://shop.example.com/p/1"),
        "{envelope}"
    );
    assert!(envelope.contains(&format!("user:{}", shopper.user_id)));
    let trace = browser
        .get_page(&format!("/app/admin/trace/{correlation_id}"))
        .await;
    assert!(
        trace.contains("data-depth=\"0\"") && trace.contains("OrderPlaced"),
        "{trace}"
    );
    let missing = browser.get("/app/admin/events/999999999").await;
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);

    // audit verify from the page, once the relay has the log.
    eventually(
        std::time::Duration::from_secs(20),
        "the relay publishes the log",
        || async {
            let dashboard = json(&app, "/admin/analytics/dashboard", &admin.token).await;
            (dashboard["lag"]["relay_behind"] == 0).then_some(())
        },
    )
    .await;
    let response = browser
        .post("/app/admin/verify", &[("_csrf", &csrf_of(&log))], None)
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let verified = response.text().await.unwrap();
    assert!(verified.contains("Verified: no stored event"), "{verified}");

    // No dead letters; retrying one that does not exist is a 404.
    let letters = browser.get_page("/app/admin/dead-letters").await;
    assert!(letters.contains("gave up on nothing"), "{letters}");
    assert_eq!(
        json(&app, "/admin/dead-letters", &admin.token).await,
        serde_json::json!([])
    );
}

#[tokio::test]
async fn an_administrator_retries_a_dead_letter_from_its_page_and_an_auditor_cannot() {
    use orders_nats::work::{DEAD_LETTER_REASON_HEADER, DEAD_LETTER_WORKER_HEADER, SCRAPER};
    let app = spawn_app_with_log().await;
    let jetstream = app.log.as_ref().unwrap().jetstream.clone();
    // A message the scraper gave up on, as its consumer writes one.
    let event = orders_nats::LogEvent {
        aggregate_type: "price_check".to_owned(),
        aggregate_id: Uuid::now_v7().to_string(),
        sequence: 1,
        event_type: "PriceCheckRequested".to_owned(),
        event_version: "1.0".to_owned(),
        tx_id: 1_000,
        global_position: 1,
        recorded_at: "2026-12-04T12:00:00.000000Z".to_owned(),
        payload: bytes::Bytes::from_static(b"{}"),
        metadata: std::collections::BTreeMap::from([(
            "correlation_id".to_owned(),
            Uuid::now_v7().to_string(),
        )]),
    };
    let mut headers = event.headers();
    headers.insert(DEAD_LETTER_REASON_HEADER, "the shop's page answered 404");
    headers.insert(DEAD_LETTER_WORKER_HEADER, SCRAPER.name);
    let sequence = jetstream
        .publish_with_headers(
            SCRAPER.dead_letter_subject(&event.event_id()),
            headers,
            event.body(),
        )
        .await
        .unwrap()
        .await
        .unwrap()
        .sequence;

    let (auditor, mut auditors_browser) = signed_in_with(&app, Role::Auditor).await;
    let page = auditors_browser.get_page("/app/admin/dead-letters").await;
    assert!(
        page.contains("the shop&#x27;s page answered 404")
            || page.contains("the shop&#39;s page answered 404"),
        "{page}"
    );
    assert!(!page.contains("/retry"), "no retry button for an auditor");
    let refused = auditors_browser
        .post(
            &format!("/app/admin/dead-letters/{sequence}/retry"),
            &[("_csrf", &csrf_of(&page))],
            None,
        )
        .await;
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    let dashboard = json(&app, "/admin/analytics/dashboard", &auditor.token).await;
    assert_eq!(dashboard["dead_letters"], 1);

    let (admin, mut browser) = signed_in_with(&app, Role::Admin).await;
    let page = browser.get_page("/app/admin/dead-letters").await;
    assert!(
        page.contains(&format!("data-sequence=\"{sequence}\"")),
        "{page}"
    );
    let retried = browser
        .post(
            &format!("/app/admin/dead-letters/{sequence}/retry"),
            &[("_csrf", &csrf_of(&page))],
            None,
        )
        .await;
    assert_eq!(retried.status(), StatusCode::SEE_OTHER);
    let after = browser.get_page(&location(&retried)).await;
    assert!(
        after.contains(&format!("Dead letter {sequence} was put back")),
        "{after}"
    );
    assert!(after.contains("gave up on nothing"), "{after}");
    assert_eq!(
        json(&app, "/admin/dead-letters", &admin.token).await,
        serde_json::json!([])
    );
    // Retrying it again: it is no longer there.
    let again = browser
        .post(
            &format!("/app/admin/dead-letters/{sequence}/retry"),
            &[("_csrf", &csrf_of(&page))],
            None,
        )
        .await;
    assert_eq!(again.status(), StatusCode::NOT_FOUND);
}
