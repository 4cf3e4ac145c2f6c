//! Given / when / then tests of the price-check aggregate: who may ask for a check,
//! what a reading becomes (an observation or a typed failure), and that a result
//! for a finished check records nothing.

use cqrs_es::test::TestFramework;
use rust_decimal::Decimal;
use uuid::Uuid;

use super::*;

type CheckTest = TestFramework<PriceCheck>;

fn check_id() -> CheckId {
    CheckId::from_uuid(Uuid::from_u128(0x0192f1a8_0000_7000_8000_000000000010))
}

fn order_id() -> OrderId {
    OrderId::from_uuid(Uuid::from_u128(0x0192f1a8_0000_7000_8000_000000000001))
}

fn url() -> ProductUrl {
    ProductUrl::parse("https://shop.example.com/p/kettle-42").unwrap()
}

fn uah(amount: &str) -> Money {
    Money::parse(amount, Currency::UAH).unwrap()
}

fn request(trigger: CheckTrigger, order_status: OrderStatus) -> PriceCheckCommand {
    PriceCheckCommand::Request {
        check_id: check_id(),
        order_id: order_id(),
        url: url(),
        selector: None,
        currency: Currency::UAH,
        trigger,
        order_status,
    }
}

fn requested(trigger: CheckTrigger) -> PriceCheckEvent {
    PriceCheckEvent::PriceCheckRequested {
        check_id: check_id(),
        order_id: order_id(),
        url: url(),
        selector: None,
        currency: Currency::UAH,
        trigger,
    }
}

fn fetch() -> FetchFacts {
    FetchFacts {
        http_status: Some(200),
        fetch_ms: Some(120),
        redirects: 0,
    }
}

fn reading(
    amount: Option<&str>,
    currency: Option<Currency>,
    availability: Availability,
) -> PriceCheckCommand {
    PriceCheckCommand::RecordReading {
        reading: PageReading {
            price: amount.map(|amount| PagePrice {
                amount: amount.parse::<Decimal>().unwrap(),
                currency,
            }),
            availability,
            title: Some("  Чайник Philips HD9350  ".to_owned()),
            extractor: Some("json-ld".to_owned()),
        },
        fetch: fetch(),
    }
}

fn observed(price: Option<&str>, availability: Availability) -> PriceCheckEvent {
    PriceCheckEvent::PriceObserved {
        order_id: order_id(),
        price: price.map(uah),
        availability,
        title: Some("Чайник Philips HD9350".to_owned()),
        extractor: Some("json-ld".to_owned()),
        fetch: fetch(),
    }
}

fn failed(reason: CheckFailureReason, detail: Option<&str>) -> PriceCheckEvent {
    PriceCheckEvent::PriceCheckFailed {
        order_id: order_id(),
        reason,
        detail: detail.map(str::to_owned),
        candidates: vec![],
        fetch: fetch(),
    }
}

#[tokio::test]
async fn a_scheduled_check_of_an_active_order_is_requested() {
    CheckTest::with(())
        .given_no_previous_events()
        .when_async(request(CheckTrigger::Scheduled, OrderStatus::Active))
        .await
        .then_expect_events(vec![requested(CheckTrigger::Scheduled)]);
}

#[tokio::test]
async fn the_owner_may_check_a_paused_order_but_the_scheduler_may_not() {
    CheckTest::with(())
        .given_no_previous_events()
        .when_async(request(CheckTrigger::Manual, OrderStatus::Paused))
        .await
        .then_expect_events(vec![requested(CheckTrigger::Manual)]);
    CheckTest::with(())
        .given_no_previous_events()
        .when_async(request(CheckTrigger::Scheduled, OrderStatus::Paused))
        .await
        .then_expect_error(PriceCheckError::OrderPaused);
}

#[tokio::test]
async fn a_cancelled_order_is_never_checked() {
    for trigger in [CheckTrigger::Scheduled, CheckTrigger::Manual] {
        CheckTest::with(())
            .given_no_previous_events()
            .when_async(request(trigger, OrderStatus::Cancelled))
            .await
            .then_expect_error(PriceCheckError::OrderCancelled);
    }
}

