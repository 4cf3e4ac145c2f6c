//! The caller's own account: profile, notification preferences, password.
//!
//! Read from the user aggregate until the query views exist: a user's stream is
//! short (a handful of events), so loading it is one indexed read.

use std::sync::Arc;

use anyhow::Context as _;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use orders_domain::ids::UserId;
use orders_domain::password_policy::check_password;
use orders_domain::user::User;
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::ToSchema;

use crate::auth::{hash_password, verify_password, CurrentUser};
use crate::http::accounts::{caller_metadata, inactive_account, user_command_error, ClientAddress};
use crate::http::{with_position, RequestContext};
use crate::login_throttle::ThrottleKeys;
use crate::problem::{ApiError, AppJson};
use crate::AppState;
use orders_application::accounts;
use orders_store::user_lookup;

pub fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/me", get(show_profile).patch(update_profile))
        .route("/me/password", post(change_password))
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct NotificationPreferences {
    /// Mail me when a tracked price reaches my target (on by default).
    pub price_alerts: bool,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Profile {
    #[schema(value_type = String, format = Uuid)]
    pub user_id: UserId,
    pub email: String,
    pub email_verified: bool,
    pub display_name: Option<String>,
    pub notification_preferences: NotificationPreferences,
    /// `admin`, `auditor`.
    pub roles: Vec<String>,
}

/// Loads the caller's account, refusing one that is gone or deactivated, or a token
/// issued before the password last changed.
async fn load_active_user(state: &AppState, caller: CurrentUser) -> Result<User, ApiError> {
    let user = accounts::active_user(&state.events, caller.user_id)
        .await
        .map_err(inactive_account)?;
    crate::auth::require_current_credentials(caller, user.credentials_version())?;
    Ok(user)
}

#[utoipa::path(get, path = "/me", tag = "profile", security(("bearer" = [])),
    responses((status = 200, body = Profile), (status = 401, body = crate::problem::Problem)))]
pub async fn show_profile(
    State(state): State<Arc<AppState>>,
    caller: CurrentUser,
) -> Result<Json<Profile>, ApiError> {
    let user = load_active_user(&state, caller).await?;
    Ok(Json(Profile {
        user_id: caller.user_id,
        email: user
            .email()
            .map(|email| email.as_str().to_owned())
            .unwrap_or_default(),
        email_verified: user.email_verified(),
        display_name: user.display_name().map(str::to_owned),
        notification_preferences: NotificationPreferences {
            price_alerts: user.price_alerts_enabled(),
        },
        roles: user
            .roles()
            .iter()
            .map(|role| role.as_str().to_owned())
            .collect(),
    }))
}

/// `PATCH /me`: fields left out are unchanged; `"display_name": null` clears it.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProfileChange {
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    pub display_name: Option<Option<String>>,
    #[serde(default)]
    pub notification_preferences: Option<NotificationPreferences>,
}

/// Tells a field that is present (even as `null`) from one that is absent.
fn present<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

#[utoipa::path(patch, path = "/me", tag = "profile", security(("bearer" = [])),
    request_body = ProfileChange,
    responses((status = 204), (status = 401, body = crate::problem::Problem),
              (status = 422, body = crate::problem::Problem)))]
pub async fn update_profile(
    State(state): State<Arc<AppState>>,
    caller: CurrentUser,
    context: RequestContext,
    AppJson(change): AppJson<ProfileChange>,
) -> Result<Response, ApiError> {
    load_active_user(&state, caller).await?;
    let change = accounts::ProfileChange {
        display_name: change.display_name,
        price_alerts: change
            .notification_preferences
            .map(|preferences| preferences.price_alerts),
    };
    let metadata = caller_metadata(caller, context);
    let position = accounts::change_profile(&state.events, caller.user_id, change, &metadata)
        .await
        .map_err(|error| user_command_error(error, "changing a profile"))?;
    Ok(with_position(
        StatusCode::NO_CONTENT.into_response(),
        position,
    ))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PasswordChange {
    pub current_password: String,
    /// 12 to 128 characters; the most common passwords are refused.
    pub new_password: String,
}

/// Changes the password after checking the current one. Wrong current passwords
/// count towards the same login throttle, so a stolen token cannot be used to guess.
#[utoipa::path(post, path = "/me/password", tag = "profile", security(("bearer" = [])),
    request_body = PasswordChange,
    responses((status = 204), (status = 401, body = crate::problem::Problem),
              (status = 422, body = crate::problem::Problem), (status = 429, body = crate::problem::Problem)))]
pub async fn change_password(
    State(state): State<Arc<AppState>>,
    caller: CurrentUser,
    context: RequestContext,
    ClientAddress(client): ClientAddress,
    AppJson(change): AppJson<PasswordChange>,
) -> Result<Response, ApiError> {
    let receipt = change_password_checked(
        &state,
        caller,
        context,
        client,
        change.current_password,
        change.new_password,
    )
    .await?;
    Ok(with_position(
        StatusCode::NO_CONTENT.into_response(),
        receipt.position,
    ))
}

/// Changes the caller's password after checking the current one, as
/// `POST /me/password` and the console's settings page do: the new password checked
/// against the policy (422 `new_password`), the check of the current one counted by
/// the login throttle (429 when locked; 422 `current_password` when wrong), and every
/// console session of the user ended.
pub(crate) async fn change_password_checked(
    state: &AppState,
    caller: CurrentUser,
    context: RequestContext,
    client: std::net::IpAddr,
    current_password: String,
    new_password: String,
) -> Result<orders_store::event_store::CommandReceipt, ApiError> {
    let user = load_active_user(state, caller).await?;
    let email = user
        .email()
        .map(|email| email.normalized())
        .unwrap_or_default();
    check_password(&new_password)
        .map_err(|error| ApiError::invalid_field("new_password", error.to_string()))?;
    // Counted like a login before the password is verified: a stolen token must not
    // become an unthrottled way to guess the password.
    let keys = ThrottleKeys::new(&email, client);
    let attempt = crate::http::accounts::admit_password_check(state, &keys).await?;
    let stored = user_lookup::password_hash(state.pool(), caller.user_id)
        .await
        .context("reading credentials")?
        .context("a registered user without credentials")?;
    if !verify_password(current_password, stored).await? {
        return Err(ApiError::invalid_field(
            "current_password",
            "the current password is not correct",
        ));
    }
    state
        .login_throttle
        .succeeded(&attempt, chrono::Utc::now())
        .await
        .context("giving a successful password check's place back")?;
    let password_hash = hash_password(new_password).await?;
    let metadata = caller_metadata(caller, context);
    let receipt =
        accounts::change_password(&state.events, caller.user_id, password_hash, &metadata)
            .await
            .map_err(|error| user_command_error(error, "changing a password"))?;
    // Every console session of the user ends with the old password.
    crate::console::session::end_all_of(state.pool(), caller.user_id)
        .await
        .context("ending the user's sessions")?;
    Ok(receipt)
}
