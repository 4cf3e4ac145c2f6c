//! What makes the log tamper-evident, event by event: a canonical form of each
//! event, its seal and its link in the hash chain.
//!
//! **Canonical form.** PostgreSQL stores payloads and metadata as `jsonb`, which
//! reorders keys and drops whitespace, so the stored text is not what the command
//! side serialised. Both sides therefore digest a form of their own: JSON without
//! whitespace, object keys sorted by their UTF-8 bytes, strings escaped as
//! serde_json escapes them, numbers as serde_json prints them. An event is two
//! digests: its *body* (aggregate type, id, sequence, event type, version and
//! payload, each length-prefixed so that no field can bleed into the next) and its
//! *metadata* (actor, correlation, causation, request id ...).
//!
//! **Seal.** The command side seals every event it writes: a version byte and
//! HMAC-SHA-256 under `ORDERS_AUDIT_KEY` over the two digests. The key is not in
//! the database, so a row written or changed there by any other means does not
//! carry a seal that verifies. The seal cannot cover the event's place in the log
//! (its position and time are given by PostgreSQL as it is inserted): that is the
//! chain's job.
//!
//! **Chain.** As the relay publishes events in log order it links each to the one
//! before: `digest = SHA-256(tag, previous digest, body digest, metadata digest,
//! seal, global position, recorded time)`. A deleted, inserted or moved event, or
//! one whose time was changed, breaks every link after it.

use hmac::{Hmac, Mac as _};
use serde_json::Value;
use sha2::{Digest as _, Sha256};

/// The version byte every seal starts with: the scheme above.
pub const SEAL_VERSION: u8 = 1;
/// A seal's length: the version byte and the MAC.
pub const SEAL_LEN: usize = 33;

/// The digest before the first event of the chain.
pub const GENESIS: [u8; 32] = [0; 32];

/// The key events are sealed under (`ORDERS_AUDIT_KEY`).
#[derive(Clone)]
pub struct AuditKey {
    /// The HMAC keyed once; each seal clones it.
    mac: Hmac<Sha256>,
}

impl std::fmt::Debug for AuditKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AuditKey(..)")
    }
}

impl AuditKey {
    /// The key from the environment variable `ORDERS_AUDIT_KEY`: required, at least
    /// 32 bytes, no default; the error is one line that names the variable.
    pub fn from_env_value(value: Option<String>) -> anyhow::Result<Self> {
        let secret = crate::Secret::from_env_value("ORDERS_AUDIT_KEY", value)?;
        Ok(Self::new(secret.expose()))
    }

    pub fn new(key: &[u8]) -> Self {
        Self {
            mac: Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes a key of any length"),
        }
    }

    fn mac_of(&self, digests: &EventDigests) -> Hmac<Sha256> {
        let mut mac = self.mac.clone();
        mac.update(b"orders-seal/1\0");
        mac.update(&digests.body);
        mac.update(&digests.metadata);
        mac
    }

    /// The seal of an event with these digests.
    pub fn seal(&self, digests: &EventDigests) -> Vec<u8> {
        let mut seal = Vec::with_capacity(SEAL_LEN);
        seal.push(SEAL_VERSION);
        seal.extend_from_slice(&self.mac_of(digests).finalize().into_bytes());
        seal
    }

    /// Whether `seal` is the seal of an event with these digests (in constant time).
    pub fn verifies(&self, digests: &EventDigests, seal: Option<&[u8]>) -> bool {
        match seal {
            Some([SEAL_VERSION, mac @ ..]) => self.mac_of(digests).verify_slice(mac).is_ok(),
            _ => false,
        }
    }
}

/// The two digests of an event's canonical form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventDigests {
    pub body: [u8; 32],
    pub metadata: [u8; 32],
}

/// What an event is, as stored.
#[derive(Debug, Clone, Copy)]
pub struct EventContent<'a> {
    pub aggregate_type: &'a str,
    pub aggregate_id: &'a str,
    pub sequence: i64,
    pub event_type: &'a str,
    pub event_version: &'a str,
    pub payload: &'a Value,
    pub metadata: &'a Value,
}

impl EventContent<'_> {
    /// Digests the canonical form; `scratch` is reused between events.
    pub fn digests_with(&self, scratch: &mut Vec<u8>) -> EventDigests {
        scratch.clear();
        scratch.extend_from_slice(b"orders-event-body/1\0");
        length_prefixed(scratch, self.aggregate_type.as_bytes());
        length_prefixed(scratch, self.aggregate_id.as_bytes());
        scratch.extend_from_slice(&self.sequence.to_be_bytes());
        length_prefixed(scratch, self.event_type.as_bytes());
        length_prefixed(scratch, self.event_version.as_bytes());
        write_canonical(self.payload, scratch);
        let body = Sha256::digest(&scratch[..]).into();
        scratch.clear();
        scratch.extend_from_slice(b"orders-event-metadata/1\0");
        write_canonical(self.metadata, scratch);
        let metadata = Sha256::digest(&scratch[..]).into();
        EventDigests { body, metadata }
    }

    pub fn digests(&self) -> EventDigests {
        self.digests_with(&mut Vec::with_capacity(512))
    }
}

/// An event's place in the log, which the chain covers beside its content.
#[derive(Debug, Clone, Copy)]
pub struct LogPlace<'a> {
    pub global_position: i64,
    /// `recorded_at` in UTC as `YYYY-MM-DDTHH:MM:SS.ffffffZ`.
    pub recorded_at: &'a str,
}

