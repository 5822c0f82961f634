//! What the management API does (docs/protocol.md §11): read and delete users (token ids
//! with their enrolled devices), suspend, activate and revoke credentials, list
//! authentication flows and the audit trail. Views carry claim names, states and
//! dates only: never claim values, push tokens, OTPs or identity tokens.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Serialize;

use std::sync::Arc;

use super::audit::Audit;
use super::enrollment_cache::{EnrollmentCache, announce};
use crate::error::{ApiError, ErrorCode};
use crate::store::audit::kinds;
use crate::store::{
    AuditEvent, AuditRecord, AuthSession, DurableStore, Enrollment, EnrollmentStatus, SessionStatus, SessionStore,
    session_position,
};

/// Page size when a request names none, and the largest allowed.
pub const DEFAULT_LIMIT: u32 = 50;
pub const MAX_LIMIT: u32 = 200;

/// Sessions read per store call while filtering flows, and calls per request at most
/// (a sparse filter returns a short page with a cursor rather than scan without bound).
const FLOW_BATCH: usize = 200;
const FLOW_BATCHES: usize = 10;

/// An enrolled device (a credential) as operators see it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct CredentialView {
    pub device_id: String,
    pub token_id: String,
    pub device_name: String,
    pub status: EnrollmentStatus,
    pub status_reason: Option<String>,
    pub push_provider: String,
    /// A push token is registered (the token itself is never shown).
    pub push_registered: bool,
    /// Names of the stored claims (never their values).
    pub claim_names: Vec<String>,
    pub created_at: i64,
    pub updated_at: i64,
    /// When the device last answered a sign-in (approved or rejected), to within 5
    /// minutes; absent when never.
    pub last_used_at: Option<i64>,
}

impl From<&Enrollment> for CredentialView {
    fn from(e: &Enrollment) -> Self {
        Self {
            device_id: e.device_id.clone(),
            token_id: e.token_id.clone(),
            device_name: e.device_name.clone(),
            status: e.status,
            status_reason: e.status_reason.clone(),
            push_provider: e.push_provider.clone(),
            push_registered: e.push_token_sealed.is_some(),
            claim_names: e.claim_names.clone(),
            created_at: e.created_at,
            updated_at: e.updated_at,
            last_used_at: e.last_used_at,
        }
    }
}

/// An appended audit event with its place in the chain, as the management API lists it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[schema(as = AuditRecord)]
pub struct AuditEntry {
    pub seq: i64,
    pub at: i64,
    pub kind: String,
    pub actor: String,
    pub subject: String,
    /// Facts of the event (identifiers and reasons; never secrets or claim values).
    #[schema(value_type = Object)]
    pub detail: serde_json::Value,
    /// Hex SHA-256 of the previous record (or [`GENESIS_HASH`]).
    pub prev_hash: String,
    /// Hex SHA-256 over the raw `prev_hash` bytes and [`canonical_bytes`].
    pub hash: String,
}

impl From<AuditRecord> for AuditEntry {
    fn from(r: AuditRecord) -> Self {
        let AuditRecord { seq, at, kind, actor, subject, detail, prev_hash, hash } = r;
        Self { seq, at, kind, actor, subject, detail, prev_hash, hash }
    }
}

/// A user: a token id and every device enrolled for it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct UserView {
    pub token_id: String,
    /// One of the devices is active.
    pub enrolled: bool,
    pub devices: Vec<CredentialView>,
    /// First enrollment.
    pub created_at: i64,
    /// Latest change to any device.
    pub updated_at: i64,
}

impl UserView {
    fn from_enrollments(token_id: String, enrollments: &[Enrollment]) -> Self {
        Self {
            token_id,
            enrolled: enrollments.iter().any(|e| e.status == EnrollmentStatus::Active),
            devices: enrollments.iter().map(CredentialView::from).collect(),
            created_at: enrollments.iter().map(|e| e.created_at).min().unwrap_or_default(),
            updated_at: enrollments.iter().map(|e| e.updated_at).max().unwrap_or_default(),
        }
    }
}

/// A flow's state as listed; `expired` is a pending session past its expiry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum FlowStatus {
    Pending,
    Approved,
    Rejected,
    Locked,
    Expired,
}

