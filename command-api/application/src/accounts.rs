//! The account's use cases: register, ask for a verification mail, ask for and
//! follow a password reset, change the password, change the profile, grant and
//! revoke roles. (Following the links of our mails is in `mail_links`.)
//!
//! Passwords arrive here already checked against the policy and hashed: hashing is
//! the caller's work (argon2 stays with the HTTP adapter), and the hash is kept with
//! the credentials, never in an event.

use std::time::Duration;

use chrono::{DateTime, Utc};
use orders_domain::email::EmailAddress;
use orders_domain::ids::UserId;
use orders_domain::user::{Role, User, UserCommand, UserError};
use orders_store::event_store::{
    execute_retrying_conflicts, CommandMetadata, CommandReceipt, EventStore, LogPosition,
};

use crate::signed_tokens::{email_digest, SignedTokens, TokenError, TokenPurpose};
use crate::{CommandError, RequestIds, StoreFailure};

/// A new account.
#[derive(Debug, Clone, Copy)]
pub struct Registered {
    pub user_id: UserId,
    pub position: Option<LogPosition>,
}

/// Registers `email` with the hash of its password, as the new user. The address is
/// unique even under concurrent registrations: the store's unique index admits one
/// `UserRegistered` per address, and a lost race is refused as `AlreadyRegistered`.
pub async fn register(
    events: &EventStore,
    email: EmailAddress,
    password_hash: String,
    request: RequestIds,
) -> Result<Registered, CommandError<UserError>> {
    let user_id = UserId::new();
    let metadata = request.metadata(format!("user:{user_id}"));
    let receipt = events
        .execute_with_password(
            &user_id.to_string(),
            UserCommand::Register { user_id, email },
            &metadata,
            password_hash,
        )
        .await
        .map_err(|error| match CommandError::from(error) {
            // The user id is new, so the only conflict is the e-mail's unique index.
            CommandError::Conflict => CommandError::Refused(UserError::AlreadyRegistered),
            other => other,
        })?;
    Ok(Registered {
        user_id,
        position: receipt.position,
    })
}

/// Why an account cannot act.
#[derive(Debug, thiserror::Error)]
pub enum InactiveAccount {
    #[error("the account does not exist")]
    Unknown,
    #[error("the account is deactivated")]
    Deactivated,
    #[error("reading the account failed")]
    Store(#[source] StoreFailure),
}

/// The user `user_id` as the log has them now, if their account exists and is not
/// deactivated.
pub async fn active_user(events: &EventStore, user_id: UserId) -> Result<User, InactiveAccount> {
    let (user, _) = events
        .load::<User>(&user_id.to_string())
        .await
        .map_err(|error| InactiveAccount::Store(StoreFailure::new(error)))?;
    if !user.is_registered() {
        return Err(InactiveAccount::Unknown);
    }
    if user.is_deactivated() {
        return Err(InactiveAccount::Deactivated);
    }
    Ok(user)
}

/// At most one verification mail per user per this interval; the registration's
/// mail counts.
pub const VERIFICATION_MAIL_INTERVAL: Duration = Duration::from_secs(60);

/// Why no verification mail was asked for.
#[derive(Debug, thiserror::Error)]
pub enum VerificationMailError {
    #[error(transparent)]
    Inactive(InactiveAccount),
    /// The address is already verified (`EmailAlreadyVerified`), or another refusal.
    #[error(transparent)]
    Command(CommandError<UserError>),
    /// The last mail was asked for less than [`VERIFICATION_MAIL_INTERVAL`] ago.
    #[error("a verification mail was sent less than a minute ago")]
    TooSoon { retry_after_secs: u64 },
}

/// Asks for another verification mail for the user's own address (the e-mail
/// worker sends it). A verified address is refused before the interval is looked
/// at: waiting would not help.
pub async fn request_verification_mail(
    events: &EventStore,
    user_id: UserId,
    metadata: &CommandMetadata,
) -> Result<CommandReceipt, VerificationMailError> {
    let user = active_user(events, user_id)
        .await
        .map_err(VerificationMailError::Inactive)?;
    user.decide(UserCommand::RequestVerificationMail)
        .map_err(|refusal| VerificationMailError::Command(CommandError::Refused(refusal)))?;
    let aggregate_id = user_id.to_string();
    if let Some(retry_after_secs) = verification_mail_wait(events, &aggregate_id)
        .await
        .map_err(|error| VerificationMailError::Command(CommandError::Store(error)))?
    {
        return Err(VerificationMailError::TooSoon { retry_after_secs });
    }
    events
        .execute::<User>(
            &aggregate_id,
            UserCommand::RequestVerificationMail,
            metadata,
        )
        .await
        .map_err(|error| VerificationMailError::Command(error.into()))
}

/// Seconds until the user may ask for another verification mail, if they must wait:
/// from the user's last mail-causing event (its `recorded_at`, on the database's
/// clock, so API instances with skewed clocks agree).
async fn verification_mail_wait(
    events: &EventStore,
    aggregate_id: &str,
) -> Result<Option<u64>, StoreFailure> {
    let wait_secs: Option<i64> = sqlx::query_scalar(
        "SELECT ceil(extract(epoch FROM max(recorded_at) + make_interval(secs => $2)
                                       - statement_timestamp()))::bigint
           FROM events
          WHERE aggregate_type = 'user' AND aggregate_id = $1
            AND event_type IN ('UserRegistered', 'VerificationMailRequested')",
    )
    .bind(aggregate_id)
    .bind(VERIFICATION_MAIL_INTERVAL.as_secs_f64())
    .fetch_one(events.pool())
    .await
    .map_err(StoreFailure::new)?;
    Ok(wait_secs
        .filter(|secs| *secs > 0)
        .map(|secs| u64::try_from(secs).unwrap_or(1)))
}

