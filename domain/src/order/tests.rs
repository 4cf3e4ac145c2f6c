//! Given / when / then tests of the order aggregate: every command, every refusal,
//! and the alert and availability transitions of recorded observations.

use cqrs_es::test::TestFramework;
use cqrs_es::DomainEvent;

use super::*;

type OrderTest = TestFramework<Order>;

fn order_id() -> OrderId {
    OrderId::from_uuid(Uuid::from_u128(0x0192f1a8_0000_7000_8000_000000000001))
}

fn owner() -> UserId {
    UserId::from_uuid(Uuid::from_u128(0x0192f1a8_0000_7000_8000_000000000002))
}

fn check(number: u128) -> Uuid {
    Uuid::from_u128(0x0192f1a8_0000_7000_8000_100000000000 + number)
}

fn uah(amount: &str) -> Money {
    Money::parse(amount, Currency::UAH).unwrap()
}

fn url() -> ProductUrl {
    ProductUrl::parse("https://shop.example.com/p/kettle-42").unwrap()
}

fn place() -> OrderCommand {
    OrderCommand::Place {
        order_id: order_id(),
        owner: owner(),
        url: url(),
        target: uah("3199"),
        check_interval_secs: DEFAULT_CHECK_INTERVAL_SECS,
        selector: None,
        owner_active_orders: 0,
    }
}

/// `place()` with one field changed by `change`.
fn place_with(change: impl FnOnce(&mut OrderCommand)) -> OrderCommand {
    let mut command = place();
    change(&mut command);
    command
}

fn placed() -> OrderEvent {
    OrderEvent::OrderPlaced {
        order_id: order_id(),
        owner: owner(),
        url: Some(url()),
        product_id: None,
        target: uah("3199.00"),
        check_interval_secs: DEFAULT_CHECK_INTERVAL_SECS,
        selector: None,
    }
}

fn observe(number: u128, price: Option<&str>, availability: Availability) -> OrderCommand {
    OrderCommand::RecordObservation {
        check_id: check(number),
        price: price.map(uah),
        availability,
        extractor: Some("json-ld".to_owned()),
    }
}

fn price_changed(number: u128, previous: Option<&str>, price: &str) -> OrderEvent {
    OrderEvent::PriceChanged {
        check_id: check(number),
        previous: previous.map(uah),
        price: uah(price),
        extractor: Some("json-ld".to_owned()),
    }
}

fn target_reached(number: u128, previous: Option<&str>, price: &str) -> OrderEvent {
    OrderEvent::TargetReached {
        check_id: check(number),
        previous: previous.map(uah),
        price: uah(price),
        target: uah("3199"),
    }
}

fn rearmed(number: u128, price: &str) -> OrderEvent {
    OrderEvent::Rearmed {
        check_id: check(number),
        price: uah(price),
        target: uah("3199"),
    }
}

/// Every command other than `Place`, for the rules that apply to all of them.
fn every_command_but_place() -> Vec<OrderCommand> {
    vec![
        OrderCommand::ChangeTarget {
            target: uah("2999"),
        },
        OrderCommand::Pause,
        OrderCommand::Resume,
        OrderCommand::Cancel,
        observe(1, Some("3500"), Availability::InStock),
    ]
}

// --- Place -----------------------------------------------------------------------

#[tokio::test]
async fn place_records_the_order() {
    OrderTest::with(())
        .given_no_previous_events()
        .when_async(place())
        .await
        .then_expect_events(vec![placed()]);
}

#[tokio::test]
async fn place_trims_the_selector_and_drops_a_blank_one() {
    OrderTest::with(())
        .given_no_previous_events()
        .when_async(place_with(|command| {
            if let OrderCommand::Place { selector, .. } = command {
                *selector = Some("  .price > span ".to_owned());
            }
        }))
        .await
        .then_expect_events(vec![OrderEvent::OrderPlaced {
            order_id: order_id(),
            owner: owner(),
            url: Some(url()),
            product_id: None,
            target: uah("3199"),
            check_interval_secs: DEFAULT_CHECK_INTERVAL_SECS,
            selector: Some(".price > span".to_owned()),
        }]);
    OrderTest::with(())
        .given_no_previous_events()
        .when_async(place_with(|command| {
            if let OrderCommand::Place { selector, .. } = command {
                *selector = Some(" \n ".to_owned());
            }
        }))
        .await
        .then_expect_events(vec![placed()]);
}

