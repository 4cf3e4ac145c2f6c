//! Analytics from the log (`analytics` view) for administrators and auditors: per
//! UTC day, purchases by the status they reached and the tracker's counts; revenue
//! per day and currency (never converted; a confirmation adds on its day, a
//! cancellation subtracts on its own); the status mix now. The dashboard's summary
//! is part of `GET /admin/analytics/dashboard` (`admin_operations`).

use std::sync::Arc;

use anyhow::Context as _;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::response::Response;
use axum::routing::get;
use axum::{Json, Router};
use chrono::{Days, NaiveDate, Utc};
use orders_domain::money::Currency;
use orders_projectors::query::analytics;
use orders_projectors::View;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::auth::CurrentUser;
use crate::http::admin::require_role;
use crate::http::admin_operations::READERS;
use crate::http::queries::{answer, MinPosition};
use crate::problem::ApiError;
use crate::AppState;

/// Days shown when the range is not given.
pub const DEFAULT_DAYS: u64 = 30;
/// The longest range one request may ask for.
pub const MAX_DAYS: i64 = 366;

pub fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/admin/analytics/orders-per-day", get(orders_per_day))
        .route("/admin/analytics/revenue", get(revenue))
        .route(
            "/admin/analytics/status-distribution",
            get(status_distribution),
        )
}

/// A range of UTC days.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RangeParams {
    /// `YYYY-MM-DD`, UTC; 29 days before `to` when left out.
    pub from: Option<String>,
    /// `YYYY-MM-DD`, UTC; today when left out.
    pub to: Option<String>,
    /// Revenue only: one ISO 4217 currency.
    pub currency: Option<String>,
}

fn day(field: &'static str, text: &str) -> Result<NaiveDate, ApiError> {
    NaiveDate::parse_from_str(text.trim(), "%Y-%m-%d")
        .map_err(|_| ApiError::invalid_field(field, "a UTC day as YYYY-MM-DD"))
}

impl RangeParams {
    fn from_query(query: Result<Query<Self>, QueryRejection>) -> Result<Self, ApiError> {
        query
            .map(|Query(params)| params)
            .map_err(|rejection| ApiError::BadRequest(rejection.body_text()))
    }

    /// The days asked for: at most [`MAX_DAYS`], `from` not after `to`.
    pub(crate) fn range(&self) -> Result<(NaiveDate, NaiveDate), ApiError> {
        let to = match self.to.as_deref().filter(|text| !text.is_empty()) {
            Some(text) => day("to", text)?,
            None => Utc::now().date_naive(),
        };
        let from = match self.from.as_deref().filter(|text| !text.is_empty()) {
            Some(text) => day("from", text)?,
            None => to
                .checked_sub_days(Days::new(DEFAULT_DAYS - 1))
                .unwrap_or(to),
        };
        if from > to {
            return Err(ApiError::invalid_field("from", "must not be after `to`"));
        }
        if (to - from).num_days() >= MAX_DAYS {
            return Err(ApiError::invalid_field(
                "from",
                format!("at most {MAX_DAYS} days at once"),
            ));
        }
        Ok((from, to))
    }
}

/// One UTC day: purchases by the status they reached that day, and the tracker.
#[derive(Debug, Serialize, ToSchema)]
pub struct AnalyticsDay {
    /// `YYYY-MM-DD`.
    pub day: String,
    /// `placed`, `confirmed`, `rejected`, `cancelled`, `shipped`, `delivered`.
    #[schema(value_type = Object)]
    pub purchases: analytics::PurchaseCounts,
    /// `orders_placed`, `checks_done`, `checks_failed`, `alerts`.
    #[schema(value_type = Object)]
    pub tracking: analytics::TrackingCounts,
}

/// `GET /admin/analytics/orders-per-day`.
#[derive(Debug, Serialize, ToSchema)]
pub struct OrdersPerDay {
    /// Every day of the range, oldest first, zeros included.
    pub items: Vec<AnalyticsDay>,
}

/// One day's revenue in one currency.
#[derive(Debug, Serialize, ToSchema)]
pub struct RevenueItem {
    pub day: String,
    pub currency: String,
    /// A decimal string; negative when cancellations outweighed confirmations.
    pub amount: String,
}

/// `GET /admin/analytics/revenue`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Revenue {
    /// By day, then currency.
    pub items: Vec<RevenueItem>,
}

