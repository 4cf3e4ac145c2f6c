//! Tests of currencies and money: what a user typing a target price would meet.

use std::str::FromStr;

use proptest::prelude::*;
use rust_decimal::Decimal;
use serde_json::json;

use super::*;

fn decimal(text: &str) -> Decimal {
    Decimal::from_str(text).unwrap()
}

#[test]
fn currency_codes_are_looked_up_case_insensitively() {
    assert_eq!(Currency::from_code("UAH"), Ok(Currency::UAH));
    assert_eq!(Currency::from_code("uah"), Ok(Currency::UAH));
    assert_eq!(Currency::from_code("Eur"), Ok(Currency::EUR));
    assert_eq!("usd".parse::<Currency>(), Ok(Currency::USD));
    assert_eq!(Currency::UAH.code(), "UAH");
    assert_eq!(Currency::UAH.to_string(), "UAH");
}

#[test]
fn unknown_or_malformed_currency_codes_are_refused() {
    for code in ["XXY", "", "UA", "UAHH", " UAH", "U4H", "ÜAH", "€"] {
        assert_eq!(
            Currency::from_code(code),
            Err(MoneyError::UnknownCurrency(code.to_owned())),
            "{code:?}"
        );
    }
}

#[test]
fn currency_table_has_the_expected_minor_units() {
    let expectations = [
        ("UAH", 2),
        ("USD", 2),
        ("EUR", 2),
        ("GBP", 2),
        ("PLN", 2),
        ("HUF", 2),
        ("JPY", 0),
        ("KRW", 0),
        ("ISK", 0),
        ("KWD", 3),
        ("BHD", 3),
        ("JOD", 3),
        ("OMR", 3),
        ("TND", 3),
    ];
    for (code, minor_units) in expectations {
        assert_eq!(
            Currency::from_code(code).unwrap().minor_units(),
            minor_units,
            "{code}"
        );
    }
    assert!(Currency::all().len() >= 40);
}

#[test]
fn currency_table_is_sorted_and_has_no_duplicates() {
    let codes: Vec<&str> = Currency::all().iter().map(Currency::code).collect();
    let mut sorted = codes.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(codes, sorted);
}

#[test]
fn currency_serialises_as_its_code_and_deserialisation_validates() {
    assert_eq!(serde_json::to_value(Currency::UAH).unwrap(), json!("UAH"));
    assert_eq!(
        serde_json::from_value::<Currency>(json!("JPY")).unwrap(),
        Currency::JPY
    );
    assert!(serde_json::from_value::<Currency>(json!("ABC")).is_err());
}

#[test]
fn amounts_are_kept_at_the_currencys_minor_units() {
    let money = Money::new(decimal("12.3"), Currency::UAH).unwrap();
    assert_eq!(money.amount_string(), "12.30");
    assert_eq!(money.to_string(), "12.30 UAH");
    assert_eq!(
        Money::new(decimal("100"), Currency::KWD)
            .unwrap()
            .amount_string(),
        "100.000"
    );
    assert_eq!(
        Money::new(decimal("100.00"), Currency::JPY)
            .unwrap()
            .amount_string(),
        "100"
    );
}

#[test]
fn too_many_decimals_for_the_currency_are_refused() {
    assert_eq!(
        Money::new(decimal("12.345"), Currency::UAH),
        Err(MoneyError::TooManyDecimals {
            currency: Currency::UAH,
            max: 2
        })
    );
    assert_eq!(
        Money::new(decimal("100.5"), Currency::JPY),
        Err(MoneyError::TooManyDecimals {
            currency: Currency::JPY,
            max: 0
        })
    );
    assert_eq!(
        Money::new(decimal("1.2345"), Currency::KWD),
        Err(MoneyError::TooManyDecimals {
            currency: Currency::KWD,
            max: 3
        })
    );
    assert!(Money::new(decimal("1.234"), Currency::KWD).is_ok());
}

#[test]
fn trailing_zeros_do_not_count_as_decimal_places() {
    let money = Money::new(decimal("12.340"), Currency::UAH).unwrap();
    assert_eq!(money.amount_string(), "12.34");
    assert_eq!(Money::parse("12.34000", Currency::UAH), Ok(money));
    assert_eq!(
        Money::parse("100.000", Currency::JPY)
            .unwrap()
            .amount_string(),
        "100"
    );
}

#[test]
fn negative_amounts_are_refused_but_negative_zero_is_zero() {
    assert_eq!(
        Money::new(decimal("-1"), Currency::UAH),
        Err(MoneyError::Negative)
    );
    assert_eq!(
        Money::parse("-1.00", Currency::UAH),
        Err(MoneyError::Negative)
    );
    let zero = Money::new(decimal("-0.00"), Currency::UAH).unwrap();
    assert_eq!(zero, Money::zero(Currency::UAH));
    assert_eq!(zero.amount_string(), "0.00");
    assert!(!zero.is_positive());
    assert!(Money::parse("0.01", Currency::UAH).unwrap().is_positive());
}

