//! Dead letters against a real nats-server (`NATS_SERVER_BIN`, which `make test` and
//! `.data/test.env` set): what `orders dlq list` shows, and that `orders dlq retry`
//! hands a letter back to its worker's retry consumer, unchanged, and removes it.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, consumer};
use futures::StreamExt as _;
use orders_nats::dead_letters::{list, retry, DeadLetter, RetrySelection};
use orders_nats::work::{
    Worker, DEAD_LETTER_REASON_HEADER, DEAD_LETTER_STREAM, DEAD_LETTER_WORKER_HEADER, EMAIL,
    SCRAPER,
};
use orders_nats::LogEvent;
use orders_test_support::nats_server::NatsServer;
use orders_test_support::wait::eventually;
use orders_workers::consumer::{consume, Outcome};

const DELIVERIES_HEADER: &str = "Orders-Dead-Letter-Deliveries";

async fn jetstream_with_topology(server: &NatsServer) -> jetstream::Context {
    let client = orders_nats::connect(server.url())
        .await
        .expect("connecting");
    let jetstream = jetstream::new(client);
    orders_nats::ensure_topology(&jetstream, 1)
        .await
        .expect("the topology");
    jetstream
}

/// An event as the relay would publish it.
fn event(aggregate_type: &str, event_type: &str, global_position: i64) -> LogEvent {
    LogEvent {
        aggregate_type: aggregate_type.to_owned(),
        aggregate_id: uuid::Uuid::now_v7().to_string(),
        sequence: 1,
        event_type: event_type.to_owned(),
        event_version: "1.0".to_owned(),
        tx_id: 1_000 + global_position as u64,
        global_position,
        recorded_at: "2026-11-25T12:00:00.123456Z".to_owned(),
        payload: bytes::Bytes::from_static(br#"{"email":"ada@example.com"}"#),
        metadata: BTreeMap::from([
            ("actor".to_owned(), "system:test".to_owned()),
            (
                "correlation_id".to_owned(),
                format!("corr-{global_position}"),
            ),
        ]),
    }
}

/// A dead letter as a worker writes one: the event's envelope, plus why.
async fn publish_dead_letter(
    jetstream: &jetstream::Context,
    worker: Worker,
    event: &LogEvent,
    reason: &str,
) -> u64 {
    let mut headers = event.headers();
    headers.insert(DEAD_LETTER_REASON_HEADER, reason);
    headers.insert(DEAD_LETTER_WORKER_HEADER, worker.name);
    headers.insert(DELIVERIES_HEADER, "5");
    jetstream
        .publish_with_headers(
            worker.dead_letter_subject(&event.event_id()),
            headers,
            event.body(),
        )
        .await
        .expect("publishing a dead letter")
        .await
        .expect("storing a dead letter")
        .sequence
}

fn sequences(letters: &[DeadLetter]) -> Vec<u64> {
    letters
        .iter()
        .map(|letter| letter.stream_sequence)
        .collect()
}

/// The next message of `worker`'s retry consumer (waiting up to 5 s), acknowledged.
async fn next_retry_letter(jetstream: &jetstream::Context, worker: Worker) -> jetstream::Message {
    let consumer: consumer::PullConsumer = jetstream
        .get_stream(DEAD_LETTER_STREAM)
        .await
        .unwrap()
        .get_consumer(&worker.retry_consumer_name())
        .await
        .unwrap();
    let message = consumer
        .fetch()
        .max_messages(1)
        .expires(Duration::from_secs(5))
        .messages()
        .await
        .unwrap()
        .next()
        .await
        .expect("a retry letter within 5 s")
        .expect("a message");
    message.double_ack().await.unwrap();
    message
}

#[tokio::test]
async fn dead_letters_are_listed_filtered_and_put_back_for_their_worker() {
    let server = NatsServer::start();
    let jetstream = jetstream_with_topology(&server).await;
    // Nothing died yet: the listing ends at once.
    assert_eq!(list(&jetstream, None).await.unwrap(), []);

    let mail = event("user", "UserRegistered", 1);
    let check = event("price_check", "PriceCheckRequested", 2);
    let before = chrono::Utc::now() - chrono::Duration::seconds(5);
    let mail_letter = publish_dead_letter(
        &jetstream,
        EMAIL,
        &mail,
        "sending the mail: 550 no such user",
    )
    .await;
    let check_letter = publish_dead_letter(&jetstream, SCRAPER, &check, "no price").await;

    let all = list(&jetstream, None).await.unwrap();
    assert_eq!(sequences(&all), [mail_letter, check_letter], "oldest first");
    let first = &all[0];
    assert_eq!(first.worker, "email");
    assert_eq!(first.event_id, mail.event_id());
    assert_eq!(first.event_type, "UserRegistered");
    assert_eq!(first.reason, "sending the mail: 550 no such user");
    assert_eq!(first.deliveries, Some(5));
    assert_eq!(first.correlation_id.as_deref(), Some("corr-1"));
    assert!(
        first.dead_at > before && first.dead_at < chrono::Utc::now() + chrono::Duration::seconds(5),
        "{first:?}"
    );
    assert_eq!(
        sequences(&list(&jetstream, Some("email")).await.unwrap()),
        [mail_letter]
    );
    assert_eq!(
        sequences(&list(&jetstream, Some("scraper")).await.unwrap()),
        [check_letter]
    );
    let unknown = list(&jetstream, Some("mailer")).await.unwrap_err();
    assert!(
        format!("{unknown:#}").contains("no worker named \"mailer\""),
        "{unknown:#}"
    );

    let retried = retry(&jetstream, RetrySelection::One(mail_letter))
        .await
        .unwrap();
    assert_eq!(retried, std::slice::from_ref(first));
    let back = next_retry_letter(&jetstream, EMAIL).await;
    assert_eq!(back.subject.as_str(), EMAIL.retry_subject(&mail.event_id()));
    let headers = back.headers.clone().unwrap_or_default();
    for dead_letter_header in [
        DEAD_LETTER_REASON_HEADER,
        DEAD_LETTER_WORKER_HEADER,
        DELIVERIES_HEADER,
    ] {
        assert!(
            headers.get(dead_letter_header).is_none(),
            "{dead_letter_header} came along"
        );
    }
    assert_eq!(LogEvent::decode(&headers, &back.payload).unwrap(), mail);
    assert_eq!(
        sequences(&list(&jetstream, None).await.unwrap()),
        [check_letter],
        "the retried letter is no longer listed"
    );

    // Gone, never there, or not a dead letter: each one clear error.
    let again = retry(&jetstream, RetrySelection::One(mail_letter))
        .await
        .unwrap_err();
    assert!(
        format!("{again:#}").contains(&format!("no dead letter {mail_letter}")),
        "{again:#}"
    );
    let never = retry(&jetstream, RetrySelection::One(999))
        .await
        .unwrap_err();
    assert!(
        format!("{never:#}").contains("no dead letter 999"),
        "{never:#}"
    );
    let retry_letter = back.info().unwrap().stream_sequence;
    let not_dead = retry(&jetstream, RetrySelection::One(retry_letter))
        .await
        .unwrap_err();
    assert!(
        format!("{not_dead:#}").contains("is not a dead letter"),
        "{not_dead:#}"
    );

    // --all of one worker leaves the others' letters alone.
    let nothing_of_email = retry(
        &jetstream,
        RetrySelection::All {
            worker: Some("email".to_owned()),
        },
    )
    .await
    .unwrap();
    assert_eq!(nothing_of_email, []);
    let scraper_letters = retry(
        &jetstream,
        RetrySelection::All {
            worker: Some("scraper".to_owned()),
        },
    )
    .await
    .unwrap();
    assert_eq!(sequences(&scraper_letters), [check_letter]);
    let back = next_retry_letter(&jetstream, SCRAPER).await;
    assert_eq!(
        LogEvent::decode(back.headers.as_ref().unwrap(), &back.payload).unwrap(),
        check
    );
    assert_eq!(list(&jetstream, None).await.unwrap(), []);
}

/// Waits (up to 5 s) until `worker` has a dead letter.
async fn first_dead_letter(jetstream: &jetstream::Context, worker: &str) -> DeadLetter {
    let what = format!("a dead letter of {worker}");
    eventually(Duration::from_secs(5), &what, || async {
        list(jetstream, Some(worker))
            .await
            .unwrap()
            .into_iter()
            .next()
    })
    .await
}

#[tokio::test]
async fn dead_letters_of_a_worker_that_gave_up_reach_it_again_after_a_retry() {
    let server = NatsServer::start();
    let jetstream = jetstream_with_topology(&server).await;
    let give_up = Arc::new(AtomicBool::new(true));
    let (handled, mut handled_events) = tokio::sync::mpsc::unbounded_channel();
    let step = {
        let give_up = give_up.clone();
        move |event: LogEvent| {
            let give_up = give_up.clone();
            let handled = handled.clone();
            async move {
                if give_up.load(Ordering::SeqCst) {
                    Outcome::GiveUp(anyhow::anyhow!("the mail server refuses this address"))
                } else {
                    let _ = handled.send(event);
                    Outcome::Done
                }
            }
        }
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let worker = {
        let jetstream = jetstream.clone();
        tokio::spawn(async move {
            consume(
                &jetstream,
                EMAIL,
                1,
                async move {
                    let _ = stopped.await;
                },
                step,
            )
            .await
        })
    };

    // The relay's publish of an event the e-mail worker reads.
    let registered = event("user", "UserRegistered", 1);
    jetstream
        .publish_with_headers(
            registered.subject().unwrap(),
            registered.headers(),
            registered.body(),
        )
        .await
        .unwrap()
        .await
        .unwrap();

    let letter = first_dead_letter(&jetstream, "email").await;
    assert_eq!(letter.event_id, registered.event_id());
    assert_eq!(letter.event_type, "UserRegistered");
    assert!(
        letter
            .reason
            .contains("the mail server refuses this address"),
        "{letter:?}"
    );
    assert_eq!(letter.deliveries, Some(1), "given up at the first delivery");
    assert_eq!(letter.correlation_id.as_deref(), Some("corr-1"));
    assert!(handled_events.try_recv().is_err());

    // The cause is fixed; the operator puts the letter back.
    give_up.store(false, Ordering::SeqCst);
    let retried = retry(&jetstream, RetrySelection::One(letter.stream_sequence))
        .await
        .unwrap();
    assert_eq!(retried, [letter]);
    let again = tokio::time::timeout(Duration::from_secs(5), handled_events.recv())
        .await
        .expect("the worker had the retried event within 5 s")
        .unwrap();
    // The same event, with no trace of its death in its metadata.
    assert_eq!(again, registered);
    assert_eq!(list(&jetstream, None).await.unwrap(), []);

    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(5), worker)
        .await
        .expect("the worker stops within 5 s")
        .unwrap()
        .unwrap();
}
