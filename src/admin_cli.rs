//! `orders admin grant|revoke <email> <role>`: an operator's bootstrap of roles,
//! recorded with the actor `cli:<os-user>@<host>`.

use anyhow::Context as _;
use clap::Subcommand;
use orders_application::accounts::{self, RoleChange};
use orders_store::event_store::{CommandMetadata, EventStore};

use orders::cli_args::{AuditKeyArgs, DatabaseArgs};
use orders_domain::email::EmailAddress;
use orders_domain::user::Role;

#[derive(Debug, Subcommand)]
pub(crate) enum AdminCommand {
    /// Give a user a role (`admin` or `auditor`).
    Grant {
        email: String,
        role: String,
        #[command(flatten)]
        database: DatabaseArgs,
        #[command(flatten)]
        audit_key: AuditKeyArgs,
    },
    /// Take a role away; it takes effect on the user's next request.
    Revoke {
        email: String,
        role: String,
        #[command(flatten)]
        database: DatabaseArgs,
        #[command(flatten)]
        audit_key: AuditKeyArgs,
    },
}

/// `cli:<os-user>@<host>`: who ran the command, as the events record it.
pub(crate) fn operator_actor() -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "unknown".to_owned());
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_owned())
        .unwrap_or_else(|_| "unknown-host".to_owned());
    format!("cli:{user}@{host}")
}

pub(crate) async fn run(command: AdminCommand) -> anyhow::Result<()> {
    let (email, role, database, audit_key, grant) = match command {
        AdminCommand::Grant {
            email,
            role,
            database,
            audit_key,
        } => (email, role, database, audit_key, true),
        AdminCommand::Revoke {
            email,
            role,
            database,
            audit_key,
        } => (email, role, database, audit_key, false),
    };
    let role: Role = role.parse()?;
    let email =
        EmailAddress::parse(&email).map_err(|error| anyhow::anyhow!("{email:?}: {error}"))?;
    // The database first, then the key: one line for the first thing missing.
    database.url()?;
    let audit_key = audit_key.key()?;
    let pool = database.connect(2).await?;
    orders_store::database::migrate(&pool).await?;
    let user_id = orders_store::user_lookup::user_by_email(&pool, &email.normalized())
        .await
        .context("looking the user up")?
        .with_context(|| format!("no user registered as {email}"))?;
    let metadata = CommandMetadata::new_job(operator_actor());
    let change = if grant {
        RoleChange::Grant(role)
    } else {
        RoleChange::Revoke(role)
    };
    let events = EventStore::new(pool.clone(), audit_key);
    let receipt = accounts::change_role(&events, user_id, change, &metadata)
        .await
        .map_err(|error| anyhow::anyhow!("{error}"))?;
    let (verb, already) = if grant {
        ("granted", "already has")
    } else {
        ("revoked", "does not have")
    };
    if receipt.events_stored == 0 {
        println!("{email} {already} the role {role}: nothing changed");
    } else {
        println!(
            "{verb} {role} for {email} (user {user_id}) as {}",
            metadata.actor
        );
    }
    Ok(())
}
