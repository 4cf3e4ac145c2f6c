//! The web console, under `/app/` (`/` redirects there): server-rendered pages
//! (`pages`, templates in `command-api/templates/console/`) whose forms work without
//! JavaScript, and one small script (`assets/console.js`) that keeps them live from
//! `GET /live`. Pages read through the same query functions as the JSON API and
//! change things through the same application commands (and the same request
//! checks: `http::orders::place_order_request`, `http::accounts::authenticate`,
//! `http::accounts::register_user`), so the console can do nothing the API cannot,
//! and the two cannot disagree.
//!
//! Sessions and CSRF: `session`. The settings page: `settings`. The forgotten
//! password and another verification mail: `accounts`.

use std::sync::Arc;

use anyhow::Context as _;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use orders_application::orders::{self as order_commands, OrderChange, OrderChangeError};
use orders_domain::ids::OrderId;
use orders_domain::user::Role;
use orders_projectors::query;
use orders_projectors::View;
use orders_store::event_store::LogPosition;
use serde::Deserialize;
use uuid::Uuid;

use crate::auth::CurrentUser;
use crate::http::accounts::{authenticate, caller_metadata, register_user, ClientAddress};
use crate::http::orders::{
    order_command_error, place_order_error, place_order_request, PlaceOrderRequest,
};
use crate::http::queries::{encode_cursor, PageParams};
use crate::http::RequestContext;
use crate::problem::ApiError;
use crate::AppState;

mod accounts;
mod admin;
pub mod chart;
pub mod pages;
pub mod session;
mod settings;
mod shop;

use pages::{
    page, Chrome, ErrorPage, Field, Form as PageForm, LoginPage, OrderPage, OrdersPage, SignupPage,
};
use session::{SignedIn, CSRF_COOKIE, SESSION_COOKIE, SESSION_LIFETIME};

/// Orders per page of the list.
const ORDERS_PER_PAGE: i64 = 20;
/// Prices the order page draws and lists.
const PRICES_SHOWN: i64 = 500;
/// Alerts and checks the order page lists (the newest).
const LISTED: i64 = 20;

pub fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/", get(|| async { Redirect::to("/app/") }))
        .route("/app", get(|| async { Redirect::to("/app/") }))
        .route("/app/assets/console.css", get(stylesheet))
        .route("/app/assets/console.js", get(script))
        .route("/app/login", get(login_page).post(login))
        .route("/app/signup", get(signup_page).post(signup))
        .route("/app/logout", post(logout))
        .route("/app/", get(orders_page))
        .route("/app/orders", post(place_order))
        .route("/app/orders/{id}", get(order_page))
        .route("/app/orders/{id}/{action}", post(change_order))
        .route("/app/settings", get(settings::show))
        .route("/app/settings/profile", post(settings::save_profile))
        .route("/app/settings/password", post(settings::change_password))
        .merge(admin::router())
        .merge(shop::router())
        .route("/app/{*rest}", get(|| async { ErrorPage::not_found() }))
        .merge(accounts::router())
}

async fn stylesheet() -> Response {
    asset(
        "text/css; charset=utf-8",
        include_str!("../../assets/console.css"),
    )
}

async fn script() -> Response {
    asset(
        "text/javascript; charset=utf-8",
        include_str!("../../assets/console.js"),
    )
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        body,
    )
        .into_response()
}

/// The frame of a signed-in page, and the user as the log has them now (the
/// account's own stream, like `GET /me`: a page right after sign-up knows them).
async fn chrome_of(
    state: &AppState,
    session: &SignedIn,
) -> Result<(Chrome, orders_domain::user::User), ErrorPage> {
    let user = orders_application::accounts::active_user(&state.events, session.0.user_id)
        .await
        .map_err(|error| ErrorPage::internal(anyhow::Error::new(error)))?;
    let chrome = Chrome {
        signed_in: Some(user.email().map_or_else(
            || "your account".to_owned(),
            |email| email.as_str().to_owned(),
        )),
        csrf: session.0.csrf_token.clone(),
        live: true,
        live_after: shown_up_to(state, &[View::Orders, View::PriceHistory]).await?,
        admin: user.has_role(Role::Admin) || user.has_role(Role::Auditor),
    };
    Ok((chrome, user))
}

fn caller(session: &SignedIn) -> CurrentUser {
    CurrentUser {
        user_id: session.0.user_id,
        credentials_version: None,
    }
}

