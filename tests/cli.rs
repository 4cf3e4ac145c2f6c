//! The `orders` binary as operators meet it: configuration mistakes stop it at start
//! with one clear line; `orders migrate` prepares a database.

use std::process::Command;

mod common;
use common::orders;

fn stderr_lines(output: &std::process::Output) -> Vec<String> {
    String::from_utf8_lossy(&output.stderr)
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn a_missing_jwt_secret_stops_the_service_with_one_line() {
    let output = orders()
        .args(["serve", "api"])
        .env("ORDERS_DATABASE_URL", "postgres://nobody@127.0.0.1:1/none")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let lines = stderr_lines(&output);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].starts_with("error: ORDERS_JWT_SECRET is not set"),
        "{lines:?}"
    );
}

#[test]
fn a_short_jwt_secret_stops_the_service_with_one_line() {
    let output = orders()
        .args(["serve", "all"])
        .env("ORDERS_AUDIT_KEY", common::AUDIT_KEY)
        .env("ORDERS_JWT_SECRET", "too short")
        .env("ORDERS_DATABASE_URL", "postgres://nobody@127.0.0.1:1/none")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let lines = stderr_lines(&output);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].contains("ORDERS_JWT_SECRET is 9 bytes long; it must be at least 32 bytes"),
        "{lines:?}"
    );
    // The secret itself is never printed.
    assert!(!lines[0].contains("too short"));
}

#[test]
fn a_missing_or_short_audit_key_stops_whatever_writes_events_with_one_line() {
    for (service, key) in [
        (["serve", "api"].as_slice(), None),
        (["serve", "workers"].as_slice(), Some("short")),
        (
            ["admin", "grant", "someone@example.com", "admin"].as_slice(),
            None,
        ),
        (["audit", "verify"].as_slice(), Some("")),
    ] {
        let mut command = orders();
        command
            .args(service)
            .env("ORDERS_DATABASE_URL", "postgres://nobody@127.0.0.1:1/none")
            .env("ORDERS_NATS_URL", "nats://127.0.0.1:1")
            .env(
                "ORDERS_JWT_SECRET",
                "a secret that is long enough for HS256 signing",
            )
            .env("ORDERS_SMTP_URL", "smtp://127.0.0.1:1")
            .env("ORDERS_MAIL_FROM", "Orders <orders@example.com>");
        if let Some(key) = key {
            command.env("ORDERS_AUDIT_KEY", key);
        }
        let output = command.output().unwrap();
        assert_eq!(output.status.code(), Some(2), "{service:?}");
        let lines = stderr_lines(&output);
        assert_eq!(lines.len(), 1, "{service:?}: {lines:?}");
        let expected = match key {
            Some("short") => "ORDERS_AUDIT_KEY is 5 bytes long; it must be at least 32 bytes",
            _ => "error: ORDERS_AUDIT_KEY is not set",
        };
        assert!(lines[0].contains(expected), "{service:?}: {lines:?}");
    }
}

#[test]
fn a_missing_database_url_stops_the_service_with_one_line() {
    let output = orders()
        .args(["serve", "api"])
        .env("ORDERS_AUDIT_KEY", common::AUDIT_KEY)
        .env(
            "ORDERS_JWT_SECRET",
            "a secret that is long enough for HS256 signing",
        )
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let lines = stderr_lines(&output);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].contains("ORDERS_DATABASE_URL is not set"),
        "{lines:?}"
    );
}

/// A fresh database on the test server, created with psql; its URL.
#[test]
fn an_unknown_view_or_a_missing_nats_url_is_one_line() {
    let unknown = orders()
        .args(["replay", "prices"])
        .env("ORDERS_DATABASE_URL", "postgres://nobody@127.0.0.1:1/none")
        .env("ORDERS_NATS_URL", "nats://127.0.0.1:1")
        .output()
        .unwrap();
    assert_eq!(unknown.status.code(), Some(2));
    let lines = stderr_lines(&unknown);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].contains("no view named \"prices\""), "{lines:?}");

    let projectors = orders()
        .args(["serve", "projectors"])
        .env("ORDERS_DATABASE_URL", "postgres://nobody@127.0.0.1:1/none")
        .env_remove("ORDERS_NATS_URL")
        .output()
        .unwrap();
    assert_eq!(projectors.status.code(), Some(2));
    let lines = stderr_lines(&projectors);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].contains("ORDERS_NATS_URL is not set"), "{lines:?}");

    // Neither a view nor --all: clap says what is missing.
    let neither = orders().args(["replay"]).output().unwrap();
    assert_eq!(neither.status.code(), Some(2));
}

