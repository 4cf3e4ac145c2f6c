//! Workers do the side effects of the log: the scheduler, the scraper and the
//! e-mail worker (next issues). This crate starts with what makes their effects
//! idempotent: every mail's Message-ID is derived from the event that caused it, so
//! a redelivered event can only ever produce the same mail.

pub mod catalog_policy;
pub mod consumer;
pub mod email_worker;
pub mod extract;
pub mod fetch;
pub mod host_gate;
pub mod json_ld;
pub mod mail;
pub mod policy;
pub mod price_text;
pub mod robots;
pub mod saga;
pub mod scheduler;
pub mod scraper;
pub mod service;
pub mod work_metadata;

use uuid::Uuid;

/// The Message-ID (RFC 5322, without the angle brackets) of the mail an event
/// causes: the same event always gives the same id, different events different ids.
/// `purpose` tells apart mails one event may cause (e.g. `price-alert`).
pub fn message_id(event_id: Uuid, purpose: &str, mail_domain: &str) -> String {
    let purpose: String = purpose
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .collect();
    format!("{}.{purpose}@{mail_domain}", event_id.simple())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_event_always_gives_the_same_message_id() {
        let event = Uuid::now_v7();
        assert_eq!(
            message_id(event, "price-alert", "orders.example"),
            message_id(event, "price-alert", "orders.example")
        );
        assert_ne!(
            message_id(event, "price-alert", "orders.example"),
            message_id(Uuid::now_v7(), "price-alert", "orders.example")
        );
        assert_ne!(
            message_id(event, "price-alert", "orders.example"),
            message_id(event, "verify-email", "orders.example")
        );
    }

    #[test]
    fn a_message_id_has_no_characters_that_would_break_the_header() {
        let id = message_id(Uuid::nil(), "a b<c>\r\n", "orders.example");
        assert_eq!(id, "00000000000000000000000000000000.abc@orders.example");
    }
}
