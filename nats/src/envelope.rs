//! One stored event as one NATS message: the event's payload as the body, everything
//! else as headers, so consumers can route and filter without parsing the body.
//!
//! | header | value |
//! |---|---|
//! | `Nats-Msg-Id` | the event id (JetStream drops a repeat within the duplicate window) |
//! | `Orders-Event-Id` | `<aggregate_type>/<aggregate_id>/<sequence>`: unique, stable |
//! | `Orders-Event-Type`, `Orders-Event-Version` | as stored |
//! | `Orders-Aggregate-Type`, `Orders-Aggregate-Id`, `Orders-Aggregate-Sequence` | as stored |
//! | `Orders-Position` | the log-order token `<tx_id>.<global_position>` |
//! | `Orders-Recorded-At` | RFC 3339, UTC |
//! | `Orders-Actor`, `Orders-Correlation-Id`, `Orders-Causation-Id`, `Orders-Request-Id`, ... | one per metadata key (`snake_case` → `Title-Case`) |

use std::collections::BTreeMap;

use async_nats::HeaderMap;

use crate::{event_subject, InvalidSubjectToken};

const EVENT_ID: &str = "Orders-Event-Id";
const EVENT_TYPE: &str = "Orders-Event-Type";
const EVENT_VERSION: &str = "Orders-Event-Version";
const AGGREGATE_TYPE: &str = "Orders-Aggregate-Type";
const AGGREGATE_ID: &str = "Orders-Aggregate-Id";
const AGGREGATE_SEQUENCE: &str = "Orders-Aggregate-Sequence";
const POSITION: &str = "Orders-Position";
const RECORDED_AT: &str = "Orders-Recorded-At";
const MESSAGE_ID: &str = "Nats-Msg-Id";
const PREFIX: &str = "Orders-";

/// The headers that are not metadata keys.
const FIXED: [&str; 8] = [
    EVENT_ID,
    EVENT_TYPE,
    EVENT_VERSION,
    AGGREGATE_TYPE,
    AGGREGATE_ID,
    AGGREGATE_SEQUENCE,
    POSITION,
    RECORDED_AT,
];

/// A stored event as the log carries it.
#[derive(Debug, Clone, PartialEq)]
pub struct LogEvent {
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub sequence: i64,
    pub event_type: String,
    pub event_version: String,
    /// The writing transaction (`xid8`).
    pub tx_id: u64,
    pub global_position: i64,
    /// RFC 3339, UTC.
    pub recorded_at: String,
    /// The event's payload as JSON text, as stored (and as the message body carries
    /// it, untouched: the relay never parses it).
    pub payload: bytes::Bytes,
    /// `actor`, `correlation_id`, `causation_id`, `request_id`, and any other key.
    pub metadata: BTreeMap<String, String>,
}

