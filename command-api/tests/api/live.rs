//! `GET /live`: exact resumption over thousands of events with random disconnects,
//! isolation between users, and the refusals.

use std::collections::HashSet;
use std::time::Duration;

use futures::StreamExt as _;
use orders_application::accounts::{change_role, RoleChange};
use orders_application::orders::{change_own_order, OrderChange};
use orders_domain::ids::{OrderId, UserId};
use orders_domain::user::Role;
use orders_store::event_store::CommandMetadata;
use reqwest::StatusCode;
use serde_json::Value;
use uuid::Uuid;

use crate::helpers::{position_of, problem, spawn_app, spawn_app_with_log, Session, TestApp};

/// One server-sent event.
#[derive(Debug, Clone)]
pub(crate) struct SseEvent {
    pub(crate) id: Option<String>,
    pub(crate) event: Option<String>,
    pub(crate) data: String,
}

/// A connection to `GET /live`, read event by event.
pub(crate) struct LiveConnection {
    body: futures::stream::BoxStream<'static, reqwest::Result<bytes::Bytes>>,
    buffer: String,
}

impl LiveConnection {
    pub(crate) async fn open(
        app: &TestApp,
        token: &str,
        last_event_id: Option<&str>,
        after: Option<&str>,
    ) -> Self {
        let path = match after {
            Some(after) => format!("/live?after={after}"),
            None => "/live".to_owned(),
        };
        let mut request = app.http.get(app.url(&path)).bearer_auth(token);
        if let Some(id) = last_event_id {
            request = request.header("last-event-id", id);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            response.headers()["content-type"].to_str().unwrap(),
            "text/event-stream"
        );
        Self {
            body: response.bytes_stream().boxed(),
            buffer: String::new(),
        }
    }

    /// The next event with data (comments and the `retry` hint skipped), or `None`
    /// if none comes within `within`.
    pub(crate) async fn next(&mut self, within: Duration) -> Option<SseEvent> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            while let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut event = SseEvent {
                    id: None,
                    event: None,
                    data: String::new(),
                };
                for line in block.lines() {
                    if let Some(id) = line.strip_prefix("id: ") {
                        event.id = Some(id.to_owned());
                    } else if let Some(name) = line.strip_prefix("event: ") {
                        event.event = Some(name.to_owned());
                    } else if let Some(data) = line.strip_prefix("data: ") {
                        event.data.push_str(data);
                    }
                }
                if !event.data.is_empty() {
                    return Some(event);
                }
            }
            let chunk = tokio::time::timeout_at(deadline, self.body.next())
                .await
                .ok()??;
            self.buffer
                .push_str(std::str::from_utf8(&chunk.unwrap()).unwrap());
        }
    }
}

fn event_id_of(event: &SseEvent) -> String {
    let data: Value = serde_json::from_str(&event.data).unwrap();
    data["event_id"].as_str().unwrap().to_owned()
}

/// The event ids of `user`'s own aggregates (the user and their orders) after
/// `after`, in log order, read from the event store.
async fn expected_events(app: &TestApp, user: Uuid, after: &str) -> Vec<String> {
    let (tx_id, global_position) = after.split_once('.').unwrap();
    sqlx::query_scalar(
        "SELECT aggregate_type || '/' || aggregate_id || '/' || sequence FROM events
          WHERE (tx_id, global_position) > ($2::text::xid8, $3::bigint)
            AND ((aggregate_type = 'user' AND aggregate_id = $1)
              OR (aggregate_type = 'order' AND aggregate_id IN (
                    SELECT aggregate_id FROM events
                     WHERE event_type = 'OrderPlaced' AND payload -> 'OrderPlaced' ->> 'owner' = $1)))
          ORDER BY tx_id, global_position",
    )
    .bind(user.to_string())
    .bind(tx_id)
    .bind(global_position.parse::<i64>().unwrap())
    .fetch_all(&app.pool)
    .await
    .unwrap()
}

/// A small deterministic generator, for where to disconnect.
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, bound: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % bound
    }
}

#[tokio::test]
async fn a_client_that_keeps_reconnecting_gets_every_event_once_in_log_order() {
    let app = spawn_app_with_log().await;
    let shopper = app.signed_up_user().await;
    let first = app
        .place_order(
            &shopper.token,
            &serde_json::json!({"url": "http://127.0.0.1:9/p/0", "target_price": "10.00", "currency": "UAH"}),
        )
        .await;
    let start = position_of(&first);

    // 1,980 events on 99 more orders (the most a user may have is 100), written by
    // 10 writers while the client reads.
    let mut orders = Vec::new();
    for _ in 0..99 {
        orders.push(app.placed_order(&shopper.token).await);
    }
    let owner = UserId::from_uuid(shopper.user_id);
    let mut writers = Vec::new();
    for chunk in orders.chunks(10) {
        let (events, chunk) = (app.state.events.clone(), chunk.to_vec());
        writers.push(tokio::spawn(async move {
            let metadata = CommandMetadata::new_job(format!("user:{owner}"));
            for round in 0..19 {
                for order in &chunk {
                    let change = if round % 2 == 0 {
                        OrderChange::Pause
                    } else {
                        OrderChange::Resume
                    };
                    change_own_order(
                        &events,
                        owner,
                        OrderId::from_uuid(*order),
                        change,
                        &metadata,
                    )
                    .await
                    .unwrap();
                }
            }
        }));
    }
    let writing = futures::future::join_all(writers);
    tokio::pin!(writing);

    let mut random = Lcg(7);
    let mut received: Vec<String> = Vec::new();
    let mut last_id: Option<String> = None;
    let mut reconnects = 0;
    let mut expected: Option<Vec<String>> = None;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    'connections: loop {
        let mut connection = match &last_id {
            Some(id) => LiveConnection::open(&app, &shopper.token, Some(id), None).await,
            None => LiveConnection::open(&app, &shopper.token, None, Some(&start)).await,
        };
        let mut left_on_this_connection = 1 + random.below(120);
        loop {
            if expected.is_none() {
                if let Some(results) = futures::FutureExt::now_or_never(&mut writing) {
                    results.into_iter().for_each(|result| result.unwrap());
                    expected = Some(expected_events(&app, shopper.user_id, &start).await);
                }
            }
            if let Some(expected) = &expected {
                if received.len() >= expected.len() {
                    break 'connections;
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} events in 60 s",
                received.len()
            );
            if left_on_this_connection == 0 {
                reconnects += 1;
                continue 'connections;
            }
            if let Some(event) = connection.next(Duration::from_millis(100)).await {
                assert_ne!(event.event.as_deref(), Some("dropped"), "{event:?}");
                received.push(event_id_of(&event));
                last_id = event.id;
                left_on_this_connection -= 1;
            }
        }
    }
    let expected = expected.unwrap();
    assert_eq!(expected.len(), 99 + 99 * 19, "the workload");
    let unique: HashSet<&String> = received.iter().collect();
    assert_eq!(unique.len(), received.len(), "no event twice");
    assert_eq!(
        received, expected,
        "every event after the start, in log order"
    );
    assert!(reconnects >= 5, "{reconnects} reconnections");
    println!(
        "{} events over {} connections",
        received.len(),
        reconnects + 1
    );
}

