//! The console's pages: one askama template each (`command-api/templates/console/`,
//! compiled into the binary, HTML-escaped by default), and what each shows, shaped
//! from the same query functions and rows the JSON API reads.

use askama::Template;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use orders_projectors::query::orders::OrderRow;
use orders_projectors::query::price_history::PricePoint;

/// What every page's frame needs: who is signed in, the session's CSRF token for
/// the sign-out form, and whether the page follows `GET /live`.
#[derive(Debug, Clone, Default)]
pub struct Chrome {
    pub signed_in: Option<String>,
    pub csrf: String,
    pub live: bool,
    /// The log position the page shows everything up to (its views' checkpoint),
    /// which its script follows `GET /live` from; empty if none.
    pub live_after: String,
    /// The caller is an administrator or auditor: the admin pages are in the menu.
    pub admin: bool,
}

/// Renders a template as a page with `status`; a template that fails to render is
/// the error page (it never shows a stack trace).
pub fn page(status: StatusCode, template: &impl Template) -> Response {
    match template.render() {
        Ok(html) => (status, Html(html)).into_response(),
        Err(error) => ErrorPage::internal(anyhow::Error::new(error)).into_response(),
    }
}

#[derive(Template)]
#[template(path = "console/error.html")]
struct ErrorTemplate<'a> {
    chrome: Chrome,
    heading: &'a str,
    text: &'a str,
}

/// A page that says what went wrong, with its status: 403, 404, 500.
#[derive(Debug)]
pub struct ErrorPage {
    status: StatusCode,
    heading: &'static str,
    text: &'static str,
}

impl ErrorPage {
    pub fn not_found() -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            heading: "Page not found",
            text: "There is nothing here, or it is not yours to see.",
        }
    }

    pub fn forbidden() -> Self {
        Self {
            status: StatusCode::FORBIDDEN,
            heading: "Not for this account",
            text: "This page needs a role your account does not have.",
        }
    }

    /// A form without its CSRF token, or sent from another site.
    pub fn forbidden_form() -> Self {
        Self {
            status: StatusCode::FORBIDDEN,
            heading: "This form has expired",
            text: "The form was not sent from this page, or your session changed. Go back, reload the page and try again.",
        }
    }

    /// A form whose values the command refused (a role that does not exist, say):
    /// what a hand-edited form gets; the pages' own forms never send one.
    pub fn unprocessable() -> Self {
        Self {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            heading: "That was not accepted",
            text: "The form's values were refused. Go back, reload the page and try again.",
        }
    }

    /// Something this page needs is not reachable from this instance (NATS).
    pub fn unavailable() -> Self {
        Self {
            status: StatusCode::SERVICE_UNAVAILABLE,
            heading: "Not available here",
            text: "This instance cannot reach what this page needs just now. Please try again in a moment.",
        }
    }

    /// Logs `error` and says something went wrong.
    pub fn internal(error: anyhow::Error) -> Self {
        tracing::error!(error = format!("{error:#}"), "a console page failed");
        Self {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            heading: "Something went wrong",
            text: "We could not show this page just now. Please try again in a moment.",
        }
    }
}

impl From<anyhow::Error> for ErrorPage {
    fn from(error: anyhow::Error) -> Self {
        Self::internal(error)
    }
}

impl IntoResponse for ErrorPage {
    fn into_response(self) -> Response {
        let template = ErrorTemplate {
            chrome: Chrome::default(),
            heading: self.heading,
            text: self.text,
        };
        match template.render() {
            Ok(html) => (self.status, Html(html)).into_response(),
            Err(_) => (self.status, self.text).into_response(),
        }
    }
}

#[derive(Template)]
#[template(path = "console/login.html")]
pub struct LoginPage {
    pub chrome: Chrome,
    pub csrf: String,
    pub next: String,
    pub email: String,
    pub form_error: Option<String>,
    /// What brought the browser here (`console::accounts::notice`), if anything.
    pub notice: Option<&'static str>,
}

