//! The saga's commands on a product's stock: a batch of reservations, releases and
//! shipments for many purchases, decided on the product as it is and appended with
//! one statement, each event attributed to the purchase (the saga step) it serves.
//!
//! A caller that sends one product many batches (the saga's stock desk) holds the
//! product between them ([`HeldProduct`]) instead of loading it for each: a product
//! that holds many reservations is a large state to read and decode, and one batch
//! after another waits for it. The append checks that nothing was stored since the
//! state held, so a stale state is never acted on: it is a conflict, and the
//! product is loaded again.

use std::collections::HashMap;

use cqrs_es::Aggregate;
use orders_domain::ids::{ProductId, PurchaseId};
use orders_domain::product::{Product, ProductError, ProductEvent, StockOutcome, StockRequest};
use orders_store::event_store::{CommandMetadata, CommandReceipt, EventStore};

use crate::{CommandError, StoreFailure};

/// One request of a batch, with the metadata of the saga step that asks it.
#[derive(Debug, Clone)]
pub struct AttributedRequest {
    pub request: StockRequest,
    pub metadata: CommandMetadata,
}

/// A product as its caller holds it between batches: the state after the event
/// at `sequence`.
#[derive(Debug, Clone)]
pub struct HeldProduct {
    product: Product,
    sequence: usize,
    /// Loaded for the batch at hand (not carried over from an earlier one).
    fresh: bool,
}

impl HeldProduct {
    /// The product as the event store has it now.
    pub async fn load(
        events: &EventStore,
        product_id: ProductId,
    ) -> Result<Self, CommandError<ProductError>> {
        let (product, sequence) = events
            .load::<Product>(&product_id.to_string())
            .await
            .map_err(|error| CommandError::Store(StoreFailure::new(error)))?;
        Ok(Self {
            product,
            sequence,
            fresh: true,
        })
    }

    /// Whether the product has events after the state held.
    async fn is_behind(
        &self,
        events: &EventStore,
        product_id: ProductId,
    ) -> Result<bool, CommandError<ProductError>> {
        let last = events
            .last_sequence(Product::TYPE, &product_id.to_string())
            .await
            .map_err(|error| CommandError::Store(StoreFailure::new(error)))?;
        Ok(last != self.sequence)
    }
}

/// Decides `requests` in order on the product and appends what they decided in
/// one statement; answers what became of each, in order. A conflict (another
/// instance appended to the product first) stores nothing: decide again.
pub async fn handle_stock_requests(
    events: &EventStore,
    product_id: ProductId,
    requests: &[AttributedRequest],
) -> Result<(CommandReceipt, Vec<StockOutcome>), CommandError<ProductError>> {
    let mut held = HeldProduct::load(events, product_id).await?;
    handle_stock_requests_on(events, product_id, &mut held, requests).await
}

/// [`handle_stock_requests`] on a product the caller holds, which is brought up to
/// date with what was appended. A conflict leaves it as it was: load it again. A
/// batch that decides no event (every request already answered, or nothing held
/// to release) has no append to check it, so unless `held` was just loaded, the
/// product's last sequence is read: if anything was stored since, the batch is
/// decided again on the product loaded now.
pub async fn handle_stock_requests_on(
    events: &EventStore,
    product_id: ProductId,
    held: &mut HeldProduct,
    requests: &[AttributedRequest],
) -> Result<(CommandReceipt, Vec<StockOutcome>), CommandError<ProductError>> {
    let plain: Vec<StockRequest> = requests.iter().map(|asked| asked.request).collect();
    let (mut decided, mut outcomes) = held.product.decide_stock(&plain);
    if decided.is_empty() && !held.fresh && held.is_behind(events, product_id).await? {
        *held = HeldProduct::load(events, product_id).await?;
        (decided, outcomes) = held.product.decide_stock(&plain);
    }
    held.fresh = false;
    let attributed = attribute(&decided, requests);
    let receipt = events
        .append_decided::<Product>(&product_id.to_string(), held.sequence, attributed)
        .await?;
    held.sequence += decided.len();
    for event in decided {
        held.product.apply(event);
    }
    Ok((receipt, outcomes))
}

/// Every stock event with the metadata of the request (the purchase) it was
/// decided for.
fn attribute(
    decided: &[ProductEvent],
    requests: &[AttributedRequest],
) -> Vec<(ProductEvent, CommandMetadata)> {
    let metadata_of: HashMap<PurchaseId, &CommandMetadata> = requests
        .iter()
        .map(|asked| (request_purchase(&asked.request), &asked.metadata))
        .collect();
    decided
        .iter()
        .map(|event| {
            let metadata = event_purchase(event)
                .and_then(|purchase| metadata_of.get(&purchase))
                .map(|metadata| (*metadata).clone())
                .unwrap_or_else(|| CommandMetadata::new_job("system:saga"));
            (event.clone(), metadata)
        })
        .collect()
}

fn request_purchase(request: &StockRequest) -> PurchaseId {
    match request {
        StockRequest::Reserve { purchase_id, .. }
        | StockRequest::Release { purchase_id }
        | StockRequest::Ship { purchase_id } => *purchase_id,
    }
}

fn event_purchase(event: &ProductEvent) -> Option<PurchaseId> {
    match event {
        ProductEvent::StockReserved { purchase_id, .. }
        | ProductEvent::ReservationRefused { purchase_id, .. }
        | ProductEvent::ReservationReleased { purchase_id, .. }
        | ProductEvent::StockShipped { purchase_id, .. } => Some(*purchase_id),
        _ => None,
    }
}
