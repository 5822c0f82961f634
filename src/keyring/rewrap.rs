//! `symbolon keys rewrap`: re-encrypts every stored envelope that names another key
//! under the active `data` key, so that older data keys can be retired.
//!
//! Resumable by construction: each row is replaced on its own (compare-and-set on the
//! old envelope), and a run only visits envelopes not yet under the active key, so an
//! interrupted run is finished by running it again.

use zeroize::Zeroizing;

use super::ring::{KeyRing, catalog_err};
use super::{KeyError, KeyPurpose, KeyState};
use crate::keys::HsmError;
use crate::store::audit::kinds::MANAGEMENT_ACTION;
use crate::store::{AuditEvent, SEALED_COLUMNS};

/// Rows read per database round trip.
const PAGE: i64 = 200;

/// What a rewrap did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RewrapReport {
    /// The data key everything is now sealed under.
    pub key_label: String,
    /// Envelopes re-encrypted.
    pub rewrapped: u64,
    /// Envelopes that changed while being re-encrypted (left for the next run).
    pub skipped: u64,
    /// Envelopes that could not be opened: (table.column, row id, reason).
    pub failed: Vec<(String, String, String)>,
}

/// Re-encrypts every envelope not sealed under the active data key. `progress` is
/// called after each envelope with (done, total); `total` counts the envelopes that
/// name a catalog data key other than the active one when the run starts.
pub async fn rewrap(ring: &KeyRing, now: i64, progress: &mut dyn FnMut(u64, u64)) -> Result<RewrapReport, KeyError> {
    ring.sync(now).await?;
    let active = ring.active(KeyPurpose::Data)?;
    let store = ring.store();
    let mut total = 0u64;
    for e in ring.entries().iter().filter(|e| e.purpose == KeyPurpose::Data && e.state != KeyState::Active) {
        total += u64::try_from(store.count_sealed(&e.label).await.map_err(catalog_err)?).unwrap_or(0);
    }
    let mut report = RewrapReport { key_label: active.label.clone(), ..Default::default() };
    let mut done = 0u64;
    progress(done, total);
    for column in &SEALED_COLUMNS {
        let mut after = String::new();
        loop {
            let page = store.sealed_page(column, &active.label, &after, PAGE).await.map_err(catalog_err)?;
            let Some(last) = page.last() else { break };
            after = last.id.clone();
            for value in page {
                // The row id is the envelope's AAD (see `KeyRing::seal`).
                let plain = match ring.open_sealed(&value.id, &value.sealed).await {
                    Ok(p) => Zeroizing::new(p),
                    Err(e @ KeyError::Hsm(HsmError::Overloaded | HsmError::Unavailable)) => return Err(e),
                    Err(e) => {
                        let at = format!("{}.{}", column.table, column.column);
                        tracing::error!(column = %at, id = %value.id, error = %e, "stored envelope does not open");
                        report.failed.push((at, value.id.clone(), e.to_string()));
                        continue;
                    }
                };
                let sealed = ring.seal_with(&active.label, &value.id, plain.to_vec()).await?;
                if store.replace_sealed(&value, &sealed).await.map_err(catalog_err)? {
                    report.rewrapped += 1;
                } else {
                    report.skipped += 1;
                }
                done += 1;
                progress(done, total.max(done));
            }
        }
    }
    let event = AuditEvent::new(
        now,
        MANAGEMENT_ACTION,
        ring.actor().to_string(),
        active.label.clone(),
        serde_json::json!({
            "action": "keys.rewrap",
            "purpose": "data",
            "rewrapped": report.rewrapped,
            "skipped": report.skipped,
            "failed": report.failed.len(),
        }),
    );
    store.append_audit(&event).await.map_err(catalog_err)?;
    Ok(report)
}
