//! What the operator console keeps between requests (docs/operations.md, "Operator
//! console"): its sessions and pending sign-ins live in the session store (memory or
//! Redis, shared by every node), under keys derived from the browser's secrets by
//! SHA-256 so a store dump names no usable cookie. The records are opaque text built
//! by `http::console`; nothing here knows their shape.

use std::time::Duration;

use sha2::{Digest, Sha256};

use super::Services;
use crate::error::ApiError;

/// Session-store key of a console record of `kind` for the browser secret `secret`.
fn key(kind: &str, secret: &str) -> String {
    let digest = Sha256::digest(secret.as_bytes());
    format!("console:{kind}:{}", crate::store::audit::hex(&digest))
}

impl Services {
    /// Stores (or replaces) the console session of the cookie `secret` for `ttl`.
    pub async fn console_put_session(&self, secret: &str, record: &str, ttl: Duration) -> Result<(), ApiError> {
        Ok(self.sessions.put_value(&key("session", secret), record, ttl).await?)
    }

    /// The console session of the cookie `secret`, while it lives.
    pub async fn console_session(&self, secret: &str) -> Result<Option<String>, ApiError> {
        Ok(self.sessions.get_value(&key("session", secret)).await?)
    }

    /// Ends the console session of the cookie `secret`.
    pub async fn console_end_session(&self, secret: &str) -> Result<(), ApiError> {
        self.sessions.take_value(&key("session", secret)).await?;
        Ok(())
    }

    /// Keeps a pending sign-in (PKCE verifier, nonce) under its `state` for `ttl`.
    pub async fn console_put_login(&self, state: &str, record: &str, ttl: Duration) -> Result<(), ApiError> {
        Ok(self.sessions.put_value(&key("login", state), record, ttl).await?)
    }

    /// Takes the pending sign-in of `state`: at most once.
    pub async fn console_take_login(&self, state: &str) -> Result<Option<String>, ApiError> {
        Ok(self.sessions.take_value(&key("login", state)).await?)
    }

    /// Counts a break-glass sign-in attempt from `ip` against `per_minute`
    /// (`429 rate_limited` past it).
    pub async fn console_limit_break_glass(&self, ip: std::net::IpAddr, per_minute: u32) -> Result<(), ApiError> {
        self.rate_limit(&format!("console:break-glass:{ip}"), per_minute).await
    }
}

/// A key of the catalog as the console shows it (label, purpose, state, dates).
#[derive(Debug, Clone)]
pub struct KeyView {
    pub label: String,
    pub purpose: &'static str,
    pub state: &'static str,
    pub created_at: i64,
    pub activated_at: Option<i64>,
    pub retiring_at: Option<i64>,
}

/// One trust list, CRL or VRL as the console shows it.
#[derive(Debug, Clone)]
pub struct TrustView {
    pub kind: &'static str,
    pub name: String,
    pub source: String,
    pub seq: Option<u64>,
    pub issued: Option<i64>,
    pub next_update: Option<i64>,
    pub fetched_at: Option<i64>,
    pub fresh: bool,
    /// Why it is missing or the last fetch was refused.
    pub error: Option<String>,
}

/// What happened in a recent window, from the audit trail: sign-ins by outcome,
/// failed pushes and token lockouts.
#[derive(Debug, Clone, Default)]
pub struct RecentActivity {
    pub approved: u64,
    pub rejected: u64,
    pub sessions_locked: u64,
    pub push_failed: u64,
    pub lockouts: u64,
    /// The window held more records than were read: the counts are lower bounds.
    pub truncated: bool,
}

/// Audit records read at most for [`Services::console_recent_activity`].
const ACTIVITY_MAX_RECORDS: u32 = 5000;

impl Services {
    /// The key catalog, by purpose then creation.
    pub fn console_keys(&self) -> Vec<KeyView> {
        let mut entries = self.keys.entries();
        entries.sort_by(|a, b| (a.purpose.as_str(), a.created_at).cmp(&(b.purpose.as_str(), b.created_at)));
        entries
            .into_iter()
            .map(|e| KeyView {
                label: e.label,
                purpose: e.purpose.as_str(),
                state: e.state.as_str(),
                created_at: e.created_at,
                activated_at: e.activated_at,
                retiring_at: e.retiring_at,
            })
            .collect()
    }

    /// Every trust list, CRL and VRL at `now`, and when the last refresh ran.
    pub fn console_trust(&self, now: i64) -> (Option<i64>, Vec<TrustView>) {
        let status = self.trust.status(now);
        let views = status
            .entries
            .into_iter()
            .map(|e| TrustView {
                kind: e.kind,
                name: e.name,
                source: e.source,
                seq: e.seq,
                issued: e.issued,
                next_update: e.next_update,
                fetched_at: e.fetched_at,
                fresh: e.fresh,
                error: e.error,
            })
            .collect();
        (status.last_refresh, views)
    }

