//! A view's projector: follows the log stream from the view's checkpoint and applies
//! it in batches, each batch and the new checkpoint in one transaction.
//!
//! **The checkpoint is the only truth.** The projector reads the log through an
//! ordered consumer that starts right after the checkpoint, so the consumer holds no
//! state worth keeping. Every batch transaction first locks the checkpoint row and
//! checks that it is where this projector left it: if anything else moved it (a
//! second projector whose lease had not yet run out, or a replay that swapped a
//! rebuilt view in), the batch is rolled back and the projector starts again from
//! the checkpoint it found. A message at or below the checkpoint is never applied
//! twice, and a message is never skipped: the stream sequences of a batch must follow
//! the checkpoint without a gap.

use anyhow::Context as _;
use async_nats::jetstream::{self, consumer};
use futures::StreamExt as _;
use orders_nats::LOG_STREAM;
use sqlx::PgPool;

use crate::checkpoint::{self, Checkpoint, Generation};
use crate::record::LogRecord;
use crate::{views, View};

/// Most messages applied in one transaction.
pub const DEFAULT_BATCH_SIZE: usize = 1_000;

/// How long a projector waits for a message before it checks that the log has not
/// moved on without it.
const STALL_CHECK: std::time::Duration = std::time::Duration::from_secs(2);

/// What became of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// Applied; the view is now at this checkpoint.
    Advanced(Checkpoint),
    /// Not applied: the checkpoint was not where the batch expected it.
    Moved(Checkpoint),
}

#[derive(Clone)]
pub struct Projector {
    pool: PgPool,
    jetstream: jetstream::Context,
    view: View,
    generation: Generation,
    batch_size: usize,
}

impl Projector {
    pub fn new(
        pool: PgPool,
        jetstream: jetstream::Context,
        view: View,
        generation: Generation,
    ) -> Self {
        Self {
            pool,
            jetstream,
            view,
            generation,
            batch_size: DEFAULT_BATCH_SIZE,
        }
    }

    pub fn with_batch_size(mut self, batch_size: usize) -> Self {
        self.batch_size = batch_size.max(1);
        self
    }

    pub fn view(&self) -> View {
        self.view
    }

    pub async fn checkpoint(&self) -> anyhow::Result<Checkpoint> {
        checkpoint::read(&self.pool, self.view, self.generation)
            .await?
            .with_context(|| {
                format!(
                    "the {} view has no {} checkpoint",
                    self.view,
                    self.generation.as_str()
                )
            })
    }

    /// Applies `records` (consecutive stream messages right after `expected`) and
    /// moves the checkpoint past them, in one transaction.
    pub async fn apply_batch(
        &self,
        expected: Checkpoint,
        records: &[LogRecord],
    ) -> anyhow::Result<Applied> {
        let Some(last) = records.last() else {
            return Ok(Applied::Advanced(expected));
        };
        let mut transaction = self.pool.begin().await?;
        // A view's tables grow from empty: a plan cached while a table was small (a
        // sequential scan) would be kept as it grows, and every batch would read the
        // whole table. Plan each statement for the table as it is.
        //
        // And no waiting for the WAL flush at commit: the view and its checkpoint
        // commit together, so a database crash can only take both back to an earlier
        // batch, which the projector then applies again from the log. (The events
        // themselves are committed synchronously by the command side.)
        sqlx::query(
            "SELECT set_config('plan_cache_mode', 'force_custom_plan', true),
                    set_config('synchronous_commit', 'off', true)",
        )
        .execute(&mut *transaction)
        .await?;
        let current = checkpoint::lock(&mut transaction, self.view, self.generation)
            .await?
            .with_context(|| format!("the {} view's checkpoint is gone", self.view))?;
        if current != expected {
            transaction.rollback().await?;
            return Ok(Applied::Moved(current));
        }
        views::apply(&mut transaction, self.view, self.generation, records)
            .await
            .with_context(|| format!("applying a batch to the {} view", self.view))?;
        let advanced = Checkpoint {
            stream_sequence: last.stream_sequence,
            position: last.position,
        };
        checkpoint::store(&mut transaction, self.view, self.generation, advanced).await?;
        transaction.commit().await?;
        Ok(Applied::Advanced(advanced))
    }

    /// An ordered consumer of the log from `start` (a stream sequence, 1 = the start).
    async fn subscribe(&self, start: u64) -> anyhow::Result<consumer::pull::Ordered> {
        let stream = self
            .jetstream
            .get_stream(LOG_STREAM)
            .await
            .context("opening the log stream (run `orders nats setup`)")?;
        let deliver_policy = if start <= 1 {
            consumer::DeliverPolicy::All
        } else {
            consumer::DeliverPolicy::ByStartSequence {
                start_sequence: start,
            }
        };
        let consumer = stream
            .create_consumer(consumer::pull::OrderedConfig {
                description: Some(format!(
                    "projector of the {} view ({})",
                    self.view,
                    self.generation.as_str()
                )),
                deliver_policy,
                ..Default::default()
            })
            .await
            .context("creating an ordered consumer of the log")?;
        consumer.messages().await.context("reading the log stream")
    }

