//! Asking for a price check: the one way a `PriceCheckRequested` is stored, used by
//! `POST /orders/{id}/check` (the owner) and by the scheduler.
//!
//! The order is loaded for what the check needs (its URL, selector, currency and
//! status); the price-check aggregate judges whether it may be checked; the event is
//! stored only with its order's claim (see `INSERT_PRICE_CHECK_EVENTS`), so an order
//! never has two checks in flight, however many schedulers or owners ask at once.

use cqrs_es::AggregateError;
use orders_domain::ids::{CheckId, OrderId};
use orders_domain::order::{Order, OrderCommand, OrderError};
use orders_domain::price_check::{
    CheckTrigger, PriceCheck, PriceCheckCommand, PriceCheckError, PriceCheckEvent,
};

use crate::event_store::{CommandMetadata, EventStore, LogPosition};

/// What asking for a check did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckRequested {
    /// A new check was requested.
    Requested {
        check_id: CheckId,
        position: Option<LogPosition>,
    },
    /// A check of this order is already in flight: its result will do.
    AlreadyInFlight,
}

/// Why a check was not requested.
#[derive(Debug, thiserror::Error)]
pub enum CheckRequestError {
    #[error("no such order")]
    OrderNotFound,
    #[error(transparent)]
    Refused(PriceCheckError),
    #[error("the event store failed: {0}")]
    Store(String),
}

/// Requests a check of `order` (already loaded by the caller, who has checked that
/// it may see it) with a freshly minted check id.
pub async fn request_check(
    events: &EventStore,
    order: &Order,
    trigger: CheckTrigger,
    metadata: &CommandMetadata,
) -> Result<CheckRequested, CheckRequestError> {
    let (Some(order_id), Some(url), Some(currency), Some(status)) =
        (order.id(), order.url(), order.currency(), order.status())
    else {
        return Err(CheckRequestError::OrderNotFound);
    };
    let check_id = CheckId::new();
    let command = PriceCheckCommand::Request {
        check_id,
        order_id,
        url: url.clone(),
        selector: order.selector().map(str::to_owned),
        currency,
        trigger,
        order_status: status,
    };
    match events
        .execute_on_new::<PriceCheck>(&check_id.to_string(), command, metadata)
        .await
    {
        Ok(receipt) => Ok(CheckRequested::Requested {
            check_id,
            position: receipt.position,
        }),
        Err(AggregateError::UserError(refusal)) => Err(CheckRequestError::Refused(refusal)),
        // The check id is new, so the only conflict is the order's claim: another
        // check is in flight.
        Err(AggregateError::AggregateConflict) => Ok(CheckRequested::AlreadyInFlight),
        Err(error) => Err(CheckRequestError::Store(error.to_string())),
    }
}

/// Loads an order for a check request.
pub async fn load_order(
    events: &EventStore,
    order_id: OrderId,
) -> Result<Order, CheckRequestError> {
    let (order, _) = events
        .load::<Order>(&order_id.to_string())
        .await
        .map_err(|error| CheckRequestError::Store(error.to_string()))?;
    if !order.is_placed() {
        return Err(CheckRequestError::OrderNotFound);
    }
    Ok(order)
}

/// The price-check policy: a check's observation becomes the order command that
/// records it. The order decides what is news (a changed price, the target reached,
/// back in stock); a late or repeated observation records nothing, so running this
/// twice for one event is harmless. An observation for a cancelled or vanished
/// order is dropped (`Ok(None)`): nobody is tracking it any more.
pub async fn record_observation_on_order(
    events: &EventStore,
    check_id: CheckId,
    observed: &PriceCheckEvent,
    metadata: &CommandMetadata,
) -> Result<Option<crate::event_store::CommandReceipt>, CheckRequestError> {
    let PriceCheckEvent::PriceObserved {
        order_id,
        price,
        availability,
        extractor,
        ..
    } = observed
    else {
        return Ok(None);
    };
    let command = OrderCommand::RecordObservation {
        check_id: check_id.as_uuid(),
        price: *price,
        availability: *availability,
        extractor: extractor.clone(),
    };
    match events
        .execute::<Order>(&order_id.to_string(), command, metadata)
        .await
    {
        Ok(receipt) => Ok(Some(receipt)),
        Err(AggregateError::UserError(OrderError::Cancelled | OrderError::NotFound)) => Ok(None),
        Err(AggregateError::UserError(refusal)) => Err(CheckRequestError::Store(format!(
            "order {order_id} refused the observation of check {check_id}: {refusal}"
        ))),
        Err(error) => Err(CheckRequestError::Store(error.to_string())),
    }
}
