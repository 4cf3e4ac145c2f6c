//! The administrators' and auditors' pages, under `/app/admin/`: the dashboard, the
//! users (role changes for administrators), every tracking order, the event log
//! viewer (filters, an event's envelope, a correlation id's trace as a tree, an
//! aggregate's history, `audit verify`) and the dead letters (retry for
//! administrators). They read through the same functions as the JSON routes
//! (`http::admin`, `http::admin_operations`) and change things through the same
//! ones, role checks included: a shopper gets the 403 page.

use std::sync::Arc;

use anyhow::Context as _;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use orders_domain::user::Role;
use orders_projectors::query;
use orders_projectors::View;
use orders_store::audit::AuditEntry;
use serde::Deserialize;
use uuid::Uuid;

use super::pages::{page, readable_time, ErrorPage};
use super::session::SignedIn;
use super::shop::dashboard as shop_dashboard;
use super::{
    after_cursor, caller, chrome_of, see_other, see_result, shown_up_to, wait_for_views, CsrfOnly,
};
use crate::http::admin::{change_role_of, RoleChange};
use crate::http::admin_operations::{self as operations, LogParams, READERS};
use crate::http::queries::encode_cursor;
use crate::http::RequestContext;
use crate::problem::ApiError;
use crate::AppState;

pub(crate) mod templates;

use templates::{
    AdminOrdersPage, DashboardPage, DeadLettersPage, EventLine, EventPage, EventsPage, TraceLine,
    TracePage, UserLine, UsersPage, VerifyPage,
};

/// Rows per page of the users and orders lists.
const ROWS_PER_PAGE: i64 = 50;
/// Events per page of the event log viewer.
const EVENTS_PER_PAGE: i64 = 50;

pub(crate) fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/app/admin", get(|| async { Redirect::to("/app/admin/") }))
        .route("/app/admin/", get(dashboard))
        .route("/app/admin/users", get(users))
        .route("/app/admin/users/{id}/roles", post(change_role))
        .route("/app/admin/orders", get(orders))
        .route("/app/admin/events", get(events))
        .route("/app/admin/events/{position}", get(event))
        .route("/app/admin/trace/{correlation_id}", get(trace))
        .route("/app/admin/verify", post(verify))
        .route("/app/admin/dead-letters", get(dead_letters))
        .route("/app/admin/dead-letters/{sequence}/retry", post(retry))
}

/// The frame of an admin page for a caller who is an administrator or auditor now
/// (the 403 page otherwise, before anything else), and whether they are an
/// administrator (who may change things). With `at`, it first waits for `views` to
/// have applied that position (read-your-writes after a form). The shop's admin
/// pages (`console::shop`) use it too.
pub(super) async fn admin_chrome(
    state: &AppState,
    session: &SignedIn,
    views: &[View],
    at: Option<&str>,
) -> Result<(super::pages::Chrome, bool), ErrorPage> {
    let (mut chrome, user) = chrome_of(state, session).await?;
    if !READERS.iter().any(|role| user.has_role(*role)) {
        return Err(ErrorPage::forbidden());
    }
    wait_for_views(state, at, views).await?;
    chrome.live_after = shown_up_to(state, views).await?;
    Ok((chrome, user.has_role(Role::Admin)))
}

/// An API refusal as a page: 403, 404 and 503 as their pages, a refused value as
/// the 422 page, a failure as the 500 page.
pub(super) fn refusal_page(error: ApiError) -> ErrorPage {
    match error {
        ApiError::Forbidden(_) | ApiError::Unauthorized(_) => ErrorPage::forbidden(),
        ApiError::NotFound(_) => ErrorPage::not_found(),
        ApiError::Unavailable(_) => ErrorPage::unavailable(),
        ApiError::Internal(error) => ErrorPage::internal(error),
        _ => ErrorPage::unprocessable(),
    }
}

#[derive(Debug, Deserialize)]
struct DashboardParams {
    at: Option<String>,
    /// The shop's charts' range: 14 or 30 days.
    days: Option<u64>,
}

async fn dashboard(
    State(state): State<Arc<AppState>>,
    session: SignedIn,
    Query(params): Query<DashboardParams>,
) -> Result<Response, ErrorPage> {
    let (chrome, _) = admin_chrome(
        &state,
        &session,
        &[View::AdminOverview, View::Analytics],
        params.at.as_deref(),
    )
    .await?;
    let dashboard = operations::dashboard(&state).await?;
    let days = shop_dashboard::range(params.days);
    let shop = shop_dashboard::shop_analytics(&state, days, &dashboard.analytics).await?;
    Ok(page(
        StatusCode::OK,
        &DashboardPage::new(chrome, dashboard, shop),
    ))
}

#[derive(Debug, Default, Deserialize)]
struct UserParams {
    email: Option<String>,
    role: Option<String>,
    cursor: Option<String>,
    at: Option<String>,
}