/// A 303 to `location`, the answer to a form that worked.
fn see_other(location: &str) -> Response {
    Redirect::to(location).into_response()
}

/// Where in the log the views a page reads stand now (the lowest of their
/// checkpoints): the page shows everything up to there, so its script follows
/// `GET /live` from there and misses nothing that comes after. Empty before any.
async fn shown_up_to(state: &AppState, views: &[View]) -> Result<String, ErrorPage> {
    let mut lowest: Option<LogPosition> = None;
    for view in views {
        let checkpoint = orders_projectors::checkpoint::read(
            state.pool(),
            *view,
            orders_projectors::checkpoint::Generation::Live,
        )
        .await
        .context("reading a view's checkpoint")?;
        // A view that has applied nothing yet: the page is drawn from nothing.
        let Some(checkpoint) = checkpoint.filter(|checkpoint| checkpoint.stream_sequence > 0)
        else {
            return Ok(String::new());
        };
        lowest = Some(lowest.map_or(checkpoint.position, |lowest| {
            lowest.min(checkpoint.position)
        }));
    }
    Ok(lowest
        .map(|position| position.to_string())
        .unwrap_or_default())
}

/// A 303 to the page that shows what a command did: it carries the command's log
/// position as `?at=`, and the page waits for its views to get there first
/// (read-your-writes, as `Orders-Min-Position` does for the JSON API).
fn see_result(path: &str, position: Option<LogPosition>) -> Response {
    match position {
        Some(position) => see_other(&format!("{path}?at={position}")),
        None => see_other(path),
    }
}

/// Waits (at most the read-your-writes bound) until `views` have applied `at`, when
/// it names a stored event; a page is then shown as it is, even if still behind.
async fn wait_for_views(
    state: &AppState,
    at: Option<&str>,
    views: &[View],
) -> Result<(), ErrorPage> {
    let Some(position) = at.and_then(|at| at.parse::<LogPosition>().ok()) else {
        return Ok(());
    };
    let deadline = tokio::time::Instant::now() + state.config.read_your_writes_timeout;
    for view in views {
        if query::wait_for(state.pool(), *view, position, std::time::Duration::ZERO)
            .await
            .context("reading a view's checkpoint")?
        {
            continue;
        }
        if !state
            .events
            .names_stored_event(position)
            .await
            .context("looking a position up")?
        {
            return Ok(());
        }
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        query::wait_for(state.pool(), *view, position, left)
            .await
            .context("waiting for a view")?;
    }
    Ok(())
}

/// Where a sign-in may send the browser back to: a console page of ours, never
/// another site.
fn safe_next(next: &str) -> &str {
    if next.starts_with("/app/") && !next.starts_with("//") && !next.contains('\\') {
        next
    } else {
        "/app/"
    }
}

#[derive(Debug, Deserialize)]
struct NextParam {
    next: Option<String>,
    notice: Option<String>,
}

/// The pre-session CSRF token of the sign-in and sign-up forms: the browser's
/// cookie, or a new one (set with the page).
fn pre_session_csrf(headers: &HeaderMap) -> (String, bool) {
    match session::cookie(headers, CSRF_COOKIE).filter(|token| token.len() >= 32) {
        Some(token) => (token.to_owned(), false),
        None => (session::random_token(), true),
    }
}

/// A sign-in or sign-up page, setting its CSRF cookie when the browser has none.
fn pre_session_page(
    state: &AppState,
    status: StatusCode,
    template: &impl askama::Template,
    csrf: &str,
    new_cookie: bool,
) -> Response {
    let mut response = page(status, template);
    if new_cookie {
        let cookie = session::set_cookie(state, CSRF_COOKIE, csrf, SESSION_LIFETIME);
        response.headers_mut().append(header::SET_COOKIE, cookie);
    }
    response
}

async fn login_page(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Query(params): Query<NextParam>,
) -> Response {
    let (csrf, new_cookie) = pre_session_csrf(&headers);
    let template = LoginPage {
        chrome: Chrome::default(),
        csrf: csrf.clone(),
        next: safe_next(params.next.as_deref().unwrap_or("/app/")).to_owned(),
        email: String::new(),
        form_error: None,
        notice: accounts::notice(params.notice.as_deref()),
    };
    pre_session_page(&state, StatusCode::OK, &template, &csrf, new_cookie)
}

