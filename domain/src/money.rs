//! Money: a decimal amount with an ISO 4217 currency, never a float.
//!
//! A [`Money`] is always valid: not negative, below [`MAX_AMOUNT_INTEGER_DIGITS`]
//! digits before the decimal point, and with no more decimal places than its
//! currency has minor units (UAH has 2, JPY 0, KWD 3). It keeps its amount at exactly
//! the currency's number of minor units, so `12.3` UAH is `12.30` UAH everywhere it is
//! shown or stored. JSON carries the amount as a string (`{"amount": "3199.00",
//! "currency": "UAH"}`) so no JSON reader ever turns it into a float.
//!
//! Deserialising re-validates. Because events are kept forever, the currency table
//! only ever grows: a code that ISO retires stays in it, or old events would no
//! longer load.

use std::fmt;
use std::str::FromStr;

use rust_decimal::Decimal;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Amounts must stay below `10^15` (a quadrillion) in any currency: far above any
/// real product price, and it keeps every amount exactly representable at the
/// currency's minor units (a `Decimal` holds 28 significant digits).
pub const MAX_AMOUNT_INTEGER_DIGITS: u32 = 15;

/// How much of a rejected input an error message repeats: enough to recognise it,
/// never a whole oversized request body.
const MAX_ECHOED_INPUT_CHARS: usize = 32;

/// Why an amount or currency was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    /// The code is not an active ISO 4217 currency we know.
    #[error("unknown currency code {0:?}: expected a three-letter ISO 4217 code such as UAH, USD or EUR")]
    UnknownCurrency(String),
    /// The amount has more decimal places than the currency has minor units.
    #[error("{currency} amounts have at most {max} decimal places")]
    TooManyDecimals { currency: Currency, max: u32 },
    /// Prices and targets are never negative.
    #[error("an amount of money cannot be negative")]
    Negative,
    /// The text is not a plain decimal number.
    #[error("{0:?} is not an amount: expected digits with an optional decimal point, such as \"3199.00\"")]
    InvalidAmount(String),
    /// The amount has too many digits before the decimal point.
    #[error(
        "the amount is too large: at most {max_integer_digits} digits before the decimal point"
    )]
    TooLarge { max_integer_digits: u32 },
}

/// An active ISO 4217 currency from the built-in table.
///
/// Only the table's entries exist (the fields are private), so a `Currency` always
/// knows its minor units. Serialises as its three-letter code.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Currency {
    code: &'static str,
    minor_units: u32,
}

/// Declares one associated constant per currency and the lookup table from the same
/// list, so the two cannot disagree.
macro_rules! iso_4217_currency_table {
    ($($code:ident => $minor_units:literal, $english_name:literal;)*) => {
        impl Currency {
            $(
                #[doc = $english_name]
                pub const $code: Currency = Currency {
                    code: stringify!($code),
                    minor_units: $minor_units,
                };
            )*
        }

        const KNOWN_CURRENCIES: &[Currency] = &[$(Currency::$code),*];
    };
}

