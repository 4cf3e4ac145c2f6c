//! The reads of a user's orders, served from the query views (crate `projectors`).
//!
//! Views follow the log, so a read may not yet show a command that was just
//! answered. A client that needs it sends the command's `Orders-Position` back as
//! `Orders-Min-Position`: the read waits (at most `ApiConfig::read_your_writes_timeout`)
//! until the view has applied that place in the log, and otherwise answers what it
//! has with `Orders-Stale: true`. A position that names no stored event (made up, or
//! from another deployment) cannot be waited for: 400 at once.
//!
//! Lists are pages: `?limit=` (1 to 100, default 20) and `?cursor=` (the
//! `next_cursor` of the previous page, opaque) give `{"items": [...], "next_cursor": ...}`.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::extract::rejection::QueryRejection;
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use orders_domain::ids::OrderId;
use orders_projectors::query;
use orders_projectors::query::orders::OrderRow;
use orders_projectors::query::price_history::PricePoint;
use orders_projectors::View;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::auth::CurrentUser;
use crate::problem::ApiError;
use crate::AppState;
use orders_store::event_store::LogPosition;
use orders_store::user_lookup;

/// A query waits until its view has applied this log position.
pub const ORDERS_MIN_POSITION: HeaderName = HeaderName::from_static("orders-min-position");
/// Set (to `true`) when the view had not reached `Orders-Min-Position` in time.
pub const ORDERS_STALE: HeaderName = HeaderName::from_static("orders-stale");

pub const DEFAULT_PAGE_SIZE: i64 = 20;
pub const MAX_PAGE_SIZE: i64 = 100;

/// `GET /orders` and `GET /orders/{id}` share their paths with commands, so
/// `orders::router` routes them; this one has the rest.
pub fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/orders/{id}/prices", get(price_history))
        .route("/orders/{id}/alerts", get(alerts))
        .route("/orders/{id}/checks", get(checks))
}

/// The `Orders-Min-Position` a read must wait for, if any.
#[derive(Debug, Clone, Copy)]
pub struct MinPosition(pub Option<LogPosition>);

impl<S: Send + Sync> FromRequestParts<S> for MinPosition {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let Some(value) = parts.headers.get(ORDERS_MIN_POSITION) else {
            return Ok(Self(None));
        };
        value
            .to_str()
            .ok()
            .and_then(|token| token.trim().parse().ok())
            .map(|position| Self(Some(position)))
            .ok_or_else(|| {
                ApiError::BadRequest(
                    "Orders-Min-Position is not a token from an Orders-Position header".to_owned(),
                )
            })
    }
}

impl MinPosition {
    /// Waits for every view the read uses; `true` when one is still behind.
    pub(crate) async fn wait(self, state: &AppState, views: &[View]) -> Result<bool, ApiError> {
        let Some(position) = self.0 else {
            return Ok(false);
        };
        let deadline = tokio::time::Instant::now() + state.config.read_your_writes_timeout;
        let mut position_is_stored = false;
        for view in views {
            let reached = query::wait_for(state.pool(), *view, position, Duration::ZERO)
                .await
                .context("reading a view's checkpoint")?;
            if reached {
                continue;
            }
            // Behind: worth waiting for only if the position is one the log gave out
            // (a made-up one, ahead of the log, would hold the request for nothing).
            if !position_is_stored {
                position_is_stored = state
                    .events
                    .names_stored_event(position)
                    .await
                    .context("looking the position up")?;
                if !position_is_stored {
                    return Err(ApiError::BadRequest(
                        "Orders-Min-Position names no event in the log: it is not a token an \
                         Orders-Position header of this service gave"
                            .to_owned(),
                    ));
                }
            }
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if !query::wait_for(state.pool(), *view, position, left)
                .await
                .context("waiting for a view")?
            {
                return Ok(true);
            }
        }
        Ok(false)
    }
}

