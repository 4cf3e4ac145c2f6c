//! The cart (`/app/cart`) and its checkout: lines added from a product page,
//! quantities changed and lines removed by forms, and "Place purchase", which
//! places the purchase through `http::purchases::place_purchase_as` (the API's
//! checks: a verified address, 1 to 50 lines, 1 to 1,000 units a line) with an
//! Idempotency-Key derived from the cart. Why the cart is a server-side row per
//! session: the module `console::shop`.

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::Context as _;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::Form;
use orders_application::purchases::PurchasePlacement;
use rust_decimal::Decimal;
use serde::Deserialize;
use sha2::{Digest as _, Sha256};
use sqlx::postgres::PgRow;
use sqlx::{PgPool, Row as _};
use uuid::Uuid;

use super::catalog::product_template;
use super::products_by_id;
use super::templates::{CartLine, CartPage};
use crate::console::pages::{page, readable_amount, ErrorPage};
use crate::console::session::SignedIn;
use crate::console::{caller, chrome_of, see_other, see_result, CsrfOnly};
use crate::http::purchases::{place_purchase_as, purchase_lines, PurchaseItem};
use crate::http::RequestContext;
use crate::problem::ApiError;
use crate::AppState;

/// The most units a cart line holds. The purchase's own rule (1,000 at most) is
/// checked when it is placed, and shown beside the line then.
const MOST_UNITS_IN_A_LINE: u32 = 1_000_000;

/// One line of a stored cart.
#[derive(Debug, Clone)]
struct StoredLine {
    product_id: Uuid,
    quantity: i32,
}

impl<'r> sqlx::FromRow<'r, PgRow> for StoredLine {
    fn from_row(row: &'r PgRow) -> sqlx::Result<Self> {
        Ok(Self {
            product_id: row.try_get("product_id")?,
            quantity: row.try_get("quantity")?,
        })
    }
}

/// A session's cart as stored.
#[derive(Debug, Clone)]
struct Cart {
    cart_id: Uuid,
    bought_key: Option<String>,
    bought_purchase_id: Option<Uuid>,
    lines: Vec<StoredLine>,
}

impl Cart {
    /// The cart as it is now, as a key: its id and its lines, digested. The
    /// checkout form carries it back, and it is the purchase's Idempotency-Key.
    fn key(&self) -> String {
        let mut digest = Sha256::new();
        for line in &self.lines {
            digest.update(format!("{}:{};", line.product_id, line.quantity));
        }
        let digest = digest.finalize();
        let short: String = digest[..8]
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect();
        format!("console-cart-{}-{short}", self.cart_id)
    }

    /// The lines as the purchase's items, in the order they were added.
    fn items(&self) -> Vec<PurchaseItem> {
        self.lines
            .iter()
            .map(|line| PurchaseItem {
                product_id: line.product_id.to_string(),
                quantity: u32::try_from(line.quantity).unwrap_or(0),
            })
            .collect()
    }
}

/// The session's cart, if it has one.
async fn load(pool: &PgPool, session: &str) -> sqlx::Result<Option<Cart>> {
    let header: Option<(Uuid, Option<String>, Option<Uuid>)> = sqlx::query_as(
        "SELECT cart_id, bought_key, bought_purchase_id FROM console_carts WHERE session_csrf = $1",
    )
    .bind(session)
    .fetch_optional(pool)
    .await?;
    let Some((cart_id, bought_key, bought_purchase_id)) = header else {
        return Ok(None);
    };
    let lines = sqlx::query_as(
        "SELECT product_id, quantity FROM console_cart_lines
          WHERE session_csrf = $1 ORDER BY added_at, product_id",
    )
    .bind(session)
    .fetch_all(pool)
    .await?;
    Ok(Some(Cart {
        cart_id,
        bought_key,
        bought_purchase_id,
        lines,
    }))
}

