//! The shop pages' templates (`command-api/templates/console/shop_*.html`,
//! `admin_products*.html`, `admin_purchases.html`) and the shapes of what they
//! show, made from the JSON routes' own answers (`ProductRow` through
//! `ProductDetails`' fields, `PurchaseDetails`).

use std::collections::HashMap;

use askama::Template;
use orders_domain::purchase::RejectionReason;
use orders_projectors::query::products::{ProductRow, RETIRED};
use rust_decimal::Decimal;
use uuid::Uuid;

use crate::console::pages::{readable_amount, readable_time, Chrome, Form};
use crate::http::purchases::PurchaseDetails;

/// The statuses a purchase list can be filtered by, in the lifecycle's order.
const STATUSES: [&str; 6] = [
    "pending",
    "confirmed",
    "rejected",
    "cancelled",
    "shipped",
    "delivered",
];

/// A status of the list's filter, and whether it is the one chosen.
#[derive(Debug, Clone)]
pub(super) struct StatusOption {
    pub value: &'static str,
    pub selected: bool,
}

/// The filter's statuses, `chosen` selected.
pub(super) fn status_options(chosen: &str) -> Vec<StatusOption> {
    STATUSES
        .into_iter()
        .map(|value| StatusOption {
            value,
            selected: value == chosen,
        })
        .collect()
}

/// A product as the catalog shows it.
#[derive(Debug, Clone)]
pub(super) struct ProductCard {
    pub id: String,
    pub sku: String,
    pub name: String,
    pub description: String,
    pub price: String,
    pub available: i64,
    pub image_url: Option<String>,
    pub retired: bool,
}

impl From<&ProductRow> for ProductCard {
    fn from(row: &ProductRow) -> Self {
        Self {
            id: row.product_id.to_string(),
            sku: row.sku.clone(),
            name: row.name.clone(),
            description: row.description.clone(),
            price: readable_amount(row.price, &row.currency),
            available: row.available,
            image_url: row.image_url.clone(),
            retired: row.status == RETIRED,
        }
    }
}

#[derive(Template)]
#[template(path = "console/shop_products.html")]
pub(super) struct CatalogPage {
    pub chrome: Chrome,
    pub q: String,
    pub products: Vec<ProductCard>,
    pub next_cursor: Option<String>,
}

#[derive(Template)]
#[template(path = "console/shop_product.html")]
pub(super) struct ProductPage {
    pub chrome: Chrome,
    pub product: ProductCard,
    pub quantity: String,
    pub quantity_error: Option<String>,
    pub form_error: Option<String>,
}

/// A line of the cart: the product as the catalog has it now (the price is
/// confirmed when the stock is reserved).
#[derive(Debug, Clone)]
pub(super) struct CartLine {
    pub product_id: String,
    pub name: String,
    pub sku: String,
    pub unit_price: String,
    pub line_total: String,
    pub quantity: String,
    pub available: i64,
    /// Neither retired nor unknown.
    pub on_sale: bool,
    pub error: Option<String>,
}

#[derive(Template)]
#[template(path = "console/shop_cart.html")]
pub(super) struct CartPage {
    pub chrome: Chrome,
    pub lines: Vec<CartLine>,
    /// The lines' total at today's prices, when they share one currency.
    pub estimated_total: Option<String>,
    /// What the checkout form carries back: the cart as shown.
    pub cart_key: String,
    pub form_error: Option<String>,
    /// The error is that the address is not verified: the page offers the mail.
    pub unverified: bool,
}

/// A purchase as a row of a list.
#[derive(Debug, Clone)]
pub(super) struct PurchaseSummary {
    pub id: String,
    pub owner: String,
    pub placed: String,
    pub status: String,
    pub items: usize,
    pub units: u64,
    pub total: String,
}

impl From<&PurchaseDetails> for PurchaseSummary {
    fn from(purchase: &PurchaseDetails) -> Self {
        Self {
            id: purchase.purchase_id.to_string(),
            owner: purchase.owner_id.to_string(),
            placed: readable_rfc3339(&purchase.placed_at),
            status: purchase.status.clone(),
            items: purchase.lines.len(),
            units: purchase
                .lines
                .iter()
                .map(|line| u64::from(line.quantity))
                .sum(),
            total: total_of(purchase),
        }
    }
}

#[derive(Template)]
#[template(path = "console/shop_purchases.html")]
pub(super) struct PurchasesPage {
    pub chrome: Chrome,
    pub status: String,
    pub statuses: Vec<StatusOption>,
    pub purchases: Vec<PurchaseSummary>,
    pub next_cursor: Option<String>,
}

