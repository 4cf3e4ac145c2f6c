//! E-mail addresses as people type them, checked well enough to send mail to.
//!
//! The rules are a practical subset of RFC 5321/5322: one `@`, an unquoted local
//! part of ASCII "atext" characters and single dots, and a domain name of at least
//! two labels of letters, digits and inner hyphens. Quoted local parts, comments,
//! IP-literal domains and non-ASCII addresses are refused: real shoppers do not use
//! them, and every mail server we hand the address to accepts what is left.
//!
//! The address is kept as typed (after trimming) for display and for the mail's
//! `To:`; [`EmailAddress::normalized`] is the lower-case form that makes addresses
//! unique across users, so `Ann@Example.com` and `ann@example.com` are one account.
//!
//! Deserialising re-validates. Stored events are kept forever, so these rules may
//! only ever be loosened, never tightened.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The longest address a mail server must accept (RFC 5321's path limit minus the
/// angle brackets).
pub const MAX_EMAIL_CHARS: usize = 254;
/// The longest local part (before the `@`), RFC 5321.
pub const MAX_LOCAL_PART_CHARS: usize = 64;
/// The longest label of a domain name, RFC 1035.
pub const MAX_DOMAIN_LABEL_CHARS: usize = 63;

/// Why an address was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EmailError {
    #[error("the e-mail address is empty")]
    Empty,
    #[error("the e-mail address is longer than {max} characters")]
    TooLong { max: usize },
    #[error("an e-mail address has exactly one '@'")]
    NotExactlyOneAt,
    #[error("the part before the '@' is empty")]
    LocalPartEmpty,
    #[error("the part before the '@' is longer than {max} characters")]
    LocalPartTooLong { max: usize },
    #[error("the part before the '@' may hold letters, digits, single inner dots and !#$%&'*+-/=?^_`{{|}}~ only")]
    LocalPartInvalid,
    #[error("the domain after the '@' must be a name such as example.com")]
    DomainInvalid,
}

/// A syntactically valid e-mail address.
///
/// Equality is exact (on the address as typed); compare
/// [`normalized`](EmailAddress::normalized) forms to ask "same account?".
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EmailAddress {
    as_typed: String,
}

impl EmailAddress {
    /// Checks user input: surrounding whitespace is trimmed, the rest must be valid.
    pub fn parse(input: &str) -> Result<EmailAddress, EmailError> {
        let address = input.trim();
        if address.is_empty() {
            return Err(EmailError::Empty);
        }
        if address.chars().count() > MAX_EMAIL_CHARS {
            return Err(EmailError::TooLong {
                max: MAX_EMAIL_CHARS,
            });
        }
        let mut parts = address.split('@');
        let (Some(local_part), Some(domain), None) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(EmailError::NotExactlyOneAt);
        };
        check_local_part(local_part)?;
        check_domain(domain)?;
        Ok(EmailAddress {
            as_typed: address.to_owned(),
        })
    }

    /// The address as the user typed it (trimmed): what mails are sent to and what
    /// is shown back.
    pub fn as_str(&self) -> &str {
        &self.as_typed
    }

    /// The lower-case form: the key that keeps addresses unique across users and
    /// finds an account at login, whatever case was typed.
    pub fn normalized(&self) -> String {
        // Only ASCII is accepted, so ASCII lower-casing is complete.
        self.as_typed.to_ascii_lowercase()
    }

    /// Whether two addresses belong to the same account.
    pub fn is_same_mailbox_as(&self, other: &EmailAddress) -> bool {
        self.as_typed.eq_ignore_ascii_case(&other.as_typed)
    }
}

fn check_local_part(local_part: &str) -> Result<(), EmailError> {
    if local_part.is_empty() {
        return Err(EmailError::LocalPartEmpty);
    }
    if local_part.chars().count() > MAX_LOCAL_PART_CHARS {
        return Err(EmailError::LocalPartTooLong {
            max: MAX_LOCAL_PART_CHARS,
        });
    }
    let is_atext = |character: char| {
        character.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~".contains(character)
    };
    let dots_are_inner_and_single =
        !local_part.starts_with('.') && !local_part.ends_with('.') && !local_part.contains("..");
    if !dots_are_inner_and_single || !local_part.chars().all(|c| c == '.' || is_atext(c)) {
        return Err(EmailError::LocalPartInvalid);
    }
    Ok(())
}

fn check_domain(domain: &str) -> Result<(), EmailError> {
    let labels: Vec<&str> = domain.split('.').collect();
    let label_is_valid = |label: &&str| {
        !label.is_empty()
            && label.len() <= MAX_DOMAIN_LABEL_CHARS
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    if labels.len() < 2 || !labels.iter().all(label_is_valid) {
        return Err(EmailError::DomainInvalid);
    }
    Ok(())
}

impl fmt::Display for EmailAddress {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.as_typed)
    }
}