/// Adds `quantity` units of a product (to its line, if the cart has one).
async fn add_line(
    pool: &PgPool,
    session: &str,
    product_id: Uuid,
    quantity: u32,
) -> sqlx::Result<()> {
    let mut transaction = pool.begin().await?;
    sqlx::query(
        "INSERT INTO console_carts (session_csrf, cart_id) VALUES ($1, $2)
         ON CONFLICT (session_csrf) DO NOTHING",
    )
    .bind(session)
    .bind(Uuid::now_v7())
    .execute(&mut *transaction)
    .await?;
    sqlx::query(
        "INSERT INTO console_cart_lines (session_csrf, product_id, quantity) VALUES ($1, $2, $3)
         ON CONFLICT (session_csrf, product_id) DO UPDATE
            SET quantity = LEAST(console_cart_lines.quantity::int8 + EXCLUDED.quantity, $4)::int4",
    )
    .bind(session)
    .bind(product_id)
    .bind(i64::from(quantity))
    .bind(i64::from(MOST_UNITS_IN_A_LINE))
    .execute(&mut *transaction)
    .await?;
    transaction.commit().await
}

async fn set_quantity(
    pool: &PgPool,
    session: &str,
    product_id: Uuid,
    quantity: u32,
) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE console_cart_lines SET quantity = $3 WHERE session_csrf = $1 AND product_id = $2",
    )
    .bind(session)
    .bind(product_id)
    .bind(i64::from(quantity))
    .execute(pool)
    .await?;
    Ok(())
}

async fn remove_line(pool: &PgPool, session: &str, product_id: Uuid) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM console_cart_lines WHERE session_csrf = $1 AND product_id = $2")
        .bind(session)
        .bind(product_id)
        .execute(pool)
        .await?;
    Ok(())
}

/// The cart `bought` became `purchase_id`: its lines leave it and it takes a new
/// id, unless another request did so first (a double submit: nothing to do).
async fn mark_bought(
    pool: &PgPool,
    session: &str,
    bought: &Cart,
    purchase_id: Uuid,
) -> sqlx::Result<()> {
    let mut transaction = pool.begin().await?;
    let changed = sqlx::query(
        "UPDATE console_carts SET cart_id = $3, bought_key = $4, bought_purchase_id = $5
          WHERE session_csrf = $1 AND cart_id = $2",
    )
    .bind(session)
    .bind(bought.cart_id)
    .bind(Uuid::now_v7())
    .bind(bought.key())
    .bind(purchase_id)
    .execute(&mut *transaction)
    .await?;
    if changed.rows_affected() == 1 {
        let products: Vec<Uuid> = bought.lines.iter().map(|line| line.product_id).collect();
        sqlx::query(
            "DELETE FROM console_cart_lines WHERE session_csrf = $1 AND product_id = ANY($2)",
        )
        .bind(session)
        .bind(products)
        .execute(&mut *transaction)
        .await?;
    }
    transaction.commit().await
}

/// A quantity typed in a form: a whole number of units, at most
/// [`MOST_UNITS_IN_A_LINE`] (0 only where `zero_allowed`).
fn typed_quantity(text: &str, zero_allowed: bool) -> Result<u32, String> {
    text.trim()
        .parse::<u32>()
        .ok()
        .filter(|quantity| (zero_allowed || *quantity > 0) && *quantity <= MOST_UNITS_IN_A_LINE)
        .ok_or_else(|| {
            if zero_allowed {
                "a whole number of units (0 removes the line)".to_owned()
            } else {
                "a whole number of units, at least 1".to_owned()
            }
        })
}

/// What the cart page shows besides the cart.
#[derive(Debug, Default)]
struct Shown {
    /// Errors beside lines, by their index in the cart.
    line_errors: HashMap<usize, String>,
    /// The quantity typed for a line (by index) when it was refused.
    typed: HashMap<usize, String>,
    form_error: Option<String>,
    unverified: bool,
}

