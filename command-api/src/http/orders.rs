//! Tracking orders: place, change the target, pause, resume, cancel. The reads are
//! in `queries`, served from the views.
//!
//! Another user's order is answered exactly like one that does not exist (404).

use std::sync::Arc;

use anyhow::Context as _;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use orders_domain::ids::{OrderId, ProductId};
use orders_domain::money::{Currency, Money, MoneyError};
use orders_domain::order::{OrderError, ProductUrl, DEFAULT_CHECK_INTERVAL_SECS};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::auth::{CurrentUser, CREDENTIALS_CHANGED};
use crate::http::{queries, with_position, RequestContext};
use crate::problem::{ApiError, AppJson};
use crate::AppState;
use orders_application::orders::{
    self, OrderChange, OrderChangeError, OrderSource, PlaceOrder, PlaceOrderError, Placed,
};
use orders_application::CommandError;
use orders_store::event_store::CommandMetadata;
use orders_store::user_lookup;

/// `Idempotency-Key` on `POST /orders`.
pub const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");
/// Set on the answer to a retried `POST /orders` that created nothing new.
pub const IDEMPOTENT_REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");
/// Longest `Idempotency-Key` accepted.
pub const MAX_IDEMPOTENCY_KEY_CHARS: usize = 255;

pub fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/orders", post(place_order).get(queries::list_orders))
        .route(
            "/orders/{id}",
            get(queries::show_order)
                .patch(change_target)
                .delete(cancel_order),
        )
        .route("/orders/{id}/pause", post(pause_order))
        .route("/orders/{id}/resume", post(resume_order))
        .route("/orders/{id}/check", post(check_order_now))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PlaceOrderRequest {
    /// The product page: an absolute http or https URL. Either this or `product_id`.
    pub url: Option<String>,
    /// A product of our catalog (its price follows the catalog; no scraping).
    /// Either this or `url`.
    pub product_id: Option<String>,
    /// A decimal string, e.g. `"3199.00"`, with at most the currency's minor digits.
    pub target_price: String,
    /// ISO 4217, e.g. `UAH`. Required with `url`; with `product_id` it is the
    /// product's (and if given, must be).
    pub currency: Option<String>,
    /// At least 300; 3600 when left out.
    pub check_interval_secs: Option<u32>,
    /// A CSS selector for the price, when the page is not understood otherwise.
    pub selector: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PlaceOrderResponse {
    #[schema(value_type = String, format = Uuid)]
    pub order_id: OrderId,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangeTargetRequest {
    /// A decimal string in the order's currency.
    pub target_price: String,
}

/// The answer to an order's refusal.
pub(crate) fn order_refusal(refusal: OrderError) -> ApiError {
    let message = refusal.to_string();
    match refusal {
        OrderError::NotFound => ApiError::NotFound("no such order"),
        OrderError::CheckIntervalTooShort { .. } | OrderError::CheckIntervalTooLong { .. } => {
            ApiError::invalid_field("check_interval_secs", message)
        }
        OrderError::TargetNotPositive => ApiError::invalid_field("target_price", message),
        OrderError::SelectorTooLong { .. } => ApiError::invalid_field("selector", message),
        OrderError::CurrencyChangeNotAllowed | OrderError::ObservationCurrencyMismatch => {
            ApiError::invalid_field("currency", message)
        }
        OrderError::AlreadyPlaced
        | OrderError::TooManyActiveOrders { .. }
        | OrderError::Cancelled
        | OrderError::AlreadyPaused
        | OrderError::NotPaused
        | OrderError::AlreadyCancelled => ApiError::Conflict(message),
    }
}

/// The one mapping of an order command's failure.
pub(crate) fn order_command_error(
    error: CommandError<OrderError>,
    doing: &'static str,
) -> ApiError {
    ApiError::from_command(error, "no such order", doing, order_refusal)
}

/// Refuses a selector the scraper could not use, with the parser the scraper uses:
/// stored, it would make every check of the order fail. (Its length is the order
/// aggregate's rule; a blank selector means none.)
fn check_selector_syntax(selector: &str) -> Result<(), ApiError> {
    let trimmed = selector.trim();
    if trimmed.is_empty() || trimmed.chars().count() > orders_domain::order::MAX_SELECTOR_CHARS {
        return Ok(());
    }
    scraper::Selector::parse(trimmed)
        .map(|_| ())
        .map_err(|error| {
            ApiError::invalid_field("selector", format!("not a valid CSS selector: {error}"))
        })
}

fn money_error(error: MoneyError) -> ApiError {
    match error {
        MoneyError::UnknownCurrency(_) => ApiError::invalid_field("currency", error.to_string()),
        _ => ApiError::invalid_field("target_price", error.to_string()),
    }
}

pub(crate) fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get(&IDEMPOTENCY_KEY) else {
        return Ok(None);
    };
    let key = value
        .to_str()
        .ok()
        .map(str::trim)
        .filter(|key| !key.is_empty() && key.chars().count() <= MAX_IDEMPOTENCY_KEY_CHARS)
        .ok_or_else(|| {
            ApiError::BadRequest(format!(
                "Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY_CHARS} visible ASCII characters"
            ))
        })?;
    Ok(Some(key.to_owned()))
}

fn metadata_for(
    caller: CurrentUser,
    context: RequestContext,
    idempotency_key: Option<String>,
) -> CommandMetadata {
    CommandMetadata {
        actor: caller.actor(),
        correlation_id: context.correlation_id,
        causation_id: context.request_id.to_string(),
        request_id: context.request_id,
        idempotency_key,
    }
}

fn created(order_id: OrderId) -> Response {
    (
        StatusCode::CREATED,
        [(header::LOCATION, format!("/orders/{order_id}"))],
        Json(PlaceOrderResponse { order_id }),
    )
        .into_response()
}

/// What a placement asks for, checked as the API checks it (the console's form too):
/// a page (currency, target, URL, selector syntax; the interval defaults to an hour)
/// or a catalog product (on sale; the target in its currency).
pub(crate) async fn place_order_request(
    state: &AppState,
    caller: CurrentUser,
    request: PlaceOrderRequest,
) -> Result<PlaceOrder, ApiError> {
    let (source, currency) = match (request.url.as_deref(), request.product_id.as_deref()) {
        (Some(_), Some(_)) => {
            return Err(ApiError::invalid_field(
                "product_id",
                "give either a url or a product_id, not both",
            ))
        }
        (None, None) => {
            return Err(ApiError::invalid_field(
                "url",
                "give the product page's url, or a product_id of our catalog",
            ))
        }
        (Some(url), None) => {
            let code = request
                .currency
                .as_deref()
                .ok_or_else(|| ApiError::invalid_field("currency", "required with a url"))?;
            let currency = Currency::from_code(code).map_err(money_error)?;
            let url = ProductUrl::parse(url)
                .map_err(|error| ApiError::invalid_field("url", error.to_string()))?;
            if let Some(selector) = &request.selector {
                check_selector_syntax(selector)?;
            }
            (OrderSource::Page(url), currency)
        }
        (None, Some(product_id)) => catalog_source(state, &request, product_id).await?,
    };
    let target = Money::parse(&request.target_price, currency).map_err(money_error)?;
    Ok(PlaceOrder {
        owner: caller.user_id,
        source,
        target,
        check_interval_secs: request
            .check_interval_secs
            .unwrap_or(DEFAULT_CHECK_INTERVAL_SECS),
        selector: request.selector,
        credentials_version: caller.credentials_version,
    })
}

/// A catalog product to follow: on sale, and the target in its currency. Neither
/// an interval nor a selector means anything for it.
async fn catalog_source(
    state: &AppState,
    request: &PlaceOrderRequest,
    product_id: &str,
) -> Result<(OrderSource, Currency), ApiError> {
    let unknown = || ApiError::invalid_field("product_id", "no such product in the catalog");
    let product_id: ProductId = product_id.trim().parse().map_err(|_| unknown())?;
    if request.selector.is_some() || request.check_interval_secs.is_some() {
        return Err(ApiError::invalid_field(
            "selector",
            "a catalog product is not scraped: leave out selector and check_interval_secs",
        ));
    }
    let product = match orders_application::catalog::load_product(&state.events, product_id).await {
        Ok(product) => product,
        Err(CommandError::NotFound) => return Err(unknown()),
        Err(error) => {
            return Err(ApiError::internal(
                anyhow::Error::new(error).context("loading a catalog product"),
            ))
        }
    };
    if product.is_retired() {
        return Err(ApiError::invalid_field(
            "product_id",
            "this product is no longer sold",
        ));
    }
    let currency = product
        .price()
        .map(|price| price.currency())
        .ok_or_else(unknown)?;
    if let Some(code) = request.currency.as_deref() {
        if code.trim() != currency.code() {
            return Err(ApiError::invalid_field(
                "currency",
                format!("the product is priced in {currency}"),
            ));
        }
    }
    Ok((OrderSource::Catalog(product_id), currency))
}

/// The one mapping of a placement's failure.
pub(crate) fn place_order_error(error: PlaceOrderError) -> ApiError {
    match error {
        PlaceOrderError::Refused(refusal) => order_refusal(refusal),
        PlaceOrderError::OwnerUnknown => ApiError::Unauthorized("the account does not exist"),
        PlaceOrderError::OwnerDeactivated => ApiError::Unauthorized("the account is deactivated"),
        PlaceOrderError::CredentialsChanged => ApiError::Unauthorized(CREDENTIALS_CHANGED),
        PlaceOrderError::IdempotencyKeyReused => {
            ApiError::invalid_field("Idempotency-Key", error.to_string())
        }
        PlaceOrderError::TooManyConflicts => ApiError::Conflict(error.to_string()),
        PlaceOrderError::Store(failure) => {
            ApiError::internal(anyhow::Error::new(failure).context("placing an order"))
        }
    }
}

/// Places a tracking order. With `Idempotency-Key`, a retry of the same request
/// answers with the order the first one created, and stores nothing.
#[utoipa::path(post, path = "/orders", tag = "orders", security(("bearer" = [])),
    request_body = PlaceOrderRequest,
    params(("Idempotency-Key" = Option<String>, Header, description = "makes retries safe")),
    responses((status = 201, body = PlaceOrderResponse, headers(("Location" = String), ("Orders-Position" = String))),
              (status = 400, body = crate::problem::Problem), (status = 401, body = crate::problem::Problem),
              (status = 409, body = crate::problem::Problem), (status = 422, body = crate::problem::Problem)))]
