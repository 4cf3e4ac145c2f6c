//! The argument groups several subcommands share. Each `ORDERS_*` variable that more
//! than one subcommand reads is declared once, here, and flattened where it is
//! needed, so its name, its help and whether its value is hidden cannot drift apart.

use anyhow::Context as _;
use clap::Args;
use orders_store::seal::AuditKey;

/// `ORDERS_DATABASE_URL`.
#[derive(Debug, Clone, Args)]
pub(crate) struct DatabaseArgs {
    /// PostgreSQL URL, e.g. postgres://orders@127.0.0.1:5432/orders.
    #[arg(long, env = "ORDERS_DATABASE_URL", hide_env_values = true)]
    pub(crate) database_url: Option<String>,
}

impl DatabaseArgs {
    /// The URL, or the one line that says it is missing.
    pub(crate) fn url(&self) -> anyhow::Result<&str> {
        self.database_url
            .as_deref()
            .filter(|url| !url.is_empty())
            .context(
                "ORDERS_DATABASE_URL is not set (e.g. postgres://orders@127.0.0.1:5432/orders)",
            )
    }

    /// A pool of at most `max_connections` on it.
    pub(crate) async fn connect(&self, max_connections: u32) -> anyhow::Result<sqlx::PgPool> {
        orders_store::database::connect(self.url()?, max_connections).await
    }
}

/// `ORDERS_NATS_URL`.
#[derive(Debug, Clone, Args)]
pub(crate) struct NatsArgs {
    /// NATS with JetStream, e.g. nats://127.0.0.1:4222 (several, comma-separated,
    /// for a cluster; credentials as nats://user:password@host).
    #[arg(long, env = "ORDERS_NATS_URL", hide_env_values = true)]
    pub(crate) nats_url: Option<String>,
}

impl NatsArgs {
    /// The URL when one is given.
    pub(crate) fn given(&self) -> Option<&str> {
        self.nats_url.as_deref().filter(|url| !url.is_empty())
    }

    /// The URL, or the one line that says it is missing.
    pub(crate) fn url(&self) -> anyhow::Result<&str> {
        self.given()
            .context("ORDERS_NATS_URL is not set (e.g. nats://127.0.0.1:4222)")
    }

    /// A client connected to it; the error names the URL without its credentials.
    pub(crate) async fn connect(&self) -> anyhow::Result<async_nats::Client> {
        let url = self.url()?;
        orders_nats::connect(url).await.with_context(|| {
            format!(
                "connecting to NATS at {} (ORDERS_NATS_URL)",
                orders_nats::redacted(url)
            )
        })
    }

    pub(crate) async fn jetstream(&self) -> anyhow::Result<async_nats::jetstream::Context> {
        Ok(async_nats::jetstream::new(self.connect().await?))
    }
}

/// `ORDERS_NATS_REPLICAS`.
#[derive(Debug, Clone, Copy, Args)]
pub(crate) struct NatsReplicasArgs {
    /// Replicas of the stream and buckets: 1 on one server, 3 on a cluster.
    #[arg(long, env = "ORDERS_NATS_REPLICAS", default_value_t = 1)]
    pub(crate) nats_replicas: usize,
}

/// `ORDERS_AUDIT_KEY`.
#[derive(Debug, Clone, Args)]
pub(crate) struct AuditKeyArgs {
    /// Seals every event written (and verifies them); at least 32 bytes, no default.
    #[arg(long, env = "ORDERS_AUDIT_KEY", hide_env_values = true)]
    pub(crate) audit_key: Option<String>,
}

impl AuditKeyArgs {
    /// The key, or the one line that says what is wrong with it.
    pub(crate) fn key(&self) -> anyhow::Result<AuditKey> {
        AuditKey::from_env_value(self.audit_key.clone())
    }
}
