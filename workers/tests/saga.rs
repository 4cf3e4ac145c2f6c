//! The purchase saga's step against a real PostgreSQL, driven directly (the log
//! consumer is exercised by the process tests): reservations, verdicts, releases,
//! shipping, the time bound, races between instances, and the invariant that a
//! product's `reserved` equals what its pending and confirmed purchases hold,
//! recomputed from the log.

use std::time::Duration;

use chrono::Utc;
use orders_domain::ids::{ProductId, PurchaseId, UserId};
use orders_domain::money::{Currency, Money};
use orders_domain::product::{Product, ProductCommand, Sku};
use orders_domain::purchase::{
    Canceller, Purchase, PurchaseCommand, PurchaseLine, PurchaseStatus, RejectionReason,
};
use orders_store::event_store::{CommandMetadata, EventStore};
use orders_store::seal::AuditKey;
use orders_workers::saga::{Saga, SWEEP_GRACE};
use sqlx::PgPool;

async fn store() -> (EventStore, PgPool) {
    let (_, pool) = orders_test_support::database::fresh_database(16).await;
    let events = EventStore::new(
        pool.clone(),
        AuditKey::new(b"the saga tests' audit key, 32 bytes+"),
    );
    (events, pool)
}

fn metadata() -> CommandMetadata {
    CommandMetadata::new_job("system:test")
}

fn usd(amount: &str) -> Money {
    Money::parse(amount, Currency::USD).unwrap()
}

async fn add_product(events: &EventStore, price: Money, stock: u64) -> ProductId {
    let product_id = ProductId::new();
    let sku = format!("SKU-{}", product_id.as_uuid().simple());
    events
        .execute_on_new::<Product>(
            &product_id.to_string(),
            ProductCommand::Add {
                product_id,
                sku: Sku::parse(&sku).unwrap(),
                name: "Kettle".to_owned(),
                description: String::new(),
                price,
                image_url: None,
                stock,
            },
            &metadata(),
        )
        .await
        .unwrap();
    product_id
}

async fn place(events: &EventStore, lines: &[(ProductId, u32)]) -> PurchaseId {
    let purchase_id = PurchaseId::new();
    let lines = lines
        .iter()
        .map(|(product_id, quantity)| PurchaseLine {
            product_id: *product_id,
            quantity: *quantity,
        })
        .collect();
    events
        .execute_on_new::<Purchase>(
            &purchase_id.to_string(),
            PurchaseCommand::Place {
                purchase_id,
                owner: UserId::new(),
                lines,
            },
            &metadata(),
        )
        .await
        .unwrap();
    purchase_id
}

/// A reservation stored as a saga step stores it, without the step's verdict (a
/// step that stalled, or a lost copy of one).
async fn reserve_directly(
    events: &EventStore,
    product_id: ProductId,
    purchase_id: PurchaseId,
    quantity: u32,
) {
    orders_application::stock::handle_stock_requests(
        events,
        product_id,
        &[orders_application::stock::AttributedRequest {
            request: orders_domain::product::StockRequest::Reserve {
                purchase_id,
                quantity,
            },
            metadata: metadata(),
        }],
    )
    .await
    .unwrap();
}

async fn purchase(events: &EventStore, purchase_id: PurchaseId) -> Purchase {
    events
        .load::<Purchase>(&purchase_id.to_string())
        .await
        .unwrap()
        .0
}

async fn product(events: &EventStore, product_id: ProductId) -> Product {
    events
        .load::<Product>(&product_id.to_string())
        .await
        .unwrap()
        .0
}

async fn settle(saga: &Saga, purchase_id: PurchaseId) -> Option<PurchaseStatus> {
    saga.settle(purchase_id, &CommandMetadata::new_job("system:saga"))
        .await
        .unwrap()
}

/// Guarantee 10, recomputed from the events table alone.
async fn assert_reservations_match_purchases(pool: &PgPool) {
    let mismatches = orders_test_support::shop::reservation_mismatches(pool)
        .await
        .unwrap();
    assert!(
        mismatches.is_empty(),
        "reserved (from product events) vs owed (by pending and confirmed purchases): {mismatches:?}"
    );
}