/// The link of one event in the chain.
pub fn chain_digest(
    previous: &[u8; 32],
    digests: &EventDigests,
    seal: Option<&[u8]>,
    place: LogPlace<'_>,
) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(b"orders-chain/1\0");
    hasher.update(previous);
    hasher.update(digests.body);
    hasher.update(digests.metadata);
    let seal = seal.unwrap_or_default();
    hasher.update((seal.len() as u64).to_be_bytes());
    hasher.update(seal);
    hasher.update(place.global_position.to_be_bytes());
    hasher.update((place.recorded_at.len() as u64).to_be_bytes());
    hasher.update(place.recorded_at.as_bytes());
    hasher.finalize().into()
}

fn length_prefixed(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u64).to_be_bytes());
    out.extend_from_slice(bytes);
}

/// Appends the canonical JSON of `value` (see the module's documentation).
pub fn write_canonical(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Number(number) => {
            use std::io::Write as _;
            let _ = write!(out, "{number}");
        }
        Value::String(text) => write_string(text, out),
        Value::Array(items) => {
            out.push(b'[');
            for (index, item) in items.iter().enumerate() {
                if index > 0 {
                    out.push(b',');
                }
                write_canonical(item, out);
            }
            out.push(b']');
        }
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            // Already sorted unless serde_json keeps insertion order somewhere in
            // the build (its `preserve_order` feature); sorting a sorted list is cheap.
            entries.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push(b'{');
            for (index, (key, item)) in entries.into_iter().enumerate() {
                if index > 0 {
                    out.push(b',');
                }
                write_string(key, out);
                out.push(b':');
                write_canonical(item, out);
            }
            out.push(b'}');
        }
    }
}

fn write_string(text: &str, out: &mut Vec<u8>) {
    // serde_json's escaping: `"`, `\` and control characters, nothing else.
    serde_json::to_writer(&mut *out, text).expect("writing to a Vec cannot fail");
}

/// Lower-case hex, for digests in reports and checkpoints.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut out, byte| {
            let _ = write!(out, "{byte:02x}");
            out
        })
}

/// Reads [`hex`] back.
pub fn from_hex(text: &str) -> Option<Vec<u8>> {
    if text.len() % 2 != 0 {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|index| u8::from_str_radix(text.get(index..index + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const KEY: &[u8] = b"a key for the tests, 32 bytes or more";

    fn content<'a>(payload: &'a Value, metadata: &'a Value) -> EventContent<'a> {
        EventContent {
            aggregate_type: "order",
            aggregate_id: "0190f1d2-0000-7000-8000-000000000001",
            sequence: 3,
            event_type: "OrderPlaced",
            event_version: "1.0",
            payload,
            metadata,
        }
    }

    #[test]
    fn the_canonical_form_sorts_keys_and_drops_whitespace() {
        let value: Value =
            serde_json::from_str(r#"{ "b": [1, 2.5, "x\"y"], "a": {"d": null, "c": true} }"#)
                .unwrap();
        let mut out = Vec::new();
        write_canonical(&value, &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{"a":{"c":true,"d":null},"b":[1,2.5,"x\"y"]}"#
        );
    }

    #[test]
    fn what_jsonb_does_to_a_payload_does_not_change_its_digests() {
        // As the command side serialises it, and as PostgreSQL gives it back.
        let written = json!({"OrderPlaced": {"url": "https://shop.example/é", "target": "10.50", "owner": "u"}});
        let stored: Value = serde_json::from_str(
            r#"{"OrderPlaced": {"url": "https://shop.example/\u00e9", "owner": "u", "target": "10.50"}}"#,
        )
        .unwrap();
        let metadata = json!({"actor": "user:1", "correlation_id": "c"});
        assert_eq!(
            content(&written, &metadata).digests(),
            content(&stored, &metadata).digests()
        );
    }

    #[test]
    fn a_seal_verifies_only_its_own_event_under_its_own_key() {
        let payload = json!({"OrderPlaced": {"target": "10.50"}});
        let metadata = json!({"actor": "user:1"});
        let key = AuditKey::new(KEY);
        let digests = content(&payload, &metadata).digests();
        let seal = key.seal(&digests);
        assert_eq!(seal.len(), SEAL_LEN);
        assert!(key.verifies(&digests, Some(&seal)));
        assert!(!key.verifies(&digests, None));
        assert!(
            !AuditKey::new(b"another key, also long enough to use").verifies(&digests, Some(&seal))
        );

        let changed_payload = json!({"OrderPlaced": {"target": "1.50"}});
        assert!(!key.verifies(&content(&changed_payload, &metadata).digests(), Some(&seal)));
        let changed_actor = json!({"actor": "user:2"});
        assert!(!key.verifies(&content(&payload, &changed_actor).digests(), Some(&seal)));
        let mut other_sequence = content(&payload, &metadata);
        other_sequence.sequence = 4;
        assert!(!key.verifies(&other_sequence.digests(), Some(&seal)));
    }

    #[test]
    fn each_link_depends_on_the_one_before_and_on_the_place() {
        let payload = json!({"OrderPlaced": {}});
        let metadata = json!({});
        let digests = content(&payload, &metadata).digests();
        let place = LogPlace {
            global_position: 7,
            recorded_at: "2026-12-02T10:00:00.000000Z",
        };
        let first = chain_digest(&GENESIS, &digests, None, place);
        assert_ne!(first, chain_digest(&[1; 32], &digests, None, place));
        assert_ne!(
            first,
            chain_digest(
                &GENESIS,
                &digests,
                None,
                LogPlace {
                    global_position: 8,
                    ..place
                }
            )
        );
        assert_ne!(
            first,
            chain_digest(
                &GENESIS,
                &digests,
                None,
                LogPlace {
                    recorded_at: "2026-12-02T10:00:00.000001Z",
                    ..place
                }
            )
        );
        assert_eq!(from_hex(&hex(&first)).unwrap(), first.to_vec());
    }
}
