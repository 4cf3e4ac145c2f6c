//! The `order` aggregate: a tracking order for one product page, with a target price.
//!
//! An order is placed, its target changed, paused, resumed or cancelled by its owner,
//! and it records price observations fed to it by the price-check policy. From those
//! it derives the facts users are mailed about: the price changed, the target was
//! reached (once, until the price rises above the target again and the alert
//! re-arms), the product became unavailable or available again.
//!
//! Only changes are recorded (an observation that repeats the last price and
//! availability adds no event), which keeps the stream short even for an order that
//! is checked every hour for years, and makes a redelivered observation harmless.

use std::fmt;
use std::str::FromStr;

use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use uuid::Uuid;

use crate::ids::{OrderId, ProductId, UserId};
use crate::money::{Currency, Money};

/// Checking more often than every five minutes would hammer shops for no benefit.
pub const MIN_CHECK_INTERVAL_SECS: u32 = 300;
/// Hourly, when the user does not say.
pub const DEFAULT_CHECK_INTERVAL_SECS: u32 = 3600;
/// Thirty days: a longer interval would hardly be tracking.
pub const MAX_CHECK_INTERVAL_SECS: u32 = 30 * 86_400;
/// How many orders a user may have that are not cancelled (paused ones count).
pub const MAX_ACTIVE_ORDERS_PER_USER: u32 = 100;
/// The longest product URL, in characters (what browsers and servers commonly accept).
pub const MAX_URL_CHARS: usize = 2048;
/// The longest CSS selector, in characters.
pub const MAX_SELECTOR_CHARS: usize = 512;

/// Why a product URL was refused. Only the syntax is judged here; whether the
/// address may be fetched (no private networks) is decided when fetching.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    #[error("the URL is empty")]
    Empty,
    #[error("the URL is longer than {max} characters")]
    TooLong { max: usize },
    #[error("not an absolute URL: {0}")]
    Malformed(url::ParseError),
    #[error("only http and https URLs can be tracked, not {0:?}")]
    UnsupportedScheme(String),
    #[error("the URL has no host")]
    MissingHost,
    #[error("the URL must not contain a user name or password")]
    ContainsCredentials,
}

/// The address of a product page: an absolute http(s) URL with a host, without
/// credentials, at most [`MAX_URL_CHARS`] characters.
///
/// Kept in the `url` crate's normalised form (lower-case scheme and host, punycode,
/// percent-encoding), which is what is fetched and shown.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ProductUrl(url::Url);

impl ProductUrl {
    /// Checks user input; surrounding whitespace is trimmed.
    pub fn parse(input: &str) -> Result<ProductUrl, UrlError> {
        let input = input.trim();
        if input.is_empty() {
            return Err(UrlError::Empty);
        }
        let too_long = UrlError::TooLong { max: MAX_URL_CHARS };
        // Checked before parsing so a huge input is not parsed at all.
        if input.chars().count() > MAX_URL_CHARS {
            return Err(too_long);
        }
        let url = url::Url::parse(input).map_err(UrlError::Malformed)?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(UrlError::UnsupportedScheme(url.scheme().to_owned()));
        }
        if url.host().is_none() {
            return Err(UrlError::MissingHost);
        }
        // Events are kept forever and published to every subscriber: a password in
        // the URL would be stored and spread for good.
        if !url.username().is_empty() || url.password().is_some() {
            return Err(UrlError::ContainsCredentials);
        }
        // Percent-encoding can make the normalised form longer than what was typed.
        if url.as_str().len() > MAX_URL_CHARS {
            return Err(too_long);
        }
        Ok(ProductUrl(url))
    }

    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    pub fn as_url(&self) -> &url::Url {
        &self.0
    }

    /// The host name or IP literal, e.g. `rozetka.com.ua`.
    pub fn host(&self) -> &str {
        // A ProductUrl always has a host: checked in parse.
        self.0.host_str().unwrap_or_default()
    }
}

impl fmt::Display for ProductUrl {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.0.as_str())
    }
}

impl FromStr for ProductUrl {
    type Err = UrlError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        ProductUrl::parse(input)
    }
}

impl Serialize for ProductUrl {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.0.as_str())
    }
}

