//! The password rules users meet, after NIST SP 800-63B (section 5.1.1.2).
//!
//! Length is the only composition rule: 12 to 128 characters, counted as Unicode
//! characters (not bytes), with spaces and any script allowed, because rules such as
//! "one digit and one symbol" make passwords harder to remember without making them
//! harder to guess. Instead, passwords that are known to be common are refused. Only
//! entries of at least 12 characters are listed, since anything shorter already
//! fails on length.
//!
//! The policy never sees a stored password: it runs on the candidate before it is
//! hashed, at registration, password change and reset.

/// The fewest characters a password may have.
pub const MIN_PASSWORD_CHARS: usize = 12;
/// The most characters a password may have: generous for passphrases, and bounded
/// so hashing an enormous input cannot be used to tie up the server.
pub const MAX_PASSWORD_CHARS: usize = 128;

/// Why a candidate password was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PasswordRuleViolation {
    #[error("the password must have at least {min} characters")]
    TooShort { min: usize },
    #[error("the password must have at most {max} characters")]
    TooLong { max: usize },
    #[error("this password is among the most common ones; choose another")]
    TooCommon,
}

/// Commonly used passwords of at least [`MIN_PASSWORD_CHARS`] characters, gathered
/// from public breach-frequency lists; stored in lower case and compared
/// case-insensitively ("PasswordPassword" is no better than "passwordpassword").
const COMMON_PASSWORDS: &[&str] = &[
    "000000000000",
    "1111111111111",
    "111111111111",
    "121212121212",
    "123123123123",
    "1234567890123",
    "12345678901234",
    "123456789012",
    "1234567891011",
    "123456789123",
    "123456789987654321",
    "123456abcdef",
    "123456qwerty",
    "1234qwerasdf",
    "147258369147",
    "1q2w3e4r5t6y",
    "1q2w3e4r5t6y7u",
    "1q2w3e4r5t6y7u8i",
    "1qaz2wsx3edc",
    "1qaz2wsx3edc4rfv",
    "987654321098",
    "aaaaaaaaaaaa",
    "abc123abc123",
    "abcd12345678",
    "abcdefghijkl",
    "admin1234567",
    "adminadmin123",
    "administrator",
    "asdfasdfasdf",
    "asdfghjkl123",
    "baseball1234",
    "changeme1234",
    "correcthorsebatterystaple",
    "dragondragon",
    "football1234",
    "iloveyou1234",
    "iloveyouiloveyou",
    "letmein12345",
    "masterkey123",
    "monkeymonkey",
    "mypassword123",
    "p@ssw0rd1234",
    "passw0rd1234",
    "password1234",
    "password12345",
    "password123456",
    "passwordpassword",
    "princess1234",
    "q1w2e3r4t5y6",
    "qazwsxedcrfv",
    "qwerty123456",
    "qwerty12345678",
    "qwertyqwerty",
    "qwertyuiop12",
    "qwertyuiop123",
    "qwertyuiopasdfgh",
    "qwertyuiopasdfghjkl",
    "starwars1234",
    "sunshine1234",
    "superman1234",
    "trustno1trustno1",
    "welcome12345",
    "welcome123456",
    "zaq12wsxcde3",
    "zaq1zaq1zaq1",
];

/// Checks a candidate password against the policy.
pub fn check_password(candidate: &str) -> Result<(), PasswordRuleViolation> {
    let characters = candidate.chars().count();
    if characters < MIN_PASSWORD_CHARS {
        return Err(PasswordRuleViolation::TooShort {
            min: MIN_PASSWORD_CHARS,
        });
    }
    if characters > MAX_PASSWORD_CHARS {
        return Err(PasswordRuleViolation::TooLong {
            max: MAX_PASSWORD_CHARS,
        });
    }
    let is_common = COMMON_PASSWORDS
        .iter()
        .any(|common| common.eq_ignore_ascii_case(candidate));
    if is_common {
        return Err(PasswordRuleViolation::TooCommon);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_of_twelve_to_128_characters_are_accepted() {
        assert_eq!(check_password("violet kettle drum"), Ok(()));
        assert_eq!(check_password(&"x".repeat(MIN_PASSWORD_CHARS)), Ok(()));
        assert_eq!(check_password(&"x".repeat(MAX_PASSWORD_CHARS)), Ok(()));
        // No composition rules: lower-case letters and spaces alone are fine.
        assert_eq!(check_password("just some lower case words"), Ok(()));
    }

    #[test]
    fn short_passwords_are_refused() {
        assert_eq!(
            check_password("elevenchars"),
            Err(PasswordRuleViolation::TooShort { min: 12 })
        );
        assert_eq!(
            check_password(""),
            Err(PasswordRuleViolation::TooShort { min: 12 })
        );
    }

    #[test]
    fn long_passwords_are_refused() {
        assert_eq!(
            check_password(&"x".repeat(MAX_PASSWORD_CHARS + 1)),
            Err(PasswordRuleViolation::TooLong { max: 128 })
        );
    }

    #[test]
    fn length_counts_characters_not_bytes() {
        // Eleven Cyrillic letters are 22 bytes but still too short.
        assert_eq!(
            check_password("пароль_тест"),
            Err(PasswordRuleViolation::TooShort { min: 12 })
        );
        assert_eq!(check_password("пароль_тесты"), Ok(()));
        // 128 two-byte characters fit; 129 do not.
        assert_eq!(check_password(&"ї".repeat(128)), Ok(()));
        assert_eq!(
            check_password(&"ї".repeat(129)),
            Err(PasswordRuleViolation::TooLong { max: 128 })
        );
    }

    #[test]
    fn common_passwords_are_refused_whatever_their_case() {
        for common in [
            "123456789012",
            "qwertyuiop123",
            "passwordpassword",
            "PasswordPassword",
            "password1234",
            "1q2w3e4r5t6y",
            "QWERTYUIOPASDFGH",
            "iloveyou1234",
        ] {
            assert_eq!(
                check_password(common),
                Err(PasswordRuleViolation::TooCommon),
                "{common}"
            );
        }
    }

    #[test]
    fn common_password_list_holds_only_lower_case_entries_long_enough_to_matter() {
        assert!(COMMON_PASSWORDS.len() >= 60);
        for common in COMMON_PASSWORDS {
            assert!(common.chars().count() >= MIN_PASSWORD_CHARS, "{common}");
            assert_eq!(*common, common.to_lowercase(), "{common}");
        }
    }
}
