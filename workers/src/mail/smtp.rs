//! Sending an [`OutgoingMail`] to an SMTP server with lettre, and telling the
//! failures worth retrying from the ones that will only repeat.
//!
//! The server comes from one URL (`ORDERS_SMTP_URL`); a small set of forms is
//! understood and anything else is refused at start, so a typo never silently sends
//! mail unencrypted or to the wrong port:
//!
//! | URL | connection | default port |
//! |---|---|---|
//! | `smtp://host[:port]` | plain text, no TLS: local catchers (aiosmtpd, mailpit) only | 25 |
//! | `smtp+starttls://[user:pass@]host[:port]` | STARTTLS required before anything is sent | 587 |
//! | `smtps://[user:pass@]host[:port]` | implicit TLS from the first byte | 465 |
//!
//! `user:pass@` is also accepted on `smtp://` for relays on a trusted network (the
//! password then travels unencrypted). User and password are percent-decoded.
//! Certificates are checked against the Mozilla roots (webpki-roots).

use std::fmt;
use std::time::Duration;

use lettre::address::AddressError;
use lettre::message::header::{HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{Address, AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use url::{Host, Url};

use super::compose::OutgoingMail;

/// How long one SMTP step (connecting, one command and its reply) may take. lettre
/// applies it per step; a whole send is deliberately not cut short from outside,
/// because abandoning a pooled connection in the middle of a transaction could hand
/// it half-used to the next mail.
pub const SMTP_COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// How the connection to the SMTP server is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpConnectionSecurity {
    /// `smtp://`: plain text, for mail catchers on the same machine or network.
    Plain,
    /// `smtp+starttls://`: plain connect, then STARTTLS is required; a server that
    /// does not offer it gets nothing (no downgrade).
    StartTls,
    /// `smtps://`: TLS from the first byte (RFC 8314, the recommended way).
    ImplicitTls,
}

/// Where and how to reach the SMTP server, parsed from `ORDERS_SMTP_URL`.
///
/// Pure data: parsing needs no runtime and no network.
#[derive(Clone, PartialEq, Eq)]
pub struct SmtpServer {
    host: String,
    port: u16,
    security: SmtpConnectionSecurity,
    credentials: Option<(String, String)>,
}

/// Why the mailer's configuration was refused. Each message names the variable so
/// that a service stops at start with one clear line.
#[derive(Debug, thiserror::Error)]
pub enum MailerConfigError {
    #[error("ORDERS_SMTP_URL is not a URL such as smtp://127.0.0.1:1025")]
    SmtpUrlUnparsable(#[source] url::ParseError),
    #[error(
        "ORDERS_SMTP_URL has the scheme {scheme:?}; supported are smtp:// (plain, for local \
         catchers), smtp+starttls:// (STARTTLS required) and smtps:// (implicit TLS)"
    )]
    UnsupportedScheme { scheme: String },
    #[error("ORDERS_SMTP_URL names no host")]
    MissingHost,
    #[error(
        "ORDERS_SMTP_URL may only hold scheme, user, password, host and port; \
         it also has a {part} (not supported: say what you meant with the scheme)"
    )]
    UnsupportedUrlPart { part: &'static str },
    #[error("ORDERS_SMTP_URL has a user name without a password, or a password without a user")]
    IncompleteCredentials,
    #[error("the user or password in ORDERS_SMTP_URL is not valid percent-encoded UTF-8")]
    CredentialsNotUtf8,
    #[error("TLS cannot be set up for the SMTP host {host:?}")]
    Tls {
        host: String,
        #[source]
        source: lettre::transport::smtp::Error,
    },
    #[error("ORDERS_MAIL_FROM {value:?} is not a mailbox such as `Orders <orders@example.com>`")]
    InvalidMailFrom {
        value: String,
        #[source]
        source: AddressError,
    },
    #[error(
        "the domain of ORDERS_MAIL_FROM {domain:?} must be a domain name (it also names every \
         Message-ID), not an address literal"
    )]
    MailFromDomainNotAName { domain: String },
}

