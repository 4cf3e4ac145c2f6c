//! The application commands: one function per use case of the write side, shared by
//! whoever issues it (the HTTP handlers, the workers, the CLI). Each loads what it
//! needs, lets the aggregate decide with the caller's metadata, appends, and answers
//! a receipt or a [`CommandError`] that says what kind of failure it was, so that
//! each caller maps it once: a handler to a problem document, a worker to done,
//! retry or give up. A refusal is never retried; a store failure may be.
//!
//! (Being gathered here use case by use case: the price checks, the mail links and
//! placing an order so far.) Also the
//! signed, expiring tokens of the links in mails, which the e-mail worker mints and
//! the API checks.

mod error;
pub mod mail_links;
pub mod orders;
pub mod price_checks;
pub mod signed_tokens;

pub use error::{CommandError, StoreFailure};
