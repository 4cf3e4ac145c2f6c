//! The administrators' operations: the dashboard (counts per day, relay and view
//! lag, dead letters), the whole event log with filters, `audit verify`, and the
//! dead letters with retry. The JSON routes and the console's admin pages both call
//! the functions here, so the two show the same.

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::Context as _;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{Days, Utc};
use orders_domain::user::Role;
use orders_nats::dead_letters::{self, DeadLetter, RetrySelection};
use orders_projectors::query::admin_overview;
use orders_relay::audit_chain::{self, VerifyReport};
use orders_store::audit::{self, AuditEntry, LogFilter};
use serde::{Deserialize, Serialize};
use utoipa::IntoParams;

use crate::auth::CurrentUser;
use crate::http::admin::require_role;
use crate::problem::ApiError;
use crate::AppState;

/// Roles that read (auditors never change anything).
pub const READERS: &[Role] = &[Role::Admin, Role::Auditor];
/// Days the dashboard shows, today included.
pub const DASHBOARD_DAYS: u64 = 14;
/// The most events one page of the event log shows.
pub const MAX_LOG_PAGE: i64 = 1_000;

pub fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/admin/analytics/dashboard", get(show_dashboard))
        .route("/admin/audit/log", get(show_log))
        .route("/admin/audit/verify", post(run_verify))
        .route("/admin/dead-letters", get(list_dead_letters))
        .route("/admin/dead-letters/{sequence}/retry", post(retry_one))
}

/// How far each consumer of the log is behind (`orders lag`).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct LagSummary {
    /// The last message of the log stream.
    pub stream_last_sequence: u64,
    /// Events stored and not yet in the stream.
    pub relay_behind: i64,
    /// Seconds the oldest open writing transaction has been open (it holds the relay
    /// back), if any.
    pub oldest_transaction_secs: Option<f64>,
    pub views: Vec<ViewLagSummary>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ViewLagSummary {
    pub view: String,
    /// Stream messages not yet applied.
    pub behind: u64,
    /// Seconds since its last batch.
    pub idle_secs: f64,
}

/// One UTC day of the dashboard: each metric's count.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct DashboardDay {
    /// `YYYY-MM-DD`, UTC.
    pub day: String,
    pub counts: BTreeMap<String, i64>,
}

/// `GET /admin/analytics/dashboard`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Dashboard {
    /// Totals: users, orders by status, price changes, alerts.
    pub totals: BTreeMap<String, i64>,
    /// The last 14 UTC days, oldest first.
    pub days: Vec<DashboardDay>,
    /// `null` when this instance has no NATS connection.
    pub lag: Option<LagSummary>,
    /// Messages the workers gave up on; `null` without NATS.
    pub dead_letters: Option<usize>,
    /// The shop and the tracker from the `analytics` view, all time: purchases by
    /// status reached, net revenue per currency, the status mix now, tracking counts.
    #[schema(value_type = Object)]
    pub analytics: orders_projectors::query::analytics::Summary,
}

/// Everything the dashboard shows, read now (its parts at once: they are
/// independent reads of PostgreSQL and NATS).
pub async fn dashboard(state: &AppState) -> anyhow::Result<Dashboard> {
    let today = Utc::now().date_naive();
    let first = today
        .checked_sub_days(Days::new(DASHBOARD_DAYS - 1))
        .unwrap_or(today);
    let totals = async {
        admin_overview::counters(state.pool())
            .await
            .context("reading the admin_overview view")
    };
    let days = async {
        admin_overview::days(state.pool(), first, today)
            .await
            .context("reading the admin_overview view's days")
    };
    let lag = async {
        match &state.config.jetstream {
            Some(jetstream) => orders_projectors::lag::measure(state.pool(), jetstream)
                .await
                .map(|lag| Some(lag_summary(&lag))),
            None => Ok(None),
        }
    };
    let dead_letters = async {
        match &state.config.jetstream {
            Some(jetstream) => dead_letters::list(jetstream, None)
                .await
                .map(|letters| Some(letters.len())),
            None => Ok(None),
        }
    };
    let analytics = async {
        orders_projectors::query::analytics::summary(state.pool())
            .await
            .context("reading the analytics view")
    };
    let (totals, days, lag, dead_letters, analytics) =
        tokio::try_join!(totals, days, lag, dead_letters, analytics)?;
    Ok(Dashboard {
        totals: totals.into_iter().collect(),
        days: days
            .into_iter()
            .map(|day| DashboardDay {
                day: day.day.to_string(),
                counts: day.counts.into_iter().collect(),
            })
            .collect(),
        lag,
        dead_letters,
        analytics,
    })
}

