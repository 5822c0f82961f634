//! Enrollments as the sign-in path reads them, kept in this process's memory so that a
//! sign-in (initiate, the device's pending list, verify) makes no database round trip
//! in the common case (docs/architecture.md, "Enrollment cache").
//!
//! Correctness rests on invalidation, not on expiry: every change to an enrollment
//! (enroll, suspend, activate, revoke, delete, a VRL or CRL suspension) drops the token
//! id's entries here at once and is announced to every other node through the session
//! store ([`crate::store::SessionStore::publish_enrollment_change`], Redis pub/sub in a
//! cluster). While a node cannot hear those announcements (its Redis subscription is
//! down) it neither reads nor fills the cache. A single node with the memory session
//! store shares no store with a `symbolon users` command: that command appends a byte
//! to a change file in the state directory, and the node forgets everything whenever
//! the file's length changed ([`EnrollmentCache::watching`]). Entries also expire after
//! `ttl`, a last bound should an announcement be lost.

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::keys::EcPublicJwk;
use crate::store::{Enrollment, EnrollmentChange, SessionStore};

/// An enrollment with its device key already parsed.
#[derive(Debug)]
pub struct KnownDevice {
    pub enrollment: Enrollment,
    /// The device's public key (`device_jwk`).
    pub key: p256::PublicKey,
}

impl KnownDevice {
    /// `None` when the stored key is not a P-256 JWK (a corrupt row).
    pub fn new(enrollment: Enrollment) -> Option<Self> {
        let jwk: EcPublicJwk = serde_json::from_str(&enrollment.device_jwk).ok()?;
        let key = jwk.to_public_key()?;
        Some(Self { enrollment, key })
    }
}

/// What a fill read was started under: stored only if nothing was invalidated since.
#[derive(Debug, Clone, Copy)]
pub struct Ticket(u64);

/// The cache: by device id (device JWS `kid`) and by token id (its active enrollment,
/// or none), at most `capacity` entries in each map, each for at most `ttl`.
#[derive(Debug)]
pub struct EnrollmentCache {
    inner: Mutex<Inner>,
    capacity: usize,
    ttl: Duration,
    file: Option<ChangeFile>,
}

/// The change file of a single node (`enrollments.changed` in the state directory):
/// commands append to it, the node watches its length.
#[derive(Debug)]
struct ChangeFile {
    path: PathBuf,
    /// The length last seen (watching) or `u64::MAX` (a command: it appends).
    seen: AtomicU64,
}

/// The change file's name in the state directory.
pub const CHANGE_FILE: &str = "enrollments.changed";

fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

#[derive(Debug, Default)]
struct Inner {
    /// Bumped by every invalidation; a fill started under an older one is dropped, so a
    /// read that raced a change cannot put the old row back.
    generation: u64,
    by_device: HashMap<String, (Instant, Arc<KnownDevice>)>,
    by_token: HashMap<String, (Instant, Option<Arc<KnownDevice>>)>,
}

/// Inserts into a bounded map: past `capacity`, expired entries go first, then (when
/// all are fresh) the whole map, so memory stays bounded at O(1) amortized cost.
fn bounded_insert<V>(map: &mut HashMap<String, (Instant, V)>, capacity: usize, now: Instant, key: &str, value: V) {
    if map.len() >= capacity && !map.contains_key(key) {
        map.retain(|_, (until, _)| *until > now);
        if map.len() >= capacity {
            map.clear();
        }
    }
    map.insert(key.to_string(), (now, value));
}

impl EnrollmentCache {
    /// A cache of at most `capacity` entries per map, each kept at most `ttl`;
    /// `capacity` 0 keeps nothing.
    pub fn new(capacity: usize, ttl: Duration) -> Self {
        Self { inner: Mutex::new(Inner::default()), capacity, ttl, file: None }
    }

    /// This cache also forgets everything when the change file at `path` grows (a
    /// command changed enrollments in the database this node alone uses).
    pub fn watching(mut self, path: PathBuf) -> Self {
        let seen = AtomicU64::new(file_len(&path));
        self.file = Some(ChangeFile { path, seen });
        self
    }

    /// The cache of a command that changes enrollments and signs no one in: it keeps
    /// nothing, and announces its changes to a running single node by appending to the
    /// change file at `path` (when given).
    pub fn announcer(path: Option<PathBuf>) -> Self {
        let file = path.map(|path| ChangeFile { path, seen: AtomicU64::new(u64::MAX) });
        Self { inner: Mutex::new(Inner::default()), capacity: 0, ttl: Duration::ZERO, file }
    }

    /// Watching: forgets everything if the change file grew since last looked at.
    fn check_file(&self) {
        let Some(file) = &self.file else { return };
        let seen = file.seen.load(Ordering::Acquire);
        if seen == u64::MAX {
            return;
        }
        let len = file_len(&file.path);
        if len != seen && file.seen.compare_exchange(seen, len, Ordering::AcqRel, Ordering::Acquire).is_ok() {
            self.clear();
        }
    }

