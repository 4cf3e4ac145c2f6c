//! Orders load from a snapshot of our own plus the events after it. A snapshot must
//! never change what an order is: at every step, the order loaded through the event
//! store equals the fold of all its events, and a snapshot of other code (another
//! version) or one that does not read is ignored.

use cqrs_es::persist::PersistedEventStore;
use cqrs_es::EventStore as _;
use orders_application::price_checks::record_observation_on_order;
use orders_domain::ids::{CheckId, OrderId};
use orders_domain::money::{Currency, Money};
use orders_domain::order::{Availability, Order};
use orders_domain::price_check::{FetchFacts, PriceCheckEvent};
use orders_store::event_store::{order_snapshot_version, CommandMetadata, SNAPSHOT_AFTER_EVENTS};
use postgres_es::PostgresEventRepository;
use uuid::Uuid;

use crate::helpers::{spawn_app, TestApp};

fn scraper() -> CommandMetadata {
    CommandMetadata::new_job("system:scraper")
}

async fn observe(app: &TestApp, order_id: Uuid, price: &str, availability: Availability) {
    let observed = PriceCheckEvent::PriceObserved {
        order_id: OrderId::from_uuid(order_id),
        price: Some(Money::parse(price, Currency::UAH).unwrap()),
        availability,
        title: None,
        extractor: Some("json-ld".to_owned()),
        fetch: FetchFacts::default(),
    };
    record_observation_on_order(&app.state.events, CheckId::new(), &observed, &scraper())
        .await
        .unwrap();
}

/// The order as the fold of every one of its events, without any snapshot.
async fn full_fold(app: &TestApp, order_id: Uuid) -> (Order, usize) {
    let store: PersistedEventStore<PostgresEventRepository, Order> =
        PersistedEventStore::new_event_store(PostgresEventRepository::new(app.pool.clone()))
            .with_upcasters(orders_domain::upcasting::event_upcasters());
    let context = store.load_aggregate(&order_id.to_string()).await.unwrap();
    (context.aggregate, context.current_sequence)
}

async fn snapshot_sequence(app: &TestApp, order_id: Uuid) -> Option<i64> {
    sqlx::query_scalar(
        "SELECT sequence FROM aggregate_snapshots WHERE aggregate_type = 'order' AND aggregate_id = $1",
    )
    .bind(order_id.to_string())
    .fetch_optional(&app.pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn an_order_loaded_from_its_snapshot_is_the_fold_of_all_its_events() {
    let app = spawn_app().await;
    let user = app.signed_up_user().await;
    let order_id = app.placed_order(&user.token).await;
    let events = &app.state.events;

    // Prices around the target (3199.00): every check changes the price and fires
    // or re-arms the alert; now and then the product is out of stock.
    let prices = ["3500.00", "3100.00", "3300.00", "2999.00"];
    for step in 0..240 {
        let availability = if step % 37 == 36 {
            Availability::OutOfStock
        } else {
            Availability::InStock
        };
        observe(&app, order_id, prices[step % prices.len()], availability).await;
        if step % 20 == 19 {
            let loaded = events.load::<Order>(&order_id.to_string()).await.unwrap();
            assert_eq!(
                loaded,
                full_fold(&app, order_id).await,
                "after {} checks",
                step + 1
            );
        }
    }
    let (_, sequence) = full_fold(&app, order_id).await;
    assert!(sequence > 400, "{sequence} events: prices and alerts");
    let snapshot = snapshot_sequence(&app, order_id)
        .await
        .expect("a snapshot was taken");
    assert!(
        sequence - (snapshot as usize) < 2 * SNAPSHOT_AFTER_EVENTS,
        "the snapshot (at {snapshot}) follows the stream (at {sequence})"
    );

    // Commands decide on the snapshot's state: an unchanged price is no news, a
    // change is.
    let before = events.load::<Order>(&order_id.to_string()).await.unwrap();
    let last_price = before.0.last_price().unwrap().amount_string();
    observe(&app, order_id, &last_price, Availability::InStock).await;
    assert_eq!(
        events.load::<Order>(&order_id.to_string()).await.unwrap().1,
        before.1
    );

    // A snapshot of other code is never read; one that does not read as an order
    // is passed over.
    for (version, state) in [
        ("another-version", serde_json::json!({"last_price": null})),
        (order_snapshot_version(), serde_json::json!("not an order")),
    ] {
        sqlx::query(
            "UPDATE aggregate_snapshots SET state_version = $2, state = $3
              WHERE aggregate_type = 'order' AND aggregate_id = $1",
        )
        .bind(order_id.to_string())
        .bind(version)
        .bind(state)
        .execute(&app.pool)
        .await
        .unwrap();
        let loaded = events.load::<Order>(&order_id.to_string()).await.unwrap();
        assert_eq!(
            loaded,
            full_fold(&app, order_id).await,
            "snapshot {version}"
        );
    }
}

#[test]
fn the_snapshot_version_is_a_stable_digest_of_a_folded_history() {
    // Stable within one build, and a digest (not an empty or constant string).
    assert_eq!(order_snapshot_version(), order_snapshot_version());
    assert_eq!(order_snapshot_version().len(), 24);
    let mut folded = Order::default();
    for event in Order::fingerprint_history() {
        cqrs_es::Aggregate::apply(&mut folded, event);
    }
    assert!(folded.is_placed() && folded.last_price().is_some());
}
