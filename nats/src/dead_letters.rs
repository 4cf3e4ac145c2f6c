//! The operators' side of dead letters (`orders dlq list|retry`): what the workers
//! gave up on, and putting it back for them.
//!
//! A worker that gives up on a message copies it to `ORDERS_DEAD_LETTERS` under
//! `orders.dead.<worker>.<event token>` with why (see [`crate::consumer`]). Listing
//! reads those messages from the stream without a consumer of its own, so it leaves
//! nothing behind on the server. Retrying publishes each letter again, unchanged
//! but for the dead-letter headers, as `orders.retry.<worker>.<event token>` in the
//! same stream, where the worker's `<worker>-retries` consumer picks it up, and then
//! deletes the dead letter. The log stream is never written to (guarantee 9).

use crate::work::{
    Worker, DEAD_LETTER_PREFIX, DEAD_LETTER_REASON_HEADER, DEAD_LETTER_STREAM,
    DEAD_LETTER_WORKER_HEADER, WORKERS,
};
use anyhow::Context as _;
use async_nats::jetstream::message::StreamMessage;
use async_nats::jetstream::{self, context::GetStreamErrorKind, stream};
use chrono::{DateTime, Utc};

/// How many times the worker had the message when it gave up (written by
/// [`crate::consumer`]).
const DEAD_LETTER_DELIVERIES_HEADER: &str = "Orders-Dead-Letter-Deliveries";

/// The headers a dead letter has beyond the message it copies: a retried letter must
/// not carry them, or the envelope would read them back as event metadata.
const DEAD_LETTER_HEADERS: [&str; 3] = [
    DEAD_LETTER_REASON_HEADER,
    DEAD_LETTER_WORKER_HEADER,
    DEAD_LETTER_DELIVERIES_HEADER,
];

/// One message a worker gave up on, as `orders dlq list` shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DeadLetter {
    /// Its sequence in `ORDERS_DEAD_LETTERS`: what `orders dlq retry <sequence>` takes.
    pub stream_sequence: u64,
    /// The worker that gave up (`scraper`, `price-policy`, `email`).
    pub worker: String,
    /// `<aggregate_type>/<aggregate_id>/<sequence>`; for a message that was not an
    /// event of the log, the last token of its dead-letter subject.
    pub event_id: String,
    /// Empty when the message was not an event of the log.
    pub event_type: String,
    /// Why the worker gave up: the error with its causes, on one line.
    pub reason: String,
    /// How many times the worker had it (absent on letters written without it).
    pub deliveries: Option<i64>,
    /// When it was dead-lettered: the time the stream stored it.
    pub dead_at: DateTime<Utc>,
    pub correlation_id: Option<String>,
}

/// Which dead letters `retry` puts back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RetrySelection {
    /// The one with this sequence in `ORDERS_DEAD_LETTERS`.
    One(u64),
    /// Every dead letter, or every one of one worker.
    All { worker: Option<String> },
}

/// The dead letters currently in the stream, oldest first; those of one worker when
/// `worker` names one. No dead-letter stream yet (nothing ever died, or the topology
/// was never set up) is an empty list: this only reads.
pub async fn list(
    jetstream: &jetstream::Context,
    worker: Option<&str>,
) -> anyhow::Result<Vec<DeadLetter>> {
    let filter = dead_letter_filter(worker)?;
    let Some(stream) = open_stream(jetstream).await? else {
        return Ok(Vec::new());
    };
    let letters = read_dead_letters(stream, &filter).await?;
    letters
        .iter()
        .map(|message| describe(message).map(|(letter, _)| letter))
        .collect()
}

