//! The audit routes: only for the roles `admin` and `auditor`, read on every request
//! (a revoked role takes effect at once); pages and filters.

use orders_domain::user::{Role, User, UserCommand};
use orders_store::event_store::CommandMetadata;
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
    app.state
        .events
        .execute::<User>(
            &user_id.to_string(),
            command,
            &CommandMetadata::new_job("cli:operator@test"),
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

/// Polls an admin list until `ready` holds (the views follow the log).
async fn list_until(
    app: &TestApp,
    path: &str,
    token: &str,
    ready: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let response = get(app, path, Some(token)).await;
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        let page: Value = response.json().await.unwrap();
        if ready(&page) {
            return page;
        }
        assert!(std::time::Instant::now() < deadline, "{path}: {page}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn admins_list_users_and_orders_and_change_roles_as_admin_for_the_user() {
    let app = crate::helpers::spawn_app_with_log().await;
    let admin = app.signed_up_user().await;
    let shopper = app.signed_up_user().await;
    let other = app.signed_up_user().await;
    for _ in 0..2 {
        app.placed_order(&shopper.token).await;
    }
    let others_order = app.placed_order(&other.token).await;
    set_role(
        &app,
        admin.user_id,
        UserCommand::GrantRole { role: Role::Admin },
    )
    .await;

    // Users: filtered by e-mail and role, a page at a time.
    let found = list_until(
        &app,
        &format!(
            "/admin/users?email={}",
            &shopper.email[5..37].to_uppercase()
        ),
        &admin.token,
        |page| page["items"].as_array().unwrap().len() == 1,
    )
    .await;
    assert_eq!(found["items"][0]["user_id"], shopper.user_id.to_string());
    let admins = list_until(&app, "/admin/users?role=admin", &admin.token, |page| {
        page["items"].as_array().unwrap().len() == 1
    })
    .await;
    assert_eq!(admins["items"][0]["roles"], serde_json::json!(["admin"]));
    let first = list_until(&app, "/admin/users?limit=2", &admin.token, |page| {
        page["next_cursor"].is_string()
    })
    .await;
    let cursor = first["next_cursor"].as_str().unwrap();
    let rest: Value = get(
        &app,
        &format!("/admin/users?limit=2&cursor={cursor}"),
        Some(&admin.token),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(
        rest["items"].as_array().unwrap().len(),
        1,
        "three users in all"
    );

    // Orders: everyone's, or one owner's.
    let all = list_until(&app, "/admin/orders", &admin.token, |page| {
        page["items"].as_array().unwrap().len() == 3
    })
    .await;
    assert!(all["items"]
        .as_array()
        .unwrap()
        .iter()
        .any(|order| order["order_id"] == others_order.to_string()));
    let theirs: Value = get(
        &app,
        &format!("/admin/orders?owner={}", shopper.user_id),
        Some(&admin.token),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(theirs["items"].as_array().unwrap().len(), 2);
    assert!(theirs["items"]
        .as_array()
        .unwrap()
        .iter()
        .all(|order| order["owner_id"] == shopper.user_id.to_string()));
    for (query, field) in [
        ("status=lost", "status"),
        ("owner=me", "owner"),
        ("limit=0", "limit"),
    ] {
        let response = get(&app, &format!("/admin/orders?{query}"), Some(&admin.token)).await;
        assert_eq!(
            response.status(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "{query}"
        );
        assert_eq!(problem(response).await["field"], field);
    }

    // An admin grants a role: recorded as the admin acting for the user.
    let roles = format!("/admin/users/{}/roles", shopper.user_id);
    let granted = app
        .post_json(
            &roles,
            &serde_json::json!({"role": "auditor", "action": "grant"}),
            Some(&admin.token),
        )
        .await;
    assert_eq!(granted.status(), StatusCode::NO_CONTENT);
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
    // The new auditor reads the admin views, but may not change roles.
    assert_eq!(
        get(&app, "/admin/users", Some(&shopper.token))
            .await
            .status(),
        StatusCode::OK
    );
    let refused = app
        .post_json(
            &format!("/admin/users/{}/roles", other.user_id),
            &serde_json::json!({"role": "admin", "action": "grant"}),
            Some(&shopper.token),
        )
        .await;
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    // A plain user reads nothing.
    for path in ["/admin/users", "/admin/orders"] {
        assert_eq!(
            get(&app, path, Some(&other.token)).await.status(),
            StatusCode::FORBIDDEN
        );
    }
    // Mistakes name themselves; an unknown user is not found.
    let bad = app
        .post_json(
            &roles,
            &serde_json::json!({"role": "owner", "action": "grant"}),
            Some(&admin.token),
        )
        .await;
    assert_eq!(bad.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(problem(bad).await["field"], "role");
    let nobody = app
        .post_json(
            &format!("/admin/users/{}/roles", Uuid::now_v7()),
            &serde_json::json!({"role": "auditor", "action": "grant"}),
            Some(&admin.token),
        )
        .await;
    assert_eq!(nobody.status(), StatusCode::NOT_FOUND);
}

/// Every route of the OpenAPI document that takes an id, tried with another user's
/// token: not found (never forbidden, never done); every admin route tried with a
/// user's token: forbidden. Routes added later are swept too.
#[tokio::test]
async fn every_id_route_hides_other_users_data_and_every_admin_route_needs_a_role() {
    let app = spawn_app().await;
    let owner = app.signed_up_user().await;
    let other = app.signed_up_user().await;
    let order_id = app.placed_order(&owner.token).await;
    let document: Value = get(&app, "/openapi.json", None).await.json().await.unwrap();
    let paths = document["paths"].as_object().unwrap();
    let events_before: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    let mut swept = 0;
    for (template, operations) in paths {
        let admin = template.starts_with("/admin/");
        if !admin && !template.contains("{id}") {
            continue;
        }
        let path = template
            .replace("{id}", &order_id.to_string())
            .replace("{aggregate_type}", "order")
            .replace("{correlation_id}", &Uuid::now_v7().to_string())
            .replace("{actor}", &format!("user:{}", owner.user_id));
        for method in operations.as_object().unwrap().keys() {
            let request = match method.as_str() {
                "get" => app.http.get(app.url(&path)),
                "post" => app.http.post(app.url(&path)).json(&serde_json::json!({"role": "admin", "action": "grant", "target_price": "1.00"})),
                "patch" => app.http.patch(app.url(&path)).json(&serde_json::json!({"target_price": "1.00"})),
                "delete" => app.http.delete(app.url(&path)),
                other => panic!("a {other} route: add it to this sweep"),
            };
            let response = request.bearer_auth(&other.token).send().await.unwrap();
            let expected = if admin {
                StatusCode::FORBIDDEN
            } else {
                StatusCode::NOT_FOUND
            };
            assert_eq!(response.status(), expected, "{method} {template}");
            swept += 1;
        }
    }
    // 7 order routes and 6 admin routes today.
    assert!(swept >= 13, "only {swept} routes swept");
    let events_after: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(events_after, events_before, "nothing was stored");
}
