//! The live feed behind `GET /live`: the log as it grows, for many clients at once.
//!
//! One ordered consumer per instance reads the log stream ([`LiveHub::start`]). Each
//! message is decoded once into a [`LiveEvent`]: its SSE data serialised once, and
//! the user it belongs to (its owner), resolved once. The hub fans it out over a
//! bounded broadcast channel to every client, so a thousand clients cost one
//! consumer.
//!
//! A client follows from a log position ([`LiveHub::follow`]): it first joins the
//! broadcast, then reads what the stream holds after its position up to the
//! stream's end (a catch-up with an ordered consumer of its own, which ends there),
//! then takes the broadcast, skipping what the catch-up already gave. The stream is
//! in log order, so "after a position" is a suffix of it, found by a binary search
//! over stream sequences: no gap, no repeat, also after a restart of the instance.
//!
//! Memory is bounded: the broadcast keeps the last [`BROADCAST_CAPACITY`] events
//! for all clients, and each client's own queue holds at most
//! [`CLIENT_QUEUE`]. A client that falls further behind than either is dropped with
//! [`Dropped`]: it reconnects and resumes from its last event, and never holds the
//! others back.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use async_nats::jetstream::{self, consumer};
use futures::StreamExt as _;
use orders_nats::{LogEvent, LogPosition, LOG_STREAM};
use serde_json::{json, Value};
use sqlx::PgPool;
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Events the broadcast keeps for clients that read slower than the log grows.
pub const BROADCAST_CAPACITY: usize = 4096;
/// Events queued for one client before it counts as too slow and is dropped.
pub const CLIENT_QUEUE: usize = 1024;
/// Orders whose owner the hub remembers (past that, it forgets them all and reads
/// again as needed).
const OWNER_CACHE: usize = 100_000;

/// One event of the log, as the live feed sends it.
#[derive(Debug)]
pub struct LiveEvent {
    /// Its message's sequence in the log stream.
    pub stream_sequence: u64,
    pub position: LogPosition,
    pub event_type: String,
    /// The user it belongs to: the user of a user event, the owner of an order and
    /// of that order's checks; `None` for what belongs to nobody (administrators
    /// see it).
    pub owner: Option<Uuid>,
    /// The SSE `data:` line: aggregate type and id, sequence, event id, recorded
    /// time, actor, correlation id and the payload, as JSON.
    pub data: String,
}

/// Who is following, and so what they may see.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Audience {
    /// An administrator or auditor: every event.
    Everything,
    /// A user: the events that belong to them.
    User(Uuid),
}

impl Audience {
    pub fn sees(&self, event: &LiveEvent) -> bool {
        match self {
            Audience::Everything => true,
            Audience::User(user) => event.owner == Some(*user),
        }
    }
}

/// Why a follower stopped before its client went away.
#[derive(Debug, thiserror::Error)]
pub enum Dropped {
    #[error("the client fell too far behind the log; reconnect with Last-Event-ID")]
    TooSlow,
    #[error("the live feed stopped")]
    Stopped,
    #[error("reading the log failed: {0:#}")]
    Log(anyhow::Error),
}

/// The instance's one reader of the log for live clients.
pub struct LiveHub {
    sender: broadcast::Sender<Arc<LiveEvent>>,
    /// The stream sequence the broadcast starts after, once the hub has read it:
    /// every event after it is broadcast, so a follower waits for it before it
    /// catches up (else an event between its catch-up and the broadcast's start
    /// could be missed).
    start: tokio::sync::watch::Sender<Option<u64>>,
    jetstream: jetstream::Context,
    owners: Owners,
    stopped: CancellationToken,
}

impl std::fmt::Debug for LiveHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveHub")
            .field("clients", &self.sender.receiver_count())
            .finish_non_exhaustive()
    }
}

impl LiveHub {
    /// Starts reading the log from its end, until `shutdown`.
    pub fn start(
        jetstream: jetstream::Context,
        pool: PgPool,
        shutdown: CancellationToken,
    ) -> Arc<Self> {
        let (sender, _) = broadcast::channel(BROADCAST_CAPACITY);
        let hub = Arc::new(Self {
            sender,
            start: tokio::sync::watch::Sender::new(None),
            jetstream,
            owners: Owners::new(pool),
            stopped: shutdown,
        });
        tokio::spawn(hub.clone().read_the_log());
        hub
    }

