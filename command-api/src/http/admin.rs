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
use orders_domain::user::{Role, User};
use serde::Deserialize;
use utoipa::IntoParams;

use crate::audit::{self, AuditFilter, AuditPage, AuditSubject, CausalNode};
use crate::auth::CurrentUser;
use crate::problem::ApiError;
use crate::AppState;

pub fn router() -> Router<Arc<AppState>> {
    Router::new()
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
    let (user, _) = state
        .events
        .load::<User>(&caller.user_id.to_string())
        .await
        .map_err(|error| ApiError::Internal(anyhow::anyhow!("loading the caller: {error}")))?;
    if !user.is_registered() {
        return Err(ApiError::Unauthorized("the account does not exist"));
    }
    if user.is_deactivated() {
        return Err(ApiError::Unauthorized("the account is deactivated"));
    }
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
