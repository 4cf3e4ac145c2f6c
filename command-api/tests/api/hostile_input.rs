//! What an outside probe sent that once answered 500: control characters where
//! PostgreSQL takes none, concurrent role changes, a selector the scraper cannot
//! use. Each is now a 4xx naming what was wrong, and nothing is stored.

use futures::future::join_all;
use orders_domain::user::{Role, User, UserCommand};
use orders_store::event_store::CommandMetadata;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{problem, spawn_app, Session, TestApp};

async fn events_stored(app: &TestApp) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

async fn admin(app: &TestApp) -> Session {
    let session = app.signed_up_user().await;
    app.state
        .events
        .execute::<User>(
            &session.user_id.to_string(),
            UserCommand::GrantRole { role: Role::Admin },
            &CommandMetadata::new_job("cli:operator@test"),
        )
        .await
        .unwrap();
    session
}

async fn assert_refused_naming(response: reqwest::Response, field: &str) {
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let problem = problem(response).await;
    assert_eq!(problem["field"], field, "{problem}");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("control characters"),
        "{problem}"
    );
}

async fn patch_me(app: &TestApp, user: &Session, body: Value) -> reqwest::Response {
    app.http
        .patch(app.url("/me"))
        .bearer_auth(&user.token)
        .json(&body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_nul_in_a_profile_field_or_a_selector_is_a_422_naming_the_field_and_stores_nothing() {
    let app = spawn_app().await;
    let shopper = app.signed_up_user().await;
    let before = events_stored(&app).await;

    let profile = patch_me(&app, &shopper, json!({"display_name": "Ann\u{0}Smith"})).await;
    assert_refused_naming(profile, "display_name").await;

    for selector in ["span.price\u{0}", "span\u{1b}[31m", "div\u{85}"] {
        let placed = app
            .place_order(
                &shopper.token,
                &json!({"url": "https://shop.example/p/1", "target_price": "10.00",
                        "currency": "EUR", "selector": selector}),
            )
            .await;
        assert_refused_naming(placed, "selector").await;
    }
    assert_eq!(events_stored(&app).await, before);

    // Line breaks and tabs are text, not controls.
    let profile = patch_me(&app, &shopper, json!({"display_name": "Ann\tSmith"})).await;
    assert_eq!(profile.status(), StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn a_nul_in_a_query_filter_or_a_path_segment_is_a_422_naming_the_parameter() {
    let app = spawn_app().await;
    let admin = admin(&app).await;
    for (path, parameter) in [
        ("/admin/users?email=ann%00", "email"),
        ("/admin/users?role=admin&email=%1B", "email"),
        ("/admin/audit/actor/user%3Aann%00", "actor"),
        ("/admin/audit/order/%00", "id"),
        ("/orders?cursor=%7F", "cursor"),
    ] {
        let response = app
            .http
            .get(app.url(path))
            .bearer_auth(&admin.token)
            .send()
            .await
            .unwrap();
        assert_refused_naming(response, parameter).await;
    }
}

#[tokio::test]
async fn concurrent_role_changes_to_one_user_answer_204_or_409_never_500() {
    let app = spawn_app().await;
    let admin = admin(&app).await;
    let target = app.signed_up_user().await;
    let changes = (0..48).map(|i| {
        let (role, action) = match i % 4 {
            0 => ("admin", "grant"),
            1 => ("admin", "revoke"),
            2 => ("auditor", "grant"),
            _ => ("auditor", "revoke"),
        };
        let app = &app;
        let admin = &admin;
        let target = &target;
        async move {
            app.post_json(
                &format!("/admin/users/{}/roles", target.user_id),
                &json!({"role": role, "action": action}),
                Some(&admin.token),
            )
            .await
            .status()
        }
    });
    let statuses = join_all(changes).await;
    for status in &statuses {
        assert!(
            *status == StatusCode::NO_CONTENT || *status == StatusCode::CONFLICT,
            "{statuses:?}"
        );
    }
    assert!(statuses.contains(&StatusCode::NO_CONTENT));
    // Each change was decided on the user as the one before left it: a grant of a
    // role held already (or a revocation of one not held) stores nothing, so the
    // stored events alternate, each one a real change.
    let changes: Vec<(String, Value)> = sqlx::query_as(
        "SELECT event_type, payload FROM events
          WHERE aggregate_id = $1 AND event_type IN ('RoleGranted', 'RoleRevoked')
          ORDER BY sequence",
    )
    .bind(target.user_id.to_string())
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert!(!changes.is_empty());
    for role in ["admin", "auditor"] {
        let of_role: Vec<&str> = changes
            .iter()
            .filter(|(_, payload)| payload.to_string().contains(&format!("\"{role}\"")))
            .map(|(event_type, _)| event_type.as_str())
            .collect();
        assert_eq!(of_role.first(), Some(&"RoleGranted"), "{role}: {of_role:?}");
        for pair in of_role.windows(2) {
            assert_ne!(pair[0], pair[1], "{role}: {of_role:?}");
        }
    }
}

#[tokio::test]
async fn a_selector_that_is_not_valid_css_is_refused_at_placement() {
    let app = spawn_app().await;
    let shopper = app.signed_up_user().await;
    let before = events_stored(&app).await;
    for selector in [
        "span[",
        "..price",
        "div >",
        "#",
        "p:nth-child(",
        ":no-such-pseudo",
    ] {
        let placed = app
            .place_order(
                &shopper.token,
                &json!({"url": "https://shop.example/p/1", "target_price": "10.00",
                        "currency": "EUR", "selector": selector}),
            )
            .await;
        assert_eq!(
            placed.status(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "{selector}"
        );
        let problem: Value = problem(placed).await;
        assert_eq!(problem["field"], "selector", "{problem}");
    }
    assert_eq!(events_stored(&app).await, before);
    let placed = app
        .place_order(
            &shopper.token,
            &json!({"url": "https://shop.example/p/1", "target_price": "10.00",
                    "currency": "EUR", "selector": "div.product > span.price:first-child"}),
        )
        .await;
    assert_eq!(placed.status(), StatusCode::CREATED);
}

#[tokio::test]
async fn passwords_that_only_look_long_or_are_common_are_refused_naming_the_field() {
    let app = spawn_app().await;
    for (i, password) in [
        " ".repeat(12),
        "\u{200B}".repeat(12),
        "z".repeat(40),
        "basketball19".to_owned(),
        "BestFriends4Ever".to_owned(),
    ]
    .iter()
    .enumerate()
    {
        let registered = app
            .register(&format!("weak-{i}@example.com"), password)
            .await;
        assert_eq!(
            registered.status(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "{password:?}"
        );
        assert_eq!(problem(registered).await["field"], "password");
    }
    assert_eq!(app.count_events("UserRegistered").await, 0);
}