iso_4217_currency_table! {
    AED => 2, "UAE dirham";
    AMD => 2, "Armenian dram";
    ARS => 2, "Argentine peso";
    AUD => 2, "Australian dollar";
    AZN => 2, "Azerbaijani manat";
    BAM => 2, "Bosnia and Herzegovina convertible mark";
    BDT => 2, "Bangladeshi taka";
    BGN => 2, "Bulgarian lev";
    BHD => 3, "Bahraini dinar";
    BRL => 2, "Brazilian real";
    BYN => 2, "Belarusian ruble";
    CAD => 2, "Canadian dollar";
    CHF => 2, "Swiss franc";
    CLP => 0, "Chilean peso";
    CNY => 2, "Chinese yuan renminbi";
    COP => 2, "Colombian peso";
    CZK => 2, "Czech koruna";
    DKK => 2, "Danish krone";
    EGP => 2, "Egyptian pound";
    EUR => 2, "Euro";
    GBP => 2, "Pound sterling";
    GEL => 2, "Georgian lari";
    HKD => 2, "Hong Kong dollar";
    HUF => 2, "Hungarian forint";
    IDR => 2, "Indonesian rupiah";
    ILS => 2, "Israeli new shekel";
    INR => 2, "Indian rupee";
    IQD => 3, "Iraqi dinar";
    ISK => 0, "Icelandic krona";
    JOD => 3, "Jordanian dinar";
    JPY => 0, "Japanese yen";
    KRW => 0, "South Korean won";
    KWD => 3, "Kuwaiti dinar";
    KZT => 2, "Kazakhstani tenge";
    LYD => 3, "Libyan dinar";
    MAD => 2, "Moroccan dirham";
    MDL => 2, "Moldovan leu";
    MKD => 2, "Macedonian denar";
    MXN => 2, "Mexican peso";
    MYR => 2, "Malaysian ringgit";
    NGN => 2, "Nigerian naira";
    NOK => 2, "Norwegian krone";
    NZD => 2, "New Zealand dollar";
    OMR => 3, "Omani rial";
    PEN => 2, "Peruvian sol";
    PHP => 2, "Philippine peso";
    PKR => 2, "Pakistani rupee";
    PLN => 2, "Polish zloty";
    PYG => 0, "Paraguayan guarani";
    QAR => 2, "Qatari riyal";
    RON => 2, "Romanian leu";
    RSD => 2, "Serbian dinar";
    SAR => 2, "Saudi riyal";
    SEK => 2, "Swedish krona";
    SGD => 2, "Singapore dollar";
    THB => 2, "Thai baht";
    TND => 3, "Tunisian dinar";
    TRY => 2, "Turkish lira";
    TWD => 2, "New Taiwan dollar";
    UAH => 2, "Ukrainian hryvnia";
    UGX => 0, "Ugandan shilling";
    USD => 2, "US dollar";
    UZS => 2, "Uzbekistani sum";
    VND => 0, "Vietnamese dong";
    XAF => 0, "Central African CFA franc";
    XOF => 0, "West African CFA franc";
    ZAR => 2, "South African rand";
}

impl Currency {
    /// Looks a currency up by its three-letter code.
    ///
    /// The code is matched case-insensitively (`"uah"` is UAH): people type codes in
    /// any case and no two ISO codes differ only by case. Nothing else is forgiven:
    /// no surrounding spaces, exactly three ASCII letters.
    pub fn from_code(code: &str) -> Result<Currency, MoneyError> {
        let unknown = || MoneyError::UnknownCurrency(truncate_for_message(code));
        if code.len() != 3 || !code.bytes().all(|byte| byte.is_ascii_alphabetic()) {
            return Err(unknown());
        }
        KNOWN_CURRENCIES
            .iter()
            .find(|currency| currency.code.eq_ignore_ascii_case(code))
            .copied()
            .ok_or_else(unknown)
    }

    /// The upper-case three-letter code, e.g. `"UAH"`.
    pub fn code(&self) -> &'static str {
        self.code
    }

    /// How many decimal places an amount in this currency may have.
    pub fn minor_units(&self) -> u32 {
        self.minor_units
    }

    /// Every currency the table knows, in code order.
    pub fn all() -> &'static [Currency] {
        KNOWN_CURRENCIES
    }
}

impl fmt::Debug for Currency {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.code)
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.code)
    }
}

impl FromStr for Currency {
    type Err = MoneyError;

    fn from_str(code: &str) -> Result<Self, Self::Err> {
        Currency::from_code(code)
    }
}

impl Serialize for Currency {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.code)
    }
}

impl<'de> Deserialize<'de> for Currency {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let code = String::deserialize(deserializer)?;
        Currency::from_code(&code).map_err(serde::de::Error::custom)
    }
}

