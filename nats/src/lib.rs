//! The JetStream topology of Orders: the names integrators subscribe to, the stream
//! and buckets (created idempotently by `ensure_topology`), and the envelope codec
//! that carries a stored event in one NATS message.
//!
//! The relay publishes every stored event to exactly one subject of the log stream;
//! this crate owns those names so that the relay, the projectors, the workers and
//! integrators cannot disagree about them.

pub mod dead_letters;
mod envelope;
mod head;
pub mod leader;
mod position;
mod servers;
mod topology;
pub mod work;

pub use envelope::{EnvelopeError, LogEvent};
pub use head::{stream_head, StreamHead};
pub use position::{InvalidLogPosition, LogPosition};
pub use servers::redacted;
pub use topology::{
    ensure_topology, TopologyError, AUDIT_BUCKET, AUDIT_CHAIN_HEAD_KEY, LEADER_BUCKET,
    LEADER_LEASE, SCRAPER_HOSTS_BUCKET,
};

/// The stream that holds the whole event log, one message per stored event.
pub const LOG_STREAM: &str = "ORDERS_EVENTS";

/// Connects to NATS: `urls` is one URL or several separated by commas (the nodes of a
/// cluster; the client also learns the others from the server it reaches). Their
/// credentials, if any, are given to the client apart from the addresses (see
/// `servers`); log `urls` only as [`redacted`].
pub async fn connect(urls: &str) -> Result<async_nats::Client, async_nats::ConnectError> {
    let servers = servers::NatsServers::parse(urls);
    options(&servers).connect(servers.addresses).await
}

/// Like [`connect`], for a client that can do without NATS for a while (the API,
/// which only wakes the relay): it starts even when no server answers yet, and
/// connects in the background.
pub async fn connect_in_background(
    urls: &str,
) -> Result<async_nats::Client, async_nats::ConnectError> {
    let servers = servers::NatsServers::parse(urls);
    options(&servers)
        .retry_on_initial_connect()
        .connect(servers.addresses)
        .await
}

fn options(servers: &servers::NatsServers) -> async_nats::ConnectOptions {
    let options = async_nats::ConnectOptions::new().name("orders");
    match &servers.credentials {
        servers::Credentials::None => options,
        servers::Credentials::UserAndPassword { user, password } => {
            options.user_and_password(user.clone(), password.clone())
        }
        servers::Credentials::Token(token) => options.token(token.clone()),
    }
}

/// A core NATS subject (not in any stream) on which the command side says, after a
/// commit, that the relay has something to publish.
pub const RELAY_WAKE_SUBJECT: &str = "orders.relay.wake";

/// The prefix of every log subject.
pub const LOG_SUBJECT_PREFIX: &str = "orders.events";

/// A name that cannot be one token of a NATS subject.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} cannot be a NATS subject token (empty, or contains '.', '*', '>' or whitespace)")]
pub struct InvalidSubjectToken(pub String);

fn check_token(token: &str) -> Result<&str, InvalidSubjectToken> {
    let valid = !token.is_empty()
        && !token
            .chars()
            .any(|c| c == '.' || c == '*' || c == '>' || c.is_whitespace() || c.is_control());
    if valid {
        Ok(token)
    } else {
        Err(InvalidSubjectToken(token.to_owned()))
    }
}

/// `orders.events.<aggregate_type>.<aggregate_id>`: one aggregate's events.
pub fn event_subject(
    aggregate_type: &str,
    aggregate_id: &str,
) -> Result<String, InvalidSubjectToken> {
    Ok(format!(
        "{LOG_SUBJECT_PREFIX}.{}.{}",
        check_token(aggregate_type)?,
        check_token(aggregate_id)?
    ))
}

/// `orders.events.<aggregate_type>.*`: every aggregate of one type, for consumers'
/// filter subjects.
pub fn aggregate_type_filter(aggregate_type: &str) -> Result<String, InvalidSubjectToken> {
    Ok(format!(
        "{LOG_SUBJECT_PREFIX}.{}.*",
        check_token(aggregate_type)?
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_events_subject_names_its_aggregate() {
        assert_eq!(
            event_subject("order", "0192f3a4-7b1c-7d2e-8f00-123456789abc").unwrap(),
            "orders.events.order.0192f3a4-7b1c-7d2e-8f00-123456789abc"
        );
        assert_eq!(
            aggregate_type_filter("user").unwrap(),
            "orders.events.user.*"
        );
    }

    #[test]
    fn ids_that_would_change_the_subjects_meaning_are_refused() {
        for bad in ["", "a.b", "*", ">", "a b", "a\tb"] {
            assert_eq!(
                event_subject("order", bad),
                Err(InvalidSubjectToken(bad.to_owned())),
                "{bad:?}"
            );
        }
        assert!(event_subject("price.check", "x").is_err());
    }
}
