//! The mails Orders sends: what they say (`compose`, and `purchase` for the mails
//! about a purchase) and how they leave (`smtp`).
//!
//! Composition is pure: an [`OutgoingMail`] is built from the facts of one event
//! (a registration, a reset request, a reached target, what happened to a purchase)
//! plus the Message-ID the caller derives from that event with [`crate::message_id`].
//! Sending hands it to an SMTP server through [`Mailer`], which tells a failure worth
//! retrying ([`SendError::Transient`]) from one that will only repeat
//! ([`SendError::Permanent`]).
//!
//! Every mail is multipart/alternative (plain text and HTML) and carries the
//! Message-ID it was given: a redelivered event re-sends the *same* mail, so a
//! duplicate that slips through (a crash between the server's acceptance and our
//! delivery record) is recognisable as such by any mail client.

mod compose;
mod purchase;
mod smtp;

pub use compose::{
    format_money, MailPurpose, OutgoingMail, PriceAlertContent, MAX_SUBJECT_TITLE_CHARS,
};
pub use purchase::{ConfirmedLine, ProductLabel, PurchaseMailContent, PurchaseNews};
pub use smtp::{
    Mailer, MailerConfigError, SendError, SendFailure, SmtpConnectionSecurity, SmtpServer,
    SMTP_COMMAND_TIMEOUT,
};
