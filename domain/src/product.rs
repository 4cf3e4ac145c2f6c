//! The `product` aggregate: one item of our catalog, with its stock and the
//! reservations purchases hold on it.
//!
//! An administrator adds a product (a SKU unique across the catalog, a name, a
//! description, a price, an image), changes it, re-prices it, adjusts its stock with
//! a reason, and retires it (never deleted: its history stays). The purchase saga
//! reserves stock for a purchase, releases it when the purchase is rejected or
//! cancelled, and turns it into shipped stock when the purchase ships.
//!
//! The rule everything else leans on: `reserved <= on_hand`, so `available =
//! on_hand - reserved` never goes below zero. A reservation is granted only from
//! what is available, a stock adjustment never takes `on_hand` below `reserved`, and
//! each purchase holds at most one reservation on a product: a repeated request for
//! the same purchase is answered from the reservation it already holds, so a
//! redelivered saga step reserves nothing twice.
//!
//! Many buyers of one product at once are decided as one batch
//! ([`Product::decide_stock`]), appended with one statement: a flash sale is a
//! handful of appends to the product's stream, not one conflict-and-retry per buyer.

use std::collections::BTreeMap;
use std::fmt;

use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};

use crate::ids::{ProductId, PurchaseId};
use crate::money::{Currency, Money};
use crate::order::ProductUrl;

/// The longest SKU, in characters.
pub const MAX_SKU_CHARS: usize = 64;
/// The longest product name, in characters.
pub const MAX_NAME_CHARS: usize = 200;
/// The longest description, in characters.
pub const MAX_DESCRIPTION_CHARS: usize = 5_000;
/// The longest reason given for a stock adjustment, in characters.
pub const MAX_REASON_CHARS: usize = 500;
/// The most units a product can have on hand.
pub const MAX_STOCK: u64 = 1_000_000_000;

/// A stock-keeping unit: 1 to [`MAX_SKU_CHARS`] letters, digits, `-`, `_` and `.`,
/// starting with a letter or digit. Kept as written; unique across the catalog
/// compared case-insensitively (`KETTLE-42` and `kettle-42` are one SKU).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Sku(String);

/// Why a SKU was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SkuError {
    #[error("the SKU is empty")]
    Empty,
    #[error("the SKU has more than {max} characters")]
    TooLong { max: usize },
    #[error("a SKU has only letters, digits, '-', '_' and '.', and starts with a letter or digit")]
    InvalidCharacters,
}

impl Sku {
    /// Checks user input; surrounding whitespace is trimmed.
    pub fn parse(input: &str) -> Result<Sku, SkuError> {
        let sku = input.trim();
        if sku.is_empty() {
            return Err(SkuError::Empty);
        }
        if sku.chars().count() > MAX_SKU_CHARS {
            return Err(SkuError::TooLong { max: MAX_SKU_CHARS });
        }
        let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
        if !sku.chars().all(allowed) || !sku.starts_with(|c: char| c.is_ascii_alphanumeric()) {
            return Err(SkuError::InvalidCharacters);
        }
        Ok(Sku(sku.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Sku {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.0)
    }
}

impl TryFrom<String> for Sku {
    type Error = SkuError;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        Sku::parse(&text)
    }
}

impl From<Sku> for String {
    fn from(sku: Sku) -> Self {
        sku.0
    }
}

/// What the saga asks of a product for one purchase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StockRequest {
    /// Hold `quantity` units for the purchase at today's price.
    Reserve {
        purchase_id: PurchaseId,
        quantity: u32,
    },
    /// Give back what the purchase holds (it was rejected or cancelled).
    Release { purchase_id: PurchaseId },
    /// The purchase shipped: what it holds leaves the stock.
    Ship { purchase_id: PurchaseId },
}

/// What became of one [`StockRequest`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StockOutcome {
    /// The purchase holds `quantity` units at `unit_price` (reserved now, or
    /// already before: a repeated request).
    Reserved { quantity: u32, unit_price: Money },
    /// Not enough stock: `available` units were left.
    Refused { requested: u32, available: u64 },
    /// No product has this id.
    UnknownProduct,
    /// The product is retired: it cannot be bought any more.
    RetiredProduct,
    /// The purchase's units went back to available stock.
    Released { quantity: u32 },
    /// The purchase's units left the stock.
    Shipped { quantity: u32 },
    /// The purchase holds nothing on this product (never reserved, or already
    /// released or shipped): nothing to do.
    NothingHeld,
}

