//! The `price_check` aggregate: one check of one order's product page.
//!
//! Each check is a stream of its own, two events long: requested (by the scheduler
//! or by the order's owner), then observed or failed. Keeping checks off the order's
//! stream is what keeps an order that is checked every hour for years quick to load:
//! the order records only what changed (see [`crate::order`]).
//!
//! The rules that make a result trustworthy live here, not in the scraper: a price in
//! another currency than the order's is a failed check (`currency_mismatch`), never
//! an observation; a result for a check that already has one is ignored, so a
//! redelivered scraper message records nothing new.

use std::fmt;

use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};

use crate::ids::{CheckId, OrderId};
use crate::money::{Currency, Money};
use crate::order::{Availability, OrderStatus, ProductUrl};

/// The longest product title kept from a page, in characters.
pub const MAX_TITLE_CHARS: usize = 300;
/// The longest failure detail kept, in characters.
pub const MAX_DETAIL_CHARS: usize = 500;
/// How many ambiguous candidates a failed check keeps.
pub const MAX_CANDIDATES: usize = 10;

/// Why a check was asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckTrigger {
    /// The scheduler found the order due.
    Scheduled,
    /// The owner asked (`POST /orders/{id}/check`).
    Manual,
}

impl CheckTrigger {
    pub fn as_str(&self) -> &'static str {
        match self {
            CheckTrigger::Scheduled => "scheduled",
            CheckTrigger::Manual => "manual",
        }
    }
}

/// Why a check found no usable price. The names (snake_case) are what users see in
/// `GET /orders/{id}` and what `orders scrape` prints as its `reason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckFailureReason {
    /// The address is private, loopback or link-local (and not allowed by
    /// configuration), directly or after DNS resolution or a redirect.
    ForbiddenAddress,
    /// Not http(s), e.g. a redirect to `ftp:`.
    UnsupportedScheme,
    /// The shop's robots.txt does not let us fetch the page.
    BlockedByRobots,
    /// 404 or 410.
    NotFound,
    /// 401 or 403: the shop refused us (often a bot wall).
    Forbidden,
    /// 429, still after retrying.
    RateLimited,
    /// 5xx, still after retrying.
    ServerError,
    /// Another 4xx.
    ClientError,
    /// The server did not answer in time, still after retrying.
    Timeout,
    /// No connection could be made, still after retrying.
    ConnectFailed,
    /// The host name does not resolve.
    DnsFailed,
    /// The page is larger than the body cap.
    TooLarge,
    /// More than five redirects.
    TooManyRedirects,
    /// The answer is not an HTML page.
    NotHtml,
    /// The answer could not be read.
    InvalidResponse,
    /// The page was read but shows no price.
    NoPrice,
    /// The page shows several different prices and nothing says which is the
    /// product's.
    Ambiguous,
    /// The page's price is in another currency than the order's.
    CurrencyMismatch,
    /// The order's own CSS selector is not valid CSS.
    InvalidSelector,
    /// The check could not be done at all (gave up after every retry).
    Abandoned,
}

