//! Where the log stream ends: the relay resumes from it, `orders lag` measures from it.

use anyhow::Context as _;
use async_nats::jetstream;

use crate::{LogEvent, LOG_STREAM};

/// The stream's last sequence and the log position of the event it carries (all
/// zero for an empty stream).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StreamHead {
    pub stream_sequence: u64,
    pub tx_id: u64,
    pub global_position: i64,
}

/// Reads where the log stream really ends.
pub async fn stream_head(jetstream: &jetstream::Context) -> anyhow::Result<StreamHead> {
    let mut stream = jetstream
        .get_stream(LOG_STREAM)
        .await
        .context("opening the log stream (run `orders nats setup`)")?;
    let last = stream
        .info()
        .await
        .context("reading the log stream")?
        .state
        .last_sequence;
    if last == 0 {
        return Ok(StreamHead::default());
    }
    let message = stream
        .get_raw_message(last)
        .await
        .context("reading the log stream's last message")?;
    let event = LogEvent::decode(&message.headers, &message.payload)
        .context("the log stream's last message is not an Orders event")?;
    Ok(StreamHead {
        stream_sequence: last,
        tx_id: event.tx_id,
        global_position: event.global_position,
    })
}