/// One purchase's reservation on a product.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reservation {
    pub quantity: u32,
    /// The product's price when the stock was reserved: what the buyer pays.
    pub unit_price: Money,
}

/// What can be asked of a product.
#[derive(Debug, Clone, PartialEq)]
pub enum ProductCommand {
    Add {
        product_id: ProductId,
        sku: Sku,
        name: String,
        description: String,
        price: Money,
        image_url: Option<ProductUrl>,
        stock: u64,
    },
    /// Changes what is given (`None`: unchanged); `image_url: Some(None)` removes
    /// the image. A price in another currency is refused.
    Change {
        name: Option<String>,
        description: Option<String>,
        price: Option<Money>,
        image_url: Option<Option<ProductUrl>>,
    },
    /// Adds (positive) or removes (negative) units on hand, with why.
    AdjustStock {
        quantity: i64,
        reason: String,
    },
    Retire,
    /// The saga's requests, decided in order as one batch.
    HandleStock {
        requests: Vec<StockRequest>,
    },
}

/// What happened to a product. The variant names are the stored event types.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ProductEvent {
    ProductAdded {
        product_id: ProductId,
        sku: Sku,
        name: String,
        description: String,
        price: Money,
        image_url: Option<ProductUrl>,
        stock: u64,
    },
    /// The product's descriptive fields after the change (all of them, so a reader
    /// needs no earlier event to know them).
    ProductUpdated {
        name: String,
        description: String,
        image_url: Option<ProductUrl>,
    },
    ProductPriceChanged {
        previous: Money,
        price: Money,
    },
    StockAdjusted {
        /// Signed: units added (positive) or removed (negative).
        quantity: i64,
        reason: String,
        /// Units on hand after the adjustment.
        on_hand: u64,
    },
    ProductRetired,
    StockReserved {
        purchase_id: PurchaseId,
        quantity: u32,
        unit_price: Money,
    },
    ReservationRefused {
        purchase_id: PurchaseId,
        requested: u32,
        available: u64,
    },
    ReservationReleased {
        purchase_id: PurchaseId,
        quantity: u32,
    },
    StockShipped {
        purchase_id: PurchaseId,
        quantity: u32,
    },
}

impl DomainEvent for ProductEvent {
    fn event_type(&self) -> String {
        let event_type = match self {
            ProductEvent::ProductAdded { .. } => "ProductAdded",
            ProductEvent::ProductUpdated { .. } => "ProductUpdated",
            ProductEvent::ProductPriceChanged { .. } => "ProductPriceChanged",
            ProductEvent::StockAdjusted { .. } => "StockAdjusted",
            ProductEvent::ProductRetired => "ProductRetired",
            ProductEvent::StockReserved { .. } => "StockReserved",
            ProductEvent::ReservationRefused { .. } => "ReservationRefused",
            ProductEvent::ReservationReleased { .. } => "ReservationReleased",
            ProductEvent::StockShipped { .. } => "StockShipped",
        };
        event_type.to_owned()
    }

    fn event_version(&self) -> String {
        "1.0".to_owned()
    }
}

/// Why a product command was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProductError {
    #[error("this product has already been added")]
    AlreadyAdded,
    #[error("no such product")]
    NotFound,
    #[error("this product is retired")]
    Retired,
    #[error("the name is empty")]
    NameEmpty,
    #[error("the name has more than {max} characters")]
    NameTooLong { max: usize },
    #[error("the description has more than {max} characters")]
    DescriptionTooLong { max: usize },
    #[error("the price must be more than zero")]
    PriceNotPositive,
    #[error("the price must stay in the product's currency ({currency})")]
    CurrencyChangeNotAllowed { currency: Currency },
    #[error("the stock must be between 0 and {max}")]
    StockOutOfRange { max: u64 },
    #[error("the quantity must not be zero")]
    ZeroAdjustment,
    #[error("a stock adjustment needs a reason of 1 to {max} characters")]
    ReasonInvalid { max: usize },
    #[error(
        "the stock cannot go below what is reserved ({reserved} units reserved, {on_hand} on hand)"
    )]
    BelowReserved { reserved: u64, on_hand: u64 },
}