impl FlowStatus {
    /// Parses the `status` query value.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pending" => FlowStatus::Pending,
            "approved" => FlowStatus::Approved,
            "rejected" => FlowStatus::Rejected,
            "locked" => FlowStatus::Locked,
            "expired" => FlowStatus::Expired,
            _ => return None,
        })
    }

    fn of(session: &AuthSession, now: i64) -> Self {
        match session.status {
            SessionStatus::Pending if now >= session.expires_at => FlowStatus::Expired,
            SessionStatus::Pending => FlowStatus::Pending,
            SessionStatus::Approved => FlowStatus::Approved,
            SessionStatus::Rejected => FlowStatus::Rejected,
            SessionStatus::Locked => FlowStatus::Locked,
        }
    }
}

/// An authentication flow: service, state and times. No token id, OTP or identity token.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct FlowView {
    pub id: String,
    pub service_id: String,
    pub status: FlowStatus,
    pub scopes: Vec<String>,
    pub failures: u32,
    pub created_at: i64,
    pub expires_at: i64,
    pub ended_at: Option<i64>,
}

/// One page of a listing; `next_cursor` is absent on the last page.
#[derive(Debug, Clone, Serialize)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

/// Who makes a management call, for its audit event.
#[derive(Debug, Clone, Copy)]
pub struct OperatorCall<'a> {
    /// The operator (`operator:<sub>` of the token, `break-glass`, or `cli:<unix user>`).
    pub actor: &'a str,
    /// How the operator authenticated: `oidc`, `break_glass` or `cli`.
    pub auth: &'a str,
    /// Why, in the operator's words (suspend, activate, revoke, delete): kept in the
    /// audit event, at most [`MAX_REASON`] characters, no control characters.
    pub reason: Option<&'a str>,
}

/// The longest reason an operator may give.
pub const MAX_REASON: usize = 200;

impl OperatorCall<'_> {
    /// The audit detail of a call: action, outcome (HTTP status), how the operator
    /// authenticated, the reason given, and for a deletion the device ids removed.
    pub(super) fn detail(&self, action: &str, status: u16, devices: &[String]) -> serde_json::Value {
        let mut detail = serde_json::json!({"action": action, "status": status, "auth": self.auth});
        if action == "users.delete" {
            detail["devices"] = serde_json::json!(devices);
        }
        if let Some(reason) = self.reason {
            detail["reason"] = serde_json::json!(reason);
        }
        detail
    }

    /// `400 invalid_request` for a reason that is too long or holds control characters.
    pub(super) fn check_reason(&self) -> Result<(), ApiError> {
        match self.reason {
            Some(r) if r.chars().count() > MAX_REASON => {
                Err(ApiError::invalid_request(format!("reason must be at most {MAX_REASON} characters")))
            }
            Some(r) if r.chars().any(char::is_control) => {
                Err(ApiError::invalid_request("reason must not hold control characters"))
            }
            _ => Ok(()),
        }
    }
}

/// What an operator does to a credential.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialAction {
    Suspend,
    Activate,
    Revoke,
}

impl CredentialAction {
    /// The action's name in scopes and audit events.
    pub fn as_str(self) -> &'static str {
        match self {
            CredentialAction::Suspend => "suspend",
            CredentialAction::Activate => "activate",
            CredentialAction::Revoke => "revoke",
        }
    }
}

/// A credential after an action, and whether the action changed it (`false`: it was
/// in that state already, nothing was written and no event was audited).
#[derive(Debug, Clone)]
pub struct ActionOutcome {
    pub credential: CredentialView,
    pub changed: bool,
}

/// The management operations over the stores and the audit trail. The management API,
/// the operator console and the command line (`symbolon users`, `symbolon flows`) all
/// act through it, so one set of rules and audit events holds for each of them.
#[derive(Clone)]
pub struct Management {
    store: Arc<dyn DurableStore>,
    sessions: Arc<dyn SessionStore>,
    audit: Audit,
    /// Forgets (and announces to the other nodes) enrollments this changes.
    enrollments: Arc<EnrollmentCache>,
}

impl std::fmt::Debug for Management {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Management").finish_non_exhaustive()
    }
}

fn encode_cursor(position: &str) -> String {
    URL_SAFE_NO_PAD.encode(position)
}

fn decode_cursor(cursor: &str) -> Result<String, ApiError> {
    URL_SAFE_NO_PAD
        .decode(cursor)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(|| ApiError::invalid_request("cursor is not one this server returned"))
}

fn not_found(what: &str) -> ApiError {
    ApiError::new(ErrorCode::NotFound, format!("no such {what}"))
}

impl Management {
    pub fn new(
        store: Arc<dyn DurableStore>,
        sessions: Arc<dyn SessionStore>,
        audit: Audit,
        enrollments: Arc<EnrollmentCache>,
    ) -> Self {
        Self { store, sessions, audit, enrollments }
    }

