//! `orders audit show|trace|actor|verify`: the audit trail for operators and
//! auditors, as a readable table (or a causal tree for a trace), or JSON for
//! scripts; and the proof that it was not altered.

use chrono::{DateTime, Utc};
use clap::{Args, Subcommand};
use orders_relay::audit_chain;
use orders_store::audit::{self, AuditEntry, AuditFilter, AuditPage, AuditSubject};

use orders::cli_args::{AuditKeyArgs, DatabaseArgs, NatsArgs};

#[derive(Debug, Subcommand)]
pub(crate) enum AuditCommand {
    /// The complete history of one aggregate (`user`, `order` or `price_check`).
    Show {
        aggregate_type: String,
        id: String,
        #[command(flatten)]
        options: AuditOptions,
    },
    /// Everything one request or scheduled job caused, across aggregates and
    /// workers, as a causal tree.
    Trace {
        correlation_id: String,
        #[command(flatten)]
        options: AuditOptions,
    },
    /// What one actor did (`user:<id>`, `system:scraper`, `cli:<user>@<host>`, ...).
    Actor {
        actor: String,
        #[command(flatten)]
        options: AuditOptions,
    },
    /// Proves that no stored event was altered, removed, inserted or reordered:
    /// recomputes every seal and the hash chain from PostgreSQL and compares them
    /// with the links the relay recorded and the checkpoint in NATS. Exit code 0
    /// when the log verifies, 1 at the first place where it does not.
    Verify(VerifyArgs),
}

#[derive(Debug, Args)]
pub(crate) struct VerifyArgs {
    /// One JSON object for scripts instead of a sentence.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    database: DatabaseArgs,
    /// (Where the chain's head is checkpointed.)
    #[command(flatten)]
    nats: NatsArgs,
    /// (The key the events were sealed under.)
    #[command(flatten)]
    audit_key: AuditKeyArgs,
}

#[derive(Debug, Args)]
pub(crate) struct AuditOptions {
    /// Only events recorded at or after this time (RFC 3339, e.g. 2026-11-25T00:00:00Z).
    #[arg(long)]
    since: Option<String>,
    /// Only events recorded before this time (RFC 3339).
    #[arg(long)]
    until: Option<String>,
    /// Only events of this type (repeat for several), e.g. --type PriceChanged.
    #[arg(long = "type")]
    event_types: Vec<String>,
    /// At most this many events (1 to 10000).
    #[arg(long, default_value_t = 100)]
    limit: i64,
    /// The page after this global position (printed at the end of the previous one).
    #[arg(long)]
    after: Option<i64>,
    /// One JSON object for scripts instead of a table.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    database: DatabaseArgs,
}

fn time(option: &str, text: &Option<String>) -> anyhow::Result<Option<DateTime<Utc>>> {
    text.as_deref()
        .map(|text| {
            DateTime::parse_from_rfc3339(text)
                .map(|time| time.with_timezone(&Utc))
                .map_err(|_| {
                    anyhow::anyhow!(
                        "--{option} {text:?} is not an RFC 3339 time such as 2026-11-25T00:00:00Z"
                    )
                })
        })
        .transpose()
}

impl AuditOptions {
    fn filter(&self) -> anyhow::Result<AuditFilter> {
        if !(1..=audit::MAX_PAGE).contains(&self.limit) {
            anyhow::bail!("--limit must be between 1 and {}", audit::MAX_PAGE);
        }
        Ok(AuditFilter {
            since: time("since", &self.since)?,
            until: time("until", &self.until)?,
            event_types: self.event_types.clone(),
            after: self.after,
            limit: self.limit,
        })
    }

    async fn pool(&self) -> anyhow::Result<sqlx::PgPool> {
        self.database.connect(2).await
    }
}