impl<'de> Deserialize<'de> for ProductUrl {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        ProductUrl::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// Where an order is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderStatus {
    /// Checked on schedule.
    Active,
    /// Not scheduled until resumed; observations are still accepted (a check that
    /// was already running, or one the user asked for).
    Paused,
    /// Final.
    Cancelled,
}

impl OrderStatus {
    /// The name used in JSON and views: `active`, `paused`, `cancelled`.
    pub fn as_str(&self) -> &'static str {
        match self {
            OrderStatus::Active => "active",
            OrderStatus::Paused => "paused",
            OrderStatus::Cancelled => "cancelled",
        }
    }
}

impl fmt::Display for OrderStatus {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.as_str())
    }
}

/// Whether a product can be bought, in schema.org's `ItemAvailability` terms.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Availability {
    InStock,
    OutOfStock,
    PreOrder,
    BackOrder,
    Discontinued,
    /// The page did not say. Neither available nor unavailable: it never changes
    /// what the order knows. Also the state of an order before any observation.
    #[default]
    Unknown,
}

impl Availability {
    /// The product can be ordered now (possibly delivered later).
    pub fn is_available(&self) -> bool {
        matches!(
            self,
            Availability::InStock | Availability::PreOrder | Availability::BackOrder
        )
    }

    /// The product cannot be ordered.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Availability::OutOfStock | Availability::Discontinued)
    }

    /// The name used in JSON and by the scraper: `InStock`, `OutOfStock`, ...
    pub fn as_str(&self) -> &'static str {
        match self {
            Availability::InStock => "InStock",
            Availability::OutOfStock => "OutOfStock",
            Availability::PreOrder => "PreOrder",
            Availability::BackOrder => "BackOrder",
            Availability::Discontinued => "Discontinued",
            Availability::Unknown => "Unknown",
        }
    }
}

impl fmt::Display for Availability {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.as_str())
    }
}

/// The text is not an availability name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown availability {0:?}")]
pub struct UnknownAvailability(pub String);

impl FromStr for Availability {
    type Err = UnknownAvailability;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        [
            Availability::InStock,
            Availability::OutOfStock,
            Availability::PreOrder,
            Availability::BackOrder,
            Availability::Discontinued,
            Availability::Unknown,
        ]
        .into_iter()
        .find(|availability| availability.as_str() == text)
        .ok_or_else(|| UnknownAvailability(text.chars().take(32).collect()))
    }
}

/// What can be asked of an order.
#[derive(Debug, Clone, PartialEq)]
pub enum OrderCommand {
    Place {
        order_id: OrderId,
        owner: UserId,
        url: ProductUrl,
        target: Money,
        check_interval_secs: u32,
        selector: Option<String>,
        /// How many orders the owner has that are not cancelled, counted by the
        /// caller; the limit itself is a rule of this aggregate.
        owner_active_orders: u32,
    },
    ChangeTarget {
        target: Money,
    },
    Pause,
    Resume,
    Cancel,
    /// A tracking order on a product of our own catalog: its price and
    /// availability come from the product's events, not from scraping.
    PlaceOnCatalog {
        order_id: OrderId,
        owner: UserId,
        product_id: ProductId,
        /// In the product's currency.
        target: Money,
        owner_active_orders: u32,
    },
    /// The result of one price check (identified by `check_id`).
    RecordObservation {
        check_id: Uuid,
        price: Option<Money>,
        availability: Availability,
        /// Which extractor found the price (`json-ld`, `microdata`, ...).
        extractor: Option<String>,
    },
}

/// The version of `OrderPlaced` written now: 3.0 may follow a catalog product
/// (`product_id`, and `url` null) instead of a page. "1.0" and "2.0" payloads are
/// upcast on read (see [`crate::upcasting`]).
pub const ORDER_PLACED_EVENT_VERSION: &str = "3.0";
/// `OrderPlaced` 2.0 nested the target as `Money` (always a page's `url`).
pub const ORDER_PLACED_V2: &str = "2.0";
/// The version of `TargetReached` written now (2.0 added `previous`).
pub const TARGET_REACHED_EVENT_VERSION: &str = "2.0";

