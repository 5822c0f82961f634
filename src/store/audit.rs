//! Audit records as stored: the hash chain and signed checkpoints (docs/architecture.md
//! §Stores, Audit). The chain rule lives here once so that appending (in both
//! databases) and `symbolon audit verify` compute the same bytes.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::StoreError;
use sha2::{Digest, Sha256};

/// `prev_hash` of the first event: 32 zero bytes, hex.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// An event to append. `detail` is a JSON object of non-secret facts: identifiers,
/// reasons, counts. Never a secret, an OTP or a claim value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEvent {
    /// Unix seconds.
    pub at: i64,
    /// Dotted event name, e.g. `enrollment.created`.
    pub kind: String,
    /// Who caused it: `device:<id>`, `system`, `operator`, `node:<host>`.
    pub actor: String,
    /// What it is about: a token id, a session id, a key label, a list name.
    pub subject: String,
    pub detail: serde_json::Value,
}

impl AuditEvent {
    /// An event at `at` (unix seconds). `detail` must be a JSON object of non-secret facts.
    pub fn new(
        at: i64,
        kind: &str,
        actor: impl Into<String>,
        subject: impl Into<String>,
        detail: serde_json::Value,
    ) -> Self {
        Self { at, kind: kind.to_string(), actor: actor.into(), subject: subject.into(), detail }
    }
}

/// Event names (`kind`): the audit trail's vocabulary, shared by every room that records.
pub mod kinds {
    pub const ENROLLMENT_CREATED: &str = "enrollment.created";
    pub const ENROLLMENT_SUSPENDED: &str = "enrollment.suspended";
    pub const AUTH_APPROVED: &str = "auth.approved";
    pub const AUTH_REJECTED: &str = "auth.rejected";
    pub const AUTH_SESSION_LOCKED: &str = "auth.session_locked";
    pub const AUTH_TOKEN_LOCKED_OUT: &str = "auth.token_locked_out";
    pub const KEY_STATE_CHANGED: &str = "key.state_changed";
    pub const TRUST_LIST_CHANGED: &str = "trust.list_changed";
    pub const PUSH_FAILED: &str = "push.failed";
    pub const MANAGEMENT_ACTION: &str = "management.action";
    pub const RELYING_PARTIES_CHANGED: &str = "config.relying_parties_changed";
    /// `symbolon audit archive` and `audit maintain` (docs/operations.md "Audit archives
    /// and retention"): actor `operator`, subject the month.
    pub const AUDIT_ARCHIVED: &str = "audit.archived";
    pub const AUDIT_RETENTION_DROPPED: &str = "audit.retention_dropped";
    /// PostgreSQL partition maintenance created partitions or moved records out of the
    /// default one (docs/operations.md "Audit partitions").
    pub const AUDIT_PARTITIONS_MAINTAINED: &str = "audit.partitions_maintained";
    /// OpenID Connect (docs/protocol.md §14.8): actor and subject are the client id.
    pub const OIDC_CODE_ISSUED: &str = "oidc.code_issued";
    pub const OIDC_TOKEN_ISSUED: &str = "oidc.token_issued";
    pub const OIDC_CODE_REPLAYED: &str = "oidc.code_replayed";
    pub const OIDC_CLIENT_AUTH_FAILED: &str = "oidc.client_auth_failed";
}

