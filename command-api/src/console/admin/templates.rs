//! The admin pages' templates (`command-api/templates/console/admin_*.html`) and
//! the shapes of what they show.

use askama::Template;
use orders_nats::dead_letters::DeadLetter;
use orders_projectors::query::orders::OrderRow;
use orders_projectors::query::users::UserRow;
use orders_relay::audit_chain::VerifyReport;
use orders_store::audit::{AuditEntry, CausalNode};

use super::event_line;
use crate::console::pages::{readable_time, Chrome, OrderLine};
use crate::console::shop::dashboard::ShopAnalytics;
use crate::http::admin_operations::{Dashboard, LogPage, LogParams};

/// A metric as people read it.
fn label(metric: &str) -> &'static str {
    match metric {
        "users_registered" => "Users registered",
        "users_verified" => "Addresses verified",
        "users_deactivated" => "Users deactivated",
        "orders_placed" => "Orders placed",
        "orders_active" => "Orders active",
        "orders_paused" => "Orders paused",
        "orders_cancelled" => "Orders cancelled",
        "checks_requested" => "Checks",
        "checks_failed" => "Failed checks",
        "price_changes" => "Price changes",
        "targets_reached" => "Alerts sent",
        _ => "Other",
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Count {
    pub label: &'static str,
    pub value: i64,
}

#[derive(Debug, Clone)]
pub(crate) struct DayLine {
    pub day: String,
    pub values: Vec<i64>,
}

#[derive(Debug, Clone)]
pub(crate) struct LagLine {
    pub consumer: String,
    pub behind: String,
    pub note: String,
}

#[derive(Template)]
#[template(path = "console/admin_dashboard.html")]
pub(crate) struct DashboardPage {
    pub chrome: Chrome,
    pub totals: Vec<Count>,
    pub day_columns: Vec<&'static str>,
    pub days: Vec<DayLine>,
    /// Empty without NATS.
    pub lag: Vec<LagLine>,
    pub dead_letters: Option<usize>,
    /// The shop's charts and their tables (`console::shop::dashboard`).
    pub shop: ShopAnalytics,
}

impl DashboardPage {
    pub(crate) fn new(chrome: Chrome, dashboard: Dashboard, shop: ShopAnalytics) -> Self {
        let totals = orders_projectors::views::admin_overview::METRICS
            .iter()
            .map(|metric| Count {
                label: label(metric),
                value: dashboard.totals.get(*metric).copied().unwrap_or_default(),
            })
            .collect();
        let metrics = orders_projectors::views::admin_overview::DAILY_METRICS;
        let days = dashboard
            .days
            .iter()
            .rev()
            .map(|day| DayLine {
                day: day.day.clone(),
                values: metrics
                    .iter()
                    .map(|metric| day.counts.get(*metric).copied().unwrap_or_default())
                    .collect(),
            })
            .collect();
        let mut lag = Vec::new();
        if let Some(summary) = &dashboard.lag {
            lag.push(LagLine {
                consumer: "relay".to_owned(),
                behind: summary.relay_behind.to_string(),
                note: match summary.oldest_transaction_secs {
                    Some(secs) => format!(
                        "stream at {}; a transaction open for {secs:.1} s holds it back",
                        summary.stream_last_sequence
                    ),
                    None => format!("stream at {}", summary.stream_last_sequence),
                },
            });
            for view in &summary.views {
                lag.push(LagLine {
                    consumer: format!("view {}", view.view),
                    behind: view.behind.to_string(),
                    note: format!("last batch {:.1} s ago", view.idle_secs),
                });
            }
        }
        Self {
            chrome,
            totals,
            day_columns: metrics.iter().map(|metric| label(metric)).collect(),
            days,
            lag,
            dead_letters: dashboard.dead_letters,
            shop,
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct UserLine {
    pub id: String,
    pub email: String,
    pub name: String,
    pub verified: bool,
    pub roles: Vec<String>,
    /// Grant or revoke, for each role.
    pub buttons: Vec<RoleButton>,
    pub deactivated: bool,
    pub registered: String,
}

#[derive(Debug, Clone)]
pub(crate) struct RoleButton {
    pub role: &'static str,
    pub action: &'static str,
    pub label: String,
    pub class: &'static str,
}

impl From<&UserRow> for UserLine {
    fn from(row: &UserRow) -> Self {
        Self {
            id: row.user_id.to_string(),
            email: row.email.clone(),
            name: row.display_name.clone().unwrap_or_default(),
            verified: row.email_verified,
            buttons: ["admin", "auditor"]
                .into_iter()
                .map(|role| {
                    let has = row.roles.iter().any(|held| held == role);
                    RoleButton {
                        role,
                        action: if has { "revoke" } else { "grant" },
                        label: if has {
                            format!("Revoke {role}")
                        } else {
                            format!("Make {role}")
                        },
                        class: if has { "danger" } else { "secondary" },
                    }
                })
                .collect(),
            roles: row.roles.clone(),
            deactivated: row.deactivated,
            registered: readable_time(row.registered_at),
        }
    }
}

#[derive(Template)]
#[template(path = "console/admin_users.html")]
pub(crate) struct UsersPage {
    pub chrome: Chrome,
    pub is_admin: bool,
    pub email: String,
    pub role: String,
    pub users: Vec<UserLine>,
    pub next_cursor: Option<String>,
}

#[derive(Debug, Clone)]
pub(crate) struct AdminOrderLine {
    pub order: OrderLine,
    pub owner: String,
}

impl From<&OrderRow> for AdminOrderLine {
    fn from(row: &OrderRow) -> Self {
        Self {
            order: OrderLine::from(row),
            owner: row.owner_id.to_string(),
        }
    }
}

#[derive(Template)]
#[template(path = "console/admin_orders.html")]
pub(crate) struct AdminOrdersPage {
    pub chrome: Chrome,
    pub status: String,
    pub owner: String,
    pub orders: Vec<AdminOrderLine>,
    pub next_cursor: Option<String>,
}

/// An event as a line of the viewer.
#[derive(Debug, Clone)]
pub(crate) struct EventLine {
    pub position: String,
    pub global_position: i64,
    pub when: String,
    pub recorded_at: String,
    pub event_type: String,
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub sequence: i64,
    pub actor: String,
    pub correlation_id: String,
    pub summary: String,
}

/// A long id shortened for a table cell (its first 8 characters after any
/// `kind:` prefix), the whole id being in the link's title and on the envelope.
pub(crate) fn short_id(id: &str) -> String {
    let (prefix, rest) = match id.split_once(':') {
        Some((prefix, rest)) => (format!("{prefix}:"), rest),
        None => (String::new(), id),
    };
    if rest.chars().count() <= 12 {
        return id.to_owned();
    }
    format!("{prefix}{}…", rest.chars().take(8).collect::<String>())
}

impl EventLine {
    pub(crate) fn short_aggregate(&self) -> String {
        format!("{}/{}", self.aggregate_type, short_id(&self.aggregate_id))
    }

    pub(crate) fn short_actor(&self) -> String {
        short_id(&self.actor)
    }

    pub(crate) fn short_correlation(&self) -> String {
        short_id(&self.correlation_id)
    }
}

#[derive(Template)]
#[template(path = "console/admin_events.html")]
pub(crate) struct EventsPage {
    pub chrome: Chrome,
    pub event_type: String,
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub actor: String,
    pub correlation_id: String,
    /// Some filter is set.
    pub filtered: bool,
    pub filter_error: Option<String>,
    pub events: Vec<EventLine>,
    /// The query string of the next (older) page, filters kept.
    pub older: Option<String>,
}

impl EventsPage {
    pub(crate) fn new(
        chrome: Chrome,
        params: &LogParams,
        log: Option<LogPage>,
        filter_error: Option<String>,
    ) -> Self {
        let text = |value: &Option<String>| value.clone().unwrap_or_default().trim().to_owned();
        let mut page = Self {
            chrome,
            event_type: text(&params.event_type),
            aggregate_type: text(&params.aggregate_type),
            aggregate_id: text(&params.aggregate_id),
            actor: text(&params.actor),
            correlation_id: text(&params.correlation_id),
            filtered: false,
            filter_error,
            events: Vec::new(),
            older: None,
        };
        page.filtered = [
            &page.event_type,
            &page.aggregate_type,
            &page.aggregate_id,
            &page.actor,
            &page.correlation_id,
        ]
        .iter()
        .any(|value| !value.is_empty());
        if let Some(log) = log {
            page.events = log.events.iter().map(event_line).collect();
            page.older = log.next_before.map(|before| {
                let mut query = url::form_urlencoded::Serializer::new(String::new());
                for (key, value) in [
                    ("type", &page.event_type),
                    ("aggregate_type", &page.aggregate_type),
                    ("aggregate_id", &page.aggregate_id),
                    ("actor", &page.actor),
                    ("correlation_id", &page.correlation_id),
                ] {
                    if !value.is_empty() {
                        query.append_pair(key, value);
                    }
                }
                query.append_pair("before", &before.to_string());
                query.finish()
            });
        }
        page
    }
}

#[derive(Template)]
#[template(path = "console/admin_event.html")]
pub(crate) struct EventPage {
    pub chrome: Chrome,
    pub event: EventLine,
    pub event_id: String,
    pub event_version: String,
    pub causation_id: String,
    pub request_id: String,
    pub payload: String,
}

impl EventPage {
    pub(crate) fn new(chrome: Chrome, entry: &AuditEntry) -> Self {
        Self {
            chrome,
            event: event_line(entry),
            event_id: entry.event_id.clone(),
            event_version: entry.event_version.clone(),
            causation_id: entry.causation_id.clone().unwrap_or_default(),
            request_id: entry.request_id.clone().unwrap_or_default(),
            payload: serde_json::to_string_pretty(&entry.payload).unwrap_or_default(),
        }
    }
}

/// An event of a trace, with how deep it sits under what caused it.
#[derive(Debug, Clone)]
pub(crate) struct TraceLine {
    pub depth: usize,
    /// The indentation, in `em`.
    pub indent: String,
    pub event: EventLine,
}

impl From<&CausalNode> for TraceLine {
    fn from(node: &CausalNode) -> Self {
        Self {
            depth: node.depth,
            indent: format!("{:.1}", node.depth.min(12) as f64 * 1.5),
            event: event_line(&node.entry),
        }
    }
}

#[derive(Template)]
#[template(path = "console/admin_trace.html")]
pub(crate) struct TracePage {
    pub chrome: Chrome,
    pub correlation_id: String,
    pub lines: Vec<TraceLine>,
    pub truncated: bool,
}

#[derive(Template)]
#[template(path = "console/admin_verify.html")]
pub(crate) struct VerifyPage {
    pub chrome: Chrome,
    pub verified: bool,
    pub heading: String,
    pub lines: Vec<String>,
}

impl VerifyPage {
    pub(crate) fn from_report(
        chrome: Chrome,
        report: &VerifyReport,
        took: std::time::Duration,
    ) -> Self {
        let mut lines = vec![
            format!(
                "{} events read in {:.1} s; {} relayed and checked against their chain links; {} not relayed yet (seals checked).",
                report.events,
                took.as_secs_f64(),
                report.chained,
                report.unrelayed
            ),
            match &report.checkpoint {
                Some(head) => format!(
                    "The chain ends in the relay's checkpoint at position {} ({}, digest {}).",
                    head.chain_position, head.event_id, head.digest
                ),
                None => "Nothing has been relayed yet: there is no checkpoint.".to_owned(),
            },
        ];
        let heading = match &report.failure {
            None => {
                "Verified: no stored event was altered, removed, inserted or reordered".to_owned()
            }
            Some(failure) => {
                lines.push(format!(
                    "At chain position {}{}: {}",
                    failure.position,
                    failure
                        .event
                        .as_ref()
                        .map(|event| format!(" ({event})"))
                        .unwrap_or_default(),
                    failure.explanation
                ));
                "NOT VERIFIED: the log was changed".to_owned()
            }
        };
        Self {
            chrome,
            verified: report.verified(),
            heading,
            lines,
        }
    }

    pub(crate) fn unavailable(chrome: Chrome, reason: String) -> Self {
        Self {
            chrome,
            verified: false,
            heading: "Verification is not available here".to_owned(),
            lines: vec![reason],
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct LetterLine {
    pub sequence: u64,
    pub dead_at: String,
    pub worker: String,
    pub event_type: String,
    pub event_id: String,
    pub deliveries: String,
    pub reason: String,
    pub correlation_id: String,
}

#[derive(Template)]
#[template(path = "console/admin_dead_letters.html")]
pub(crate) struct DeadLettersPage {
    pub chrome: Chrome,
    pub is_admin: bool,
    pub letters: Vec<LetterLine>,
    pub unavailable: Option<String>,
    pub retried: Option<u64>,
}

impl DeadLettersPage {
    pub(crate) fn new(
        chrome: Chrome,
        is_admin: bool,
        letters: &[DeadLetter],
        unavailable: Option<String>,
        retried: Option<u64>,
    ) -> Self {
        Self {
            chrome,
            is_admin,
            letters: letters
                .iter()
                .map(|letter| LetterLine {
                    sequence: letter.stream_sequence,
                    dead_at: readable_time(letter.dead_at),
                    worker: letter.worker.clone(),
                    event_type: letter.event_type.clone(),
                    event_id: letter.event_id.clone(),
                    deliveries: letter
                        .deliveries
                        .map_or_else(|| "–".to_owned(), |count| count.to_string()),
                    reason: letter.reason.clone(),
                    correlation_id: letter.correlation_id.clone().unwrap_or_default(),
                })
                .collect(),
            unavailable,
            retried,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::short_id;

    #[test]
    fn long_ids_are_cut_after_their_kind() {
        assert_eq!(
            short_id("user:01a24290-1174-7018-a7fa-c3747bcc61d9"),
            "user:01a24290…"
        );
        assert_eq!(
            short_id("01a24290-307b-729a-96c4-84a102f94a9c"),
            "01a24290…"
        );
        assert_eq!(short_id("system:scraper"), "system:scraper");
        assert_eq!(short_id(""), "");
    }
}
