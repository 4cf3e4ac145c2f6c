//! Given / when / then tests of the product aggregate: the catalog commands, the
//! stock rule (`reserved <= on_hand`) and the saga's batched reservations.

use cqrs_es::test::TestFramework;

use super::*;

type ProductTest = TestFramework<Product>;

fn product_id() -> ProductId {
    ProductId::from_uuid(uuid::Uuid::from_u128(
        0x0192f1a8_0000_7000_8000_000000000001,
    ))
}

fn purchase(number: u128) -> PurchaseId {
    PurchaseId::from_uuid(uuid::Uuid::from_u128(
        0x0192f1a8_0000_7000_8000_200000000000 + number,
    ))
}

fn usd(amount: &str) -> Money {
    Money::parse(amount, Currency::USD).unwrap()
}

fn added(stock: u64) -> ProductEvent {
    ProductEvent::ProductAdded {
        product_id: product_id(),
        sku: Sku::parse("KETTLE-42").unwrap(),
        name: "Kettle".to_owned(),
        description: String::new(),
        price: usd("29.99"),
        image_url: None,
        stock,
    }
}

fn reserved(number: u128, quantity: u32) -> ProductEvent {
    ProductEvent::StockReserved {
        purchase_id: purchase(number),
        quantity,
        unit_price: usd("29.99"),
    }
}

fn state(events: Vec<ProductEvent>) -> Product {
    let mut product = Product::default();
    for event in events {
        product.apply(event);
    }
    product
}

#[test]
fn skus_are_checked() {
    assert_eq!(
        Sku::parse(" kettle-42.b_1 ").unwrap().as_str(),
        "kettle-42.b_1"
    );
    assert_eq!(Sku::parse(""), Err(SkuError::Empty));
    assert_eq!(Sku::parse("-x"), Err(SkuError::InvalidCharacters));
    assert_eq!(Sku::parse("a b"), Err(SkuError::InvalidCharacters));
    assert_eq!(
        Sku::parse(&"x".repeat(65)),
        Err(SkuError::TooLong { max: MAX_SKU_CHARS })
    );
}

#[test]
fn a_product_is_added_once_with_a_name_and_a_positive_price() {
    let add = |name: &str, price: Money| ProductCommand::Add {
        product_id: product_id(),
        sku: Sku::parse("KETTLE-42").unwrap(),
        name: name.to_owned(),
        description: String::new(),
        price,
        image_url: None,
        stock: 5,
    };
    ProductTest::with(())
        .given_no_previous_events()
        .when(add(" Kettle ", usd("29.99")))
        .then_expect_events(vec![added(5)]);
    ProductTest::with(())
        .given(vec![added(5)])
        .when(add("Kettle", usd("29.99")))
        .then_expect_error(ProductError::AlreadyAdded);
    ProductTest::with(())
        .given_no_previous_events()
        .when(add("  ", usd("29.99")))
        .then_expect_error(ProductError::NameEmpty);
    ProductTest::with(())
        .given_no_previous_events()
        .when(add("Kettle", usd("0")))
        .then_expect_error(ProductError::PriceNotPositive);
}

#[test]
fn a_change_records_only_what_changed_and_keeps_the_currency() {
    let change = |name: Option<&str>, price: Option<Money>| ProductCommand::Change {
        name: name.map(str::to_owned),
        description: None,
        price,
        image_url: None,
    };
    ProductTest::with(())
        .given(vec![added(5)])
        .when(change(None, Some(usd("24.99"))))
        .then_expect_events(vec![ProductEvent::ProductPriceChanged {
            previous: usd("29.99"),
            price: usd("24.99"),
        }]);
    ProductTest::with(())
        .given(vec![added(5)])
        .when(change(Some("Kettle"), Some(usd("29.99"))))
        .then_expect_events(vec![]);
    ProductTest::with(())
        .given(vec![added(5)])
        .when(change(Some("Big kettle"), None))
        .then_expect_events(vec![ProductEvent::ProductUpdated {
            name: "Big kettle".to_owned(),
            description: String::new(),
            image_url: None,
        }]);
    ProductTest::with(())
        .given(vec![added(5)])
        .when(change(
            None,
            Some(Money::parse("10", Currency::EUR).unwrap()),
        ))
        .then_expect_error(ProductError::CurrencyChangeNotAllowed {
            currency: Currency::USD,
        });
    ProductTest::with(())
        .given(vec![added(5), ProductEvent::ProductRetired])
        .when(change(Some("x"), None))
        .then_expect_error(ProductError::Retired);
}

