//! Identifiers of aggregates: UUID v7 newtypes, so a user id can never be passed
//! where an order id is expected, and ids sort roughly by creation time.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Declares one id newtype; the two ids differ only in name, so one definition keeps
/// them from drifting apart.
macro_rules! uuid_v7_identifier {
    ($(#[$documentation:meta])* $name:ident) => {
        $(#[$documentation])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(Uuid);

        impl $name {
            /// A fresh UUID v7 id (time-ordered, so new rows land at the end of
            /// B-tree indexes).
            #[allow(clippy::new_without_default)] // a Default that is random would surprise
            pub fn new() -> Self {
                Self(Uuid::now_v7())
            }

            pub fn from_uuid(uuid: Uuid) -> Self {
                Self(uuid)
            }

            pub fn as_uuid(&self) -> Uuid {
                self.0
            }
        }

        impl From<Uuid> for $name {
            fn from(uuid: Uuid) -> Self {
                Self(uuid)
            }
        }

        impl From<$name> for Uuid {
            fn from(id: $name) -> Self {
                id.0
            }
        }

        impl fmt::Display for $name {
            /// Hyphenated lower case, as in URLs and aggregate ids.
            fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0.hyphenated(), formatter)
            }
        }

        impl FromStr for $name {
            type Err = uuid::Error;

            fn from_str(text: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(text).map(Self)
            }
        }
    };
}

uuid_v7_identifier! {
    /// Identifies a user (the `user` aggregate's id).
    UserId
}

uuid_v7_identifier! {
    /// Identifies a tracking order (the `order` aggregate's id).
    OrderId
}

uuid_v7_identifier! {
    /// Identifies one price check (the `price_check` aggregate's id). Time-ordered:
    /// a later check has a greater id, which is how an order tells a late or
    /// redelivered observation from a newer one.
    CheckId
}

uuid_v7_identifier! {
    /// Identifies a product of the catalog (the `product` aggregate's id).
    ProductId
}

uuid_v7_identifier! {
    /// Identifies a purchase (the `purchase` aggregate's id).
    PurchaseId
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_ids_are_version_7_and_distinct() {
        let first = OrderId::new();
        let second = OrderId::new();
        assert_eq!(first.as_uuid().get_version_num(), 7);
        assert_ne!(first, second);
    }

    #[test]
    fn ids_display_hyphenated_and_parse_back() {
        let uuid = Uuid::parse_str("0192f1a8-7c3e-7b7a-9c4d-1f2e3d4c5b6a").unwrap();
        let user_id = UserId::from_uuid(uuid);
        assert_eq!(user_id.to_string(), "0192f1a8-7c3e-7b7a-9c4d-1f2e3d4c5b6a");
        assert_eq!("0192f1a8-7c3e-7b7a-9c4d-1f2e3d4c5b6a".parse(), Ok(user_id));
        assert!("not-a-uuid".parse::<UserId>().is_err());
    }

    #[test]
    fn ids_serialise_as_plain_strings() {
        let uuid = Uuid::parse_str("0192f1a8-7c3e-7b7a-9c4d-1f2e3d4c5b6a").unwrap();
        let order_id = OrderId::from_uuid(uuid);
        let json = serde_json::to_value(order_id).unwrap();
        assert_eq!(
            json,
            serde_json::json!("0192f1a8-7c3e-7b7a-9c4d-1f2e3d4c5b6a")
        );
        assert_eq!(serde_json::from_value::<OrderId>(json).unwrap(), order_id);
    }
}
