//! Spawns the API against a fresh database on the real PostgreSQL server that
//! `make test` starts (`ORDERS_TEST_DATABASE_URL`), on port 0.

use std::sync::Arc;

use orders_command_api::login_throttle::ThrottlePolicy;
use orders_command_api::{ApiConfig, AppState, Secret};
use reqwest::{Response, StatusCode};
use serde_json::{json, Value};
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions as _, PgPool};
use uuid::Uuid;

pub(crate) const JWT_SECRET: &str = "test secret that is long enough for HS256 signing";

pub(crate) struct TestApp {
    pub(crate) address: String,
    pub(crate) pool: PgPool,
    pub(crate) state: Arc<AppState>,
    pub(crate) http: reqwest::Client,
    _shutdown: tokio::sync::oneshot::Sender<()>,
}

/// A fresh, migrated database of its own.
pub(crate) async fn fresh_database() -> PgPool {
    let server_url = std::env::var("ORDERS_TEST_DATABASE_URL").expect(
        "ORDERS_TEST_DATABASE_URL is not set: run the tests with `make test`, \
         or `set -a; . .data/test.env` after it has started the servers",
    );
    let server: PgConnectOptions = server_url.parse().expect("a PostgreSQL URL");
    let name = format!("test_{}", Uuid::now_v7().simple());
    let mut admin = server
        .clone()
        .connect()
        .await
        .expect("connect to the test server");
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut admin)
        .await
        .expect("create a test database");
    let url = server.database(&name).to_url_lossy().to_string();
    let pool = orders_command_api::database::connect(&url, 16)
        .await
        .expect("connect to the test database");
    orders_command_api::database::migrate(&pool)
        .await
        .expect("migrate the test database");
    pool
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
    let mut config = ApiConfig::new(secret, "http://localhost".to_owned());
    configure(&mut config);
    let state = AppState::new(config, pool.clone()).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = format!("http://{}", listener.local_addr().unwrap());
    let (shutdown, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(orders_command_api::run(
        state.clone(),
        listener,
        async move {
            let _ = stopped.await;
        },
    ));
    TestApp {
        address,
        pool,
        state,
        http: reqwest::Client::new(),
        _shutdown: shutdown,
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

    pub(crate) async fn count_events(&self, event_type: &str) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM events WHERE event_type = $1")
            .bind(event_type)
            .fetch_one(&self.pool)
            .await
            .unwrap()
    }
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