#[test]
fn numerically_equal_amounts_are_equal_money() {
    let short = Money::new(decimal("2879.2"), Currency::UAH).unwrap();
    let long = Money::new(decimal("2879.20"), Currency::UAH).unwrap();
    assert_eq!(short, long);
    assert_ne!(short, Money::new(decimal("2879.2"), Currency::USD).unwrap());
}

#[test]
fn parse_accepts_plain_decimals_only() {
    assert_eq!(
        Money::parse(" 3199 ", Currency::UAH)
            .unwrap()
            .amount_string(),
        "3199.00"
    );
    assert_eq!(
        Money::parse("0003199.5", Currency::UAH)
            .unwrap()
            .amount_string(),
        "3199.50"
    );
    for text in [
        "", ".5", "5.", "1e3", "+5", "1_000", "1,5", "1.2.3", "NaN", "١٢",
    ] {
        assert_eq!(
            Money::parse(text, Currency::UAH),
            Err(MoneyError::InvalidAmount(text.trim().to_owned())),
            "{text:?}"
        );
    }
}

#[test]
fn absurdly_large_amounts_are_refused() {
    let too_large = Err(MoneyError::TooLarge {
        max_integer_digits: MAX_AMOUNT_INTEGER_DIGITS,
    });
    assert_eq!(Money::parse("1000000000000000", Currency::UAH), too_large);
    assert_eq!(Money::parse(&"9".repeat(200), Currency::UAH), too_large);
    assert_eq!(Money::new(Decimal::MAX, Currency::UAH), too_large);
    assert!(Money::parse("999999999999999.99", Currency::UAH).is_ok());
    assert!(Money::parse("999999999999999.999", Currency::KWD).is_ok());
}

#[test]
fn money_json_carries_the_amount_as_a_string() {
    let money = Money::parse("3199", Currency::UAH).unwrap();
    let value = serde_json::to_value(money).unwrap();
    assert_eq!(value, json!({"amount": "3199.00", "currency": "UAH"}));
    assert_eq!(serde_json::from_value::<Money>(value).unwrap(), money);
}

#[test]
fn money_json_is_validated_when_read() {
    let read = |value| serde_json::from_value::<Money>(value);
    assert!(read(json!({"amount": "12.345", "currency": "UAH"})).is_err());
    assert!(read(json!({"amount": "-1", "currency": "UAH"})).is_err());
    assert!(read(json!({"amount": "1", "currency": "XYZ"})).is_err());
    // A float in JSON is refused: amounts travel as strings only.
    assert!(read(json!({"amount": 1.5, "currency": "UAH"})).is_err());
    assert_eq!(
        read(json!({"amount": "12.3", "currency": "UAH"}))
            .unwrap()
            .amount_string(),
        "12.30"
    );
}

fn any_currency() -> impl Strategy<Value = Currency> {
    proptest::sample::select(Currency::all())
}

proptest! {
    #[test]
    fn money_survives_a_json_round_trip(
        currency in any_currency(),
        minor_amount in 0_u64..1_000_000_000_000_000,
    ) {
        let amount = Decimal::from_i128_with_scale(i128::from(minor_amount), currency.minor_units());
        let money = Money::new(amount, currency).unwrap();
        let json = serde_json::to_string(&money).unwrap();
        let read_back: Money = serde_json::from_str(&json).unwrap();
        prop_assert_eq!(read_back, money);
        prop_assert_eq!(read_back.amount_string(), money.amount_string());
        prop_assert_eq!(read_back.amount().scale(), currency.minor_units());
    }

    #[test]
    fn parsing_the_displayed_amount_gives_the_same_money(
        currency in any_currency(),
        integer_part in 0_u64..1_000_000_000_000_000,
        fraction_digits in "[0-9]{0,3}",
    ) {
        let text = if fraction_digits.is_empty() {
            integer_part.to_string()
        } else {
            format!("{integer_part}.{fraction_digits}")
        };
        match Money::parse(&text, currency) {
            Ok(money) => {
                prop_assert_eq!(Money::parse(&money.amount_string(), currency), Ok(money));
                prop_assert_eq!(money.amount(), Decimal::from_str(&text).unwrap());
            }
            Err(error) => {
                let significant = fraction_digits.trim_end_matches('0').len() as u32;
                prop_assert!(significant > currency.minor_units());
                prop_assert_eq!(error, MoneyError::TooManyDecimals {
                    currency,
                    max: currency.minor_units(),
                });
            }
        }
    }

    #[test]
    fn parse_never_panics(text in "\\PC{0,40}") {
        let _ = Money::parse(&text, Currency::UAH);
    }
}