#[test]
fn scrape_reads_a_saved_page_and_says_how_sure_it_is() {
    let dir = std::env::temp_dir().join(format!("orders-scrape-{}", uuid::Uuid::now_v7().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let page = dir.join("kettle.html");
    std::fs::write(
        &page,
        r#"<html><head><title>Kettle</title></head><body>
           <div class="product-price"><span class="price">1 299,00 ₴</span></div></body></html>"#,
    )
    .unwrap();
    let found = orders()
        .args(["scrape", "--html"])
        .arg(&page)
        .args(["--url", "https://shop.example.com/kettle"])
        .output()
        .unwrap();
    assert_eq!(
        found.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&found.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&found.stdout).unwrap();
    assert_eq!(json["status"], "ok");
    assert_eq!(json["price"], "1299.00");
    assert_eq!(json["currency"], "UAH");
    assert_eq!(json["extractor"], "markup");

    let two = dir.join("two.html");
    std::fs::write(
        &two,
        r#"<span class="price">10 €</span><span class="price">12 €</span>"#,
    )
    .unwrap();
    let ambiguous = orders()
        .args(["scrape", "--html"])
        .arg(&two)
        .output()
        .unwrap();
    assert_eq!(ambiguous.status.code(), Some(1));
    let json: serde_json::Value = serde_json::from_slice(&ambiguous.stdout).unwrap();
    assert_eq!(json["status"], "ambiguous");
    assert_eq!(json["candidates"].as_array().unwrap().len(), 2);

    let missing = orders()
        .args(["scrape", "--html"])
        .arg(dir.join("nope.html"))
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(2));
    assert_eq!(stderr_lines(&missing).len(), 1);
    let bad_url = orders()
        .args(["scrape", "--html"])
        .arg(&page)
        .args(["--url", "ftp://shop.example.com/x"])
        .output()
        .unwrap();
    assert_eq!(bad_url.status.code(), Some(2));
    assert_eq!(stderr_lines(&bad_url).len(), 1);
    let _ = std::fs::remove_dir_all(&dir);
}

fn fresh_database_url() -> String {
    orders_test_support::database::empty_database_blocking("cli")
}

#[test]
fn migrate_prepares_a_fresh_database_and_is_idempotent() {
    let database_url = fresh_database_url();
    for _ in 0..2 {
        let output = orders()
            .arg("migrate")
            .env("ORDERS_DATABASE_URL", &database_url)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert_eq!(
            String::from_utf8_lossy(&output.stdout).trim(),
            "database migrated"
        );
    }
}

fn http_get_status(addr: &str, path: &str) -> Option<u16> {
    use std::io::{Read as _, Write as _};
    let mut stream = std::net::TcpStream::connect(addr).ok()?;
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(2)))
        .ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    response.split_whitespace().nth(1)?.parse().ok()
}

/// Sends SIGTERM and expects a successful exit within 10 s.
fn stops_cleanly_on_sigterm(service: &mut std::process::Child) {
    let pid = nix::unistd::Pid::from_raw(i32::try_from(service.id()).unwrap());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let stopping = std::time::Instant::now();
    let status = loop {
        if let Some(status) = service.try_wait().unwrap() {
            break status;
        }
        assert!(
            stopping.elapsed() < std::time::Duration::from_secs(10),
            "the service did not stop within 10 s of SIGTERM"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert!(status.success(), "exit status {status}");
}

#[test]
fn the_service_stops_cleanly_on_sigterm() {
    let database_url = fresh_database_url();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let mut service = orders()
        .args(["serve", "api"])
        .env("ORDERS_DATABASE_URL", &database_url)
        .env("ORDERS_AUDIT_KEY", common::AUDIT_KEY)
        .env(
            "ORDERS_JWT_SECRET",
            "a secret that is long enough for HS256 signing",
        )
        .env("ORDERS_HTTP_ADDR", &addr)
        // No NATS there: the API only wakes the relay through it, so it serves anyway.
        .env("ORDERS_NATS_URL", "nats://127.0.0.1:1")
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    while http_get_status(&addr, "/readyz") != Some(200) {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(30),
            "the service did not become ready"
        );
        assert!(
            service.try_wait().unwrap().is_none(),
            "the service exited early"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    stops_cleanly_on_sigterm(&mut service);
}

#[test]
fn nats_setup_creates_the_topology_and_can_run_again() {
    let server = orders_test_support::nats_server::NatsServer::start();
    for _ in 0..2 {
        let output = orders()
            .args(["nats", "setup"])
            .env("ORDERS_NATS_URL", server.url())
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(String::from_utf8_lossy(&output.stdout).contains("stream ORDERS_EVENTS"));
    }
}

#[test]
fn nats_setup_without_a_server_fails_with_one_line() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let output = orders()
        .args(["nats", "setup"])
        .env("ORDERS_NATS_URL", format!("nats://127.0.0.1:{port}"))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let lines = stderr_lines(&output);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].contains("connecting to NATS"), "{lines:?}");
}

