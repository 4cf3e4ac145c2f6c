//! Purchases: a buyer places one (pending until the saga settles it), lists and
//! reads theirs, cancels one; administrators list them all and ship, deliver or
//! cancel. Reads come from the `purchases` view; changes are
//! `orders_application::purchases`.
//!
//! Another buyer's purchase is answered exactly like one that does not exist (404).

use std::sync::Arc;

use anyhow::Context as _;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use orders_application::purchases::{
    self, AdministratorStatus, PlacePurchase, PlacePurchaseError, PurchasePlacement,
};
use orders_application::CommandError;
use orders_domain::ids::{ProductId, PurchaseId};
use orders_domain::purchase::{PurchaseError, PurchaseLine, PurchaseStatus, RejectionReason};
use orders_domain::user::Role;
use orders_projectors::query::{self, purchases::PurchaseRow};
use orders_projectors::View;
use orders_store::event_store::{CommandMetadata, LogPosition};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::auth::{CurrentUser, CREDENTIALS_CHANGED};
use crate::http::admin::require_role;
use crate::http::orders::{idempotency_key, IDEMPOTENT_REPLAYED};
use crate::http::products::{amount_text, list_error};
use crate::http::queries::{answer, page_limit, MinPosition, Page};
use crate::http::{with_position, RequestContext};
use crate::problem::{ApiError, AppJson};
use crate::AppState;

pub fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/purchases", post(place_purchase).get(list_purchases))
        .route("/purchases/{id}", get(show_purchase))
        .route("/purchases/{id}/cancel", post(cancel_purchase))
        .route("/admin/purchases", get(admin_list_purchases))
        .route("/admin/purchases/{id}/status", post(set_status))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PurchaseItem {
    #[schema(value_type = String, format = Uuid)]
    pub product_id: String,
    /// 1 to 1,000.
    pub quantity: u32,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PlacePurchaseRequest {
    /// 1 to 50 items, each product once.
    pub items: Vec<PurchaseItem>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PlacePurchaseResponse {
    #[schema(value_type = String, format = Uuid)]
    pub purchase_id: PurchaseId,
    /// Always `pending`: the saga settles it (watch `GET /live`, or read it with
    /// `Orders-Min-Position`).
    pub status: String,
}

/// One line of a purchase.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PurchaseLineDetails {
    #[schema(value_type = String, format = Uuid)]
    pub product_id: Uuid,
    pub quantity: u32,
    /// The price the stock was reserved at; `null` until confirmed.
    pub unit_price: Option<String>,
    pub line_total: Option<String>,
}

/// One step of a purchase's life.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PurchaseStep {
    pub status: String,
    /// RFC 3339, UTC.
    pub at: String,
    /// Who caused it: `user:<id>`, `system:saga`, ...
    pub actor: Option<String>,
}

/// A purchase as its buyer (or an administrator) sees it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PurchaseDetails {
    #[schema(value_type = String, format = Uuid)]
    pub purchase_id: Uuid,
    #[schema(value_type = String, format = Uuid)]
    pub owner_id: Uuid,
    /// `pending`, `confirmed`, `rejected`, `cancelled`, `shipped` or `delivered`.
    pub status: String,
    pub lines: Vec<PurchaseLineDetails>,
    /// Set once confirmed.
    pub total: Option<String>,
    pub currency: Option<String>,
    /// Why it was rejected: `{"code": "out_of_stock", "product_id": …, "requested": …,
    /// "available": …}`, `unknown_product`, `retired_product`, `currency_mismatch`,
    /// `timed_out`.
    #[schema(value_type = Option<Object>)]
    pub reason: Option<RejectionReason>,
    /// Oldest first.
    pub history: Vec<PurchaseStep>,
    /// RFC 3339, UTC.
    pub placed_at: String,
    pub updated_at: String,
}

impl From<PurchaseRow> for PurchaseDetails {
    fn from(row: PurchaseRow) -> Self {
        let currency = row.currency.clone().unwrap_or_default();
        let amount = |amount: Option<rust_decimal::Decimal>| {
            amount.map(|amount| amount_text(amount, &currency))
        };
        PurchaseDetails {
            purchase_id: row.purchase_id,
            owner_id: row.owner_id,
            status: row.status,
            lines: row
                .lines
                .into_iter()
                .map(|line| PurchaseLineDetails {
                    product_id: line.product_id,
                    quantity: line.quantity,
                    unit_price: amount(line.unit_price),
                    line_total: amount(line.line_total),
                })
                .collect(),
            total: amount(row.total),
            currency: row.currency,
            reason: row.reason,
            history: row
                .history
                .into_iter()
                .map(|step| PurchaseStep {
                    status: step.status,
                    at: step.at.to_rfc3339(),
                    actor: step.actor,
                })
                .collect(),
            placed_at: row.placed_at.to_rfc3339(),
            updated_at: row.updated_at.to_rfc3339(),
        }
    }
}

