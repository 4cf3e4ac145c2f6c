//! Registration, e-mail verification (and resending its mail), login and its
//! throttling, password reset, the profile.

use chrono::{Duration, Utc};
use futures::future::join_all;
use orders_application::signed_tokens::TokenPurpose;
use orders_domain::ids::UserId;
use orders_domain::user::{User, UserCommand};
use orders_store::event_store::CommandMetadata;
use reqwest::StatusCode;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::helpers::{
    lenient_throttle, problem, spawn_app, spawn_app_with, spawn_second_instance, TestApp,
};

#[tokio::test]
async fn fifty_concurrent_registrations_of_one_address_store_exactly_one_user() {
    let app = spawn_app().await;
    let attempts = (0..50).map(|i| {
        // The same address, in varying case: compared case-insensitively.
        let email = if i % 2 == 0 {
            "Race@Example.com"
        } else {
            "race@example.COM"
        };
        app.register(email, "a long enough password")
    });
    let statuses: Vec<StatusCode> = join_all(attempts)
        .await
        .into_iter()
        .map(|response| response.status())
        .collect();
    let created = statuses
        .iter()
        .filter(|s| **s == StatusCode::CREATED)
        .count();
    let conflicts = statuses
        .iter()
        .filter(|s| **s == StatusCode::CONFLICT)
        .count();
    assert_eq!((created, conflicts), (1, 49), "statuses: {statuses:?}");
    assert_eq!(app.count_events("UserRegistered").await, 1);
}

#[tokio::test]
async fn registration_refuses_bad_addresses_and_weak_passwords_naming_the_field() {
    let app = spawn_app().await;
    let bad_email = problem(
        app.register("not-an-address", "a long enough password")
            .await,
    )
    .await;
    assert_eq!(bad_email["status"], 422);
    assert_eq!(bad_email["field"], "email");
    let short = problem(app.register("ann@example.com", "short").await).await;
    assert_eq!(short["field"], "password");
    let common = problem(app.register("ann@example.com", "passwordpassword").await).await;
    assert_eq!(common["field"], "password");
    assert_eq!(app.count_events("UserRegistered").await, 0);
}

#[tokio::test]
async fn a_registered_user_logs_in_and_sees_their_profile() {
    let app = spawn_app().await;
    let registered = app
        .register("Ann@Example.com", "a long enough password")
        .await;
    assert_eq!(registered.status(), StatusCode::CREATED);
    assert_eq!(registered.headers()["location"], "/me");
    assert!(registered.headers().contains_key("orders-position"));
    let user_id = registered.json::<Value>().await.unwrap()["user_id"].clone();

    // The e-mail is compared case-insensitively at login too.
    let login = app.login("ann@example.com", "a long enough password").await;
    assert_eq!(login.status(), StatusCode::OK);
    let body: Value = login.json().await.unwrap();
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 3600);
    let token = body["access_token"].as_str().unwrap();

    let me: Value = app
        .http
        .get(app.url("/me"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["user_id"], user_id);
    assert_eq!(me["email"], "Ann@Example.com");
    assert_eq!(me["email_verified"], false);
    assert_eq!(me["notification_preferences"]["price_alerts"], true);
}

