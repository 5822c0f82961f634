//! The audit trail (docs/architecture.md §Stores, Audit): recording events, signing
//! checkpoints with the HSM `audit` key, verifying the chain and exporting it.
//!
//! Events carry identifiers and reasons only: never a secret, an OTP, a push token
//! or a claim value.

pub mod cli;

use std::collections::BTreeSet;
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
}

/// The handle every part of the server records audit events through. Cheap to clone.
#[derive(Clone)]
pub struct Audit {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn DurableStore>,
    keys: KeyRing,
    every: i64,
    interval: std::time::Duration,
    /// Highest `seq` known to be checkpointed (by any node), 0 before the first look.
    checkpointed: AtomicI64,
    /// A checkpoint is being signed by this process (one at a time is enough).
    signing: AtomicBool,
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
                keys,
                every: i64::from(config.checkpoint_every.max(1)),
                interval: config.checkpoint_interval,
                checkpointed: AtomicI64::new(0),
                signing: AtomicBool::new(false),
            }),
        }
    }

    /// Appends an event and signs a checkpoint (in the background) when one is due.
    pub async fn record(&self, event: AuditEvent) -> Result<AuditRecord, StoreError> {
        let record = self.inner.store.append_audit(&event).await?;
        self.appended(&record);
        Ok(record)
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
    pub fn appended(&self, record: &AuditRecord) {
        let due = record.seq - self.inner.checkpointed.load(Ordering::Relaxed) >= self.inner.every;
        if due && !self.inner.signing.swap(true, Ordering::AcqRel) {
            let audit = self.clone();
            tokio::spawn(async move {
                if let Err(e) = audit.checkpoint(crate::ids::now_unix()).await {
                    tracing::error!(error = %e, "cannot sign an audit checkpoint");
                }
                audit.inner.signing.store(false, Ordering::Release);
            });
        }
    }

    /// Signs a checkpoint over the current head unless it is checkpointed already.
    /// Returns the new checkpoint. Several nodes may race: one row per `seq` is kept.
    pub async fn checkpoint(&self, now: i64) -> Result<Option<AuditCheckpoint>, AuditError> {
        let store = &self.inner.store;
        let Some((seq, hash)) = store.audit_head().await? else { return Ok(None) };
        let last = store.last_checkpoint().await?.map_or(0, |c| c.seq);
        self.inner.checkpointed.fetch_max(last, Ordering::Relaxed);
        if seq <= last {
            return Ok(None);
        }
        let key = self.inner.keys.active(KeyPurpose::Audit)?;
        let sig = self.inner.keys.sign_with(&key.label, checkpoint_message(seq, &hash, now, &key.label)).await?;
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

/// What `audit verify` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verification {
    /// The chain and every checkpoint hold. `unsigned` events follow the last checkpoint.
    Ok { events: i64, checkpoints: usize, head: Option<(i64, String)>, unsigned: i64 },
    /// The first broken link: the record (or checkpoint) `seq` and what is wrong.
    Broken { seq: i64, reason: String },
}

const PAGE: i64 = 1000;

/// Walks the chain from the first record and checks each checkpoint's hash and its
/// signature with the public half of the HSM key that made it.
pub async fn verify(store: &dyn DurableStore, keys: &KeyRing) -> Result<Verification, AuditError> {
    let checkpoints = store.checkpoints().await?;
    // Only keys catalogued for the purpose `audit` sign checkpoints: a signature by any
    // other key of the token (the JWT key signs what clients ask for) proves nothing.
    let audit_keys: BTreeSet<String> =
        store.list_keys().await?.into_iter().filter(|k| k.purpose == KeyPurpose::Audit).map(|k| k.label).collect();
    let mut next_cp = checkpoints.iter().peekable();
    let (mut expected, mut prev) = (1i64, GENESIS_HASH.to_string());
    let mut after = 0;
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
            while let Some(cp) = next_cp.next_if(|cp| cp.seq == r.seq) {
                if let Some(reason) = check_checkpoint(keys, &audit_keys, cp, &r.hash).await? {
                    return Ok(broken(cp.seq, reason));
                }
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
    let events = expected - 1;
    if let Some(cp) = next_cp.next() {
        // Records up to a signed checkpoint were removed from the end of the chain.
        return Ok(broken(
            events + 1,
            format!("records {}..={} are missing: checkpoint {} was signed over them", events + 1, cp.seq, cp.seq),
        ));
    }
    let signed = checkpoints.last().map_or(0, |c| c.seq);
    Ok(Verification::Ok {
        events,
        checkpoints: checkpoints.len(),
        head: (events > 0).then_some((events, prev)),
        unsigned: events - signed,
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
    if !audit_keys.contains(&cp.key_label) {
        return Ok(Some(format!("checkpoint {}: {} is not an audit key of the catalog", cp.seq, cp.key_label)));
    }
    let jwk = match keys.public_jwk(&cp.key_label).await {
        Ok(jwk) => jwk,
        Err(e) => return Ok(Some(format!("checkpoint {}: signing key {} unusable: {e}", cp.seq, cp.key_label))),
    };
    let valid = (|| {
        let key = p256::ecdsa::VerifyingKey::from(jwk.to_public_key()?);
        let sig = p256::ecdsa::Signature::from_slice(&URL_SAFE_NO_PAD.decode(&cp.signature).ok()?).ok()?;
        let message = checkpoint_message(cp.seq, &cp.hash, cp.at, &cp.key_label);
        key.verify(&message, &sig).ok()
    })();
    Ok(valid.is_none().then(|| format!("checkpoint {} signature does not verify", cp.seq)))
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