/// The answer to a purchase's refusal. A transition that does not fit names the
/// current status.
pub(crate) fn purchase_refusal(refusal: PurchaseError) -> ApiError {
    let message = refusal.to_string();
    match refusal {
        PurchaseError::NotFound => ApiError::NotFound("no such purchase"),
        PurchaseError::LineCount { .. } => ApiError::invalid_field("items", message),
        PurchaseError::QuantityOutOfRange { index, .. } => {
            ApiError::invalid_field(format!("items[{index}].quantity"), message)
        }
        PurchaseError::DuplicateProduct { index } => {
            ApiError::invalid_field(format!("items[{index}].product_id"), message)
        }
        PurchaseError::IllegalTransition { .. }
        | PurchaseError::AlreadyPlaced
        | PurchaseError::ConfirmationMismatch
        | PurchaseError::TotalTooLarge => ApiError::Conflict(message),
    }
}

fn purchase_command_error(error: CommandError<PurchaseError>, doing: &'static str) -> ApiError {
    ApiError::from_command(error, "no such purchase", doing, purchase_refusal)
}

/// The one mapping of a placement's failure.
pub(crate) fn place_purchase_error(error: PlacePurchaseError) -> ApiError {
    match error {
        PlacePurchaseError::Inactive(inactive) => crate::http::accounts::inactive_account(inactive),
        PlacePurchaseError::CredentialsChanged => ApiError::Unauthorized(CREDENTIALS_CHANGED),
        PlacePurchaseError::EmailNotVerified => ApiError::EmailNotVerified,
        PlacePurchaseError::Refused(refusal) => purchase_refusal(refusal),
        PlacePurchaseError::IdempotencyKeyReused => {
            ApiError::invalid_field("Idempotency-Key", error.to_string())
        }
        PlacePurchaseError::Store(failure) => {
            ApiError::internal(anyhow::Error::new(failure).context("placing a purchase"))
        }
    }
}

/// The lines a request asks for, each product id checked.
pub(crate) fn purchase_lines(items: &[PurchaseItem]) -> Result<Vec<PurchaseLine>, ApiError> {
    items
        .iter()
        .enumerate()
        .map(|(index, item)| {
            let product_id = item.product_id.trim().parse::<ProductId>().map_err(|_| {
                ApiError::invalid_field(
                    format!("items[{index}].product_id"),
                    "not a product id (a UUID)",
                )
            })?;
            Ok(PurchaseLine {
                product_id,
                quantity: item.quantity,
            })
        })
        .collect()
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

/// Places a purchase for the caller, as the API and the console do.
pub(crate) async fn place_purchase_as(
    state: &AppState,
    caller: CurrentUser,
    context: RequestContext,
    lines: Vec<PurchaseLine>,
    idempotency_key: Option<String>,
) -> Result<PurchasePlacement, ApiError> {
    let purchase = PlacePurchase {
        owner: caller.user_id,
        lines,
        credentials_version: caller.credentials_version,
    };
    let metadata = metadata_for(caller, context, idempotency_key);
    purchases::place_purchase(&state.events, purchase, &metadata)
        .await
        .map_err(place_purchase_error)
}

#[utoipa::path(post, path = "/purchases", tag = "purchases", security(("bearer" = [])),
    request_body = PlacePurchaseRequest,
    params(("Idempotency-Key" = Option<String>, Header, description = "makes retries safe")),
    responses((status = 201, body = PlacePurchaseResponse, headers(("Location" = String), ("Orders-Position" = String))),
              (status = 400, body = crate::problem::Problem), (status = 401, body = crate::problem::Problem),
              (status = 403, body = crate::problem::Problem, description = "the e-mail address is not verified"),
              (status = 422, body = crate::problem::Problem)))]