#[tokio::test]
async fn place_twice_is_refused() {
    OrderTest::with(())
        .given(vec![placed()])
        .when_async(place())
        .await
        .then_expect_error(OrderError::AlreadyPlaced);
}

#[tokio::test]
async fn place_with_a_check_interval_out_of_bounds_is_refused() {
    let with_interval = |interval: u32| {
        place_with(move |command| {
            if let OrderCommand::Place {
                check_interval_secs,
                ..
            } = command
            {
                *check_interval_secs = interval;
            }
        })
    };
    OrderTest::with(())
        .given_no_previous_events()
        .when_async(with_interval(MIN_CHECK_INTERVAL_SECS - 1))
        .await
        .then_expect_error(OrderError::CheckIntervalTooShort { min: 300 });
    OrderTest::with(())
        .given_no_previous_events()
        .when_async(with_interval(MAX_CHECK_INTERVAL_SECS + 1))
        .await
        .then_expect_error(OrderError::CheckIntervalTooLong { max: 2_592_000 });
    for interval in [MIN_CHECK_INTERVAL_SECS, MAX_CHECK_INTERVAL_SECS] {
        let result = OrderTest::with(())
            .given_no_previous_events()
            .when_async(with_interval(interval))
            .await
            .inspect_result();
        assert!(result.is_ok(), "{interval}");
    }
}

#[tokio::test]
async fn place_with_a_zero_target_is_refused() {
    OrderTest::with(())
        .given_no_previous_events()
        .when_async(place_with(|command| {
            if let OrderCommand::Place { target, .. } = command {
                *target = uah("0.00");
            }
        }))
        .await
        .then_expect_error(OrderError::TargetNotPositive);
}

#[tokio::test]
async fn place_with_a_too_long_selector_is_refused() {
    OrderTest::with(())
        .given_no_previous_events()
        .when_async(place_with(|command| {
            if let OrderCommand::Place { selector, .. } = command {
                *selector = Some("a".repeat(MAX_SELECTOR_CHARS + 1));
            }
        }))
        .await
        .then_expect_error(OrderError::SelectorTooLong { max: 512 });
}

#[tokio::test]
async fn place_is_refused_when_the_owner_has_the_most_orders_allowed() {
    OrderTest::with(())
        .given_no_previous_events()
        .when_async(place_with(|command| {
            if let OrderCommand::Place {
                owner_active_orders,
                ..
            } = command
            {
                *owner_active_orders = MAX_ACTIVE_ORDERS_PER_USER;
            }
        }))
        .await
        .then_expect_error(OrderError::TooManyActiveOrders { max: 100 });
    // One below the limit is fine: that order is the hundredth.
    OrderTest::with(())
        .given_no_previous_events()
        .when_async(place_with(|command| {
            if let OrderCommand::Place {
                owner_active_orders,
                ..
            } = command
            {
                *owner_active_orders = MAX_ACTIVE_ORDERS_PER_USER - 1;
            }
        }))
        .await
        .then_expect_events(vec![placed()]);
}

#[tokio::test]
async fn every_other_command_needs_a_placed_order() {
    for command in every_command_but_place() {
        OrderTest::with(())
            .given_no_previous_events()
            .when_async(command)
            .await
            .then_expect_error(OrderError::NotFound);
    }
}

// --- ChangeTarget ----------------------------------------------------------------

#[tokio::test]
async fn change_target_records_the_previous_and_new_target() {
    OrderTest::with(())
        .given(vec![placed()])
        .when_async(OrderCommand::ChangeTarget {
            target: uah("2999.5"),
        })
        .await
        .then_expect_events(vec![OrderEvent::TargetChanged {
            previous: uah("3199"),
            target: uah("2999.50"),
        }]);
}

#[tokio::test]
async fn change_target_to_the_same_amount_records_nothing() {
    OrderTest::with(())
        .given(vec![placed()])
        .when_async(OrderCommand::ChangeTarget {
            target: uah("3199.0"),
        })
        .await
        .then_expect_events(vec![]);
}

