//! `ORDERS_NATS_URL`: one server URL or several separated by commas, which may
//! carry credentials (`nats://user:password@host:4222`, or a token as
//! `nats://token@host`).
//!
//! Credentials never travel inside the addresses handed to the client: they are
//! taken out and given to it as options, because the client logs its server
//! addresses (with their passwords) at debug level. What we log ourselves is the
//! [`redacted`] form, which keeps the user name and hides the password or token.

use url::Url;

/// The servers of a NATS URL list, without credentials, and the credentials.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct NatsServers {
    pub(crate) addresses: Vec<String>,
    pub(crate) credentials: Credentials,
}

#[derive(Clone, PartialEq, Eq)]
pub(crate) enum Credentials {
    None,
    UserAndPassword { user: String, password: String },
    Token(String),
}

impl std::fmt::Debug for NatsServers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsServers")
            .field("addresses", &self.addresses)
            .field(
                "credentials",
                &match self.credentials {
                    Credentials::None => "none",
                    Credentials::UserAndPassword { .. } => "user and password",
                    Credentials::Token(_) => "token",
                },
            )
            .finish()
    }
}

/// Parses one item of the list as the client would: a scheme is optional.
fn parse_item(item: &str) -> Option<Url> {
    if item.contains("://") {
        Url::parse(item).ok()
    } else {
        Url::parse(&format!("nats://{item}")).ok()
    }
}

fn percent_decoded(text: &str) -> String {
    percent_encoding::percent_decode_str(text)
        .decode_utf8_lossy()
        .into_owned()
}

impl NatsServers {
    /// Splits `urls` into addresses without credentials and the credentials of the
    /// first item that has any (the nodes of one cluster share them). An item that
    /// does not parse as a URL is passed on as it is, for the client to refuse.
    pub(crate) fn parse(urls: &str) -> Self {
        let mut credentials = Credentials::None;
        let addresses = urls
            .split(',')
            .map(str::trim)
            .filter(|item| !item.is_empty())
            .map(|item| {
                let Some(mut url) = parse_item(item) else {
                    return item.to_owned();
                };
                if url.username().is_empty() && url.password().is_none() {
                    return item.to_owned();
                }
                if credentials == Credentials::None {
                    let user = percent_decoded(url.username());
                    credentials = match url.password() {
                        Some(password) => Credentials::UserAndPassword {
                            user,
                            password: percent_decoded(password),
                        },
                        None => Credentials::Token(user),
                    };
                }
                let _ = url.set_username("");
                let _ = url.set_password(None);
                url.to_string()
            })
            .collect();
        Self {
            addresses,
            credentials,
        }
    }
}

/// `urls` (a list as `ORDERS_NATS_URL` takes it) fit for a log line: passwords and
/// tokens replaced by `***`, user names kept.
pub fn redacted(urls: &str) -> String {
    urls.split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(|item| match parse_item(item) {
            Some(mut url) if url.password().is_some() => {
                let _ = url.set_password(Some("***"));
                url.to_string()
            }
            Some(mut url) if !url.username().is_empty() => {
                let _ = url.set_username("***");
                url.to_string()
            }
            Some(_) => item.to_owned(),
            // Not a URL: whatever it holds could be a secret.
            None => "(not a URL)".to_owned(),
        })
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_taken_out_of_every_address() {
        let servers = NatsServers::parse(
            "nats://orders:s%3Acret@a.example:4222, nats://orders:s%3Acret@b.example:4222",
        );
        assert_eq!(
            servers.addresses,
            ["nats://a.example:4222", "nats://b.example:4222"]
        );
        assert!(
            servers.credentials
                == Credentials::UserAndPassword {
                    user: "orders".to_owned(),
                    password: "s:cret".to_owned()
                }
        );
        let token = NatsServers::parse("tls://t0ken@c.example");
        assert_eq!(token.addresses, ["tls://c.example"]);
        assert!(token.credentials == Credentials::Token("t0ken".to_owned()));
        let plain = NatsServers::parse("127.0.0.1:4222");
        assert_eq!(plain.addresses, ["127.0.0.1:4222"]);
        assert!(plain.credentials == Credentials::None);
        assert!(!format!("{token:?}").contains("t0ken"));
    }

    #[test]
    fn redacted_lists_hide_passwords_and_tokens_but_keep_the_rest() {
        assert_eq!(
            redacted("nats://orders:sekret@a.example:4222,b.example:4223"),
            "nats://orders:***@a.example:4222,b.example:4223"
        );
        assert_eq!(redacted("nats://t0ken@host"), "nats://***@host");
        assert_eq!(redacted("user:pw@host:4222"), "nats://user:***@host:4222");
        assert_eq!(redacted("nats://127.0.0.1:4222"), "nats://127.0.0.1:4222");
        assert!(!redacted("nats://a b:sekret@").contains("sekret"));
    }
}
