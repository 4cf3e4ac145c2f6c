//! The audit routes: only for the roles `admin` and `auditor`, read on every request
//! (a revoked role takes effect at once); pages and filters.

use orders_command_api::event_store::CommandMetadata;
use orders_domain::user::{Role, User, UserCommand};
use reqwest::StatusCode;
use serde_json::Value;
use uuid::Uuid;

use crate::helpers::{problem, spawn_app, TestApp};

async fn get(app: &TestApp, path: &str, token: Option<&str>) -> reqwest::Response {
    let mut request = app.http.get(app.url(path));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.unwrap()
}

async fn set_role(app: &TestApp, user_id: Uuid, command: UserCommand) {
    let request = Uuid::now_v7();
    app.state
        .events
        .execute::<User>(
            &user_id.to_string(),
            command,
            &CommandMetadata {
                actor: "cli:operator@test".to_owned(),
                correlation_id: request,
                causation_id: request.to_string(),
                request_id: request,
                idempotency_key: None,
            },
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn the_audit_routes_answer_auditors_and_admins_only_and_see_a_revocation_at_once() {
    let app = spawn_app().await;
    let shopper = app.signed_up_user().await;
    let auditor = app.signed_up_user().await;
    let order_id = app.placed_order(&shopper.token).await;
    let actor = format!("user:{}", shopper.user_id);
    let routes = [
        format!("/admin/audit/order/{order_id}"),
        format!("/admin/audit/actor/{actor}"),
        format!("/admin/audit/trace/{}", Uuid::now_v7()),
    ];

    // Without a token: 401; with a user's token: 403, theirs as anyone's.
    for route in &routes {
        assert_eq!(
            get(&app, route, None).await.status(),
            StatusCode::UNAUTHORIZED,
            "{route}"
        );
        for token in [&shopper.token, &auditor.token] {
            assert_eq!(
                get(&app, route, Some(token)).await.status(),
                StatusCode::FORBIDDEN,
                "{route}"
            );
        }
    }

    // An auditor (and an admin) reads the trail.
    set_role(
        &app,
        auditor.user_id,
        UserCommand::GrantRole {
            role: Role::Auditor,
        },
    )
    .await;
    for route in &routes {
        assert_eq!(
            get(&app, route, Some(&auditor.token)).await.status(),
            StatusCode::OK,
            "{route}"
        );
    }
    let history: Value = get(&app, &routes[0], Some(&auditor.token))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(history["entries"][0]["event_type"], "OrderPlaced");
    assert_eq!(history["entries"][0]["actor"], actor);
    let by_shopper: Value = get(&app, &routes[1], Some(&auditor.token))
        .await
        .json()
        .await
        .unwrap();
    let types: Vec<&str> = by_shopper["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| entry["event_type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["UserRegistered", "OrderPlaced"]);

    // Pages and filters.
    let first: Value = get(
        &app,
        &format!("{}?limit=1", routes[1]),
        Some(&auditor.token),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(first["entries"].as_array().unwrap().len(), 1);
    let after = first["next_after"].as_i64().expect("a second page");
    let second: Value = get(
        &app,
        &format!("{}?limit=1&after={after}", routes[1]),
        Some(&auditor.token),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(second["entries"][0]["event_type"], "OrderPlaced");
    assert_eq!(second["next_after"], Value::Null);
    let placed_only: Value = get(
        &app,
        &format!("{}?type=OrderPlaced", routes[1]),
        Some(&auditor.token),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(placed_only["entries"].as_array().unwrap().len(), 1);
    let future: Value = get(
        &app,
        &format!("{}?since=2999-01-01T00:00:00Z", routes[1]),
        Some(&auditor.token),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(future["entries"], serde_json::json!([]));
    for (query, field) in [
        ("limit=0", "limit"),
        ("since=yesterday", "since"),
        ("after=-1", "after"),
    ] {
        let response = get(
            &app,
            &format!("{}?{query}", routes[1]),
            Some(&auditor.token),
        )
        .await;
        assert_eq!(
            response.status(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "{query}"
        );
        assert_eq!(problem(response).await["field"], field, "{query}");
    }
    let unknown = get(
        &app,
        &format!("/admin/audit/order/{}", Uuid::now_v7()),
        Some(&auditor.token),
    )
    .await;
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);

    // Revoked: the same token is refused on its next request.
    set_role(
        &app,
        auditor.user_id,
        UserCommand::RevokeRole {
            role: Role::Auditor,
        },
    )
    .await;
    assert_eq!(
        get(&app, &routes[0], Some(&auditor.token)).await.status(),
        StatusCode::FORBIDDEN
    );
    set_role(
        &app,
        auditor.user_id,
        UserCommand::GrantRole { role: Role::Admin },
    )
    .await;
    assert_eq!(
        get(&app, &routes[0], Some(&auditor.token)).await.status(),
        StatusCode::OK
    );
}
