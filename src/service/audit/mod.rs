//! The audit trail (docs/architecture.md §Stores, Audit): recording events, signing
//! checkpoints with the HSM `audit` key, verifying the chain and exporting it.
//!
//! Events carry identifiers and reasons only: never a secret, an OTP, a push token
//! or a claim value.

pub mod archive;
pub mod cli;
mod gzip;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use p256::ecdsa::signature::Verifier;

use crate::keyring::{KeyError, KeyPurpose, KeyRing};
use crate::service::config::AuditConfig;
use crate::store::audit::{GENESIS_HASH, chain_hash, checkpoint_message};
use crate::store::{AuditCheckpoint, AuditEvent, AuditRecord, DurableStore, StoreError};

/// Failures of checkpointing and verification.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("HSM: {0}")]
    Key(#[from] KeyError),
    /// Archiving or retention cannot proceed; the message says why.
    #[error("{0}")]
    Archive(String),
}

/// The handle every part of the server records audit events through. Cheap to clone.
#[derive(Clone)]
pub struct Audit {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn DurableStore>,
    /// `None` for a command-line appender: it signs no checkpoint, the server's
    /// checkpoint loop covers its events later.
    keys: Option<KeyRing>,
    every: i64,
    interval: std::time::Duration,
    /// `audit.partition_interval`.
    partition_interval: std::time::Duration,
    /// Highest `seq` known to be checkpointed (by any node), 0 before the first look.
    checkpointed: AtomicI64,
    /// Highest `seq` this process appended.
    appended: AtomicI64,
    /// A checkpoint is being signed by this process (one at a time is enough).
    signing: AtomicBool,
    /// The last append of this process failed: the database is not taking events.
    failing: AtomicBool,
}

impl std::fmt::Debug for Audit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Audit").field("every", &self.inner.every).finish_non_exhaustive()
    }
}

impl Audit {
    pub fn new(store: Arc<dyn DurableStore>, keys: KeyRing, config: &AuditConfig) -> Self {
        Self {
            inner: Arc::new(Inner {
                store,
                keys: Some(keys),
                every: i64::from(config.checkpoint_every.max(1)),
                interval: config.checkpoint_interval,
                partition_interval: config.partition_interval,
                checkpointed: AtomicI64::new(0),
                appended: AtomicI64::new(0),
                signing: AtomicBool::new(false),
                failing: AtomicBool::new(false),
            }),
        }
    }

    /// An audit handle that appends events and signs no checkpoint, for commands that
    /// change the store without opening the HSM (`symbolon users`): a running server's
    /// checkpoint loop (`audit.checkpoint_interval`) signs over their events later.
    pub fn appender(store: Arc<dyn DurableStore>) -> Self {
        Self {
            inner: Arc::new(Inner {
                store,
                keys: None,
                every: i64::MAX,
                interval: std::time::Duration::from_secs(3600),
                partition_interval: std::time::Duration::from_secs(3600),
                checkpointed: AtomicI64::new(0),
                appended: AtomicI64::new(0),
                signing: AtomicBool::new(false),
                failing: AtomicBool::new(false),
            }),
        }
    }

    /// Appends an event and signs a checkpoint (in the background) when one is due.
    pub async fn record(&self, event: AuditEvent) -> Result<AuditRecord, StoreError> {
        let appended = self.inner.store.append_audit(&event).await;
        self.inner.failing.store(appended.is_err(), Ordering::Relaxed);
        let record = appended?;
        self.appended(&record);
        Ok(record)
    }

    /// Whether this process's last append failed. The sign-in path then reads
    /// enrollments from the database rather than its cache, so that sign-ins stop
    /// (`503 unavailable`) rather than go on unaudited while the database is away.
    pub fn is_failing(&self) -> bool {
        self.inner.failing.load(Ordering::Relaxed)
    }

    /// Appends an event without waiting; a failure is logged (with the event's kind and
    /// subject) and does not fail the caller. For outcomes that must not be held up
    /// by the database, e.g. a push failure in a retry task.
    pub fn record_detached(&self, event: AuditEvent) {
        let audit = self.clone();
        tokio::spawn(async move {
            let (kind, subject) = (event.kind.clone(), event.subject.clone());
            if let Err(e) = audit.record(event).await {
                tracing::error!(error = %e, kind = %kind, subject = %subject, "cannot append audit event");
            }
        });
    }