async fn admin(app: &TestApp) -> Session {
    let admin = app.signed_up_user().await;
    change_role(
        &app.state.events,
        UserId::from_uuid(admin.user_id),
        RoleChange::Grant(Role::Admin),
        &CommandMetadata::new_job("test:setup"),
    )
    .await
    .unwrap();
    admin
}

#[tokio::test]
async fn a_user_sees_only_their_own_events_and_an_administrator_sees_all() {
    let app = spawn_app_with_log().await;
    let (ann, bob, admin) = (
        app.signed_up_user().await,
        app.signed_up_user().await,
        admin(&app).await,
    );
    let anns_first = app.placed_order(&ann.token).await;
    let start = position_of(
        &app.post_json(
            &format!("/orders/{anns_first}/pause"),
            &serde_json::json!({}),
            Some(&ann.token),
        )
        .await,
    );
    let mut anns_feed = LiveConnection::open(&app, &ann.token, None, Some(&start)).await;
    let mut admins_feed = LiveConnection::open(&app, &admin.token, None, Some(&start)).await;

    // Bob acts first, then Ann: were any of Bob's events to leak to Ann, they would
    // come before her own.
    let bobs = app.placed_order(&bob.token).await;
    app.post_json(
        &format!("/orders/{bobs}/pause"),
        &serde_json::json!({}),
        Some(&bob.token),
    )
    .await;
    let checked = app
        .post_json(
            &format!("/orders/{anns_first}/check"),
            &serde_json::json!({}),
            Some(&ann.token),
        )
        .await;
    assert_eq!(checked.status(), StatusCode::ACCEPTED);
    let check_id = checked.json::<Value>().await.unwrap()["check_id"]
        .as_str()
        .unwrap()
        .to_owned();

    let mut anns = Vec::new();
    while let Some(event) = anns_feed.next(Duration::from_secs(10)).await {
        anns.push(serde_json::from_str::<Value>(&event.data).unwrap());
        if anns.len() == 1 {
            break;
        }
    }
    assert_eq!(anns.len(), 1, "{anns:?}");
    assert_eq!(
        anns[0]["event_type"], "PriceCheckRequested",
        "her order's check is hers"
    );
    assert_eq!(anns[0]["aggregate_id"], check_id.as_str());
    assert!(anns_feed.next(Duration::from_millis(300)).await.is_none());

    let mut seen = Vec::new();
    while seen.len() < 3 {
        let event = admins_feed
            .next(Duration::from_secs(10))
            .await
            .expect("the admin's events");
        let data: Value = serde_json::from_str(&event.data).unwrap();
        seen.push((
            data["event_type"].as_str().unwrap().to_owned(),
            data["aggregate_id"].as_str().unwrap().to_owned(),
        ));
    }
    assert_eq!(
        seen,
        [
            ("OrderPlaced".to_owned(), bobs.to_string()),
            ("OrderPaused".to_owned(), bobs.to_string()),
            ("PriceCheckRequested".to_owned(), check_id),
        ]
    );
}

#[tokio::test]
async fn a_malformed_or_unknown_event_id_is_a_400_and_no_token_a_401() {
    let app = spawn_app_with_log().await;
    let shopper = app.signed_up_user().await;
    for (header, query) in [
        (Some("not-a-position"), None),
        (None, Some("12.x")),
        (Some("999999999.999999999"), None),
    ] {
        let path = match query {
            Some(after) => format!("/live?after={after}"),
            None => "/live".to_owned(),
        };
        let mut request = app.http.get(app.url(&path)).bearer_auth(&shopper.token);
        if let Some(id) = header {
            request = request.header("last-event-id", id);
        }
        let response = request.send().await.unwrap();
        assert_eq!(
            response.status(),
            StatusCode::BAD_REQUEST,
            "{header:?} {query:?}"
        );
        let problem = problem(response).await;
        assert!(
            problem["detail"].as_str().unwrap().contains("event"),
            "{problem}"
        );
    }
    let anonymous = app.http.get(app.url("/live")).send().await.unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn an_instance_without_the_log_answers_503() {
    let app = spawn_app().await;
    let shopper = app.signed_up_user().await;
    let response = app
        .http
        .get(app.url("/live"))
        .bearer_auth(&shopper.token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
}
