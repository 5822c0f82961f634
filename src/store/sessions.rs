//! The session store's contract: authentication sessions, nonces, counters and
//! single-use values with a TTL, every operation atomic (memory for one node, Redis
//! for a cluster).

use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::SessionEvents;
use crate::error::{ApiError, ErrorCode};

/// Session-store failures.
#[derive(Debug, thiserror::Error)]
pub enum SessionStoreError {
    #[error("session store unavailable: {0}")]
    Unavailable(String),
    /// The process holds as many session event channels as it may.
    #[error("too many session event channels are open")]
    Full,
}

impl From<SessionStoreError> for ApiError {
    fn from(e: SessionStoreError) -> Self {
        match e {
            SessionStoreError::Full => {
                tracing::warn!(error = %e, "browser channel refused");
                ApiError::new(ErrorCode::Overloaded, "too many browser channels are open, retry shortly")
            }
            SessionStoreError::Unavailable(_) => {
                tracing::error!(error = %e, "session store unavailable");
                ApiError::new(ErrorCode::Unavailable, "the session store is not available")
            }
        }
    }
}

/// State of an authentication session. `expired` is not stored: a pending session
/// past its `expires_at` is expired (docs/protocol.md §5.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SessionStatus {
    Pending,
    Approved,
    Rejected,
    Locked,
}

/// An authentication session as the session store keeps it. The OTP is not in it:
/// it is recomputed in the HSM from `created_at` and the key named by `otp_key`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthSession {
    pub id: String,
    /// SHA-256 (hex) of the browser token; the token itself is never stored.
    pub browser_token_sha256: String,
    pub token_id: String,
    pub service_id: String,
    /// Requested scopes, in §7.3 order.
    pub scopes: Vec<String>,
    pub created_at: i64,
    pub expires_at: i64,
    /// Label of the OTP key used (sessions survive key rotation).
    pub otp_key: String,
    pub otp_digits: u8,
    /// The enrolled device the session is for; `None` for an unknown or inactive
    /// token id (such a session can only expire).
    pub device_id: Option<String>,
    pub status: SessionStatus,
    /// Failed verifies so far (5 lock the session).
    pub failures: u32,
    /// The identity token once approved, sealed under the data key with the session id
    /// as associated data (an envelope, docs/architecture.md): the session store never
    /// holds a signed token in clear.
    #[serde(default)]
    pub id_token_sealed: Option<String>,
    pub ended_at: Option<i64>,
}

impl AuthSession {
    /// Pending and not past its expiry.
    pub fn is_pending(&self, now: i64) -> bool {
        self.status == SessionStatus::Pending && now < self.expires_at
    }
}

/// How a session ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionEnd {
    /// The identity token sealed as in [`AuthSession::id_token_sealed`].
    Approved {
        id_token_sealed: String,
    },
    Rejected,
    Locked,
}

/// Short-lived shared state with TTLs, every operation atomic (memory for one node,
/// Redis for a cluster).
#[async_trait]
pub trait SessionStore: Send + Sync + std::fmt::Debug {
    async fn ping(&self) -> Result<(), SessionStoreError>;

    /// Stores a new session unless its token id already has `max_pending` pending
    /// sessions (then `false`). The record lives until `keep_until` (unix seconds).
    async fn create_session(
        &self,
        session: &AuthSession,
        max_pending: u32,
        now: i64,
        keep_until: i64,
    ) -> Result<bool, SessionStoreError>;
    /// A session by id, while it is kept.
    async fn get_session(&self, id: &str) -> Result<Option<AuthSession>, SessionStoreError>;
    /// The pending sessions of a token id.
    async fn pending_sessions(&self, token_id: &str, now: i64) -> Result<Vec<AuthSession>, SessionStoreError>;
    /// Atomically ends a pending session. `Ok(session)` when this call ended it;
    /// `Err(session)` when it had already ended or expired (the caller lost the race).
    async fn end_session(
        &self,
        id: &str,
        end: SessionEnd,
        now: i64,
    ) -> Result<Option<Result<AuthSession, AuthSession>>, SessionStoreError>;
    /// Atomically counts one failed verify on a pending session and locks it when
    /// the count reaches `lock_at`. Returns the session after the change, or `None`
    /// when it is unknown; a session that is no longer pending is returned unchanged.
    async fn count_failure(&self, id: &str, lock_at: u32, now: i64) -> Result<Option<AuthSession>, SessionStoreError>;
    /// Notifications for a session: a message each time it ends. Subscribe before
    /// reading the session to not miss an end that happens in between. The channel
    /// lives while the returned listener does; `Full` past the process's cap.
    async fn subscribe(&self, id: &str) -> Result<SessionEvents, SessionStoreError>;
    /// Session event channels this process holds now (a metrics gauge).
    fn event_channels(&self) -> usize;

