//! Accounts: register, verify the e-mail address (and ask for another verification
//! mail), log in, reset a forgotten password, unsubscribe from price alerts.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::extract::{ConnectInfo, FromRequestParts, Query, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use orders_application::accounts::{
    self, InactiveAccount, Registered, ResetLink, ResetLinkError, VerificationMailError,
};
use orders_application::mail_links::{self, MailLinkError};
use orders_application::signed_tokens::TokenPurpose;
use orders_application::{CommandError, RequestIds};
use orders_domain::email::EmailAddress;
use orders_domain::ids::UserId;
use orders_domain::password_policy::check_password;
use orders_domain::user::{User, UserCommand, UserError};
use orders_store::event_store::{CommandMetadata, CommandReceipt};
use orders_store::user_lookup;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::auth::{hash_password, verify_password, CurrentUser};
use crate::http::{with_position, RequestContext};
use crate::login_throttle::{Admission, Attempt, ThrottleKeys};
use crate::metrics::OutcomeLabels;
use crate::problem::{ApiError, AppJson};
use crate::AppState;

pub fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/auth/register", post(register))
        .route("/auth/verify", post(verify_email).get(verify_email_link))
        .route("/auth/verify/resend", post(resend_verification_mail))
        .route("/auth/login", post(login))
        .route("/auth/password-reset", post(request_password_reset))
        .route(
            "/auth/password-reset/confirm",
            post(confirm_password_reset).get(password_reset_page),
        )
        .route("/unsubscribe", get(unsubscribe_link))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    /// Compared case-insensitively; unique across all users.
    pub email: String,
    /// 12 to 128 characters; the most common passwords are refused.
    pub password: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RegisterResponse {
    #[schema(value_type = String, format = Uuid)]
    pub user_id: UserId,
}

/// The answer to the user aggregate's refusal.
pub(crate) fn user_refusal(refusal: UserError) -> ApiError {
    match refusal {
        UserError::AlreadyRegistered => {
            ApiError::Conflict("this e-mail address is already registered".to_owned())
        }
        UserError::NotRegistered => ApiError::NotFound("no such user"),
        UserError::Deactivated => ApiError::Unauthorized("the account is deactivated"),
        UserError::DisplayNameTooLong { .. } => {
            ApiError::invalid_field("display_name", refusal.to_string())
        }
        UserError::ReasonRequired => ApiError::invalid_field("reason", refusal.to_string()),
        UserError::EmailAlreadyVerified => ApiError::Conflict(
            "the e-mail address is already verified: there is nothing to confirm".to_owned(),
        ),
        UserError::PasswordChangedSinceResetRequested => ApiError::Gone(RESET_LINK_USED),
    }
}

/// The one mapping of a user command's failure.
pub(crate) fn user_command_error(error: CommandError<UserError>, doing: &'static str) -> ApiError {
    ApiError::from_command(error, "no such user", doing, user_refusal)
}

/// The answer for an account that may not act.
pub(crate) fn inactive_account(error: InactiveAccount) -> ApiError {
    match error {
        InactiveAccount::Unknown => ApiError::Unauthorized("the account does not exist"),
        InactiveAccount::Deactivated => ApiError::Unauthorized("the account is deactivated"),
        InactiveAccount::Store(failure) => {
            ApiError::Internal(anyhow::Error::new(failure).context("loading the account"))
        }
    }
}

fn request_ids(context: RequestContext) -> RequestIds {
    RequestIds {
        correlation_id: context.correlation_id,
        request_id: context.request_id,
    }
}

/// Registers a user. The e-mail address is unique even under concurrent
/// registrations: the event store's unique index admits one `UserRegistered` per
/// address, so a race stores exactly one event and the others get 409.
#[utoipa::path(post, path = "/auth/register", tag = "accounts",
    request_body = RegisterRequest,
    responses((status = 201, body = RegisterResponse), (status = 409, body = crate::problem::Problem),
              (status = 422, body = crate::problem::Problem)))]
