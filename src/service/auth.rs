//! Authentication sessions (docs/protocol.md §5): initiate, the browser's view, the
//! device's pending list and verify, with the abuse limits of §9 and §12.

use std::net::IpAddr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::Services;
use super::claims::StoredClaims;
use super::config::ServiceConfig;
use super::enrollment_cache::KnownDevice;
use super::idtoken::{IdClaims, ordered_scopes, scope_claims, signing_input};
use super::jws::{HasIat, ParsedJws, TYP_DEVICE};
use super::otp::{codes_equal, otp_message, truncate};
use crate::error::{ApiError, ErrorCode};
use crate::keyring::KeyPurpose;
use crate::metrics::{METRICS, SessionOutcome};
use crate::store::audit::kinds;
use crate::store::{AuthSession, Enrollment, EnrollmentStatus, SessionEnd, SessionStatus};

/// `POST /v1/auth/initiate` body. The `client_*` members carry client authentication
/// for a service with `initiate = "backend"` (docs/protocol.md §5.1) and are refused
/// for any other.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InitiateRequest {
    pub token_id: String,
    pub service_id: String,
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Optional; when given, the `service_id`.
    #[serde(default)]
    pub client_id: Option<String>,
    /// `client_secret_post`: the service's secret.
    #[serde(default)]
    pub client_secret: Option<String>,
    /// `private_key_jwt`: `urn:ietf:params:oauth:client-assertion-type:jwt-bearer`.
    #[serde(default)]
    pub client_assertion_type: Option<String>,
    /// `private_key_jwt`: the signed assertion (or `Authorization: Bearer <assertion>`).
    #[serde(default)]
    pub client_assertion: Option<String>,
}

impl InitiateRequest {
    fn credentials(&self) -> super::client_auth::InitiateCredentials<'_> {
        super::client_auth::InitiateCredentials {
            client_id: self.client_id.as_deref(),
            client_secret: self.client_secret.as_deref(),
            client_assertion_type: self.client_assertion_type.as_deref(),
            client_assertion: self.client_assertion.as_deref(),
        }
    }
}

/// `201` answer of initiate.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Initiated {
    pub session_id: String,
    pub browser_token: String,
    pub expires_at: i64,
    pub ws_url: String,
}

/// What the browser may see of its session (polling and WebSocket).
#[derive(Debug, Clone, Serialize, PartialEq, Eq, utoipa::ToSchema)]
#[serde(tag = "status", rename_all = "lowercase")]
pub enum BrowserView {
    Pending { otp: String, expires_at: i64 },
    Approved { id_token: String },
    Rejected,
    Expired,
    Locked,
}

/// One entry of `POST /v1/device/pending`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PendingEntry {
    pub session_id: String,
    pub otp: String,
    pub service_id: String,
    pub service_name: String,
    pub scopes: Vec<String>,
    pub expires_at: i64,
}

/// `POST /v1/device/pending` answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PendingList {
    pub sessions: Vec<PendingEntry>,
}

/// `POST /v1/device/pending` payload.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PendingPayload {
    #[serde(default)]
    pub iat: Option<i64>,
}

impl HasIat for PendingPayload {
    fn iat(&self) -> Option<i64> {
        self.iat
    }
}

/// The device's decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    Approve,
    Reject,
}

/// `POST /v1/auth/verify` payload.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifyPayload {
    pub session_id: String,
    pub otp: String,
    pub decision: Decision,
    #[serde(default)]
    pub scopes: Option<Vec<String>>,
    #[serde(default)]
    pub iat: Option<i64>,
}

impl HasIat for VerifyPayload {
    fn iat(&self) -> Option<i64> {
        self.iat
    }
}

/// `POST /v1/auth/verify` answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Verified {
    /// `approved` or `rejected`.
    #[schema(value_type = String)]
    pub status: &'static str,
}

/// Associated data of the decoy envelope (no stored row has this id).
const PUSH_DECOY_AAD: &str = "symbolon-push-decoy";
/// Size of the decoy's plaintext: an FCM registration token's usual length.
const PUSH_DECOY_LEN: usize = 163;

