//! The scraper's page fetcher: gets a product page over HTTP(S) without letting a
//! URL reach what it must not (guarantee 8), politely, and within bounds.
//!
//! - **Addresses.** Only `http` and `https`. Every address a request could go to is
//!   checked against [`AddressPolicy`] (public internet only, plus the operator's
//!   `ORDERS_SCRAPER_ALLOW_PRIVATE` networks): an IP-literal host before anything is
//!   sent (reqwest skips the resolver for those); a host name after DNS resolution,
//!   by a resolver that drops refused addresses and fails when none is left (so a
//!   name cannot be re-resolved elsewhere between check and connect); and every
//!   redirect hop, because redirects are followed here, not by reqwest. No proxy
//!   is ever used. Only the web's ports (`ORDERS_SCRAPER_PORTS`, default 80, 443,
//!   8080 and 8443), unless the URL names an address of an allowed network.
//! - **Politeness.** Every hop of a page first asks its origin's robots.txt
//!   ([`crate::robots`], cached; downloaded through this same path). Every request,
//!   robots.txt downloads included, waits its turn at the [`HostGate`]: one request
//!   at a time per host, spaced, slowed down when the site answers 429/503 with
//!   `Retry-After`.
//! - **Bounds.** A connect timeout and a total timeout per request (headers and
//!   body), a body cap (5 MiB; `too_large`, early when Content-Length says so), at
//!   most 5 redirects, and a bounded number of attempts: `timeout`,
//!   `connect_failed`, `server_error` and `rate_limited` are retried with
//!   exponential backoff and jitter, or after the `Retry-After` the site gave;
//!   nothing else is.
//!
//! A failure is a [`FetchFailure`], whose [`FetchFailure::reason`] is the stable
//! snake_case name a failed price check records.

mod address_policy;
mod charset;

use std::error::Error as StdError;
use std::hash::{BuildHasher, Hasher};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use ipnet::IpNet;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::header::{HeaderMap, ACCEPT, CONTENT_TYPE, LOCATION, RETRY_AFTER};
use reqwest::StatusCode;
use tokio::time::Instant;
use url::{Host, Url};

use crate::host_gate::{HostGate, HostKey};
use crate::robots::{RobotsCache, RobotsCacheConfig, RobotsDownload, RobotsVerdict};

pub use address_policy::{
    is_publicly_routable, parse_allowed_networks, parse_allowed_ports, AddressPolicy,
    InvalidNetwork, InvalidPort, PortPolicy, DEFAULT_SCRAPER_PORTS,
};

/// Installs rustls' ring crypto provider as the process default, which reqwest
/// (built without a provider of its own, so that one provider serves the whole
/// build) needs before a client is built. Idempotent: a provider already installed,
/// by an earlier call or by the binary, is kept.
pub fn install_crypto_provider() {
    // `Err` only says that a default provider exists already: fine either way.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The most a page body may have (5 MiB).
pub const DEFAULT_MAX_BODY_BYTES: usize = 5 * 1024 * 1024;
/// The most of a robots.txt that is read; the rest is ignored, as Google does with
/// anything past 500 KiB.
pub const DEFAULT_ROBOTS_MAX_BYTES: usize = 512 * 1024;
/// The most redirects one fetch follows.
pub const DEFAULT_MAX_REDIRECTS: usize = 5;
/// The scraper's User-Agent; robots.txt groups address it as `OrdersBot`.
pub const DEFAULT_USER_AGENT: &str = concat!("OrdersBot/", env!("CARGO_PKG_VERSION"));

/// When and how often a failed fetch is tried again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (1: no retry).
    pub max_attempts: u32,
    /// The pause before the first retry; doubled each time, with jitter.
    pub base_delay: Duration,
    pub max_delay: Duration,
    /// The longest `Retry-After` waited for within one fetch; a site asking for
    /// longer fails the fetch at once (`rate_limited`/`server_error` with the
    /// time), and the next scheduled check comes later anyway.
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            base_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(30),
            max_retry_after: Duration::from_secs(60),
        }
    }
}

/// A number in [0, 1) that differs from call to call: jitter, not cryptography.
/// (std's `RandomState` is randomly keyed per thread and re-keyed per instance.)
fn jitter_fraction() -> f64 {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    // The top 53 bits make an evenly spread f64.
    (hasher.finish() >> 11) as f64 / (1_u64 << 53) as f64
}

impl RetryPolicy {
    /// One attempt only.
    pub fn no_retries() -> Self {
        Self {
            max_attempts: 1,
            ..Self::default()
        }
    }

