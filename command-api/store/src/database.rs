//! Connecting to PostgreSQL and migrating the schema.
//!
//! Migrations are compiled into the binary, so `orders migrate` (and every service
//! at start) needs nothing but the database URL.

use std::borrow::Cow;
use std::time::Duration;

use anyhow::Context as _;
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;

/// The schema, in order. Never edit a migration that has shipped: add one.
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "event store",
        include_str!("../migrations/0001_event_store.sql"),
    ),
    (
        2,
        "query views",
        include_str!("../migrations/0002_views.sql"),
    ),
    (
        3,
        "price checks",
        include_str!("../migrations/0003_price_checks.sql"),
    ),
    (
        4,
        "aggregate snapshots",
        include_str!("../migrations/0004_snapshots.sql"),
    ),
    (
        5,
        "audit indexes",
        include_str!("../migrations/0005_audit_indexes.sql"),
    ),
    (
        6,
        "audit chain",
        include_str!("../migrations/0006_audit_chain.sql"),
    ),
    (
        7,
        "login known clients",
        include_str!("../migrations/0007_login_known_clients.sql"),
    ),
    (
        8,
        "console sessions",
        include_str!("../migrations/0008_console_sessions.sql"),
    ),
    (
        9,
        "admin daily counts",
        include_str!("../migrations/0009_admin_daily.sql"),
    ),
    (
        10,
        "order alerts and checks",
        include_str!("../migrations/0010_order_alerts_and_checks.sql"),
    ),
    (
        11,
        "credentials version",
        include_str!("../migrations/0011_credentials_version.sql"),
    ),
    (
        12,
        "orders availability",
        include_str!("../migrations/0012_orders_availability.sql"),
    ),
    (13, "shop", include_str!("../migrations/0013_shop.sql")),
    (
        14,
        "shop views",
        include_str!("../migrations/0014_shop_views.sql"),
    ),
    (
        15,
        "console carts",
        include_str!("../migrations/0015_console_carts.sql"),
    ),
    (
        16,
        "catalog orders",
        include_str!("../migrations/0016_catalog_orders.sql"),
    ),
    (
        17,
        "product labels",
        include_str!("../migrations/0017_product_labels.sql"),
    ),
    (
        18,
        "saga sweep",
        include_str!("../migrations/0018_saga_sweep.sql"),
    ),
];

pub fn migrator() -> Migrator {
    let migrations = MIGRATIONS
        .iter()
        .map(|(version, description, sql)| {
            Migration::new(
                *version,
                Cow::Borrowed(*description),
                MigrationType::Simple,
                Cow::Borrowed(*sql),
                false,
            )
        })
        .collect::<Vec<_>>();
    Migrator {
        migrations: Cow::Owned(migrations),
        ..Migrator::DEFAULT
    }
}

/// Applies the migrations that have not run yet. Safe to run from several instances
/// at once (sqlx takes an advisory lock).
pub async fn migrate(pool: &PgPool) -> anyhow::Result<()> {
    migrator().run(pool).await.context("migrating the database")
}

/// A pool for one service. Every session gets `idle_in_transaction_session_timeout`
/// so that no connection of ours can hold a transaction open (and with it the
/// relay's horizon) for long.
pub async fn connect(database_url: &str, max_connections: u32) -> anyhow::Result<PgPool> {
    let options: PgConnectOptions = database_url
        .parse()
        .context("ORDERS_DATABASE_URL is not a valid PostgreSQL URL")?;
    let options = options
        .application_name("orders")
        .options([("idle_in_transaction_session_timeout", "5s")]);
    PgPoolOptions::new()
        .max_connections(max_connections)
        .min_connections(1)
        // sqlx pings every connection it hands out by default: a round trip per
        // statement of ours. A broken connection fails its statement instead, and the
        // pool replaces it.
        .test_before_acquire(false)
        .acquire_timeout(Duration::from_secs(5))
        .connect_with(options)
        .await
        .context("connecting to PostgreSQL (ORDERS_DATABASE_URL)")
}
