//! The page fetcher against real servers: fixture web servers on loopback
//! addresses and, for the host gate shared between instances, a real nats-server
//! (`NATS_SERVER_BIN`, which `make test` and `.data/test.env` set).

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use orders_test_support::fixture_shop::{FixtureRequest, FixtureResponse, FixtureServer};
use orders_test_support::nats_server::NatsServer;
use orders_workers::fetch::{
    FetchFailure, FetchPolicy, FetchedPage, PageFetcher, PortPolicy, RetryPolicy,
};
use orders_workers::host_gate::{HostGate, HostGateConfig, HostKey};
use tokio::time::Instant;
use url::Url;

/// A second loopback address: a test allows only it, so that 127.0.0.1 and
/// `localhost` stay refused.
const OTHER_LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));

fn quick_retries() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 3,
        base_delay: Duration::from_millis(20),
        max_delay: Duration::from_millis(100),
        max_retry_after: Duration::from_secs(5),
    }
}

/// A policy for tests: the given networks allowed (on any port, as the local shops
/// listen on free ones), short timeouts and backoff.
fn policy_allowing(networks: &[&str]) -> FetchPolicy {
    FetchPolicy {
        allow_private: networks
            .iter()
            .map(|network| network.parse().expect("a test network"))
            .collect(),
        allowed_ports: PortPolicy::Any,
        connect_timeout: Duration::from_secs(2),
        total_timeout: Duration::from_secs(2),
        retry: quick_retries(),
        ..FetchPolicy::default()
    }
}

fn gate_config(spacing: Duration) -> HostGateConfig {
    HostGateConfig {
        spacing,
        lease: Duration::from_secs(10),
        poll_interval: Duration::from_millis(20),
    }
}

fn fetcher(policy: FetchPolicy) -> PageFetcher {
    PageFetcher::new(policy, HostGate::in_process(gate_config(Duration::ZERO))).expect("a fetcher")
}

async fn fetch(fetcher: &PageFetcher, url: &Url) -> Result<FetchedPage, FetchFailure> {
    fetcher.fetch(url).await
}

fn reason(outcome: &Result<FetchedPage, FetchFailure>) -> &'static str {
    match outcome {
        Ok(_) => "ok",
        Err(failure) => failure.reason(),
    }
}