fn lag_summary(lag: &orders_projectors::lag::Lag) -> LagSummary {
    LagSummary {
        stream_last_sequence: lag.stream_last_sequence,
        relay_behind: lag.relay_behind,
        oldest_transaction_secs: lag.horizon_holder.as_ref().map(|holder| holder.age_secs),
        views: lag
            .views
            .iter()
            .map(|view| ViewLagSummary {
                view: view.view.name().to_owned(),
                behind: view.behind,
                idle_secs: view.idle_secs,
            })
            .collect(),
    }
}

#[utoipa::path(get, path = "/admin/analytics/dashboard", tag = "admin", security(("bearer" = [])),
    responses((status = 200, body = Dashboard), (status = 403, body = crate::problem::Problem)))]
pub async fn show_dashboard(
    State(state): State<Arc<AppState>>,
    caller: CurrentUser,
) -> Result<Json<Dashboard>, ApiError> {
    require_role(&state, caller, READERS).await?;
    Ok(Json(dashboard(&state).await?))
}

/// Filters of the event log (`GET /admin/audit/log`, the console's event viewer).
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LogParams {
    /// Event types, comma-separated.
    #[serde(rename = "type")]
    pub event_type: Option<String>,
    /// `user`, `order` or `price_check`.
    pub aggregate_type: Option<String>,
    pub aggregate_id: Option<String>,
    /// e.g. `user:0193…` or `system:scraper`.
    pub actor: Option<String>,
    pub correlation_id: Option<String>,
    /// The `next_before` of the previous page.
    pub before: Option<i64>,
    /// 1 to 1000 (default 100).
    pub limit: Option<i64>,
}

fn set(text: Option<&String>) -> Option<String> {
    text.map(|text| text.trim().to_owned())
        .filter(|text| !text.is_empty())
}

impl LogParams {
    /// The filter these ask for; a bad value is a 422 naming it.
    pub fn filter(&self) -> Result<LogFilter, ApiError> {
        let aggregate_type = set(self.aggregate_type.as_ref());
        if let Some(kind) = &aggregate_type {
            if !["user", "order", "price_check"].contains(&kind.as_str()) {
                return Err(ApiError::invalid_field(
                    "aggregate_type",
                    "must be user, order or price_check",
                ));
            }
        }
        if self.before.is_some_and(|before| before < 1) {
            return Err(ApiError::invalid_field("before", "must be positive"));
        }
        Ok(LogFilter {
            event_types: self
                .event_type
                .as_deref()
                .unwrap_or_default()
                .split(',')
                .map(str::trim)
                .filter(|kind| !kind.is_empty())
                .map(str::to_owned)
                .collect(),
            aggregate_type,
            aggregate_id: set(self.aggregate_id.as_ref()),
            actor: set(self.actor.as_ref()),
            correlation_id: set(self.correlation_id.as_ref()),
        })
    }

    pub fn limit(&self) -> Result<i64, ApiError> {
        let limit = self.limit.unwrap_or(100);
        if (1..=MAX_LOG_PAGE).contains(&limit) {
            Ok(limit)
        } else {
            Err(ApiError::invalid_field(
                "limit",
                format!("must be between 1 and {MAX_LOG_PAGE}"),
            ))
        }
    }
}

/// One page of the event log, newest first.
#[derive(Debug, Serialize)]
pub struct LogPage {
    pub events: Vec<AuditEntry>,
    /// Give as `before` for the next (older) page; `null` on the last.
    pub next_before: Option<i64>,
}

/// The newest events passing `params`' filters.
pub async fn event_log(state: &AppState, params: &LogParams) -> Result<LogPage, ApiError> {
    let filter = params.filter()?;
    let (events, next_before) =
        audit::recent(state.pool(), &filter, params.before, params.limit()?)
            .await
            .context("reading the event log")?;
    Ok(LogPage {
        events,
        next_before,
    })
}