#[tokio::test]
async fn change_target_of_a_cancelled_order_is_refused() {
    OrderTest::with(())
        .given(vec![placed(), OrderEvent::OrderCancelled])
        .when_async(OrderCommand::ChangeTarget {
            target: uah("2999"),
        })
        .await
        .then_expect_error(OrderError::Cancelled);
}

#[tokio::test]
async fn change_target_to_another_currency_is_refused() {
    OrderTest::with(())
        .given(vec![placed()])
        .when_async(OrderCommand::ChangeTarget {
            target: Money::parse("80", Currency::USD).unwrap(),
        })
        .await
        .then_expect_error(OrderError::CurrencyChangeNotAllowed);
}

#[tokio::test]
async fn change_target_to_zero_is_refused() {
    OrderTest::with(())
        .given(vec![placed()])
        .when_async(OrderCommand::ChangeTarget { target: uah("0") })
        .await
        .then_expect_error(OrderError::TargetNotPositive);
}

#[tokio::test]
async fn change_target_is_allowed_while_paused() {
    OrderTest::with(())
        .given(vec![placed(), OrderEvent::OrderPaused])
        .when_async(OrderCommand::ChangeTarget {
            target: uah("2999"),
        })
        .await
        .then_expect_events(vec![OrderEvent::TargetChanged {
            previous: uah("3199"),
            target: uah("2999"),
        }]);
}

#[tokio::test]
async fn a_changed_target_re_arms_the_alert() {
    // The target was reached at 3100; the user lowers the target to 3150, still
    // above the price: the next observation alerts again.
    OrderTest::with(())
        .given(vec![
            placed(),
            price_changed(1, None, "3100"),
            target_reached(1, None, "3100"),
            OrderEvent::TargetChanged {
                previous: uah("3199"),
                target: uah("3150"),
            },
        ])
        .when_async(observe(2, Some("3100"), Availability::InStock))
        .await
        .then_expect_events(vec![OrderEvent::TargetReached {
            check_id: check(2),
            previous: Some(uah("3100")),
            price: uah("3100"),
            target: uah("3150"),
        }]);
}

// --- Pause, Resume, Cancel -------------------------------------------------------

#[tokio::test]
async fn pause_records_the_pause() {
    OrderTest::with(())
        .given(vec![placed()])
        .when_async(OrderCommand::Pause)
        .await
        .then_expect_events(vec![OrderEvent::OrderPaused]);
}

#[tokio::test]
async fn pause_a_paused_order_is_refused() {
    OrderTest::with(())
        .given(vec![placed(), OrderEvent::OrderPaused])
        .when_async(OrderCommand::Pause)
        .await
        .then_expect_error(OrderError::AlreadyPaused);
}

#[tokio::test]
async fn pause_a_cancelled_order_is_refused() {
    OrderTest::with(())
        .given(vec![placed(), OrderEvent::OrderCancelled])
        .when_async(OrderCommand::Pause)
        .await
        .then_expect_error(OrderError::Cancelled);
}

#[tokio::test]
async fn resume_records_the_resumption() {
    OrderTest::with(())
        .given(vec![placed(), OrderEvent::OrderPaused])
        .when_async(OrderCommand::Resume)
        .await
        .then_expect_events(vec![OrderEvent::OrderResumed]);
}

#[tokio::test]
async fn resume_an_active_order_is_refused() {
    OrderTest::with(())
        .given(vec![placed()])
        .when_async(OrderCommand::Resume)
        .await
        .then_expect_error(OrderError::NotPaused);
    OrderTest::with(())
        .given(vec![
            placed(),
            OrderEvent::OrderPaused,
            OrderEvent::OrderResumed,
        ])
        .when_async(OrderCommand::Resume)
        .await
        .then_expect_error(OrderError::NotPaused);
}

#[tokio::test]
async fn resume_a_cancelled_order_is_refused() {
    OrderTest::with(())
        .given(vec![
            placed(),
            OrderEvent::OrderPaused,
            OrderEvent::OrderCancelled,
        ])
        .when_async(OrderCommand::Resume)
        .await
        .then_expect_error(OrderError::Cancelled);
}

