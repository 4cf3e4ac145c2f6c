//! Reading a price written for people, as shops print it: `1 299,00 ₴`, `3 200 грн`,
//! `€1.299,95`, `$1,299.99`, `1.299,-`, `CHF 1'299.50`, `12,99 zł`.
//!
//! **Separators.** Spaces (also no-break and thin ones) and apostrophes only ever
//! group thousands, so they are taken only before a group of exactly three digits.
//! When a number has both `.` and `,`, the last one is the decimal mark. When it has
//! one of them several times, they group thousands. Once: it groups thousands when
//! exactly three digits follow a first group of one to three digits that does not
//! start with 0 (`1.299` and `$1,299` are 1299, as shops mean them), and it is the
//! decimal mark otherwise (`12,99`, `2879.2`, `0.299`). `,-` or `.-` after a number
//! says it has no minor units (`1.299,-`).
//!
//! **Currency.** ISO codes written in capitals (`UAH`, `CHF`), symbols (`₴`, `€`, `£`,
//! `$`, `zł`, ...) and the words shops use (`грн`). A marker that names several
//! currencies (`kr`) names none, and so do two markers that disagree.

use orders_domain::money::Currency;
use rust_decimal::Decimal;

/// A price read from text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PriceText {
    pub amount: Decimal,
    /// What the text says the currency is, if it says.
    pub currency: Option<Currency>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PriceTextError {
    #[error("no number in {0:?}")]
    NoNumber(String),
    #[error("more than one amount in {0:?}")]
    SeveralAmounts(String),
}

/// Characters that group thousands (and only that).
fn is_group_separator(c: char) -> bool {
    matches!(
        c,
        ' ' | '\u{a0}' | '\u{202f}' | '\u{2009}' | '\u{2007}' | '\'' | '\u{2019}'
    )
}

/// Reads the one amount in `text`, and its currency if the text names one. Equal
/// amounts written twice (`2879.2` and `2879.20`) are one amount.
pub fn parse_price(text: &str) -> Result<PriceText, PriceTextError> {
    let shown = || text.chars().take(80).collect::<String>();
    let mut amounts = amounts_in(text);
    amounts.sort();
    amounts.dedup();
    match amounts.as_slice() {
        [] => Err(PriceTextError::NoNumber(shown())),
        [amount] => Ok(PriceText {
            amount: amount.normalize(),
            currency: currency_in(text),
        }),
        _ => Err(PriceTextError::SeveralAmounts(shown())),
    }
}

/// Every amount written in `text`, in order.
pub fn amounts_in(text: &str) -> Vec<Decimal> {
    let chars: Vec<char> = text.chars().collect();
    let mut amounts = Vec::new();
    let mut at = 0;
    while at < chars.len() {
        // A number starts at a digit that does not continue a word (`A4` is no price;
        // currency signs are not letters, so `₴3199` is one).
        let starts = chars[at].is_ascii_digit() && (at == 0 || !chars[at - 1].is_alphanumeric());
        if !starts {
            at += 1;
            continue;
        }
        let (raw, end) = scan_number(&chars, at);
        if let Some(amount) = interpret(&raw) {
            amounts.push(amount);
        }
        at = end.max(at + 1);
    }
    amounts
}

/// The characters of the number starting at `start` (digits, `.` and `,`, with
/// group separators dropped), and where it ends. A trailing `,-`/`.-` becomes `-`.
fn scan_number(chars: &[char], start: usize) -> (String, usize) {
    let digit_at = |i: usize| chars.get(i).is_some_and(char::is_ascii_digit);
    let mut raw = String::new();
    let mut at = start;
    while at < chars.len() {
        let c = chars[at];
        if c.is_ascii_digit() {
            raw.push(c);
            at += 1;
        } else if is_group_separator(c)
            && (1..=3).all(|offset| digit_at(at + offset))
            && !digit_at(at + 4)
        {
            at += 1;
        } else if (c == '.' || c == ',') && digit_at(at + 1) {
            raw.push(c);
            at += 1;
        } else if (c == '.' || c == ',')
            && matches!(chars.get(at + 1), Some('-' | '–' | '—'))
            && !digit_at(at + 2)
        {
            raw.push('-');
            at += 2;
            break;
        } else {
            break;
        }
    }
    (raw, at)
}