/// The append-only audit trail: the hash chain and its signed checkpoints.
#[async_trait]
pub trait AuditStore: Send + Sync {
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
    /// The lowest `seq > after_seq` of a record with `at >= at` (where a month ends).
    async fn audit_first_at_or_after(&self, after_seq: i64, at: i64) -> Result<Option<i64>, StoreError>;
    /// Records an archive manifest; `false` when that month is recorded already.
    async fn insert_archive(&self, a: &AuditArchive) -> Result<bool, StoreError>;
    /// Every recorded archive manifest, in `first_seq` order.
    async fn archives(&self) -> Result<Vec<AuditArchive>, StoreError>;
    /// Retention of the recorded archive `archive`, in one write transaction with
    /// appending `event`. SQLite deletes every record before the archive's last one
    /// (kept as the chain anchor; the database refuses to delete a record no recorded
    /// archive covers). PostgreSQL drops the monthly partitions through the archive's
    /// month, after checking that they hold exactly the archived records
    /// ([`StoreError::Refused`] says why not). Returns the records removed and the
    /// event's record.
    async fn drop_archived(&self, archive: &AuditArchive, event: &AuditEvent)
    -> Result<(u64, AuditRecord), StoreError>;
    /// How retention removes a month on this database.
    fn retention_mechanism(&self) -> RetentionMechanism;
    /// Whether this connection may change the audit table's structure (PostgreSQL: its
    /// role owns `audit`). Always true on SQLite.
    async fn audit_owner_rights(&self) -> Result<bool, StoreError>;
    /// PostgreSQL: moves records of the default partition into monthly ones and makes
    /// sure the current and the next `ahead` months (of `now`) have a partition, under
    /// the audit lock; when it changed anything, appends an `audit.partitions_maintained`
    /// event by `actor` in the same transaction. `None` on SQLite (no partitions).
    async fn maintain_partitions(
        &self,
        now: i64,
        ahead: u32,
        actor: &str,
    ) -> Result<Option<PartitionsMaintained>, StoreError>;
}

/// How retention removes the records of archived months.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetentionMechanism {
    /// Deletes the rows, keeping the last archived record as the chain anchor (SQLite).
    DeleteRowsKeepAnchor,
    /// Drops the monthly partitions; the first live record's `prev_hash` is the last
    /// archived hash (PostgreSQL).
    DropPartitions,
}

/// What partition maintenance did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionsMaintained {
    /// Months (`YYYY-MM`) whose partition was created.
    pub created: Vec<String>,
    /// Records moved out of the default partition.
    pub moved: i64,
    /// The audit event, when anything changed.
    pub record: Option<AuditRecord>,
}

/// A month of the trail written to an archive file by `symbolon audit archive`: the
/// manifest, signed with the HSM `audit` key and recorded in the database.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditArchive {
    /// `YYYY-MM` (UTC).
    pub month: String,
    /// File name of the compressed NDJSON next to the manifest: `audit-YYYY-MM.ndjson.gz`.
    pub file: String,
    pub first_seq: i64,
    pub last_seq: i64,
    pub count: i64,
    /// `prev_hash` of the first record: the previous archive's `last_hash` (or the genesis hash).
    pub prev_hash: String,
    pub first_hash: String,
    pub last_hash: String,
    /// Hex SHA-256 of the archive file.
    pub sha256: String,
    pub created_at: i64,
    /// Label of the HSM `audit` key that signed.
    pub key_label: String,
    /// ES256 signature (raw r||s, base64url) over [`AuditArchive::message`].
    pub signature: String,
}

impl AuditArchive {
    /// The message the manifest's signature covers: JCS of every field but the signature.
    pub fn message(&self) -> Vec<u8> {
        let value = serde_json::json!({
            "type": "symbolon.audit.archive",
            "month": self.month,
            "file": self.file,
            "first_seq": self.first_seq,
            "last_seq": self.last_seq,
            "count": self.count,
            "prev_hash": self.prev_hash,
            "first_hash": self.first_hash,
            "last_hash": self.last_hash,
            "sha256": self.sha256,
            "created_at": self.created_at,
            "key": self.key_label,
        });
        serde_json_canonicalizer::to_vec(&value).unwrap_or_else(|_| value.to_string().into_bytes())
    }
}

/// An appended event with its place in the chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AuditRecord {
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

/// A signed statement that the chain's record `seq` has hash `hash`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditCheckpoint {
    pub seq: i64,
    pub hash: String,
    pub at: i64,
    /// Label of the HSM `audit` key that signed.
    pub key_label: String,
    /// ES256 signature (raw r||s, base64url) over [`checkpoint_message`].
    pub signature: String,
}

