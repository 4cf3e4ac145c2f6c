//! The `user` aggregate: registration, e-mail verification, password, profile,
//! notification preferences, roles and deactivation.
//!
//! Commands decide ([`User::decide`] is pure and returns the events), events only
//! record ([`User::apply`] never fails). The password arrives already hashed: the
//! domain never sees a password, and hashing (slow, random salt) is the command
//! side's job. E-mail uniqueness across users cannot be decided inside one user's
//! stream; the command side guarantees it with a unique index on the normalised
//! address.
//!
//! Mails are asked for with events (`VerificationMailRequested`,
//! `PasswordResetRequested`) that the e-mail worker turns into mails. A password-reset
//! link names the password it replaces by its credentials version (how many times
//! the password had changed when the reset was asked for);
//! [`UserCommand::ResetPassword`] is refused once that is no longer the current
//! password. So a link works once, and two racing uses of one link cannot both
//! succeed: the second one either finds the change or its append conflicts with it
//! on the stream's sequence (and, judged again, finds it).

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};

use crate::email::EmailAddress;
use crate::ids::UserId;

/// The longest display name, in characters.
pub const MAX_DISPLAY_NAME_CHARS: usize = 100;

/// A role that grants access beyond one's own data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Everything, including changing other users' roles.
    Admin,
    /// Read-only access to the audit trail and the administrators' views.
    Auditor,
}

impl Role {
    /// The role's name as users and tokens spell it: `admin`, `auditor`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Auditor => "auditor",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.as_str())
    }
}

/// The text is not a role name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown role {0:?}: expected \"admin\" or \"auditor\"")]
pub struct UnknownRole(pub String);

impl FromStr for Role {
    type Err = UnknownRole;

    /// Exact lower-case names only, the spelling stored in tokens and events.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "admin" => Ok(Role::Admin),
            "auditor" => Ok(Role::Auditor),
            other => Err(UnknownRole(other.chars().take(32).collect())),
        }
    }
}

/// What can be asked of a user.
#[derive(Debug, Clone, PartialEq)]
pub enum UserCommand {
    /// Creates the account. The command side has already checked the password
    /// policy and keeps the password's hash with its credentials, never in events:
    /// the log is published to every subscriber of the event stream.
    Register {
        user_id: UserId,
        email: EmailAddress,
    },
    /// The user followed the link in the verification mail.
    VerifyEmail,
    /// A new password (the command side checked the current password and the
    /// policy, and stores the new hash with the credentials).
    ChangePassword,
    /// The user asks for another verification mail (the first one went with the
    /// registration). Refused once the address is verified: there is nothing to confirm.
    RequestVerificationMail,
    /// Someone who knows the address asks for a password-reset mail. A deactivated
    /// user gets none, silently: the caller's answer must not tell accounts apart.
    RequestPasswordReset,
    /// A new password through a reset link: the link carries the
    /// `credentials_version` of the `PasswordResetRequested` it came from, and works
    /// only while that is still the current one. The command side checked the link's
    /// signature and the policy, and stores the new hash with the credentials.
    ResetPassword {
        credentials_version: u32,
    },
    /// Sets (trimmed) or clears (`None` or blank) the display name.
    UpdateProfile {
        display_name: Option<String>,
    },
    ChangeNotificationPreferences {
        price_alerts: bool,
    },
    GrantRole {
        role: Role,
    },
    RevokeRole {
        role: Role,
    },
    /// Closes the account for good; takes effect on the user's next request.
    Deactivate {
        reason: String,
    },
}

/// The version of `UserRegistered` and `PasswordChanged` written now; "1.0" payloads
/// (which carried a password hash) are upcast on read.
pub const USER_CREDENTIAL_EVENTS_VERSION: &str = "2.0";

