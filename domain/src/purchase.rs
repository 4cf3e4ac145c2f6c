//! The `purchase` aggregate: a buyer's purchase order and its lifecycle.
//!
//! ```text
//!              ┌──────────▶ rejected (out_of_stock, unknown_product, retired_product,
//!              │                       currency_mismatch, timed_out)
//! placed ── pending ──▶ confirmed ──▶ shipped ──▶ delivered
//!              │            │
//!              └────────────┴──────▶ cancelled (by the buyer or an administrator)
//! ```
//!
//! A purchase is placed pending; the reservation saga reserves each line on its
//! product and confirms it with the unit prices the stock was reserved at, or
//! rejects it with the reason. Anything else (cancel a shipped purchase, ship a
//! pending one) is an [`PurchaseError::IllegalTransition`] naming the current
//! status. Every event but the placement says only what changed: the lines are the
//! placement's, and the prices the confirmation's.

use std::fmt;

use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};

use crate::ids::{ProductId, PurchaseId, UserId};
use crate::money::{Currency, Money};

/// The most lines one purchase may have.
pub const MAX_LINES: usize = 50;
/// The most units of one product in one purchase.
pub const MAX_QUANTITY: u32 = 1_000;

/// Where a purchase is in its life. Names as in JSON and views.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PurchaseStatus {
    Pending,
    Confirmed,
    Rejected,
    Cancelled,
    Shipped,
    Delivered,
}

impl PurchaseStatus {
    pub const ALL: [PurchaseStatus; 6] = [
        PurchaseStatus::Pending,
        PurchaseStatus::Confirmed,
        PurchaseStatus::Rejected,
        PurchaseStatus::Cancelled,
        PurchaseStatus::Shipped,
        PurchaseStatus::Delivered,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            PurchaseStatus::Pending => "pending",
            PurchaseStatus::Confirmed => "confirmed",
            PurchaseStatus::Rejected => "rejected",
            PurchaseStatus::Cancelled => "cancelled",
            PurchaseStatus::Shipped => "shipped",
            PurchaseStatus::Delivered => "delivered",
        }
    }

    /// The status named `text`, if any.
    pub fn parse(text: &str) -> Option<PurchaseStatus> {
        PurchaseStatus::ALL
            .into_iter()
            .find(|status| status.as_str() == text)
    }

    /// Its reservations still hold stock (pending or confirmed).
    pub fn holds_stock(&self) -> bool {
        matches!(self, PurchaseStatus::Pending | PurchaseStatus::Confirmed)
    }
}

impl fmt::Display for PurchaseStatus {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.as_str())
    }
}

/// One line as the buyer asked for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PurchaseLine {
    pub product_id: ProductId,
    pub quantity: u32,
}

/// One line as confirmed: the unit price its stock was reserved at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PricedLine {
    pub product_id: ProductId,
    pub quantity: u32,
    pub unit_price: Money,
    pub line_total: Money,
}

/// Why a purchase was rejected (`code` in JSON: `out_of_stock`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "code", rename_all = "snake_case")]
pub enum RejectionReason {
    /// `requested` units of `product_id` were asked for, `available` were left.
    OutOfStock {
        product_id: ProductId,
        requested: u32,
        available: u64,
    },
    UnknownProduct {
        product_id: ProductId,
    },
    RetiredProduct {
        product_id: ProductId,
    },
    /// The lines' products are priced in different currencies.
    CurrencyMismatch,
    /// Still pending after the saga's bound.
    TimedOut,
}

impl RejectionReason {
    /// The reason's code: `out_of_stock`, `unknown_product`, ...
    pub fn code(&self) -> &'static str {
        match self {
            RejectionReason::OutOfStock { .. } => "out_of_stock",
            RejectionReason::UnknownProduct { .. } => "unknown_product",
            RejectionReason::RetiredProduct { .. } => "retired_product",
            RejectionReason::CurrencyMismatch => "currency_mismatch",
            RejectionReason::TimedOut => "timed_out",
        }
    }

    /// A sentence for people (mails, pages).
    pub fn describe(&self) -> String {
        match self {
            RejectionReason::OutOfStock {
                requested,
                available,
                ..
            } => format!("not enough stock: {requested} requested, {available} available"),
            RejectionReason::UnknownProduct { .. } => "a product is not in the catalog".to_owned(),
            RejectionReason::RetiredProduct { .. } => "a product is no longer sold".to_owned(),
            RejectionReason::CurrencyMismatch => {
                "the products are priced in different currencies".to_owned()
            }
            RejectionReason::TimedOut => "the purchase could not be settled in time".to_owned(),
        }
    }
}

/// Who cancels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Canceller {
    Buyer,
    Administrator,
}

/// What can be asked of a purchase.
#[derive(Debug, Clone, PartialEq)]
pub enum PurchaseCommand {
    Place {
        purchase_id: PurchaseId,
        owner: UserId,
        lines: Vec<PurchaseLine>,
    },
    /// Every line reserved, at these unit prices (one per line, in the lines' order).
    Confirm {
        unit_prices: Vec<Money>,
    },
    Reject {
        reason: RejectionReason,
    },
    Cancel {
        by: Canceller,
    },
    Ship,
    Deliver,
}

