//! The application commands: one function per use case of the write side, shared by
//! whoever issues it (the HTTP handlers, the workers, the CLI). Each loads what it
//! needs, lets the aggregate decide with the caller's metadata, appends, and answers
//! a receipt or a [`CommandError`] that says what kind of failure it was, so that
//! each caller maps it once: a handler to a problem document, a worker to done,
//! retry or give up. A refusal is never retried; a store failure may be.
//!
//! The modules by aggregate: `accounts` (and `mail_links`, the links of our mails),
//! `orders` (tracking orders), `price_checks`, `catalog` (products), `purchases`,
//! and `stock` (the purchase saga's batched stock requests). Also the signed, expiring tokens of
//! the links in mails, which the e-mail worker mints and the API checks.
//!
//! Reads are not here: they are the query functions of `orders_projectors::query`,
//! served from the views.

pub mod accounts;
pub mod catalog;
mod error;
pub mod mail_links;
pub mod orders;
pub mod price_checks;
pub mod purchases;
pub mod signed_tokens;
pub mod stock;

pub use error::{CommandError, StoreFailure};

use orders_store::event_store::CommandMetadata;
use uuid::Uuid;

/// The request (HTTP or console) that carries a command, for the metadata of what it
/// stores when the command itself decides the actor (a new user registering,
/// a mail's link followed as its user).
#[derive(Debug, Clone, Copy)]
pub struct RequestIds {
    pub correlation_id: Uuid,
    pub request_id: Uuid,
}

impl RequestIds {
    /// The metadata of a command this request carries for `actor`.
    pub fn metadata(self, actor: impl Into<String>) -> CommandMetadata {
        CommandMetadata {
            actor: actor.into(),
            correlation_id: self.correlation_id,
            causation_id: self.request_id.to_string(),
            request_id: self.request_id,
            idempotency_key: None,
        }
    }
}
