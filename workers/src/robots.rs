//! robots.txt (RFC 9309): the parser and matcher, and a per-origin cache.
//!
//! The scraper calls itself `OrdersBot`. Of a robots.txt it keeps only the rules
//! that apply to it: those of every group naming `OrdersBot` (case-insensitively,
//! merged when several do), or else those of every `*` group. A path is judged by
//! the rule with the longest pattern that matches it; `Allow` wins a tie; `*` in a
//! pattern matches any characters and a final `$` anchors it at the end. No rule
//! matching means allowed, and `/robots.txt` itself is always allowed.
//!
//! Fetching belongs to the fetcher (the same SSRF-safe path, host gate and caps as
//! pages); this cache decides when to fetch and what an answer means, after
//! Google's rules for crawlers:
//!
//! - 2xx: the rules, kept for [`RobotsCacheConfig::ttl`] (1 h).
//! - 4xx (404, 410, also 401/403): there is no robots.txt; everything is allowed
//!   for the same TTL.
//! - 5xx or 429: the site cannot say what it allows, so nothing is fetched —
//!   disallow-all — for [`RobotsCacheConfig::unavailable_ttl`] (10 min), unless a
//!   copy fetched within [`RobotsCacheConfig::stale_grace`] (24 h) is at hand, which
//!   is used meanwhile. A page check in that window fails `blocked_by_robots`.
//! - Transport failures (timeout, refused connection, DNS) are not cached at all:
//!   the download's error is returned to the caller (the page fetch fails with that
//!   reason, and a retry asks again).

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;
use url::Url;

/// The product token robots.txt groups name to address this scraper.
pub const ROBOTS_USER_AGENT_TOKEN: &str = "OrdersBot";

/// One `Allow` or `Disallow` line that applies to this scraper.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RobotsRule {
    pub allow: bool,
    /// The path pattern, normalised for matching (non-ASCII bytes percent-encoded,
    /// escapes in upper case).
    pub pattern: String,
}

impl std::fmt::Display for RobotsRule {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let directive = if self.allow { "Allow" } else { "Disallow" };
        write!(formatter, "{directive}: {}", self.pattern)
    }
}

/// The rules of one robots.txt that apply to one user agent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RobotsRules {
    rules: Vec<RobotsRule>,
}

/// A group of a robots.txt while it is parsed: its user agents and rules.
#[derive(Default)]
struct ParsedGroup {
    agents: Vec<String>,
    rules: Vec<RobotsRule>,
}

/// The product token of a `User-agent` value: `OrdersBot/1.0 (+url)` names
/// `OrdersBot`; `*` stays `*`.
fn product_token(user_agent_value: &str) -> &str {
    let value = user_agent_value.trim();
    let end = value
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '*'))
        .unwrap_or(value.len());
    &value[..end]
}

impl RobotsRules {
    /// No rules: everything is allowed.
    pub fn allow_all() -> Self {
        Self::default()
    }

    /// `Disallow: /`.
    pub fn disallow_all() -> Self {
        Self {
            rules: vec![RobotsRule {
                allow: false,
                pattern: "/".to_owned(),
            }],
        }
    }

