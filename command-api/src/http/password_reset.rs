//! Resetting a forgotten password: ask for the mail (throttled, and answering the
//! same whether or not the address has an account), open its link (which leads to
//! the console's reset form), and set the new password with the link's token. The
//! console's forms (`console::accounts`) call the same checked functions as the
//! JSON handlers here.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::extract::{Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::post;
use axum::Router;
use orders_application::accounts::{self, ResetLink, ResetLinkError};
use orders_domain::email::EmailAddress;
use orders_domain::password_policy::check_password;
use orders_store::event_store::CommandReceipt;
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};

use crate::auth::hash_password;
use crate::http::accounts::{request_ids, user_command_error, ClientAddress};
use crate::http::{with_position, RequestContext};
use crate::login_throttle::ThrottleKeys;
use crate::problem::{ApiError, AppJson};
use crate::AppState;

pub fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/auth/password-reset", post(request_password_reset))
        .route(
            "/auth/password-reset/confirm",
            post(confirm_password_reset).get(password_reset_page),
        )
}

/// The detail of a 410 for a reset link whose password has changed since it was
/// mailed (by this link or otherwise).
pub(crate) const RESET_LINK_USED: &str =
    "this password-reset link has been used, or the password has changed since it was sent; ask for a new one";
const RESET_LINK_EXPIRED: &str = "this password-reset link has expired; ask for a new one";
const RESET_LINK_INVALID: &str = "the password-reset token is not valid";

/// Password-reset requests per e-mail address within [`PASSWORD_RESET_WINDOW`].
pub const PASSWORD_RESET_REQUESTS_PER_EMAIL: i32 = 3;
/// Password-reset requests per client address (any e-mail) within the window.
pub const PASSWORD_RESET_REQUESTS_PER_CLIENT: i32 = 20;
/// Requests older than this are forgotten.
pub const PASSWORD_RESET_WINDOW: Duration = Duration::from_secs(15 * 60);
/// Every answer of `POST /auth/password-reset` takes at least this long, so that a
/// known address (which stores an event) cannot be told from an unknown one (which
/// does not) by the time the answer takes.
pub const PASSWORD_RESET_MIN_ANSWER_TIME: Duration = Duration::from_millis(150);

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PasswordResetRequest {
    /// The address of the account; compared case-insensitively.
    pub email: String,
}

/// Asks for a password-reset mail. The answer is 202 whether or not an account has
/// this address, after the same reads and never sooner than 150 ms (which hides the
/// known address's append), and without an `Orders-Position`: it tells nobody which
/// addresses exist. For an active account a `PasswordResetRequested` is stored and
/// the e-mail worker mails the link (valid for an hour, once); a deactivated account
/// gets no mail. Requests are counted per e-mail address (3 in 15 minutes) and per
/// client address (20), known addresses or not: beyond that, 429 with `Retry-After`.
/// A malformed address is 422.
#[utoipa::path(post, path = "/auth/password-reset", tag = "accounts",
    request_body = PasswordResetRequest,
    responses((status = 202), (status = 422, body = crate::problem::Problem),
              (status = 429, body = crate::problem::Problem)))]
pub async fn request_password_reset(
    State(state): State<Arc<AppState>>,
    context: RequestContext,
    ClientAddress(client): ClientAddress,
    AppJson(request): AppJson<PasswordResetRequest>,
) -> Result<Response, ApiError> {
    request_password_reset_checked(&state, &request.email, context, client).await?;
    Ok(StatusCode::ACCEPTED.into_response())
}

/// Asks for a password-reset mail for `email`, as `POST /auth/password-reset` and the
/// console's forgotten-password form do: the address checked (422 `email`), the
/// request counted per address and per client (429 beyond the limits), the mail
/// asked for when an account has the address, and never an answer sooner than
/// [`PASSWORD_RESET_MIN_ANSWER_TIME`]: the same outcome, and the same time, whether
/// or not it has one.
pub(crate) async fn request_password_reset_checked(
    state: &AppState,
    email: &str,
    context: RequestContext,
    client: IpAddr,
) -> Result<(), ApiError> {
    let answer_not_before = tokio::time::Instant::now() + PASSWORD_RESET_MIN_ANSWER_TIME;
    let email = EmailAddress::parse(email)
        .map_err(|error| ApiError::invalid_field("email", error.to_string()))?;
    let normalized = email.normalized();
    if let Some(retry_after_secs) = password_reset_throttle(state, &normalized, client).await? {
        return Err(ApiError::TooManyRequests { retry_after_secs });
    }
    accounts::request_password_reset(&state.events, &normalized, request_ids(context))
        .await
        .map_err(|error| user_command_error(error, "asking for a password reset"))?;
    tokio::time::sleep_until(answer_not_before).await;
    Ok(())
}

