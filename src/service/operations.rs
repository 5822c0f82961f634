//! Running the process around the requests (for `startup`, never for handlers): trust
//! refreshes, the audit checkpoints, the key maintenance, SIGHUP's relying parties,
//! the watchdog's check and the orderly stop.

use std::sync::Arc;

use super::Services;
use super::config::ServiceConfig;
use super::relying_parties::RelyingPartyChanges;
use crate::store::audit::kinds;
use crate::trust::{RefreshReport, TrustError};

/// Re-reads the configuration file for a reload (SIGHUP, the console's "Reload
/// configuration"). `startup` implements it: it owns the file and the running
/// configuration, which this room does not import.
pub trait ConfigSource: Send + Sync {
    /// The file read again and checked as a whole.
    fn reread(&self) -> Reread;
}

/// What reading the configuration file again gave.
#[derive(Debug)]
pub enum Reread {
    /// The server runs without a configuration file: nothing to re-read.
    NoFile,
    /// The file has problems: nothing of it is applied.
    Invalid(Vec<String>),
    /// A valid file: its relying parties, and the other sections that changed (they
    /// take effect at the next restart).
    Valid { services: Vec<ServiceConfig>, restart: Vec<String> },
}

/// What a trust refresh did, for operators (list names and reasons only).
#[derive(Debug, Clone, Default)]
pub struct TrustRefreshOutcome {
    /// Lists, CRLs and VRLs whose content changed.
    pub updated: Vec<String>,
    /// `list: reason` of each document refused or unreachable (the old copy stays).
    pub failed: Vec<String>,
    /// Every document is fresh after the refresh.
    pub fresh: bool,
}

impl From<&RefreshReport> for TrustRefreshOutcome {
    fn from(r: &RefreshReport) -> Self {
        Self {
            updated: r.updated.clone(),
            failed: r.failed.iter().map(|f| format!("{}: {}", f.list, f.reason)).collect(),
            fresh: r.fresh,
        }
    }
}

/// What a reload did.
#[derive(Debug, Default)]
pub struct ReloadReport {
    /// A configuration file was read (`false`: the server runs without one).
    pub file: bool,
    /// Why the file was not applied (empty: it was valid).
    pub problems: Vec<String>,
    /// Sections that changed and take effect at the next restart.
    pub restart: Vec<String>,
    /// The relying parties replaced (`None`: the file was not applied).
    pub relying_parties: Option<RelyingPartyChanges>,
    /// The trust refresh that follows (`None`: trust lists are not configured).
    pub trust: Option<Result<TrustRefreshOutcome, String>>,
}

impl Services {
    /// While push is on, seals the decoy envelope that sessions without a push token
    /// open (docs/protocol.md §5.1); a failure is logged and retried by the first such
    /// session.
    pub async fn prepare_push_decoy(&self) {
        if self.push.is_enabled()
            && let Err(e) = self.push_decoy.prepare(&self.keys).await
        {
            tracing::warn!(error = %e, "cannot seal the push decoy envelope yet; the first session without a push token will");
        }
    }

    /// Whether trust lists are configured (enrollment is disabled until they are).
    pub fn trust_configured(&self) -> bool {
        self.trust.config().is_configured()
    }

    /// Fetches the trust lists now and does what every refresh does after it (at
    /// start, on schedule, on SIGHUP, from the console): logs and audits what changed
    /// or was refused, then applies the revocations. A failed refresh still applies
    /// the revocations of the lists kept.
    pub async fn refresh_trust(&self, now: i64) -> Result<RefreshReport, TrustError> {
        let result = self.trust.refresh(now).await;
        if let Ok(report) = &result {
            log_trust_refresh(report);
            self.audit_trust_refresh(report, now);
        }
        self.apply_revocations(now).await;
        result
    }

    /// Refreshes the trust lists every `trust.refresh`, each refresh followed by what
    /// [`Services::refresh_trust`] does after one.
    pub fn spawn_trust_refresh_loop(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let services = self.clone();
        self.trust.spawn_refresh_loop(move |report| {
            log_trust_refresh(report);
            services.audit_trust_refresh(report, crate::ids::now_unix());
            let services = services.clone();
            tokio::spawn(async move { services.apply_revocations(crate::ids::now_unix()).await });
        })
    }

    /// Names where a reload re-reads the configuration (`startup`, once).
    pub fn set_config_source(&self, source: Arc<dyn ConfigSource>) {
        if self.config_source.set(source).is_err() {
            tracing::warn!("the configuration source is set already; keeping the first");
        }
    }

