//! `symbolon audit verify | export | archive | maintain`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use clap::{Args, Subcommand};

use super::archive::{self, YearMonth};
use super::{AuditError, Verification};
use crate::keyring::KeyRing;
use crate::keys::{HsmConfig, open_pool};
use crate::service::config::AuditConfig;
use crate::store::{DatabaseConfig, DurableStore, open_durable};

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Walk the hash chain and the signed checkpoints; print OK, or the first broken
    /// link and exit 1.
    Verify(VerifyArgs),
    /// Print audit events as JSON lines (oldest first).
    Export(ExportArgs),
    /// Write each month not yet archived, through YYYY-MM, as gzip NDJSON with a
    /// manifest signed by the HSM audit key; record the manifests in the database.
    Archive(ArchiveArgs),
    /// PostgreSQL: keep the monthly partitions (the current and the next three; move
    /// records out of the default partition), as the owner role. With --archive, then
    /// retention (audit.retention_months): drop months whose recorded manifest verifies
    /// against a re-read of their archive; exit 1 when a due month is refused.
    Maintain(MaintainArgs),
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Also check every archive in DIR: manifest signatures, files, and the chain from
    /// seq 1 through the archives into the live table.
    #[arg(long, value_name = "DIR")]
    pub archive: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ArchiveArgs {
    /// The last month to archive (UTC), YYYY-MM; it must have ended.
    #[arg(long, value_name = "YYYY-MM")]
    pub through: String,
    /// Directory of the archives (created when missing; keep it, e.g. on WORM storage).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
}

#[derive(Debug, Args)]
pub struct MaintainArgs {
    /// Directory of the archives written by `audit archive`: apply retention too.
    #[arg(long, value_name = "DIR")]
    pub archive: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Only events at or after this time: RFC 3339 (`2026-01-31T00:00:00Z`), unix
    /// seconds, or a duration before now (`24h`, `7days`). Default: everything.
    #[arg(long)]
    pub since: Option<String>,
}

