//! The scheduler against the real log: orders placed, paused, resumed and cancelled
//! through the command side, relayed and projected by `orders serve relay` and
//! `orders serve projectors`; the scheduler's ticks are given their time, so hours
//! of schedule pass without sleeping.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use orders_domain::ids::{OrderId, UserId};
use orders_domain::order::{Order, OrderCommand};
use orders_domain::price_check::{CheckFailureReason, FetchFacts, PriceCheck, PriceCheckCommand};
use orders_store::event_store::{CommandMetadata, EventStore};
use orders_test_support::nats_server::NatsServer;
use orders_workers::scheduler::{Scheduler, TickReport};
use sqlx::PgPool;

mod common;
use common::{fresh_database, Service};

fn owner_metadata() -> CommandMetadata {
    CommandMetadata::new_job("user:test")
}

fn service(name: &str, database_url: &str, nats_url: &str) -> Service {
    Service::new(
        Command::new(env!("CARGO_BIN_EXE_orders"))
            .args(["serve", name])
            .env("ORDERS_DATABASE_URL", database_url)
            .env("ORDERS_NATS_URL", nats_url)
            .env("ORDERS_RELAY_POLL_MS", "20")
            .env("ORDERS_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

async fn place(events: &EventStore) -> OrderId {
    orders_test_support::orders::place_in_hryvnias(
        events,
        UserId::new(),
        "https://shop.example/p/1",
        "100",
    )
    .await
    .unwrap()
}

async fn command(events: &EventStore, order_id: OrderId, command: OrderCommand) {
    events
        .execute::<Order>(&order_id.to_string(), command, &owner_metadata())
        .await
        .unwrap();
}

/// Waits until the orders view shows `statuses`.
async fn view_shows(pool: &PgPool, statuses: &[(OrderId, &str)]) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut all = true;
        for (order_id, status) in statuses {
            let shown: Option<String> =
                sqlx::query_scalar("SELECT status FROM view_orders WHERE order_id = $1")
                    .bind(order_id.as_uuid())
                    .fetch_optional(pool)
                    .await
                    .unwrap();
            all &= shown.as_deref() == Some(*status);
        }
        if all {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the orders view never showed {statuses:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The scheduled check requests of an order: (check id, trigger, actor).
async fn requests(pool: &PgPool, order_id: OrderId) -> Vec<(String, String, String)> {
    sqlx::query_as(
        "SELECT aggregate_id, payload -> 'PriceCheckRequested' ->> 'trigger', metadata ->> 'actor'
           FROM events
          WHERE event_type = 'PriceCheckRequested'
            AND payload -> 'PriceCheckRequested' ->> 'order_id' = $1
          ORDER BY global_position",
    )
    .bind(order_id.to_string())
    .fetch_all(pool)
    .await
    .unwrap()
}

async fn tick(scheduler: &Scheduler, at: DateTime<Utc>) -> TickReport {
    scheduler.tick(at).await.unwrap()
}

#[tokio::test]
async fn due_active_orders_get_one_check_at_a_time_and_paused_or_cancelled_ones_none() {
    let (database_url, pool) = fresh_database().await;
    let nats = NatsServer::start();
    let _relay = service("relay", &database_url, nats.url());
    let _projectors = service("projectors", &database_url, nats.url());
    let events = EventStore::new(pool.clone(), common::audit_key());

    let active = place(&events).await;
    let paused = place(&events).await;
    let cancelled = place(&events).await;
    command(&events, paused, OrderCommand::Pause).await;
    command(&events, cancelled, OrderCommand::Cancel).await;
    view_shows(
        &pool,
        &[
            (active, "active"),
            (paused, "paused"),
            (cancelled, "cancelled"),
        ],
    )
    .await;
    let scheduler = Scheduler::new(pool.clone(), events.clone());
    let placed = Utc::now();
    let hour = chrono::Duration::hours(1);
    let minute = chrono::Duration::minutes(1);

    // Before the first check is due (placement plus at most a minute of jitter, at
    // a whole minute before placement): planned, not requested.
    let report = tick(&scheduler, placed - minute).await;
    assert_eq!(
        (report.planned, report.requested),
        (1, 0),
        "only the active order is planned"
    );

    // A minute after placement the first check is due: one request, scheduled.
    let first = placed + minute + chrono::Duration::seconds(1);
    assert_eq!(tick(&scheduler, first).await.requested, 1);
    let made = requests(&pool, active).await;
    assert_eq!(made.len(), 1);
    assert_eq!(made[0].1, "scheduled");
    assert_eq!(made[0].2, "system:scheduler");
    // Not again before its interval.
    assert_eq!(tick(&scheduler, first + minute).await.requested, 0);

    // Two hours later it is due, but its check is still in flight: nothing new.
    let later = first + hour * 2;
    let report = tick(&scheduler, later).await;
    assert_eq!((report.requested, report.in_flight), (0, 1));
    assert_eq!(requests(&pool, active).await.len(), 1);

    // The check ends (a failure, here); a minute on, the order is asked for again.
    events
        .execute::<PriceCheck>(
            &made[0].0,
            PriceCheckCommand::RecordFailure {
                reason: CheckFailureReason::Timeout,
                detail: None,
                candidates: vec![],
                fetch: FetchFacts::default(),
            },
            &owner_metadata(),
        )
        .await
        .unwrap();
    assert_eq!(tick(&scheduler, later + minute).await.requested, 1);
    assert_eq!(requests(&pool, active).await.len(), 2);

    // The interval, give or take a tenth, lies between two requests.
    assert_eq!(
        tick(&scheduler, later + minute + hour * 9 / 10 - minute)
            .await
            .requested,
        0
    );

    // Paused and cancelled orders were never asked for; a resumed one is, at once.
    assert!(requests(&pool, paused).await.is_empty());
    assert!(requests(&pool, cancelled).await.is_empty());
    command(&events, paused, OrderCommand::Resume).await;
    view_shows(&pool, &[(paused, "active")]).await;
    let report = tick(&scheduler, later + hour * 3).await;
    assert!(report.requested >= 1, "{report:?}");
    assert_eq!(requests(&pool, paused).await.len(), 1);
    assert!(requests(&pool, cancelled).await.is_empty());
}