#[test]
fn stock_never_goes_below_what_is_reserved() {
    let adjust = |quantity: i64| ProductCommand::AdjustStock {
        quantity,
        reason: "count".to_owned(),
    };
    ProductTest::with(())
        .given(vec![added(5), reserved(1, 3)])
        .when(adjust(-2))
        .then_expect_events(vec![ProductEvent::StockAdjusted {
            quantity: -2,
            reason: "count".to_owned(),
            on_hand: 3,
        }]);
    ProductTest::with(())
        .given(vec![added(5), reserved(1, 3)])
        .when(adjust(-3))
        .then_expect_error(ProductError::BelowReserved {
            reserved: 3,
            on_hand: 5,
        });
    ProductTest::with(())
        .given(vec![added(5)])
        .when(adjust(0))
        .then_expect_error(ProductError::ZeroAdjustment);
    ProductTest::with(())
        .given(vec![added(5)])
        .when(ProductCommand::AdjustStock {
            quantity: 1,
            reason: " ".to_owned(),
        })
        .then_expect_error(ProductError::ReasonInvalid {
            max: MAX_REASON_CHARS,
        });
    ProductTest::with(())
        .given(vec![added(5)])
        .when(adjust(i64::MAX))
        .then_expect_error(ProductError::StockOutOfRange { max: MAX_STOCK });
}

#[test]
fn a_batch_is_decided_in_order_and_never_oversells() {
    let product = state(vec![added(3)]);
    let requests: Vec<StockRequest> = (1..=5)
        .map(|number| StockRequest::Reserve {
            purchase_id: purchase(number),
            quantity: 1,
        })
        .collect();
    let (events, outcomes) = product.decide_stock(&requests);
    assert_eq!(events.len(), 5, "three reservations, two refusals");
    let granted = outcomes
        .iter()
        .filter(|outcome| matches!(outcome, StockOutcome::Reserved { .. }))
        .count();
    assert_eq!(granted, 3);
    assert_eq!(
        outcomes[3],
        StockOutcome::Refused {
            requested: 1,
            available: 0
        }
    );
    let after = state(vec![added(3)].into_iter().chain(events).collect());
    assert_eq!(
        (after.on_hand(), after.reserved(), after.available()),
        (3, 3, 0)
    );
}

#[test]
fn a_repeated_reservation_is_answered_from_the_one_held() {
    let product = state(vec![added(5), reserved(1, 2)]);
    let (events, outcomes) = product.decide_stock(&[StockRequest::Reserve {
        purchase_id: purchase(1),
        quantity: 2,
    }]);
    assert!(events.is_empty());
    assert_eq!(
        outcomes,
        vec![StockOutcome::Reserved {
            quantity: 2,
            unit_price: usd("29.99")
        }]
    );
    // Even after a price change: the purchase keeps the price it reserved at.
    let repriced = state(vec![
        added(5),
        reserved(1, 2),
        ProductEvent::ProductPriceChanged {
            previous: usd("29.99"),
            price: usd("99.00"),
        },
    ]);
    let (_, outcomes) = repriced.decide_stock(&[StockRequest::Reserve {
        purchase_id: purchase(1),
        quantity: 2,
    }]);
    assert_eq!(
        outcomes,
        vec![StockOutcome::Reserved {
            quantity: 2,
            unit_price: usd("29.99")
        }]
    );
}

#[test]
fn release_and_ship_act_once_on_what_is_held() {
    let product = state(vec![added(5), reserved(1, 2), reserved(2, 1)]);
    let (events, outcomes) = product.decide_stock(&[
        StockRequest::Release {
            purchase_id: purchase(1),
        },
        StockRequest::Release {
            purchase_id: purchase(1),
        },
        StockRequest::Ship {
            purchase_id: purchase(2),
        },
        StockRequest::Ship {
            purchase_id: purchase(3),
        },
    ]);
    assert_eq!(
        outcomes,
        vec![
            StockOutcome::Released { quantity: 2 },
            StockOutcome::NothingHeld,
            StockOutcome::Shipped { quantity: 1 },
            StockOutcome::NothingHeld,
        ]
    );
    let after = state(
        vec![added(5), reserved(1, 2), reserved(2, 1)]
            .into_iter()
            .chain(events)
            .collect(),
    );
    assert_eq!(
        (after.on_hand(), after.reserved(), after.available()),
        (4, 0, 4)
    );
}

#[test]
fn unknown_and_retired_products_reserve_nothing() {
    let reserve = [StockRequest::Reserve {
        purchase_id: purchase(1),
        quantity: 1,
    }];
    let (events, outcomes) = Product::default().decide_stock(&reserve);
    assert!(events.is_empty());
    assert_eq!(outcomes, vec![StockOutcome::UnknownProduct]);
    let retired = state(vec![added(5), ProductEvent::ProductRetired]);
    let (events, outcomes) = retired.decide_stock(&reserve);
    assert!(events.is_empty());
    assert_eq!(outcomes, vec![StockOutcome::RetiredProduct]);
}

#[test]
fn a_snapshot_of_the_state_reads_back_equal() {
    let product = state(Product::fingerprint_history());
    let json = serde_json::to_value(&product).unwrap();
    assert_eq!(serde_json::from_value::<Product>(json).unwrap(), product);
    let busy = state(vec![added(10), reserved(1, 2), reserved(2, 3)]);
    let json = serde_json::to_value(&busy).unwrap();
    assert_eq!(serde_json::from_value::<Product>(json).unwrap(), busy);
}
