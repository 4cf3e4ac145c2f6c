//! `products`: one row per catalog product, with its descriptive fields, its price
//! and its stock (on hand, reserved for purchases, available), folded from the
//! product's events as the aggregate keeps them.

use chrono::{DateTime, Utc};
use orders_domain::product::ProductEvent;
use rust_decimal::Decimal;
use serde::Serialize;
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Row as _};
use uuid::Uuid;

use crate::record::{Event, LogRecord};
use crate::views::folded::{column, FoldedView};
use crate::views::OutOfOrder;

pub(crate) const TABLES: &[&str] = &["view_products"];

/// A product that can be bought.
pub const ACTIVE: &str = "active";
/// A product retired from the catalog (never deleted: its history stays).
pub const RETIRED: &str = "retired";

/// One row of the `products` view.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProductRow {
    pub product_id: Uuid,
    pub sku: String,
    pub name: String,
    pub description: String,
    /// In `currency`; a string in JSON (`"29.99"`).
    pub price: Decimal,
    /// ISO 4217.
    pub currency: String,
    pub image_url: Option<String>,
    pub on_hand: i64,
    /// Held by pending and confirmed purchases.
    pub reserved: i64,
    /// `on_hand - reserved`, never below zero.
    pub available: i64,
    /// [`ACTIVE`] or [`RETIRED`].
    pub status: String,
    pub added_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// The product aggregate's last sequence applied.
    pub version: i64,
}

fn units(quantity: u64) -> i64 {
    i64::try_from(quantity).unwrap_or(i64::MAX)
}

/// The row after one event (`None` before the product is added).
pub fn fold(
    row: Option<ProductRow>,
    record: &LogRecord,
    event: &ProductEvent,
) -> Result<ProductRow, OutOfOrder> {
    let mut row = match (row, event) {
        (
            None,
            ProductEvent::ProductAdded {
                product_id,
                sku,
                name,
                description,
                price,
                image_url,
                stock,
            },
        ) => ProductRow {
            product_id: product_id.as_uuid(),
            sku: sku.as_str().to_owned(),
            name: name.clone(),
            description: description.clone(),
            price: price.amount(),
            currency: price.currency().code().to_owned(),
            image_url: image_url.as_ref().map(|url| url.as_str().to_owned()),
            on_hand: units(*stock),
            reserved: 0,
            available: 0,
            status: ACTIVE.to_owned(),
            added_at: record.recorded_at,
            updated_at: record.recorded_at,
            version: record.sequence,
        },
        (None, _) | (Some(_), ProductEvent::ProductAdded { .. }) => {
            return Err(OutOfOrder::new(record))
        }
        (Some(row), _) => row,
    };
    match event {
        ProductEvent::ProductAdded { .. } | ProductEvent::ReservationRefused { .. } => {}
        ProductEvent::ProductUpdated {
            name,
            description,
            image_url,
        } => {
            row.name = name.clone();
            row.description = description.clone();
            row.image_url = image_url.as_ref().map(|url| url.as_str().to_owned());
        }
        ProductEvent::ProductPriceChanged { price, .. } => {
            row.price = price.amount();
            row.currency = price.currency().code().to_owned();
        }
        ProductEvent::StockAdjusted { on_hand, .. } => row.on_hand = units(*on_hand),
        ProductEvent::ProductRetired => row.status = RETIRED.to_owned(),
        ProductEvent::StockReserved { quantity, .. } => {
            row.reserved = row.reserved.saturating_add(i64::from(*quantity));
        }
        ProductEvent::ReservationReleased { quantity, .. } => {
            row.reserved = (row.reserved - i64::from(*quantity)).max(0);
        }
        ProductEvent::StockShipped { quantity, .. } => {
            row.reserved = (row.reserved - i64::from(*quantity)).max(0);
            row.on_hand = (row.on_hand - i64::from(*quantity)).max(0);
        }
    }
    row.available = (row.on_hand - row.reserved).max(0);
    row.updated_at = record.recorded_at;
    row.version = record.sequence;
    Ok(row)
}