/// `GET /admin/analytics/status-distribution`.
#[derive(Debug, Serialize, ToSchema)]
pub struct StatusDistribution {
    /// Every status in the lifecycle's order, zeros included.
    #[schema(value_type = Vec<Object>)]
    pub items: Vec<analytics::StatusCount>,
}

/// The days of a range, both halves of the log side by side.
pub(crate) async fn orders_per_day_between(
    state: &AppState,
    from: NaiveDate,
    to: NaiveDate,
) -> Result<Vec<AnalyticsDay>, ApiError> {
    let (purchases, tracking) = tokio::try_join!(
        analytics::purchases_per_day(state.pool(), from, to),
        analytics::tracking_per_day(state.pool(), from, to),
    )
    .context("reading the analytics view")?;
    Ok(purchases
        .into_iter()
        .zip(tracking)
        .map(|(purchases, tracking)| AnalyticsDay {
            day: purchases.day.to_string(),
            purchases: purchases.counts,
            tracking: tracking.counts,
        })
        .collect())
}

#[utoipa::path(get, path = "/admin/analytics/orders-per-day", tag = "admin", security(("bearer" = [])),
    params(RangeParams, ("Orders-Min-Position" = Option<String>, Header)),
    responses((status = 200, body = OrdersPerDay), (status = 403, body = crate::problem::Problem),
              (status = 422, body = crate::problem::Problem)))]
pub async fn orders_per_day(
    State(state): State<Arc<AppState>>,
    caller: CurrentUser,
    min_position: MinPosition,
    params: Result<Query<RangeParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let (from, to) = RangeParams::from_query(params)?.range()?;
    require_role(&state, caller, READERS).await?;
    let stale = min_position.wait(&state, &[View::Analytics]).await?;
    let items = orders_per_day_between(&state, from, to).await?;
    Ok(answer(Json(OrdersPerDay { items }), stale))
}

/// The revenue of a range, in one currency or all.
pub(crate) async fn revenue_between(
    state: &AppState,
    from: NaiveDate,
    to: NaiveDate,
    currency: Option<Currency>,
) -> Result<Vec<RevenueItem>, ApiError> {
    let days = analytics::revenue(state.pool(), from, to, currency)
        .await
        .context("reading the analytics view")?;
    Ok(days
        .into_iter()
        .map(|day| RevenueItem {
            day: day.day.to_string(),
            amount: day.amount.to_string(),
            currency: day.currency,
        })
        .collect())
}

#[utoipa::path(get, path = "/admin/analytics/revenue", tag = "admin", security(("bearer" = [])),
    params(RangeParams, ("Orders-Min-Position" = Option<String>, Header)),
    responses((status = 200, body = Revenue), (status = 403, body = crate::problem::Problem),
              (status = 422, body = crate::problem::Problem)))]
pub async fn revenue(
    State(state): State<Arc<AppState>>,
    caller: CurrentUser,
    min_position: MinPosition,
    params: Result<Query<RangeParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let params = RangeParams::from_query(params)?;
    let (from, to) = params.range()?;
    let currency = params
        .currency
        .as_deref()
        .filter(|code| !code.is_empty())
        .map(|code| {
            Currency::from_code(code)
                .map_err(|error| ApiError::invalid_field("currency", error.to_string()))
        })
        .transpose()?;
    require_role(&state, caller, READERS).await?;
    let stale = min_position.wait(&state, &[View::Analytics]).await?;
    let items = revenue_between(&state, from, to, currency).await?;
    Ok(answer(Json(Revenue { items }), stale))
}

#[utoipa::path(get, path = "/admin/analytics/status-distribution", tag = "admin", security(("bearer" = [])),
    params(("Orders-Min-Position" = Option<String>, Header)),
    responses((status = 200, body = StatusDistribution), (status = 403, body = crate::problem::Problem)))]
pub async fn status_distribution(
    State(state): State<Arc<AppState>>,
    caller: CurrentUser,
    min_position: MinPosition,
) -> Result<Response, ApiError> {
    require_role(&state, caller, READERS).await?;
    let stale = min_position.wait(&state, &[View::Analytics]).await?;
    let items = analytics::status_distribution(state.pool())
        .await
        .context("reading the analytics view")?;
    Ok(answer(Json(StatusDistribution { items }), stale))
}