async fn users(
    State(state): State<Arc<AppState>>,
    session: SignedIn,
    Query(params): Query<UserParams>,
) -> Result<Response, ErrorPage> {
    let (chrome, is_admin) =
        admin_chrome(&state, &session, &[View::Users], params.at.as_deref()).await?;
    let after = after_cursor(params.cursor.as_deref())?;
    let email = params.email.clone().unwrap_or_default().trim().to_owned();
    let role = params
        .role
        .clone()
        .filter(|role| role.parse::<Role>().is_ok());
    let filter = query::users::UserFilter {
        email_contains: Some(email.clone()).filter(|email| !email.is_empty()),
        role: role.clone(),
        deactivated: None,
    };
    let mut rows = query::users::filtered(state.pool(), &filter, after, ROWS_PER_PAGE + 1)
        .await
        .context("reading the users view")?;
    let next_cursor = next_cursor(&mut rows, |row| row.user_id);
    let template = UsersPage {
        chrome,
        is_admin,
        email,
        role: role.unwrap_or_default(),
        users: rows.iter().map(UserLine::from).collect(),
        next_cursor,
    };
    Ok(page(StatusCode::OK, &template))
}

/// Cuts a page's one extra row off, answering the cursor of the next page.
fn next_cursor<R>(rows: &mut Vec<R>, id: impl Fn(&R) -> Uuid) -> Option<String> {
    if rows.len() as i64 <= ROWS_PER_PAGE {
        return None;
    }
    rows.truncate(ROWS_PER_PAGE as usize);
    rows.last().map(|row| encode_cursor(id(row).as_bytes()))
}

#[derive(Debug, Deserialize)]
struct RoleForm {
    #[serde(rename = "_csrf", default)]
    csrf: String,
    #[serde(default)]
    role: String,
    #[serde(default)]
    action: String,
}

/// A grant or revoke button of the users page (the JSON route's command).
async fn change_role(
    State(state): State<Arc<AppState>>,
    session: SignedIn,
    context: RequestContext,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<RoleForm>,
) -> Result<Response, ErrorPage> {
    session.check_form(&state, &headers, &form.csrf)?;
    let change = RoleChange {
        role: form.role,
        action: form.action,
    };
    let position = change_role_of(&state, caller(&session), context, &id, &change)
        .await
        .map_err(refusal_page)?;
    Ok(see_result("/app/admin/users", position))
}

#[derive(Debug, Default, Deserialize)]
struct OrderParams {
    status: Option<String>,
    owner: Option<String>,
    cursor: Option<String>,
    at: Option<String>,
}

async fn orders(
    State(state): State<Arc<AppState>>,
    session: SignedIn,
    Query(params): Query<OrderParams>,
) -> Result<Response, ErrorPage> {
    let (chrome, _) = admin_chrome(&state, &session, &[View::Orders], params.at.as_deref()).await?;
    let after = after_cursor(params.cursor.as_deref())?;
    let status = params
        .status
        .clone()
        .filter(|status| ["active", "paused", "cancelled"].contains(&status.as_str()));
    let owner = params
        .owner
        .as_deref()
        .and_then(|owner| owner.trim().parse::<Uuid>().ok());
    let filter = query::orders::OrderFilter {
        owner,
        status: status.clone(),
    };
    let mut rows = query::orders::filtered(state.pool(), &filter, after, ROWS_PER_PAGE + 1)
        .await
        .context("reading the orders view")?;
    let next_cursor = next_cursor(&mut rows, |row| row.order_id);
    let template = AdminOrdersPage {
        chrome,
        status: status.unwrap_or_default(),
        owner: owner.map(|owner| owner.to_string()).unwrap_or_default(),
        orders: rows.iter().map(Into::into).collect(),
        next_cursor,
    };
    Ok(page(StatusCode::OK, &template))
}

/// Where the log stream ends now: the event log page shows what is stored, and
/// follows `GET /live` from there (empty without NATS: from when it connects).
async fn stream_end(state: &AppState) -> String {
    match &state.config.jetstream {
        Some(jetstream) => match orders_nats::stream_head(jetstream).await {
            Ok(head) if head.stream_sequence > 0 => orders_nats::LogPosition {
                tx_id: head.tx_id,
                global_position: head.global_position,
            }
            .to_string(),
            _ => String::new(),
        },
        None => String::new(),
    }
}

async fn events(
    State(state): State<Arc<AppState>>,
    session: SignedIn,
    Query(params): Query<LogParams>,
) -> Result<Response, ErrorPage> {
    let (mut chrome, _) = admin_chrome(&state, &session, &[], None).await?;
    chrome.live_after = stream_end(&state).await;
    let params = LogParams {
        limit: Some(EVENTS_PER_PAGE),
        ..params
    };
    let (log, filter_error) = match operations::event_log(&state, &params).await {
        Ok(log) => (Some(log), None),
        Err(ApiError::InvalidField { field, message }) => {
            (None, Some(format!("{field}: {message}")))
        }
        Err(other) => return Err(refusal_page(other)),
    };
    let template = EventsPage::new(chrome, &params, log, filter_error);
    let status = if template.filter_error.is_some() {
        StatusCode::UNPROCESSABLE_ENTITY
    } else {
        StatusCode::OK
    };
    Ok(page(status, &template))
}