/// A message that is not a well-formed envelope.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EnvelopeError {
    #[error("the message has no {0} header")]
    MissingHeader(&'static str),
    #[error("the {header} header is not valid: {value:?}")]
    InvalidHeader { header: &'static str, value: String },
    #[error("the message body is not JSON: {0}")]
    InvalidPayload(String),
}

/// `actor` → `Orders-Actor`, `correlation_id` → `Orders-Correlation-Id`.
fn metadata_header(key: &str) -> String {
    let words: Vec<String> = key
        .split('_')
        .map(|word| {
            let mut chars = word.chars();
            match chars.next() {
                Some(first) => first.to_ascii_uppercase().to_string() + chars.as_str(),
                None => String::new(),
            }
        })
        .collect();
    format!("{PREFIX}{}", words.join("-"))
}

/// The inverse of [`metadata_header`] for headers that are not fixed ones.
fn metadata_key(header: &str) -> Option<String> {
    if FIXED.iter().any(|fixed| fixed.eq_ignore_ascii_case(header)) {
        return None;
    }
    let rest = header.get(PREFIX.len()..)?;
    header[..PREFIX.len()]
        .eq_ignore_ascii_case(PREFIX)
        .then(|| rest.to_ascii_lowercase().replace('-', "_"))
}

impl LogEvent {
    /// `<aggregate_type>/<aggregate_id>/<sequence>`: what makes an event unique in the
    /// store, so it names the event everywhere (message id, delivery records).
    pub fn event_id(&self) -> String {
        format!(
            "{}/{}/{}",
            self.aggregate_type, self.aggregate_id, self.sequence
        )
    }

    /// The event's place in the log order.
    pub fn position(&self) -> crate::LogPosition {
        crate::LogPosition {
            tx_id: self.tx_id,
            global_position: self.global_position,
        }
    }

    /// The log-order token, as the API's `Orders-Position` header carries it.
    pub fn position_token(&self) -> String {
        self.position().to_string()
    }

    /// `orders.events.<aggregate_type>.<aggregate_id>`.
    pub fn subject(&self) -> Result<String, InvalidSubjectToken> {
        event_subject(&self.aggregate_type, &self.aggregate_id)
    }

    pub fn headers(&self) -> HeaderMap {
        let mut headers = HeaderMap::new();
        let event_id = self.event_id();
        headers.insert(MESSAGE_ID, event_id.as_str());
        headers.insert(EVENT_ID, event_id.as_str());
        headers.insert(EVENT_TYPE, self.event_type.as_str());
        headers.insert(EVENT_VERSION, self.event_version.as_str());
        headers.insert(AGGREGATE_TYPE, self.aggregate_type.as_str());
        headers.insert(AGGREGATE_ID, self.aggregate_id.as_str());
        headers.insert(AGGREGATE_SEQUENCE, self.sequence.to_string().as_str());
        headers.insert(POSITION, self.position_token().as_str());
        headers.insert(RECORDED_AT, self.recorded_at.as_str());
        for (key, value) in &self.metadata {
            headers.insert(metadata_header(key).as_str(), value.as_str());
        }
        headers
    }

    pub fn body(&self) -> bytes::Bytes {
        self.payload.clone()
    }

    /// Reads an envelope back from a message's headers and body.
    pub fn decode(headers: &HeaderMap, body: &[u8]) -> Result<Self, EnvelopeError> {
        let text = |name: &'static str| -> Result<String, EnvelopeError> {
            headers
                .get(name)
                .map(|value| value.as_str().to_owned())
                .ok_or(EnvelopeError::MissingHeader(name))
        };
        let invalid = |header: &'static str, value: &str| EnvelopeError::InvalidHeader {
            header,
            value: value.to_owned(),
        };
        let sequence_text = text(AGGREGATE_SEQUENCE)?;
        let sequence = sequence_text
            .parse()
            .map_err(|_| invalid(AGGREGATE_SEQUENCE, &sequence_text))?;
        let position = text(POSITION)?;
        let (tx_id, global_position) = position
            .split_once('.')
            .and_then(|(tx, at)| Some((tx.parse().ok()?, at.parse().ok()?)))
            .ok_or_else(|| invalid(POSITION, &position))?;
        let mut metadata = BTreeMap::new();
        for (name, values) in headers.iter() {
            if let (Some(key), Some(value)) = (metadata_key(name.as_ref()), values.first()) {
                metadata.insert(key, value.as_str().to_owned());
            }
        }
        Ok(Self {
            aggregate_type: text(AGGREGATE_TYPE)?,
            aggregate_id: text(AGGREGATE_ID)?,
            sequence,
            event_type: text(EVENT_TYPE)?,
            event_version: text(EVENT_VERSION)?,
            tx_id,
            global_position,
            recorded_at: text(RECORDED_AT)?,
            payload: {
                serde_json::from_slice::<serde::de::IgnoredAny>(body)
                    .map_err(|error| EnvelopeError::InvalidPayload(error.to_string()))?;
                bytes::Bytes::copy_from_slice(body)
            },
            metadata,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample() -> LogEvent {
        LogEvent {
            aggregate_type: "order".to_owned(),
            aggregate_id: "0192f3a4-7b1c-7d2e-8f00-123456789abc".to_owned(),
            sequence: 3,
            event_type: "OrderPaused".to_owned(),
            event_version: "1.0".to_owned(),
            tx_id: 7_345,
            global_position: 12,
            recorded_at: "2026-11-25T12:00:00.123456Z".to_owned(),
            payload: bytes::Bytes::from_static(b"\"OrderPaused\""),
            metadata: BTreeMap::from([
                (
                    "actor".to_owned(),
                    "user:0192f3a4-0000-7000-8000-000000000001".to_owned(),
                ),
                (
                    "correlation_id".to_owned(),
                    "0192f3a4-0000-7000-8000-000000000002".to_owned(),
                ),
                (
                    "causation_id".to_owned(),
                    "0192f3a4-0000-7000-8000-000000000003".to_owned(),
                ),
                (
                    "request_id".to_owned(),
                    "0192f3a4-0000-7000-8000-000000000003".to_owned(),
                ),
                ("idempotency_key".to_owned(), "retry-1".to_owned()),
            ]),
        }
    }

    #[test]
    fn an_envelope_reads_back_as_written() {
        let event = sample();
        let headers = event.headers();
        assert_eq!(
            headers.get("Orders-Actor").unwrap().as_str(),
            event.metadata["actor"]
        );
        assert_eq!(
            headers.get("Orders-Correlation-Id").unwrap().as_str(),
            event.metadata["correlation_id"]
        );
        assert_eq!(
            headers.get("Nats-Msg-Id").unwrap().as_str(),
            event.event_id()
        );
        assert_eq!(headers.get("Orders-Position").unwrap().as_str(), "7345.12");
        assert_eq!(LogEvent::decode(&headers, &event.body()), Ok(event));
    }

    #[test]
    fn a_message_without_the_envelope_headers_is_refused() {
        let event = sample();
        let mut headers = HeaderMap::new();
        headers.insert(EVENT_TYPE, "OrderPaused");
        assert_eq!(
            LogEvent::decode(&headers, &event.body()),
            Err(EnvelopeError::MissingHeader(AGGREGATE_SEQUENCE))
        );
        let mut garbled = event.headers();
        garbled.insert(POSITION, "twelve");
        assert!(matches!(
            LogEvent::decode(&garbled, &event.body()),
            Err(EnvelopeError::InvalidHeader {
                header: POSITION,
                ..
            })
        ));
        assert!(matches!(
            LogEvent::decode(&event.headers(), b"{not json"),
            Err(EnvelopeError::InvalidPayload(_))
        ));
    }

    #[test]
    fn metadata_keys_map_to_headers_and_back() {
        for key in [
            "actor",
            "correlation_id",
            "causation_id",
            "request_id",
            "idempotency_key",
        ] {
            assert_eq!(metadata_key(&metadata_header(key)).as_deref(), Some(key));
        }
        assert_eq!(metadata_key("Orders-Event-Type"), None);
        assert_eq!(metadata_key("Nats-Msg-Id"), None);
    }
}
