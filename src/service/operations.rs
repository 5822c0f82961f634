//! Running the process around the requests (for `startup`, never for handlers): trust
//! refreshes, the audit checkpoints, the key maintenance, SIGHUP's relying parties,
//! the watchdog's check and the orderly stop.

use std::sync::Arc;

use super::Services;
use super::config::ServiceConfig;
use super::relying_parties::RelyingPartyChanges;
use crate::store::audit::kinds;
use crate::trust::{RefreshReport, TrustError};

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

    /// Fetches the trust lists now.
    pub async fn refresh_trust(&self, now: i64) -> Result<RefreshReport, TrustError> {
        self.trust.refresh(now).await
    }

    /// Refreshes the trust lists every `trust.refresh`; after each refresh `on_refresh`
    /// sees the report, the changes are audited and the revocations applied.
    pub fn spawn_trust_refresh_loop<F>(self: &Arc<Self>, on_refresh: F) -> tokio::task::JoinHandle<()>
    where
        F: Fn(&RefreshReport) + Send + Sync + 'static,
    {
        let services = self.clone();
        self.trust.spawn_refresh_loop(move |report| {
            on_refresh(report);
            services.audit_trust_refresh(report, crate::ids::now_unix());
            let services = services.clone();
            tokio::spawn(async move { services.apply_revocations(crate::ids::now_unix()).await });
        })
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

    /// SIGHUP: replaces the relying parties and audits what changed.
    pub fn replace_relying_parties(&self, services: Vec<ServiceConfig>) -> RelyingPartyChanges {
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