#[tokio::test]
async fn a_purchase_is_confirmed_at_the_reserved_prices_and_its_stock_held() {
    let (events, pool) = store().await;
    let saga = Saga::new(events.clone(), Duration::from_secs(30));
    let kettle = add_product(&events, usd("29.99"), 5).await;
    let mug = add_product(&events, usd("4.50"), 5).await;
    let bought = place(&events, &[(kettle, 2), (mug, 3)]).await;

    assert_eq!(settle(&saga, bought).await, Some(PurchaseStatus::Confirmed));
    let confirmed = purchase(&events, bought).await;
    assert_eq!(confirmed.total(), Some(usd("73.48")));
    assert_eq!(product(&events, kettle).await.available(), 3);
    assert_eq!(product(&events, mug).await.reserved(), 3);

    // Redelivered: nothing more is reserved.
    assert_eq!(settle(&saga, bought).await, Some(PurchaseStatus::Confirmed));
    assert_eq!(product(&events, kettle).await.reserved(), 2);
    assert_reservations_match_purchases(&pool).await;
}

#[tokio::test]
async fn a_short_second_line_releases_the_first_and_rejects_naming_it() {
    let (events, pool) = store().await;
    let saga = Saga::new(events.clone(), Duration::from_secs(30));
    let plenty = add_product(&events, usd("10"), 10).await;
    let scarce = add_product(&events, usd("10"), 1).await;
    let bought = place(&events, &[(plenty, 2), (scarce, 2)]).await;

    assert_eq!(settle(&saga, bought).await, Some(PurchaseStatus::Rejected));
    assert_eq!(
        purchase(&events, bought).await.reason(),
        Some(RejectionReason::OutOfStock {
            product_id: scarce,
            requested: 2,
            available: 1
        })
    );
    let plenty_now = product(&events, plenty).await;
    assert_eq!((plenty_now.reserved(), plenty_now.available()), (0, 10));
    assert_reservations_match_purchases(&pool).await;
}

#[tokio::test]
async fn unknown_retired_and_mixed_currency_purchases_are_rejected_with_their_reason() {
    let (events, pool) = store().await;
    let saga = Saga::new(events.clone(), Duration::from_secs(30));
    let dollars = add_product(&events, usd("10"), 10).await;
    let euros = add_product(&events, Money::parse("10", Currency::EUR).unwrap(), 10).await;
    let retired = add_product(&events, usd("10"), 10).await;
    events
        .execute::<Product>(&retired.to_string(), ProductCommand::Retire, &metadata())
        .await
        .unwrap();
    let unknown = ProductId::new();

    let cases = [
        (
            vec![(dollars, 1), (unknown, 1)],
            RejectionReason::UnknownProduct {
                product_id: unknown,
            },
        ),
        (
            vec![(retired, 1)],
            RejectionReason::RetiredProduct {
                product_id: retired,
            },
        ),
        (
            vec![(dollars, 1), (euros, 1)],
            RejectionReason::CurrencyMismatch,
        ),
    ];
    for (lines, reason) in cases {
        let bought = place(&events, &lines).await;
        assert_eq!(settle(&saga, bought).await, Some(PurchaseStatus::Rejected));
        assert_eq!(purchase(&events, bought).await.reason(), Some(reason));
    }
    assert_eq!(product(&events, dollars).await.reserved(), 0);
    assert_eq!(product(&events, euros).await.reserved(), 0);
    assert_reservations_match_purchases(&pool).await;
}

#[tokio::test]
async fn cancelling_releases_and_shipping_takes_the_stock_away() {
    let (events, pool) = store().await;
    let saga = Saga::new(events.clone(), Duration::from_secs(30));
    let kettle = add_product(&events, usd("29.99"), 5).await;
    let cancelled = place(&events, &[(kettle, 2)]).await;
    let shipped = place(&events, &[(kettle, 1)]).await;
    settle(&saga, cancelled).await;
    settle(&saga, shipped).await;
    assert_eq!(product(&events, kettle).await.reserved(), 3);

    let cancel = PurchaseCommand::Cancel {
        by: Canceller::Buyer,
    };
    events
        .execute::<Purchase>(&cancelled.to_string(), cancel, &metadata())
        .await
        .unwrap();
    events
        .execute::<Purchase>(&shipped.to_string(), PurchaseCommand::Ship, &metadata())
        .await
        .unwrap();
    assert_eq!(
        settle(&saga, cancelled).await,
        Some(PurchaseStatus::Cancelled)
    );
    assert_eq!(settle(&saga, shipped).await, Some(PurchaseStatus::Shipped));
    // Redelivered, both change nothing more.
    settle(&saga, cancelled).await;
    settle(&saga, shipped).await;
    let kettle_now = product(&events, kettle).await;
    assert_eq!(
        (
            kettle_now.on_hand(),
            kettle_now.reserved(),
            kettle_now.available()
        ),
        (4, 0, 4)
    );
    assert_reservations_match_purchases(&pool).await;
}

