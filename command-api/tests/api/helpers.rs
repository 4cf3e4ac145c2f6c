//! Spawns the API against a fresh database on the real PostgreSQL server that
//! `make test` starts (`ORDERS_TEST_DATABASE_URL`), on port 0.

use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::{CancellationToken, DropGuard};

use orders_command_api::login_throttle::ThrottlePolicy;
use orders_command_api::{ApiConfig, AppState};
use orders_nats::{ensure_topology, LEADER_BUCKET, LEADER_LEASE};
use orders_relay::{listen_for_wake_ups, Relay};
use orders_store::event_store::RelayWaker;
use orders_store::seal::AuditKey;
use orders_store::Secret;
use orders_test_support::nats_server::NatsServer;
use reqwest::{Response, StatusCode};
use serde_json::{json, Value};
use sqlx::PgPool;
use uuid::Uuid;

pub(crate) const JWT_SECRET: &str = "test secret that is long enough for HS256 signing";
pub(crate) const AUDIT_KEY: &str = "the API tests' audit key, longer than 32 bytes";

pub(crate) fn audit_key() -> AuditKey {
    AuditKey::new(AUDIT_KEY.as_bytes())
}

pub(crate) struct TestApp {
    pub(crate) address: String,
    pub(crate) pool: PgPool,
    pub(crate) state: Arc<AppState>,
    pub(crate) http: reqwest::Client,
    /// The log behind the views, when the test reads views.
    pub(crate) log: Option<Log>,
    /// Stops the API when the test's app is dropped.
    _shutdown: DropGuard,
}

/// A nats-server of the test's own, with the relay and the projectors running on it.
pub(crate) struct Log {
    pub(crate) client: async_nats::Client,
    pub(crate) jetstream: async_nats::jetstream::Context,
    /// Cancelled when the log is dropped: stops the relay, the projectors and the
    /// live feed.
    pub(crate) stop: CancellationToken,
    _stop: DropGuard,
    _server: NatsServer,
}

/// Starts a nats-server, and the relay and every projector against `pool`.
pub(crate) async fn start_log(pool: &PgPool) -> Log {
    start_log_with(pool, true).await
}

/// Starts a nats-server and the relay, and the projectors if asked.
pub(crate) async fn start_log_with(pool: &PgPool, projectors: bool) -> Log {
    let server = NatsServer::start();
    let client = async_nats::connect(server.url()).await.unwrap();
    let jetstream = async_nats::jetstream::new(client.clone());
    ensure_topology(&jetstream, 1).await.unwrap();
    let stop = CancellationToken::new();
    // Woken by the API after each commit; the poll is the relay's default.
    let relay = Relay::new(pool.clone(), jetstream.clone(), 1000)
        .with_wake_ups(listen_for_wake_ups(&client).await.unwrap());
    let relay_stop = stop.clone();
    tokio::spawn(async move { relay.run(Duration::from_millis(100), relay_stop).await });
    if projectors {
        let leaders = jetstream.get_key_value(LEADER_BUCKET).await.unwrap();
        tokio::spawn(orders_projectors::run(
            pool.clone(),
            jetstream.clone(),
            leaders,
            "test".to_owned(),
            LEADER_LEASE,
            stop.clone(),
        ));
    }
    Log {
        client,
        jetstream,
        stop: stop.clone(),
        _stop: stop.drop_guard(),
        _server: server,
    }
}

/// The API with the log and the views behind it.
pub(crate) async fn spawn_app_with_log() -> TestApp {
    spawn_app_with_log_and(|_| {}).await
}

pub(crate) async fn spawn_app_with_log_and(configure: impl FnOnce(&mut ApiConfig)) -> TestApp {
    let pool = fresh_database().await;
    let log = start_log(&pool).await;
    let waker = RelayWaker::new(log.client.clone());
    let jetstream = log.jetstream.clone();
    let live = orders_projectors::live::LiveHub::start(
        log.jetstream.clone(),
        pool.clone(),
        log.stop.clone(),
    );
    let mut app = spawn_instance(pool, |config| {
        config.relay_waker = Some(waker);
        config.live = Some(live);
        config.jetstream = Some(jetstream);
        configure(config);
    })
    .await;
    app.log = Some(log);
    app
}

/// A fresh, migrated database of its own.
pub(crate) async fn fresh_database() -> PgPool {
    orders_test_support::database::fresh_database(16).await.1
}

pub(crate) async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

pub(crate) async fn spawn_app_with(configure: impl FnOnce(&mut ApiConfig)) -> TestApp {
    spawn_instance(fresh_database().await, configure).await
}

/// Another API instance on the same database as `app`, as when the API runs
/// replicated.
pub(crate) async fn spawn_second_instance(app: &TestApp) -> TestApp {
    spawn_instance(app.pool.clone(), |_| {}).await
}

