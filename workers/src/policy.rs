//! The price-check policy as a worker: every `PriceObserved` of the log becomes the
//! order command that records it (`orders_application::price_checks::
//! record_observation_on_order`). The order decides what is news, and ignores a late
//! or repeated observation, so a redelivered message records nothing twice.

use orders_application::price_checks::record_observation_on_order;
use orders_domain::ids::CheckId;
use orders_domain::price_check::PriceCheckEvent;
use orders_nats::LogEvent;
use orders_store::event_store::EventStore;

use crate::consumer::Outcome;
use crate::work_metadata::caused_by;

/// The actor of the events the policy records.
pub const POLICY_ACTOR: &str = "system:policy";

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
    let metadata = caused_by(&event, POLICY_ACTOR);
    match record_observation_on_order(events, check_id, &observed, &metadata).await {
        Ok(_) => Outcome::Done,
        // A store failure or a concurrent command may pass; a refusal will not: it
        // is dead-lettered at once, with its reason.
        Err(error) if error.may_pass() => Outcome::Retry(
            anyhow::Error::new(error).context(format!("recording check {check_id} on its order")),
        ),
        Err(error) => Outcome::GiveUp(anyhow::Error::new(error).context(format!(
            "the order refused the observation of check {check_id}"
        ))),
    }
}
