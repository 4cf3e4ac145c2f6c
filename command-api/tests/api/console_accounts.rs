//! The console's account pages as a browser without JavaScript uses them: the
//! forgotten password (the same answer for any address, the API's throttle), the
//! reset form the mail's link opens (a weak password beside its field, a used or
//! forged link, CSRF, every session ended), the verification landing page and
//! "Send the link again". (tests/browser/account_flows.py drives them in Chromium,
//! with the real mails.)

use chrono::{Duration, Utc};
use orders_application::signed_tokens::TokenPurpose;
use orders_domain::ids::UserId;
use reqwest::{Response, StatusCode};
use serde_json::json;
use uuid::Uuid;

use crate::console::{location, Browser, PASSWORD};
use crate::helpers::{lenient_throttle, spawn_app, spawn_app_with, Session, TestApp};

/// The value of the hidden field `name` of a page.
fn hidden_field(page: &str, name: &str) -> String {
    let marker = format!(r#"name="{name}" value=""#);
    let at = page.find(&marker).unwrap_or_else(|| panic!("no {name}")) + marker.len();
    page[at..at + page[at..].find('"').unwrap()].to_owned()
}

const NEW_PASSWORD: &str = "a new and long password";

/// Signs in through the console's form; answers the browser.
async fn signed_in(app: &TestApp, email: &str, password: &str) -> Browser {
    let mut browser = Browser::new(app);
    let form = browser.get_page("/app/login").await;
    let csrf = hidden_field(&form, "_csrf");
    let response = browser
        .post_form(
            "/app/login",
            &[
                ("_csrf", &csrf),
                ("email", email),
                ("password", password),
                ("next", "/app/"),
            ],
        )
        .await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert!(browser.has_session());
    browser
}

/// Asks for a reset through the forgotten-password form; answers the response
/// and how long it took.
async fn ask_for_reset(browser: &mut Browser, email: &str) -> (Response, std::time::Duration) {
    let form = browser.get_page("/app/forgot-password").await;
    let csrf = hidden_field(&form, "_csrf");
    let started = std::time::Instant::now();
    let response = browser
        .post_form(
            "/app/forgot-password",
            &[("_csrf", &csrf), ("email", email)],
        )
        .await;
    (response, started.elapsed())
}

/// The token of the reset link the e-mail worker mails for the registration's
/// password (it mints the link from the `PasswordResetRequested` event alone).
fn mailed_reset_token(app: &TestApp, session: &Session) -> String {
    app.state.signed_tokens.mint_password_reset(
        UserId::from_uuid(session.user_id),
        &session.email,
        0,
        Utc::now() + Duration::hours(1),
    )
}

#[tokio::test]
async fn a_forgotten_password_gets_the_same_answer_for_any_address_and_the_apis_throttle() {
    let app = spawn_app().await;
    let session = app.signed_up_user().await;
    let mut browser = Browser::new(&app);
    let login = browser.get_page("/app/login").await;
    assert!(
        login.contains(r#"<a href="/app/forgot-password">Forgot your password?</a>"#),
        "{login}"
    );
    let form = browser.get_page("/app/forgot-password").await;
    assert!(form.contains(r#"<label for="email">"#) && form.contains(r#"id="email""#));

    let (unknown, unknown_took) = ask_for_reset(&mut browser, "nobody@example.com").await;
    assert_eq!(app.count_events("PasswordResetRequested").await, 0);
    let (known, known_took) = ask_for_reset(&mut browser, &session.email.to_uppercase()).await;
    assert_eq!(app.count_events("PasswordResetRequested").await, 1);
    for (response, took) in [(&unknown, unknown_took), (&known, known_took)] {
        assert_eq!(response.status(), StatusCode::SEE_OTHER);
        assert_eq!(location(response), "/app/forgot-password?sent=1");
        assert!(!response.headers().contains_key("orders-position"));
        // The API's floor, which hides the known address's append.
        assert!(took >= std::time::Duration::from_millis(150), "{took:?}");
    }
    let sent = browser.get_page("/app/forgot-password?sent=1").await;
    assert!(
        sent.contains("If an account has this address, we have sent it a link"),
        "{sent}"
    );

    let (malformed, _) = ask_for_reset(&mut browser, "not an address").await;
    assert_eq!(malformed.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let page = malformed.text().await.unwrap();
    assert!(
        page.contains(r#"id="email-error""#) && page.contains(r#"aria-invalid="true""#),
        "{page}"
    );
    assert!(page.contains(r#"value="not an address""#));

    // One throttle for the API and the console: the API's third request for this
    // address counts with the console's one, and the console's next is refused.
    for _ in 0..2 {
        let asked = app
            .post_json(
                "/auth/password-reset",
                &json!({"email": session.email}),
                None,
            )
            .await;
        assert_eq!(asked.status(), StatusCode::ACCEPTED);
    }
    let (throttled, _) = ask_for_reset(&mut browser, &session.email).await;
    assert_eq!(throttled.status(), StatusCode::TOO_MANY_REQUESTS);
    let page = throttled.text().await.unwrap();
    assert!(page.contains("Try again in"), "{page}");
    assert_eq!(app.count_events("PasswordResetRequested").await, 3);
}

#[tokio::test]
async fn the_mailed_link_opens_a_form_that_resets_the_password_and_ends_every_session() {
    let app = spawn_app_with(lenient_throttle).await;
    let session = app.signed_up_user().await;
    let mut signed_in_elsewhere = signed_in(&app, &session.email, PASSWORD).await;
    assert_eq!(
        signed_in_elsewhere.get("/app/settings").await.status(),
        StatusCode::OK
    );
    let mut browser = Browser::new(&app);
    let (asked, _) = ask_for_reset(&mut browser, &session.email).await;
    assert_eq!(asked.status(), StatusCode::SEE_OTHER);
    let token = mailed_reset_token(&app, &session);

    // The mail's link leads to the console's form, kept out of caches and referrers.
    let link = browser
        .get(&format!("/auth/password-reset/confirm?token={token}"))
        .await;
    assert_eq!(link.status(), StatusCode::SEE_OTHER);
    assert_eq!(link.headers()["cache-control"], "no-store");
    assert_eq!(link.headers()["referrer-policy"], "no-referrer");
    let form_path = location(&link);
    assert_eq!(form_path, format!("/app/reset-password?token={token}"));
    let form = browser.get(&form_path).await;
    assert_eq!(form.status(), StatusCode::OK);
    assert_eq!(form.headers()["cache-control"], "no-store");
    assert_eq!(form.headers()["referrer-policy"], "same-origin");
    let policy = form.headers()["content-security-policy"].to_str().unwrap();
    assert!(policy.contains("default-src 'none'"), "{policy}");
    let form = form.text().await.unwrap();
    assert!(
        form.contains(r#"<label for="password">New password"#) && !form.contains("<script"),
        "{form}"
    );
    assert_eq!(hidden_field(&form, "token"), token);
    let csrf = hidden_field(&form, "_csrf");

    let reset = browser
        .post_form(
            "/app/reset-password",
            &[
                ("_csrf", &csrf),
                ("token", &token),
                ("password", NEW_PASSWORD),
            ],
        )
        .await;
    assert_eq!(reset.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&reset), "/app/login?notice=password-changed");
    assert_eq!(app.count_events("PasswordChanged").await, 1);
    let login = browser.get_page("/app/login?notice=password-changed").await;
    assert!(
        login.contains("Your password was changed; sign in"),
        "{login}"
    );

    // Every session of the user ended; the new password signs in, the old does not.
    let ended = signed_in_elsewhere.get("/app/settings").await;
    assert_eq!(ended.status(), StatusCode::SEE_OTHER);
    assert!(location(&ended).starts_with("/app/login"));
    assert_eq!(
        app.login(&session.email, PASSWORD).await.status(),
        StatusCode::UNAUTHORIZED
    );
    let mut signed_in_again = signed_in(&app, &session.email, NEW_PASSWORD).await;
    let settings = signed_in_again.get_page("/app/settings").await;
    assert!(settings.contains(&session.email));

    // Used: the link's page and its form say so, and offer a new one.
    let used = browser.get(&form_path).await;
    assert_eq!(used.status(), StatusCode::GONE);
    let page = used.text().await.unwrap();
    assert!(
        page.contains("has been used") && page.contains(r#"href="/app/forgot-password""#),
        "{page}"
    );
    let again = browser
        .post_form(
            "/app/reset-password",
            &[
                ("_csrf", &csrf),
                ("token", &token),
                ("password", "yet another password"),
            ],
        )
        .await;
    assert_eq!(again.status(), StatusCode::GONE);
    assert_eq!(app.count_events("PasswordChanged").await, 1);
}

#[tokio::test]
async fn a_weak_password_forged_link_or_missing_token_changes_nothing() {
    let app = spawn_app().await;
    let session = app.signed_up_user().await;
    let mut signed_in_elsewhere = signed_in(&app, &session.email, PASSWORD).await;
    let token = mailed_reset_token(&app, &session);
    let mut browser = Browser::new(&app);
    let form = browser
        .get_page(&format!("/app/reset-password?token={token}"))
        .await;
    let csrf = hidden_field(&form, "_csrf");

    // A weak password: the form again, the error beside the field, the link kept.
    let weak = browser
        .post_form(
            "/app/reset-password",
            &[
                ("_csrf", &csrf),
                ("token", &token),
                ("password", "passwordpassword"),
            ],
        )
        .await;
    assert_eq!(weak.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let page = weak.text().await.unwrap();
    assert!(
        page.contains(r#"id="password-error""#)
            && page.contains(r#"aria-describedby="password-error""#),
        "{page}"
    );
    assert_eq!(hidden_field(&page, "token"), token);

    // Without the form's CSRF token, or with another one: 403, nothing done.
    for csrf in ["", "a-token-of-another-browser-that-is-long-enough"] {
        let refused = browser
            .post_form(
                "/app/reset-password",
                &[
                    ("_csrf", csrf),
                    ("token", &token),
                    ("password", NEW_PASSWORD),
                ],
            )
            .await;
        assert_eq!(refused.status(), StatusCode::FORBIDDEN, "{csrf:?}");
    }
    let mut no_cookie = Browser::new(&app);
    let refused = no_cookie
        .post_form(
            "/app/reset-password",
            &[
                ("_csrf", &csrf),
                ("token", &token),
                ("password", NEW_PASSWORD),
            ],
        )
        .await;
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);

    // A forged link, and one without a token: 400 pages that do not repeat it.
    let forged = format!("{}x", &token[..token.len() - 1]);
    let page = browser
        .get(&format!("/app/reset-password?token={forged}"))
        .await;
    assert_eq!(page.status(), StatusCode::BAD_REQUEST);
    let text = page.text().await.unwrap();
    assert!(!text.contains(&forged) && text.contains(r#"href="/app/forgot-password""#));
    let posted = browser
        .post_form(
            "/app/reset-password",
            &[
                ("_csrf", &csrf),
                ("token", &forged),
                ("password", NEW_PASSWORD),
            ],
        )
        .await;
    assert_eq!(posted.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        browser.get("/app/reset-password").await.status(),
        StatusCode::BAD_REQUEST
    );
    let expired = app.state.signed_tokens.mint_password_reset(
        UserId::from_uuid(session.user_id),
        &session.email,
        0,
        Utc::now() - Duration::minutes(1),
    );
    let page = browser
        .get(&format!("/app/reset-password?token={expired}"))
        .await;
    assert_eq!(page.status(), StatusCode::GONE);
    assert!(page.text().await.unwrap().contains("expired"));

    assert_eq!(app.count_events("PasswordChanged").await, 0);
    assert_eq!(
        signed_in_elsewhere.get("/app/settings").await.status(),
        StatusCode::OK
    );
    // A notice is chosen by key: anything else in the address shows nothing.
    let login = browser
        .get_page("/app/login?notice=%3Cb%3Ehello%3C%2Fb%3E")
        .await;
    assert!(!login.contains("hello") && !login.contains(r#"class="notice""#));
}

#[tokio::test]
async fn the_orders_page_sends_the_verification_link_again_and_its_landing_page_leads_back() {
    let app = spawn_app().await;
    let session = app.signed_up_user().await;
    let mut browser = signed_in(&app, &session.email, PASSWORD).await;
    let home = browser.get_page("/app/").await;
    assert!(
        home.contains(r#"action="/app/verify/resend""#) && home.contains("Send the link again"),
        "{home}"
    );
    let csrf = hidden_field(&home, "_csrf");

    // The registration's mail went less than a minute ago: the page says when to ask.
    let too_soon = browser
        .post_form("/app/verify/resend", &[("_csrf", &csrf)])
        .await;
    assert_eq!(too_soon.status(), StatusCode::TOO_MANY_REQUESTS);
    let page = too_soon.text().await.unwrap();
    assert!(
        page.contains("We sent you a link less than a minute ago") && page.contains("seconds"),
        "{page}"
    );
    assert_eq!(app.count_events("VerificationMailRequested").await, 0);

    sqlx::query(
        "UPDATE events SET recorded_at = recorded_at - make_interval(mins => 2)
          WHERE aggregate_type = 'user' AND aggregate_id = $1",
    )
    .bind(session.user_id.to_string())
    .execute(&app.pool)
    .await
    .unwrap();
    let refused = browser
        .post_form("/app/verify/resend", &[("_csrf", "")])
        .await;
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    assert_eq!(app.count_events("VerificationMailRequested").await, 0);
    let resent = browser
        .post_form("/app/verify/resend", &[("_csrf", &csrf)])
        .await;
    assert_eq!(resent.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&resent), "/app/?notice=verification-sent");
    assert_eq!(app.count_events("VerificationMailRequested").await, 1);
    let home = browser.get_page("/app/?notice=verification-sent").await;
    assert!(home.contains("We sent the link again"), "{home}");

    // The mail's link verifies, on a page in the console's look that leads back.
    let token = app.state.signed_tokens.mint(
        TokenPurpose::VerifyEmail,
        UserId::from_uuid(session.user_id),
        &session.email,
        Utc::now() + Duration::hours(1),
    );
    let landing = browser.get(&format!("/auth/verify?token={token}")).await;
    assert_eq!(landing.status(), StatusCode::OK);
    let page = landing.text().await.unwrap();
    assert!(
        page.contains("E-mail address verified")
            && page.contains(r#"<a href="/app/">Go to your tracking orders</a>"#)
            && page.contains(r#"href="/app/assets/console.css""#),
        "{page}"
    );
    let home = browser.get_page("/app/").await;
    assert!(!home.contains("Send the link again"), "{home}");
    let verified = browser
        .post_form("/app/verify/resend", &[("_csrf", &csrf)])
        .await;
    assert_eq!(location(&verified), "/app/?notice=already-verified");
    assert_eq!(app.count_events("VerificationMailRequested").await, 1);

    let expired = app.state.signed_tokens.mint(
        TokenPurpose::VerifyEmail,
        UserId::from_uuid(Uuid::now_v7()),
        "someone@example.com",
        Utc::now() - Duration::minutes(1),
    );
    let landing = browser.get(&format!("/auth/verify?token={expired}")).await;
    assert_eq!(landing.status(), StatusCode::GONE);
    assert!(landing.text().await.unwrap().contains("Ask for a new link"));
}
