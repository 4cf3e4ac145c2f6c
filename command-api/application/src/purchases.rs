//! Purchases: what a buyer does (place one, cancel it) and what an administrator
//! does (ship, deliver, cancel), and the saga's verdict (confirm or reject); the
//! saga's stock commands are in `crate::stock`.
//!
//! Placing needs an active account with a verified e-mail address. With an
//! `Idempotency-Key` (in the metadata), a retry of the same request answers with
//! the purchase the first one created and stores nothing; the same key for other
//! lines is refused.

use cqrs_es::AggregateError;
use orders_domain::ids::{PurchaseId, UserId};
use orders_domain::purchase::{
    Canceller, Purchase, PurchaseCommand, PurchaseError, PurchaseLine, PurchaseStatus,
};
use orders_store::event_store::{
    execute_retrying_conflicts, CommandMetadata, CommandReceipt, EventStore, LogPosition,
};

use crate::accounts::{active_user, InactiveAccount};
use crate::{CommandError, StoreFailure};

/// What a buyer asks for.
#[derive(Debug, Clone)]
pub struct PlacePurchase {
    pub owner: UserId,
    pub lines: Vec<PurchaseLine>,
    /// The credentials version of the caller's access token (`None`: a console
    /// session): refused when the owner's password has changed since.
    pub credentials_version: Option<u32>,
}

/// What a placement did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PurchasePlacement {
    Created {
        purchase_id: PurchaseId,
        position: Option<LogPosition>,
    },
    /// A retry with the same `Idempotency-Key`: nothing was stored.
    Replayed {
        purchase_id: PurchaseId,
        position: Option<LogPosition>,
    },
}

/// Why no purchase was placed.
#[derive(Debug, thiserror::Error)]
pub enum PlacePurchaseError {
    #[error(transparent)]
    Inactive(InactiveAccount),
    #[error("the password was changed since this token was issued: sign in again")]
    CredentialsChanged,
    #[error("verify your e-mail address before buying")]
    EmailNotVerified,
    /// Bad lines (none, too many, a quantity out of range, a product twice).
    #[error(transparent)]
    Refused(PurchaseError),
    #[error("this Idempotency-Key was already used for a different purchase")]
    IdempotencyKeyReused,
    #[error("the event store failed")]
    Store(#[source] StoreFailure),
}

/// Places a purchase, pending until the saga settles it.
pub async fn place_purchase(
    events: &EventStore,
    purchase: PlacePurchase,
    metadata: &CommandMetadata,
) -> Result<PurchasePlacement, PlacePurchaseError> {
    orders_domain::purchase::check_lines(&purchase.lines).map_err(PlacePurchaseError::Refused)?;
    let buyer = active_user(events, purchase.owner)
        .await
        .map_err(PlacePurchaseError::Inactive)?;
    if purchase
        .credentials_version
        .is_some_and(|version| version != buyer.credentials_version())
    {
        return Err(PlacePurchaseError::CredentialsChanged);
    }
    if !buyer.email_verified() {
        return Err(PlacePurchaseError::EmailNotVerified);
    }
    let purchase_id = PurchaseId::new();
    let command = PurchaseCommand::Place {
        purchase_id,
        owner: purchase.owner,
        lines: purchase.lines.clone(),
    };
    match events
        .execute_on_new::<Purchase>(&purchase_id.to_string(), command, metadata)
        .await
    {
        Ok(receipt) => Ok(PurchasePlacement::Created {
            purchase_id,
            position: receipt.position,
        }),
        // The id is new: a conflict is the idempotency key's index.
        Err(AggregateError::AggregateConflict) => replay(events, &purchase, metadata).await,
        Err(AggregateError::UserError(refusal)) => Err(PlacePurchaseError::Refused(refusal)),
        Err(error) => Err(PlacePurchaseError::Store(StoreFailure::new(error))),
    }
}

/// The purchase the metadata's idempotency key already placed, if it asked for the
/// same lines (else the key was reused: refused).
async fn replay(
    events: &EventStore,
    purchase: &PlacePurchase,
    metadata: &CommandMetadata,
) -> Result<PurchasePlacement, PlacePurchaseError> {
    let store_failure = |error: sqlx::Error| PlacePurchaseError::Store(StoreFailure::new(error));
    let Some(key) = metadata.idempotency_key.as_deref() else {
        return Err(PlacePurchaseError::Store(StoreFailure::new(
            "a new purchase id conflicted without an idempotency key",
        )));
    };
    let (purchase_id, placed) = events
        .purchase_placed_with_idempotency_key(purchase.owner, key)
        .await
        .map_err(store_failure)?
        .ok_or_else(|| {
            PlacePurchaseError::Store(StoreFailure::new(
                "the idempotency key conflicted but no purchase holds it",
            ))
        })?;
    let stored_lines = placed
        .get("lines")
        .and_then(|lines| serde_json::from_value::<Vec<PurchaseLine>>(lines.clone()).ok());
    if stored_lines.as_deref() != Some(purchase.lines.as_slice()) {
        return Err(PlacePurchaseError::IdempotencyKeyReused);
    }
    let position = events
        .last_position("purchase", &purchase_id.to_string())
        .await
        .map_err(store_failure)?;
    Ok(PurchasePlacement::Replayed {
        purchase_id,
        position,
    })
}

/// The purchase `purchase_id` if `owner` made it; anyone else's, or none, is
/// `NotFound`.
pub async fn load_own_purchase(
    events: &EventStore,
    owner: UserId,
    purchase_id: PurchaseId,
) -> Result<Purchase, CommandError<PurchaseError>> {
    let (purchase, _) = events.load::<Purchase>(&purchase_id.to_string()).await?;
    if purchase.owner() != Some(owner) {
        return Err(CommandError::NotFound);
    }
    Ok(purchase)
}

/// The buyer cancels their purchase (pending or confirmed); the saga releases its
/// stock.
pub async fn cancel_own_purchase(
    events: &EventStore,
    owner: UserId,
    purchase_id: PurchaseId,
    metadata: &CommandMetadata,
) -> Result<CommandReceipt, CommandError<PurchaseError>> {
    load_own_purchase(events, owner, purchase_id).await?;
    let command = PurchaseCommand::Cancel {
        by: Canceller::Buyer,
    };
    execute_on_purchase(events, purchase_id, command, metadata).await
}

/// The statuses an administrator sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdministratorStatus {
    Shipped,
    Delivered,
    Cancelled,
}