pub async fn register(
    State(state): State<Arc<AppState>>,
    context: RequestContext,
    AppJson(request): AppJson<RegisterRequest>,
) -> Result<Response, ApiError> {
    let email = EmailAddress::parse(&request.email)
        .map_err(|error| ApiError::invalid_field("email", error.to_string()))?;
    check_password(&request.password)
        .map_err(|error| ApiError::invalid_field("password", error.to_string()))?;
    let normalized = email.normalized();
    // Saves an argon2 hash on the common case; the unique index decides races.
    if user_lookup::user_by_email(state.pool(), &normalized)
        .await
        .context("looking up an e-mail address")?
        .is_some()
    {
        return Err(ApiError::Conflict(
            "this e-mail address is already registered".to_owned(),
        ));
    }
    let password_hash = hash_password(request.password).await?;
    let Registered { user_id, position } =
        accounts::register(&state.events, email, password_hash, request_ids(context))
            .await
            .map_err(|error| user_command_error(error, "registering a user"))?;
    tracing::info!(%user_id, "user registered");
    let response = (
        StatusCode::CREATED,
        [(header::LOCATION, "/me".to_owned())],
        Json(RegisterResponse { user_id }),
    )
        .into_response();
    Ok(with_position(response, position))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VerifyEmailRequest {
    /// The token from the verification mail's link.
    pub token: String,
}

/// Follows the link of one of our mails: the user command its token stands for
/// (`orders_application::mail_links`). A forged token, or one for an address the
/// user no longer has, is 400 (naming `what` token it is); an expired one 410.
async fn follow_mail_link(
    state: &AppState,
    context: RequestContext,
    link: (TokenPurpose, UserCommand),
    token: &str,
    what: &'static str,
    expired: &'static str,
) -> Result<CommandReceipt, ApiError> {
    let (purpose, command) = link;
    mail_links::follow(
        &state.events,
        &state.signed_tokens,
        purpose,
        token,
        chrono::Utc::now(),
        command,
        request_ids(context),
    )
    .await
    .map_err(|error| match error {
        MailLinkError::Invalid => ApiError::BadRequest(format!("the {what} token is not valid")),
        MailLinkError::Expired => ApiError::Gone(expired),
        MailLinkError::Command(error) => user_command_error(error, "following a mail link"),
    })
}

async fn apply_verification_token(
    state: &AppState,
    context: RequestContext,
    token: &str,
) -> Result<CommandReceipt, ApiError> {
    follow_mail_link(
        state,
        context,
        (TokenPurpose::VerifyEmail, UserCommand::VerifyEmail),
        token,
        "verification",
        "the verification link has expired; ask for a new one",
    )
    .await
}

/// Verifies the e-mail address a token was issued for: 204, also when it already is.
#[utoipa::path(post, path = "/auth/verify", tag = "accounts",
    request_body = VerifyEmailRequest,
    responses((status = 204), (status = 400, body = crate::problem::Problem),
              (status = 410, body = crate::problem::Problem)))]
pub async fn verify_email(
    State(state): State<Arc<AppState>>,
    context: RequestContext,
    AppJson(request): AppJson<VerifyEmailRequest>,
) -> Result<Response, ApiError> {
    let position = apply_verification_token(&state, context, &request.token)
        .await?
        .position;
    Ok(with_position(
        StatusCode::NO_CONTENT.into_response(),
        position,
    ))
}

#[derive(Debug, Deserialize)]
pub struct VerifyEmailLink {
    token: Option<String>,
}

/// The link in the verification mail: a small page that says what happened.
#[utoipa::path(get, path = "/auth/verify", tag = "accounts",
    params(("token" = String, Query, description = "the token from the mail")),
    responses((status = 200, content_type = "text/html"), (status = 400, content_type = "text/html"),
              (status = 410, content_type = "text/html")))]