/// What happened to an order. The variant names are the stored event types.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum OrderEvent {
    /// Version 3.0: a page's `url`, or (`url` null) a catalog `product_id`.
    OrderPlaced {
        order_id: OrderId,
        owner: UserId,
        url: Option<ProductUrl>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        product_id: Option<ProductId>,
        target: Money,
        check_interval_secs: u32,
        selector: Option<String>,
    },
    TargetChanged {
        previous: Money,
        target: Money,
    },
    OrderPaused,
    OrderResumed,
    OrderCancelled,
    PriceChanged {
        check_id: Uuid,
        previous: Option<Money>,
        price: Money,
        extractor: Option<String>,
    },
    /// Version 2.0; 1.0 had no `previous` (upcast as `null`, see [`crate::upcasting`]).
    TargetReached {
        check_id: Uuid,
        /// The last price known before this check, for the alert mail.
        previous: Option<Money>,
        price: Money,
        target: Money,
    },
    Rearmed {
        check_id: Uuid,
        price: Money,
        target: Money,
    },
    BecameUnavailable {
        check_id: Uuid,
        availability: Availability,
    },
    BecameAvailable {
        check_id: Uuid,
        availability: Availability,
    },
}

impl DomainEvent for OrderEvent {
    fn event_type(&self) -> String {
        let event_type = match self {
            OrderEvent::OrderPlaced { .. } => "OrderPlaced",
            OrderEvent::TargetChanged { .. } => "TargetChanged",
            OrderEvent::OrderPaused => "OrderPaused",
            OrderEvent::OrderResumed => "OrderResumed",
            OrderEvent::OrderCancelled => "OrderCancelled",
            OrderEvent::PriceChanged { .. } => "PriceChanged",
            OrderEvent::TargetReached { .. } => "TargetReached",
            OrderEvent::Rearmed { .. } => "Rearmed",
            OrderEvent::BecameUnavailable { .. } => "BecameUnavailable",
            OrderEvent::BecameAvailable { .. } => "BecameAvailable",
        };
        event_type.to_owned()
    }

    fn event_version(&self) -> String {
        match self {
            OrderEvent::OrderPlaced { .. } => ORDER_PLACED_EVENT_VERSION.to_owned(),
            OrderEvent::TargetReached { .. } => TARGET_REACHED_EVENT_VERSION.to_owned(),
            _ => "1.0".to_owned(),
        }
    }
}

/// What a placement asks for, before its values are checked.
struct Placement {
    order_id: OrderId,
    owner: UserId,
    url: Option<ProductUrl>,
    product_id: Option<ProductId>,
    target: Money,
    check_interval_secs: u32,
    selector: Option<String>,
}

/// Why an order command was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OrderError {
    #[error("this order has already been placed")]
    AlreadyPlaced,
    #[error("no such order")]
    NotFound,
    #[error("the check interval must be at least {min} seconds")]
    CheckIntervalTooShort { min: u32 },
    #[error("the check interval must be at most {max} seconds")]
    CheckIntervalTooLong { max: u32 },
    #[error("the target price must be more than zero")]
    TargetNotPositive,
    #[error("the selector must have at most {max} characters")]
    SelectorTooLong { max: usize },
    #[error("a user can have at most {max} orders that are not cancelled")]
    TooManyActiveOrders { max: u32 },
    #[error("this order has been cancelled")]
    Cancelled,
    #[error("the target price must stay in the order's currency")]
    CurrencyChangeNotAllowed,
    #[error("this order is already paused")]
    AlreadyPaused,
    #[error("this order is not paused")]
    NotPaused,
    #[error("this order is already cancelled")]
    AlreadyCancelled,
    #[error("the observed price is not in the order's currency")]
    ObservationCurrencyMismatch,
}

/// An order's current state, rebuilt from its events.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Order {
    order_id: Option<OrderId>,
    owner: Option<UserId>,
    url: Option<ProductUrl>,
    /// Set for an order on a catalog product (then `url` is `None`).
    #[serde(default)]
    product_id: Option<ProductId>,
    target: Option<Money>,
    status: Option<OrderStatus>,
    check_interval_secs: u32,
    selector: Option<String>,
    last_price: Option<Money>,
    /// Whether reaching the target would alert: true when placed, false after an
    /// alert, true again when the price rises above the target or the target changes.
    armed: bool,
    /// `Unknown` until an observation said available or unavailable.
    availability: Availability,
    /// The newest check whose observation changed something. Check ids are UUID v7,
    /// so an observation of an older (or the same) check is late or redelivered and
    /// changes nothing: the order shows the newest facts.
    #[serde(default)]
    last_check: Option<Uuid>,
}