/// Waits (bounded) until `condition` holds, looking every 10 ms.
async fn eventually(what: &str, condition: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn redirects_to_loopback_metadata_or_other_schemes_are_refused() {
    let shop = FixtureServer::start_on(OTHER_LOOPBACK).await.unwrap();
    // Where the redirects lead: it must never see a request.
    let internal = FixtureServer::start().await.unwrap();
    internal.set_html("/secret", "<p>internal</p>");
    let port = internal.address().port();
    shop.set_redirect("/to-loopback", &format!("http://127.0.0.1:{port}/secret"));
    shop.set_redirect("/to-localhost", &format!("http://localhost:{port}/secret"));
    shop.set_redirect(
        "/to-mapped",
        &format!("http://[::ffff:127.0.0.1]:{port}/secret"),
    );
    shop.set_redirect("/to-metadata", "http://169.254.169.254/latest/meta-data/");
    shop.set_redirect("/to-file", "file:///etc/passwd");
    let fetcher = fetcher(policy_allowing(&["127.0.0.2/32"]));

    for path in [
        "/to-loopback",
        "/to-localhost",
        "/to-mapped",
        "/to-metadata",
    ] {
        let outcome = fetch(&fetcher, &shop.url(path)).await;
        assert_eq!(reason(&outcome), "forbidden_address", "{path}: {outcome:?}");
    }
    assert_eq!(
        reason(&fetch(&fetcher, &shop.url("/to-file")).await),
        "unsupported_scheme"
    );
    assert!(internal.requests().is_empty(), "{:?}", internal.requests());
}

#[tokio::test]
async fn an_ip_literal_url_is_refused_without_an_allow_list() {
    let server = FixtureServer::start().await.unwrap();
    server.set_html("/page", "<p>3199 грн</p>");
    let fetcher = fetcher(policy_allowing(&[]));
    let outcome = fetch(&fetcher, &server.url("/page")).await;
    assert_eq!(
        outcome,
        Err(FetchFailure::ForbiddenAddress {
            host: "127.0.0.1".to_owned(),
            address: None
        })
    );
    let metadata = Url::parse("http://169.254.169.254/latest/meta-data/").unwrap();
    assert_eq!(
        reason(&fetch(&fetcher, &metadata).await),
        "forbidden_address"
    );
    let ipv6_loopback =
        Url::parse(&format!("http://[::1]:{}/page", server.address().port())).unwrap();
    assert_eq!(
        reason(&fetch(&fetcher, &ipv6_loopback).await),
        "forbidden_address"
    );
    assert!(
        server.requests().is_empty(),
        "not even robots.txt was asked for"
    );
}

#[tokio::test]
async fn a_host_name_resolving_to_loopback_is_refused_unless_its_network_is_allowed() {
    let server = FixtureServer::start().await.unwrap();
    server.set_html("/page", "<p>3199 грн</p>");
    let by_name = Url::parse(&format!(
        "http://localhost:{}/page",
        server.address().port()
    ))
    .unwrap();

    let outcome = fetch(&fetcher(policy_allowing(&[])), &by_name).await;
    match &outcome {
        Err(FetchFailure::ForbiddenAddress { host, address }) => {
            assert_eq!(host, "localhost");
            assert!(
                address.is_some_and(|address| address.is_loopback()),
                "{address:?}"
            );
        }
        other => panic!("expected forbidden_address, got {other:?}"),
    }
    assert!(server.requests().is_empty());

    let page = fetch(&fetcher(policy_allowing(&["127.0.0.0/8"])), &by_name)
        .await
        .expect("allowed by configuration");
    assert_eq!(page.status, 200);
    assert_eq!(page.body, "<p>3199 грн</p>");
    assert_eq!(page.final_url, by_name);
    assert_eq!(page.redirects, 0);
    assert_eq!(page.attempts, 1);
    assert!(page.timings.first_byte_ms <= page.timings.total_ms);
    assert!(page.timings.total_ms <= page.timings.overall_ms);
    let user_agent = server.requests()[0].user_agent.clone().unwrap_or_default();
    assert!(user_agent.starts_with("OrdersBot/"), "{user_agent}");
}

#[tokio::test]
async fn client_errors_are_not_retried() {
    let server = FixtureServer::start().await.unwrap();
    server.route("/gone", FixtureResponse::status(410));
    server.route(
        "/forbidden",
        FixtureResponse::page(403, "text/html", "<h1>Access denied</h1>"),
    );
    server.route("/teapot", FixtureResponse::status(418));
    let fetcher = fetcher(policy_allowing(&["127.0.0.0/8"]));

    assert_eq!(
        fetch(&fetcher, &server.url("/missing")).await,
        Err(FetchFailure::NotFound { status: 404 })
    );
    assert_eq!(
        reason(&fetch(&fetcher, &server.url("/gone")).await),
        "not_found"
    );
    assert_eq!(
        fetch(&fetcher, &server.url("/forbidden")).await,
        Err(FetchFailure::Forbidden { status: 403 })
    );
    assert_eq!(
        reason(&fetch(&fetcher, &server.url("/teapot")).await),
        "client_error"
    );
    for path in ["/missing", "/gone", "/forbidden", "/teapot"] {
        assert_eq!(server.request_count(path), 1, "{path} was asked for once");
    }
}

#[tokio::test]
async fn server_errors_are_retried_then_reported() {
    let server = FixtureServer::start().await.unwrap();
    server.route("/broken", FixtureResponse::page(500, "text/html", "oops"));
    server.route_sequence(
        "/flaky",
        vec![
            FixtureResponse::status(503),
            FixtureResponse::html("<p>back</p>"),
        ],
    );
    let fetcher = fetcher(policy_allowing(&["127.0.0.0/8"]));

    assert_eq!(
        fetch(&fetcher, &server.url("/broken")).await,
        Err(FetchFailure::ServerError {
            status: 500,
            retry_after: None
        })
    );
    assert_eq!(server.request_count("/broken"), 3, "three attempts in all");

    let page = fetch(&fetcher, &server.url("/flaky"))
        .await
        .expect("the retry succeeds");
    assert_eq!(page.attempts, 2);
    assert_eq!(page.body, "<p>back</p>");
}

#[tokio::test]
async fn a_huge_body_is_too_large_with_or_without_a_content_length() {
    let server = FixtureServer::start().await.unwrap();
    server.set_huge("/announced", 20 * 1024 * 1024);
    server.route("/streamed", FixtureResponse::huge(20 * 1024 * 1024, false));
    server.route("/just-fits", FixtureResponse::huge(64 * 1024, false));
    let policy = FetchPolicy {
        max_body_bytes: 64 * 1024,
        ..policy_allowing(&["127.0.0.0/8"])
    };
    let fetcher = fetcher(policy);
    let too_large = Err(FetchFailure::TooLarge {
        limit_bytes: 64 * 1024,
    });
    assert_eq!(fetch(&fetcher, &server.url("/announced")).await, too_large);
    assert_eq!(fetch(&fetcher, &server.url("/streamed")).await, too_large);
    let page = fetch(&fetcher, &server.url("/just-fits"))
        .await
        .expect("at the cap");
    assert_eq!(page.body.len(), 64 * 1024);

    // The product's default cap, 5 MiB, against the 20 MiB page.
    let default_cap = fetcher_with_default_cap(&server).await;
    assert_eq!(
        default_cap,
        Err(FetchFailure::TooLarge {
            limit_bytes: 5 * 1024 * 1024
        })
    );
}

async fn fetcher_with_default_cap(server: &FixtureServer) -> Result<FetchedPage, FetchFailure> {
    let fetcher = fetcher(policy_allowing(&["127.0.0.0/8"]));
    fetch(&fetcher, &server.url("/streamed")).await
}

#[tokio::test]
async fn a_slow_server_times_out_after_the_retries() {
    let server = FixtureServer::start().await.unwrap();
    server.set_slow("/slow", Duration::from_secs(30), "<p>late</p>");
    let policy = FetchPolicy {
        total_timeout: Duration::from_millis(300),
        retry: RetryPolicy {
            max_attempts: 2,
            ..quick_retries()
        },
        ..policy_allowing(&["127.0.0.0/8"])
    };
    let started = Instant::now();
    let outcome = fetch(&fetcher(policy), &server.url("/slow")).await;
    assert_eq!(reason(&outcome), "timeout", "{outcome:?}");
    assert_eq!(server.request_count("/slow"), 2, "a timeout is retried");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn five_redirects_are_followed_and_a_sixth_is_too_many() {
    let server = FixtureServer::start().await.unwrap();
    for hop in 0..6 {
        // Relative, absolute-path and absolute Locations alike.
        let next = match hop % 3 {
            0 => format!("r{}", hop + 1),
            1 => format!("/r{}", hop + 1),
            _ => server.url(&format!("/r{}", hop + 1)).to_string(),
        };
        server.route(
            &format!("/r{hop}"),
            FixtureResponse::redirect(301 + (hop % 2) as u16, &next),
        );
    }
    server.set_html("/r6", "<p>the end</p>");
    let fetcher = fetcher(policy_allowing(&["127.0.0.0/8"]));

    let page = fetch(&fetcher, &server.url("/r1"))
        .await
        .expect("five redirects");
    assert_eq!(page.redirects, 5);
    assert_eq!(page.final_url, server.url("/r6"));
    assert_eq!(page.body, "<p>the end</p>");

    assert_eq!(
        fetch(&fetcher, &server.url("/r0")).await,
        Err(FetchFailure::TooManyRedirects { limit: 5 })
    );
    assert_eq!(
        server.request_count("/r6"),
        1,
        "the sixth redirect was not followed"
    );
}

#[tokio::test]
async fn robots_txt_is_honoured_on_every_hop_and_fetched_once() {
    let server = FixtureServer::start().await.unwrap();
    server.set_robots_txt(
        "User-agent: *\nDisallow: /\n\nUser-agent: OrdersBot\nDisallow: /private\nAllow: /private/sale$\n",
    );
    server.set_html("/public", "<p>ok</p>");
    server.set_html("/private/item", "<p>hidden</p>");
    server.set_html("/private/sale", "<p>sale</p>");
    server.set_redirect("/sneaky", "/private/item");
    let fetcher = fetcher(policy_allowing(&["127.0.0.0/8"]));

    fetch(&fetcher, &server.url("/public"))
        .await
        .expect("allowed");
    fetch(&fetcher, &server.url("/public"))
        .await
        .expect("still allowed");
    fetch(&fetcher, &server.url("/private/sale"))
        .await
        .expect("the longer Allow wins");
    let blocked = fetch(&fetcher, &server.url("/private/item")).await;
    assert_eq!(reason(&blocked), "blocked_by_robots", "{blocked:?}");
    assert!(!blocked.unwrap_err().is_retryable());
    assert_eq!(
        reason(&fetch(&fetcher, &server.url("/sneaky")).await),
        "blocked_by_robots",
        "the redirect's target is checked too"
    );
    assert_eq!(server.request_count("/private/item"), 0);
    assert_eq!(
        server.request_count("/robots.txt"),
        1,
        "robots.txt is cached per origin"
    );
}

#[tokio::test]
async fn an_unavailable_robots_txt_blocks_and_a_missing_one_allows() {
    let unavailable = FixtureServer::start().await.unwrap();
    unavailable.route("/robots.txt", FixtureResponse::status(503));
    unavailable.set_html("/page", "<p>ok</p>");
    let missing = FixtureServer::start().await.unwrap();
    missing.set_html("/page", "<p>ok</p>");
    let fetcher = fetcher(policy_allowing(&["127.0.0.0/8"]));

    let outcome = fetch(&fetcher, &unavailable.url("/page")).await;
    assert_eq!(reason(&outcome), "blocked_by_robots", "{outcome:?}");
    assert_eq!(unavailable.request_count("/page"), 0);
    fetch(&fetcher, &missing.url("/page"))
        .await
        .expect("no robots.txt: allowed");
}

#[tokio::test]
async fn pages_are_decoded_by_charset_and_non_pages_refused() {
    let server = FixtureServer::start().await.unwrap();
    // "Ціна: 3199 грн" in windows-1251.
    server.set_page(
        "/cp1251",
        200,
        "text/html; charset=windows-1251",
        b"<p>\xD6\xB3\xED\xE0: 3199 \xE3\xF0\xED</p>".to_vec(),
    );
    server.set_page("/image", 200, "image/png", b"\x89PNG".to_vec());
    let fetcher = fetcher(policy_allowing(&["127.0.0.0/8"]));

    let page = fetch(&fetcher, &server.url("/cp1251")).await.unwrap();
    assert_eq!(page.body, "<p>Ціна: 3199 грн</p>");
    assert_eq!(
        page.content_type.as_deref(),
        Some("text/html; charset=windows-1251")
    );
    assert_eq!(
        fetch(&fetcher, &server.url("/image")).await,
        Err(FetchFailure::NotHtml {
            content_type: "image/png".to_owned()
        })
    );
}

#[tokio::test]
async fn a_page_changed_while_the_server_runs_is_fetched_anew() {
    let server = FixtureServer::start().await.unwrap();
    server.set_html("/product", "<span class=price>3199</span>");
    let fetcher = fetcher(policy_allowing(&["127.0.0.0/8"]));
    assert!(fetch(&fetcher, &server.url("/product"))
        .await
        .unwrap()
        .body
        .contains("3199"));
    server.set_html("/product", "<span class=price>2999</span>");
    assert!(fetch(&fetcher, &server.url("/product"))
        .await
        .unwrap()
        .body
        .contains("2999"));
}

async fn nats_gate(nats: &NatsServer, spacing: Duration, lease: Duration) -> HostGate {
    let client = async_nats::connect(nats.url())
        .await
        .expect("connecting to NATS");
    let jetstream = async_nats::jetstream::new(client);
    HostGate::nats(
        &jetstream,
        HostGateConfig {
            lease,
            ..gate_config(spacing)
        },
    )
    .await
    .expect("the host gate bucket")
}

/// Every request in the log started at least `spacing` after the previous one
/// finished (so none overlapped).
fn assert_spaced(requests: &[FixtureRequest], spacing: Duration) {
    let mut requests = requests.to_vec();
    requests.sort_by_key(|request| request.started_at);
    for pair in requests.windows(2) {
        let finished = pair[0].finished_at.expect("every request finished");
        assert!(
            pair[1].started_at >= finished + spacing,
            "{} started {:?} after {} finished (spacing {spacing:?})",
            pair[1].path,
            pair[1].started_at.saturating_duration_since(finished),
            pair[0].path,
        );
    }
}

#[tokio::test]
async fn two_instances_never_overlap_on_a_host_and_keep_the_spacing() {
    let nats = NatsServer::start();
    let spacing = Duration::from_millis(150);
    let server = FixtureServer::start().await.unwrap();
    for page in 0..6 {
        // A little time on the server widens the window for an overlap.
        server.route(
            &format!("/p{page}"),
            FixtureResponse::html(format!("<p>{page}</p>")).delayed(Duration::from_millis(30)),
        );
    }
    let policy = policy_allowing(&["127.0.0.0/8"]);
    let first = PageFetcher::new(
        policy.clone(),
        nats_gate(&nats, spacing, Duration::from_secs(10)).await,
    )
    .unwrap();
    let second = PageFetcher::new(
        policy,
        nats_gate(&nats, spacing, Duration::from_secs(10)).await,
    )
    .unwrap();

    let fetches: Vec<_> = (0..6)
        .map(|page| {
            let fetcher = if page % 2 == 0 {
                first.clone()
            } else {
                second.clone()
            };
            let url = server.url(&format!("/p{page}"));
            tokio::spawn(async move { fetcher.fetch(&url).await })
        })
        .collect();
    for fetch in fetches {
        fetch.await.unwrap().expect("every page is fetched");
    }

    let requests = server.requests();
    // Six pages and each instance's robots.txt.
    assert_eq!(requests.len(), 8, "{requests:?}");
    assert_spaced(&requests, spacing);
}

#[tokio::test]
async fn a_rate_limited_host_is_slowed_down_for_every_instance() {
    let nats = NatsServer::start();
    let spacing = Duration::from_millis(50);
    let server = FixtureServer::start().await.unwrap();
    server.route_sequence(
        "/limited",
        vec![
            FixtureResponse::status(429).with_header("Retry-After", "1"),
            FixtureResponse::html("<p>now</p>"),
        ],
    );
    server.set_html("/other", "<p>other</p>");
    let policy = policy_allowing(&["127.0.0.0/8"]);
    let first = PageFetcher::new(
        policy.clone(),
        nats_gate(&nats, spacing, Duration::from_secs(10)).await,
    )
    .unwrap();
    let second = PageFetcher::new(
        policy,
        nats_gate(&nats, spacing, Duration::from_secs(10)).await,
    )
    .unwrap();
    // The second instance has read robots.txt before the slow-down.
    second.fetch(&server.url("/other")).await.unwrap();

    let limited = tokio::spawn({
        let url = server.url("/limited");
        async move { first.fetch(&url).await }
    });
    eventually("the 429 was answered", || {
        server
            .requests()
            .iter()
            .any(|request| request.path == "/limited" && request.finished_at.is_some())
    })
    .await;
    let other = second
        .fetch(&server.url("/other"))
        .await
        .expect("the other instance waits, then fetches");
    assert_eq!(other.body, "<p>other</p>");
    let page = limited.await.unwrap().expect("retried after Retry-After");
    assert_eq!(page.attempts, 2);

    let requests = server.requests();
    let rate_limited = requests
        .iter()
        .find(|request| request.path == "/limited")
        .unwrap();
    let answered = rate_limited.finished_at.unwrap();
    let after: Vec<_> = requests
        .iter()
        .filter(|request| request.started_at > rate_limited.started_at)
        .collect();
    assert_eq!(
        after.len(),
        2,
        "the retry and the other instance's fetch: {requests:?}"
    );
    for request in after {
        assert!(
            request.started_at >= answered + Duration::from_secs(1),
            "{} started {:?} after the 429",
            request.path,
            request.started_at.saturating_duration_since(answered)
        );
    }
}

#[tokio::test]
async fn a_crashed_holder_does_not_block_the_host_for_ever() {
    let nats = NatsServer::start();
    let spacing = Duration::from_millis(100);
    let lease = Duration::from_millis(400);
    let crashed = nats_gate(&nats, spacing, lease).await;
    let survivor = nats_gate(&nats, spacing, lease).await;
    let host = HostKey::new("shop.example", 443);

    let held = crashed.acquire(&host).await.unwrap();
    // The holder dies without releasing.
    drop(held);
    drop(crashed);

    let started = Instant::now();
    let permit = survivor.acquire(&host).await.unwrap();
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(300),
        "waited only {waited:?}"
    );
    assert!(waited < Duration::from_secs(3), "waited {waited:?}");
    survivor.release(permit, None).await.unwrap();

    // Released normally: the next one waits just the spacing.
    let started = Instant::now();
    let permit = survivor.acquire(&host).await.unwrap();
    assert!(started.elapsed() >= spacing / 2, "{:?}", started.elapsed());
    assert!(started.elapsed() < lease, "{:?}", started.elapsed());
    survivor.release(permit, None).await.unwrap();
}

#[tokio::test]
async fn only_the_webs_ports_are_fetched_unless_the_url_names_an_allowed_address() {
    let shop = FixtureServer::start().await.unwrap();
    shop.set_html("/page", "<p>3199 грн</p>");
    let port = shop.address().port();
    let product_default = || FetchPolicy {
        allowed_ports: PortPolicy::default(),
        ..policy_allowing(&["127.0.0.0/8"])
    };

    // A public host on a mail server's or database's port: refused before any
    // connection (nothing listens there in a test; nothing is tried either).
    for url in [
        "http://8.8.8.8:25/",
        "https://93.184.215.14:5432/x",
        "http://shop.example:22/",
    ] {
        let outcome = fetch(&fetcher(product_default()), &Url::parse(url).unwrap()).await;
        match &outcome {
            Err(failure @ FetchFailure::ForbiddenPort { .. }) => {
                assert_eq!(failure.reason(), "forbidden_address");
            }
            other => panic!("{url}: expected a forbidden port, got {other:?}"),
        }
    }

    // The operator's own network, named by address: any port.
    let page = fetch(&fetcher(product_default()), &shop.url("/page")).await;
    assert!(page.is_ok(), "{page:?}");

    // The same server by name: a name is resolved after the check, so the port
    // must be listed, and neither the page nor robots.txt is asked for.
    let requests_before = shop.requests().len();
    let by_name = Url::parse(&format!("http://localhost:{port}/page")).unwrap();
    let outcome = fetch(&fetcher(product_default()), &by_name).await;
    assert!(
        matches!(outcome, Err(FetchFailure::ForbiddenPort { port: refused, .. }) if refused == port),
        "{outcome:?}"
    );
    assert_eq!(shop.requests().len(), requests_before);
    let listed = FetchPolicy {
        allowed_ports: PortPolicy::Only(vec![port]),
        ..policy_allowing(&["127.0.0.0/8"])
    };
    assert!(fetch(&fetcher(listed), &by_name).await.is_ok());

    // Nor does a redirect lead to an unlisted port.
    let other = FixtureServer::start_on(OTHER_LOOPBACK).await.unwrap();
    other.set_redirect("/away", &format!("http://localhost:{port}/page"));
    let outcome = fetch(&fetcher(product_default()), &other.url("/away")).await;
    assert!(
        matches!(outcome, Err(FetchFailure::ForbiddenPort { .. })),
        "{outcome:?}"
    );
}
