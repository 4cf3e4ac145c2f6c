//! Reads of the `products` view: the catalog's list (by name, searchable by name or
//! SKU) and one product.

use sqlx::postgres::PgRow;
use sqlx::{PgPool, Postgres, QueryBuilder, Row as _};
use uuid::Uuid;

use super::{decode_cursor, encode_cursor, fetch_size, page, ListError, Page};
use crate::views::products::COLUMNS;
pub use crate::views::products::{ProductRow, ACTIVE, RETIRED};

/// One product, retired or not.
pub async fn get(pool: &PgPool, product_id: Uuid) -> sqlx::Result<Option<ProductRow>> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM view_products WHERE product_id = $1"
    ))
    .bind(product_id)
    .fetch_optional(pool)
    .await
}

/// A product with its place in the list: its name as PostgreSQL lowers it (the
/// list's order, which the cursor carries).
struct Listed {
    product: ProductRow,
    sort_name: String,
}

impl<'r> sqlx::FromRow<'r, PgRow> for Listed {
    fn from_row(row: &'r PgRow) -> sqlx::Result<Self> {
        Ok(Listed {
            product: sqlx::FromRow::from_row(row)?,
            sort_name: row.try_get("sort_name")?,
        })
    }
}

/// Where a page of the list starts: after this name (lowered) and id.
fn decode(cursor: &str) -> Result<(String, Uuid), ListError> {
    let bytes = decode_cursor(cursor)?;
    if bytes.len() < 16 {
        return Err(ListError::BadCursor);
    }
    let (id, name) = bytes.split_at(16);
    let id = Uuid::from_slice(id).map_err(|_| ListError::BadCursor)?;
    let name = String::from_utf8(name.to_vec()).map_err(|_| ListError::BadCursor)?;
    Ok((name, id))
}

fn encode(listed: &Listed) -> String {
    let mut bytes = listed.product.product_id.as_bytes().to_vec();
    bytes.extend_from_slice(listed.sort_name.as_bytes());
    encode_cursor(&bytes)
}

/// `%part%` for `LIKE`, its wildcards escaped (lowered in the statement).
fn contains_pattern(part: &str) -> String {
    let escaped = part
        .replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_");
    format!("%{escaped}%")
}

/// The catalog in the order of names (any case; then ids), a page of at most
/// `limit` after `cursor` (the `next_cursor` of the page before; `None`: the
/// first page). `search` keeps the products whose name or SKU contains it, in any
/// case (blank: all); retired products are left out unless `include_retired`.
///
/// The order follows the names as they are when each page is read: a product
/// renamed between two pages may be listed twice or not at all, every other
/// product exactly once.
pub async fn list(
    pool: &PgPool,
    search: Option<&str>,
    include_retired: bool,
    limit: i64,
    cursor: Option<&str>,
) -> Result<Page<ProductRow>, ListError> {
    let after = cursor.map(decode).transpose()?;
    // Only the conditions set are in the statement: each combination is planned
    // for what it asks (a generic plan of `$n IS NULL OR ...` scans the table).
    let mut statement: QueryBuilder<'_, Postgres> = QueryBuilder::new(format!(
        "SELECT {COLUMNS}, lower(name) AS sort_name FROM view_products WHERE true"
    ));
    if !include_retired {
        statement.push(" AND status = ").push_bind(ACTIVE);
    }
    if let Some(search) = search.map(str::trim).filter(|search| !search.is_empty()) {
        let pattern = contains_pattern(search);
        statement
            .push(" AND (lower(name) LIKE lower(")
            .push_bind(pattern.clone())
            .push(") OR lower(sku) LIKE lower(")
            .push_bind(pattern)
            .push("))");
    }
    if let Some((name, id)) = after {
        statement
            .push(" AND (lower(name), product_id) > (")
            .push_bind(name)
            .push(", ")
            .push_bind(id)
            .push(")");
    }
    statement
        .push(" ORDER BY lower(name), product_id LIMIT ")
        .push_bind(fetch_size(limit));
    let rows: Vec<Listed> = statement.build_query_as().fetch_all(pool).await?;
    Ok(page(rows, limit, encode, |listed| listed.product))
}