    /// The pause before trying again after `attempts_made` attempts ended in
    /// `failure`, or `None` when it must not be tried again.
    pub fn delay_before_retry(
        &self,
        attempts_made: u32,
        failure: &FetchFailure,
    ) -> Option<Duration> {
        if attempts_made >= self.max_attempts || !failure.is_retryable() {
            return None;
        }
        let exponent = attempts_made.saturating_sub(1).min(20);
        let backoff = self
            .base_delay
            .saturating_mul(1 << exponent)
            .min(self.max_delay);
        // "Equal jitter": half fixed, half random, so instances that failed together
        // do not come back together.
        let jittered = backoff / 2 + backoff.mul_f64(jitter_fraction() / 2.0);
        match failure.retry_after() {
            Some(retry_after) if retry_after > self.max_retry_after => None,
            Some(retry_after) => Some(retry_after.max(jittered)),
            None => Some(jittered),
        }
    }
}

/// How pages are fetched; the defaults are the product's.
#[derive(Debug, Clone)]
pub struct FetchPolicy {
    /// Networks that may be fetched although not public (`ORDERS_SCRAPER_ALLOW_PRIVATE`).
    pub allow_private: Vec<IpNet>,
    /// The ports requests may go to (`ORDERS_SCRAPER_PORTS`), except that an
    /// IP-literal host in an `allow_private` network may use any.
    pub allowed_ports: PortPolicy,
    pub connect_timeout: Duration,
    /// The most one request may take, from connecting to the body's last byte.
    pub total_timeout: Duration,
    pub max_body_bytes: usize,
    pub robots_max_bytes: usize,
    pub max_redirects: usize,
    pub user_agent: String,
    pub retry: RetryPolicy,
    /// The longest a site's `Retry-After` may slow its host down at the gate.
    pub max_slow_down: Duration,
    pub robots_cache: RobotsCacheConfig,
}

impl Default for FetchPolicy {
    fn default() -> Self {
        Self {
            allow_private: Vec::new(),
            allowed_ports: PortPolicy::default(),
            connect_timeout: Duration::from_secs(10),
            total_timeout: Duration::from_secs(30),
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            robots_max_bytes: DEFAULT_ROBOTS_MAX_BYTES,
            max_redirects: DEFAULT_MAX_REDIRECTS,
            user_agent: DEFAULT_USER_AGENT.to_owned(),
            retry: RetryPolicy::default(),
            max_slow_down: Duration::from_secs(60 * 60),
            robots_cache: RobotsCacheConfig::default(),
        }
    }
}

/// Why a fetch failed. [`FetchFailure::reason`] names each kind for the
/// `price_check` failed event and `orders scrape`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchFailure {
    /// `unsupported_scheme`: not `http` or `https` (also for a redirect).
    #[error("only http and https URLs are fetched, not {scheme}:")]
    UnsupportedScheme { scheme: String },
    /// `invalid_url`: an http(s) URL without a host or a known port.
    #[error("the URL cannot be fetched: {detail}")]
    InvalidUrl { detail: String },
    /// `forbidden_address`: the host is, or resolves only to, an address the
    /// scraper may not reach (loopback, private, link-local, …) and that is not
    /// allowed by configuration.
    #[error("{host} {}", forbidden_address_text(*address))]
    ForbiddenAddress {
        host: String,
        address: Option<IpAddr>,
    },
    /// `forbidden_address` too: a port the scraper does not connect to
    /// (`ORDERS_SCRAPER_PORTS`); the port is part of the address.
    #[error("{host}: port {port} is not one the scraper connects to (ORDERS_SCRAPER_PORTS)")]
    ForbiddenPort { host: String, port: u16 },
    /// `blocked_by_robots`: the site's robots.txt does not let OrdersBot fetch the
    /// URL, or could not be read (5xx/429: disallow-all for a while).
    #[error("robots.txt does not allow {url}: {detail}")]
    BlockedByRobots { url: String, detail: String },
    /// `not_found`: 404 or 410.
    #[error("the page is gone (HTTP {status})")]
    NotFound { status: u16 },
    /// `forbidden`: 401 or 403. Such a page says nothing about the product: its
    /// availability is Unknown, never OutOfStock.
    #[error("the site refused the request (HTTP {status})")]
    Forbidden { status: u16 },
    /// `rate_limited`: 429, with the site's `Retry-After` if it gave one.
    #[error("the site asks to slow down (HTTP 429{})", retry_after_text(*retry_after))]
    RateLimited { retry_after: Option<Duration> },
    /// `server_error`: 5xx (503 may carry `Retry-After`).
    #[error("the site failed (HTTP {status}{})", retry_after_text(*retry_after))]
    ServerError {
        status: u16,
        retry_after: Option<Duration>,
    },
    /// `client_error`: any other 4xx.
    #[error("the site rejected the request (HTTP {status})")]
    ClientError { status: u16 },
    /// `timeout`: connecting, or the whole request, took too long.
    #[error("timed out: {detail}")]
    Timeout { detail: String },
    /// `connect_failed`: no connection, or it broke before the answer was complete.
    #[error("connection failed: {detail}")]
    ConnectFailed { detail: String },
    /// `dns_failed`: the host name did not resolve.
    #[error("{host} did not resolve: {detail}")]
    DnsFailed { host: String, detail: String },
    /// `too_large`: the body exceeds the cap.
    #[error("the page is larger than {limit_bytes} bytes")]
    TooLarge { limit_bytes: usize },
    /// `too_many_redirects`: more redirects than the limit.
    #[error("more than {limit} redirects")]
    TooManyRedirects { limit: usize },
    /// `not_html`: the answer is not a web page (an image, a PDF, JSON, …).
    #[error("the answer is {content_type}, not an HTML page")]
    NotHtml { content_type: String },
    /// `invalid_response`: an answer HTTP does not allow (a redirect without a
    /// usable Location, a 304 to an unconditional request, …).
    #[error("invalid answer: {detail}")]
    InvalidResponse { detail: String },
    /// `host_gate_unavailable`: the host gate's store (NATS) failed, so no request
    /// was made. An infrastructure failure, not the page's: a worker should let the
    /// message be redelivered rather than record a failed check.
    #[error("the host gate is unavailable: {detail}")]
    HostGateUnavailable { detail: String },
}

