//! The price-check policy as a worker: every `PriceObserved` of the log becomes the
//! order command that records it (`orders_command_api::price_checks::
//! record_observation_on_order`). The order decides what is news, and ignores a late
//! or repeated observation, so a redelivered message records nothing twice.

use orders_command_api::event_store::EventStore;
use orders_command_api::price_checks::{record_observation_on_order, CheckRequestError};
use orders_domain::ids::CheckId;
use orders_domain::price_check::PriceCheckEvent;
use orders_nats::LogEvent;

use crate::consumer::Outcome;
use crate::work_metadata::caused_by;

/// The step for one log message.
pub async fn record_observation(events: &EventStore, event: LogEvent) -> Outcome {
    if event.aggregate_type != "price_check" || event.event_type != "PriceObserved" {
        return Outcome::Done;
    }
    let observed: PriceCheckEvent = match crate::work_metadata::payload(&event) {
        Ok(observed) => observed,
        Err(error) => return Outcome::GiveUp(error),
    };
    let Ok(check_id) = event.aggregate_id.parse::<CheckId>() else {
        return Outcome::GiveUp(anyhow::anyhow!(
            "price check id {:?} is not a UUID",
            event.aggregate_id
        ));
    };
    let metadata = caused_by(&event, "system:scraper");
    match record_observation_on_order(events, check_id, &observed, &metadata).await {
        Ok(_) => Outcome::Done,
        Err(error @ CheckRequestError::Store(_)) => Outcome::Retry(error.into()),
        Err(error) => Outcome::GiveUp(error.into()),
    }
}
