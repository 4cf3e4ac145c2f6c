//! The argument groups several subcommands share. Each `ORDERS_*` variable that more
//! than one subcommand reads is declared once, here, and flattened where it is
//! needed, so its name, its help and whether its value is hidden cannot drift apart.

use anyhow::Context as _;
use clap::Args;
use orders_store::seal::AuditKey;

/// `ORDERS_DATABASE_URL`.
#[derive(Debug, Clone, Args)]
pub struct DatabaseArgs {
    /// PostgreSQL URL, e.g. postgres://orders@127.0.0.1:5432/orders.
    #[arg(long, env = "ORDERS_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
}

impl DatabaseArgs {
    /// The URL, or the one line that says it is missing.
    pub fn url(&self) -> anyhow::Result<&str> {
        self.database_url
            .as_deref()
            .filter(|url| !url.is_empty())
            .context(
                "ORDERS_DATABASE_URL is not set (e.g. postgres://orders@127.0.0.1:5432/orders)",
            )
    }

    /// A pool of at most `max_connections` on it.
    pub async fn connect(&self, max_connections: u32) -> anyhow::Result<sqlx::PgPool> {
        orders_store::database::connect(self.url()?, max_connections).await
    }
}

/// `ORDERS_NATS_URL`.
#[derive(Debug, Clone, Args)]
pub struct NatsArgs {
    /// NATS with JetStream, e.g. nats://127.0.0.1:4222 (several, comma-separated,
    /// for a cluster; credentials as nats://user:password@host).
    #[arg(long, env = "ORDERS_NATS_URL", hide_env_values = true)]
    pub nats_url: Option<String>,
}

impl NatsArgs {
    /// The URL when one is given.
    pub fn given(&self) -> Option<&str> {
        self.nats_url.as_deref().filter(|url| !url.is_empty())
    }

    /// The URL, or the one line that says it is missing.
    pub fn url(&self) -> anyhow::Result<&str> {
        self.given()
            .context("ORDERS_NATS_URL is not set (e.g. nats://127.0.0.1:4222)")
    }

    /// A client connected to it; the error names the URL without its credentials.
    pub async fn connect(&self) -> anyhow::Result<async_nats::Client> {
        let url = self.url()?;
        orders_nats::connect(url).await.with_context(|| {
            format!(
                "connecting to NATS at {} (ORDERS_NATS_URL)",
                orders_nats::redacted(url)
            )
        })
    }

    pub async fn jetstream(&self) -> anyhow::Result<async_nats::jetstream::Context> {
        Ok(async_nats::jetstream::new(self.connect().await?))
    }
}

/// `ORDERS_NATS_REPLICAS`.
#[derive(Debug, Clone, Copy, Args)]
pub struct NatsReplicasArgs {
    /// Replicas of the stream and buckets: 1 on one server, 3 on a cluster.
    #[arg(long, env = "ORDERS_NATS_REPLICAS", default_value_t = 1)]
    pub nats_replicas: usize,
}

/// `ORDERS_AUDIT_KEY`.
#[derive(Debug, Clone, Args)]
pub struct AuditKeyArgs {
    /// Seals every event written (and verifies them); at least 32 bytes, no default.
    #[arg(long, env = "ORDERS_AUDIT_KEY", hide_env_values = true)]
    pub audit_key: Option<String>,
}

impl AuditKeyArgs {
    /// The key, or the one line that says what is wrong with it.
    pub fn key(&self) -> anyhow::Result<AuditKey> {
        AuditKey::from_env_value(self.audit_key.clone())
    }
}

/// The scraper's `ORDERS_SCRAPER_*` settings (`orders serve` and `orders scrape`).
#[derive(Debug, Clone, Args)]
pub struct ScraperArgs {
    /// Networks the scraper may fetch although private (comma-separated CIDRs, e.g.
    /// 127.0.0.0/8 for tests); none by default.
    #[arg(long, env = "ORDERS_SCRAPER_ALLOW_PRIVATE", default_value = "")]
    scraper_allow_private: String,
    /// The ports the scraper connects to (commas), or * for any. An IP-literal URL
    /// inside an ORDERS_SCRAPER_ALLOW_PRIVATE network may use any port.
    #[arg(long, env = "ORDERS_SCRAPER_PORTS", default_value = orders_workers::fetch::DEFAULT_SCRAPER_PORTS)]
    scraper_ports: String,
    /// The least time between two requests to one host, across every scraper.
    #[arg(long, env = "ORDERS_SCRAPER_HOST_SPACING_MS", default_value_t = 5000)]
    scraper_host_spacing_ms: u64,
    /// The most one request may take, from connecting to the last byte of the page.
    #[arg(long, env = "ORDERS_SCRAPER_TIMEOUT_MS", default_value_t = 30_000)]
    scraper_timeout_ms: u64,
}

impl ScraperArgs {
    pub fn fetch_policy(&self) -> anyhow::Result<orders_workers::fetch::FetchPolicy> {
        let allow_private =
            orders_workers::fetch::parse_allowed_networks(&self.scraper_allow_private)
                .map_err(|error| anyhow::anyhow!("ORDERS_SCRAPER_ALLOW_PRIVATE: {error}"))?;
        let allowed_ports = orders_workers::fetch::parse_allowed_ports(&self.scraper_ports)
            .map_err(|error| anyhow::anyhow!("ORDERS_SCRAPER_PORTS: {error}"))?;
        let total_timeout = self.timeout();
        Ok(orders_workers::fetch::FetchPolicy {
            allow_private,
            allowed_ports,
            total_timeout,
            connect_timeout: total_timeout.min(std::time::Duration::from_secs(10)),
            ..Default::default()
        })
    }

    pub fn timeout(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.scraper_timeout_ms.max(100))
    }

    pub fn host_gate(&self) -> orders_workers::host_gate::HostGateConfig {
        orders_workers::host_gate::HostGateConfig {
            spacing: std::time::Duration::from_millis(self.scraper_host_spacing_ms),
            // A scraper that dies holding a host keeps it this long: a little more
            // than its longest request.
            lease: self.timeout() + std::time::Duration::from_secs(5),
            ..Default::default()
        }
    }
}
