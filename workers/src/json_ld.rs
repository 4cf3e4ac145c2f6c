//! schema.org products in JSON-LD, as shops embed them
//! (`<script type="application/ld+json">`): a document may be one node, an array of
//! nodes or a `@graph`; a `Product`'s `offers` may be one `Offer`, an array, or an
//! `AggregateOffer` with offers of its own; an offer's price may sit in its
//! `priceSpecification` (one or several), next to list or strike-through prices that
//! are not what the product costs.

use std::str::FromStr as _;

use orders_domain::money::Currency;
use orders_domain::order::Availability;
use rust_decimal::Decimal;
use serde_json::Value;

use crate::price_text;

/// One price a page offers the product at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offer {
    pub price: Decimal,
    /// The offer's own `priceCurrency`, when it says.
    pub currency: Option<Currency>,
    pub availability: Availability,
}

/// A `Product` node and its offers.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Product {
    pub name: Option<String>,
    pub offers: Vec<Offer>,
}

/// schema.org's `ItemAvailability`, written as a URL (`https://schema.org/InStock`)
/// or a bare name; anything else is `Unknown`.
pub fn availability(text: &str) -> Availability {
    let name = text
        .trim()
        .rsplit(['/', ':'])
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    match name.as_str() {
        "instock" | "limitedavailability" | "onlineonly" | "instoreonly" => Availability::InStock,
        "outofstock" | "soldout" => Availability::OutOfStock,
        "preorder" | "presale" => Availability::PreOrder,
        "backorder" => Availability::BackOrder,
        "discontinued" => Availability::Discontinued,
        _ => Availability::Unknown,
    }
}

fn types(node: &Value) -> Vec<&str> {
    match node.get("@type") {
        Some(Value::String(kind)) => vec![kind.as_str()],
        Some(Value::Array(kinds)) => kinds.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    }
}

fn is_type(node: &Value, wanted: &str) -> bool {
    types(node)
        .iter()
        .any(|kind| kind.rsplit(['/', ':']).next() == Some(wanted))
}

/// Every node of a document: arrays and `@graph`s are opened.
fn nodes(document: &Value) -> Vec<&Value> {
    let mut found = Vec::new();
    let mut pending = vec![document];
    while let Some(value) = pending.pop() {
        match value {
            Value::Array(items) => pending.extend(items.iter().rev()),
            Value::Object(fields) => {
                found.push(value);
                if let Some(graph) = fields.get("@graph") {
                    pending.push(graph);
                }
            }
            _ => {}
        }
    }
    found
}

fn amount(value: &Value) -> Option<Decimal> {
    match value {
        Value::Number(number) => Decimal::from_str(&number.to_string()).ok(),
        // schema.org asks for a plain decimal with a dot; shops do not always listen.
        Value::String(text) => Decimal::from_str(text.trim())
            .ok()
            .or_else(|| price_text::parse_price(text).ok().map(|price| price.amount)),
        _ => None,
    }
}

fn currency(node: &Value) -> Option<Currency> {
    node.get("priceCurrency")
        .and_then(Value::as_str)
        .and_then(|code| Currency::from_code(code.trim()).ok())
}

/// A price specification that is not what the product costs now.
fn is_reference_price(specification: &Value) -> bool {
    specification
        .get("priceType")
        .and_then(Value::as_str)
        .is_some_and(|kind| {
            let kind = kind.rsplit(['/', ':']).next().unwrap_or_default();
            matches!(
                kind,
                "ListPrice" | "StrikethroughPrice" | "MSRP" | "SRP" | "InvoicePrice"
            )
        })
}

fn offers_of(value: &Value, found: &mut Vec<Offer>) {
    match value {
        Value::Array(items) => items.iter().for_each(|item| offers_of(item, found)),
        Value::Object(_) if is_type(value, "AggregateOffer") => {
            if let Some(nested) = value.get("offers") {
                offers_of(nested, found);
                return;
            }
            let availability = offer_availability(value);
            let low = value.get("lowPrice").and_then(amount);
            let high = value.get("highPrice").and_then(amount);
            for price in [low, high.filter(|high| Some(*high) != low)]
                .into_iter()
                .flatten()
            {
                found.push(Offer {
                    price,
                    currency: currency(value),
                    availability,
                });
            }
        }
        Value::Object(_) => {
            let availability = offer_availability(value);
            if let Some(price) = value.get("price").and_then(amount) {
                found.push(Offer {
                    price,
                    currency: currency(value),
                    availability,
                });
                return;
            }
            let specifications: Vec<&Value> = match value.get("priceSpecification") {
                Some(Value::Array(items)) => items.iter().collect(),
                Some(single @ Value::Object(_)) => vec![single],
                _ => Vec::new(),
            };
            for specification in specifications {
                if is_reference_price(specification) {
                    continue;
                }
                if let Some(price) = specification.get("price").and_then(amount) {
                    found.push(Offer {
                        price,
                        currency: currency(specification).or_else(|| currency(value)),
                        availability,
                    });
                }
            }
        }
        _ => {}
    }
}