#[tokio::test]
async fn cancel_records_the_cancellation_whether_active_or_paused() {
    OrderTest::with(())
        .given(vec![placed()])
        .when_async(OrderCommand::Cancel)
        .await
        .then_expect_events(vec![OrderEvent::OrderCancelled]);
    OrderTest::with(())
        .given(vec![placed(), OrderEvent::OrderPaused])
        .when_async(OrderCommand::Cancel)
        .await
        .then_expect_events(vec![OrderEvent::OrderCancelled]);
}

#[tokio::test]
async fn cancel_a_cancelled_order_is_refused() {
    OrderTest::with(())
        .given(vec![placed(), OrderEvent::OrderCancelled])
        .when_async(OrderCommand::Cancel)
        .await
        .then_expect_error(OrderError::AlreadyCancelled);
}

// --- RecordObservation -----------------------------------------------------------

#[tokio::test]
async fn a_first_observation_above_the_target_records_only_the_price() {
    OrderTest::with(())
        .given(vec![placed()])
        .when_async(observe(1, Some("3500"), Availability::InStock))
        .await
        .then_expect_events(vec![price_changed(1, None, "3500")]);
}

#[tokio::test]
async fn a_first_observation_at_the_target_already_reaches_it() {
    OrderTest::with(())
        .given(vec![placed()])
        .when_async(observe(1, Some("3199"), Availability::InStock))
        .await
        .then_expect_events(vec![
            price_changed(1, None, "3199"),
            target_reached(1, None, "3199"),
        ]);
}

#[tokio::test]
async fn a_drop_below_the_target_reaches_it() {
    OrderTest::with(())
        .given(vec![placed(), price_changed(1, None, "3500")])
        .when_async(observe(2, Some("2879.2"), Availability::InStock))
        .await
        .then_expect_events(vec![
            price_changed(2, Some("3500"), "2879.20"),
            target_reached(2, Some("3500"), "2879.20"),
        ]);
}

#[tokio::test]
async fn the_target_is_reached_only_once_while_the_price_stays_low() {
    let history = vec![
        placed(),
        price_changed(1, None, "3100"),
        target_reached(1, None, "3100"),
    ];
    // The same low price again: nothing new.
    OrderTest::with(())
        .given(history.clone())
        .when_async(observe(2, Some("3100.00"), Availability::InStock))
        .await
        .then_expect_events(vec![]);
    // An even lower price: a price change, but no second alert.
    OrderTest::with(())
        .given(history)
        .when_async(observe(3, Some("3000"), Availability::InStock))
        .await
        .then_expect_events(vec![price_changed(3, Some("3100"), "3000")]);
}

#[tokio::test]
async fn a_rise_above_the_target_re_arms_the_alert() {
    OrderTest::with(())
        .given(vec![
            placed(),
            price_changed(1, None, "3100"),
            target_reached(1, None, "3100"),
        ])
        .when_async(observe(2, Some("3300"), Availability::InStock))
        .await
        .then_expect_events(vec![
            price_changed(2, Some("3100"), "3300"),
            rearmed(2, "3300"),
        ]);
}

#[tokio::test]
async fn after_re_arming_a_new_drop_reaches_the_target_again() {
    OrderTest::with(())
        .given(vec![
            placed(),
            price_changed(1, None, "3100"),
            target_reached(1, None, "3100"),
            price_changed(2, Some("3100"), "3300"),
            rearmed(2, "3300"),
        ])
        .when_async(observe(3, Some("3150"), Availability::InStock))
        .await
        .then_expect_events(vec![
            price_changed(3, Some("3300"), "3150"),
            target_reached(3, Some("3300"), "3150"),
        ]);
}

#[tokio::test]
async fn a_late_or_redelivered_observation_changes_nothing() {
    let history = vec![
        placed(),
        price_changed(1, None, "3500"),
        price_changed(3, Some("3500"), "3300"),
    ];
    // Check 2 was requested before check 3 but its result arrives after it.
    OrderTest::with(())
        .given(history.clone())
        .when_async(observe(2, Some("3000"), Availability::InStock))
        .await
        .then_expect_events(vec![]);
    // Check 3 delivered a second time.
    OrderTest::with(())
        .given(history.clone())
        .when_async(observe(3, Some("3300"), Availability::InStock))
        .await
        .then_expect_events(vec![]);
    // A newer check is news.
    OrderTest::with(())
        .given(history)
        .when_async(observe(4, Some("3000"), Availability::InStock))
        .await
        .then_expect_events(vec![
            price_changed(4, Some("3300"), "3000"),
            target_reached(4, Some("3300"), "3000"),
        ]);
}

