//! Persistence. Two stores, each behind a trait so the embedded single-node default
//! and the clustered engines are interchangeable (architecture.md §Stores):
//! the durable store (enrollments, key catalog) and the session store (nonces and
//! other short-lived state with a TTL).

pub mod audit;
pub mod catalog;
pub mod config;
mod events;
mod memory;
mod postgres;
mod redis;
mod rows;
mod sqlite;

pub use audit::{AuditCheckpoint, AuditEvent, AuditRecord};
pub use catalog::{CatalogEntry, KeyPurpose, KeyState, KeyTransition};
pub use config::{DatabaseConfig, DatabaseTls, SessionStoreConfig};
pub use events::{DEFAULT_MAX_CHANNELS, EventHub, SessionEvents};
pub use memory::MemorySessionStore;
pub use postgres::PostgresStore;
pub use redis::RedisSessionStore;
pub use sqlite::SqliteStore;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::error::{ApiError, ErrorCode};

/// Durable store failures.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the token id already has an active device")]
    AlreadyEnrolled,
    #[error("database unavailable: {0}")]
    Unavailable(String),
    #[error("database error: {0}")]
    Database(String),
    #[error("migration failed: {0}")]
    Migration(String),
    #[error("stored row is malformed: {0}")]
    Corrupt(String),
    /// A key was not in the state a transition expected (another node or operator
    /// changed it first), or a second key would have become active for its purpose.
    #[error("key {0} changed state meanwhile; re-read the catalog and retry")]
    KeyStateChanged(String),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        match e {
            sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::WorkerCrashed => StoreError::Unavailable(e.to_string()),
            // PostgreSQL: connection exceptions (08), insufficient resources (53),
            // operator intervention such as a shutdown or a statement timeout (57).
            sqlx::Error::Database(ref db)
                if db.code().is_some_and(|c| c.starts_with("08") || c.starts_with("53") || c.starts_with("57")) =>
            {
                StoreError::Unavailable(e.to_string())
            }
            other => StoreError::Database(other.to_string()),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::AlreadyEnrolled => ApiError::new(
                ErrorCode::AlreadyEnrolled,
                "this token id already has an active device; an operator must revoke it first",
            ),
            StoreError::Unavailable(_) => {
                tracing::error!(error = %e, "durable store unavailable");
                ApiError::new(ErrorCode::Unavailable, "the database is not available")
            }
            other => {
                tracing::error!(error = %other, "durable store error");
                ApiError::internal()
            }
        }
    }
}

/// A stored column holding envelope text (`keys::Envelope`) sealed with its row id as AAD.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SealedColumn {
    pub table: &'static str,
    /// The row id column (also the envelope's AAD).
    pub id: &'static str,
    pub column: &'static str,
}

/// Every column holding envelopes. `keys rewrap` walks these and `keys retire` counts
/// them, so a new sealed column must be added here.
pub const SEALED_COLUMNS: [SealedColumn; 2] = [
    SealedColumn { table: "enrollments", id: "id", column: "claims_sealed" },
    SealedColumn { table: "enrollments", id: "id", column: "push_token_sealed" },
];

/// One stored envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedValue {
    pub column: SealedColumn,
    pub id: String,
    pub sealed: String,
}

/// The column of `keys` that records when a key entered `state`.
pub(crate) fn key_state_column(state: KeyState) -> &'static str {
    match state {
        KeyState::Next => "created_at",
        KeyState::Active => "activated_at",
        KeyState::Retiring => "retiring_at",
        KeyState::Retired => "retired_at",
    }
}

/// A `LIKE` pattern (backslash escapes) matching envelopes sealed under `label`.
pub(crate) fn envelope_like(label: &str) -> String {
    let mut p = String::from("v1.");
    for c in label.chars() {
        if matches!(c, '%' | '_' | '\\') {
            p.push('\\');
        }
        p.push(c);
    }
    p.push_str(".%");
    p
}

/// Status of an enrolled device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum EnrollmentStatus {
    Active,
    Suspended,
    Revoked,
}

impl EnrollmentStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            EnrollmentStatus::Active => "active",
            EnrollmentStatus::Suspended => "suspended",
            EnrollmentStatus::Revoked => "revoked",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "active" => Some(EnrollmentStatus::Active),
            "suspended" => Some(EnrollmentStatus::Suspended),
            "revoked" => Some(EnrollmentStatus::Revoked),
            _ => None,
        }
    }
}