fn offer_availability(offer: &Value) -> Availability {
    offer
        .get("availability")
        .and_then(Value::as_str)
        .map_or(Availability::Unknown, availability)
}

/// The products a JSON-LD document describes, with their offers.
pub fn products_in(document: &Value) -> Vec<Product> {
    nodes(document)
        .into_iter()
        .filter(|node| is_type(node, "Product") || is_type(node, "ProductGroup"))
        .map(|node| {
            let mut offers = Vec::new();
            if let Some(value) = node.get("offers") {
                offers_of(value, &mut offers);
            }
            Product {
                name: node
                    .get("name")
                    .and_then(Value::as_str)
                    .map(|name| name.trim().to_owned()),
                offers,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn offer(price: &str, currency: &str, availability: Availability) -> Offer {
        Offer {
            price: price.parse().unwrap(),
            currency: Some(Currency::from_code(currency).unwrap()),
            availability,
        }
    }

    #[test]
    fn a_product_with_one_offer() {
        let document = json!({
            "@context": "https://schema.org", "@type": "Product", "name": " Kettle 42 ",
            "offers": {"@type": "Offer", "price": "3199.00", "priceCurrency": "UAH",
                       "availability": "https://schema.org/InStock"}
        });
        assert_eq!(
            products_in(&document),
            [Product {
                name: Some("Kettle 42".to_owned()),
                offers: vec![offer("3199.00", "UAH", Availability::InStock)],
            }]
        );
    }

    #[test]
    fn a_graph_with_nested_offers_and_numbers() {
        let document = json!({"@context": "https://schema.org", "@graph": [
            {"@type": "WebPage", "name": "Shop"},
            {"@type": ["Product", "Thing"], "name": "Lamp",
             "offers": {"@type": "AggregateOffer", "lowPrice": 10, "highPrice": 12,
                        "offers": [
                            {"@type": "Offer", "price": 1299.5, "priceCurrency": "EUR",
                             "availability": "http://schema.org/OutOfStock"},
                            {"@type": "Offer", "price": "1 299,50", "priceCurrency": "EUR",
                             "availability": "PreOrder"}]}}
        ]});
        let products = products_in(&document);
        assert_eq!(products.len(), 1);
        assert_eq!(
            products[0].offers,
            [
                offer("1299.5", "EUR", Availability::OutOfStock),
                offer("1299.50", "EUR", Availability::PreOrder)
            ]
        );
    }

    #[test]
    fn a_price_specification_beside_a_list_price() {
        let document = json!([{"@type": "Product", "offers": [{"@type": "Offer",
        "availability": "https://schema.org/BackOrder",
        "priceSpecification": [
            {"@type": "UnitPriceSpecification", "price": "1499.00", "priceCurrency": "UAH",
             "priceType": "https://schema.org/StrikethroughPrice"},
            {"@type": "UnitPriceSpecification", "price": "1299.00", "priceCurrency": "UAH"}
        ]}]}]);
        assert_eq!(
            products_in(&document)[0].offers,
            [offer("1299.00", "UAH", Availability::BackOrder)]
        );
    }

    #[test]
    fn an_aggregate_offer_with_a_range_gives_both_ends() {
        let range = json!({"@type": "Product", "offers": {"@type": "AggregateOffer",
            "lowPrice": "100.00", "highPrice": "120.00", "priceCurrency": "USD"}});
        assert_eq!(products_in(&range)[0].offers.len(), 2);
        let single = json!({"@type": "Product", "offers": {"@type": "AggregateOffer",
            "lowPrice": "100.00", "highPrice": "100.00", "priceCurrency": "USD"}});
        assert_eq!(
            products_in(&single)[0].offers,
            [offer("100.00", "USD", Availability::Unknown)]
        );
    }

    #[test]
    fn availability_names_and_urls() {
        for (text, expected) in [
            ("https://schema.org/InStock", Availability::InStock),
            ("http://schema.org/SoldOut", Availability::OutOfStock),
            ("schema:Discontinued", Availability::Discontinued),
            ("PreSale", Availability::PreOrder),
            ("in stock", Availability::Unknown),
            ("", Availability::Unknown),
        ] {
            assert_eq!(availability(text), expected, "{text:?}");
        }
    }

    #[test]
    fn nothing_that_is_not_a_product() {
        let document = json!({"@type": "Organization", "name": "Shop",
                              "offers": {"@type": "Offer", "price": "1"}});
        assert!(products_in(&document).is_empty());
        assert!(products_in(&json!("not an object")).is_empty());
    }
}