/// A line of a purchase, named by its product.
#[derive(Debug, Clone)]
pub(super) struct PurchaseLineView {
    pub product_id: String,
    pub name: String,
    pub sku: String,
    pub quantity: u32,
    pub unit_price: String,
    pub line_total: String,
}

/// A step of a purchase's life.
#[derive(Debug, Clone)]
pub(super) struct HistoryLine {
    pub status: String,
    pub when: String,
    pub actor: String,
}

#[derive(Template)]
#[template(path = "console/shop_purchase.html")]
pub(super) struct PurchasePage {
    pub chrome: Chrome,
    pub purchase: PurchaseSummary,
    pub lines: Vec<PurchaseLineView>,
    pub reason: Option<String>,
    pub history: Vec<HistoryLine>,
    pub cancellable: bool,
    pub form_error: Option<String>,
}

impl PurchasePage {
    /// The page of `purchase`, its lines named from `products`, as its buyer sees it.
    pub(super) fn new(
        chrome: Chrome,
        purchase: &PurchaseDetails,
        products: &HashMap<Uuid, ProductRow>,
        form_error: Option<String>,
    ) -> Self {
        let currency = purchase.currency.clone().unwrap_or_default();
        let buyer = format!("user:{}", purchase.owner_id);
        Self {
            chrome,
            purchase: PurchaseSummary::from(purchase),
            lines: purchase
                .lines
                .iter()
                .map(|line| {
                    let product = products.get(&line.product_id);
                    PurchaseLineView {
                        product_id: line.product_id.to_string(),
                        name: product.map_or_else(
                            || "A product no longer in the catalog".to_owned(),
                            |row| row.name.clone(),
                        ),
                        sku: product.map(|row| row.sku.clone()).unwrap_or_default(),
                        quantity: line.quantity,
                        unit_price: amount_or_dash(line.unit_price.as_deref(), &currency),
                        line_total: amount_or_dash(line.line_total.as_deref(), &currency),
                    }
                })
                .collect(),
            reason: purchase
                .reason
                .as_ref()
                .map(|reason| reason_text(reason, products)),
            history: purchase
                .history
                .iter()
                .map(|step| HistoryLine {
                    status: step.status.clone(),
                    when: readable_rfc3339(&step.at),
                    actor: actor_label(step.actor.as_deref(), &buyer),
                })
                .collect(),
            cancellable: ["pending", "confirmed"].contains(&purchase.status.as_str()),
            form_error,
        }
    }
}

/// A product with its stock, as the administrators' list shows it.
#[derive(Debug, Clone)]
pub(super) struct StockLine {
    pub product: ProductCard,
    pub on_hand: i64,
    pub reserved: i64,
    pub updated: String,
}

impl From<&ProductRow> for StockLine {
    fn from(row: &ProductRow) -> Self {
        Self {
            product: ProductCard::from(row),
            on_hand: row.on_hand,
            reserved: row.reserved,
            updated: readable_time(row.updated_at),
        }
    }
}

#[derive(Template)]
#[template(path = "console/admin_products.html")]
pub(super) struct AdminProductsPage {
    pub chrome: Chrome,
    pub is_admin: bool,
    pub q: String,
    pub products: Vec<StockLine>,
    pub next_cursor: Option<String>,
    /// The form that adds a product (administrators only).
    pub form: Form,
}

#[derive(Template)]
#[template(path = "console/admin_products_edit.html")]
pub(super) struct AdminProductPage {
    pub chrome: Chrome,
    pub is_admin: bool,
    pub line: StockLine,
    pub currency: String,
    pub edit: Form,
    pub stock: Form,
    /// Why the retire button was refused.
    pub retire_error: Option<String>,
}

/// A status button of the administrators' purchase list.
#[derive(Debug, Clone)]
pub(super) struct StatusButton {
    pub status: &'static str,
    pub label: &'static str,
    pub class: &'static str,
}

/// The buttons a purchase in `status` has for an administrator.
pub(super) fn status_buttons(status: &str) -> Vec<StatusButton> {
    let ship = StatusButton {
        status: "shipped",
        label: "Ship",
        class: "",
    };
    let deliver = StatusButton {
        status: "delivered",
        label: "Deliver",
        class: "",
    };
    let cancel = StatusButton {
        status: "cancelled",
        label: "Cancel",
        class: "danger",
    };
    match status {
        "pending" => vec![cancel],
        "confirmed" => vec![ship, cancel],
        "shipped" => vec![deliver],
        _ => Vec::new(),
    }
}

