//! The relay against a real PostgreSQL and a real nats-server: every stored event in
//! the log stream once, each aggregate's events in sequence order, whatever the
//! commit order, across restarts and with a second relay about.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use orders_domain::email::EmailAddress;
use orders_domain::ids::UserId;
use orders_domain::user::UserCommand;
use orders_nats::leader::LeaderLease;
use orders_nats::{ensure_topology, LogEvent, LOG_STREAM};
use orders_relay::{Relay, StreamHead};
use orders_store::event_store::{CommandMetadata, EventStore};
use orders_test_support::nats_server::NatsServer;
use sqlx::PgPool;
use uuid::Uuid;

use crate::helpers::fresh_database;

async fn log_stream(server: &NatsServer) -> async_nats::jetstream::Context {
    let client = async_nats::connect(server.url()).await.unwrap();
    let jetstream = async_nats::jetstream::new(client);
    ensure_topology(&jetstream, 1).await.unwrap();
    jetstream
}

fn metadata() -> CommandMetadata {
    CommandMetadata::new_job("cli:test@localhost")
}

/// Registers a user and changes their profile `changes` times: 1 + changes events.
async fn user_with_history(events: &EventStore, changes: usize) {
    let user_id = UserId::new();
    events
        .execute_with_password(
            &user_id.to_string(),
            UserCommand::Register {
                user_id,
                email: EmailAddress::parse(&format!("{}@example.com", user_id.as_uuid().simple()))
                    .unwrap(),
            },
            &metadata(),
            "$argon2id$v=19$not-a-real-hash".to_owned(),
        )
        .await
        .unwrap();
    for change in 0..changes {
        events
            .execute::<orders_domain::user::User>(
                &user_id.to_string(),
                UserCommand::UpdateProfile {
                    display_name: Some(format!("name {change}")),
                },
                &metadata(),
            )
            .await
            .unwrap();
    }
}

/// Every message of the log stream, decoded, in stream order.
async fn stream_contents(jetstream: &async_nats::jetstream::Context) -> Vec<LogEvent> {
    let mut stream = jetstream.get_stream(LOG_STREAM).await.unwrap();
    let last = stream.info().await.unwrap().state.last_sequence;
    let mut events = Vec::new();
    for sequence in 1..=last {
        let message = stream.get_raw_message(sequence).await.unwrap();
        events.push(LogEvent::decode(&message.headers, &message.payload).unwrap());
    }
    events
}

/// The stream holds exactly the table's events, once each, every aggregate's in
/// sequence order.
async fn assert_stream_equals_table(pool: &PgPool, jetstream: &async_nats::jetstream::Context) {
    let published = stream_contents(jetstream).await;
    let stored: Vec<(String, String, i64)> =
        sqlx::query_as("SELECT aggregate_type, aggregate_id, sequence FROM events")
            .fetch_all(pool)
            .await
            .unwrap();
    let stored_ids: HashSet<String> = stored
        .iter()
        .map(|(kind, id, sequence)| format!("{kind}/{id}/{sequence}"))
        .collect();
    let published_ids: Vec<String> = published.iter().map(LogEvent::event_id).collect();
    let unique: HashSet<String> = published_ids.iter().cloned().collect();
    assert_eq!(
        unique.len(),
        published_ids.len(),
        "an event was published twice"
    );
    let missing: Vec<&String> = stored_ids.difference(&unique).collect();
    let extra: Vec<&String> = unique.difference(&stored_ids).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "{} stored events not in the stream (e.g. {:?}), {} in the stream not stored (e.g. {:?})",
        missing.len(),
        missing.iter().take(3).collect::<Vec<_>>(),
        extra.len(),
        extra.iter().take(3).collect::<Vec<_>>()
    );
    let mut last_sequence: BTreeMap<String, i64> = BTreeMap::new();
    for event in &published {
        let previous = last_sequence.insert(event.aggregate_id.clone(), event.sequence);
        if previous.unwrap_or(0) + 1 != event.sequence {
            let order: Vec<(String, u64, i64)> = published
                .iter()
                .map(|e| (e.event_id(), e.tx_id, e.global_position))
                .collect();
            panic!("{} out of order; the stream: {order:?}", event.event_id());
        }
    }
}

