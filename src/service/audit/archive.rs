//! Signed monthly archives of the audit trail and retention (docs/operations.md "Audit
//! archives and retention").
//!
//! A month is the run of records from the first one not yet archived up to the last
//! one before the first record stamped at or after the month's end (UTC): archives are
//! contiguous runs of the chain, in order. Each is written as gzip-compressed NDJSON
//! (`audit-YYYY-MM.ndjson.gz`, the lines of `audit export`) next to its manifest
//! (`audit-YYYY-MM.manifest.json`: first and last seq, the hash entering the month,
//! first and last hash, count, SHA-256 of the file), signed with the HSM `audit` key
//! and recorded in the database.
//!
//! Retention removes the records of months whose manifest is recorded and verifies
//! against a re-read of the archive file, in one transaction with the audit event that
//! says so. SQLite deletes rows and keeps the last record of the last dropped month:
//! the chain anchor, whose hash the signed manifest names and from which the live
//! chain continues. PostgreSQL drops the months' partitions (docs/operations.md "Audit
//! partitions"): the first live record's `prev_hash` is the manifest's `last_hash`.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use time::{Date, Month, OffsetDateTime};

use super::gzip::{GzReader, GzWriter};
use super::{AuditError, check_signature};
use crate::keyring::{KeyPurpose, KeyRing};
use crate::store::audit::{GENESIS_HASH, RetentionMechanism, chain_hash, hex, kinds};
use crate::store::{AuditArchive, AuditCheckpoint, AuditEvent, AuditRecord, DurableStore, StoreError};

/// Largest manifest file read.
const MANIFEST_MAX: u64 = 64 * 1024;
/// Largest NDJSON line read from an archive (an audit record is far smaller).
const LINE_MAX: u64 = 1024 * 1024;
const PAGE: i64 = 1000;

/// A calendar month (UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct YearMonth {
    year: i32,
    month: u8,
}

impl YearMonth {
    /// Parses `YYYY-MM`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let bad = || format!("{s:?} is not a month: expected YYYY-MM, e.g. 2026-01");
        let (y, m) = s.split_once('-').ok_or_else(bad)?;
        if y.len() != 4 || m.len() != 2 || !y.bytes().chain(m.bytes()).all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let (year, month) = (y.parse::<i32>().map_err(|_| bad())?, m.parse::<u8>().map_err(|_| bad())?);
        if !(1..=12).contains(&month) || year < 1970 {
            return Err(bad());
        }
        Ok(Self { year, month })
    }

    /// The month `unix` (seconds) falls in.
    pub fn of(unix: i64) -> Self {
        let t = OffsetDateTime::from_unix_timestamp(unix).unwrap_or(OffsetDateTime::UNIX_EPOCH);
        Self { year: t.year(), month: u8::from(t.month()) }
    }

    /// Unix seconds of the month's first instant.
    pub fn start(self) -> i64 {
        let month = Month::try_from(self.month).unwrap_or(Month::January);
        Date::from_calendar_date(self.year, month, 1).map_or(0, |d| d.midnight().assume_utc().unix_timestamp())
    }

    pub fn next(self) -> Self {
        if self.month == 12 { Self { year: self.year + 1, month: 1 } } else { Self { month: self.month + 1, ..self } }
    }

    /// `n` months earlier.
    pub fn minus(self, n: u32) -> Self {
        let total = i64::from(self.year) * 12 + i64::from(self.month) - 1 - i64::from(n);
        Self { year: total.div_euclid(12) as i32, month: (total.rem_euclid(12) + 1) as u8 }
    }

    /// Unix seconds of the next month's first instant.
    pub fn end(self) -> i64 {
        self.next().start()
    }

    pub fn file_name(self) -> String {
        format!("audit-{self}.ndjson.gz")
    }

    pub fn manifest_name(self) -> String {
        format!("audit-{self}.manifest.json")
    }
}

impl std::fmt::Display for YearMonth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:04}-{:02}", self.year, self.month)
    }
}

fn io_err(what: &str, path: &Path, e: std::io::Error) -> AuditError {
    AuditError::Archive(format!("{what} {}: {e}", path.display()))
}

