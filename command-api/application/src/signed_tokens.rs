//! Signed, expiring tokens for the links we mail: e-mail verification, unsubscribe
//! and password reset.
//!
//! Nothing is stored: a token carries its purpose, the user, a digest of the e-mail
//! address it was issued for and its expiry, and an HMAC-SHA256 over all of that
//! under a key derived from the service secret. A forged or garbled token fails the
//! MAC; a token for an address the user no longer has fails the digest.
//!
//! A password-reset token also names the password it replaces: the user's
//! credentials version (how many times the password had changed) when the reset was
//! asked for, taken from the `PasswordResetRequested` event. The user aggregate
//! refuses a reset whose version is no longer the current one, so a reset link works
//! once and dies with any other password change; nothing has to be stored to remember
//! that it was used.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use std::time::Duration;

use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use orders_domain::ids::UserId;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

type HmacSha256 = Hmac<Sha256>;

/// How long a password-reset link is valid: long enough to read the mail, short
/// enough that an old mailbox is not a way into the account.
pub const PASSWORD_RESET_LINK_LIFETIME: Duration = Duration::from_secs(3600);

/// What a token lets its holder do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenPurpose {
    VerifyEmail,
    /// The unsubscribe link of a price-alert mail: turns price alerts off.
    Unsubscribe,
    /// The link of a password-reset mail: sets a new password, once.
    PasswordReset,
}

/// Why a token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not a token of ours (bad format, bad signature, another purpose).
    #[error("the token is not valid")]
    Forged,
    /// Ours and intact, but past its expiry.
    #[error("the token has expired")]
    Expired,
}

/// A token's content, once its signature has been checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedToken {
    pub user_id: UserId,
    /// Hex SHA-256 of the normalised e-mail address the token was issued for.
    pub email_digest: String,
    /// For a password-reset token: the credentials version of the password it
    /// replaces (always present in one, absent in the others).
    pub credentials_version: Option<u32>,
}

#[derive(Serialize, Deserialize)]
struct Claims {
    purpose: TokenPurpose,
    user_id: UserId,
    email_digest: String,
    expires_at: i64,
    /// Only in password-reset tokens, so the other tokens keep their shape.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    credentials_version: Option<u32>,
}

/// Mints and checks signed tokens.
pub struct SignedTokens {
    key: Vec<u8>,
}

/// The digest of a normalised e-mail address that tokens carry.
pub fn email_digest(normalized_email: &str) -> String {
    let digest = Sha256::digest(normalized_email.as_bytes());
    digest.iter().map(|byte| format!("{byte:02x}")).collect()
}

impl SignedTokens {
    /// Derives the signing key from the service secret, so that a token MAC can never
    /// be mistaken for (or used as) an access token signature.
    pub fn new(service_secret: &[u8]) -> Self {
        let mut mac =
            HmacSha256::new_from_slice(service_secret).expect("HMAC accepts keys of any length");
        mac.update(b"orders/signed-link-tokens/v1");
        Self {
            key: mac.finalize().into_bytes().to_vec(),
        }
    }

    fn mac(&self) -> HmacSha256 {
        HmacSha256::new_from_slice(&self.key).expect("HMAC accepts keys of any length")
    }

    /// A token for a verification or unsubscribe link. (Password-reset tokens name
    /// the password they replace: [`SignedTokens::mint_password_reset`].)
    pub fn mint(
        &self,
        purpose: TokenPurpose,
        user_id: UserId,
        normalized_email: &str,
        expires_at: DateTime<Utc>,
    ) -> String {
        self.sign(&Claims {
            purpose,
            user_id,
            email_digest: email_digest(normalized_email),
            expires_at: expires_at.timestamp(),
            credentials_version: None,
        })
    }

    /// A token for a password-reset link, valid until `expires_at` and only while
    /// the user's credentials version is still `credentials_version` (the one the
    /// `PasswordResetRequested` event names).
    pub fn mint_password_reset(
        &self,
        user_id: UserId,
        normalized_email: &str,
        credentials_version: u32,
        expires_at: DateTime<Utc>,
    ) -> String {
        self.sign(&Claims {
            purpose: TokenPurpose::PasswordReset,
            user_id,
            email_digest: email_digest(normalized_email),
            expires_at: expires_at.timestamp(),
            credentials_version: Some(credentials_version),
        })
    }

