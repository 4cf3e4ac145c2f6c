//! `orders audit verify` against a log that was tampered with by raw SQL, as
//! someone with access to the database but not to `ORDERS_AUDIT_KEY` or NATS would:
//! each kind of tampering is found at the right position with the right reason, and
//! an untouched log verifies.

use std::process::Output;

use orders_domain::email::EmailAddress;
use orders_domain::ids::UserId;
use orders_domain::user::{Role, User, UserCommand};
use orders_relay::Relay;
use orders_store::event_store::{CommandMetadata, EventStore};
use orders_test_support::nats_server::NatsServer;
use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

mod common;
use common::{audit_key, fresh_database, orders, AUDIT_KEY};

/// A database, a nats-server and a log of ten events, all relayed.
struct Log {
    database_url: String,
    pool: PgPool,
    nats: NatsServer,
    relay: Relay,
    /// In log order: (global position, `<type>/<id>/<sequence>`).
    events: Vec<(i64, String)>,
}

fn metadata(actor: String) -> CommandMetadata {
    let request = Uuid::now_v7();
    CommandMetadata {
        actor,
        correlation_id: request,
        causation_id: request.to_string(),
        request_id: request,
        idempotency_key: None,
    }
}

impl Log {
    /// Four users register; each is granted a role by an operator; two lose it
    /// again: ten events, each command in a transaction of its own.
    async fn relayed() -> Self {
        let (database_url, pool) = fresh_database().await;
        let nats = NatsServer::start();
        let client = async_nats::connect(nats.url()).await.unwrap();
        let jetstream = async_nats::jetstream::new(client);
        orders_nats::ensure_topology(&jetstream, 1).await.unwrap();
        let events = EventStore::new(pool.clone(), audit_key());
        let mut users = Vec::new();
        for index in 0..4 {
            let user = UserId::new();
            let email = format!("user{index}-{}@example.com", user.as_uuid().simple());
            events
                .execute_with_password(
                    &user.to_string(),
                    UserCommand::Register {
                        user_id: user,
                        email: EmailAddress::parse(&email).unwrap(),
                    },
                    &metadata(format!("user:{user}")),
                    "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA".to_owned(),
                )
                .await
                .unwrap();
            users.push(user);
        }
        for (index, user) in users.iter().enumerate() {
            let role = if index % 2 == 0 {
                Role::Admin
            } else {
                Role::Auditor
            };
            events
                .execute::<User>(
                    &user.to_string(),
                    UserCommand::GrantRole { role },
                    &metadata("cli:operator@host".to_owned()),
                )
                .await
                .unwrap();
        }
        for user in &users[..2] {
            let role = if users[0] == *user {
                Role::Admin
            } else {
                Role::Auditor
            };
            events
                .execute::<User>(
                    &user.to_string(),
                    UserCommand::RevokeRole { role },
                    &metadata(format!("admin:{} for user:{user}", users[2])),
                )
                .await
                .unwrap();
        }
        let relay = Relay::new(pool.clone(), jetstream, 4);
        let log = Self {
            database_url,
            pool,
            nats,
            relay,
            events: Vec::new(),
        };
        log.relay_all().await;
        let events = log.in_log_order().await;
        assert_eq!(events.len(), 10);
        Self { events, ..log }
    }

