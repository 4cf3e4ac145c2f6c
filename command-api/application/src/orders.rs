//! Tracking orders: placing one, and the changes its owner makes (target, pause,
//! resume, cancel). Placing is one statement in the steady state (see
//! ARCHITECTURE, "Placing an order: one statement").
//!
//! The owner's placement facts (not deactivated, how many orders are active) come
//! from this instance's cache when it has them; the append's guard has the last
//! word, and any refusal, by the domain on cached facts or by the guard, is judged
//! again on facts read fresh. With an `Idempotency-Key` (in the metadata), a retry
//! of the same request answers with the order the first one created and stores
//! nothing; the same key for a different order is refused.

use cqrs_es::AggregateError;
use orders_domain::ids::{OrderId, ProductId, UserId};
use orders_domain::money::{Money, MoneyError};
use orders_domain::order::{Order, OrderCommand, OrderError, ProductUrl};
use orders_store::event_store::{
    CommandMetadata, CommandReceipt, EventStore, LogPosition, PlacementGuard,
};
use orders_store::user_lookup::{self, PlacementFacts, PlacementFactsCache};

use crate::{CommandError, StoreFailure};

/// What a tracking order follows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OrderSource {
    /// A shop's page, scraped on schedule.
    Page(ProductUrl),
    /// A product of our catalog (checked by the caller to exist and be on sale):
    /// its price and stock come from its events.
    Catalog(ProductId),
}

/// What a placement asks for.
#[derive(Debug, Clone)]
pub struct PlaceOrder {
    pub owner: UserId,
    pub source: OrderSource,
    pub target: Money,
    pub check_interval_secs: u32,
    pub selector: Option<String>,
    /// The credentials version of the caller's access token (`None`: a console
    /// session): refused when the owner's password has changed since.
    pub credentials_version: Option<u32>,
}

/// What a placement did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placed {
    /// A new order.
    Created {
        order_id: OrderId,
        position: Option<LogPosition>,
    },
    /// A retry with the same `Idempotency-Key`: the order the first request
    /// created; nothing was stored.
    Replayed {
        order_id: OrderId,
        position: Option<LogPosition>,
    },
}