    /// The rules of `robots_txt` for `user_agent_token` (see the module
    /// documentation). Unknown lines, `Sitemap` and `Crawl-delay` are ignored;
    /// nothing in a robots.txt is an error.
    pub fn parse(robots_txt: &str, user_agent_token: &str) -> Self {
        let mut groups: Vec<ParsedGroup> = Vec::new();
        let mut current = ParsedGroup::default();
        for line in robots_txt.trim_start_matches('\u{feff}').lines() {
            let line = line.split('#').next().unwrap_or_default();
            let Some((key, value)) = line.split_once(':') else {
                continue;
            };
            let value = value.trim();
            match key.trim().to_ascii_lowercase().as_str() {
                "user-agent" => {
                    // A user-agent line after rules starts the next group; consecutive
                    // user-agent lines share one group.
                    if !current.rules.is_empty() {
                        groups.push(std::mem::take(&mut current));
                    }
                    current
                        .agents
                        .push(product_token(value).to_ascii_lowercase());
                }
                directive @ ("allow" | "disallow") => {
                    // Rules outside any group, and empty patterns (`Disallow:` means
                    // nothing is disallowed), change nothing.
                    if current.agents.is_empty() || value.is_empty() {
                        continue;
                    }
                    current.rules.push(RobotsRule {
                        allow: directive == "allow",
                        pattern: normalize_for_matching(value),
                    });
                }
                _ => {}
            }
        }
        if !current.agents.is_empty() {
            groups.push(current);
        }

        let token = user_agent_token.to_ascii_lowercase();
        let rules_of = |agent: &str| -> Option<Vec<RobotsRule>> {
            let matching: Vec<&ParsedGroup> = groups
                .iter()
                .filter(|group| group.agents.iter().any(|name| name == agent))
                .collect();
            (!matching.is_empty()).then(|| {
                matching
                    .into_iter()
                    .flat_map(|group| group.rules.iter().cloned())
                    .collect()
            })
        };
        let rules = rules_of(&token)
            .or_else(|| rules_of("*"))
            .unwrap_or_default();
        Self { rules }
    }

    pub fn rules(&self) -> &[RobotsRule] {
        &self.rules
    }

    /// The rule that decides `path_and_query` (the URL's path with its `?query`),
    /// or `None` when no rule matches (allowed).
    pub fn deciding_rule(&self, path_and_query: &str) -> Option<&RobotsRule> {
        let path = normalize_for_matching(path_and_query);
        self.rules
            .iter()
            .filter(|rule| pattern_matches(&rule.pattern, &path))
            // Longest pattern wins; on equal length Allow (true > false) wins.
            .max_by_key(|rule| (rule.pattern.len(), rule.allow))
    }

    /// Whether `path_and_query` may be fetched.
    pub fn allows(&self, path_and_query: &str) -> bool {
        path_and_query == "/robots.txt"
            || self
                .deciding_rule(path_and_query)
                .is_none_or(|rule| rule.allow)
    }
}

/// The part of a URL robots.txt rules are matched against: path and query.
pub fn path_and_query(url: &Url) -> String {
    match url.query() {
        Some(query) => format!("{}?{query}", url.path()),
        None => url.path().to_owned(),
    }
}

/// Percent-encodes what a URL would (non-ASCII bytes, controls, space) and writes
/// existing escapes in upper case, so `/ціна`, `/%d1%86іна` and the URL's
/// `/%D1%86%D1%96%D0%BD%D0%B0` compare equal.
fn normalize_for_matching(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut normalized = String::with_capacity(text.len());
    let mut index = 0;
    while index < bytes.len() {
        let byte = bytes[index];
        if byte == b'%'
            && index + 2 < bytes.len()
            && bytes[index + 1].is_ascii_hexdigit()
            && bytes[index + 2].is_ascii_hexdigit()
        {
            normalized.push('%');
            normalized.push(char::from(bytes[index + 1].to_ascii_uppercase()));
            normalized.push(char::from(bytes[index + 2].to_ascii_uppercase()));
            index += 3;
            continue;
        }
        if byte <= 0x20 || byte >= 0x7F {
            normalized.push_str(&format!("%{byte:02X}"));
        } else {
            normalized.push(char::from(byte));
        }
        index += 1;
    }
    normalized
}

