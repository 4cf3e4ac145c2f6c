//! Given / when / then tests of the purchase aggregate: placement rules, every
//! legal transition and the refusal of the others.

use cqrs_es::test::TestFramework;

use super::*;

type PurchaseTest = TestFramework<Purchase>;

fn id(number: u128) -> uuid::Uuid {
    uuid::Uuid::from_u128(0x0192f1a8_0000_7000_8000_000000000000 + number)
}

fn line(product: u128, quantity: u32) -> PurchaseLine {
    PurchaseLine {
        product_id: ProductId::from_uuid(id(product)),
        quantity,
    }
}

fn usd(amount: &str) -> Money {
    Money::parse(amount, Currency::USD).unwrap()
}

fn placed() -> PurchaseEvent {
    PurchaseEvent::PurchasePlaced {
        purchase_id: PurchaseId::from_uuid(id(1)),
        owner: UserId::from_uuid(id(2)),
        lines: vec![line(10, 2), line(11, 1)],
    }
}

fn confirmed() -> PurchaseEvent {
    PurchaseEvent::PurchaseConfirmed {
        lines: vec![
            PricedLine {
                product_id: ProductId::from_uuid(id(10)),
                quantity: 2,
                unit_price: usd("10.50"),
                line_total: usd("21.00"),
            },
            PricedLine {
                product_id: ProductId::from_uuid(id(11)),
                quantity: 1,
                unit_price: usd("3.00"),
                line_total: usd("3.00"),
            },
        ],
        total: usd("24.00"),
    }
}

fn place(lines: Vec<PurchaseLine>) -> PurchaseCommand {
    PurchaseCommand::Place {
        purchase_id: PurchaseId::from_uuid(id(1)),
        owner: UserId::from_uuid(id(2)),
        lines,
    }
}

#[test]
fn a_purchase_is_placed_with_valid_lines() {
    PurchaseTest::with(())
        .given_no_previous_events()
        .when(place(vec![line(10, 2), line(11, 1)]))
        .then_expect_events(vec![placed()]);
    PurchaseTest::with(())
        .given_no_previous_events()
        .when(place(vec![]))
        .then_expect_error(PurchaseError::LineCount { max: MAX_LINES });
    PurchaseTest::with(())
        .given_no_previous_events()
        .when(place((0..51).map(|n| line(100 + n, 1)).collect()))
        .then_expect_error(PurchaseError::LineCount { max: MAX_LINES });
    PurchaseTest::with(())
        .given_no_previous_events()
        .when(place(vec![line(10, 1), line(11, 1001)]))
        .then_expect_error(PurchaseError::QuantityOutOfRange {
            index: 1,
            max: MAX_QUANTITY,
        });
    PurchaseTest::with(())
        .given_no_previous_events()
        .when(place(vec![line(10, 1), line(11, 1), line(10, 2)]))
        .then_expect_error(PurchaseError::DuplicateProduct { index: 2 });
    PurchaseTest::with(())
        .given(vec![placed()])
        .when(place(vec![line(10, 1)]))
        .then_expect_error(PurchaseError::AlreadyPlaced);
}

#[test]
fn a_confirmation_prices_every_line_at_the_reserved_prices() {
    PurchaseTest::with(())
        .given(vec![placed()])
        .when(PurchaseCommand::Confirm {
            unit_prices: vec![usd("10.50"), usd("3")],
        })
        .then_expect_events(vec![confirmed()]);
    PurchaseTest::with(())
        .given(vec![placed()])
        .when(PurchaseCommand::Confirm {
            unit_prices: vec![usd("10.50")],
        })
        .then_expect_error(PurchaseError::ConfirmationMismatch);
    PurchaseTest::with(())
        .given(vec![placed()])
        .when(PurchaseCommand::Confirm {
            unit_prices: vec![usd("10.50"), Money::parse("3", Currency::EUR).unwrap()],
        })
        .then_expect_error(PurchaseError::ConfirmationMismatch);
}

#[test]
fn the_lifecycle_goes_forward_only() {
    let illegal = |current, wanted| PurchaseError::IllegalTransition { current, wanted };
    PurchaseTest::with(())
        .given(vec![placed(), confirmed()])
        .when(PurchaseCommand::Ship)
        .then_expect_events(vec![PurchaseEvent::PurchaseShipped]);
    PurchaseTest::with(())
        .given(vec![placed(), confirmed(), PurchaseEvent::PurchaseShipped])
        .when(PurchaseCommand::Deliver)
        .then_expect_events(vec![PurchaseEvent::PurchaseDelivered]);
    PurchaseTest::with(())
        .given(vec![placed()])
        .when(PurchaseCommand::Ship)
        .then_expect_error(illegal(PurchaseStatus::Pending, PurchaseStatus::Shipped));
    PurchaseTest::with(())
        .given(vec![placed(), confirmed()])
        .when(PurchaseCommand::Deliver)
        .then_expect_error(illegal(
            PurchaseStatus::Confirmed,
            PurchaseStatus::Delivered,
        ));
    PurchaseTest::with(())
        .given(vec![placed(), confirmed(), PurchaseEvent::PurchaseShipped])
        .when(PurchaseCommand::Cancel {
            by: Canceller::Administrator,
        })
        .then_expect_error(illegal(PurchaseStatus::Shipped, PurchaseStatus::Cancelled));
    PurchaseTest::with(())
        .given(vec![placed(), confirmed()])
        .when(PurchaseCommand::Cancel {
            by: Canceller::Buyer,
        })
        .then_expect_events(vec![PurchaseEvent::PurchaseCancelled {
            by: Canceller::Buyer,
        }]);
    PurchaseTest::with(())
        .given(vec![placed(), confirmed()])
        .when(PurchaseCommand::Reject {
            reason: RejectionReason::TimedOut,
        })
        .then_expect_error(illegal(PurchaseStatus::Confirmed, PurchaseStatus::Rejected));
    PurchaseTest::with(())
        .given_no_previous_events()
        .when(PurchaseCommand::Ship)
        .then_expect_error(PurchaseError::NotFound);
}

#[test]
fn a_rejection_keeps_its_reason() {
    let reason = RejectionReason::OutOfStock {
        product_id: ProductId::from_uuid(id(11)),
        requested: 1,
        available: 0,
    };
    let mut purchase = Purchase::default();
    purchase.apply(placed());
    purchase.apply(PurchaseEvent::PurchaseRejected { reason });
    assert_eq!(purchase.status(), Some(PurchaseStatus::Rejected));
    assert_eq!(purchase.reason(), Some(reason));
    assert_eq!(
        serde_json::to_value(reason).unwrap()["code"],
        serde_json::json!("out_of_stock")
    );
}
