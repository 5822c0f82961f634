//! `symbolon users list | show | suspend | activate | revoke | delete` and
//! `symbolon flows list`: the management operations for hosts without a browser. They
//! act through [`Management`], with the rules and audit events of the management API
//! (docs/protocol.md §11); the actor is `cli:<unix user>`, `auth` is `cli`.
//!
//! Tables fit 100 columns, dates are UTC to the minute; `--json` prints what the
//! management API answers.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use clap::{Args, Subcommand};

use super::audit::Audit;
use super::enrollment_cache::EnrollmentCache;
use super::management::{
    CredentialAction, CredentialView, FlowStatus, FlowView, MAX_LIMIT, Management, OperatorCall, UserView,
};
use crate::store::{
    DatabaseConfig, EnrollmentStatus, MemorySessionStore, SessionStore, SessionStoreConfig, open_durable,
    open_session_store,
};

#[derive(Debug, Subcommand)]
pub enum UsersCommand {
    /// List users (token ids) with their devices' states, in token id order.
    List(UsersListArgs),
    /// Show one user: every device with its state, dates and claim names (never values).
    Show(UserArgs),
    /// Suspend the user's device: its sign-ins get `device_inactive` until activated.
    Suspend(ActionArgs),
    /// Activate the user's suspended device again.
    Activate(ActionArgs),
    /// Revoke the user's device (final: it can never be activated again).
    Revoke(ActionArgs),
    /// Delete the user's enrollment data (every device, sealed claims, push token).
    Delete(DeleteArgs),
}

#[derive(Debug, Subcommand)]
pub enum FlowsCommand {
    /// List the sign-in flows the session store still keeps, oldest first (needs
    /// Redis: with `session_store.url = "memory://"` they live in the server's memory).
    List(FlowsListArgs),
}