/// Counts a password-reset request under its e-mail and client keys (one statement,
/// in `login_failures`, the throttling counters every API instance shares, under
/// keys of their own so they never lock a login) and answers the seconds to wait if
/// either key is over its limit. Unknown addresses are counted like known ones.
async fn password_reset_throttle(
    state: &AppState,
    normalized_email: &str,
    client: IpAddr,
) -> Result<Option<u64>, ApiError> {
    let email_key = format!("password-reset:email:{normalized_email}");
    let client_key = format!("password-reset:client:{client}");
    let counts: Vec<(bool, i32, i64)> = sqlx::query_as(
        "INSERT INTO login_failures AS f (throttle_key, failures, first_failure)
         VALUES ($1, 1, statement_timestamp()), ($2, 1, statement_timestamp())
         ON CONFLICT (throttle_key) DO UPDATE SET
           failures = CASE WHEN f.first_failure <= statement_timestamp() - make_interval(secs => $3)
                           THEN 1 ELSE f.failures + 1 END,
           first_failure = CASE WHEN f.first_failure <= statement_timestamp() - make_interval(secs => $3)
                                THEN statement_timestamp() ELSE f.first_failure END
         RETURNING f.throttle_key = $1, f.failures,
                   ceil(extract(epoch FROM f.first_failure + make_interval(secs => $3)
                                           - statement_timestamp()))::bigint",
    )
    .bind(&email_key)
    .bind(&client_key)
    .bind(PASSWORD_RESET_WINDOW.as_secs_f64())
    .fetch_all(state.pool())
    .await
    .context("counting password-reset requests")?;
    let wait_secs = counts
        .into_iter()
        .filter(|(is_email_key, requests, _)| {
            let limit = if *is_email_key {
                PASSWORD_RESET_REQUESTS_PER_EMAIL
            } else {
                PASSWORD_RESET_REQUESTS_PER_CLIENT
            };
            *requests > limit
        })
        .map(|(_, _, wait_secs)| u64::try_from(wait_secs).unwrap_or(0).max(1))
        .max();
    Ok(wait_secs)
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PasswordResetConfirmation {
    /// The token from the password-reset mail's link.
    pub token: String,
    /// The new password: 12 to 128 characters; the most common passwords are refused.
    pub password: String,
}

/// Sets a new password with the token of a password-reset mail: 204. A forged token
/// is 400; an expired one (links are valid for an hour) 410; a token whose password
/// has changed since it was mailed, by this very link or otherwise, 410 too: a link
/// works once. A weak password is 422 naming `password`. The address's login
/// throttle is cleared, so a user locked out by failed logins gets in at once.
/// Access tokens issued before the reset stay valid until they expire.
#[utoipa::path(post, path = "/auth/password-reset/confirm", tag = "accounts",
    request_body = PasswordResetConfirmation,
    responses((status = 204), (status = 400, body = crate::problem::Problem),
              (status = 410, body = crate::problem::Problem), (status = 422, body = crate::problem::Problem)))]
pub async fn confirm_password_reset(
    State(state): State<Arc<AppState>>,
    context: RequestContext,
    ClientAddress(client): ClientAddress,
    AppJson(confirmation): AppJson<PasswordResetConfirmation>,
) -> Result<Response, ApiError> {
    let receipt = reset_password_checked(
        &state,
        &confirmation.token,
        confirmation.password,
        context,
        client,
    )
    .await?;
    Ok(with_position(
        StatusCode::NO_CONTENT.into_response(),
        receipt.position,
    ))
}

/// Sets a new password with a password-reset token, as `POST
/// /auth/password-reset/confirm` and the console's reset form do: the link checked
/// first (400 forged, 410 expired or used), then the password policy (422
/// `password`, the link still good), the reset stored as the link's user, every
/// console session of the user ended and the address's login throttle cleared.
pub(crate) async fn reset_password_checked(
    state: &AppState,
    token: &str,
    password: String,
    context: RequestContext,
    client: IpAddr,
) -> Result<CommandReceipt, ApiError> {
    let link = check_password_reset_token(state, token).await?;
    check_password(&password)
        .map_err(|error| ApiError::invalid_field("password", error.to_string()))?;
    let password_hash = hash_password(password).await?;
    let receipt =
        accounts::reset_password(&state.events, &link, password_hash, request_ids(context))
            .await
            .map_err(reset_link_error)?;
    crate::console::session::end_all_of(state.pool(), link.user_id)
        .await
        .context("ending the user's sessions")?;
    state
        .login_throttle
        .forget_email(&ThrottleKeys::new(&link.normalized_email, client))
        .await
        .context("clearing the login throttle after a password reset")?;
    tracing::info!(user_id = %link.user_id, "password reset");
    Ok(receipt)
}

/// Checks a password-reset token against the user as they are now
/// ([`accounts::check_reset_link`]): a forged token, or one for another address, is
/// 400; an expired one 410, and a used one (or a deactivated account) 410 too.
pub(crate) async fn check_password_reset_token(
    state: &AppState,
    token: &str,
) -> Result<ResetLink, ApiError> {
    accounts::check_reset_link(
        &state.events,
        &state.signed_tokens,
        token,
        chrono::Utc::now(),
    )
    .await
    .map_err(reset_link_error)
}

fn reset_link_error(error: ResetLinkError) -> ApiError {
    match error {
        ResetLinkError::Invalid => ApiError::BadRequest(RESET_LINK_INVALID.to_owned()),
        ResetLinkError::Expired => ApiError::Gone(RESET_LINK_EXPIRED),
        ResetLinkError::Used => ApiError::Gone(RESET_LINK_USED),
        ResetLinkError::Store(failure) => {
            ApiError::Internal(anyhow::Error::new(failure).context("resetting a password"))
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PasswordResetLink {
    /// The token from the password-reset mail's link.
    pub token: Option<String>,
}

/// The link in the password-reset mail: the console's reset page
/// (`/app/reset-password`, a plain form that needs no JavaScript), where the link is
/// checked and a dead one says why. Mails already sent keep working. Opening it
/// changes nothing (mail scanners open links).
#[utoipa::path(get, path = "/auth/password-reset/confirm", tag = "accounts",
    params(PasswordResetLink),
    responses((status = 303, description = "to the console's page `/app/reset-password?token=`")))]
pub async fn password_reset_page(Query(link): Query<PasswordResetLink>) -> Response {
    let location = match link.token {
        Some(token) => format!(
            "/app/reset-password?token={}",
            url::form_urlencoded::byte_serialize(token.as_bytes()).collect::<String>()
        ),
        None => "/app/reset-password".to_owned(),
    };
    let mut response = Redirect::to(&location).into_response();
    let headers = response.headers_mut();
    // The token is in the URL: keep it out of caches and of any Referer.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}
