//! One message of the log stream, decoded for the views: its place in the stream and
//! in the log order, the aggregate it belongs to, and the event in today's shape
//! (stored payloads of older versions are upcast, as when an aggregate is loaded).

use async_nats::HeaderMap;
use chrono::{DateTime, Utc};
use orders_domain::order::OrderEvent;
use orders_domain::price_check::PriceCheckEvent;
use orders_domain::product::ProductEvent;
use orders_domain::purchase::PurchaseEvent;
use orders_domain::upcasting::upcast_payload;
use orders_domain::user::UserEvent;
use orders_nats::{LogEvent, LogPosition};
use uuid::Uuid;

/// An event of the log, as the projectors apply it.
#[derive(Debug, Clone, PartialEq)]
pub struct LogRecord {
    /// The log stream's sequence of the message.
    pub stream_sequence: u64,
    pub position: LogPosition,
    pub aggregate_id: String,
    /// The aggregate's own sequence of the event.
    pub sequence: i64,
    pub recorded_at: DateTime<Utc>,
    /// Who caused the event (the metadata's `actor`), when the message says.
    pub actor: Option<String>,
    pub event: Event,
}

/// The events the views know; others (of aggregates no view reads) pass by.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    User(UserEvent),
    Order(OrderEvent),
    PriceCheck(PriceCheckEvent),
    Product(ProductEvent),
    Purchase(PurchaseEvent),
    Other,
}

/// A log message no view can make sense of. Views must equal the log, so a projector
/// stops at such a message (and says why) rather than skip it.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error(transparent)]
    Envelope(#[from] orders_nats::EnvelopeError),
    #[error("stream message {stream_sequence}: recorded_at {value:?} is not RFC 3339")]
    RecordedAt { stream_sequence: u64, value: String },
    #[error("stream message {stream_sequence} ({event_type} {event_version}) does not read as a {aggregate_type} event: {reason}")]
    Payload {
        stream_sequence: u64,
        aggregate_type: String,
        event_type: String,
        event_version: String,
        reason: String,
    },
}