#[derive(Debug, Deserialize)]
struct LoginForm {
    #[serde(rename = "_csrf", default)]
    csrf: String,
    #[serde(default)]
    email: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    next: String,
}

/// Checks a pre-session form's CSRF token against its cookie, and its origin.
fn check_pre_session_form(
    state: &AppState,
    headers: &HeaderMap,
    csrf: &str,
) -> Result<(), ErrorPage> {
    let cookie = session::cookie(headers, CSRF_COOKIE).unwrap_or_default();
    if session::same_origin(state, headers)
        && !cookie.is_empty()
        && session::same_secret(csrf, cookie)
    {
        Ok(())
    } else {
        Err(ErrorPage::forbidden_form())
    }
}

/// Signs in (the API's login, its throttle included) and starts a session.
async fn login(
    State(state): State<Arc<AppState>>,
    ClientAddress(client): ClientAddress,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Result<Response, ErrorPage> {
    check_pre_session_form(&state, &headers, &form.csrf)?;
    let next = safe_next(&form.next).to_owned();
    let refused = |status: StatusCode, message: String| {
        let template = LoginPage {
            chrome: Chrome::default(),
            csrf: form.csrf.clone(),
            next: next.clone(),
            email: form.email.clone(),
            form_error: Some(message),
            notice: None,
        };
        page(status, &template)
    };
    let user_id = match authenticate(&state, &form.email, form.password.clone(), client).await {
        Ok((user_id, _)) => user_id,
        Err(ApiError::TooManyRequests { retry_after_secs }) => {
            return Ok(refused(
                StatusCode::TOO_MANY_REQUESTS,
                format!("Too many attempts. Try again in {retry_after_secs} seconds."),
            ))
        }
        Err(ApiError::Unauthorized(_)) => {
            return Ok(refused(
                StatusCode::UNAUTHORIZED,
                "That e-mail address and password do not match an account.".to_owned(),
            ))
        }
        Err(ApiError::Internal(error)) => return Err(ErrorPage::internal(error)),
        Err(other) => return Ok(refused(StatusCode::BAD_REQUEST, other.to_string())),
    };
    signed_in_at(&state, user_id, &next).await
}

/// Starts a session for `user_id` and sends the browser to `next`.
async fn signed_in_at(
    state: &AppState,
    user_id: orders_domain::ids::UserId,
    next: &str,
) -> Result<Response, ErrorPage> {
    let token = session::start(state.pool(), user_id)
        .await
        .context("starting a session")?;
    let mut response = see_other(next);
    let cookie = session::set_cookie(state, SESSION_COOKIE, &token, SESSION_LIFETIME);
    response.headers_mut().append(header::SET_COOKIE, cookie);
    Ok(response)
}

async fn signup_page(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let (csrf, new_cookie) = pre_session_csrf(&headers);
    let template = SignupPage {
        chrome: Chrome::default(),
        csrf: csrf.clone(),
        email: String::new(),
        form_error: None,
        email_error: None,
        password_error: None,
    };
    pre_session_page(&state, StatusCode::OK, &template, &csrf, new_cookie)
}

#[derive(Debug, Deserialize)]
struct SignupForm {
    #[serde(rename = "_csrf", default)]
    csrf: String,
    #[serde(default)]
    email: String,
    #[serde(default)]
    password: String,
}

/// Creates the account (the API's registration), signs in, and shows the orders.
async fn signup(
    State(state): State<Arc<AppState>>,
    context: RequestContext,
    headers: HeaderMap,
    Form(form): Form<SignupForm>,
) -> Result<Response, ErrorPage> {
    check_pre_session_form(&state, &headers, &form.csrf)?;
    match register_user(&state, &form.email, form.password.clone(), context).await {
        Ok(registered) => signed_in_at(&state, registered.user_id, "/app/").await,
        Err(ApiError::Internal(error)) => Err(ErrorPage::internal(error)),
        Err(error) => {
            let mut template = SignupPage {
                chrome: Chrome::default(),
                csrf: form.csrf.clone(),
                email: form.email.clone(),
                form_error: None,
                email_error: None,
                password_error: None,
            };
            let status = match &error {
                ApiError::Conflict(_) => StatusCode::CONFLICT,
                _ => StatusCode::UNPROCESSABLE_ENTITY,
            };
            match error {
                ApiError::InvalidField { field, message } if field == "password" => {
                    template.password_error = Some(message);
                }
                ApiError::InvalidField { message, .. } => template.email_error = Some(message),
                ApiError::Conflict(_) => {
                    template.email_error =
                        Some("This address already has an account: sign in instead.".to_owned());
                }
                other => template.form_error = Some(other.to_string()),
            }
            Ok(page(status, &template))
        }
    }
}

/// The row a list page starts after: its `?cursor=` (the JSON API's cursors),
/// decoded; a cursor that is not one of ours is the 404 page.
fn after_cursor(cursor: Option<&str>) -> Result<Option<Uuid>, ErrorPage> {
    let paging = PageParams {
        limit: None,
        cursor: cursor.map(str::to_owned),
    };
    Ok(paging
        .cursor::<16>()
        .map_err(|_| ErrorPage::not_found())?
        .map(Uuid::from_bytes))
}

#[derive(Debug, Deserialize)]
struct CsrfOnly {
    #[serde(rename = "_csrf", default)]
    csrf: String,
}

async fn logout(
    State(state): State<Arc<AppState>>,
    session: SignedIn,
    headers: HeaderMap,
    Form(form): Form<CsrfOnly>,
) -> Result<Response, ErrorPage> {
    session.check_form(&state, &headers, &form.csrf)?;
    session::end(state.pool(), &session.0)
        .await
        .context("ending a session")?;
    let mut response = see_other("/app/login");
    let cookie = session::set_cookie(&state, SESSION_COOKIE, "", std::time::Duration::ZERO);
    response.headers_mut().append(header::SET_COOKIE, cookie);
    Ok(response)
}

#[derive(Debug, Deserialize)]
struct ListParams {
    cursor: Option<String>,
    at: Option<String>,
    notice: Option<String>,
}

#[derive(Debug, Deserialize)]
struct AtParam {
    at: Option<String>,
}

/// The fields of the placement form, with what was typed.
fn placement_form(typed: Option<&PlaceOrderForm>) -> PageForm {
    let value = |pick: fn(&PlaceOrderForm) -> &str, default: &str| {
        typed.map_or_else(|| default.to_owned(), |form| pick(form).to_owned())
    };
    let field = |name, label, hint, kind, required, value| Field {
        name,
        label,
        hint,
        kind,
        required,
        value,
        error: None,
    };
    PageForm {
        fields: vec![
            field(
                "url",
                "Product page",
                "its address, https://…",
                "url",
                true,
                value(|f| &f.url, ""),
            ),
            field(
                "target_price",
                "Alert me at or below",
                "e.g. 2999.00",
                "text",
                true,
                value(|f| &f.target_price, ""),
            ),
            field(
                "currency",
                "Currency",
                "ISO code, e.g. UAH, EUR, USD",
                "text",
                true,
                value(|f| &f.currency, "UAH"),
            ),
            field(
                "check_interval_secs",
                "Check every (seconds)",
                "at least 300; 3600 is an hour",
                "number",
                false,
                value(|f| &f.check_interval_secs, "3600"),
            ),
            field(
                "selector",
                "Price selector",
                "optional CSS selector, when the page is not understood otherwise",
                "text",
                false,
                value(|f| &f.selector, ""),
            ),
        ],
        error: None,
    }
}

async fn orders_page(
    State(state): State<Arc<AppState>>,
    session: SignedIn,
    Query(params): Query<ListParams>,
) -> Result<Response, ErrorPage> {
    wait_for_views(&state, params.at.as_deref(), &[View::Orders]).await?;
    let mut template = orders_template(
        &state,
        &session,
        params.cursor.as_deref(),
        placement_form(None),
    )
    .await?;
    template.notice = accounts::notice(params.notice.as_deref()).map(str::to_owned);
    Ok(page(StatusCode::OK, &template))
}

async fn orders_template(
    state: &AppState,
    session: &SignedIn,
    cursor: Option<&str>,
    form: PageForm,
) -> Result<OrdersPage, ErrorPage> {
    let after = after_cursor(cursor)?;
    let owner = session.0.user_id.as_uuid();
    let mut rows = query::orders::of_owner(state.pool(), owner, after, ORDERS_PER_PAGE + 1)
        .await
        .context("reading the orders view")?;
    let next_cursor = (rows.len() as i64 > ORDERS_PER_PAGE).then(|| {
        rows.truncate(ORDERS_PER_PAGE as usize);
        rows.last()
            .map(|row| encode_cursor(row.order_id.as_bytes()))
    });
    let (chrome, user) = chrome_of(state, session).await?;
    Ok(OrdersPage {
        chrome,
        unverified_notice: if user.email_verified() {
            String::new()
        } else {
            "Confirm your e-mail address with the link we sent you: price alerts go there."
                .to_owned()
        },
        notice: None,
        orders: rows.iter().map(Into::into).collect(),
        next_cursor: next_cursor.flatten(),
        form,
    })
}

#[derive(Debug, Deserialize)]
struct PlaceOrderForm {
    #[serde(rename = "_csrf", default)]
    csrf: String,
    #[serde(default)]
    url: String,
    #[serde(default)]
    target_price: String,
    #[serde(default)]
    currency: String,
    #[serde(default)]
    check_interval_secs: String,
    #[serde(default)]
    selector: String,
}

/// Places a tracking order from the form (the API's checks and command), then shows
/// it; a refusal shows the form again with the error beside its field.
async fn place_order(
    State(state): State<Arc<AppState>>,
    session: SignedIn,
    context: RequestContext,
    headers: HeaderMap,
    Form(form): Form<PlaceOrderForm>,
) -> Result<Response, ErrorPage> {
    session.check_form(&state, &headers, &form.csrf)?;
    let interval = form.check_interval_secs.trim();
    let placed = match interval.parse::<u32>() {
        Err(_) if !interval.is_empty() => Err(ApiError::invalid_field(
            "check_interval_secs",
            "a whole number of seconds",
        )),
        parsed => {
            let request = PlaceOrderRequest {
                url: Some(form.url.trim().to_owned()),
                product_id: None,
                target_price: form.target_price.trim().to_owned(),
                currency: Some(form.currency.trim().to_uppercase()),
                check_interval_secs: parsed.ok(),
                selector: Some(form.selector.trim().to_owned())
                    .filter(|selector| !selector.is_empty()),
            };
            match place_order_request(&state, caller(&session), request).await {
                Ok(order) => order_commands::place_order(
                    &state.events,
                    &state.placement_facts,
                    order,
                    &caller_metadata(caller(&session), context),
                )
                .await
                .map_err(place_order_error),
                Err(error) => Err(error),
            }
        }
    };
    match placed {
        Ok(
            order_commands::Placed::Created { order_id, position }
            | order_commands::Placed::Replayed { order_id, position },
        ) => Ok(see_result(&format!("/app/orders/{order_id}"), position)),
        Err(ApiError::Internal(error)) => Err(ErrorPage::internal(error)),
        Err(error) => {
            let (field, message) = match error {
                ApiError::InvalidField { field, message } => (field, message),
                other => (String::new(), other.to_string()),
            };
            let form = placement_form(Some(&form)).with_error(&field, message);
            let template = orders_template(&state, &session, None, form).await?;
            Ok(page(StatusCode::UNPROCESSABLE_ENTITY, &template))
        }
    }
}

/// What the order page shows besides the order: a notice, or an error.
#[derive(Debug, Default)]
struct OrderPageState {
    notice: Option<String>,
    form_error: Option<String>,
    target_value: Option<String>,
    target_error: Option<String>,
}

async fn order_page(
    State(state): State<Arc<AppState>>,
    session: SignedIn,
    Path(id): Path<String>,
    Query(params): Query<AtParam>,
) -> Result<Response, ErrorPage> {
    wait_for_views(
        &state,
        params.at.as_deref(),
        &[View::Orders, View::PriceHistory],
    )
    .await?;
    let template = order_template(&state, &session, &id, OrderPageState::default()).await?;
    Ok(page(StatusCode::OK, &template))
}

async fn order_template(
    state: &AppState,
    session: &SignedIn,
    id: &str,
    shown: OrderPageState,
) -> Result<OrderPage, ErrorPage> {
    let order_id: Uuid = id.parse().map_err(|_| ErrorPage::not_found())?;
    let row = query::orders::one_of_owner(state.pool(), session.0.user_id.as_uuid(), order_id)
        .await
        .context("reading the orders view")?
        .ok_or_else(ErrorPage::not_found)?;
    let points = query::price_history::of_order(state.pool(), order_id, None, PRICES_SHOWN)
        .await
        .context("reading the price history")?;
    let alerts = query::price_history::alerts_of_order(state.pool(), order_id, None, LISTED)
        .await
        .context("reading the order's alerts")?;
    let checks = query::price_history::checks_of_order(state.pool(), order_id, None, LISTED)
        .await
        .context("reading the order's checks")?;
    let series: Vec<_> = points
        .iter()
        .map(|point| (point.observed_at, point.price))
        .collect();
    Ok(OrderPage {
        chrome: chrome_of(state, session).await?.0,
        chart: chart::price_chart(&series, row.target_price, &row.currency),
        points: points.iter().rev().map(Into::into).collect(),
        alerts: alerts.iter().map(Into::into).collect(),
        checks: checks.iter().map(Into::into).collect(),
        actions: pages::actions_for(&row.status),
        target_value: shown
            .target_value
            .unwrap_or_else(|| row.target_price.to_string()),
        order: (&row).into(),
        notice: shown.notice,
        form_error: shown.form_error,
        target_error: shown.target_error,
    })
}

#[derive(Debug, Deserialize)]
struct OrderActionForm {
    #[serde(rename = "_csrf", default)]
    csrf: String,
    #[serde(default)]
    target_price: String,
}

/// The order page's buttons and its target form: the owner's order commands.
async fn change_order(
    State(state): State<Arc<AppState>>,
    session: SignedIn,
    context: RequestContext,
    headers: HeaderMap,
    Path((id, action)): Path<(String, String)>,
    Form(form): Form<OrderActionForm>,
) -> Result<Response, ErrorPage> {
    session.check_form(&state, &headers, &form.csrf)?;
    let order_id: OrderId = id.parse().map_err(|_| ErrorPage::not_found())?;
    let metadata = caller_metadata(caller(&session), context);
    let owner = session.0.user_id;
    let outcome: Result<Option<LogPosition>, ApiError> = match action.as_str() {
        "check" => {
            use orders_application::price_checks::request_check;
            use orders_domain::price_check::CheckTrigger;
            match order_commands::load_own_order(&state.events, owner, order_id).await {
                Ok(order) => request_check(&state.events, &order, CheckTrigger::Manual, &metadata)
                    .await
                    .map(|requested| match requested {
                        orders_application::price_checks::CheckRequested::Requested {
                            position,
                            ..
                        } => position,
                        orders_application::price_checks::CheckRequested::AlreadyInFlight => None,
                    })
                    .map_err(|error| {
                        ApiError::from_command(
                            error,
                            "no such order",
                            "requesting a check",
                            |refusal| ApiError::Conflict(refusal.to_string()),
                        )
                    }),
                Err(error) => Err(order_command_error(error, "loading an order")),
            }
        }
        "target" | "pause" | "resume" | "cancel" => {
            let change = match action.as_str() {
                "target" => OrderChange::Target(form.target_price.trim().to_owned()),
                "pause" => OrderChange::Pause,
                "resume" => OrderChange::Resume,
                _ => OrderChange::Cancel,
            };
            order_commands::change_own_order(&state.events, owner, order_id, change, &metadata)
                .await
                .map(|receipt| receipt.position)
                .map_err(|error| match error {
                    OrderChangeError::Target(error) => {
                        ApiError::invalid_field("target_price", error.to_string())
                    }
                    OrderChangeError::Command(error) => {
                        order_command_error(error, "changing an order")
                    }
                })
        }
        _ => return Err(ErrorPage::not_found()),
    };
    match outcome {
        Ok(position) => Ok(see_result(&format!("/app/orders/{order_id}"), position)),
        Err(ApiError::NotFound(_)) => Err(ErrorPage::not_found()),
        Err(ApiError::Internal(error)) => Err(ErrorPage::internal(error)),
        Err(error) => {
            let mut shown = OrderPageState::default();
            let status = match error {
                ApiError::InvalidField { message, .. } => {
                    shown.target_value = Some(form.target_price.clone());
                    shown.target_error = Some(message);
                    StatusCode::UNPROCESSABLE_ENTITY
                }
                other => {
                    shown.form_error = Some(other.to_string());
                    StatusCode::CONFLICT
                }
            };
            let template = order_template(&state, &session, &id, shown).await?;
            Ok(page(status, &template))
        }
    }
}
