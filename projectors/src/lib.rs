//! Projectors build the query views from the log; `orders replay <view>` rebuilds
//! one; `orders lag` says how far each is behind. The API reads the views through
//! [`query`].
//!
//! Each view is a set of PostgreSQL tables and a checkpoint row (see
//! `command-api/store/migrations/0002_views.sql`), written in one transaction per batch of
//! log messages. A view's projector is single-active: [`run`] contends for one
//! leader lease per view, and the checkpoint row guards the writes of a leader that
//! lost its lease without knowing it yet.

pub mod checkpoint;
pub mod lag;
pub mod live;
pub mod projector;
pub mod query;
pub mod record;
pub mod replay;
pub mod views;

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use async_nats::jetstream::{self, kv};
use orders_nats::leader::{lead, LeaderLease};
use sqlx::PgPool;

pub use checkpoint::{Checkpoint, Generation};
pub use projector::{Applied, Projector};

/// A query view that can be rebuilt from the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum View {
    /// One row per user: profile, verification, roles, status.
    Users,
    /// One row per order, with its last price and status.
    Orders,
    /// Every observed price change of every order.
    PriceHistory,
    /// Counts for administrators.
    AdminOverview,
    /// One row per catalog product, with its price and stock.
    Products,
    /// One row per purchase, with its lines, prices and history.
    Purchases,
    /// The shop's and the tracker's figures per UTC day, and the purchases' status mix.
    Analytics,
}

impl View {
    pub const ALL: [View; 7] = [
        View::Users,
        View::Orders,
        View::PriceHistory,
        View::AdminOverview,
        View::Products,
        View::Purchases,
        View::Analytics,
    ];

    /// The name operators type (`orders replay price_history`).
    pub fn name(self) -> &'static str {
        match self {
            View::Users => "users",
            View::Orders => "orders",
            View::PriceHistory => "price_history",
            View::AdminOverview => "admin_overview",
            View::Products => "products",
            View::Purchases => "purchases",
            View::Analytics => "analytics",
        }
    }
}

impl fmt::Display for View {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A view name that does not exist.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("no view named {0:?}; the views are users, orders, price_history, admin_overview, products, purchases, analytics")]
pub struct UnknownView(pub String);

impl FromStr for View {
    type Err = UnknownView;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        View::ALL
            .into_iter()
            .find(|view| view.name() == name)
            .ok_or_else(|| UnknownView(name.to_owned()))
    }
}

/// Runs the projector of every view, each while this instance holds that view's
/// leader lease (`projector-<view>` in the leader bucket), until `shutdown` is
/// cancelled.
pub async fn run(
    pool: PgPool,
    jetstream: jetstream::Context,
    leaders: kv::Store,
    holder: String,
    lease_duration: Duration,
    shutdown: tokio_util::sync::CancellationToken,
) -> anyhow::Result<()> {
    let mut tasks = tokio::task::JoinSet::new();
    for view in View::ALL {
        let projector = Projector::new(pool.clone(), jetstream.clone(), view, Generation::Live);
        let lease = LeaderLease::new(leaders.clone(), format!("projector-{view}"), holder.clone());
        let shutdown = shutdown.clone();
        tasks.spawn(async move {
            lead(lease, lease_duration, shutdown, || {
                let projector = projector.clone();
                async move { projector.follow(None).await.map(|_| ()) }
            })
            .await
        });
    }
    while let Some(joined) = tasks.join_next().await {
        joined??;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_view_reads_back_from_its_name() {
        for view in View::ALL {
            assert_eq!(view.name().parse::<View>(), Ok(view));
        }
        assert_eq!(
            "prices".parse::<View>(),
            Err(UnknownView("prices".to_owned()))
        );
    }
}