    fn sign(&self, claims: &Claims) -> String {
        let body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).expect("claims serialise"));
        let mut mac = self.mac();
        mac.update(body.as_bytes());
        let signature = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        format!("{body}.{signature}")
    }

    pub fn check(
        &self,
        purpose: TokenPurpose,
        token: &str,
        now: DateTime<Utc>,
    ) -> Result<VerifiedToken, TokenError> {
        let (body, signature) = token.trim().split_once('.').ok_or(TokenError::Forged)?;
        let signature = URL_SAFE_NO_PAD
            .decode(signature)
            .map_err(|_| TokenError::Forged)?;
        let mut mac = self.mac();
        mac.update(body.as_bytes());
        // verify_slice compares in constant time.
        mac.verify_slice(&signature)
            .map_err(|_| TokenError::Forged)?;
        let claims: Claims = URL_SAFE_NO_PAD
            .decode(body)
            .ok()
            .and_then(|json| serde_json::from_slice(&json).ok())
            .ok_or(TokenError::Forged)?;
        if claims.purpose != purpose {
            return Err(TokenError::Forged);
        }
        // Cannot happen with our own tokens; refuse rather than reset without a
        // version to check.
        if (purpose == TokenPurpose::PasswordReset) != claims.credentials_version.is_some() {
            return Err(TokenError::Forged);
        }
        if claims.expires_at <= now.timestamp() {
            return Err(TokenError::Expired);
        }
        Ok(VerifiedToken {
            user_id: claims.user_id,
            email_digest: claims.email_digest,
            credentials_version: claims.credentials_version,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;

    fn tokens() -> SignedTokens {
        SignedTokens::new(b"a service secret of at least 32 bytes")
    }

    #[test]
    fn a_minted_token_checks_out_until_it_expires() {
        let now = Utc::now();
        let user = UserId::new();
        let token = tokens().mint(
            TokenPurpose::VerifyEmail,
            user,
            "ann@example.com",
            now + Duration::hours(1),
        );
        let verified = tokens()
            .check(TokenPurpose::VerifyEmail, &token, now)
            .unwrap();
        assert_eq!(verified.user_id, user);
        assert_eq!(verified.email_digest, email_digest("ann@example.com"));
        assert_eq!(
            tokens().check(TokenPurpose::VerifyEmail, &token, now + Duration::hours(2)),
            Err(TokenError::Expired)
        );
    }

    #[test]
    fn a_tampered_or_foreign_token_is_forged() {
        let now = Utc::now();
        let token = tokens().mint(
            TokenPurpose::VerifyEmail,
            UserId::new(),
            "ann@example.com",
            now + Duration::hours(1),
        );
        let (body, signature) = token.split_once('.').unwrap();
        let other_body = URL_SAFE_NO_PAD.encode(
            serde_json::to_vec(&Claims {
                purpose: TokenPurpose::VerifyEmail,
                user_id: UserId::new(),
                email_digest: email_digest("eve@example.com"),
                expires_at: (now + Duration::days(365)).timestamp(),
                credentials_version: None,
            })
            .unwrap(),
        );
        let check = |candidate: &str| tokens().check(TokenPurpose::VerifyEmail, candidate, now);
        assert_eq!(
            check(&format!("{other_body}.{signature}")),
            Err(TokenError::Forged)
        );
        assert_eq!(check(&format!("{body}.AAAA")), Err(TokenError::Forged));
        assert_eq!(check("garbage"), Err(TokenError::Forged));
        let foreign = SignedTokens::new(b"somebody else's secret, 32 bytes+").mint(
            TokenPurpose::VerifyEmail,
            UserId::new(),
            "ann@example.com",
            now + Duration::hours(1),
        );
        assert_eq!(check(&foreign), Err(TokenError::Forged));
    }

    #[test]
    fn a_password_reset_token_names_the_password_it_replaces() {
        let now = Utc::now();
        let user = UserId::new();
        let token = tokens().mint_password_reset(
            user,
            "ann@example.com",
            3,
            now + Duration::from_std(PASSWORD_RESET_LINK_LIFETIME).unwrap(),
        );
        let verified = tokens()
            .check(TokenPurpose::PasswordReset, &token, now)
            .unwrap();
        assert_eq!(verified.user_id, user);
        assert_eq!(verified.email_digest, email_digest("ann@example.com"));
        assert_eq!(verified.credentials_version, Some(3));
        assert_eq!(
            tokens().check(
                TokenPurpose::PasswordReset,
                &token,
                now + Duration::minutes(61)
            ),
            Err(TokenError::Expired)
        );
        // Not a verification or unsubscribe token, and they are not reset tokens.
        assert_eq!(
            tokens().check(TokenPurpose::VerifyEmail, &token, now),
            Err(TokenError::Forged)
        );
        let verification = tokens().mint(
            TokenPurpose::VerifyEmail,
            user,
            "ann@example.com",
            now + Duration::hours(1),
        );
        assert_eq!(
            tokens().check(TokenPurpose::PasswordReset, &verification, now),
            Err(TokenError::Forged)
        );
    }

    #[test]
    fn a_reset_token_without_a_credentials_version_is_refused() {
        // Only a holder of the key could make one; it must still not reset anything.
        let now = Utc::now();
        let token = tokens().sign(&Claims {
            purpose: TokenPurpose::PasswordReset,
            user_id: UserId::new(),
            email_digest: email_digest("ann@example.com"),
            expires_at: (now + Duration::hours(1)).timestamp(),
            credentials_version: None,
        });
        assert_eq!(
            tokens().check(TokenPurpose::PasswordReset, &token, now),
            Err(TokenError::Forged)
        );
    }
}