/// Writes every month not yet archived up to and including `through` (which must have
/// ended) into `out`, signs and records each manifest. Returns the new manifests.
pub async fn archive(
    store: &dyn DurableStore,
    keys: &KeyRing,
    through: YearMonth,
    out: &Path,
    now: i64,
) -> Result<Vec<AuditArchive>, AuditError> {
    if through.end() > now {
        return Err(AuditError::Archive(format!("{through} has not ended yet: only past months are archived")));
    }
    std::fs::create_dir_all(out).map_err(|e| io_err("cannot create", out, e))?;
    let recorded = store.archives().await?;
    let (mut after, mut prev) =
        recorded.last().map_or((0, GENESIS_HASH.to_string()), |a| (a.last_seq, a.last_hash.clone()));
    let mut last_month = recorded.last().and_then(|a| YearMonth::parse(&a.month).ok());
    let mut made = Vec::new();
    loop {
        let Some(first) = store.audit_page(after, i64::MIN, 1).await?.into_iter().next() else { break };
        let month = YearMonth::of(first.at);
        if month > through {
            break;
        }
        if last_month.is_some_and(|m| month <= m) {
            return Err(AuditError::Archive(format!(
                "record {} is stamped in {month}, which is archived already (clock skew between nodes?)",
                first.seq
            )));
        }
        let last_seq = match store.audit_first_at_or_after(after, month.end()).await? {
            Some(seq) => seq - 1,
            None => store.audit_head().await?.map_or(after, |(seq, _)| seq),
        };
        let manifest = write_month(store, keys, month, after, last_seq, &prev, out, now).await?;
        if !store.insert_archive(&manifest).await? {
            return Err(AuditError::Archive(format!("{month} was archived meanwhile by another run; re-run")));
        }
        store
            .append_audit(&AuditEvent::new(
                now,
                kinds::AUDIT_ARCHIVED,
                "operator",
                month.to_string(),
                serde_json::json!({
                    "month": manifest.month, "first_seq": manifest.first_seq, "last_seq": manifest.last_seq,
                    "count": manifest.count, "sha256": manifest.sha256, "key": manifest.key_label,
                }),
            ))
            .await?;
        (after, prev, last_month) = (manifest.last_seq, manifest.last_hash.clone(), Some(month));
        made.push(manifest);
    }
    Ok(made)
}