/// Decides which of `.` and `,` is the decimal mark (see the module's comment).
fn interpret(raw: &str) -> Option<Decimal> {
    let raw = raw.strip_suffix('-').unwrap_or(raw);
    let marks: Vec<(usize, char)> = raw
        .char_indices()
        .filter(|(_, c)| *c == '.' || *c == ',')
        .collect();
    let normalized: String = match marks.as_slice() {
        [] => raw.to_owned(),
        [(index, _)] => {
            let (whole, fraction) = (&raw[..*index], &raw[index + 1..]);
            let groups_thousands =
                fraction.len() == 3 && (1..=3).contains(&whole.len()) && !whole.starts_with('0');
            if groups_thousands {
                format!("{whole}{fraction}")
            } else {
                format!("{whole}.{fraction}")
            }
        }
        _ => {
            let (last_index, last) = *marks.last()?;
            let same_kind = marks.iter().all(|(_, mark)| *mark == last);
            if same_kind {
                // Several of one kind: thousands, each group of three digits.
                let groups: Vec<&str> = raw.split(last).collect();
                if groups[1..].iter().any(|group| group.len() != 3) {
                    return None;
                }
                groups.concat()
            } else {
                // Both kinds: the last is the decimal mark, the other groups thousands
                // and may not come after it.
                let whole: String = raw[..last_index]
                    .chars()
                    .filter(char::is_ascii_digit)
                    .collect();
                if raw[..last_index].contains(last) {
                    return None;
                }
                format!("{whole}.{}", &raw[last_index + 1..])
            }
        }
    };
    normalized.parse::<Decimal>().ok()
}

/// The currency `text` names, if exactly one.
pub fn currency_in(text: &str) -> Option<Currency> {
    let mut found: Option<Currency> = None;
    let mut conflicting = false;
    let mut note = |currency: Option<Currency>| match (found, currency) {
        (_, None) => conflicting = true,
        (None, Some(currency)) => found = Some(currency),
        (Some(previous), Some(currency)) if previous != currency => conflicting = true,
        _ => {}
    };
    let lower = text.to_lowercase();
    // Markers that name one currency, longest first so `us$` is not read as `$`.
    const MARKERS: &[(&str, &str)] = &[
        ("us$", "USD"),
        ("c$", "CAD"),
        ("a$", "AUD"),
        ("r$", "BRL"),
        ("hk$", "HKD"),
        ("nz$", "NZD"),
        ("s$", "SGD"),
        ("₴", "UAH"),
        ("грн", "UAH"),
        ("€", "EUR"),
        ("£", "GBP"),
        ("zł", "PLN"),
        ("kč", "CZK"),
        ("₸", "KZT"),
        ("₺", "TRY"),
        ("₹", "INR"),
        ("₩", "KRW"),
        ("₪", "ILS"),
        ("¥", "JPY"),
        ("lei", "RON"),
    ];
    let mut rest = lower.clone();
    for (marker, code) in MARKERS {
        if rest.contains(marker) {
            note(Currency::from_code(code).ok());
            rest = rest.replace(marker, " ");
        }
    }
    if rest.contains('$') {
        note(Currency::from_code("USD").ok());
    }
    // `kr` is the Swedish, Norwegian, Danish and Icelandic crown alike.
    if words(&lower).any(|word| word == "kr" || word == "kr.") {
        note(None);
    }
    if words(text).any(|word| word == "Ft") {
        note(Currency::from_code("HUF").ok());
    }
    for word in words(text) {
        let code = word.trim_matches(|c: char| !c.is_ascii_alphabetic());
        if code.len() == 3 && code.chars().all(|c| c.is_ascii_uppercase()) {
            if let Ok(currency) = Currency::from_code(code) {
                note(Some(currency));
            }
        }
    }
    if conflicting {
        None
    } else {
        found
    }
}