    /// Users ordered by token id, `limit` per page.
    pub async fn users(&self, cursor: Option<&str>, limit: u32) -> Result<Page<UserView>, ApiError> {
        let after = cursor.map(decode_cursor).transpose()?.unwrap_or_default();
        let enrollments = self.store.enrollments_page(&after, i64::from(limit) + 1).await?;
        let mut users: Vec<UserView> = Vec::new();
        for chunk in enrollments.chunk_by(|a, b| a.token_id == b.token_id) {
            users.push(UserView::from_enrollments(chunk[0].token_id.clone(), chunk));
        }
        let next_cursor = if users.len() > limit as usize {
            users.truncate(limit as usize);
            users.last().map(|u| encode_cursor(&u.token_id))
        } else {
            None
        };
        Ok(Page { items: users, next_cursor })
    }

    /// One user; `404 not_found` when the token id has no enrollment.
    pub async fn user(&self, token_id: &str) -> Result<UserView, ApiError> {
        let enrollments = self.store.enrollments_of(token_id).await?;
        if enrollments.is_empty() {
            return Err(not_found("user"));
        }
        Ok(UserView::from_enrollments(token_id.to_string(), &enrollments))
    }

    /// Removes every enrollment of a token id (sealed claims and push token included)
    /// and returns the device ids removed. The deletion and its audit event (the device
    /// ids and the reason, never the token id) commit in one transaction or not at all.
    /// `404 not_found` when there is none, without an audit event: a repeated deletion
    /// changes nothing and writes nothing. Another refusal is audited on its own.
    pub async fn delete_user(&self, token_id: &str, by: &OperatorCall<'_>) -> Result<Vec<String>, ApiError> {
        if let Err(e) = by.check_reason() {
            return self.refused(by, "users", "users.delete", e).await;
        }
        let now = crate::ids::now_unix();
        let event = |devices: &[String]| {
            AuditEvent::new(now, kinds::MANAGEMENT_ACTION, by.actor, "users", by.detail("users.delete", 204, devices))
        };
        match self.store.delete_enrollments_audited(token_id, &event).await {
            Ok(Some((devices, record))) => {
                self.audit.appended(&record);
                announce(&self.enrollments, self.sessions.as_ref(), &[token_id.to_string()]).await;
                Ok(devices)
            }
            Ok(None) => Err(not_found("user")),
            Err(e) => self.refused(by, "users", "users.delete", e.into()).await,
        }
    }

    /// Audits a management change that did not happen (with the status it answers)
    /// and returns its error.
    pub(super) async fn refused<T>(
        &self,
        by: &OperatorCall<'_>,
        subject: &str,
        action: &str,
        e: ApiError,
    ) -> Result<T, ApiError> {
        self.record(by.actor, subject, by.detail(action, e.code.status(), &[])).await?;
        Err(e)
    }

    /// One credential by device id.
    pub async fn credential(&self, device_id: &str) -> Result<CredentialView, ApiError> {
        let e = self.store.enrollment_by_device(device_id).await?.ok_or_else(|| not_found("credential"))?;
        Ok(CredentialView::from(&e))
    }

    /// Suspends, activates or revokes a credential. Idempotent: when the credential is in
    /// that state already nothing is written and no event is audited (`changed` is
    /// false). A revoked credential stays revoked (`409 invalid_state`); activating
    /// while the token id has another active device is `409 already_enrolled`. A change
    /// and its audit event (with the reason given) commit in one transaction or not at
    /// all; a refusal is audited on its own.
    pub async fn change_credential(
        &self,
        device_id: &str,
        action: CredentialAction,
        by: &OperatorCall<'_>,
        now: i64,
    ) -> Result<ActionOutcome, ApiError> {
        let name = format!("credentials.{}", action.as_str());
        match self.apply(device_id, action, by, &name, now).await {
            Ok(outcome) => Ok(outcome),
            Err(e) => self.refused(by, device_id, &name, e).await,
        }
    }