    /// Relays every event in the table. The relay reads below the horizon of
    /// transactions still running anywhere on the server (other tests' too), so it
    /// may take more than one pass.
    async fn relay_all(&self) {
        let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
            .fetch_one(&self.pool)
            .await
            .unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        let mut head = self.relay.stream_head().await.unwrap();
        while head.stream_sequence < stored as u64 {
            assert!(
                std::time::Instant::now() < deadline,
                "relayed only {head:?}"
            );
            if self.relay.step(&mut head).await.unwrap() == 0 {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        }
    }

    async fn in_log_order(&self) -> Vec<(i64, String)> {
        sqlx::query_as(
            "SELECT global_position, aggregate_type || '/' || aggregate_id || '/' || sequence
               FROM events ORDER BY tx_id, global_position",
        )
        .fetch_all(&self.pool)
        .await
        .unwrap()
    }

    /// The global position of the event at `position` (1-based) in log order.
    fn global_position(&self, position: usize) -> i64 {
        self.events[position - 1].0
    }

    fn event_id(&self, position: usize) -> &str {
        &self.events[position - 1].1
    }

    fn verify(&self) -> Output {
        self.verify_with(&["--json"], AUDIT_KEY)
    }

    fn verify_with(&self, args: &[&str], key: &str) -> Output {
        orders()
            .args(["audit", "verify"])
            .args(args)
            .env("ORDERS_DATABASE_URL", &self.database_url)
            .env("ORDERS_NATS_URL", self.nats.url())
            .env("ORDERS_AUDIT_KEY", key)
            .output()
            .unwrap()
    }

    /// Runs `orders audit verify --json`, expecting it to fail: the failure.
    fn verify_fails(&self) -> Value {
        let output = self.verify();
        let report: Value = serde_json::from_slice(&output.stdout).unwrap_or_else(|error| {
            panic!(
                "{error}: {} {}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            )
        });
        assert_eq!(output.status.code(), Some(1), "{report}");
        report["failure"].clone()
    }

    async fn execute(&self, statement: &str) {
        sqlx::query(statement).execute(&self.pool).await.unwrap();
    }
}

#[tokio::test]
async fn an_untouched_log_verifies_with_events_not_yet_relayed() {
    let log = Log::relayed().await;
    let output = log.verify();
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["events"], 10);
    assert_eq!(report["chained"], 10);
    assert_eq!(report["checkpoint"]["chain_position"], 10);
    assert_eq!(report["checkpoint"]["event_id"], log.event_id(10));
    assert!(report["failure"].is_null());

    // An event written by the command side but not relayed yet: its seal holds.
    let user = UserId::new();
    EventStore::new(log.pool.clone(), audit_key())
        .execute_with_password(
            &user.to_string(),
            UserCommand::Register {
                user_id: user,
                email: EmailAddress::parse("late@example.com").unwrap(),
            },
            &metadata(format!("user:{user}")),
            "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA".to_owned(),
        )
        .await
        .unwrap();
    let report: Value = serde_json::from_slice(&log.verify().stdout).unwrap();
    assert!(report["failure"].is_null(), "{report}");
    assert_eq!(report["events"], 11);
    assert_eq!(report["unrelayed"], 1);

    // The readable form says so in one line.
    let output = log.verify_with(&[], AUDIT_KEY);
    let text = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{text}");
    assert!(text.starts_with("verified 11 events"), "{text}");
    assert!(text.contains("1 not relayed yet"), "{text}");

    // Under another key nothing verifies, from the first event on.
    let output = log.verify_with(&["--json"], "another key that is also long enough");
    assert_eq!(output.status.code(), Some(1));
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["failure"]["position"], 1, "{report}");
}

#[tokio::test]
async fn a_changed_payload_is_found_where_it_is() {
    let log = Log::relayed().await;
    let target = log.global_position(6);
    log.execute(&format!(
        "UPDATE events SET payload = jsonb_set(payload, '{{RoleGranted,role}}', '\"admin\"')
          WHERE global_position = {target}"
    ))
    .await;
    let failure = log.verify_fails();
    assert_eq!(failure["position"], 6, "{failure}");
    assert_eq!(failure["reason"], "payload_changed", "{failure}");
    assert_eq!(failure["event"], log.event_id(6), "{failure}");
    assert_eq!(failure["global_position"], target, "{failure}");

    // Readably, in one line.
    let output = log.verify_with(&[], AUDIT_KEY);
    assert_eq!(output.status.code(), Some(1));
    let text = String::from_utf8_lossy(&output.stdout);
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(
        text.starts_with(&format!(
            "NOT VERIFIED at position 6 ({}, global position {target}): payload_changed: ",
            log.event_id(6)
        )),
        "{text}"
    );
}

