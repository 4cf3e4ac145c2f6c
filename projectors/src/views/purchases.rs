//! `purchases`: one row per purchase, with its status, its lines (priced when it is
//! confirmed), its total, why it was rejected, and its history (one entry per event:
//! the status it led to, when, and who caused it).

use chrono::{DateTime, Utc};
use orders_domain::purchase::{PurchaseEvent, PurchaseStatus, RejectionReason};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use sqlx::postgres::PgRow;
use sqlx::types::Json;
use sqlx::{PgConnection, Row as _};
use uuid::Uuid;

use crate::record::{Event, LogRecord};
use crate::views::folded::{column, FoldedView};
use crate::views::OutOfOrder;

pub(crate) const TABLES: &[&str] = &["view_purchases"];

/// One line of a purchase: a product and how many, with the prices it was confirmed
/// at (`None` until then). Amounts are strings in JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PurchaseLineRow {
    pub product_id: Uuid,
    pub quantity: u32,
    pub unit_price: Option<Decimal>,
    pub line_total: Option<Decimal>,
}

/// One step of a purchase's life: the status an event led to, the event's recorded
/// time, and who caused it (the event's `actor`; `None` if its metadata has none).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    pub status: String,
    /// RFC 3339, UTC.
    pub at: DateTime<Utc>,
    pub actor: Option<String>,
}

/// One row of the `purchases` view.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PurchaseRow {
    pub purchase_id: Uuid,
    pub owner_id: Uuid,
    /// `pending`, `confirmed`, `rejected`, `cancelled`, `shipped` or `delivered`
    /// ([`PurchaseStatus::parse`] reads it).
    pub status: String,
    pub lines: Vec<PurchaseLineRow>,
    /// Set at confirmation, in `currency`.
    pub total: Option<Decimal>,
    /// ISO 4217; set at confirmation.
    pub currency: Option<String>,
    /// Why it was rejected (`{"code": "out_of_stock", ...}` in JSON).
    pub reason: Option<RejectionReason>,
    /// Oldest first.
    pub history: Vec<HistoryEntry>,
    pub placed_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// The purchase aggregate's last sequence applied.
    pub version: i64,
}

/// The status a purchase is in after `event`.
fn status_after(event: &PurchaseEvent) -> PurchaseStatus {
    match event {
        PurchaseEvent::PurchasePlaced { .. } => PurchaseStatus::Pending,
        PurchaseEvent::PurchaseConfirmed { .. } => PurchaseStatus::Confirmed,
        PurchaseEvent::PurchaseRejected { .. } => PurchaseStatus::Rejected,
        PurchaseEvent::PurchaseCancelled { .. } => PurchaseStatus::Cancelled,
        PurchaseEvent::PurchaseShipped => PurchaseStatus::Shipped,
        PurchaseEvent::PurchaseDelivered => PurchaseStatus::Delivered,
    }
}

/// The row after one event (`None` before the purchase is placed).
pub fn fold(
    row: Option<PurchaseRow>,
    record: &LogRecord,
    event: &PurchaseEvent,
) -> Result<PurchaseRow, OutOfOrder> {
    let mut row = match (row, event) {
        (
            None,
            PurchaseEvent::PurchasePlaced {
                purchase_id,
                owner,
                lines,
            },
        ) => PurchaseRow {
            purchase_id: purchase_id.as_uuid(),
            owner_id: owner.as_uuid(),
            status: PurchaseStatus::Pending.as_str().to_owned(),
            lines: lines
                .iter()
                .map(|line| PurchaseLineRow {
                    product_id: line.product_id.as_uuid(),
                    quantity: line.quantity,
                    unit_price: None,
                    line_total: None,
                })
                .collect(),
            total: None,
            currency: None,
            reason: None,
            history: Vec::new(),
            placed_at: record.recorded_at,
            updated_at: record.recorded_at,
            version: record.sequence,
        },
        (None, _) | (Some(_), PurchaseEvent::PurchasePlaced { .. }) => {
            return Err(OutOfOrder::new(record))
        }
        (Some(row), _) => row,
    };
    match event {
        PurchaseEvent::PurchaseConfirmed { lines, total } => {
            for line in &mut row.lines {
                if let Some(priced) = lines
                    .iter()
                    .find(|priced| priced.product_id.as_uuid() == line.product_id)
                {
                    line.unit_price = Some(priced.unit_price.amount());
                    line.line_total = Some(priced.line_total.amount());
                }
            }
            row.total = Some(total.amount());
            row.currency = Some(total.currency().code().to_owned());
        }
        PurchaseEvent::PurchaseRejected { reason } => row.reason = Some(*reason),
        PurchaseEvent::PurchasePlaced { .. }
        | PurchaseEvent::PurchaseCancelled { .. }
        | PurchaseEvent::PurchaseShipped
        | PurchaseEvent::PurchaseDelivered => {}
    }
    let status = status_after(event).as_str().to_owned();
    row.history.push(HistoryEntry {
        status: status.clone(),
        at: record.recorded_at,
        actor: record.actor.clone(),
    });
    row.status = status;
    row.updated_at = record.recorded_at;
    row.version = record.sequence;
    Ok(row)
}

