//! A local web server of fixture pages, for the scraper's tests, end-to-end tests
//! and benchmarks (as `nats_server` is for NATS): it binds port 0 on a loopback
//! address, serves routes that can be changed while it runs (a page whose
//! price changes, a redirect, a slow answer, a huge body, robots.txt), and records
//! every request it saw with when it started and ended, so a test can check how a
//! host was spaced. Each server is its own host (`127.0.0.1:<port>`) for the host
//! gate; several can run at once.
//!
//! A deliberately small HTTP/1.1 server (GET/HEAD, one request per connection,
//! `Connection: close`): enough for a scraper, and no HTTP server crate in the
//! library's dependencies.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;
use url::Url;

/// What a route answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FixtureResponse {
    status: u16,
    headers: Vec<(String, String)>,
    body: FixtureBody,
    delay: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum FixtureBody {
    Bytes(Vec<u8>),
    /// `length` bytes of filler, streamed; with or without a Content-Length.
    Huge {
        length: u64,
        announce_length: bool,
    },
}

impl FixtureResponse {
    /// An empty answer with `status`.
    pub fn status(status: u16) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: FixtureBody::Bytes(Vec::new()),
            delay: Duration::ZERO,
        }
    }

    /// `200 OK`, `text/html; charset=utf-8`.
    pub fn html(body: impl Into<String>) -> Self {
        Self::page(200, "text/html; charset=utf-8", body.into())
    }

    /// An answer with a status, a content type and a body.
    pub fn page(status: u16, content_type: &str, body: impl Into<Vec<u8>>) -> Self {
        Self::status(status)
            .with_header("Content-Type", content_type)
            .with_body(body)
    }

    /// A redirect (`301`, `302`, `303`, `307`, `308`) to `location` (absolute or
    /// relative, sent as is).
    pub fn redirect(status: u16, location: &str) -> Self {
        Self::status(status).with_header("Location", location)
    }

    /// `200 OK` with `length` bytes of HTML-ish filler, streamed in chunks; without
    /// `announce_length` no Content-Length is sent (the body ends at the close).
    pub fn huge(length: u64, announce_length: bool) -> Self {
        Self {
            body: FixtureBody::Huge {
                length,
                announce_length,
            },
            ..Self::status(200).with_header("Content-Type", "text/html")
        }
    }

    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    pub fn with_body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = FixtureBody::Bytes(body.into());
        self
    }

    /// Waits `delay` after reading the request before answering.
    pub fn delayed(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }
}

/// One request the server saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FixtureRequest {
    pub method: String,
    /// The request target: path and query (`/product?id=1`).
    pub path: String,
    pub user_agent: Option<String>,
    /// When the request head had been read.
    pub started_at: Instant,
    /// When the answer was written (or the client went away); `None` while it runs.
    pub finished_at: Option<Instant>,
}

/// A route: its answers in turn, the last one repeated.
#[derive(Debug)]
struct Route {
    responses: Vec<FixtureResponse>,
    served: usize,
}

#[derive(Debug, Default)]
struct FixtureState {
    routes: Mutex<HashMap<String, Route>>,
    requests: Mutex<Vec<FixtureRequest>>,
}

impl FixtureState {
    fn next_response(&self, target: &str) -> FixtureResponse {
        let mut routes = self.routes.lock().unwrap_or_else(PoisonError::into_inner);
        // The full target first (`/search?q=x`), then its path alone.
        let path = target.split('?').next().unwrap_or(target);
        let route = match routes.contains_key(target) {
            true => routes.get_mut(target),
            false => routes.get_mut(path),
        };
        match route {
            Some(route) => {
                let index = route.served.min(route.responses.len().saturating_sub(1));
                route.served += 1;
                route
                    .responses
                    .get(index)
                    .cloned()
                    .unwrap_or_else(|| FixtureResponse::status(404))
            }
            None => FixtureResponse::page(404, "text/html", "<h1>Not Found</h1>"),
        }
    }
}

/// A running fixture server; stopped (with its open connections) when dropped.
#[derive(Debug)]
pub struct FixtureServer {
    address: SocketAddr,
    state: Arc<FixtureState>,
    accepting: JoinHandle<()>,
}

