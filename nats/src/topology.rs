//! The stream and buckets every service relies on, created or brought up to date
//! idempotently: at every start and by `orders nats setup`.

use std::time::Duration;

use async_nats::jetstream::{self, kv, stream};

use crate::{LOG_STREAM, LOG_SUBJECT_PREFIX};

/// Key-value bucket of leader leases (relay, scheduler, each view's projector): a
/// key's value is its holder; the bucket's max age is the lease.
pub const LEADER_BUCKET: &str = "ORDERS_LEADERS";
/// How long a leader holds its key without renewing it.
pub const LEADER_LEASE: Duration = Duration::from_secs(10);
/// Key-value bucket of the audit chain's head (key [`AUDIT_CHAIN_HEAD_KEY`]),
/// checkpointed by the relay after every batch it publishes, outside PostgreSQL.
pub const AUDIT_BUCKET: &str = "ORDERS_AUDIT";
pub const AUDIT_CHAIN_HEAD_KEY: &str = "chain_head";
/// Key-value bucket of the scraper's host gate (orders-workers `host_gate`): per
/// host, who is fetching from it and when it may be fetched from next.
pub const SCRAPER_HOSTS_BUCKET: &str = "ORDERS_SCRAPER_HOSTS";

/// JetStream refused the topology.
#[derive(Debug, thiserror::Error)]
pub enum TopologyError {
    #[error("creating or updating the stream {LOG_STREAM}: {0}")]
    Stream(#[source] jetstream::context::CreateStreamError),
    #[error("creating or updating the stream ORDERS_DEAD_LETTERS: {0}")]
    DeadLetterStream(#[source] jetstream::context::CreateStreamError),
    #[error("creating the workers' consumers: {0}")]
    WorkerConsumers(#[source] jetstream::stream::ConsumerError),
    #[error("creating or updating the key-value bucket {bucket}: {source}")]
    Bucket {
        bucket: &'static str,
        #[source]
        source: jetstream::context::CreateKeyValueError,
    },
}

fn log_stream_config(replicas: usize) -> stream::Config {
    stream::Config {
        name: LOG_STREAM.to_owned(),
        description: Some("Every event stored by Orders, once, in commit order".to_owned()),
        subjects: vec![format!("{LOG_SUBJECT_PREFIX}.>")],
        storage: stream::StorageType::File,
        retention: stream::RetentionPolicy::Limits,
        // The whole log, for ever: views are rebuilt by replaying it.
        max_age: Duration::ZERO,
        max_messages: -1,
        max_bytes: -1,
        // Republished messages within this window are dropped by their
        // Nats-Msg-Id; the relay's expected-last-sequence guards beyond it.
        duplicate_window: Duration::from_secs(120),
        // The log is append-only.
        deny_delete: true,
        deny_purge: true,
        allow_direct: true,
        num_replicas: replicas,
        ..Default::default()
    }
}

fn bucket_config(bucket: &'static str, max_age: Duration, replicas: usize) -> kv::Config {
    kv::Config {
        bucket: bucket.to_owned(),
        history: 1,
        max_age,
        storage: stream::StorageType::File,
        num_replicas: replicas,
        ..Default::default()
    }
}

/// Creates the log stream and the buckets, or updates them to this configuration.
/// `replicas` is 1 on a single server, 3 on the cluster of `docker-compose.yml`.
pub async fn ensure_topology(
    jetstream: &jetstream::Context,
    replicas: usize,
) -> Result<(), TopologyError> {
    jetstream
        .create_or_update_stream(log_stream_config(replicas))
        .await
        .map_err(TopologyError::Stream)?;
    for (bucket, max_age) in [
        (LEADER_BUCKET, LEADER_LEASE),
        (AUDIT_BUCKET, Duration::ZERO),
        // A host not fetched for a day is forgotten.
        (SCRAPER_HOSTS_BUCKET, Duration::from_secs(86_400)),
    ] {
        jetstream
            .create_or_update_key_value(bucket_config(bucket, max_age, replicas))
            .await
            .map_err(|source| TopologyError::Bucket { bucket, source })?;
    }
    jetstream
        .create_or_update_stream(crate::work::dead_letter_stream_config(replicas))
        .await
        .map_err(TopologyError::DeadLetterStream)?;
    crate::work::ensure_worker_consumers(jetstream)
        .await
        .map_err(TopologyError::WorkerConsumers)?;
    Ok(())
}