/// Marks a response stale.
pub(crate) fn answer(body: impl IntoResponse, stale: bool) -> Response {
    let mut response = body.into_response();
    if stale {
        response
            .headers_mut()
            .insert(ORDERS_STALE, HeaderValue::from_static("true"));
    }
    response
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageParams {
    /// 1 to 100; 20 when left out.
    pub limit: Option<String>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

impl PageParams {
    pub(crate) fn from_query(query: Result<Query<Self>, QueryRejection>) -> Result<Self, ApiError> {
        query
            .map(|Query(params)| params)
            .map_err(|rejection| ApiError::BadRequest(rejection.body_text()))
    }

    pub(crate) fn limit(&self) -> Result<i64, ApiError> {
        page_limit(self.limit.as_deref())
    }

    /// The cursor's bytes (`None` for the first page).
    pub(crate) fn cursor<const N: usize>(&self) -> Result<Option<[u8; N]>, ApiError> {
        let Some(text) = &self.cursor else {
            return Ok(None);
        };
        URL_SAFE_NO_PAD
            .decode(text)
            .ok()
            .and_then(|bytes| <[u8; N]>::try_from(bytes).ok())
            .map(Some)
            .ok_or_else(|| ApiError::invalid_field("cursor", "not a cursor this API gave out"))
    }
}

/// A page size from `?limit=`: 1 to 100, 20 by default.
pub(crate) fn page_limit(limit: Option<&str>) -> Result<i64, ApiError> {
    match limit {
        None => Ok(DEFAULT_PAGE_SIZE),
        Some(text) => text
            .parse::<i64>()
            .ok()
            .filter(|limit| (1..=MAX_PAGE_SIZE).contains(limit))
            .ok_or_else(|| {
                ApiError::invalid_field(
                    "limit",
                    format!("must be a whole number from 1 to {MAX_PAGE_SIZE}"),
                )
            }),
    }
}

pub(crate) fn encode_cursor(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A page of a list.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Pass as `?cursor=` for the next page; `null` on the last one.
    pub next_cursor: Option<String>,
}

/// Splits the one-more row a page query fetched off, into the page and its cursor.
pub(crate) fn page<R, T>(
    mut rows: Vec<R>,
    limit: i64,
    cursor: impl Fn(&R) -> String,
    item: impl Fn(R) -> T,
) -> Page<T> {
    let more = rows.len() as i64 > limit;
    rows.truncate(usize::try_from(limit).unwrap_or(0));
    let next_cursor = if more { rows.last().map(cursor) } else { None };
    Page {
        items: rows.into_iter().map(item).collect(),
        next_cursor,
    }
}

/// One order, as its owner sees it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct OrderDetails {
    #[schema(value_type = String, format = Uuid)]
    pub order_id: Uuid,
    /// The page it follows; `null` for an order on a catalog product.
    pub url: Option<String>,
    /// The catalog product it follows; `null` for a page.
    #[schema(value_type = Option<String>, format = Uuid)]
    pub product_id: Option<Uuid>,
    pub target_price: String,
    pub currency: String,
    pub check_interval_secs: i32,
    pub selector: Option<String>,
    /// `active`, `paused` or `cancelled`.
    pub status: String,
    /// The last price observed, in the order's currency.
    pub last_price: Option<String>,
    /// `InStock`, `OutOfStock`, `PreOrder`, `BackOrder`, `Discontinued` or `Unknown`.
    pub availability: String,
    /// Whether reaching the target will send an alert (it fires once, then re-arms
    /// when the price goes back above the target).
    pub alert_armed: bool,
    /// RFC 3339, UTC.
    pub placed_at: String,
    pub updated_at: String,
    /// The product's title, as the last check that read one found it.
    pub title: Option<String>,
    /// RFC 3339, UTC: when the last check's result was recorded.
    pub last_checked_at: Option<String>,
    /// Why the last check failed (`timeout`, `no_price`, `currency_mismatch`, ...);
    /// `null` once a check succeeds.
    pub last_error: Option<String>,
    pub last_error_detail: Option<String>,
    /// Checks in a row that failed.
    pub consecutive_failures: i32,
}

fn rfc3339(time: chrono::DateTime<chrono::Utc>) -> String {
    time.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

impl From<OrderRow> for OrderDetails {
    fn from(row: OrderRow) -> Self {
        Self {
            order_id: row.order_id,
            url: row.url,
            product_id: row.product_id,
            target_price: row.target_price.to_string(),
            currency: row.currency,
            check_interval_secs: row.check_interval_secs,
            selector: row.selector,
            status: row.status,
            last_price: row.last_price.map(|price| price.to_string()),
            availability: row.availability,
            alert_armed: row.armed,
            placed_at: rfc3339(row.placed_at),
            updated_at: rfc3339(row.updated_at),
            title: row.title,
            last_checked_at: row.last_checked_at.map(rfc3339),
            last_error: row.last_error,
            last_error_detail: row.last_error_detail,
            consecutive_failures: row.consecutive_failures,
        }
    }
}

/// One observation of the product's price.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PriceObservation {
    /// The check that saw it.
    pub check_id: Uuid,
    /// RFC 3339, UTC: when the check's result was recorded.
    pub observed_at: String,
    pub price: String,
    pub currency: String,
    /// `InStock`, `OutOfStock`, `PreOrder`, `BackOrder`, `Discontinued` or `Unknown`.
    pub availability: String,
    /// Which extractor found the price (`json-ld`, `microdata`, ...).
    pub extractor: Option<String>,
}

impl From<PricePoint> for PriceObservation {
    fn from(point: PricePoint) -> Self {
        Self {
            check_id: point.check_id,
            observed_at: rfc3339(point.observed_at),
            price: point.price.to_string(),
            currency: point.currency,
            availability: point.availability,
            extractor: point.extractor,
        }
    }
}

/// An alert the order fired: its price reached the target (the mail goes to a
/// verified address while the owner's price alerts are on).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct OrderAlert {
    /// The order's event that fired it (its sequence): pass as `?before=` for older.
    pub sequence: i64,
    /// RFC 3339, UTC.
    pub fired_at: String,
    pub price: String,
    /// The price known before, if any.
    pub previous: Option<String>,
    pub target: String,
    pub currency: String,
}