/// Why a mail was not sent, split by what the caller should do about it.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// Retrying later may succeed: the server could not be reached, a step timed
    /// out, the connection broke, TLS failed, or the server answered 4xx.
    #[error("the mail was not sent this time; retrying later may succeed")]
    Transient(#[source] SendFailure),
    /// Retrying the same mail will fail the same way: the server answered 5xx, or
    /// the mail itself cannot be sent (an address or Message-ID that is not valid).
    #[error("the mail cannot be sent; retrying will not help")]
    Permanent(#[source] SendFailure),
}

impl SendError {
    /// Whether the same mail may be sent again later.
    pub fn is_transient(&self) -> bool {
        matches!(self, SendError::Transient(_))
    }

    /// What went wrong underneath.
    pub fn failure(&self) -> &SendFailure {
        match self {
            SendError::Transient(failure) | SendError::Permanent(failure) => failure,
        }
    }
}

/// What exactly went wrong while sending.
#[derive(Debug, thiserror::Error)]
pub enum SendFailure {
    /// The SMTP exchange failed (connection, timeout, TLS, or a negative reply,
    /// whose code [`lettre::transport::smtp::Error::status`] gives).
    #[error("the SMTP exchange failed")]
    Smtp(#[source] lettre::transport::smtp::Error),
    #[error("the recipient {address:?} is not an address lettre accepts")]
    InvalidRecipient {
        address: String,
        #[source]
        source: AddressError,
    },
    #[error("the Message-ID {0:?} is not of the form `left@right` in dot-atom text")]
    InvalidMessageId(String),
    #[error("the message could not be assembled")]
    MessageAssembly(#[source] lettre::error::Error),
}

/// Sends [`OutgoingMail`]s through one SMTP server, reusing connections (lettre's
/// pool). Cheap to clone: clones share the pool.
#[derive(Clone)]
pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    server: SmtpServer,
    from: Mailbox,
}

impl SmtpServer {
    /// Parses an SMTP URL in one of the supported forms (see the module docs).
    pub fn parse(smtp_url: &str) -> Result<SmtpServer, MailerConfigError> {
        let url = Url::parse(smtp_url.trim()).map_err(MailerConfigError::SmtpUrlUnparsable)?;
        let (security, default_port) = match url.scheme() {
            "smtp" => (SmtpConnectionSecurity::Plain, 25),
            "smtp+starttls" => (SmtpConnectionSecurity::StartTls, 587),
            "smtps" => (SmtpConnectionSecurity::ImplicitTls, 465),
            other => {
                return Err(MailerConfigError::UnsupportedScheme {
                    scheme: other.to_owned(),
                })
            }
        };
        // For schemes the URL standard does not know, IPv4 addresses and names both
        // come back as `Host::Domain`; only IPv6 is parsed, and it must lose its
        // brackets before it is resolved.
        let host = match url.host() {
            None => return Err(MailerConfigError::MissingHost),
            Some(Host::Domain("")) => return Err(MailerConfigError::MissingHost),
            Some(Host::Domain(name)) => name.to_owned(),
            Some(Host::Ipv4(address)) => address.to_string(),
            Some(Host::Ipv6(address)) => address.to_string(),
        };
        if !matches!(url.path(), "" | "/") {
            return Err(MailerConfigError::UnsupportedUrlPart { part: "path" });
        }
        if url.query().is_some() {
            return Err(MailerConfigError::UnsupportedUrlPart {
                part: "query string",
            });
        }
        if url.fragment().is_some() {
            return Err(MailerConfigError::UnsupportedUrlPart { part: "fragment" });
        }
        let credentials = match (url.username(), url.password()) {
            ("", None) => None,
            ("", Some(_)) | (_, None) => return Err(MailerConfigError::IncompleteCredentials),
            (user, Some(password)) => Some((percent_decode(user)?, percent_decode(password)?)),
        };
        Ok(SmtpServer {
            host,
            port: url.port().unwrap_or(default_port),
            security,
            credentials,
        })
    }

    pub fn host(&self) -> &str {
        &self.host
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn security(&self) -> SmtpConnectionSecurity {
        self.security
    }

    /// Whether the server is logged in to (the credentials themselves stay inside).
    pub fn has_credentials(&self) -> bool {
        self.credentials.is_some()
    }

    fn build_transport(&self) -> Result<AsyncSmtpTransport<Tokio1Executor>, MailerConfigError> {
        let tls_parameters = || {
            TlsParameters::new(self.host.clone()).map_err(|source| MailerConfigError::Tls {
                host: self.host.clone(),
                source,
            })
        };
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&self.host)
            .port(self.port)
            .timeout(Some(SMTP_COMMAND_TIMEOUT));
        builder = match self.security {
            SmtpConnectionSecurity::Plain => builder.tls(Tls::None),
            SmtpConnectionSecurity::StartTls => builder.tls(Tls::Required(tls_parameters()?)),
            SmtpConnectionSecurity::ImplicitTls => builder.tls(Tls::Wrapper(tls_parameters()?)),
        };
        if let Some((user, password)) = &self.credentials {
            builder = builder.credentials(Credentials::new(user.clone(), password.clone()));
        }
        Ok(builder.build())
    }
}

/// Never prints the password: configurations end up in logs.
impl fmt::Debug for SmtpServer {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("SmtpServer")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("security", &self.security)
            .field("user", &self.credentials.as_ref().map(|(user, _)| user))
            .finish_non_exhaustive()
    }
}

impl Mailer {
    /// Builds a mailer from `ORDERS_SMTP_URL` and `ORDERS_MAIL_FROM` (e.g.
    /// `Orders <orders@example.com>` or a bare address).
    ///
    /// Connects to nothing yet: the first [`send`](Mailer::send) does.
    ///
    /// # Panics
    ///
    /// Outside a Tokio runtime: lettre's connection pool starts its cleanup task here.
    pub fn new(smtp_url: &str, mail_from: &str) -> Result<Mailer, MailerConfigError> {
        let server = SmtpServer::parse(smtp_url)?;
        let from = parse_mail_from(mail_from)?;
        Mailer::with_server(server, from)
    }

    /// Builds a mailer for an already parsed server and sender.
    ///
    /// # Panics
    ///
    /// Outside a Tokio runtime (see [`Mailer::new`]).
    pub fn with_server(server: SmtpServer, from: Mailbox) -> Result<Mailer, MailerConfigError> {
        let domain = from.email.domain();
        if !is_dot_atom_text(domain) {
            return Err(MailerConfigError::MailFromDomainNotAName {
                domain: domain.to_owned(),
            });
        }
        Ok(Mailer {
            transport: server.build_transport()?,
            server,
            from,
        })
    }

    /// The sender every mail is `From:`.
    pub fn from(&self) -> &Mailbox {
        &self.from
    }

    /// The domain of the sender's address: the right-hand side to pass to
    /// [`crate::message_id`], so Message-IDs are in a domain we own.
    pub fn message_id_domain(&self) -> &str {
        self.from.email.domain()
    }

    pub fn server(&self) -> &SmtpServer {
        &self.server
    }

    /// Sends one mail and returns once the server has accepted it (`250` after the
    /// data), so the caller can record the delivery.
    pub async fn send(&self, mail: &OutgoingMail) -> Result<(), SendError> {
        let message = self.build_message(mail).map_err(SendError::Permanent)?;
        match self.transport.send(message).await {
            Ok(_accepted) => Ok(()),
            // 5xx: the server said no for good. Everything else (no connection,
            // timeouts, TLS, broken replies, 4xx) may pass on a later try.
            Err(error) if error.is_permanent() => {
                Err(SendError::Permanent(SendFailure::Smtp(error)))
            }
            Err(error) => Err(SendError::Transient(SendFailure::Smtp(error))),
        }
    }

    /// Closes the pooled connections (politely, with QUIT), for a clean shutdown.
    pub async fn shutdown(&self) {
        self.transport.shutdown().await;
    }

    fn build_message(&self, mail: &OutgoingMail) -> Result<Message, SendFailure> {
        let recipient: Address =
            mail.to
                .as_str()
                .parse()
                .map_err(|source| SendFailure::InvalidRecipient {
                    address: mail.to.as_str().to_owned(),
                    source,
                })?;
        let message_id = mail_message_id_in_angle_brackets(&mail.message_id)?;
        let mut message = Message::builder()
            .from(self.from.clone())
            .to(Mailbox::new(None, recipient))
            .subject(single_line(&mail.subject))
            // lettre sends no Message-ID unless told, and wants the brackets.
            .message_id(Some(message_id))
            .multipart(MultiPart::alternative_plain_html(
                mail.text_body.clone(),
                mail.html_body.clone(),
            ))
            .map_err(SendFailure::MessageAssembly)?;
        let headers = message.headers_mut();
        // RFC 3834: automatic mail; auto-responders must not answer it.
        headers.insert_raw(HeaderValue::new(
            HeaderName::new_from_ascii_str("Auto-Submitted"),
            "auto-generated".to_owned(),
        ));
        if let Some(unsubscribe_link) = &mail.list_unsubscribe {
            // A serialised `Url` is ASCII without spaces or angle brackets, so it
            // cannot break out of the `<...>`.
            headers.insert_raw(HeaderValue::new(
                HeaderName::new_from_ascii_str("List-Unsubscribe"),
                format!("<{unsubscribe_link}>"),
            ));
        }
        Ok(message)
    }
}

/// Never prints the credentials (see [`SmtpServer`]'s `Debug`).
impl fmt::Debug for Mailer {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("Mailer")
            .field("server", &self.server)
            .field("from", &self.from.to_string())
            .finish_non_exhaustive()
    }
}