    /// Reads the stream from its end on, decoding and broadcasting each event; after
    /// an error, again from the message after the last one broadcast.
    async fn read_the_log(self: Arc<Self>) {
        let mut next: Option<u64> = None;
        while !self.stopped.is_cancelled() {
            let read = self.broadcast_from(&mut next);
            let outcome = tokio::select! {
                outcome = read => outcome,
                () = self.stopped.cancelled() => break,
            };
            if let Err(error) = outcome {
                tracing::warn!(
                    error = format!("{error:#}"),
                    "the live feed lost the log; reading again"
                );
                tokio::select! {
                    () = tokio::time::sleep(std::time::Duration::from_millis(500)) => {}
                    () = self.stopped.cancelled() => break,
                }
            }
        }
    }

    async fn broadcast_from(&self, next: &mut Option<u64>) -> anyhow::Result<()> {
        let start_sequence = match *next {
            Some(start_sequence) => start_sequence,
            // The first time: right after the stream's end as it is now, said to
            // the followers once known.
            None => {
                let (_, (_, after)) = self.log_stream().await?;
                *next = Some(after + 1);
                self.start.send_replace(Some(after));
                after + 1
            }
        };
        let mut messages = self
            .ordered_consumer(consumer::DeliverPolicy::ByStartSequence { start_sequence })
            .await?;
        while let Some(message) = messages.next().await {
            let message = message.context("reading the log stream")?;
            let (sequence, event) = self.live_event(&message).await?;
            *next = Some(sequence + 1);
            if let Some(event) = event {
                // No receiver is not an error: nobody is listening just now.
                let _ = self.sender.send(Arc::new(event));
            }
        }
        anyhow::bail!("the log stream's consumer ended")
    }

    async fn ordered_consumer(
        &self,
        deliver_policy: consumer::DeliverPolicy,
    ) -> anyhow::Result<consumer::pull::Ordered> {
        let stream = self
            .jetstream
            .get_stream(LOG_STREAM)
            .await
            .context("opening the log stream (run `orders nats setup`)")?;
        let consumer = stream
            .create_consumer(consumer::pull::OrderedConfig {
                description: Some("the live feed".to_owned()),
                deliver_policy,
                ..Default::default()
            })
            .await
            .context("creating an ordered consumer of the log")?;
        consumer.messages().await.context("reading the log stream")
    }

    /// A message's stream sequence, and the event it carries; `None` for a message
    /// that is not an Orders event (logged and skipped: only the relay publishes to
    /// the log, so this is never expected, and it must not stop the feed). An error
    /// is a failure to look the owner up, which may pass.
    async fn live_event(
        &self,
        message: &jetstream::Message,
    ) -> anyhow::Result<(u64, Option<LiveEvent>)> {
        let stream_sequence = message
            .info()
            .map_err(|error| anyhow::anyhow!("a log message without info: {error}"))?
            .stream_sequence;
        let no_headers = async_nats::HeaderMap::new();
        let decoded = LogEvent::decode(
            message.headers.as_ref().unwrap_or(&no_headers),
            &message.payload,
        )
        .map_err(anyhow::Error::new)
        .and_then(|event| {
            let payload: Value = serde_json::from_slice(&event.payload)?;
            Ok((event, payload))
        });
        let (event, payload) = match decoded {
            Ok(decoded) => decoded,
            Err(error) => {
                tracing::warn!(stream_sequence, %error, "the live feed skips a log message that is not an Orders event");
                return Ok((stream_sequence, None));
            }
        };
        let owner = self.owners.of(&event, &payload).await?;
        let data = json!({
            "event_id": event.event_id(),
            "aggregate_type": event.aggregate_type,
            "aggregate_id": event.aggregate_id,
            "sequence": event.sequence,
            "event_type": event.event_type,
            "event_version": event.event_version,
            "recorded_at": event.recorded_at,
            "actor": event.metadata.get("actor"),
            "correlation_id": event.metadata.get("correlation_id"),
            "payload": payload,
        })
        .to_string();
        let live = LiveEvent {
            stream_sequence,
            position: event.position(),
            event_type: event.event_type,
            owner,
            data,
        };
        Ok((stream_sequence, Some(live)))
    }