async fn cart_template(
    state: &AppState,
    session: &SignedIn,
    cart: Option<&Cart>,
    mut shown: Shown,
) -> Result<CartPage, ErrorPage> {
    let stored = cart.map(|cart| cart.lines.as_slice()).unwrap_or_default();
    let products = products_by_id(state, stored.iter().map(|line| line.product_id)).await?;
    let mut currencies: Vec<&str> = Vec::new();
    let mut total = Decimal::ZERO;
    let mut lines = Vec::with_capacity(stored.len());
    for (index, line) in stored.iter().enumerate() {
        let product = products.get(&line.product_id);
        let on_sale =
            product.is_some_and(|row| row.status != orders_projectors::query::products::RETIRED);
        let (unit_price, line_total) = match product {
            Some(row) if on_sale => {
                let line_total = row.price * Decimal::from(line.quantity);
                total += line_total;
                if !currencies.contains(&row.currency.as_str()) {
                    currencies.push(&row.currency);
                }
                (
                    readable_amount(row.price, &row.currency),
                    readable_amount(line_total, &row.currency),
                )
            }
            _ => ("–".to_owned(), "–".to_owned()),
        };
        lines.push(CartLine {
            product_id: line.product_id.to_string(),
            name: product.map_or_else(
                || "A product no longer in the catalog".to_owned(),
                |row| row.name.clone(),
            ),
            sku: product.map(|row| row.sku.clone()).unwrap_or_default(),
            unit_price,
            line_total,
            quantity: shown
                .typed
                .remove(&index)
                .unwrap_or_else(|| line.quantity.to_string()),
            available: product.map_or(0, |row| row.available),
            on_sale,
            error: shown.line_errors.remove(&index),
        });
    }
    let estimated_total = match currencies.as_slice() {
        [currency] => Some(readable_amount(total, currency)),
        _ => None,
    };
    let (chrome, _) = chrome_of(state, session).await?;
    Ok(CartPage {
        chrome,
        lines,
        estimated_total,
        cart_key: cart.map(Cart::key).unwrap_or_default(),
        form_error: shown.form_error,
        unverified: shown.unverified,
    })
}

async fn cart_page(
    state: &AppState,
    session: &SignedIn,
    status: StatusCode,
    shown: Shown,
) -> Result<Response, ErrorPage> {
    let cart = load(state.pool(), &session.0.csrf_token)
        .await
        .context("reading the cart")?;
    let template = cart_template(state, session, cart.as_ref(), shown).await?;
    Ok(page(status, &template))
}

pub(super) async fn show(
    State(state): State<Arc<AppState>>,
    session: SignedIn,
) -> Result<Response, ErrorPage> {
    cart_page(&state, &session, StatusCode::OK, Shown::default()).await
}

#[derive(Debug, Deserialize)]
pub(super) struct AddForm {
    #[serde(rename = "_csrf", default)]
    csrf: String,
    #[serde(default)]
    product_id: String,
    #[serde(default)]
    quantity: String,
}

/// The product page's "Add to cart": a product on sale, a whole number of units.
pub(super) async fn add(
    State(state): State<Arc<AppState>>,
    session: SignedIn,
    headers: HeaderMap,
    Form(form): Form<AddForm>,
) -> Result<Response, ErrorPage> {
    session.check_form(&state, &headers, &form.csrf)?;
    let product_id: Uuid = form
        .product_id
        .trim()
        .parse()
        .map_err(|_| ErrorPage::not_found())?;
    let quantity = match typed_quantity(&form.quantity, false) {
        Ok(quantity) => quantity,
        Err(message) => {
            let template = product_template(
                &state,
                &session,
                &form.product_id,
                form.quantity,
                Some(message),
                None,
            )
            .await?;
            return Ok(page(StatusCode::UNPROCESSABLE_ENTITY, &template));
        }
    };
    let product = orders_projectors::query::products::get(state.pool(), product_id)
        .await
        .context("reading the products view")?
        .ok_or_else(ErrorPage::not_found)?;
    if product.status == orders_projectors::query::products::RETIRED {
        let message = "This product is no longer sold.".to_owned();
        let template = product_template(
            &state,
            &session,
            &form.product_id,
            form.quantity,
            None,
            Some(message),
        )
        .await?;
        return Ok(page(StatusCode::CONFLICT, &template));
    }
    add_line(state.pool(), &session.0.csrf_token, product_id, quantity)
        .await
        .context("adding to the cart")?;
    Ok(see_other("/app/cart"))
}

