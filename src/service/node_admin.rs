//! A trust refresh and a configuration reload asked for by an operator, from the
//! management API and the console (docs/protocol.md §11, scopes
//! `management.trust.refresh` and `management.config.reload`): the same refresh the
//! server runs on its schedule and the same reload as SIGHUP (`operations.rs`). What
//! they change is audited there (`trust.list_changed`, `relying_parties.changed`); the
//! call itself is audited here with the operator and the reason, as every management
//! call.

use super::Services;
use super::management::OperatorCall;
use super::operations::{ReloadReport, TrustRefreshOutcome};
use crate::error::{ApiError, ErrorCode};

impl Services {
    /// Fetches the trust lists now (`409 invalid_state` when none are configured).
    pub async fn management_refresh_trust(
        &self,
        by: &OperatorCall<'_>,
        now: i64,
    ) -> Result<TrustRefreshOutcome, ApiError> {
        const ACTION: &str = "trust.refresh";
        if let Err(e) = by.check_reason() {
            return self.management().refused(by, "trust", ACTION, e).await;
        }
        if !self.trust_configured() {
            let e = ApiError::new(ErrorCode::InvalidState, "no trust lists are configured (trust.governance_url)");
            return self.management().refused(by, "trust", ACTION, e).await;
        }
        let outcome = match self.refresh_trust(now).await {
            Ok(report) => TrustRefreshOutcome::from(&report),
            Err(e) => return self.management().refused(by, "trust", ACTION, e.into()).await,
        };
        let mut detail = by.detail(ACTION, 200, &[]);
        detail["updated"] = serde_json::json!(outcome.updated);
        detail["failed"] = serde_json::json!(outcome.failed.len());
        detail["fresh"] = serde_json::json!(outcome.fresh);
        self.management().record(by.actor, "trust", detail).await?;
        tracing::info!(actor = by.actor, updated = outcome.updated.len(), "trust lists refreshed by an operator");
        Ok(outcome)
    }

    /// Re-reads the configuration as SIGHUP does. An invalid file is not applied
    /// (the report names its problems); the trust refresh runs either way.
    pub async fn management_reload(&self, by: &OperatorCall<'_>, now: i64) -> Result<ReloadReport, ApiError> {
        const ACTION: &str = "config.reload";
        if let Err(e) = by.check_reason() {
            return self.management().refused(by, "config", ACTION, e).await;
        }
        let report = self.reload_configuration(by.actor, now).await;
        let mut detail = by.detail(ACTION, 200, &[]);
        detail["file"] = serde_json::json!(report.file);
        detail["applied"] = serde_json::json!(report.relying_parties.is_some());
        detail["problems"] = serde_json::json!(report.problems.len());
        if let Some(c) = &report.relying_parties {
            detail["added"] = serde_json::json!(c.added);
            detail["removed"] = serde_json::json!(c.removed);
            detail["changed"] = serde_json::json!(c.changed);
        }
        self.management().record(by.actor, "config", detail).await?;
        Ok(report)
    }
}
