//! The views: each folds log records into its tables, a batch at a time.

pub mod admin_overview;
pub mod analytics;
pub mod checks;
pub(crate) mod folded;
pub mod orders;
pub mod price_history;
pub mod products;
pub mod purchases;
pub mod users;

use sqlx::PgConnection;

use crate::checkpoint::Generation;
use crate::record::LogRecord;
use crate::View;

/// An event that cannot follow what the view holds (e.g. an order event before its
/// placement): the log is not in order, or the view was written by something else.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("event {aggregate_id}/{sequence} (stream message {stream_sequence}) does not follow what the view holds")]
pub struct OutOfOrder {
    pub aggregate_id: String,
    pub sequence: i64,
    pub stream_sequence: u64,
}

impl OutOfOrder {
    pub(crate) fn new(record: &LogRecord) -> Self {
        Self {
            aggregate_id: record.aggregate_id.clone(),
            sequence: record.sequence,
            stream_sequence: record.stream_sequence,
        }
    }
}

impl View {
    /// The aggregates whose events the view folds; the others' payloads are not
    /// decoded for it (they pass by, and only move its checkpoint).
    pub fn reads(self) -> &'static [&'static str] {
        match self {
            View::Users => &["user"],
            View::Orders | View::PriceHistory => &["order", "price_check"],
            View::AdminOverview => &["user", "order", "price_check"],
            View::Products => &["product"],
            View::Purchases => &["purchase"],
            View::Analytics => &["purchase", "order", "price_check"],
        }
    }

    /// The tables that hold the view (a replay rebuilds and swaps them together).
    pub fn tables(self) -> &'static [&'static str] {
        match self {
            View::Users => users::TABLES,
            View::Orders => orders::TABLES,
            View::PriceHistory => price_history::TABLES,
            View::AdminOverview => admin_overview::TABLES,
            View::Products => products::TABLES,
            View::Purchases => purchases::TABLES,
            View::Analytics => analytics::TABLES,
        }
    }
}

