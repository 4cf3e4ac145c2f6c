//! Following a link from one of our mails: a signed, expiring token for one purpose
//! (verify the address, unsubscribe from price alerts), checked, then the user
//! command it stands for, as the user. A token names the address it was mailed to
//! (a digest of it): a user whose address is no longer that one is not served by it.

use chrono::{DateTime, Utc};
use orders_domain::user::{User, UserCommand, UserError};
use orders_store::event_store::{CommandReceipt, EventStore};

use crate::signed_tokens::{email_digest, SignedTokens, TokenError, TokenPurpose};
use crate::{CommandError, RequestIds};

/// Why a link did nothing.
#[derive(Debug, thiserror::Error)]
pub enum MailLinkError {
    /// Not a token we signed for this purpose, or for an address the user no
    /// longer has.
    #[error("the token is not valid")]
    Invalid,
    #[error("the link has expired")]
    Expired,
    #[error(transparent)]
    Command(CommandError<UserError>),
}

/// Checks `token` for `purpose` and, when it holds, runs `command` on its user as
/// that user.
pub async fn follow(
    events: &EventStore,
    tokens: &SignedTokens,
    purpose: TokenPurpose,
    token: &str,
    now: DateTime<Utc>,
    command: UserCommand,
    request: RequestIds,
) -> Result<CommandReceipt, MailLinkError> {
    let verified = tokens
        .check(purpose, token, now)
        .map_err(|error| match error {
            TokenError::Forged => MailLinkError::Invalid,
            TokenError::Expired => MailLinkError::Expired,
        })?;
    let user_id = verified.user_id.to_string();
    let (user, _) = events
        .load::<User>(&user_id)
        .await
        .map_err(|error| MailLinkError::Command(error.into()))?;
    let matches_address = user
        .email()
        .is_some_and(|email| email_digest(&email.normalized()) == verified.email_digest);
    if !matches_address {
        return Err(MailLinkError::Invalid);
    }
    events
        .execute::<User>(
            &user_id,
            command,
            &request.metadata(format!("user:{}", verified.user_id)),
        )
        .await
        .map_err(|error| MailLinkError::Command(error.into()))
}