#[tokio::test]
async fn an_unchanged_price_above_the_target_records_nothing() {
    OrderTest::with(())
        .given(vec![placed(), price_changed(1, None, "3500")])
        .when_async(observe(2, Some("3500.0"), Availability::InStock))
        .await
        .then_expect_events(vec![]);
}

#[tokio::test]
async fn an_observation_without_a_price_changes_no_price() {
    OrderTest::with(())
        .given(vec![placed(), price_changed(1, None, "3500")])
        .when_async(observe(2, None, Availability::InStock))
        .await
        .then_expect_events(vec![]);
    OrderTest::with(())
        .given(vec![placed()])
        .when_async(observe(1, None, Availability::Unknown))
        .await
        .then_expect_events(vec![]);
}

#[tokio::test]
async fn out_of_stock_makes_an_order_that_was_never_observed_unavailable() {
    OrderTest::with(())
        .given(vec![placed()])
        .when_async(observe(1, None, Availability::OutOfStock))
        .await
        .then_expect_events(vec![OrderEvent::BecameUnavailable {
            check_id: check(1),
            availability: Availability::OutOfStock,
        }]);
}

#[tokio::test]
async fn discontinued_makes_an_available_order_unavailable() {
    OrderTest::with(())
        .given(vec![
            placed(),
            OrderEvent::BecameUnavailable {
                check_id: check(1),
                availability: Availability::OutOfStock,
            },
            OrderEvent::BecameAvailable {
                check_id: check(2),
                availability: Availability::InStock,
            },
        ])
        .when_async(observe(3, Some("3500"), Availability::Discontinued))
        .await
        .then_expect_events(vec![
            OrderEvent::BecameUnavailable {
                check_id: check(3),
                availability: Availability::Discontinued,
            },
            price_changed(3, None, "3500"),
        ]);
}

#[tokio::test]
async fn staying_unavailable_records_nothing_new() {
    let unavailable = OrderEvent::BecameUnavailable {
        check_id: check(1),
        availability: Availability::OutOfStock,
    };
    for availability in [Availability::OutOfStock, Availability::Discontinued] {
        OrderTest::with(())
            .given(vec![placed(), unavailable.clone()])
            .when_async(observe(2, None, availability))
            .await
            .then_expect_events(vec![]);
    }
}

#[tokio::test]
async fn back_in_stock_comes_before_the_price_and_the_alert() {
    OrderTest::with(())
        .given(vec![
            placed(),
            price_changed(1, None, "3500"),
            OrderEvent::BecameUnavailable {
                check_id: check(2),
                availability: Availability::OutOfStock,
            },
        ])
        .when_async(observe(3, Some("3000"), Availability::InStock))
        .await
        .then_expect_events(vec![
            OrderEvent::BecameAvailable {
                check_id: check(3),
                availability: Availability::InStock,
            },
            price_changed(3, Some("3500"), "3000"),
            target_reached(3, Some("3500"), "3000"),
        ]);
}

#[tokio::test]
async fn pre_order_and_back_order_count_as_available() {
    for availability in [Availability::PreOrder, Availability::BackOrder] {
        OrderTest::with(())
            .given(vec![
                placed(),
                OrderEvent::BecameUnavailable {
                    check_id: check(1),
                    availability: Availability::OutOfStock,
                },
            ])
            .when_async(observe(2, None, availability))
            .await
            .then_expect_events(vec![OrderEvent::BecameAvailable {
                check_id: check(2),
                availability,
            }]);
    }
}

#[tokio::test]
async fn in_stock_without_a_previous_unavailability_is_not_news() {
    OrderTest::with(())
        .given(vec![placed()])
        .when_async(observe(1, None, Availability::InStock))
        .await
        .then_expect_events(vec![]);
}

