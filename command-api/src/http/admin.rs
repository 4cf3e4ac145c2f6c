//! The administrators' routes: the audit trail (roles `admin` and `auditor`).
//!
//! The caller's roles are read from their events on every request, so a granted or
//! revoked role takes effect on the next request, whatever the token says.

use std::sync::Arc;

use anyhow::Context as _;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use orders_domain::user::Role;
use serde::Deserialize;
use utoipa::IntoParams;

use crate::auth::CurrentUser;
use crate::problem::ApiError;
use crate::AppState;
use orders_store::audit::{self, AuditFilter, AuditPage, AuditSubject, CausalNode};

pub fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/admin/users", get(list_users))
        .route("/admin/users/{id}/roles", axum::routing::post(change_role))
        .route("/admin/orders", get(list_orders))
        .route("/admin/audit/trace/{correlation_id}", get(audit_trace))
        .route("/admin/audit/actor/{actor}", get(audit_actor))
        .route("/admin/audit/{aggregate_type}/{id}", get(audit_aggregate))
}

/// Refuses a caller who has none of `roles` now (403), or whose account is gone
/// or deactivated (401).
pub async fn require_role(
    state: &AppState,
    caller: CurrentUser,
    roles: &[Role],
) -> Result<(), ApiError> {
    let user = orders_application::accounts::active_user(&state.events, caller.user_id)
        .await
        .map_err(crate::http::accounts::inactive_account)?;
    crate::auth::require_current_credentials(caller, user.credentials_version())?;
    if !roles.iter().any(|role| user.has_role(*role)) {
        return Err(ApiError::Forbidden("this needs the admin or auditor role"));
    }
    Ok(())
}

/// Filters and paging of the audit routes.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditParams {
    /// Only events recorded at or after this time (RFC 3339).
    pub since: Option<String>,
    /// Only events recorded before this time (RFC 3339).
    pub until: Option<String>,
    /// Only events of these types, comma-separated (e.g. `PriceChanged,TargetReached`).
    #[serde(rename = "type")]
    pub event_type: Option<String>,
    /// Events per page, 1 to 1000 (default 100).
    pub limit: Option<i64>,
    /// The `next_after` of the previous page.
    pub after: Option<i64>,
}

/// The most events one page of the audit routes returns.
const MAX_HTTP_PAGE: i64 = 1_000;

fn time(field: &str, text: Option<&str>) -> Result<Option<DateTime<Utc>>, ApiError> {
    text.map(|text| {
        DateTime::parse_from_rfc3339(text)
            .map(|time| time.with_timezone(&Utc))
            .map_err(|_| {
                ApiError::invalid_field(
                    field,
                    "expected an RFC 3339 time such as 2026-11-25T00:00:00Z",
                )
            })
    })
    .transpose()
}

impl AuditParams {
    fn filter(params: Result<Query<AuditParams>, QueryRejection>) -> Result<AuditFilter, ApiError> {
        let Query(params) =
            params.map_err(|rejection| ApiError::invalid_field("query", rejection.body_text()))?;
        let limit = params.limit.unwrap_or(100);
        if !(1..=MAX_HTTP_PAGE).contains(&limit) {
            return Err(ApiError::invalid_field(
                "limit",
                format!("must be between 1 and {MAX_HTTP_PAGE}"),
            ));
        }
        if params.after.is_some_and(|after| after < 0) {
            return Err(ApiError::invalid_field("after", "must not be negative"));
        }
        Ok(AuditFilter {
            since: time("since", params.since.as_deref())?,
            until: time("until", params.until.as_deref())?,
            event_types: params
                .event_type
                .as_deref()
                .map(|types| {
                    types
                        .split(',')
                        .map(str::trim)
                        .filter(|kind| !kind.is_empty())
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default(),
            after: params.after,
            limit,
        })
    }
}

const READERS: &[Role] = &[Role::Admin, Role::Auditor];

#[utoipa::path(get, path = "/admin/audit/{aggregate_type}/{id}", tag = "admin", security(("bearer" = [])),
    params(("aggregate_type" = String, Path), ("id" = String, Path), AuditParams),
    responses((status = 200), (status = 403, body = crate::problem::Problem), (status = 404, body = crate::problem::Problem)))]
pub async fn audit_aggregate(
    State(state): State<Arc<AppState>>,
    caller: CurrentUser,
    Path((aggregate_type, id)): Path<(String, String)>,
    params: Result<Query<AuditParams>, QueryRejection>,
) -> Result<Json<AuditPage>, ApiError> {
    require_role(&state, caller, READERS).await?;
    if !["user", "order", "price_check"].contains(&aggregate_type.as_str()) {
        return Err(ApiError::NotFound("no such aggregate type"));
    }
    let filter = AuditParams::filter(params)?;
    let subject = AuditSubject::Aggregate {
        aggregate_type: &aggregate_type,
        aggregate_id: &id,
    };
    let page = audit::page(state.pool(), &subject, &filter)
        .await
        .context("reading the audit trail")?;
    if page.entries.is_empty() && filter.after.is_none() && filter.event_types.is_empty() {
        return Err(ApiError::NotFound("no such aggregate"));
    }
    Ok(Json(page))
}

