//! The price policy as the workers run it: an observation its order refuses (in
//! another currency than the order's) is a permanent refusal, dead-lettered at its
//! first delivery with the reason; it is not retried to the delivery limit as a
//! store failure would be. What the policy does record is recorded as its own actor.

use std::collections::BTreeMap;
use std::time::Duration;

use orders_domain::ids::{CheckId, OrderId, UserId};
use orders_domain::money::{Currency, Money};
use orders_domain::order::Availability;
use orders_domain::price_check::{FetchFacts, PriceCheckEvent};
use orders_nats::dead_letters::list;
use orders_nats::work::PRICE_POLICY;
use orders_nats::LogEvent;
use orders_store::event_store::EventStore;
use orders_test_support::nats_server::NatsServer;
use orders_test_support::wait::eventually;
use orders_workers::consumer::{consume, Outcome};
use orders_workers::policy::{record_observation, POLICY_ACTOR};
use sqlx::PgPool;

mod common;
use common::fresh_database;

/// A tracking order in hryvnias.
async fn order_in_hryvnias(events: &EventStore) -> OrderId {
    orders_test_support::orders::place_in_hryvnias(
        events,
        UserId::new(),
        "https://shop.example/kettle",
        "1000",
    )
    .await
    .unwrap()
}

/// A `PriceObserved` of a check of `order_id`, as the relay publishes it.
fn observed(order_id: OrderId, price: Money, global_position: i64) -> LogEvent {
    let event = PriceCheckEvent::PriceObserved {
        order_id,
        price: Some(price),
        availability: Availability::InStock,
        title: Some("Kettle".to_owned()),
        extractor: Some("json-ld".to_owned()),
        fetch: FetchFacts {
            http_status: Some(200),
            fetch_ms: Some(12),
            redirects: 0,
        },
    };
    let check_id = CheckId::new();
    LogEvent {
        aggregate_type: "price_check".to_owned(),
        aggregate_id: check_id.to_string(),
        sequence: 2,
        event_type: "PriceObserved".to_owned(),
        event_version: "1.0".to_owned(),
        tx_id: 1_000 + global_position as u64,
        global_position,
        recorded_at: "2026-12-04T12:00:00.000000Z".to_owned(),
        payload: serde_json::to_vec(&event).unwrap().into(),
        metadata: BTreeMap::from([
            ("actor".to_owned(), "system:scraper".to_owned()),
            (
                "correlation_id".to_owned(),
                uuid::Uuid::now_v7().to_string(),
            ),
        ]),
    }
}

async fn actors_of(pool: &PgPool, order_id: OrderId) -> Vec<(String, String)> {
    sqlx::query_as(
        "SELECT event_type, metadata->>'actor' FROM events
          WHERE aggregate_id = $1 ORDER BY sequence",
    )
    .bind(order_id.to_string())
    .fetch_all(pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn an_observation_the_order_refuses_gives_up_at_once_naming_the_refusal() {
    let (_, pool) = fresh_database().await;
    let events = EventStore::new(pool.clone(), common::audit_key());
    let order_id = order_in_hryvnias(&events).await;

    let outcome = record_observation(
        &events,
        observed(order_id, Money::parse("20.00", Currency::EUR).unwrap(), 1),
    )
    .await;
    match outcome {
        Outcome::GiveUp(reason) => {
            let reason = format!("{reason:#}");
            assert!(reason.contains("not in the order's currency"), "{reason}");
        }
        Outcome::Retry(reason) => panic!("a refusal was to be retried: {reason:#}"),
        Outcome::Done => panic!("a refused observation was taken as done"),
    }

    // An observation the order takes is recorded as the policy's doing.
    let outcome = record_observation(
        &events,
        observed(order_id, Money::parse("900", Currency::UAH).unwrap(), 2),
    )
    .await;
    assert!(matches!(outcome, Outcome::Done));
    let recorded = actors_of(&pool, order_id).await;
    assert_eq!(recorded[0].0, "OrderPlaced");
    assert!(recorded.len() > 1, "{recorded:?}");
    for (event_type, actor) in &recorded[1..] {
        assert_eq!(actor, POLICY_ACTOR, "{event_type}");
    }
}

#[tokio::test]
async fn the_policy_worker_dead_letters_a_refused_observation_at_its_first_delivery() {
    let (_, pool) = fresh_database().await;
    let events = EventStore::new(pool.clone(), common::audit_key());
    let order_id = order_in_hryvnias(&events).await;
    let server = NatsServer::start();
    let jetstream = async_nats::jetstream::new(orders_nats::connect(server.url()).await.unwrap());
    orders_nats::ensure_topology(&jetstream, 1).await.unwrap();

    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let worker = {
        let jetstream = jetstream.clone();
        let events = events.clone();
        tokio::spawn(async move {
            consume(
                &jetstream,
                PRICE_POLICY,
                1,
                async move {
                    let _ = stopped.await;
                },
                move |event| {
                    let events = events.clone();
                    async move { record_observation(&events, event).await }
                },
            )
            .await
        })
    };
    let refused = observed(order_id, Money::parse("20.00", Currency::EUR).unwrap(), 1);
    jetstream
        .publish_with_headers(
            refused.subject().unwrap(),
            refused.headers(),
            refused.body(),
        )
        .await
        .unwrap()
        .await
        .unwrap();

    let letter = eventually(Duration::from_secs(10), "a dead letter", || async {
        let letters = list(&jetstream, Some(PRICE_POLICY.name)).await.unwrap();
        letters.into_iter().next()
    })
    .await;
    assert_eq!(letter.event_id, refused.event_id());
    assert_eq!(letter.deliveries, Some(1), "given up at the first delivery");
    assert!(
        letter.reason.contains("not in the order's currency"),
        "{letter:?}"
    );
    assert_eq!(
        actors_of(&pool, order_id).await.len(),
        1,
        "nothing recorded"
    );

    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(5), worker)
        .await
        .expect("the worker stops within 5 s")
        .unwrap()
        .unwrap();
}