#[test]
fn serve_relay_publishes_what_is_stored_and_stops_on_sigterm() {
    let database_url = fresh_database_url();
    let migrated = orders()
        .arg("migrate")
        .env("ORDERS_DATABASE_URL", &database_url)
        .output()
        .unwrap();
    assert!(migrated.status.success());
    let psql = std::env::var("ORDERS_TEST_PG_BINDIR")
        .map(|bindir| format!("{bindir}/psql"))
        .unwrap_or_else(|_| "psql".to_owned());
    let inserted = Command::new(psql)
        .arg(&database_url)
        .args([
            "-qc",
            "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
             SELECT 'probe', 'p' || i, 1, 'Probed', '1.0', '{}',
                    '{\"actor\": \"cli:test@localhost\", \"correlation_id\": \"c\", \"causation_id\": \"c\", \"request_id\": \"r\"}'
               FROM generate_series(1, 25) AS i",
        ])
        .status()
        .unwrap();
    assert!(inserted.success());
    let server = orders_test_support::nats_server::NatsServer::start();
    let mut relay = orders()
        .args(["serve", "relay"])
        .env("ORDERS_DATABASE_URL", &database_url)
        .env("ORDERS_NATS_URL", server.url())
        .env("ORDERS_RELAY_POLL_MS", "20")
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let published = runtime.block_on(async {
        let client = async_nats::connect(server.url()).await.unwrap();
        let jetstream = async_nats::jetstream::new(client);
        let started = std::time::Instant::now();
        loop {
            if let Ok(mut stream) = jetstream.get_stream(orders_nats::LOG_STREAM).await {
                let messages = stream.info().await.unwrap().state.messages;
                if messages >= 25 || started.elapsed() > std::time::Duration::from_secs(30) {
                    break messages;
                }
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    });
    assert_eq!(published, 25);

    stops_cleanly_on_sigterm(&mut relay);
}

#[tokio::test]
async fn scrape_fetches_a_page_but_never_a_private_address_unless_allowed() {
    let shop = orders_test_support::fixture_shop::FixtureServer::start()
        .await
        .unwrap();
    shop.set_html(
        "/p/1",
        r#"<html><head><script type="application/ld+json">
        {"@type": "Product", "name": "Kettle", "offers": {"price": "1299.00", "priceCurrency": "UAH",
         "availability": "https://schema.org/InStock"}}</script></head><body></body></html>"#,
    );
    let url = shop.url("/p/1").to_string();
    let scrape = |allow: &'static str| {
        let url = url.clone();
        tokio::task::spawn_blocking(move || {
            orders()
                .args(["scrape", &url])
                .env("ORDERS_SCRAPER_ALLOW_PRIVATE", allow)
                .output()
                .unwrap()
        })
    };

    // 127.0.0.1 is loopback: refused, and the shop never asked.
    let refused = scrape("").await.unwrap();
    assert_eq!(refused.status.code(), Some(1));
    let answer: serde_json::Value = serde_json::from_slice(&refused.stdout).unwrap();
    assert_eq!(answer["status"], "failed");
    assert_eq!(answer["reason"], "forbidden_address");
    assert_eq!(answer["availability"], "Unknown");
    assert_eq!(shop.request_count("/p/1"), 0);

    // Allowed by configuration: fetched and read.
    let fetched = scrape("127.0.0.0/8").await.unwrap();
    assert_eq!(
        fetched.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&fetched.stderr)
    );
    let answer: serde_json::Value = serde_json::from_slice(&fetched.stdout).unwrap();
    assert_eq!(answer["status"], "ok");
    assert_eq!(answer["price"], "1299.00");
    assert_eq!(answer["currency"], "UAH");
    assert_eq!(answer["availability"], "InStock");
    assert_eq!(answer["extractor"], "json-ld");

    // A bad allow-list is a configuration error: one line, exit 2.
    let misconfigured = scrape("not-a-network").await.unwrap();
    assert_eq!(misconfigured.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&misconfigured.stderr).contains("ORDERS_SCRAPER_ALLOW_PRIVATE"));
}

