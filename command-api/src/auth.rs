//! Authentication: argon2id password hashes, HS256 access tokens, and the extractor
//! that turns a `Bearer` token into the calling user.
//!
//! A token only says who the caller was when it was issued. Whether that user may
//! still act (not deactivated) is checked against the event store on every request
//! by the handlers, so a deactivation takes effect on the next request.

use std::sync::Arc;
use std::time::Duration;

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier as _, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use jsonwebtoken::{Algorithm as JwtAlgorithm, DecodingKey, EncodingKey, Header, Validation};
use orders_domain::ids::UserId;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::problem::ApiError;
use crate::AppState;

/// The `iss` of our tokens.
pub const TOKEN_ISSUER: &str = "orders";
/// The `aud` of our tokens: this API.
pub const TOKEN_AUDIENCE: &str = "orders-api";

/// argon2id with OWASP's minimum (19 MiB, 2 passes, 1 lane): about 30 ms per hash
/// on our machines, run off the async threads.
fn argon2id() -> Argon2<'static> {
    let params = Params::new(19 * 1024, 2, 1, None).expect("argon2 parameters are valid");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// Hashes a password into a PHC string (algorithm, parameters, salt and hash).
pub async fn hash_password(password: String) -> anyhow::Result<String> {
    tokio::task::spawn_blocking(move || {
        let salt = SaltString::generate(&mut OsRng);
        argon2id()
            .hash_password(password.as_bytes(), &salt)
            .map(|hash| hash.to_string())
            .map_err(|error| anyhow::anyhow!("hashing a password: {error}"))
    })
    .await?
}

/// Checks a password against a PHC string. Takes the same time whether or not it
/// matches; callers without a user hash a dummy so that unknown e-mails take as long.
pub async fn verify_password(password: String, phc: String) -> anyhow::Result<bool> {
    tokio::task::spawn_blocking(move || {
        let parsed = PasswordHash::new(&phc)
            .map_err(|error| anyhow::anyhow!("reading a stored password hash: {error}"))?;
        Ok(argon2id()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok())
    })
    .await?
}

/// The claims of an access token.
#[derive(Debug, Serialize, Deserialize)]
struct AccessClaims {
    sub: String,
    iss: String,
    aud: String,
    iat: i64,
    exp: i64,
    jti: String,
    /// The user's credentials version when the token was issued (how many times
    /// the password had changed): a later change ends the token.
    #[serde(default)]
    cv: u32,
}

/// Issues and checks access tokens (JWT, HS256, with `exp`, `iss` and `aud`).
pub struct AccessTokens {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    lifetime: Duration,
}

impl AccessTokens {
    pub fn new(secret: &[u8], lifetime: Duration) -> Self {
        let mut validation = Validation::new(JwtAlgorithm::HS256);
        validation.set_issuer(&[TOKEN_ISSUER]);
        validation.set_audience(&[TOKEN_AUDIENCE]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.leeway = 5;
        Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
            lifetime,
        }
    }

    pub fn lifetime(&self) -> Duration {
        self.lifetime
    }

    /// A token for `user_id`, whose password has changed `credentials_version`
    /// times (`User::credentials_version`).
    pub fn issue(&self, user_id: UserId, credentials_version: u32) -> anyhow::Result<String> {
        let now = chrono::Utc::now().timestamp();
        let claims = AccessClaims {
            sub: user_id.to_string(),
            iss: TOKEN_ISSUER.to_owned(),
            aud: TOKEN_AUDIENCE.to_owned(),
            iat: now,
            exp: now + i64::try_from(self.lifetime.as_secs()).unwrap_or(i64::MAX / 2),
            jti: Uuid::now_v7().to_string(),
            cv: credentials_version,
        };
        Ok(jsonwebtoken::encode(
            &Header::new(JwtAlgorithm::HS256),
            &claims,
            &self.encoding,
        )?)
    }

    /// The user a token was issued to and its credentials version, if it is ours,
    /// intact and unexpired.
    pub fn verify(&self, token: &str) -> Option<(UserId, u32)> {
        let data =
            jsonwebtoken::decode::<AccessClaims>(token, &self.decoding, &self.validation).ok()?;
        Some((data.claims.sub.parse().ok()?, data.claims.cv))
    }
}

/// The caller, authenticated by a valid access token.
#[derive(Debug, Clone, Copy)]
pub struct CurrentUser {
    pub user_id: UserId,
    /// For a bearer token, the credentials version it was issued under (checked
    /// against the user's wherever their standing is read); `None` for a console
    /// session (a password change deletes the sessions themselves).
    pub credentials_version: Option<u32>,
}