/// Asks for a password-reset mail for `normalized_email`, as its user, when an
/// account has it; with no account, reads what a known address costs (an empty
/// stream) and stores nothing, so the two cases cannot be told apart by the work
/// done. A deactivated account records nothing (the aggregate's rule).
pub async fn request_password_reset(
    events: &EventStore,
    normalized_email: &str,
    request: RequestIds,
) -> Result<(), CommandError<UserError>> {
    let user_id = orders_store::user_lookup::user_by_email(events.pool(), normalized_email)
        .await
        .map_err(|error| CommandError::Store(StoreFailure::new(error)))?;
    let Some(user_id) = user_id else {
        events.load::<User>(&UserId::new().to_string()).await?;
        return Ok(());
    };
    let metadata = request.metadata(format!("user:{user_id}"));
    let aggregate_id = user_id.to_string();
    execute_retrying_conflicts(|| {
        events.execute::<User>(&aggregate_id, UserCommand::RequestPasswordReset, &metadata)
    })
    .await?;
    Ok(())
}

/// A password-reset link that still works.
#[derive(Debug, Clone)]
pub struct ResetLink {
    pub user_id: UserId,
    /// The credentials the link replaces.
    pub credentials_version: u32,
    /// The account's address, normalized (its login throttle is cleared after a reset).
    pub normalized_email: String,
}

