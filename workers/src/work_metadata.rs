//! What a worker's commands say about who caused them and why: the worker's actor,
//! and the correlation id of the event it acts on, so everything one request caused
//! shares one correlation id across aggregates and workers.

use anyhow::Context as _;
use orders_domain::upcasting::upcast_payload;
use orders_nats::LogEvent;
use orders_store::event_store::CommandMetadata;
use serde::de::DeserializeOwned;
use uuid::Uuid;

/// Metadata for a command a worker runs because of `event`.
pub fn caused_by(event: &LogEvent, actor: &str) -> CommandMetadata {
    let correlation_id = event
        .metadata
        .get("correlation_id")
        .and_then(|id| id.parse().ok())
        .unwrap_or_else(Uuid::now_v7);
    CommandMetadata {
        actor: actor.to_owned(),
        correlation_id,
        // The event that caused the command, by its id `<type>/<id>/<sequence>`.
        causation_id: event.event_id(),
        request_id: Uuid::now_v7(),
        idempotency_key: None,
    }
}

/// A stable UUID naming an event id.
pub fn event_uuid(event_id: &str) -> Uuid {
    Uuid::new_v5(
        &Uuid::NAMESPACE_URL,
        format!("orders:event:{event_id}").as_bytes(),
    )
}

/// The event's payload in today's shape (older versions upcast).
pub fn payload<T: DeserializeOwned>(event: &LogEvent) -> anyhow::Result<T> {
    let stored: serde_json::Value =
        serde_json::from_slice(&event.payload).context("the payload is not JSON")?;
    let current = upcast_payload(&event.event_type, &event.event_version, stored);
    serde_json::from_value(current).with_context(|| {
        format!(
            "{} {} does not read as a {} event",
            event.event_type, event.event_version, event.aggregate_type
        )
    })
}