/// Hashes what passes through to the file.
struct HashingWriter<W: Write> {
    inner: W,
    hash: Sha256,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Writes the file of one month (records `after+1 ..= last_seq`, checking the chain as
/// it goes), then its signed manifest; both atomically (temporary file, fsync, rename).
#[allow(clippy::too_many_arguments)]
async fn write_month(
    store: &dyn DurableStore,
    keys: &KeyRing,
    month: YearMonth,
    after: i64,
    last_seq: i64,
    prev: &str,
    out: &Path,
    now: i64,
) -> Result<AuditArchive, AuditError> {
    let path = out.join(month.file_name());
    let tmp = out.join(format!(".{}.tmp", month.file_name()));
    let file = File::create(&tmp).map_err(|e| io_err("cannot create", &tmp, e))?;
    let mut gz = GzWriter::new(HashingWriter { inner: std::io::BufWriter::new(file), hash: Sha256::new() })
        .map_err(|e| io_err("cannot write", &tmp, e))?;
    let (mut cursor, mut expected_prev) = (after, prev.to_string());
    let (mut first_hash, mut count) = (None, 0i64);
    while cursor < last_seq {
        let page = store.audit_page(cursor, i64::MIN, PAGE.min(last_seq - cursor)).await?;
        if page.is_empty() {
            break;
        }
        for r in &page {
            if let Some(reason) = link_problem(r, cursor + 1, &expected_prev) {
                return Err(AuditError::Archive(format!(
                    "the live chain is broken at seq {}: {reason}; run `symbolon audit verify`",
                    r.seq
                )));
            }
            let line = serde_json::to_string(r).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            writeln!(gz, "{line}").map_err(|e| io_err("cannot write", &tmp, e))?;
            first_hash.get_or_insert_with(|| r.hash.clone());
            (cursor, expected_prev, count) = (r.seq, r.hash.clone(), count + 1);
        }
    }
    if cursor != last_seq {
        return Err(AuditError::Archive(format!("records {}..={last_seq} are missing", cursor + 1)));
    }
    let hashing = gz.finish().map_err(|e| io_err("cannot write", &tmp, e))?;
    let sha256 = hex(&hashing.hash.finalize());
    let file = hashing.inner.into_inner().map_err(|e| io_err("cannot write", &tmp, e.into_error()))?;
    file.sync_all().map_err(|e| io_err("cannot sync", &tmp, e))?;
    std::fs::rename(&tmp, &path).map_err(|e| io_err("cannot rename to", &path, e))?;

    let key = keys.active(KeyPurpose::Audit)?;
    let mut manifest = AuditArchive {
        month: month.to_string(),
        file: month.file_name(),
        first_seq: after + 1,
        last_seq,
        count,
        prev_hash: prev.to_string(),
        first_hash: first_hash.unwrap_or_default(),
        last_hash: expected_prev,
        sha256,
        created_at: now,
        key_label: key.label.clone(),
        signature: String::new(),
    };
    let sig = keys.sign_with(&key.label, manifest.message()).await?;
    manifest.signature = base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, sig);
    let text = serde_json::to_string_pretty(&manifest).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    let mpath = out.join(month.manifest_name());
    let mtmp = out.join(format!(".{}.tmp", month.manifest_name()));
    let write = || -> std::io::Result<()> {
        let mut f = File::create(&mtmp)?;
        f.write_all(text.as_bytes())?;
        f.write_all(b"\n")?;
        f.sync_all()?;
        std::fs::rename(&mtmp, &mpath)?;
        // The directory entry too, so both files survive a crash once recorded.
        File::open(out)?.sync_all()
    };
    write().map_err(|e| io_err("cannot write", &mpath, e))?;
    Ok(manifest)
}

/// `None` when `r` is record `seq` following `prev` with a correct hash, else what is wrong.
fn link_problem(r: &AuditRecord, seq: i64, prev: &str) -> Option<String> {
    if r.seq != seq {
        return Some(format!("record {seq} is missing (next is {})", r.seq));
    }
    if r.prev_hash != prev {
        return Some(format!("prev_hash of record {} does not match the hash before it", r.seq));
    }
    if chain_hash(&r.prev_hash, r.seq, &r.event()).as_deref() != Some(r.hash.as_str()) {
        return Some(format!("hash of record {} does not match its content", r.seq));
    }
    None
}

/// Parses a manifest file's bytes: strict JSON of [`AuditArchive`], its month and file
/// name well-formed and matching each other.
pub fn parse_manifest(bytes: &[u8]) -> Result<AuditArchive, String> {
    let m: AuditArchive = serde_json::from_slice(bytes).map_err(|e| format!("not a manifest: {e}"))?;
    let month = YearMonth::parse(&m.month)?;
    if m.file != month.file_name() {
        return Err(format!("names the file {:?}; a manifest of {month} names {}", m.file, month.file_name()));
    }
    if m.first_seq < 1 || m.last_seq < m.first_seq || m.count != m.last_seq - m.first_seq + 1 {
        return Err("first_seq, last_seq and count do not agree".into());
    }
    Ok(m)
}

/// Reads every `audit-YYYY-MM.manifest.json` of `dir`, in `first_seq` order.
fn read_manifests(dir: &Path) -> Result<Vec<AuditArchive>, AuditError> {
    let mut out = Vec::new();
    let entries = std::fs::read_dir(dir).map_err(|e| io_err("cannot read", dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| io_err("cannot read", dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(month) = name.strip_prefix("audit-").and_then(|n| n.strip_suffix(".manifest.json")) else {
            continue;
        };
        let path = entry.path();
        let mut bytes = Vec::new();
        File::open(&path)
            .and_then(|f| f.take(MANIFEST_MAX + 1).read_to_end(&mut bytes))
            .map_err(|e| io_err("cannot read", &path, e))?;
        if bytes.len() as u64 > MANIFEST_MAX {
            return Err(AuditError::Archive(format!("{name}: larger than {MANIFEST_MAX} bytes")));
        }
        let m = parse_manifest(&bytes).map_err(|e| AuditError::Archive(format!("{name}: {e}")))?;
        if m.month != month {
            return Err(AuditError::Archive(format!("{name}: holds the manifest of {}", m.month)));
        }
        out.push(m);
    }
    out.sort_by_key(|m| m.first_seq);
    Ok(out)
}

/// Re-reads the archive file of `m` in `dir`: its SHA-256, gzip framing, every record's
/// place and hash in the chain, first/last hash and count. Hashes of the records named
/// in `want` (checkpoint seqs) are returned. `Err` is what is wrong.
fn check_file(dir: &Path, m: &AuditArchive, want: &[i64]) -> Result<BTreeMap<i64, String>, String> {
    let path: PathBuf = dir.join(&m.file);
    let file = File::open(&path).map_err(|e| format!("cannot open {}: {e}", m.file))?;
    let mut sha = Sha256::new();
    let reader = HashingReader { inner: file, hash: &mut sha };
    let gz = GzReader::new(reader).map_err(|e| format!("{}: {e}", m.file))?;
    let mut lines = BufReader::new(gz);
    let (mut expected, mut prev) = (m.first_seq, m.prev_hash.clone());
    let mut found = BTreeMap::new();
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = (&mut lines).take(LINE_MAX + 1).read_until(b'\n', &mut line).map_err(|e| format!("{}: {e}", m.file))?;
        if n == 0 {
            break;
        }
        if n as u64 > LINE_MAX {
            return Err(format!("{}: line {} is longer than {LINE_MAX} bytes", m.file, expected - m.first_seq + 1));
        }
        let r: AuditRecord = serde_json::from_slice(&line)
            .map_err(|e| format!("{}: line {} is not an audit record: {e}", m.file, expected - m.first_seq + 1))?;
        if expected > m.last_seq {
            return Err(format!("{}: holds more than the manifest's {} records", m.file, m.count));
        }
        if let Some(reason) = link_problem(&r, expected, &prev) {
            return Err(format!("{}: {reason}", m.file));
        }
        if expected == m.first_seq && r.hash != m.first_hash {
            return Err(format!("{}: the first record's hash is not the manifest's first_hash", m.file));
        }
        if want.binary_search(&r.seq).is_ok() {
            found.insert(r.seq, r.hash.clone());
        }
        (prev, expected) = (r.hash, expected + 1);
    }
    drop(lines);
    if expected != m.last_seq + 1 || prev != m.last_hash {
        return Err(format!("{}: ends at seq {} but the manifest says {}", m.file, expected - 1, m.last_seq));
    }
    let sha = hex(&sha.finalize());
    if sha != m.sha256 {
        return Err(format!("{}: SHA-256 {sha} is not the manifest's {}", m.file, m.sha256));
    }
    Ok(found)
}

struct HashingReader<'a, R: Read> {
    inner: R,
    hash: &'a mut Sha256,
}

impl<R: Read> Read for HashingReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }
}