pub async fn verify_email_link(
    State(state): State<Arc<AppState>>,
    context: RequestContext,
    Query(link): Query<VerifyEmailLink>,
) -> Response {
    let outcome = match link.token {
        None => Err(ApiError::BadRequest("the link has no token".to_owned())),
        Some(token) => apply_verification_token(&state, context, &token).await,
    };
    let (status, heading, text) = match outcome {
        Ok(_) => (
            StatusCode::OK,
            "E-mail address verified",
            "Thank you: your e-mail address is verified. Price alerts will reach you here.",
        ),
        Err(ApiError::Gone(_)) => (
            StatusCode::GONE,
            "This link has expired",
            "Verification links are valid for two days. Ask for a new one from your account.",
        ),
        Err(ApiError::Internal(error)) => {
            tracing::error!(error = format!("{error:#}"), "verifying an e-mail address failed");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "Something went wrong",
                "We could not verify your address just now. Please try the link again later.",
            )
        }
        Err(_) => (
            StatusCode::BAD_REQUEST,
            "This link is not valid",
            "The link may have been cut off by your mail program. Copy the whole link into your browser.",
        ),
    };
    link_page(status, heading, text)
}

pub use accounts::VERIFICATION_MAIL_INTERVAL;

/// Asks for another verification mail, for the caller's own address (the first one
/// went with the registration and may be lost or expired): 202, and the e-mail
/// worker sends it. An address that is already verified gets 409 and no mail, so
/// the client can say there is nothing left to confirm. At most one mail a minute
/// (the registration's counts): sooner is 429 with `Retry-After`.
#[utoipa::path(post, path = "/auth/verify/resend", tag = "accounts", security(("bearer" = [])),
    responses((status = 202), (status = 401, body = crate::problem::Problem),
              (status = 409, body = crate::problem::Problem), (status = 429, body = crate::problem::Problem)))]
pub async fn resend_verification_mail(
    State(state): State<Arc<AppState>>,
    caller: CurrentUser,
    context: RequestContext,
) -> Result<Response, ApiError> {
    let metadata = caller_metadata(caller, context);
    let receipt = accounts::request_verification_mail(&state.events, caller.user_id, &metadata)
        .await
        .map_err(|error| match error {
            VerificationMailError::Inactive(inactive) => inactive_account(inactive),
            VerificationMailError::Command(error) => {
                user_command_error(error, "asking for a verification mail")
            }
            VerificationMailError::TooSoon { retry_after_secs } => {
                ApiError::TooManyRequests { retry_after_secs }
            }
        })?;
    tracing::info!(user_id = %caller.user_id, "verification mail requested");
    Ok(with_position(
        StatusCode::ACCEPTED.into_response(),
        receipt.position,
    ))
}

/// The metadata of a command the caller makes on their own behalf.
pub(crate) fn caller_metadata(caller: CurrentUser, context: RequestContext) -> CommandMetadata {
    request_ids(context).metadata(caller.actor())
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    pub email: String,
    pub password: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct LoginResponse {
    pub access_token: String,
    /// Always `Bearer`.
    pub token_type: String,
    /// Seconds until the token expires.
    pub expires_in: u64,
}

/// The client's address, as the socket sees it. (Behind a proxy this is the proxy;
/// trusting `X-Forwarded-For` would let any client pick its own throttle key.)
pub struct ClientAddress(pub IpAddr);

impl<S: Send + Sync> FromRequestParts<S> for ClientAddress {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(Self(
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |info| info.0.ip()),
        ))
    }
}

const LOGIN_REFUSED: &str = "unknown e-mail address or wrong password";

/// Logs in. An unknown e-mail and a wrong password get the same 401 after the same
/// work (a password hash is verified either way); an address that does not parse
/// (so that no account can have it) gets that 401 too, without a hash. Every
/// attempt is counted per e-mail and per client address before its password is
/// verified (`login_throttle`): beyond the limits, 429 with `Retry-After`, and no
/// password is checked, however many attempts arrive at once.
#[utoipa::path(post, path = "/auth/login", tag = "accounts",
    request_body = LoginRequest,
    responses((status = 200, body = LoginResponse), (status = 401, body = crate::problem::Problem),
              (status = 422, body = crate::problem::Problem), (status = 429, body = crate::problem::Problem)))]