#[tokio::test]
async fn a_changed_actor_is_found_with_what_it_was() {
    let log = Log::relayed().await;
    let target = log.global_position(3);
    let actor: String =
        sqlx::query_scalar("SELECT metadata ->> 'actor' FROM events WHERE global_position = $1")
            .bind(target)
            .fetch_one(&log.pool)
            .await
            .unwrap();
    log.execute(&format!(
        "UPDATE events SET metadata = jsonb_set(metadata, '{{actor}}', '\"system:scheduler\"')
          WHERE global_position = {target}"
    ))
    .await;
    let failure = log.verify_fails();
    assert_eq!(failure["position"], 3, "{failure}");
    assert_eq!(failure["reason"], "actor_changed", "{failure}");
    assert_eq!(failure["recorded"], actor, "{failure}");
    assert_eq!(failure["found"], "system:scheduler", "{failure}");
}

#[tokio::test]
async fn a_deleted_event_is_named_at_its_position() {
    let log = Log::relayed().await;
    let target = log.global_position(5);
    log.execute(&format!(
        "DELETE FROM events WHERE global_position = {target}"
    ))
    .await;
    let failure = log.verify_fails();
    assert_eq!(failure["position"], 5, "{failure}");
    assert_eq!(failure["reason"], "deleted", "{failure}");
    assert_eq!(
        failure["event"],
        log.event_id(6),
        "what is there now: {failure}"
    );
    assert_eq!(failure["deleted"], log.event_id(5), "{failure}");
}

#[tokio::test]
async fn an_event_inserted_in_the_middle_is_found_even_with_a_copied_seal() {
    let log = Log::relayed().await;
    // A copy of the 6th event (a role granted) for another user, with the 6th's
    // seal, placed right after it in log order (its transaction id, a later
    // position).
    let source = log.global_position(6);
    log.execute(&format!(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version,
                             payload, metadata, seal, tx_id, global_position)
         OVERRIDING SYSTEM VALUE
         SELECT aggregate_type, gen_random_uuid()::text, 1, event_type, event_version, payload,
                metadata, seal, tx_id, (SELECT max(global_position) + 100 FROM events)
           FROM events WHERE global_position = {source}"
    ))
    .await;
    let failure = log.verify_fails();
    assert_eq!(failure["position"], 7, "{failure}");
    assert_eq!(failure["reason"], "inserted", "{failure}");
    assert_ne!(failure["event"], log.event_id(7), "{failure}");
}

#[tokio::test]
async fn an_event_inserted_at_the_tail_is_found_before_and_after_it_is_relayed() {
    let log = Log::relayed().await;
    let user = log.event_id(1).split('/').nth(1).unwrap().to_owned();
    log.execute(&format!(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version,
                             payload, metadata)
         VALUES ('user', '{user}', 100, 'RoleGranted', '1.0', '{{\"RoleGranted\": {{\"role\": \"admin\"}}}}',
                 '{{\"actor\": \"cli:operator@host\", \"correlation_id\": \"{id}\",
                    \"causation_id\": \"{id}\", \"request_id\": \"{id}\"}}')",
        id = Uuid::now_v7()
    ))
    .await;
    let failure = log.verify_fails();
    assert_eq!(failure["position"], 11, "{failure}");
    assert_eq!(failure["reason"], "inserted", "{failure}");
    assert_eq!(failure["event"], format!("user/{user}/100"), "{failure}");

    // The relay chains it like any other: still not sealed by the command side.
    log.relay_all().await;
    let failure = log.verify_fails();
    assert_eq!(failure["position"], 11, "{failure}");
    assert_eq!(failure["reason"], "inserted", "{failure}");
}

#[tokio::test]
async fn two_swapped_events_are_found_with_each_others_positions() {
    let log = Log::relayed().await;
    // Each command is a transaction of its own: exchanging the transaction ids of
    // the 2nd and the 7th event exchanges their places in the log.
    let (first, second) = (log.global_position(2), log.global_position(7));
    log.execute(&format!(
        "UPDATE events SET tx_id = CASE global_position
                WHEN {first} THEN (SELECT tx_id FROM events WHERE global_position = {second})
                ELSE (SELECT tx_id FROM events WHERE global_position = {first}) END
          WHERE global_position IN ({first}, {second})"
    ))
    .await;
    assert_eq!(log.in_log_order().await[1].1, log.event_id(7));
    let failure = log.verify_fails();
    assert_eq!(failure["position"], 2, "{failure}");
    assert_eq!(failure["reason"], "swapped", "{failure}");
    assert_eq!(failure["with_position"], 7, "{failure}");
    assert_eq!(failure["event"], log.event_id(7), "{failure}");
}