/// A purchase as a row of the administrators' list.
#[derive(Debug, Clone)]
pub(super) struct AdminPurchaseLine {
    pub purchase: PurchaseSummary,
    pub buttons: Vec<StatusButton>,
}

#[derive(Template)]
#[template(path = "console/admin_purchases.html")]
pub(super) struct AdminPurchasesPage {
    pub chrome: Chrome,
    pub is_admin: bool,
    pub status: String,
    pub owner: String,
    pub statuses: Vec<StatusOption>,
    pub purchases: Vec<AdminPurchaseLine>,
    pub next_cursor: Option<String>,
    pub filter_error: Option<String>,
    pub form_error: Option<String>,
}

/// An RFC 3339 time of the JSON answers as people read it.
fn readable_rfc3339(text: &str) -> String {
    chrono::DateTime::parse_from_rfc3339(text).map_or_else(
        |_| text.to_owned(),
        |time| readable_time(time.with_timezone(&chrono::Utc)),
    )
}

/// An amount of the JSON answers (`"29.99"`) as people read it, `–` for none.
fn amount_or_dash(amount: Option<&str>, currency: &str) -> String {
    match amount.map(|text| (text, text.parse::<Decimal>())) {
        Some((_, Ok(amount))) => readable_amount(amount, currency),
        Some((text, Err(_))) => format!("{text} {currency}"),
        None => "–".to_owned(),
    }
}

fn total_of(purchase: &PurchaseDetails) -> String {
    match &purchase.total {
        Some(total) => amount_or_dash(
            Some(total),
            purchase.currency.as_deref().unwrap_or_default(),
        ),
        None => "set when confirmed".to_owned(),
    }
}

/// Who caused a step, as its buyer reads it.
fn actor_label(actor: Option<&str>, buyer: &str) -> String {
    match actor {
        Some(actor) if actor == buyer => "you".to_owned(),
        Some("system:saga") => "the shop (stock reservation)".to_owned(),
        Some(actor) if actor.starts_with("user:") => "an administrator".to_owned(),
        Some(actor) => actor.to_owned(),
        None => "–".to_owned(),
    }
}

/// Why a purchase was rejected, in words, its product named.
fn reason_text(reason: &RejectionReason, products: &HashMap<Uuid, ProductRow>) -> String {
    let name = |product_id: &orders_domain::ids::ProductId| {
        products
            .get(&product_id.as_uuid())
            .map_or_else(|| "a product".to_owned(), |row| row.name.clone())
    };
    match reason {
        RejectionReason::OutOfStock {
            product_id,
            requested,
            available,
        } => format!(
            "Not enough stock of {}: {requested} asked for, {available} left.",
            name(product_id)
        ),
        RejectionReason::UnknownProduct { .. } => {
            "A product of the purchase is not in the catalog.".to_owned()
        }
        RejectionReason::RetiredProduct { product_id } => {
            format!("{} is no longer sold.", name(product_id))
        }
        RejectionReason::CurrencyMismatch => {
            "The products are priced in different currencies: buy them separately.".to_owned()
        }
        RejectionReason::TimedOut => {
            "The stock could not be reserved in time. Please try again.".to_owned()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_buttons_follow_the_lifecycle() {
        let labels = |status| {
            status_buttons(status)
                .iter()
                .map(|button| button.label)
                .collect::<Vec<_>>()
        };
        assert_eq!(labels("pending"), ["Cancel"]);
        assert_eq!(labels("confirmed"), ["Ship", "Cancel"]);
        assert_eq!(labels("shipped"), ["Deliver"]);
        assert!(labels("delivered").is_empty());
        assert!(labels("rejected").is_empty());
        assert!(labels("cancelled").is_empty());
    }

    #[test]
    fn actors_are_named_for_the_buyer() {
        let buyer = "user:0192f1a8-0000-7000-8000-000000000001";
        assert_eq!(actor_label(Some(buyer), buyer), "you");
        assert_eq!(
            actor_label(Some("system:saga"), buyer),
            "the shop (stock reservation)"
        );
        assert_eq!(
            actor_label(Some("user:0192f1a8-0000-7000-8000-000000000002"), buyer),
            "an administrator"
        );
        assert_eq!(actor_label(None, buyer), "–");
    }

    #[test]
    fn amounts_of_the_answers_are_read_as_people_read_them() {
        assert_eq!(amount_or_dash(Some("3199.00"), "UAH"), "3 199.00 UAH");
        assert_eq!(amount_or_dash(None, "UAH"), "–");
        assert_eq!(
            readable_rfc3339("2026-12-04T17:45:00+00:00"),
            "2026-12-04 17:45 UTC"
        );
    }
}