    /// Counts the audit events of kinds sign-in outcome, push failure and lockout
    /// since `since` (at most [`ACTIVITY_MAX_RECORDS`] records read).
    pub async fn console_recent_activity(&self, since: i64) -> Result<RecentActivity, ApiError> {
        use crate::store::audit::kinds;
        let mut out = RecentActivity::default();
        let mut cursor: Option<String> = None;
        let mut read = 0u32;
        loop {
            let page = self.management.audit_events(since, cursor.as_deref(), super::management::MAX_LIMIT).await?;
            for e in &page.items {
                match e.kind.as_str() {
                    kinds::AUTH_APPROVED => out.approved += 1,
                    kinds::AUTH_REJECTED => out.rejected += 1,
                    kinds::AUTH_SESSION_LOCKED => out.sessions_locked += 1,
                    kinds::PUSH_FAILED => out.push_failed += 1,
                    kinds::AUTH_TOKEN_LOCKED_OUT => out.lockouts += 1,
                    _ => {}
                }
            }
            read += page.items.len() as u32;
            match page.next_cursor {
                Some(c) if read < ACTIVITY_MAX_RECORDS => cursor = Some(c),
                Some(_) => {
                    out.truncated = true;
                    return Ok(out);
                }
                None => return Ok(out),
            }
        }
    }
}

/// The audit chain as the console shows it.
#[derive(Debug, Clone)]
pub struct AuditChainView {
    /// `None`: not verified on this request; `Ok(events)` or `Err(reason at seq)`.
    pub verified: Option<Result<String, String>>,
    /// The latest HSM-signed checkpoint: seq, time, key label.
    pub checkpoint: Option<(i64, i64, String)>,
}

/// Records an NDJSON export holds at most (a larger trail: `symbolon audit export`).
pub const EXPORT_MAX_RECORDS: u64 = 100_000;

fn audit_failed(e: super::audit::AuditError) -> ApiError {
    tracing::error!(error = %e, "audit trail read failed");
    ApiError::internal()
}

impl Services {
    /// The latest signed checkpoint and, when `verify`, the whole chain walked and
    /// every checkpoint's signature checked with the HSM key's public half.
    pub async fn console_audit_chain(&self, verify: bool) -> Result<AuditChainView, ApiError> {
        let checkpoint = self.store.last_checkpoint().await?.map(|c| (c.seq, c.at, c.key_label));
        let verified = if verify {
            // The walk's future is not provably `Send` (closures over borrowed
            // checkpoints), which a handler's must be: it runs on a blocking thread.
            let (store, keys) = (self.store.clone(), self.keys.clone());
            let handle = tokio::runtime::Handle::current();
            let walked = tokio::task::spawn_blocking(move || {
                handle.block_on(async move { super::audit::verify(store.as_ref(), &keys, None).await })
            })
            .await
            .map_err(|_| ApiError::internal())?;
            Some(match walked.map_err(audit_failed)? {
                super::audit::Verification::Ok { events, checkpoints, unsigned, .. } => Ok(format!(
                    "intact: {events} records, {checkpoints} signed checkpoints, {unsigned} records after the last checkpoint"
                )),
                super::audit::Verification::Broken { seq, reason } => Err(format!("broken at record {seq}: {reason}")),
            })
        } else {
            None
        };
        Ok(AuditChainView { verified, checkpoint })
    }

    /// The audit records with `at >= since` as NDJSON (one JSON object per line), at
    /// most [`EXPORT_MAX_RECORDS`]; the count comes back too.
    pub async fn console_audit_export(&self, since: i64) -> Result<(Vec<u8>, u64), ApiError> {
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        let mut n = 0u64;
        loop {
            let page = self.management.audit_events(since, cursor.as_deref(), super::management::MAX_LIMIT).await?;
            for e in &page.items {
                serde_json::to_writer(&mut out, e).map_err(|_| ApiError::internal())?;
                out.push(b'\n');
                n += 1;
            }
            match page.next_cursor {
                Some(c) if n < EXPORT_MAX_RECORDS => cursor = Some(c),
                _ => return Ok((out, n)),
            }
        }
    }

    /// Users whose token id starts with `prefix`, by token id, `limit` per page (the
    /// management API's cursor).
    pub async fn console_users(
        &self,
        prefix: &str,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<super::management::Page<super::management::UserView>, ApiError> {
        let mut items = Vec::new();
        let start = match cursor {
            Some(c) => Some(c.to_string()),
            None if prefix.is_empty() => None,
            None => {
                // The exact token id first; the listing runs after it.
                match self.management.user(prefix).await {
                    Ok(user) => items.push(user),
                    Err(e) if e.code == crate::error::ErrorCode::NotFound => {}
                    Err(e) => return Err(e),
                }
                // The management listing's cursor of a token id (its position, b64u).
                Some(base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, prefix))
            }
        };
        let page = self.management.users(start.as_deref(), limit).await?;
        let past = page.items.iter().any(|u| !u.token_id.starts_with(prefix));
        items.extend(page.items.into_iter().filter(|u| u.token_id.starts_with(prefix)));
        let next_cursor = if past { None } else { page.next_cursor };
        Ok(super::management::Page { items, next_cursor })
    }
}

