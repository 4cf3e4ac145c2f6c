//! The workers as users run them (`orders serve workers`), killed on purpose:
//! - the e-mail worker killed after the SMTP server accepted a mail and before the
//!   delivery was recorded and the message acknowledged sends at most one more copy,
//!   with the same Message-ID;
//! - the scraper killed in the middle of a check leaves the check to be retried (by
//!   the next worker), not lost, and it gets exactly one result.
//!
//! The workers' durable consumers are created by the test with a 3-second ack wait
//! (instead of a minute), so redeliveries come quickly; everything else is as
//! deployed.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::str::FromStr as _;
use std::time::{Duration, Instant};

use orders_application::price_checks::{load_order, request_check, CheckRequested};
use orders_domain::email::EmailAddress;
use orders_domain::ids::UserId;
use orders_domain::price_check::CheckTrigger;
use orders_domain::user::UserCommand;
use orders_nats::work::{Worker, EMAIL, SCRAPER};
use orders_store::event_store::{CommandMetadata, EventStore};
use orders_test_support::fixture_shop::{FixtureResponse, FixtureServer};
use orders_test_support::nats_server::NatsServer;
use sqlx::{ConnectOptions as _, PgPool};

mod common;
use common::{fresh_database, kill, worker_caught_up, Service};

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run the tests with `make test`, or `set -a; . .data/test.env`")
    })
}

fn metadata() -> CommandMetadata {
    CommandMetadata::new_job("cli:test@localhost")
}

