//! The shopper's whole story with every real part: `orders serve all` on PostgreSQL,
//! nats-server and the SMTP catcher, and a shop served by the fixture server.
//! Register → the verification mail arrives → verify → place an order above the
//! price → the price drops below the target → exactly one alert mail, with the right
//! prices; the price history shows the observations. And the account mails: a
//! resent verification mail, and a password reset through the mailed link.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use orders_test_support::fixture_shop::FixtureServer;
use orders_test_support::nats_server::NatsServer;
use serde_json::{json, Value};

mod common;
use common::{fresh_database, worker_caught_up, Service};

fn product_page(price: &str) -> String {
    format!(
        r#"<!doctype html><html><head><title>Kettle</title>
<script type="application/ld+json">
{{"@context": "https://schema.org", "@type": "Product", "name": "Чайник Philips HD9350",
  "offers": {{"@type": "Offer", "price": "{price}", "priceCurrency": "UAH",
              "availability": "https://schema.org/InStock"}}}}
</script></head><body><h1>Чайник Philips HD9350</h1><p class="price">{price} ₴</p></body></html>"#
    )
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run the tests with `make test`, or `set -a; . .data/test.env`")
    })
}

/// The mails in the catcher's Maildir addressed to `recipient`, decoded enough to
/// read (quoted-printable and base64 parts are decoded).
fn mails_to(recipient: &str) -> Vec<String> {
    let maildir = PathBuf::from(env("ORDERS_TEST_MAILDIR")).join("new");
    let Ok(entries) = std::fs::read_dir(&maildir) else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| std::fs::read_to_string(entry.ok()?.path()).ok())
        .filter(|mail| {
            mail.lines().any(|line| {
                line.to_ascii_lowercase().starts_with("to:") && line.contains(recipient)
            })
        })
        .map(|mail| decode_parts(&mail))
        .collect()
}

/// The mail with its quoted-printable soft breaks and escapes undone and its base64
/// parts decoded, appended: enough to search it for links and prices.
fn decode_parts(mail: &str) -> String {
    use base64::Engine as _;
    let unfolded = mail.replace("=\r\n", "").replace("=\n", "");
    let mut bytes = Vec::new();
    let raw = unfolded.as_bytes();
    let mut index = 0;
    while index < raw.len() {
        if raw[index] == b'=' && index + 2 < raw.len() {
            if let Ok(byte) = u8::from_str_radix(&unfolded[index + 1..index + 3], 16) {
                bytes.push(byte);
                index += 3;
                continue;
            }
        }
        bytes.push(raw[index]);
        index += 1;
    }
    let mut text = String::from_utf8_lossy(&bytes).into_owned();
    // base64 bodies: every run of base64 lines after a blank line.
    for block in mail.split("\r\n\r\n").chain(mail.split("\n\n")) {
        let candidate: String = block
            .lines()
            .take_while(|line| !line.starts_with("--"))
            .collect();
        if candidate.len() > 40 {
            if let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(candidate.trim())
            {
                text.push('\n');
                text.push_str(&String::from_utf8_lossy(&decoded));
            }
        }
    }
    text
}