/// Steps until the stream holds as many events as the table. The horizon is
/// cluster-wide, so another test's open transaction may hold the relay back for a
/// moment: a step that publishes nothing is not the end.
async fn relay_until_caught_up(relay: &Relay, head: &mut StreamHead, pool: &PgPool) {
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(pool)
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while head.stream_sequence < stored as u64 {
        assert!(
            std::time::Instant::now() < deadline,
            "the relay did not catch up: {} of {stored}",
            head.stream_sequence
        );
        if relay.step(head).await.unwrap() == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

#[tokio::test]
async fn concurrent_writers_with_out_of_order_commits_reach_the_stream_once_in_order() {
    let pool = fresh_database().await;
    let server = NatsServer::start();
    let jetstream = log_stream(&server).await;
    let events = EventStore::new(pool.clone(), crate::helpers::audit_key());
    let relay = Arc::new(Relay::new(pool.clone(), jetstream.clone(), 64));

    // A transaction that takes its position early and commits late: its event must
    // not be skipped, nor published after events of the same aggregate that follow.
    let mut slow = pool.begin().await.unwrap();
    // Ours end idle transactions after 5 s; this one is idle on purpose.
    sqlx::query("SET LOCAL idle_in_transaction_session_timeout = '60s'")
        .execute(&mut *slow)
        .await
        .unwrap();
    let slow_id = Uuid::now_v7().to_string();
    // (A probe aggregate of its own.)
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
         VALUES ('probe', $1, 1, 'Probed', '1.0', '{}', '{}')",
    )
    .bind(&slow_id)
    .execute(&mut *slow)
    .await
    .unwrap();
    let slow_tx: String = sqlx::query_scalar("SELECT pg_current_xact_id()::text")
        .fetch_one(&mut *slow)
        .await
        .unwrap();
    let slow_tx: u64 = slow_tx.parse().unwrap();

    // The relay runs all along, while writers write.
    let stop_relaying = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let relaying = {
        let relay = relay.clone();
        let stop_relaying = stop_relaying.clone();
        tokio::spawn(async move {
            let mut head = relay.stream_head().await.unwrap();
            while !stop_relaying.load(std::sync::atomic::Ordering::SeqCst) {
                relay.step(&mut head).await.unwrap();
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    let write = |tasks: usize, users: usize| {
        let events = events.clone();
        async move {
            let writers: Vec<_> = (0..tasks)
                .map(|_| {
                    let events = events.clone();
                    tokio::spawn(async move {
                        for _ in 0..users {
                            user_with_history(&events, 5).await;
                        }
                    })
                })
                .collect();
            for writer in writers {
                writer.await.unwrap();
            }
        }
    };
    // While the slow transaction is open (kept short: the horizon is cluster-wide,
    // so it holds back every relay on this server, other tests' too).
    write(8, 1).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    // Nothing of the slow transaction, nor of any later one, is in the stream yet:
    // the horizon holds them back.
    let before_commit = stream_contents(&jetstream).await;
    assert!(before_commit.iter().all(|event| event.tx_id < slow_tx));
    slow.commit().await.unwrap();
    // And after it, more writers, with the relay catching up as they go.
    write(16, 3).await;
    stop_relaying.store(true, std::sync::atomic::Ordering::SeqCst);
    relaying.await.unwrap();

    let mut head = relay.stream_head().await.unwrap();
    relay_until_caught_up(&relay, &mut head, &pool).await;
    assert_stream_equals_table(&pool, &jetstream).await;
    assert_eq!(
        stream_contents(&jetstream).await.len(),
        (8 + 16 * 3) * 6 + 1
    );
}

#[tokio::test]
async fn a_relay_restarted_mid_catch_up_resumes_from_the_stream_without_duplicates() {
    let pool = fresh_database().await;
    let server = NatsServer::start();
    let jetstream = log_stream(&server).await;
    let events = EventStore::new(pool.clone(), crate::helpers::audit_key());
    for _ in 0..40 {
        user_with_history(&events, 4).await;
    }
    // The first relay publishes a part and dies.
    let first = Relay::new(pool.clone(), jetstream.clone(), 50);
    let mut head = first.stream_head().await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while head.stream_sequence < 100 {
        assert!(
            std::time::Instant::now() < deadline,
            "the first relay made no progress"
        );
        if first.step(&mut head).await.unwrap() == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    let published_by_first = head.stream_sequence;
    drop(first);
    assert!(published_by_first < 200);

    // Its successor knows nothing but what the stream holds.
    let second = Relay::new(pool.clone(), jetstream.clone(), 50);
    let mut head = second.stream_head().await.unwrap();
    assert_eq!(head.stream_sequence, published_by_first);
    relay_until_caught_up(&second, &mut head, &pool).await;
    assert_stream_equals_table(&pool, &jetstream).await;
}

#[tokio::test]
async fn a_relay_whose_view_of_the_stream_is_stale_cannot_append() {
    let pool = fresh_database().await;
    let server = NatsServer::start();
    let jetstream = log_stream(&server).await;
    let events = EventStore::new(pool.clone(), crate::helpers::audit_key());
    for _ in 0..10 {
        user_with_history(&events, 2).await;
    }
    let deposed = Relay::new(pool.clone(), jetstream.clone(), 10);
    let mut stale_head = deposed.stream_head().await.unwrap();
    // The leader's batches are smaller than the deposed relay's, so the stream ends
    // inside the range the deposed relay sends: a publish of its whose expected
    // sequence is the stream's end must not slip through after its first is refused.
    let leader = Relay::new(pool.clone(), jetstream.clone(), 4);
    let mut head = leader.stream_head().await.unwrap();
    while leader.step(&mut head).await.unwrap() == 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // The deposed relay still believes the stream is empty: JetStream refuses its
    // appends (a step publishing nothing means the horizon held it back: retry).
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        assert!(
            std::time::Instant::now() < deadline,
            "the deposed relay was never refused"
        );
        match deposed.step(&mut stale_head).await {
            Err(_) => break,
            Ok(0) => tokio::time::sleep(Duration::from_millis(10)).await,
            Ok(published) => panic!("a relay with a stale view appended {published} events"),
        }
    }
    // Refused at its first message, it sent nothing after it: the stream ends where
    // the leader left it, so the leader's next batch follows on.
    let after_refusal = leader.stream_head().await.unwrap();
    assert_eq!(after_refusal.stream_sequence, head.stream_sequence);
    relay_until_caught_up(&leader, &mut head, &pool).await;
    assert_stream_equals_table(&pool, &jetstream).await;
}

async fn leader_bucket(
    jetstream: &async_nats::jetstream::Context,
    lease: Duration,
) -> async_nats::jetstream::kv::Store {
    jetstream
        .create_key_value(async_nats::jetstream::kv::Config {
            bucket: "TEST_LEADERS".to_owned(),
            history: 1,
            max_age: lease,
            ..Default::default()
        })
        .await
        .unwrap()
}

#[tokio::test]
async fn one_contender_leads_until_it_lets_go_or_its_lease_ages_out() {
    let server = NatsServer::start();
    let jetstream = log_stream(&server).await;
    let bucket = leader_bucket(&jetstream, Duration::from_secs(1)).await;
    let mut first = LeaderLease::new(bucket.clone(), "relay", "first");
    let mut second = LeaderLease::new(bucket.clone(), "relay", "second");
    assert!(first.try_acquire().await.unwrap());
    assert!(!second.try_acquire().await.unwrap());
    assert!(first.renew().await.unwrap());
    first.release().await;
    assert!(second.try_acquire().await.unwrap());
    // The first one's old revision no longer holds anything.
    assert!(!first.renew().await.unwrap());
    assert!(!first.try_acquire().await.unwrap());
    // A leader that stops renewing loses the key when the bucket ages it out.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert!(first.try_acquire().await.unwrap());
    assert!(!second.renew().await.unwrap());
}

/// Waits until the stream holds every stored event.
async fn wait_until_relayed(pool: &PgPool, jetstream: &async_nats::jetstream::Context) {
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(pool)
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let mut stream = jetstream.get_stream(LOG_STREAM).await.unwrap();
        let published = stream.info().await.unwrap().state.messages;
        if published >= stored as u64 {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "relayed {published} of {stored} events"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn two_relays_publish_every_event_once_and_the_standby_takes_over_from_a_dead_leader() {
    let pool = fresh_database().await;
    let server = NatsServer::start();
    let jetstream = log_stream(&server).await;
    let lease = Duration::from_secs(1);
    let bucket = leader_bucket(&jetstream, lease).await;
    let events = EventStore::new(pool.clone(), crate::helpers::audit_key());
    let relays: BTreeMap<&str, tokio::task::JoinHandle<()>> = ["first", "second"]
        .into_iter()
        .map(|name| {
            let relay = Relay::new(pool.clone(), jetstream.clone(), 20);
            let lease_key = LeaderLease::new(bucket.clone(), "relay", name);
            let task = tokio::spawn(async move {
                relay
                    .run_as_leader(
                        lease_key,
                        lease,
                        Duration::from_millis(10),
                        tokio_util::sync::CancellationToken::new(),
                    )
                    .await
                    .unwrap();
            });
            (name, task)
        })
        .collect();

    let write = |users: usize| {
        let events = events.clone();
        async move {
            let writers: Vec<_> = (0..4)
                .map(|_| {
                    let events = events.clone();
                    tokio::spawn(async move {
                        for _ in 0..users / 4 {
                            user_with_history(&events, 3).await;
                        }
                    })
                })
                .collect();
            for writer in writers {
                writer.await.unwrap();
            }
        }
    };
    write(20).await;
    wait_until_relayed(&pool, &jetstream).await;

    // The leader dies without letting go; the standby takes over once the lease ages
    // out, and carries on from what the stream holds.
    let leader = bucket.get("relay").await.unwrap().expect("a leader");
    let leader = String::from_utf8(leader.to_vec()).unwrap();
    relays[leader.as_str()].abort();
    write(12).await;
    wait_until_relayed(&pool, &jetstream).await;
    assert_stream_equals_table(&pool, &jetstream).await;
    for task in relays.values() {
        task.abort();
    }
}

#[tokio::test]
async fn transaction_ids_are_ordered_as_numbers_not_as_text() {
    // Transaction ids of different lengths ("9" < "10" as numbers, not as text),
    // written explicitly; the relay reads them in small batches, so a batch taken in
    // text order would move the head past events not yet published.
    let pool = fresh_database().await;
    let server = NatsServer::start();
    let jetstream = log_stream(&server).await;
    for tx_id in [100_u64, 9, 10, 99] {
        sqlx::query(
            "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version,
                                 payload, metadata, tx_id)
             VALUES ('user', $1, 1, 'EmailVerified', '1.0', '\"EmailVerified\"', '{}', $2::text::xid8)",
        )
        .bind(Uuid::now_v7().to_string())
        .bind(tx_id.to_string())
        .execute(&pool)
        .await
        .unwrap();
    }
    let relay = Relay::new(pool.clone(), jetstream.clone(), 2);
    let mut head = relay.stream_head().await.unwrap();
    relay_until_caught_up(&relay, &mut head, &pool).await;
    let order: Vec<u64> = stream_contents(&jetstream)
        .await
        .iter()
        .map(|event| event.tx_id)
        .collect();
    assert_eq!(order, [9, 10, 99, 100]);
}

#[tokio::test]
async fn a_log_relayed_before_the_audit_chain_existed_is_chained_first_but_removed_links_stop_the_relay(
) {
    let pool = fresh_database().await;
    let server = NatsServer::start();
    let jetstream = log_stream(&server).await;
    let events = EventStore::new(pool.clone(), crate::helpers::audit_key());
    for _ in 0..5 {
        user_with_history(&events, 3).await;
    }
    let relay = Relay::new(pool.clone(), jetstream.clone(), 7);
    let mut head = relay.stream_head().await.unwrap();
    relay_until_caught_up(&relay, &mut head, &pool).await;

    // As a deployment from before the chain: a relayed log, no link, no checkpoint.
    sqlx::query("DELETE FROM audit_chain")
        .execute(&pool)
        .await
        .unwrap();
    let heads = orders_relay::audit_chain::head_store(&jetstream)
        .await
        .unwrap();
    heads
        .purge(orders_nats::AUDIT_CHAIN_HEAD_KEY)
        .await
        .unwrap();
    for _ in 0..3 {
        user_with_history(&events, 3).await;
    }
    let relay = Relay::new(pool.clone(), jetstream.clone(), 7);
    let mut head = relay.stream_head().await.unwrap();
    relay_until_caught_up(&relay, &mut head, &pool).await;
    let report = orders_relay::audit_chain::verify(&pool, &heads, &crate::helpers::audit_key())
        .await
        .unwrap();
    assert!(report.verified(), "{report:?}");
    assert_eq!(report.chained, 8 * 4);
    assert_eq!(report.checkpoint.unwrap().chain_position, 8 * 4);

    // Links removed once the chain exists: the relay does not build a new chain
    // over them; it stops, saying why.
    sqlx::query("DELETE FROM audit_chain WHERE chain_position > 20")
        .execute(&pool)
        .await
        .unwrap();
    user_with_history(&events, 0).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let error = loop {
        // (Until the new event is below the server-wide horizon.)
        match relay.step(&mut head).await {
            Err(error) => break error,
            Ok(published) => assert_eq!(published, 0),
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the relay never stopped"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert!(
        format!("{error:#}").contains("links were removed"),
        "{error:#}"
    );
    assert_eq!(head.stream_sequence, 8 * 4, "nothing was published");
}