/// Puts the selected dead letters back for their workers and removes them from the
/// dead letters; returns what was put back, oldest first.
///
/// Each letter is published (and acknowledged by the stream) before it is deleted.
/// A crash between the two leaves the letter listed although it was put back, and
/// the next retry puts it back a second time: the worker then handles the event
/// twice, which it must tolerate anyway, since its effects are idempotent
/// (guarantee 4). Within the stream's duplicate window the second copy is even
/// dropped, because the retried message's id is derived from the letter.
pub async fn retry(
    jetstream: &jetstream::Context,
    which: RetrySelection,
) -> anyhow::Result<Vec<DeadLetter>> {
    let messages = match &which {
        RetrySelection::One(sequence) => {
            let stream = open_stream(jetstream).await?.with_context(|| {
                format!("no dead letter {sequence}: the stream {DEAD_LETTER_STREAM} does not exist")
            })?;
            let message = match stream.get_raw_message(*sequence).await {
                Ok(message) => message,
                Err(error) if error.kind() == stream::LastRawMessageErrorKind::NoMessageFound => {
                    anyhow::bail!(
                        "no dead letter {sequence} in {DEAD_LETTER_STREAM} (already retried, \
                         expired, or never there; `orders dlq list` shows them)"
                    )
                }
                Err(error) => {
                    return Err(anyhow::Error::new(error).context(format!(
                        "reading message {sequence} of {DEAD_LETTER_STREAM}"
                    )))
                }
            };
            if !is_dead_letter_subject(&message.subject) {
                anyhow::bail!(
                    "message {sequence} of {DEAD_LETTER_STREAM} is not a dead letter \
                     (its subject is {}); `orders dlq list` shows the dead letters",
                    message.subject
                );
            }
            vec![(stream, message)]
        }
        RetrySelection::All { worker } => {
            let filter = dead_letter_filter(worker.as_deref())?;
            match open_stream(jetstream).await? {
                None => Vec::new(),
                Some(stream) => read_dead_letters(stream.clone(), &filter)
                    .await?
                    .into_iter()
                    .map(|message| (stream.clone(), message))
                    .collect(),
            }
        }
    };
    let mut retried = Vec::with_capacity(messages.len());
    for (stream, message) in messages {
        let letter = put_back(jetstream, &stream, &message)
            .await
            .with_context(|| match retried.len() {
                0 => format!("retrying dead letter {}", message.sequence),
                done => format!(
                    "retrying dead letter {} (after putting back {done})",
                    message.sequence
                ),
            })?;
        retried.push(letter);
    }
    Ok(retried)
}

/// How much of a reason a table row shows; `--json` has all of it.
const REASON_WIDTH: usize = 60;

