//! A fresh database per test, on the PostgreSQL server of `ORDERS_TEST_DATABASE_URL`
//! (which `make test` sets, and `.data/test.env` holds while the test servers run):
//! created with a unique name, migrated, never shared with another test.

use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions as _, PgPool};

/// The test server's URL, or a panic that says how to get one.
pub fn test_server_url() -> String {
    std::env::var("ORDERS_TEST_DATABASE_URL").expect(
        "ORDERS_TEST_DATABASE_URL is not set: run the tests with `make test`, \
         or `set -a; . .data/test.env` after `make services` has started the servers",
    )
}

/// A new, empty database on the test server (named `<prefix>_<uuid v7>`): its URL.
pub async fn empty_database(prefix: &str) -> String {
    let server: PgConnectOptions = test_server_url().parse().expect("a PostgreSQL URL");
    let name = format!("{prefix}_{}", uuid::Uuid::now_v7().simple());
    let mut admin = server
        .clone()
        .connect()
        .await
        .expect("connect to the test server");
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut admin)
        .await
        .expect("create a test database");
    // The server's URL with the new name as its path: a plain URL that psql and the
    // `orders` binary take as well as sqlx does.
    let mut url = url::Url::parse(&test_server_url()).expect("a PostgreSQL URL");
    url.set_path(&format!("/{name}"));
    url.to_string()
}

/// A new database, migrated: its URL and a pool of `max_connections` on it.
pub async fn fresh_database(max_connections: u32) -> (String, PgPool) {
    let url = empty_database("test").await;
    let pool = orders_store::database::connect(&url, max_connections)
        .await
        .expect("connect to the test database");
    orders_store::database::migrate(&pool)
        .await
        .expect("migrate the test database");
    (url, pool)
}

/// [`empty_database`] for tests that are not async (they run the binary).
pub fn empty_database_blocking(prefix: &str) -> String {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
        .block_on(empty_database(prefix))
}