#[tokio::test]
async fn a_check_is_requested_once() {
    CheckTest::with(())
        .given(vec![requested(CheckTrigger::Scheduled)])
        .when_async(request(CheckTrigger::Scheduled, OrderStatus::Active))
        .await
        .then_expect_error(PriceCheckError::AlreadyRequested);
}

#[tokio::test]
async fn a_result_for_a_check_never_requested_is_refused() {
    CheckTest::with(())
        .given_no_previous_events()
        .when_async(reading(
            Some("3199"),
            Some(Currency::UAH),
            Availability::InStock,
        ))
        .await
        .then_expect_error(PriceCheckError::NotRequested);
}

#[tokio::test]
async fn a_price_in_the_orders_currency_is_observed_with_its_title_trimmed() {
    CheckTest::with(())
        .given(vec![requested(CheckTrigger::Scheduled)])
        .when_async(reading(
            Some("3199.00"),
            Some(Currency::UAH),
            Availability::InStock,
        ))
        .await
        .then_expect_events(vec![observed(Some("3199"), Availability::InStock)]);
}

#[tokio::test]
async fn a_price_without_a_currency_is_read_in_the_orders_currency() {
    CheckTest::with(())
        .given(vec![requested(CheckTrigger::Scheduled)])
        .when_async(reading(Some("3199"), None, Availability::InStock))
        .await
        .then_expect_events(vec![observed(Some("3199"), Availability::InStock)]);
}

#[tokio::test]
async fn a_price_in_another_currency_is_a_failed_check() {
    CheckTest::with(())
        .given(vec![requested(CheckTrigger::Scheduled)])
        .when_async(reading(
            Some("79.99"),
            Some(Currency::USD),
            Availability::InStock,
        ))
        .await
        .then_expect_events(vec![failed(
            CheckFailureReason::CurrencyMismatch,
            Some("the page's price is 79.99 USD, the order is in UAH"),
        )]);
}

#[tokio::test]
async fn an_amount_the_currency_cannot_have_is_a_failed_check_not_a_rounded_price() {
    CheckTest::with(())
        .given(vec![requested(CheckTrigger::Scheduled)])
        .when_async(reading(Some("3199.999"), Some(Currency::UAH), Availability::InStock))
        .await
        .then_expect_events(vec![failed(
            CheckFailureReason::InvalidResponse,
            Some("the page's price 3199.999 is not a UAH amount: UAH amounts have at most 2 decimal places"),
        )]);
}

#[tokio::test]
async fn a_page_without_a_price_that_says_out_of_stock_is_an_observation() {
    CheckTest::with(())
        .given(vec![requested(CheckTrigger::Scheduled)])
        .when_async(reading(None, None, Availability::OutOfStock))
        .await
        .then_expect_events(vec![observed(None, Availability::OutOfStock)]);
}

#[tokio::test]
async fn a_page_without_a_price_that_says_nothing_else_is_a_failed_check() {
    for availability in [Availability::Unknown, Availability::InStock] {
        CheckTest::with(())
            .given(vec![requested(CheckTrigger::Scheduled)])
            .when_async(reading(None, None, availability))
            .await
            .then_expect_events(vec![failed(CheckFailureReason::NoPrice, None)]);
    }
}

#[tokio::test]
async fn a_zero_price_is_no_price() {
    CheckTest::with(())
        .given(vec![requested(CheckTrigger::Scheduled)])
        .when_async(reading(
            Some("0.00"),
            Some(Currency::UAH),
            Availability::InStock,
        ))
        .await
        .then_expect_events(vec![failed(
            CheckFailureReason::NoPrice,
            Some("the page's price is zero"),
        )]);
}

