//! The shopper's account pages around signing in: the forgotten password (ask for
//! the mail, then the form its link opens, which needs no JavaScript) and asking
//! for another verification mail from the tracking orders page.
//!
//! Each form calls the JSON API's own checked function
//! (`http::password_reset::request_password_reset_checked`, `reset_password_checked`
//! and `check_password_reset_token`, `http::accounts::request_verification_mail_checked`):
//! the same application commands, checks, throttles and minimum answer time, so
//! the console can do nothing here the API cannot, nor differently. The forms used
//! before a session (forgotten password, reset) carry the pre-session CSRF token,
//! the resend button the session's.

use std::sync::Arc;

use askama::Template;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Form, Router};
use serde::Deserialize;

use super::pages::{page, Chrome, ErrorPage};
use super::session::SignedIn;
use super::{
    caller, check_pre_session_form, orders_template, placement_form, pre_session_csrf,
    pre_session_page, see_other, CsrfOnly,
};
use crate::http::accounts::{
    request_verification_mail_checked, ClientAddress, MailLinkPage, PageLink,
};
use crate::http::password_reset::{
    check_password_reset_token, request_password_reset_checked, reset_password_checked,
};
use crate::http::RequestContext;
use crate::problem::ApiError;
use crate::AppState;

pub(crate) fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route(
            "/app/forgot-password",
            get(forgot_password_page).post(forgot_password),
        )
        .route(
            "/app/reset-password",
            get(reset_password_page).post(reset_password),
        )
        .route("/app/verify/resend", post(resend_verification_mail))
}

/// The notices the sign-in and tracking orders pages show after these forms sent
/// the browser there (`?notice=<key>`): fixed texts by key, so that a link cannot
/// make a page of ours say anything else.
pub(super) fn notice(key: Option<&str>) -> Option<&'static str> {
    match key? {
        "password-changed" => Some("Your password was changed; sign in with the new one."),
        "verification-sent" => Some(
            "We sent the link again. It may take a minute to arrive, and it is valid for two days.",
        ),
        "already-verified" => Some("Your e-mail address is already verified."),
        _ => None,
    }
}

/// A wait as people read it: seconds under a minute and a half, else minutes.
fn readable_wait(secs: u64) -> String {
    if secs < 90 {
        format!("{secs} seconds")
    } else {
        format!("{} minutes", secs.div_ceil(60))
    }
}

#[derive(Template)]
#[template(path = "console/forgot_password.html")]
struct ForgotPasswordPage {
    chrome: Chrome,
    csrf: String,
    sent: bool,
    email: String,
    email_error: Option<String>,
    form_error: Option<String>,
}

#[derive(Debug, Deserialize)]
struct SentParam {
    sent: Option<String>,
}

/// The form that asks for a password-reset mail; after it, the notice that says a
/// link went out if an account has the address (whether or not one has).
async fn forgot_password_page(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Query(params): Query<SentParam>,
) -> Response {
    let (csrf, new_cookie) = pre_session_csrf(&headers);
    let template = ForgotPasswordPage {
        chrome: Chrome::default(),
        csrf: csrf.clone(),
        sent: params.sent.is_some(),
        email: String::new(),
        email_error: None,
        form_error: None,
    };
    pre_session_page(&state, StatusCode::OK, &template, &csrf, new_cookie)
}

#[derive(Debug, Deserialize)]
struct ForgotPasswordForm {
    #[serde(rename = "_csrf", default)]
    csrf: String,
    #[serde(default)]
    email: String,
}

/// Asks for the reset mail as `POST /auth/password-reset` does (its throttle and
/// minimum answer time too), and answers the same for any well-formed address.
async fn forgot_password(
    State(state): State<Arc<AppState>>,
    context: RequestContext,
    ClientAddress(client): ClientAddress,
    headers: HeaderMap,
    Form(form): Form<ForgotPasswordForm>,
) -> Result<Response, ErrorPage> {
    check_pre_session_form(&state, &headers, &form.csrf)?;
    let refused = match request_password_reset_checked(&state, &form.email, context, client).await {
        Ok(()) => return Ok(see_other("/app/forgot-password?sent=1")),
        Err(ApiError::Internal(error)) => return Err(ErrorPage::internal(error)),
        Err(refused) => refused,
    };
    let mut template = ForgotPasswordPage {
        chrome: Chrome::default(),
        csrf: form.csrf,
        sent: false,
        email: form.email,
        email_error: None,
        form_error: None,
    };
    let status = match refused {
        ApiError::InvalidField { message, .. } => {
            template.email_error = Some(message);
            StatusCode::UNPROCESSABLE_ENTITY
        }
        ApiError::TooManyRequests { retry_after_secs } => {
            template.form_error = Some(format!(
                "Too many requests for a new password. Try again in {}.",
                readable_wait(retry_after_secs)
            ));
            StatusCode::TOO_MANY_REQUESTS
        }
        other => {
            template.form_error = Some(other.to_string());
            StatusCode::BAD_REQUEST
        }
    };
    Ok(page(status, &template))
}

#[derive(Template)]
#[template(path = "console/reset_password.html")]
struct ResetPasswordPage {
    chrome: Chrome,
    csrf: String,
    token: String,
    password_error: Option<String>,
}