#[tokio::test]
async fn a_purchase_pending_past_the_bound_is_rejected_and_released() {
    let (events, pool) = store().await;
    let saga = Saga::new(events.clone(), Duration::from_secs(30));
    let kettle = add_product(&events, usd("29.99"), 5).await;
    let stuck = place(&events, &[(kettle, 2)]).await;
    // A reservation made before the saga stalled (its step never confirmed).
    reserve_directly(&events, kettle, stuck, 2).await;

    assert_eq!(
        saga.reject_overdue(Utc::now()).await.unwrap(),
        0,
        "not overdue yet"
    );
    let later = Utc::now() + chrono::Duration::seconds(31);
    assert_eq!(saga.reject_overdue(later).await.unwrap(), 1);
    assert_eq!(
        purchase(&events, stuck).await.reason(),
        Some(RejectionReason::TimedOut)
    );
    assert_eq!(product(&events, kettle).await.reserved(), 0);
    assert_eq!(saga.reject_overdue(later).await.unwrap(), 0, "settled once");
    assert_reservations_match_purchases(&pool).await;
}

#[tokio::test]
async fn a_price_change_while_pending_does_not_change_what_the_purchase_costs() {
    let (events, _pool) = store().await;
    let saga = Saga::new(events.clone(), Duration::from_secs(30));
    let kettle = add_product(&events, usd("29.99"), 5).await;
    let bought = place(&events, &[(kettle, 1)]).await;
    // Reserved at 29.99, then re-priced before the verdict.
    reserve_directly(&events, kettle, bought, 1).await;
    let reprice = ProductCommand::Change {
        name: None,
        description: None,
        price: Some(usd("99.00")),
        image_url: None,
    };
    events
        .execute::<Product>(&kettle.to_string(), reprice, &metadata())
        .await
        .unwrap();

    assert_eq!(settle(&saga, bought).await, Some(PurchaseStatus::Confirmed));
    assert_eq!(purchase(&events, bought).await.total(), Some(usd("29.99")));
}

#[tokio::test]
async fn two_instances_racing_for_one_product_never_oversell() {
    let (events, pool) = store().await;
    let first = Saga::new(events.clone(), Duration::from_secs(30));
    let second = Saga::new(events.clone(), Duration::from_secs(30));
    let hot = add_product(&events, usd("9.99"), 20).await;
    let mut purchases = Vec::new();
    for _ in 0..60 {
        purchases.push(place(&events, &[(hot, 1)]).await);
    }
    // Every purchase settled by both instances at once, as a redelivery would.
    let steps = purchases.iter().flat_map(|purchase_id| {
        [first.clone(), second.clone()].map(|saga| {
            let purchase_id = *purchase_id;
            async move { settle(&saga, purchase_id).await }
        })
    });
    futures::future::join_all(steps).await;

    let mut confirmed = 0;
    for purchase_id in &purchases {
        match purchase(&events, *purchase_id).await.status() {
            Some(PurchaseStatus::Confirmed) => confirmed += 1,
            Some(PurchaseStatus::Rejected) => {}
            other => panic!("purchase {purchase_id} is {other:?}"),
        }
    }
    assert_eq!(confirmed, 20);
    let hot_now = product(&events, hot).await;
    assert_eq!((hot_now.reserved(), hot_now.available()), (20, 0));
    let appends: i64 = sqlx::query_scalar(
        "SELECT count(DISTINCT tx_id::text) FROM events WHERE aggregate_id = $1 AND sequence > 1",
    )
    .bind(hot.to_string())
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(
        appends < 60,
        "reservations for one product are batched ({appends} appends for 60 buyers)"
    );
    assert_reservations_match_purchases(&pool).await;
}

