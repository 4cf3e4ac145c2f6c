//! The HTTP surface: each module exposes `router()`, merged here with the layers every
//! route shares (body limit, request context, metrics, tracing, no control characters
//! in path or query parameters).

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{HeaderName, HeaderValue, Method};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::Router;
use tower_http::trace::TraceLayer;
use uuid::Uuid;

use crate::metrics::{RequestLabels, RouteLabels};
use crate::problem::ApiError;
use crate::{AppState, MAX_BODY_BYTES};
use orders_store::event_store::LogPosition;

pub mod accounts;
pub mod admin;
pub mod admin_operations;
pub mod analytics;
pub mod control_characters;
pub mod live;
pub mod operations;
pub mod orders;
pub mod password_reset;
pub mod products;
pub mod profile;
pub mod purchases;
pub mod queries;

/// The header carrying the log position of a command's last event.
pub const ORDERS_POSITION: HeaderName = HeaderName::from_static("orders-position");
/// Echoed on every response; taken from the request when it is a UUID.
pub const CORRELATION_ID: HeaderName = HeaderName::from_static("x-correlation-id");
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .merge(accounts::router())
        .merge(password_reset::router())
        .merge(live::router())
        .merge(crate::console::router())
        .merge(admin::router())
        .merge(admin_operations::router())
        .merge(analytics::router())
        .merge(profile::router())
        .merge(orders::router())
        .merge(products::router())
        .merge(purchases::router())
        .merge(queries::router())
        .merge(operations::router())
        .fallback(no_such_route)
        .method_not_allowed_fallback(method_not_allowed)
        .route_layer(middleware::from_fn(
            control_characters::refuse_control_characters,
        ))
        .route_layer(middleware::from_fn_with_state(state.clone(), record_metrics))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(TraceLayer::new_for_http().make_span_with(|request: &Request| {
            let context = request.extensions().get::<RequestContext>();
            tracing::info_span!(
                "request",
                method = %request.method(),
                path = %request.uri().path(),
                request_id = %context.map(|c| c.request_id.to_string()).unwrap_or_default(),
                correlation_id = %context.map(|c| c.correlation_id.to_string()).unwrap_or_default(),
            )
        }))
        .layer(middleware::from_fn(assign_request_context))
        .with_state(state)
}

async fn no_such_route() -> ApiError {
    ApiError::NotFound("no such route")
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

/// The ids a request carries into the events it causes.
#[derive(Debug, Clone, Copy)]
pub struct RequestContext {
    /// New for every request (UUID v7).
    pub request_id: Uuid,
    /// The caller's `X-Correlation-Id` when it is a UUID, else the request id: one per
    /// request, carried into everything the request causes.
    pub correlation_id: Uuid,
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for RequestContext {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _state: &S,
    ) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<RequestContext>()
            .copied()
            .ok_or_else(|| ApiError::internal(anyhow::anyhow!("request context layer missing")))
    }
}

async fn assign_request_context(mut request: Request, next: Next) -> Response {
    let request_id = Uuid::now_v7();
    let correlation_id = request
        .headers()
        .get(&CORRELATION_ID)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| Uuid::parse_str(value.trim()).ok())
        .unwrap_or(request_id);
    request.extensions_mut().insert(RequestContext {
        request_id,
        correlation_id,
    });
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(&request_id.to_string()) {
        headers.insert(REQUEST_ID, value);
    }
    if let Ok(value) = HeaderValue::from_str(&correlation_id.to_string()) {
        headers.insert(CORRELATION_ID, value);
    }
    response
}

async fn record_metrics(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|path| path.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let response = next.run(request).await;
    let method = if matches!(
        method,
        Method::GET | Method::POST | Method::PATCH | Method::PUT | Method::DELETE | Method::HEAD
    ) {
        method.as_str().to_owned()
    } else {
        "other".to_owned()
    };
    state
        .metrics
        .request_duration
        .get_or_create(&RouteLabels {
            method: method.clone(),
            route: route.clone(),
        })
        .observe(started.elapsed().as_secs_f64());
    state
        .metrics
        .requests
        .get_or_create(&RequestLabels {
            method,
            route,
            status: response.status().as_u16(),
        })
        .inc();
    response
}

/// Sets `Orders-Position` on a command's response.
pub fn with_position(mut response: Response, position: Option<LogPosition>) -> Response {
    if let Some(position) = position {
        if let Ok(value) = HeaderValue::from_str(&position.to_string()) {
            response.headers_mut().insert(ORDERS_POSITION, value);
        }
    }
    response
}