impl FixtureServer {
    /// Starts a server on 127.0.0.1 and a port of its own. Needs a tokio runtime.
    pub async fn start() -> io::Result<Self> {
        Self::start_on(IpAddr::V4(Ipv4Addr::LOCALHOST)).await
    }

    /// Starts a server on `ip` (e.g. `127.0.0.2`: another loopback address, so that
    /// a test can allow this server's address and still see 127.0.0.1 refused).
    pub async fn start_on(ip: IpAddr) -> io::Result<Self> {
        let listener = TcpListener::bind(SocketAddr::new(ip, 0)).await?;
        let address = listener.local_addr()?;
        let state = Arc::new(FixtureState::default());
        let accepting = tokio::spawn(accept_connections(listener, state.clone()));
        Ok(Self {
            address,
            state,
            accepting,
        })
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// `http://<address>` (no trailing slash).
    pub fn origin(&self) -> String {
        format!("http://{}", self.address)
    }

    /// The URL of `path_and_query` (which starts with `/`) on this server.
    ///
    /// # Panics
    /// When `path_and_query` does not make a URL: a mistake in the test itself.
    pub fn url(&self, path_and_query: &str) -> Url {
        Url::parse(&format!("{}{path_and_query}", self.origin()))
            .unwrap_or_else(|error| panic!("{path_and_query} is not a path: {error}"))
    }

    /// Answers `path` with `response` from now on.
    pub fn route(&self, path: &str, response: FixtureResponse) {
        self.route_sequence(path, vec![response]);
    }

    /// Answers `path` with `responses` in turn, then the last one for ever (e.g. a
    /// 429, then the page).
    pub fn route_sequence(&self, path: &str, responses: Vec<FixtureResponse>) {
        self.state
            .routes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(
                path.to_owned(),
                Route {
                    responses,
                    served: 0,
                },
            );
    }

    /// Answers `path` with a page (status, content type, body); replaces what it
    /// answered before, so a running test can change a product's price.
    pub fn set_page(&self, path: &str, status: u16, content_type: &str, body: impl Into<Vec<u8>>) {
        self.route(path, FixtureResponse::page(status, content_type, body));
    }

    /// Answers `path` with `200 OK` and an HTML body.
    pub fn set_html(&self, path: &str, html: impl Into<String>) {
        self.route(path, FixtureResponse::html(html));
    }

    /// Answers `path` with a `302 Found` to `location`.
    pub fn set_redirect(&self, path: &str, location: &str) {
        self.route(path, FixtureResponse::redirect(302, location));
    }

    /// Answers `path` with an HTML page only after `delay`.
    pub fn set_slow(&self, path: &str, delay: Duration, html: impl Into<String>) {
        self.route(path, FixtureResponse::html(html).delayed(delay));
    }

    /// Answers `path` with `length` bytes, streamed, announced by Content-Length.
    pub fn set_huge(&self, path: &str, length: u64) {
        self.route(path, FixtureResponse::huge(length, true));
    }

    /// Serves `/robots.txt`. (Without one the server answers 404 there, like any
    /// unknown path: everything allowed.)
    pub fn set_robots_txt(&self, robots_txt: &str) {
        self.set_page("/robots.txt", 200, "text/plain", robots_txt);
    }

    /// Every request seen so far, in the order they arrived.
    pub fn requests(&self) -> Vec<FixtureRequest> {
        self.state
            .requests
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// How many requests for `path` (path alone, any query) arrived.
    pub fn request_count(&self, path: &str) -> usize {
        self.requests()
            .iter()
            .filter(|request| request.path.split('?').next() == Some(path))
            .count()
    }

    pub fn clear_requests(&self) {
        self.state
            .requests
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }
}

impl Drop for FixtureServer {
    fn drop(&mut self) {
        // The accepting task owns the connections' JoinSet: aborting it ends them.
        self.accepting.abort();
    }
}

async fn accept_connections(listener: TcpListener, state: Arc<FixtureState>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    connections.spawn(serve_connection(stream, state.clone()));
                }
                Err(error) => {
                    tracing::warn!(%error, "fixture server: accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
            // Reap finished connections so the set does not grow.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// The request line and the headers this server looks at.
struct RequestHead {
    method: String,
    target: String,
    user_agent: Option<String>,
}

/// The most a request head may take.
const MAX_REQUEST_HEAD: usize = 64 * 1024;

async fn read_request_head(stream: &mut TcpStream) -> io::Result<Option<RequestHead>> {
    let mut buffer = Vec::with_capacity(1024);
    let mut chunk = [0_u8; 4096];
    let head_end = loop {
        if let Some(position) = buffer.windows(4).position(|window| window == b"\r\n\r\n") {
            break position;
        }
        if buffer.len() > MAX_REQUEST_HEAD {
            return Ok(None);
        }
        let read = stream.read(&mut chunk).await?;
        if read == 0 {
            return Ok(None);
        }
        buffer.extend_from_slice(&chunk[..read]);
    };
    let head = String::from_utf8_lossy(&buffer[..head_end]);
    let mut lines = head.split("\r\n");
    let mut request_line = lines.next().unwrap_or_default().split_whitespace();
    let (Some(method), Some(target)) = (request_line.next(), request_line.next()) else {
        return Ok(None);
    };
    let user_agent = lines.find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.trim()
            .eq_ignore_ascii_case("user-agent")
            .then(|| value.trim().to_owned())
    });
    Ok(Some(RequestHead {
        method: method.to_owned(),
        target: target.to_owned(),
        user_agent,
    }))
}

fn reason_phrase(status: u16) -> &'static str {
    match status {
        200 => "OK",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        410 => "Gone",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Fixture",
    }
}

async fn write_response(
    stream: &mut TcpStream,
    response: &FixtureResponse,
    head_only: bool,
) -> io::Result<()> {
    let mut head = format!(
        "HTTP/1.1 {} {}\r\nConnection: close\r\n",
        response.status,
        reason_phrase(response.status)
    );
    for (name, value) in &response.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    match &response.body {
        FixtureBody::Bytes(bytes) => head.push_str(&format!("Content-Length: {}\r\n", bytes.len())),
        FixtureBody::Huge {
            length,
            announce_length: true,
        } => head.push_str(&format!("Content-Length: {length}\r\n")),
        FixtureBody::Huge { .. } => {}
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await?;
    if head_only {
        return stream.flush().await;
    }
    match &response.body {
        FixtureBody::Bytes(bytes) => stream.write_all(bytes).await?,
        FixtureBody::Huge { length, .. } => {
            let filler = [b'x'; 64 * 1024];
            let mut remaining = *length;
            while remaining > 0 {
                let part =
                    usize::try_from(remaining).map_or(filler.len(), |left| left.min(filler.len()));
                // Stops with an error as soon as the client hangs up (cap reached).
                stream.write_all(&filler[..part]).await?;
                remaining -= part as u64;
            }
        }
    }
    stream.flush().await
}

async fn serve_connection(mut stream: TcpStream, state: Arc<FixtureState>) {
    let head = match read_request_head(&mut stream).await {
        Ok(Some(head)) => head,
        Ok(None) | Err(_) => return,
    };
    let started_at = Instant::now();
    let index = {
        let mut requests = state
            .requests
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        requests.push(FixtureRequest {
            method: head.method.clone(),
            path: head.target.clone(),
            user_agent: head.user_agent.clone(),
            started_at,
            finished_at: None,
        });
        requests.len() - 1
    };
    let response = state.next_response(&head.target);
    if !response.delay.is_zero() {
        tokio::time::sleep(response.delay).await;
    }
    // A client that went away is no failure of the server.
    let _ = write_response(&mut stream, &response, head.method == "HEAD").await;
    // The answer is out once written: the client may act on it from now on, so the
    // time is taken before closing the connection and taking the lock (either can
    // wait behind other tasks on a busy machine).
    let finished_at = Instant::now();
    let _ = stream.shutdown().await;
    let mut requests = state
        .requests
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    // `clear_requests` may have emptied the log meanwhile: only mark our own entry.
    if let Some(request) = requests
        .get_mut(index)
        .filter(|request| request.started_at == started_at && request.path == head.target)
    {
        request.finished_at = Some(finished_at);
    }
}
