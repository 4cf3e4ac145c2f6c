//! The workers' durable consumers of the log, and the dead-letter stream.
//!
//! Workers compete for messages: every instance of a worker pulls from the same
//! durable consumer, so each message goes to one of them and is redelivered (to any)
//! until it is acknowledged. The consumers are created with the log stream, before
//! the relay publishes anything, and start at new messages: a worker deployed onto
//! an existing log does not re-send years of mails.
//!
//! A message a worker gave up on (after its deliveries, or at once for a permanent
//! failure) is copied, with the reason, to `ORDERS_DEAD_LETTERS` under
//! `orders.dead.<worker>.<event id>` and acknowledged on the log. `orders dlq retry`
//! puts it back for its worker as `orders.retry.<worker>.<event id>` in the same
//! stream, which the worker's second consumer (`<worker>-retries`) reads. The log
//! stream itself never holds anything but the events (guarantee 9).

use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream};

use crate::LOG_SUBJECT_PREFIX;

/// The stream of dead letters and of retried ones.
pub const DEAD_LETTER_STREAM: &str = "ORDERS_DEAD_LETTERS";
/// Prefix of dead letters: `orders.dead.<worker>.<event id token>`.
pub const DEAD_LETTER_PREFIX: &str = "orders.dead";
/// Prefix of letters put back by `orders dlq retry`: `orders.retry.<worker>.<token>`.
pub const RETRY_PREFIX: &str = "orders.retry";
/// The header of a dead letter that says why it died.
pub const DEAD_LETTER_REASON_HEADER: &str = "Orders-Dead-Letter-Reason";
/// The header that names the worker a dead letter belongs to.
pub const DEAD_LETTER_WORKER_HEADER: &str = "Orders-Dead-Letter-Worker";

/// One worker's durable consumer of the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Worker {
    /// The durable consumer's name, also the worker's token in dead-letter subjects.
    pub name: &'static str,
    /// The aggregate types whose events it reads.
    pub aggregate_types: &'static [&'static str],
    /// How long a delivery may stay unacknowledged before it is redelivered; a
    /// worker that needs longer says so with in-progress acks.
    pub ack_wait: Duration,
    /// Deliveries before the message is dead-lettered.
    pub max_deliver: i64,
}

/// Fetches pages for requested price checks.
pub const SCRAPER: Worker = Worker {
    name: "scraper",
    aggregate_types: &["price_check"],
    ack_wait: Duration::from_secs(60),
    max_deliver: 5,
};

/// Records price observations on their orders (the price-check policy).
pub const PRICE_POLICY: Worker = Worker {
    name: "price-policy",
    aggregate_types: &["price_check"],
    ack_wait: Duration::from_secs(30),
    max_deliver: 10,
};

/// Sends the mails.
pub const EMAIL: Worker = Worker {
    name: "email",
    aggregate_types: &["user", "order", "purchase"],
    ack_wait: Duration::from_secs(60),
    max_deliver: 5,
};

/// The purchase saga: reserves, confirms or rejects, releases and ships stock. It
/// gives up on a message only after many tries (about four hours of backoff): a
/// purchase whose message died is still settled by the saga's time bound.
pub const SAGA: Worker = Worker {
    name: "saga",
    aggregate_types: &["purchase"],
    // Short, so a purchase whose saga instance died is taken up again soon (a
    // slow step extends its deadline with in-progress acks).
    ack_wait: Duration::from_secs(5),
    max_deliver: 50,
};

/// Records catalog products' prices and stock on the tracking orders that follow
/// them (no scraping).
pub const CATALOG_POLICY: Worker = Worker {
    name: "catalog-policy",
    aggregate_types: &["product", "order"],
    ack_wait: Duration::from_secs(30),
    max_deliver: 10,
};

/// Every worker.
pub const WORKERS: [Worker; 5] = [SCRAPER, PRICE_POLICY, EMAIL, SAGA, CATALOG_POLICY];

impl Worker {
    /// The worker with this name.
    pub fn named(name: &str) -> Option<Worker> {
        WORKERS.into_iter().find(|worker| worker.name == name)
    }

    /// Its consumer of the dead-letter stream (letters put back by `dlq retry`).
    pub fn retry_consumer_name(&self) -> String {
        format!("{}-retries", self.name)
    }

    pub fn retry_subject_filter(&self) -> String {
        format!("{RETRY_PREFIX}.{}.>", self.name)
    }

    pub fn dead_letter_subject(&self, event_id: &str) -> String {
        format!(
            "{DEAD_LETTER_PREFIX}.{}.{}",
            self.name,
            subject_token(event_id)
        )
    }

    pub fn retry_subject(&self, event_id: &str) -> String {
        format!("{RETRY_PREFIX}.{}.{}", self.name, subject_token(event_id))
    }

    fn log_filters(&self) -> Vec<String> {
        self.aggregate_types
            .iter()
            .map(|aggregate_type| format!("{LOG_SUBJECT_PREFIX}.{aggregate_type}.>"))
            .collect()
    }

    /// How long to wait before delivery `delivered + 1` after a failed one: 1 s,
    /// 5 s, 30 s, 2 min, 5 min. Given with the worker's nak, not as the consumer's
    /// `backoff` (which would also replace `ack_wait` by its first step).
    pub fn retry_delay(&self, delivered: i64) -> Duration {
        const STEPS: [u64; 5] = [1, 5, 30, 120, 300];
        let index = usize::try_from(delivered.max(1) - 1)
            .unwrap_or(0)
            .min(STEPS.len() - 1);
        Duration::from_secs(STEPS[index])
    }