#[tokio::test]
async fn unknown_availability_changes_nothing() {
    // Not "available again" after being out of stock ...
    OrderTest::with(())
        .given(vec![
            placed(),
            OrderEvent::BecameUnavailable {
                check_id: check(1),
                availability: Availability::OutOfStock,
            },
        ])
        .when_async(observe(2, None, Availability::Unknown))
        .await
        .then_expect_events(vec![]);
    // ... and not "unavailable" after being available.
    OrderTest::with(())
        .given(vec![
            placed(),
            OrderEvent::BecameUnavailable {
                check_id: check(1),
                availability: Availability::OutOfStock,
            },
            OrderEvent::BecameAvailable {
                check_id: check(2),
                availability: Availability::InStock,
            },
        ])
        .when_async(observe(3, None, Availability::Unknown))
        .await
        .then_expect_events(vec![]);
}

#[tokio::test]
async fn an_observation_in_another_currency_is_refused() {
    OrderTest::with(())
        .given(vec![placed()])
        .when_async(OrderCommand::RecordObservation {
            check_id: check(1),
            price: Some(Money::parse("80", Currency::USD).unwrap()),
            availability: Availability::InStock,
            extractor: None,
        })
        .await
        .then_expect_error(OrderError::ObservationCurrencyMismatch);
}

#[tokio::test]
async fn an_observation_for_a_cancelled_order_is_refused() {
    OrderTest::with(())
        .given(vec![placed(), OrderEvent::OrderCancelled])
        .when_async(observe(1, Some("3000"), Availability::InStock))
        .await
        .then_expect_error(OrderError::Cancelled);
}

#[tokio::test]
async fn an_observation_is_accepted_while_paused() {
    OrderTest::with(())
        .given(vec![placed(), OrderEvent::OrderPaused])
        .when_async(observe(1, Some("3500"), Availability::InStock))
        .await
        .then_expect_events(vec![price_changed(1, None, "3500")]);
}

#[tokio::test]
async fn a_redelivered_observation_records_nothing_the_second_time() {
    let first = OrderTest::with(())
        .given(vec![placed()])
        .when_async(observe(1, Some("3000"), Availability::OutOfStock))
        .await
        .inspect_result()
        .unwrap();
    assert_eq!(first.len(), 3);
    OrderTest::with(())
        .given(vec![placed()])
        .and(first)
        .when_async(observe(1, Some("3000"), Availability::OutOfStock))
        .await
        .then_expect_events(vec![]);
}

// --- State, events, values -------------------------------------------------------

#[test]
fn state_follows_the_events() {
    let mut order = Order::default();
    assert!(!order.is_placed());
    assert_eq!(order.status(), None);
    assert_eq!(order.availability(), Availability::Unknown);

    order.apply(placed());
    assert!(order.is_placed());
    assert_eq!(order.id(), Some(order_id()));
    assert_eq!(order.owner(), Some(owner()));
    assert_eq!(order.url(), Some(&url()));
    assert_eq!(order.target(), Some(uah("3199")));
    assert_eq!(order.currency(), Some(Currency::UAH));
    assert_eq!(order.status(), Some(OrderStatus::Active));
    assert_eq!(order.check_interval_secs(), DEFAULT_CHECK_INTERVAL_SECS);
    assert_eq!(order.selector(), None);
    assert_eq!(order.last_price(), None);
    assert!(order.is_armed());

    order.apply(price_changed(1, None, "3100"));
    order.apply(target_reached(1, None, "3100"));
    assert_eq!(order.last_price(), Some(uah("3100")));
    assert!(!order.is_armed());

    order.apply(OrderEvent::BecameUnavailable {
        check_id: check(2),
        availability: Availability::OutOfStock,
    });
    assert_eq!(order.availability(), Availability::OutOfStock);

    order.apply(OrderEvent::OrderPaused);
    assert_eq!(order.status(), Some(OrderStatus::Paused));
    order.apply(OrderEvent::OrderResumed);
    assert_eq!(order.status(), Some(OrderStatus::Active));
    order.apply(OrderEvent::OrderCancelled);
    assert_eq!(order.status(), Some(OrderStatus::Cancelled));
}