impl FromStr for EmailAddress {
    type Err = EmailError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        EmailAddress::parse(input)
    }
}

impl AsRef<str> for EmailAddress {
    fn as_ref(&self) -> &str {
        &self.as_typed
    }
}

impl Serialize for EmailAddress {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.as_typed)
    }
}

impl<'de> Deserialize<'de> for EmailAddress {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        EmailAddress::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(input: &str) -> Result<EmailAddress, EmailError> {
        EmailAddress::parse(input)
    }

    #[test]
    fn ordinary_addresses_are_accepted_and_kept_as_typed() {
        for address in [
            "ann@example.com",
            "Ann.Smith+orders@Mail.Example.co.uk",
            "o'brien@example.ie",
            "user_1-x@sub-domain.example.org",
            "a@b.co",
        ] {
            assert_eq!(parse(address).unwrap().as_str(), address);
        }
    }

    #[test]
    fn surrounding_whitespace_is_trimmed() {
        let address = parse("  Ann@Example.com\n").unwrap();
        assert_eq!(address.as_str(), "Ann@Example.com");
        assert_eq!(address.to_string(), "Ann@Example.com");
    }

    #[test]
    fn normalised_form_is_lower_case_so_case_does_not_make_a_new_account() {
        let typed = parse("Ann.Smith@Example.COM").unwrap();
        let lower = parse("ann.smith@example.com").unwrap();
        assert_eq!(typed.normalized(), "ann.smith@example.com");
        assert_eq!(typed.normalized(), lower.normalized());
        assert!(typed.is_same_mailbox_as(&lower));
        assert!(!typed.is_same_mailbox_as(&parse("bob@example.com").unwrap()));
    }

    #[test]
    fn malformed_addresses_are_refused_with_a_reason() {
        let cases = [
            ("", EmailError::Empty),
            ("   ", EmailError::Empty),
            ("ann.example.com", EmailError::NotExactlyOneAt),
            ("ann@@example.com", EmailError::NotExactlyOneAt),
            ("ann@bob@example.com", EmailError::NotExactlyOneAt),
            ("@example.com", EmailError::LocalPartEmpty),
            ("ann smith@example.com", EmailError::LocalPartInvalid),
            ("ann\t@example.com", EmailError::LocalPartInvalid),
            (".ann@example.com", EmailError::LocalPartInvalid),
            ("ann.@example.com", EmailError::LocalPartInvalid),
            ("an..n@example.com", EmailError::LocalPartInvalid),
            ("\"ann\"@example.com", EmailError::LocalPartInvalid),
            ("анна@example.com", EmailError::LocalPartInvalid),
            ("ann@", EmailError::DomainInvalid),
            ("ann@localhost", EmailError::DomainInvalid),
            ("ann@example..com", EmailError::DomainInvalid),
            ("ann@.example.com", EmailError::DomainInvalid),
            ("ann@example.com.", EmailError::DomainInvalid),
            ("ann@-example.com", EmailError::DomainInvalid),
            ("ann@example-.com", EmailError::DomainInvalid),
            ("ann@exa mple.com", EmailError::DomainInvalid),
            ("ann@exam_ple.com", EmailError::DomainInvalid),
            ("ann@[127.0.0.1]", EmailError::DomainInvalid),
            ("ann@bücher.de", EmailError::DomainInvalid),
        ];
        for (input, expected) in cases {
            assert_eq!(parse(input), Err(expected), "{input:?}");
        }
    }

    #[test]
    fn length_limits_are_enforced() {
        let longest_local_part = "a".repeat(MAX_LOCAL_PART_CHARS);
        assert!(parse(&format!("{longest_local_part}@example.com")).is_ok());
        assert_eq!(
            parse(&format!("a{longest_local_part}@example.com")),
            Err(EmailError::LocalPartTooLong {
                max: MAX_LOCAL_PART_CHARS
            })
        );
        let long_domain = format!("{}.com", vec!["a".repeat(60); 5].join("."));
        assert_eq!(
            parse(&format!("ann@{long_domain}")),
            Err(EmailError::TooLong {
                max: MAX_EMAIL_CHARS
            })
        );
        let label_too_long = format!("ann@{}.com", "a".repeat(MAX_DOMAIN_LABEL_CHARS + 1));
        assert_eq!(parse(&label_too_long), Err(EmailError::DomainInvalid));
    }

    #[test]
    fn serialises_as_the_typed_string_and_validates_when_read() {
        let address = parse("Ann@Example.com").unwrap();
        let json = serde_json::to_value(&address).unwrap();
        assert_eq!(json, serde_json::json!("Ann@Example.com"));
        assert_eq!(
            serde_json::from_value::<EmailAddress>(json).unwrap(),
            address
        );
        assert!(serde_json::from_value::<EmailAddress>(serde_json::json!("nope")).is_err());
    }
}