fn service(args: &[&str], database_url: &str, nats_url: &str) -> Service {
    Service::new(
        Command::new(env!("CARGO_BIN_EXE_orders"))
            .args(args)
            .env("ORDERS_DATABASE_URL", database_url)
            .env("ORDERS_NATS_URL", nats_url)
            .env("ORDERS_AUDIT_KEY", common::AUDIT_KEY)
            .env(
                "ORDERS_JWT_SECRET",
                "a worker crash test secret of more than 32 bytes",
            )
            .env("ORDERS_SMTP_URL", env("ORDERS_TEST_SMTP_URL"))
            .env("ORDERS_MAIL_FROM", "Orders <crash@orders.test>")
            .env("ORDERS_PUBLIC_URL", "http://127.0.0.1:9")
            .env("ORDERS_SCRAPER_ALLOW_PRIVATE", "127.0.0.0/8")
            .env("ORDERS_SCRAPER_HOST_SPACING_MS", "50")
            // A scraper that dies holding the shop's host keeps it for this plus 5 s.
            .env("ORDERS_SCRAPER_TIMEOUT_MS", "3000")
            .env("ORDERS_RELAY_POLL_MS", "20")
            .env("ORDERS_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

/// The topology, with the workers' consumers made beforehand with a short ack wait.
async fn topology(nats_url: &str) {
    let jetstream = async_nats::jetstream::new(orders_nats::connect(nats_url).await.unwrap());
    orders_nats::ensure_topology(&jetstream, 1).await.unwrap();
    let log = jetstream.get_stream(orders_nats::LOG_STREAM).await.unwrap();
    for worker in [EMAIL, SCRAPER] {
        log.delete_consumer(worker.name).await.unwrap();
        let quick = Worker {
            ack_wait: Duration::from_secs(3),
            ..worker
        };
        log.create_consumer(quick.log_consumer_config())
            .await
            .unwrap();
    }
}

fn mails_to(recipient: &str) -> Vec<String> {
    let maildir = PathBuf::from(env("ORDERS_TEST_MAILDIR")).join("new");
    std::fs::read_dir(maildir)
        .map(|entries| {
            entries
                .filter_map(|entry| std::fs::read_to_string(entry.ok()?.path()).ok())
                .filter(|mail| mail.contains(recipient))
                .collect()
        })
        .unwrap_or_default()
}

fn message_id(mail: &str) -> String {
    mail.lines()
        .find(|line| line.to_ascii_lowercase().starts_with("message-id:"))
        .expect("a Message-ID header")
        .split_once(':')
        .unwrap()
        .1
        .trim()
        .to_owned()
}

async fn until(what: &str, within: Duration, mut done: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !done().await {
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn deliveries(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM email_deliveries")
        .fetch_one(pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_mailer_killed_between_sending_and_recording_sends_at_most_one_copy_with_the_same_id() {
    let (database_url, pool) = fresh_database().await;
    let nats = NatsServer::start();
    topology(nats.url()).await;
    let _relay = service(&["serve", "relay"], &database_url, nats.url());

    // The delivery record cannot be written while the test holds this lock: the
    // worker sends the mail, then waits on its INSERT, and is killed there.
    // (A connection of its own: the services' pools end idle transactions after 5 s.)
    let mut blocker = sqlx::postgres::PgConnectOptions::from_str(&database_url)
        .unwrap()
        .connect()
        .await
        .unwrap();
    for statement in ["BEGIN", "LOCK TABLE email_deliveries IN EXCLUSIVE MODE"] {
        sqlx::query(statement).execute(&mut blocker).await.unwrap();
    }
    let workers = service(&["serve", "workers"], &database_url, nats.url());

    let events = EventStore::new(pool.clone(), common::audit_key());
    let user_id = UserId::new();
    let address = format!("crash-{}@example.com", user_id.as_uuid().simple());
    events
        .execute_with_password(
            &user_id.to_string(),
            UserCommand::Register {
                user_id,
                email: EmailAddress::parse(&address).unwrap(),
            },
            &metadata(),
            "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA".to_owned(),
        )
        .await
        .unwrap();
    until(
        "the verification mail is accepted",
        Duration::from_secs(20),
        async || mails_to(&address).len() == 1,
    )
    .await;
    kill(workers);
    sqlx::query("ROLLBACK").execute(&mut blocker).await.unwrap();
    assert_eq!(deliveries(&pool).await, 0, "killed before recording");

    // The next worker gets the message again (after the ack wait) and sends the
    // same mail once more: the one copy SMTP cannot rule out.
    let _workers = service(&["serve", "workers"], &database_url, nats.url());
    until(
        "the delivery is recorded",
        Duration::from_secs(30),
        async || deliveries(&pool).await == 1,
    )
    .await;
    let mails = mails_to(&address);
    assert_eq!(mails.len(), 2, "at most one more copy");
    assert_eq!(
        message_id(&mails[0]),
        message_id(&mails[1]),
        "the same Message-ID"
    );

    // Recorded and acknowledged: nothing is left to redeliver, so no further copy.
    worker_caught_up(&pool, nats.url(), "email").await;
    assert_eq!(mails_to(&address).len(), 2);
}

#[tokio::test]
async fn a_scraper_killed_mid_check_leaves_the_check_to_the_next_one() {
    let (database_url, pool) = fresh_database().await;
    let nats = NatsServer::start();
    topology(nats.url()).await;
    let _relay = service(&["serve", "relay"], &database_url, nats.url());
    let shop = FixtureServer::start().await.unwrap();
    let page = r#"<html><head><script type="application/ld+json">
        {"@type": "Product", "name": "Kettle", "offers": {"price": "2999.00", "priceCurrency": "UAH"}}
        </script></head></html>"#;
    // The first answer hangs; the scraper is killed while it waits for it (before
    // its 3-second timeout).
    shop.route(
        "/p/slow",
        FixtureResponse::html(page).delayed(Duration::from_secs(30)),
    );
    let workers = service(&["serve", "workers"], &database_url, nats.url());

    let events = EventStore::new(pool.clone(), common::audit_key());
    let order_id = orders_test_support::orders::place_in_hryvnias(
        &events,
        UserId::new(),
        shop.url("/p/slow").as_str(),
        "1000",
    )
    .await
    .unwrap();
    let order = load_order(&events, order_id).await.unwrap();
    let CheckRequested::Requested { check_id, .. } =
        request_check(&events, &order, CheckTrigger::Manual, &metadata())
            .await
            .unwrap()
    else {
        panic!("no check should be in flight");
    };
    until(
        "the scraper is fetching",
        Duration::from_secs(20),
        async || shop.request_count("/p/slow") == 1,
    )
    .await;
    kill(workers);
    shop.set_html("/p/slow", page);

    let _workers = service(&["serve", "workers"], &database_url, nats.url());
    let results = || async {
        sqlx::query_scalar::<_, String>(
            "SELECT event_type FROM events
              WHERE aggregate_type = 'price_check' AND aggregate_id = $1 AND sequence > 1",
        )
        .bind(check_id.to_string())
        .fetch_all(&pool)
        .await
        .unwrap()
    };
    until(
        "the check gets its result",
        Duration::from_secs(30),
        async || !results().await.is_empty(),
    )
    .await;
    assert_eq!(results().await, ["PriceObserved"]);
    assert!(
        shop.request_count("/p/slow") >= 2,
        "fetched again by the next worker"
    );
    // The claim was given back with the result.
    let claims: i64 = sqlx::query_scalar("SELECT count(*) FROM check_claims")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(claims, 0);
}