/// Whether a robots.txt pattern matches a path: a prefix match, where `*` matches
/// any run of bytes and a final `$` requires the path to end there.
///
/// Tracks every path position the pattern read so far can end at (Google's
/// matcher does the same): linear in the pattern, at worst quadratic overall.
fn pattern_matches(pattern: &str, path: &str) -> bool {
    let path = path.as_bytes();
    let (pattern, anchored_at_end) = match pattern.strip_suffix('$') {
        Some(pattern) => (pattern.as_bytes(), true),
        None => (pattern.as_bytes(), false),
    };
    // Sorted, distinct positions in `path` reachable after the pattern so far.
    let mut positions: Vec<usize> = vec![0];
    for &pattern_byte in pattern {
        if pattern_byte == b'*' {
            // From the smallest reachable position, any later one is reachable.
            let first = positions[0];
            positions = (first..=path.len()).collect();
        } else {
            positions = positions
                .into_iter()
                .filter(|&position| path.get(position) == Some(&pattern_byte))
                .map(|position| position + 1)
                .collect();
            if positions.is_empty() {
                return false;
            }
        }
    }
    if anchored_at_end {
        positions.last() == Some(&path.len())
    } else {
        true
    }
}

/// What fetching an origin's robots.txt gave (the fetcher maps its outcome to
/// this; transport failures are its error type instead).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RobotsDownload {
    /// 2xx: the text (possibly truncated at the robots size cap).
    Found(String),
    /// 4xx, or too many redirects: there is no robots.txt.
    Missing,
    /// 5xx or 429: the site could not say.
    Unavailable { detail: String },
}

/// Whether a URL may be fetched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RobotsVerdict {
    Allowed,
    /// A rule forbids it.
    Disallowed {
        rule: RobotsRule,
    },
    /// The robots.txt could not be read (5xx/429): disallow-all for a while.
    RobotsUnavailable {
        detail: String,
    },
}

/// How long robots.txt answers are kept; see the module documentation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RobotsCacheConfig {
    /// How long a fetched (or missing) robots.txt is used.
    pub ttl: Duration,
    /// How long an unavailable robots.txt means disallow-all before it is asked again.
    pub unavailable_ttl: Duration,
    /// How old a good copy may be to stand in for an unavailable robots.txt.
    pub stale_grace: Duration,
    /// How many origins are kept; idle ones are forgotten first.
    pub max_origins: usize,
}

impl Default for RobotsCacheConfig {
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(60 * 60),
            unavailable_ttl: Duration::from_secs(10 * 60),
            stale_grace: Duration::from_secs(24 * 60 * 60),
            max_origins: 1024,
        }
    }
}

#[derive(Debug)]
enum CachedAnswer {
    Rules(Arc<RobotsRules>),
    Unavailable(String),
}

#[derive(Debug)]
struct CachedRobots {
    answer: CachedAnswer,
    expires_at: Instant,
    /// The last rules actually read (2xx or 4xx) and when.
    last_good: Option<(Arc<RobotsRules>, Instant)>,
}

/// One origin's slot: its own async lock, so concurrent checks of one origin wait
/// for a single download instead of each fetching robots.txt.
type OriginSlot = Arc<tokio::sync::Mutex<Option<CachedRobots>>>;

/// robots.txt answers per origin (scheme, host, port); cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct RobotsCache {
    config: RobotsCacheConfig,
    origins: Mutex<HashMap<String, OriginSlot>>,
}

impl RobotsCache {
    pub fn new(config: RobotsCacheConfig) -> Self {
        Self {
            config,
            origins: Mutex::new(HashMap::new()),
        }
    }

    /// The origin's slot, created if new (forgetting idle or expired origins when
    /// the cache is full).
    fn slot(&self, origin: &str) -> OriginSlot {
        let mut origins = self.origins.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(slot) = origins.get(origin) {
            return slot.clone();
        }
        if origins.len() >= self.config.max_origins {
            let now = Instant::now();
            // A slot that is locked is in use: keep it.
            origins.retain(|_, slot| match slot.try_lock() {
                Ok(cached) => cached
                    .as_ref()
                    .is_some_and(|cached| cached.expires_at > now),
                Err(_) => true,
            });
            if origins.len() >= self.config.max_origins {
                origins.retain(|_, slot| slot.try_lock().is_err());
            }
        }
        origins.entry(origin.to_owned()).or_default().clone()
    }

