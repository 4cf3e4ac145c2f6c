//! How a worker consumes the log: one durable consumer per worker kind, shared by
//! every instance (competing consumers), at-least-once.
//!
//! Each message is decoded into the event it carries and handed to the worker's
//! step function, which says what became of it: done (acknowledged, waiting for the
//! server's confirmation), retry later (negatively acknowledged with a growing
//! delay, until the worker's delivery limit; then dead-lettered), or give up now (a
//! permanent failure: dead-lettered at once). While a step runs, the message's ack
//! deadline is pushed back, so a slow check is not redelivered to a second scraper.
//! The worker's letters put back by `orders dlq retry` are consumed the same way.
//!
//! Effects must be idempotent: a message can always arrive twice (a crash after the
//! effect and before the ack).

use std::future::Future;
use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream::{self, consumer, AckKind};
use futures::StreamExt as _;
use orders_nats::work::{
    Worker, DEAD_LETTER_REASON_HEADER, DEAD_LETTER_STREAM, DEAD_LETTER_WORKER_HEADER,
};
use orders_nats::LogEvent;

/// What a worker's step made of one message.
#[derive(Debug)]
pub enum Outcome {
    /// Handled (including "nothing to do"): acknowledge.
    Done,
    /// Failed in a way that may pass (a timeout, a database restart): deliver again
    /// later.
    Retry(anyhow::Error),
    /// Failed in a way that will not pass by retrying: dead-letter now.
    GiveUp(anyhow::Error),
}

/// Runs `step` on every message of `worker`'s log consumer and of its retry
/// consumer, at most `concurrency` at a time per consumer, until `shutdown`
/// resolves; messages in hand are finished first.
pub async fn consume<Step, Stepping>(
    jetstream: &jetstream::Context,
    worker: Worker,
    concurrency: usize,
    shutdown: impl Future<Output = ()> + Send,
    step: Step,
) -> anyhow::Result<()>
where
    Step: Fn(LogEvent) -> Stepping + Clone + Send + Sync + 'static,
    Stepping: Future<Output = Outcome> + Send,
{
    let log: consumer::PullConsumer = jetstream
        .get_stream(orders_nats::LOG_STREAM)
        .await
        .context("opening the log stream")?
        .get_or_create_consumer(worker.name, worker.log_consumer_config())
        .await
        .with_context(|| format!("opening the {} consumer", worker.name))?;
    let retries: consumer::PullConsumer = jetstream
        .get_stream(DEAD_LETTER_STREAM)
        .await
        .context("opening the dead-letter stream")?
        .get_or_create_consumer(
            &worker.retry_consumer_name(),
            worker.retry_consumer_config(),
        )
        .await
        .with_context(|| format!("opening the {} consumer", worker.retry_consumer_name()))?;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let run = |consumer: consumer::PullConsumer| {
        let step = step.clone();
        let mut stopped = stopped.clone();
        let asked_to_stop = stopped.clone();
        async move {
            let messages = consumer
                .messages()
                .await
                .with_context(|| format!("pulling from the {} consumer", worker.name))?;
            let until_stopped = async move {
                let _ = stopped.wait_for(|stop| *stop).await;
            };
            messages
                .take_until(until_stopped)
                .for_each_concurrent(concurrency, |message| {
                    let step = step.clone();
                    async move {
                        match message {
                            Ok(message) => handle(jetstream, worker, message, step).await,
                            // Heartbeats missed while the server was away, and the
                            // like: the stream goes on.
                            Err(error) => {
                                tracing::warn!(worker = worker.name, %error, "pulling messages")
                            }
                        }
                    }
                })
                .await;
            // The messages end only when asked to; otherwise (the consumer was
            // deleted, the connection is gone for good) this worker must not look
            // alive: its process fails and its supervisor restarts it.
            if !*asked_to_stop.borrow() {
                anyhow::bail!("the {} consumer stopped delivering messages", worker.name);
            }
            anyhow::Ok(())
        }
    };
    let consuming = futures::future::try_join(run(log), run(retries));
    tokio::pin!(consuming);
    tokio::select! {
        result = &mut consuming => result.map(|_| ()),
        () = shutdown => {
            let _ = stop.send(true);
            consuming.await.map(|_| ())
        }
    }
}