/// A non-negative amount in one currency, kept at the currency's minor units.
///
/// Two values are equal when their currencies are equal and their amounts are
/// numerically equal (`2879.2` and `2879.20` UAH are the same price).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Money {
    amount: Decimal,
    currency: Currency,
}

impl Money {
    /// Checks an amount against the currency's rules.
    ///
    /// Trailing zeros do not count as decimal places (`12.340` UAH is accepted as
    /// `12.34`); `12.345` UAH is refused rather than rounded, because silently
    /// changing a target price would alert at a price the user never asked for.
    pub fn new(amount: Decimal, currency: Currency) -> Result<Money, MoneyError> {
        if amount.is_sign_negative() && !amount.is_zero() {
            return Err(MoneyError::Negative);
        }
        // normalize() drops trailing zeros (and the sign of a negative zero), so the
        // scale left is the number of decimal places that really matter.
        let significant = amount.normalize();
        if significant.scale() > currency.minor_units {
            return Err(MoneyError::TooManyDecimals {
                currency,
                max: currency.minor_units,
            });
        }
        if significant >= Decimal::from(10_u64.pow(MAX_AMOUNT_INTEGER_DIGITS)) {
            return Err(MoneyError::TooLarge {
                max_integer_digits: MAX_AMOUNT_INTEGER_DIGITS,
            });
        }
        let mut at_minor_units = significant;
        // Exact: the value has at most `minor_units` decimals and at most 15 integer
        // digits, well within a Decimal's 28 digits, so nothing is rounded.
        at_minor_units.rescale(currency.minor_units);
        Ok(Money {
            amount: at_minor_units,
            currency,
        })
    }

    /// Parses an amount written as plain decimal digits (`"3199"`, `"3199.5"`,
    /// `"3199.00"`); surrounding whitespace is ignored.
    ///
    /// Stricter than `Decimal::from_str` on purpose: no sign, no exponent, no digit
    /// separators, no bare leading or trailing point. A typo should be refused, not
    /// read as some other number.
    pub fn parse(amount: &str, currency: Currency) -> Result<Money, MoneyError> {
        let trimmed = amount.trim();
        let invalid = || MoneyError::InvalidAmount(truncate_for_message(trimmed));
        if trimmed.starts_with('-') && is_plain_decimal(&trimmed[1..]) {
            return Err(MoneyError::Negative);
        }
        if !is_plain_decimal(trimmed) {
            return Err(invalid());
        }
        let (integer_digits, fraction_digits) = trimmed.split_once('.').unwrap_or((trimmed, ""));
        // Check sizes on the text first, so an absurdly long input is refused with a
        // clear reason instead of overflowing the decimal parser.
        let integer_digits = integer_digits.trim_start_matches('0');
        let fraction_digits = fraction_digits.trim_end_matches('0');
        if integer_digits.len() > MAX_AMOUNT_INTEGER_DIGITS as usize {
            return Err(MoneyError::TooLarge {
                max_integer_digits: MAX_AMOUNT_INTEGER_DIGITS,
            });
        }
        if fraction_digits.len() > currency.minor_units as usize {
            return Err(MoneyError::TooManyDecimals {
                currency,
                max: currency.minor_units,
            });
        }
        let canonical = format!(
            "{}.{}",
            if integer_digits.is_empty() {
                "0"
            } else {
                integer_digits
            },
            if fraction_digits.is_empty() {
                "0"
            } else {
                fraction_digits
            }
        );
        let decimal = Decimal::from_str(&canonical).map_err(|_| invalid())?;
        Money::new(decimal, currency)
    }

    /// Zero in the given currency.
    pub fn zero(currency: Currency) -> Money {
        let mut amount = Decimal::ZERO;
        amount.rescale(currency.minor_units);
        Money { amount, currency }
    }

    /// The amount, always with exactly the currency's number of decimal places.
    pub fn amount(&self) -> Decimal {
        self.amount
    }