pub async fn place_purchase(
    State(state): State<Arc<AppState>>,
    caller: CurrentUser,
    context: RequestContext,
    headers: HeaderMap,
    AppJson(request): AppJson<PlacePurchaseRequest>,
) -> Result<Response, ApiError> {
    let idempotency_key = idempotency_key(&headers)?;
    let lines = purchase_lines(&request.items)?;
    let placement = place_purchase_as(&state, caller, context, lines, idempotency_key).await?;
    let (purchase_id, position, replayed) = match placement {
        PurchasePlacement::Created {
            purchase_id,
            position,
        } => (purchase_id, position, false),
        PurchasePlacement::Replayed {
            purchase_id,
            position,
        } => (purchase_id, position, true),
    };
    let created = (
        StatusCode::CREATED,
        [(header::LOCATION, format!("/purchases/{purchase_id}"))],
        Json(PlacePurchaseResponse {
            purchase_id,
            status: PurchaseStatus::Pending.as_str().to_owned(),
        }),
    )
        .into_response();
    let mut response = with_position(created, position);
    if replayed {
        response
            .headers_mut()
            .insert(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
    }
    Ok(response)
}

/// A purchase list's parameters.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PurchaseListParams {
    /// Only purchases in this status.
    pub status: Option<String>,
    /// Administrators only: only this buyer's purchases (a user id).
    pub owner: Option<String>,
    /// 1 to 100; 20 when left out.
    pub limit: Option<String>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

impl PurchaseListParams {
    fn from_query(query: Result<Query<Self>, QueryRejection>) -> Result<Self, ApiError> {
        query
            .map(|Query(params)| params)
            .map_err(|rejection| ApiError::BadRequest(rejection.body_text()))
    }

    pub(crate) fn status(&self) -> Result<Option<PurchaseStatus>, ApiError> {
        self.status
            .as_deref()
            .filter(|status| !status.is_empty())
            .map(|status| {
                PurchaseStatus::parse(status).ok_or_else(|| {
                    ApiError::invalid_field(
                        "status",
                        "one of pending, confirmed, rejected, cancelled, shipped, delivered",
                    )
                })
            })
            .transpose()
    }

    fn owner(&self) -> Result<Option<Uuid>, ApiError> {
        self.owner
            .as_deref()
            .filter(|owner| !owner.is_empty())
            .map(|owner| {
                owner
                    .parse::<Uuid>()
                    .map_err(|_| ApiError::invalid_field("owner", "not a user id (a UUID)"))
            })
            .transpose()
    }
}

/// A page of purchases: the caller's (`owner` = them), or, for administrators, any.
pub(crate) async fn purchases_page(
    state: &AppState,
    owner: Option<Uuid>,
    status: Option<PurchaseStatus>,
    limit: Option<&str>,
    cursor: Option<&str>,
) -> Result<Page<PurchaseDetails>, ApiError> {
    let limit = page_limit(limit)?;
    let found = match owner {
        Some(owner) => query::purchases::of_owner(state.pool(), owner, status, limit, cursor).await,
        None => query::purchases::all(state.pool(), status, None, limit, cursor).await,
    }
    .map_err(|error| list_error(error, "reading the purchases view"))?;
    Ok(Page {
        items: found.items.into_iter().map(PurchaseDetails::from).collect(),
        next_cursor: found.next_cursor,
    })
}

#[utoipa::path(get, path = "/purchases", tag = "purchases", security(("bearer" = [])),
    params(PurchaseListParams, ("Orders-Min-Position" = Option<String>, Header)),
    responses((status = 200, body = Page<PurchaseDetails>), (status = 422, body = crate::problem::Problem)))]
pub async fn list_purchases(
    State(state): State<Arc<AppState>>,
    caller: CurrentUser,
    min_position: MinPosition,
    params: Result<Query<PurchaseListParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let params = PurchaseListParams::from_query(params)?;
    let status = params.status()?;
    crate::http::queries::require_active(&state, caller).await?;
    let stale = min_position.wait(&state, &[View::Purchases]).await?;
    let page = purchases_page(
        &state,
        Some(caller.user_id.as_uuid()),
        status,
        params.limit.as_deref(),
        params.cursor.as_deref(),
    )
    .await?;
    Ok(answer(Json(page), stale))
}

fn purchase_id_from_path(id: &str) -> Result<PurchaseId, ApiError> {
    id.parse()
        .map_err(|_| ApiError::NotFound("no such purchase"))
}

/// The caller's purchase from the view (`None`: no such purchase, or another
/// buyer's), and whether the view was stale.
pub(crate) async fn own_purchase(
    state: &AppState,
    caller: CurrentUser,
    min_position: MinPosition,
    purchase_id: PurchaseId,
) -> Result<(Option<PurchaseDetails>, bool), ApiError> {
    crate::http::queries::require_active(state, caller).await?;
    let stale = min_position.wait(state, &[View::Purchases]).await?;
    let row = query::purchases::get(state.pool(), purchase_id.as_uuid())
        .await
        .context("reading the purchases view")?
        .filter(|row| row.owner_id == caller.user_id.as_uuid());
    Ok((row.map(PurchaseDetails::from), stale))
}

#[utoipa::path(get, path = "/purchases/{id}", tag = "purchases", security(("bearer" = [])),
    params(("id" = String, Path), ("Orders-Min-Position" = Option<String>, Header)),
    responses((status = 200, body = PurchaseDetails), (status = 404, body = crate::problem::Problem)))]
