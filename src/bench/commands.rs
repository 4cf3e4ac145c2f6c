//! `orders bench commands`: command throughput of `POST /orders` beside two ceilings
//! measured in the same run, on the same PostgreSQL server, at the same concurrency:
//!
//! 1. pgbench replaying the SQL statements one `POST /orders` issues: the guarded
//!    placement insert, and once per 100 orders the read of the owner's placement
//!    facts (the API caches them and the insert checks their version; the new
//!    order's stream is not read, see `EventStore::execute_on_new`), so the ratio
//!    shows what the HTTP service itself costs;
//! 2. pgbench inserting one event-sized row per transaction into a table with only a
//!    primary key: the floor price of one durable write.
//!
//! Everything runs against a fresh database that is dropped at the end. Benchmark
//! users are created in bulk with ids pgbench can compute from an integer
//! (`00000000-0000-7000-8000-<index in hex>`), so both the API and pgbench draw their
//! owners from registered users. Each API client moves to a fresh user after 100
//! orders (the per-user limit); pgbench spreads its orders over enough users that
//! none nears the limit.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Args;
use orders_command_api::AppState;
use orders_domain::order::MAX_ACTIVE_ORDERS_PER_USER;
use orders_store::statements::{self, Bound};

use super::setup::{
    bench_user_id, create_bench_users, median, place_order_request, tempdir, BenchApi,
    BenchDatabase, KeepAliveConnection, BENCH_USERS, BENCH_USER_ID_SQL,
};

#[derive(Debug, Args)]
pub(crate) struct CommandsBenchArgs {
    #[command(flatten)]
    database: orders::cli_args::DatabaseArgs,
    /// Concurrent clients, one measurement each.
    #[arg(long, value_delimiter = ',', default_values_t = vec![8, 32])]
    clients: Vec<u32>,
    /// Measured seconds per run (after a warm-up).
    #[arg(long, default_value_t = 10)]
    duration_secs: u64,
    /// Rounds of the three measurements, interleaved; the medians are reported.
    #[arg(long, default_value_t = 3)]
    rounds: u32,
    /// Warm-up seconds before each measured API run.
    #[arg(long, default_value_t = 2)]
    warmup_secs: u64,
    /// Keep the benchmark database afterwards (its name is printed), to look into it.
    #[arg(long)]
    keep_database: bool,
    /// The pgbench executable (PostgreSQL's server binaries directory has it).
    #[arg(long, env = "ORDERS_PGBENCH", default_value = "pgbench")]
    pgbench: PathBuf,
    /// Run the log as well (a nats-server of the benchmark's own, the relay woken by
    /// the API, the projectors), as in production, during every measurement.
    #[arg(long)]
    with_log: bool,
}

struct Measured {
    clients: u32,
    api_per_sec: f64,
    same_sql_per_sec: f64,
    one_row_per_sec: f64,
}

pub(crate) async fn commands(args: CommandsBenchArgs) -> anyhow::Result<()> {
    let database = BenchDatabase::create(args.database.database_url.as_deref()).await?;
    let outcome = run_in_database(&args, &database.url).await;
    database.finish(args.keep_database).await?;
    let measured = outcome?;
    println!();
    println!(
        "POST /orders, durable, on the same server and concurrency as the ceilings \
         (medians of {} interleaved rounds of {} s):",
        args.rounds, args.duration_secs
    );
    println!(
        "{:>7}  {:>14}  {:>16}  {:>15}  {:>12}  {:>11}",
        "clients", "api orders/s", "same-SQL tx/s", "one-row tx/s", "api/same-SQL", "api/one-row"
    );
    for m in &measured {
        println!(
            "{:>7}  {:>14.0}  {:>16.0}  {:>15.0}  {:>11.0}%  {:>10.0}%",
            m.clients,
            m.api_per_sec,
            m.same_sql_per_sec,
            m.one_row_per_sec,
            100.0 * m.api_per_sec / m.same_sql_per_sec,
            100.0 * m.api_per_sec / m.one_row_per_sec,
        );
    }
    println!("targets (BRIEF): api/same-SQL >= 90%, api/one-row >= 50%");
    Ok(())
}