#[tokio::test]
async fn an_ambiguous_page_is_a_failed_check_with_its_candidates() {
    CheckTest::with(())
        .given(vec![requested(CheckTrigger::Scheduled)])
        .when_async(PriceCheckCommand::RecordFailure {
            reason: CheckFailureReason::Ambiguous,
            detail: Some("2 different prices".to_owned()),
            candidates: vec![uah("2879.20"), uah("3199")],
            fetch: fetch(),
        })
        .await
        .then_expect_events(vec![PriceCheckEvent::PriceCheckFailed {
            order_id: order_id(),
            reason: CheckFailureReason::Ambiguous,
            detail: Some("2 different prices".to_owned()),
            candidates: vec![uah("2879.20"), uah("3199")],
            fetch: fetch(),
        }]);
}

#[tokio::test]
async fn a_second_result_for_a_finished_check_records_nothing() {
    CheckTest::with(())
        .given(vec![
            requested(CheckTrigger::Scheduled),
            observed(Some("3199"), Availability::InStock),
        ])
        .when_async(reading(
            Some("2999"),
            Some(Currency::UAH),
            Availability::InStock,
        ))
        .await
        .then_expect_events(vec![]);
    CheckTest::with(())
        .given(vec![
            requested(CheckTrigger::Scheduled),
            failed(CheckFailureReason::Timeout, None),
        ])
        .when_async(PriceCheckCommand::RecordFailure {
            reason: CheckFailureReason::Timeout,
            detail: None,
            candidates: vec![],
            fetch: fetch(),
        })
        .await
        .then_expect_events(vec![]);
}

#[test]
fn a_long_title_and_detail_are_cut_and_candidates_capped() {
    let mut check = PriceCheck::default();
    check.apply(requested(CheckTrigger::Scheduled));
    let events = check
        .decide(PriceCheckCommand::RecordFailure {
            reason: CheckFailureReason::Ambiguous,
            detail: Some("x".repeat(2 * MAX_DETAIL_CHARS)),
            candidates: (1..=20).map(|n| uah(&n.to_string())).collect(),
            fetch: fetch(),
        })
        .unwrap();
    let PriceCheckEvent::PriceCheckFailed {
        detail, candidates, ..
    } = &events[0]
    else {
        panic!("expected a failure, got {events:?}");
    };
    assert_eq!(detail.as_ref().unwrap().chars().count(), MAX_DETAIL_CHARS);
    assert_eq!(candidates.len(), MAX_CANDIDATES);

    let events = check
        .decide(PriceCheckCommand::RecordReading {
            reading: PageReading {
                price: Some(PagePrice {
                    amount: Decimal::from(10),
                    currency: None,
                }),
                availability: Availability::InStock,
                title: Some("Т".repeat(1000)),
                extractor: None,
            },
            fetch: fetch(),
        })
        .unwrap();
    let PriceCheckEvent::PriceObserved { title, .. } = &events[0] else {
        panic!("expected an observation, got {events:?}");
    };
    assert_eq!(title.as_ref().unwrap().chars().count(), MAX_TITLE_CHARS);
}

#[test]
fn failure_reasons_have_stable_snake_case_names() {
    for reason in CheckFailureReason::all() {
        let json = serde_json::to_value(reason).unwrap();
        assert_eq!(json, serde_json::json!(reason.as_str()));
        assert_eq!(
            CheckFailureReason::from_name(reason.as_str()),
            Some(*reason)
        );
    }
    assert_eq!(CheckFailureReason::from_name("nope"), None);
}

#[test]
fn the_check_remembers_what_the_alert_mail_needs() {
    let mut check = PriceCheck::default();
    check.apply(requested(CheckTrigger::Manual));
    check.apply(observed(Some("2999"), Availability::InStock));
    assert_eq!(check.state(), Some(CheckState::Observed));
    assert_eq!(check.title(), Some("Чайник Philips HD9350"));
    assert_eq!(check.price(), Some(uah("2999")));
    assert_eq!(check.order_id(), Some(order_id()));
    assert!(check.is_completed());
}