#[derive(Template)]
#[template(path = "console/signup.html")]
pub struct SignupPage {
    pub chrome: Chrome,
    pub csrf: String,
    pub email: String,
    pub form_error: Option<String>,
    pub email_error: Option<String>,
    pub password_error: Option<String>,
}

/// One field of a form, with what was typed and what is wrong with it.
#[derive(Debug, Clone)]
pub struct Field {
    pub name: &'static str,
    pub label: &'static str,
    pub hint: &'static str,
    pub kind: &'static str,
    pub required: bool,
    pub value: String,
    pub error: Option<String>,
}

/// A form: its fields and an error that belongs to none of them.
#[derive(Debug, Clone)]
pub struct Form {
    pub fields: Vec<Field>,
    pub error: Option<String>,
}

impl Form {
    /// Puts `message` beside the field named `name`, or above the form if none is.
    pub fn with_error(mut self, name: &str, message: String) -> Self {
        match self.fields.iter_mut().find(|field| field.name == name) {
            Some(field) => field.error = Some(message),
            None => self.error = Some(message),
        }
        self
    }
}

/// An order as a row of the list.
#[derive(Debug, Clone)]
pub struct OrderLine {
    pub id: String,
    pub title: String,
    pub last_price: String,
    pub target: String,
    pub status: String,
    pub availability: String,
}

#[derive(Template)]
#[template(path = "console/orders.html")]
pub struct OrdersPage {
    pub chrome: Chrome,
    pub unverified_notice: String,
    /// What a form just did, or why it did not (`console::accounts`).
    pub notice: Option<String>,
    pub orders: Vec<OrderLine>,
    pub next_cursor: Option<String>,
    pub form: Form,
}

/// An order as its page shows it.
#[derive(Debug, Clone)]
pub struct OrderFacts {
    pub id: String,
    pub title: String,
    pub url: String,
    pub last_price: String,
    pub target: String,
    pub currency: String,
    pub status: String,
    pub armed: bool,
    pub availability: String,
    pub last_checked: String,
    pub last_error: Option<String>,
    pub interval: String,
}

/// One price seen, as the history table shows it.
#[derive(Debug, Clone)]
pub struct PriceLine {
    pub when: String,
    pub price: String,
    pub availability: String,
}

/// A button that changes the order.
#[derive(Debug, Clone)]
pub struct Action {
    pub path: &'static str,
    pub label: &'static str,
    pub class: &'static str,
}

/// An alert the order fired, as its page lists it.
#[derive(Debug, Clone)]
pub struct AlertLine {
    pub when: String,
    pub price: String,
    pub previous: String,
    pub target: String,
}

impl From<&orders_projectors::query::price_history::Alert> for AlertLine {
    fn from(alert: &orders_projectors::query::price_history::Alert) -> Self {
        Self {
            when: readable_time(alert.fired_at),
            price: readable_amount(alert.price, &alert.currency),
            previous: alert.previous.map_or_else(
                || "–".to_owned(),
                |price| readable_amount(price, &alert.currency),
            ),
            target: readable_amount(alert.target, &alert.currency),
        }
    }
}

/// A price check, as the order's page lists it.
#[derive(Debug, Clone)]
pub struct CheckLine {
    pub when: String,
    pub trigger: String,
    pub outcome: String,
    /// The price seen, or why there is none.
    pub result: String,
}

impl From<&orders_projectors::query::price_history::CheckRow> for CheckLine {
    fn from(check: &orders_projectors::query::price_history::CheckRow) -> Self {
        let result = match (check.outcome.as_str(), check.price) {
            (_, Some(price)) => readable_amount(price, &check.currency),
            ("pending", _) => "on its way".to_owned(),
            ("no_price", _) => "the page shows no price (not for sale)".to_owned(),
            _ => {
                let reason = check.reason.clone().unwrap_or_default().replace('_', " ");
                match &check.detail {
                    Some(detail) => format!("{reason}: {detail}"),
                    None => reason,
                }
            }
        };
        Self {
            when: readable_time(check.requested_at),
            trigger: check.trigger.clone(),
            outcome: check.outcome.replace('_', " "),
            result,
        }
    }
}

