//! Accounts: register, verify the e-mail address, log in.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use anyhow::Context as _;
use axum::extract::{ConnectInfo, FromRequestParts, Query, State};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use cqrs_es::AggregateError;
use orders_domain::email::EmailAddress;
use orders_domain::ids::UserId;
use orders_domain::password_policy::check_password;
use orders_domain::user::{User, UserCommand, UserError};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::auth::{hash_password, verify_password};
use crate::event_store::CommandMetadata;
use crate::http::{with_position, RequestContext};
use crate::login_throttle::ThrottleKeys;
use crate::metrics::OutcomeLabels;
use crate::problem::{ApiError, AppJson};
use crate::signed_tokens::{email_digest, TokenError, TokenPurpose};
use crate::user_lookup;
use crate::AppState;

pub fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/auth/register", post(register))
        .route("/auth/verify", post(verify_email).get(verify_email_link))
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

/// Maps a user command's failure to its answer.
pub(crate) fn user_error(error: AggregateError<UserError>) -> ApiError {
    match error {
        AggregateError::UserError(error) => match error {
            UserError::AlreadyRegistered => {
                ApiError::Conflict("this e-mail address is already registered".to_owned())
            }
            UserError::NotRegistered => ApiError::NotFound("no such user"),
            UserError::Deactivated => ApiError::Unauthorized("the account is deactivated"),
            UserError::DisplayNameTooLong { .. } => {
                ApiError::invalid_field("display_name", error.to_string())
            }
            UserError::ReasonRequired => ApiError::invalid_field("reason", error.to_string()),
        },
        AggregateError::AggregateConflict => ApiError::Conflict(
            "the account was changed by another request at the same time; retry".to_owned(),
        ),
        other => ApiError::internal(anyhow::Error::new(other).context("running a user command")),
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
    let user_id = UserId::new();
    let metadata = CommandMetadata {
        actor: format!("user:{user_id}"),
        correlation_id: context.correlation_id,
        causation_id: context.request_id,
        request_id: context.request_id,
        idempotency_key: None,
    };
    let receipt = state
        .events
        .execute_with_password(
            &user_id.to_string(),
            UserCommand::Register { user_id, email },
            &metadata,
            password_hash,
        )
        .await
        .map_err(|error| match error {
            // The user id is new, so the only conflict is the e-mail's unique index.
            AggregateError::AggregateConflict => {
                ApiError::Conflict("this e-mail address is already registered".to_owned())
            }
            other => user_error(other),
        })?;
    tracing::info!(%user_id, "user registered");
    let response = (
        StatusCode::CREATED,
        [(header::LOCATION, "/me".to_owned())],
        Json(RegisterResponse { user_id }),
    )
        .into_response();
    Ok(with_position(response, receipt.position))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VerifyEmailRequest {
    /// The token from the verification mail's link.
    pub token: String,
}

/// What verifying a token did.
enum Verification {
    Verified(Option<crate::event_store::LogPosition>),
}

async fn apply_verification_token(
    state: &AppState,
    context: RequestContext,
    token: &str,
) -> Result<Verification, ApiError> {
    let verified = state
        .signed_tokens
        .check(TokenPurpose::VerifyEmail, token, chrono::Utc::now())
        .map_err(|error| match error {
            TokenError::Forged => {
                ApiError::BadRequest("the verification token is not valid".to_owned())
            }
            TokenError::Expired => {
                ApiError::Gone("the verification link has expired; ask for a new one")
            }
        })?;
    let (user, _) = state
        .events
        .load::<User>(&verified.user_id.to_string())
        .await
        .map_err(user_error)?;
    // A token for an address the user no longer has verifies nothing.
    let matches_address = user
        .email()
        .is_some_and(|email| email_digest(&email.normalized()) == verified.email_digest);
    if !matches_address {
        return Err(ApiError::BadRequest(
            "the verification token is not valid".to_owned(),
        ));
    }
    let metadata = CommandMetadata {
        actor: format!("user:{}", verified.user_id),
        correlation_id: context.correlation_id,
        causation_id: context.request_id,
        request_id: context.request_id,
        idempotency_key: None,
    };
    let receipt = state
        .events
        .execute::<User>(
            &verified.user_id.to_string(),
            UserCommand::VerifyEmail,
            &metadata,
        )
        .await
        .map_err(user_error)?;
    Ok(Verification::Verified(receipt.position))
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
    let Verification::Verified(position) =
        apply_verification_token(&state, context, &request.token).await?;
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
        Ok(Verification::Verified(_)) => (
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
    let page = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{heading} · Orders</title></head>\
         <body><h1>{heading}</h1><p>{text}</p></body></html>"
    );
    (status, Html(page)).into_response()
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
/// work (a password hash is verified either way); repeated failures per e-mail and
/// per client address get 429 with `Retry-After`.
#[utoipa::path(post, path = "/auth/login", tag = "accounts",
    request_body = LoginRequest,
    responses((status = 200, body = LoginResponse), (status = 401, body = crate::problem::Problem),
              (status = 429, body = crate::problem::Problem)))]
pub async fn login(
    State(state): State<Arc<AppState>>,
    ClientAddress(client): ClientAddress,
    AppJson(request): AppJson<LoginRequest>,
) -> Result<Response, ApiError> {
    let normalized = EmailAddress::parse(&request.email)
        .map(|email| email.normalized())
        .unwrap_or_else(|_| request.email.trim().to_lowercase());
    let keys = ThrottleKeys::new(&normalized, client);
    let now = chrono::Utc::now();
    if let Some(retry_after_secs) = state
        .login_throttle
        .locked_for(&keys, now)
        .await
        .context("reading the login throttle")?
    {
        state
            .metrics
            .logins
            .get_or_create(&OutcomeLabels {
                outcome: "throttled",
            })
            .inc();
        return Err(ApiError::TooManyRequests { retry_after_secs });
    }
    let user_id = user_lookup::user_by_email(state.pool(), &normalized)
        .await
        .context("looking up an e-mail address")?;
    // Load something either way, so both paths issue the same statements.
    let user_id_or_none = user_id.unwrap_or_else(UserId::new);
    let (user, _) = state
        .events
        .load::<User>(&user_id_or_none.to_string())
        .await
        .map_err(user_error)?;
    let stored_hash = user_lookup::password_hash(state.pool(), user_id_or_none)
        .await
        .context("reading credentials")?;
    let stored_hash = match (user_id, stored_hash) {
        (Some(_), Some(hash)) => hash,
        _ => state.dummy_password_hash.clone(),
    };
    let password_matches = verify_password(request.password, stored_hash).await?;
    state.metrics.password_verifications.inc();
    let may_log_in = password_matches && user_id.is_some() && !user.is_deactivated();
    if !may_log_in {
        state
            .login_throttle
            .record_failure(&keys, now)
            .await
            .context("recording a failed login")?;
        state
            .metrics
            .logins
            .get_or_create(&OutcomeLabels { outcome: "failure" })
            .inc();
        return Err(ApiError::Unauthorized(LOGIN_REFUSED));
    }
    let user_id = user_id.expect("checked above");
    state
        .login_throttle
        .record_success(&keys)
        .await
        .context("clearing the login throttle")?;
    state
        .metrics
        .logins
        .get_or_create(&OutcomeLabels { outcome: "success" })
        .inc();
    let access_token = state.access_tokens.issue(user_id)?;
    Ok(Json(LoginResponse {
        access_token,
        token_type: "Bearer".to_owned(),
        expires_in: state.access_tokens.lifetime().as_secs(),
    })
    .into_response())
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
    let page = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{heading} · Orders</title></head>\
         <body><h1>{heading}</h1><p>{text}</p></body></html>"
    );
    (status, Html(page)).into_response()
}