impl Order {
    pub fn id(&self) -> Option<OrderId> {
        self.order_id
    }

    pub fn owner(&self) -> Option<UserId> {
        self.owner
    }

    /// The page an order follows (`None` for a catalog product).
    pub fn url(&self) -> Option<&ProductUrl> {
        self.url.as_ref()
    }

    /// The catalog product an order follows (`None` for a page).
    pub fn product_id(&self) -> Option<ProductId> {
        self.product_id
    }

    pub fn target(&self) -> Option<Money> {
        self.target
    }

    /// `None` until placed.
    pub fn status(&self) -> Option<OrderStatus> {
        self.status
    }

    /// Zero until placed.
    pub fn check_interval_secs(&self) -> u32 {
        self.check_interval_secs
    }

    pub fn selector(&self) -> Option<&str> {
        self.selector.as_deref()
    }

    /// The last price observed, if any observation had one.
    pub fn last_price(&self) -> Option<Money> {
        self.last_price
    }

    pub fn is_armed(&self) -> bool {
        self.armed
    }

    /// The last availability that changed the order's state: `Unknown` until an
    /// observation reported the product unavailable (or available after that).
    pub fn availability(&self) -> Availability {
        self.availability
    }

    pub fn is_placed(&self) -> bool {
        self.order_id.is_some()
    }

    /// The order's currency, for callers that build a [`Money`] from input without
    /// one (`PATCH /orders/{id}` sends only `target_price`).
    pub fn currency(&self) -> Option<Currency> {
        self.target.map(|target| target.currency())
    }

    /// Decides what a command means for this order: the events to record (possibly
    /// none), or why it is refused.
    pub fn decide(&self, command: OrderCommand) -> Result<Vec<OrderEvent>, OrderError> {
        match command {
            OrderCommand::Place {
                order_id,
                owner,
                url,
                target,
                check_interval_secs,
                selector,
                owner_active_orders,
            } => self.decide_placement(
                Placement {
                    order_id,
                    owner,
                    url: Some(url),
                    product_id: None,
                    target,
                    check_interval_secs,
                    selector,
                },
                owner_active_orders,
            ),
            OrderCommand::PlaceOnCatalog {
                order_id,
                owner,
                product_id,
                target,
                owner_active_orders,
            } => self.decide_placement(
                Placement {
                    order_id,
                    owner,
                    url: None,
                    product_id: Some(product_id),
                    target,
                    // Not scraped: the product's events bring its price at once.
                    check_interval_secs: DEFAULT_CHECK_INTERVAL_SECS,
                    selector: None,
                },
                owner_active_orders,
            ),
            OrderCommand::ChangeTarget { target } => {
                let current_target = self.placed_and_not_cancelled()?;
                if target.currency() != current_target.currency() {
                    return Err(OrderError::CurrencyChangeNotAllowed);
                }
                let target = checked_target(target)?;
                if target == current_target {
                    return Ok(vec![]);
                }
                Ok(vec![OrderEvent::TargetChanged {
                    previous: current_target,
                    target,
                }])
            }
            OrderCommand::Pause => {
                self.placed_and_not_cancelled()?;
                if self.status == Some(OrderStatus::Paused) {
                    return Err(OrderError::AlreadyPaused);
                }
                Ok(vec![OrderEvent::OrderPaused])
            }
            OrderCommand::Resume => {
                self.placed_and_not_cancelled()?;
                if self.status != Some(OrderStatus::Paused) {
                    return Err(OrderError::NotPaused);
                }
                Ok(vec![OrderEvent::OrderResumed])
            }
            OrderCommand::Cancel => {
                if !self.is_placed() {
                    return Err(OrderError::NotFound);
                }
                if self.status == Some(OrderStatus::Cancelled) {
                    return Err(OrderError::AlreadyCancelled);
                }
                Ok(vec![OrderEvent::OrderCancelled])
            }
            OrderCommand::RecordObservation {
                check_id,
                price,
                availability,
                extractor,
            } => self.decide_observation(check_id, price, availability, extractor),
        }
    }