    /// Whether `url` may be fetched, downloading its origin's robots.txt with
    /// `download` (given the robots.txt URL) when no fresh answer is cached. An
    /// error of `download` is returned as is and not cached.
    pub async fn verdict<Download, Downloading, DownloadError>(
        &self,
        url: &Url,
        download: Download,
    ) -> Result<RobotsVerdict, DownloadError>
    where
        Download: FnOnce(Url) -> Downloading,
        Downloading: Future<Output = Result<RobotsDownload, DownloadError>>,
    {
        let path = path_and_query(url);
        if path == "/robots.txt" {
            return Ok(RobotsVerdict::Allowed);
        }
        let origin = url.origin().ascii_serialization();
        let slot = self.slot(&origin);
        let mut cached = slot.lock().await;
        let now = Instant::now();
        let fresh = cached
            .as_ref()
            .is_some_and(|cached| cached.expires_at > now);
        if !fresh {
            let mut robots_url = url.clone();
            robots_url.set_path("/robots.txt");
            robots_url.set_query(None);
            robots_url.set_fragment(None);
            let downloaded = download(robots_url).await?;
            let previous_good = cached.as_ref().and_then(|cached| cached.last_good.clone());
            *cached = Some(self.remember(downloaded, previous_good, &origin));
        }
        let Some(cached) = cached.as_ref() else {
            unreachable!("the slot was filled just above when it was empty");
        };
        Ok(match &cached.answer {
            CachedAnswer::Unavailable(detail) => RobotsVerdict::RobotsUnavailable {
                detail: detail.clone(),
            },
            CachedAnswer::Rules(rules) => match rules.deciding_rule(&path) {
                Some(rule) if !rule.allow => RobotsVerdict::Disallowed { rule: rule.clone() },
                _ => RobotsVerdict::Allowed,
            },
        })
    }