#[derive(Template)]
#[template(path = "console/order.html")]
pub struct OrderPage {
    pub chrome: Chrome,
    pub order: OrderFacts,
    pub chart: String,
    pub points: Vec<PriceLine>,
    pub alerts: Vec<AlertLine>,
    pub checks: Vec<CheckLine>,
    pub actions: Vec<Action>,
    pub notice: Option<String>,
    pub form_error: Option<String>,
    pub target_value: String,
    pub target_error: Option<String>,
}

/// A time as people read it: `2026-12-04 17:45 UTC`.
pub fn readable_time(time: chrono::DateTime<chrono::Utc>) -> String {
    time.format("%Y-%m-%d %H:%M UTC").to_string()
}

/// An amount of a currency as people read it: `3 199.00 UAH` (the mails' form).
pub fn readable_amount(amount: rust_decimal::Decimal, currency: &str) -> String {
    orders_domain::money::Currency::from_code(currency)
        .and_then(|currency| orders_domain::money::Money::new(amount, currency))
        .map_or_else(|_| format!("{amount} {currency}"), |money| money.readable())
}

/// An availability as people read it: `InStock` → `in stock`.
pub fn readable_availability(availability: &str) -> String {
    let mut words = String::new();
    for (index, character) in availability.chars().enumerate() {
        if character.is_uppercase() && index > 0 {
            words.push(' ');
        }
        words.extend(character.to_lowercase());
    }
    words
}

fn readable_interval(secs: i32) -> String {
    match secs {
        secs if secs % 86_400 == 0 => format!("{} day(s)", secs / 86_400),
        secs if secs % 3_600 == 0 => format!("{} hour(s)", secs / 3_600),
        secs => format!("{} minutes", secs / 60),
    }
}

impl From<&OrderRow> for OrderLine {
    fn from(row: &OrderRow) -> Self {
        Self {
            id: row.order_id.to_string(),
            title: row
                .title
                .clone()
                .or_else(|| row.url.clone())
                .unwrap_or_else(|| "A product of our catalog".to_owned()),
            last_price: row.last_price.map_or_else(
                || "not seen yet".to_owned(),
                |price| readable_amount(price, &row.currency),
            ),
            target: readable_amount(row.target_price, &row.currency),
            status: row.status.clone(),
            availability: readable_availability(&row.availability),
        }
    }
}

impl From<&OrderRow> for OrderFacts {
    fn from(row: &OrderRow) -> Self {
        let line = OrderLine::from(row);
        Self {
            id: line.id,
            title: line.title,
            // A catalog order's page is the product's page in the console.
            url: row
                .url
                .clone()
                .unwrap_or_else(|| format!("/app/products/{}", row.product_id.unwrap_or_default())),
            last_price: line.last_price,
            target: line.target,
            currency: row.currency.clone(),
            status: line.status,
            armed: row.armed,
            availability: line.availability,
            last_checked: row
                .last_checked_at
                .map_or_else(|| "not yet".to_owned(), readable_time),
            last_error: row
                .last_error
                .clone()
                .map(|error| match &row.last_error_detail {
                    Some(detail) => format!("{} ({detail})", error.replace('_', " ")),
                    None => error.replace('_', " "),
                }),
            interval: readable_interval(row.check_interval_secs),
        }
    }
}

impl From<&PricePoint> for PriceLine {
    fn from(point: &PricePoint) -> Self {
        Self {
            when: readable_time(point.observed_at),
            price: readable_amount(point.price, &point.currency),
            availability: readable_availability(&point.availability),
        }
    }
}

/// The buttons an order in `status` has.
pub fn actions_for(status: &str) -> Vec<Action> {
    let check = Action {
        path: "check",
        label: "Check now",
        class: "secondary",
    };
    let cancel = Action {
        path: "cancel",
        label: "Stop tracking",
        class: "danger",
    };
    match status {
        "active" => vec![
            check,
            Action {
                path: "pause",
                label: "Pause",
                class: "secondary",
            },
            cancel,
        ],
        "paused" => vec![
            check,
            Action {
                path: "resume",
                label: "Resume",
                class: "secondary",
            },
            cancel,
        ],
        _ => Vec::new(),
    }
}
