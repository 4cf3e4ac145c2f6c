//! The catalog: what administrators do to products (add, change, re-price, adjust
//! stock with a reason, retire). A product is never deleted: retiring it keeps its
//! history, its SKU and the reservations it still holds.
//!
//! And what the catalog means for tracking orders on its products: a price change
//! or a change of stock is recorded on every order that follows the product
//! ([`record_product_on_orders`]), with no scraping.
//!
//! A popular product's stream is busy (the saga appends its reservations), so an
//! administrator's change is decided again on the new state when the saga got in
//! first, a few times, rather than answered with a conflict.

use cqrs_es::AggregateError;
use orders_domain::ids::{OrderId, ProductId};
use orders_domain::money::{Money, MoneyError};
use orders_domain::order::{Availability, Order, OrderCommand, OrderError, ProductUrl};
use orders_domain::product::{Product, ProductCommand, ProductError, Sku};
use orders_store::event_store::{CommandMetadata, CommandReceipt, EventStore};

use crate::{CommandError, StoreFailure};

/// How many times a change is decided again after the saga appended first.
const ATTEMPTS_ON_CONFLICT: usize = 10;

/// What an administrator adds.
#[derive(Debug, Clone)]
pub struct NewProduct {
    pub sku: Sku,
    pub name: String,
    pub description: String,
    pub price: Money,
    pub image_url: Option<ProductUrl>,
    pub stock: u64,
}

/// Why no product was added.
#[derive(Debug, thiserror::Error)]
pub enum AddProductError {
    /// Another product has this SKU (compared case-insensitively), possibly added
    /// a moment ago by a concurrent request.
    #[error("another product has this SKU")]
    SkuTaken,
    #[error(transparent)]
    Command(CommandError<ProductError>),
}

/// Adds a product under a new id.
pub async fn add_product(
    events: &EventStore,
    product: NewProduct,
    metadata: &CommandMetadata,
) -> Result<(ProductId, CommandReceipt), AddProductError> {
    let product_id = ProductId::new();
    let command = ProductCommand::Add {
        product_id,
        sku: product.sku,
        name: product.name,
        description: product.description,
        price: product.price,
        image_url: product.image_url,
        stock: product.stock,
    };
    match events
        .execute_on_new::<Product>(&product_id.to_string(), command, metadata)
        .await
    {
        Ok(receipt) => Ok((product_id, receipt)),
        // The id is new: a conflict is the SKU's unique index.
        Err(AggregateError::AggregateConflict) => Err(AddProductError::SkuTaken),
        Err(error) => Err(AddProductError::Command(error.into())),
    }
}

/// A change to a product (`None`: unchanged).
#[derive(Debug, Clone, Default)]
pub struct ProductChange {
    pub name: Option<String>,
    pub description: Option<String>,
    /// A decimal amount in the product's currency.
    pub price: Option<String>,
    /// `Some(None)` removes the image.
    pub image_url: Option<Option<ProductUrl>>,
}

/// Why a product change stored nothing.
#[derive(Debug, thiserror::Error)]
pub enum ChangeProductError {
    /// The price is not an amount of the product's currency.
    #[error(transparent)]
    Price(MoneyError),
    #[error(transparent)]
    Command(CommandError<ProductError>),
}

/// Changes a product's name, description, price or image.
pub async fn change_product(
    events: &EventStore,
    product_id: ProductId,
    change: ProductChange,
    metadata: &CommandMetadata,
) -> Result<CommandReceipt, ChangeProductError> {
    let product = load_product(events, product_id)
        .await
        .map_err(ChangeProductError::Command)?;
    let price = match (&change.price, product.price()) {
        (Some(amount), Some(current)) => {
            Some(Money::parse(amount, current.currency()).map_err(ChangeProductError::Price)?)
        }
        _ => None,
    };
    let command = ProductCommand::Change {
        name: change.name,
        description: change.description,
        price,
        image_url: change.image_url,
    };
    execute_on_product(events, product_id, command, metadata)
        .await
        .map_err(ChangeProductError::Command)
}