    /// To call after an event was appended by the store together with a change (e.g.
    /// `insert_enrollment_audited`): signs a checkpoint when one is due.
    ///
    /// One signer runs at a time. Events appended while it signs are not lost: when it
    /// is done it looks again and signs once more if another checkpoint is due by then.
    pub fn appended(&self, record: &AuditRecord) {
        if self.inner.keys.is_none() {
            return;
        }
        self.inner.appended.fetch_max(record.seq, Ordering::Relaxed);
        if !self.claim_due_checkpoint() {
            return;
        }
        let audit = self.clone();
        tokio::spawn(async move {
            loop {
                let signed = audit.checkpoint(crate::ids::now_unix()).await;
                audit.inner.signing.store(false, Ordering::Release);
                if let Err(e) = signed {
                    // The interval loop retries; no hot loop against a failing HSM.
                    tracing::error!(error = %e, "cannot sign an audit checkpoint");
                    break;
                }
                if !audit.claim_due_checkpoint() {
                    break;
                }
            }
        });
    }

    /// True when a checkpoint is due and this caller became its (only) signer.
    fn claim_due_checkpoint(&self) -> bool {
        let inner = &self.inner;
        let due = inner.appended.load(Ordering::Relaxed) - inner.checkpointed.load(Ordering::Relaxed) >= inner.every;
        due && !inner.signing.swap(true, Ordering::AcqRel)
    }

    /// Signs a checkpoint over the current head unless it is checkpointed already.
    /// Returns the new checkpoint. Several nodes may race: one row per `seq` is kept.
    pub async fn checkpoint(&self, now: i64) -> Result<Option<AuditCheckpoint>, AuditError> {
        let Some(keys) = &self.inner.keys else { return Ok(None) };
        let store = &self.inner.store;
        let Some((seq, hash)) = store.audit_head().await? else { return Ok(None) };
        let last = store.last_checkpoint().await?.map_or(0, |c| c.seq);
        self.inner.checkpointed.fetch_max(last, Ordering::Relaxed);
        if seq <= last {
            return Ok(None);
        }
        let key = keys.active(KeyPurpose::Audit)?;
        let sig = keys.sign_with(&key.label, checkpoint_message(seq, &hash, now, &key.label)).await?;
        let cp = AuditCheckpoint { seq, hash, at: now, key_label: key.label, signature: URL_SAFE_NO_PAD.encode(sig) };
        store.insert_checkpoint(&cp).await?;
        self.inner.checkpointed.fetch_max(seq, Ordering::Relaxed);
        tracing::info!(seq, "audit checkpoint signed");
        Ok(Some(cp))
    }

    /// Signs a checkpoint every `checkpoint_interval` when events were added since.
    pub fn spawn_checkpoint_loop(&self) -> tokio::task::JoinHandle<()> {
        let audit = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(audit.inner.interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if let Err(e) = audit.checkpoint(crate::ids::now_unix()).await {
                    tracing::warn!(error = %e, "cannot sign an audit checkpoint; retrying later");
                }
            }
        })
    }
}

/// Months ahead of the current one that keep a partition ready (docs/operations.md
/// "Audit partitions").
pub const PARTITIONS_AHEAD: u32 = 3;

impl Audit {
    /// PostgreSQL: every `audit.partition_interval` (and at once), while `may_run` says
    /// this node holds the key schedule's lease, keeps the monthly partitions of the
    /// audit table (audited by the store). `None` on SQLite. A server whose role does
    /// not own the table (the runtime role) only says so once: `symbolon audit
    /// maintain` with the owner's credentials does it there.
    pub fn spawn_partition_loop<F, Fut>(&self, actor: String, may_run: F) -> Option<tokio::task::JoinHandle<()>>
    where
        F: Fn(i64) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Result<bool, StoreError>> + Send,
    {
        use crate::store::audit::RetentionMechanism;
        if self.inner.store.retention_mechanism() != RetentionMechanism::DropPartitions {
            return None;
        }
        let audit = self.clone();
        Some(tokio::spawn(async move {
            match audit.inner.store.audit_owner_rights().await {
                Ok(true) => {}
                Ok(false) => {
                    tracing::info!(
                        "this database role does not own the audit table: run `symbolon audit maintain` with the owner's credentials (docs/operations.md, Audit partitions)"
                    );
                    return;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot tell whether this role owns the audit table; trying anyway")
                }
            }
            let mut tick = tokio::time::interval(audit.inner.partition_interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let now = crate::ids::now_unix();
                match may_run(now).await {
                    Ok(true) => {}
                    Ok(false) => continue,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot take the schedule lease for audit partitions");
                        continue;
                    }
                }
                match audit.inner.store.maintain_partitions(now, PARTITIONS_AHEAD, &actor).await {
                    Ok(Some(done)) => {
                        if let Some(record) = &done.record {
                            tracing::info!(created = ?done.created, moved = done.moved, "audit partitions maintained");
                            audit.appended(record);
                        }
                    }
                    Ok(None) => {}
                    Err(e) => tracing::warn!(error = %e, "audit partition maintenance failed; retrying later"),
                }
            }
        }))
    }
}