/// Applies a batch of records, in order, to one generation of a view.
pub(crate) async fn apply(
    connection: &mut PgConnection,
    view: View,
    generation: Generation,
    records: &[LogRecord],
) -> anyhow::Result<()> {
    match view {
        View::Users => folded::apply::<users::Users>(connection, generation, records).await,
        View::Orders => folded::apply::<orders::Orders>(connection, generation, records).await,
        View::PriceHistory => price_history::apply(connection, generation, records).await,
        View::AdminOverview => admin_overview::apply(connection, generation, records).await,
        View::Products => {
            folded::apply::<products::Products>(connection, generation, records).await
        }
        View::Purchases => {
            folded::apply::<purchases::Purchases>(connection, generation, records).await
        }
        View::Analytics => analytics::apply(connection, generation, records).await,
    }
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone as _, Utc};
    use orders_domain::email::EmailAddress;
    use orders_domain::ids::{OrderId, UserId};
    use orders_domain::money::{Currency, Money};
    use orders_domain::order::{OrderEvent, OrderStatus, ProductUrl};
    use orders_domain::user::{Role, UserEvent};
    use orders_nats::LogPosition;
    use uuid::Uuid;

    use super::*;
    use crate::record::Event;

    /// A record of `event`, the `sequence`th of its aggregate, recorded on 25
    /// November 2026 at noon and `sequence` seconds, caused by `user:test`.
    pub(crate) fn record(aggregate_id: Uuid, sequence: i64, event: Event) -> LogRecord {
        let at = Utc
            .with_ymd_and_hms(2026, 11, 25, 12, 0, sequence as u32)
            .unwrap();
        record_at(aggregate_id, sequence, at, event)
    }

    /// A record of `event` recorded at `at`, caused by `user:test`.
    pub(crate) fn record_at(
        aggregate_id: Uuid,
        sequence: i64,
        at: chrono::DateTime<Utc>,
        event: Event,
    ) -> LogRecord {
        LogRecord {
            stream_sequence: sequence as u64,
            position: LogPosition {
                tx_id: 100 + sequence as u64,
                global_position: sequence,
            },
            aggregate_id: aggregate_id.to_string(),
            sequence,
            recorded_at: at,
            actor: Some("user:test".to_owned()),
            event,
        }
    }

    fn uah(amount: &str) -> Money {
        Money::parse(amount, Currency::from_code("UAH").unwrap()).unwrap()
    }

    #[test]
    fn an_orders_row_follows_its_events_like_the_aggregate() {
        let order_id = OrderId::from_uuid(Uuid::now_v7());
        let id = order_id.as_uuid();
        let events = [
            OrderEvent::OrderPlaced {
                order_id,
                owner: UserId::from_uuid(Uuid::now_v7()),
                url: Some(ProductUrl::parse("https://shop.example.com/p/1").unwrap()),
                product_id: None,
                target: uah("100.00"),
                check_interval_secs: 3600,
                selector: None,
            },
            OrderEvent::PriceChanged {
                check_id: Uuid::now_v7(),
                previous: None,
                price: uah("95.00"),
                extractor: Some("json-ld".to_owned()),
            },
            OrderEvent::TargetReached {
                check_id: Uuid::now_v7(),
                previous: Some(uah("95.00")),
                price: uah("95.00"),
                target: uah("100.00"),
            },
            OrderEvent::OrderPaused,
        ];
        let mut row = None;
        for (index, event) in events.into_iter().enumerate() {
            let record = record(id, index as i64 + 1, Event::Order(event.clone()));
            row = Some(orders::fold(row, &record, &event).unwrap());
        }
        let row = row.unwrap();
        assert_eq!(row.last_price, Some(uah("95.00").amount()));
        assert!(!row.armed, "the alert fired once");
        assert_eq!(row.status, OrderStatus::Paused.as_str());
        assert_eq!(row.version, 4);
        assert_eq!(row.updated_at.timestamp() - row.placed_at.timestamp(), 3);

        let stray = record(Uuid::now_v7(), 2, Event::Order(OrderEvent::OrderPaused));
        assert!(orders::fold(None, &stray, &OrderEvent::OrderPaused).is_err());
    }

    #[test]
    fn a_users_roles_stay_sorted_and_unique() {
        let user_id = UserId::from_uuid(Uuid::now_v7());
        let id = user_id.as_uuid();
        let events = [
            UserEvent::UserRegistered {
                user_id,
                email: EmailAddress::parse("ann@example.com").unwrap(),
            },
            UserEvent::RoleGranted {
                role: Role::Auditor,
            },
            UserEvent::RoleGranted { role: Role::Admin },
            UserEvent::RoleGranted { role: Role::Admin },
            UserEvent::EmailVerified,
        ];
        let mut row = None;
        for (index, event) in events.into_iter().enumerate() {
            let record = record(id, index as i64 + 1, Event::User(event.clone()));
            row = Some(users::fold(row, &record, &event).unwrap());
        }
        let row = row.unwrap();
        assert_eq!(row.roles, ["admin", "auditor"]);
        assert!(row.email_verified);
        let revoke = UserEvent::RoleRevoked { role: Role::Admin };
        let row = users::fold(
            Some(row),
            &record(id, 6, Event::User(revoke.clone())),
            &revoke,
        )
        .unwrap();
        assert_eq!(row.roles, ["auditor"]);
    }

    #[test]
    fn a_cancellation_counts_against_the_status_the_order_had() {
        let id = Uuid::now_v7();
        let cancelled = record(id, 3, Event::Order(OrderEvent::OrderCancelled));
        let (deltas, after) = admin_overview::changes(&cancelled, Some(OrderStatus::Paused));
        assert_eq!(after, Some(OrderStatus::Cancelled));
        assert!(deltas.contains(&("orders_paused", -1)));
        assert!(deltas.contains(&("orders_cancelled", 1)));
        assert!(!deltas.iter().any(|(metric, _)| *metric == "orders_active"));
    }
}