    /// Reads the log from stream sequence `start` on, decoded, into a channel, in a
    /// task of its own: reading and decoding overlap with the database's work, and
    /// while a batch is applied the next one gathers (the channel's bound keeps memory
    /// flat). The task ends when the returned reader is dropped.
    fn read_from(&self, start: u64) -> Reader {
        let (sender, receiver) = tokio::sync::mpsc::channel(self.batch_size * 2);
        let projector = self.clone();
        let task = tokio::spawn(async move {
            let mut messages = match projector.subscribe(start).await {
                Ok(messages) => messages,
                Err(error) => {
                    let _ = sender.send(Err(error)).await;
                    return;
                }
            };
            let no_headers = async_nats::HeaderMap::new();
            while let Some(message) = messages.next().await {
                let record = message
                    .map_err(|error| anyhow::anyhow!("reading the log stream: {error}"))
                    .and_then(|message| {
                        let sequence = message
                            .info()
                            .map_err(|error| {
                                anyhow::anyhow!("a log message without info: {error}")
                            })?
                            .stream_sequence;
                        Ok(LogRecord::decode_for(
                            sequence,
                            message.headers.as_ref().unwrap_or(&no_headers),
                            &message.payload,
                            projector.view.reads(),
                        )?)
                    });
                let failed = record.is_err();
                if sender.send(record).await.is_err() || failed {
                    return;
                }
            }
        });
        Reader { receiver, task }
    }

    /// Applies the log from the checkpoint on: for ever (`until` = `None`; returns
    /// only on an error), or until the checkpoint reaches the stream sequence `until`.
    pub async fn follow(&self, until: Option<u64>) -> anyhow::Result<Checkpoint> {
        let mut checkpoint = self.checkpoint().await?;
        'subscription: loop {
            if until.is_some_and(|until| checkpoint.stream_sequence >= until) {
                return Ok(checkpoint);
            }
            let mut reader = self.read_from(checkpoint.stream_sequence + 1);
            loop {
                // Whatever has arrived, up to a batch, once at least one message has.
                let first = match tokio::time::timeout(STALL_CHECK, reader.receiver.recv()).await {
                    Ok(Some(first)) => first,
                    Ok(None) => continue 'subscription,
                    Err(_) => {
                        // Nothing for a while: idle, or a consumer whose server went
                        // away (it would notice only after missing heartbeats).
                        let head = orders_nats::stream_head(&self.jetstream).await?;
                        if head.stream_sequence > checkpoint.stream_sequence {
                            tracing::warn!(
                                view = %self.view,
                                at = checkpoint.stream_sequence,
                                head = head.stream_sequence,
                                "the log has moved on but nothing arrives; reading again"
                            );
                            continue 'subscription;
                        }
                        continue;
                    }
                };
                let mut arrived = vec![first?];
                while arrived.len() < self.batch_size {
                    match reader.receiver.try_recv() {
                        Ok(record) => arrived.push(record?),
                        Err(_) => break,
                    }
                }
                let mut records = Vec::with_capacity(arrived.len());
                let mut next = checkpoint.stream_sequence + 1;
                for record in arrived {
                    if record.stream_sequence < next {
                        continue;
                    }
                    if record.stream_sequence > next {
                        tracing::warn!(
                            view = %self.view,
                            expected = next,
                            got = record.stream_sequence,
                            "a gap in the log stream; reading again from the checkpoint"
                        );
                        continue 'subscription;
                    }
                    records.push(record);
                    next += 1;
                }
                let applying = std::time::Instant::now();
                let applied = self.apply_batch(checkpoint, &records).await?;
                tracing::debug!(
                    view = %self.view,
                    messages = records.len(),
                    micros = applying.elapsed().as_micros() as u64,
                    "applied a batch"
                );
                match applied {
                    Applied::Advanced(advanced) => checkpoint = advanced,
                    Applied::Moved(found) => {
                        tracing::info!(
                            view = %self.view,
                            at = found.stream_sequence,
                            "the checkpoint moved (replay or another projector); following from it"
                        );
                        checkpoint = found;
                        continue 'subscription;
                    }
                }
                if until.is_some_and(|until| checkpoint.stream_sequence >= until) {
                    return Ok(checkpoint);
                }
            }
        }
    }
}

/// The reading side of a projector; dropping it stops the reading task.
struct Reader {
    receiver: tokio::sync::mpsc::Receiver<anyhow::Result<LogRecord>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Reader {
    fn drop(&mut self) {
        self.task.abort();
    }
}
