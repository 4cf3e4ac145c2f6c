//! `orders bench audit-verify`: `orders audit verify` over a long relayed log,
//! beside the ceiling of the same run: exporting the same rows (`COPY ... TO
//! STDOUT`, the events in log order and the chain's links) piped into `sha256sum`.

use std::process::Stdio;
use std::time::Instant;

use anyhow::Context as _;
use async_nats::jetstream;
use clap::Args;
use futures::StreamExt as _;
use orders_nats::ensure_topology;
use orders_relay::audit_chain;
use orders_test_support::nats_server::NatsServer;
use sqlx::PgPool;
use tokio::io::AsyncWriteExt as _;

use super::setup::{bench_audit_key, median, BenchDatabase};
use super::setup::{relay_all, store_log};

#[derive(Debug, Args)]
pub(crate) struct AuditVerifyBenchArgs {
    #[command(flatten)]
    database: orders::cli_args::DatabaseArgs,
    /// Events in the log (rounded down to whole users of 20 events).
    #[arg(long, default_value_t = 1_000_000)]
    events: u64,
    /// Interleaved rounds of both measurements; the medians are reported.
    #[arg(long, default_value_t = 3)]
    rounds: u32,
    #[arg(long)]
    keep_database: bool,
}

/// What `verify` reads, as `COPY` exports it.
const EXPORTS: [&str; 2] = [
    "COPY (SELECT * FROM events ORDER BY tx_id, global_position) TO STDOUT",
    "COPY (SELECT * FROM audit_chain ORDER BY chain_position) TO STDOUT",
];

/// Seconds to export [`EXPORTS`] and drop the bytes: what reading alone costs.
async fn export_only(pool: &PgPool) -> anyhow::Result<f64> {
    let mut connection = pool.acquire().await?;
    let started = Instant::now();
    for export in EXPORTS {
        let mut rows = connection.copy_out_raw(export).await?;
        while let Some(chunk) = rows.next().await {
            chunk?;
        }
    }
    Ok(started.elapsed().as_secs_f64())
}

/// Seconds to export [`EXPORTS`] into `sha256sum`, and the bytes exported.
async fn export_into_sha256sum(pool: &PgPool) -> anyhow::Result<(f64, u64)> {
    let mut connection = pool.acquire().await?;
    let started = Instant::now();
    let mut sha256sum = tokio::process::Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .context("starting sha256sum")?;
    let mut input = sha256sum.stdin.take().context("sha256sum's input")?;
    let mut bytes = 0;
    for export in EXPORTS {
        let mut rows = connection.copy_out_raw(export).await?;
        while let Some(chunk) = rows.next().await {
            let chunk = chunk?;
            bytes += chunk.len() as u64;
            input.write_all(&chunk).await?;
        }
    }
    drop(input);
    anyhow::ensure!(sha256sum.wait().await?.success(), "sha256sum failed");
    Ok((started.elapsed().as_secs_f64(), bytes))
}

pub(crate) async fn audit_verify(args: AuditVerifyBenchArgs) -> anyhow::Result<()> {
    let database = BenchDatabase::create(args.database.database_url.as_deref()).await?;
    let outcome = async {
        let pool = orders_store::database::connect(&database.url, 8).await?;
        orders_store::database::migrate(&pool).await?;
        eprintln!("storing {} sealed events", args.events);
        let stored = store_log(&pool, args.events).await?;
        let server = NatsServer::start();
        let jetstream = jetstream::new(async_nats::connect(server.url()).await?);
        ensure_topology(&jetstream, 1).await?;
        eprintln!("relaying them (recording the chain)");
        let (relayed, rate) = relay_all(&pool, &jetstream, 1000, stored).await?;
        anyhow::ensure!(relayed == stored, "relayed {relayed} of {stored} events");
        eprintln!("relayed at {rate:.0} events/s");
        sqlx::query("VACUUM ANALYZE events").execute(&pool).await?;
        sqlx::query("VACUUM ANALYZE audit_chain")
            .execute(&pool)
            .await?;
        let heads = audit_chain::head_store(&jetstream).await?;
        let key = bench_audit_key();
        let mut rounds = Vec::new();
        for round in 1..=args.rounds {
            let (ceiling, bytes) = export_into_sha256sum(&pool).await?;
            let export = export_only(&pool).await?;
            let started = Instant::now();
            let report = audit_chain::verify(&pool, &heads, &key).await?;
            let verify = started.elapsed().as_secs_f64();
            anyhow::ensure!(
                report.verified() && report.chained == stored,
                "the benchmark's log did not verify: {report:?}"
            );
            eprintln!(
                "round {round}: verify {verify:.2} s, COPY | sha256sum {ceiling:.2} s ({:.0} MiB), COPY alone {export:.2} s",
                bytes as f64 / 1_048_576.0
            );
            rounds.push((verify, ceiling, bytes, export));
        }
        pool.close().await;
        anyhow::Ok((stored, rounds))
    }
    .await;
    database.finish(args.keep_database).await?;
    let (stored, rounds) = outcome?;
    let verify = median(rounds.iter().map(|round| round.0).collect());
    let ceiling = median(rounds.iter().map(|round| round.1).collect());
    let mib = rounds
        .first()
        .map_or(0.0, |round| round.2 as f64 / 1_048_576.0);
    let export = median(rounds.iter().map(|round| round.3).collect());
    println!();
    println!(
        "orders audit verify over {stored} relayed events (medians of {} interleaved rounds):",
        args.rounds
    );
    println!(
        "{:>10}  {:>20}  {:>10}  {:>8}  {:>14}",
        "verify s", "COPY | sha256sum s", "exported", "ratio", "COPY alone s"
    );
    println!(
        "{verify:>10.2}  {ceiling:>20.2}  {mib:>6.0} MiB  {:>7.2}x  {export:>14.2}",
        verify / ceiling
    );
    println!("target: ratio <= 3x");
    Ok(())
}
