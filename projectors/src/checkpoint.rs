//! Where a view is in the log, kept in `view_checkpoints` beside the view's tables and
//! written in the same transaction as them.

use orders_nats::LogPosition;
use sqlx::{PgConnection, PgPool};

use crate::View;

/// Which copy of a view: the one the API reads, or the one a replay is building.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Generation {
    Live,
    Shadow,
}

impl Generation {
    pub fn as_str(self) -> &'static str {
        match self {
            Generation::Live => "live",
            Generation::Shadow => "shadow",
        }
    }

    /// The name of one of the view's tables in this generation.
    pub fn table(self, base: &str) -> String {
        match self {
            Generation::Live => base.to_owned(),
            Generation::Shadow => format!("{base}_shadow"),
        }
    }
}

/// The last log message a view applied (all zero: none).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Checkpoint {
    pub stream_sequence: u64,
    pub position: LogPosition,
}

const SELECT: &str = "SELECT stream_sequence, tx_id::text, global_position FROM view_checkpoints
                       WHERE view = $1 AND generation = $2";

pub(crate) fn from_row(
    (stream_sequence, tx_id, global_position): (i64, String, i64),
) -> Checkpoint {
    Checkpoint {
        stream_sequence: u64::try_from(stream_sequence).unwrap_or_default(),
        position: LogPosition {
            tx_id: tx_id.parse().unwrap_or_default(),
            global_position,
        },
    }
}

/// The view's checkpoint, or `None` when that generation does not exist.
pub async fn read(
    pool: &PgPool,
    view: View,
    generation: Generation,
) -> sqlx::Result<Option<Checkpoint>> {
    let row: Option<(i64, String, i64)> = sqlx::query_as(SELECT)
        .bind(view.name())
        .bind(generation.as_str())
        .fetch_optional(pool)
        .await?;
    Ok(row.map(from_row))
}

/// Reads the checkpoint and locks it until the transaction ends: whoever holds it is
/// the only one writing the view (a replay's swap takes the same lock).
pub async fn lock(
    connection: &mut PgConnection,
    view: View,
    generation: Generation,
) -> sqlx::Result<Option<Checkpoint>> {
    let row: Option<(i64, String, i64)> = sqlx::query_as(&format!("{SELECT} FOR UPDATE"))
        .bind(view.name())
        .bind(generation.as_str())
        .fetch_optional(connection)
        .await?;
    Ok(row.map(from_row))
}

pub async fn store(
    connection: &mut PgConnection,
    view: View,
    generation: Generation,
    checkpoint: Checkpoint,
) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE view_checkpoints
            SET stream_sequence = $3, tx_id = $4::text::xid8, global_position = $5, updated_at = now()
          WHERE view = $1 AND generation = $2",
    )
    .bind(view.name())
    .bind(generation.as_str())
    .bind(i64::try_from(checkpoint.stream_sequence).unwrap_or(i64::MAX))
    .bind(checkpoint.position.tx_id.to_string())
    .bind(checkpoint.position.global_position)
    .execute(connection)
    .await?;
    Ok(())
}