#[derive(Debug, Args)]
pub struct UsersListArgs {
    /// Users per page, 1..=200.
    #[arg(long, default_value_t = 50)]
    pub limit: u32,
    /// Continue after the page that printed this cursor.
    #[arg(long)]
    pub cursor: Option<String>,
    /// Print JSON (`{"users": [...], "next_cursor": ...}`, as the management API).
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct UserArgs {
    /// The token id.
    pub token_id: String,
    /// Print JSON (as the management API).
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ActionArgs {
    /// The token id.
    pub token_id: String,
    /// The device to act on, when the user has more than one.
    #[arg(long, value_name = "DEVICE_ID")]
    pub device: Option<String>,
    /// Why (kept in the audit event; at most 200 characters).
    #[arg(long)]
    pub reason: Option<String>,
}

#[derive(Debug, Args)]
pub struct DeleteArgs {
    /// The token id.
    pub token_id: String,
    /// Why (kept in the audit event; at most 200 characters).
    #[arg(long)]
    pub reason: Option<String>,
}

#[derive(Debug, Args)]
pub struct FlowsListArgs {
    /// Only flows in this state: pending, approved, rejected, locked or expired.
    #[arg(long)]
    pub status: Option<String>,
    /// Only flows created at or after: RFC 3339, unix seconds, or a duration before
    /// now (`1h`, `2days`).
    #[arg(long)]
    pub since: Option<String>,
    /// Flows per page, 1..=200.
    #[arg(long, default_value_t = 50)]
    pub limit: u32,
    /// Continue after the page that printed this cursor.
    #[arg(long)]
    pub cursor: Option<String>,
    /// Print JSON (`{"flows": [...], "next_cursor": ...}`, as the management API).
    #[arg(long)]
    pub json: bool,
}

/// What the commands open: the durable store, and the session store for `flows`.
pub struct Stores<'a> {
    pub state_dir: &'a Path,
    pub database: &'a DatabaseConfig,
    pub session_store: &'a SessionStoreConfig,
}

/// `cli:<unix user>` for the user running the command (`cli:uid-N` without a name).
pub fn cli_actor() -> String {
    let uid = nix::unistd::getuid();
    match nix::unistd::User::from_uid(uid) {
        Ok(Some(user)) => format!("cli:{}", user.name),
        _ => format!("cli:uid-{uid}"),
    }
}

async fn open(stores: &Stores<'_>, with_sessions: bool) -> anyhow::Result<Management> {
    let store = open_durable(stores.database, stores.state_dir).await.context("durable store")?;
    let mut change_file = None;
    let sessions: Arc<dyn SessionStore> = if stores.session_store.url != "memory://" {
        // `users` commands announce their changes through it, so every node's
        // enrollment cache forgets the enrollments they change at once.
        open_session_store(stores.session_store, 1).context("session store")?
    } else if with_sessions {
        anyhow::bail!(
            "session_store.url is \"memory://\": the flows live in the server's memory, where this \
             command cannot read them; list them with GET /api/management/v1/flows"
        );
    } else {
        // A running single node shares no session store with this process: it hears
        // of changes through the change file in the state directory.
        change_file = Some(stores.state_dir.join(super::enrollment_cache::CHANGE_FILE));
        Arc::new(MemorySessionStore::new())
    };
    let cache = Arc::new(EnrollmentCache::announcer(change_file));
    Ok(Management::new(store.clone(), sessions, Audit::appender(store), cache))
}

fn check_limit(limit: u32) -> anyhow::Result<u32> {
    anyhow::ensure!((1..=MAX_LIMIT).contains(&limit), "--limit must be 1..={MAX_LIMIT}");
    Ok(limit)
}

/// Runs a `users` command. `Ok(false)` when the command was refused (exit 1).
pub async fn run_users(stores: &Stores<'_>, cmd: UsersCommand) -> anyhow::Result<bool> {
    let management = open(stores, false).await?;
    let actor = cli_actor();
    let now = crate::ids::now_unix();
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    match cmd {
        UsersCommand::List(args) => {
            let by = OperatorCall { actor: &actor, auth: "cli", reason: None };
            let limit = check_limit(args.limit)?;
            let page = management.users(args.cursor.as_deref(), limit).await;
            let page = management.audited(&by, "users.list", "users", page).await?;
            if args.json {
                let body = serde_json::json!({"users": page.items, "next_cursor": page.next_cursor});
                writeln!(out, "{}", serde_json::to_string_pretty(&body)?)?;
            } else {
                write_users(&page.items, page.next_cursor.as_deref(), &mut out)?;
            }
            Ok(true)
        }
        UsersCommand::Show(args) => {
            let by = OperatorCall { actor: &actor, auth: "cli", reason: None };
            let user = management.user(&args.token_id).await;
            let user = management.audited(&by, "users.get", &args.token_id, user).await?;
            if args.json {
                writeln!(out, "{}", serde_json::to_string_pretty(&user)?)?;
            } else {
                write_user(&user, &mut out)?;
            }
            Ok(true)
        }
        UsersCommand::Suspend(args) => act(&management, &actor, args, CredentialAction::Suspend, now, &mut out).await,
        UsersCommand::Activate(args) => act(&management, &actor, args, CredentialAction::Activate, now, &mut out).await,
        UsersCommand::Revoke(args) => act(&management, &actor, args, CredentialAction::Revoke, now, &mut out).await,
        UsersCommand::Delete(args) => {
            let by = OperatorCall { actor: &actor, auth: "cli", reason: args.reason.as_deref() };
            match management.delete_user(&args.token_id, &by).await {
                Ok(devices) => {
                    writeln!(out, "deleted {}: {} device(s) removed", args.token_id, devices.len())?;
                    Ok(true)
                }
                Err(e) if e.code == crate::error::ErrorCode::NotFound => {
                    writeln!(out, "{} has no enrollment: nothing deleted", args.token_id)?;
                    Ok(true)
                }
                Err(e) => Err(e.into()),
            }
        }
    }
}

/// Suspends, activates or revokes one device of a user.
async fn act(
    management: &Management,
    actor: &str,
    args: ActionArgs,
    action: CredentialAction,
    now: i64,
    out: &mut dyn Write,
) -> anyhow::Result<bool> {
    let user = management.user(&args.token_id).await?;
    let device = match (&args.device, user.devices.as_slice()) {
        (Some(d), devices) if devices.iter().any(|x| &x.device_id == d) => d.clone(),
        (Some(d), _) => anyhow::bail!("{d} is not a device of {}", args.token_id),
        (None, [only]) => only.device_id.clone(),
        (None, devices) => anyhow::bail!(
            "{} has {} devices ({}): name one with --device",
            args.token_id,
            devices.len(),
            devices.iter().map(|d| d.device_id.as_str()).collect::<Vec<_>>().join(", ")
        ),
    };
    let by = OperatorCall { actor, auth: "cli", reason: args.reason.as_deref() };
    let outcome = management.change_credential(&device, action, &by, now).await?;
    let state = status_word(outcome.credential.status);
    if outcome.changed {
        writeln!(out, "device {device} of {}: {state}", args.token_id)?;
    } else {
        writeln!(out, "device {device} of {} is {state} already: nothing changed", args.token_id)?;
    }
    Ok(true)
}

/// Runs a `flows` command.
pub async fn run_flows(stores: &Stores<'_>, cmd: FlowsCommand) -> anyhow::Result<bool> {
    let FlowsCommand::List(args) = cmd;
    let now = crate::ids::now_unix();
    let status = match args.status.as_deref() {
        None => None,
        Some(s) => {
            Some(FlowStatus::parse(s).context("--status must be pending, approved, rejected, locked or expired")?)
        }
    };
    let since = match args.since.as_deref() {
        None => 0,
        Some(s) => super::audit::cli::parse_since(s, now)?,
    };
    let limit = check_limit(args.limit)?;
    let management = open(stores, true).await?;
    let actor = cli_actor();
    let by = OperatorCall { actor: &actor, auth: "cli", reason: None };
    let page = management.flows(status, since, args.cursor.as_deref(), limit, now).await;
    let page = management.audited(&by, "flows.list", "flows", page).await?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    if args.json {
        let body = serde_json::json!({"flows": page.items, "next_cursor": page.next_cursor});
        writeln!(out, "{}", serde_json::to_string_pretty(&body)?)?;
    } else {
        write_flows(&page.items, page.next_cursor.as_deref(), now, &mut out)?;
    }
    Ok(true)
}

fn status_word(s: EnrollmentStatus) -> &'static str {
    match s {
        EnrollmentStatus::Active => "active",
        EnrollmentStatus::Suspended => "suspended",
        EnrollmentStatus::Revoked => "revoked",
    }
}

