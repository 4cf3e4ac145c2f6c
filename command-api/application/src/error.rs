//! What can go wrong with an application command, typed so callers can tell a
//! permanent refusal from a failure that may pass.

use cqrs_es::AggregateError;

/// Why a command stored nothing.
#[derive(Debug, thiserror::Error)]
pub enum CommandError<E: std::error::Error + 'static> {
    /// The aggregate refused, for the domain's reason (`E`). Permanent: the same
    /// command on the same state is refused again.
    #[error(transparent)]
    Refused(E),
    /// What the command is about does not exist.
    #[error("not found")]
    NotFound,
    /// Another command on the same aggregate was stored first; deciding again on
    /// the new state may succeed.
    #[error("another command on the same aggregate was stored first")]
    Conflict,
    /// The event store failed (a lost connection, an unreadable event): may pass.
    #[error("the event store failed")]
    Store(#[source] StoreFailure),
}

impl<E: std::error::Error + 'static> CommandError<E> {
    /// Whether trying the same command again later may succeed.
    pub fn may_pass(&self) -> bool {
        matches!(self, Self::Conflict | Self::Store(_))
    }
}

/// The store's own error, with its cause chain.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct StoreFailure(#[source] Box<dyn std::error::Error + Send + Sync + 'static>);

impl StoreFailure {
    pub fn new(cause: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>) -> Self {
        Self(cause.into())
    }
}

impl<E: std::error::Error + 'static> From<AggregateError<E>> for CommandError<E> {
    fn from(error: AggregateError<E>) -> Self {
        match error {
            AggregateError::UserError(refusal) => Self::Refused(refusal),
            AggregateError::AggregateConflict => Self::Conflict,
            AggregateError::DatabaseConnectionError(cause)
            | AggregateError::DeserializationError(cause)
            | AggregateError::UnexpectedError(cause) => Self::Store(StoreFailure(cause)),
        }
    }
}