impl From<orders_projectors::query::price_history::Alert> for OrderAlert {
    fn from(alert: orders_projectors::query::price_history::Alert) -> Self {
        Self {
            sequence: alert.sequence,
            fired_at: rfc3339(alert.fired_at),
            price: alert.price.to_string(),
            previous: alert.previous.map(|price| price.to_string()),
            target: alert.target.to_string(),
            currency: alert.currency,
        }
    }
}

/// The most alerts (or checks) one answer of `GET /orders/{id}/alerts` (`/checks`)
/// lists.
pub const ALERTS_LISTED: i64 = 100;

/// `GET /orders/{id}/alerts`: the alerts the caller's order fired, newest first
/// (the 100 newest; older ones with `?before=<sequence>`).
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AlertParams {
    pub before: Option<i64>,
}

#[utoipa::path(get, path = "/orders/{id}/alerts", tag = "orders", security(("bearer" = [])),
    params(("id" = String, Path), AlertParams, ("Orders-Min-Position" = Option<String>, Header)),
    responses((status = 200, body = Vec<OrderAlert>), (status = 404, body = crate::problem::Problem)))]
pub async fn alerts(
    State(state): State<Arc<AppState>>,
    caller: CurrentUser,
    min_position: MinPosition,
    Path(id): Path<String>,
    params: Result<Query<AlertParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(params) = params.map_err(|rejection| ApiError::BadRequest(rejection.body_text()))?;
    let (order_id, stale) = match own_order_history(&state, caller, min_position, &id).await? {
        Ok(found) => found,
        Err(not_found) => return Ok(not_found),
    };
    let alerts =
        query::price_history::alerts_of_order(state.pool(), order_id, params.before, ALERTS_LISTED)
            .await
            .context("reading the price history view")?;
    let alerts: Vec<OrderAlert> = alerts.into_iter().map(Into::into).collect();
    Ok(answer(Json(alerts), stale))
}

/// One price check of an order, with its outcome.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct OrderCheck {
    pub check_id: Uuid,
    /// RFC 3339, UTC.
    pub requested_at: String,
    /// `scheduled` or `manual`.
    pub trigger: String,
    /// `pending`, `ok`, `no_price` (the page showed none: the product cannot be
    /// bought) or `failed`.
    pub outcome: String,
    pub finished_at: Option<String>,
    pub price: Option<String>,
    pub currency: String,
    /// Why it failed: `timeout`, `not_found`, `no_price`, `ambiguous_price`, ...
    pub reason: Option<String>,
    pub detail: Option<String>,
}

impl From<orders_projectors::query::price_history::CheckRow> for OrderCheck {
    fn from(row: orders_projectors::query::price_history::CheckRow) -> Self {
        Self {
            check_id: row.check_id,
            requested_at: rfc3339(row.requested_at),
            trigger: row.trigger,
            outcome: row.outcome,
            finished_at: row.finished_at.map(rfc3339),
            price: row.price.map(|price| price.to_string()),
            currency: row.currency,
            reason: row.reason,
            detail: row.detail,
        }
    }
}

/// `GET /orders/{id}/checks`: the newest 100, older ones with `?before=<check_id>`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CheckParams {
    pub before: Option<Uuid>,
}

#[utoipa::path(get, path = "/orders/{id}/checks", tag = "orders", security(("bearer" = [])),
    params(("id" = String, Path), CheckParams, ("Orders-Min-Position" = Option<String>, Header)),
    responses((status = 200, body = Vec<OrderCheck>), (status = 404, body = crate::problem::Problem)))]
pub async fn checks(
    State(state): State<Arc<AppState>>,
    caller: CurrentUser,
    min_position: MinPosition,
    Path(id): Path<String>,
    params: Result<Query<CheckParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(params) = params.map_err(|rejection| ApiError::BadRequest(rejection.body_text()))?;
    let (order_id, stale) = match own_order_history(&state, caller, min_position, &id).await? {
        Ok(found) => found,
        Err(not_found) => return Ok(not_found),
    };
    let checks =
        query::price_history::checks_of_order(state.pool(), order_id, params.before, ALERTS_LISTED)
            .await
            .context("reading the price history view")?;
    let checks: Vec<OrderCheck> = checks.into_iter().map(Into::into).collect();
    Ok(answer(Json(checks), stale))
}