#[tokio::test]
async fn rewriting_the_tail_and_its_links_together_is_caught_by_the_checkpoint() {
    let log = Log::relayed().await;
    // The last two events and their links, gone: what is left is a consistent
    // chain, but shorter than the one checkpointed in NATS.
    let from = log.global_position(9);
    log.execute(&format!(
        "DELETE FROM events WHERE global_position >= {from}"
    ))
    .await;
    log.execute("DELETE FROM audit_chain WHERE chain_position >= 9")
        .await;
    let failure = log.verify_fails();
    assert_eq!(failure["position"], 9, "{failure}");
    assert_eq!(failure["reason"], "links_missing", "{failure}");
    assert_eq!(failure["checkpoint_position"], 10, "{failure}");

    // A changed time: the content is as sealed, but the chain covers the time.
    let log = Log::relayed().await;
    let target = log.global_position(10);
    log.execute(&format!(
        "UPDATE events SET recorded_at = recorded_at - interval '1 day'
          WHERE global_position = {target}"
    ))
    .await;
    let failure = log.verify_fails();
    assert_eq!(failure["position"], 10, "{failure}");
    assert_eq!(failure["reason"], "recorded_at_changed", "{failure}");
}

#[tokio::test]
async fn links_removed_or_altered_in_postgresql_are_found() {
    let log = Log::relayed().await;
    log.execute("DELETE FROM audit_chain WHERE chain_position = 4")
        .await;
    let failure = log.verify_fails();
    assert_eq!(failure["position"], 4, "{failure}");
    assert_eq!(failure["reason"], "link_missing", "{failure}");

    let log = Log::relayed().await;
    log.execute("UPDATE audit_chain SET digest = sha256(digest) WHERE chain_position = 3")
        .await;
    let failure = log.verify_fails();
    assert_eq!(failure["position"], 3, "{failure}");
    assert_eq!(failure["reason"], "link_altered", "{failure}");
}

#[tokio::test]
async fn a_chain_rewritten_to_match_a_changed_event_still_parts_from_the_checkpoint() {
    use orders_store::seal::{chain_digest, EventDigests, LogPlace};
    let log = Log::relayed().await;
    // The 9th event's time moved back a day, and its link and the 10th's recomputed
    // to match, as someone who knows how the chain is built (but cannot write to
    // NATS) would do.
    log.execute(&format!(
        "UPDATE events SET recorded_at = recorded_at - interval '1 day'
          WHERE global_position = {}",
        log.global_position(9)
    ))
    .await;
    let mut previous: [u8; 32] =
        sqlx::query_scalar::<_, Vec<u8>>("SELECT digest FROM audit_chain WHERE chain_position = 8")
            .fetch_one(&log.pool)
            .await
            .unwrap()
            .try_into()
            .unwrap();
    for position in [9, 10] {
        let (body, metadata, seal, global_position, recorded_at): (
            Vec<u8>,
            Vec<u8>,
            Vec<u8>,
            i64,
            String,
        ) = sqlx::query_as(
            "SELECT link.body_digest, link.metadata_digest, event.seal, event.global_position,
                    to_char(event.recorded_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')
               FROM audit_chain AS link JOIN events AS event USING (global_position)
              WHERE link.chain_position = $1",
        )
        .bind(position)
        .fetch_one(&log.pool)
        .await
        .unwrap();
        let digests = EventDigests {
            body: body.try_into().unwrap(),
            metadata: metadata.try_into().unwrap(),
        };
        previous = chain_digest(
            &previous,
            &digests,
            Some(&seal),
            LogPlace {
                global_position,
                recorded_at: &recorded_at,
            },
        );
        sqlx::query(
            "UPDATE audit_chain SET digest = $1, recorded_at = $2 WHERE chain_position = $3",
        )
        .bind(previous.as_slice())
        .bind(&recorded_at)
        .bind(position)
        .execute(&log.pool)
        .await
        .unwrap();
    }
    let failure = log.verify_fails();
    assert_eq!(failure["position"], 10, "{failure}");
    assert_eq!(failure["reason"], "checkpoint_mismatch", "{failure}");
}
