//! Console sessions and CSRF protection.
//!
//! Signing in creates a row in `console_sessions` (migration 0008) and sets the
//! cookie `orders_session`: a random token (256 bits), `HttpOnly`,
//! `SameSite=Lax`, `Path=/`, `Secure` when the public URL is https. Only the
//! token's SHA-256 is stored. Each session has a CSRF token that every
//! state-changing form carries as `_csrf`; a form without it, with another one, or
//! sent from another origin (`Origin`, `Sec-Fetch-Site`) is refused (403) before
//! anything runs. The forms used before a session exists (sign in, sign up) use a
//! double-submit token instead: a cookie `orders_csrf` and the same value in the
//! form. Logging out deletes the row; a password change or reset deletes every row
//! of the user.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Redirect, Response};
use base64::Engine as _;
use orders_domain::ids::UserId;
use sha2::{Digest as _, Sha256};
use sqlx::PgPool;
use uuid::Uuid;

use crate::console::pages::ErrorPage;
use crate::AppState;

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "orders_session";
/// The pre-session CSRF cookie of the sign-in and sign-up forms.
pub const CSRF_COOKIE: &str = "orders_csrf";
/// How long a session lasts.
pub const SESSION_LIFETIME: Duration = Duration::from_secs(7 * 24 * 3600);

/// 256 random bits, URL-safe base64.
pub fn random_token() -> String {
    let mut bytes = [0_u8; 32];
    bytes[..16].copy_from_slice(Uuid::new_v4().as_bytes());
    bytes[16..].copy_from_slice(Uuid::new_v4().as_bytes());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn digest(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// Compares two secrets in time that does not depend on where they differ.
pub fn same_secret(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0_u8, |diff, (x, y)| diff | (x ^ y)) == 0
}

/// A signed-in browser.
#[derive(Debug, Clone)]
pub struct ConsoleSession {
    pub user_id: UserId,
    pub csrf_token: String,
    token: String,
}

/// Starts a session for `user_id`; answers the cookie's token. The user's expired
/// sessions are deleted on the way, so the table holds no more than the live ones
/// and one sign-in's worth per user.
pub async fn start(pool: &PgPool, user_id: UserId) -> sqlx::Result<String> {
    sqlx::query(
        "DELETE FROM console_sessions WHERE user_id = $1 AND expires_at <= statement_timestamp()",
    )
    .bind(user_id.as_uuid())
    .execute(pool)
    .await?;
    let token = random_token();
    sqlx::query(
        "INSERT INTO console_sessions (token_digest, user_id, csrf_token, expires_at)
         VALUES ($1, $2, $3, statement_timestamp() + make_interval(secs => $4))",
    )
    .bind(digest(&token))
    .bind(user_id.as_uuid())
    .bind(random_token())
    .bind(SESSION_LIFETIME.as_secs_f64())
    .execute(pool)
    .await?;
    Ok(token)
}

/// The live session a cookie's token names, if any.
pub async fn find(pool: &PgPool, token: &str) -> sqlx::Result<Option<ConsoleSession>> {
    let row: Option<(Uuid, String)> = sqlx::query_as(
        "SELECT user_id, csrf_token FROM console_sessions
          WHERE token_digest = $1 AND expires_at > statement_timestamp()",
    )
    .bind(digest(token))
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|(user_id, csrf_token)| ConsoleSession {
        user_id: UserId::from_uuid(user_id),
        csrf_token,
        token: token.to_owned(),
    }))
}

/// Ends one session (logout).
pub async fn end(pool: &PgPool, session: &ConsoleSession) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM console_sessions WHERE token_digest = $1")
        .bind(digest(&session.token))
        .execute(pool)
        .await?;
    Ok(())
}

/// Ends every session of a user (a password change or reset, a deactivation).
pub async fn end_all_of(pool: &PgPool, user_id: UserId) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM console_sessions WHERE user_id = $1")
        .bind(user_id.as_uuid())
        .execute(pool)
        .await?;
    Ok(())
}

/// The value of cookie `name` in the request's headers.
pub fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
}

/// A `Set-Cookie` value for `name`, `HttpOnly`, `SameSite=Lax`, `Secure` when the
/// console is served over https; `max_age` 0 deletes it.
pub fn set_cookie(state: &AppState, name: &str, value: &str, max_age: Duration) -> HeaderValue {
    let secure = if state.config.public_url.starts_with("https://") {
        "; Secure"
    } else {
        ""
    };
    let cookie = format!(
        "{name}={value}; Path=/; HttpOnly; SameSite=Lax; Max-Age={}{secure}",
        max_age.as_secs()
    );
    HeaderValue::from_str(&cookie).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// Whether a state-changing request comes from our own pages: a browser's `Origin`
/// (or `Sec-Fetch-Site`) that says another site sent it is refused.
pub fn same_origin(state: &AppState, headers: &HeaderMap) -> bool {
    if headers
        .get("sec-fetch-site")
        .and_then(|value| value.to_str().ok())
        .is_some_and(|site| site == "cross-site" || site == "same-site")
    {
        return false;
    }
    match headers
        .get(header::ORIGIN)
        .and_then(|value| value.to_str().ok())
    {
        None => true,
        Some(origin) => {
            let host = headers
                .get(header::HOST)
                .and_then(|value| value.to_str().ok())
                .unwrap_or_default();
            let public = state.config.public_url.trim_end_matches('/');
            origin == public
                || origin == format!("http://{host}")
                || origin == format!("https://{host}")
        }
    }
}

/// The signed-in user of a console page. Without a session, a page answers with a
/// redirect to the sign-in page (which comes back here afterwards); a session whose
/// account was deactivated meanwhile is treated as none.
#[derive(Debug, Clone)]
pub struct SignedIn(pub ConsoleSession);

impl FromRequestParts<Arc<AppState>> for SignedIn {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        let to_sign_in = || {
            let next = parts
                .uri
                .path_and_query()
                .map(|path| path.as_str())
                .unwrap_or("/app/");
            let next = url::form_urlencoded::byte_serialize(next.as_bytes()).collect::<String>();
            Redirect::to(&format!("/app/login?next={next}")).into_response()
        };
        let Some(token) = cookie(&parts.headers, SESSION_COOKIE) else {
            return Err(to_sign_in());
        };
        let session = find(state.pool(), token)
            .await
            .map_err(|error| ErrorPage::internal(anyhow::Error::new(error)).into_response())?;
        let Some(session) = session else {
            return Err(to_sign_in());
        };
        let standing = orders_store::user_lookup::standing(state.pool(), session.user_id)
            .await
            .map_err(|error| ErrorPage::internal(anyhow::Error::new(error)).into_response())?;
        if standing.inactive_reason().is_some() {
            return Err(to_sign_in());
        }
        Ok(Self(session))
    }
}

impl SignedIn {
    /// Refuses a form without this session's CSRF token, or from another origin.
    pub fn check_form(
        &self,
        state: &AppState,
        headers: &HeaderMap,
        csrf: &str,
    ) -> Result<(), ErrorPage> {
        if same_origin(state, headers) && same_secret(csrf, &self.0.csrf_token) {
            Ok(())
        } else {
            Err(ErrorPage::forbidden_form())
        }
    }
}