pub async fn place_order(
    State(state): State<Arc<AppState>>,
    caller: CurrentUser,
    context: RequestContext,
    headers: HeaderMap,
    AppJson(request): AppJson<PlaceOrderRequest>,
) -> Result<Response, ApiError> {
    let idempotency_key = idempotency_key(&headers)?;
    let order = place_order_request(&state, caller, request).await?;
    let metadata = metadata_for(caller, context, idempotency_key);
    let placed = orders::place_order(&state.events, &state.placement_facts, order, &metadata)
        .await
        .map_err(place_order_error)?;
    Ok(match placed {
        Placed::Created { order_id, position } => with_position(created(order_id), position),
        Placed::Replayed { order_id, position } => {
            let mut response = with_position(created(order_id), position);
            response
                .headers_mut()
                .insert(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
            response
        }
    })
}

/// Parses an order id from the path; an id that is not even a UUID names no order.
fn order_id_from_path(id: &str) -> Result<OrderId, ApiError> {
    id.parse().map_err(|_| ApiError::NotFound("no such order"))
}

/// Refuses a caller whose account is gone or deactivated (401).
async fn require_active_caller(state: &AppState, caller: CurrentUser) -> Result<(), ApiError> {
    let standing = user_lookup::standing(state.pool(), caller.user_id)
        .await
        .context("reading the caller's standing")?;
    crate::auth::require_active(standing, caller)
}

/// Makes `change` to the caller's own order and answers 204.
async fn change_own_order(
    state: &AppState,
    caller: CurrentUser,
    context: RequestContext,
    id: &str,
    change: OrderChange,
) -> Result<Response, ApiError> {
    let order_id = order_id_from_path(id)?;
    require_active_caller(state, caller).await?;
    let metadata = metadata_for(caller, context, None);
    let receipt =
        orders::change_own_order(&state.events, caller.user_id, order_id, change, &metadata)
            .await
            .map_err(|error| match error {
                OrderChangeError::Target(error) => money_error(error),
                OrderChangeError::Command(error) => order_command_error(error, "changing an order"),
            })?;
    Ok(with_position(
        StatusCode::NO_CONTENT.into_response(),
        receipt.position,
    ))
}

#[utoipa::path(patch, path = "/orders/{id}", tag = "orders", security(("bearer" = [])),
    params(("id" = String, Path)), request_body = ChangeTargetRequest,
    responses((status = 204), (status = 404, body = crate::problem::Problem),
              (status = 409, body = crate::problem::Problem), (status = 422, body = crate::problem::Problem)))]
