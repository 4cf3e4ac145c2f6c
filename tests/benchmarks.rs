//! Every `orders bench` at a tiny size: a smoke run that asserts only that it
//! completes and reports its figures beside its target. Benchmarks are measured by
//! hand (README, "Measuring"); these runs exist so that none of them breaks
//! unnoticed, as `bench commands` once did when the placement statement gained a
//! parameter.

mod common;
use common::orders;

/// Runs `orders bench <args>` against the test servers and answers what it printed.
fn bench(args: &[&str]) -> String {
    let database_url = std::env::var("ORDERS_TEST_DATABASE_URL")
        .expect("ORDERS_TEST_DATABASE_URL is not set: run the tests with `make test`");
    let pgbench = std::env::var("ORDERS_TEST_PG_BINDIR")
        .map(|bindir| format!("{bindir}/pgbench"))
        .unwrap_or_else(|_| "pgbench".to_owned());
    let output = orders()
        .arg("bench")
        .args(args)
        .env("ORDERS_DATABASE_URL", database_url)
        .env("ORDERS_PGBENCH", pgbench)
        .env("ORDERS_LOG", "warn")
        .output()
        .expect("running orders bench");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "orders bench {} failed ({}):\n{stdout}\n{}",
        args.join(" "),
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// Asserts the report names its target, as every benchmark's does.
fn reports_a_target(report: &str) {
    assert!(
        report.contains("target"),
        "no target in the report:\n{report}"
    );
}

#[test]
fn bench_commands_completes_beside_its_pgbench_ceilings() {
    let report = bench(&[
        "commands",
        "--clients",
        "2",
        "--duration-secs",
        "1",
        "--warmup-secs",
        "0",
        "--rounds",
        "1",
    ]);
    reports_a_target(&report);
    assert!(report.contains("api/same-SQL"), "{report}");
}

#[test]
fn bench_relay_completes() {
    reports_a_target(&bench(&["relay", "--events", "200", "--rounds", "1"]));
}

#[test]
fn bench_pipeline_completes() {
    reports_a_target(&bench(&[
        "pipeline",
        "--rate",
        "20",
        "--duration-secs",
        "1",
        "--warmup-secs",
        "0",
        "--connections",
        "2",
    ]));
}

#[test]
fn bench_live_completes() {
    reports_a_target(&bench(&[
        "live",
        "--clients",
        "5",
        "--rate",
        "20",
        "--duration-secs",
        "1",
        "--warmup-secs",
        "0",
    ]));
}

#[test]
fn bench_replay_completes() {
    reports_a_target(&bench(&["replay", "--events", "500"]));
}

#[test]
fn bench_order_latency_completes() {
    let report = bench(&["order-latency", "--past-checks", "50", "--samples", "20"]);
    assert!(report.contains("with snapshots"), "{report}");
}

#[test]
fn bench_checks_completes() {
    let report = bench(&[
        "checks",
        "--hosts",
        "2",
        "--orders",
        "4",
        "--duration-secs",
        "2",
        "--spacing-ms",
        "50",
    ]);
    assert!(report.contains("ceiling hosts / spacing"), "{report}");
}

#[test]
fn bench_idle_memory_completes() {
    let report = bench(&["idle-memory", "--idle-secs", "1"]);
    assert!(report.contains("workers"), "{report}");
}

#[test]
fn bench_audit_verify_completes() {
    reports_a_target(&bench(&[
        "audit-verify",
        "--events",
        "200",
        "--rounds",
        "1",
    ]));
}

#[test]
fn bench_pages_completes() {
    reports_a_target(&bench(&[
        "pages",
        "--orders",
        "60",
        "--users",
        "60",
        "--clients",
        "2",
        "--duration-secs",
        "1",
        "--warmup-secs",
        "0",
    ]));
}

#[test]
fn bench_flash_sale_completes() {
    let report = bench(&[
        "flash-sale",
        "--buyers",
        "40",
        "--units",
        "10",
        "--clients",
        "4",
        "--rounds",
        "1",
    ]);
    reports_a_target(&report);
    assert!(report.contains("exactly 10 confirmed"), "{report}");
}

#[test]
fn bench_purchases_completes() {
    reports_a_target(&bench(&[
        "purchases",
        "--rate",
        "20",
        "--products",
        "10",
        "--buyers",
        "5",
        "--seconds",
        "1",
        "--warmup-secs",
        "0",
    ]));
}

/// The benchmarks this file runs, by subcommand name.
const SMOKE_RUN: [&str; 12] = [
    "commands",
    "relay",
    "pipeline",
    "replay",
    "order-latency",
    "checks",
    "idle-memory",
    "audit-verify",
    "live",
    "pages",
    "flash-sale",
    "purchases",
];

#[test]
fn every_benchmark_has_a_smoke_run_here() {
    let help = orders().args(["bench", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout).into_owned();
    let listed: Vec<&str> = help
        .lines()
        .skip_while(|line| !line.starts_with("Commands:"))
        .skip(1)
        .take_while(|line| !line.trim().is_empty())
        .filter_map(|line| line.split_whitespace().next())
        .filter(|name| *name != "help")
        .collect();
    assert!(!listed.is_empty(), "{help}");
    assert_eq!(
        listed, SMOKE_RUN,
        "a benchmark without a smoke run (or one gone)"
    );
}
