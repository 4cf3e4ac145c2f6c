//! `orders lag`: how far each consumer of the log is behind its head. The relay is
//! behind by the events stored in PostgreSQL and not yet in the stream (and may be
//! held back by a long transaction: the horizon waits for it); each view by the
//! stream messages it has not applied.

use std::fmt;

use anyhow::Context as _;
use async_nats::jetstream;
use sqlx::PgPool;

use crate::checkpoint::{self, Checkpoint};
use crate::View;

#[derive(Debug, Clone)]
pub struct ViewLag {
    pub view: View,
    pub checkpoint: Checkpoint,
    /// Stream messages not yet applied.
    pub behind: u64,
    /// Seconds since the view last applied a batch.
    pub idle_secs: f64,
}

/// The oldest transaction that holds the relay's horizon back.
#[derive(Debug, Clone)]
pub struct HorizonHolder {
    pub pid: i32,
    pub state: String,
    pub age_secs: f64,
}

#[derive(Debug, Clone)]
pub struct Lag {
    pub stream_last_sequence: u64,
    /// Events stored in PostgreSQL after the stream's last one.
    pub relay_behind: i64,
    pub horizon_holder: Option<HorizonHolder>,
    pub views: Vec<ViewLag>,
}

pub async fn measure(pool: &PgPool, jetstream: &jetstream::Context) -> anyhow::Result<Lag> {
    let relay = async {
        let head = orders_nats::stream_head(jetstream).await?;
        let relay_behind: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM events WHERE (tx_id, global_position) > ($1::text::xid8, $2)",
        )
        .bind(head.tx_id.to_string())
        .bind(head.global_position)
        .fetch_one(pool)
        .await
        .context("counting the events not yet relayed")?;
        anyhow::Ok((head, relay_behind))
    };
    let horizon_holder = async {
        sqlx::query_as::<_, (i32, String, f64)>(
            "SELECT pid, coalesce(state, ''), extract(epoch FROM now() - xact_start)::float8
               FROM pg_stat_activity
              WHERE backend_xid IS NOT NULL AND pid <> pg_backend_pid()
              ORDER BY xact_start LIMIT 1",
        )
        .fetch_optional(pool)
        .await
        .context("looking for long transactions")
    };
    // Every view's checkpoint and idle time in one statement.
    let checkpoints = async {
        sqlx::query_as::<_, (String, i64, String, i64, f64)>(
            "SELECT view, stream_sequence, tx_id::text, global_position,
                    extract(epoch FROM now() - updated_at)::float8
               FROM view_checkpoints WHERE generation = 'live'",
        )
        .fetch_all(pool)
        .await
        .context("reading the views' checkpoints")
    };
    // Independent reads, at once.
    let ((head, relay_behind), horizon_holder, rows) =
        tokio::try_join!(relay, horizon_holder, checkpoints)?;
    let mut views = Vec::new();
    for view in View::ALL {
        let (checkpoint, idle_secs) = rows
            .iter()
            .find(|row| row.0 == view.name())
            .map(|(_, stream_sequence, tx_id, global_position, idle_secs)| {
                let checkpoint =
                    checkpoint::from_row((*stream_sequence, tx_id.clone(), *global_position));
                (checkpoint, *idle_secs)
            })
            .unwrap_or_default();
        views.push(ViewLag {
            view,
            checkpoint,
            behind: head
                .stream_sequence
                .saturating_sub(checkpoint.stream_sequence),
            idle_secs,
        });
    }
    Ok(Lag {
        stream_last_sequence: head.stream_sequence,
        relay_behind,
        horizon_holder: horizon_holder.map(|(pid, state, age_secs)| HorizonHolder {
            pid,
            state,
            age_secs,
        }),
        views,
    })
}

impl fmt::Display for Lag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{:<26} {:>10}  at", "consumer", "behind")?;
        writeln!(
            f,
            "{:<26} {:>10}  stream sequence {}",
            "relay", self.relay_behind, self.stream_last_sequence
        )?;
        for view in &self.views {
            writeln!(
                f,
                "{:<26} {:>10}  stream sequence {} (position {}, last batch {:.1} s ago)",
                format!("projector {}", view.view),
                view.behind,
                view.checkpoint.stream_sequence,
                view.checkpoint.position,
                view.idle_secs
            )?;
        }
        match &self.horizon_holder {
            Some(holder) => write!(
                f,
                "oldest writing transaction: pid {} ({}), open for {:.1} s; the relay waits for it",
                holder.pid, holder.state, holder.age_secs
            ),
            None => write!(f, "no writing transaction is open"),
        }
    }
}