    fn remember(
        &self,
        downloaded: RobotsDownload,
        previous_good: Option<(Arc<RobotsRules>, Instant)>,
        origin: &str,
    ) -> CachedRobots {
        let now = Instant::now();
        let good = |rules: RobotsRules| {
            let rules = Arc::new(rules);
            CachedRobots {
                answer: CachedAnswer::Rules(rules.clone()),
                expires_at: now + self.config.ttl,
                last_good: Some((rules, now)),
            }
        };
        match downloaded {
            RobotsDownload::Found(text) => good(RobotsRules::parse(&text, ROBOTS_USER_AGENT_TOKEN)),
            RobotsDownload::Missing => good(RobotsRules::allow_all()),
            RobotsDownload::Unavailable { detail } => {
                let answer = match &previous_good {
                    Some((rules, fetched_at))
                        if now.duration_since(*fetched_at) <= self.config.stale_grace =>
                    {
                        tracing::info!(%origin, %detail, "robots.txt unavailable, using the last copy");
                        CachedAnswer::Rules(rules.clone())
                    }
                    _ => {
                        tracing::info!(%origin, %detail, "robots.txt unavailable: disallow-all for now");
                        CachedAnswer::Unavailable(detail)
                    }
                };
                CachedRobots {
                    answer,
                    expires_at: now + self.config.unavailable_ttl,
                    last_good: previous_good,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn rules(robots_txt: &str) -> RobotsRules {
        RobotsRules::parse(robots_txt, ROBOTS_USER_AGENT_TOKEN)
    }

    #[test]
    fn a_plain_pattern_is_a_prefix_of_the_path() {
        let robots = rules("User-agent: *\nDisallow: /fish\n");
        for blocked in [
            "/fish",
            "/fish.html",
            "/fish/salmon.html",
            "/fishheads",
            "/fish.php?id=anything",
        ] {
            assert!(!robots.allows(blocked), "{blocked}");
        }
        for allowed in ["/Fish.asp", "/catfish", "/?id=fish", "/desert/fish", "/"] {
            assert!(robots.allows(allowed), "{allowed}");
        }
    }

    #[test]
    fn a_star_matches_any_run_and_a_final_dollar_anchors() {
        let robots = rules("User-agent: *\nDisallow: /*.php$\nDisallow: /fish*.php\n");
        assert!(!robots.allows("/filename.php"));
        assert!(!robots.allows("/folder/filename.php"));
        assert!(
            robots.allows("/filename.php?parameters"),
            "$ anchors at the end"
        );
        assert!(robots.allows("/filename.php/"));
        assert!(robots.allows("/windows.PHP"), "matching is case-sensitive");
        assert!(!robots.allows("/fishheads/catfish.php?parameters"));
        assert!(robots.allows("/Fish.PHP"));
    }

    #[test]
    fn the_longest_matching_rule_wins_and_allow_wins_a_tie() {
        let robots = rules("User-agent: *\nAllow: /p\nDisallow: /\n");
        assert!(robots.allows("/page"));
        assert!(!robots.allows("/other"));

        let robots = rules("User-agent: *\nAllow: /folder\nDisallow: /folder\n");
        assert!(robots.allows("/folder/page"), "equal length: Allow wins");

        let robots = rules("User-agent: *\nAllow: /page\nDisallow: /*.htm\n");
        assert!(!robots.allows("/page.htm"), "/*.htm is longer than /page");

        let robots = rules("User-agent: *\nAllow: /$\nDisallow: /\n");
        assert!(robots.allows("/"));
        assert!(!robots.allows("/page.htm"));
        assert_eq!(
            robots.deciding_rule("/page.htm"),
            Some(&RobotsRule {
                allow: false,
                pattern: "/".to_owned()
            })
        );
    }

    #[test]
    fn our_own_group_replaces_the_star_group() {
        let robots =
            rules("User-agent: *\nDisallow: /\n\nUser-agent: ordersbot\nDisallow: /cart\n");
        assert!(robots.allows("/product/1"), "only our group applies");
        assert!(!robots.allows("/cart/checkout"));
    }

    #[test]
    fn the_star_group_applies_when_no_group_names_us() {
        let robots =
            rules("User-agent: Googlebot\nDisallow: /\n\nUser-agent: *\nDisallow: /private\n");
        assert!(robots.allows("/public"));
        assert!(!robots.allows("/private/x"));
        assert!(rules("User-agent: Googlebot\nDisallow: /\n").allows("/anything"));
    }

    #[test]
    fn groups_share_user_agent_lines_and_our_groups_are_merged() {
        let robots = rules(
            "# shop robots\nUser-agent: Googlebot\nUser-agent: OrdersBot/1.0\nDisallow: /a # comment\n\
             Sitemap: https://shop.example/sitemap.xml\nCrawl-delay: 10\nDisallow: /b\n\
             User-agent: *\nDisallow: /\nUser-agent: ORDERSBOT\nDisallow: /c\n",
        );
        assert!(!robots.allows("/a"));
        assert!(
            !robots.allows("/b"),
            "Sitemap and Crawl-delay do not end a group"
        );
        assert!(!robots.allows("/c"), "both groups naming us apply");
        assert!(robots.allows("/d"));
    }

    #[test]
    fn empty_rules_and_rules_outside_groups_change_nothing() {
        assert!(rules("Disallow: /\nUser-agent: *\nDisallow:\n").allows("/x"));
        assert!(rules("").allows("/x"));
        assert!(rules("<html><body>not a robots.txt</body></html>").allows("/x"));
        assert!(rules("User-agent: *\r\nDisallow: /x\r\n").allows("/y"));
        assert!(!rules("\u{feff}User-agent: *\r\nDisallow: /x\r\n").allows("/x"));
    }

    #[test]
    fn robots_txt_itself_is_always_allowed() {
        assert!(rules("User-agent: *\nDisallow: /\n").allows("/robots.txt"));
    }

    #[test]
    fn non_ascii_patterns_match_the_percent_encoded_url() {
        let robots = rules("User-agent: *\nDisallow: /ціна\nDisallow: /a%2fb\n");
        let url = Url::parse("https://shop.example/ціна/1").unwrap();
        assert!(!robots.allows(&path_and_query(&url)));
        assert!(!robots.allows("/a%2Fb"));
    }

    #[test]
    fn the_query_is_part_of_the_matched_path() {
        let robots = rules("User-agent: *\nDisallow: /*?sort=\n");
        let url = Url::parse("https://shop.example/list?sort=price").unwrap();
        assert!(!robots.allows(&path_and_query(&url)));
        assert!(robots.allows("/list"));
    }

    proptest! {
        #[test]
        fn a_pattern_without_wildcards_matches_exactly_its_prefixes(
            pattern in "/[a-c/.?=]{0,6}",
            path in "/[a-c/.?=]{0,10}",
        ) {
            prop_assert_eq!(pattern_matches(&pattern, &path), path.starts_with(&pattern));
        }

        #[test]
        fn a_trailing_star_changes_nothing_and_a_dollar_means_equality(
            pattern in "/[a-c/.]{0,6}",
            path in "/[a-c/.]{0,10}",
        ) {
            prop_assert_eq!(
                pattern_matches(&format!("{pattern}*"), &path),
                pattern_matches(&pattern, &path)
            );
            prop_assert_eq!(pattern_matches(&format!("{pattern}$"), &path), path == pattern);
        }
    }

    #[tokio::test]
    async fn the_cache_downloads_once_per_origin_and_maps_answers() {
        let cache = RobotsCache::new(RobotsCacheConfig::default());
        let downloads = std::sync::atomic::AtomicUsize::new(0);
        let download = |robots_url: Url| {
            downloads.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            assert_eq!(robots_url.as_str(), "https://shop.example/robots.txt");
            async {
                Ok::<_, ()>(RobotsDownload::Found(
                    "User-agent: *\nDisallow: /cart".to_owned(),
                ))
            }
        };
        let page = Url::parse("https://shop.example/product?id=1").unwrap();
        let cart = Url::parse("https://shop.example/cart").unwrap();
        assert_eq!(
            cache.verdict(&page, download).await,
            Ok(RobotsVerdict::Allowed)
        );
        assert!(matches!(
            cache.verdict(&cart, download).await,
            Ok(RobotsVerdict::Disallowed { .. })
        ));
        assert_eq!(downloads.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn an_unavailable_robots_txt_disallows_unless_a_recent_copy_exists_and_errors_are_not_cached(
    ) {
        let config = RobotsCacheConfig {
            ttl: Duration::ZERO,
            ..RobotsCacheConfig::default()
        };
        let cache = RobotsCache::new(config);
        let page = Url::parse("http://shop.example:8080/p").unwrap();
        let unavailable = |_| async {
            Ok::<_, ()>(RobotsDownload::Unavailable {
                detail: "HTTP 503".to_owned(),
            })
        };
        assert!(matches!(
            cache.verdict(&page, unavailable).await,
            Ok(RobotsVerdict::RobotsUnavailable { .. })
        ));

        let other = Url::parse("http://other.example/p").unwrap();
        let transport_failure = |_| async { Err::<RobotsDownload, _>("timeout") };
        assert_eq!(
            cache.verdict(&other, transport_failure).await,
            Err("timeout")
        );
        let missing = |_| async { Ok::<_, &str>(RobotsDownload::Missing) };
        assert_eq!(
            cache.verdict(&other, missing).await,
            Ok(RobotsVerdict::Allowed),
            "the failure was not cached"
        );
        // ttl is zero: the next check downloads again, gets a 5xx, and the copy
        // read a moment ago stands in.
        let unavailable = |_| async {
            Ok::<_, &str>(RobotsDownload::Unavailable {
                detail: "HTTP 500".to_owned(),
            })
        };
        assert_eq!(
            cache.verdict(&other, unavailable).await,
            Ok(RobotsVerdict::Allowed)
        );
    }
}
