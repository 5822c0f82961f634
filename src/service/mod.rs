//! The domain: enrollment, authentication sessions, OTPs, identity tokens, claims.
//! Nothing here knows HTTP; handlers in `http/` call these and map [`ApiError`]s.
//!
//! [`Services`] is the only way in for `http/` (docs/architecture.md): its fields are
//! private and its API is grouped by what the callers do, one `impl` block per file:
//! enrolling (`enroll.rs`), signing in (`auth.rs`, the browser channel in
//! `channel.rs`, pairwise subjects in `subject.rs`), SAML (`saml.rs`), the management
//! API and console (`management.rs`, through [`Services::management`]), OpenID Connect
//! (`oidc.rs`; client authentication, shared with backend initiate, in
//! `client_auth.rs`), probes and metrics (`probe.rs`;
//! what keeps the node from being ready in `readiness.rs`, expired sessions counted in
//! `expiry.rs`), and running the process (`operations.rs`, for `startup`).

pub mod audit;
pub mod auth;
pub mod channel;
pub mod claims;
pub mod client_auth;
pub mod config;
pub mod console;
pub mod enroll;
pub mod enrollment_cache;
pub mod expiry;
pub mod flow;
pub mod idtoken;
pub mod jws;
pub mod key_admin;
pub mod management;
pub mod management_cli;
pub mod node_admin;
pub mod oidc;
pub mod operations;
pub mod otp;
pub mod probe;
pub mod readiness;
pub mod relying_parties;
pub mod saml;
pub mod subject;

use std::sync::Arc;

use crate::error::ApiError;
use crate::keyring::{KeyRing, Lifecycle};
use crate::store::audit::kinds;
use crate::store::{DurableStore, SessionStore};
use crate::trust::TrustStore;

/// Everything the domain needs, shared by all requests.
pub struct Services {
    /// The values read at start; the current relying parties are in
    /// `relying_parties` (SIGHUP swaps them).
    settings: config::Settings,
    relying_parties: relying_parties::RelyingParties,
    keys: KeyRing,
    /// The life-cycle rules over `keys` (`[keys]` and the lifetimes they protect).
    key_rules: Lifecycle,
    store: Arc<dyn DurableStore>,
    sessions: Arc<dyn SessionStore>,
    trust: TrustStore,
    push: crate::push::PushQueue,
    /// The audit trail: record events through it (never secrets, OTPs or claim values).
    audit: audit::Audit,
    /// Browser WebSockets open on this node (bounded by `limits.websocket_max_open`).
    browser_channels: Arc<channel::OpenChannels>,
    /// Sessions' OTPs while they live, in this process only (one HMAC per session
    /// per node whatever the polling rate).
    otp_cache: otp::OtpCache,
    /// Enrollments the sign-in path reads, kept until changed (`enrollment_cache.rs`).
    enrollments: Arc<enrollment_cache::EnrollmentCache>,
    /// The envelope opened for sessions without a push token while push is on.
    push_decoy: auth::PushDecoy,
    /// Clients' `jwks_uri` key sets, cached.
    client_jwks: client_auth::ClientJwks,
    /// The management operations (API, console), over the same stores and audit trail.
    management: management::Management,
    /// Where a reload re-reads the configuration (set by `startup`).
    config_source: std::sync::OnceLock<Arc<dyn operations::ConfigSource>>,
}

/// What [`Services::new`] is built from (`startup` opens each part).
pub struct Parts {
    pub settings: config::Settings,
    pub relying_parties: relying_parties::RelyingParties,
    pub keys: KeyRing,
    pub key_rules: Lifecycle,
    pub store: Arc<dyn DurableStore>,
    pub sessions: Arc<dyn SessionStore>,
    pub trust: TrustStore,
    pub push: crate::push::PushQueue,
    pub audit: audit::Audit,
    pub browser_channels: Arc<channel::OpenChannels>,
    /// A single node's enrollment change file (`enrollment_cache::CHANGE_FILE` in the
    /// state directory), where commands announce changes; `None` in a cluster (they
    /// announce through Redis).
    pub enrollment_change_file: Option<std::path::PathBuf>,
}

impl std::fmt::Debug for Services {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Services").field("keys", &self.keys).finish_non_exhaustive()
    }
}

impl Services {
    pub fn new(parts: Parts) -> Self {
        let Parts {
            settings,
            relying_parties,
            keys,
            key_rules,
            store,
            sessions,
            trust,
            push,
            audit,
            browser_channels,
            enrollment_change_file,
        } = parts;
        let client_jwks =
            client_auth::ClientJwks::new(settings.auth.client_jwks_cache, settings.auth.client_jwks_refetch_interval);
        let otp_cache = otp::OtpCache::new(settings.auth.otp_cache_entries);
        let mut enrollments = enrollment_cache::EnrollmentCache::new(
            settings.auth.enrollment_cache_entries,
            settings.auth.enrollment_cache_ttl,
        );
        if let Some(path) = enrollment_change_file {
            enrollments = enrollments.watching(path);
        }
        let enrollments = Arc::new(enrollments);
        if tokio::runtime::Handle::try_current().is_ok() {
            enrollment_cache::follow(&enrollments, sessions.as_ref());
        }
        let management =
            management::Management::new(store.clone(), sessions.clone(), audit.clone(), enrollments.clone());
        Self {
            settings,
            relying_parties,
            keys,
            key_rules,
            store,
            sessions,
            trust,
            push,
            audit,
            browser_channels,
            otp_cache,
            enrollments,
            push_decoy: Default::default(),
            client_jwks,
            management,
            config_source: Default::default(),
        }
    }

    /// The management operations: users, credentials, flows and the audit trail
    /// (`management.rs`), as the management API and the operator console call them.
    pub fn management(&self) -> &management::Management {
        &self.management
    }

    /// The values read at start (which pages and limits apply).
    pub fn settings(&self) -> &config::Settings {
        &self.settings
    }

    /// The relying party with this id, as configured now.
    fn service(&self, id: &str) -> Option<std::sync::Arc<config::ServiceConfig>> {
        self.relying_parties.get(id)
    }

    /// The demo relying party (`[demo] service_id`), as configured now.
    pub fn demo_service(&self) -> Option<std::sync::Arc<config::ServiceConfig>> {
        self.relying_parties.get(&self.settings.demo.service_id)
    }

    /// Whether `origin` is a browser origin of a relying party, as configured now (CORS).
    pub fn allows_origin(&self, origin: &str) -> bool {
        self.relying_parties.allows_origin(origin)
    }

    /// Counts one request for `key` against `limit` per minute (sliding window);
    /// `429 rate_limited` with `Retry-After` past it.
    async fn rate_limit(&self, key: &str, limit: u32) -> Result<(), ApiError> {
        match self.sessions.hit(key, limit, std::time::Duration::from_secs(60)).await? {
            Ok(()) => Ok(()),
            Err(wait) => Err(ApiError::new(crate::error::ErrorCode::RateLimited, "too many requests")
                .with_retry_after(wait.as_secs().max(1))),
        }
    }

    /// Records an audit event (without waiting; a failure is logged).
    fn audit_event(&self, kind: &str, actor: &str, subject: &str, detail: serde_json::Value) {
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
                    enrollment_cache::announce(&self.enrollments, self.sessions.as_ref(), &changed).await;
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
                    enrollment_cache::announce(&self.enrollments, self.sessions.as_ref(), &changed).await;
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
