//! What a product page says the product costs. Extractors are tried in order of how
//! much a page means what it says: schema.org JSON-LD, microdata, OpenGraph /
//! `product:price:*` meta, the order's own CSS selector, and common price markup as
//! a last resort. The first that finds prices decides: one price (equal amounts
//! written differently are one) is the answer; several different ones are
//! *ambiguous*, listed, never guessed between.
//!
//! Parsing is synchronous and owns nothing borrowed from the document afterwards
//! (scraper's `Html` is not `Send`).

use std::collections::BTreeSet;

use orders_domain::money::{Currency, Money};
use orders_domain::order::Availability;
use rust_decimal::Decimal;
use scraper::{ElementRef, Html, Selector};

use crate::{json_ld, price_text};

/// The outcome of reading a page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Ok,
    Ambiguous,
    Failed,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Ambiguous => "ambiguous",
            Status::Failed => "failed",
        }
    }
}

/// One price an extractor found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub price: Decimal,
    pub currency: Option<Currency>,
    pub extractor: &'static str,
}

impl Candidate {
    /// The amount as text, at the currency's minor units when it is known
    /// (`3199.00`), as written otherwise.
    pub fn price_text(&self) -> String {
        self.currency
            .and_then(|currency| Money::new(self.price, currency).ok())
            .map_or_else(
                || self.price.normalize().to_string(),
                |money| money.amount_string(),
            )
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extraction {
    pub status: Status,
    /// Set when `status` is `Ok`.
    pub price: Option<Candidate>,
    pub availability: Availability,
    pub title: Option<String>,
    /// Which extractor answered (also for an ambiguous answer).
    pub extractor: Option<&'static str>,
    /// Every different price the deciding extractor found.
    pub candidates: Vec<Candidate>,
    pub reason: Option<String>,
}

impl Extraction {
    /// The brief's `orders scrape` object.
    pub fn to_json(&self) -> serde_json::Value {
        let candidates: Vec<serde_json::Value> = self
            .candidates
            .iter()
            .map(|candidate| {
                serde_json::json!({
                    "price": candidate.price_text(),
                    "currency": candidate.currency.map(|currency| currency.code()),
                    "extractor": candidate.extractor,
                })
            })
            .collect();
        serde_json::json!({
            "status": self.status.as_str(),
            "price": self.price.as_ref().map(Candidate::price_text),
            "currency": self.price.as_ref().and_then(|price| price.currency).map(|currency| currency.code()),
            "availability": self.availability.as_str(),
            "title": self.title,
            "extractor": self.extractor,
            "candidates": candidates,
            "reason": self.reason,
        })
    }
}

fn selector(css: &str) -> Selector {
    Selector::parse(css).expect("a valid built-in selector")
}

fn text_of(element: ElementRef<'_>) -> String {
    element.text().collect::<Vec<_>>().join(" ")
}

/// What one extractor found.
#[derive(Default)]
struct Found {
    candidates: Vec<Candidate>,
    availability: Option<Availability>,
    title: Option<String>,
}

fn from_json_ld(document: &Html) -> Found {
    let mut found = Found::default();
    for script in document.select(&selector(r#"script[type="application/ld+json"]"#)) {
        let Ok(value) = serde_json::from_str::<serde_json::Value>(&text_of(script)) else {
            continue;
        };
        for product in json_ld::products_in(&value) {
            found.title = found.title.or(product.name);
            for offer in product.offers {
                if offer.availability != Availability::Unknown {
                    found.availability.get_or_insert(offer.availability);
                }
                found.candidates.push(Candidate {
                    price: offer.price,
                    currency: offer.currency,
                    extractor: "json-ld",
                });
            }
        }
    }
    found
}

fn from_microdata(document: &Html) -> Found {
    let mut found = Found::default();
    let currency = document
        .select(&selector(r#"[itemprop="priceCurrency"]"#))
        .find_map(|element| {
            let code = element
                .value()
                .attr("content")
                .map(str::to_owned)
                .unwrap_or_else(|| text_of(element));
            Currency::from_code(code.trim()).ok()
        });
    for element in document.select(&selector(r#"[itemprop="price"]"#)) {
        let written = element
            .value()
            .attr("content")
            .map(str::to_owned)
            .unwrap_or_else(|| text_of(element));
        if let Ok(price) = price_text::parse_price(&written) {
            found.candidates.push(Candidate {
                price: price.amount,
                currency: currency.or(price.currency),
                extractor: "microdata",
            });
        }
    }
    found.availability = document
        .select(&selector(r#"[itemprop="availability"]"#))
        .find_map(|element| {
            let value = element
                .value()
                .attr("href")
                .or_else(|| element.value().attr("content"))?;
            Some(json_ld::availability(value)).filter(|a| *a != Availability::Unknown)
        });
    found.title = document
        .select(&selector(r#"[itemprop="name"]"#))
        .next()
        .map(|element| text_of(element).trim().to_owned());
    found
}

fn meta(document: &Html, names: &[&str]) -> Option<String> {
    names.iter().find_map(|name| {
        document
            .select(&selector(&format!(
                r#"meta[property="{name}"], meta[name="{name}"]"#
            )))
            .find_map(|element| element.value().attr("content"))
            .map(|content| content.trim().to_owned())
    })
}

fn from_meta(document: &Html) -> Found {
    let mut found = Found::default();
    let currency = meta(document, &["product:price:currency", "og:price:currency"])
        .and_then(|code| Currency::from_code(&code).ok());
    if let Some(amount) = meta(document, &["product:price:amount", "og:price:amount"]) {
        if let Ok(price) = price_text::parse_price(&amount) {
            found.candidates.push(Candidate {
                price: price.amount,
                currency: currency.or(price.currency),
                extractor: "opengraph",
            });
        }
    }
    found.availability = meta(document, &["product:availability", "og:availability"]).map(|text| {
        match text
            .to_ascii_lowercase()
            .replace([' ', '_', '-'], "")
            .as_str()
        {
            "instock" | "available" => Availability::InStock,
            "oos" | "outofstock" => Availability::OutOfStock,
            "pending" | "preorder" => Availability::PreOrder,
            "backorder" => Availability::BackOrder,
            "discontinued" => Availability::Discontinued,
            _ => Availability::Unknown,
        }
    });
    found
}

/// Candidates from the text of the elements `css` selects.
fn from_elements(document: &Html, css: &Selector, extractor: &'static str) -> Found {
    let mut found = Found::default();
    for element in document.select(css) {
        let text = text_of(element);
        if let Ok(price) = price_text::parse_price(&text) {
            found.candidates.push(Candidate {
                price: price.amount,
                currency: price.currency,
                extractor,
            });
        }
    }
    found
}

/// Common price markup: elements whose class names a price, leaving out the
/// previous, regular or crossed-out ones (by class, or inside `<del>`, `<s>`).
fn from_markup(document: &Html) -> Found {
    let css = selector(
        r#"[class*="price"]:not([class*="old"]):not([class*="was"]):not([class*="regular"]):not([class*="strike"]):not([class*="before"]):not([class*="compare"])"#,
    );
    let mut found = Found::default();
    for element in document.select(&css) {
        // Only the innermost: a price box and the amount inside it are one price.
        if element.select(&css).nth(1).is_some() {
            continue;
        }
        // A struck-out price is the one the product no longer costs.
        let struck = |name: &str| matches!(name, "del" | "s" | "strike");
        if struck(element.value().name())
            || element.ancestors().any(|node| {
                node.value()
                    .as_element()
                    .is_some_and(|ancestor| struck(ancestor.name()))
            })
        {
            continue;
        }
        if let Ok(price) = price_text::parse_price(&text_of(element)) {
            // The currency may sit in an element of its own beside the amount.
            let currency = price.currency.or_else(|| {
                element
                    .parent()
                    .and_then(ElementRef::wrap)
                    .and_then(|parent| price_text::currency_in(&text_of(parent)))
            });
            found.candidates.push(Candidate {
                price: price.amount,
                currency,
                extractor: "markup",
            });
        }
    }
    found
}

/// Equal prices once (`2879.2` and `2879.20` UAH are one), in the order found.
fn distinct(candidates: Vec<Candidate>) -> Vec<Candidate> {
    let mut seen = BTreeSet::new();
    candidates
        .into_iter()
        .filter(|candidate| {
            seen.insert((
                candidate.price.normalize().to_string(),
                candidate.currency.map(|currency| currency.code()),
            ))
        })
        .collect()
}

/// Reads a page. `own_selector` is the order's CSS selector for the price, if any;
/// a selector that does not parse is reported, not ignored.
pub fn extract(html: &str, own_selector: Option<&str>) -> Extraction {
    let document = Html::parse_document(html);
    let title = meta(&document, &["og:title"]).or_else(|| {
        document
            .select(&selector("title"))
            .next()
            .map(|element| text_of(element).trim().to_owned())
            .filter(|title| !title.is_empty())
    });
    let own = match own_selector.map(Selector::parse) {
        Some(Ok(parsed)) => Some(parsed),
        Some(Err(error)) => {
            return Extraction {
                status: Status::Failed,
                price: None,
                availability: Availability::Unknown,
                title,
                extractor: None,
                candidates: Vec::new(),
                reason: Some(format!("the order's selector is not valid CSS: {error}")),
            }
        }
        None => None,
    };
    let mut availability = None;
    let extractors: [&dyn Fn(&Html) -> Found; 5] = [
        &from_json_ld,
        &from_microdata,
        &from_meta,
        &|document: &Html| match &own {
            Some(own) => from_elements(document, own, "selector"),
            None => Found::default(),
        },
        &from_markup,
    ];
    for extractor in extractors {
        let found = extractor(&document);
        availability = availability.or(found.availability);
        let candidates = distinct(found.candidates);
        let title = found
            .title
            .filter(|t| !t.is_empty())
            .or_else(|| title.clone());
        match candidates.as_slice() {
            [] => continue,
            [one] => {
                return Extraction {
                    status: Status::Ok,
                    price: Some(one.clone()),
                    availability: availability.unwrap_or_default(),
                    title,
                    extractor: Some(one.extractor),
                    candidates,
                    reason: None,
                }
            }
            [first, ..] => {
                return Extraction {
                    status: Status::Ambiguous,
                    price: None,
                    availability: availability.unwrap_or_default(),
                    title,
                    extractor: Some(first.extractor),
                    reason: Some(format!(
                        "{} different prices and nothing says which is the product's",
                        candidates.len()
                    )),
                    candidates,
                }
            }
        }
    }
    Extraction {
        status: Status::Failed,
        price: None,
        availability: availability.unwrap_or_default(),
        title,
        extractor: None,
        candidates: Vec::new(),
        reason: Some("no price found on the page".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(head: &str, body: &str) -> String {
        format!("<!doctype html><html><head><title>Shop page</title>{head}</head><body>{body}</body></html>")
    }

    #[test]
    fn json_ld_answers_first_with_the_offers_currency_and_availability() {
        let html = page(
            r#"<script type="application/ld+json">{"@context":"https://schema.org","@type":"Product",
               "name":"Чайник 42","offers":{"@type":"Offer","price":"3199","priceCurrency":"UAH",
               "availability":"https://schema.org/InStock"}}</script>
               <meta property="product:price:amount" content="1.00">"#,
            r#"<span class="price">3 199 грн</span>"#,
        );
        let extraction = extract(&html, None);
        assert_eq!(extraction.status, Status::Ok);
        assert_eq!(extraction.extractor, Some("json-ld"));
        assert_eq!(
            extraction.to_json(),
            serde_json::json!({
                "status": "ok", "price": "3199.00", "currency": "UAH", "availability": "InStock",
                "title": "Чайник 42", "extractor": "json-ld",
                "candidates": [{"price": "3199.00", "currency": "UAH", "extractor": "json-ld"}],
                "reason": null
            })
        );
    }

    #[test]
    fn microdata_then_meta_then_markup() {
        let microdata = page(
            "",
            r#"<div itemscope itemtype="https://schema.org/Product"><h1 itemprop="name">Lamp</h1>
               <div itemprop="offers" itemscope itemtype="https://schema.org/Offer">
               <meta itemprop="priceCurrency" content="EUR"><span itemprop="price" content="1299.95">1.299,95 €</span>
               <link itemprop="availability" href="https://schema.org/OutOfStock"></div></div>"#,
        );
        let extraction = extract(&microdata, None);
        assert_eq!(extraction.extractor, Some("microdata"));
        assert_eq!(extraction.to_json()["price"], "1299.95");
        assert_eq!(extraction.to_json()["currency"], "EUR");
        assert_eq!(extraction.availability, Availability::OutOfStock);
        assert_eq!(extraction.title.as_deref(), Some("Lamp"));

        let opengraph = page(
            r#"<meta property="og:title" content="Chair"><meta property="product:price:amount" content="49.90">
               <meta property="product:price:currency" content="PLN">"#,
            "",
        );
        let extraction = extract(&opengraph, None);
        assert_eq!(
            (extraction.extractor, extraction.to_json()["price"].clone()),
            (Some("opengraph"), serde_json::json!("49.90"))
        );
        assert_eq!(extraction.title.as_deref(), Some("Chair"));

        let markup = page(
            "",
            r#"<div class="product-price"><span class="price-old">1 500 грн</span>
               <span class="price-current">1 299 грн</span></div>"#,
        );
        let extraction = extract(&markup, None);
        assert_eq!(extraction.status, Status::Ok, "{extraction:?}");
        assert_eq!(extraction.extractor, Some("markup"));
        assert_eq!(extraction.to_json()["price"], "1299.00");
    }

    #[test]
    fn the_orders_selector_reads_what_nothing_else_understands() {
        let html = page(
            "",
            r#"<p id="cost">Ціна: 2 879,20 ₴</p><p>Доставка 50 ₴</p>"#,
        );
        assert_eq!(extract(&html, None).status, Status::Failed);
        let extraction = extract(&html, Some("#cost"));
        assert_eq!(extraction.extractor, Some("selector"));
        assert_eq!(extraction.to_json()["price"], "2879.20");
        let bad = extract(&html, Some("p[[["));
        assert_eq!(bad.status, Status::Failed);
        assert!(bad.reason.unwrap().contains("not valid CSS"));
    }

    #[test]
    fn different_prices_are_ambiguous_and_equal_ones_are_not() {
        let two = page(
            "",
            r#"<span class="price">1 299 грн</span><span class="price">999 грн</span>"#,
        );
        let extraction = extract(&two, None);
        assert_eq!(extraction.status, Status::Ambiguous);
        assert_eq!(extraction.price, None);
        assert_eq!(extraction.candidates.len(), 2);

        let same = page(
            "",
            r#"<span class="price">2879.2 UAH</span><span class="price">2879.20 UAH</span>"#,
        );
        let extraction = extract(&same, None);
        assert_eq!(extraction.status, Status::Ok);
        assert_eq!(extraction.candidates.len(), 1);
    }

    #[test]
    fn a_page_without_a_price_fails_with_a_reason_and_unknown_availability() {
        let extraction = extract(&page("", "<h1>Access denied</h1>"), None);
        assert_eq!(extraction.status, Status::Failed);
        assert_eq!(extraction.availability, Availability::Unknown);
        assert_eq!(extraction.to_json()["price"], serde_json::Value::Null);
        assert!(extraction.reason.is_some());
    }
}