impl CheckFailureReason {
    pub fn as_str(&self) -> &'static str {
        match self {
            CheckFailureReason::ForbiddenAddress => "forbidden_address",
            CheckFailureReason::UnsupportedScheme => "unsupported_scheme",
            CheckFailureReason::BlockedByRobots => "blocked_by_robots",
            CheckFailureReason::NotFound => "not_found",
            CheckFailureReason::Forbidden => "forbidden",
            CheckFailureReason::RateLimited => "rate_limited",
            CheckFailureReason::ServerError => "server_error",
            CheckFailureReason::ClientError => "client_error",
            CheckFailureReason::Timeout => "timeout",
            CheckFailureReason::ConnectFailed => "connect_failed",
            CheckFailureReason::DnsFailed => "dns_failed",
            CheckFailureReason::TooLarge => "too_large",
            CheckFailureReason::TooManyRedirects => "too_many_redirects",
            CheckFailureReason::NotHtml => "not_html",
            CheckFailureReason::InvalidResponse => "invalid_response",
            CheckFailureReason::NoPrice => "no_price",
            CheckFailureReason::Ambiguous => "ambiguous",
            CheckFailureReason::CurrencyMismatch => "currency_mismatch",
            CheckFailureReason::InvalidSelector => "invalid_selector",
            CheckFailureReason::Abandoned => "abandoned",
        }
    }

    /// Every reason, for parsing and for tests.
    pub fn all() -> &'static [CheckFailureReason] {
        use CheckFailureReason::*;
        &[
            ForbiddenAddress,
            UnsupportedScheme,
            BlockedByRobots,
            NotFound,
            Forbidden,
            RateLimited,
            ServerError,
            ClientError,
            Timeout,
            ConnectFailed,
            DnsFailed,
            TooLarge,
            TooManyRedirects,
            NotHtml,
            InvalidResponse,
            NoPrice,
            Ambiguous,
            CurrencyMismatch,
            InvalidSelector,
            Abandoned,
        ]
    }

    /// The reason named `text` (its snake_case name).
    pub fn from_name(text: &str) -> Option<CheckFailureReason> {
        CheckFailureReason::all()
            .iter()
            .copied()
            .find(|reason| reason.as_str() == text)
    }
}

impl fmt::Display for CheckFailureReason {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.as_str())
    }
}

/// How the page was fetched: kept with the result, for the operator who wonders why
/// a shop is slow or what it answered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FetchFacts {
    /// The final HTTP status, when there was an answer.
    pub http_status: Option<u16>,
    /// From the request to the whole body, in milliseconds.
    pub fetch_ms: Option<u32>,
    /// How many redirects were followed.
    pub redirects: u8,
}

/// A price as the page wrote it, before it is checked against the order's currency.
#[derive(Debug, Clone, PartialEq)]
pub struct PagePrice {
    pub amount: rust_decimal::Decimal,
    /// `None` when the page did not say; the order's currency is then assumed (most
    /// shops sell in one currency and do not repeat it next to every price).
    pub currency: Option<Currency>,
}

/// What the scraper read from a page.
#[derive(Debug, Clone, PartialEq)]
pub struct PageReading {
    /// `None` when the page shows no price but does say the product cannot be
    /// bought (an out-of-stock page often hides its price).
    pub price: Option<PagePrice>,
    pub availability: Availability,
    pub title: Option<String>,
    /// Which extractor found the price (`json-ld`, `microdata`, ...).
    pub extractor: Option<String>,
}

/// What can be asked of a price check.
#[derive(Debug, Clone, PartialEq)]
pub enum PriceCheckCommand {
    Request {
        check_id: CheckId,
        order_id: OrderId,
        url: ProductUrl,
        selector: Option<String>,
        /// The order's currency: a price in any other is not an observation.
        currency: Currency,
        trigger: CheckTrigger,
        /// The order's status, read by the caller: scheduled checks are for active
        /// orders only; the owner may ask for one on a paused order; nobody on a
        /// cancelled one.
        order_status: OrderStatus,
    },
    /// The page was fetched and read.
    RecordReading {
        reading: PageReading,
        fetch: FetchFacts,
    },
    /// The check failed before a reading (fetching, robots.txt, ...), or the reading
    /// had no single price.
    RecordFailure {
        reason: CheckFailureReason,
        detail: Option<String>,
        /// For `ambiguous`: the different prices the page showed.
        candidates: Vec<Money>,
        fetch: FetchFacts,
    },
}

/// What happened to a price check. The variant names are the stored event types.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum PriceCheckEvent {
    PriceCheckRequested {
        check_id: CheckId,
        order_id: OrderId,
        url: ProductUrl,
        selector: Option<String>,
        currency: Currency,
        trigger: CheckTrigger,
    },
    PriceObserved {
        order_id: OrderId,
        /// `None`: the page said the product cannot be bought and showed no price.
        price: Option<Money>,
        availability: Availability,
        title: Option<String>,
        extractor: Option<String>,
        fetch: FetchFacts,
    },
    PriceCheckFailed {
        order_id: OrderId,
        reason: CheckFailureReason,
        detail: Option<String>,
        candidates: Vec<Money>,
        fetch: FetchFacts,
    },
}