    pub fn currency(&self) -> Currency {
        self.currency
    }

    /// More than zero (a target of zero could never be reached by a real price
    /// drop, so targets must be positive).
    pub fn is_positive(&self) -> bool {
        !self.amount.is_zero()
    }

    /// The amount as it is written in JSON: `"3199.00"`.
    /// The amount as people read it: thousands grouped by spaces, exactly the
    /// currency's decimal places, then the ISO code — `3 199.00 UAH`, `12 000 JPY`.
    /// Plain ASCII, so it reads the same in a mail's raw headers and in a log.
    pub fn readable(&self) -> String {
        // `amount()` always has exactly the currency's decimal places.
        let amount = self.amount().to_string();
        let (sign, amount) = match amount.strip_prefix('-') {
            Some(rest) => ("-", rest),
            None => ("", amount.as_str()),
        };
        let (integer_digits, fraction_digits) = match amount.split_once('.') {
            Some((integer_digits, fraction_digits)) => (integer_digits, Some(fraction_digits)),
            None => (amount, None),
        };
        let mut grouped = String::with_capacity(amount.len() + amount.len() / 3 + 8);
        grouped.push_str(sign);
        for (index, digit) in integer_digits.chars().enumerate() {
            let digits_left = integer_digits.len() - index;
            if index > 0 && digits_left % 3 == 0 {
                grouped.push(' ');
            }
            grouped.push(digit);
        }
        if let Some(fraction_digits) = fraction_digits {
            grouped.push('.');
            grouped.push_str(fraction_digits);
        }
        format!("{grouped} {}", self.currency().code())
    }

    pub fn amount_string(&self) -> String {
        self.amount.to_string()
    }

    /// This amount `quantity` times (a purchase line's total): exact, or
    /// `TooLarge` past the largest amount.
    pub fn times(&self, quantity: u32) -> Result<Money, MoneyError> {
        let too_large = MoneyError::TooLarge {
            max_integer_digits: MAX_AMOUNT_INTEGER_DIGITS,
        };
        let product = self
            .amount
            .checked_mul(Decimal::from(quantity))
            .ok_or(too_large.clone())?;
        Money::new(product, self.currency)
    }

    /// The sum of two amounts of one currency (`None` for two currencies), or
    /// `TooLarge` past the largest amount.
    pub fn plus(&self, other: &Money) -> Option<Result<Money, MoneyError>> {
        if self.currency != other.currency {
            return None;
        }
        let too_large = MoneyError::TooLarge {
            max_integer_digits: MAX_AMOUNT_INTEGER_DIGITS,
        };
        Some(match self.amount.checked_add(other.amount) {
            Some(sum) => Money::new(sum, self.currency),
            None => Err(too_large),
        })
    }
}

impl fmt::Display for Money {
    /// `3199.00 UAH`
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{} {}", self.amount, self.currency)
    }
}

/// The JSON shape of [`Money`], in and out.
#[derive(Serialize, Deserialize)]
struct MoneyJson {
    amount: String,
    currency: Currency,
}

impl Serialize for Money {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        MoneyJson {
            amount: self.amount_string(),
            currency: self.currency,
        }
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Money {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let json = MoneyJson::deserialize(deserializer)?;
        Money::parse(&json.amount, json.currency).map_err(serde::de::Error::custom)
    }
}

/// Digits, optionally followed by one point and more digits.
fn is_plain_decimal(text: &str) -> bool {
    let (integer_digits, fraction_digits) = match text.split_once('.') {
        Some((integer_digits, fraction_digits)) => (integer_digits, Some(fraction_digits)),
        None => (text, None),
    };
    let all_digits = |part: &str| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit());
    all_digits(integer_digits) && fraction_digits.is_none_or(all_digits)
}

fn truncate_for_message(input: &str) -> String {
    input.chars().take(MAX_ECHOED_INPUT_CHARS).collect()
}

#[cfg(test)]
mod tests;
