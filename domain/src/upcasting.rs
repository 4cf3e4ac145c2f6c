//! Reading old events in today's shape.
//!
//! Events are forever: a stored event is never rewritten, because the audit chain
//! seals every row and because the log is the history users and auditors trust.
//! When an event's shape changes, its version goes up and the old payloads are
//! *upcast* on read: a function turns the stored JSON into the new shape before
//! it is deserialised, every time it is loaded.
//!
//! # `OrderPlaced` 1.0 → 2.0
//!
//! Version 1.0 stored the target price flat, as the HTTP body had it:
//!
//! ```json
//! {"OrderPlaced": {"order_id": "…", "owner": "…", "url": "https://…",
//!                  "target_price": "3199.00", "currency": "UAH",
//!                  "check_interval_secs": 3600, "selector": null}}
//! ```
//!
//! Version 2.0 nests it as [`Money`](crate::money::Money), like every other amount
//! in the log:
//!
//! ```json
//! {"OrderPlaced": {"order_id": "…", "owner": "…", "url": "https://…",
//!                  "target": {"amount": "3199.00", "currency": "UAH"},
//!                  "check_interval_secs": 3600, "selector": null}}
//! ```
//!
//! # `OrderPlaced` 2.0 → 3.0
//!
//! Version 3.0 may follow a product of our own catalog instead of a page:
//! `"product_id": "…"` with `"url": null`. A 2.0 payload always names a page and
//! reads as 3.0 unchanged (`product_id` absent).
//!
//! # `UserRegistered` and `PasswordChanged` 1.0 → 2.0
//!
//! Version 1.0 carried the password hash (`"password_hash": "$argon2id$…"`). The
//! event log is published to every subscriber of the event stream, so 2.0 keeps the
//! hash out: the command side stores it with the user's credentials, written by the
//! same statement as the event. The upcast drops the field; `PasswordChanged`
//! becomes the bare `"PasswordChanged"`. (Stored 1.0 rows still hold their hash:
//! events are never rewritten.)
//!
//! # `TargetReached` 1.0 → 2.0
//!
//! Version 2.0 also carries the price known before the check that reached the
//! target (`"previous": {"amount": …, "currency": …}` or `null`), which the alert
//! mail shows. A 1.0 event did not record it; the upcast says `null` (unknown)
//! rather than guessing it from earlier events.
//!
//! cqrs-es applies a `SemanticVersionEventUpcaster` to every stored event of its
//! type whose version is *older* than the upcaster's version (1.0 < 2.0), and then
//! records the event as being of the upcaster's version (written in full, "2.0.0",
//! the same version as the "2.0" new events are stored with), so 2.0 payloads pass
//! untouched. Register the upcasters on the event store:
//! `PersistedEventStore::new_event_store(repo).with_upcasters(event_upcasters())`.

use cqrs_es::persist::{EventUpcaster, SemanticVersionEventUpcaster, SerializedEvent};
use serde_json::{Map, Value};

use crate::order::{ORDER_PLACED_EVENT_VERSION, ORDER_PLACED_V2, TARGET_REACHED_EVENT_VERSION};
use crate::user::USER_CREDENTIAL_EVENTS_VERSION;

/// Every upcaster the event store must apply when it loads events.
pub fn event_upcasters() -> Vec<Box<dyn EventUpcaster>> {
    vec![
        Box::new(SemanticVersionEventUpcaster::new(
            "OrderPlaced",
            ORDER_PLACED_V2,
            Box::new(order_placed_v1_to_v2),
        )),
        // After the one above, so a 1.0 payload goes on to 3.0.
        Box::new(SemanticVersionEventUpcaster::new(
            "OrderPlaced",
            ORDER_PLACED_EVENT_VERSION,
            Box::new(order_placed_v2_to_v3),
        )),
        Box::new(SemanticVersionEventUpcaster::new(
            "TargetReached",
            TARGET_REACHED_EVENT_VERSION,
            Box::new(target_reached_v1_to_v2),
        )),
        Box::new(SemanticVersionEventUpcaster::new(
            "UserRegistered",
            USER_CREDENTIAL_EVENTS_VERSION,
            Box::new(user_registered_v1_to_v2),
        )),
        Box::new(SemanticVersionEventUpcaster::new(
            "PasswordChanged",
            USER_CREDENTIAL_EVENTS_VERSION,
            Box::new(password_changed_v1_to_v2),
        )),
    ]
}