/// A relying party (`[[services]]`) as the console shows it: its settings, read only.
/// Never a secret, a secret's hash or a key: how a client authenticates is named, and
/// where its public keys are (inline, or the `jwks_uri`), not what they are.
#[derive(Debug, Clone)]
pub struct RelyingPartyView {
    pub id: String,
    pub name: String,
    /// (setting, value) of the service itself.
    pub settings: Vec<(&'static str, String)>,
    /// The OpenID Connect client's settings (`[services.oidc]`).
    pub oidc: Option<Vec<(&'static str, String)>>,
    /// The SAML service provider's settings (`[services.saml]`).
    pub saml: Option<Vec<(&'static str, String)>>,
}

/// The wire name of a configuration enum (its serde name).
fn wire<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_value(v).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
}

fn list(items: &[String]) -> String {
    if items.is_empty() { "—".into() } else { items.join(", ") }
}

fn yes_no(b: bool) -> String {
    if b { "yes".into() } else { "no".into() }
}

/// Where a client's credentials are registered, without them.
fn credentials(reg: &crate::oidc::Registration<'_>) -> String {
    let mut out = Vec::new();
    if reg.secret_sha256.is_some() {
        out.push("a secret (its hash is configured)".to_string());
    }
    if reg.jwks.is_some() {
        out.push(format!("inline JWKS ({} keys)", reg.jwks_keys().len()));
    }
    if let Some(uri) = reg.jwks_uri {
        out.push(format!("jwks_uri {uri}"));
    }
    if out.is_empty() { "none".into() } else { out.join("; ") }
}

impl RelyingPartyView {
    fn of(s: &super::config::ServiceConfig) -> Self {
        let subject = s.subject_type();
        let mut settings = vec![
            ("Allowed scopes", list(&s.allowed_scopes)),
            ("Allowed origins", list(&s.allowed_origins)),
            ("Subject type", subject.as_str().to_string()),
        ];
        if subject == super::config::SubjectType::Pairwise {
            settings.push(("Sector", s.sector().unwrap_or_else(|e| format!("none: {e}"))));
        }
        settings.push(("Initiate", wire(&s.initiate)));
        if let Some(auth) = &s.client_auth {
            let reg = auth.registration();
            settings.push(("Backend client authentication", wire(&reg.method)));
            settings.push(("Backend credentials", credentials(&reg)));
        }
        let oidc = s.oidc.as_ref().map(|c| {
            let reg = c.registration();
            vec![
                ("Client id", s.id.clone()),
                ("Redirect URIs", list(&c.redirect_uris)),
                ("Post-logout redirect URIs", list(&c.post_logout_redirect_uris)),
                ("Token endpoint authentication", wire(&reg.method)),
                ("Credentials", credentials(&reg)),
                (
                    "id_token lifetime",
                    c.id_token_lifetime.map(|d| humantime::format_duration(d).to_string()).unwrap_or("default".into()),
                ),
            ]
        });
        let saml = s.saml.as_ref().map(|sp| {
            let names: Vec<String> = sp.attribute_names.iter().map(|(c, n)| format!("{} → {n}", wire(c))).collect();
            vec![
                ("Entity id", sp.entity_id.clone()),
                ("ACS URL", sp.acs_url.clone()),
                ("SLO URL", sp.slo_url.clone().unwrap_or_else(|| "—".into())),
                ("Signature algorithm", wire(&sp.signature_algorithm)),
                ("Requests signed", yes_no(sp.requests_signed)),
                ("SP certificate", if sp.certificate_pem.is_some() { "configured".into() } else { "—".into() }),
                ("Response signed too", yes_no(sp.sign_response)),
                ("NameID format", wire(&sp.name_id_format)),
                ("Attribute name format", wire(&sp.attribute_name_format)),
                ("Attribute names", list(&names)),
                ("Default scopes", list(&sp.default_scopes)),
            ]
        });
        RelyingPartyView { id: s.id.clone(), name: s.name.clone(), settings, oidc, saml }
    }
}

impl Services {
    /// The relying parties in effect now (the last reload's), in configuration order.
    pub fn console_relying_parties(&self) -> Vec<RelyingPartyView> {
        self.relying_parties.snapshot().iter().map(|s| RelyingPartyView::of(s)).collect()
    }
}
