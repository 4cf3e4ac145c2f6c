//! The library half of the `orders` binary: the argument groups every subcommand
//! shares ([`cli_args`]) and `orders serve` ([`serve`]: a plan built from the
//! arguments, run as one set of tasks under one cancellation token), so that a test
//! runs a service exactly as the binary does, in its own process.

pub mod cli_args;
pub mod serve;