/// `2026-12-06 09:40` (UTC).
fn human_time(unix: i64) -> String {
    let fmt = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]");
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| t.format(&fmt).ok())
        .unwrap_or_else(|| unix.to_string())
}

/// `s` cut to `width` characters, the last one an ellipsis when cut.
fn fit(s: &str, width: usize) -> String {
    if s.chars().count() <= width {
        return s.to_string();
    }
    let mut cut: String = s.chars().take(width.saturating_sub(1)).collect();
    cut.push('\u{2026}');
    cut
}

/// The users table: at most 100 columns (token ids longer than 32 characters are cut;
/// `--json` has them whole).
fn write_users(users: &[UserView], next: Option<&str>, out: &mut dyn Write) -> std::io::Result<()> {
    if users.is_empty() {
        return writeln!(out, "no users");
    }
    let width = users.iter().map(|u| u.token_id.chars().count()).max().unwrap_or(8).clamp(8, 32);
    writeln!(out, "{:<width$} {:<8} {:<24} {:<16} CHANGED", "TOKEN ID", "ENROLLED", "DEVICES", "FIRST")?;
    for u in users {
        let count = |s| u.devices.iter().filter(|d| d.status == s).count();
        let mut parts = Vec::new();
        for (s, word) in [
            (EnrollmentStatus::Active, "active"),
            (EnrollmentStatus::Suspended, "susp"),
            (EnrollmentStatus::Revoked, "rev"),
        ] {
            if count(s) > 0 {
                parts.push(format!("{} {word}", count(s)));
            }
        }
        writeln!(
            out,
            "{:<width$} {:<8} {:<24} {:<16} {}",
            fit(&u.token_id, width),
            if u.enrolled { "yes" } else { "no" },
            fit(&parts.join(", "), 24),
            human_time(u.created_at),
            human_time(u.updated_at),
        )?;
    }
    writeln!(out, "(dates UTC)")?;
    if let Some(c) = next {
        writeln!(out, "more: symbolon users list --cursor {c}")?;
    }
    Ok(())
}

/// One user and a block per device (claim names, never values).
fn write_user(user: &UserView, out: &mut dyn Write) -> std::io::Result<()> {
    let active = user.devices.iter().filter(|d| d.status == EnrollmentStatus::Active).count();
    writeln!(out, "user {}", user.token_id)?;
    writeln!(
        out,
        "{}: {} of {} device(s) active",
        if user.enrolled { "enrolled" } else { "not enrolled" },
        active,
        user.devices.len()
    )?;
    writeln!(
        out,
        "first enrolled {} UTC, last change {} UTC",
        human_time(user.created_at),
        human_time(user.updated_at)
    )?;
    for d in &user.devices {
        write_device(d, out)?;
    }
    Ok(())
}