    /// A reload, as SIGHUP does it: re-reads the configuration file; a valid file
    /// replaces the relying parties at once (audited when they changed) and names the
    /// other sections that changed (they wait for a restart); an invalid file changes
    /// nothing. Then the trust lists are refreshed. `by` names who asked, for the log.
    pub async fn reload_configuration(&self, by: &str, now: i64) -> ReloadReport {
        let mut report = ReloadReport::default();
        let reread = match self.config_source.get() {
            Some(source) => {
                let source = source.clone();
                tokio::task::spawn_blocking(move || source.reread())
                    .await
                    .unwrap_or_else(|_| Reread::Invalid(vec!["the configuration could not be read".into()]))
            }
            None => Reread::NoFile,
        };
        match reread {
            Reread::NoFile => tracing::info!(by, "reload: no configuration file to re-read"),
            Reread::Invalid(problems) => {
                report.file = true;
                for problem in &problems {
                    tracing::error!(by, problem = %problem, "reload: invalid configuration");
                }
                tracing::error!(by, "reload: configuration not applied; the running one stays");
                report.problems = problems;
            }
            Reread::Valid { services, restart } => {
                report.file = true;
                if !restart.is_empty() {
                    tracing::warn!(
                        by,
                        sections = %restart.join(", "),
                        "reload: these sections changed and take effect at the next restart"
                    );
                }
                let changes = self.replace_relying_parties(services);
                if changes.is_empty() {
                    tracing::info!(by, "reload: configuration re-read; relying parties unchanged");
                } else {
                    tracing::info!(
                        by,
                        added = ?changes.added,
                        removed = ?changes.removed,
                        changed = ?changes.changed,
                        "reload: relying parties replaced"
                    );
                }
                report.restart = restart;
                report.relying_parties = Some(changes);
            }
        }
        if self.trust_configured() {
            report.trust = Some(match self.refresh_trust(now).await {
                Ok(r) => Ok(TrustRefreshOutcome::from(&r)),
                Err(e) => {
                    tracing::warn!(by, error = %e, "reload: trust refresh failed");
                    Err(e.to_string())
                }
            });
        }
        report
    }

    /// Signs audit checkpoints every `audit.checkpoint_interval`.
    pub fn spawn_checkpoint_loop(&self) -> tokio::task::JoinHandle<()> {
        self.audit.spawn_checkpoint_loop()
    }

    /// PostgreSQL: keeps the audit table's monthly partitions, on the node holding the
    /// key schedule's lease, when this server's role owns the table.
    pub fn spawn_audit_partitions(&self) -> Option<tokio::task::JoinHandle<()>> {
        let rules = self.key_rules.clone();
        self.audit.spawn_partition_loop(crate::keyring::node_name(), move |now| {
            let rules = rules.clone();
            async move { rules.hold_schedule_lease(now).await }
        })
    }

    /// Rotations made elsewhere reach this node within `keys.sync_interval`; due
    /// rotations and retirements are made here.
    pub fn spawn_key_maintenance(&self) -> tokio::task::JoinHandle<()> {
        crate::keyring::spawn_maintenance(self.key_rules.clone())
    }

    /// Replaces the relying parties and audits what changed.
    fn replace_relying_parties(&self, services: Vec<ServiceConfig>) -> RelyingPartyChanges {
        let changes = self.relying_parties.replace(services);
        if !changes.is_empty() {
            self.audit_event(
                kinds::RELYING_PARTIES_CHANGED,
                "symbolon",
                "services",
                serde_json::json!({"added": changes.added, "removed": changes.removed, "changed": changes.changed}),
            );
        }
        changes
    }

    /// The watchdog's check: the HSM and the database answer.
    pub async fn alive(&self) -> bool {
        self.keys.ping().await.is_ok() && self.store.ping().await.is_ok()
    }

    /// Stops taking push notifications (at shutdown, before the listeners drain).
    pub fn stop_push(&self) {
        self.push.shutdown();
    }

    /// After the listeners drained: signs the events of the last moments, then closes
    /// the HSM sessions.
    pub async fn close(&self, now: i64) {
        if let Err(e) = self.audit.checkpoint(now).await {
            tracing::warn!(error = %e, "cannot sign the final audit checkpoint");
        }
        let pool = self.keys.pool().clone();
        let _ = tokio::task::spawn_blocking(move || pool.shutdown()).await;
    }
}

/// Logs what a trust refresh changed or refused.
fn log_trust_refresh(report: &RefreshReport) {
    for name in &report.updated {
        tracing::info!(list = %name, "trust document updated");
    }
    for f in &report.failed {
        tracing::warn!(list = %f.list, url = %f.url, reason = %f.reason, "trust document refused or unreachable; keeping the last good copy");
    }
    if !report.fresh {
        tracing::warn!("trust lists are stale: enrollment fails closed until they are refreshed");
    }
}