/// The first steps of a read of one of the caller's orders' history (its prices,
/// alerts, checks): the order id, the caller's standing, the wait for the views,
/// and the order being theirs. Answers the order and whether the views were stale,
/// or the 404 answer (marked stale when they were).
async fn own_order_history(
    state: &AppState,
    caller: CurrentUser,
    min_position: MinPosition,
    id: &str,
) -> Result<Result<(Uuid, bool), Response>, ApiError> {
    let order_id = order_id_from_path(id)?;
    require_active(state, caller).await?;
    let stale = min_position
        .wait(state, &[View::Orders, View::PriceHistory])
        .await?;
    if query::orders::one_of_owner(state.pool(), caller.user_id.as_uuid(), order_id)
        .await
        .context("reading the orders view")?
        .is_none()
    {
        return Ok(Err(answer(ApiError::NotFound("no such order"), stale)));
    }
    Ok(Ok((order_id, stale)))
}

pub(crate) async fn require_active(state: &AppState, caller: CurrentUser) -> Result<(), ApiError> {
    let standing = user_lookup::standing(state.pool(), caller.user_id)
        .await
        .context("reading the caller's standing")?;
    crate::auth::require_active(standing, caller)
}

fn order_id_from_path(id: &str) -> Result<Uuid, ApiError> {
    id.parse::<OrderId>()
        .map(|id| id.as_uuid())
        .map_err(|_| ApiError::NotFound("no such order"))
}

#[utoipa::path(get, path = "/orders", tag = "orders", security(("bearer" = [])),
    params(PageParams, ("Orders-Min-Position" = Option<String>, Header)),
    responses((status = 200, body = Page<OrderDetails>), (status = 422, body = crate::problem::Problem)))]
pub async fn list_orders(
    State(state): State<Arc<AppState>>,
    caller: CurrentUser,
    min_position: MinPosition,
    params: Result<Query<PageParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let params = PageParams::from_query(params)?;
    let limit = params.limit()?;
    let after = params.cursor::<16>()?.map(Uuid::from_bytes);
    require_active(&state, caller).await?;
    let stale = min_position.wait(&state, &[View::Orders]).await?;
    let rows = query::orders::of_owner(state.pool(), caller.user_id.as_uuid(), after, limit + 1)
        .await
        .context("reading the orders view")?;
    let page = page(
        rows,
        limit,
        |row| encode_cursor(row.order_id.as_bytes()),
        OrderDetails::from,
    );
    Ok(answer(Json(page), stale))
}

#[utoipa::path(get, path = "/orders/{id}", tag = "orders", security(("bearer" = [])),
    params(("id" = String, Path), ("Orders-Min-Position" = Option<String>, Header)),
    responses((status = 200, body = OrderDetails), (status = 404, body = crate::problem::Problem)))]
pub async fn show_order(
    State(state): State<Arc<AppState>>,
    caller: CurrentUser,
    min_position: MinPosition,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let order_id = order_id_from_path(&id)?;
    require_active(&state, caller).await?;
    let stale = min_position.wait(&state, &[View::Orders]).await?;
    let row = query::orders::one_of_owner(state.pool(), caller.user_id.as_uuid(), order_id)
        .await
        .context("reading the orders view")?;
    // A 404 from a view that had not caught up says so too.
    Ok(match row {
        Some(row) => answer(Json(OrderDetails::from(row)), stale),
        None => answer(ApiError::NotFound("no such order"), stale),
    })
}

#[utoipa::path(get, path = "/orders/{id}/prices", tag = "orders", security(("bearer" = [])),
    params(("id" = String, Path), PageParams, ("Orders-Min-Position" = Option<String>, Header)),
    responses((status = 200, body = Page<PriceObservation>), (status = 404, body = crate::problem::Problem),
              (status = 422, body = crate::problem::Problem)))]
pub async fn price_history(
    State(state): State<Arc<AppState>>,
    caller: CurrentUser,
    min_position: MinPosition,
    Path(id): Path<String>,
    params: Result<Query<PageParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    order_id_from_path(&id)?;
    let params = PageParams::from_query(params)?;
    let limit = params.limit()?;
    let after = params.cursor::<16>()?.map(Uuid::from_bytes);
    let (order_id, stale) = match own_order_history(&state, caller, min_position, &id).await? {
        Ok(found) => found,
        Err(not_found) => return Ok(not_found),
    };
    let points = query::price_history::of_order(state.pool(), order_id, after, limit + 1)
        .await
        .context("reading the price history view")?;
    let page = page(
        points,
        limit,
        |point| encode_cursor(point.check_id.as_bytes()),
        PriceObservation::from,
    );
    Ok(answer(Json(page), stale))
}
