//! Asking for a price check: the one way a `PriceCheckRequested` is stored, used by
//! `POST /orders/{id}/check` (the owner) and by the scheduler.
//!
//! The order is loaded for what the check needs (its URL, selector, currency and
//! status); the price-check aggregate judges whether it may be checked; the event is
//! stored only with its order's claim (see `orders_store::statements`), so an order
//! never has two checks in flight, however many schedulers or owners ask at once.

use cqrs_es::AggregateError;
use orders_domain::ids::{CheckId, OrderId};
use orders_domain::order::{Order, OrderCommand, OrderError};
use orders_domain::price_check::{
    CheckTrigger, PriceCheck, PriceCheckCommand, PriceCheckError, PriceCheckEvent,
};

use crate::CommandError;
use orders_store::event_store::{CommandMetadata, CommandReceipt, EventStore, LogPosition};

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

/// Requests a check of `order` (already loaded by the caller, who has checked that
/// it may see it) with a freshly minted check id.
pub async fn request_check(
    events: &EventStore,
    order: &Order,
    trigger: CheckTrigger,
    metadata: &CommandMetadata,
) -> Result<CheckRequested, CommandError<PriceCheckError>> {
    if order.product_id().is_some() {
        return Err(CommandError::Refused(PriceCheckError::NotAPage));
    }
    let (Some(order_id), Some(url), Some(currency), Some(status)) =
        (order.id(), order.url(), order.currency(), order.status())
    else {
        return Err(CommandError::NotFound);
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
        // The check id is new, so the only conflict is the order's claim: another
        // check is in flight.
        Err(AggregateError::AggregateConflict) => Ok(CheckRequested::AlreadyInFlight),
        Err(error) => Err(error.into()),
    }
}

/// Loads an order for a check request.
pub async fn load_order(
    events: &EventStore,
    order_id: OrderId,
) -> Result<Order, CommandError<PriceCheckError>> {
    let (order, _) = events
        .load::<Order>(&order_id.to_string())
        .await
        .map_err(|error| match CommandError::<OrderError>::from(error) {
            CommandError::Store(failure) => CommandError::Store(failure),
            // Loading decides nothing: it only fails in the store.
            other => CommandError::Store(crate::StoreFailure::new(other)),
        })?;
    if !order.is_placed() {
        return Err(CommandError::NotFound);
    }
    Ok(order)
}

/// The price-check policy: a check's observation becomes the order command that
/// records it. The order decides what is news (a changed price, the target reached,
/// back in stock); a late or repeated observation records nothing, so running this
/// twice for one event is harmless. An observation for a cancelled or vanished
/// order is dropped (`Ok(None)`): nobody is tracking it any more. Any other refusal
/// (an observation in another currency than the order's) is `Refused`: permanent.
pub async fn record_observation_on_order(
    events: &EventStore,
    check_id: CheckId,
    observed: &PriceCheckEvent,
    metadata: &CommandMetadata,
) -> Result<Option<CommandReceipt>, CommandError<OrderError>> {
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
        Err(error) => Err(error.into()),
    }
}

/// Whether the check has its result already (a redelivered request: nothing to fetch).
pub async fn is_completed(
    events: &EventStore,
    check_id: &str,
) -> Result<bool, CommandError<PriceCheckError>> {
    let (check, _) = events.load::<PriceCheck>(check_id).await?;
    Ok(check.is_completed())
}

/// Records what the scraper found for a check: a reading or a failure. A second
/// result for one check records nothing (the first stands); a check never
/// requested is refused (`NotRequested`): permanent.
pub async fn record_result(
    events: &EventStore,
    check_id: &str,
    result: PriceCheckCommand,
    metadata: &CommandMetadata,
) -> Result<CommandReceipt, CommandError<PriceCheckError>> {
    Ok(events
        .execute::<PriceCheck>(check_id, result, metadata)
        .await?)
}
