//! Projectors build the query views from the log; `orders replay <view>` rebuilds
//! one. This crate starts with the names of the views, which the CLI, the replay
//! and operators share.

use std::fmt;
use std::str::FromStr;

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
}

impl View {
    pub const ALL: [View; 4] = [
        View::Users,
        View::Orders,
        View::PriceHistory,
        View::AdminOverview,
    ];

    /// The name operators type (`orders replay price_history`).
    pub fn name(self) -> &'static str {
        match self {
            View::Users => "users",
            View::Orders => "orders",
            View::PriceHistory => "price_history",
            View::AdminOverview => "admin_overview",
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
#[error("no view named {0:?}; the views are users, orders, price_history, admin_overview")]
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