/// What happened to a purchase. The variant names are the stored event types.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum PurchaseEvent {
    PurchasePlaced {
        purchase_id: PurchaseId,
        owner: UserId,
        lines: Vec<PurchaseLine>,
    },
    PurchaseConfirmed {
        lines: Vec<PricedLine>,
        total: Money,
    },
    PurchaseRejected {
        reason: RejectionReason,
    },
    PurchaseCancelled {
        by: Canceller,
    },
    PurchaseShipped,
    PurchaseDelivered,
}

impl DomainEvent for PurchaseEvent {
    fn event_type(&self) -> String {
        let event_type = match self {
            PurchaseEvent::PurchasePlaced { .. } => "PurchasePlaced",
            PurchaseEvent::PurchaseConfirmed { .. } => "PurchaseConfirmed",
            PurchaseEvent::PurchaseRejected { .. } => "PurchaseRejected",
            PurchaseEvent::PurchaseCancelled { .. } => "PurchaseCancelled",
            PurchaseEvent::PurchaseShipped => "PurchaseShipped",
            PurchaseEvent::PurchaseDelivered => "PurchaseDelivered",
        };
        event_type.to_owned()
    }

    fn event_version(&self) -> String {
        "1.0".to_owned()
    }
}

/// Why a purchase command was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PurchaseError {
    #[error("this purchase has already been placed")]
    AlreadyPlaced,
    #[error("no such purchase")]
    NotFound,
    #[error("a purchase needs 1 to {max} lines")]
    LineCount { max: usize },
    #[error("item {index}: the quantity must be between 1 and {max}")]
    QuantityOutOfRange { index: usize, max: u32 },
    #[error("item {index}: this product is already in the purchase")]
    DuplicateProduct { index: usize },
    #[error("the purchase is {current}: it cannot become {wanted}")]
    IllegalTransition {
        current: PurchaseStatus,
        wanted: PurchaseStatus,
    },
    #[error("the confirmation must price every line, in one currency")]
    ConfirmationMismatch,
    #[error("the purchase's total is too large")]
    TotalTooLarge,
}

/// A purchase's current state, rebuilt from its events.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Purchase {
    purchase_id: Option<PurchaseId>,
    owner: Option<UserId>,
    lines: Vec<PurchaseLine>,
    status: Option<PurchaseStatus>,
    priced: Vec<PricedLine>,
    total: Option<Money>,
    reason: Option<RejectionReason>,
}

impl Purchase {
    pub fn id(&self) -> Option<PurchaseId> {
        self.purchase_id
    }

    pub fn owner(&self) -> Option<UserId> {
        self.owner
    }

    pub fn lines(&self) -> &[PurchaseLine] {
        &self.lines
    }

    /// `None` until placed.
    pub fn status(&self) -> Option<PurchaseStatus> {
        self.status
    }

    pub fn total(&self) -> Option<Money> {
        self.total
    }

    /// The confirmed lines (empty until confirmed).
    pub fn priced_lines(&self) -> &[PricedLine] {
        &self.priced
    }

    pub fn reason(&self) -> Option<RejectionReason> {
        self.reason
    }

    pub fn decide(&self, command: PurchaseCommand) -> Result<Vec<PurchaseEvent>, PurchaseError> {
        match command {
            PurchaseCommand::Place {
                purchase_id,
                owner,
                lines,
            } => {
                if self.status.is_some() {
                    return Err(PurchaseError::AlreadyPlaced);
                }
                check_lines(&lines)?;
                Ok(vec![PurchaseEvent::PurchasePlaced {
                    purchase_id,
                    owner,
                    lines,
                }])
            }
            PurchaseCommand::Confirm { unit_prices } => {
                self.transition(PurchaseStatus::Confirmed, &[PurchaseStatus::Pending])?;
                let (lines, total) = self.priced(&unit_prices)?;
                Ok(vec![PurchaseEvent::PurchaseConfirmed { lines, total }])
            }
            PurchaseCommand::Reject { reason } => {
                self.transition(PurchaseStatus::Rejected, &[PurchaseStatus::Pending])?;
                Ok(vec![PurchaseEvent::PurchaseRejected { reason }])
            }
            PurchaseCommand::Cancel { by } => {
                self.transition(
                    PurchaseStatus::Cancelled,
                    &[PurchaseStatus::Pending, PurchaseStatus::Confirmed],
                )?;
                Ok(vec![PurchaseEvent::PurchaseCancelled { by }])
            }
            PurchaseCommand::Ship => {
                self.transition(PurchaseStatus::Shipped, &[PurchaseStatus::Confirmed])?;
                Ok(vec![PurchaseEvent::PurchaseShipped])
            }
            PurchaseCommand::Deliver => {
                self.transition(PurchaseStatus::Delivered, &[PurchaseStatus::Shipped])?;
                Ok(vec![PurchaseEvent::PurchaseDelivered])
            }
        }
    }

