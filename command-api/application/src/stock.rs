//! The saga's commands on a product's stock: a batch of reservations, releases and
//! shipments for many purchases, decided on the product as it is and appended with
//! one statement, each event attributed to the purchase (the saga step) it serves.

use std::collections::HashMap;

use orders_domain::ids::{ProductId, PurchaseId};
use orders_domain::product::{Product, ProductError, ProductEvent, StockOutcome, StockRequest};
use orders_store::event_store::{CommandMetadata, CommandReceipt, EventStore};

use crate::CommandError;

/// One request of a batch, with the metadata of the saga step that asks it.
#[derive(Debug, Clone)]
pub struct AttributedRequest {
    pub request: StockRequest,
    pub metadata: CommandMetadata,
}

/// Decides `requests` in order on the product and appends what they decided in
/// one statement; answers what became of each, in order. A conflict (another
/// instance appended to the product first) stores nothing: decide again.
pub async fn handle_stock_requests(
    events: &EventStore,
    product_id: ProductId,
    requests: &[AttributedRequest],
) -> Result<(CommandReceipt, Vec<StockOutcome>), CommandError<ProductError>> {
    let plain: Vec<StockRequest> = requests.iter().map(|asked| asked.request).collect();
    let metadata_of: HashMap<PurchaseId, &CommandMetadata> = requests
        .iter()
        .map(|asked| (request_purchase(&asked.request), &asked.metadata))
        .collect();
    let decided = events
        .decide_and_append::<Product, _>(&product_id.to_string(), |product| {
            let (events, outcomes) = product.decide_stock(&plain);
            let attributed = events
                .into_iter()
                .map(|event| {
                    // Every stock event names the purchase it was decided for.
                    let metadata = event_purchase(&event)
                        .and_then(|purchase| metadata_of.get(&purchase))
                        .map(|metadata| (*metadata).clone())
                        .unwrap_or_else(|| CommandMetadata::new_job("system:saga"));
                    (event, metadata)
                })
                .collect();
            (attributed, outcomes)
        })
        .await?;
    Ok(decided)
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