/// Whether the log verified (`orders audit verify`); `true` for the other commands.
pub(crate) async fn run(command: AuditCommand) -> anyhow::Result<bool> {
    match command {
        AuditCommand::Verify(args) => verify(args).await,
        AuditCommand::Show {
            aggregate_type,
            id,
            options,
        } => {
            if !["user", "order", "price_check"].contains(&aggregate_type.as_str()) {
                anyhow::bail!(
                    "unknown aggregate type {aggregate_type:?}: expected user, order or price_check"
                );
            }
            let filter = options.filter()?;
            let pool = options.pool().await?;
            let subject = AuditSubject::Aggregate {
                aggregate_type: &aggregate_type,
                aggregate_id: &id,
            };
            let page = audit::page(&pool, &subject, &filter).await?;
            if page.entries.is_empty() && filter.after.is_none() && options.event_types.is_empty() {
                anyhow::bail!("no {aggregate_type} {id} in the event store");
            }
            print_page(&page, options.json, false)?;
            Ok(true)
        }
        AuditCommand::Trace {
            correlation_id,
            options,
        } => {
            let filter = options.filter()?;
            let pool = options.pool().await?;
            let page =
                audit::page(&pool, &AuditSubject::Correlation(&correlation_id), &filter).await?;
            let tree = audit::causal_tree(&page.entries);
            if options.json {
                println!(
                    "{}",
                    serde_json::json!({"correlation_id": correlation_id, "events": tree, "next_after": page.next_after})
                );
                return Ok(true);
            }
            if tree.is_empty() {
                println!("no events with correlation id {correlation_id}");
                return Ok(true);
            }
            println!("{}", header(true));
            for node in &tree {
                let indent = "  ".repeat(node.depth);
                let marker = if node.depth == 0 { "" } else { "└ " };
                println!("{}", line(&node.entry, &format!("{indent}{marker}"), true));
            }
            print_more(page.next_after);
            Ok(true)
        }
        AuditCommand::Actor { actor, options } => {
            let filter = options.filter()?;
            let pool = options.pool().await?;
            let page = audit::page(&pool, &AuditSubject::Actor(&actor), &filter).await?;
            print_page(&page, options.json, true)?;
            Ok(true)
        }
    }
}

fn events(count: u64) -> String {
    match count {
        1 => "1 event".to_owned(),
        _ => format!("{count} events"),
    }
}

async fn verify(args: VerifyArgs) -> anyhow::Result<bool> {
    let key = args.audit_key.key()?;
    args.database.url()?;
    args.nats.url()?;
    let pool = args.database.connect(4).await?;
    let heads = audit_chain::head_store(&args.nats.jetstream().await?).await?;
    let started = std::time::Instant::now();
    let report = audit_chain::verify(&pool, &heads, &key).await?;
    let elapsed = started.elapsed();
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
        return Ok(report.verified());
    }
    match &report.failure {
        None => {
            let checkpoint = match &report.checkpoint {
                Some(head) => format!(
                    "ends in the checkpoint at position {} ({}, digest {})",
                    head.chain_position, head.event_id, head.digest
                ),
                None => "is empty (nothing relayed yet)".to_owned(),
            };
            println!(
                "verified {} in {:.1} s: every seal holds; the chain of {} relayed matches its links and {checkpoint}; {} not relayed yet",
                events(report.events),
                elapsed.as_secs_f64(),
                events(report.chained),
                report.unrelayed,
            );
        }
        Some(failure) => {
            let event = match (&failure.event, failure.global_position) {
                (Some(event), Some(global_position)) => {
                    format!(" ({event}, global position {global_position})")
                }
                _ => String::new(),
            };
            let reason = serde_json::to_value(&failure.tampering)?
                .get("reason")
                .and_then(serde_json::Value::as_str)
                .unwrap_or_default()
                .to_owned();
            println!(
                "NOT VERIFIED at position {}{event}: {reason}: {}",
                failure.position, failure.explanation
            );
        }
    }
    Ok(report.verified())
}

fn print_page(page: &AuditPage, json: bool, with_aggregate: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string(page)?);
        return Ok(());
    }
    if page.entries.is_empty() {
        println!("no events");
        return Ok(());
    }
    println!("{}", header(with_aggregate));
    for entry in &page.entries {
        println!("{}", line(entry, "", with_aggregate));
    }
    print_more(page.next_after);
    Ok(())
}

fn print_more(next_after: Option<i64>) {
    if let Some(after) = next_after {
        println!("(more: --after {after})");
    }
}

fn header(with_aggregate: bool) -> String {
    let aggregate = if with_aggregate {
        format!("{:<52} ", "EVENT ID")
    } else {
        String::new()
    };
    format!(
        "{:<16} {:<20} {aggregate}{:<28} {:<7} {:<48} CORRELATION",
        "POSITION", "RECORDED AT", "EVENT", "VERSION", "ACTOR"
    )
}

fn line(entry: &AuditEntry, prefix: &str, with_aggregate: bool) -> String {
    let aggregate = if with_aggregate {
        format!("{:<52} ", entry.event_id)
    } else {
        String::new()
    };
    format!(
        "{:<16} {:<20} {aggregate}{:<28} {:<7} {:<48} {}",
        entry.position,
        entry.recorded_at.format("%Y-%m-%dT%H:%M:%SZ"),
        format!("{prefix}{}", entry.event_type),
        entry.event_version,
        entry.actor.as_deref().unwrap_or("-"),
        entry.correlation_id.as_deref().unwrap_or("-"),
    )
}