impl DomainEvent for PriceCheckEvent {
    fn event_type(&self) -> String {
        let event_type = match self {
            PriceCheckEvent::PriceCheckRequested { .. } => "PriceCheckRequested",
            PriceCheckEvent::PriceObserved { .. } => "PriceObserved",
            PriceCheckEvent::PriceCheckFailed { .. } => "PriceCheckFailed",
        };
        event_type.to_owned()
    }

    fn event_version(&self) -> String {
        "1.0".to_owned()
    }
}

/// Why a price-check command was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PriceCheckError {
    #[error("this check has already been requested")]
    AlreadyRequested,
    #[error("no such check")]
    NotRequested,
    #[error("a cancelled order is not checked")]
    OrderCancelled,
    #[error("a paused order is checked only when its owner asks")]
    OrderPaused,
    /// The order follows a product of our catalog: its price comes from the
    /// product's events, there is no page to fetch.
    #[error("this order follows a product of our catalog: its price changes with the catalog, there is no page to check")]
    NotAPage,
}

/// Where a check is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckState {
    Requested,
    Observed,
    Failed,
}

/// A price check's state, rebuilt from its events.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PriceCheck {
    check_id: Option<CheckId>,
    order_id: Option<OrderId>,
    url: Option<ProductUrl>,
    selector: Option<String>,
    currency: Option<Currency>,
    trigger: Option<CheckTrigger>,
    state: Option<CheckState>,
    /// From the observation, for the alert mail.
    title: Option<String>,
    price: Option<Money>,
}

impl PriceCheck {
    pub fn check_id(&self) -> Option<CheckId> {
        self.check_id
    }

    pub fn order_id(&self) -> Option<OrderId> {
        self.order_id
    }

    pub fn url(&self) -> Option<&ProductUrl> {
        self.url.as_ref()
    }

    pub fn selector(&self) -> Option<&str> {
        self.selector.as_deref()
    }

    pub fn currency(&self) -> Option<Currency> {
        self.currency
    }

    pub fn trigger(&self) -> Option<CheckTrigger> {
        self.trigger
    }

    /// `None` until requested.
    pub fn state(&self) -> Option<CheckState> {
        self.state
    }

    /// The product title the observation read, if any.
    pub fn title(&self) -> Option<&str> {
        self.title.as_deref()
    }

    /// The price the observation read, if any.
    pub fn price(&self) -> Option<Money> {
        self.price
    }

    pub fn is_completed(&self) -> bool {
        matches!(
            self.state,
            Some(CheckState::Observed) | Some(CheckState::Failed)
        )
    }

    /// Decides what a command means for this check: the events to record (possibly
    /// none), or why it is refused.
    pub fn decide(
        &self,
        command: PriceCheckCommand,
    ) -> Result<Vec<PriceCheckEvent>, PriceCheckError> {
        match command {
            PriceCheckCommand::Request {
                check_id,
                order_id,
                url,
                selector,
                currency,
                trigger,
                order_status,
            } => {
                if self.state.is_some() {
                    return Err(PriceCheckError::AlreadyRequested);
                }
                match (order_status, trigger) {
                    (OrderStatus::Cancelled, _) => return Err(PriceCheckError::OrderCancelled),
                    (OrderStatus::Paused, CheckTrigger::Scheduled) => {
                        return Err(PriceCheckError::OrderPaused)
                    }
                    _ => {}
                }
                Ok(vec![PriceCheckEvent::PriceCheckRequested {
                    check_id,
                    order_id,
                    url,
                    selector,
                    currency,
                    trigger,
                }])
            }
            PriceCheckCommand::RecordReading { reading, fetch } => {
                let (order_id, currency) = self.open_check()?;
                if self.is_completed() {
                    // A redelivered result: the first one stands.
                    return Ok(vec![]);
                }
                Ok(vec![reading_event(order_id, currency, reading, fetch)])
            }
            PriceCheckCommand::RecordFailure {
                reason,
                detail,
                candidates,
                fetch,
            } => {
                let (order_id, _) = self.open_check()?;
                if self.is_completed() {
                    return Ok(vec![]);
                }
                Ok(vec![PriceCheckEvent::PriceCheckFailed {
                    order_id,
                    reason,
                    detail: detail.map(|detail| truncated(&detail, MAX_DETAIL_CHARS)),
                    candidates: candidates.into_iter().take(MAX_CANDIDATES).collect(),
                    fetch,
                }])
            }
        }
    }