    /// A command: appends one byte to the change file.
    fn append_to_file(&self) {
        let Some(file) = self.file.as_ref().filter(|f| f.seen.load(Ordering::Relaxed) == u64::MAX) else { return };
        let appended =
            std::fs::OpenOptions::new().create(true).append(true).open(&file.path).and_then(|mut f| f.write_all(b"\n"));
        if let Err(e) = appended {
            tracing::warn!(error = %e, path = %file.path.display(), "cannot append to the enrollment change file");
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // The maps stay consistent whatever panicked: every change is one call.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn fresh(&self, at: Instant, now: Instant) -> bool {
        now.duration_since(at) < self.ttl
    }

    /// Taken before reading the database for a fill.
    pub fn ticket(&self) -> Ticket {
        Ticket(self.lock().generation)
    }

    /// The enrollment of device `device_id`, if cached.
    pub fn device(&self, device_id: &str) -> Option<Arc<KnownDevice>> {
        self.check_file();
        let now = Instant::now();
        let inner = self.lock();
        inner.by_device.get(device_id).filter(|(at, _)| self.fresh(*at, now)).map(|(_, d)| d.clone())
    }

    /// The active enrollment of `token_id` (`Some(None)`: none), if cached.
    pub fn active(&self, token_id: &str) -> Option<Option<Arc<KnownDevice>>> {
        self.check_file();
        let now = Instant::now();
        let inner = self.lock();
        inner.by_token.get(token_id).filter(|(at, _)| self.fresh(*at, now)).map(|(_, d)| d.clone())
    }

    /// Keeps a device read from the database under `ticket`.
    pub fn put_device(&self, ticket: Ticket, device: Arc<KnownDevice>) {
        if self.capacity == 0 {
            return;
        }
        let now = Instant::now();
        let mut inner = self.lock();
        if inner.generation == ticket.0 {
            let id = device.enrollment.device_id.clone();
            bounded_insert(&mut inner.by_device, self.capacity, now, &id, device);
        }
    }

    /// Keeps the active enrollment of `token_id` (or its absence) read under `ticket`;
    /// an active one is kept by device id too.
    pub fn put_active(&self, ticket: Ticket, token_id: &str, active: Option<Arc<KnownDevice>>) {
        if self.capacity == 0 {
            return;
        }
        let now = Instant::now();
        let mut inner = self.lock();
        if inner.generation != ticket.0 {
            return;
        }
        if let Some(device) = &active {
            let id = device.enrollment.device_id.clone();
            bounded_insert(&mut inner.by_device, self.capacity, now, &id, device.clone());
        }
        bounded_insert(&mut inner.by_token, self.capacity, now, token_id, active);
    }

    /// Forgets everything about these token ids (every device enrolled under them).
    pub fn invalidate(&self, token_ids: &[String]) {
        let mut inner = self.lock();
        inner.generation = inner.generation.wrapping_add(1);
        if token_ids.len() == 1 {
            let t = &token_ids[0];
            inner.by_token.remove(t);
            inner.by_device.retain(|_, (_, d)| d.enrollment.token_id != *t);
        } else {
            let gone: HashSet<&str> = token_ids.iter().map(String::as_str).collect();
            inner.by_token.retain(|t, _| !gone.contains(t.as_str()));
            inner.by_device.retain(|_, (_, d)| !gone.contains(d.enrollment.token_id.as_str()));
        }
    }

    /// Forgets everything (changes may have been missed).
    pub fn clear(&self) {
        let mut inner = self.lock();
        inner.generation = inner.generation.wrapping_add(1);
        inner.by_device.clear();
        inner.by_token.clear();
    }

    /// Applies a change heard from the session store.
    pub fn apply(&self, change: &EnrollmentChange) {
        match change {
            EnrollmentChange::TokenIds(ids) => self.invalidate(ids),
            EnrollmentChange::All => self.clear(),
        }
    }

    /// Entries held now (by device, by token id).
    pub fn len(&self) -> (usize, usize) {
        let inner = self.lock();
        (inner.by_device.len(), inner.by_token.len())
    }
}

/// Drops the token ids' entries here and tells every other node. The change is
/// committed already; an announcement that fails is logged (other nodes then hold
/// the old state until `auth.enrollment_cache_ttl`).
pub async fn announce(cache: &EnrollmentCache, sessions: &dyn SessionStore, token_ids: &[String]) {
    if token_ids.is_empty() {
        return;
    }
    cache.invalidate(token_ids);
    cache.append_to_file();
    if let Err(e) = sessions.publish_enrollment_change(token_ids).await {
        tracing::error!(error = %e, "cannot announce an enrollment change to the other nodes");
    }
}

/// Keeps `cache` in step with the changes other nodes announce, for as long as both
/// live. Must be called inside the Tokio runtime.
pub fn follow(cache: &Arc<EnrollmentCache>, sessions: &dyn SessionStore) {
    let Some(mut changes) = sessions.watch_enrollment_changes() else { return };
    let cache = Arc::downgrade(cache);
    tokio::spawn(async move {
        loop {
            let change = match changes.recv().await {
                Ok(change) => change,
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => EnrollmentChange::All,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            };
            let Some(cache) = cache.upgrade() else { return };
            cache.apply(&change);
        }
    });
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::store::EnrollmentStatus;

    fn device(token_id: &str, device_id: &str) -> Arc<KnownDevice> {
        let key = p256::SecretKey::from_slice(&[7u8; 32]).unwrap().public_key();
        let jwk = crate::keys::EcPublicJwk::from_public_key(&key);
        Arc::new(
            KnownDevice::new(Enrollment {
                id: "row".into(),
                token_id: token_id.into(),
                device_id: device_id.into(),
                device_jwk: serde_json::to_string(&jwk).unwrap(),
                device_name: String::new(),
                status: EnrollmentStatus::Active,
                status_reason: None,
                push_provider: "none".into(),
                push_token_sealed: None,
                claims_sealed: String::new(),
                claim_names: vec![],
                territory: "XX".into(),
                ca_sha256: String::new(),
                signer_serial: String::new(),
                created_at: 0,
                updated_at: 0,
                last_used_at: None,
            })
            .unwrap(),
        )
    }

    #[test]
    fn hits_until_invalidated_by_token_id() {
        let cache = EnrollmentCache::new(10, Duration::from_secs(60));
        let t = cache.ticket();
        cache.put_active(t, "tok-1", Some(device("tok-1", "dev-1")));
        cache.put_active(t, "tok-2", None);
        assert_eq!(cache.device("dev-1").unwrap().enrollment.token_id, "tok-1", "an active fill is kept by device");
        assert!(cache.active("tok-1").unwrap().is_some());
        assert!(cache.active("tok-2").unwrap().is_none(), "the absence is kept");
        assert!(cache.active("tok-3").is_none());
        cache.invalidate(&["tok-1".to_string()]);
        assert!(cache.device("dev-1").is_none(), "the device goes with its token id");
        assert!(cache.active("tok-1").is_none());
        assert!(cache.active("tok-2").is_some(), "other token ids stay");
        cache.apply(&EnrollmentChange::All);
        assert_eq!(cache.len(), (0, 0));
    }

    #[test]
    fn a_fill_that_raced_a_change_is_dropped() {
        let cache = EnrollmentCache::new(10, Duration::from_secs(60));
        let before = cache.ticket();
        // Another request changes tok-1 while this one reads the old row.
        cache.invalidate(&["tok-1".to_string()]);
        cache.put_device(before, device("tok-1", "dev-1"));
        cache.put_active(before, "tok-1", None);
        assert_eq!(cache.len(), (0, 0));
        cache.put_device(cache.ticket(), device("tok-1", "dev-1"));
        assert_eq!(cache.len(), (1, 0));
    }

    #[test]
    fn a_command_reaches_a_single_node_through_the_change_file() {
        let dir = std::env::temp_dir().join(format!("symbolon-ecache-{}", crate::ids::short_id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(CHANGE_FILE);
        let node = EnrollmentCache::new(10, Duration::from_secs(60)).watching(path.clone());
        node.put_device(node.ticket(), device("tok-1", "dev-1"));
        assert!(node.device("dev-1").is_some(), "no file yet: nothing changed");
        let command = EnrollmentCache::announcer(Some(path.clone()));
        command.append_to_file();
        assert!(node.device("dev-1").is_none(), "the command's change is seen at the next lookup");
        node.put_device(node.ticket(), device("tok-1", "dev-1"));
        assert!(node.device("dev-1").is_some(), "and only once");
        command.append_to_file();
        assert!(node.device("dev-1").is_none());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn bounded_and_expiring() {
        let cache = EnrollmentCache::new(3, Duration::from_millis(50));
        for i in 0..10 {
            cache.put_active(cache.ticket(), &format!("tok-{i}"), None);
            assert!(cache.len().1 <= 3);
        }
        assert!(cache.active("tok-9").is_some());
        std::thread::sleep(Duration::from_millis(60));
        assert!(cache.active("tok-9").is_none(), "expired");
        let off = EnrollmentCache::new(0, Duration::from_secs(60));
        off.put_active(off.ticket(), "tok-1", Some(device("tok-1", "dev-1")));
        assert_eq!(off.len(), (0, 0), "capacity 0 keeps nothing");
    }
}