#[utoipa::path(get, path = "/admin/audit/log", tag = "admin", security(("bearer" = [])),
    params(LogParams),
    responses((status = 200), (status = 403, body = crate::problem::Problem), (status = 422, body = crate::problem::Problem)))]
pub async fn show_log(
    State(state): State<Arc<AppState>>,
    caller: CurrentUser,
    params: Result<Query<LogParams>, QueryRejection>,
) -> Result<Json<LogPage>, ApiError> {
    require_role(&state, caller, READERS).await?;
    let Query(params) = params.map_err(|rejection| ApiError::BadRequest(rejection.body_text()))?;
    Ok(Json(event_log(&state, &params).await?))
}

fn jetstream(state: &AppState) -> Result<&async_nats::jetstream::Context, ApiError> {
    state
        .config
        .jetstream
        .as_ref()
        .ok_or_else(|| ApiError::Unavailable("this instance has no NATS connection".to_owned()))
}

/// `orders audit verify`: every seal and the chain, from PostgreSQL against the
/// links and the relay's checkpoint.
pub async fn verify_log(state: &AppState) -> Result<VerifyReport, ApiError> {
    let heads = audit_chain::head_store(jetstream(state)?).await?;
    Ok(audit_chain::verify(state.pool(), &heads, &state.config.audit_key).await?)
}

#[utoipa::path(post, path = "/admin/audit/verify", tag = "admin", security(("bearer" = [])),
    responses((status = 200, description = "the report; `failure` is null when the log verifies"),
              (status = 403, body = crate::problem::Problem), (status = 503, body = crate::problem::Problem)))]
pub async fn run_verify(
    State(state): State<Arc<AppState>>,
    caller: CurrentUser,
) -> Result<Json<VerifyReport>, ApiError> {
    require_role(&state, caller, READERS).await?;
    Ok(Json(verify_log(&state).await?))
}

/// The dead letters, oldest first.
pub async fn dead_letter_list(state: &AppState) -> Result<Vec<DeadLetter>, ApiError> {
    Ok(dead_letters::list(jetstream(state)?, None).await?)
}

/// Puts one dead letter back for its worker; 404 when there is no such letter.
pub async fn retry_dead_letter(state: &AppState, sequence: u64) -> Result<DeadLetter, ApiError> {
    let jetstream = jetstream(state)?;
    let known = dead_letters::list(jetstream, None)
        .await?
        .into_iter()
        .any(|letter| letter.stream_sequence == sequence);
    if !known {
        return Err(ApiError::NotFound("no such dead letter"));
    }
    let mut retried = dead_letters::retry(jetstream, RetrySelection::One(sequence)).await?;
    retried
        .pop()
        .ok_or(ApiError::NotFound("no such dead letter"))
}

#[utoipa::path(get, path = "/admin/dead-letters", tag = "admin", security(("bearer" = [])),
    responses((status = 200), (status = 403, body = crate::problem::Problem), (status = 503, body = crate::problem::Problem)))]
pub async fn list_dead_letters(
    State(state): State<Arc<AppState>>,
    caller: CurrentUser,
) -> Result<Json<Vec<DeadLetter>>, ApiError> {
    require_role(&state, caller, READERS).await?;
    Ok(Json(dead_letter_list(&state).await?))
}

#[utoipa::path(post, path = "/admin/dead-letters/{sequence}/retry", tag = "admin", security(("bearer" = [])),
    params(("sequence" = u64, Path)),
    responses((status = 204), (status = 403, body = crate::problem::Problem), (status = 404, body = crate::problem::Problem),
              (status = 503, body = crate::problem::Problem)))]
pub async fn retry_one(
    State(state): State<Arc<AppState>>,
    caller: CurrentUser,
    Path(sequence): Path<String>,
) -> Result<Response, ApiError> {
    require_role(&state, caller, &[Role::Admin]).await?;
    let sequence: u64 = sequence
        .parse()
        .map_err(|_| ApiError::NotFound("no such dead letter"))?;
    retry_dead_letter(&state, sequence).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