#[test]
fn dlq_list_says_there_are_none_and_retry_of_an_unknown_letter_is_one_line() {
    // A fresh server: not even the dead-letter stream exists yet.
    let server = orders_test_support::nats_server::NatsServer::start();
    let listed = orders()
        .args(["dlq", "list"])
        .env("ORDERS_NATS_URL", server.url())
        .output()
        .unwrap();
    assert_eq!(
        listed.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&listed.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&listed.stdout), "no dead letters\n");

    // async-nats logs each connection at INFO, and main's default log level for
    // every command is INFO: those lines are telemetry, not the error, so they are
    // silenced here to count the error's lines.
    let retried = orders()
        .args(["dlq", "retry", "999"])
        .env("ORDERS_NATS_URL", server.url())
        .env("ORDERS_LOG", "warn")
        .output()
        .unwrap();
    assert_eq!(retried.status.code(), Some(2));
    let lines = stderr_lines(&retried);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].starts_with("error: no dead letter 999"),
        "{lines:?}"
    );
    assert!(retried.stdout.is_empty());
}

#[tokio::test]
async fn admin_grant_and_revoke_are_recorded_as_the_operator() {
    let (database_url, pool) = common::fresh_database().await;
    let events = orders_store::event_store::EventStore::new(pool.clone(), common::audit_key());
    let user_id = orders_domain::ids::UserId::new();
    let email = format!("staff-{}@example.com", user_id.as_uuid().simple());
    events
        .execute_with_password(
            &user_id.to_string(),
            orders_domain::user::UserCommand::Register {
                user_id,
                email: orders_domain::email::EmailAddress::parse(&email).unwrap(),
            },
            &orders_store::event_store::CommandMetadata::new_job(format!("user:{user_id}")),
            "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA".to_owned(),
        )
        .await
        .unwrap();
    let admin = |args: &[&str]| {
        orders()
            .arg("admin")
            .args(args)
            .env("ORDERS_DATABASE_URL", &database_url)
            .env("ORDERS_AUDIT_KEY", common::AUDIT_KEY)
            .env("USER", "operator")
            .output()
            .unwrap()
    };

    let granted = admin(&["grant", &email, "auditor"]);
    assert_eq!(
        granted.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&granted.stderr)
    );
    assert!(String::from_utf8_lossy(&granted.stdout).contains("granted auditor"));
    let again = admin(&["grant", &email, "auditor"]);
    assert!(String::from_utf8_lossy(&again.stdout).contains("nothing changed"));
    let revoked = admin(&["revoke", &email, "auditor"]);
    assert_eq!(revoked.status.code(), Some(0));
    let recorded: Vec<(String, String)> = sqlx::query_as(
        "SELECT event_type, metadata ->> 'actor' FROM events
          WHERE aggregate_id = $1 AND event_type IN ('RoleGranted', 'RoleRevoked')
          ORDER BY sequence",
    )
    .bind(user_id.to_string())
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(recorded.len(), 2);
    assert_eq!(recorded[0].0, "RoleGranted");
    assert_eq!(recorded[1].0, "RoleRevoked");
    assert!(
        recorded
            .iter()
            .all(|(_, actor)| actor.starts_with("cli:operator@")),
        "{recorded:?}"
    );

    // Mistakes are one line and exit 2, and change nothing.
    for (args, says) in [
        (
            vec!["grant", "nobody@example.com", "admin"],
            "no user registered as nobody@example.com",
        ),
        (vec!["grant", email.as_str(), "superuser"], "unknown role"),
    ] {
        let output = admin(&args);
        assert_eq!(output.status.code(), Some(2));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.contains(says), "{stderr}");
    }
}

/// `url` with `user:password@` put in front of its host (replacing any user).
fn with_credentials(url: &str, user: &str, password: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap();
    let rest = rest.split_once('@').map_or(rest, |(_, host)| host);
    format!("{scheme}://{user}:{password}@{rest}")
}