pub async fn login(
    State(state): State<Arc<AppState>>,
    ClientAddress(client): ClientAddress,
    body: Result<AppJson<LoginRequest>, ApiError>,
) -> Result<Response, ApiError> {
    let request = match body {
        Ok(AppJson(request)) => request,
        // An attempt all the same (a NUL in the address, say): it counts against
        // its client, so that refused bodies cannot be sent without limit either.
        Err(refused) => {
            admit_login(&state, &ThrottleKeys::client_only(client)).await?;
            count_login(&state, "failure");
            return Err(refused);
        }
    };
    // Registration's own parse: an address it refuses (the Kelvin sign for a `k`,
    // say) belongs to nobody, whatever it lowercases to.
    let email = EmailAddress::parse(&request.email).ok();
    let keys = match &email {
        Some(email) => ThrottleKeys::new(&email.normalized(), client),
        None => ThrottleKeys::new(&request.email, client),
    };
    let attempt = admit_login(&state, &keys).await?;
    let Some(email) = email else {
        count_login(&state, "failure");
        return Err(ApiError::Unauthorized(LOGIN_REFUSED));
    };
    let normalized = email.normalized();
    let user_id = user_lookup::user_by_email(state.pool(), &normalized)
        .await
        .context("looking up an e-mail address")?;
    // Load something either way, so both paths issue the same statements.
    let user_id_or_none = user_id.unwrap_or_else(UserId::new);
    let (user, _) = state
        .events
        .load::<User>(&user_id_or_none.to_string())
        .await
        .context("loading the account")?;
    let stored_hash = user_lookup::password_hash(state.pool(), user_id_or_none)
        .await
        .context("reading credentials")?;
    let stored_hash = match (user_id, stored_hash) {
        (Some(_), Some(hash)) => hash,
        _ => state.dummy_password_hash.clone(),
    };
    let password_matches = verify_password(request.password, stored_hash).await?;
    state.metrics.password_verifications.inc();
    let user_id = match user_id {
        Some(user_id) if password_matches && !user.is_deactivated() => user_id,
        _ => {
            count_login(&state, "failure");
            return Err(ApiError::Unauthorized(LOGIN_REFUSED));
        }
    };
    state
        .login_throttle
        .succeeded(&attempt, chrono::Utc::now())
        .await
        .context("giving a successful login's place back")?;
    count_login(&state, "success");
    let access_token = state.access_tokens.issue(user_id)?;
    Ok(Json(LoginResponse {
        access_token,
        token_type: "Bearer".to_owned(),
        expires_in: state.access_tokens.lifetime().as_secs(),
    })
    .into_response())
}

/// Counts a password check before it is made (the login throttle's gate): 429 with
/// `Retry-After` when one of its keys is locked.
pub(crate) async fn admit_password_check(
    state: &AppState,
    keys: &ThrottleKeys,
) -> Result<Attempt, ApiError> {
    let admission = state
        .login_throttle
        .admit(keys, chrono::Utc::now())
        .await
        .context("counting a password check")?;
    match admission {
        Admission::Admitted(attempt) => Ok(attempt),
        Admission::Locked { retry_after_secs } => {
            Err(ApiError::TooManyRequests { retry_after_secs })
        }
    }
}

/// [`admit_password_check`] for a login, counted in the logins metric when throttled.
async fn admit_login(state: &AppState, keys: &ThrottleKeys) -> Result<Attempt, ApiError> {
    let admitted = admit_password_check(state, keys).await;
    if let Err(ApiError::TooManyRequests { .. }) = &admitted {
        count_login(state, "throttled");
    }
    admitted
}

fn count_login(state: &AppState, outcome: &'static str) {
    state
        .metrics
        .logins
        .get_or_create(&OutcomeLabels { outcome })
        .inc();
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UnsubscribeLink {
    /// The token from the price-alert mail's unsubscribe link.
    pub token: Option<String>,
}

/// The unsubscribe link of a price-alert mail: turns the user's price alerts off
/// (they can turn them on again with `PATCH /me`) and says so on a small page.
#[utoipa::path(get, path = "/unsubscribe", tag = "accounts", params(UnsubscribeLink),
    responses((status = 200, content_type = "text/html"), (status = 400, content_type = "text/html"),
              (status = 410, content_type = "text/html")))]