/// One stored payload in today's shape, by the same upcasters the event store
/// applies, for readers of the log that do not load aggregates (the projectors).
pub fn upcast_payload(event_type: &str, event_version: &str, payload: Value) -> Value {
    let mut event = SerializedEvent {
        aggregate_id: String::new(),
        sequence: 0,
        aggregate_type: String::new(),
        event_type: event_type.to_owned(),
        event_version: event_version.to_owned(),
        payload,
        metadata: Value::Null,
    };
    for upcaster in event_upcasters() {
        if upcaster.can_upcast(&event.event_type, &event.event_version) {
            event = upcaster.upcast(event);
        }
    }
    event.payload
}

/// `OrderPlaced` 2.0 → 3.0: the same payload. 3.0 lets `url` be null when the
/// order follows a catalog product (`product_id`); every 2.0 order follows a page,
/// so its `url` is set and it has no `product_id`.
pub fn order_placed_v2_to_v3(payload: Value) -> Value {
    payload
}

/// `TargetReached` 1.0 → 2.0: `previous` is unknown (`null`).
pub fn target_reached_v1_to_v2(payload: Value) -> Value {
    let Value::Object(mut envelope) = payload else {
        return payload;
    };
    if let Some(Value::Object(fields)) = envelope.get_mut("TargetReached") {
        fields.entry("previous").or_insert(Value::Null);
    }
    Value::Object(envelope)
}

/// `UserRegistered` 1.0 → 2.0: the password hash is dropped.
pub fn user_registered_v1_to_v2(payload: Value) -> Value {
    let Value::Object(mut envelope) = payload else {
        return payload;
    };
    if let Some(Value::Object(fields)) = envelope.get_mut("UserRegistered") {
        fields.remove("password_hash");
    }
    Value::Object(envelope)
}

/// `PasswordChanged` 1.0 (`{"PasswordChanged": {"password_hash": …}}`) → 2.0
/// (`"PasswordChanged"`).
pub fn password_changed_v1_to_v2(payload: Value) -> Value {
    match &payload {
        Value::Object(envelope) if envelope.contains_key("PasswordChanged") => {
            Value::String("PasswordChanged".to_owned())
        }
        _ => payload,
    }
}

/// Turns a stored `OrderPlaced` 1.0 payload into the 2.0 shape: the flat
/// `target_price` and `currency` become `target: {amount, currency}`.
///
/// The function cannot fail (the upcaster interface has no error). A payload that
/// does not look like 1.0 is returned unchanged, so deserialising it fails loudly
/// with the real payload in the message instead of being silently "repaired".
pub fn order_placed_v1_to_v2(payload: Value) -> Value {
    let Value::Object(mut envelope) = payload else {
        return payload;
    };
    if let Some(Value::Object(fields)) = envelope.get_mut("OrderPlaced") {
        nest_flat_target_price(fields);
    }
    Value::Object(envelope)
}

fn nest_flat_target_price(fields: &mut Map<String, Value>) {
    if fields.contains_key("target") {
        return;
    }
    let (Some(target_price), Some(currency)) = (fields.get("target_price"), fields.get("currency"))
    else {
        return;
    };
    // 1.0 wrote the amount as a string; a number is also carried over as the
    // string of its digits rather than guessed at.
    let amount = match target_price {
        Value::Number(number) => Value::String(number.to_string()),
        other => other.clone(),
    };
    let target = serde_json::json!({ "amount": amount, "currency": currency });
    fields.remove("target_price");
    fields.remove("currency");
    fields.insert("target".to_owned(), target);
}

#[cfg(test)]
mod tests {
    use cqrs_es::persist::SerializedEvent;
    use serde_json::json;

