//! The domain: enrollment, authentication sessions, OTPs, identity tokens, claims.
//! Nothing here knows HTTP; handlers in `http/` call these and map [`ApiError`]s.

pub mod audit;
pub mod auth;
pub mod channel;
pub mod claims;
pub mod config;
pub mod enroll;
pub mod idtoken;
pub mod jws;
pub mod management;
pub mod otp;
pub mod relying_parties;
pub mod saml;
pub mod subject;

use std::sync::Arc;

use crate::error::ApiError;
use crate::keyring::KeyRing;
use crate::store::audit::kinds;
use crate::store::{DurableStore, SessionStore};
use crate::trust::TrustStore;

/// Everything the domain needs, shared by all requests.
pub struct Services {
    /// The values read at start; the current relying parties are in
    /// [`Services::relying_parties`] (SIGHUP swaps them).
    pub settings: config::Settings,
    pub relying_parties: relying_parties::RelyingParties,
    pub keys: KeyRing,
    pub store: Arc<dyn DurableStore>,
    pub sessions: Arc<dyn SessionStore>,
    pub trust: TrustStore,
    pub push: crate::push::PushQueue,
    /// The audit trail: record events through it (never secrets, OTPs or claim values).
    pub audit: audit::Audit,
    /// Browser WebSockets open on this node (bounded by `limits.websocket_max_open`).
    pub browser_channels: Arc<channel::OpenChannels>,
    /// Sessions' OTPs for one second, in this process only (at most one HMAC per
    /// session per second whatever the polling rate).
    pub otp_cache: otp::OtpCache,
    /// The envelope opened for sessions without a push token while push is on.
    pub push_decoy: auth::PushDecoy,
}

impl std::fmt::Debug for Services {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Services").field("keys", &self.keys).finish_non_exhaustive()
    }
}

impl Services {
    /// The relying party with this id, as configured now.
    pub fn service(&self, id: &str) -> Option<std::sync::Arc<config::ServiceConfig>> {
        self.relying_parties.get(id)
    }

    /// Counts one request for `key` against `limit` per minute (sliding window);
    /// `429 rate_limited` with `Retry-After` past it.
    pub async fn rate_limit(&self, key: &str, limit: u32) -> Result<(), ApiError> {
        match self.sessions.hit(key, limit, std::time::Duration::from_secs(60)).await? {
            Ok(()) => Ok(()),
            Err(wait) => Err(ApiError::new(crate::error::ErrorCode::RateLimited, "too many requests")
                .with_retry_after(wait.as_secs().max(1))),
        }
    }

    /// Records an audit event (without waiting; a failure is logged).
    pub fn audit_event(&self, kind: &str, actor: &str, subject: &str, detail: serde_json::Value) {
        self.audit.record_detached(crate::store::AuditEvent::new(crate::ids::now_unix(), kind, actor, subject, detail));
    }

    /// Audits what a trust refresh changed or refused (list names and reasons only).
    pub fn audit_trust_refresh(&self, report: &crate::trust::RefreshReport, now: i64) {
        if report.updated.is_empty() && report.failed.is_empty() {
            return;
        }
        let failed: Vec<_> = report
            .failed
            .iter()
            .map(|f| serde_json::json!({"list": f.list, "url": f.url, "reason": f.reason}))
            .collect();
        self.audit.record_detached(crate::store::AuditEvent::new(
            now,
            kinds::TRUST_LIST_CHANGED,
            "symbolon",
            "trust",
            serde_json::json!({"updated": report.updated, "failed": failed, "fresh": report.fresh}),
        ));
    }

    /// After a trust refresh: suspends enrollments whose token id is on a VRL of their
    /// territory and CA's service, or whose signer certificate is on their CA's CRL
    /// (docs/credentials.md §3.4, §6 rule 10).
    pub async fn apply_revocations(&self, now: i64) {
        for vrl in self.trust.revoked_tokens() {
            let ids: Vec<String> = vrl.token_ids.into_iter().collect();
            let reason = "token id revoked by VRL";
            match self.store.suspend_token_ids(&vrl.territory, &vrl.ca_sha256, &ids, reason, now).await {
                Ok(changed) => {
                    for token_id in changed {
                        tracing::warn!(token_id = %token_id, reason = "vrl", "enrollment suspended: credential revoked");
                        self.audit_event(
                            kinds::ENROLLMENT_SUSPENDED,
                            "symbolon",
                            &token_id,
                            serde_json::json!({"reason": reason, "territory": vrl.territory, "ca": vrl.ca_name}),
                        );
                    }
                }
                Err(e) => tracing::error!(error = %e, "cannot apply VRL revocations"),
            }
        }
        for signer in self.trust.revoked_signers() {
            match self
                .store
                .suspend_signer(&signer.ca_sha256, &signer.serial_hex, "signer certificate revoked by CRL", now)
                .await
            {
                Ok(changed) => {
                    for token_id in changed {
                        tracing::warn!(token_id = %token_id, reason = "crl", "enrollment suspended: credential revoked");
                        self.audit_event(
                            kinds::ENROLLMENT_SUSPENDED,
                            "symbolon",
                            &token_id,
                            serde_json::json!({"reason": "signer certificate revoked by CRL", "serial": signer.serial_hex}),
                        );
                    }
                }
                Err(e) => tracing::error!(error = %e, "cannot apply CRL revocations"),
            }
        }
    }
}