/// An envelope sealed under the active data key and opened, while push is on, for every
/// session whose token id has no push token to open (unknown, inactive, or enrolled
/// without push): initiate then asks the HSM for the same operations (HMAC, decrypt)
/// whatever the token id (docs/protocol.md §5.1, one timing class). Sealed at start and
/// again after the data key rotates; kept in memory only (it protects nothing).
#[derive(Debug, Default)]
pub struct PushDecoy {
    sealed: tokio::sync::Mutex<Option<(String, String)>>,
}

impl PushDecoy {
    /// Seals a new decoy under the active data key: (key label, envelope).
    pub async fn prepare(&self, keys: &crate::keyring::KeyRing) -> Result<String, crate::keyring::KeyError> {
        let key = keys.active(KeyPurpose::Data)?;
        let envelope = keys.seal_with(&key.label, PUSH_DECOY_AAD, vec![0x5a; PUSH_DECOY_LEN]).await?;
        *self.sealed.lock().await = Some((key.label, envelope.clone()));
        Ok(envelope)
    }

    /// Opens the decoy (one HSM decryption), sealing it first when the active data key
    /// is not the one it was sealed with.
    pub async fn open(&self, keys: &crate::keyring::KeyRing) -> Result<(), crate::keyring::KeyError> {
        let active = keys.active(KeyPurpose::Data)?.label;
        let current = match &*self.sealed.lock().await {
            Some((label, envelope)) if *label == active => Some(envelope.clone()),
            _ => None,
        };
        let envelope = match current {
            Some(envelope) => envelope,
            None => self.prepare(keys).await?,
        };
        keys.open_sealed(PUSH_DECOY_AAD, &envelope).await.map(drop)
    }
}