/// A saga instance holds each product between its batches; what others store on
/// the product meanwhile (an administrator's adjustment, another instance's
/// reservation) is never decided on stale: a reservation on the state held is a
/// conflict, and a release that found nothing held checks the product first.
#[tokio::test]
async fn an_instance_holding_a_product_sees_what_others_stored_since() {
    let (events, pool) = store().await;
    let holding = Saga::new(events.clone(), Duration::from_secs(30));
    let other = Saga::new(events.clone(), Duration::from_secs(30));
    let kettle = add_product(&events, usd("20"), 2).await;
    let first = place(&events, &[(kettle, 1)]).await;
    assert_eq!(
        settle(&holding, first).await,
        Some(PurchaseStatus::Confirmed)
    );

    // Three more units, then another instance takes all four available.
    let adjust = ProductCommand::AdjustStock {
        quantity: 3,
        reason: "delivery".to_owned(),
    };
    events
        .execute::<Product>(&kettle.to_string(), adjust, &metadata())
        .await
        .unwrap();
    let bulk = place(&events, &[(kettle, 4)]).await;
    assert_eq!(settle(&other, bulk).await, Some(PurchaseStatus::Confirmed));

    // The holding instance's state says one is available; the product says none.
    let late = place(&events, &[(kettle, 1)]).await;
    assert_eq!(settle(&holding, late).await, Some(PurchaseStatus::Rejected));
    assert_eq!(
        purchase(&events, late).await.reason(),
        Some(RejectionReason::OutOfStock {
            product_id: kettle,
            requested: 1,
            available: 0
        })
    );

    // Another reservation the holding instance has not seen, then its release
    // asked of the holding instance: it must find the reservation and release it.
    let cancel = PurchaseCommand::Cancel {
        by: Canceller::Buyer,
    };
    events
        .execute::<Purchase>(&first.to_string(), cancel.clone(), &metadata())
        .await
        .unwrap();
    assert_eq!(settle(&other, first).await, Some(PurchaseStatus::Cancelled));
    let unseen = place(&events, &[(kettle, 1)]).await;
    assert_eq!(
        settle(&other, unseen).await,
        Some(PurchaseStatus::Confirmed)
    );
    events
        .execute::<Purchase>(&unseen.to_string(), cancel, &metadata())
        .await
        .unwrap();
    assert_eq!(
        settle(&holding, unseen).await,
        Some(PurchaseStatus::Cancelled)
    );
    let kettle_now = product(&events, kettle).await;
    assert_eq!((kettle_now.reserved(), kettle_now.available()), (4, 1));
    assert_reservations_match_purchases(&pool).await;
}

/// A reservation a lost step left behind (stored after the purchase's verdict,
/// its step killed before it could see the verdict, its message acknowledged by
/// another copy): the sweep releases it once the grace period has passed, and
/// sweeps each purchase once.
#[tokio::test]
async fn the_sweep_releases_what_a_lost_step_left_behind() {
    let (events, pool) = store().await;
    let saga = Saga::new(events.clone(), Duration::from_secs(30));
    let kettle = add_product(&events, usd("29.99"), 5).await;
    let lost = place(&events, &[(kettle, 2)]).await;
    let kept = place(&events, &[(kettle, 1)]).await;
    assert_eq!(settle(&saga, kept).await, Some(PurchaseStatus::Confirmed));
    // Another copy's verdict, then the lost copy's reservation, never released.
    orders_application::purchases::reject_purchase(
        &events,
        lost,
        RejectionReason::TimedOut,
        &metadata(),
    )
    .await
    .unwrap();
    reserve_directly(&events, kettle, lost, 2).await;
    assert_eq!(product(&events, kettle).await.reserved(), 3);
    let mismatches = orders_test_support::shop::reservation_mismatches(&pool)
        .await
        .unwrap();
    assert!(!mismatches.is_empty(), "the leak is there to be swept");

    assert_eq!(
        saga.sweep(Utc::now()).await.unwrap().purchases,
        0,
        "within the grace"
    );
    let later = Utc::now()
        + chrono::Duration::from_std(SWEEP_GRACE).unwrap()
        + chrono::Duration::seconds(1);
    let swept = saga.sweep(later).await.unwrap();
    assert_eq!((swept.purchases, swept.caught_up), (1, true));
    let kettle_now = product(&events, kettle).await;
    assert_eq!((kettle_now.reserved(), kettle_now.available()), (1, 4));
    assert_eq!(saga.sweep(later).await.unwrap().purchases, 0, "swept once");
    assert_eq!(
        purchase(&events, kept).await.status(),
        Some(PurchaseStatus::Confirmed)
    );
    assert_reservations_match_purchases(&pool).await;
}
