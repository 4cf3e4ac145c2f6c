//! The shop in the web console: the catalog (`/app/products`), the cart and its
//! checkout (`/app/cart`), the buyer's purchases (`/app/purchases`), and for
//! administrators and auditors the catalog with its stock
//! (`/app/admin/products`) and every purchase (`/app/admin/purchases`). The
//! dashboard's analytics charts are drawn by `charts`.
//!
//! Every page reads and changes through the JSON routes' own functions
//! (`http::products`, `http::purchases`), their checks and role checks included,
//! so a refusal is the API's, shown beside the field it names.
//!
//! **The cart** is a server-side row per console session (`console_carts` and
//! `console_cart_lines`, migration 0015), chosen over the alternatives because:
//! - it works without JavaScript and without a cookie of its own: the session's
//!   cookie already names it, and it ends with the session (sign-out, expiry, a
//!   password change delete it by cascade);
//! - hidden form fields would have to carry the cart from page to page, and be lost
//!   by any link the buyer follows (the catalog, a product, the purchases);
//! - a signed cookie would need a signing key and a size limit, and could be
//!   replayed: an old cookie brings an old cart back.
//!
//! The checkout form carries the cart's key (its id and lines, digested: what the
//! page showed), which is also the purchase's Idempotency-Key: a form submitted
//! twice places one purchase, and a form drawn before the cart changed in another
//! tab is refused rather than buying something the buyer did not see.

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::Context as _;
use axum::routing::{get, post};
use axum::Router;
use orders_projectors::query::products::ProductRow;
use uuid::Uuid;

use super::pages::ErrorPage;
use crate::problem::ApiError;
use crate::AppState;

mod admin;
mod cart;
mod catalog;
pub(crate) mod charts;
pub(crate) mod dashboard;
mod purchases;
mod templates;

pub(crate) fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/app/products", get(catalog::list))
        .route("/app/products/{id}", get(catalog::show))
        .route("/app/cart", get(cart::show))
        .route("/app/cart/add", post(cart::add))
        .route("/app/cart/lines/{product_id}", post(cart::change))
        .route("/app/cart/lines/{product_id}/remove", post(cart::remove))
        .route("/app/cart/checkout", post(cart::checkout))
        .route("/app/purchases", get(purchases::list))
        .route("/app/purchases/{id}", get(purchases::show))
        .route("/app/purchases/{id}/cancel", post(purchases::cancel))
        .route(
            "/app/admin/products",
            get(admin::products).post(admin::add_product),
        )
        .route(
            "/app/admin/products/{id}",
            get(admin::product).post(admin::change_product),
        )
        .route("/app/admin/products/{id}/stock", post(admin::adjust_stock))
        .route(
            "/app/admin/products/{id}/retire",
            post(admin::retire_product),
        )
        .route("/app/admin/purchases", get(admin::purchases))
        .route("/app/admin/purchases/{id}/status", post(admin::set_status))
}

/// What a form's refusal says and where: the field the API's 422 names (empty for
/// none), and its message; a failure of ours is the 500 page.
fn refusal_text(error: ApiError) -> Result<(String, String), ErrorPage> {
    match error {
        ApiError::InvalidField { field, message } => Ok((field, message)),
        ApiError::Internal(error) => Err(ErrorPage::internal(error)),
        other => Ok((String::new(), other.to_string())),
    }
}

/// The catalog's rows of `product_ids` (those that exist), read at once.
async fn products_by_id(
    state: &AppState,
    product_ids: impl IntoIterator<Item = Uuid>,
) -> Result<HashMap<Uuid, ProductRow>, ErrorPage> {
    let mut ids: Vec<Uuid> = product_ids.into_iter().collect();
    ids.sort_unstable();
    ids.dedup();
    let rows = futures::future::try_join_all(
        ids.iter()
            .map(|id| orders_projectors::query::products::get(state.pool(), *id)),
    )
    .await
    .context("reading the products view")?;
    Ok(rows
        .into_iter()
        .flatten()
        .map(|row| (row.product_id, row))
        .collect())
}