pub(crate) const COLUMNS: &str = "product_id, sku, name, description, price, currency, \
    image_url, on_hand, reserved, available, status, added_at, updated_at, version";

impl<'r> sqlx::FromRow<'r, PgRow> for ProductRow {
    fn from_row(row: &'r PgRow) -> sqlx::Result<Self> {
        Ok(ProductRow {
            product_id: row.try_get("product_id")?,
            sku: row.try_get("sku")?,
            name: row.try_get("name")?,
            description: row.try_get("description")?,
            price: row.try_get("price")?,
            currency: row.try_get("currency")?,
            image_url: row.try_get("image_url")?,
            on_hand: row.try_get("on_hand")?,
            reserved: row.try_get("reserved")?,
            available: row.try_get("available")?,
            status: row.try_get("status")?,
            added_at: row.try_get("added_at")?,
            updated_at: row.try_get("updated_at")?,
            version: row.try_get("version")?,
        })
    }
}

/// The `products` view: one row per product, folded from the product's events.
pub(crate) struct Products;

impl FoldedView for Products {
    type Row = ProductRow;
    const TABLE: &'static str = TABLES[0];
    const KEY: &'static str = "product_id";
    const COLUMNS: &'static str = COLUMNS;

    fn key_of(record: &LogRecord) -> Option<Uuid> {
        matches!(record.event, Event::Product(_)).then(|| record.aggregate_uuid())
    }

    fn key(row: &ProductRow) -> Uuid {
        row.product_id
    }

    fn from_row(row: &PgRow) -> sqlx::Result<ProductRow> {
        sqlx::FromRow::from_row(row)
    }

    fn fold(row: Option<ProductRow>, record: &LogRecord) -> Result<Option<ProductRow>, OutOfOrder> {
        match &record.event {
            Event::Product(event) => fold(row, record, event).map(Some),
            _ => Ok(row),
        }
    }

    async fn upsert(
        connection: &mut PgConnection,
        table: &str,
        written: &[&ProductRow],
    ) -> sqlx::Result<()> {
        sqlx::query(&format!(
            "INSERT INTO {table} ({COLUMNS})
             SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[], $5::numeric[],
                                  $6::text[], $7::text[], $8::int8[], $9::int8[], $10::int8[],
                                  $11::text[], $12::timestamptz[], $13::timestamptz[], $14::int8[])
             ON CONFLICT (product_id) DO UPDATE SET
                    sku = EXCLUDED.sku, name = EXCLUDED.name,
                    description = EXCLUDED.description, price = EXCLUDED.price,
                    currency = EXCLUDED.currency, image_url = EXCLUDED.image_url,
                    on_hand = EXCLUDED.on_hand, reserved = EXCLUDED.reserved,
                    available = EXCLUDED.available, status = EXCLUDED.status,
                    added_at = EXCLUDED.added_at, updated_at = EXCLUDED.updated_at,
                    version = EXCLUDED.version"
        ))
        .bind(column(written, |r| r.product_id))
        .bind(column(written, |r| r.sku.clone()))
        .bind(column(written, |r| r.name.clone()))
        .bind(column(written, |r| r.description.clone()))
        .bind(column(written, |r| r.price))
        .bind(column(written, |r| r.currency.clone()))
        .bind(column(written, |r| r.image_url.clone()))
        .bind(column(written, |r| r.on_hand))
        .bind(column(written, |r| r.reserved))
        .bind(column(written, |r| r.available))
        .bind(column(written, |r| r.status.clone()))
        .bind(column(written, |r| r.added_at))
        .bind(column(written, |r| r.updated_at))
        .bind(column(written, |r| r.version))
        .execute(connection)
        .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use cqrs_es::Aggregate as _;
    use orders_domain::ids::{ProductId, PurchaseId};
    use orders_domain::money::{Currency, Money};
    use orders_domain::product::{Product, Sku};
    use uuid::Uuid;