/// What happened to a user. The variant names are the stored event types.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum UserEvent {
    /// Version 2.0; 1.0 also carried the password hash (see [`crate::upcasting`]).
    UserRegistered {
        user_id: UserId,
        email: EmailAddress,
    },
    EmailVerified,
    /// Version 2.0; 1.0 carried the new password hash.
    PasswordChanged,
    ProfileUpdated {
        display_name: Option<String>,
    },
    NotificationPreferencesChanged {
        price_alerts: bool,
    },
    RoleGranted {
        role: Role,
    },
    RoleRevoked {
        role: Role,
    },
    UserDeactivated {
        reason: String,
    },
    /// Another verification mail was asked for.
    VerificationMailRequested,
    /// A password-reset mail was asked for, to replace the password as it was after
    /// `credentials_version` changes (0: the one chosen at registration). The reset
    /// link names it, so that it stops working once the password has changed.
    PasswordResetRequested {
        credentials_version: u32,
    },
}

impl DomainEvent for UserEvent {
    fn event_type(&self) -> String {
        let event_type = match self {
            UserEvent::UserRegistered { .. } => "UserRegistered",
            UserEvent::EmailVerified => "EmailVerified",
            UserEvent::PasswordChanged => "PasswordChanged",
            UserEvent::ProfileUpdated { .. } => "ProfileUpdated",
            UserEvent::NotificationPreferencesChanged { .. } => "NotificationPreferencesChanged",
            UserEvent::RoleGranted { .. } => "RoleGranted",
            UserEvent::RoleRevoked { .. } => "RoleRevoked",
            UserEvent::UserDeactivated { .. } => "UserDeactivated",
            UserEvent::VerificationMailRequested => "VerificationMailRequested",
            UserEvent::PasswordResetRequested { .. } => "PasswordResetRequested",
        };
        event_type.to_owned()
    }

    fn event_version(&self) -> String {
        match self {
            UserEvent::UserRegistered { .. } | UserEvent::PasswordChanged => {
                USER_CREDENTIAL_EVENTS_VERSION.to_owned()
            }
            _ => "1.0".to_owned(),
        }
    }
}

/// Why a user command was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UserError {
    #[error("this user is already registered")]
    AlreadyRegistered,
    #[error("no such user")]
    NotRegistered,
    #[error("this user has been deactivated")]
    Deactivated,
    #[error("the display name must have at most {max} characters")]
    DisplayNameTooLong { max: usize },
    #[error("a reason is required to deactivate a user")]
    ReasonRequired,
    #[error("the e-mail address is already verified")]
    EmailAlreadyVerified,
    #[error("the password has changed since this reset link was sent")]
    PasswordChangedSinceResetRequested,
}

/// A user's current state, rebuilt from its events.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct User {
    user_id: Option<UserId>,
    email: Option<EmailAddress>,
    email_verified: bool,
    display_name: Option<String>,
    price_alerts_enabled: bool,
    roles: BTreeSet<Role>,
    deactivated: bool,
    /// How many times the password has changed since registration (0: the
    /// registration's).
    #[serde(default)]
    credentials_version: u32,
}

impl User {
    pub fn id(&self) -> Option<UserId> {
        self.user_id
    }

    pub fn email(&self) -> Option<&EmailAddress> {
        self.email.as_ref()
    }

    pub fn is_registered(&self) -> bool {
        self.user_id.is_some()
    }

    pub fn email_verified(&self) -> bool {
        self.email_verified
    }

    pub fn display_name(&self) -> Option<&str> {
        self.display_name.as_deref()
    }

    /// Whether price alerts may be mailed (on unless the user turned them off).
    pub fn price_alerts_enabled(&self) -> bool {
        self.price_alerts_enabled
    }

    pub fn roles(&self) -> &BTreeSet<Role> {
        &self.roles
    }

    pub fn has_role(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }

    pub fn is_deactivated(&self) -> bool {
        self.deactivated
    }

    /// How many times the password has changed since registration (each
    /// `PasswordChanged`): names the current password in reset links.
    pub fn credentials_version(&self) -> u32 {
        self.credentials_version
    }