async fn event(
    State(state): State<Arc<AppState>>,
    session: SignedIn,
    Path(position): Path<String>,
) -> Result<Response, ErrorPage> {
    let (chrome, _) = admin_chrome(&state, &session, &[], None).await?;
    let global_position: i64 = position.parse().map_err(|_| ErrorPage::not_found())?;
    let entry = orders_store::audit::at(state.pool(), global_position)
        .await
        .context("reading an event")?
        .ok_or_else(ErrorPage::not_found)?;
    Ok(page(StatusCode::OK, &EventPage::new(chrome, &entry)))
}

async fn trace(
    State(state): State<Arc<AppState>>,
    session: SignedIn,
    Path(correlation_id): Path<String>,
) -> Result<Response, ErrorPage> {
    let (mut chrome, _) = admin_chrome(&state, &session, &[], None).await?;
    chrome.live_after = stream_end(&state).await;
    let filter = orders_store::audit::AuditFilter {
        since: None,
        until: None,
        event_types: Vec::new(),
        after: None,
        limit: orders_store::audit::MAX_PAGE,
    };
    let page_of = orders_store::audit::page(
        state.pool(),
        &orders_store::audit::AuditSubject::Correlation(&correlation_id),
        &filter,
    )
    .await
    .context("reading a trace")?;
    let nodes = orders_store::audit::causal_tree(&page_of.entries);
    let template = TracePage {
        chrome,
        correlation_id,
        lines: nodes.iter().map(TraceLine::from).collect(),
        truncated: page_of.next_after.is_some(),
    };
    Ok(page(StatusCode::OK, &template))
}

/// `audit verify`, run from the event log page; its answer as a page.
async fn verify(
    State(state): State<Arc<AppState>>,
    session: SignedIn,
    headers: HeaderMap,
    Form(form): Form<CsrfOnly>,
) -> Result<Response, ErrorPage> {
    session.check_form(&state, &headers, &form.csrf)?;
    let (chrome, _) = admin_chrome(&state, &session, &[], None).await?;
    let started = std::time::Instant::now();
    let outcome = operations::verify_log(&state).await;
    let template = match outcome {
        Ok(report) => VerifyPage::from_report(chrome, &report, started.elapsed()),
        Err(ApiError::Unavailable(reason)) => VerifyPage::unavailable(chrome, reason),
        Err(other) => return Err(refusal_page(other)),
    };
    Ok(page(StatusCode::OK, &template))
}

#[derive(Debug, Default, Deserialize)]
struct RetriedParam {
    retried: Option<u64>,
}

async fn dead_letters(
    State(state): State<Arc<AppState>>,
    session: SignedIn,
    Query(params): Query<RetriedParam>,
) -> Result<Response, ErrorPage> {
    let (mut chrome, is_admin) = admin_chrome(&state, &session, &[], None).await?;
    chrome.live_after = stream_end(&state).await;
    let (letters, unavailable) = match operations::dead_letter_list(&state).await {
        Ok(letters) => (letters, None),
        Err(ApiError::Unavailable(reason)) => (Vec::new(), Some(reason)),
        Err(other) => return Err(refusal_page(other)),
    };
    let template = DeadLettersPage::new(chrome, is_admin, &letters, unavailable, params.retried);
    Ok(page(StatusCode::OK, &template))
}

/// A dead letter's retry button (administrators only, as `POST
/// /admin/dead-letters/{sequence}/retry`).
async fn retry(
    State(state): State<Arc<AppState>>,
    session: SignedIn,
    headers: HeaderMap,
    Path(sequence): Path<String>,
    Form(form): Form<CsrfOnly>,
) -> Result<Response, ErrorPage> {
    session.check_form(&state, &headers, &form.csrf)?;
    crate::http::admin::require_role(&state, caller(&session), &[Role::Admin])
        .await
        .map_err(refusal_page)?;
    let sequence: u64 = sequence.parse().map_err(|_| ErrorPage::not_found())?;
    operations::retry_dead_letter(&state, sequence)
        .await
        .map_err(refusal_page)?;
    Ok(see_other(&format!(
        "/app/admin/dead-letters?retried={sequence}"
    )))
}

/// An event as one line of the viewer, also used by `templates`.
pub(crate) fn event_line(entry: &AuditEntry) -> EventLine {
    let mut summary = serde_json::to_string(&entry.payload).unwrap_or_default();
    if summary.chars().count() > 140 {
        summary = summary.chars().take(139).collect::<String>() + "…";
    }
    EventLine {
        position: entry.position.clone(),
        global_position: entry.global_position,
        when: readable_time(entry.recorded_at),
        recorded_at: entry
            .recorded_at
            .to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        event_type: entry.event_type.clone(),
        aggregate_type: entry.aggregate_type.clone(),
        aggregate_id: entry.aggregate_id.clone(),
        sequence: entry.sequence,
        actor: entry.actor.clone().unwrap_or_default(),
        correlation_id: entry.correlation_id.clone().unwrap_or_default(),
        summary,
    }
}