fn forbidden_address_text(resolved_to: Option<IpAddr>) -> String {
    match resolved_to {
        Some(address) => format!("resolves only to forbidden addresses such as {address}"),
        None => "is a forbidden address".to_owned(),
    }
}

fn retry_after_text(retry_after: Option<Duration>) -> String {
    retry_after
        .map(|after| format!(", retry after {} s", after.as_secs()))
        .unwrap_or_default()
}

impl FetchFailure {
    /// The stable snake_case name of this kind of failure.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::UnsupportedScheme { .. } => "unsupported_scheme",
            Self::InvalidUrl { .. } => "invalid_url",
            Self::ForbiddenAddress { .. } | Self::ForbiddenPort { .. } => "forbidden_address",
            Self::BlockedByRobots { .. } => "blocked_by_robots",
            Self::NotFound { .. } => "not_found",
            Self::Forbidden { .. } => "forbidden",
            Self::RateLimited { .. } => "rate_limited",
            Self::ServerError { .. } => "server_error",
            Self::ClientError { .. } => "client_error",
            Self::Timeout { .. } => "timeout",
            Self::ConnectFailed { .. } => "connect_failed",
            Self::DnsFailed { .. } => "dns_failed",
            Self::TooLarge { .. } => "too_large",
            Self::TooManyRedirects { .. } => "too_many_redirects",
            Self::NotHtml { .. } => "not_html",
            Self::InvalidResponse { .. } => "invalid_response",
            Self::HostGateUnavailable { .. } => "host_gate_unavailable",
        }
    }

    /// Whether trying again soon may succeed: `timeout`, `connect_failed`,
    /// `server_error`, `rate_limited`. Never a 4xx (other than 429).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Self::Timeout { .. }
                | Self::ConnectFailed { .. }
                | Self::ServerError { .. }
                | Self::RateLimited { .. }
        )
    }

    /// How long the site asked to wait (`Retry-After` on a 429 or 5xx).
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::RateLimited { retry_after } | Self::ServerError { retry_after, .. } => {
                *retry_after
            }
            _ => None,
        }
    }

    /// The HTTP status the site answered, for the failures that are one.
    pub fn http_status(&self) -> Option<u16> {
        match self {
            Self::NotFound { status }
            | Self::Forbidden { status }
            | Self::ServerError { status, .. }
            | Self::ClientError { status } => Some(*status),
            Self::RateLimited { .. } => Some(429),
            _ => None,
        }
    }
}

/// How long parts of a successful fetch took.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FetchTimings {
    /// From sending the final request to its response head.
    pub first_byte_ms: u64,
    /// From sending the final request to its body's last byte.
    pub total_ms: u64,
    /// The whole fetch: robots.txt, waits at the host gate, redirects and retries.
    pub overall_ms: u64,
}

