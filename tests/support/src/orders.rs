//! Tracking orders placed straight through the event store, for tests and
//! benchmarks that need one without going through the API.

use orders_domain::ids::{OrderId, UserId};
use orders_domain::money::{Currency, Money};
use orders_domain::order::{Order, OrderCommand, ProductUrl};
use orders_store::event_store::{CommandMetadata, EventStore};

/// Places an order of `owner` for the page at `url` with a target in hryvnias,
/// checked hourly, as a fixture (`cli:test-fixture`).
pub async fn place_in_hryvnias(
    events: &EventStore,
    owner: UserId,
    url: &str,
    target: &str,
) -> anyhow::Result<OrderId> {
    let order_id = OrderId::new();
    events
        .execute_on_new::<Order>(
            &order_id.to_string(),
            OrderCommand::Place {
                order_id,
                owner,
                url: ProductUrl::parse(url)?,
                target: Money::parse(target, Currency::UAH)?,
                check_interval_secs: 3600,
                selector: None,
                owner_active_orders: 0,
            },
            &CommandMetadata::new_job("cli:test-fixture"),
        )
        .await
        .map_err(|error| anyhow::anyhow!("placing an order: {error}"))?;
    Ok(order_id)
}
