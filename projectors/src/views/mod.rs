//! The views: each folds log records into its tables, a batch at a time.

pub mod admin_overview;
pub mod orders;
pub mod price_history;
pub mod users;

use sqlx::PgConnection;

use crate::checkpoint::Generation;
use crate::record::LogRecord;
use crate::View;

/// An event that cannot follow what the view holds (e.g. an order event before its
/// placement): the log is not in order, or the view was written by something else.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("event {aggregate_id}/{sequence} (stream message {stream_sequence}) does not follow what the view holds")]
pub struct OutOfOrder {
    pub aggregate_id: String,
    pub sequence: i64,
    pub stream_sequence: u64,
}

impl OutOfOrder {
    pub(crate) fn new(record: &LogRecord) -> Self {
        Self {
            aggregate_id: record.aggregate_id.clone(),
            sequence: record.sequence,
            stream_sequence: record.stream_sequence,
        }
    }
}

impl View {
    /// The tables that hold the view (a replay rebuilds and swaps them together).
    pub fn tables(self) -> &'static [&'static str] {
        match self {
            View::Users => users::TABLES,
            View::Orders => orders::TABLES,
            View::PriceHistory => price_history::TABLES,
            View::AdminOverview => admin_overview::TABLES,
        }
    }
}

/// Applies a batch of records, in order, to one generation of a view.
pub(crate) async fn apply(
    connection: &mut PgConnection,
    view: View,
    generation: Generation,
    records: &[LogRecord],
) -> anyhow::Result<()> {
    match view {
        View::Users => users::apply(connection, generation, records).await,
        View::Orders => orders::apply(connection, generation, records).await,
        View::PriceHistory => price_history::apply(connection, generation, records).await,
        View::AdminOverview => admin_overview::apply(connection, generation, records).await,
    }
}
