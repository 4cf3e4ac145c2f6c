//! The Orders domain: aggregates, commands, events and the rules they enforce.
//!
//! Pure logic: this crate knows nothing of databases, HTTP, NATS or clocks. The
//! command side loads an aggregate from its events, hands it a command, and stores
//! the events it decides; everything else reads those events.
//!
//! - [`money`], [`ids`], [`email`], [`password_policy`]: values checked at the edge.
//! - [`user`], [`order`], [`price_check`], [`product`] and [`purchase`]: the
//!   aggregates (`cqrs_es::Aggregate`).
//! - [`upcasting`]: how events stored in older shapes are read today.

pub mod email;
pub mod ids;
pub mod money;
pub mod order;
pub mod password_policy;
pub mod price_check;
pub mod product;
pub mod purchase;
pub mod upcasting;
pub mod user;