pub async fn change_target(
    State(state): State<Arc<AppState>>,
    caller: CurrentUser,
    context: RequestContext,
    Path(id): Path<String>,
    AppJson(request): AppJson<ChangeTargetRequest>,
) -> Result<Response, ApiError> {
    let change = OrderChange::Target(request.target_price);
    change_own_order(&state, caller, context, &id, change).await
}

#[utoipa::path(post, path = "/orders/{id}/pause", tag = "orders", security(("bearer" = [])),
    params(("id" = String, Path)),
    responses((status = 204), (status = 404, body = crate::problem::Problem), (status = 409, body = crate::problem::Problem)))]
pub async fn pause_order(
    State(state): State<Arc<AppState>>,
    caller: CurrentUser,
    context: RequestContext,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    change_own_order(&state, caller, context, &id, OrderChange::Pause).await
}

#[utoipa::path(post, path = "/orders/{id}/resume", tag = "orders", security(("bearer" = [])),
    params(("id" = String, Path)),
    responses((status = 204), (status = 404, body = crate::problem::Problem), (status = 409, body = crate::problem::Problem)))]
pub async fn resume_order(
    State(state): State<Arc<AppState>>,
    caller: CurrentUser,
    context: RequestContext,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    change_own_order(&state, caller, context, &id, OrderChange::Resume).await
}

