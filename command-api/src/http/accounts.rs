//! Accounts: register, verify the e-mail address (and ask for another verification
//! mail), log in, unsubscribe from price alerts. Resetting a forgotten password is in
//! `password_reset`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use anyhow::Context as _;
use axum::extract::{ConnectInfo, FromRequestParts, Query, State};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use orders_application::accounts::{self, InactiveAccount, Registered, VerificationMailError};
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
use crate::console::pages::{page, Chrome};
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
        UserError::PasswordChangedSinceResetRequested => {
            ApiError::Gone(super::password_reset::RESET_LINK_USED)
        }
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

pub(crate) fn request_ids(context: RequestContext) -> RequestIds {
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
    let Registered { user_id, position } =
        register_user(&state, &request.email, request.password, context).await?;
    tracing::info!(%user_id, "user registered");
    let response = (
        StatusCode::CREATED,
        [(header::LOCATION, "/me".to_owned())],
        Json(RegisterResponse { user_id }),
    )
        .into_response();
    Ok(with_position(response, position))
}

/// Registers `email` with `password`, as `POST /auth/register` and the console's
/// sign-up form do: the address and the password policy checked (422 naming the
/// field), a known address refused before the hash is computed (409), the unique
/// index deciding races.
pub(crate) async fn register_user(
    state: &AppState,
    email: &str,
    password: String,
    context: RequestContext,
) -> Result<Registered, ApiError> {
    let email = EmailAddress::parse(email)
        .map_err(|error| ApiError::invalid_field("email", error.to_string()))?;
    check_password(&password)
        .map_err(|error| ApiError::invalid_field("password", error.to_string()))?;
    // Saves an argon2 hash on the common case; the unique index decides races.
    if user_lookup::user_by_email(state.pool(), &email.normalized())
        .await
        .context("looking up an e-mail address")?
        .is_some()
    {
        return Err(user_refusal(UserError::AlreadyRegistered));
    }
    let password_hash = hash_password(password).await?;
    accounts::register(&state.events, email, password_hash, request_ids(context))
        .await
        .map_err(|error| user_command_error(error, "registering a user"))
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

/// The link in the verification mail: a page in the console's look that says what
/// happened, with a link into the console.
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
    let orders = PageLink {
        href: "/app/",
        text: "Go to your tracking orders",
    };
    let (status, heading, text, link) = match outcome {
        Ok(_) => (
            StatusCode::OK,
            "E-mail address verified",
            "Thank you: your e-mail address is verified. Price alerts will reach you here.",
            orders,
        ),
        Err(ApiError::Gone(_)) => (
            StatusCode::GONE,
            "This link has expired",
            "Verification links are valid for two days. Sign in and ask for a new one: the button is on your tracking orders page.",
            PageLink {
                href: "/app/",
                text: "Ask for a new link",
            },
        ),
        Err(ApiError::Internal(error)) => {
            tracing::error!(error = format!("{error:#}"), "verifying an e-mail address failed");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "Something went wrong",
                "We could not verify your address just now. Please try the link again later.",
                orders,
            )
        }
        Err(_) => (
            StatusCode::BAD_REQUEST,
            "This link is not valid",
            "The link may have been cut off by your mail program. Copy the whole link into your browser.",
            orders,
        ),
    };
    link_page(status, heading, text, link)
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
    let standing = user_lookup::standing(state.pool(), caller.user_id)
        .await
        .context("reading the caller's standing")?;
    crate::auth::require_active(standing, caller)?;
    let receipt = request_verification_mail_checked(&state, caller, context).await?;
    Ok(with_position(
        StatusCode::ACCEPTED.into_response(),
        receipt.position,
    ))
}

/// Asks for another verification mail for the caller's own address, as `POST
/// /auth/verify/resend` and the console's "Send the link again" button do: 409 when
/// the address is already verified, 429 with the seconds to wait when the last mail
/// went less than a minute ago.
pub(crate) async fn request_verification_mail_checked(
    state: &AppState,
    caller: CurrentUser,
    context: RequestContext,
) -> Result<CommandReceipt, ApiError> {
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
    Ok(receipt)
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
    let (user_id, credentials_version) =
        authenticate(&state, &request.email, request.password, client).await?;
    let access_token = state.access_tokens.issue(user_id, credentials_version)?;
    Ok(Json(LoginResponse {
        access_token,
        token_type: "Bearer".to_owned(),
        expires_in: state.access_tokens.lifetime().as_secs(),
    })
    .into_response())
}

/// Checks an e-mail address and password as every login does (the JSON API's and
/// the console's): counted by the throttle's gate before the password is checked
/// (429 when locked); an unknown address is checked against the hash of a random
/// password made at start, so it costs the time a known one does, and answers 401
/// like a wrong password; a right password gives its place back. Answers the user
/// and their credentials version (what an access token names).
pub(crate) async fn authenticate(
    state: &AppState,
    email_text: &str,
    password: String,
    client: IpAddr,
) -> Result<(UserId, u32), ApiError> {
    // Registration's own parse: an address it refuses (the Kelvin sign for a `k`,
    // say) belongs to nobody, whatever it lowercases to.
    let email = EmailAddress::parse(email_text).ok();
    let keys = match &email {
        Some(email) => ThrottleKeys::new(&email.normalized(), client),
        None => ThrottleKeys::new(email_text, client),
    };
    let attempt = admit_login(state, &keys).await?;
    let Some(email) = email else {
        count_login(state, "failure");
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
    let password_matches = verify_password(password, stored_hash).await?;
    state.metrics.password_verifications.inc();
    let user_id = match user_id {
        Some(user_id) if password_matches && !user.is_deactivated() => user_id,
        _ => {
            count_login(state, "failure");
            return Err(ApiError::Unauthorized(LOGIN_REFUSED));
        }
    };
    state
        .login_throttle
        .succeeded(&attempt, chrono::Utc::now())
        .await
        .context("giving a successful login's place back")?;
    count_login(state, "success");
    Ok((user_id, user.credentials_version()))
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
    let settings = PageLink {
        href: "/app/settings",
        text: "Go to your settings",
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
    link_page(status, heading, text, settings)
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

/// The page a link in a mail opens, in the console's look (its frame and
/// stylesheet, escaped by askama): what happened, in a heading and its lines, and
/// where to go from there.
#[derive(askama::Template)]
#[template(path = "console/mail_link.html")]
pub(crate) struct MailLinkPage<'a> {
    pub(crate) chrome: Chrome,
    pub(crate) heading: &'a str,
    pub(crate) lines: Vec<String>,
    pub(crate) link: PageLink,
}

/// A link of ours, and what it says.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PageLink {
    pub(crate) href: &'static str,
    pub(crate) text: &'static str,
}

impl MailLinkPage<'_> {
    pub(crate) fn into_response(self, status: StatusCode) -> Response {
        page(status, &self)
    }
}

/// The page of a link that did what it says (or not): a heading, a line, a link on.
fn link_page(status: StatusCode, heading: &str, text: &str, link: PageLink) -> Response {
    MailLinkPage {
        chrome: Chrome::default(),
        heading,
        lines: vec![text.to_owned()],
        link,
    }
    .into_response(status)
}