    /// A placement as asked (`placed`), its values checked, if the owner has room
    /// for another order.
    fn decide_placement(
        &self,
        placed: Placement,
        owner_active_orders: u32,
    ) -> Result<Vec<OrderEvent>, OrderError> {
        if self.is_placed() {
            return Err(OrderError::AlreadyPlaced);
        }
        let Placement {
            order_id,
            owner,
            url,
            product_id,
            target,
            check_interval_secs,
            selector,
        } = placed;
        let placed = OrderEvent::OrderPlaced {
            order_id,
            owner,
            url,
            product_id,
            target: checked_target(target)?,
            check_interval_secs: checked_check_interval(check_interval_secs)?,
            selector: checked_selector(selector)?,
        };
        if owner_active_orders >= MAX_ACTIVE_ORDERS_PER_USER {
            return Err(OrderError::TooManyActiveOrders {
                max: MAX_ACTIVE_ORDERS_PER_USER,
            });
        }
        Ok(vec![placed])
    }

    /// The current target of a placed order that is not cancelled.
    fn placed_and_not_cancelled(&self) -> Result<Money, OrderError> {
        let Some(target) = self.target else {
            return Err(OrderError::NotFound);
        };
        if self.status == Some(OrderStatus::Cancelled) {
            return Err(OrderError::Cancelled);
        }
        Ok(target)
    }

    fn decide_observation(
        &self,
        check_id: Uuid,
        price: Option<Money>,
        availability: Availability,
        extractor: Option<String>,
    ) -> Result<Vec<OrderEvent>, OrderError> {
        let target = self.placed_and_not_cancelled()?;
        if price.is_some_and(|price| price.currency() != target.currency()) {
            return Err(OrderError::ObservationCurrencyMismatch);
        }
        if self
            .last_check
            .is_some_and(|last_check| check_id <= last_check)
        {
            // Late or redelivered. Every check between the last one that changed
            // something and now changed nothing, so this one, applied before or not,
            // has nothing to add to what the order knows.
            return Ok(vec![]);
        }
        let mut events = Vec::new();

        // Availability first, so a reader of the stream sees "back in stock" before
        // "price changed" and "target reached" of the same check.
        let was_unavailable = self.availability.is_unavailable();
        if availability.is_unavailable() && !was_unavailable {
            events.push(OrderEvent::BecameUnavailable {
                check_id,
                availability,
            });
        } else if availability.is_available() && was_unavailable {
            events.push(OrderEvent::BecameAvailable {
                check_id,
                availability,
            });
        }
        // An available product seen while nothing was known is not news: the state
        // stays Unknown until the product is first seen unavailable.

        let Some(price) = price else {
            return Ok(events);
        };
        if self.last_price != Some(price) {
            events.push(OrderEvent::PriceChanged {
                check_id,
                previous: self.last_price,
                price,
                extractor,
            });
        }
        let at_or_below_target = price.amount() <= target.amount();
        if self.armed && at_or_below_target {
            events.push(OrderEvent::TargetReached {
                check_id,
                previous: self.last_price,
                price,
                target,
            });
        } else if !self.armed && !at_or_below_target {
            events.push(OrderEvent::Rearmed {
                check_id,
                price,
                target,
            });
        }
        Ok(events)
    }
}

impl Order {
    /// A fixed history that uses every event variant, for fingerprinting what
    /// `apply` makes of events: the command side keys its snapshots of orders by a
    /// digest of the state this history folds into, so that a change to the state's
    /// shape or to `apply` retires every snapshot taken by older code.
    pub fn fingerprint_history() -> Vec<OrderEvent> {
        let uah = |amount: i64| {
            Money::new(rust_decimal::Decimal::new(amount, 2), Currency::UAH)
                .expect("a valid UAH amount")
        };
        let check = |n: u128| Uuid::from_u128(0x0192_f1a8_0000_7000_8000_0000_0000_0000 + n);
        vec![
            OrderEvent::OrderPlaced {
                order_id: OrderId::from_uuid(check(100)),
                owner: UserId::from_uuid(check(101)),
                url: Some(ProductUrl::parse("https://shop.example/p/1").expect("a valid URL")),
                product_id: Some(ProductId::from_uuid(check(102))),
                target: uah(319_900),
                check_interval_secs: DEFAULT_CHECK_INTERVAL_SECS,
                selector: Some(".price".to_owned()),
            },
            OrderEvent::PriceChanged {
                check_id: check(1),
                previous: None,
                price: uah(350_000),
                extractor: Some("json-ld".to_owned()),
            },
            OrderEvent::BecameUnavailable {
                check_id: check(2),
                availability: Availability::OutOfStock,
            },
            OrderEvent::BecameAvailable {
                check_id: check(3),
                availability: Availability::InStock,
            },
            OrderEvent::PriceChanged {
                check_id: check(3),
                previous: Some(uah(350_000)),
                price: uah(300_000),
                extractor: None,
            },
            OrderEvent::TargetReached {
                check_id: check(3),
                previous: Some(uah(350_000)),
                price: uah(300_000),
                target: uah(319_900),
            },
            OrderEvent::OrderPaused,
            OrderEvent::OrderResumed,
            OrderEvent::TargetChanged {
                previous: uah(319_900),
                target: uah(290_000),
            },
            OrderEvent::Rearmed {
                check_id: check(4),
                price: uah(300_000),
                target: uah(290_000),
            },
            OrderEvent::OrderCancelled,
        ]
    }

