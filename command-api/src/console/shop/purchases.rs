//! The buyer's purchases: `/app/purchases` (newest first, a status filter, cursor
//! pages) and `/app/purchases/{id}` (status, lines with their prices, the total, the
//! history, why it was rejected, and a Cancel button while it may be cancelled),
//! which follows `GET /live`: the purchase's events and the stock events for it are
//! its buyer's, so it turns confirmed, shipped and delivered as it happens. Read
//! through `http::purchases::purchases_page` and `own_purchase`, changed through
//! `cancel_purchase_as`, as the JSON routes are; another buyer's purchase is the
//! 404 page.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::Form;
use orders_domain::ids::PurchaseId;
use orders_projectors::View;
use serde::Deserialize;

use super::products_by_id;
use super::templates::{status_options, PurchasePage, PurchaseSummary, PurchasesPage};
use crate::console::pages::{page, ErrorPage};
use crate::console::session::SignedIn;
use crate::console::{caller, chrome_of, see_result, shown_up_to, wait_for_views, CsrfOnly};
use crate::http::purchases::{
    cancel_purchase_as, own_purchase, purchases_page, PurchaseListParams,
};
use crate::http::queries::MinPosition;
use crate::problem::ApiError;
use crate::AppState;

#[derive(Debug, Deserialize)]
pub(super) struct ListQuery {
    status: Option<String>,
    cursor: Option<String>,
    at: Option<String>,
}

pub(super) async fn list(
    State(state): State<Arc<AppState>>,
    session: SignedIn,
    Query(params): Query<ListQuery>,
) -> Result<Response, ErrorPage> {
    wait_for_views(&state, params.at.as_deref(), &[View::Purchases]).await?;
    let live_after = shown_up_to(&state, &[View::Purchases]).await?;
    let filter = PurchaseListParams {
        status: params.status.clone(),
        owner: None,
        limit: None,
        cursor: params.cursor.clone().filter(|cursor| !cursor.is_empty()),
    };
    // An unknown status or a cursor the list never gave out: there is no such page.
    let status = filter.status().map_err(|_| ErrorPage::not_found())?;
    let found = purchases_page(
        &state,
        Some(session.0.user_id.as_uuid()),
        status,
        None,
        filter.cursor.as_deref(),
    )
    .await
    .map_err(list_refusal)?;
    let (mut chrome, _) = chrome_of(&state, &session).await?;
    chrome.live_after = live_after;
    let status = status.map_or("", |status| status.as_str());
    let template = PurchasesPage {
        chrome,
        status: status.to_owned(),
        statuses: status_options(status),
        purchases: found.items.iter().map(PurchaseSummary::from).collect(),
        next_cursor: found.next_cursor,
    };
    Ok(page(StatusCode::OK, &template))
}

/// A list's refusal: a cursor it never gave out is no page; a failure is ours.
pub(super) fn list_refusal(error: ApiError) -> ErrorPage {
    match error {
        ApiError::Internal(error) => ErrorPage::internal(error),
        _ => ErrorPage::not_found(),
    }
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
    wait_for_views(&state, params.at.as_deref(), &[View::Purchases]).await?;
    let template = purchase_template(&state, &session, &id, None).await?;
    Ok(page(StatusCode::OK, &template))
}

async fn purchase_template(
    state: &AppState,
    session: &SignedIn,
    id: &str,
    form_error: Option<String>,
) -> Result<PurchasePage, ErrorPage> {
    let purchase_id: PurchaseId = id.parse().map_err(|_| ErrorPage::not_found())?;
    // Drawn from the view as it stands now (the page waited for `?at=` already);
    // the script follows `GET /live` from there.
    let live_after = shown_up_to(state, &[View::Purchases]).await?;
    let (purchase, _) = own_purchase(state, caller(session), MinPosition(None), purchase_id)
        .await
        .map_err(list_refusal)?;
    let purchase = purchase.ok_or_else(ErrorPage::not_found)?;
    let products = products_by_id(state, purchase.lines.iter().map(|line| line.product_id)).await?;
    let (mut chrome, _) = chrome_of(state, session).await?;
    chrome.live_after = live_after;
    Ok(PurchasePage::new(chrome, &purchase, &products, form_error))
}

/// The buyer's Cancel button (while pending or confirmed).
pub(super) async fn cancel(
    State(state): State<Arc<AppState>>,
    session: SignedIn,
    context: crate::http::RequestContext,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<CsrfOnly>,
) -> Result<Response, ErrorPage> {
    session.check_form(&state, &headers, &form.csrf)?;
    let purchase_id: PurchaseId = id.parse().map_err(|_| ErrorPage::not_found())?;
    match cancel_purchase_as(&state, caller(&session), context, purchase_id).await {
        Ok(position) => Ok(see_result(
            &format!("/app/purchases/{purchase_id}"),
            position,
        )),
        Err(ApiError::NotFound(_)) => Err(ErrorPage::not_found()),
        Err(ApiError::Internal(error)) => Err(ErrorPage::internal(error)),
        Err(other) => {
            let template =
                purchase_template(&state, &session, &id, Some(other.to_string())).await?;
            Ok(page(StatusCode::CONFLICT, &template))
        }
    }
}
