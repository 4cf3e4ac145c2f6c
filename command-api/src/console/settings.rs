//! The settings page: the profile (display name), price-alert mails, and the
//! password, through the same commands and checks as `PATCH /me` and
//! `POST /me/password`.

use std::sync::Arc;

use askama::Template;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::Form;
use orders_application::accounts::{self, ProfileChange};
use serde::Deserialize;

use super::pages::{page, Chrome, ErrorPage};
use super::session::SignedIn;
use super::{caller, chrome_of, see_other};
use crate::http::accounts::{caller_metadata, user_command_error, ClientAddress};
use crate::http::profile::change_password_checked;
use crate::http::RequestContext;
use crate::problem::ApiError;
use crate::AppState;

#[derive(Template)]
#[template(path = "console/settings.html")]
struct SettingsPage {
    chrome: Chrome,
    notice: Option<&'static str>,
    display_name: String,
    display_name_error: Option<String>,
    price_alerts: bool,
    current_password_error: Option<String>,
    new_password_error: Option<String>,
}

async fn settings_page(state: &AppState, session: &SignedIn) -> Result<SettingsPage, ErrorPage> {
    let (chrome, user) = chrome_of(state, session).await?;
    Ok(SettingsPage {
        chrome,
        notice: None,
        display_name: user.display_name().unwrap_or_default().to_owned(),
        display_name_error: None,
        price_alerts: user.price_alerts_enabled(),
        current_password_error: None,
        new_password_error: None,
    })
}

#[derive(Debug, Deserialize)]
pub(super) struct SavedParam {
    saved: Option<String>,
}

pub(super) async fn show(
    State(state): State<Arc<AppState>>,
    session: SignedIn,
    Query(params): Query<SavedParam>,
) -> Result<Response, ErrorPage> {
    let mut template = settings_page(&state, &session).await?;
    if params.saved.is_some() {
        template.notice = Some("Saved.");
    }
    Ok(page(StatusCode::OK, &template))
}

#[derive(Debug, Deserialize)]
pub(super) struct ProfileForm {
    #[serde(rename = "_csrf", default)]
    csrf: String,
    #[serde(default)]
    display_name: String,
    /// Present (`on`) when the box is ticked; a browser sends nothing otherwise.
    price_alerts: Option<String>,
}

pub(super) async fn save_profile(
    State(state): State<Arc<AppState>>,
    session: SignedIn,
    context: RequestContext,
    headers: HeaderMap,
    Form(form): Form<ProfileForm>,
) -> Result<Response, ErrorPage> {
    session.check_form(&state, &headers, &form.csrf)?;
    let change = ProfileChange {
        display_name: Some(Some(form.display_name.clone())),
        price_alerts: Some(form.price_alerts.is_some()),
    };
    let metadata = caller_metadata(caller(&session), context);
    match accounts::change_profile(&state.events, session.0.user_id, change, &metadata).await {
        Ok(_) => Ok(see_other("/app/settings?saved=1")),
        Err(error) => match user_command_error(error, "changing a profile") {
            ApiError::Internal(error) => Err(ErrorPage::internal(error)),
            refused => {
                let mut template = settings_page(&state, &session).await?;
                template.display_name = form.display_name;
                template.display_name_error = Some(refused.to_string());
                Ok(page(StatusCode::UNPROCESSABLE_ENTITY, &template))
            }
        },
    }
}

#[derive(Debug, Deserialize)]
pub(super) struct PasswordForm {
    #[serde(rename = "_csrf", default)]
    csrf: String,
    #[serde(default)]
    current_password: String,
    #[serde(default)]
    new_password: String,
}

/// Changes the password (the API's checks and throttle); every session ends with
/// it, this one too, so the browser goes to the sign-in page.
pub(super) async fn change_password(
    State(state): State<Arc<AppState>>,
    session: SignedIn,
    context: RequestContext,
    ClientAddress(client): ClientAddress,
    headers: HeaderMap,
    Form(form): Form<PasswordForm>,
) -> Result<Response, ErrorPage> {
    session.check_form(&state, &headers, &form.csrf)?;
    let changed = change_password_checked(
        &state,
        caller(&session),
        context,
        client,
        form.current_password,
        form.new_password,
    )
    .await;
    match changed {
        Ok(_) => Ok(see_other("/app/login")),
        Err(ApiError::Internal(error)) => Err(ErrorPage::internal(error)),
        Err(error) => {
            let mut template = settings_page(&state, &session).await?;
            let status = match error {
                ApiError::InvalidField { field, message } if field == "new_password" => {
                    template.new_password_error = Some(message);
                    StatusCode::UNPROCESSABLE_ENTITY
                }
                ApiError::InvalidField { message, .. } => {
                    template.current_password_error = Some(message);
                    StatusCode::UNPROCESSABLE_ENTITY
                }
                ApiError::TooManyRequests { retry_after_secs } => {
                    template.current_password_error = Some(format!(
                        "Too many attempts. Try again in {retry_after_secs} seconds."
                    ));
                    StatusCode::TOO_MANY_REQUESTS
                }
                other => {
                    template.current_password_error = Some(other.to_string());
                    StatusCode::CONFLICT
                }
            };
            Ok(page(status, &template))
        }
    }
}
