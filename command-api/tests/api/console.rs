//! The console's forms, as a browser without JavaScript sends them: sessions,
//! CSRF, errors beside their fields, another user's page, sign-out and a password
//! change ending sessions. (The browser tests drive the same pages in Chromium.)

use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};
use reqwest::{redirect, Response, StatusCode};
use serde_json::json;

use crate::helpers::{spawn_app, spawn_app_with_log, TestApp};

/// A browser: its cookies, and no automatic redirects (the test follows them).
pub(crate) struct Browser {
    http: reqwest::Client,
    cookies: Vec<(String, String)>,
    base: String,
}

impl Browser {
    pub(crate) fn new(app: &TestApp) -> Self {
        Self {
            http: reqwest::Client::builder()
                .redirect(redirect::Policy::none())
                .build()
                .unwrap(),
            cookies: Vec::new(),
            base: app.address.clone(),
        }
    }

    fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(name, value)| format!("{name}={value}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    fn keep_cookies(&mut self, response: &Response) {
        for value in response.headers().get_all(SET_COOKIE) {
            let text = value.to_str().unwrap();
            let (pair, attributes) = text.split_once(';').unwrap_or((text, ""));
            let (name, value) = pair.split_once('=').unwrap();
            assert!(
                attributes.contains("HttpOnly") && attributes.contains("SameSite=Lax"),
                "{text}"
            );
            self.cookies.retain(|(kept, _)| kept != name);
            if !attributes.contains("Max-Age=0") {
                self.cookies.push((name.to_owned(), value.to_owned()));
            }
        }
    }

    pub(crate) async fn get(&mut self, path: &str) -> Response {
        let response = self
            .http
            .get(format!("{}{path}", self.base))
            .header(COOKIE, self.cookie_header())
            .send()
            .await
            .unwrap();
        self.keep_cookies(&response);
        response
    }

    pub(crate) async fn get_page(&mut self, path: &str) -> String {
        let response = self.get(path).await;
        assert_eq!(response.status(), StatusCode::OK, "GET {path}");
        response.text().await.unwrap()
    }