/// Runs of letters (and the marks around them), split at anything else.
fn words(text: &str) -> impl Iterator<Item = &str> {
    text.split(|c: char| c.is_whitespace() || c.is_ascii_digit() || c == ',' || c == ':')
        .filter(|word| !word.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn price(text: &str) -> (String, Option<&'static str>) {
        let parsed = parse_price(text).unwrap_or_else(|error| panic!("{text:?}: {error}"));
        (
            parsed.amount.to_string(),
            parsed.currency.map(|currency| currency.code()),
        )
    }

    #[test]
    fn the_formats_shops_print_are_read() {
        for (text, amount, currency) in [
            ("1 299,00 ₴", "1299", Some("UAH")),
            ("3 200 грн", "3200", Some("UAH")),
            ("Ціна: 3\u{a0}200 грн.", "3200", Some("UAH")),
            ("€1.299,95", "1299.95", Some("EUR")),
            ("$1,299.99", "1299.99", Some("USD")),
            ("1.299,-", "1299", None),
            ("CHF 1'299.50", "1299.5", Some("CHF")),
            ("12,99 zł", "12.99", Some("PLN")),
            ("2879.2", "2879.2", None),
            ("2 879,20\u{202f}UAH", "2879.2", Some("UAH")),
            ("₴3199", "3199", Some("UAH")),
            ("£ 49", "49", Some("GBP")),
            ("USD 15", "15", Some("USD")),
            ("1,5", "1.5", None),
            ("0.299", "0.299", None),
            ("1.299", "1299", None),
            ("$1,299", "1299", Some("USD")),
            ("1.234.567,89 €", "1234567.89", Some("EUR")),
            ("1,234,567.89", "1234567.89", None),
            ("1 234 567", "1234567", None),
            ("199 Kč", "199", Some("CZK")),
            ("US$ 20.00", "20", Some("USD")),
            ("1 990 Ft", "1990", Some("HUF")),
        ] {
            assert_eq!(price(text), (amount.to_owned(), currency), "{text:?}");
        }
    }

    #[test]
    fn a_crown_or_disagreeing_markers_name_no_currency() {
        assert_eq!(price("249 kr").1, None);
        assert_eq!(price("€ 10 USD").1, None);
        assert_eq!(price("12 UAH грн").1, Some("UAH"));
    }

    #[test]
    fn equal_amounts_are_one_price_and_different_ones_are_refused() {
        assert_eq!(price("2879.2 грн / 2879,20 грн").0, "2879.2");
        assert!(matches!(
            parse_price("1 500 грн 1 299 грн"),
            Err(PriceTextError::SeveralAmounts(_))
        ));
        assert!(matches!(
            parse_price("Ціна за запитом"),
            Err(PriceTextError::NoNumber(_))
        ));
    }

    #[test]
    fn spaces_group_only_whole_thousands() {
        // "12 99" is two numbers, not 1299.
        assert_eq!(amounts_in("12 99").len(), 2);
        assert_eq!(amounts_in("A4 paper, 500 sheets"), vec![Decimal::from(500)]);
    }

    /// `whole` with its thousands grouped by `group`, and `cents` after `mark`.
    fn written(whole: u64, cents: u32, group: &str, mark: &str) -> String {
        let digits = whole.to_string();
        let mut grouped = String::new();
        for (index, digit) in digits.chars().enumerate() {
            if index > 0 && (digits.len() - index) % 3 == 0 {
                grouped.push_str(group);
            }
            grouped.push(digit);
        }
        format!("{grouped}{mark}{cents:02}")
    }

    proptest::proptest! {
        #[test]
        fn an_amount_written_in_any_shop_style_reads_back(
            whole in 0_u64..10_000_000_000,
            cents in 0_u32..100,
            style in 0_usize..5,
        ) {
            let (group, mark) = [
                (" ", ","),        // 1 299,00 (Ukrainian, French)
                (".", ","),        // 1.299,00 (German)
                (",", "."),        // 1,299.00 (US)
                ("'", "."),        // 1'299.00 (Swiss)
                ("\u{a0}", ","),  // with a no-break space
            ][style];
            let text = written(whole, cents, group, mark);
            let expected = Decimal::from(whole) + Decimal::new(i64::from(cents), 2);
            proptest::prop_assert_eq!(parse_price(&text).unwrap().amount, expected.normalize());
        }
    }
}