#[derive(Debug, Deserialize)]
pub(super) struct QuantityForm {
    #[serde(rename = "_csrf", default)]
    csrf: String,
    #[serde(default)]
    quantity: String,
}

/// A line's quantity changed (0 removes it).
pub(super) async fn change(
    State(state): State<Arc<AppState>>,
    session: SignedIn,
    headers: HeaderMap,
    Path(product_id): Path<String>,
    Form(form): Form<QuantityForm>,
) -> Result<Response, ErrorPage> {
    session.check_form(&state, &headers, &form.csrf)?;
    let product_id: Uuid = product_id.parse().map_err(|_| ErrorPage::not_found())?;
    let pool = state.pool();
    match typed_quantity(&form.quantity, true) {
        Ok(0) => remove_line(pool, &session.0.csrf_token, product_id).await,
        Ok(quantity) => set_quantity(pool, &session.0.csrf_token, product_id, quantity).await,
        Err(message) => {
            let cart = load(pool, &session.0.csrf_token)
                .await
                .context("reading the cart")?;
            let index = cart.as_ref().and_then(|cart| {
                cart.lines
                    .iter()
                    .position(|line| line.product_id == product_id)
            });
            let mut shown = Shown::default();
            match index {
                Some(index) => {
                    shown.line_errors.insert(index, message);
                    shown.typed.insert(index, form.quantity.clone());
                }
                None => shown.form_error = Some(message),
            }
            let template = cart_template(&state, &session, cart.as_ref(), shown).await?;
            return Ok(page(StatusCode::UNPROCESSABLE_ENTITY, &template));
        }
    }
    .context("changing the cart")?;
    Ok(see_other("/app/cart"))
}

pub(super) async fn remove(
    State(state): State<Arc<AppState>>,
    session: SignedIn,
    headers: HeaderMap,
    Path(product_id): Path<String>,
    Form(form): Form<CsrfOnly>,
) -> Result<Response, ErrorPage> {
    session.check_form(&state, &headers, &form.csrf)?;
    let product_id: Uuid = product_id.parse().map_err(|_| ErrorPage::not_found())?;
    remove_line(state.pool(), &session.0.csrf_token, product_id)
        .await
        .context("changing the cart")?;
    Ok(see_other("/app/cart"))
}

#[derive(Debug, Deserialize)]
pub(super) struct CheckoutForm {
    #[serde(rename = "_csrf", default)]
    csrf: String,
    /// The cart's key when the page was drawn.
    #[serde(default)]
    cart: String,
}

/// "Place purchase": the cart as the page showed it becomes a purchase (once, however
/// often the form is sent), then its page.
pub(super) async fn checkout(
    State(state): State<Arc<AppState>>,
    session: SignedIn,
    context: RequestContext,
    headers: HeaderMap,
    Form(form): Form<CheckoutForm>,
) -> Result<Response, ErrorPage> {
    session.check_form(&state, &headers, &form.csrf)?;
    let csrf = &session.0.csrf_token;
    let cart = load(state.pool(), csrf).await.context("reading the cart")?;
    let refused = |status, shown| cart_page(&state, &session, status, shown);
    let Some(cart) = cart else {
        let shown = Shown {
            form_error: Some("Your cart is empty.".to_owned()),
            ..Shown::default()
        };
        return refused(StatusCode::UNPROCESSABLE_ENTITY, shown).await;
    };
    // Sent again after the first one bought the cart: its purchase.
    if cart.bought_key.as_deref() == Some(form.cart.as_str()) {
        if let Some(purchase_id) = cart.bought_purchase_id {
            return Ok(see_other(&format!("/app/purchases/{purchase_id}")));
        }
    }
    let key = cart.key();
    if cart.lines.is_empty() || form.cart != key {
        let message = if cart.lines.is_empty() {
            "Your cart is empty."
        } else {
            "Your cart changed since this page was shown: check it, then place the purchase again."
        };
        let shown = Shown {
            form_error: Some(message.to_owned()),
            ..Shown::default()
        };
        return refused(StatusCode::CONFLICT, shown).await;
    }
    let placed = match purchase_lines(&cart.items()) {
        Ok(lines) => place_purchase_as(&state, caller(&session), context, lines, Some(key)).await,
        Err(error) => Err(error),
    };
    match placed {
        Ok(
            PurchasePlacement::Created {
                purchase_id,
                position,
            }
            | PurchasePlacement::Replayed {
                purchase_id,
                position,
            },
        ) => {
            mark_bought(state.pool(), csrf, &cart, purchase_id.as_uuid())
                .await
                .context("emptying the cart")?;
            Ok(see_result(
                &format!("/app/purchases/{purchase_id}"),
                position,
            ))
        }
        Err(error) => {
            let (status, shown) = checkout_refusal(error)?;
            let template = cart_template(&state, &session, Some(&cart), shown).await?;
            Ok(page(status, &template))
        }
    }
}

