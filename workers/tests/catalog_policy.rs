//! Tracking orders on catalog products against a real PostgreSQL: the product's
//! price changes and stock going to zero and back become the same order events (and
//! so the same alerts) as a scraped page's, with no scraping.

use orders_application::catalog::record_product_on_orders;
use orders_domain::ids::{OrderId, ProductId, UserId};
use orders_domain::money::{Currency, Money};
use orders_domain::order::{Order, OrderCommand};
use orders_domain::product::{Product, ProductCommand};
use orders_store::event_store::{CommandMetadata, EventStore};
use orders_store::seal::AuditKey;

fn usd(amount: &str) -> Money {
    Money::parse(amount, Currency::USD).unwrap()
}

fn metadata() -> CommandMetadata {
    CommandMetadata::new_job("system:test")
}

async fn order_on(events: &EventStore, product_id: ProductId, target: &str) -> OrderId {
    let order_id = OrderId::new();
    let command = OrderCommand::PlaceOnCatalog {
        order_id,
        owner: UserId::new(),
        product_id,
        target: usd(target),
        owner_active_orders: 0,
    };
    events
        .execute_on_new::<Order>(&order_id.to_string(), command, &metadata())
        .await
        .unwrap();
    order_id
}

async fn change(events: &EventStore, product_id: ProductId, command: ProductCommand) {
    events
        .execute::<Product>(&product_id.to_string(), command, &metadata())
        .await
        .unwrap();
}

/// The order's events after its placement, by type.
async fn order_events(events: &EventStore, order_id: OrderId) -> Vec<String> {
    let rows: Vec<String> = sqlx::query_scalar(
        "SELECT event_type FROM events WHERE aggregate_id = $1 AND sequence > 1 ORDER BY sequence",
    )
    .bind(order_id.to_string())
    .fetch_all(events.pool())
    .await
    .unwrap();
    rows
}

#[tokio::test]
async fn an_order_on_a_catalog_product_follows_its_price_and_stock() {
    let (_, pool) = orders_test_support::database::fresh_database(8).await;
    let events = EventStore::new(
        pool,
        AuditKey::new(b"the catalog tests' audit key, 32 bytes+"),
    );
    let kettle = orders_test_support::shop::product(&events, usd("40.00"), 1)
        .await
        .unwrap();
    let order = order_on(&events, kettle, "30.00").await;
    let other = order_on(&events, kettle, "45.00").await;

    // Placed: the product's state is recorded on the new order at once.
    record_product_on_orders(&events, kettle, Some(order), &metadata())
        .await
        .unwrap();
    assert_eq!(order_events(&events, order).await, ["PriceChanged"]);

    // Re-priced below the target: the same alert as a scraped page's.
    let reprice = |price: &str| ProductCommand::Change {
        name: None,
        description: None,
        price: Some(usd(price)),
        image_url: None,
    };
    change(&events, kettle, reprice("29.50")).await;
    let recorded = record_product_on_orders(&events, kettle, None, &metadata())
        .await
        .unwrap();
    assert_eq!(recorded, 2, "both orders follow the product");
    assert_eq!(
        order_events(&events, order).await,
        ["PriceChanged", "PriceChanged", "TargetReached"]
    );
    // Again, nothing new (a redelivered message).
    record_product_on_orders(&events, kettle, None, &metadata())
        .await
        .unwrap();
    assert_eq!(order_events(&events, order).await.len(), 3);

    // Out of stock and back.
    let adjust = |quantity: i64| ProductCommand::AdjustStock {
        quantity,
        reason: "count".to_owned(),
    };
    change(&events, kettle, adjust(-1)).await;
    record_product_on_orders(&events, kettle, None, &metadata())
        .await
        .unwrap();
    change(&events, kettle, adjust(5)).await;
    record_product_on_orders(&events, kettle, None, &metadata())
        .await
        .unwrap();
    let history = order_events(&events, other).await;
    assert_eq!(
        history,
        [
            "PriceChanged",
            "TargetReached",
            "BecameUnavailable",
            "BecameAvailable"
        ]
    );
    let (loaded, _) = events.load::<Order>(&other.to_string()).await.unwrap();
    assert_eq!(loaded.last_price(), Some(usd("29.50")));
    assert!(loaded.url().is_none());

    // A cancelled order follows nothing any more.
    events
        .execute::<Order>(&order.to_string(), OrderCommand::Cancel, &metadata())
        .await
        .unwrap();
    change(&events, kettle, reprice("20.00")).await;
    assert_eq!(
        record_product_on_orders(&events, kettle, None, &metadata())
            .await
            .unwrap(),
        1
    );
}
