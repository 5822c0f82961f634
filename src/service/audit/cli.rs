//! `symbolon audit verify | export`.

use std::path::Path;

use anyhow::Context;
use clap::{Args, Subcommand};

use super::Verification;
use crate::keyring::KeyRing;
use crate::keys::{HsmConfig, open_pool};
use crate::store::{DatabaseConfig, open_durable};

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Walk the hash chain and the signed checkpoints; print OK, or the first broken
    /// link and exit 1.
    Verify,
    /// Print audit events as JSON lines (oldest first).
    Export(ExportArgs),
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Only events at or after this time: RFC 3339 (`2026-01-31T00:00:00Z`), unix
    /// seconds, or a duration before now (`24h`, `7days`). Default: everything.
    #[arg(long)]
    pub since: Option<String>,
}

/// Runs an audit command; `Ok(false)` when `verify` found a broken link.
/// The store is `database` (its default file in `state_dir`); `verify` opens the
/// token of `hsm`, accepting the imported keys `imported` (`keys.imported`).
pub async fn run(
    state_dir: &Path,
    database: &DatabaseConfig,
    hsm: &HsmConfig,
    imported: &[String],
    cmd: AuditCommand,
) -> anyhow::Result<bool> {
    std::fs::create_dir_all(state_dir)
        .with_context(|| format!("cannot create state directory {}", state_dir.display()))?;
    let store = open_durable(database, state_dir).await?;
    match cmd {
        AuditCommand::Export(args) => {
            let now = crate::ids::now_unix();
            let since = match args.since.as_deref() {
                None => i64::MIN,
                Some(s) => parse_since(s, now)?,
            };
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::new(stdout.lock());
            super::export(store.as_ref(), since, &mut out).await?;
            std::io::Write::flush(&mut out)?;
            Ok(true)
        }
        AuditCommand::Verify => {
            let mut hsm = hsm.clone();
            hsm.workers = 1;
            let pool = tokio::task::spawn_blocking(move || open_pool(&hsm)).await??;
            let result = async {
                let ring =
                    KeyRing::open_with(pool.clone(), store.clone(), crate::ids::now_unix(), "symbolon", imported)
                        .await?;
                anyhow::Ok(super::verify(store.as_ref(), &ring).await?)
            }
            .await;
            // SoftHSM2 must not see open sessions in its exit handlers.
            tokio::task::spawn_blocking(move || pool.shutdown()).await?;
            Ok(match result? {
                Verification::Ok { events, checkpoints, head, unsigned } => {
                    let head = head.map_or_else(|| "empty".to_string(), |(seq, hash)| format!("seq {seq} hash {hash}"));
                    println!(
                        "OK: {events} events, {checkpoints} signed checkpoints, head {head}, {unsigned} events after the last checkpoint"
                    );
                    true
                }
                Verification::Broken { seq, reason } => {
                    println!("BROKEN at seq {seq}: {reason}");
                    false
                }
            })
        }
    }
}

fn parse_since(s: &str, now: i64) -> anyhow::Result<i64> {
    if let Ok(unix) = s.parse::<i64>() {
        return Ok(unix);
    }
    if let Ok(t) = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339) {
        return Ok(t.unix_timestamp());
    }
    let ago = humantime::parse_duration(s)
        .with_context(|| format!("--since {s:?}: expected RFC 3339, unix seconds or a duration like 24h"))?;
    Ok(now - i64::try_from(ago.as_secs()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    #[test]
    fn since_forms() {
        assert_eq!(super::parse_since("100", 0).unwrap(), 100);
        assert_eq!(super::parse_since("1970-01-01T00:01:00Z", 0).unwrap(), 60);
        assert_eq!(super::parse_since("1h", 7200).unwrap(), 3600);
        assert!(super::parse_since("yesterday-ish", 0).is_err());
    }
}