impl LogRecord {
    pub fn decode(
        stream_sequence: u64,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<Self, RecordError> {
        Self::from_log_event(stream_sequence, LogEvent::decode(headers, body)?)
    }

    /// [`LogRecord::decode`] for a reader of the aggregates `reads` only: a message
    /// of another aggregate passes by as [`Event::Other`], its payload not read
    /// (each view reads a few aggregates, and every view reads the whole log).
    pub fn decode_for(
        stream_sequence: u64,
        headers: &HeaderMap,
        body: &[u8],
        reads: &[&str],
    ) -> Result<Self, RecordError> {
        // The envelope alone first: the payload is parsed below only if it is read.
        let mut event = LogEvent::decode(headers, b"null")?;
        if !reads.contains(&event.aggregate_type.as_str()) {
            return Self::build(stream_sequence, event, false);
        }
        event.payload = body.to_vec().into();
        Self::build(stream_sequence, event, true)
    }

    pub fn from_log_event(stream_sequence: u64, event: LogEvent) -> Result<Self, RecordError> {
        Self::build(stream_sequence, event, true)
    }

    /// The record of `event`; its payload decoded if `read_payload`, else it
    /// passes by as [`Event::Other`].
    fn build(
        stream_sequence: u64,
        event: LogEvent,
        read_payload: bool,
    ) -> Result<Self, RecordError> {
        let recorded_at = DateTime::parse_from_rfc3339(&event.recorded_at)
            .map_err(|_| RecordError::RecordedAt {
                stream_sequence,
                value: event.recorded_at.clone(),
            })?
            .with_timezone(&Utc);
        let position = event.position();
        let payload_error = |reason: String| RecordError::Payload {
            stream_sequence,
            aggregate_type: event.aggregate_type.clone(),
            event_type: event.event_type.clone(),
            event_version: event.event_version.clone(),
            reason,
        };
        let upcast = || -> Result<serde_json::Value, RecordError> {
            let stored = serde_json::from_slice(&event.payload)
                .map_err(|error| payload_error(error.to_string()))?;
            Ok(upcast_payload(
                &event.event_type,
                &event.event_version,
                stored,
            ))
        };
        let read = if read_payload {
            event.aggregate_type.as_str()
        } else {
            ""
        };
        let decoded = match read {
            "user" => Event::User(
                serde_json::from_value(upcast()?).map_err(|e| payload_error(e.to_string()))?,
            ),
            "order" => Event::Order(
                serde_json::from_value(upcast()?).map_err(|e| payload_error(e.to_string()))?,
            ),
            "price_check" => Event::PriceCheck(
                serde_json::from_value(upcast()?).map_err(|e| payload_error(e.to_string()))?,
            ),
            "product" => Event::Product(
                serde_json::from_value(upcast()?).map_err(|e| payload_error(e.to_string()))?,
            ),
            "purchase" => Event::Purchase(
                serde_json::from_value(upcast()?).map_err(|e| payload_error(e.to_string()))?,
            ),
            _ => Event::Other,
        };
        if !matches!(decoded, Event::Other) && event.aggregate_id.parse::<Uuid>().is_err() {
            return Err(payload_error(format!(
                "aggregate id {:?} is not a UUID",
                event.aggregate_id
            )));
        }
        Ok(Self {
            stream_sequence,
            position,
            aggregate_id: event.aggregate_id,
            sequence: event.sequence,
            recorded_at,
            actor: event.metadata.get("actor").cloned(),
            event: decoded,
        })
    }

    /// The aggregate's id (checked to be a UUID for every aggregate a view reads).
    pub fn aggregate_uuid(&self) -> Uuid {
        self.aggregate_id.parse().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use cqrs_es::DomainEvent as _;
    use orders_domain::ids::{ProductId, PurchaseId, UserId};
    use orders_domain::purchase::PurchaseLine;

    use super::*;

    fn log_event(aggregate_type: &str, id: Uuid, event_type: String, payload: Vec<u8>) -> LogEvent {
        LogEvent {
            aggregate_type: aggregate_type.to_owned(),
            aggregate_id: id.to_string(),
            sequence: 1,
            event_type,
            event_version: "1.0".to_owned(),
            tx_id: 900,
            global_position: 12,
            recorded_at: "2026-11-25T12:00:00.123456Z".to_owned(),
            payload: payload.into(),
            metadata: BTreeMap::from([("actor".to_owned(), "system:saga".to_owned())]),
        }
    }

    #[test]
    fn the_shops_events_are_read_with_their_actor() {
        let id = Uuid::now_v7();
        let placed = PurchaseEvent::PurchasePlaced {
            purchase_id: PurchaseId::from_uuid(id),
            owner: UserId::from_uuid(Uuid::now_v7()),
            lines: vec![PurchaseLine {
                product_id: ProductId::from_uuid(Uuid::now_v7()),
                quantity: 3,
            }],
        };
        let message = log_event(
            "purchase",
            id,
            placed.event_type(),
            serde_json::to_vec(&placed).unwrap(),
        );
        let record = LogRecord::from_log_event(7, message).unwrap();
        assert_eq!(record.event, Event::Purchase(placed));
        assert_eq!(record.actor.as_deref(), Some("system:saga"));
        assert_eq!(record.aggregate_uuid(), id);

        let retired = ProductEvent::ProductRetired;
        let message = log_event(
            "product",
            id,
            retired.event_type(),
            serde_json::to_vec(&retired).unwrap(),
        );
        let record = LogRecord::from_log_event(8, message).unwrap();
        assert_eq!(record.event, Event::Product(retired));

        // A purchase's event that does not read as one stops the projector.
        let message = log_event(
            "purchase",
            id,
            "PurchasePlaced".to_owned(),
            br#"{"PurchasePlaced": {"lines": "none"}}"#.to_vec(),
        );
        assert!(matches!(
            LogRecord::from_log_event(9, message),
            Err(RecordError::Payload { .. })
        ));
    }

    #[test]
    fn a_view_decodes_only_the_payloads_of_the_aggregates_it_reads() {
        let id = Uuid::now_v7();
        let unreadable = log_event(
            "purchase",
            id,
            "PurchasePlaced".to_owned(),
            br#"{"PurchasePlaced": {"lines": "none"}}"#.to_vec(),
        );
        let headers = unreadable.headers();
        // A reader of products lets it pass by, where it is in the log.
        let passing =
            LogRecord::decode_for(5, &headers, &unreadable.payload, &["product"]).unwrap();
        assert_eq!(passing.event, Event::Other);
        assert_eq!(passing.position, unreadable.position());
        assert_eq!(passing.stream_sequence, 5);
        // A reader of purchases reads it, and stops at it.
        assert!(matches!(
            LogRecord::decode_for(5, &headers, &unreadable.payload, &["purchase"]),
            Err(RecordError::Payload { .. })
        ));
        // What it reads, it reads as `decode` does.
        let retired = ProductEvent::ProductRetired;
        let message = log_event(
            "product",
            id,
            retired.event_type(),
            serde_json::to_vec(&retired).unwrap(),
        );
        let headers = message.headers();
        assert_eq!(
            LogRecord::decode_for(6, &headers, &message.payload, &["product"]).unwrap(),
            LogRecord::decode(6, &headers, &message.payload).unwrap()
        );
    }
}