    /// Decides what a command means for this user: the events to record, none when
    /// the command changes nothing (so retries are harmless), or why it is refused.
    pub fn decide(&self, command: UserCommand) -> Result<Vec<UserEvent>, UserError> {
        let events = match command {
            UserCommand::Register { user_id, email } if !self.is_registered() => {
                vec![UserEvent::UserRegistered { user_id, email }]
            }
            // Also for a deactivated user: the account exists, whatever its state.
            UserCommand::Register { .. } => return Err(UserError::AlreadyRegistered),
            _ if !self.is_registered() => return Err(UserError::NotRegistered),
            // No mail for a closed account, and no refusal either: whoever asked
            // must not learn which addresses have (closed) accounts.
            UserCommand::RequestPasswordReset if self.deactivated => vec![],
            _ if self.deactivated => return Err(UserError::Deactivated),
            UserCommand::VerifyEmail if self.email_verified => vec![],
            UserCommand::VerifyEmail => vec![UserEvent::EmailVerified],
            UserCommand::ChangePassword => vec![UserEvent::PasswordChanged],
            UserCommand::RequestVerificationMail if self.email_verified => {
                return Err(UserError::EmailAlreadyVerified)
            }
            UserCommand::RequestVerificationMail => vec![UserEvent::VerificationMailRequested],
            UserCommand::RequestPasswordReset => vec![UserEvent::PasswordResetRequested {
                credentials_version: self.credentials_version,
            }],
            UserCommand::ResetPassword {
                credentials_version,
            } if credentials_version != self.credentials_version => {
                return Err(UserError::PasswordChangedSinceResetRequested)
            }
            UserCommand::ResetPassword { .. } => vec![UserEvent::PasswordChanged],
            UserCommand::UpdateProfile { display_name } => {
                let display_name = checked_display_name(display_name)?;
                if display_name == self.display_name {
                    vec![]
                } else {
                    vec![UserEvent::ProfileUpdated { display_name }]
                }
            }
            UserCommand::ChangeNotificationPreferences { price_alerts } => {
                if price_alerts == self.price_alerts_enabled {
                    vec![]
                } else {
                    vec![UserEvent::NotificationPreferencesChanged { price_alerts }]
                }
            }
            UserCommand::GrantRole { role } if self.has_role(role) => vec![],
            UserCommand::GrantRole { role } => vec![UserEvent::RoleGranted { role }],
            UserCommand::RevokeRole { role } if !self.has_role(role) => vec![],
            UserCommand::RevokeRole { role } => vec![UserEvent::RoleRevoked { role }],
            UserCommand::Deactivate { reason } => {
                let reason = reason.trim();
                if reason.is_empty() {
                    return Err(UserError::ReasonRequired);
                }
                vec![UserEvent::UserDeactivated {
                    reason: reason.to_owned(),
                }]
            }
        };
        Ok(events)
    }
}

/// Trims the name; a blank name clears it.
fn checked_display_name(display_name: Option<String>) -> Result<Option<String>, UserError> {
    let Some(display_name) = display_name else {
        return Ok(None);
    };
    let trimmed = display_name.trim();
    if trimmed.is_empty() {
        return Ok(None);
    }
    if trimmed.chars().count() > MAX_DISPLAY_NAME_CHARS {
        return Err(UserError::DisplayNameTooLong {
            max: MAX_DISPLAY_NAME_CHARS,
        });
    }
    Ok(Some(trimmed.to_owned()))
}

impl Aggregate for User {
    const TYPE: &'static str = "user";
    type Command = UserCommand;
    type Event = UserEvent;
    type Error = UserError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        for event in self.decide(command)? {
            sink.write(event, self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            UserEvent::UserRegistered { user_id, email } => {
                self.user_id = Some(user_id);
                self.email = Some(email);
                self.price_alerts_enabled = true;
            }
            UserEvent::EmailVerified => self.email_verified = true,
            // Nothing of the password itself is part of the user's state.
            UserEvent::PasswordChanged => {
                self.credentials_version = self.credentials_version.saturating_add(1);
            }
            UserEvent::ProfileUpdated { display_name } => self.display_name = display_name,
            UserEvent::NotificationPreferencesChanged { price_alerts } => {
                self.price_alerts_enabled = price_alerts;
            }
            UserEvent::RoleGranted { role } => {
                self.roles.insert(role);
            }
            UserEvent::RoleRevoked { role } => {
                self.roles.remove(&role);
            }
            UserEvent::UserDeactivated { .. } => self.deactivated = true,
            // Requests for mails change nothing of the user.
            UserEvent::VerificationMailRequested | UserEvent::PasswordResetRequested { .. } => {}
        }
    }
}

#[cfg(test)]
mod tests;