    pub(crate) async fn post(
        &mut self,
        path: &str,
        form: &[(&str, &str)],
        origin: Option<&str>,
    ) -> Response {
        let mut request = self
            .http
            .post(format!("{}{path}", self.base))
            .header(COOKIE, self.cookie_header())
            .header("content-type", "application/x-www-form-urlencoded")
            .body(
                form.iter()
                    .map(|(name, value)| {
                        format!(
                            "{name}={}",
                            url::form_urlencoded::byte_serialize(value.as_bytes())
                                .collect::<String>()
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("&"),
            );
        if let Some(origin) = origin {
            request = request.header("origin", origin);
        }
        let response = request.send().await.unwrap();
        self.keep_cookies(&response);
        response
    }

    /// A form posted from this site's page (no `Origin` header, as a same-origin
    /// navigation without one).
    pub(crate) async fn post_form(&mut self, path: &str, form: &[(&str, &str)]) -> Response {
        self.post(path, form, None).await
    }

    pub(crate) fn has_session(&self) -> bool {
        self.cookies
            .iter()
            .any(|(name, _)| name == "orders_session")
    }
}

/// The value of the hidden `_csrf` field of a page.
pub(crate) fn csrf_of(page: &str) -> String {
    let at = page.find(r#"name="_csrf" value=""#).expect("a CSRF field")
        + r#"name="_csrf" value=""#.len();
    page[at..at + page[at..].find('"').unwrap()].to_owned()
}

pub(crate) fn location(response: &Response) -> String {
    response.headers()[LOCATION].to_str().unwrap().to_owned()
}

pub(crate) const PASSWORD: &str = "a long enough password";

/// Signs up through the form; answers the browser, signed in, and the address.
pub(crate) async fn signed_up(app: &TestApp) -> (Browser, String) {
    let mut browser = Browser::new(app);
    let email = format!("console-{}@example.com", uuid::Uuid::now_v7().simple());
    let form = browser.get_page("/app/signup").await;
    let csrf = csrf_of(&form);
    let response = browser
        .post(
            "/app/signup",
            &[("_csrf", &csrf), ("email", &email), ("password", PASSWORD)],
            None,
        )
        .await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&response), "/app/");
    assert!(browser.has_session());
    (browser, email)
}

#[tokio::test]
async fn a_shopper_signs_up_places_an_order_and_changes_it_without_javascript() {
    let app = spawn_app_with_log().await;
    let (mut browser, email) = signed_up(&app).await;
    let home = browser.get_page("/app/").await;
    assert!(
        home.contains(&email) && home.contains("Track a product"),
        "{home}"
    );
    let csrf = csrf_of(&home);

    // A bad target is shown beside its field, with what was typed kept.
    let refused = browser
        .post(
            "/app/orders",
            &[
                ("_csrf", &csrf),
                ("url", "https://shop.example.com/p/1"),
                ("target_price", "12.345"),
                ("currency", "UAH"),
                ("check_interval_secs", "3600"),
                ("selector", ""),
            ],
            None,
        )
        .await;
    assert_eq!(refused.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let page = refused.text().await.unwrap();
    assert!(page.contains(r#"id="target_price-error""#), "{page}");
    assert!(page.contains(r#"value="https://shop.example.com/p/1""#));
    assert_eq!(app.count_events("OrderPlaced").await, 0);

    let placed = browser
        .post(
            "/app/orders",
            &[
                ("_csrf", &csrf),
                ("url", "https://shop.example.com/p/1"),
                ("target_price", "3199.00"),
                ("currency", "uah"),
                ("check_interval_secs", "3600"),
                ("selector", ""),
            ],
            None,
        )
        .await;
    assert_eq!(placed.status(), StatusCode::SEE_OTHER);
    let shown_at = location(&placed);
    let (order_path, at) = shown_at
        .split_once("?at=")
        .expect("the order's page, at its position");
    let order_path = order_path.to_owned();
    assert!(
        order_path.starts_with("/app/orders/") && at.contains('.'),
        "{shown_at}"
    );
    let order_id = order_path.trim_start_matches("/app/orders/").to_owned();
    assert_eq!(app.count_events("OrderPlaced").await, 1);

    // The page reads the view, which follows the log.
    let mut shown = String::new();
    for _ in 0..200 {
        let response = browser.get(&order_path).await;
        if response.status() == StatusCode::OK {
            shown = response.text().await.unwrap();
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    assert!(shown.contains("https://shop.example.com/p/1"), "{shown}");
    assert!(
        shown.contains("3 199.00 UAH") && shown.contains("Pause"),
        "{shown}"
    );

    let paused = browser
        .post(&format!("{order_path}/pause"), &[("_csrf", &csrf)], None)
        .await;
    assert_eq!(paused.status(), StatusCode::SEE_OTHER);
    let again = browser
        .post(&format!("{order_path}/pause"), &[("_csrf", &csrf)], None)
        .await;
    assert_eq!(again.status(), StatusCode::CONFLICT, "said on the page");
    assert!(again.text().await.unwrap().contains(r#"class="error""#));
    let bad_target = browser
        .post(
            &format!("{order_path}/target"),
            &[("_csrf", &csrf), ("target_price", "-1")],
            None,
        )
        .await;
    assert_eq!(bad_target.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(bad_target
        .text()
        .await
        .unwrap()
        .contains(r#"id="target-error""#));
    let statuses: Vec<String> = sqlx::query_scalar(
        "SELECT event_type FROM events WHERE aggregate_type = 'order' AND aggregate_id = $1 ORDER BY sequence",
    )
    .bind(&order_id)
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(statuses, ["OrderPlaced", "OrderPaused"]);
}

#[tokio::test]
async fn forms_without_the_token_or_from_another_site_change_nothing() {
    let app = spawn_app().await;
    let (mut browser, _) = signed_up(&app).await;
    let csrf = csrf_of(&browser.get_page("/app/").await);
    let order = [
        ("url", "https://shop.example.com/p/1"),
        ("target_price", "10.00"),
        ("currency", "UAH"),
    ];

    let without: Vec<(&str, &str)> = order.to_vec();
    let refused = browser.post("/app/orders", &without, None).await;
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    let mut wrong = order.to_vec();
    wrong.push(("_csrf", "not-the-token"));
    assert_eq!(
        browser.post("/app/orders", &wrong, None).await.status(),
        StatusCode::FORBIDDEN
    );
    let mut right = order.to_vec();
    right.push(("_csrf", &csrf));
    let cross_site = browser
        .post("/app/orders", &right, Some("https://evil.example"))
        .await;
    assert_eq!(cross_site.status(), StatusCode::FORBIDDEN);
    assert_eq!(app.count_events("OrderPlaced").await, 0, "nothing stored");

    // A sign-in form posted without its cookie's token is refused too.
    let mut stranger = Browser::new(&app);
    let login = stranger
        .post(
            "/app/login",
            &[
                ("_csrf", "x"),
                ("email", "a@example.com"),
                ("password", PASSWORD),
            ],
            None,
        )
        .await;
    assert_eq!(login.status(), StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn pages_need_a_session_and_sign_out_and_a_password_change_end_it() {
    let app = spawn_app().await;
    let mut anonymous = Browser::new(&app);
    let response = anonymous.get("/app/").await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&response), "/app/login?next=%2Fapp%2F");
    assert_eq!(anonymous.get("/").await.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        anonymous.get("/app/no-such-page").await.status(),
        StatusCode::NOT_FOUND
    );

    let (mut browser, email) = signed_up(&app).await;
    let csrf = csrf_of(&browser.get_page("/app/").await);
    let out = browser.post("/app/logout", &[("_csrf", &csrf)], None).await;
    assert_eq!(out.status(), StatusCode::SEE_OTHER);
    assert!(!browser.has_session());
    assert_eq!(browser.get("/app/").await.status(), StatusCode::SEE_OTHER);

    // Signing in again: a wrong password is said on the form, the right one
    // goes where the sign-in was asked from.
    let form = browser.get_page("/app/login?next=/app/orders/x").await;
    let csrf = csrf_of(&form);
    let wrong = browser
        .post(
            "/app/login",
            &[
                ("_csrf", &csrf),
                ("email", &email),
                ("password", "not the password at all"),
                ("next", "/app/"),
            ],
            None,
        )
        .await;
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    assert!(wrong
        .text()
        .await
        .unwrap()
        .contains("do not match an account"));
    let right = browser
        .post(
            "/app/login",
            &[
                ("_csrf", &csrf),
                ("email", &email),
                ("password", PASSWORD),
                ("next", "https://evil.example/"),
            ],
            None,
        )
        .await;
    assert_eq!(right.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&right), "/app/", "never sent to another site");
    assert_eq!(browser.get("/app/").await.status(), StatusCode::OK);

    // A password change through the API ends the browser's session.
    let token = app
        .login(&email, PASSWORD)
        .await
        .json::<serde_json::Value>()
        .await
        .unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let changed = app
        .post_json(
            "/me/password",
            &json!({"current_password": PASSWORD, "new_password": "another long enough password"}),
            Some(&token),
        )
        .await;
    assert_eq!(changed.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        browser.get("/app/").await.status(),
        StatusCode::SEE_OTHER,
        "signed out"
    );
}

#[tokio::test]
async fn another_users_order_is_a_404_page() {
    let app = spawn_app().await;
    let owner = app.signed_up_user().await;
    let order_id = app.placed_order(&owner.token).await;
    let (mut browser, _) = signed_up(&app).await;
    let csrf = csrf_of(&browser.get_page("/app/").await);
    let page = browser.get(&format!("/app/orders/{order_id}")).await;
    assert_eq!(page.status(), StatusCode::NOT_FOUND);
    assert!(page.text().await.unwrap().contains("Page not found"));
    let cancel = browser
        .post(
            &format!("/app/orders/{order_id}/cancel"),
            &[("_csrf", &csrf)],
            None,
        )
        .await;
    assert_eq!(cancel.status(), StatusCode::NOT_FOUND);
    assert_eq!(app.count_events("OrderCancelled").await, 0);
}

#[tokio::test]
async fn settings_change_the_profile_alerts_and_password_with_errors_beside_their_fields() {
    let app = spawn_app().await;
    let (mut browser, email) = signed_up(&app).await;
    let settings = browser.get_page("/app/settings").await;
    assert!(
        settings.contains(r#"id="price_alerts" name="price_alerts" value="on" checked"#),
        "{settings}"
    );
    let csrf = csrf_of(&settings);

    // Unticked: the browser sends no price_alerts at all.
    let saved = browser
        .post(
            "/app/settings/profile",
            &[("_csrf", &csrf), ("display_name", "Ann")],
            None,
        )
        .await;
    assert_eq!(saved.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&saved), "/app/settings?saved=1");
    let shown = browser.get_page("/app/settings?saved=1").await;
    assert!(shown.contains("Saved.") && shown.contains(r#"value="Ann""#));
    assert!(!shown.contains("checked"), "alerts off");
    let token = app
        .login(&email, PASSWORD)
        .await
        .json::<serde_json::Value>()
        .await
        .unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let me: serde_json::Value = app
        .http
        .get(app.url("/me"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["display_name"], "Ann");
    assert_eq!(me["notification_preferences"]["price_alerts"], false);

    let too_long = "x".repeat(200);
    let refused = browser
        .post(
            "/app/settings/profile",
            &[
                ("_csrf", &csrf),
                ("display_name", &too_long),
                ("price_alerts", "on"),
            ],
            None,
        )
        .await;
    assert_eq!(refused.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(refused
        .text()
        .await
        .unwrap()
        .contains(r#"id="display_name-error""#));

    let wrong = browser
        .post(
            "/app/settings/password",
            &[
                ("_csrf", &csrf),
                ("current_password", "not the password at all"),
                ("new_password", "another long enough password"),
            ],
            None,
        )
        .await;
    assert_eq!(wrong.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(wrong
        .text()
        .await
        .unwrap()
        .contains(r#"id="current_password-error""#));
    let changed = browser
        .post(
            "/app/settings/password",
            &[
                ("_csrf", &csrf),
                ("current_password", PASSWORD),
                ("new_password", "another long enough password"),
            ],
            None,
        )
        .await;
    assert_eq!(changed.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&changed), "/app/login");
    assert_eq!(
        browser.get("/app/settings").await.status(),
        StatusCode::SEE_OTHER,
        "signed out"
    );
    assert_eq!(
        app.login(&email, "another long enough password")
            .await
            .status(),
        StatusCode::OK
    );
}