#[utoipa::path(delete, path = "/orders/{id}", tag = "orders", security(("bearer" = [])),
    params(("id" = String, Path)),
    responses((status = 204), (status = 404, body = crate::problem::Problem), (status = 409, body = crate::problem::Problem)))]
pub async fn cancel_order(
    State(state): State<Arc<AppState>>,
    caller: CurrentUser,
    context: RequestContext,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    change_own_order(&state, caller, context, &id, OrderChange::Cancel).await
}

/// What `POST /orders/{id}/check` answers (202).
#[derive(Debug, Serialize, ToSchema)]
pub struct CheckAccepted {
    /// The check just requested; `null` when one was already in flight (its result
    /// will do, so no second one is made).
    pub check_id: Option<String>,
    pub already_in_flight: bool,
}

#[utoipa::path(post, path = "/orders/{id}/check", tag = "orders", security(("bearer" = [])),
    params(("id" = String, Path)),
    responses((status = 202, body = CheckAccepted), (status = 404, body = crate::problem::Problem),
              (status = 409, body = crate::problem::Problem)))]
pub async fn check_order_now(
    State(state): State<Arc<AppState>>,
    caller: CurrentUser,
    context: RequestContext,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    use orders_application::price_checks::{request_check, CheckRequested};
    use orders_domain::price_check::CheckTrigger;

    let order_id = order_id_from_path(id.as_str())?;
    require_active_caller(&state, caller).await?;
    let order = orders::load_own_order(&state.events, caller.user_id, order_id)
        .await
        .map_err(|error| order_command_error(error, "loading an order"))?;
    let requested = request_check(
        &state.events,
        &order,
        CheckTrigger::Manual,
        &metadata_for(caller, context, None),
    )
    .await
    .map_err(|error| {
        ApiError::from_command(
            error,
            "no such order",
            "requesting a price check",
            |refusal| ApiError::Conflict(refusal.to_string()),
        )
    })?;
    let (body, position) = match requested {
        CheckRequested::Requested { check_id, position } => (
            CheckAccepted {
                check_id: Some(check_id.to_string()),
                already_in_flight: false,
            },
            position,
        ),
        CheckRequested::AlreadyInFlight => (
            CheckAccepted {
                check_id: None,
                already_in_flight: true,
            },
            None,
        ),
    };
    Ok(with_position(
        (StatusCode::ACCEPTED, Json(body)).into_response(),
        position,
    ))
}