impl AdministratorStatus {
    /// `shipped`, `delivered` or `cancelled`; any other status is not theirs to set.
    pub fn parse(text: &str) -> Option<AdministratorStatus> {
        match PurchaseStatus::parse(text)? {
            PurchaseStatus::Shipped => Some(AdministratorStatus::Shipped),
            PurchaseStatus::Delivered => Some(AdministratorStatus::Delivered),
            PurchaseStatus::Cancelled => Some(AdministratorStatus::Cancelled),
            _ => None,
        }
    }
}

/// An administrator ships, delivers or cancels a purchase.
pub async fn set_purchase_status(
    events: &EventStore,
    purchase_id: PurchaseId,
    status: AdministratorStatus,
    metadata: &CommandMetadata,
) -> Result<CommandReceipt, CommandError<PurchaseError>> {
    let command = match status {
        AdministratorStatus::Shipped => PurchaseCommand::Ship,
        AdministratorStatus::Delivered => PurchaseCommand::Deliver,
        AdministratorStatus::Cancelled => PurchaseCommand::Cancel {
            by: Canceller::Administrator,
        },
    };
    execute_on_purchase(events, purchase_id, command, metadata).await
}

/// The saga (or its time bound) rejects a pending purchase.
pub async fn reject_purchase(
    events: &EventStore,
    purchase_id: PurchaseId,
    reason: orders_domain::purchase::RejectionReason,
    metadata: &CommandMetadata,
) -> Result<CommandReceipt, CommandError<PurchaseError>> {
    let command = PurchaseCommand::Reject { reason };
    execute_on_purchase(events, purchase_id, command, metadata).await
}

/// The saga's verdict (`Confirm` or `Reject`) on a purchase it loaded at
/// `sequence` and has held since (while it reserved the stock): decided on that
/// state and appended after it, without loading it again. A command stored
/// meanwhile (the buyer cancelled) makes it a `Conflict`, and nothing is stored:
/// load it and start over.
pub async fn decide_on_held(
    events: &EventStore,
    purchase: &Purchase,
    sequence: usize,
    command: PurchaseCommand,
    metadata: &CommandMetadata,
) -> Result<CommandReceipt, CommandError<PurchaseError>> {
    let purchase_id = purchase.id().ok_or(CommandError::NotFound)?;
    let decided = purchase
        .decide(command)
        .map_err(CommandError::Refused)?
        .into_iter()
        .map(|event| (event, metadata.clone()))
        .collect();
    Ok(events
        .append_decided::<Purchase>(&purchase_id.to_string(), sequence, decided)
        .await?)
}

/// Runs a command on a purchase, decided again on the new state when the saga
/// appended first (its confirmation, say): the answer is then the transition's
/// truth (a cancel after a confirmation still cancels; a ship before it is a 409).
async fn execute_on_purchase(
    events: &EventStore,
    purchase_id: PurchaseId,
    command: PurchaseCommand,
    metadata: &CommandMetadata,
) -> Result<CommandReceipt, CommandError<PurchaseError>> {
    let id = purchase_id.to_string();
    let outcome =
        execute_retrying_conflicts(|| events.execute::<Purchase>(&id, command.clone(), metadata))
            .await;
    match outcome {
        Err(AggregateError::UserError(PurchaseError::NotFound)) => Err(CommandError::NotFound),
        outcome => outcome.map_err(CommandError::from),
    }
}