/// An enrolled device as stored. Push token and claims stay sealed
/// (`keys::Envelope` text, the row id as AAD) until a caller opens them in the HSM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enrollment {
    pub id: String,
    pub token_id: String,
    pub device_id: String,
    /// The device public key, JWK JSON text.
    pub device_jwk: String,
    pub device_name: String,
    pub status: EnrollmentStatus,
    pub status_reason: Option<String>,
    pub push_provider: String,
    pub push_token_sealed: Option<String>,
    pub claims_sealed: String,
    /// Names of the stored claims (never their values).
    pub claim_names: Vec<String>,
    /// TSL territory of the CA that issued the credential (the token id's prefix): only
    /// that territory's VRLs may suspend it (docs/credentials.md §6 rule 10).
    pub territory: String,
    /// SHA-256 (hex) of the CA that issued the credential's signer (its TSL service), and
    /// the signer's serial (hex), so a later CRL of that CA, or a VRL its service names,
    /// can suspend this enrollment.
    pub ca_sha256: String,
    pub signer_serial: String,
    pub created_at: i64,
    pub updated_at: i64,
}

/// The durable store (SQLite for one node; PostgreSQL for a cluster).
#[async_trait]
pub trait DurableStore: Send + Sync + std::fmt::Debug {
    /// A round trip to the database.
    async fn ping(&self) -> Result<(), StoreError>;
    /// Applies pending migrations (idempotent).
    async fn migrate(&self) -> Result<(), StoreError>;

    /// Every key of the catalog.
    async fn list_keys(&self) -> Result<Vec<CatalogEntry>, StoreError>;
    /// Inserts a key; `false` when the label was already there.
    async fn insert_key(&self, entry: &CatalogEntry) -> Result<bool, StoreError>;
    /// Moves a key to `state` at `at` (no audit event; the key ring uses
    /// [`DurableStore::transition_keys`]).
    async fn set_key_state(&self, label: &str, state: KeyState, at: i64) -> Result<(), StoreError>;
    /// Inserts a key and its audit event in one transaction. `Ok(None)` when the label
    /// is in the catalog already; `KeyStateChanged` when the entry is `active` and its
    /// purpose has an active key already (the one-active index).
    async fn insert_key_audited(
        &self,
        entry: &CatalogEntry,
        event: &AuditEvent,
    ) -> Result<Option<AuditRecord>, StoreError>;
    /// Applies key state transitions in order, each only while the key is still in its
    /// `from` state, and appends `events`, all in one transaction. Nothing is applied
    /// (`KeyStateChanged`) when a key moved meanwhile or a purpose would get two
    /// active keys.
    async fn transition_keys(
        &self,
        changes: &[KeyTransition],
        events: &[AuditEvent],
    ) -> Result<Vec<AuditRecord>, StoreError>;

    /// How many stored envelopes (every [`SEALED_COLUMNS`] column) name the key `label`.
    async fn count_sealed(&self, label: &str) -> Result<i64, StoreError>;
    /// Up to `limit` envelopes of `column` that do not name `key_label`, with row ids
    /// greater than `after_id`, in id order (a resumable walk for `keys rewrap`).
    async fn sealed_page(
        &self,
        column: &SealedColumn,
        key_label: &str,
        after_id: &str,
        limit: i64,
    ) -> Result<Vec<SealedValue>, StoreError>;
    /// Replaces an envelope while it still holds `value.sealed`; `false` when the row
    /// changed (or went) meanwhile.
    async fn replace_sealed(&self, value: &SealedValue, new_sealed: &str) -> Result<bool, StoreError>;

    /// Takes or renews the lease `name` for `holder` until `until`; `false` while
    /// another holder's lease has not expired at `now`.
    async fn try_lease(&self, name: &str, holder: &str, now: i64, until: i64) -> Result<bool, StoreError>;