async fn run_in_database(
    args: &CommandsBenchArgs,
    bench_url: &str,
) -> anyhow::Result<Vec<Measured>> {
    let max_clients = args.clients.iter().copied().max().unwrap_or(8);
    let pool = orders_store::database::connect(bench_url, max_clients.max(8)).await?;
    orders_store::database::migrate(&pool).await?;
    create_bench_users(&pool).await?;
    sqlx::query(
        "CREATE TABLE bench_one_row (id uuid PRIMARY KEY, payload jsonb NOT NULL, metadata jsonb NOT NULL)",
    )
    .execute(&pool)
    .await
    .context("creating the one-row table")?;

    let log = if args.with_log {
        Some(super::setup::BenchLog::start(bench_url, true).await?)
    } else {
        None
    };
    let api = BenchApi::start(&pool, log.as_ref()).await?;

    let scripts = tempdir()?;
    let same_sql_script = scripts.join("same-sql.pgbench");
    let one_row_script = scripts.join("one-row.pgbench");
    std::fs::write(&one_row_script, ONE_ROW_SCRIPT)?;

    let next_user = Arc::new(AtomicU64::new(1));
    let mut measured = Vec::new();
    for &clients in &args.clients {
        // The three measurements are interleaved, round after round, so that a slow
        // moment of a shared machine falls on all of them; the medians are reported.
        let mut rounds = Vec::new();
        for round in 1..=args.rounds {
            eprintln!(
                "{clients} clients, round {round}/{}: POST /orders for {} s (+{} s warm-up)",
                args.rounds, args.duration_secs, args.warmup_secs
            );
            let api_orders =
                drive_api(&api.state, api.addr, clients, args, next_user.clone()).await?;
            let api_per_sec = api_orders as f64 / args.duration_secs as f64;

            // pgbench's owners: fresh users, enough that none nears the limit of 100.
            let expected = (api_orders as f64 * 4.0).max(1000.0);
            let users = ((expected / 40.0).ceil() as u64).max(u64::from(clients));
            let first = next_user.fetch_add(users, Ordering::SeqCst);
            if first + users > BENCH_USERS as u64 {
                anyhow::bail!("the benchmark ran out of users; shorten --duration-secs");
            }
            std::fs::write(
                &same_sql_script,
                same_sql_script_text(first, first + users - 1),
            )?;
            eprintln!("{clients} clients, round {round}: pgbench replaying one command's SQL");
            let same_sql_per_sec = pgbench(
                &args.pgbench,
                bench_url,
                &same_sql_script,
                clients,
                args.duration_secs,
            )
            .await?;
            eprintln!("{clients} clients, round {round}: pgbench inserting one event-sized row");
            let one_row_per_sec = pgbench(
                &args.pgbench,
                bench_url,
                &one_row_script,
                clients,
                args.duration_secs,
            )
            .await?;
            eprintln!(
                "{clients} clients, round {round}: api {api_per_sec:.0}/s, same-SQL {same_sql_per_sec:.0}/s, one-row {one_row_per_sec:.0}/s"
            );
            rounds.push((api_per_sec, same_sql_per_sec, one_row_per_sec));
        }
        measured.push(Measured {
            clients,
            api_per_sec: median(rounds.iter().map(|r| r.0).collect()),
            same_sql_per_sec: median(rounds.iter().map(|r| r.1).collect()),
            one_row_per_sec: median(rounds.iter().map(|r| r.2).collect()),
        });
    }
    api.stop().await?;
    if let Some(log) = log {
        log.stop().await;
    }
    pool.close().await;
    let _ = std::fs::remove_dir_all(&scripts);
    Ok(measured)
}

/// Runs `clients` API clients for the warm-up and the measured time; returns the
/// orders created in the measured time.
async fn drive_api(
    state: &Arc<AppState>,
    addr: SocketAddr,
    clients: u32,
    args: &CommandsBenchArgs,
    next_user: Arc<AtomicU64>,
) -> anyhow::Result<u64> {
    let started = Instant::now();
    let measure_from = started + Duration::from_secs(args.warmup_secs);
    let measure_until = measure_from + Duration::from_secs(args.duration_secs);
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let state = state.clone();
        let next_user = next_user.clone();
        tasks.push(tokio::spawn(async move {
            let mut connection = KeepAliveConnection::open(addr).await?;
            let mut counted = 0_u64;
            let mut placed_for_user = u32::MAX;
            let mut request = Vec::new();
            loop {
                let now = Instant::now();
                if now >= measure_until {
                    return Ok::<u64, anyhow::Error>(counted);
                }
                if placed_for_user >= MAX_ACTIVE_ORDERS_PER_USER {
                    let index = next_user.fetch_add(1, Ordering::SeqCst);
                    if index > BENCH_USERS as u64 {
                        anyhow::bail!("the benchmark ran out of users; shorten --duration-secs");
                    }
                    let token = state.access_tokens.issue(bench_user_id(index as i64), 0)?;
                    request = place_order_request(addr, &token);
                    placed_for_user = 0;
                }
                let status = connection.exchange(&request).await?;
                if status != 201 {
                    anyhow::bail!("POST /orders answered {status}");
                }
                placed_for_user += 1;
                let finished = Instant::now();
                if finished >= measure_from && finished < measure_until {
                    counted += 1;
                }
            }
        }));
    }
    let mut total = 0;
    for task in tasks {
        total += task.await??;
    }
    Ok(total)
}