#[tokio::test]
async fn unknown_address_and_wrong_password_get_the_same_answer_after_the_same_work() {
    let app = spawn_app().await;
    app.register("ann@example.com", "a long enough password")
        .await;
    let verifications_before = app.state.metrics.password_verifications.get();

    let wrong_password = app.login("ann@example.com", "not the right password").await;
    let unknown_email = app
        .login("nobody@example.com", "not the right password")
        .await;
    assert_eq!(wrong_password.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(unknown_email.status(), StatusCode::UNAUTHORIZED);
    let wrong_password: Value = problem(wrong_password).await;
    let unknown_email: Value = problem(unknown_email).await;
    assert_eq!(wrong_password, unknown_email);
    // Both ran one argon2 verification: the unknown address against a dummy hash.
    assert_eq!(
        app.state.metrics.password_verifications.get() - verifications_before,
        2
    );
}

#[tokio::test]
async fn repeated_failures_for_one_address_are_throttled_with_retry_after() {
    let app = spawn_app().await;
    app.register("ann@example.com", "a long enough password")
        .await;
    for attempt in 1..=5 {
        let response = app.login("ann@example.com", "wrong password again").await;
        assert_eq!(
            response.status(),
            StatusCode::UNAUTHORIZED,
            "attempt {attempt}"
        );
    }
    // Locked now, even with the right password.
    let locked = app.login("ANN@example.com", "a long enough password").await;
    assert_eq!(locked.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = locked.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (1..=30).contains(&retry_after),
        "Retry-After: {retry_after}"
    );
    assert_eq!(problem(locked).await["status"], 429);
    // Another address from the same client is not locked yet.
    app.register("bob@example.com", "a long enough password")
        .await;
    assert_eq!(
        app.login("bob@example.com", "a long enough password")
            .await
            .status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn repeated_failures_from_one_client_address_are_throttled() {
    let app = spawn_app().await;
    // 20 failures, each for a different (unknown) address, from one client.
    for i in 0..20 {
        let response = app
            .login(&format!("guess-{i}@example.com"), "wrong password again")
            .await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    }
    let locked = app
        .login("someone-else@example.com", "wrong password again")
        .await;
    assert_eq!(locked.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(locked.headers().contains_key("retry-after"));
}

/// Sends 60 logins for one account at once, the right password at `right_at`, through
/// `apps` in turn, and answers the statuses (in sending order).
async fn login_burst(apps: &[&TestApp], email: &str, right_at: usize) -> Vec<StatusCode> {
    let attempts = (0..60).map(|i| {
        let app = apps[i % apps.len()];
        let password = if i == right_at {
            "a long enough password"
        } else {
            "wrong password again"
        };
        async move { app.login(email, password).await.status() }
    });
    join_all(attempts).await
}

fn count(statuses: &[StatusCode], status: StatusCode) -> usize {
    statuses.iter().filter(|s| **s == status).count()
}

/// A burst is gated by the count, not by a lock read before the check: 59 wrong
/// passwords and the right one, all at once, get at most five wrong-password checks
/// (the limit per address); the rest are 429 without any check. The right password
/// gets in only if it was among the first admitted, and once the limit is reached
/// it gets 429 like the others.
async fn assert_burst_is_gated(apps: &[&TestApp]) {
    let app = apps[0];
    app.register("burst@example.com", "a long enough password")
        .await;
    let verifications_before: u64 = apps
        .iter()
        .map(|app| app.state.metrics.password_verifications.get())
        .sum();
    let statuses = login_burst(apps, "burst@example.com", 31).await;
    let refused = count(&statuses, StatusCode::UNAUTHORIZED);
    let admitted = count(&statuses, StatusCode::OK);
    let throttled = count(&statuses, StatusCode::TOO_MANY_REQUESTS);
    eprintln!(
        "60 logins at once through {} instance(s): {refused} × 401, {admitted} × 200, {throttled} × 429",
        apps.len()
    );
    assert!(
        refused <= 5,
        "{refused} wrong passwords were checked: {statuses:?}"
    );
    assert!(admitted <= 1);
    assert_eq!(refused + admitted + throttled, 60, "{statuses:?}");
    let verifications: u64 = apps
        .iter()
        .map(|app| app.state.metrics.password_verifications.get())
        .sum::<u64>()
        - verifications_before;
    assert_eq!(verifications, (refused + admitted) as u64);
    if admitted == 0 {
        assert_eq!(statuses[31], StatusCode::TOO_MANY_REQUESTS);
    }
    // Five wrong passwords are counted now: the right one waits like any other.
    assert_eq!(refused, 5, "{statuses:?}");
    let after = app
        .login("burst@example.com", "a long enough password")
        .await;
    assert_eq!(after.status(), StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test]
async fn sixty_concurrent_logins_for_one_account_get_at_most_the_allowed_password_checks() {
    let app = spawn_app().await;
    assert_burst_is_gated(&[&app]).await;
}

#[tokio::test]
async fn the_login_gate_holds_for_a_burst_spread_over_two_api_instances() {
    let first = spawn_app().await;
    let second = spawn_second_instance(&first).await;
    assert_burst_is_gated(&[&first, &second]).await;
}

#[tokio::test]
async fn a_burst_from_one_client_over_many_addresses_gets_at_most_its_client_limit() {
    let app = spawn_app().await;
    let attempts = (0..60).map(|i| {
        let app = &app;
        async move {
            app.login(&format!("guess-{i}@example.com"), "wrong password again")
                .await
                .status()
        }
    });
    let statuses = join_all(attempts).await;
    assert_eq!(
        count(&statuses, StatusCode::UNAUTHORIZED),
        20,
        "{statuses:?}"
    );
    assert_eq!(count(&statuses, StatusCode::TOO_MANY_REQUESTS), 40);
}

#[tokio::test]
async fn a_successful_login_gives_its_place_back_but_keeps_the_failures_before_it() {
    let app = spawn_app().await;
    app.register("ann@example.com", "a long enough password")
        .await;
    // Logging in again and again is never throttled.
    for _ in 0..8 {
        let response = app.login("ann@example.com", "a long enough password").await;
        assert_eq!(response.status(), StatusCode::OK);
    }
    for _ in 0..4 {
        let response = app.login("ann@example.com", "wrong password again").await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    }
    let response = app.login("ann@example.com", "a long enough password").await;
    assert_eq!(response.status(), StatusCode::OK);
    // The four failures still count: the fifth locks the address.
    let response = app.login("ann@example.com", "wrong password again").await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let response = app.login("ann@example.com", "a long enough password").await;
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test]
async fn logins_with_addresses_that_do_not_parse_are_refused_and_counted_without_a_hash() {
    let app = spawn_app().await;
    let verifications_before = app.state.metrics.password_verifications.get();
    let huge = format!("{}@example.com", "a".repeat(4_000));
    for email in [huge.as_str(), "no at sign", "ann@@example.com"] {
        for _ in 0..5 {
            let response = app.login(email, "wrong password again").await;
            assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{email:?}");
            assert_eq!(
                problem(response).await["detail"],
                "unknown e-mail address or wrong password"
            );
        }
    }
    // A NUL is refused at the edge, naming the field, and counted all the same.
    for _ in 0..5 {
        let response = app.login("ann\0@example.com", "wrong password again").await;
        assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(problem(response).await["field"], "email");
    }
    assert_eq!(
        app.state.metrics.password_verifications.get(),
        verifications_before
    );
    // Twenty failures from this client: it is locked, whatever it sends next.
    let locked = app.login(&huge, "wrong password again").await;
    assert_eq!(locked.status(), StatusCode::TOO_MANY_REQUESTS);
    let locked = app.login("ann\0@example.com", "wrong password again").await;
    assert_eq!(locked.status(), StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test]
async fn an_address_registration_refuses_is_unknown_at_login_though_it_lowercases_to_one() {
    let app = spawn_app().await;
    app.register("kate@example.com", "a long enough password")
        .await;
    // U+212A KELVIN SIGN lowercases to `k`; registration refuses such an address.
    let kelvin = "\u{212A}ate@example.com";
    let registered = app.register(kelvin, "a long enough password").await;
    assert_eq!(registered.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let login = app.login(kelvin, "a long enough password").await;
    assert_eq!(login.status(), StatusCode::UNAUTHORIZED);
    let login = app
        .login("KATE@example.com", "a long enough password")
        .await;
    assert_eq!(login.status(), StatusCode::OK);
}

#[tokio::test]
async fn expired_throttling_rows_are_purged_by_the_running_api_and_live_ones_kept() {
    let app = spawn_app_with(|config| {
        config.login_failures_purge_interval = std::time::Duration::from_millis(100);
    })
    .await;
    sqlx::raw_sql(
        "INSERT INTO login_failures (throttle_key, failures, first_failure, locked_until)
         VALUES ('old', 3, now() - interval '2 hours', NULL),
                ('old-lock-ended', 9, now() - interval '2 hours', now() - interval '1 minute'),
                ('old-still-locked', 9, now() - interval '2 hours', now() + interval '5 minutes'),
                ('recent', 1, now() - interval '1 minute', NULL);
         INSERT INTO login_known_clients (email_key, client_key, last_login)
         VALUES ('email:a', 'client:192.0.2.1', now() - interval '31 days'),
                ('email:a', 'client:192.0.2.2', now() - interval '29 days')",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    // The instance purges on its own, every 100 ms here.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let kept: Vec<String> = sqlx::query_scalar(
            "SELECT throttle_key FROM login_failures
             UNION ALL SELECT client_key FROM login_known_clients ORDER BY 1",
        )
        .fetch_all(&app.pool)
        .await
        .unwrap();
        if kept == ["client:192.0.2.2", "old-still-locked", "recent"] {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still there: {kept:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Logs in through a connection from `from` (an address of the loopback network,
/// which the API sees as the client's).
async fn login_from(app: &TestApp, from: &str, email: &str, password: &str) -> StatusCode {
    let client = reqwest::Client::builder()
        .local_address(Some(from.parse().unwrap()))
        .build()
        .unwrap();
    client
        .post(app.url("/auth/login"))
        .json(&json!({"email": email, "password": password}))
        .send()
        .await
        .unwrap()
        .status()
}

#[tokio::test]
async fn failures_from_elsewhere_do_not_lock_out_an_address_that_signed_in_before() {
    let app = spawn_app().await;
    app.register("ann@example.com", "a long enough password")
        .await;
    let (home, attacker, new_place) = ("127.0.0.2", "127.0.0.3", "127.0.0.4");
    let right = "a long enough password";
    let wrong = "wrong password again";
    assert_eq!(
        login_from(&app, home, "ann@example.com", right).await,
        StatusCode::OK
    );

    // Someone elsewhere fails five times: the account is locked for them, and for
    // any address it has not been used from.
    for _ in 0..5 {
        assert_eq!(
            login_from(&app, attacker, "ann@example.com", wrong).await,
            StatusCode::UNAUTHORIZED
        );
    }
    for place in [attacker, new_place] {
        assert_eq!(
            login_from(&app, place, "ann@example.com", right).await,
            StatusCode::TOO_MANY_REQUESTS,
            "{place}"
        );
    }
    // Ann, from where she signed in before, gets in.
    assert_eq!(
        login_from(&app, home, "ann@example.com", right).await,
        StatusCode::OK
    );

    // Her address is throttled all the same, on a count of its own: five guesses.
    for _ in 0..5 {
        assert_eq!(
            login_from(&app, home, "ann@example.com", wrong).await,
            StatusCode::UNAUTHORIZED
        );
    }
    assert_eq!(
        login_from(&app, home, "ann@example.com", right).await,
        StatusCode::TOO_MANY_REQUESTS
    );
}

#[tokio::test]
async fn a_verification_token_verifies_once_and_then_keeps_answering_204() {
    let app = spawn_app().await;
    let session = app.signed_up_user().await;
    let token = app.state.signed_tokens.mint(
        TokenPurpose::VerifyEmail,
        UserId::from_uuid(session.user_id),
        &session.email.to_lowercase(),
        Utc::now() + Duration::hours(1),
    );
    for _ in 0..2 {
        let response = app
            .post_json("/auth/verify", &json!({"token": token}), None)
            .await;
        assert_eq!(response.status(), StatusCode::NO_CONTENT);
    }
    assert_eq!(app.count_events("EmailVerified").await, 1);
    let me: Value = app
        .http
        .get(app.url("/me"))
        .bearer_auth(&session.token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["email_verified"], true);

    // The link in the mail shows a page.
    let page = app
        .http
        .get(app.url(&format!("/auth/verify?token={token}")))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    assert!(page.text().await.unwrap().contains("verified"));
}

#[tokio::test]
async fn forged_tokens_get_400_and_expired_ones_410() {
    let app = spawn_app().await;
    let session = app.signed_up_user().await;
    let expired = app.state.signed_tokens.mint(
        TokenPurpose::VerifyEmail,
        UserId::from_uuid(session.user_id),
        &session.email.to_lowercase(),
        Utc::now() - Duration::minutes(1),
    );
    let response = app
        .post_json("/auth/verify", &json!({"token": expired}), None)
        .await;
    assert_eq!(response.status(), StatusCode::GONE);
    let forged = format!("{}x", &expired[..expired.len() - 1]);
    let response = app
        .post_json("/auth/verify", &json!({"token": forged}), None)
        .await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    // A token minted for another address of the same user verifies nothing.
    let other_address = app.state.signed_tokens.mint(
        TokenPurpose::VerifyEmail,
        UserId::from_uuid(session.user_id),
        "someone-else@example.com",
        Utc::now() + Duration::hours(1),
    );
    let response = app
        .post_json("/auth/verify", &json!({"token": other_address}), None)
        .await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(app.count_events("EmailVerified").await, 0);
}

#[tokio::test]
async fn profile_and_preferences_change_and_a_password_change_takes_effect() {
    let app = spawn_app_with(lenient_throttle).await;
    let session = app.signed_up_user().await;
    let patch = app
        .http
        .patch(app.url("/me"))
        .bearer_auth(&session.token)
        .json(&json!({"display_name": "Ann", "notification_preferences": {"price_alerts": false}}))
        .send()
        .await
        .unwrap();
    assert_eq!(patch.status(), StatusCode::NO_CONTENT);
    assert!(patch.headers().contains_key("orders-position"));
    let me: Value = app
        .http
        .get(app.url("/me"))
        .bearer_auth(&session.token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["display_name"], "Ann");
    assert_eq!(me["notification_preferences"]["price_alerts"], false);

    let wrong = app
        .post_json(
            "/me/password",
            &json!({"current_password": "not my password!", "new_password": "a brand new password"}),
            Some(&session.token),
        )
        .await;
    assert_eq!(problem(wrong).await["field"], "current_password");
    let changed = app
        .post_json(
            "/me/password",
            &json!({"current_password": "a long enough password", "new_password": "a brand new password"}),
            Some(&session.token),
        )
        .await;
    assert_eq!(changed.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        app.login(&session.email, "a long enough password")
            .await
            .status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.login(&session.email, "a brand new password")
            .await
            .status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn a_password_change_ends_every_access_token_issued_before_it() {
    let app = spawn_app_with(lenient_throttle).await;
    let session = app.signed_up_user().await;
    let order_id = app.placed_order(&session.token).await;
    // A second token of the same password, as another device holds it; it works.
    let other_device = app
        .login(&session.email, "a long enough password")
        .await
        .json::<Value>()
        .await
        .unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let place = |token: String| {
        let app = &app;
        async move {
            app.place_order(
                &token,
                &json!({"url": "https://shop.example.com/p", "target_price": "10", "currency": "USD"}),
            )
            .await
        }
    };
    assert_eq!(
        place(other_device.clone()).await.status(),
        StatusCode::CREATED
    );

    let changed = app
        .post_json(
            "/me/password",
            &json!({"current_password": "a long enough password", "new_password": "a brand new password"}),
            Some(&session.token),
        )
        .await;
    assert_eq!(changed.status(), StatusCode::NO_CONTENT);

    // Both tokens are refused everywhere at once, unexpired and correctly signed as
    // they are: the profile, the reads, the changes, a placement, the admin routes,
    // the live feed.
    for token in [&session.token, &other_device] {
        for (method, path) in [
            ("GET", "/me".to_owned()),
            ("GET", "/orders".to_owned()),
            ("GET", format!("/orders/{order_id}")),
            ("POST", format!("/orders/{order_id}/pause")),
            ("GET", "/admin/users".to_owned()),
            ("GET", "/live".to_owned()),
            ("POST", "/auth/verify/resend".to_owned()),
        ] {
            let request = match method {
                "GET" => app.http.get(app.url(&path)),
                _ => app.http.post(app.url(&path)),
            };
            let response = request.bearer_auth(token).send().await.unwrap();
            assert_eq!(
                response.status(),
                StatusCode::UNAUTHORIZED,
                "{method} {path}"
            );
        }
        let refused = place(token.clone()).await;
        assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
        assert!(problem(refused).await["detail"]
            .as_str()
            .unwrap()
            .contains("password was changed"));
    }
    // A token of the new password works, placements included.
    let fresh = app
        .login(&session.email, "a brand new password")
        .await
        .json::<Value>()
        .await
        .unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let me = app
        .http
        .get(app.url("/me"))
        .bearer_auth(&fresh)
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), StatusCode::OK);
    assert_eq!(place(fresh).await.status(), StatusCode::CREATED);
}

#[tokio::test]
async fn a_deactivated_user_is_refused_on_the_next_request_whatever_the_token_says() {
    let app = spawn_app().await;
    let session = app.signed_up_user().await;
    let order_id = app.placed_order(&session.token).await;
    let request_id = Uuid::now_v7();
    app.state
        .events
        .execute::<User>(
            &session.user_id.to_string(),
            UserCommand::Deactivate {
                reason: "abuse".to_owned(),
            },
            &CommandMetadata {
                actor: "cli:test@localhost".to_owned(),
                correlation_id: request_id,
                causation_id: request_id.to_string(),
                request_id,
                idempotency_key: None,
            },
        )
        .await
        .unwrap();
    // The token is still unexpired and correctly signed.
    let me = app
        .http
        .get(app.url("/me"))
        .bearer_auth(&session.token)
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), StatusCode::UNAUTHORIZED);
    let order = app
        .http
        .get(app.url(&format!("/orders/{order_id}")))
        .bearer_auth(&session.token)
        .send()
        .await
        .unwrap();
    assert_eq!(order.status(), StatusCode::UNAUTHORIZED);
    let place = app
        .place_order(
            &session.token,
            &json!({"url": "https://shop.example.com/p", "target_price": "10", "currency": "USD"}),
        )
        .await;
    assert_eq!(place.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        app.login(&session.email, "a long enough password")
            .await
            .status(),
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn no_event_carries_the_password_hash() {
    let app = spawn_app_with(lenient_throttle).await;
    let session = app.signed_up_user().await;
    let changed = app
        .post_json(
            "/me/password",
            &json!({"current_password": "a long enough password", "new_password": "a brand new password"}),
            Some(&session.token),
        )
        .await;
    assert_eq!(changed.status(), StatusCode::NO_CONTENT);
    let payloads: Vec<String> = sqlx::query_scalar(
        "SELECT payload::text || metadata::text FROM events WHERE aggregate_type = 'user'",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(payloads.len(), 2);
    for payload in payloads {
        assert!(
            !payload.contains("argon2") && !payload.contains("password_hash"),
            "{payload}"
        );
    }
    // The hash lives with the credentials, written with the event.
    let hash: String =
        sqlx::query_scalar("SELECT password_hash FROM credentials WHERE user_id = $1")
            .bind(session.user_id.to_string())
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert!(hash.starts_with("$argon2id$"));
}

#[tokio::test]
async fn a_user_registered_in_the_old_v1_shape_is_upcast_when_loaded() {
    let app = spawn_app().await;
    let user_id = Uuid::now_v7();
    // UserRegistered 1.0 carried the password hash in the event.
    let v1_payload = json!({"UserRegistered": {
        "user_id": user_id, "email": "Old@Example.com", "password_hash": "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA"
    }});
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
         VALUES ('user', $1, 1, 'UserRegistered', '1.0', $2, $3)",
    )
    .bind(user_id.to_string())
    .bind(&v1_payload)
    .bind(json!({"actor": format!("user:{user_id}"), "correlation_id": user_id.to_string(),
                 "causation_id": user_id.to_string(), "request_id": user_id.to_string()}))
    .execute(&app.pool)
    .await
    .unwrap();
    let token = app
        .state
        .access_tokens
        .issue(UserId::from_uuid(user_id), 0)
        .unwrap();
    let me = app
        .http
        .get(app.url("/me"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), StatusCode::OK);
    let me: Value = me.json().await.unwrap();
    assert_eq!(me["email"], "Old@Example.com");
    assert_eq!(me["notification_preferences"]["price_alerts"], true);
}

/// Moves a user's events back in time, as if registered `minutes` ago (the resend
/// throttle counts the registration's mail).
async fn backdate_user_events(app: &crate::helpers::TestApp, user_id: Uuid, minutes: i32) {
    sqlx::query(
        "UPDATE events SET recorded_at = recorded_at - make_interval(mins => $2)
          WHERE aggregate_type = 'user' AND aggregate_id = $1",
    )
    .bind(user_id.to_string())
    .bind(minutes)
    .execute(&app.pool)
    .await
    .unwrap();
}

fn retry_after(response: &reqwest::Response) -> u64 {
    response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn resending_the_verification_mail_records_a_request_at_most_once_a_minute() {
    let app = spawn_app().await;
    let session = app.signed_up_user().await;
    // Right after registering, its own mail is still on its way.
    let too_soon = app
        .post_json("/auth/verify/resend", &json!({}), Some(&session.token))
        .await;
    assert_eq!(too_soon.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!((1..=60).contains(&retry_after(&too_soon)));
    assert_eq!(app.count_events("VerificationMailRequested").await, 0);

    backdate_user_events(&app, session.user_id, 2).await;
    let resent = app
        .post_json("/auth/verify/resend", &json!({}), Some(&session.token))
        .await;
    assert_eq!(resent.status(), StatusCode::ACCEPTED);
    assert!(resent.headers().contains_key("orders-position"));
    let (aggregate_id, actor): (String, String) = sqlx::query_as(
        "SELECT aggregate_id, metadata ->> 'actor' FROM events
          WHERE event_type = 'VerificationMailRequested'",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(aggregate_id, session.user_id.to_string());
    assert_eq!(actor, format!("user:{}", session.user_id));

    // The resent mail counts too.
    let again = app
        .post_json("/auth/verify/resend", &json!({}), Some(&session.token))
        .await;
    assert_eq!(again.status(), StatusCode::TOO_MANY_REQUESTS);
    let wait = retry_after(&again);
    assert!((55..=60).contains(&wait), "Retry-After: {wait}");
    assert_eq!(problem(again).await["status"], 429);
    assert_eq!(app.count_events("VerificationMailRequested").await, 1);
}

#[tokio::test]
async fn resending_needs_a_token_and_an_unverified_address() {
    let app = spawn_app().await;
    let anonymous = app.post_json("/auth/verify/resend", &json!({}), None).await;
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    let forged = app
        .post_json("/auth/verify/resend", &json!({}), Some("not.a.token"))
        .await;
    assert_eq!(forged.status(), StatusCode::UNAUTHORIZED);

    let session = app.signed_up_user().await;
    let token = app.state.signed_tokens.mint(
        TokenPurpose::VerifyEmail,
        UserId::from_uuid(session.user_id),
        &session.email,
        Utc::now() + Duration::hours(1),
    );
    let verified = app
        .post_json("/auth/verify", &json!({"token": token}), None)
        .await;
    assert_eq!(verified.status(), StatusCode::NO_CONTENT);
    backdate_user_events(&app, session.user_id, 2).await;
    // Nothing left to confirm: 409, and no mail.
    let resent = app
        .post_json("/auth/verify/resend", &json!({}), Some(&session.token))
        .await;
    assert_eq!(resent.status(), StatusCode::CONFLICT);
    assert!(problem(resent).await["detail"]
        .as_str()
        .unwrap()
        .contains("already verified"));
    assert_eq!(app.count_events("VerificationMailRequested").await, 0);
}

#[tokio::test]
async fn a_password_reset_request_answers_202_whether_or_not_the_address_exists() {
    let app = spawn_app().await;
    let session = app.signed_up_user().await;

    let started = std::time::Instant::now();
    let unknown = app
        .post_json(
            "/auth/password-reset",
            &json!({"email": "nobody@example.com"}),
            None,
        )
        .await;
    let unknown_took = started.elapsed();
    assert_eq!(app.count_events("PasswordResetRequested").await, 0);

    let started = std::time::Instant::now();
    // Compared case-insensitively, like at login.
    let known = app
        .post_json(
            "/auth/password-reset",
            &json!({"email": session.email.to_uppercase()}),
            None,
        )
        .await;
    let known_took = started.elapsed();
    assert_eq!(app.count_events("PasswordResetRequested").await, 1);
    let payload: Value = sqlx::query_scalar(
        "SELECT payload FROM events WHERE event_type = 'PasswordResetRequested'",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(
        payload,
        json!({"PasswordResetRequested": {"credentials_version": 0}})
    );

    // The same answer: status, headers that could tell (no Orders-Position), body.
    for response in [&unknown, &known] {
        assert_eq!(response.status(), StatusCode::ACCEPTED);
        assert!(!response.headers().contains_key("orders-position"));
    }
    assert_eq!(
        unknown.headers().get("content-length"),
        known.headers().get("content-length")
    );
    assert_eq!(unknown.text().await.unwrap(), known.text().await.unwrap());
    // Both wait out the same floor, which hides the known address's insert.
    for took in [unknown_took, known_took] {
        assert!(took >= std::time::Duration::from_millis(150), "{took:?}");
    }

    let malformed = app
        .post_json(
            "/auth/password-reset",
            &json!({"email": "not an address"}),
            None,
        )
        .await;
    assert_eq!(problem(malformed).await["field"], "email");
}

#[tokio::test]
async fn a_deactivated_account_gets_the_same_202_and_no_reset() {
    let app = spawn_app().await;
    let session = app.signed_up_user().await;
    let request_id = Uuid::now_v7();
    app.state
        .events
        .execute::<User>(
            &session.user_id.to_string(),
            UserCommand::Deactivate {
                reason: "abuse".to_owned(),
            },
            &CommandMetadata {
                actor: "cli:test@localhost".to_owned(),
                correlation_id: request_id,
                causation_id: request_id.to_string(),
                request_id,
                idempotency_key: None,
            },
        )
        .await
        .unwrap();
    let response = app
        .post_json(
            "/auth/password-reset",
            &json!({"email": session.email}),
            None,
        )
        .await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    assert_eq!(app.count_events("PasswordResetRequested").await, 0);
    // A link minted before the deactivation no longer works either.
    let token = app.state.signed_tokens.mint_password_reset(
        UserId::from_uuid(session.user_id),
        &session.email,
        0,
        Utc::now() + Duration::hours(1),
    );
    let confirm = app
        .post_json(
            "/auth/password-reset/confirm",
            &json!({"token": token, "password": "a brand new password"}),
            None,
        )
        .await;
    assert_eq!(confirm.status(), StatusCode::GONE);
    assert_eq!(app.count_events("PasswordChanged").await, 0);
}

#[tokio::test]
async fn password_reset_requests_are_throttled_per_address_known_or_not_and_per_client() {
    let app = spawn_app().await;
    let session = app.signed_up_user().await;
    for email in [session.email.as_str(), "nobody@example.com"] {
        for attempt in 1..=3 {
            let response = app
                .post_json("/auth/password-reset", &json!({"email": email}), None)
                .await;
            assert_eq!(
                response.status(),
                StatusCode::ACCEPTED,
                "{email} #{attempt}"
            );
        }
        // The fourth within 15 minutes, for an existing address or not alike.
        let throttled = app
            .post_json("/auth/password-reset", &json!({"email": email}), None)
            .await;
        assert_eq!(throttled.status(), StatusCode::TOO_MANY_REQUESTS, "{email}");
        let wait = retry_after(&throttled);
        assert!((1..=900).contains(&wait), "Retry-After: {wait}");
    }
    assert_eq!(app.count_events("PasswordResetRequested").await, 3);
    // 8 requests so far from this client; 12 more addresses get through, then none.
    for i in 0..12 {
        let response = app
            .post_json(
                "/auth/password-reset",
                &json!({"email": format!("guess-{i}@example.com")}),
                None,
            )
            .await;
        assert_eq!(response.status(), StatusCode::ACCEPTED, "guess {i}");
    }
    let throttled = app
        .post_json(
            "/auth/password-reset",
            &json!({"email": "one-more@example.com"}),
            None,
        )
        .await;
    assert_eq!(throttled.status(), StatusCode::TOO_MANY_REQUESTS);
    // Logins are not locked by any of this.
    assert_eq!(
        app.login(&session.email, "a long enough password")
            .await
            .status(),
        StatusCode::OK
    );
}

async fn confirm_reset(
    app: &crate::helpers::TestApp,
    token: String,
    password: String,
) -> reqwest::Response {
    app.post_json(
        "/auth/password-reset/confirm",
        &json!({"token": token, "password": password}),
        None,
    )
    .await
}

fn reset_token(app: &crate::helpers::TestApp, user_id: Uuid, email: &str, version: u32) -> String {
    app.state.signed_tokens.mint_password_reset(
        UserId::from_uuid(user_id),
        email,
        version,
        Utc::now() + Duration::hours(1),
    )
}

#[tokio::test]
async fn a_reset_link_sets_a_new_password_once() {
    let app = spawn_app_with(lenient_throttle).await;
    let session = app.signed_up_user().await;
    let requested = app
        .post_json(
            "/auth/password-reset",
            &json!({"email": session.email}),
            None,
        )
        .await;
    assert_eq!(requested.status(), StatusCode::ACCEPTED);
    // The worker mints the link from the event: version 0, the registration's password.
    let token = reset_token(&app, session.user_id, &session.email, 0);

    // The link leads to the console's form (no script: it works without
    // JavaScript), the token in it, kept out of caches and referrers.
    let page = app
        .http
        .get(app.url(&format!("/auth/password-reset/confirm?token={token}")))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    assert_eq!(page.url().path(), "/app/reset-password");
    assert_eq!(page.headers()["cache-control"], "no-store");
    assert_eq!(page.headers()["referrer-policy"], "same-origin");
    let policy = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(policy.contains("default-src 'none'"), "{policy}");
    let html = page.text().await.unwrap();
    assert!(html.contains(&format!("value=\"{token}\"")));
    assert!(html.contains("type=\"password\""));
    assert!(html.contains(r#"action="/app/reset-password""#));
    assert!(!html.contains("<script"));

    let confirmed = app
        .post_json(
            "/auth/password-reset/confirm",
            &json!({"token": token, "password": "a brand new password"}),
            None,
        )
        .await;
    assert_eq!(confirmed.status(), StatusCode::NO_CONTENT);
    assert!(confirmed.headers().contains_key("orders-position"));
    assert_eq!(app.count_events("PasswordChanged").await, 1);
    assert_eq!(
        app.login(&session.email, "a long enough password")
            .await
            .status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.login(&session.email, "a brand new password")
            .await
            .status(),
        StatusCode::OK
    );

    // Used: the same link again is 410, as a page and as a command.
    let again = app
        .post_json(
            "/auth/password-reset/confirm",
            &json!({"token": token, "password": "yet another new password"}),
            None,
        )
        .await;
    assert_eq!(again.status(), StatusCode::GONE);
    assert!(problem(again).await["detail"]
        .as_str()
        .unwrap()
        .contains("has been used"));
    let page = app
        .http
        .get(app.url(&format!("/auth/password-reset/confirm?token={token}")))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::GONE);
    assert_eq!(app.count_events("PasswordChanged").await, 1);
    assert_eq!(
        app.login(&session.email, "a brand new password")
            .await
            .status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn concurrent_uses_of_one_reset_link_change_the_password_once() {
    let app = spawn_app().await;
    let session = app.signed_up_user().await;
    let token = reset_token(&app, session.user_id, &session.email, 0);
    let attempts =
        (0..5).map(|i| confirm_reset(&app, token.clone(), format!("racing new password {i}")));
    let statuses: Vec<StatusCode> = join_all(attempts)
        .await
        .into_iter()
        .map(|response| response.status())
        .collect();
    let changed = statuses
        .iter()
        .filter(|s| **s == StatusCode::NO_CONTENT)
        .count();
    let gone = statuses.iter().filter(|s| **s == StatusCode::GONE).count();
    assert_eq!((changed, gone), (1, 4), "statuses: {statuses:?}");
    assert_eq!(app.count_events("PasswordChanged").await, 1);
}

#[tokio::test]
async fn a_password_change_after_the_mail_ends_its_link() {
    let app = spawn_app_with(lenient_throttle).await;
    let session = app.signed_up_user().await;
    let token = reset_token(&app, session.user_id, &session.email, 0);
    let changed = app
        .post_json(
            "/me/password",
            &json!({"current_password": "a long enough password", "new_password": "a brand new password"}),
            Some(&session.token),
        )
        .await;
    assert_eq!(changed.status(), StatusCode::NO_CONTENT);
    let confirm = app
        .post_json(
            "/auth/password-reset/confirm",
            &json!({"token": token, "password": "an attacker's password"}),
            None,
        )
        .await;
    assert_eq!(confirm.status(), StatusCode::GONE);
    // A link for the password as it is now works.
    let fresh = reset_token(&app, session.user_id, &session.email, 1);
    let confirm = app
        .post_json(
            "/auth/password-reset/confirm",
            &json!({"token": fresh, "password": "the password I chose"}),
            None,
        )
        .await;
    assert_eq!(confirm.status(), StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn reset_links_that_are_forged_expired_or_for_another_purpose_and_weak_passwords_are_refused()
{
    let app = spawn_app().await;
    let session = app.signed_up_user().await;
    let confirm =
        |token: String, password: &'static str| confirm_reset(&app, token, password.to_owned());
    let expired = app.state.signed_tokens.mint_password_reset(
        UserId::from_uuid(session.user_id),
        &session.email,
        0,
        Utc::now() - Duration::minutes(1),
    );
    let response = confirm(expired.clone(), "a brand new password").await;
    assert_eq!(response.status(), StatusCode::GONE);
    assert!(problem(response).await["detail"]
        .as_str()
        .unwrap()
        .contains("expired"));
    let page = app
        .http
        .get(app.url(&format!("/auth/password-reset/confirm?token={expired}")))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::GONE);

    let valid = reset_token(&app, session.user_id, &session.email, 0);
    let forged = format!("{}x", &valid[..valid.len() - 1]);
    assert_eq!(
        confirm(forged.clone(), "a brand new password")
            .await
            .status(),
        StatusCode::BAD_REQUEST
    );
    let page = app
        .http
        .get(app.url(&format!("/auth/password-reset/confirm?token={forged}")))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::BAD_REQUEST);
    assert!(!page.text().await.unwrap().contains(&forged));
    // A verification link's token does not reset a password.
    let verification = app.state.signed_tokens.mint(
        TokenPurpose::VerifyEmail,
        UserId::from_uuid(session.user_id),
        &session.email,
        Utc::now() + Duration::hours(1),
    );
    assert_eq!(
        confirm(verification, "a brand new password").await.status(),
        StatusCode::BAD_REQUEST
    );
    // A token for another address of the user.
    let other_address = reset_token(&app, session.user_id, "someone-else@example.com", 0);
    assert_eq!(
        confirm(other_address, "a brand new password")
            .await
            .status(),
        StatusCode::BAD_REQUEST
    );

    for weak in ["short", "passwordpassword"] {
        let response = confirm(valid.clone(), weak).await;
        assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(problem(response).await["field"], "password");
    }
    assert_eq!(app.count_events("PasswordChanged").await, 0);
    // The link survives a refused attempt.
    assert_eq!(
        confirm(valid, "a brand new password").await.status(),
        StatusCode::NO_CONTENT
    );
}

#[tokio::test]
async fn a_reset_unlocks_an_address_locked_by_failed_logins() {
    let app = spawn_app().await;
    let session = app.signed_up_user().await;
    for _ in 0..5 {
        app.login(&session.email, "a forgotten password").await;
    }
    assert_eq!(
        app.login(&session.email, "a forgotten password")
            .await
            .status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    let token = reset_token(&app, session.user_id, &session.email, 0);
    let confirm = app
        .post_json(
            "/auth/password-reset/confirm",
            &json!({"token": token, "password": "a remembered password"}),
            None,
        )
        .await;
    assert_eq!(confirm.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        app.login(&session.email, "a remembered password")
            .await
            .status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn the_openapi_document_lists_the_resend_and_reset_routes() {
    let app = spawn_app().await;
    let document: Value = app
        .http
        .get(app.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let paths = document["paths"].as_object().unwrap();
    assert!(paths["/auth/verify/resend"]["post"].is_object());
    assert!(paths["/auth/password-reset"]["post"].is_object());
    assert!(paths["/auth/password-reset/confirm"]["post"].is_object());
    assert!(paths["/auth/password-reset/confirm"]["get"].is_object());
}
