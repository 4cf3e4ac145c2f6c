//! The console in a real browser: the whole system runs in this process (`orders
//! serve all`'s plan), and a script of `tests/browser/` (`console_flows.py`,
//! `account_flows.py`, `shop_flows.py`) drives Debian's Chromium through it with
//! Playwright (`make test` installs both). Screenshots of
//! the pages, phone-sized, are kept under `target/console-screenshots/`.

mod common;

use std::time::Duration;

use clap::Parser;
use orders::serve::{ServeArgs, ServePlan};
use orders_test_support::nats_server::NatsServer;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Parser)]
struct Serve {
    #[command(flatten)]
    args: ServeArgs,
}

fn env(name: &str) -> String {
    std::env::var(name)
        .unwrap_or_else(|_| panic!("{name} is not set: run `make services` (or `make test`)"))
}

/// A port free now, for a server whose public URL must be known before it starts.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test]
async fn a_shopper_uses_the_console_in_chromium() {
    run_browser_flows(
        "console_flows.py",
        &["phone-signup", "phone-login", "phone-order", "phone-orders"],
    )
    .await;
}

#[tokio::test]
async fn a_shopper_resets_a_forgotten_password_in_chromium_without_javascript() {
    run_browser_flows(
        "account_flows.py",
        &[
            "phone-verified",
            "phone-forgot-password",
            "phone-reset-password",
        ],
    )
    .await;
}

#[tokio::test]
async fn a_buyer_follows_a_purchase_live_while_an_administrator_ships_it_in_chromium() {
    run_browser_flows(
        "shop_flows.py",
        &[
            "desktop-admin-products",
            "phone-shop",
            "phone-cart",
            "phone-purchase",
            "desktop-admin-purchases",
            "desktop-admin-shop-dashboard",
        ],
    )
    .await;
}

/// The screenshots the README shows, copied to `docs/screenshots/` by a run with
/// `ORDERS_UPDATE_SCREENSHOTS=1`.
const README_SCREENSHOTS: [&str; 8] = [
    "phone-orders",
    "phone-order",
    "desktop-admin-dashboard",
    "desktop-admin-events",
    "desktop-admin-trace",
    "phone-cart",
    "phone-purchase",
    "desktop-admin-shop-dashboard",
];

/// The administrator every script can sign in as (`ADMIN_EMAIL`, `ADMIN_PASSWORD`).
const ADMIN_EMAIL: &str = "admin@example.com";
const ADMIN_PASSWORD: &str = "the administrator's long password";

/// The whole system in this process, as `orders serve all` runs it.
fn serve_plan(database_url: &str, nats_url: &str, port: u16) -> ServePlan {
    let base = format!("http://127.0.0.1:{port}");
    let serve = Serve::try_parse_from([
        "orders-serve",
        "all",
        "--database-url",
        database_url,
        "--nats-url",
        nats_url,
        "--http-addr",
        &format!("127.0.0.1:{port}"),
        "--public-url",
        &base,
        "--jwt-secret",
        "the browser test's secret, more than 32 bytes",
        "--audit-key",
        common::AUDIT_KEY,
        "--smtp-url",
        &env("ORDERS_TEST_SMTP_URL"),
        "--mail-from",
        "Orders <orders@example.com>",
        "--scraper-allow-private",
        "127.0.0.0/8",
        "--scraper-host-spacing-ms",
        "50",
        "--relay-poll-ms",
        "20",
    ])
    .unwrap();
    ServePlan::from_args(serve.args).unwrap()
}

/// Registers the administrator through the API and grants the role as the CLI does.
async fn create_administrator(base: &str, pool: &sqlx::PgPool) {
    let registered: serde_json::Value = reqwest::Client::new()
        .post(format!("{base}/auth/register"))
        .json(&serde_json::json!({"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD}))
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap()
        .json()
        .await
        .unwrap();
    let user_id: orders_domain::ids::UserId =
        registered["user_id"].as_str().unwrap().parse().unwrap();
    orders_application::accounts::change_role(
        &orders_store::event_store::EventStore::new(pool.clone(), common::audit_key()),
        user_id,
        orders_application::accounts::RoleChange::Grant(orders_domain::user::Role::Admin),
        &orders_store::event_store::CommandMetadata::new_job("test:setup"),
    )
    .await
    .unwrap();
}

/// Starts the whole system on free ports and runs one Playwright script of
/// `tests/browser/` against it; the script's phone-sized screenshots named in
/// `screenshots_expected` must exist afterwards.
///
/// A script may restart the service: it creates `$CONTROL_DIR/restart`, and this
/// stops every service (open `/live` streams end), starts them again on the same
/// port and creates `$CONTROL_DIR/restarted`.
async fn run_browser_flows(script: &str, screenshots_expected: &[&str]) {
    let (database_url, pool) = common::fresh_database().await;
    let nats = NatsServer::start();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut shutdown = CancellationToken::new();
    let mut running = serve_plan(&database_url, nats.url(), port)
        .start(shutdown.clone())
        .await
        .unwrap();
    create_administrator(&base, &pool).await;
    let control = std::env::temp_dir().join(format!("orders-browser-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&control).unwrap();

    let screenshots =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/console-screenshots");
    let script_path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/browser")
        .join(script);
    let run = tokio::process::Command::new(env("ORDERS_TEST_PYTHON"))
        .arg(&script_path)
        .env("BASE_URL", &base)
        .env("MAILDIR", env("ORDERS_TEST_MAILDIR"))
        .env("CHROMIUM", env("ORDERS_TEST_CHROMIUM"))
        .env("SCREENSHOTS", &screenshots)
        .env("ADMIN_EMAIL", ADMIN_EMAIL)
        .env("ADMIN_PASSWORD", ADMIN_PASSWORD)
        .env("CONTROL_DIR", &control)
        .kill_on_drop(true)
        .output();
    tokio::pin!(run);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(300);
    let output = loop {
        tokio::select! {
            output = &mut run => break output.expect("the venv's python runs"),
            () = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the browser flows end within 5 minutes"
        );
        if std::fs::remove_file(control.join("restart")).is_ok() {
            shutdown.cancel();
            running.wait().await.unwrap();
            shutdown = CancellationToken::new();
            running = serve_plan(&database_url, nats.url(), port)
                .start(shutdown.clone())
                .await
                .unwrap();
            std::fs::write(control.join("restarted"), b"").unwrap();
        }
    };
    println!("{}", String::from_utf8_lossy(&output.stdout));
    eprintln!("{}", String::from_utf8_lossy(&output.stderr));
    assert!(
        output.status.success(),
        "the browser flows of {script} failed: {}",
        output.status
    );
    if std::env::var_os("ORDERS_UPDATE_SCREENSHOTS").is_some() {
        let docs = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/screenshots");
        std::fs::create_dir_all(&docs).unwrap();
        for name in README_SCREENSHOTS {
            let shot = screenshots.join(format!("{name}.png"));
            if shot.exists() {
                std::fs::copy(&shot, docs.join(format!("{name}.png"))).unwrap();
            }
        }
    }
    for page in screenshots_expected {
        assert!(
            screenshots.join(format!("{page}.png")).exists(),
            "{page}.png"
        );
    }

    shutdown.cancel();
    running.wait().await.unwrap();
}