/// A trace: the events of one correlation id as a causal tree.
#[derive(Debug, serde::Serialize)]
pub struct AuditTrace {
    pub correlation_id: String,
    pub events: Vec<CausalNode>,
    pub next_after: Option<i64>,
}

#[utoipa::path(get, path = "/admin/audit/trace/{correlation_id}", tag = "admin", security(("bearer" = [])),
    params(("correlation_id" = String, Path), AuditParams),
    responses((status = 200), (status = 403, body = crate::problem::Problem)))]
pub async fn audit_trace(
    State(state): State<Arc<AppState>>,
    caller: CurrentUser,
    Path(correlation_id): Path<String>,
    params: Result<Query<AuditParams>, QueryRejection>,
) -> Result<Json<AuditTrace>, ApiError> {
    require_role(&state, caller, READERS).await?;
    let filter = AuditParams::filter(params)?;
    let page = audit::page(
        state.pool(),
        &AuditSubject::Correlation(&correlation_id),
        &filter,
    )
    .await
    .context("reading the audit trail")?;
    Ok(Json(AuditTrace {
        events: audit::causal_tree(&page.entries),
        next_after: page.next_after,
        correlation_id,
    }))
}

#[utoipa::path(get, path = "/admin/audit/actor/{actor}", tag = "admin", security(("bearer" = [])),
    params(("actor" = String, Path), AuditParams),
    responses((status = 200), (status = 403, body = crate::problem::Problem)))]
pub async fn audit_actor(
    State(state): State<Arc<AppState>>,
    caller: CurrentUser,
    Path(actor): Path<String>,
    params: Result<Query<AuditParams>, QueryRejection>,
) -> Result<Json<AuditPage>, ApiError> {
    require_role(&state, caller, READERS).await?;
    let filter = AuditParams::filter(params)?;
    let page = audit::page(state.pool(), &AuditSubject::Actor(&actor), &filter)
        .await
        .context("reading the audit trail")?;
    Ok(Json(page))
}

/// Filters of `GET /admin/users` (with `limit` and `cursor`).
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UserListParams {
    pub limit: Option<String>,
    pub cursor: Option<String>,
    /// Part of the e-mail address, any case.
    pub email: Option<String>,
    /// `admin` or `auditor`.
    pub role: Option<String>,
    /// `true` or `false`.
    pub deactivated: Option<bool>,
}

/// One user, as administrators see it.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct AdminUser {
    #[schema(value_type = String, format = Uuid)]
    pub user_id: uuid::Uuid,
    pub email: String,
    pub email_verified: bool,
    pub display_name: Option<String>,
    pub price_alerts: bool,
    pub roles: Vec<String>,
    pub deactivated: bool,
    /// RFC 3339, UTC.
    pub registered_at: String,
}

#[utoipa::path(get, path = "/admin/users", tag = "admin", security(("bearer" = [])),
    params(UserListParams),
    responses((status = 200), (status = 403, body = crate::problem::Problem), (status = 422, body = crate::problem::Problem)))]
pub async fn list_users(
    State(state): State<Arc<AppState>>,
    caller: CurrentUser,
    params: Result<Query<UserListParams>, QueryRejection>,
) -> Result<Json<crate::http::queries::Page<AdminUser>>, ApiError> {
    require_role(&state, caller, READERS).await?;
    let Query(params) = params.map_err(|rejection| ApiError::BadRequest(rejection.body_text()))?;
    let paging = crate::http::queries::PageParams {
        limit: params.limit.clone(),
        cursor: params.cursor.clone(),
    };
    let limit = paging.limit()?;
    let after = paging.cursor::<16>()?.map(uuid::Uuid::from_bytes);
    if let Some(role) = &params.role {
        role.parse::<Role>()
            .map_err(|error| ApiError::invalid_field("role", error.to_string()))?;
    }
    let filter = orders_projectors::query::users::UserFilter {
        email_contains: params.email.clone().filter(|part| !part.is_empty()),
        role: params.role.clone(),
        deactivated: params.deactivated,
    };
    let rows = orders_projectors::query::users::filtered(state.pool(), &filter, after, limit + 1)
        .await
        .context("reading the users view")?;
    Ok(Json(crate::http::queries::page(
        rows,
        limit,
        |row| crate::http::queries::encode_cursor(row.user_id.as_bytes()),
        |row| AdminUser {
            user_id: row.user_id,
            email: row.email,
            email_verified: row.email_verified,
            display_name: row.display_name,
            price_alerts: row.price_alerts,
            roles: row.roles,
            deactivated: row.deactivated,
            registered_at: row
                .registered_at
                .to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        },
    )))
}

/// Filters of `GET /admin/orders` (with `limit` and `cursor`).
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct OrderListParams {
    pub limit: Option<String>,
    pub cursor: Option<String>,
    /// The owner's user id.
    pub owner: Option<String>,
    /// `active`, `paused` or `cancelled`.
    pub status: Option<String>,
}

