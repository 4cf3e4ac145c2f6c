//! The topology and the envelope against a real nats-server with JetStream (the one
//! `make test` installs: `NATS_SERVER_BIN`), started per test on a free port with its
//! own store directory.

use std::collections::BTreeMap;
use std::time::Duration;

use orders_nats::{ensure_topology, LogEvent, LEADER_BUCKET, LEADER_LEASE, LOG_STREAM};
use orders_test_support::nats_server::NatsServer;

async fn jetstream(server: &NatsServer) -> async_nats::jetstream::Context {
    let client = async_nats::connect(server.url()).await.unwrap();
    async_nats::jetstream::new(client)
}

#[tokio::test]
async fn the_topology_is_created_once_and_left_as_is_when_ensured_again() {
    let server = NatsServer::start();
    let js = jetstream(&server).await;
    ensure_topology(&js, 1).await.unwrap();
    ensure_topology(&js, 1).await.unwrap();

    let mut stream = js.get_stream(LOG_STREAM).await.unwrap();
    let config = stream.info().await.unwrap().config.clone();
    assert_eq!(config.subjects, vec!["orders.events.>".to_owned()]);
    assert_eq!(
        config.storage,
        async_nats::jetstream::stream::StorageType::File
    );
    assert_eq!(config.max_age, Duration::ZERO);
    assert!(config.deny_delete && config.deny_purge);
    assert_eq!(config.duplicate_window, Duration::from_secs(120));

    let leaders = js.get_key_value(LEADER_BUCKET).await.unwrap();
    assert_eq!(leaders.status().await.unwrap().max_age(), LEADER_LEASE);
    js.get_key_value(orders_nats::AUDIT_BUCKET).await.unwrap();
}

fn sample_event(sequence: i64) -> LogEvent {
    LogEvent {
        aggregate_type: "order".to_owned(),
        aggregate_id: "0192f3a4-7b1c-7d2e-8f00-123456789abc".to_owned(),
        sequence,
        event_type: "OrderPaused".to_owned(),
        event_version: "1.0".to_owned(),
        tx_id: 900 + sequence as u64,
        global_position: 40 + sequence,
        recorded_at: "2026-11-25T12:00:00.123456Z".to_owned(),
        payload: bytes::Bytes::from_static(b"\"OrderPaused\""),
        metadata: BTreeMap::from([
            (
                "actor".to_owned(),
                "user:0192f3a4-0000-7000-8000-000000000001".to_owned(),
            ),
            (
                "correlation_id".to_owned(),
                "0192f3a4-0000-7000-8000-000000000002".to_owned(),
            ),
            (
                "causation_id".to_owned(),
                "0192f3a4-0000-7000-8000-000000000003".to_owned(),
            ),
            (
                "request_id".to_owned(),
                "0192f3a4-0000-7000-8000-000000000003".to_owned(),
            ),
        ]),
    }
}

#[tokio::test]
async fn an_event_travels_through_the_log_stream_intact_and_once() {
    let server = NatsServer::start();
    let js = jetstream(&server).await;
    ensure_topology(&js, 1).await.unwrap();
    let event = sample_event(2);

    let publish = || async {
        js.publish_with_headers(event.subject().unwrap(), event.headers(), event.body())
            .await
            .unwrap()
            .await
            .unwrap()
    };
    let first = publish().await;
    assert!(!first.duplicate);
    // The same event again (a relay retrying after a lost acknowledgement) is
    // recognised by its message id and not stored twice.
    let again = publish().await;
    assert!(again.duplicate);
    assert_eq!(again.sequence, first.sequence);

    let stream = js.get_stream(LOG_STREAM).await.unwrap();
    let stored = stream.get_raw_message(first.sequence).await.unwrap();
    assert_eq!(
        stored.subject.as_str(),
        "orders.events.order.0192f3a4-7b1c-7d2e-8f00-123456789abc"
    );
    let decoded = LogEvent::decode(&stored.headers, &stored.payload).unwrap();
    assert_eq!(decoded, event);
    let mut stream = stream;
    assert_eq!(stream.info().await.unwrap().state.messages, 1);
}

/// A worker's consumer made by an older deployment (the e-mail worker before it read
/// purchases) gets the worker's subjects when the topology is ensured again, and
/// keeps the settings an operator tuned.
#[tokio::test]
async fn an_older_workers_consumer_gets_the_new_subjects_and_keeps_its_settings() {
    use orders_nats::work::EMAIL;
    let server = NatsServer::start();
    let js = jetstream(&server).await;
    ensure_topology(&js, 1).await.unwrap();
    let log = js.get_stream(LOG_STREAM).await.unwrap();
    log.delete_consumer(EMAIL.name).await.unwrap();
    let mut older = EMAIL.log_consumer_config();
    older.filter_subjects = vec![
        "orders.events.user.>".to_owned(),
        "orders.events.order.>".to_owned(),
    ];
    older.ack_wait = Duration::from_secs(7);
    log.create_consumer(older).await.unwrap();

    ensure_topology(&js, 1).await.unwrap();
    let mut consumer: async_nats::jetstream::consumer::PullConsumer =
        log.get_consumer(EMAIL.name).await.unwrap();
    let config = consumer.info().await.unwrap().config.clone();
    assert_eq!(
        config.filter_subjects,
        [
            "orders.events.user.>",
            "orders.events.order.>",
            "orders.events.purchase.>"
        ]
    );
    assert_eq!(config.ack_wait, Duration::from_secs(7), "kept");
}