/// Adds (positive) or removes (negative) units on hand, with a reason; never below
/// what is reserved.
pub async fn adjust_stock(
    events: &EventStore,
    product_id: ProductId,
    quantity: i64,
    reason: String,
    metadata: &CommandMetadata,
) -> Result<CommandReceipt, CommandError<ProductError>> {
    let command = ProductCommand::AdjustStock { quantity, reason };
    execute_on_product(events, product_id, command, metadata).await
}

/// Retires a product: it can no longer be bought; its history stays.
pub async fn retire_product(
    events: &EventStore,
    product_id: ProductId,
    metadata: &CommandMetadata,
) -> Result<CommandReceipt, CommandError<ProductError>> {
    execute_on_product(events, product_id, ProductCommand::Retire, metadata).await
}

/// The product as the log has it now; `NotFound` if it was never added.
pub async fn load_product(
    events: &EventStore,
    product_id: ProductId,
) -> Result<Product, CommandError<ProductError>> {
    let (product, _) = events.load::<Product>(&product_id.to_string()).await?;
    if !product.is_added() {
        return Err(CommandError::NotFound);
    }
    Ok(product)
}

async fn execute_on_product(
    events: &EventStore,
    product_id: ProductId,
    command: ProductCommand,
    metadata: &CommandMetadata,
) -> Result<CommandReceipt, CommandError<ProductError>> {
    let mut attempts = 0;
    loop {
        attempts += 1;
        let outcome = events
            .execute::<Product>(&product_id.to_string(), command.clone(), metadata)
            .await;
        match outcome {
            Err(AggregateError::AggregateConflict) if attempts < ATTEMPTS_ON_CONFLICT => continue,
            Err(AggregateError::UserError(ProductError::NotFound)) => {
                return Err(CommandError::NotFound)
            }
            outcome => return outcome.map_err(CommandError::from),
        }
    }
}

/// What a catalog product's state means for the orders that follow it: its price,
/// and whether it can be bought (retired: discontinued; none available: out of
/// stock).
pub fn product_observation(product: &Product) -> (Option<Money>, Availability) {
    let availability = if product.is_retired() {
        Availability::Discontinued
    } else if product.available() > 0 {
        Availability::InStock
    } else {
        Availability::OutOfStock
    };
    (product.price(), availability)
}

/// Records the product's current price and availability on the orders that follow
/// it (`only`: one of them, just placed), as the price policy records a scraped
/// observation: each order decides what is news (a change of price, the target
/// reached, back in stock) and fires the same alerts. Answers how many orders
/// recorded something.
///
/// The observation's id is minted before the product is read, so of two concurrent
/// calls the one with the greater id read the newer state: the orders end at the
/// product's latest state whatever the order in which calls finish (each order
/// ignores an observation older than the last it recorded).
pub async fn record_product_on_orders(
    events: &EventStore,
    product_id: ProductId,
    only: Option<OrderId>,
    metadata: &CommandMetadata,
) -> Result<usize, CommandError<OrderError>> {
    let observation_id = uuid::Uuid::now_v7();
    // The followers first: most products' stock events (a flash sale's thousands
    // of reservations) concern no tracking order, and then the product, whose
    // load reads every reservation it holds, is not loaded at all.
    let orders = match only {
        Some(order_id) => vec![order_id],
        None => events
            .orders_following_product(product_id)
            .await
            .map_err(|error| CommandError::Store(StoreFailure::new(error)))?,
    };
    if orders.is_empty() {
        return Ok(0);
    }
    let (product, _) = events
        .load::<Product>(&product_id.to_string())
        .await
        .map_err(|error| CommandError::Store(StoreFailure::new(error)))?;
    if !product.is_added() {
        return Ok(0);
    }
    let (price, availability) = product_observation(&product);
    let mut recorded = 0;
    for order_id in orders {
        let id = order_id.to_string();
        let command = OrderCommand::RecordObservation {
            check_id: observation_id,
            price,
            availability,
            extractor: Some("catalog".to_owned()),
        };
        let outcome = crate::orders::retry_on_conflict(|| {
            events.execute::<Order>(&id, command.clone(), metadata)
        })
        .await;
        match outcome {
            Ok(receipt) if receipt.events_stored > 0 => recorded += 1,
            Ok(_) => {}
            // A cancelled order follows nothing any more.
            Err(AggregateError::UserError(OrderError::Cancelled)) => {}
            Err(error) => return Err(error.into()),
        }
    }
    Ok(recorded)
}