    fn open_check(&self) -> Result<(OrderId, Currency), PriceCheckError> {
        match (self.order_id, self.currency) {
            (Some(order_id), Some(currency)) => Ok((order_id, currency)),
            _ => Err(PriceCheckError::NotRequested),
        }
    }
}

/// An observation, or the failure a reading amounts to: another currency, no price
/// and nothing else worth recording, or an amount the currency cannot have.
fn reading_event(
    order_id: OrderId,
    currency: Currency,
    reading: PageReading,
    fetch: FetchFacts,
) -> PriceCheckEvent {
    let failed =
        |reason: CheckFailureReason, detail: Option<String>| PriceCheckEvent::PriceCheckFailed {
            order_id,
            reason,
            detail,
            candidates: vec![],
            fetch,
        };
    let title = reading
        .title
        .as_deref()
        .map(str::trim)
        .filter(|title| !title.is_empty())
        .map(|title| truncated(title, MAX_TITLE_CHARS));
    let price = match reading.price {
        Some(PagePrice {
            currency: Some(page_currency),
            amount,
        }) if page_currency != currency => {
            return failed(
                CheckFailureReason::CurrencyMismatch,
                Some(format!(
                    "the page's price is {amount} {page_currency}, the order is in {currency}"
                )),
            );
        }
        Some(PagePrice { amount, .. }) => match Money::new(amount, currency) {
            Ok(price) if price.is_positive() => Some(price),
            Ok(_) => {
                return failed(
                    CheckFailureReason::NoPrice,
                    Some("the page's price is zero".to_owned()),
                )
            }
            Err(error) => {
                return failed(
                    CheckFailureReason::InvalidResponse,
                    Some(format!(
                        "the page's price {amount} is not a {currency} amount: {error}"
                    )),
                )
            }
        },
        // No price is still worth recording when the page says the product cannot
        // be bought: that is news for the order.
        None if reading.availability.is_unavailable() => None,
        None => return failed(CheckFailureReason::NoPrice, None),
    };
    PriceCheckEvent::PriceObserved {
        order_id,
        price,
        availability: reading.availability,
        title,
        extractor: reading.extractor,
        fetch,
    }
}

fn truncated(text: &str, max_chars: usize) -> String {
    text.chars().take(max_chars).collect()
}

impl Aggregate for PriceCheck {
    const TYPE: &'static str = "price_check";
    type Command = PriceCheckCommand;
    type Event = PriceCheckEvent;
    type Error = PriceCheckError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        for event in self.decide(command)? {
            sink.write(event, self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            PriceCheckEvent::PriceCheckRequested {
                check_id,
                order_id,
                url,
                selector,
                currency,
                trigger,
            } => {
                self.check_id = Some(check_id);
                self.order_id = Some(order_id);
                self.url = Some(url);
                self.selector = selector;
                self.currency = Some(currency);
                self.trigger = Some(trigger);
                self.state = Some(CheckState::Requested);
            }
            PriceCheckEvent::PriceObserved { price, title, .. } => {
                self.state = Some(CheckState::Observed);
                self.price = price;
                self.title = title;
            }
            PriceCheckEvent::PriceCheckFailed { .. } => self.state = Some(CheckState::Failed),
        }
    }
}

#[cfg(test)]
mod tests;
