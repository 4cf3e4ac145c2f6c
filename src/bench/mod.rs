//! `orders bench …`: the benchmarks, each beside a ceiling measured in the same run
//! (BRIEF's targets; README, "Measuring"). One module per group, all standing on
//! `setup` and on nothing of one another; `tests/benchmarks.rs` runs each once at a
//! tiny size.

use clap::Subcommand;

mod audit;
mod checks;
mod commands;
mod live;
mod log;
mod pages;
mod setup;
mod shop;

#[derive(Debug, Subcommand)]
pub(crate) enum BenchCommand {
    /// `POST /orders` throughput beside pgbench ceilings of the same run.
    Commands(commands::CommandsBenchArgs),
    /// Relay catch-up beside the raw acknowledged-publish rate of the same server.
    Relay(log::RelayBenchArgs),
    /// Store→stream lag and command→view latency at a steady command rate.
    Pipeline(log::PipelineBenchArgs),
    /// Rebuilding a view from a long log, beside the raw read rate of the stream.
    Replay(log::ReplayBenchArgs),
    /// A command on an order with 10,000 past checks beside one on a new order.
    OrderLatency(checks::OrderLatencyArgs),
    /// Checks per second through the whole pipeline beside hosts ÷ spacing.
    Checks(checks::ChecksBenchArgs),
    /// The resident memory of each service, idle.
    IdleMemory(checks::IdleMemoryArgs),
    /// `orders audit verify` over a million events beside `COPY | sha256sum`.
    AuditVerify(audit::AuditVerifyBenchArgs),
    /// `GET /live`: many clients, commit → client latency beside the NATS floor.
    Live(live::LiveBenchArgs),
    /// The console's pages with 10,000 orders in the views, beside `GET /healthz`.
    Pages(pages::PagesBenchArgs),
    /// 2,000 buyers racing for 500 units: settled purchases/s beside placement alone.
    FlashSale(shop::FlashSaleArgs),
    /// `POST /purchases` at a steady rate: placed → settled beside the placement's own
    /// read-your-writes.
    Purchases(shop::PurchasesBenchArgs),
}

pub(crate) async fn run(command: BenchCommand) -> anyhow::Result<()> {
    match command {
        BenchCommand::Commands(args) => commands::commands(args).await,
        BenchCommand::Relay(args) => log::relay(args).await,
        BenchCommand::Pipeline(args) => log::pipeline(args).await,
        BenchCommand::Replay(args) => log::replay(args).await,
        BenchCommand::OrderLatency(args) => checks::order_latency(args).await,
        BenchCommand::Checks(args) => checks::checks(args).await,
        BenchCommand::IdleMemory(args) => checks::idle_memory(args).await,
        BenchCommand::AuditVerify(args) => audit::audit_verify(args).await,
        BenchCommand::Live(args) => live::live(args).await,
        BenchCommand::Pages(args) => pages::pages(args).await,
        BenchCommand::FlashSale(args) => shop::flash_sale(args).await,
        BenchCommand::Purchases(args) => shop::purchases(args).await,
    }
}