/// A fetched page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchedPage {
    /// Where the page was found, after redirects.
    pub final_url: Url,
    pub status: u16,
    pub content_type: Option<String>,
    /// The body decoded to text (see the charset rules in `fetch/charset.rs`).
    pub body: String,
    pub timings: FetchTimings,
    pub redirects: u32,
    /// Attempts made, this successful one included.
    pub attempts: u32,
}

/// The HTTP client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum FetcherBuildError {
    #[error("building the HTTP client")]
    Client(#[source] reqwest::Error),
}

/// The resolver's refusal: the name resolved only to refused addresses. Found
/// again in reqwest's error chain to report `forbidden_address`, not `dns_failed`.
#[derive(Debug)]
struct ResolvedToForbiddenAddress {
    host: String,
    address: IpAddr,
}

impl std::fmt::Display for ResolvedToForbiddenAddress {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            formatter,
            "{} resolves only to forbidden addresses such as {}",
            self.host, self.address
        )
    }
}

impl StdError for ResolvedToForbiddenAddress {}

/// Resolves with the system resolver (through tokio) and keeps only the addresses
/// the policy permits.
#[derive(Debug)]
struct PermittedAddressResolver {
    policy: Arc<AddressPolicy>,
}

impl Resolve for PermittedAddressResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.policy.clone();
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let resolved: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let Some(first) = resolved.first() else {
                return Err(format!("{host} has no addresses").into());
            };
            let first_address = first.ip();
            let permitted: Vec<SocketAddr> = resolved
                .into_iter()
                .filter(|address| policy.permits(address.ip()))
                .collect();
            if permitted.is_empty() {
                return Err(Box::new(ResolvedToForbiddenAddress {
                    host,
                    address: first_address,
                }) as Box<dyn StdError + Send + Sync>);
            }
            Ok(Box::new(permitted.into_iter()) as Addrs)
        })
    }
}

/// The error and its causes, one line (`a: b: c`), repeated messages once.
fn describe_error_chain(error: &(dyn StdError + 'static)) -> String {
    let mut messages: Vec<String> = Vec::new();
    let mut current = Some(error);
    while let Some(error) = current {
        let message = error.to_string();
        if !messages.iter().any(|seen| seen.contains(&message)) {
            messages.push(message);
        }
        current = error.source();
    }
    messages.join(": ")
}

fn find_in_chain<'error, Wanted: StdError + 'static>(
    error: &'error (dyn StdError + 'static),
) -> Option<&'error Wanted> {
    let mut current = Some(error);
    while let Some(error) = current {
        if let Some(wanted) = error.downcast_ref::<Wanted>() {
            return Some(wanted);
        }
        current = error.source();
    }
    None
}

/// What a reqwest error means for the fetch of `url`.
fn classify_transport_error(error: &reqwest::Error, url: &Url) -> FetchFailure {
    if let Some(refused) = find_in_chain::<ResolvedToForbiddenAddress>(error) {
        return FetchFailure::ForbiddenAddress {
            host: refused.host.clone(),
            address: Some(refused.address),
        };
    }
    let detail = describe_error_chain(error);
    if error.is_timeout() {
        FetchFailure::Timeout { detail }
    } else if error.is_dns() {
        FetchFailure::DnsFailed {
            host: url.host_str().unwrap_or_default().to_owned(),
            detail,
        }
    } else if error.is_connect() || error.is_request() {
        // Refused, reset, closed before a complete answer: the exchange itself failed.
        FetchFailure::ConnectFailed { detail }
    } else if find_in_chain::<std::io::Error>(error).is_some() {
        FetchFailure::ConnectFailed { detail }
    } else {
        FetchFailure::InvalidResponse { detail }
    }
}

