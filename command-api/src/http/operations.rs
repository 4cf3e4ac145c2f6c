//! For operators and integrators: liveness, readiness, metrics, the OpenAPI document.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::problem::ApiError;
use crate::AppState;

pub fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi))
}

/// Alive: the process answers.
#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200)))]
pub async fn healthz() -> &'static str {
    "ok"
}

/// Ready: the database answers within a second.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses((status = 200), (status = 503, body = crate::problem::Problem)))]
pub async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    let probe = tokio::time::timeout(
        Duration::from_secs(1),
        sqlx::query("SELECT 1").execute(state.pool()),
    )
    .await;
    match probe {
        Ok(Ok(_)) => "ready".into_response(),
        failure => {
            let reason = match failure {
                Ok(Err(error)) => format!("database unreachable: {error}"),
                _ => "database did not answer within 1 s".to_owned(),
            };
            tracing::warn!(%reason, "not ready");
            ApiError::Unavailable(reason).into_response()
        }
    }
}

/// Prometheus text format.
#[utoipa::path(get, path = "/metrics", tag = "operations", responses((status = 200, content_type = "text/plain")))]
pub async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response()
}

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

/// The API description, generated from the handlers and types themselves.
#[derive(OpenApi)]
#[openapi(
    info(title = "Orders", description = "Track product prices and get told when they reach your target; buy from our catalog and follow each purchase live."),
    modifiers(&BearerAuth),
    paths(
        crate::http::accounts::register,
        crate::http::accounts::verify_email,
        crate::http::accounts::verify_email_link,
        crate::http::accounts::resend_verification_mail,
        crate::http::accounts::login,
        crate::http::password_reset::request_password_reset,
        crate::http::password_reset::confirm_password_reset,
        crate::http::password_reset::password_reset_page,
        crate::http::accounts::unsubscribe_link,
        crate::http::live::live,
        crate::http::profile::show_profile,
        crate::http::profile::update_profile,
        crate::http::profile::change_password,
        crate::http::orders::place_order,
        crate::http::queries::list_orders,
        crate::http::queries::show_order,
        crate::http::queries::price_history,
        crate::http::queries::alerts,
        crate::http::queries::checks,
        crate::http::orders::change_target,
        crate::http::orders::pause_order,
        crate::http::orders::resume_order,
        crate::http::orders::cancel_order,
        crate::http::orders::check_order_now,
        crate::http::admin::audit_aggregate,
        crate::http::admin::audit_trace,
        crate::http::admin::audit_actor,
        crate::http::admin::list_users,
        crate::http::admin::list_orders,
        crate::http::admin::change_role,
        crate::http::admin_operations::show_dashboard,
        crate::http::admin_operations::show_log,
        crate::http::admin_operations::run_verify,
        crate::http::admin_operations::list_dead_letters,
        crate::http::admin_operations::retry_one,
        crate::http::analytics::orders_per_day,
        crate::http::analytics::revenue,
        crate::http::analytics::status_distribution,
        crate::http::products::list_products,
        crate::http::products::show_product,
        crate::http::products::admin_list_products,
        crate::http::products::admin_show_product,
        crate::http::products::add_product,
        crate::http::products::change_product,
        crate::http::products::adjust_stock,
        crate::http::products::retire_product,
        crate::http::purchases::place_purchase,
        crate::http::purchases::list_purchases,
        crate::http::purchases::show_purchase,
        crate::http::purchases::cancel_purchase,
        crate::http::purchases::admin_list_purchases,
        crate::http::purchases::set_status,
        healthz,
        readyz,
        metrics,
        openapi,
    )
)]
pub struct ApiDoc;

#[utoipa::path(get, path = "/openapi.json", tag = "operations", responses((status = 200)))]
pub async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