/// A product's current state, rebuilt from its events.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Product {
    product_id: Option<ProductId>,
    sku: Option<Sku>,
    name: String,
    description: String,
    price: Option<Money>,
    image_url: Option<ProductUrl>,
    on_hand: u64,
    reserved: u64,
    retired: bool,
    /// The reservations held now, one per purchase; released and shipped ones are
    /// gone, so the state stays as small as what is outstanding.
    reservations: BTreeMap<PurchaseId, Reservation>,
}

impl Product {
    pub fn id(&self) -> Option<ProductId> {
        self.product_id
    }

    pub fn is_added(&self) -> bool {
        self.product_id.is_some()
    }

    pub fn sku(&self) -> Option<&Sku> {
        self.sku.as_ref()
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn price(&self) -> Option<Money> {
        self.price
    }

    pub fn is_retired(&self) -> bool {
        self.retired
    }

    pub fn on_hand(&self) -> u64 {
        self.on_hand
    }

    pub fn reserved(&self) -> u64 {
        self.reserved
    }

    /// Units that can still be reserved.
    pub fn available(&self) -> u64 {
        self.on_hand.saturating_sub(self.reserved)
    }

    /// What `purchase_id` holds on this product.
    pub fn reservation(&self, purchase_id: PurchaseId) -> Option<Reservation> {
        self.reservations.get(&purchase_id).copied()
    }

    /// Decides a command: the events to record (possibly none), or why it is refused.
    pub fn decide(&self, command: ProductCommand) -> Result<Vec<ProductEvent>, ProductError> {
        match command {
            ProductCommand::Add {
                product_id,
                sku,
                name,
                description,
                price,
                image_url,
                stock,
            } => {
                if self.is_added() {
                    return Err(ProductError::AlreadyAdded);
                }
                if stock > MAX_STOCK {
                    return Err(ProductError::StockOutOfRange { max: MAX_STOCK });
                }
                Ok(vec![ProductEvent::ProductAdded {
                    product_id,
                    sku,
                    name: checked_name(&name)?,
                    description: checked_description(&description)?,
                    price: checked_price(price)?,
                    image_url,
                    stock,
                }])
            }
            ProductCommand::Change {
                name,
                description,
                price,
                image_url,
            } => self.decide_change(name, description, price, image_url),
            ProductCommand::AdjustStock { quantity, reason } => {
                self.decide_adjustment(quantity, &reason)
            }
            ProductCommand::Retire => {
                self.added_and_not_retired()?;
                Ok(vec![ProductEvent::ProductRetired])
            }
            ProductCommand::HandleStock { requests } => Ok(self.decide_stock(&requests).0),
        }
    }

    fn added_and_not_retired(&self) -> Result<Money, ProductError> {
        let Some(price) = self.price else {
            return Err(ProductError::NotFound);
        };
        if self.retired {
            return Err(ProductError::Retired);
        }
        Ok(price)
    }

    fn decide_change(
        &self,
        name: Option<String>,
        description: Option<String>,
        price: Option<Money>,
        image_url: Option<Option<ProductUrl>>,
    ) -> Result<Vec<ProductEvent>, ProductError> {
        let current_price = self.added_and_not_retired()?;
        let name = match name {
            Some(name) => checked_name(&name)?,
            None => self.name.clone(),
        };
        let description = match description {
            Some(description) => checked_description(&description)?,
            None => self.description.clone(),
        };
        let image_url = image_url.unwrap_or_else(|| self.image_url.clone());
        let mut events = Vec::new();
        if name != self.name || description != self.description || image_url != self.image_url {
            events.push(ProductEvent::ProductUpdated {
                name,
                description,
                image_url,
            });
        }
        if let Some(price) = price {
            if price.currency() != current_price.currency() {
                return Err(ProductError::CurrencyChangeNotAllowed {
                    currency: current_price.currency(),
                });
            }
            let price = checked_price(price)?;
            if price != current_price {
                events.push(ProductEvent::ProductPriceChanged {
                    previous: current_price,
                    price,
                });
            }
        }
        Ok(events)
    }

    fn decide_adjustment(
        &self,
        quantity: i64,
        reason: &str,
    ) -> Result<Vec<ProductEvent>, ProductError> {
        self.added_and_not_retired()?;
        if quantity == 0 {
            return Err(ProductError::ZeroAdjustment);
        }
        let reason = reason.trim();
        if reason.is_empty() || reason.chars().count() > MAX_REASON_CHARS {
            return Err(ProductError::ReasonInvalid {
                max: MAX_REASON_CHARS,
            });
        }
        let on_hand = i128::from(self.on_hand) + i128::from(quantity);
        if on_hand < i128::from(self.reserved) {
            return Err(ProductError::BelowReserved {
                reserved: self.reserved,
                on_hand: self.on_hand,
            });
        }
        let on_hand = u64::try_from(on_hand)
            .ok()
            .filter(|on_hand| *on_hand <= MAX_STOCK)
            .ok_or(ProductError::StockOutOfRange { max: MAX_STOCK })?;
        Ok(vec![ProductEvent::StockAdjusted {
            quantity,
            reason: reason.to_owned(),
            on_hand,
        }])
    }

    /// Decides a batch of the saga's requests in order, each on the state the ones
    /// before it left: the events to append (one statement for the whole batch) and
    /// what became of each request, in the requests' order.
    pub fn decide_stock(
        &self,
        requests: &[StockRequest],
    ) -> (Vec<ProductEvent>, Vec<StockOutcome>) {
        let mut state = self.clone();
        let mut events = Vec::new();
        let mut outcomes = Vec::with_capacity(requests.len());
        for request in requests {
            let (event, outcome) = state.decide_one_stock_request(*request);
            if let Some(event) = event {
                state.apply(event.clone());
                events.push(event);
            }
            outcomes.push(outcome);
        }
        (events, outcomes)
    }

    fn decide_one_stock_request(
        &self,
        request: StockRequest,
    ) -> (Option<ProductEvent>, StockOutcome) {
        let Some(price) = self.price else {
            let outcome = match request {
                StockRequest::Reserve { .. } => StockOutcome::UnknownProduct,
                StockRequest::Release { .. } | StockRequest::Ship { .. } => {
                    StockOutcome::NothingHeld
                }
            };
            return (None, outcome);
        };
        match request {
            StockRequest::Reserve {
                purchase_id,
                quantity,
            } => {
                if let Some(held) = self.reservations.get(&purchase_id) {
                    // Asked again (a redelivered step): the purchase keeps what it has.
                    let outcome = StockOutcome::Reserved {
                        quantity: held.quantity,
                        unit_price: held.unit_price,
                    };
                    return (None, outcome);
                }
                if self.retired {
                    return (None, StockOutcome::RetiredProduct);
                }
                let available = self.available();
                if u64::from(quantity) > available || quantity == 0 {
                    let event = ProductEvent::ReservationRefused {
                        purchase_id,
                        requested: quantity,
                        available,
                    };
                    let outcome = StockOutcome::Refused {
                        requested: quantity,
                        available,
                    };
                    return (Some(event), outcome);
                }
                let event = ProductEvent::StockReserved {
                    purchase_id,
                    quantity,
                    unit_price: price,
                };
                let outcome = StockOutcome::Reserved {
                    quantity,
                    unit_price: price,
                };
                (Some(event), outcome)
            }
            StockRequest::Release { purchase_id } => match self.reservations.get(&purchase_id) {
                Some(held) => (
                    Some(ProductEvent::ReservationReleased {
                        purchase_id,
                        quantity: held.quantity,
                    }),
                    StockOutcome::Released {
                        quantity: held.quantity,
                    },
                ),
                None => (None, StockOutcome::NothingHeld),
            },
            StockRequest::Ship { purchase_id } => match self.reservations.get(&purchase_id) {
                Some(held) => (
                    Some(ProductEvent::StockShipped {
                        purchase_id,
                        quantity: held.quantity,
                    }),
                    StockOutcome::Shipped {
                        quantity: held.quantity,
                    },
                ),
                None => (None, StockOutcome::NothingHeld),
            },
        }
    }

    /// A fixed history that uses every event variant, for fingerprinting what
    /// `apply` makes of events: snapshots of products are keyed by a digest of the
    /// state this history folds into (as orders' are).
    pub fn fingerprint_history() -> Vec<ProductEvent> {
        let usd = |cents: i64| {
            Money::new(rust_decimal::Decimal::new(cents, 2), Currency::USD)
                .expect("a valid USD amount")
        };
        let id = |n: u128| uuid::Uuid::from_u128(0x0192_f1a8_0000_7000_8000_0000_0000_0000 + n);
        vec![
            ProductEvent::ProductAdded {
                product_id: ProductId::from_uuid(id(1)),
                sku: Sku::parse("KETTLE-42").expect("a valid SKU"),
                name: "Kettle".to_owned(),
                description: "Boils water".to_owned(),
                price: usd(2_999),
                image_url: None,
                stock: 10,
            },
            ProductEvent::ProductUpdated {
                name: "Kettle 2".to_owned(),
                description: "Boils water fast".to_owned(),
                image_url: Some(
                    ProductUrl::parse("https://img.example/k.png").expect("a valid URL"),
                ),
            },
            ProductEvent::StockReserved {
                purchase_id: PurchaseId::from_uuid(id(2)),
                quantity: 2,
                unit_price: usd(2_999),
            },
            ProductEvent::StockReserved {
                purchase_id: PurchaseId::from_uuid(id(3)),
                quantity: 1,
                unit_price: usd(2_999),
            },
            ProductEvent::ProductPriceChanged {
                previous: usd(2_999),
                price: usd(2_499),
            },
            ProductEvent::ReservationRefused {
                purchase_id: PurchaseId::from_uuid(id(4)),
                requested: 9,
                available: 7,
            },
            ProductEvent::ReservationReleased {
                purchase_id: PurchaseId::from_uuid(id(2)),
                quantity: 2,
            },
            ProductEvent::StockShipped {
                purchase_id: PurchaseId::from_uuid(id(3)),
                quantity: 1,
            },
            ProductEvent::StockAdjusted {
                quantity: -3,
                reason: "damaged".to_owned(),
                on_hand: 6,
            },
            ProductEvent::ProductRetired,
        ]
    }
}

fn checked_name(name: &str) -> Result<String, ProductError> {
    let name = name.trim();
    if name.is_empty() {
        return Err(ProductError::NameEmpty);
    }
    if name.chars().count() > MAX_NAME_CHARS {
        return Err(ProductError::NameTooLong {
            max: MAX_NAME_CHARS,
        });
    }
    Ok(name.to_owned())
}

fn checked_description(description: &str) -> Result<String, ProductError> {
    let description = description.trim();
    if description.chars().count() > MAX_DESCRIPTION_CHARS {
        return Err(ProductError::DescriptionTooLong {
            max: MAX_DESCRIPTION_CHARS,
        });
    }
    Ok(description.to_owned())
}

fn checked_price(price: Money) -> Result<Money, ProductError> {
    if !price.is_positive() {
        return Err(ProductError::PriceNotPositive);
    }
    Ok(price)
}

impl Aggregate for Product {
    const TYPE: &'static str = "product";
    type Command = ProductCommand;
    type Event = ProductEvent;
    type Error = ProductError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        for event in self.decide(command)? {
            sink.write(event, self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            ProductEvent::ProductAdded {
                product_id,
                sku,
                name,
                description,
                price,
                image_url,
                stock,
            } => {
                self.product_id = Some(product_id);
                self.sku = Some(sku);
                self.name = name;
                self.description = description;
                self.price = Some(price);
                self.image_url = image_url;
                self.on_hand = stock;
            }
            ProductEvent::ProductUpdated {
                name,
                description,
                image_url,
            } => {
                self.name = name;
                self.description = description;
                self.image_url = image_url;
            }
            ProductEvent::ProductPriceChanged { price, .. } => self.price = Some(price),
            ProductEvent::StockAdjusted { on_hand, .. } => self.on_hand = on_hand,
            ProductEvent::ProductRetired => self.retired = true,
            ProductEvent::StockReserved {
                purchase_id,
                quantity,
                unit_price,
            } => {
                self.reserved += u64::from(quantity);
                self.reservations.insert(
                    purchase_id,
                    Reservation {
                        quantity,
                        unit_price,
                    },
                );
            }
            ProductEvent::ReservationRefused { .. } => {}
            ProductEvent::ReservationReleased { purchase_id, .. } => {
                if let Some(held) = self.reservations.remove(&purchase_id) {
                    self.reserved = self.reserved.saturating_sub(u64::from(held.quantity));
                }
            }
            ProductEvent::StockShipped { purchase_id, .. } => {
                if let Some(held) = self.reservations.remove(&purchase_id) {
                    self.reserved = self.reserved.saturating_sub(u64::from(held.quantity));
                    self.on_hand = self.on_hand.saturating_sub(u64::from(held.quantity));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