/// Token ids as in docs/credentials.md §2: 6..64 characters of `[A-Za-z0-9._-]`.
fn valid_token_id(t: &str) -> bool {
    (6..=64).contains(&t.len()) && t.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// SHA-256 hex of a browser token (the store keeps only this).
pub fn browser_token_digest(token: &str) -> String {
    Sha256::digest(token.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

fn lockout_key(token_id: &str) -> String {
    format!("lockout:{token_id}")
}

fn units_key(token_id: &str) -> String {
    format!("failures:{token_id}")
}

/// A device's "last used" time is written at most once per this many seconds (and
/// is that coarse): the sign-in path reads the enrollment anyway and skips the write
/// while the recorded use is recent.
pub const LAST_USED_GRANULARITY: i64 = 300;

impl Services {
    fn service_or_err(&self, id: &str) -> Result<Arc<ServiceConfig>, ApiError> {
        self.service(id)
            .ok_or_else(|| ApiError::new(ErrorCode::UnknownService, "service_id names no configured relying party"))
    }

    /// `Origin`, when present, must be one of the service's origins (§12 rule 3). For
    /// a service whose sign-in runs on the IdP's own pages (a SAML SP, the demo), the
    /// issuer's origin is allowed too: those pages are served from it.
    pub(super) fn check_origin(&self, service: &ServiceConfig, origin: Option<&str>) -> Result<(), ApiError> {
        let Some(o) = origin else { return Ok(()) };
        if service.allowed_origins.iter().any(|a| a == o) {
            return Ok(());
        }
        if self.settings.served_by_idp_pages(service) && self.settings.issuer_origin().as_deref() == Some(o) {
            return Ok(());
        }
        Err(ApiError::new(ErrorCode::OriginNotAllowed, "this origin may not use the service"))
    }

    async fn check_lockout(&self, token_id: &str) -> Result<(), ApiError> {
        if let Some(left) = self.sessions.lock_remaining(&lockout_key(token_id)).await? {
            return Err(ApiError::new(ErrorCode::LockedOut, "too many failures for this token id; try later")
                .with_retry_after(left.as_secs().max(1)));
        }
        Ok(())
    }

    /// Computes a session's OTP in the HSM with the key the session names, once per
    /// session in this process: the code is kept in memory until the session expires or
    /// ends here (never stored: see [`super::otp::OtpCache`]).
    pub(super) async fn session_otp(&self, s: &AuthSession) -> Result<String, ApiError> {
        self.otp_cache
            .get_or_compute(&s.id, s.expires_at, || async {
                let mac = self.keys.hmac(&s.otp_key, otp_message(&s.id, &s.token_id, s.created_at)).await?;
                Ok(truncate(&mac, s.otp_digits))
            })
            .await
    }

    /// Starts a session (docs/protocol.md §5.1) with the limits in the order of §12
    /// rule 4; a service with `initiate = "backend"` must authenticate first
    /// (`authorization` is the request's `Authorization` header).
    pub async fn initiate(
        &self,
        req: InitiateRequest,
        origin: Option<&str>,
        authorization: Option<&str>,
        ip: IpAddr,
        now: i64,
    ) -> Result<Initiated, ApiError> {
        let limits = &self.settings.limits;
        self.rate_limit(&format!("ip-initiate:{ip}"), limits.initiate_per_ip_per_minute).await?;
        let service = self.service_or_err(&req.service_id)?;
        self.authenticate_initiate(&service, authorization, &req.credentials(), now).await?;
        self.check_origin(&service, origin)?;
        if !valid_token_id(&req.token_id) {
            return Err(ApiError::invalid_request("token_id must be 6..64 characters of [A-Za-z0-9._-]"));
        }
        let mut scopes = Vec::new();
        for s in &req.scopes {
            if !service.allowed_scopes.contains(s) {
                return Err(ApiError::new(
                    ErrorCode::InvalidScope,
                    "a requested scope is not allowed for this service",
                ));
            }
            if !scopes.contains(s) {
                scopes.push(s.clone());
            }
        }
        let scopes: Vec<String> = ordered_scopes(&scopes).into_iter().map(str::to_string).collect();
        self.check_lockout(&req.token_id).await?;
        self.rate_limit(&format!("token-initiate:{}", req.token_id), limits.initiate_per_token_per_minute).await?;

        let known = self.active_enrollment(&req.token_id).await?;
        let enrollment = known.as_deref().map(|k| &k.enrollment);
        let otp_key = self.keys.active(KeyPurpose::Otp)?;
        let ttl = self.settings.auth.otp_ttl.as_secs() as i64;
        let browser_token = crate::ids::new_id();
        let session = AuthSession {
            id: crate::ids::new_id(),
            browser_token_sha256: browser_token_digest(&browser_token),
            token_id: req.token_id.clone(),
            service_id: service.id.clone(),
            scopes,
            created_at: now,
            expires_at: now + ttl,
            otp_key: otp_key.label.clone(),
            otp_digits: self.settings.auth.otp_digits,
            device_id: enrollment.as_ref().map(|e| e.device_id.clone()),
            status: SessionStatus::Pending,
            failures: 0,
            id_token_sealed: None,
            ended_at: None,
        };
        // The OTP is derived for every session, enrolled or not, so both take the same
        // HSM work (no enrollment oracle by timing); only enrolled ones are pushed.
        let otp = self.session_otp(&session).await?;
        let keep_until = session.expires_at + self.settings.auth.browser_grace.as_secs() as i64;
        if !self.sessions.create_session(&session, self.settings.auth.max_pending, now, keep_until).await? {
            return Err(ApiError::new(ErrorCode::TooManyPending, "too many pending sessions for this token id")
                .with_retry_after(ttl as u64));
        }
        METRICS.session_created(&session.id, session.expires_at);
        // While push is on, every session opens one envelope with the data key: the
        // device's push token, or a decoy for an unknown, inactive or push-less token id
        // (same HSM operations, one timing class, §5.1).
        let push_token = self.open_push_token(enrollment, &session.id).await;
        if let Some(token) = push_token {
            self.push_session(&session, &service, &otp, token);
        }
        tracing::info!(session_id = %session.id, service_id = %session.service_id, "auth session started");
        Ok(Initiated {
            ws_url: format!("/v1/auth/sessions/{}/ws", session.id),
            session_id: session.id,
            browser_token,
            expires_at: session.expires_at,
        })
    }

    /// The device's push token when push is on and the device registered an FCM token;
    /// otherwise, while push is on, opens the decoy envelope instead (and returns
    /// `None`). A token that cannot be opened is logged: the device must pull.
    async fn open_push_token(&self, enrollment: Option<&Enrollment>, session_id: &str) -> Option<String> {
        if !self.push.is_enabled() {
            return None;
        }
        let sealed = enrollment
            .filter(|e| e.push_provider == "fcm")
            .and_then(|e| e.push_token_sealed.as_deref().map(|sealed| (e.id.as_str(), sealed)));
        let Some((aad, sealed)) = sealed else {
            if let Err(e) = self.push_decoy.open(&self.keys).await {
                tracing::warn!(session_id = %session_id, error = %e, "cannot open the push decoy envelope");
            }
            return None;
        };
        match self.keys.open_sealed(aad, sealed).await {
            Ok(token) => String::from_utf8(token).ok(),
            Err(e) => {
                tracing::error!(session_id = %session_id, error = %e, "cannot open the push token; the device must pull");
                None
            }
        }
    }

    /// Queues the push for a new session. Never fails the initiate call: a failed push
    /// means the device pulls instead.
    fn push_session(&self, session: &AuthSession, service: &ServiceConfig, otp: &str, token: String) {
        let message = crate::push::AuthPush::auth(
            &session.id,
            &token,
            otp,
            &service.id,
            &service.name,
            &session.scopes,
            session.expires_at,
        );
        let store = self.sessions.clone();
        let id = session.id.clone();
        self.push.push(message, move || {
            let (store, id) = (store.clone(), id.clone());
            async move { matches!(store.get_session(&id).await, Ok(Some(s)) if s.is_pending(crate::ids::now_unix())) }
        });
    }

    /// The session if `browser_token` is its token and it is still readable
    /// (until `browser_grace` after expiry); `404 not_found` otherwise, whether the
    /// session is unknown or the token wrong.
    pub(super) async fn browser_session(
        &self,
        id: &str,
        browser_token: &str,
        now: i64,
    ) -> Result<AuthSession, ApiError> {
        let not_found = || ApiError::new(ErrorCode::NotFound, "no such session");
        if !crate::ids::is_id(id) {
            return Err(not_found());
        }
        let session = self.sessions.get_session(id).await?.ok_or_else(not_found)?;
        let given = browser_token_digest(browser_token);
        let readable = now <= session.expires_at + self.settings.auth.browser_grace.as_secs() as i64;
        if !codes_equal(&given, &session.browser_token_sha256) || !readable {
            return Err(not_found());
        }
        Ok(session)
    }

    /// The identity token of an approved session, opened from its envelope (the
    /// session id is the associated data, so an envelope moved to another session
    /// does not open).
    pub(super) async fn approved_id_token(&self, session: &AuthSession) -> Result<String, ApiError> {
        let sealed = session.id_token_sealed.as_deref().ok_or_else(ApiError::internal)?;
        let plain = self.keys.open_sealed(&session.id, sealed).await?;
        String::from_utf8(plain).map_err(|_| ApiError::internal())
    }

    /// The browser's poll (docs/protocol.md §5.2): limited per client IP
    /// (`limits.poll_per_ip_per_minute`, `429 rate_limited`), then what it sees of the
    /// session when `browser_token` is the session's; `404 not_found` otherwise (a path
    /// id that cannot be a session id before it is counted).
    pub async fn poll_session(
        &self,
        id: &str,
        browser_token: &str,
        ip: IpAddr,
        now: i64,
    ) -> Result<BrowserView, ApiError> {
        if !crate::ids::is_id(id) {
            return Err(ApiError::new(ErrorCode::NotFound, "no such session"));
        }
        self.rate_limit(&format!("ip-poll:{ip}"), self.settings.limits.poll_per_ip_per_minute).await?;
        let session = self.browser_session(id, browser_token, now).await?;
        self.browser_view(&session, now).await
    }

    /// What the browser sees of a session.
    pub(super) async fn browser_view(&self, session: &AuthSession, now: i64) -> Result<BrowserView, ApiError> {
        Ok(match session.status {
            SessionStatus::Pending if now < session.expires_at => {
                BrowserView::Pending { otp: self.session_otp(session).await?, expires_at: session.expires_at }
            }
            SessionStatus::Pending => BrowserView::Expired,
            SessionStatus::Approved => BrowserView::Approved { id_token: self.approved_id_token(session).await? },
            SessionStatus::Rejected => BrowserView::Rejected,
            SessionStatus::Locked => BrowserView::Locked,
        })
    }

    /// Authenticates a device JWS: `kid` names an enrolled device, the signature is
    /// its, the device is active (§5.5), then the payload and `iat`.
    pub(super) async fn authenticate_device<T: serde::de::DeserializeOwned + HasIat>(
        &self,
        body: &[u8],
        now: i64,
    ) -> Result<(Arc<KnownDevice>, T), ApiError> {
        let jws = ParsedJws::parse(body, TYP_DEVICE)?;
        let kid = jws.header_str("kid").ok_or_else(|| ApiError::invalid_request("kid must be a string"))?;
        let device = self
            .known_device(kid)
            .await?
            .ok_or_else(|| ApiError::new(ErrorCode::UnknownDevice, "no enrolled device has this kid"))?;
        jws.verify(&device.key)?;
        if device.enrollment.status != EnrollmentStatus::Active {
            return Err(ApiError::new(ErrorCode::DeviceInactive, "this device is not active"));
        }
        let payload = jws.payload(now, self.settings.device.iat_skew.as_secs())?;
        Ok((device, payload))
    }

    /// The enrollment cache may be read and filled: this node hears every enrollment
    /// change, and the database takes audit events (else sign-ins must reach it).
    fn enrollment_cache_usable(&self) -> bool {
        self.sessions.hears_enrollment_changes() && !self.audit.is_failing()
    }

    /// The enrollment of a device id: from this process's cache, else from the database
    /// (and then cached while this node hears every change, see
    /// [`super::enrollment_cache`]).
    async fn known_device(&self, device_id: &str) -> Result<Option<Arc<KnownDevice>>, ApiError> {
        let hears = self.enrollment_cache_usable();
        if hears && let Some(device) = self.enrollments.device(device_id) {
            return Ok(Some(device));
        }
        let ticket = self.enrollments.ticket();
        let Some(enrollment) = self.store.enrollment_by_device(device_id).await? else { return Ok(None) };
        let device = Arc::new(KnownDevice::new(enrollment).ok_or_else(ApiError::internal)?);
        if hears {
            self.enrollments.put_device(ticket, device.clone());
        }
        Ok(Some(device))
    }

    /// The active enrollment of a token id, cached as [`Self::known_device`] (its
    /// absence too).
    async fn active_enrollment(&self, token_id: &str) -> Result<Option<Arc<KnownDevice>>, ApiError> {
        let hears = self.enrollment_cache_usable();
        if hears && let Some(active) = self.enrollments.active(token_id) {
            return Ok(active);
        }
        let ticket = self.enrollments.ticket();
        let active = match self.store.active_enrollment(token_id).await? {
            Some(e) => Some(Arc::new(KnownDevice::new(e).ok_or_else(ApiError::internal)?)),
            None => None,
        };
        if hears {
            self.enrollments.put_active(ticket, token_id, active.clone());
        }
        Ok(active)
    }

    /// `POST /v1/device/pending`: the device's pending sessions with their OTPs.
    /// Limited per client IP first (`limits.poll_per_ip_per_minute`, counted apart from
    /// the browser's polls), before the signature is checked.
    pub async fn device_pending(&self, body: &[u8], ip: IpAddr, now: i64) -> Result<PendingList, ApiError> {
        self.rate_limit(&format!("ip-pending:{ip}"), self.settings.limits.poll_per_ip_per_minute).await?;
        let (device, _payload): (Arc<KnownDevice>, PendingPayload) = self.authenticate_device(body, now).await?;
        let enrollment = &device.enrollment;
        let mut sessions = Vec::new();
        for s in self.sessions.pending_sessions(&enrollment.token_id, now).await? {
            if s.device_id.as_deref() != Some(enrollment.device_id.as_str()) {
                continue;
            }
            let Some(service) = self.service(&s.service_id) else { continue };
            sessions.push(PendingEntry {
                otp: self.session_otp(&s).await?,
                session_id: s.id.clone(),
                service_id: s.service_id.clone(),
                service_name: service.name.clone(),
                scopes: s.scopes.clone(),
                expires_at: s.expires_at,
            });
        }
        Ok(PendingList { sessions })
    }

    /// Records a failed verify: counts toward the session's lock and costs failure
    /// units of the token id; reaching the limit locks the token out (§12 rule 5).
    async fn verify_failed(&self, session: &AuthSession, now: i64) -> Result<(), ApiError> {
        let after = self.sessions.count_failure(&session.id, self.settings.auth.session_max_failures, now).await?;
        // Only the verify that made the last allowed failure sees exactly this count.
        let max = self.settings.auth.session_max_failures;
        if after.as_ref().is_some_and(|s| s.status == SessionStatus::Locked && s.failures == max) {
            tracing::warn!(session_id = %session.id, "session locked after repeated failed verifies");
            self.otp_cache.forget(&session.id);
            METRICS.session(SessionOutcome::Locked);
            METRICS.pending_sessions.ended(&session.id);
            self.audit_event(
                kinds::AUTH_SESSION_LOCKED,
                session.device_id.as_deref().unwrap_or("-"),
                &session.token_id,
                serde_json::json!({"session_id": session.id, "service_id": session.service_id, "failures": max}),
            );
        }
        let limits = &self.settings.limits;
        let total = self
            .sessions
            .add_units(&units_key(&session.token_id), limits.verify_failure_cost, limits.failure_window)
            .await?;
        if total >= limits.failure_units {
            self.sessions.lock(&lockout_key(&session.token_id), limits.lockout).await?;
            tracing::warn!(token_id = %session.token_id, "token id locked out after repeated failures");
            METRICS.lockouts.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            self.audit_event(
                kinds::AUTH_TOKEN_LOCKED_OUT,
                "symbolon",
                &session.token_id,
                serde_json::json!({"failure_units": total, "lockout_s": limits.lockout.as_secs()}),
            );
        }
        Ok(())
    }

    /// `POST /v1/auth/verify` with the ordered checks of §5.5 and §12 rules 5 and 6.
    pub async fn verify(&self, body: &[u8], now: i64) -> Result<Verified, ApiError> {
        let (device, payload): (Arc<KnownDevice>, VerifyPayload) = self.authenticate_device(body, now).await?;
        let enrollment = &device.enrollment;
        let not_found = || ApiError::new(ErrorCode::SessionNotFound, "no such session");
        let session = self.sessions.get_session(&payload.session_id).await?.ok_or_else(not_found)?;
        if !session.is_pending(now) {
            return Err(ApiError::new(ErrorCode::SessionClosed, "the session has ended"));
        }
        if session.token_id != enrollment.token_id || session.device_id.as_deref() != Some(&enrollment.device_id) {
            return Err(not_found());
        }
        self.check_lockout(&session.token_id).await?;
        let otp = self.session_otp(&session).await?;
        if !codes_equal(&otp, &payload.otp) {
            self.verify_failed(&session, now).await?;
            return Err(ApiError::new(ErrorCode::OtpMismatch, "the code does not match"));
        }
        let mut granted_names: Vec<&'static str> = Vec::new();
        let end = match payload.decision {
            Decision::Reject => SessionEnd::Rejected,
            Decision::Approve => {
                let granted = payload.scopes.unwrap_or_default();
                granted_names = ordered_scopes(&granted);
                if granted.iter().any(|g| !session.scopes.contains(g)) {
                    self.verify_failed(&session, now).await?;
                    return Err(ApiError::new(
                        ErrorCode::InvalidScope,
                        "granted scopes must be among the requested ones",
                    ));
                }
                let id_token = self.issue_id_token(&session, enrollment, &granted, now).await?;
                SessionEnd::Approved { id_token_sealed: self.keys.seal(&session.id, id_token.into_bytes()).await? }
            }
        };
        let outcome = self.sessions.end_session(&session.id, end, now).await?;
        // Ended here or by a race: no one needs its code any more.
        self.otp_cache.forget(&session.id);
        match outcome {
            Some(Ok(ended)) => {
                let approved = ended.status == SessionStatus::Approved;
                let status = if approved { "approved" } else { "rejected" };
                METRICS.session(if approved { SessionOutcome::Approved } else { SessionOutcome::Rejected });
                METRICS.pending_sessions.ended(&ended.id);
                tracing::info!(session_id = %ended.id, outcome = status, "auth session ended");
                self.audit_event(
                    if approved { kinds::AUTH_APPROVED } else { kinds::AUTH_REJECTED },
                    &enrollment.device_id,
                    &ended.token_id,
                    serde_json::json!({"session_id": ended.id, "service_id": ended.service_id, "scopes": granted_names}),
                );
                self.note_device_use(enrollment, now);
                Ok(Verified { status })
            }
            Some(Err(_)) => Err(ApiError::new(ErrorCode::SessionClosed, "the session has ended")),
            None => Err(not_found()),
        }
    }

    /// Records that the device answered a sign-in, for operators' "last used": only
    /// when the enrollment just read says the last record is older than
    /// [`LAST_USED_GRANULARITY`], and off the response path, so a busy device costs
    /// one write per interval, not one per sign-in (docs/operations.md).
    fn note_device_use(&self, enrollment: &Enrollment, now: i64) {
        if enrollment.last_used_at.is_some_and(|t| now - t < LAST_USED_GRANULARITY) {
            return;
        }
        let (store, device_id) = (self.store.clone(), enrollment.device_id.clone());
        tokio::spawn(async move {
            if let Err(e) = store.record_device_use(&device_id, now, now - LAST_USED_GRANULARITY).await {
                tracing::warn!(error = %e, device_id = %device_id, "cannot record the device's last use");
            }
        });
    }

    /// Signs the identity token for an approved session in the HSM (§7).
    async fn issue_id_token(
        &self,
        session: &AuthSession,
        enrollment: &Enrollment,
        granted: &[String],
        now: i64,
    ) -> Result<String, ApiError> {
        let scopes = ordered_scopes(granted);
        let claims: StoredClaims = if scopes.is_empty() {
            StoredClaims::default()
        } else {
            let plain = self.keys.open_sealed(&enrollment.id, &enrollment.claims_sealed).await?;
            serde_json::from_slice(&plain).map_err(|_| ApiError::internal())?
        };
        let sub = match self.service(&session.service_id) {
            Some(service) => self.subject_for(&service, &session.token_id).await?,
            None => return Err(ApiError::new(ErrorCode::UnknownService, "the session's service is gone")),
        };
        let key = self.keys.active(KeyPurpose::Jwt)?;
        let base = IdClaims {
            iss: &self.settings.issuer,
            sub: &sub,
            aud: &session.service_id,
            iat: now,
            nbf: now,
            exp: now + self.settings.auth.token_ttl.as_secs() as i64,
            jti: crate::ids::new_id(),
            sid: &session.id,
            scope: scopes.join(" "),
            given_name: None,
            family_name: None,
            birthdate: None,
            age_over_18: None,
            age_over_21: None,
            nationality: None,
            document_type: None,
            document_number: None,
            issuing_country: None,
            document_expiry: None,
        };
        let payload = scope_claims(base, &claims, &scopes);
        let input = signing_input(&key.kid, &payload).map_err(|_| ApiError::internal())?;
        let sig = self.keys.sign_with(&key.label, input.clone().into_bytes()).await?;
        use base64::Engine;
        Ok(format!("{input}.{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sig)))
    }

    /// JWKS (§7.2): every `jwt` key in state next, active or retiring.
    pub async fn jwks(&self) -> Result<serde_json::Value, ApiError> {
        let mut keys = Vec::new();
        for e in self.keys.published(KeyPurpose::Jwt) {
            let jwk = self.keys.public_jwk(&e.label).await?;
            keys.push(serde_json::json!({
                "kty": jwk.kty, "crv": jwk.crv, "x": jwk.x, "y": jwk.y,
                "kid": e.kid, "use": "sig", "alg": "ES256",
            }));
        }
        Ok(serde_json::json!({ "keys": keys }))
    }
}