/// `None` when the manifest's signature verifies with an `audit` key of the catalog.
async fn check_manifest(
    keys: &KeyRing,
    audit_keys: &std::collections::BTreeSet<String>,
    m: &AuditArchive,
) -> Result<Option<String>, AuditError> {
    Ok(check_signature(keys, audit_keys, &m.key_label, &m.message(), &m.signature)
        .await?
        .map(|reason| format!("manifest of {}: {reason}", m.month)))
}

/// What the archives in a directory hold, once checked.
#[derive(Debug, Default)]
pub struct ArchivesChecked {
    pub archives: usize,
    pub events: i64,
    /// Hashes of checkpointed records inside the archives.
    pub checkpointed: BTreeMap<i64, String>,
}

/// Checks every archive of `dir`: the set matches the manifests recorded in the
/// database, each manifest's signature (audit keys of the catalog only), each file
/// against its manifest, and the chain's continuity from seq 1 through every archive.
/// `Err(String)` is the first problem, for `Verification::Broken`.
pub async fn check_archives(
    store: &dyn DurableStore,
    keys: &KeyRing,
    audit_keys: &std::collections::BTreeSet<String>,
    dir: &Path,
    checkpoints: &[AuditCheckpoint],
) -> Result<Result<ArchivesChecked, (i64, String)>, AuditError> {
    let in_dir = read_manifests(dir)?;
    let recorded = store.archives().await?;
    for r in &recorded {
        match in_dir.iter().find(|m| m.month == r.month) {
            None => return Ok(Err((r.first_seq, format!("the archive of {} is not in {}", r.month, dir.display())))),
            Some(m) if m != r => {
                return Ok(Err((r.first_seq, format!("the manifest of {} differs from the one recorded", r.month))));
            }
            Some(_) => {}
        }
    }
    let want: Vec<i64> = checkpoints.iter().map(|c| c.seq).collect();
    let mut checked = ArchivesChecked::default();
    let (mut next_seq, mut prev) = (1, GENESIS_HASH.to_string());
    for m in &in_dir {
        if !recorded.iter().any(|r| r.month == m.month) {
            return Ok(Err((m.first_seq, format!("the archive of {} is not recorded in the database", m.month))));
        }
        if let Some(reason) = check_manifest(keys, audit_keys, m).await? {
            return Ok(Err((m.first_seq, reason)));
        }
        if m.first_seq != next_seq || m.prev_hash != prev {
            return Ok(Err((next_seq, format!("the archive of {} does not continue the chain", m.month))));
        }
        match check_file(dir, m, &want) {
            Ok(found) => checked.checkpointed.extend(found),
            Err(reason) => return Ok(Err((m.first_seq, reason))),
        }
        (next_seq, prev) = (m.last_seq + 1, m.last_hash.clone());
        checked.archives += 1;
        checked.events += m.count;
    }
    Ok(Ok(checked))
}