pub(crate) const COLUMNS: &str = "purchase_id, owner_id, status, lines, total, currency, \
    reason, history, placed_at, updated_at, version";

impl<'r> sqlx::FromRow<'r, PgRow> for PurchaseRow {
    fn from_row(row: &'r PgRow) -> sqlx::Result<Self> {
        let Json(lines) = row.try_get("lines")?;
        let reason: Option<Json<RejectionReason>> = row.try_get("reason")?;
        let Json(history) = row.try_get("history")?;
        Ok(PurchaseRow {
            purchase_id: row.try_get("purchase_id")?,
            owner_id: row.try_get("owner_id")?,
            status: row.try_get("status")?,
            lines,
            total: row.try_get("total")?,
            currency: row.try_get("currency")?,
            reason: reason.map(|Json(reason)| reason),
            history,
            placed_at: row.try_get("placed_at")?,
            updated_at: row.try_get("updated_at")?,
            version: row.try_get("version")?,
        })
    }
}

/// The `purchases` view: one row per purchase, folded from the purchase's events.
pub(crate) struct Purchases;

impl FoldedView for Purchases {
    type Row = PurchaseRow;
    const TABLE: &'static str = TABLES[0];
    const KEY: &'static str = "purchase_id";
    const COLUMNS: &'static str = COLUMNS;

    fn key_of(record: &LogRecord) -> Option<Uuid> {
        matches!(record.event, Event::Purchase(_)).then(|| record.aggregate_uuid())
    }

    fn key(row: &PurchaseRow) -> Uuid {
        row.purchase_id
    }

    fn from_row(row: &PgRow) -> sqlx::Result<PurchaseRow> {
        sqlx::FromRow::from_row(row)
    }

    fn fold(
        row: Option<PurchaseRow>,
        record: &LogRecord,
    ) -> Result<Option<PurchaseRow>, OutOfOrder> {
        match &record.event {
            Event::Purchase(event) => fold(row, record, event).map(Some),
            _ => Ok(row),
        }
    }

    async fn upsert(
        connection: &mut PgConnection,
        table: &str,
        written: &[&PurchaseRow],
    ) -> sqlx::Result<()> {
        sqlx::query(&format!(
            "INSERT INTO {table} ({COLUMNS})
             SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::jsonb[], $5::numeric[],
                                  $6::text[], $7::jsonb[], $8::jsonb[], $9::timestamptz[],
                                  $10::timestamptz[], $11::int8[])
             ON CONFLICT (purchase_id) DO UPDATE SET
                    owner_id = EXCLUDED.owner_id, status = EXCLUDED.status,
                    lines = EXCLUDED.lines, total = EXCLUDED.total,
                    currency = EXCLUDED.currency, reason = EXCLUDED.reason,
                    history = EXCLUDED.history, placed_at = EXCLUDED.placed_at,
                    updated_at = EXCLUDED.updated_at, version = EXCLUDED.version"
        ))
        .bind(column(written, |r| r.purchase_id))
        .bind(column(written, |r| r.owner_id))
        .bind(column(written, |r| r.status.clone()))
        .bind(column(written, |r| Json(r.lines.clone())))
        .bind(column(written, |r| r.total))
        .bind(column(written, |r| r.currency.clone()))
        .bind(column(written, |r| r.reason.map(Json)))
        .bind(column(written, |r| Json(r.history.clone())))
        .bind(column(written, |r| r.placed_at))
        .bind(column(written, |r| r.updated_at))
        .bind(column(written, |r| r.version))
        .execute(connection)
        .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use orders_domain::ids::{ProductId, PurchaseId, UserId};
    use orders_domain::money::{Currency, Money};
    use orders_domain::purchase::{Canceller, PricedLine, PurchaseLine};

    use super::*;
    use crate::views::tests::record;

    fn eur(amount: &str) -> Money {
        Money::parse(amount, Currency::EUR).unwrap()
    }

    fn folded(id: Uuid, events: &[PurchaseEvent]) -> PurchaseRow {
        let mut row = None;
        for (index, event) in events.iter().enumerate() {
            let record = record(id, index as i64 + 1, Event::Purchase(event.clone()));
            row = Some(fold(row, &record, event).unwrap());
        }
        row.unwrap()
    }

