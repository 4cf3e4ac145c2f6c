//! The catalog's pages: `/app/products` (search, cursor pages, price, what can be
//! bought now, the image if any) and `/app/products/{id}` (details and the "Add to
//! cart" form). They read through `http::products::catalog_page` and
//! `query::products::get`, as `GET /products` and `GET /products/{id}` do.

use std::sync::Arc;

use anyhow::Context as _;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use orders_projectors::query;
use orders_projectors::View;
use serde::Deserialize;
use uuid::Uuid;

use super::templates::{CatalogPage, ProductCard, ProductPage};
use crate::console::pages::{page, ErrorPage};
use crate::console::session::SignedIn;
use crate::console::{chrome_of, wait_for_views};
use crate::http::products::{catalog_page, CatalogParams};
use crate::problem::ApiError;
use crate::AppState;

#[derive(Debug, Deserialize)]
pub(super) struct CatalogQuery {
    q: Option<String>,
    cursor: Option<String>,
    at: Option<String>,
}

pub(super) async fn list(
    State(state): State<Arc<AppState>>,
    session: SignedIn,
    Query(params): Query<CatalogQuery>,
) -> Result<Response, ErrorPage> {
    wait_for_views(&state, params.at.as_deref(), &[View::Products]).await?;
    let q = params.q.clone().unwrap_or_default().trim().to_owned();
    let found = catalog_page(
        &state,
        &CatalogParams {
            q: Some(q.clone()).filter(|q| !q.is_empty()),
            limit: None,
            cursor: params.cursor.clone().filter(|cursor| !cursor.is_empty()),
        },
        false,
    )
    .await
    .map_err(|error| match error {
        // A cursor the list never gave out: there is no such page.
        ApiError::InvalidField { .. } => ErrorPage::not_found(),
        other => ErrorPage::internal(anyhow::Error::new(other)),
    })?;
    let (chrome, _) = chrome_of(&state, &session).await?;
    let template = CatalogPage {
        chrome,
        q,
        products: found.items.iter().map(ProductCard::from).collect(),
        next_cursor: found.next_cursor,
    };
    Ok(page(StatusCode::OK, &template))
}

#[derive(Debug, Deserialize)]
pub(super) struct AtParam {
    at: Option<String>,
}

pub(super) async fn show(
    State(state): State<Arc<AppState>>,
    session: SignedIn,
    Path(id): Path<String>,
    Query(params): Query<AtParam>,
) -> Result<Response, ErrorPage> {
    wait_for_views(&state, params.at.as_deref(), &[View::Products]).await?;
    let template = product_template(&state, &session, &id, "1".to_owned(), None, None).await?;
    Ok(page(StatusCode::OK, &template))
}

/// The product page of `id` (the 404 page if there is no such product), with the
/// add-to-cart form as typed and what was wrong with it.
pub(super) async fn product_template(
    state: &AppState,
    session: &SignedIn,
    id: &str,
    quantity: String,
    quantity_error: Option<String>,
    form_error: Option<String>,
) -> Result<ProductPage, ErrorPage> {
    let product_id: Uuid = id.trim().parse().map_err(|_| ErrorPage::not_found())?;
    let row = query::products::get(state.pool(), product_id)
        .await
        .context("reading the products view")?
        .ok_or_else(ErrorPage::not_found)?;
    let (chrome, _) = chrome_of(state, session).await?;
    Ok(ProductPage {
        chrome,
        product: ProductCard::from(&row),
        quantity,
        quantity_error,
        form_error,
    })
}