/// `Retry-After`: delay-seconds or an HTTP date.
fn parse_retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(
        at.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

fn failure_for_status(status: StatusCode, headers: &HeaderMap) -> FetchFailure {
    let code = status.as_u16();
    match code {
        404 | 410 => FetchFailure::NotFound { status: code },
        401 | 403 => FetchFailure::Forbidden { status: code },
        429 => FetchFailure::RateLimited {
            retry_after: parse_retry_after(headers),
        },
        500..=599 => FetchFailure::ServerError {
            status: code,
            retry_after: parse_retry_after(headers),
        },
        400..=499 => FetchFailure::ClientError { status: code },
        _ => FetchFailure::InvalidResponse {
            detail: format!("unexpected HTTP {status}"),
        },
    }
}

/// Whether a Content-Type is a web page; a missing one is given the benefit of
/// the doubt (the extractor finds nothing in a non-page anyway).
fn is_html(content_type: Option<&str>) -> bool {
    let Some(content_type) = content_type else {
        return true;
    };
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    matches!(essence.as_str(), "" | "text/html" | "application/xhtml+xml")
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// What is fetched: a page (HTML only, body over the cap fails) or a robots.txt
/// (any type, body past the cap ignored, not itself checked against robots.txt).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DocumentKind {
    Page,
    Robots,
}

/// A 2xx answer, read.
#[derive(Debug)]
struct Document {
    status: u16,
    content_type: Option<String>,
    body: String,
    first_byte: Duration,
    total: Duration,
}

/// How one request ended when it did not fail.
#[derive(Debug)]
enum HopOutcome {
    Redirect { location: String },
    Document(Document),
}

/// A document after following redirects.
#[derive(Debug)]
struct Followed {
    document: Document,
    final_url: Url,
    redirects: u32,
}

#[derive(Debug)]
struct FetcherState {
    client: reqwest::Client,
    policy: FetchPolicy,
    address_policy: Arc<AddressPolicy>,
    robots: RobotsCache,
    gate: HostGate,
}

/// The SSRF-safe, robots-honouring, host-spaced page fetcher. Cheap to clone;
/// clones share the HTTP client, robots.txt cache and host gate.
#[derive(Debug, Clone)]
pub struct PageFetcher {
    state: Arc<FetcherState>,
}

impl PageFetcher {
    /// A fetcher with `policy`, spacing its requests through `gate`.
    pub fn new(policy: FetchPolicy, gate: HostGate) -> Result<Self, FetcherBuildError> {
        install_crypto_provider();
        let address_policy = Arc::new(AddressPolicy::new(policy.allow_private.clone()));
        let client = reqwest::Client::builder()
            .user_agent(policy.user_agent.clone())
            // Redirects are followed by `follow`, which checks every hop.
            .redirect(reqwest::redirect::Policy::none())
            // A proxy would connect for us to addresses we never see.
            .no_proxy()
            .referer(false)
            .connect_timeout(policy.connect_timeout)
            .timeout(policy.total_timeout)
            .dns_resolver(PermittedAddressResolver {
                policy: address_policy.clone(),
            })
            .build()
            .map_err(FetcherBuildError::Client)?;
        if gate.config().lease <= policy.total_timeout {
            tracing::warn!(
                lease_ms = millis(gate.config().lease),
                total_timeout_ms = millis(policy.total_timeout),
                "the host gate's lease is not longer than a request may take: \
                 another instance may start on a host while a slow request still runs"
            );
        }
        Ok(Self {
            state: Arc::new(FetcherState {
                client,
                robots: RobotsCache::new(policy.robots_cache.clone()),
                policy,
                address_policy,
                gate,
            }),
        })
    }

    pub fn policy(&self) -> &FetchPolicy {
        &self.state.policy
    }

    pub fn address_policy(&self) -> &AddressPolicy {
        &self.state.address_policy
    }

    /// Fetches the page at `url`: robots.txt, host gate, redirects and retries
    /// included (see the module documentation).
    #[tracing::instrument(skip_all, fields(url = %url))]
    pub async fn fetch(&self, url: &Url) -> Result<FetchedPage, FetchFailure> {
        let started = Instant::now();
        let mut attempts = 0;
        loop {
            attempts += 1;
            let failure = match self.state.follow(url, DocumentKind::Page).await {
                Ok(followed) => {
                    let document = followed.document;
                    return Ok(FetchedPage {
                        final_url: followed.final_url,
                        status: document.status,
                        content_type: document.content_type,
                        body: document.body,
                        timings: FetchTimings {
                            first_byte_ms: millis(document.first_byte),
                            total_ms: millis(document.total),
                            overall_ms: millis(started.elapsed()),
                        },
                        redirects: followed.redirects,
                        attempts,
                    });
                }
                Err(failure) => failure,
            };
            let Some(delay) = self
                .state
                .policy
                .retry
                .delay_before_retry(attempts, &failure)
            else {
                tracing::debug!(reason = failure.reason(), attempts, "fetch failed");
                return Err(failure);
            };
            tracing::debug!(
                reason = failure.reason(),
                attempts,
                delay_ms = millis(delay),
                "fetch failed, trying again"
            );
            tokio::time::sleep(delay).await;
        }
    }
}

impl FetcherState {
    /// The host gate's key for `url` once its scheme and host are acceptable; an
    /// IP-literal host is checked here, as no resolver will see it.
    fn check_target(&self, url: &Url) -> Result<HostKey, FetchFailure> {
        if !matches!(url.scheme(), "http" | "https") {
            return Err(FetchFailure::UnsupportedScheme {
                scheme: url.scheme().to_owned(),
            });
        }
        let literal = match url.host() {
            None => {
                return Err(FetchFailure::InvalidUrl {
                    detail: format!("{url} has no host"),
                })
            }
            Some(Host::Ipv4(address)) => Some(IpAddr::V4(address)),
            Some(Host::Ipv6(address)) => Some(IpAddr::V6(address)),
            Some(Host::Domain(_)) => None,
        };
        if let Some(address) = literal {
            if !self.address_policy.permits(address) {
                return Err(FetchFailure::ForbiddenAddress {
                    host: url.host_str().unwrap_or_default().to_owned(),
                    address: None,
                });
            }
        }
        let port = url
            .port_or_known_default()
            .ok_or_else(|| FetchFailure::InvalidUrl {
                detail: format!("{url} has no known port"),
            })?;
        // An allowed network is the operator's own: any of its ports, but only when
        // the URL names the address itself (a name is resolved after this check).
        let operators_own =
            literal.is_some_and(|address| self.address_policy.explicitly_allows(address));
        if !operators_own && !self.policy.allowed_ports.permits(port) {
            return Err(FetchFailure::ForbiddenPort {
                host: url.host_str().unwrap_or_default().to_owned(),
                port,
            });
        }
        HostKey::of_url(url).ok_or_else(|| FetchFailure::InvalidUrl {
            detail: format!("{url} has no known port"),
        })
    }

    /// Fetches `url`, following redirects itself: each hop is checked like the
    /// first (scheme, address, robots.txt for pages, host gate).
    async fn follow(&self, url: &Url, kind: DocumentKind) -> Result<Followed, FetchFailure> {
        let mut current = url.clone();
        let mut redirects: u32 = 0;
        loop {
            let host = self.check_target(&current)?;
            if kind == DocumentKind::Page {
                self.check_robots(&current).await?;
            }
            match self.exchange(&current, &host, kind).await? {
                HopOutcome::Document(document) => {
                    return Ok(Followed {
                        document,
                        final_url: current,
                        redirects,
                    });
                }
                HopOutcome::Redirect { location } => {
                    if redirects as usize >= self.policy.max_redirects {
                        return Err(FetchFailure::TooManyRedirects {
                            limit: self.policy.max_redirects,
                        });
                    }
                    redirects += 1;
                    let next =
                        current
                            .join(&location)
                            .map_err(|error| FetchFailure::InvalidResponse {
                                detail: format!(
                                    "a redirect to an unusable Location {location:?}: {error}"
                                ),
                            })?;
                    tracing::debug!(from = %current, to = %next, "following a redirect");
                    current = next;
                }
            }
        }
    }

    async fn check_robots(&self, url: &Url) -> Result<(), FetchFailure> {
        let verdict = self
            .robots
            .verdict(url, |robots_url| self.download_robots(robots_url))
            .await?;
        match verdict {
            RobotsVerdict::Allowed => Ok(()),
            RobotsVerdict::Disallowed { rule } => Err(FetchFailure::BlockedByRobots {
                url: url.to_string(),
                detail: format!("`{rule}`"),
            }),
            RobotsVerdict::RobotsUnavailable { detail } => Err(FetchFailure::BlockedByRobots {
                url: url.to_string(),
                detail: format!(
                    "robots.txt is unavailable ({detail}); nothing is fetched meanwhile"
                ),
            }),
        }
    }

    /// The origin's robots.txt, through the same checks and gate as a page. What
    /// each outcome means is the robots module's rule (4xx: none; 5xx/429:
    /// unavailable); failures to reach the host at all are returned, not cached.
    async fn download_robots(&self, robots_url: Url) -> Result<RobotsDownload, FetchFailure> {
        // Boxed: `follow` for a page reaches here, and this calls `follow` again.
        match Box::pin(self.follow(&robots_url, DocumentKind::Robots)).await {
            Ok(followed) => Ok(RobotsDownload::Found(followed.document.body)),
            Err(
                FetchFailure::NotFound { .. }
                | FetchFailure::Forbidden { .. }
                | FetchFailure::ClientError { .. }
                | FetchFailure::TooManyRedirects { .. }
                | FetchFailure::UnsupportedScheme { .. }
                | FetchFailure::InvalidUrl { .. },
            ) => Ok(RobotsDownload::Missing),
            Err(
                failure @ (FetchFailure::RateLimited { .. }
                | FetchFailure::ServerError { .. }
                | FetchFailure::InvalidResponse { .. }),
            ) => Ok(RobotsDownload::Unavailable {
                detail: failure.to_string(),
            }),
            Err(failure) => Err(failure),
        }
    }

    /// One request at the host gate: acquire, send and read, release (slowing the
    /// host down if the site asked to).
    async fn exchange(
        &self,
        url: &Url,
        host: &HostKey,
        kind: DocumentKind,
    ) -> Result<HopOutcome, FetchFailure> {
        let permit =
            self.gate
                .acquire(host)
                .await
                .map_err(|error| FetchFailure::HostGateUnavailable {
                    detail: describe_error_chain(&error),
                })?;
        let outcome = self.send_and_read(url, kind).await;
        let slow_down = outcome
            .as_ref()
            .err()
            .and_then(FetchFailure::retry_after)
            .map(|retry_after| retry_after.min(self.policy.max_slow_down));
        if let Err(error) = self.gate.release(permit, slow_down).await {
            // The lease runs out on its own; the fetch's outcome stands.
            tracing::warn!(%host, error = describe_error_chain(&error), "releasing the host failed");
        }
        outcome
    }

    async fn send_and_read(
        &self,
        url: &Url,
        kind: DocumentKind,
    ) -> Result<HopOutcome, FetchFailure> {
        let started = Instant::now();
        let exchange = async {
            let accept = match kind {
                DocumentKind::Page => "text/html,application/xhtml+xml;q=0.9,*/*;q=0.1",
                DocumentKind::Robots => "text/plain,*/*;q=0.1",
            };
            let mut response = self
                .client
                .get(url.clone())
                .header(ACCEPT, accept)
                .send()
                .await
                .map_err(|error| classify_transport_error(&error, url))?;
            let first_byte = started.elapsed();
            let status = response.status();
            if status.is_redirection() {
                return match response.headers().get(LOCATION) {
                    // Some servers send raw UTF-8 there; `join` encodes it.
                    Some(location) => Ok(HopOutcome::Redirect {
                        location: String::from_utf8_lossy(location.as_bytes()).into_owned(),
                    }),
                    None => Err(FetchFailure::InvalidResponse {
                        detail: format!("HTTP {status} without a Location"),
                    }),
                };
            }
            if !status.is_success() {
                return Err(failure_for_status(status, response.headers()));
            }
            let content_type = response
                .headers()
                .get(CONTENT_TYPE)
                .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned());
            if kind == DocumentKind::Page && !is_html(content_type.as_deref()) {
                return Err(FetchFailure::NotHtml {
                    content_type: content_type.unwrap_or_default(),
                });
            }
            let cap = match kind {
                DocumentKind::Page => self.policy.max_body_bytes,
                DocumentKind::Robots => self.policy.robots_max_bytes,
            };
            let announced = response.content_length();
            if kind == DocumentKind::Page && announced.is_some_and(|length| length > cap as u64) {
                return Err(FetchFailure::TooLarge { limit_bytes: cap });
            }
            let mut body: Vec<u8> = Vec::with_capacity(
                announced
                    .map_or(16 * 1024, |length| usize::try_from(length).unwrap_or(cap))
                    .min(cap),
            );
            while let Some(chunk) = response
                .chunk()
                .await
                .map_err(|error| classify_transport_error(&error, url))?
            {
                let room = cap - body.len();
                if chunk.len() > room {
                    if kind == DocumentKind::Page {
                        return Err(FetchFailure::TooLarge { limit_bytes: cap });
                    }
                    // robots.txt: what fits is read, the rest ignored.
                    body.extend_from_slice(&chunk[..room]);
                    break;
                }
                body.extend_from_slice(&chunk);
            }
            Ok(HopOutcome::Document(Document {
                status: status.as_u16(),
                body: charset::decode_body(&body, content_type.as_deref()),
                content_type,
                first_byte,
                total: started.elapsed(),
            }))
        };
        match tokio::time::timeout(self.policy.total_timeout, exchange).await {
            Ok(outcome) => outcome,
            Err(_) => Err(FetchFailure::Timeout {
                detail: format!(
                    "no complete answer within {} ms",
                    millis(self.policy.total_timeout)
                ),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retryable_failures_are_exactly_the_transient_ones() {
        let retryable = [
            FetchFailure::Timeout {
                detail: String::new(),
            },
            FetchFailure::ConnectFailed {
                detail: String::new(),
            },
            FetchFailure::ServerError {
                status: 502,
                retry_after: None,
            },
            FetchFailure::RateLimited { retry_after: None },
        ];
        for failure in retryable {
            assert!(failure.is_retryable(), "{}", failure.reason());
        }
        let final_ones = [
            FetchFailure::NotFound { status: 404 },
            FetchFailure::Forbidden { status: 403 },
            FetchFailure::ClientError { status: 400 },
            FetchFailure::ForbiddenAddress {
                host: "127.0.0.1".into(),
                address: None,
            },
            FetchFailure::ForbiddenPort {
                host: "shop.example".into(),
                port: 22,
            },
            FetchFailure::TooLarge { limit_bytes: 1 },
            FetchFailure::BlockedByRobots {
                url: String::new(),
                detail: String::new(),
            },
        ];
        for failure in final_ones {
            assert!(!failure.is_retryable(), "{}", failure.reason());
        }
    }

    #[test]
    fn statuses_map_to_their_reasons() {
        let headers = HeaderMap::new();
        let reason =
            |code: u16| failure_for_status(StatusCode::from_u16(code).unwrap(), &headers).reason();
        assert_eq!(reason(404), "not_found");
        assert_eq!(reason(410), "not_found");
        assert_eq!(reason(401), "forbidden");
        assert_eq!(reason(403), "forbidden");
        assert_eq!(reason(429), "rate_limited");
        assert_eq!(reason(500), "server_error");
        assert_eq!(reason(503), "server_error");
        assert_eq!(reason(400), "client_error");
        assert_eq!(reason(451), "client_error");
    }

    #[test]
    fn retry_after_is_read_as_seconds_or_an_http_date() {
        let mut headers = HeaderMap::new();
        headers.insert(RETRY_AFTER, "120".parse().unwrap());
        assert_eq!(parse_retry_after(&headers), Some(Duration::from_secs(120)));
        let in_a_minute = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(61));
        headers.insert(RETRY_AFTER, in_a_minute.parse().unwrap());
        let parsed = parse_retry_after(&headers).unwrap();
        assert!(
            parsed > Duration::from_secs(55) && parsed <= Duration::from_secs(61),
            "{parsed:?}"
        );
        headers.insert(
            RETRY_AFTER,
            "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap(),
        );
        assert_eq!(
            parse_retry_after(&headers),
            Some(Duration::ZERO),
            "a date in the past"
        );
        headers.insert(RETRY_AFTER, "soon".parse().unwrap());
        assert_eq!(parse_retry_after(&headers), None);
    }

    #[test]
    fn backoff_doubles_with_jitter_and_honours_retry_after() {
        let policy = RetryPolicy {
            max_attempts: 4,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(300),
            max_retry_after: Duration::from_secs(60),
        };
        let timeout = FetchFailure::Timeout {
            detail: String::new(),
        };
        let first = policy.delay_before_retry(1, &timeout).unwrap();
        assert!(
            first >= Duration::from_millis(50) && first <= Duration::from_millis(100),
            "{first:?}"
        );
        let second = policy.delay_before_retry(2, &timeout).unwrap();
        assert!(
            second >= Duration::from_millis(100) && second <= Duration::from_millis(200),
            "{second:?}"
        );
        let capped = policy.delay_before_retry(3, &timeout).unwrap();
        assert!(capped <= Duration::from_millis(300), "{capped:?}");
        assert_eq!(
            policy.delay_before_retry(4, &timeout),
            None,
            "attempts are bounded"
        );
        assert_eq!(
            policy.delay_before_retry(1, &FetchFailure::NotFound { status: 404 }),
            None
        );

        let asked = FetchFailure::RateLimited {
            retry_after: Some(Duration::from_secs(2)),
        };
        assert_eq!(
            policy.delay_before_retry(1, &asked),
            Some(Duration::from_secs(2))
        );
        let too_long = FetchFailure::ServerError {
            status: 503,
            retry_after: Some(Duration::from_secs(3600)),
        };
        assert_eq!(
            policy.delay_before_retry(1, &too_long),
            None,
            "not waited for within a fetch"
        );
    }

    #[test]
    fn only_web_pages_are_html() {
        assert!(is_html(None));
        assert!(is_html(Some("text/html")));
        assert!(is_html(Some("Text/HTML; charset=windows-1251")));
        assert!(is_html(Some("application/xhtml+xml")));
        assert!(!is_html(Some("image/png")));
        assert!(!is_html(Some("application/pdf")));
        assert!(!is_html(Some("application/json")));
    }
}