    /// The durable consumer on the log.
    pub fn log_consumer_config(&self) -> consumer::pull::Config {
        consumer::pull::Config {
            durable_name: Some(self.name.to_owned()),
            description: Some(format!("Orders worker {}", self.name)),
            filter_subjects: self.log_filters(),
            deliver_policy: consumer::DeliverPolicy::New,
            ack_policy: consumer::AckPolicy::Explicit,
            ack_wait: self.ack_wait,
            max_deliver: self.max_deliver,
            max_ack_pending: 1_000,
            ..Default::default()
        }
    }

    /// The durable consumer of its retried dead letters.
    pub fn retry_consumer_config(&self) -> consumer::pull::Config {
        consumer::pull::Config {
            durable_name: Some(self.retry_consumer_name()),
            description: Some(format!("Orders worker {}: retried dead letters", self.name)),
            filter_subject: self.retry_subject_filter(),
            deliver_policy: consumer::DeliverPolicy::All,
            ack_policy: consumer::AckPolicy::Explicit,
            ack_wait: self.ack_wait,
            max_deliver: self.max_deliver,
            ..Default::default()
        }
    }
}

/// An event id (`<type>/<id>/<sequence>`) as one subject token.
fn subject_token(event_id: &str) -> String {
    event_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

pub(crate) fn dead_letter_stream_config(replicas: usize) -> stream::Config {
    stream::Config {
        name: DEAD_LETTER_STREAM.to_owned(),
        description: Some("Messages Orders workers gave up on, and those put back".to_owned()),
        subjects: vec![
            format!("{DEAD_LETTER_PREFIX}.>"),
            format!("{RETRY_PREFIX}.>"),
        ],
        storage: stream::StorageType::File,
        retention: stream::RetentionPolicy::Limits,
        max_age: Duration::from_secs(30 * 86_400),
        num_replicas: replicas,
        allow_direct: true,
        ..Default::default()
    }
}

/// Creates every worker's consumers that do not exist yet (an existing one is left
/// as it is, with its position).
fn other_consumer_error(
    error: impl std::error::Error + Send + Sync + 'static,
) -> jetstream::stream::ConsumerError {
    jetstream::stream::ConsumerError::with_source(
        jetstream::stream::ConsumerErrorKind::Other,
        error,
    )
}

pub(crate) async fn ensure_worker_consumers(
    jetstream: &jetstream::Context,
) -> Result<(), jetstream::stream::ConsumerError> {
    let log = jetstream
        .get_stream(crate::LOG_STREAM)
        .await
        .map_err(|error| {
            jetstream::stream::ConsumerError::with_source(
                jetstream::stream::ConsumerErrorKind::Other,
                error,
            )
        })?;
    let dead_letters = jetstream
        .get_stream(DEAD_LETTER_STREAM)
        .await
        .map_err(|error| {
            jetstream::stream::ConsumerError::with_source(
                jetstream::stream::ConsumerErrorKind::Other,
                error,
            )
        })?;
    for worker in WORKERS {
        match log
            .get_consumer::<jetstream::consumer::Config>(worker.name)
            .await
        {
            // There: only the subjects are brought up to date (a worker that reads
            // a new aggregate type, as the e-mail worker and purchases), so an
            // operator's other settings stay.
            Ok(existing) => {
                let mut config = existing.cached_info().config.clone();
                let wanted = worker.log_filters();
                let current = if config.filter_subjects.is_empty() {
                    vec![config.filter_subject.clone()]
                } else {
                    config.filter_subjects.clone()
                };
                if current != wanted {
                    config.filter_subject = String::new();
                    config.filter_subjects = wanted;
                    log.update_consumer(config)
                        .await
                        .map_err(other_consumer_error)?;
                }
            }
            Err(_) => {
                log.create_consumer_strict(worker.log_consumer_config())
                    .await
                    .map_err(other_consumer_error)?;
            }
        }
        dead_letters
            .get_or_create_consumer(
                &worker.retry_consumer_name(),
                worker.retry_consumer_config(),
            )
            .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dead_letter_subjects_have_one_token_per_event() {
        let subject = EMAIL.dead_letter_subject("user/0192f1a8-0000-7000-8000-000000000001/1");
        assert_eq!(
            subject,
            "orders.dead.email.user_0192f1a8-0000-7000-8000-000000000001_1"
        );
        assert_eq!(
            EMAIL.retry_subject("order/x/2"),
            "orders.retry.email.order_x_2"
        );
        assert_eq!(Worker::named("scraper"), Some(SCRAPER));
        assert_eq!(Worker::named("nobody"), None);
    }

    #[test]
    fn retries_back_off() {
        let delays: Vec<u64> = (1..=7).map(|n| SCRAPER.retry_delay(n).as_secs()).collect();
        assert_eq!(delays, [1, 5, 30, 120, 300, 300, 300]);
        let config = SCRAPER.log_consumer_config();
        assert_eq!(config.filter_subjects, ["orders.events.price_check.>"]);
        assert!(config.backoff.is_empty(), "backoff would replace ack_wait");
    }
}