    use super::*;
    use crate::ids::{OrderId, UserId};
    use crate::money::{Currency, Money};
    use crate::order::{OrderEvent, ProductUrl};

    const ORDER_ID: &str = "0192f1a8-0000-7000-8000-000000000001";
    const OWNER: &str = "0192f1a8-0000-7000-8000-000000000002";

    fn stored_order_placed(event_version: &str, payload: Value) -> SerializedEvent {
        SerializedEvent::new(
            ORDER_ID.to_owned(),
            1,
            "order".to_owned(),
            "OrderPlaced".to_owned(),
            event_version.to_owned(),
            payload,
            json!({"actor": format!("user:{OWNER}")}),
        )
    }

    fn version_one_payload() -> Value {
        json!({"OrderPlaced": {
            "order_id": ORDER_ID,
            "owner": OWNER,
            "url": "https://shop.example.com/p/kettle-42",
            "target_price": "3199.00",
            "currency": "UAH",
            "check_interval_secs": 3600,
            "selector": ".price",
        }})
    }

    fn expected_event() -> OrderEvent {
        OrderEvent::OrderPlaced {
            order_id: ORDER_ID.parse::<OrderId>().unwrap(),
            owner: OWNER.parse::<UserId>().unwrap(),
            url: Some(ProductUrl::parse("https://shop.example.com/p/kettle-42").unwrap()),
            product_id: None,
            target: Money::parse("3199.00", Currency::UAH).unwrap(),
            check_interval_secs: 3600,
            selector: Some(".price".to_owned()),
        }
    }

    /// The upcaster of `OrderPlaced`, the first one registered.
    fn the_upcaster() -> Box<dyn EventUpcaster> {
        let mut upcasters = event_upcasters();
        assert!(upcasters[0].can_upcast("OrderPlaced", "1.0"));
        upcasters.remove(0)
    }

    #[test]
    fn a_version_one_order_placed_reads_as_the_version_two_event() {
        let upcaster = the_upcaster();
        let stored = stored_order_placed("1.0", version_one_payload());
        assert!(upcaster.can_upcast(&stored.event_type, &stored.event_version));

        let upcast = upcaster.upcast(stored);

        // The upcaster writes its version in full semantic form; "2.0.0" and the
        // "2.0" that new events are stored with are the same version to cqrs-es.
        assert_eq!(upcast.event_version, "2.0.0");
        assert!(!upcaster.can_upcast(&upcast.event_type, &upcast.event_version));
        assert_eq!(upcast.event_type, "OrderPlaced");
        assert_eq!(upcast.sequence, 1);
        assert_eq!(upcast.metadata, json!({"actor": format!("user:{OWNER}")}));
        let event: OrderEvent = serde_json::from_value(upcast.payload).unwrap();
        assert_eq!(event, expected_event());
    }

    #[test]
    fn a_version_one_payload_would_not_deserialise_without_the_upcaster() {
        assert!(serde_json::from_value::<OrderEvent>(version_one_payload()).is_err());
    }

    #[test]
    fn current_and_other_events_are_left_alone() {
        let upcaster = the_upcaster();
        assert!(!upcaster.can_upcast("OrderPlaced", "2.0"));
        assert!(!upcaster.can_upcast("OrderPlaced", "2.1"));
        assert!(!upcaster.can_upcast("TargetChanged", "1.0"));
        assert!(!upcaster.can_upcast("UserRegistered", "1.0"));
    }

    #[test]
    fn a_version_two_payload_survives_the_function_unchanged() {
        let current = serde_json::to_value(expected_event()).unwrap();
        assert_eq!(order_placed_v1_to_v2(current.clone()), current);
    }

    #[test]
    fn an_amount_stored_as_a_number_or_without_minor_digits_is_carried_over() {
        let mut payload = version_one_payload();
        payload["OrderPlaced"]["target_price"] = json!(3199);
        let event: OrderEvent = serde_json::from_value(order_placed_v1_to_v2(payload)).unwrap();
        assert_eq!(event, expected_event());

        let mut payload = version_one_payload();
        payload["OrderPlaced"]["target_price"] = json!("3199");
        let event: OrderEvent = serde_json::from_value(order_placed_v1_to_v2(payload)).unwrap();
        assert_eq!(event, expected_event());
    }