/// A placement's refusal as the cart shows it: an unverified address above the
/// form (the API's 403), a line's refusal beside it (`items[i]...`, a 422).
fn checkout_refusal(error: ApiError) -> Result<(StatusCode, Shown), ErrorPage> {
    let mut shown = Shown::default();
    let status = match error {
        ApiError::EmailNotVerified => {
            shown.unverified = true;
            shown.form_error = Some(
                "Confirm your e-mail address before buying: follow the link in the mail we sent you."
                    .to_owned(),
            );
            StatusCode::FORBIDDEN
        }
        ApiError::InvalidField { field, message } => {
            match line_index(&field) {
                Some(index) => {
                    shown.line_errors.insert(index, message);
                }
                None => shown.form_error = Some(message),
            }
            StatusCode::UNPROCESSABLE_ENTITY
        }
        ApiError::Internal(error) => return Err(ErrorPage::internal(error)),
        other => {
            shown.form_error = Some(other.to_string());
            StatusCode::CONFLICT
        }
    };
    Ok((status, shown))
}

/// The line a field of the purchase request names: `items[2].quantity` is line 2.
fn line_index(field: &str) -> Option<usize> {
    field
        .strip_prefix("items[")
        .and_then(|rest| rest.split_once(']'))
        .and_then(|(index, _)| index.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_field_of_the_request_names_its_line() {
        assert_eq!(line_index("items[0].quantity"), Some(0));
        assert_eq!(line_index("items[12].product_id"), Some(12));
        assert_eq!(line_index("items"), None);
        assert_eq!(line_index("Idempotency-Key"), None);
    }

    #[test]
    fn quantities_are_whole_numbers() {
        assert_eq!(typed_quantity(" 3 ", false), Ok(3));
        assert!(typed_quantity("0", false).is_err());
        assert_eq!(typed_quantity("0", true), Ok(0));
        assert!(typed_quantity("-1", true).is_err());
        assert!(typed_quantity("1.5", true).is_err());
        assert!(typed_quantity("2000000", true).is_err());
    }

    #[test]
    fn the_key_changes_with_the_lines_and_the_cart() {
        let line = |quantity| StoredLine {
            product_id: Uuid::from_u128(7),
            quantity,
        };
        let cart = |cart_id, lines| Cart {
            cart_id,
            bought_key: None,
            bought_purchase_id: None,
            lines,
        };
        let first = cart(Uuid::from_u128(1), vec![line(1)]);
        assert_eq!(first.key(), cart(Uuid::from_u128(1), vec![line(1)]).key());
        assert_ne!(first.key(), cart(Uuid::from_u128(1), vec![line(2)]).key());
        assert_ne!(first.key(), cart(Uuid::from_u128(2), vec![line(1)]).key());
        assert!(first.key().len() <= crate::http::orders::MAX_IDEMPOTENCY_KEY_CHARS);
    }
}