/// What `audit maintain` did.
#[derive(Debug, Default)]
pub struct Maintained {
    /// Months dropped, with the records deleted.
    pub dropped: Vec<(String, u64)>,
    /// Why the next due month was not dropped (`None`: nothing due is left).
    pub refused: Option<String>,
}

/// Retention: drops, oldest first, each month that ended more than `retention_months`
/// months before the current one, when its manifest is recorded and verifies against
/// a re-read of its file in `dir`; stops at the first that does not and says why.
pub async fn maintain(
    store: &dyn DurableStore,
    keys: &KeyRing,
    dir: &Path,
    retention_months: u32,
    now: i64,
) -> Result<Maintained, AuditError> {
    let mut done = Maintained::default();
    if retention_months == 0 {
        done.refused = Some("audit.retention_months is 0: every month is kept".into());
        return Ok(done);
    }
    let cutoff = YearMonth::of(now).minus(retention_months).start();
    let audit_keys = super::audit_key_labels(store).await?;
    let recorded = store.archives().await?;
    let Some(first) = store.audit_page(0, i64::MIN, 1).await?.into_iter().next() else { return Ok(done) };
    let mechanism = store.retention_mechanism();
    // Months that end before the first live record, or whose last record is the first
    // live one (the anchor SQLite keeps), are dropped already.
    for a in recorded.iter().filter(|a| a.last_seq > first.seq) {
        let month = YearMonth::parse(&a.month).map_err(AuditError::Archive)?;
        if month.end() > cutoff {
            break;
        }
        let on_disk = match read_manifests(dir) {
            Ok(all) => all.into_iter().find(|m| m.month == a.month),
            Err(e) => {
                done.refused = Some(format!("{}: {e}", a.month));
                return Ok(done);
            }
        };
        let problem = match on_disk {
            None => Some(format!("no manifest of it in {}", dir.display())),
            Some(m) if &m != a => Some("the manifest file differs from the one recorded".into()),
            Some(_) => match check_manifest(keys, &audit_keys, a).await? {
                Some(reason) => Some(reason),
                None => check_file(dir, a, &[]).err(),
            },
        };
        if let Some(problem) = problem {
            done.refused = Some(format!("{} is due but not dropped: {problem}", a.month));
            return Ok(done);
        }
        let mut detail = serde_json::json!({
            "month": a.month, "first_seq": a.first_seq, "last_seq": a.last_seq, "sha256": a.sha256,
            "retention_months": retention_months,
        });
        match mechanism {
            RetentionMechanism::DeleteRowsKeepAnchor => detail["anchor_seq"] = a.last_seq.into(),
            RetentionMechanism::DropPartitions => detail["partitions_through"] = a.month.clone().into(),
        }
        let event = AuditEvent::new(now, kinds::AUDIT_RETENTION_DROPPED, "operator", a.month.clone(), detail);
        match store.drop_archived(a, &event).await {
            Ok((deleted, _)) => {
                tracing::info!(month = %a.month, deleted, "audit month dropped after its archive verified");
                done.dropped.push((a.month.clone(), deleted));
                done.refused = None;
            }
            // Its archive verified: a later month's drop may take its partition along
            // (clock skew across the month's end), so the next one is still tried.
            Err(StoreError::Refused(why)) => {
                done.refused = Some(format!("{} is due but not dropped: {why}", a.month));
            }
            Err(e) => return Err(e.into()),
        }
    }
    if done.refused.is_some() {
        return Ok(done);
    }
    // A due month that has no recorded archive holds everything after it.
    let archived_through = recorded.last().map_or(0, |a| a.last_seq);
    if let Some(next) = store.audit_page(archived_through, i64::MIN, 1).await?.into_iter().next()
        && next.at < cutoff
    {
        let month = YearMonth::of(next.at);
        done.refused = Some(format!(
            "{month} is due but not dropped: it has no archive manifest recorded; run `symbolon audit archive --through {month} --out DIR` first"
        ));
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn months() {
        let m = YearMonth::parse("2026-01").unwrap();
        assert_eq!(m.to_string(), "2026-01");
        assert_eq!(m.start(), 1_767_225_600);
        assert_eq!(m.end(), YearMonth::parse("2026-02").unwrap().start());
        assert_eq!(YearMonth::parse("2026-12").unwrap().next(), YearMonth::parse("2027-01").unwrap());
        assert_eq!(m.minus(1), YearMonth::parse("2025-12").unwrap());
        assert_eq!(m.minus(13), YearMonth::parse("2024-12").unwrap());
        assert_eq!(YearMonth::of(m.end() - 1), m);
        for bad in ["2026-13", "2026-00", "2026-1", "26-01", "2026/01", "2026-01-01", "", "+026-01", "1969-12"] {
            assert!(YearMonth::parse(bad).is_err(), "{bad}");
        }
    }

    fn manifest() -> AuditArchive {
        AuditArchive {
            month: "2026-01".into(),
            file: "audit-2026-01.ndjson.gz".into(),
            first_seq: 1,
            last_seq: 3,
            count: 3,
            prev_hash: GENESIS_HASH.into(),
            first_hash: "a".repeat(64),
            last_hash: "b".repeat(64),
            sha256: "c".repeat(64),
            created_at: 1,
            key_label: "symbolon-audit-1".into(),
            signature: "sig".into(),
        }
    }

    #[test]
    fn manifest_parser_is_strict() {
        let good = serde_json::to_value(manifest()).unwrap();
        assert_eq!(parse_manifest(good.to_string().as_bytes()).unwrap(), manifest());
        let with = |k: &str, v: serde_json::Value| {
            let mut m = good.clone();
            m[k] = v;
            parse_manifest(m.to_string().as_bytes())
        };
        assert!(with("extra", 1.into()).is_err(), "unknown field");
        assert!(with("file", "../../etc/passwd".into()).is_err(), "path in file name");
        assert!(with("file", "audit-2026-02.ndjson.gz".into()).is_err(), "another month's file");
        assert!(with("month", "2026-1".into()).is_err());
        assert!(with("count", 2.into()).is_err());
        assert!(with("last_seq", 0.into()).is_err());
        assert!(with("first_seq", "1".into()).is_err(), "string for a number");
        let mut missing = good.clone();
        missing.as_object_mut().unwrap().remove("signature");
        assert!(parse_manifest(missing.to_string().as_bytes()).is_err());
        assert!(parse_manifest(b"").is_err());
        assert!(parse_manifest(b"[1,2]").is_err());
        assert!(parse_manifest(&[0xff, 0xfe]).is_err());
    }

    #[test]
    fn the_signed_message_covers_every_field_but_the_signature() {
        let m = manifest();
        let mut other = m.clone();
        other.signature = "other".into();
        assert_eq!(m.message(), other.message());
        for change in [
            |m: &mut AuditArchive| m.count += 1,
            |m: &mut AuditArchive| m.sha256 = "d".repeat(64),
            |m: &mut AuditArchive| m.last_hash = "d".repeat(64),
            |m: &mut AuditArchive| m.prev_hash = "d".repeat(64),
            |m: &mut AuditArchive| m.key_label = "k".into(),
            |m: &mut AuditArchive| m.month = "2026-02".into(),
        ] {
            let mut changed = m.clone();
            change(&mut changed);
            assert_ne!(m.message(), changed.message());
        }
    }
}
