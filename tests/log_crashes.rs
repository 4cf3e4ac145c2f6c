//! The relay as users run it (`orders serve relay`), crashed on purpose: killed with
//! SIGKILL in the middle of a catch-up, and the nats-server under it killed and
//! restarted mid-run. Each ends with the stream holding exactly the event table, once,
//! in log order.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use orders_test_support::nats_server::NatsServer;
use sqlx::PgPool;

mod common;
use common::{
    assert_stream_is_the_table, fresh_database, kill, stream_length, wait_for_stream, Service,
};

fn relay_process(database_url: &str, nats_url: &str) -> Service {
    Service::new(
        Command::new(env!("CARGO_BIN_EXE_orders"))
            .args(["serve", "relay"])
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

/// Stores `users` users with `events_each` events each, in transactions of
/// `per_transaction` users, straight into the events table (what the relay reads;
/// the payloads are never decoded here).
async fn store_events(pool: &PgPool, users: i64, events_each: i64, per_transaction: i64) {
    let mut first = 0;
    while first < users {
        let last = (first + per_transaction).min(users);
        sqlx::query(
            "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version,
                                 payload, metadata)
             SELECT 'user', '00000000-0000-7000-8000-' || lpad(to_hex(u), 12, '0'), s,
                    'ProfileUpdated', '1.0',
                    jsonb_build_object('ProfileUpdated', jsonb_build_object('display_name', 'n' || s)),
                    '{\"actor\": \"cli:test@localhost\"}'
               FROM generate_series($1::bigint, $2::bigint - 1) AS u,
                    generate_series(1::bigint, $3::bigint) AS s
              ORDER BY u, s",
        )
        .bind(first)
        .bind(last)
        .bind(events_each)
        .execute(pool)
        .await
        .unwrap();
        first = last;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_killed_mid_catch_up_resumes_with_every_event_once_in_order() {
    let (database_url, pool) = fresh_database().await;
    let nats = NatsServer::start();
    let jetstream = async_nats::jetstream::new(async_nats::connect(nats.url()).await.unwrap());
    // 60,000 events in 12 transactions of 5,000.
    store_events(&pool, 6_000, 10, 500).await;
    let total = 60_000;

    let relay = relay_process(&database_url, nats.url());
    wait_for_stream(&jetstream, 10_000, Duration::from_secs(30)).await;
    kill(relay);
    let at_kill = stream_length(&jetstream).await;
    assert!(
        at_kill < total,
        "the relay finished before it could be killed; nothing was tested"
    );

    let relay = relay_process(&database_url, nats.url());
    wait_for_stream(&jetstream, total, Duration::from_secs(60)).await;
    // Killed again, right at the end, and started once more: it relays what comes
    // next, and nothing it had published is published twice.
    kill(relay);
    let relay = relay_process(&database_url, nats.url());
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version,
                             payload, metadata)
         VALUES ('user', '00000000-0000-7000-a000-000000000001', 1, 'EmailVerified', '1.0',
                 '\"EmailVerified\"', '{}')",
    )
    .execute(&pool)
    .await
    .unwrap();
    wait_for_stream(&jetstream, total + 1, Duration::from_secs(30)).await;
    assert_stream_is_the_table(&pool, &jetstream).await;
    kill(relay);
    eprintln!("killed after {at_kill} of {total} events; resumed to all of them, once each");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_server_killed_mid_run_and_restarted_loses_and_doubles_nothing() {
    let (database_url, pool) = fresh_database().await;
    let mut nats = NatsServer::start();
    let relay = relay_process(&database_url, nats.url());
    let jetstream = async_nats::jetstream::new(async_nats::connect(nats.url()).await.unwrap());

    // Writers keep committing small transactions throughout.
    let writing = {
        let pool = pool.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let mut user = 0;
            while started.elapsed() < Duration::from_secs(4) {
                let mut transaction = pool.begin().await.unwrap();
                sqlx::query(
                    "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type,
                                         event_version, payload, metadata)
                     SELECT 'user', '00000000-0000-7000-9000-' || lpad(to_hex($1::bigint), 12, '0'),
                            s, 'ProfileUpdated', '1.0', '{}', '{}'
                       FROM generate_series(1, 5) AS s",
                )
                .bind(user)
                .execute(&mut *transaction)
                .await
                .unwrap();
                transaction.commit().await.unwrap();
                user += 1;
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
    };
    // Killed once the relay has published a good part of what the writers store.
    wait_for_stream(&jetstream, 500, Duration::from_secs(30)).await;
    nats.kill_and_restart();
    writing.await.unwrap();
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&pool)
        .await
        .unwrap();
    wait_for_stream(&jetstream, stored as u64, Duration::from_secs(60)).await;
    assert_stream_is_the_table(&pool, &jetstream).await;
    kill(relay);
}