    #[test]
    fn an_unexpected_payload_is_returned_unchanged() {
        for payload in [
            json!("OrderPaused"),
            json!({"OrderPlaced": {"order_id": ORDER_ID}}),
            json!({"SomethingElse": {"target_price": "1", "currency": "UAH"}}),
        ] {
            assert_eq!(order_placed_v1_to_v2(payload.clone()), payload);
        }
    }

    #[test]
    fn order_placed_is_written_at_the_upcasters_version() {
        use cqrs_es::DomainEvent;
        assert_eq!(expected_event().event_version(), ORDER_PLACED_EVENT_VERSION);
    }

    #[test]
    fn user_credential_events_of_version_1_lose_their_password_hash() {
        use crate::email::EmailAddress;
        use crate::user::UserEvent;

        let registered = user_registered_v1_to_v2(json!({"UserRegistered": {
            "user_id": OWNER, "email": "Ann@Example.com", "password_hash": "$argon2id$v=19$..."
        }}));
        assert_eq!(
            serde_json::from_value::<UserEvent>(registered).unwrap(),
            UserEvent::UserRegistered {
                user_id: OWNER.parse::<UserId>().unwrap(),
                email: EmailAddress::parse("Ann@Example.com").unwrap(),
            }
        );
        let changed = password_changed_v1_to_v2(
            json!({"PasswordChanged": {"password_hash": "$argon2id$v=19$..."}}),
        );
        assert_eq!(
            serde_json::from_value::<UserEvent>(changed).unwrap(),
            UserEvent::PasswordChanged
        );
        // Version 2.0 payloads pass through unchanged.
        assert_eq!(
            password_changed_v1_to_v2(json!("PasswordChanged")),
            json!("PasswordChanged")
        );
        let upcasters = event_upcasters();
        assert!(upcasters
            .iter()
            .any(|u| u.can_upcast("UserRegistered", "1.0")));
        assert!(!upcasters
            .iter()
            .any(|u| u.can_upcast("UserRegistered", "2.0")));
        assert!(upcasters
            .iter()
            .any(|u| u.can_upcast("PasswordChanged", "1.0")));
    }

    #[test]
    fn a_payload_read_from_the_log_is_upcast_like_a_loaded_one() {
        let upcast = upcast_payload("OrderPlaced", "1.0", version_one_payload());
        let event: OrderEvent = serde_json::from_value(upcast).unwrap();
        assert_eq!(event, expected_event());

        let current = serde_json::to_value(expected_event()).unwrap();
        assert_eq!(
            upcast_payload("OrderPlaced", ORDER_PLACED_EVENT_VERSION, current.clone()),
            current
        );
        let other = json!({"OrderPaused": null});
        assert_eq!(upcast_payload("OrderPaused", "1.0", other.clone()), other);
    }

    #[test]
    fn target_reached_1_0_reads_with_an_unknown_previous_price() {
        let check_id = "0192f1a8-0000-7000-8000-000000000009";
        let stored = json!({"TargetReached": {
            "check_id": check_id,
            "price": {"amount": "3100.00", "currency": "UAH"},
            "target": {"amount": "3199.00", "currency": "UAH"},
        }});
        let upcast = upcast_payload("TargetReached", "1.0", stored);
        let event: OrderEvent = serde_json::from_value(upcast).unwrap();
        assert_eq!(
            event,
            OrderEvent::TargetReached {
                check_id: check_id.parse().unwrap(),
                previous: None,
                price: Money::parse("3100", Currency::UAH).unwrap(),
                target: Money::parse("3199", Currency::UAH).unwrap(),
            }
        );
        // A 2.0 payload passes untouched.
        let current = serde_json::to_value(&event).unwrap();
        assert_eq!(
            upcast_payload("TargetReached", "2.0", current.clone()),
            current
        );
    }
}