    /// Announces to every other process sharing this store that the enrollments of
    /// `token_ids` changed (their enrollment caches forget them). A store that no other
    /// process shares (memory) has no one to tell.
    async fn publish_enrollment_change(&self, _token_ids: &[String]) -> Result<(), SessionStoreError> {
        Ok(())
    }
    /// The changes other processes announce, and `All` whenever some may have been
    /// missed; `None` where no other process can announce any (memory).
    fn watch_enrollment_changes(&self) -> Option<tokio::sync::broadcast::Receiver<super::EnrollmentChange>> {
        None
    }
    /// Whether announcements of other processes reach this one now (Redis: the event
    /// subscription is up). While not, enrollments must be read from the database.
    fn hears_enrollment_changes(&self) -> bool {
        true
    }

    /// Adds `units` to the sliding window of `key` and returns the window's total.
    async fn add_units(&self, key: &str, units: u32, window: Duration) -> Result<u32, SessionStoreError>;
    /// Locks `key` for `ttl`.
    async fn lock(&self, key: &str, ttl: Duration) -> Result<(), SessionStoreError>;
    /// Time left on a lock of `key`.
    async fn lock_remaining(&self, key: &str) -> Result<Option<Duration>, SessionStoreError>;
    /// Records a single-use nonce for `ttl`.
    async fn put_nonce(&self, nonce: &str, ttl: Duration) -> Result<(), SessionStoreError>;
    /// Consumes a nonce: `true` exactly once while it lives.
    async fn take_nonce(&self, nonce: &str) -> Result<bool, SessionStoreError>;
    /// Stores a small value under `key` for `ttl`, replacing any previous one.
    async fn put_value(&self, key: &str, value: &str, ttl: Duration) -> Result<(), SessionStoreError>;
    /// Removes and returns the value of `key` while it lives: a value is taken at most
    /// once (single-use context, e.g. a pending SAML sign-in).
    async fn take_value(&self, key: &str) -> Result<Option<String>, SessionStoreError>;
    /// The value of `key` while it lives, left in place (e.g. an access token read at
    /// each userinfo request until it expires or is taken).
    async fn get_value(&self, key: &str) -> Result<Option<String>, SessionStoreError>;
    /// Sessions still kept, ordered by [`session_position`], starting after the position
    /// `after` (or at `since`, unix seconds, when it is later): one page of at most `limit`.
    async fn list_sessions(
        &self,
        since: i64,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<AuthSession>, SessionStoreError>;
    /// Sliding-window counter: records one hit for `key` and tells whether the window
    /// (`limit` hits per `window`) still allows it; when not, how long until it does.
    async fn hit(&self, key: &str, limit: u32, window: Duration) -> Result<Result<(), Duration>, SessionStoreError>;

    /// Adds (or replaces) `member` with `value` in the bounded set `key`; the member
    /// lives until `expires_at` (unix seconds). The set keeps at most `max` members:
    /// past that, those that expire first are dropped (e.g. the SAML SP sessions of one
    /// person, docs/protocol.md §8.1).
    async fn put_member(
        &self,
        key: &str,
        member: &str,
        value: &str,
        expires_at: i64,
        max: usize,
    ) -> Result<(), SessionStoreError>;
    /// The live members of the set `key` at `now` (unix seconds): (member, value, expires_at),
    /// in expiry order.
    async fn members(&self, key: &str, now: i64) -> Result<Vec<Member>, SessionStoreError>;
    /// Removes `member` from the set `key` and returns its value if it was still live.
    async fn take_member(&self, key: &str, member: &str, now: i64) -> Result<Option<String>, SessionStoreError>;
}

/// One member of a bounded set ([`SessionStore::put_member`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub member: String,
    pub value: String,
    /// Unix seconds.
    pub expires_at: i64,
}

/// The listing order of sessions: creation time, then id. Also the management API's
/// cursor (opaque to clients).
pub fn session_position(created_at: i64, id: &str) -> String {
    format!("{:020}:{id}", created_at.max(0))
}

/// The first position of sessions created at or after `since`.
pub fn session_position_since(since: i64) -> String {
    format!("{:020}:", since.max(0))
}

/// Sessions kept in the listing index at most (Redis); older entries are dropped
/// from the index first (the sessions themselves expire on their own).
pub const SESSION_INDEX_MAX: usize = 100_000;