pub async fn show_purchase(
    State(state): State<Arc<AppState>>,
    caller: CurrentUser,
    min_position: MinPosition,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let purchase_id = purchase_id_from_path(&id)?;
    let (purchase, stale) = own_purchase(&state, caller, min_position, purchase_id).await?;
    Ok(match purchase {
        Some(purchase) => answer(Json(purchase), stale),
        None => answer(ApiError::NotFound("no such purchase"), stale),
    })
}

/// The buyer cancels their purchase, as the API and the console do.
pub(crate) async fn cancel_purchase_as(
    state: &AppState,
    caller: CurrentUser,
    context: RequestContext,
    purchase_id: PurchaseId,
) -> Result<Option<LogPosition>, ApiError> {
    crate::http::queries::require_active(state, caller).await?;
    let metadata = metadata_for(caller, context, None);
    let receipt =
        purchases::cancel_own_purchase(&state.events, caller.user_id, purchase_id, &metadata)
            .await
            .map_err(|error| purchase_command_error(error, "cancelling a purchase"))?;
    Ok(receipt.position)
}

#[utoipa::path(post, path = "/purchases/{id}/cancel", tag = "purchases", security(("bearer" = [])),
    params(("id" = String, Path)),
    responses((status = 204), (status = 404, body = crate::problem::Problem),
              (status = 409, body = crate::problem::Problem, description = "shipped, delivered, rejected or cancelled already")))]
pub async fn cancel_purchase(
    State(state): State<Arc<AppState>>,
    caller: CurrentUser,
    context: RequestContext,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let purchase_id = purchase_id_from_path(&id)?;
    let position = cancel_purchase_as(&state, caller, context, purchase_id).await?;
    Ok(with_position(
        StatusCode::NO_CONTENT.into_response(),
        position,
    ))
}

#[utoipa::path(get, path = "/admin/purchases", tag = "purchases", security(("bearer" = [])),
    params(PurchaseListParams, ("Orders-Min-Position" = Option<String>, Header)),
    responses((status = 200, body = Page<PurchaseDetails>), (status = 403, body = crate::problem::Problem),
              (status = 422, body = crate::problem::Problem)))]
pub async fn admin_list_purchases(
    State(state): State<Arc<AppState>>,
    caller: CurrentUser,
    min_position: MinPosition,
    params: Result<Query<PurchaseListParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let params = PurchaseListParams::from_query(params)?;
    let status = params.status()?;
    let owner = params.owner()?;
    require_role(&state, caller, &[Role::Admin, Role::Auditor]).await?;
    let stale = min_position.wait(&state, &[View::Purchases]).await?;
    let page = purchases_page(
        &state,
        owner,
        status,
        params.limit.as_deref(),
        params.cursor.as_deref(),
    )
    .await?;
    Ok(answer(Json(page), stale))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PurchaseStatusRequest {
    /// `shipped`, `delivered` or `cancelled`.
    pub status: String,
}

/// An administrator sets a purchase's status, as the API and the console do.
pub(crate) async fn set_status_as(
    state: &AppState,
    caller: CurrentUser,
    context: RequestContext,
    purchase_id: PurchaseId,
    status: &str,
) -> Result<Option<LogPosition>, ApiError> {
    require_role(state, caller, &[Role::Admin]).await?;
    let status = AdministratorStatus::parse(status)
        .ok_or_else(|| ApiError::invalid_field("status", "one of shipped, delivered, cancelled"))?;
    let metadata = metadata_for(caller, context, None);
    let receipt = purchases::set_purchase_status(&state.events, purchase_id, status, &metadata)
        .await
        .map_err(|error| purchase_command_error(error, "changing a purchase's status"))?;
    Ok(receipt.position)
}

#[utoipa::path(post, path = "/admin/purchases/{id}/status", tag = "purchases", security(("bearer" = [])),
    params(("id" = String, Path)), request_body = PurchaseStatusRequest,
    responses((status = 204), (status = 403, body = crate::problem::Problem), (status = 404, body = crate::problem::Problem),
              (status = 409, body = crate::problem::Problem), (status = 422, body = crate::problem::Problem)))]
pub async fn set_status(
    State(state): State<Arc<AppState>>,
    caller: CurrentUser,
    context: RequestContext,
    Path(id): Path<String>,
    body: Result<AppJson<PurchaseStatusRequest>, ApiError>,
) -> Result<Response, ApiError> {
    // The role first: a shopper learns nothing from a 422 about the body.
    require_role(&state, caller, &[Role::Admin]).await?;
    let AppJson(request) = body?;
    let purchase_id = purchase_id_from_path(&id)?;
    let position = set_status_as(&state, caller, context, purchase_id, &request.status).await?;
    Ok(with_position(
        StatusCode::NO_CONTENT.into_response(),
        position,
    ))
}