    /// The change itself.
    async fn apply(
        &self,
        device_id: &str,
        action: CredentialAction,
        by: &OperatorCall<'_>,
        name: &str,
        now: i64,
    ) -> Result<ActionOutcome, ApiError> {
        by.check_reason()?;
        let e = self.store.enrollment_by_device(device_id).await?.ok_or_else(|| not_found("credential"))?;
        let (to, status_reason) = match action {
            CredentialAction::Suspend => (EnrollmentStatus::Suspended, Some("suspended by an operator")),
            CredentialAction::Activate => (EnrollmentStatus::Active, None),
            CredentialAction::Revoke => (EnrollmentStatus::Revoked, Some("revoked by an operator")),
        };
        if e.status == to {
            return Ok(ActionOutcome { credential: CredentialView::from(&e), changed: false });
        }
        if e.status == EnrollmentStatus::Revoked {
            return Err(ApiError::new(ErrorCode::InvalidState, "the credential is revoked; revocation is final"));
        }
        let event = AuditEvent::new(now, kinds::MANAGEMENT_ACTION, by.actor, device_id, by.detail(name, 200, &[]));
        let Some(record) =
            self.store.set_enrollment_status_audited(device_id, e.status, to, status_reason, now, &event).await?
        else {
            return Err(ApiError::new(ErrorCode::InvalidState, "the credential changed meanwhile; read it again"));
        };
        self.audit.appended(&record);
        announce(&self.enrollments, self.sessions.as_ref(), std::slice::from_ref(&e.token_id)).await;
        let changed = self.store.enrollment_by_device(device_id).await?.ok_or_else(|| not_found("credential"))?;
        Ok(ActionOutcome { credential: CredentialView::from(&changed), changed: true })
    }

    /// Authentication flows still kept by the session store, oldest first, from `since`.
    pub async fn flows(
        &self,
        status: Option<FlowStatus>,
        since: i64,
        cursor: Option<&str>,
        limit: u32,
        now: i64,
    ) -> Result<Page<FlowView>, ApiError> {
        let mut after = cursor.map(decode_cursor).transpose()?;
        let mut items = Vec::new();
        for _ in 0..FLOW_BATCHES {
            let batch = self.sessions.list_sessions(since, after.as_deref(), FLOW_BATCH).await?;
            let last_batch = batch.len() < FLOW_BATCH;
            for s in batch {
                after = Some(session_position(s.created_at, &s.id));
                let flow_status = FlowStatus::of(&s, now);
                if status.is_some_and(|want| want != flow_status) {
                    continue;
                }
                items.push(FlowView {
                    id: s.id,
                    service_id: s.service_id,
                    status: flow_status,
                    scopes: s.scopes,
                    failures: s.failures,
                    created_at: s.created_at,
                    expires_at: s.expires_at,
                    ended_at: s.ended_at,
                });
                if items.len() == limit as usize {
                    return Ok(Page { items, next_cursor: after.as_deref().map(encode_cursor) });
                }
            }
            if last_batch {
                return Ok(Page { items, next_cursor: None });
            }
        }
        Ok(Page { items, next_cursor: after.as_deref().map(encode_cursor) })
    }

    /// Audit records from `since`, in chain order; the cursor is the last `seq` seen.
    pub async fn audit_events(
        &self,
        since: i64,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<Page<AuditEntry>, ApiError> {
        let after = match cursor {
            Some(c) => decode_cursor(c)?
                .parse::<i64>()
                .map_err(|_| ApiError::invalid_request("cursor is not one this server returned"))?,
            None => 0,
        };
        let mut items = self.store.audit_page(after, since, i64::from(limit) + 1).await?;
        let next_cursor = if items.len() > limit as usize {
            items.truncate(limit as usize);
            items.last().map(|r| encode_cursor(&r.seq.to_string()))
        } else {
            None
        };
        Ok(Page { items: items.into_iter().map(AuditEntry::from).collect(), next_cursor })
    }

    /// Audits a read (`users.list`, `users.get`, `credentials.get`, `flows.list`,
    /// `audit.list`) with its outcome, then returns that outcome: a read that cannot
    /// be audited is reported as failed.
    pub async fn audited<T>(
        &self,
        by: &OperatorCall<'_>,
        action: &str,
        subject: &str,
        result: Result<T, ApiError>,
    ) -> Result<T, ApiError> {
        let status = match &result {
            Ok(_) => 200,
            Err(e) => e.code.status(),
        };
        self.record(by.actor, subject, by.detail(action, status, &[])).await?;
        result
    }

    /// Records a management call in the audit trail and waits for it: an operator
    /// action that cannot be audited is reported as failed.
    pub async fn record(&self, actor: &str, subject: &str, detail: serde_json::Value) -> Result<(), ApiError> {
        let event = AuditEvent::new(crate::ids::now_unix(), kinds::MANAGEMENT_ACTION, actor, subject, detail);
        self.audit.record(event).await?;
        Ok(())
    }
}
