//! The catalog policy (`system:policy`): tracking orders on catalog products
//! follow the product's events, with no scraping (flow 7).
//!
//! - An `OrderPlaced` on a catalog product records the product's price and
//!   availability on that order at once.
//! - A product event that can change its price or availability (re-priced, stock
//!   adjusted, reserved, released, shipped, retired) records the product's current
//!   state on every order that follows it.
//!
//! The order decides what is news (a changed price, the target reached, out of
//! stock, back in stock) exactly as for a scraped observation, so the alerts are
//! the same. The state recorded is always the product's current one, read when the
//! message is handled, so a redelivered or late message records nothing stale.

use orders_application::catalog::record_product_on_orders;
use orders_domain::ids::{OrderId, ProductId};
use orders_domain::order::OrderEvent;
use orders_nats::LogEvent;
use orders_store::event_store::EventStore;

use crate::consumer::Outcome;
use crate::policy::POLICY_ACTOR;
use crate::work_metadata::caused_by;

/// The product events after which its price or availability may differ.
const PRODUCT_CHANGES: [&str; 6] = [
    "ProductPriceChanged",
    "StockAdjusted",
    "StockReserved",
    "ReservationReleased",
    "StockShipped",
    "ProductRetired",
];

/// Follows the catalog as a competing consumer of product and order events until
/// `shutdown`.
pub async fn serve(
    events: EventStore,
    jetstream: &async_nats::jetstream::Context,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    crate::consumer::consume(
        jetstream,
        orders_nats::work::CATALOG_POLICY,
        8,
        shutdown,
        move |event| {
            let events = events.clone();
            async move { follow_catalog(&events, event).await }
        },
    )
    .await
}

/// The step for one log message.
pub async fn follow_catalog(events: &EventStore, event: LogEvent) -> Outcome {
    let (product_id, only) = match event.aggregate_type.as_str() {
        "product" if PRODUCT_CHANGES.contains(&event.event_type.as_str()) => {
            match event.aggregate_id.parse::<ProductId>() {
                Ok(product_id) => (product_id, None),
                Err(_) => {
                    return Outcome::GiveUp(anyhow::anyhow!(
                        "product id {:?} is not a UUID",
                        event.aggregate_id
                    ))
                }
            }
        }
        "order" if event.event_type == "OrderPlaced" => {
            let placed: OrderEvent = match crate::work_metadata::payload(&event) {
                Ok(placed) => placed,
                Err(error) => return Outcome::GiveUp(error),
            };
            let OrderEvent::OrderPlaced {
                order_id,
                product_id: Some(product_id),
                ..
            } = placed
            else {
                // A page's order: the scraper follows it.
                return Outcome::Done;
            };
            (product_id, Some::<OrderId>(order_id))
        }
        _ => return Outcome::Done,
    };
    let metadata = caused_by(&event, POLICY_ACTOR);
    match record_product_on_orders(events, product_id, only, &metadata).await {
        Ok(_) => Outcome::Done,
        Err(error) if error.may_pass() => Outcome::Retry(
            anyhow::Error::new(error)
                .context(format!("recording product {product_id} on its orders")),
        ),
        Err(error) => Outcome::GiveUp(
            anyhow::Error::new(error)
                .context(format!("an order refused product {product_id}'s state")),
        ),
    }
}