    /// Keeps the newest check id (events of one check come together, and checks
    /// arrive mostly in order; `max` keeps `apply` total either way).
    fn note_check(&mut self, check_id: Uuid) {
        self.last_check = Some(self.last_check.map_or(check_id, |last| last.max(check_id)));
    }
}

fn checked_target(target: Money) -> Result<Money, OrderError> {
    if !target.is_positive() {
        return Err(OrderError::TargetNotPositive);
    }
    Ok(target)
}

fn checked_check_interval(check_interval_secs: u32) -> Result<u32, OrderError> {
    if check_interval_secs < MIN_CHECK_INTERVAL_SECS {
        return Err(OrderError::CheckIntervalTooShort {
            min: MIN_CHECK_INTERVAL_SECS,
        });
    }
    if check_interval_secs > MAX_CHECK_INTERVAL_SECS {
        return Err(OrderError::CheckIntervalTooLong {
            max: MAX_CHECK_INTERVAL_SECS,
        });
    }
    Ok(check_interval_secs)
}

/// Trims the selector; a blank one means "no selector" (let the extractors look).
fn checked_selector(selector: Option<String>) -> Result<Option<String>, OrderError> {
    let Some(selector) = selector else {
        return Ok(None);
    };
    let trimmed = selector.trim();
    if trimmed.is_empty() {
        return Ok(None);
    }
    if trimmed.chars().count() > MAX_SELECTOR_CHARS {
        return Err(OrderError::SelectorTooLong {
            max: MAX_SELECTOR_CHARS,
        });
    }
    Ok(Some(trimmed.to_owned()))
}

impl Aggregate for Order {
    const TYPE: &'static str = "order";
    type Command = OrderCommand;
    type Event = OrderEvent;
    type Error = OrderError;
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
            OrderEvent::OrderPlaced {
                order_id,
                owner,
                url,
                product_id,
                target,
                check_interval_secs,
                selector,
            } => {
                self.order_id = Some(order_id);
                self.owner = Some(owner);
                self.url = url;
                self.product_id = product_id;
                self.target = Some(target);
                self.status = Some(OrderStatus::Active);
                self.check_interval_secs = check_interval_secs;
                self.selector = selector;
                self.armed = true;
            }
            OrderEvent::TargetChanged { target, .. } => {
                self.target = Some(target);
                // A new target deserves its own alert.
                self.armed = true;
            }
            OrderEvent::OrderPaused => self.status = Some(OrderStatus::Paused),
            OrderEvent::OrderResumed => self.status = Some(OrderStatus::Active),
            OrderEvent::OrderCancelled => self.status = Some(OrderStatus::Cancelled),
            OrderEvent::PriceChanged {
                check_id, price, ..
            } => {
                self.last_price = Some(price);
                self.note_check(check_id);
            }
            OrderEvent::TargetReached { check_id, .. } => {
                self.armed = false;
                self.note_check(check_id);
            }
            OrderEvent::Rearmed { check_id, .. } => {
                self.armed = true;
                self.note_check(check_id);
            }
            OrderEvent::BecameUnavailable {
                check_id,
                availability,
            }
            | OrderEvent::BecameAvailable {
                check_id,
                availability,
            } => {
                self.availability = availability;
                self.note_check(check_id);
            }
        }
    }
}

#[cfg(test)]
mod tests;
