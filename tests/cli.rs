//! The `orders` binary as operators meet it: configuration mistakes stop it at start
//! with one clear line; `orders migrate` prepares a database.

use std::process::Command;

fn orders() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_orders"));
    // Away from any developer's .env, with none of the variables set.
    command.current_dir(std::env::temp_dir());
    for (name, _) in std::env::vars() {
        if name.starts_with("ORDERS_") {
            command.env_remove(name);
        }
    }
    command
}

fn stderr_lines(output: &std::process::Output) -> Vec<String> {
    String::from_utf8_lossy(&output.stderr)
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn a_missing_jwt_secret_stops_the_service_with_one_line() {
    let output = orders()
        .args(["serve", "api"])
        .env("ORDERS_DATABASE_URL", "postgres://nobody@127.0.0.1:1/none")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let lines = stderr_lines(&output);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].starts_with("error: ORDERS_JWT_SECRET is not set"),
        "{lines:?}"
    );
}

#[test]
fn a_short_jwt_secret_stops_the_service_with_one_line() {
    let output = orders()
        .args(["serve", "all"])
        .env("ORDERS_JWT_SECRET", "too short")
        .env("ORDERS_DATABASE_URL", "postgres://nobody@127.0.0.1:1/none")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let lines = stderr_lines(&output);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].contains("ORDERS_JWT_SECRET is 9 bytes long; it must be at least 32 bytes"),
        "{lines:?}"
    );
    // The secret itself is never printed.
    assert!(!lines[0].contains("too short"));
}

#[test]
fn a_missing_database_url_stops_the_service_with_one_line() {
    let output = orders()
        .args(["serve", "api"])
        .env(
            "ORDERS_JWT_SECRET",
            "a secret that is long enough for HS256 signing",
        )
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let lines = stderr_lines(&output);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].contains("ORDERS_DATABASE_URL is not set"),
        "{lines:?}"
    );
}

#[test]
fn migrate_prepares_a_fresh_database_and_is_idempotent() {
    let Ok(server_url) = std::env::var("ORDERS_TEST_DATABASE_URL") else {
        panic!("ORDERS_TEST_DATABASE_URL is not set: run the tests with `make test`");
    };
    let name = format!("cli_{}", uuid::Uuid::now_v7().simple());
    let created = Command::new("psql")
        .arg(&server_url)
        .args(["-qc", &format!("CREATE DATABASE {name}")])
        .status();
    // psql may be absent where only the server binaries are; createdb through the binary's own
    // connection is not available, so fall back to the server binaries directory.
    let created = match created {
        Ok(status) => status.success(),
        Err(_) => {
            let bindir = std::env::var("ORDERS_TEST_PG_BINDIR").unwrap_or_default();
            Command::new(format!("{bindir}/psql"))
                .arg(&server_url)
                .args(["-qc", &format!("CREATE DATABASE {name}")])
                .status()
                .map(|status| status.success())
                .unwrap_or(false)
        }
    };
    assert!(created, "could not create a database with psql");
    let database_url = match server_url.rsplit_once('/') {
        Some((server, _)) => format!("{server}/{name}"),
        None => panic!("unexpected URL {server_url}"),
    };
    for _ in 0..2 {
        let output = orders()
            .arg("migrate")
            .env("ORDERS_DATABASE_URL", &database_url)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert_eq!(
            String::from_utf8_lossy(&output.stdout).trim(),
            "database migrated"
        );
    }
}