/// Runs `orders` with debug logs and the given URLs, waits until its output holds
/// `until` or it exits (30 s at most), stops it, and answers all it printed.
fn output_of_service(args: &[&str], urls: &[(&str, String)], until: Option<&str>) -> String {
    let log = std::env::temp_dir().join(format!("orders-{}.log", uuid::Uuid::now_v7()));
    let file = std::fs::File::create(&log).unwrap();
    let mut command = orders();
    command
        .args(args)
        .env("ORDERS_LOG", "debug")
        .env("ORDERS_AUDIT_KEY", common::AUDIT_KEY)
        .env(
            "ORDERS_JWT_SECRET",
            "a secret that is long enough for HS256 signing",
        )
        .env("ORDERS_MAIL_FROM", "Orders <orders@example.com>")
        .env("ORDERS_HTTP_ADDR", "127.0.0.1:0")
        .stdout(file.try_clone().unwrap())
        .stderr(file);
    for (name, value) in urls {
        command.env(name, value);
    }
    let mut service = command.spawn().unwrap();
    let started = std::time::Instant::now();
    loop {
        let printed = std::fs::read_to_string(&log).unwrap_or_default();
        let exited = service.try_wait().unwrap().is_some();
        let seen = until.is_some_and(|until| printed.contains(until));
        if exited || seen || started.elapsed() > std::time::Duration::from_secs(30) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    if service.try_wait().unwrap().is_none() {
        stops_cleanly_on_sigterm(&mut service);
    }
    let printed = std::fs::read_to_string(&log).unwrap();
    let _ = std::fs::remove_file(&log);
    printed
}

#[test]
fn credentials_in_service_urls_never_reach_the_output_also_when_connecting_fails() {
    let secrets = ["pg-s3cret", "nats-s3cret", "smtp-s3cret"];
    let assert_no_secret = |printed: &str, case: &str| {
        for secret in secrets {
            assert!(
                !printed.contains(secret),
                "{case}: {secret} printed:\n{printed}"
            );
        }
    };
    let database = with_credentials(&fresh_database_url(), "orders", "pg-s3cret");
    let nats = orders_test_support::nats_server::NatsServer::start();
    let nats_url = with_credentials(nats.url(), "orders", "nats-s3cret");
    let smtp_url = with_credentials(
        &std::env::var("ORDERS_TEST_SMTP_URL").unwrap_or("smtp://127.0.0.1:1025".to_owned()),
        "mailer",
        "smtp-s3cret",
    );
    let urls = [
        ("ORDERS_DATABASE_URL", database.clone()),
        ("ORDERS_NATS_URL", nats_url.clone()),
        ("ORDERS_SMTP_URL", smtp_url.clone()),
    ];

    // Every service running, at debug level (where the NATS client logs its server
    // addresses): the URLs are logged, their passwords are not.
    let running = output_of_service(
        &["serve", "all"],
        &urls,
        Some("projecting the views while leader"),
    );
    assert!(running.contains("nats://orders:***@"), "{running}");
    assert_no_secret(&running, "running");

    // NATS refusing the connection.
    let refused_nats = output_of_service(
        &["serve", "relay"],
        &[
            ("ORDERS_DATABASE_URL", database.clone()),
            (
                "ORDERS_NATS_URL",
                "nats://orders:nats-s3cret@127.0.0.1:1".to_owned(),
            ),
        ],
        None,
    );
    assert!(refused_nats.contains("connecting to NATS at nats://orders:***@127.0.0.1:1"));
    assert_no_secret(&refused_nats, "NATS refused");

    // PostgreSQL refusing the connection, and a token instead of a user.
    let refused_database = output_of_service(
        &["serve", "relay"],
        &[
            (
                "ORDERS_DATABASE_URL",
                "postgres://orders:pg-s3cret@127.0.0.1:1/orders".to_owned(),
            ),
            (
                "ORDERS_NATS_URL",
                "nats://nats-s3cret@127.0.0.1:1".to_owned(),
            ),
        ],
        None,
    );
    assert!(
        refused_database.contains("PostgreSQL"),
        "{refused_database}"
    );
    assert_no_secret(&refused_database, "PostgreSQL refused");

    // Nor does the help, which shows the variables' values for other flags.
    let help = orders()
        .args(["serve", "--help"])
        .envs(urls.iter().map(|(name, value)| (*name, value.as_str())))
        .output()
        .unwrap();
    assert_no_secret(&String::from_utf8_lossy(&help.stdout), "help");
}