fn write_device(d: &CredentialView, out: &mut dyn Write) -> std::io::Result<()> {
    writeln!(out)?;
    writeln!(out, "device {}  {}", d.device_id, status_word(d.status))?;
    writeln!(out, "  name      {}", fit(&d.device_name, 88))?;
    let push = if d.push_registered { "registered" } else { "none" };
    writeln!(out, "  push      {} ({push})", d.push_provider)?;
    writeln!(out, "  enrolled  {} UTC, changed {} UTC", human_time(d.created_at), human_time(d.updated_at))?;
    if let Some(reason) = &d.status_reason {
        writeln!(out, "  reason    {}", fit(reason, 88))?;
    }
    let mut line = String::new();
    for name in &d.claim_names {
        if !line.is_empty() && line.len() + name.len() + 2 > 86 {
            writeln!(out, "  claims    {line}")?;
            line.clear();
        }
        if !line.is_empty() {
            line.push_str(", ");
        }
        line.push_str(name);
    }
    writeln!(out, "  claims    {}", if line.is_empty() { "-" } else { &line })
}

/// The flows table: at most 100 columns.
fn write_flows(flows: &[FlowView], next: Option<&str>, now: i64, out: &mut dyn Write) -> std::io::Result<()> {
    if flows.is_empty() {
        return writeln!(out, "no flows");
    }
    writeln!(
        out,
        "{:<43} {:<14} {:<8} {:<16} {:>6} {:>5}",
        "FLOW ID", "SERVICE", "STATUS", "CREATED", "TOOK", "FAILS"
    )?;
    for f in flows {
        let took = match f.ended_at {
            Some(end) => format!("{}s", end - f.created_at),
            None if f.status == FlowStatus::Pending => format!("{}s..", now - f.created_at),
            None => "-".into(),
        };
        let status = serde_json::to_value(f.status).ok().and_then(|v| v.as_str().map(str::to_owned));
        writeln!(
            out,
            "{:<43} {:<14} {:<8} {:<16} {:>6} {:>5}",
            fit(&f.id, 43),
            fit(&f.service_id, 14),
            status.unwrap_or_default(),
            human_time(f.created_at),
            fit(&took, 6),
            f.failures,
        )?;
    }
    writeln!(out, "(dates UTC)")?;
    if let Some(c) = next {
        writeln!(out, "more: symbolon flows list --cursor {c}")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::management::FlowStatus;

    fn device(id: &str, status: EnrollmentStatus) -> CredentialView {
        CredentialView {
            device_id: id.into(),
            token_id: "T".repeat(60),
            device_name: "a phone with a very long name ".repeat(5),
            status,
            status_reason: Some("suspended by an operator".into()),
            push_provider: "fcm".into(),
            push_registered: true,
            claim_names: (0..30).map(|i| format!("claim_number_{i}")).collect(),
            created_at: 1_796_000_000,
            updated_at: 1_796_003_600,
            last_used_at: None,
        }
    }

    fn widest(text: &str) -> usize {
        text.lines().map(|l| l.chars().count()).max().unwrap_or(0)
    }

    #[test]
    fn tables_fit_100_columns_with_dates_people_read() {
        let user = UserView {
            token_id: "T".repeat(60),
            enrolled: true,
            devices: vec![
                device(&"a".repeat(43), EnrollmentStatus::Active),
                device(&"b".repeat(43), EnrollmentStatus::Suspended),
                device(&"c".repeat(43), EnrollmentStatus::Revoked),
            ],
            created_at: 1_796_000_000,
            updated_at: 1_796_003_600,
        };
        let mut out = Vec::new();
        write_users(std::slice::from_ref(&user), Some(&"x".repeat(40)), &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(widest(&text) <= 100, "{text}");
        assert!(text.contains("2026-11-30 00:53") && text.contains("1 active, 1 susp, 1 rev"), "{text}");

        let mut out = Vec::new();
        write_user(&user, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(widest(&text) <= 100, "{text}");
        assert!(text.contains("claim_number_29") && text.contains("1 of 3 device(s) active"), "{text}");

        let flow = FlowView {
            id: "f".repeat(43),
            service_id: "a-relying-party-with-a-long-id".into(),
            status: FlowStatus::Approved,
            scopes: vec!["name".into()],
            failures: 2,
            created_at: 1_796_000_000,
            expires_at: 1_796_000_120,
            ended_at: Some(1_796_000_012),
        };
        let mut out = Vec::new();
        write_flows(&[flow], None, 1_796_000_100, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(widest(&text) <= 100, "{text}");
        assert!(text.contains("approved") && text.contains("12s") && text.contains("2026-11-30 00:53"), "{text}");
    }

    #[test]
    fn fit_cuts_with_an_ellipsis() {
        assert_eq!(fit("abcdef", 6), "abcdef");
        assert_eq!(fit("abcdefg", 6), "abcde\u{2026}");
    }
}