/// Why a password-reset link does nothing.
#[derive(Debug, thiserror::Error)]
pub enum ResetLinkError {
    /// Not a token we signed for resets, or for an address the user no longer has.
    #[error("this password-reset link is not valid")]
    Invalid,
    #[error("this password-reset link has expired")]
    Expired,
    /// The password changed since the link was mailed (by this very link or
    /// otherwise), or the account was deactivated: a link works once.
    #[error("this password-reset link has already been used")]
    Used,
    #[error("the event store failed")]
    Store(#[source] StoreFailure),
}

/// Checks a password-reset token against the user as they are now: signed by us for
/// this purpose, unexpired, for the address the user has, on an active account whose
/// password is still the one the link replaces.
pub async fn check_reset_link(
    events: &EventStore,
    tokens: &SignedTokens,
    token: &str,
    now: DateTime<Utc>,
) -> Result<ResetLink, ResetLinkError> {
    let verified = tokens
        .check(TokenPurpose::PasswordReset, token, now)
        .map_err(|error| match error {
            TokenError::Forged => ResetLinkError::Invalid,
            TokenError::Expired => ResetLinkError::Expired,
        })?;
    let (user, _) = events
        .load::<User>(&verified.user_id.to_string())
        .await
        .map_err(|error| ResetLinkError::Store(StoreFailure::new(error)))?;
    let Some(normalized_email) = user.email().map(EmailAddress::normalized) else {
        return Err(ResetLinkError::Invalid);
    };
    if email_digest(&normalized_email) != verified.email_digest {
        return Err(ResetLinkError::Invalid);
    }
    let credentials_version = verified
        .credentials_version
        .ok_or(ResetLinkError::Invalid)?;
    if user.is_deactivated() || credentials_version != user.credentials_version() {
        return Err(ResetLinkError::Used);
    }
    Ok(ResetLink {
        user_id: verified.user_id,
        credentials_version,
        normalized_email,
    })
}

/// Sets the password a checked reset link allows, as its user. The user aggregate
/// has the last word: a racing use of the same link either finds the password
/// changed (`Used`) or conflicts on the stream and is judged again.
pub async fn reset_password(
    events: &EventStore,
    link: &ResetLink,
    password_hash: String,
    request: RequestIds,
) -> Result<CommandReceipt, ResetLinkError> {
    let metadata = request.metadata(format!("user:{}", link.user_id));
    let aggregate_id = link.user_id.to_string();
    let command = UserCommand::ResetPassword {
        credentials_version: link.credentials_version,
    };
    execute_retrying_conflicts(|| {
        events.execute_with_password(
            &aggregate_id,
            command.clone(),
            &metadata,
            password_hash.clone(),
        )
    })
    .await
    .map_err(|error| match CommandError::from(error) {
        CommandError::Refused(
            UserError::Deactivated | UserError::PasswordChangedSinceResetRequested,
        ) => ResetLinkError::Used,
        CommandError::Refused(_) | CommandError::NotFound => ResetLinkError::Invalid,
        CommandError::Conflict => ResetLinkError::Store(StoreFailure::new(
            "the account kept changing while its password was reset",
        )),
        CommandError::Store(failure) => ResetLinkError::Store(failure),
    })
}

/// Stores the user's new password (the caller checked the current one).
pub async fn change_password(
    events: &EventStore,
    user_id: UserId,
    password_hash: String,
    metadata: &CommandMetadata,
) -> Result<CommandReceipt, CommandError<UserError>> {
    Ok(events
        .execute_with_password(
            &user_id.to_string(),
            UserCommand::ChangePassword,
            metadata,
            password_hash,
        )
        .await?)
}

/// A change of the profile; what is `None` stays as it is.
#[derive(Debug, Clone, Default)]
pub struct ProfileChange {
    /// `Some(None)` clears the display name.
    pub display_name: Option<Option<String>>,
    pub price_alerts: Option<bool>,
}

/// Changes the active user's profile, and answers the account's log position after
/// it (also when nothing was asked to change).
pub async fn change_profile(
    events: &EventStore,
    user_id: UserId,
    change: ProfileChange,
    metadata: &CommandMetadata,
) -> Result<Option<LogPosition>, CommandError<UserError>> {
    let aggregate_id = user_id.to_string();
    let mut commands = Vec::with_capacity(2);
    if let Some(display_name) = change.display_name {
        commands.push(UserCommand::UpdateProfile { display_name });
    }
    if let Some(price_alerts) = change.price_alerts {
        commands.push(UserCommand::ChangeNotificationPreferences { price_alerts });
    }
    let mut position = None;
    for command in commands {
        let receipt = events
            .execute::<User>(&aggregate_id, command, metadata)
            .await?;
        position = position.max(receipt.position);
    }
    if position.is_none() {
        position = events
            .last_position("user", &aggregate_id)
            .await
            .map_err(|error| CommandError::Store(StoreFailure::new(error)))?;
    }
    Ok(position)
}

/// A role given or taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoleChange {
    Grant(Role),
    Revoke(Role),
}

/// Grants or revokes a role of a registered user. Concurrent changes to one user
/// conflict on its stream: each is decided again on the user as the other left it
/// (a second grant of one role then stores nothing: `events_stored` is 0).
pub async fn change_role(
    events: &EventStore,
    user_id: UserId,
    change: RoleChange,
    metadata: &CommandMetadata,
) -> Result<CommandReceipt, CommandError<UserError>> {
    let aggregate_id = user_id.to_string();
    let (user, _) = events.load::<User>(&aggregate_id).await?;
    if !user.is_registered() {
        return Err(CommandError::NotFound);
    }
    let command = match change {
        RoleChange::Grant(role) => UserCommand::GrantRole { role },
        RoleChange::Revoke(role) => UserCommand::RevokeRole { role },
    };
    Ok(execute_retrying_conflicts(|| {
        events.execute::<User>(&aggregate_id, command.clone(), metadata)
    })
    .await?)
}
