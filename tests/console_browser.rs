//! The console in a real browser: the whole system runs in this process (`orders
//! serve all`'s plan), and `tests/browser/console_flows.py` drives Debian's
//! Chromium through it with Playwright (`make test` installs both). Screenshots of
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

/// Starts the whole system on free ports and runs one Playwright script of
/// `tests/browser/` against it; the script's phone-sized screenshots named in
/// `screenshots_expected` must exist afterwards.
async fn run_browser_flows(script: &str, screenshots_expected: &[&str]) {
    let (database_url, _pool) = common::fresh_database().await;
    let nats = NatsServer::start();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let serve = Serve::try_parse_from([
        "orders-serve",
        "all",
        "--database-url",
        &database_url,
        "--nats-url",
        nats.url(),
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
    let shutdown = CancellationToken::new();
    let running = ServePlan::from_args(serve.args)
        .unwrap()
        .start(shutdown.clone())
        .await
        .unwrap();

    let screenshots =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/console-screenshots");
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/browser")
        .join(script);
    let run = tokio::process::Command::new(env("ORDERS_TEST_PYTHON"))
        .arg(&script)
        .env("BASE_URL", &base)
        .env("MAILDIR", env("ORDERS_TEST_MAILDIR"))
        .env("CHROMIUM", env("ORDERS_TEST_CHROMIUM"))
        .env("SCREENSHOTS", &screenshots)
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(240), run)
        .await
        .expect("the browser flows end within 4 minutes")
        .expect("the venv's python runs");
    println!("{}", String::from_utf8_lossy(&output.stdout));
    eprintln!("{}", String::from_utf8_lossy(&output.stderr));
    assert!(
        output.status.success(),
        "the browser flows of {script} failed: {}",
        output.status
    );
    for page in screenshots_expected {
        assert!(
            screenshots.join(format!("{page}.png")).exists(),
            "{page}.png"
        );
    }

    shutdown.cancel();
    running.wait().await.unwrap();
}