fn parse_mail_from(mail_from: &str) -> Result<Mailbox, MailerConfigError> {
    mail_from
        .trim()
        .parse::<Mailbox>()
        .map_err(|source| MailerConfigError::InvalidMailFrom {
            value: mail_from.to_owned(),
            source,
        })
}

/// `left@right` (brackets tolerated) → `<left@right>`, checked to be RFC 5322
/// `id-left "@" id-right` in dot-atom text, so it cannot smuggle anything else
/// into the header.
fn mail_message_id_in_angle_brackets(message_id: &str) -> Result<String, SendFailure> {
    let bare = message_id
        .strip_prefix('<')
        .and_then(|inner| inner.strip_suffix('>'))
        .unwrap_or(message_id);
    match bare.split_once('@') {
        Some((left, right)) if is_dot_atom_text(left) && is_dot_atom_text(right) => {
            Ok(format!("<{bare}>"))
        }
        _ => Err(SendFailure::InvalidMessageId(message_id.to_owned())),
    }
}

/// RFC 5322 dot-atom-text: atext runs separated by single dots.
fn is_dot_atom_text(text: &str) -> bool {
    let is_atext =
        |byte: u8| byte.is_ascii_alphanumeric() || b"!#$%&'*+-/=?^_`{|}~".contains(&byte);
    !text.is_empty()
        && text
            .split('.')
            .all(|run| !run.is_empty() && run.bytes().all(is_atext))
}