#[test]
fn event_types_are_the_variant_names_and_order_placed_is_version_three() {
    let events = [
        (placed(), "OrderPlaced", "3.0"),
        (
            OrderEvent::TargetChanged {
                previous: uah("1"),
                target: uah("2"),
            },
            "TargetChanged",
            "1.0",
        ),
        (OrderEvent::OrderPaused, "OrderPaused", "1.0"),
        (OrderEvent::OrderResumed, "OrderResumed", "1.0"),
        (OrderEvent::OrderCancelled, "OrderCancelled", "1.0"),
        (price_changed(1, None, "1"), "PriceChanged", "1.0"),
        (target_reached(1, None, "1"), "TargetReached", "2.0"),
        (rearmed(1, "4000"), "Rearmed", "1.0"),
        (
            OrderEvent::BecameUnavailable {
                check_id: check(1),
                availability: Availability::OutOfStock,
            },
            "BecameUnavailable",
            "1.0",
        ),
        (
            OrderEvent::BecameAvailable {
                check_id: check(1),
                availability: Availability::InStock,
            },
            "BecameAvailable",
            "1.0",
        ),
    ];
    for (event, event_type, event_version) in events {
        assert_eq!(event.event_type(), event_type);
        assert_eq!(event.event_version(), event_version);
        let payload = serde_json::to_value(&event).unwrap();
        let tag = match &payload {
            serde_json::Value::String(unit_variant) => unit_variant.clone(),
            serde_json::Value::Object(map) => map.keys().next().unwrap().clone(),
            other => panic!("unexpected payload {other}"),
        };
        assert_eq!(tag, event_type);
        assert_eq!(
            serde_json::from_value::<OrderEvent>(payload).unwrap(),
            event
        );
    }
}

#[test]
fn order_placed_payload_nests_the_target_as_money() {
    let payload = serde_json::to_value(placed()).unwrap();
    assert_eq!(
        payload,
        serde_json::json!({"OrderPlaced": {
            "order_id": order_id().to_string(),
            "owner": owner().to_string(),
            "url": "https://shop.example.com/p/kettle-42",
            "target": {"amount": "3199.00", "currency": "UAH"},
            "check_interval_secs": 3600,
            "selector": null,
        }})
    );
}

#[test]
fn statuses_and_availabilities_have_stable_names() {
    assert_eq!(serde_json::to_value(OrderStatus::Active).unwrap(), "active");
    assert_eq!(serde_json::to_value(OrderStatus::Paused).unwrap(), "paused");
    assert_eq!(
        serde_json::to_value(OrderStatus::Cancelled).unwrap(),
        "cancelled"
    );
    for availability in [
        Availability::InStock,
        Availability::OutOfStock,
        Availability::PreOrder,
        Availability::BackOrder,
        Availability::Discontinued,
        Availability::Unknown,
    ] {
        let name = availability.to_string();
        assert_eq!(serde_json::to_value(availability).unwrap(), name.as_str());
        assert_eq!(name.parse(), Ok(availability));
    }
    assert_eq!(
        "in_stock".parse::<Availability>(),
        Err(UnknownAvailability("in_stock".to_owned()))
    );
}

#[test]
fn availability_is_either_available_unavailable_or_unknown() {
    assert!(Availability::InStock.is_available());
    assert!(Availability::PreOrder.is_available());
    assert!(Availability::BackOrder.is_available());
    assert!(!Availability::OutOfStock.is_available());
    assert!(!Availability::Discontinued.is_available());
    assert!(Availability::OutOfStock.is_unavailable());
    assert!(Availability::Discontinued.is_unavailable());
    assert!(!Availability::Unknown.is_available());
    assert!(!Availability::Unknown.is_unavailable());
}

// --- ProductUrl ------------------------------------------------------------------

#[test]
fn http_and_https_product_urls_are_accepted_in_normal_form() {
    let url = ProductUrl::parse("  HTTPS://Shop.Example.COM/p/42?colour=red#reviews ").unwrap();
    assert_eq!(
        url.as_str(),
        "https://shop.example.com/p/42?colour=red#reviews"
    );
    assert_eq!(url.host(), "shop.example.com");
    assert!(ProductUrl::parse("http://127.0.0.1:8080/fixture.html").is_ok());
    assert!(ProductUrl::parse("http://[::1]/p").is_ok());
}