/// The dead letters as a table for a terminal, one per line under a header line:
/// sequence, when (RFC 3339, UTC), worker, event type, event id, deliveries, reason
/// (cut to its first 60 characters).
pub fn table(letters: &[DeadLetter]) -> String {
    let header = [
        "SEQUENCE",
        "DEAD AT",
        "WORKER",
        "EVENT TYPE",
        "EVENT ID",
        "DELIVERIES",
        "REASON",
    ]
    .map(str::to_owned);
    let rows: Vec<[String; 7]> = letters
        .iter()
        .map(|letter| {
            let reason = if letter.reason.chars().count() > REASON_WIDTH {
                let cut: String = letter.reason.chars().take(REASON_WIDTH - 1).collect();
                format!("{cut}…")
            } else {
                letter.reason.clone()
            };
            [
                letter.stream_sequence.to_string(),
                letter
                    .dead_at
                    .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                letter.worker.clone(),
                or_dash(&letter.event_type),
                letter.event_id.clone(),
                letter
                    .deliveries
                    .map_or_else(|| "-".to_owned(), |deliveries| deliveries.to_string()),
                or_dash(&reason),
            ]
        })
        .collect();
    let mut widths = header.clone().map(|title| title.chars().count());
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in std::iter::once(&header).chain(&rows) {
        let cells: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

fn or_dash(text: &str) -> String {
    if text.is_empty() {
        "-".to_owned()
    } else {
        text.to_owned()
    }
}

/// `orders.dead.>`, or `orders.dead.<worker>.>` for a known worker.
fn dead_letter_filter(worker: Option<&str>) -> anyhow::Result<String> {
    match worker {
        None => Ok(format!("{DEAD_LETTER_PREFIX}.>")),
        Some(name) => {
            let worker = Worker::named(name).with_context(|| {
                let names: Vec<&str> = WORKERS.iter().map(|worker| worker.name).collect();
                format!("no worker named {name:?} (workers: {})", names.join(", "))
            })?;
            Ok(format!("{DEAD_LETTER_PREFIX}.{}.>", worker.name))
        }
    }
}

fn is_dead_letter_subject(subject: &str) -> bool {
    subject
        .strip_prefix(DEAD_LETTER_PREFIX)
        .is_some_and(|rest| rest.starts_with('.'))
}

/// The dead-letter stream, or `None` when it does not exist.
async fn open_stream(jetstream: &jetstream::Context) -> anyhow::Result<Option<stream::Stream>> {
    match jetstream.get_stream(DEAD_LETTER_STREAM).await {
        Ok(stream) => Ok(Some(stream)),
        Err(error)
            if matches!(
                error.kind(),
                GetStreamErrorKind::JetStream(ref inner)
                    if inner.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND
            ) =>
        {
            Ok(None)
        }
        Err(error) => {
            Err(anyhow::Error::new(error)
                .context(format!("opening the stream {DEAD_LETTER_STREAM}")))
        }
    }
}

/// The messages matching `filter`, oldest first, up to the stream's last sequence
/// when we started: each request asks the stream leader for the next match at or
/// after a sequence, so deleted (retried) letters and retry letters are skipped by
/// the server, and an empty stream ends at the first answer ("no message found")
/// instead of waiting for messages the way a consumer would.
async fn read_dead_letters(
    mut stream: stream::Stream,
    filter: &str,
) -> anyhow::Result<Vec<StreamMessage>> {
    let last_sequence = stream
        .info()
        .await
        .with_context(|| format!("reading the state of {DEAD_LETTER_STREAM}"))?
        .state
        .last_sequence;
    let mut messages = Vec::new();
    let mut next = 1;
    while next <= last_sequence {
        let message = match stream.get_first_raw_message_by_subject(filter, next).await {
            Ok(message) => message,
            Err(error) if error.kind() == stream::LastRawMessageErrorKind::NoMessageFound => break,
            Err(error) => {
                return Err(anyhow::Error::new(error)
                    .context(format!("reading {DEAD_LETTER_STREAM} from sequence {next}")))
            }
        };
        // Letters that died after we started are for the next listing: without this
        // bound a worker dead-lettering fast could keep the listing going.
        if message.sequence > last_sequence {
            break;
        }
        next = message.sequence + 1;
        messages.push(message);
    }
    Ok(messages)
}

/// What a dead-letter message says, and the worker it goes back to (`None` when its
/// worker is not one this build knows: it can be listed, not retried).
fn describe(message: &StreamMessage) -> anyhow::Result<(DeadLetter, Option<Worker>)> {
    let header = |name: &str| {
        message
            .headers
            .get(name)
            .map(|value| value.as_str().to_owned())
    };
    // The subject is `orders.dead.<worker>.<event token>`; the headers say it in full.
    let mut tokens = message.subject.splitn(4, '.').skip(2);
    let subject_worker = tokens.next().unwrap_or_default().to_owned();
    let subject_event = tokens.next().unwrap_or_default().to_owned();
    let worker_name = header(DEAD_LETTER_WORKER_HEADER).unwrap_or(subject_worker);
    // Timestamps before 1970 or after 2262 are not stream times.
    let dead_at =
        DateTime::from_timestamp(message.time.unix_timestamp(), message.time.nanosecond())
            .with_context(|| {
                format!(
                    "message {} of {DEAD_LETTER_STREAM} has an impossible time",
                    message.sequence
                )
            })?;
    let letter = DeadLetter {
        stream_sequence: message.sequence,
        worker: worker_name.clone(),
        event_id: header("Orders-Event-Id").unwrap_or(subject_event),
        event_type: header("Orders-Event-Type").unwrap_or_default(),
        reason: header(DEAD_LETTER_REASON_HEADER).unwrap_or_default(),
        deliveries: header(DEAD_LETTER_DELIVERIES_HEADER).and_then(|value| value.parse().ok()),
        dead_at,
        correlation_id: header("Orders-Correlation-Id"),
    };
    Ok((letter, Worker::named(&worker_name)))
}

/// Publishes one dead letter as its worker's retry letter, waits for the stream to
/// store it, then deletes the dead letter.
async fn put_back(
    jetstream: &jetstream::Context,
    stream: &stream::Stream,
    message: &StreamMessage,
) -> anyhow::Result<DeadLetter> {
    let (letter, worker) = describe(message)?;
    let worker = worker.with_context(|| {
        format!(
            "it belongs to {:?}, which is not a worker of this build",
            letter.worker
        )
    })?;
    let subject = worker.retry_subject(&letter.event_id);
    let headers = retry_headers(&message.headers, message.sequence);
    jetstream
        .publish_with_headers(subject.clone(), headers, message.payload.clone())
        .await
        .with_context(|| format!("publishing it to {subject}"))?
        .await
        .with_context(|| format!("storing it as {subject}"))?;
    let deleted = stream
        .delete_message(message.sequence)
        .await
        .context("deleting it after putting it back (it was put back: do not retry it again)")?;
    anyhow::ensure!(
        deleted,
        "{DEAD_LETTER_STREAM} did not delete it after it was put back (do not retry it again)"
    );
    Ok(letter)
}

/// The dead letter's headers without the dead-letter ones, and without JetStream's
/// publish controls that came along; with a message id of its own, so that a retry
/// repeated after a crash (before the delete) within the stream's duplicate window
/// stores nothing new.
fn retry_headers(dead_letter: &async_nats::HeaderMap, sequence: u64) -> async_nats::HeaderMap {
    let mut headers = async_nats::HeaderMap::new();
    for (name, values) in dead_letter.iter() {
        let name: &str = name.as_ref();
        let dropped = DEAD_LETTER_HEADERS
            .iter()
            .any(|header| header.eq_ignore_ascii_case(name))
            || name.eq_ignore_ascii_case("Nats-Msg-Id")
            || name.to_ascii_lowercase().starts_with("nats-expected-");
        if dropped {
            continue;
        }
        for value in values {
            headers.append(name, value.as_str());
        }
    }
    headers.insert(
        "Nats-Msg-Id",
        format!("{DEAD_LETTER_STREAM}/retry/{sequence}").as_str(),
    );
    headers
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dead_letters_are_told_apart_from_retry_letters() {
        assert!(is_dead_letter_subject("orders.dead.email.user_x_1"));
        assert!(!is_dead_letter_subject("orders.retry.email.user_x_1"));
        assert!(!is_dead_letter_subject("orders.deadline.email.x"));
    }

    #[test]
    fn dead_letters_of_an_unknown_worker_are_refused_by_name() {
        assert_eq!(dead_letter_filter(None).unwrap(), "orders.dead.>");
        assert_eq!(
            dead_letter_filter(Some("email")).unwrap(),
            "orders.dead.email.>"
        );
        let error = dead_letter_filter(Some("mailer")).unwrap_err().to_string();
        assert!(error.contains("no worker named \"mailer\""), "{error}");
        assert!(error.contains("scraper, price-policy, email"), "{error}");
    }

    #[test]
    fn dead_letters_show_as_a_table_with_long_reasons_cut() {
        let letter = DeadLetter {
            stream_sequence: 12,
            worker: "email".to_owned(),
            event_id: "user/0192f1a8-0000-7000-8000-000000000001/1".to_owned(),
            event_type: "UserRegistered".to_owned(),
            reason: "x".repeat(100),
            deliveries: Some(5),
            dead_at: DateTime::from_timestamp(1_795_000_000, 123).unwrap(),
            correlation_id: None,
        };
        let unknown = DeadLetter {
            stream_sequence: 13,
            event_type: String::new(),
            reason: String::new(),
            deliveries: None,
            ..letter.clone()
        };
        let table = table(&[letter, unknown]);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 3, "{table}");
        assert!(lines[0].starts_with("SEQUENCE  DEAD AT "), "{table}");
        assert!(
            lines[1].starts_with("12        2026-11-18T11:06:40Z  email   UserRegistered  user/"),
            "{table}"
        );
        assert!(
            lines[1].ends_with(&format!("5           {}…", "x".repeat(59))),
            "{table}"
        );
        assert!(lines[2].contains("email   -  "), "{table}");
        assert!(lines[2].ends_with("-           -"), "{table}");
    }

    #[test]
    fn dead_letters_put_back_lose_their_dead_letter_headers_only() {
        let mut dead = async_nats::HeaderMap::new();
        dead.insert("Orders-Event-Id", "user/x/1");
        dead.insert("Orders-Correlation-Id", "c-1");
        dead.insert("Nats-Msg-Id", "user/x/1");
        dead.insert("Nats-Expected-Last-Sequence", "41");
        dead.insert(DEAD_LETTER_REASON_HEADER, "smtp said no");
        dead.insert("orders-dead-letter-worker", "email");
        dead.insert(DEAD_LETTER_DELIVERIES_HEADER, "5");
        let retried = retry_headers(&dead, 7);
        let mut names: Vec<String> = retried
            .iter()
            .map(|(name, _)| name.to_string().to_ascii_lowercase())
            .collect();
        names.sort();
        assert_eq!(
            names,
            ["nats-msg-id", "orders-correlation-id", "orders-event-id"]
        );
        assert_eq!(
            retried.get("Nats-Msg-Id").unwrap().as_str(),
            "ORDERS_DEAD_LETTERS/retry/7"
        );
        assert_eq!(retried.get("Orders-Event-Id").unwrap().as_str(), "user/x/1");
    }
}