    /// The events `audience` may see after `after` (from now on without one), in
    /// log order, each once. The receiver ends with a [`Dropped`] when the client
    /// fell too far behind or the hub stopped; dropping it stops the follower.
    pub fn follow(
        self: &Arc<Self>,
        audience: Audience,
        after: Option<LogPosition>,
    ) -> mpsc::Receiver<Result<Arc<LiveEvent>, Dropped>> {
        let (sender, receiver) = mpsc::channel(CLIENT_QUEUE);
        // Joined before the catch-up reads the stream's end: everything after that
        // end comes through here.
        let live = self.sender.subscribe();
        let hub = self.clone();
        tokio::spawn(async move {
            let outcome = hub.feed(audience, after, live, &sender).await;
            if let Err(dropped) = outcome {
                let _ = sender.try_send(Err(dropped));
            }
        });
        receiver
    }

    async fn feed(
        &self,
        audience: Audience,
        after: Option<LogPosition>,
        mut live: broadcast::Receiver<Arc<LiveEvent>>,
        sender: &mpsc::Sender<Result<Arc<LiveEvent>, Dropped>>,
    ) -> Result<(), Dropped> {
        // The broadcast's starting point first: a catch-up then reads at least to it.
        let mut started = self.start.subscribe();
        tokio::select! {
            ready = started.wait_for(Option::is_some) => {
                ready.map_err(|_| Dropped::Stopped)?;
            }
            () = sender.closed() => return Ok(()),
            () = self.stopped.cancelled() => return Err(Dropped::Stopped),
        }
        let mut delivered: u64 = 0;
        if let Some(after) = after {
            delivered = self.catch_up(audience, after, sender).await?;
        }
        loop {
            let event = tokio::select! {
                received = live.recv() => match received {
                    Ok(event) => event,
                    Err(broadcast::error::RecvError::Lagged(_)) => return Err(Dropped::TooSlow),
                    Err(broadcast::error::RecvError::Closed) => return Err(Dropped::Stopped),
                },
                () = sender.closed() => return Ok(()),
                () = self.stopped.cancelled() => return Err(Dropped::Stopped),
            };
            if event.stream_sequence <= delivered
                || after.is_some_and(|after| event.position <= after)
            {
                continue;
            }
            delivered = event.stream_sequence;
            if audience.sees(&event) {
                offer(sender, event)?;
            }
        }
    }

    /// Sends what the stream holds after `after`, up to its end now; answers the
    /// last stream sequence read (0 if none).
    async fn catch_up(
        &self,
        audience: Audience,
        after: LogPosition,
        sender: &mpsc::Sender<Result<Arc<LiveEvent>, Dropped>>,
    ) -> Result<u64, Dropped> {
        let (start, end) = self
            .first_sequence_after(after)
            .await
            .map_err(Dropped::Log)?;
        if start > end {
            return Ok(start.saturating_sub(1));
        }
        let mut messages = self
            .ordered_consumer(consumer::DeliverPolicy::ByStartSequence {
                start_sequence: start,
            })
            .await
            .map_err(Dropped::Log)?;
        let mut last = start - 1;
        while last < end {
            let message = tokio::select! {
                message = messages.next() => message,
                () = sender.closed() => return Err(Dropped::Stopped),
            };
            let message = message
                .ok_or_else(|| Dropped::Log(anyhow::anyhow!("the log stream's consumer ended")))?
                .map_err(|error| {
                    Dropped::Log(anyhow::anyhow!("reading the log stream: {error}"))
                })?;
            let (sequence, event) = self.live_event(&message).await.map_err(Dropped::Log)?;
            last = sequence;
            let Some(event) = event else {
                continue;
            };
            if audience.sees(&event) {
                // The catch-up waits for a slow client (it is its own reader);
                // only the broadcast must not.
                sender
                    .send(Ok(Arc::new(event)))
                    .await
                    .map_err(|_| Dropped::Stopped)?;
            }
        }
        Ok(last)
    }

    /// The log stream, and its first and last sequence now.
    async fn log_stream(&self) -> anyhow::Result<(jetstream::stream::Stream, (u64, u64))> {
        let mut stream = self
            .jetstream
            .get_stream(LOG_STREAM)
            .await
            .context("opening the log stream (run `orders nats setup`)")?;
        let state = &stream.info().await.context("reading the log stream")?.state;
        let bounds = (state.first_sequence.max(1), state.last_sequence);
        Ok((stream, bounds))
    }