/// What `audit verify` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verification {
    /// The chain and every checkpoint hold. `unsigned` events follow the last checkpoint.
    /// `events` are the live table's; `archives` and `archived_events` those checked
    /// in an archive directory.
    Ok {
        events: i64,
        checkpoints: usize,
        head: Option<(i64, String)>,
        unsigned: i64,
        archives: usize,
        archived_events: i64,
    },
    /// The first broken link: the record (or checkpoint) `seq` and what is wrong.
    Broken { seq: i64, reason: String },
}

const PAGE: i64 = 1000;

/// The labels of the catalog's `audit` keys. Only these sign checkpoints and archive
/// manifests: a signature by any other key of the token (the JWT key signs what
/// clients ask for) proves nothing.
pub(crate) async fn audit_key_labels(store: &dyn DurableStore) -> Result<BTreeSet<String>, StoreError> {
    Ok(store.list_keys().await?.into_iter().filter(|k| k.purpose == KeyPurpose::Audit).map(|k| k.label).collect())
}

/// Walks the chain from the first record and checks each checkpoint's hash and its
/// signature with the public half of the HSM key that made it. When retention dropped
/// archived months, the live chain starts at its anchor: the last record of a
/// recorded archive whose signed manifest names its hash (SQLite keeps it), or the
/// record after it, whose `prev_hash` must be that hash (PostgreSQL drops partitions). With `archives`, every
/// archive file of that directory is checked too, and the chain must run from seq 1
/// through the archives into the live table.
pub async fn verify(
    store: &dyn DurableStore,
    keys: &KeyRing,
    archives: Option<&std::path::Path>,
) -> Result<Verification, AuditError> {
    let checkpoints = store.checkpoints().await?;
    let audit_keys = audit_key_labels(store).await?;
    let recorded = store.archives().await?;
    for a in &recorded {
        if let Some(reason) = check_signature(keys, &audit_keys, &a.key_label, &a.message(), &a.signature).await? {
            return Ok(broken(a.first_seq, format!("recorded manifest of {}: {reason}", a.month)));
        }
    }
    let mut archived = archive::ArchivesChecked::default();
    if let Some(dir) = archives {
        match archive::check_archives(store, keys, &audit_keys, dir, &checkpoints).await? {
            Ok(found) => archived = found,
            Err((seq, reason)) => return Ok(broken(seq, reason)),
        }
    }
    // Where the live chain starts: seq 1, or the anchor a recorded manifest vouches for.
    let first = store.audit_page(0, i64::MIN, 1).await?.into_iter().next();
    let (mut expected, mut prev) = (1i64, GENESIS_HASH.to_string());
    if let Some(r) = first.as_ref().filter(|r| r.seq > 1) {
        if let Some(a) = recorded.iter().find(|a| a.last_seq == r.seq) {
            // Rows deleted up to the anchor, the archive's last record (SQLite).
            if a.last_hash != r.hash {
                return Ok(broken(
                    r.seq,
                    format!("the anchor's hash is not the one the manifest of {} signed", a.month),
                ));
            }
            (expected, prev) = (r.seq, r.prev_hash.clone());
        } else if let Some(a) = recorded.iter().find(|a| a.last_seq == r.seq - 1) {
            // Partitions dropped through the archive's month (PostgreSQL): the first
            // live record must continue from the hash the manifest signed.
            (expected, prev) = (r.seq, a.last_hash.clone());
        } else {
            return Ok(broken(
                1,
                format!(
                    "records 1..={} are missing and no recorded archive ends at {} or {}",
                    r.seq - 1,
                    r.seq - 1,
                    r.seq
                ),
            ));
        }
    }
    let archive_ends: BTreeMap<i64, &str> = recorded.iter().map(|a| (a.last_seq, a.last_hash.as_str())).collect();
    let live_from = expected;
    let mut checked = 0usize;
    // Checkpoints over dropped records were checked in the archives, when given.
    for cp in checkpoints.iter().take_while(|cp| cp.seq < live_from) {
        if let Some(hash) = archived.checkpointed.get(&cp.seq) {
            if let Some(reason) = check_checkpoint(keys, &audit_keys, cp, hash).await? {
                return Ok(broken(cp.seq, reason));
            }
            checked += 1;
        }
    }
    let mut next_cp = checkpoints.iter().skip_while(|cp| cp.seq < live_from).peekable();
    let mut after = live_from - 1;
    loop {
        let page = store.audit_page(after, i64::MIN, PAGE).await?;
        let Some(last) = page.last() else { break };
        after = last.seq;
        for r in &page {
            if r.seq != expected {
                return Ok(broken(expected, format!("record {expected} is missing (next is {})", r.seq)));
            }
            if r.prev_hash != prev {
                return Ok(broken(r.seq, format!("prev_hash does not match the hash of record {}", r.seq - 1)));
            }
            if chain_hash(&r.prev_hash, r.seq, &r.event()).as_deref() != Some(r.hash.as_str()) {
                return Ok(broken(r.seq, "hash does not match the record's content".into()));
            }
            if archive_ends.get(&r.seq).is_some_and(|h| *h != r.hash) {
                return Ok(broken(r.seq, "the record differs from the last one of its recorded archive".into()));
            }
            while let Some(cp) = next_cp.next_if(|cp| cp.seq == r.seq) {
                if let Some(reason) = check_checkpoint(keys, &audit_keys, cp, &r.hash).await? {
                    return Ok(broken(cp.seq, reason));
                }
                checked += 1;
            }
            if let Some(cp) = next_cp.peek()
                && cp.seq < r.seq
            {
                return Ok(broken(cp.seq, "checkpoint names a record that is not in the chain".into()));
            }
            prev = r.hash.clone();
            expected += 1;
        }
    }
    let last_seq = expected - 1;
    if let Some(cp) = next_cp.next() {
        // Records up to a signed checkpoint were removed from the end of the chain.
        return Ok(broken(
            last_seq + 1,
            format!("records {}..={} are missing: checkpoint {} was signed over them", last_seq + 1, cp.seq, cp.seq),
        ));
    }
    if let Some(a) = recorded.last()
        && a.last_seq > last_seq
    {
        return Ok(broken(
            last_seq + 1,
            format!("records up to {} of the archive of {} are missing", a.last_seq, a.month),
        ));
    }
    let signed = checkpoints.last().map_or(0, |c| c.seq);
    let live = last_seq - live_from + 1;
    Ok(Verification::Ok {
        events: live.max(0),
        checkpoints: checked,
        head: (last_seq > 0).then_some((last_seq, prev)),
        unsigned: (last_seq - signed).max(0),
        archives: archived.archives,
        archived_events: archived.events,
    })
}

