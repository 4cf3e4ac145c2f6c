//! Resetting a forgotten password: ask for the mail (throttled, and answering the
//! same whether or not the address has an account), open its link (a small page
//! with a form), and set the new password with the link's token.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::extract::{Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use orders_application::accounts::{self, ResetLink, ResetLinkError};
use orders_domain::email::EmailAddress;
use orders_domain::password_policy::check_password;
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};

use crate::auth::hash_password;
use crate::http::accounts::{request_ids, user_command_error, ClientAddress, MailLinkPage};
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
    let answer_not_before = tokio::time::Instant::now() + PASSWORD_RESET_MIN_ANSWER_TIME;
    let email = EmailAddress::parse(&request.email)
        .map_err(|error| ApiError::invalid_field("email", error.to_string()))?;
    let normalized = email.normalized();
    if let Some(retry_after_secs) = password_reset_throttle(&state, &normalized, client).await? {
        return Err(ApiError::TooManyRequests { retry_after_secs });
    }
    accounts::request_password_reset(&state.events, &normalized, request_ids(context))
        .await
        .map_err(|error| user_command_error(error, "asking for a password reset"))?;
    tokio::time::sleep_until(answer_not_before).await;
    Ok(StatusCode::ACCEPTED.into_response())
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
    let link = check_password_reset_token(&state, &confirmation.token).await?;
    check_password(&confirmation.password)
        .map_err(|error| ApiError::invalid_field("password", error.to_string()))?;
    let password_hash = hash_password(confirmation.password).await?;
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
    Ok(with_position(
        StatusCode::NO_CONTENT.into_response(),
        receipt.position,
    ))
}

/// Checks a password-reset token against the user as they are now
/// ([`accounts::check_reset_link`]): a forged token, or one for another address, is
/// 400; an expired one 410, and a used one (or a deactivated account) 410 too.
async fn check_password_reset_token(state: &AppState, token: &str) -> Result<ResetLink, ApiError> {
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

/// The script of the password-reset page: posts `{token, password}` as JSON to the
/// confirm route and shows what happened. Allowed by the page's Content-Security-Policy
/// through its hash, so no other script can run there.
const PASSWORD_RESET_SCRIPT: &str = r#"
const form = document.getElementById("reset");
const message = document.getElementById("message");
form.addEventListener("submit", async (event) => {
  event.preventDefault();
  const password = form.elements.password.value;
  if (password !== form.elements.repeat.value) {
    message.textContent = "The two passwords are not the same.";
    return;
  }
  const button = form.querySelector("button");
  button.disabled = true;
  message.textContent = "Saving your new password…";
  try {
    const response = await fetch(window.location.pathname, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ token: form.elements.token.value, password }),
    });
    if (response.status === 204) {
      form.hidden = true;
      message.textContent = "Your password has been changed. You can log in with it now.";
      return;
    }
    let detail = "Something went wrong. Please try again later.";
    try {
      const problem = await response.json();
      if (problem.detail) detail = problem.detail;
    } catch (_) {}
    message.textContent = detail;
    if (response.status === 410 || response.status === 400) form.hidden = true;
  } catch (_) {
    message.textContent = "The server could not be reached. Please try again.";
  }
  button.disabled = false;
});
"#;

/// The link in the password-reset mail: a small page with a form for the new
/// password, whose script posts it with the token to `POST
/// /auth/password-reset/confirm`. Opening it changes nothing (mail scanners open
/// links); a dead link says why at once.
#[utoipa::path(get, path = "/auth/password-reset/confirm", tag = "accounts",
    params(PasswordResetLink),
    responses((status = 200, content_type = "text/html"), (status = 400, content_type = "text/html"),
              (status = 410, content_type = "text/html")))]
pub async fn password_reset_page(
    State(state): State<Arc<AppState>>,
    Query(link): Query<PasswordResetLink>,
) -> Response {
    let outcome = match &link.token {
        None => Err(ApiError::BadRequest("the link has no token".to_owned())),
        Some(token) => check_password_reset_token(&state, token).await,
    };
    let (status, heading, lines, reset_token) = match (outcome, link.token) {
        (Ok(_), Some(token)) => (StatusCode::OK, "Choose a new password", vec![], Some(token)),
        (Err(ApiError::Gone(detail)), _) => (
            StatusCode::GONE,
            "This link no longer works",
            vec![
                format!("{}.", capitalised(detail)),
                "Password-reset links are valid for an hour, and once.".to_owned(),
            ],
            None,
        ),
        (Err(ApiError::Internal(error)), _) => {
            tracing::error!(error = format!("{error:#}"), "opening a password-reset link failed");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "Something went wrong",
                vec!["We could not open your password-reset link just now. Please try it again later.".to_owned()],
                None,
            )
        }
        _ => (
            StatusCode::BAD_REQUEST,
            "This link is not valid",
            vec!["The link may have been cut off by your mail program. Copy the whole link into your browser.".to_owned()],
            None,
        ),
    };
    let mut response = MailLinkPage {
        heading,
        lines,
        reset_token,
        script: PASSWORD_RESET_SCRIPT,
    }
    .into_response(status);
    let headers = response.headers_mut();
    // The token is in the URL: keep it out of caches and of any Referer.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    if let Ok(policy) = HeaderValue::from_str(&format!(
        "default-src 'none'; script-src 'sha256-{}'; connect-src 'self'; \
         base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
        script_hash(PASSWORD_RESET_SCRIPT)
    )) {
        headers.insert(header::CONTENT_SECURITY_POLICY, policy);
    }
    response
}

/// The CSP source hash of an inline script: base64 of its SHA-256.
fn script_hash(script: &str) -> String {
    use base64::Engine as _;
    use sha2::Digest as _;
    base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(script.as_bytes()))
}

fn capitalised(text: &str) -> String {
    let mut chars = text.chars();
    chars
        .next()
        .map(|first| first.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}