async fn spawn_instance(pool: PgPool, configure: impl FnOnce(&mut ApiConfig)) -> TestApp {
    let secret = Secret::from_env_value("ORDERS_JWT_SECRET", Some(JWT_SECRET.to_owned())).unwrap();
    let mut config = ApiConfig::new(secret, audit_key(), "http://localhost".to_owned());
    configure(&mut config);
    let state = AppState::new(config, pool.clone()).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = format!("http://{}", listener.local_addr().unwrap());
    let shutdown = CancellationToken::new();
    tokio::spawn(orders_command_api::run(
        state.clone(),
        listener,
        shutdown.clone(),
    ));
    TestApp {
        address,
        pool,
        state,
        http: http_client(),
        log: None,
        _shutdown: shutdown.drop_guard(),
    }
}

/// A throttle that never locks, for tests that log in a lot.
pub(crate) fn lenient_throttle(config: &mut ApiConfig) {
    config.login_throttle = ThrottlePolicy {
        failures_per_email: 1_000,
        failures_per_client: 1_000,
        ..ThrottlePolicy::default()
    };
}

pub(crate) struct Session {
    pub(crate) user_id: Uuid,
    pub(crate) token: String,
    pub(crate) email: String,
}

impl TestApp {
    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    pub(crate) async fn post_json(
        &self,
        path: &str,
        body: &Value,
        token: Option<&str>,
    ) -> Response {
        let mut request = self.http.post(self.url(path)).json(body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send().await.expect("request sent")
    }

    pub(crate) async fn register(&self, email: &str, password: &str) -> Response {
        self.post_json(
            "/auth/register",
            &json!({"email": email, "password": password}),
            None,
        )
        .await
    }

    pub(crate) async fn login(&self, email: &str, password: &str) -> Response {
        self.post_json(
            "/auth/login",
            &json!({"email": email, "password": password}),
            None,
        )
        .await
    }

    /// Registers a new user with a unique e-mail and logs in.
    pub(crate) async fn signed_up_user(&self) -> Session {
        let email = format!("user-{}@example.com", Uuid::now_v7().simple());
        let password = "a long enough password";
        let registered = self.register(&email, password).await;
        assert_eq!(registered.status(), StatusCode::CREATED);
        let user_id: Uuid = registered.json::<Value>().await.unwrap()["user_id"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        let login = self.login(&email, password).await;
        assert_eq!(login.status(), StatusCode::OK);
        let token = login.json::<Value>().await.unwrap()["access_token"]
            .as_str()
            .unwrap()
            .to_owned();
        Session {
            user_id,
            token,
            email,
        }
    }

    pub(crate) async fn place_order(&self, token: &str, body: &Value) -> Response {
        self.post_json("/orders", body, Some(token)).await
    }

    /// Places an order and returns its id.
    pub(crate) async fn placed_order(&self, token: &str) -> Uuid {
        let response = self
            .place_order(
                token,
                &json!({"url": "http://127.0.0.1:9/product", "target_price": "3199.00", "currency": "UAH"}),
            )
            .await;
        assert_eq!(response.status(), StatusCode::CREATED);
        response.json::<Value>().await.unwrap()["order_id"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap()
    }

    /// A GET that waits for the views to reach `position` (an `Orders-Position`).
    pub(crate) async fn get_after(
        &self,
        path: &str,
        token: &str,
        position: Option<&str>,
    ) -> Response {
        let mut request = self.http.get(self.url(path)).bearer_auth(token);
        if let Some(position) = position {
            request = request.header("orders-min-position", position);
        }
        request.send().await.expect("request sent")
    }

    /// Like `get_after`, for a read that must be up to date: 200 and not stale.
    pub(crate) async fn get_fresh_json(&self, path: &str, token: &str, position: &str) -> Value {
        let response = self.get_after(path, token, Some(position)).await;
        assert_eq!(response.status(), StatusCode::OK, "GET {path}");
        assert!(
            !response.headers().contains_key("orders-stale"),
            "GET {path} after {position} answered stale"
        );
        response.json().await.unwrap()
    }

    pub(crate) async fn count_events(&self, event_type: &str) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM events WHERE event_type = $1")
            .bind(event_type)
            .fetch_one(&self.pool)
            .await
            .unwrap()
    }
}

/// The `Orders-Position` token of a command's answer.
pub(crate) fn position_of(response: &Response) -> String {
    response
        .headers()
        .get("orders-position")
        .expect("an Orders-Position header")
        .to_str()
        .unwrap()
        .to_owned()
}

/// The problem document of an error response, checking its content type.
pub(crate) async fn problem(response: Response) -> Value {
    let content_type = response
        .headers()
        .get("content-type")
        .map(|value| value.to_str().unwrap().to_owned());
    assert_eq!(content_type.as_deref(), Some("application/problem+json"));
    response.json().await.unwrap()
}

/// A client for the API under test. reqwest is built without a default TLS crypto
/// provider (the workspace uses ring everywhere), so one is installed first.
pub(crate) fn http_client() -> reqwest::Client {
    let _already_installed = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}
