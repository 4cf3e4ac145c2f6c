//! The shop's fixtures and its invariant, for tests and benchmarks: verified buyers
//! and administrators stored straight through the event store, products, and
//! guarantee 10 recomputed from the events table alone.

use orders_domain::email::EmailAddress;
use orders_domain::ids::{ProductId, UserId};
use orders_domain::money::Money;
use orders_domain::product::{Product, ProductCommand, Sku};
use orders_domain::user::{Role, User, UserCommand};
use orders_store::event_store::{CommandMetadata, EventStore};
use sqlx::PgPool;

/// An argon2id hash nobody can log in with (a fixture's password is never used:
/// tests mint its access tokens).
const UNUSABLE_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA";

/// A registered user with a verified address (and `role`, if given), stored as
/// fixtures (`cli:test-fixture`).
pub async fn verified_user(
    events: &EventStore,
    email: &str,
    role: Option<Role>,
) -> anyhow::Result<UserId> {
    let metadata = CommandMetadata::new_job("cli:test-fixture");
    let user_id = UserId::new();
    let id = user_id.to_string();
    events
        .execute_with_password(
            &id,
            UserCommand::Register {
                user_id,
                email: EmailAddress::parse(email)?,
            },
            &metadata,
            UNUSABLE_HASH.to_owned(),
        )
        .await
        .map_err(|error| anyhow::anyhow!("registering {email}: {error}"))?;
    events
        .execute::<User>(&id, UserCommand::VerifyEmail, &metadata)
        .await
        .map_err(|error| anyhow::anyhow!("verifying {email}: {error}"))?;
    if let Some(role) = role {
        events
            .execute::<User>(&id, UserCommand::GrantRole { role }, &metadata)
            .await
            .map_err(|error| anyhow::anyhow!("granting {role:?} to {email}: {error}"))?;
    }
    Ok(user_id)
}

/// A product with `stock` units at `price`, stored as a fixture.
pub async fn product(events: &EventStore, price: Money, stock: u64) -> anyhow::Result<ProductId> {
    let product_id = ProductId::new();
    let sku = format!("SKU-{}", product_id.as_uuid().simple());
    events
        .execute_on_new::<Product>(
            &product_id.to_string(),
            ProductCommand::Add {
                product_id,
                sku: Sku::parse(&sku)?,
                name: format!("Product {}", &sku[4..12]),
                description: String::new(),
                price,
                image_url: None,
                stock,
            },
            &CommandMetadata::new_job("cli:test-fixture"),
        )
        .await
        .map_err(|error| anyhow::anyhow!("adding a product: {error}"))?;
    Ok(product_id)
}

/// Guarantee 10 from the events table alone: for every product, the units its
/// reservation events hold now equal what its pending and confirmed purchases asked
/// for. Answers the products where they differ (product, held, owed); empty when
/// the invariant holds.
pub async fn reservation_mismatches(pool: &PgPool) -> sqlx::Result<Vec<(String, i64, i64)>> {
    sqlx::query_as(
        "WITH held AS (
             SELECT aggregate_id AS product_id,
                    SUM(CASE event_type
                          WHEN 'StockReserved' THEN (payload -> 'StockReserved' ->> 'quantity')::bigint
                          WHEN 'ReservationReleased' THEN -(payload -> 'ReservationReleased' ->> 'quantity')::bigint
                          WHEN 'StockShipped' THEN -(payload -> 'StockShipped' ->> 'quantity')::bigint
                          ELSE 0 END)::bigint AS reserved
               FROM events WHERE aggregate_type = 'product' GROUP BY aggregate_id
         ), status AS (
             SELECT DISTINCT ON (aggregate_id) aggregate_id, event_type
               FROM events WHERE aggregate_type = 'purchase'
              ORDER BY aggregate_id, sequence DESC
         ), owed AS (
             SELECT line ->> 'product_id' AS product_id,
                    SUM((line ->> 'quantity')::bigint)::bigint AS reserved
               FROM events placed
               JOIN status ON status.aggregate_id = placed.aggregate_id
              CROSS JOIN jsonb_array_elements(placed.payload -> 'PurchasePlaced' -> 'lines') AS line
              WHERE placed.event_type = 'PurchasePlaced'
                AND status.event_type IN ('PurchasePlaced', 'PurchaseConfirmed')
              GROUP BY 1
         )
         SELECT held.product_id, held.reserved, COALESCE(owed.reserved, 0)::bigint
           FROM held LEFT JOIN owed ON owed.product_id = held.product_id
          WHERE held.reserved <> COALESCE(owed.reserved, 0)",
    )
    .fetch_all(pool)
    .await
}