async fn wait_for_mails(recipient: &str, count: usize, within: Duration) -> Vec<String> {
    let deadline = Instant::now() + within;
    loop {
        let mails = mails_to(recipient);
        if mails.len() >= count || Instant::now() > deadline {
            return mails;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

struct Api {
    http: reqwest::Client,
    base: String,
}

impl Api {
    /// A client of the API at `base`, once its `/healthz` answers.
    async fn once_ready(base: &str) -> Api {
        orders_workers::fetch::install_crypto_provider();
        let api = Api {
            http: reqwest::Client::new(),
            base: base.to_owned(),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while api
            .http
            .get(format!("{base}/healthz"))
            .send()
            .await
            .is_err()
        {
            assert!(Instant::now() < deadline, "orders serve all did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        api
    }

    async fn post(&self, path: &str, body: Value, token: Option<&str>) -> reqwest::Response {
        let mut request = self.http.post(format!("{}{path}", self.base)).json(&body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send().await.unwrap()
    }

    async fn get(&self, path: &str, token: &str) -> Value {
        let response = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert!(
            response.status().is_success(),
            "GET {path}: {}",
            response.status()
        );
        response.json().await.unwrap()
    }

    /// Polls `GET path` until `ready` holds (the workers and projectors run on their
    /// own time).
    async fn get_until(&self, path: &str, token: &str, ready: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            // The views follow the log on their own time: a 404 for an order placed
            // a moment ago means "not yet".
            let response = self
                .http
                .get(format!("{}{path}", self.base))
                .bearer_auth(token)
                .send()
                .await
                .unwrap();
            let value = if response.status().is_success() {
                response.json().await.unwrap()
            } else {
                json!({"status": response.status().as_u16()})
            };
            if ready(&value) {
                return value;
            }
            assert!(
                Instant::now() < deadline,
                "GET {path} never got there: {value}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

#[tokio::test]
async fn a_price_drop_below_the_target_mails_one_alert_to_the_verified_owner() {
    let (database_url, pool) = fresh_database().await;
    let nats = NatsServer::start();
    let shop = FixtureServer::start().await.unwrap();
    shop.set_html("/p/kettle", product_page("3500.00"));
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let _orders = serve_all_with_a_scraper(&database_url, &nats, port, &base);
    let api = Api::once_ready(&base).await;

    // Register: the verification mail arrives; its link verifies the address.
    let email = format!("shopper-{}@example.com", uuid::Uuid::now_v7().simple());
    let password = "correct horse battery staple";
    let registered = api
        .post(
            "/auth/register",
            json!({"email": email, "password": password}),
            None,
        )
        .await;
    assert_eq!(registered.status(), 201);
    let mails = wait_for_mails(&email, 1, Duration::from_secs(30)).await;
    assert_eq!(mails.len(), 1, "one verification mail");
    let link_start = mails[0]
        .find(&format!("{base}/auth/verify?token="))
        .expect("the mail has the verification link");
    let token: String = mails[0][link_start..]
        .split_once("token=")
        .unwrap()
        .1
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        .collect();
    let verified = api
        .post("/auth/verify", json!({"token": token}), None)
        .await;
    assert_eq!(verified.status(), 204);
    let login: Value = api
        .post(
            "/auth/login",
            json!({"email": email, "password": password}),
            None,
        )
        .await
        .json()
        .await
        .unwrap();
    let access = login["access_token"].as_str().unwrap().to_owned();

    // An order above the current price: the first check sees 3500.00, no alert.
    let placed: Value = api
        .post(
            "/orders",
            json!({"url": shop.url("/p/kettle").as_str(), "target_price": "3199.00", "currency": "UAH"}),
            Some(&access),
        )
        .await
        .json()
        .await
        .unwrap();
    let order_id = placed["order_id"].as_str().unwrap().to_owned();
    let order_path = format!("/orders/{order_id}");
    let check = api
        .post(&format!("{order_path}/check"), json!({}), Some(&access))
        .await;
    assert_eq!(check.status(), 202);
    let order = api
        .get_until(&order_path, &access, |order| {
            order["last_price"] == "3500.00"
        })
        .await;
    assert_eq!(order["title"], "Чайник Philips HD9350");
    assert_eq!(order["alert_armed"], true);

    // The shop drops the price below the target: one alert.
    shop.set_html("/p/kettle", product_page("2999.00"));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let check = api
            .post(&format!("{order_path}/check"), json!({}), Some(&access))
            .await;
        assert_eq!(check.status(), 202);
        let order = api.get(&order_path, &access).await;
        if order["last_price"] == "2999.00" {
            assert_eq!(order["alert_armed"], false);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the drop was never observed: {order}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let mails = wait_for_mails(&email, 2, Duration::from_secs(30)).await;
    assert_eq!(mails.len(), 2, "the verification mail and one alert");
    let alert = mails
        .iter()
        .find(|mail| mail.contains("2 999.00 UAH"))
        .expect("the alert shows the new price");
    assert!(alert.contains("3 500.00 UAH"), "and the old one");
    assert!(alert.contains("3 199.00 UAH"), "and the target");
    assert!(
        alert.contains(shop.url("/p/kettle").as_str()),
        "and the link"
    );
    assert!(alert.contains(&format!("{base}/unsubscribe?token=")));
    assert!(alert.to_ascii_lowercase().contains("message-id: <"));

    // More checks at the low price: still one alert.
    for _ in 0..2 {
        let check = api
            .post(&format!("{order_path}/check"), json!({}), Some(&access))
            .await;
        assert_eq!(check.status(), 202);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let history = api
        .get_until(&format!("{order_path}/prices"), &access, |page| {
            page["items"]
                .as_array()
                .is_some_and(|items| items.len() >= 3)
        })
        .await;
    let prices: Vec<&str> = history["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|point| point["price"].as_str().unwrap())
        .collect();
    assert_eq!(prices[0], "3500.00");
    assert!(
        prices[1..].iter().all(|price| *price == "2999.00"),
        "{prices:?}"
    );
    // Once the e-mail worker has handled every event of those checks: still one.
    worker_caught_up(&pool, nats.url(), "email").await;
    assert_eq!(mails_to(&email).len(), 2, "no second alert");
}

/// `orders serve all` on the database, NATS and the SMTP catcher, answering at `port`.
fn serve_all(database_url: &str, nats: &NatsServer, port: u16, base: &str) -> Service {
    Service::new(
        Command::new(env!("CARGO_BIN_EXE_orders"))
            .args(["serve", "all"])
            .env("ORDERS_DATABASE_URL", database_url)
            .env("ORDERS_NATS_URL", nats.url())
            .env("ORDERS_HTTP_ADDR", format!("127.0.0.1:{port}"))
            .env("ORDERS_PUBLIC_URL", base)
            .env("ORDERS_AUDIT_KEY", common::AUDIT_KEY)
            .env(
                "ORDERS_JWT_SECRET",
                "an end-to-end test secret of more than 32 bytes",
            )
            .env("ORDERS_SMTP_URL", env("ORDERS_TEST_SMTP_URL"))
            .env("ORDERS_MAIL_FROM", "Orders <accounts@orders.test>")
            .env("ORDERS_RELAY_POLL_MS", "20")
            .env("ORDERS_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    )
}

/// The token of the first link to `{base}{path}?token=` in a mail.
fn token_in(mail: &str, link_prefix: &str) -> Option<String> {
    let start = mail.find(link_prefix)?;
    Some(
        mail[start + link_prefix.len()..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            .collect(),
    )
}

fn message_id_of(mail: &str) -> String {
    mail.lines()
        .find(|line| line.to_ascii_lowercase().starts_with("message-id:"))
        .expect("a Message-ID header")
        .split_once(':')
        .unwrap()
        .1
        .trim()
        .to_owned()
}

#[tokio::test]
async fn a_forgotten_password_is_reset_through_the_mailed_link_and_a_lost_verification_mail_resent()
{
    let (database_url, pool) = fresh_database().await;
    let nats = NatsServer::start();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let _orders = serve_all(&database_url, &nats, port, &base);
    let api = Api::once_ready(&base).await;

    let email = format!("forgetful-{}@example.com", uuid::Uuid::now_v7().simple());
    let password = "correct horse battery staple";
    let registered = api
        .post(
            "/auth/register",
            json!({"email": email, "password": password}),
            None,
        )
        .await;
    assert_eq!(registered.status(), 201);
    let mails = wait_for_mails(&email, 1, Duration::from_secs(30)).await;
    assert_eq!(mails.len(), 1, "the registration's verification mail");
    let verify_link = format!("{base}/auth/verify?token=");
    let first_message_id = message_id_of(&mails[0]);

    // The verification mail got lost: ask for another (a minute after the first;
    // the registration is moved back in time rather than waited for).
    sqlx::query(
        "UPDATE events SET recorded_at = recorded_at - interval '2 minutes'
          WHERE aggregate_type = 'user'",
    )
    .execute(&pool)
    .await
    .unwrap();
    let login: Value = api
        .post(
            "/auth/login",
            json!({"email": email, "password": password}),
            None,
        )
        .await
        .json()
        .await
        .unwrap();
    let access = login["access_token"].as_str().unwrap().to_owned();
    let resent = api
        .post("/auth/verify/resend", json!({}), Some(&access))
        .await;
    assert_eq!(resent.status(), 202);
    let mails = wait_for_mails(&email, 2, Duration::from_secs(30)).await;
    assert_eq!(mails.len(), 2, "a second verification mail");
    // A mail of its own (its own Message-ID), with a verification link.
    let resent_mail = mails
        .iter()
        .find(|mail| message_id_of(mail) != first_message_id)
        .expect("each mail its own Message-ID");
    let second_token = token_in(resent_mail, &verify_link).expect("a verification link");
    let verified = api
        .post("/auth/verify", json!({"token": second_token}), None)
        .await;
    assert_eq!(verified.status(), 204);

    // The password is forgotten: the reset mail's link sets a new one.
    let requested = api
        .post("/auth/password-reset", json!({"email": email}), None)
        .await;
    assert_eq!(requested.status(), 202);
    let mails = wait_for_mails(&email, 3, Duration::from_secs(30)).await;
    assert_eq!(mails.len(), 3, "the reset mail");
    let reset_link = format!("{base}/auth/password-reset/confirm?token=");
    let reset_mail = mails
        .iter()
        .find(|mail| mail.contains(&reset_link))
        .expect("a mail with the reset link");
    assert!(reset_mail.contains("Reset your Orders password"));
    let token = token_in(reset_mail, &reset_link).unwrap();

    // The link opens a page with the form that posts the new password.
    let page = api
        .http
        .get(format!("{reset_link}{token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("type=\"password\""));

    let new_password = "a password I will remember";
    let confirmed = api
        .post(
            "/auth/password-reset/confirm",
            json!({"token": token, "password": new_password}),
            None,
        )
        .await;
    assert_eq!(confirmed.status(), 204);
    let login = api
        .post(
            "/auth/login",
            json!({"email": email, "password": new_password}),
            None,
        )
        .await;
    assert_eq!(login.status(), 200);
    let old = api
        .post(
            "/auth/login",
            json!({"email": email, "password": password}),
            None,
        )
        .await;
    assert_eq!(old.status(), 401);
    // Once only.
    let again = api
        .post(
            "/auth/password-reset/confirm",
            json!({"token": token, "password": "another new password"}),
            None,
        )
        .await;
    assert_eq!(again.status(), 410);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(mails_to(&email).len(), 3, "no other mail");
}

#[tokio::test]
async fn no_alert_goes_to_an_unverified_address_or_to_a_user_who_turned_alerts_off() {
    let (database_url, pool) = fresh_database().await;
    let nats = NatsServer::start();
    let shop = FixtureServer::start().await.unwrap();
    shop.set_html("/p/kettle", product_page("2999.00"));
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let _orders = serve_all_with_a_scraper(&database_url, &nats, port, &base);
    let api = Api::once_ready(&base).await;
    let password = "correct horse battery staple";
    let sign_up = |name: &'static str| {
        let api = &api;
        async move {
            let email = format!("{name}-{}@example.com", uuid::Uuid::now_v7().simple());
            let registered = api
                .post(
                    "/auth/register",
                    json!({"email": email, "password": password}),
                    None,
                )
                .await;
            assert_eq!(registered.status(), 201);
            let login: Value = api
                .post(
                    "/auth/login",
                    json!({"email": email, "password": password}),
                    None,
                )
                .await
                .json()
                .await
                .unwrap();
            (email, login["access_token"].as_str().unwrap().to_owned())
        }
    };
    // Places an order whose target the shop's price (2999.00) already meets, has it
    // checked, and waits until the order says the target was reached.
    let reach_target = |token: String| {
        let api = &api;
        let url = shop.url("/p/kettle").to_string();
        async move {
            let placed: Value = api
                .post(
                    "/orders",
                    json!({"url": url, "target_price": "3199.00", "currency": "UAH"}),
                    Some(&token),
                )
                .await
                .json()
                .await
                .unwrap();
            let path = format!("/orders/{}", placed["order_id"].as_str().unwrap());
            let checked = api
                .post(&format!("{path}/check"), json!({}), Some(&token))
                .await;
            assert_eq!(checked.status(), 202);
            api.get_until(&path, &token, |order| order["alert_armed"] == false)
                .await;
            path
        }
    };

    // Never verified: the target is reached, no alert.
    let (unverified, unverified_token) = sign_up("unverified").await;
    reach_target(unverified_token).await;

    // Verified, but alerts turned off: no alert either.
    let (quiet, quiet_token) = sign_up("quiet").await;
    let mails = wait_for_mails(&quiet, 1, Duration::from_secs(30)).await;
    let token = token_in(&mails[0], &format!("{base}/auth/verify?token=")).unwrap();
    assert_eq!(
        api.post("/auth/verify", json!({"token": token}), None)
            .await
            .status(),
        204
    );
    let turned_off = api
        .http
        .patch(format!("{base}/me"))
        .bearer_auth(&quiet_token)
        .json(&json!({"notification_preferences": {"price_alerts": false}}))
        .send()
        .await
        .unwrap();
    assert!(turned_off.status().is_success(), "{}", turned_off.status());
    let quiet_order = reach_target(quiet_token.clone()).await;

    // Once the e-mail worker has handled both targets reached: the verification
    // mails only.
    worker_caught_up(&pool, nats.url(), "email").await;
    assert_eq!(mails_to(&unverified).len(), 1, "the verification mail only");
    assert_eq!(mails_to(&quiet).len(), 1, "the verification mail only");

    // The same user with alerts on again gets the next alert: the price rises above
    // the target (re-arming it) and drops again.
    let turned_on = api
        .http
        .patch(format!("{base}/me"))
        .bearer_auth(&quiet_token)
        .json(&json!({"notification_preferences": {"price_alerts": true}}))
        .send()
        .await
        .unwrap();
    assert!(turned_on.status().is_success());
    for (price, armed) in [("3500.00", true), ("2899.00", false)] {
        shop.set_html("/p/kettle", product_page(price));
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let checked = api
                .post(
                    &format!("{quiet_order}/check"),
                    json!({}),
                    Some(&quiet_token),
                )
                .await;
            assert_eq!(checked.status(), 202);
            let order = api.get(&quiet_order, &quiet_token).await;
            if order["alert_armed"] == armed && order["last_price"] == price {
                break;
            }
            assert!(Instant::now() < deadline, "never saw {price}: {order}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let mails = wait_for_mails(&quiet, 2, Duration::from_secs(30)).await;
    assert_eq!(mails.len(), 2, "now the alert");
    assert!(mails.iter().any(|mail| mail.contains("2 899.00 UAH")));
}

/// `orders serve all` whose scraper may fetch the local shops.
fn serve_all_with_a_scraper(
    database_url: &str,
    nats: &NatsServer,
    port: u16,
    base: &str,
) -> Service {
    Service::new(
        Command::new(env!("CARGO_BIN_EXE_orders"))
            .args(["serve", "all"])
            .env("ORDERS_DATABASE_URL", database_url)
            .env("ORDERS_NATS_URL", nats.url())
            .env("ORDERS_HTTP_ADDR", format!("127.0.0.1:{port}"))
            .env("ORDERS_PUBLIC_URL", base)
            .env("ORDERS_AUDIT_KEY", common::AUDIT_KEY)
            .env(
                "ORDERS_JWT_SECRET",
                "an end-to-end test secret of more than 32 bytes",
            )
            .env("ORDERS_SMTP_URL", env("ORDERS_TEST_SMTP_URL"))
            .env("ORDERS_MAIL_FROM", "Orders <alerts@orders.test>")
            .env("ORDERS_SCRAPER_ALLOW_PRIVATE", "127.0.0.0/8")
            .env("ORDERS_SCRAPER_HOST_SPACING_MS", "50")
            .env("ORDERS_RELAY_POLL_MS", "20")
            .env("ORDERS_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    )
}

/// Runs `orders audit ...` on the test's database; its stdout as JSON.
fn audit(database_url: &str, args: &[&str]) -> Value {
    let output = Command::new(env!("CARGO_BIN_EXE_orders"))
        .arg("audit")
        .args(args)
        .arg("--json")
        .env("ORDERS_DATABASE_URL", database_url)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "orders audit {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

fn event_types(page: &Value) -> Vec<String> {
    page["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| entry["event_type"].as_str().unwrap().to_owned())
        .collect()
}

/// The verification link of the mail to `email` (waits for it).
async fn verification_token(email: &str, base: &str) -> String {
    let mails = wait_for_mails(email, 1, Duration::from_secs(30)).await;
    assert_eq!(mails.len(), 1, "one verification mail to {email}");
    let link_start = mails[0]
        .find(&format!("{base}/auth/verify?token="))
        .expect("the mail has the verification link");
    mails[0][link_start..]
        .split_once("token=")
        .unwrap()
        .1
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        .collect()
}

/// Registers, verifies through the mailed link and logs in: the user's id and
/// access token.
async fn verified_user(api: &Api, base: &str, email: &str) -> (String, String) {
    let password = "correct horse battery staple";
    let registered: Value = api
        .post(
            "/auth/register",
            json!({"email": email, "password": password}),
            None,
        )
        .await
        .json()
        .await
        .unwrap();
    let token = verification_token(email, base).await;
    let verified = api
        .post("/auth/verify", json!({"token": token}), None)
        .await;
    assert_eq!(verified.status(), 204);
    let login: Value = api
        .post(
            "/auth/login",
            json!({"email": email, "password": password}),
            None,
        )
        .await
        .json()
        .await
        .unwrap();
    (
        registered["user_id"].as_str().unwrap().to_owned(),
        login["access_token"].as_str().unwrap().to_owned(),
    )
}

/// (depth, event type, actor) of each node of `orders audit trace`.
fn trace_nodes(trace: &Value) -> Vec<(u64, String, String)> {
    trace["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|node| {
            (
                node["depth"].as_u64().unwrap(),
                node["entry"]["event_type"].as_str().unwrap().to_owned(),
                node["entry"]["actor"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// A day in the life of the system, then its audit trail: a user registers and
/// verifies, places two orders, an administrator (made one by an operator) grants
/// the user a role, the scheduler and the scraper check both orders, the user asks
/// for a check. The trace of the user's request shows the request's event and what
/// the workers did because of it, in causal order, each with its actor; the
/// scheduler's job and the role change are attributed as such; and the whole log
/// verifies.
#[tokio::test]
async fn the_audit_trail_of_a_realistic_day_attributes_every_event_and_verifies() {
    let (database_url, pool) = fresh_database().await;
    let nats = NatsServer::start();
    let shop = FixtureServer::start().await.unwrap();
    shop.set_html("/p/kettle", product_page("3500.00"));
    shop.set_html("/p/toaster", product_page("1500.00"));
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let _orders = serve_all_with_a_scraper(&database_url, &nats, port, &base);
    let api = Api::once_ready(&base).await;

    // An operator makes the first administrator.
    let admin_email = format!("admin-{}@example.com", uuid::Uuid::now_v7().simple());
    let (admin_id, _) = verified_user(&api, &base, &admin_email).await;
    let granted = Command::new(env!("CARGO_BIN_EXE_orders"))
        .args(["admin", "grant", &admin_email, "admin"])
        .env("ORDERS_DATABASE_URL", &database_url)
        .env("ORDERS_AUDIT_KEY", common::AUDIT_KEY)
        .env("USER", "operator")
        .output()
        .unwrap();
    assert!(
        granted.status.success(),
        "{}",
        String::from_utf8_lossy(&granted.stderr)
    );
    let admin_login: Value = api
        .post(
            "/auth/login",
            json!({"email": admin_email, "password": "correct horse battery staple"}),
            None,
        )
        .await
        .json()
        .await
        .unwrap();
    let admin_token = admin_login["access_token"].as_str().unwrap().to_owned();

    // The user: registered, verified, two orders.
    let email = format!("audited-{}@example.com", uuid::Uuid::now_v7().simple());
    let (user_id, token) = verified_user(&api, &base, &email).await;
    let user = format!("user:{user_id}");
    let mut order_ids = Vec::new();
    for path in ["/p/kettle", "/p/toaster"] {
        let placed: Value = api
            .post(
                "/orders",
                json!({"url": shop.url(path).as_str(), "target_price": "3199.00", "currency": "UAH"}),
                Some(&token),
            )
            .await
            .json()
            .await
            .unwrap();
        order_ids.push(placed["order_id"].as_str().unwrap().to_owned());
    }

    // The administrator makes the user an auditor.
    let changed = api
        .post(
            &format!("/admin/users/{user_id}/roles"),
            json!({"role": "auditor", "action": "grant"}),
            Some(&admin_token),
        )
        .await;
    assert_eq!(changed.status(), 204, "{:?}", changed.text().await);

    // The scheduler's turn: the toaster's first check is made due now (as if its
    // spread had passed) once the scheduler has it in its plan.
    let toaster = &order_ids[1];
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let planned = sqlx::query(
            "UPDATE check_schedule SET next_check_at = now() WHERE order_id = $1::uuid",
        )
        .bind(toaster)
        .execute(&pool)
        .await
        .unwrap()
        .rows_affected();
        if planned == 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the scheduler never planned the order"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    api.get_until(&format!("/orders/{toaster}"), &token, |order| {
        order["last_price"] == "1500.00"
    })
    .await;

    // The user asks for a check of the kettle, whose price has just dropped, under
    // a correlation id of their own. The scheduler is kept off it (its next check a
    // day away, none in flight) so that this request is what observes the drop.
    let kettle = &order_ids[0];
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (planned, in_flight): (i64, i64) = sqlx::query_as(
            "WITH planned AS (
                UPDATE check_schedule SET next_check_at = now() + interval '1 day'
                 WHERE order_id = $1::uuid RETURNING order_id)
             SELECT (SELECT count(*) FROM planned),
                    (SELECT count(*) FROM check_claims WHERE order_id = $1::uuid)",
        )
        .bind(kettle)
        .fetch_one(&pool)
        .await
        .unwrap();
        if planned == 1 && in_flight == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the kettle's schedule never settled"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    shop.set_html("/p/kettle", product_page("2999.00"));
    let correlation = uuid::Uuid::now_v7().to_string();
    let checked = api
        .http
        .post(format!("{base}/orders/{kettle}/check"))
        .bearer_auth(&token)
        .header("X-Correlation-Id", &correlation)
        .send()
        .await
        .unwrap();
    assert_eq!(checked.status(), 202);
    api.get_until(&format!("/orders/{kettle}"), &token, |order| {
        order["alert_armed"] == false
    })
    .await;

    // The request's event, the scraper's observation under it, the order's price
    // change and alert under that: in causal order, each with who did it.
    let trace = audit(&database_url, &["trace", &correlation]);
    let scraper = "system:scraper".to_owned();
    let policy = "system:policy".to_owned();
    assert_eq!(
        trace_nodes(&trace),
        [
            (0, "PriceCheckRequested".to_owned(), user.clone()),
            (1, "PriceObserved".to_owned(), scraper.clone()),
            (2, "PriceChanged".to_owned(), policy.clone()),
            (2, "TargetReached".to_owned(), policy.clone()),
        ]
    );

    // The scheduler's job for the toaster, traced the same way.
    let scheduled = audit(&database_url, &["actor", "system:scheduler"]);
    let job = scheduled["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|entry| entry["event_type"] == "PriceCheckRequested")
        .expect("the scheduler requested a check");
    let job_trace = audit(
        &database_url,
        &["trace", job["correlation_id"].as_str().unwrap()],
    );
    assert_eq!(
        trace_nodes(&job_trace),
        [
            (
                0,
                "PriceCheckRequested".to_owned(),
                "system:scheduler".to_owned()
            ),
            (1, "PriceObserved".to_owned(), scraper.clone()),
            (2, "PriceChanged".to_owned(), policy.clone()),
            (2, "TargetReached".to_owned(), policy.clone()),
        ]
    );

    // The user's own history: what they did, and the role an administrator gave
    // them, attributed to the administrator acting for them.
    let history = audit(&database_url, &["show", "user", &user_id]);
    let entries: Vec<(String, String)> = history["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| {
            (
                entry["event_type"].as_str().unwrap().to_owned(),
                entry["actor"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        entries,
        [
            ("UserRegistered".to_owned(), user.clone()),
            ("EmailVerified".to_owned(), user.clone()),
            (
                "RoleGranted".to_owned(),
                format!("admin:{admin_id} for user:{user_id}")
            ),
        ]
    );
    let operator = audit(&database_url, &["show", "user", &admin_id]);
    let grant = operator["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|entry| entry["event_type"] == "RoleGranted")
        .unwrap();
    assert!(
        grant["actor"]
            .as_str()
            .unwrap()
            .starts_with("cli:operator@"),
        "{grant}"
    );
    let history = audit(&database_url, &["show", "order", kettle]);
    assert_eq!(
        event_types(&history).last().map(String::as_str),
        Some("TargetReached")
    );

    // Every event relayed, and the log proves it was not altered.
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&pool)
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let report = loop {
        let output = Command::new(env!("CARGO_BIN_EXE_orders"))
            .args(["audit", "verify", "--json"])
            .env("ORDERS_DATABASE_URL", &database_url)
            .env("ORDERS_NATS_URL", nats.url())
            .env("ORDERS_AUDIT_KEY", common::AUDIT_KEY)
            .output()
            .unwrap();
        let report: Value = serde_json::from_slice(&output.stdout).unwrap_or_else(|_| {
            panic!("{}", String::from_utf8_lossy(&output.stderr));
        });
        assert_eq!(output.status.code(), Some(0), "{report}");
        if report["chained"].as_i64() >= Some(stored) {
            break report;
        }
        assert!(Instant::now() < deadline, "never all relayed: {report}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(report["checkpoint"]["chain_position"], report["chained"]);
}