    /// Refuses `wanted` unless the purchase is in one of `from`.
    fn transition(
        &self,
        wanted: PurchaseStatus,
        from: &[PurchaseStatus],
    ) -> Result<(), PurchaseError> {
        let Some(current) = self.status else {
            return Err(PurchaseError::NotFound);
        };
        if !from.contains(&current) {
            return Err(PurchaseError::IllegalTransition { current, wanted });
        }
        Ok(())
    }

    /// The lines at `unit_prices`, and their total.
    fn priced(&self, unit_prices: &[Money]) -> Result<(Vec<PricedLine>, Money), PurchaseError> {
        if unit_prices.len() != self.lines.len() {
            return Err(PurchaseError::ConfirmationMismatch);
        }
        let Some(currency) = unit_prices.first().map(Money::currency) else {
            return Err(PurchaseError::ConfirmationMismatch);
        };
        let mut total = Money::zero(currency);
        let mut lines = Vec::with_capacity(self.lines.len());
        for (line, unit_price) in self.lines.iter().zip(unit_prices) {
            let line_total = unit_price
                .times(line.quantity)
                .map_err(|_| PurchaseError::TotalTooLarge)?;
            total = match total.plus(&line_total) {
                None => return Err(PurchaseError::ConfirmationMismatch),
                Some(sum) => sum.map_err(|_| PurchaseError::TotalTooLarge)?,
            };
            lines.push(PricedLine {
                product_id: line.product_id,
                quantity: line.quantity,
                unit_price: *unit_price,
                line_total,
            });
        }
        Ok((lines, total))
    }

    /// The currency of a confirmed purchase.
    pub fn currency(&self) -> Option<Currency> {
        self.total.map(|total| total.currency())
    }

    /// A fixed history that uses every event variant (see
    /// [`crate::product::Product::fingerprint_history`]).
    pub fn fingerprint_history() -> Vec<PurchaseEvent> {
        let id = |n: u128| uuid::Uuid::from_u128(0x0192_f1a8_0000_7000_8000_0000_0000_0000 + n);
        let usd = Money::new(rust_decimal::Decimal::new(2_999, 2), Currency::USD)
            .expect("a valid USD amount");
        let line = PurchaseLine {
            product_id: ProductId::from_uuid(id(2)),
            quantity: 1,
        };
        vec![
            PurchaseEvent::PurchasePlaced {
                purchase_id: PurchaseId::from_uuid(id(1)),
                owner: UserId::from_uuid(id(3)),
                lines: vec![line],
            },
            PurchaseEvent::PurchaseConfirmed {
                lines: vec![PricedLine {
                    product_id: line.product_id,
                    quantity: 1,
                    unit_price: usd,
                    line_total: usd,
                }],
                total: usd,
            },
            PurchaseEvent::PurchaseShipped,
            PurchaseEvent::PurchaseDelivered,
            PurchaseEvent::PurchaseRejected {
                reason: RejectionReason::TimedOut,
            },
            PurchaseEvent::PurchaseCancelled {
                by: Canceller::Buyer,
            },
        ]
    }
}

/// 1 to [`MAX_LINES`] lines, each product once, quantities 1 to [`MAX_QUANTITY`].
/// Errors name the item by its index in the request (from 0).
pub fn check_lines(lines: &[PurchaseLine]) -> Result<(), PurchaseError> {
    if lines.is_empty() || lines.len() > MAX_LINES {
        return Err(PurchaseError::LineCount { max: MAX_LINES });
    }
    for (index, line) in lines.iter().enumerate() {
        if line.quantity == 0 || line.quantity > MAX_QUANTITY {
            return Err(PurchaseError::QuantityOutOfRange {
                index,
                max: MAX_QUANTITY,
            });
        }
        if lines[..index]
            .iter()
            .any(|earlier| earlier.product_id == line.product_id)
        {
            return Err(PurchaseError::DuplicateProduct { index });
        }
    }
    Ok(())
}

impl Aggregate for Purchase {
    const TYPE: &'static str = "purchase";
    type Command = PurchaseCommand;
    type Event = PurchaseEvent;
    type Error = PurchaseError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        for event in self.decide(command)? {
            sink.write(event, self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            PurchaseEvent::PurchasePlaced {
                purchase_id,
                owner,
                lines,
            } => {
                self.purchase_id = Some(purchase_id);
                self.owner = Some(owner);
                self.lines = lines;
                self.status = Some(PurchaseStatus::Pending);
            }
            PurchaseEvent::PurchaseConfirmed { lines, total } => {
                self.priced = lines;
                self.total = Some(total);
                self.status = Some(PurchaseStatus::Confirmed);
            }
            PurchaseEvent::PurchaseRejected { reason } => {
                self.reason = Some(reason);
                self.status = Some(PurchaseStatus::Rejected);
            }
            PurchaseEvent::PurchaseCancelled { .. } => {
                self.status = Some(PurchaseStatus::Cancelled)
            }
            PurchaseEvent::PurchaseShipped => self.status = Some(PurchaseStatus::Shipped),
            PurchaseEvent::PurchaseDelivered => self.status = Some(PurchaseStatus::Delivered),
        }
    }
}

#[cfg(test)]
mod tests;