async fn apply_unsubscribe_token(
    state: &AppState,
    context: RequestContext,
    token: &str,
) -> Result<(), ApiError> {
    let verified = state
        .signed_tokens
        .check(TokenPurpose::Unsubscribe, token, chrono::Utc::now())
        .map_err(|error| match error {
            TokenError::Forged => {
                ApiError::BadRequest("the unsubscribe token is not valid".to_owned())
            }
            TokenError::Expired => ApiError::Gone("the unsubscribe link has expired"),
        })?;
    let (user, _) = state
        .events
        .load::<User>(&verified.user_id.to_string())
        .await
        .map_err(user_error)?;
    let matches_address = user
        .email()
        .is_some_and(|email| email_digest(&email.normalized()) == verified.email_digest);
    if !matches_address {
        return Err(ApiError::BadRequest(
            "the unsubscribe token is not valid".to_owned(),
        ));
    }
    let metadata = CommandMetadata {
        actor: format!("user:{}", verified.user_id),
        correlation_id: context.correlation_id,
        causation_id: context.request_id,
        request_id: context.request_id,
        idempotency_key: None,
    };
    state
        .events
        .execute::<User>(
            &verified.user_id.to_string(),
            UserCommand::ChangeNotificationPreferences {
                price_alerts: false,
            },
            &metadata,
        )
        .await
        .map_err(user_error)?;
    Ok(())
}
