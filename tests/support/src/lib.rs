//! What the tests (and the benchmarks) of every crate stand up, kept out of the
//! product's libraries: a real nats-server with JetStream ([`nats_server`]), a
//! local shop of fixture pages ([`fixture_shop`]) and a fresh, migrated database on
//! the test PostgreSQL server ([`database`]), and orders placed as fixtures
//! ([`orders`]), the shop's fixtures and invariant ([`shop`]), and [`wait::eventually`] for what another task does. A dev-dependency of the crates whose
//! tests use it; the `orders` binary links it only for `orders bench`.

pub mod database;
pub mod fixture_shop;
pub mod nats_server;
pub mod orders;
pub mod shop;
pub mod wait;