/// The statements of one `POST /orders` (the store's own, with the list of what
/// each binds), with pgbench expressions in place of the parameters: the owner
/// drawn from `first..=last`, fresh ids, the request's order.
fn same_sql_script_text(first: u64, last: u64) -> String {
    let owner = BENCH_USER_ID_SQL;
    // A fresh order id per transaction, computed by an immutable expression: a
    // volatile one (gen_random_uuid()) in a WHERE clause would defeat the index.
    let order_id = "(md5((:r)::text)::uuid::text)";
    let value = |bound: Bound| match bound {
        Bound::AggregateTypes => "ARRAY['order']".to_owned(),
        Bound::AggregateIds => format!("ARRAY[{order_id}]"),
        Bound::Sequences => "ARRAY[1::bigint]".to_owned(),
        Bound::EventTypes => "ARRAY['OrderPlaced']".to_owned(),
        Bound::EventVersions => "ARRAY['2.0']".to_owned(),
        Bound::Payloads => format!(
            "ARRAY[jsonb_build_object('OrderPlaced', jsonb_build_object('order_id', {order_id}, \
             'owner', {owner}, 'url', 'https://shop.example.com/product/42', \
             'target', jsonb_build_object('amount', '3199.00', 'currency', 'UAH'), \
             'check_interval_secs', 3600, 'selector', null))]"
        ),
        Bound::Metadata => format!(
            "ARRAY[jsonb_build_object('actor', 'user:' || {owner}, \
             'correlation_id', gen_random_uuid()::text, 'causation_id', gen_random_uuid()::text, \
             'request_id', gen_random_uuid()::text)]"
        ),
        // A seal of the real length (a version byte and an HMAC-SHA-256): pgbench
        // cannot compute the MAC, but the row stores the same bytes.
        Bound::Seals => format!("ARRAY['\\x01{}'::bytea]", "00".repeat(32)),
        Bound::Owner => owner.to_owned(),
        Bound::PasswordHash => "NULL".to_owned(),
        Bound::CredentialsVersion => "0".to_owned(),
    };
    let [facts_read, insert] = statements::placement().map(|statement| {
        let mut sql = statement.sql().to_owned();
        // From the last parameter down, so that `$1` never matches inside `$10`.
        for (index, bound) in statement.binds().iter().enumerate().rev() {
            sql = sql.replace(&format!("${}", index + 1), &value(*bound));
        }
        assert!(
            !sql.contains('$'),
            "a statement has a parameter the replay does not fill: {sql}"
        );
        sql
    });
    // A client reads its user's placement facts once, then places on cached facts
    // (the insert's guard has the last word); one read per 100 orders, as in the
    // API run.
    format!(
        "\\set u random({first}, {last})\n\\set r random(1, 9000000000000000000)\n\\set read random(1, 100)\n\\if :read = 1\n{facts_read};\n\\endif\n{insert};\n"
    )
}

/// One event-sized row per transaction, into a table with only a primary key.
const ONE_ROW_SCRIPT: &str = "INSERT INTO bench_one_row (id, payload, metadata) VALUES (gen_random_uuid(),
  jsonb_build_object('OrderPlaced', jsonb_build_object('order_id', gen_random_uuid(), 'owner', gen_random_uuid(),
    'url', 'https://shop.example.com/product/42', 'target', jsonb_build_object('amount', '3199.00', 'currency', 'UAH'),
    'check_interval_secs', 3600, 'selector', null)),
  jsonb_build_object('actor', 'user:' || gen_random_uuid(), 'correlation_id', gen_random_uuid()::text,
    'causation_id', gen_random_uuid()::text, 'request_id', gen_random_uuid()::text));
";

async fn pgbench(
    pgbench: &PathBuf,
    database_url: &str,
    script: &PathBuf,
    clients: u32,
    duration_secs: u64,
) -> anyhow::Result<f64> {
    let output = tokio::process::Command::new(pgbench)
        .arg("--no-vacuum")
        .args(["--protocol", "prepared"])
        .args(["--client", &clients.to_string()])
        .args(["--jobs", "2"])
        .args(["--time", &duration_secs.to_string()])
        .arg("--file")
        .arg(script)
        .arg(database_url)
        .output()
        .await
        .with_context(|| format!("running {} (set ORDERS_PGBENCH)", pgbench.display()))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        anyhow::bail!(
            "pgbench failed: {}",
            String::from_utf8_lossy(&output.stderr)
                .lines()
                .last()
                .unwrap_or("")
        );
    }
    stdout
        .lines()
        .find_map(|line| {
            line.strip_prefix("tps = ")
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|tps| tps.parse::<f64>().ok())
        })
        .with_context(|| format!("no tps in pgbench's output: {stdout}"))
}
