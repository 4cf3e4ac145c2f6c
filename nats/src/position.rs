//! The log-order token: where an event is in the order the relay publishes.

use std::fmt;
use std::str::FromStr;

/// The place of an event in the log order: the writing transaction and the global
/// position. Rendered as the opaque `Orders-Position` token `<tx_id>.<position>`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LogPosition {
    pub tx_id: u64,
    pub global_position: i64,
}

impl fmt::Display for LogPosition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.tx_id, self.global_position)
    }
}

/// A token that is not `<tx_id>.<position>`.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("not a log position token")]
pub struct InvalidLogPosition;

impl FromStr for LogPosition {
    type Err = InvalidLogPosition;

    fn from_str(token: &str) -> Result<Self, Self::Err> {
        let (tx, position) = token.split_once('.').ok_or(InvalidLogPosition)?;
        Ok(Self {
            tx_id: tx.parse().map_err(|_| InvalidLogPosition)?,
            global_position: position.parse().map_err(|_| InvalidLogPosition)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_order_by_transaction_then_position() {
        let token: LogPosition = "7345.12".parse().unwrap();
        assert_eq!(token.to_string(), "7345.12");
        assert!(token < "7345.13".parse().unwrap());
        assert!(token < "7346.1".parse().unwrap());
        for bad in ["", "7345", "a.b", "7345.", ".12", "-1.2"] {
            assert_eq!(
                bad.parse::<LogPosition>(),
                Err(InvalidLogPosition),
                "{bad:?}"
            );
        }
    }
}