impl CurrentUser {
    /// The actor recorded on the events this user causes.
    pub fn actor(&self) -> String {
        format!("user:{}", self.user_id)
    }
}

impl FromRequestParts<Arc<AppState>> for CurrentUser {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        let header = parts
            .headers
            .get(AUTHORIZATION)
            .ok_or(ApiError::Unauthorized("missing bearer token"))?;
        let token = header
            .to_str()
            .ok()
            .and_then(|value| {
                let (scheme, token) = value.split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
            })
            .ok_or(ApiError::Unauthorized("missing bearer token"))?;
        let (user_id, credentials_version) = state
            .access_tokens
            .verify(token)
            .ok_or(ApiError::Unauthorized("invalid or expired token"))?;
        Ok(Self {
            user_id,
            credentials_version: Some(credentials_version),
        })
    }
}

/// What a 401 says to a token issued before the password last changed.
pub(crate) const CREDENTIALS_CHANGED: &str =
    "the password was changed since this token was issued: sign in again";

/// Refuses (401) a caller whose account is gone or deactivated, or whose token was
/// issued before the password last changed, whatever their token says.
pub(crate) fn require_active(
    standing: orders_store::user_lookup::UserStanding,
    caller: CurrentUser,
) -> Result<(), ApiError> {
    match standing.inactive_reason() {
        Some(reason) => Err(ApiError::Unauthorized(reason)),
        None => require_current_credentials(caller, standing.credentials_version),
    }
}

/// Refuses (401) a bearer token issued under another credentials version than the
/// user's `current` one (a console session has none to compare).
pub(crate) fn require_current_credentials(
    caller: CurrentUser,
    current: u32,
) -> Result<(), ApiError> {
    match caller.credentials_version {
        Some(version) if version != current => Err(ApiError::Unauthorized(CREDENTIALS_CHANGED)),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    #[test]
    fn a_token_names_the_user_it_was_issued_to() {
        let tokens = AccessTokens::new(SECRET, Duration::from_secs(60));
        let user = UserId::new();
        let token = tokens.issue(user, 3).unwrap();
        assert_eq!(tokens.verify(&token), Some((user, 3)));
    }

    #[test]
    fn a_token_signed_with_another_secret_is_refused() {
        let ours = AccessTokens::new(SECRET, Duration::from_secs(60));
        let theirs =
            AccessTokens::new(b"another secret that is 32 bytes!", Duration::from_secs(60));
        let token = theirs.issue(UserId::new(), 0).unwrap();
        assert_eq!(ours.verify(&token), None);
    }

    #[test]
    fn an_expired_token_is_refused() {
        let tokens = AccessTokens::new(SECRET, Duration::from_secs(60));
        let past = chrono::Utc::now().timestamp() - 3_600;
        let claims = AccessClaims {
            sub: UserId::new().to_string(),
            iss: TOKEN_ISSUER.to_owned(),
            aud: TOKEN_AUDIENCE.to_owned(),
            iat: past - 60,
            exp: past,
            cv: 0,
            jti: Uuid::now_v7().to_string(),
        };
        let token =
            jsonwebtoken::encode(&Header::new(JwtAlgorithm::HS256), &claims, &tokens.encoding)
                .unwrap();
        assert_eq!(tokens.verify(&token), None);
    }

    #[test]
    fn a_token_for_another_audience_is_refused() {
        let tokens = AccessTokens::new(SECRET, Duration::from_secs(60));
        let now = chrono::Utc::now().timestamp();
        let claims = AccessClaims {
            sub: UserId::new().to_string(),
            iss: TOKEN_ISSUER.to_owned(),
            aud: "someone-else".to_owned(),
            iat: now,
            exp: now + 60,
            jti: Uuid::now_v7().to_string(),
            cv: 0,
        };
        let token =
            jsonwebtoken::encode(&Header::new(JwtAlgorithm::HS256), &claims, &tokens.encoding)
                .unwrap();
        assert_eq!(tokens.verify(&token), None);
    }

    #[tokio::test]
    async fn a_password_verifies_against_its_own_hash_only() {
        let hash = hash_password("correct horse battery staple".to_owned())
            .await
            .unwrap();
        assert!(hash.starts_with("$argon2id$"));
        assert!(
            verify_password("correct horse battery staple".to_owned(), hash.clone())
                .await
                .unwrap()
        );
        assert!(
            !verify_password("wrong horse battery staple".to_owned(), hash)
                .await
                .unwrap()
        );
    }
}