/// A header value on one line: line breaks and other control characters become
/// spaces (lettre would encode them, but a subject has no business holding them).
fn single_line(text: &str) -> String {
    text.chars()
        .map(|character| {
            if character.is_control() {
                ' '
            } else {
                character
            }
        })
        .collect()
}

/// Decodes `%XX` escapes of a URL's user or password into UTF-8 text.
fn percent_decode(encoded: &str) -> Result<String, MailerConfigError> {
    let bytes = encoded.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index] == b'%' {
            let hex_digits = bytes
                .get(index + 1..index + 3)
                .and_then(|digits| std::str::from_utf8(digits).ok())
                .and_then(|digits| u8::from_str_radix(digits, 16).ok())
                .ok_or(MailerConfigError::CredentialsNotUtf8)?;
            decoded.push(hex_digits);
            index += 3;
        } else {
            decoded.push(bytes[index]);
            index += 1;
        }
    }
    String::from_utf8(decoded).map_err(|_| MailerConfigError::CredentialsNotUtf8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plain_local_catcher_url_is_understood() {
        let server = SmtpServer::parse("smtp://127.0.0.1:1025").unwrap();
        assert_eq!(server.host(), "127.0.0.1");
        assert_eq!(server.port(), 1025);
        assert_eq!(server.security(), SmtpConnectionSecurity::Plain);
        assert!(!server.has_credentials());
    }

    #[test]
    fn each_scheme_has_its_security_and_default_port() {
        let cases = [
            ("smtp://mail.example", SmtpConnectionSecurity::Plain, 25),
            (
                "smtp+starttls://mail.example",
                SmtpConnectionSecurity::StartTls,
                587,
            ),
            (
                "smtps://mail.example/",
                SmtpConnectionSecurity::ImplicitTls,
                465,
            ),
        ];
        for (url, security, port) in cases {
            let server = SmtpServer::parse(url).unwrap();
            assert_eq!(
                (server.security(), server.port()),
                (security, port),
                "{url}"
            );
            assert_eq!(server.host(), "mail.example");
        }
    }

    #[test]
    fn credentials_are_percent_decoded_and_never_printed() {
        let server =
            SmtpServer::parse("smtps://user%40example.com:p%3Ass%2Fw%C3%B6rd@mail.example:2465")
                .unwrap();
        assert_eq!(
            server.credentials,
            Some(("user@example.com".to_owned(), "p:ss/wörd".to_owned()))
        );
        assert_eq!(server.port(), 2465);
        let printed = format!("{server:?}");
        assert!(
            !printed.contains("wörd") && !printed.contains("p%3Ass"),
            "{printed}"
        );
    }

    #[test]
    fn an_ipv6_host_loses_its_brackets() {
        let server = SmtpServer::parse("smtp://[::1]:1025").unwrap();
        assert_eq!(server.host(), "::1");
    }

    #[test]
    fn unsupported_urls_are_refused_with_the_reason() {
        assert!(matches!(
            SmtpServer::parse("http://mail.example"),
            Err(MailerConfigError::UnsupportedScheme { scheme }) if scheme == "http"
        ));
        assert!(matches!(
            SmtpServer::parse("smtp://mail.example?tls=required"),
            Err(MailerConfigError::UnsupportedUrlPart {
                part: "query string"
            })
        ));
        assert!(matches!(
            SmtpServer::parse("smtp://mail.example/ehlo-name"),
            Err(MailerConfigError::UnsupportedUrlPart { part: "path" })
        ));
        assert!(matches!(
            SmtpServer::parse("smtps://user@mail.example"),
            Err(MailerConfigError::IncompleteCredentials)
        ));
        assert!(matches!(
            SmtpServer::parse("smtps://user:%ff@mail.example"),
            Err(MailerConfigError::CredentialsNotUtf8)
        ));
        assert!(matches!(
            SmtpServer::parse("127.0.0.1:1025"),
            Err(MailerConfigError::UnsupportedScheme { .. })
                | Err(MailerConfigError::SmtpUrlUnparsable(_))
        ));
        assert!(matches!(
            SmtpServer::parse("not a url"),
            Err(MailerConfigError::SmtpUrlUnparsable(_))
        ));
    }

    #[test]
    fn the_sender_must_be_a_mailbox() {
        let mailbox = parse_mail_from("Orders <orders@example.com>").unwrap();
        assert_eq!(mailbox.email.domain(), "example.com");
        assert_eq!(mailbox.name.as_deref(), Some("Orders"));
        assert!(parse_mail_from("orders@example.com").is_ok());
        assert!(matches!(
            parse_mail_from("orders at example.com"),
            Err(MailerConfigError::InvalidMailFrom { .. })
        ));
        assert!(matches!(
            parse_mail_from("orders@example.com\r\nBcc: x@example.com"),
            Err(MailerConfigError::InvalidMailFrom { .. })
        ));
    }

    #[test]
    fn message_ids_get_angle_brackets_and_nothing_else_passes() {
        assert_eq!(
            mail_message_id_in_angle_brackets("0190abc.price-alert@orders.example").unwrap(),
            "<0190abc.price-alert@orders.example>"
        );
        assert_eq!(
            mail_message_id_in_angle_brackets("<a.b@c.d>").unwrap(),
            "<a.b@c.d>"
        );
        for invalid in [
            "",
            "no-at-sign",
            "a@b@c",
            "a b@c.d",
            "a@c.d>\r\nBcc: x@y.z",
            "a..b@c.d",
            "@c.d",
        ] {
            assert!(
                matches!(
                    mail_message_id_in_angle_brackets(invalid),
                    Err(SendFailure::InvalidMessageId(_))
                ),
                "{invalid:?}"
            );
        }
    }

    #[tokio::test]
    async fn a_mailer_and_its_send_future_can_move_between_worker_tasks() {
        fn assert_send_sync_clone<T: Send + Sync + Clone>(_: &T) {}
        fn assert_send<T: Send>(_: &T) {}
        // Port 9 (discard) is never contacted: the future is built, not awaited.
        let mailer = Mailer::new("smtp://127.0.0.1:9", "orders@example.com").unwrap();
        let mail = OutgoingMail::verification(
            "a@example.com".to_owned(),
            orders_domain::email::EmailAddress::parse("ann@example.com").unwrap(),
            &url::Url::parse("https://orders.example/auth/verify?token=t").unwrap(),
            chrono::Utc::now(),
        );
        assert_send_sync_clone(&mailer);
        let send_future = mailer.send(&mail);
        assert_send(&send_future);
    }

    #[test]
    fn subjects_are_kept_on_one_line() {
        assert_eq!(single_line("a\r\nBcc: b\tc"), "a  Bcc: b c");
    }
}