pub async fn unsubscribe_link(
    State(state): State<Arc<AppState>>,
    context: RequestContext,
    Query(link): Query<UnsubscribeLink>,
) -> Response {
    let outcome = match link.token {
        None => Err(ApiError::BadRequest("the link has no token".to_owned())),
        Some(token) => apply_unsubscribe_token(&state, context, &token).await,
    };
    let (status, heading, text) = match outcome {
        Ok(()) => (
            StatusCode::OK,
            "Price alerts turned off",
            "You will get no more price alerts. You can turn them on again in your account settings.",
        ),
        Err(ApiError::Gone(_)) => (
            StatusCode::GONE,
            "This link has expired",
            "Unsubscribe links are valid for 90 days. Turn price alerts off in your account settings instead.",
        ),
        Err(ApiError::Internal(error)) => {
            tracing::error!(error = format!("{error:#}"), "unsubscribing failed");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "Something went wrong",
                "We could not turn your price alerts off just now. Please try the link again later.",
            )
        }
        Err(_) => (
            StatusCode::BAD_REQUEST,
            "This link is not valid",
            "The link may have been cut off by your mail program. Copy the whole link into your browser.",
        ),
    };
    link_page(status, heading, text)
}

async fn apply_unsubscribe_token(
    state: &AppState,
    context: RequestContext,
    token: &str,
) -> Result<(), ApiError> {
    let unsubscribe = UserCommand::ChangeNotificationPreferences {
        price_alerts: false,
    };
    follow_mail_link(
        state,
        context,
        (TokenPurpose::Unsubscribe, unsubscribe),
        token,
        "unsubscribe",
        "the unsubscribe link has expired",
    )
    .await
    .map(|_| ())
}

/// The detail of a 410 for a reset link whose password has changed since it was
/// mailed (by this link or otherwise).
const RESET_LINK_USED: &str =
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
    let (status, heading, body) = match (outcome, link.token) {
        (Ok(_), Some(token)) => (
            StatusCode::OK,
            "Choose a new password",
            format!(
                "<form id=\"reset\">\
                 <input type=\"hidden\" name=\"token\" value=\"{token}\">\
                 <p><label>New password (12 to 128 characters)<br>\
                 <input type=\"password\" name=\"password\" autocomplete=\"new-password\" \
                 minlength=\"12\" maxlength=\"128\" required autofocus></label></p>\
                 <p><label>The same again<br>\
                 <input type=\"password\" name=\"repeat\" autocomplete=\"new-password\" \
                 minlength=\"12\" maxlength=\"128\" required></label></p>\
                 <p><button type=\"submit\">Change my password</button></p></form>\
                 <p id=\"message\" role=\"status\"></p>\
                 <noscript><p>This page needs JavaScript to send your new password.</p></noscript>\
                 <script>{PASSWORD_RESET_SCRIPT}</script>",
                token = escape_html(&token),
            ),
        ),
        (Err(ApiError::Gone(detail)), _) => (
            StatusCode::GONE,
            "This link no longer works",
            format!(
                "<p>{}.</p><p>Password-reset links are valid for an hour, and once.</p>",
                capitalised(detail)
            ),
        ),
        (Err(ApiError::Internal(error)), _) => {
            tracing::error!(error = format!("{error:#}"), "opening a password-reset link failed");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "Something went wrong",
                "<p>We could not open your password-reset link just now. Please try it again later.</p>"
                    .to_owned(),
            )
        }
        _ => (
            StatusCode::BAD_REQUEST,
            "This link is not valid",
            "<p>The link may have been cut off by your mail program. Copy the whole link into your browser.</p>"
                .to_owned(),
        ),
    };
    let page = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{heading} · Orders</title></head>\
         <body><h1>{heading}</h1>{body}</body></html>"
    );
    let mut response = (status, Html(page)).into_response();
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

fn escape_html(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for character in text.chars() {
        match character {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&#39;"),
            other => escaped.push(other),
        }
    }
    escaped
}

/// The small page a link in a mail opens: what happened, in a heading and a line.
/// `heading` and `text` are this module's own constant strings, never user input.
fn link_page(status: StatusCode, heading: &str, text: &str) -> Response {
    let page = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{heading} · Orders</title></head>\
         <body><h1>{heading}</h1><p>{text}</p></body></html>"
    );
    (status, Html(page)).into_response()
}