/// The bytes an event is hashed over: RFC 8785 (JCS) JSON of its fields and `seq`.
pub fn canonical_bytes(seq: i64, e: &AuditEvent) -> Vec<u8> {
    let value = serde_json::json!({
        "v": 1,
        "seq": seq,
        "at": e.at,
        "kind": e.kind,
        "actor": e.actor,
        "subject": e.subject,
        "detail": e.detail,
    });
    // JCS of a json! value cannot fail (no non-finite numbers, string keys only); fall
    // back to serde's compact form to keep this infallible anyway.
    serde_json_canonicalizer::to_vec(&value).unwrap_or_else(|_| value.to_string().into_bytes())
}

/// `hash` of the event `seq` following `prev_hash`; `None` when `prev_hash` is not 64 hex digits.
pub fn chain_hash(prev_hash: &str, seq: i64, e: &AuditEvent) -> Option<String> {
    let prev = hex_decode(prev_hash)?;
    if prev.len() != 32 {
        return None;
    }
    let mut h = Sha256::new();
    h.update(&prev);
    h.update(canonical_bytes(seq, e));
    Some(hex(&h.finalize()))
}

/// Builds the record for `event` after the chain head `(seq, hash)` (`None`: empty chain).
pub fn next_record(head: Option<(i64, String)>, event: &AuditEvent) -> Result<AuditRecord, String> {
    let (seq, prev_hash) = match head {
        Some((seq, hash)) => (seq + 1, hash),
        None => (1, GENESIS_HASH.to_string()),
    };
    let hash = chain_hash(&prev_hash, seq, event).ok_or_else(|| format!("audit record {} has a bad hash", seq - 1))?;
    Ok(AuditRecord {
        seq,
        at: event.at,
        kind: event.kind.clone(),
        actor: event.actor.clone(),
        subject: event.subject.clone(),
        detail: event.detail.clone(),
        prev_hash,
        hash,
    })
}

impl AuditRecord {
    /// The event part of the record.
    pub fn event(&self) -> AuditEvent {
        AuditEvent {
            at: self.at,
            kind: self.kind.clone(),
            actor: self.actor.clone(),
            subject: self.subject.clone(),
            detail: self.detail.clone(),
        }
    }

    /// The detail as stored: canonical JSON text.
    pub fn detail_text(&self) -> String {
        serde_json_canonicalizer::to_string(&self.detail).unwrap_or_else(|_| self.detail.to_string())
    }
}

/// The message a checkpoint signs.
pub fn checkpoint_message(seq: i64, hash: &str, at: i64, key_label: &str) -> Vec<u8> {
    let value = serde_json::json!({
        "type": "symbolon.audit.checkpoint",
        "seq": seq,
        "hash": hash,
        "at": at,
        "key": key_label,
    });
    serde_json_canonicalizer::to_vec(&value).unwrap_or_else(|_| value.to_string().into_bytes())
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn hex_decode(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: &str) -> AuditEvent {
        AuditEvent {
            at: 1_763_800_000,
            kind: kind.into(),
            actor: "system".into(),
            subject: "tok".into(),
            detail: serde_json::json!({"b": 1, "a": "x"}),
        }
    }

    #[test]
    fn chain_links_and_detects_changes() {
        let first = next_record(None, &event("a.b")).unwrap();
        assert_eq!(first.seq, 1);
        assert_eq!(first.prev_hash, GENESIS_HASH);
        let second = next_record(Some((1, first.hash.clone())), &event("c.d")).unwrap();
        assert_eq!(second.prev_hash, first.hash);
        assert_eq!(chain_hash(&second.prev_hash, 2, &second.event()).unwrap(), second.hash);
        let mut changed = second.event();
        changed.subject = "other".into();
        assert_ne!(chain_hash(&second.prev_hash, 2, &changed).unwrap(), second.hash);
        assert!(chain_hash("zz", 1, &changed).is_none());
    }
}