fn broken(seq: i64, reason: String) -> Verification {
    Verification::Broken { seq, reason }
}

/// `None` when the checkpoint holds, else what is wrong with it.
async fn check_checkpoint(
    keys: &KeyRing,
    audit_keys: &BTreeSet<String>,
    cp: &AuditCheckpoint,
    hash: &str,
) -> Result<Option<String>, AuditError> {
    if cp.hash != hash {
        return Ok(Some(format!("checkpoint {} signed a different hash than the record's", cp.seq)));
    }
    let message = checkpoint_message(cp.seq, &cp.hash, cp.at, &cp.key_label);
    Ok(check_signature(keys, audit_keys, &cp.key_label, &message, &cp.signature).await?.map(|reason| {
        if reason == BAD_SIGNATURE {
            format!("checkpoint {} {reason}", cp.seq)
        } else {
            format!("checkpoint {}: {reason}", cp.seq)
        }
    }))
}

const BAD_SIGNATURE: &str = "signature does not verify";

/// `None` when `signature` (ES256, raw r||s, base64url) over `message` verifies with
/// the public half of `key_label`, an audit key of the catalog; else what is wrong.
pub(crate) async fn check_signature(
    keys: &KeyRing,
    audit_keys: &BTreeSet<String>,
    key_label: &str,
    message: &[u8],
    signature: &str,
) -> Result<Option<String>, AuditError> {
    if !audit_keys.contains(key_label) {
        return Ok(Some(format!("{key_label} is not an audit key of the catalog")));
    }
    let jwk = match keys.public_jwk(key_label).await {
        Ok(jwk) => jwk,
        Err(e) => return Ok(Some(format!("signing key {key_label} unusable: {e}"))),
    };
    let valid = (|| {
        let key = p256::ecdsa::VerifyingKey::from(jwk.to_public_key()?);
        let sig = p256::ecdsa::Signature::from_slice(&URL_SAFE_NO_PAD.decode(signature).ok()?).ok()?;
        key.verify(message, &sig).ok()
    })();
    Ok(valid.is_none().then(|| BAD_SIGNATURE.to_string()))
}

/// Writes every record with `at >= since` as one JSON object per line; returns the count.
pub async fn export(store: &dyn DurableStore, since: i64, out: &mut dyn Write) -> Result<u64, AuditError> {
    let (mut after, mut n) = (0, 0u64);
    loop {
        let page = store.audit_page(after, since, PAGE).await?;
        let Some(last) = page.last() else { break };
        after = last.seq;
        for r in &page {
            let line = serde_json::to_string(r).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            writeln!(out, "{line}").map_err(|e| StoreError::Unavailable(format!("cannot write: {e}")))?;
            n += 1;
        }
    }
    Ok(n)
}