    use super::*;
    use crate::views::tests::record;

    fn usd(amount: &str) -> Money {
        Money::parse(amount, Currency::USD).unwrap()
    }

    /// Folds `events` of one product into its row, checking after each event that
    /// the row's stock is what the aggregate holds.
    fn folded(id: Uuid, events: &[ProductEvent]) -> ProductRow {
        let mut product = Product::default();
        let mut row = None;
        for (index, event) in events.iter().enumerate() {
            let record = record(id, index as i64 + 1, Event::Product(event.clone()));
            let next = fold(row, &record, event).unwrap();
            product.apply(event.clone());
            assert_eq!(next.on_hand as u64, product.on_hand(), "after {event:?}");
            assert_eq!(next.reserved as u64, product.reserved(), "after {event:?}");
            assert_eq!(
                next.available as u64,
                product.available(),
                "after {event:?}"
            );
            assert_eq!(next.status == RETIRED, product.is_retired());
            assert_eq!(Some(next.price), product.price().map(|p| p.amount()));
            row = Some(next);
        }
        row.unwrap()
    }

    #[test]
    fn a_products_row_keeps_the_stock_the_aggregate_keeps_through_every_event() {
        let history = Product::fingerprint_history();
        let ProductEvent::ProductAdded { product_id, .. } = &history[0] else {
            panic!("the history starts with the product's addition");
        };
        let row = folded(product_id.as_uuid(), &history);
        assert_eq!(row.name, "Kettle 2");
        assert_eq!(row.description, "Boils water fast");
        assert_eq!(row.image_url.as_deref(), Some("https://img.example/k.png"));
        assert_eq!(row.price, usd("24.99").amount());
        assert_eq!(row.currency, "USD");
        assert_eq!((row.on_hand, row.reserved, row.available), (6, 0, 6));
        assert_eq!(row.status, RETIRED);
        assert_eq!(row.version, history.len() as i64);
    }

    #[test]
    fn reservations_releases_and_shipments_move_reserved_and_on_hand() {
        let id = Uuid::now_v7();
        let buyer = |n: u128| PurchaseId::from_uuid(Uuid::from_u128(n));
        let mut events = vec![
            ProductEvent::ProductAdded {
                product_id: ProductId::from_uuid(id),
                sku: Sku::parse("MUG-1").unwrap(),
                name: "Mug".to_owned(),
                description: String::new(),
                price: usd("8.50"),
                image_url: None,
                stock: 5,
            },
            ProductEvent::StockReserved {
                purchase_id: buyer(1),
                quantity: 3,
                unit_price: usd("8.50"),
            },
            ProductEvent::StockReserved {
                purchase_id: buyer(2),
                quantity: 2,
                unit_price: usd("8.50"),
            },
        ];
        let row = folded(id, &events);
        assert_eq!((row.on_hand, row.reserved, row.available), (5, 5, 0));
        assert_eq!(row.status, ACTIVE);
        events.extend([
            ProductEvent::ReservationRefused {
                purchase_id: buyer(3),
                requested: 1,
                available: 0,
            },
            ProductEvent::ReservationReleased {
                purchase_id: buyer(1),
                quantity: 3,
            },
            ProductEvent::StockShipped {
                purchase_id: buyer(2),
                quantity: 2,
            },
            ProductEvent::StockAdjusted {
                quantity: 7,
                reason: "restock".to_owned(),
                on_hand: 10,
            },
        ]);
        let row = folded(id, &events);
        assert_eq!((row.on_hand, row.reserved, row.available), (10, 0, 10));

        let stray = record(
            Uuid::now_v7(),
            1,
            Event::Product(ProductEvent::ProductRetired),
        );
        assert!(fold(None, &stray, &ProductEvent::ProductRetired).is_err());
    }
}