    /// Stores a new active enrollment; `AlreadyEnrolled` when the token id has an active
    /// or a suspended one (only revoking or deleting it frees the token id).
    async fn insert_enrollment(&self, e: &Enrollment) -> Result<(), StoreError>;
    /// The enrollment of a device id (any status).
    async fn enrollment_by_device(&self, device_id: &str) -> Result<Option<Enrollment>, StoreError>;
    /// The active enrollment of a token id.
    async fn active_enrollment(&self, token_id: &str) -> Result<Option<Enrollment>, StoreError>;
    /// Suspends the active enrollments of these token ids made in `territory` with a
    /// credential of the CA `ca_sha256` (the VRL's scope, docs/credentials.md §6 rule 10);
    /// returns those changed.
    async fn suspend_token_ids(
        &self,
        territory: &str,
        ca_sha256: &str,
        token_ids: &[String],
        reason: &str,
        at: i64,
    ) -> Result<Vec<String>, StoreError>;
    /// Suspends active enrollments whose credential signer is (ca_sha256, serial); returns
    /// the token ids changed.
    async fn suspend_signer(
        &self,
        ca_sha256: &str,
        serial: &str,
        reason: &str,
        at: i64,
    ) -> Result<Vec<String>, StoreError>;
    /// The enrollments (any status) of the first `limit` token ids greater than
    /// `after_token_id`, ordered by token id then creation (management user list).
    async fn enrollments_page(&self, after_token_id: &str, limit: i64) -> Result<Vec<Enrollment>, StoreError>;
    /// Every enrollment (any status) of a token id, oldest first.
    async fn enrollments_of(&self, token_id: &str) -> Result<Vec<Enrollment>, StoreError>;
    /// Removes every enrollment of a token id; returns how many rows went.
    async fn delete_enrollments(&self, token_id: &str) -> Result<u64, StoreError>;
    /// Moves a device's enrollment from `from` to `to` (compare and set); `false` when it
    /// was not in `from`. Activating while the token id has another active device is
    /// `AlreadyEnrolled`.
    async fn set_enrollment_status(
        &self,
        device_id: &str,
        from: EnrollmentStatus,
        to: EnrollmentStatus,
        reason: Option<&str>,
        at: i64,
    ) -> Result<bool, StoreError>;
    /// Counts rows (for tests and status): enrollments in total.
    async fn count_enrollments(&self) -> Result<i64, StoreError>;

    /// Stores a new active enrollment and its audit event in one transaction
    /// (`AlreadyEnrolled` as [`DurableStore::insert_enrollment`]).
    async fn insert_enrollment_audited(&self, e: &Enrollment, event: &AuditEvent) -> Result<AuditRecord, StoreError>;
    /// Appends an event to the audit chain (serialized across nodes by the database).
    async fn append_audit(&self, event: &AuditEvent) -> Result<AuditRecord, StoreError>;
    /// The last record's `(seq, hash)`.
    async fn audit_head(&self) -> Result<Option<(i64, String)>, StoreError>;
    /// Up to `limit` records with `seq > after_seq` and `at >= since`, in `seq` order.
    async fn audit_page(&self, after_seq: i64, since: i64, limit: i64) -> Result<Vec<AuditRecord>, StoreError>;
    /// Stores a signed checkpoint; `false` when one for that `seq` exists already.
    async fn insert_checkpoint(&self, c: &AuditCheckpoint) -> Result<bool, StoreError>;
    /// Every checkpoint, in `seq` order.
    async fn checkpoints(&self) -> Result<Vec<AuditCheckpoint>, StoreError>;
    /// The checkpoint with the highest `seq`.
    async fn last_checkpoint(&self) -> Result<Option<AuditCheckpoint>, StoreError>;
}

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
/// past its `expires_at` is expired (protocol.md §5.1).
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
    /// The identity token, once approved.
    pub id_token: Option<String>,
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
    Approved { id_token: String },
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

/// Opens the durable store named by the configuration (the default SQLite file lies
/// in `state_dir`).
pub async fn open_durable(config: &DatabaseConfig, state_dir: &Path) -> Result<Arc<dyn DurableStore>, StoreError> {
    let url = config.url_in(state_dir);
    if url.starts_with("sqlite:") {
        Ok(Arc::new(SqliteStore::open(&url, config).await?))
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Arc::new(PostgresStore::open(&url, config)?))
    } else {
        Err(StoreError::Unavailable(format!("unsupported database url scheme in {url:?}")))
    }
}

/// Opens the session store named by the configuration. A Redis store connects lazily
/// (and reconnects by itself), so a node starts while Redis is down and becomes
/// ready when it answers; it must be called inside the Tokio runtime.
/// `max_channels` bounds the session event channels this process holds.
pub fn open_session_store(
    config: &SessionStoreConfig,
    max_channels: usize,
) -> Result<Arc<dyn SessionStore>, SessionStoreError> {
    match config.url.as_str() {
        "memory://" => Ok(Arc::new(MemorySessionStore::with_max_channels(max_channels))),
        url if url.starts_with("redis://") || url.starts_with("rediss://") => {
            Ok(Arc::new(RedisSessionStore::open_with_max_channels(config, max_channels)?))
        }
        other => Err(SessionStoreError::Unavailable(format!("unsupported session store url {other:?}"))),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn envelope_patterns_escape_like_wildcards() {
        assert_eq!(super::envelope_like("symbolon-data-1"), "v1.symbolon-data-1.%");
        assert_eq!(super::envelope_like("symbolon-data_1%"), "v1.symbolon-data\\_1\\%.%");
    }
}