/// Why nothing was placed.
#[derive(Debug, thiserror::Error)]
pub enum PlaceOrderError {
    /// The order aggregate refused (too many active orders, a bad interval, ...).
    #[error(transparent)]
    Refused(OrderError),
    #[error("the account does not exist")]
    OwnerUnknown,
    #[error("the account is deactivated")]
    OwnerDeactivated,
    /// The caller's access token was issued before the password last changed.
    #[error("the password was changed since this token was issued: sign in again")]
    CredentialsChanged,
    #[error("this Idempotency-Key was already used for a different order")]
    IdempotencyKeyReused,
    /// The owner's account changed at every attempt.
    #[error("the account changed too often while placing this order; retry")]
    TooManyConflicts,
    #[error("the event store failed")]
    Store(#[source] StoreFailure),
}

fn store_failure(error: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> PlaceOrderError {
    PlaceOrderError::Store(StoreFailure::new(error))
}

/// Places `order` with `metadata` (whose `idempotency_key`, if any, makes retries
/// safe), deciding on cached placement facts and again on fresh ones when refused.
pub async fn place_order(
    events: &EventStore,
    facts_cache: &PlacementFactsCache,
    order: PlaceOrder,
    metadata: &CommandMetadata,
) -> Result<Placed, PlaceOrderError> {
    let owner = order.owner;
    let mut trust_cache = true;
    for _attempt in 0..4 {
        let cached = trust_cache.then(|| facts_cache.get(owner)).flatten();
        let from_cache = cached.is_some();
        let facts = match cached {
            Some(facts) => facts,
            None => {
                let facts = user_lookup::placement_facts(events.writers(), owner)
                    .await
                    .map_err(store_failure)?
                    .ok_or(PlaceOrderError::OwnerUnknown)?;
                facts_cache.put(owner, facts);
                facts
            }
        };
        let stale_token = order
            .credentials_version
            .is_some_and(|version| version != facts.credentials_version);
        if facts.deactivated || stale_token {
            if from_cache {
                trust_cache = false;
                continue;
            }
            return Err(if facts.deactivated {
                PlaceOrderError::OwnerDeactivated
            } else {
                PlaceOrderError::CredentialsChanged
            });
        }
        let order_id = OrderId::new();
        let command = placement_command(&order, order_id, facts.active_orders);
        let outcome = events
            .execute_placement(
                &order_id.to_string(),
                command,
                metadata,
                PlacementGuard {
                    owner,
                    credentials_version: order.credentials_version,
                },
            )
            .await;
        match outcome {
            Ok(receipt) => {
                if let Some(active_orders) = receipt.owner_active_orders {
                    let facts = PlacementFacts {
                        active_orders,
                        deactivated: false,
                        credentials_version: facts.credentials_version,
                    };
                    facts_cache.put(owner, facts);
                }
                let position = receipt.position;
                return Ok(Placed::Created { order_id, position });
            }
            Err(AggregateError::UserError(OrderError::TooManyActiveOrders { .. }))
                if from_cache =>
            {
                trust_cache = false;
            }
            // The order id is new, so a conflict is the idempotency key's index, or
            // the owner's guard refusing (the 100th place taken meanwhile, or a
            // deactivation): judged again on fresh facts.
            Err(AggregateError::AggregateConflict) => {
                if let Some(replayed) = replay_if_known(events, &order, metadata).await? {
                    return Ok(replayed);
                }
                facts_cache.forget(owner);
                trust_cache = false;
            }
            // A retry of a request that placed the 100th order must still get its
            // order back, not the refusal a new placement would get.
            Err(AggregateError::UserError(refusal)) => {
                if let OrderError::TooManyActiveOrders { .. } = refusal {
                    if let Some(replayed) = replay_if_known(events, &order, metadata).await? {
                        return Ok(replayed);
                    }
                }
                return Err(PlaceOrderError::Refused(refusal));
            }
            Err(error) => {
                return Err(match CommandError::from(error) {
                    CommandError::Store(failure) => PlaceOrderError::Store(failure),
                    other => store_failure(other),
                })
            }
        }
    }
    Err(PlaceOrderError::TooManyConflicts)
}

/// The order command a placement is, for the owner's `active_orders`.
fn placement_command(order: &PlaceOrder, order_id: OrderId, active_orders: u32) -> OrderCommand {
    match &order.source {
        OrderSource::Page(url) => OrderCommand::Place {
            order_id,
            owner: order.owner,
            url: url.clone(),
            target: order.target,
            check_interval_secs: order.check_interval_secs,
            selector: order.selector.clone(),
            owner_active_orders: active_orders,
        },
        OrderSource::Catalog(product_id) => OrderCommand::PlaceOnCatalog {
            order_id,
            owner: order.owner,
            product_id: *product_id,
            target: order.target,
            owner_active_orders: active_orders,
        },
    }
}

/// The order the metadata's idempotency key already placed for this owner, if it
/// asked for the same thing (else the key was reused: refused).
async fn replay_if_known(
    events: &EventStore,
    order: &PlaceOrder,
    metadata: &CommandMetadata,
) -> Result<Option<Placed>, PlaceOrderError> {
    let Some(key) = metadata.idempotency_key.as_deref() else {
        return Ok(None);
    };
    let Some((existing, placed)) = events
        .order_placed_with_idempotency_key(order.owner, key)
        .await
        .map_err(store_failure)?
    else {
        return Ok(None);
    };
    if !same_placement(&placed, order) {
        return Err(PlaceOrderError::IdempotencyKeyReused);
    }
    let position = events
        .last_position("order", &existing.to_string())
        .await
        .map_err(store_failure)?;
    Ok(Some(Placed::Replayed {
        order_id: existing,
        position,
    }))
}

/// Whether a stored `OrderPlaced` asked for the same thing as this request.
fn same_placement(placed: &serde_json::Value, order: &PlaceOrder) -> bool {
    let stored_target = placed
        .get("target")
        .and_then(|target| serde_json::from_value::<Money>(target.clone()).ok());
    let stored_selector = placed.get("selector").and_then(|s| s.as_str());
    let same_source = match &order.source {
        OrderSource::Page(url) => placed.get("url").and_then(|u| u.as_str()) == Some(url.as_str()),
        OrderSource::Catalog(product_id) => {
            placed.get("product_id").and_then(|p| p.as_str())
                == Some(product_id.to_string().as_str())
        }
    };
    if let OrderSource::Catalog(_) = &order.source {
        return same_source && stored_target == Some(order.target);
    }
    same_source
        && stored_target == Some(order.target)
        && placed.get("check_interval_secs").and_then(|i| i.as_u64())
            == Some(u64::from(order.check_interval_secs))
        && stored_selector.map(str::trim).filter(|s| !s.is_empty())
            == order
                .selector
                .as_deref()
                .map(str::trim)
                .filter(|s| !s.is_empty())
}

/// A change its owner makes to a tracking order.
#[derive(Debug, Clone)]
pub enum OrderChange {
    /// A new target price, a decimal string in the order's currency.
    Target(String),
    Pause,
    Resume,
    Cancel,
}

/// Why an order change stored nothing.
#[derive(Debug, thiserror::Error)]
pub enum OrderChangeError {
    /// The new target is not an amount of the order's currency.
    #[error(transparent)]
    Target(MoneyError),
    /// Refused by the order (paused already, cancelled, ...), not found (also
    /// another owner's order: it is not theirs to know of), in conflict, or failed.
    #[error(transparent)]
    Command(CommandError<OrderError>),
}

/// The order `order_id` if `owner` owns it; anyone else's, or none, is `NotFound`.
pub async fn load_own_order(
    events: &EventStore,
    owner: UserId,
    order_id: OrderId,
) -> Result<Order, CommandError<OrderError>> {
    let (order, _) = events.load::<Order>(&order_id.to_string()).await?;
    if order.owner() != Some(owner) {
        return Err(CommandError::NotFound);
    }
    Ok(order)
}

/// Makes `change` to the owner's order, deciding on the order as it is now.
pub async fn change_own_order(
    events: &EventStore,
    owner: UserId,
    order_id: OrderId,
    change: OrderChange,
    metadata: &CommandMetadata,
) -> Result<CommandReceipt, OrderChangeError> {
    let order = load_own_order(events, owner, order_id)
        .await
        .map_err(OrderChangeError::Command)?;
    let command = match change {
        OrderChange::Target(amount) => {
            let currency = order
                .currency()
                .ok_or(OrderChangeError::Command(CommandError::NotFound))?;
            let target = Money::parse(&amount, currency).map_err(OrderChangeError::Target)?;
            OrderCommand::ChangeTarget { target }
        }
        OrderChange::Pause => OrderCommand::Pause,
        OrderChange::Resume => OrderCommand::Resume,
        OrderChange::Cancel => OrderCommand::Cancel,
    };
    events
        .execute::<Order>(&order_id.to_string(), command, metadata)
        .await
        .map_err(|error| OrderChangeError::Command(error.into()))
}

/// Runs a command on an order again (up to 5 times in all) when another command on
/// it got in first: observations are decided on the order as it is, so deciding
/// again is always right.
pub async fn retry_on_conflict<F, Fut>(
    mut execute: F,
) -> Result<CommandReceipt, AggregateError<OrderError>>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<CommandReceipt, AggregateError<OrderError>>>,
{
    let mut attempts = 0;
    loop {
        attempts += 1;
        match execute().await {
            Err(AggregateError::AggregateConflict) if attempts < 5 => continue,
            outcome => return outcome,
        }
    }
}