/// Runs an audit command; `Ok(false)` when `verify` found a broken link or `maintain`
/// refused a due month. The store is `database` (its default file in `state_dir`);
/// `verify`, `archive` and `maintain` open the token of `hsm`, accepting the imported
/// keys `imported` (`keys.imported`).
pub async fn run(
    state_dir: &Path,
    database: &DatabaseConfig,
    hsm: &HsmConfig,
    audit: &AuditConfig,
    imported: &[String],
    cmd: AuditCommand,
) -> anyhow::Result<bool> {
    std::fs::create_dir_all(state_dir)
        .with_context(|| format!("cannot create state directory {}", state_dir.display()))?;
    let store = open_durable(database, state_dir).await?;
    let now = crate::ids::now_unix();
    match cmd {
        AuditCommand::Export(args) => {
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
        AuditCommand::Verify(args) => {
            let (s, dir) = (store.clone(), args.archive.clone());
            let result = with_ring(hsm, imported, &store, |ring| async move {
                super::verify(s.as_ref(), &ring, dir.as_deref()).await
            })
            .await?;
            Ok(match result {
                Verification::Ok { events, checkpoints, head, unsigned, archives, archived_events } => {
                    let head = head.map_or_else(|| "empty".to_string(), |(seq, hash)| format!("seq {seq} hash {hash}"));
                    println!(
                        "OK: {events} events, {checkpoints} signed checkpoints, head {head}, {unsigned} events after the last checkpoint"
                    );
                    if args.archive.is_some() {
                        println!(
                            "OK: {archives} archives, {archived_events} archived events, continuous into the live table"
                        );
                    }
                    true
                }
                Verification::Broken { seq, reason } => {
                    println!("BROKEN at seq {seq}: {reason}");
                    false
                }
            })
        }
        AuditCommand::Archive(args) => {
            let through = YearMonth::parse(&args.through).map_err(|e| anyhow::anyhow!("--through {e}"))?;
            let s = store.clone();
            let made = with_ring(hsm, imported, &store, |ring| async move {
                archive::archive(s.as_ref(), &ring, through, &args.out, now).await
            })
            .await?;
            if made.is_empty() {
                println!("nothing to archive through {through}");
            }
            for m in &made {
                println!(
                    "archived {}: seq {}..={} ({} events) {} sha256 {}",
                    m.month, m.first_seq, m.last_seq, m.count, m.file, m.sha256
                );
            }
            Ok(true)
        }
        AuditCommand::Maintain(args) => {
            if !partitions(store.as_ref(), now).await? {
                return Ok(false);
            }
            let months = audit.retention_months;
            let Some(dir) = args.archive else {
                if months > 0 {
                    println!("retention not applied: give --archive DIR (audit.retention_months = {months})");
                }
                return Ok(true);
            };
            let s = store.clone();
            let done = with_ring(hsm, imported, &store, |ring| async move {
                archive::maintain(s.as_ref(), &ring, &dir, months, now).await
            })
            .await?;
            for (month, deleted) in &done.dropped {
                println!("dropped {month}: {deleted} records deleted (archive verified)");
            }
            match done.refused {
                Some(reason) if months > 0 => {
                    println!("REFUSED: {reason}");
                    Ok(false)
                }
                Some(reason) => {
                    println!("{reason}");
                    Ok(true)
                }
                None => {
                    if done.dropped.is_empty() {
                        println!("nothing due for retention ({months} months)");
                    }
                    Ok(true)
                }
            }
        }
    }
}

/// PostgreSQL partition maintenance of `audit maintain`; `Ok(false)` (with the reason
/// printed) when this role does not own the audit table. Nothing to do on SQLite.
async fn partitions(store: &dyn DurableStore, now: i64) -> anyhow::Result<bool> {
    use crate::store::audit::RetentionMechanism;
    if store.retention_mechanism() != RetentionMechanism::DropPartitions {
        return Ok(true);
    }
    if !store.audit_owner_rights().await? {
        println!(
            "REFUSED: this database role does not own the audit table; run `symbolon audit maintain` with the owner's credentials, as `symbolon migrate` (e.g. SYMBOLON_DATABASE__URL=postgres://symbolon_owner@...)"
        );
        return Ok(false);
    }
    let done = store.maintain_partitions(now, super::PARTITIONS_AHEAD, "operator").await?;
    if let Some(done) = done {
        if done.created.is_empty() && done.moved == 0 {
            println!("partitions: the current and the next {} months are ready", super::PARTITIONS_AHEAD);
        } else {
            println!(
                "partitions: created {} ({} records moved out of the default partition)",
                if done.created.is_empty() { "none".to_string() } else { done.created.join(", ") },
                done.moved
            );
        }
    }
    Ok(true)
}

/// Runs `f` with a key ring over a one-session pool on the token, then closes the pool
/// (SoftHSM2 must not see open sessions in its exit handlers).
async fn with_ring<T, F, Fut>(
    hsm: &HsmConfig,
    imported: &[String],
    store: &Arc<dyn DurableStore>,
    f: F,
) -> anyhow::Result<T>
where
    F: FnOnce(KeyRing) -> Fut,
    Fut: std::future::Future<Output = Result<T, AuditError>>,
{
    let mut hsm = hsm.clone();
    hsm.workers = 1;
    let pool = tokio::task::spawn_blocking(move || open_pool(&hsm)).await??;
    let result = async {
        let ring =
            KeyRing::open_with(pool.clone(), store.clone(), crate::ids::now_unix(), "symbolon", imported).await?;
        anyhow::Ok(f(ring).await?)
    }
    .await;
    tokio::task::spawn_blocking(move || pool.shutdown()).await?;
    result
}

pub(crate) fn parse_since(s: &str, now: i64) -> anyhow::Result<i64> {
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