async fn handle<Step, Stepping>(
    jetstream: &jetstream::Context,
    worker: Worker,
    message: jetstream::Message,
    step: Step,
) where
    Step: Fn(LogEvent) -> Stepping,
    Stepping: Future<Output = Outcome>,
{
    let delivered = message.info().map(|info| info.delivered).unwrap_or(1);
    let headers = message.headers.clone().unwrap_or_default();
    let mut event_id = message.subject.to_string();
    let outcome = match LogEvent::decode(&headers, &message.payload) {
        Ok(event) => {
            event_id = event.event_id();
            let span = tracing::info_span!(
                "worker step",
                worker = worker.name,
                event_id,
                event_type = event.event_type.as_str(),
                correlation_id = event
                    .metadata
                    .get("correlation_id")
                    .map(String::as_str)
                    .unwrap_or(""),
                delivered,
            );
            let stepping = tracing::Instrument::instrument(step(event), span);
            with_progress(&message, worker.ack_wait, stepping).await
        }
        Err(error) => Outcome::GiveUp(anyhow::Error::new(error).context("not an event of the log")),
    };
    let result = match outcome {
        Outcome::Done => message
            .double_ack()
            .await
            .map_err(|error| anyhow::anyhow!(error)),
        Outcome::Retry(error) if delivered < worker.max_deliver => {
            let delay = worker.retry_delay(delivered);
            tracing::warn!(
                worker = worker.name,
                error = format!("{error:#}"),
                delivered,
                retry_in_ms = delay.as_millis() as u64,
                "step failed; will retry"
            );
            message
                .ack_with(AckKind::Nak(Some(delay)))
                .await
                .map_err(|error| anyhow::anyhow!(error))
        }
        Outcome::Retry(error) | Outcome::GiveUp(error) => {
            dead_letter(jetstream, worker, &message, &event_id, &error, delivered).await
        }
    };
    if let Err(error) = result {
        // The message comes back after its ack wait; the step is idempotent.
        tracing::warn!(
            worker = worker.name,
            error = format!("{error:#}"),
            "settling a message failed"
        );
    }
}

/// Runs the step, telling the server every third of the ack wait that the message
/// is still being worked on.
async fn with_progress(
    message: &jetstream::Message,
    ack_wait: Duration,
    stepping: impl Future<Output = Outcome>,
) -> Outcome {
    tokio::pin!(stepping);
    let every = (ack_wait / 3).max(Duration::from_millis(100));
    loop {
        tokio::select! {
            outcome = &mut stepping => return outcome,
            () = tokio::time::sleep(every) => {
                if let Err(error) = message.ack_with(AckKind::Progress).await {
                    tracing::debug!(%error, "could not extend the ack deadline");
                }
            }
        }
    }
}

async fn dead_letter(
    jetstream: &jetstream::Context,
    worker: Worker,
    message: &jetstream::Message,
    event_id: &str,
    error: &anyhow::Error,
    delivered: i64,
) -> anyhow::Result<()> {
    // A dead letter is a new message of its own stream: the log's message id and
    // expected sequence must not come along (it would be deduplicated or refused).
    let mut headers = async_nats::HeaderMap::new();
    if let Some(original) = &message.headers {
        for (name, values) in original.iter() {
            let name: &str = name.as_ref();
            if name.eq_ignore_ascii_case("Nats-Msg-Id")
                || name.eq_ignore_ascii_case("Nats-Expected-Last-Sequence")
            {
                continue;
            }
            for value in values {
                headers.append(name, value.as_str());
            }
        }
    }
    let reason: String = format!("{error:#}").chars().take(1_000).collect();
    let reason = reason.replace(['\r', '\n'], " ");
    headers.insert(DEAD_LETTER_REASON_HEADER, reason.as_str());
    headers.insert(DEAD_LETTER_WORKER_HEADER, worker.name);
    headers.insert(
        "Orders-Dead-Letter-Deliveries",
        delivered.to_string().as_str(),
    );
    tracing::error!(
        worker = worker.name,
        event_id,
        delivered,
        error = %reason,
        "giving up on a message: dead-lettered"
    );
    jetstream
        .publish_with_headers(
            worker.dead_letter_subject(event_id),
            headers,
            message.payload.clone(),
        )
        .await
        .context("publishing the dead letter")?
        .await
        .context("storing the dead letter")?;
    message
        .double_ack()
        .await
        .map_err(|error| anyhow::anyhow!(error))
}
