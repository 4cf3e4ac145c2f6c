//! `orders replay <view>`: rebuilds a view from the start of the log into shadow
//! tables while the live view keeps serving and being updated, then swaps the shadow
//! in atomically. The live projector notices that its checkpoint moved (to the
//! shadow's) and follows the log from there, so nothing is applied twice or missed.
//!
//! A replay only writes view tables: workers' consumers are untouched, so it never
//! causes a side effect again. Memory does not grow with the log: the log is read
//! through an ordered consumer and applied a batch at a time.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use async_nats::jetstream;
use sqlx::{Connection as _, PgPool};

use crate::checkpoint::{self, Checkpoint, Generation};
use crate::projector::Projector;
use crate::View;

/// What a replay did.
#[derive(Debug, Clone, Copy)]
pub struct ReplayReport {
    pub view: View,
    /// The checkpoint the rebuilt view was swapped in at.
    pub checkpoint: Checkpoint,
    pub elapsed: Duration,
}

impl ReplayReport {
    /// Log messages applied per second.
    pub fn rate(&self) -> f64 {
        self.checkpoint.stream_sequence as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Advisory-lock key space of replays (the second key is the view).
const REPLAY_LOCK_CLASS: i32 = 0x5250_4c59;

pub async fn replay(
    pool: &PgPool,
    jetstream: &jetstream::Context,
    view: View,
    batch_size: usize,
) -> anyhow::Result<ReplayReport> {
    let started = Instant::now();
    // One replay of a view at a time; the lock goes with this connection.
    let mut lock_connection = pool.acquire().await?.detach();
    let view_key = View::ALL.iter().position(|v| *v == view).unwrap_or(0) as i32;
    let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1, $2)")
        .bind(REPLAY_LOCK_CLASS)
        .bind(view_key)
        .fetch_one(&mut lock_connection)
        .await?;
    anyhow::ensure!(locked, "a replay of the {view} view is already running");

    prepare_shadow(pool, view).await?;
    let target =
        patiently(|| async { Ok(orders_nats::stream_head(jetstream).await?.stream_sequence) })
            .await?;
    let shadow = Projector::new(pool.clone(), jetstream.clone(), view, Generation::Shadow)
        .with_batch_size(batch_size);
    // Following is resumable (the shadow's checkpoint is stored with each batch), so
    // a JetStream hiccup (a cluster electing a new leader) only costs a retry.
    patiently(|| shadow.follow(Some(target))).await?;
    // The live view must never go back (a read that waited for a position must find
    // it), so the shadow is swapped in only when it has reached the live checkpoint;
    // the live projector keeps going meanwhile, so this may take a few rounds.
    let checkpoint = loop {
        let live = checkpoint::read(pool, view, Generation::Live)
            .await?
            .unwrap_or_default();
        let reached = patiently(|| shadow.follow(Some(live.stream_sequence))).await?;
        if swap_in(pool, view).await? {
            break reached;
        }
    };
    lock_connection.close().await?;
    Ok(ReplayReport {
        view,
        checkpoint,
        elapsed: started.elapsed(),
    })
}

/// Runs `attempt` until it succeeds, at most five times, half a second apart.
async fn patiently<T, F, Fut>(mut attempt: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<T>>,
{
    let mut tries = 1;
    loop {
        match attempt().await {
            Ok(value) => return Ok(value),
            Err(error) if tries < 5 => {
                tracing::warn!(
                    error = format!("{error:#}"),
                    "replay step failed; trying again"
                );
                tries += 1;
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(error) => return Err(error),
        }
    }
}

/// Empty shadow tables shaped like the live ones, and a shadow checkpoint at zero.
async fn prepare_shadow(pool: &PgPool, view: View) -> anyhow::Result<()> {
    let mut transaction = pool.begin().await?;
    for base in view.tables() {
        let shadow = Generation::Shadow.table(base);
        sqlx::query(&format!("DROP TABLE IF EXISTS {shadow}"))
            .execute(&mut *transaction)
            .await?;
        sqlx::query(&format!(
            "CREATE TABLE {shadow} (LIKE {base} INCLUDING ALL)"
        ))
        .execute(&mut *transaction)
        .await?;
    }
    sqlx::query("DELETE FROM view_checkpoints WHERE view = $1 AND generation = 'shadow'")
        .bind(view.name())
        .execute(&mut *transaction)
        .await?;
    sqlx::query("INSERT INTO view_checkpoints (view, generation) VALUES ($1, 'shadow')")
        .bind(view.name())
        .execute(&mut *transaction)
        .await?;
    transaction
        .commit()
        .await
        .with_context(|| format!("preparing the {view} view's shadow tables"))
}

/// Renames the shadow tables over the live ones and makes the shadow's checkpoint the
/// live one, in one transaction that holds the live checkpoint's lock (so no batch of
/// the live projector is half in the old tables and half in the new). `false`, and
/// nothing done, when the live view has gone past the shadow meanwhile.
async fn swap_in(pool: &PgPool, view: View) -> anyhow::Result<bool> {
    let mut transaction = pool.begin().await?;
    let live = checkpoint::lock(&mut transaction, view, Generation::Live)
        .await?
        .unwrap_or_default();
    let shadow = checkpoint::lock(&mut transaction, view, Generation::Shadow)
        .await?
        .with_context(|| format!("the {view} view's shadow checkpoint is gone"))?;
    if shadow.stream_sequence < live.stream_sequence {
        transaction.rollback().await?;
        return Ok(false);
    }
    for base in view.tables() {
        let shadow = Generation::Shadow.table(base);
        let retired = format!("{base}_retired");
        for statement in [
            format!("ALTER TABLE {base} RENAME TO {retired}"),
            format!("ALTER TABLE {shadow} RENAME TO {base}"),
            format!("DROP TABLE {retired}"),
        ] {
            sqlx::query(&statement).execute(&mut *transaction).await?;
        }
    }
    sqlx::query("DELETE FROM view_checkpoints WHERE view = $1 AND generation = 'live'")
        .bind(view.name())
        .execute(&mut *transaction)
        .await?;
    sqlx::query(
        "UPDATE view_checkpoints SET generation = 'live' WHERE view = $1 AND generation = 'shadow'",
    )
    .bind(view.name())
    .execute(&mut *transaction)
    .await?;
    transaction
        .commit()
        .await
        .with_context(|| format!("swapping the rebuilt {view} view in"))?;
    Ok(true)
}