#[test]
fn product_urls_are_refused_with_a_reason() {
    assert_eq!(ProductUrl::parse(" "), Err(UrlError::Empty));
    assert_eq!(
        ProductUrl::parse("shop.example.com/p/42"),
        Err(UrlError::Malformed(url::ParseError::RelativeUrlWithoutBase))
    );
    assert_eq!(
        ProductUrl::parse("http://"),
        Err(UrlError::Malformed(url::ParseError::EmptyHost))
    );
    for (input, scheme) in [
        ("ftp://shop.example.com/p", "ftp"),
        ("file:///etc/passwd", "file"),
        ("javascript:alert(1)", "javascript"),
        ("data:text/html,hi", "data"),
    ] {
        assert_eq!(
            ProductUrl::parse(input),
            Err(UrlError::UnsupportedScheme(scheme.to_owned())),
            "{input}"
        );
    }
    for input in [
        "https://ann:secret@shop.example.com/p",
        "https://ann@shop.example.com/p",
        "https://:secret@shop.example.com/p",
    ] {
        assert_eq!(
            ProductUrl::parse(input),
            Err(UrlError::ContainsCredentials),
            "{input}"
        );
    }
}

#[test]
fn product_urls_longer_than_the_limit_are_refused() {
    let prefix = "https://shop.example.com/";
    let longest = format!("{prefix}{}", "a".repeat(MAX_URL_CHARS - prefix.len()));
    assert!(ProductUrl::parse(&longest).is_ok());
    assert_eq!(
        ProductUrl::parse(&format!("{longest}a")),
        Err(UrlError::TooLong { max: 2048 })
    );
    // Short as typed, but too long once percent-encoded.
    let encoded_too_long = format!("{prefix}{}", "ї".repeat(400));
    assert_eq!(
        ProductUrl::parse(&encoded_too_long),
        Err(UrlError::TooLong { max: 2048 })
    );
}

#[test]
fn product_urls_serialise_as_strings_and_validate_when_read() {
    let json = serde_json::to_value(url()).unwrap();
    assert_eq!(json, "https://shop.example.com/p/kettle-42");
    assert_eq!(serde_json::from_value::<ProductUrl>(json).unwrap(), url());
    assert!(serde_json::from_value::<ProductUrl>(serde_json::json!("ftp://x.y/z")).is_err());
}

#[test]
fn an_order_on_a_catalog_product_has_no_page_and_records_observations_alike() {
    let product_id = orders_domain_product_id();
    let placed = OrderEvent::OrderPlaced {
        order_id: order_id(),
        owner: owner(),
        url: None,
        product_id: Some(product_id),
        target: uah("3199.00"),
        check_interval_secs: DEFAULT_CHECK_INTERVAL_SECS,
        selector: None,
    };
    OrderTest::with(())
        .given_no_previous_events()
        .when(OrderCommand::PlaceOnCatalog {
            order_id: order_id(),
            owner: owner(),
            product_id,
            target: uah("3199"),
            owner_active_orders: 0,
        })
        .then_expect_events(vec![placed.clone()]);
    OrderTest::with(())
        .given(vec![placed.clone()])
        .when(OrderCommand::RecordObservation {
            check_id: check(1),
            price: Some(uah("3000")),
            availability: Availability::InStock,
            extractor: Some("catalog".to_owned()),
        })
        .then_expect_events(vec![
            OrderEvent::PriceChanged {
                check_id: check(1),
                previous: None,
                price: uah("3000.00"),
                extractor: Some("catalog".to_owned()),
            },
            OrderEvent::TargetReached {
                check_id: check(1),
                previous: None,
                price: uah("3000.00"),
                target: uah("3199.00"),
            },
        ]);
    let mut order = Order::default();
    order.apply(placed);
    assert_eq!((order.url(), order.product_id()), (None, Some(product_id)));
    // The payload of a page's order is what 2.0 wrote: no `product_id` key.
    let page = serde_json::to_value(placed_event_for_page()).unwrap();
    assert!(page["OrderPlaced"].get("product_id").is_none());
}

fn orders_domain_product_id() -> crate::ids::ProductId {
    crate::ids::ProductId::from_uuid(Uuid::from_u128(0x0192f1a8_0000_7000_8000_000000000003))
}

fn placed_event_for_page() -> OrderEvent {
    placed()
}