#[derive(Debug, Deserialize)]
struct TokenParam {
    token: Option<String>,
}

/// The page the reset mail's link leads to (through `GET
/// /auth/password-reset/confirm`): the form for the new password when the link
/// still works, else why it does not. Opening it changes nothing.
async fn reset_password_page(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Query(link): Query<TokenParam>,
) -> Response {
    let checked = match link.token {
        Some(token) => check_password_reset_token(&state, &token)
            .await
            .map(|_| token),
        None => Err(ApiError::BadRequest("the link has no token".to_owned())),
    };
    let response = match checked {
        Ok(token) => {
            let (csrf, new_cookie) = pre_session_csrf(&headers);
            let template = ResetPasswordPage {
                chrome: Chrome::default(),
                csrf: csrf.clone(),
                token,
                password_error: None,
            };
            pre_session_page(&state, StatusCode::OK, &template, &csrf, new_cookie)
        }
        Err(error) => dead_link(error),
    };
    kept_private(response)
}

#[derive(Debug, Deserialize)]
struct ResetPasswordForm {
    #[serde(rename = "_csrf", default)]
    csrf: String,
    #[serde(default)]
    token: String,
    #[serde(default)]
    password: String,
}

/// Sets the new password as `POST /auth/password-reset/confirm` does (every session
/// of the user ends with it), then sends the browser to sign in with it. A weak
/// password shows the form again with the error beside the field; a dead link says
/// why.
async fn reset_password(
    State(state): State<Arc<AppState>>,
    context: RequestContext,
    ClientAddress(client): ClientAddress,
    headers: HeaderMap,
    Form(form): Form<ResetPasswordForm>,
) -> Result<Response, ErrorPage> {
    check_pre_session_form(&state, &headers, &form.csrf)?;
    let outcome = reset_password_checked(&state, &form.token, form.password, context, client).await;
    let response = match outcome {
        // Every session of the link's user has ended; a cookie of one of them, here,
        // now names none. (This browser may be signed in as someone else: theirs stays.)
        Ok(_) => see_other("/app/login?notice=password-changed"),
        Err(ApiError::InvalidField { message, .. }) => {
            let template = ResetPasswordPage {
                chrome: Chrome::default(),
                csrf: form.csrf,
                token: form.token,
                password_error: Some(message),
            };
            page(StatusCode::UNPROCESSABLE_ENTITY, &template)
        }
        Err(ApiError::Internal(error)) => return Err(ErrorPage::internal(error)),
        Err(error) => dead_link(error),
    };
    Ok(kept_private(response))
}

/// The page of a reset link that no longer works (410: expired or used) or never
/// did (400), with the way to ask for a new one.
fn dead_link(error: ApiError) -> Response {
    let (status, heading, lines) = match error {
        ApiError::Gone(detail) => (
            StatusCode::GONE,
            "This link no longer works",
            vec![
                format!("{}.", capitalised(detail)),
                "Password-reset links are valid for an hour, and once.".to_owned(),
            ],
        ),
        _ => (
            StatusCode::BAD_REQUEST,
            "This link is not valid",
            vec!["The link may have been cut off by your mail program: copy the whole link into your browser, or ask for a new one.".to_owned()],
        ),
    };
    MailLinkPage {
        chrome: Chrome::default(),
        heading,
        lines,
        link: PageLink {
            href: "/app/forgot-password",
            text: "Ask for a new link",
        },
    }
    .into_response(status)
}

/// The reset pages carry the link's token (in the address, in the form): kept out
/// of caches and of any other site's `Referer` (`same-origin`, not `no-referrer`,
/// which would make browsers send the form with `Origin: null`, refused as another
/// site's), and nothing but our stylesheet and our own form target allowed on them.
fn kept_private(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'self'; form-action 'self'; base-uri 'none'; \
             frame-ancestors 'none'",
        ),
    );
    response
}

fn capitalised(text: &str) -> String {
    let mut chars = text.chars();
    chars
        .next()
        .map(|first| first.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}

/// The tracking orders page's "Send the link again": another verification mail, as
/// `POST /auth/verify/resend` asks for it (one a minute), then back to the page
/// with a notice; too soon, the page says when to try again.
async fn resend_verification_mail(
    State(state): State<Arc<AppState>>,
    session: SignedIn,
    context: RequestContext,
    headers: HeaderMap,
    Form(form): Form<CsrfOnly>,
) -> Result<Response, ErrorPage> {
    session.check_form(&state, &headers, &form.csrf)?;
    match request_verification_mail_checked(&state, caller(&session), context).await {
        Ok(_) => Ok(see_other("/app/?notice=verification-sent")),
        Err(ApiError::Conflict(_)) => Ok(see_other("/app/?notice=already-verified")),
        Err(ApiError::TooManyRequests { retry_after_secs }) => {
            let mut template =
                orders_template(&state, &session, None, placement_form(None)).await?;
            template.notice = Some(format!(
                "We sent you a link less than a minute ago. You can ask for another in {}.",
                readable_wait(retry_after_secs)
            ));
            Ok(page(StatusCode::TOO_MANY_REQUESTS, &template))
        }
        Err(ApiError::Internal(error)) => Err(ErrorPage::internal(error)),
        // The account can no longer act: its session is as good as gone.
        Err(_) => Ok(see_other("/app/login")),
    }
}