/// One order, as administrators see it: its owner's view plus the owner.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct AdminOrder {
    #[schema(value_type = String, format = Uuid)]
    pub owner_id: uuid::Uuid,
    #[serde(flatten)]
    pub order: crate::http::queries::OrderDetails,
}

#[utoipa::path(get, path = "/admin/orders", tag = "admin", security(("bearer" = [])),
    params(OrderListParams),
    responses((status = 200), (status = 403, body = crate::problem::Problem), (status = 422, body = crate::problem::Problem)))]
pub async fn list_orders(
    State(state): State<Arc<AppState>>,
    caller: CurrentUser,
    params: Result<Query<OrderListParams>, QueryRejection>,
) -> Result<Json<crate::http::queries::Page<AdminOrder>>, ApiError> {
    require_role(&state, caller, READERS).await?;
    let Query(params) = params.map_err(|rejection| ApiError::BadRequest(rejection.body_text()))?;
    let paging = crate::http::queries::PageParams {
        limit: params.limit.clone(),
        cursor: params.cursor.clone(),
    };
    let limit = paging.limit()?;
    let after = paging.cursor::<16>()?.map(uuid::Uuid::from_bytes);
    let owner = params
        .owner
        .as_deref()
        .map(|owner| {
            owner
                .parse::<uuid::Uuid>()
                .map_err(|_| ApiError::invalid_field("owner", "not a user id"))
        })
        .transpose()?;
    if let Some(status) = &params.status {
        if !["active", "paused", "cancelled"].contains(&status.as_str()) {
            return Err(ApiError::invalid_field(
                "status",
                "must be active, paused or cancelled",
            ));
        }
    }
    let filter = orders_projectors::query::orders::OrderFilter {
        owner,
        status: params.status.clone(),
    };
    let rows = orders_projectors::query::orders::filtered(state.pool(), &filter, after, limit + 1)
        .await
        .context("reading the orders view")?;
    Ok(Json(crate::http::queries::page(
        rows,
        limit,
        |row| crate::http::queries::encode_cursor(row.order_id.as_bytes()),
        |row| AdminOrder {
            owner_id: row.owner_id,
            order: crate::http::queries::OrderDetails::from(row),
        },
    )))
}

/// `POST /admin/users/{id}/roles`: grant or revoke one role.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RoleChange {
    /// `admin` or `auditor`.
    pub role: String,
    /// `grant` or `revoke`.
    pub action: String,
}

#[utoipa::path(post, path = "/admin/users/{id}/roles", tag = "admin", security(("bearer" = [])),
    params(("id" = String, Path)), request_body = RoleChange,
    responses((status = 204), (status = 403, body = crate::problem::Problem), (status = 404, body = crate::problem::Problem),
              (status = 422, body = crate::problem::Problem)))]
pub async fn change_role(
    State(state): State<Arc<AppState>>,
    caller: CurrentUser,
    context: crate::http::RequestContext,
    Path(id): Path<String>,
    // Taken as a result, so a caller without the role hears 403 before anything
    // about their body.
    body: Result<crate::problem::AppJson<RoleChange>, ApiError>,
) -> Result<axum::response::Response, ApiError> {
    use axum::response::IntoResponse as _;

    require_role(&state, caller, &[Role::Admin]).await?;
    let crate::problem::AppJson(change) = body?;
    let position = change_role_of(&state, caller, context, &id, &change).await?;
    Ok(crate::http::with_position(
        axum::http::StatusCode::NO_CONTENT.into_response(),
        position,
    ))
}

/// Grants or revokes a role as `caller` (who must be an administrator now: checked
/// here too), for the JSON route and the console's users page alike; answers the
/// change's log position.
pub async fn change_role_of(
    state: &AppState,
    caller: CurrentUser,
    context: crate::http::RequestContext,
    id: &str,
    change: &RoleChange,
) -> Result<Option<orders_store::event_store::LogPosition>, ApiError> {
    use orders_application::accounts::{self, RoleChange as Change};

    require_role(state, caller, &[Role::Admin]).await?;
    let role: Role = change
        .role
        .parse()
        .map_err(|error: orders_domain::user::UnknownRole| {
            ApiError::invalid_field("role", error.to_string())
        })?;
    let change = match change.action.as_str() {
        "grant" => Change::Grant(role),
        "revoke" => Change::Revoke(role),
        _ => return Err(ApiError::invalid_field("action", "must be grant or revoke")),
    };
    let user_id: orders_domain::ids::UserId =
        id.parse().map_err(|_| ApiError::NotFound("no such user"))?;
    let metadata = orders_application::RequestIds {
        correlation_id: context.correlation_id,
        request_id: context.request_id,
    }
    .metadata(format!("admin:{} for user:{user_id}", caller.user_id));
    let receipt = accounts::change_role(&state.events, user_id, change, &metadata)
        .await
        .map_err(|error| {
            ApiError::from_command(error, "no such user", "changing a role", |refusal| {
                ApiError::Conflict(refusal.to_string())
            })
        })?;
    Ok(receipt.position)
}