    fn placed(id: Uuid, kettle: ProductId, mug: ProductId) -> PurchaseEvent {
        PurchaseEvent::PurchasePlaced {
            purchase_id: PurchaseId::from_uuid(id),
            owner: UserId::from_uuid(Uuid::from_u128(7)),
            lines: vec![
                PurchaseLine {
                    product_id: kettle,
                    quantity: 2,
                },
                PurchaseLine {
                    product_id: mug,
                    quantity: 1,
                },
            ],
        }
    }

    #[test]
    fn a_confirmation_prices_every_line_and_each_event_is_a_step_of_the_history() {
        let id = Uuid::now_v7();
        let (kettle, mug) = (
            ProductId::from_uuid(Uuid::from_u128(1)),
            ProductId::from_uuid(Uuid::from_u128(2)),
        );
        let row = folded(id, &[placed(id, kettle, mug)]);
        assert_eq!(row.status, "pending");
        assert_eq!(row.owner_id, Uuid::from_u128(7));
        assert!(row
            .lines
            .iter()
            .all(|line| line.unit_price.is_none() && line.line_total.is_none()));
        assert_eq!(row.total, None);

        let confirmed = PurchaseEvent::PurchaseConfirmed {
            // Priced in another order than placed: each line finds its own price.
            lines: vec![
                PricedLine {
                    product_id: mug,
                    quantity: 1,
                    unit_price: eur("4.50"),
                    line_total: eur("4.50"),
                },
                PricedLine {
                    product_id: kettle,
                    quantity: 2,
                    unit_price: eur("30.00"),
                    line_total: eur("60.00"),
                },
            ],
            total: eur("64.50"),
        };
        let events = [
            placed(id, kettle, mug),
            confirmed,
            PurchaseEvent::PurchaseShipped,
            PurchaseEvent::PurchaseDelivered,
        ];
        let row = folded(id, &events);
        assert_eq!(row.status, "delivered");
        assert_eq!(row.lines[0].product_id, kettle.as_uuid());
        assert_eq!(row.lines[0].unit_price, Some(eur("30.00").amount()));
        assert_eq!(row.lines[0].line_total, Some(eur("60.00").amount()));
        assert_eq!(row.lines[1].line_total, Some(eur("4.50").amount()));
        assert_eq!(row.total, Some(eur("64.50").amount()));
        assert_eq!(row.currency.as_deref(), Some("EUR"));
        let steps: Vec<&str> = row
            .history
            .iter()
            .map(|step| step.status.as_str())
            .collect();
        assert_eq!(steps, ["pending", "confirmed", "shipped", "delivered"]);
        assert!(row.history.windows(2).all(|pair| pair[0].at < pair[1].at));
        assert!(row
            .history
            .iter()
            .all(|step| step.actor.as_deref() == Some("user:test")));
        assert_eq!(row.placed_at, row.history[0].at);
        assert_eq!(row.updated_at, row.history[3].at);
        assert_eq!(row.version, 4);
    }

    #[test]
    fn a_rejection_keeps_its_reason_and_a_cancellation_its_step() {
        let id = Uuid::now_v7();
        let kettle = ProductId::from_uuid(Uuid::from_u128(1));
        let mug = ProductId::from_uuid(Uuid::from_u128(2));
        let reason = RejectionReason::OutOfStock {
            product_id: kettle,
            requested: 2,
            available: 1,
        };
        let row = folded(
            id,
            &[
                placed(id, kettle, mug),
                PurchaseEvent::PurchaseRejected { reason },
            ],
        );
        assert_eq!(row.status, "rejected");
        assert_eq!(row.reason, Some(reason));
        assert_eq!(
            serde_json::to_value(row.reason).unwrap()["code"],
            "out_of_stock"
        );
        assert_eq!(row.total, None);

        let row = folded(
            id,
            &[
                placed(id, kettle, mug),
                PurchaseEvent::PurchaseCancelled {
                    by: Canceller::Buyer,
                },
            ],
        );
        assert_eq!(row.status, "cancelled");
        assert_eq!(row.history.len(), 2);
        assert_eq!(row.reason, None);

        let stray = record(
            Uuid::now_v7(),
            2,
            Event::Purchase(PurchaseEvent::PurchaseShipped),
        );
        assert!(fold(None, &stray, &PurchaseEvent::PurchaseShipped).is_err());
        let twice = record(id, 3, Event::Purchase(placed(id, kettle, mug)));
        assert!(fold(Some(row), &twice, &placed(id, kettle, mug)).is_err());
    }
}