    /// The first stream sequence whose event comes after `after` in the log, and
    /// the stream's last sequence now. The stream is in log order, so this is a
    /// binary search over direct reads of single messages.
    async fn first_sequence_after(&self, after: LogPosition) -> anyhow::Result<(u64, u64)> {
        let (stream, (first, last)) = self.log_stream().await?;
        let (mut low, mut high) = (first, last + 1);
        while low < high {
            let middle = low + (high - low) / 2;
            let message = stream
                .get_raw_message(middle)
                .await
                .with_context(|| format!("reading message {middle} of the log stream"))?;
            let event = LogEvent::decode(&message.headers, &message.payload)
                .context("a log message that is not an Orders event")?;
            if event.position() > after {
                high = middle;
            } else {
                low = middle + 1;
            }
        }
        Ok((low, last))
    }
}

/// Queues `event` for a client, or drops the client if its queue is full.
fn offer(
    sender: &mpsc::Sender<Result<Arc<LiveEvent>, Dropped>>,
    event: Arc<LiveEvent>,
) -> Result<(), Dropped> {
    match sender.try_send(Ok(event)) {
        Ok(()) => Ok(()),
        Err(mpsc::error::TrySendError::Full(_)) => Err(Dropped::TooSlow),
        Err(mpsc::error::TrySendError::Closed(_)) => Err(Dropped::Stopped),
    }
}

/// Whose an event is: a user's own events are theirs; an order's and its checks'
/// are its owner's, a purchase's and the stock events for it its buyer's (from the
/// placement, remembered).
struct Owners {
    pool: PgPool,
    orders: Mutex<HashMap<String, Option<Uuid>>>,
}

impl Owners {
    fn new(pool: PgPool) -> Self {
        Self {
            pool,
            orders: Mutex::new(HashMap::new()),
        }
    }

    async fn of(&self, event: &LogEvent, payload: &Value) -> anyhow::Result<Option<Uuid>> {
        match event.aggregate_type.as_str() {
            "user" => Ok(event.aggregate_id.parse().ok()),
            "order" | "purchase" => {
                let placement = match event.aggregate_type.as_str() {
                    "order" => "/OrderPlaced/owner",
                    _ => "/PurchasePlaced/owner",
                };
                if let Some(owner) = payload.pointer(placement).and_then(Value::as_str) {
                    let owner = owner.parse().ok();
                    self.remember(&event.aggregate_id, owner);
                    return Ok(owner);
                }
                self.owner_of(&event.aggregate_type, &event.aggregate_id)
                    .await
            }
            // A check is its order's; a product's stock event for a purchase
            // (reserved, refused, released, shipped) is that purchase's buyer's.
            "price_check" | "product" => {
                let (owned_by, field) = match event.aggregate_type.as_str() {
                    "price_check" => ("order", "order_id"),
                    _ => ("purchase", "purchase_id"),
                };
                let owning_id = payload
                    .as_object()
                    .and_then(|variants| variants.values().next())
                    .and_then(|fields| fields.get(field))
                    .and_then(Value::as_str);
                match owning_id {
                    Some(owning_id) => self.owner_of(owned_by, owning_id).await,
                    None => Ok(None),
                }
            }
            _ => Ok(None),
        }
    }

    fn remember(&self, order_id: &str, owner: Option<Uuid>) {
        let mut orders = self.orders.lock().expect("not poisoned");
        if orders.len() >= OWNER_CACHE {
            orders.clear();
        }
        orders.insert(order_id.to_owned(), owner);
    }

    /// The owner of an order or a purchase, from its placement (ids are UUIDs, so
    /// one cache serves both).
    async fn owner_of(&self, aggregate_type: &str, id: &str) -> anyhow::Result<Option<Uuid>> {
        if let Some(owner) = self.orders.lock().expect("not poisoned").get(id) {
            return Ok(*owner);
        }
        let owner: Option<String> = sqlx::query_scalar(
            "SELECT COALESCE(payload -> 'OrderPlaced' ->> 'owner', payload -> 'PurchasePlaced' ->> 'owner')
               FROM events
              WHERE aggregate_type = $1 AND aggregate_id = $2 AND sequence = 1",
        )
        .bind(aggregate_type)
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .context("reading an order's or a purchase's owner")?
        .flatten();
        let owner = owner.and_then(|owner| owner.parse().ok());
        self.remember(id, owner);
        Ok(owner)
    }
}
