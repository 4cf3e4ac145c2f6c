//! The API against a real PostgreSQL: one test binary for every API test, so it
//! links once.

mod accounts;
mod admin;
mod console;
mod console_accounts;
mod console_admin;
mod console_shop;
mod helpers;
mod hostile_input;
mod live;
mod operations;
mod orders;
mod relay;
mod shop;
mod snapshots;
mod views;
mod writer_connections;
