//! In-process session store for a single node.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;

use super::{
    AuthSession, EventHub, Member, SessionEnd, SessionEvents, SessionStatus, SessionStore, SessionStoreError,
    session_position, session_position_since,
};

/// Entries expire lazily; a sweep runs every `SWEEP_EVERY` writes so memory stays bounded.
const SWEEP_EVERY: u64 = 1024;

#[derive(Debug, Default)]
struct Inner {
    nonces: HashMap<String, Instant>,
    values: HashMap<String, (String, Instant)>,
    windows: HashMap<String, (Duration, VecDeque<Instant>)>,
    weighted: HashMap<String, (Duration, VecDeque<(Instant, u32)>)>,
    locks: HashMap<String, Instant>,
    /// Sessions with the unix time until which they are kept.
    sessions: HashMap<String, (AuthSession, i64)>,
    by_token: HashMap<String, Vec<String>>,
    /// Session ids by listing position (`session_position`), for the management API.
    listing: BTreeMap<String, String>,
    /// Bounded sets: key → member → (value, expires_at unix seconds).
    sets: HashMap<String, HashMap<String, (String, i64)>>,
    writes: u64,
}

impl Inner {
    fn sweep(&mut self, now: Instant) {
        self.writes += 1;
        if !self.writes.is_multiple_of(SWEEP_EVERY) {
            return;
        }
        self.nonces.retain(|_, exp| *exp > now);
        self.values.retain(|_, (_, exp)| *exp > now);
        self.windows.retain(|_, (window, hits)| hits.back().is_some_and(|last| now.duration_since(*last) < *window));
        self.weighted
            .retain(|_, (window, hits)| hits.back().is_some_and(|(last, _)| now.duration_since(*last) < *window));
        self.locks.retain(|_, until| *until > now);
        let unix = crate::ids::now_unix();
        for set in self.sets.values_mut() {
            set.retain(|_, (_, exp)| *exp > unix);
        }
        self.sets.retain(|_, set| !set.is_empty());
        let gone: Vec<String> =
            self.sessions.iter().filter(|(_, (_, keep))| *keep < unix).map(|(id, _)| id.clone()).collect();
        for id in gone {
            if let Some((s, _)) = self.sessions.remove(&id) {
                self.listing.remove(&session_position(s.created_at, &s.id));
                if let Some(ids) = self.by_token.get_mut(&s.token_id) {
                    ids.retain(|i| i != &id);
                    if ids.is_empty() {
                        self.by_token.remove(&s.token_id);
                    }
                }
            }
        }
    }
}

/// Nonces and counters in process memory.
#[derive(Debug)]
pub struct MemorySessionStore {
    inner: Mutex<Inner>,
    hub: Arc<EventHub>,
}

impl Default for MemorySessionStore {
    fn default() -> Self {
        Self::with_max_channels(super::events::DEFAULT_MAX_CHANNELS)
    }
}

impl MemorySessionStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// A store whose event hub holds at most `max` session channels.
    pub fn with_max_channels(max: usize) -> Self {
        Self { inner: Mutex::new(Inner::default()), hub: EventHub::new(max) }
    }

    fn guard(&self) -> Result<std::sync::MutexGuard<'_, Inner>, SessionStoreError> {
        self.inner.lock().map_err(|_| SessionStoreError::Unavailable("poisoned lock".into()))
    }
}

#[async_trait]
impl SessionStore for MemorySessionStore {
    async fn ping(&self) -> Result<(), SessionStoreError> {
        self.guard().map(|_| ())
    }

    async fn put_nonce(&self, nonce: &str, ttl: Duration) -> Result<(), SessionStoreError> {
        let now = Instant::now();
        let mut inner = self.guard()?;
        inner.sweep(now);
        inner.nonces.insert(nonce.to_string(), now + ttl);
        Ok(())
    }

    async fn take_nonce(&self, nonce: &str) -> Result<bool, SessionStoreError> {
        let now = Instant::now();
        let mut inner = self.guard()?;
        Ok(inner.nonces.remove(nonce).is_some_and(|exp| exp > now))
    }

    async fn put_value(&self, key: &str, value: &str, ttl: Duration) -> Result<(), SessionStoreError> {
        let now = Instant::now();
        let mut inner = self.guard()?;
        inner.sweep(now);
        inner.values.insert(key.to_string(), (value.to_string(), now + ttl));
        Ok(())
    }

    async fn take_value(&self, key: &str) -> Result<Option<String>, SessionStoreError> {
        let now = Instant::now();
        let mut inner = self.guard()?;
        Ok(inner.values.remove(key).filter(|(_, exp)| *exp > now).map(|(v, _)| v))
    }

    async fn get_value(&self, key: &str) -> Result<Option<String>, SessionStoreError> {
        let now = Instant::now();
        let inner = self.guard()?;
        Ok(inner.values.get(key).filter(|(_, exp)| *exp > now).map(|(v, _)| v.clone()))
    }

    async fn hit(&self, key: &str, limit: u32, window: Duration) -> Result<Result<(), Duration>, SessionStoreError> {
        let now = Instant::now();
        let mut inner = self.guard()?;
        inner.sweep(now);
        let (w, hits) = inner.windows.entry(key.to_string()).or_insert_with(|| (window, VecDeque::new()));
        *w = window;
        while hits.front().is_some_and(|t| now.duration_since(*t) >= window) {
            hits.pop_front();
        }
        if hits.len() >= limit as usize {
            let wait = hits.front().map_or(window, |first| window.saturating_sub(now.duration_since(*first)));
            return Ok(Err(wait));
        }
        hits.push_back(now);
        Ok(Ok(()))
    }

    async fn create_session(
        &self,
        session: &AuthSession,
        max_pending: u32,
        now: i64,
        keep_until: i64,
    ) -> Result<bool, SessionStoreError> {
        let mut guard = self.guard()?;
        guard.sweep(Instant::now());
        let Inner { by_token, sessions, listing, .. } = &mut *guard;
        // `by_token` lists only pending sessions: ended or expired ones are dropped here,
        // so a busy token id costs O(its pending sessions), not O(all its recent ones).
        let ids = by_token.entry(session.token_id.clone()).or_default();
        ids.retain(|id| sessions.get(id).is_some_and(|(s, _)| s.is_pending(now)));
        if ids.len() >= max_pending as usize {
            return Ok(false);
        }
        ids.push(session.id.clone());
        sessions.insert(session.id.clone(), (session.clone(), keep_until));
        listing.insert(session_position(session.created_at, &session.id), session.id.clone());
        Ok(true)
    }

    async fn list_sessions(
        &self,
        since: i64,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<AuthSession>, SessionStoreError> {
        use std::ops::Bound;
        let inner = self.guard()?;
        let unix = crate::ids::now_unix();
        let from = session_position_since(since);
        let start = match after {
            Some(a) if a >= from.as_str() => Bound::Excluded(a.to_string()),
            _ => Bound::Included(from),
        };
        Ok(inner
            .listing
            .range((start, Bound::Unbounded))
            .filter_map(|(_, id)| inner.sessions.get(id))
            .filter(|(_, keep)| *keep >= unix)
            .map(|(s, _)| s.clone())
            .take(limit)
            .collect())
    }

    async fn get_session(&self, id: &str) -> Result<Option<AuthSession>, SessionStoreError> {
        let inner = self.guard()?;
        let unix = crate::ids::now_unix();
        Ok(inner.sessions.get(id).filter(|(_, keep)| *keep >= unix).map(|(s, _)| s.clone()))
    }

    async fn pending_sessions(&self, token_id: &str, now: i64) -> Result<Vec<AuthSession>, SessionStoreError> {
        let inner = self.guard()?;
        let mut out: Vec<AuthSession> = inner
            .by_token
            .get(token_id)
            .into_iter()
            .flatten()
            .filter_map(|id| inner.sessions.get(id))
            .map(|(s, _)| s)
            .filter(|s| s.is_pending(now))
            .cloned()
            .collect();
        out.sort_by_key(|s| s.created_at);
        Ok(out)
    }

    async fn end_session(
        &self,
        id: &str,
        end: SessionEnd,
        now: i64,
    ) -> Result<Option<Result<AuthSession, AuthSession>>, SessionStoreError> {
        let mut inner = self.guard()?;
        let Some((session, _)) = inner.sessions.get_mut(id) else { return Ok(None) };
        if !session.is_pending(now) {
            return Ok(Some(Err(session.clone())));
        }
        match end {
            SessionEnd::Approved { id_token_sealed } => {
                session.status = SessionStatus::Approved;
                session.id_token_sealed = Some(id_token_sealed);
            }
            SessionEnd::Rejected => session.status = SessionStatus::Rejected,
            SessionEnd::Locked => session.status = SessionStatus::Locked,
        }
        session.ended_at = Some(now);
        let ended = session.clone();
        drop(inner);
        self.hub.notify(id);
        Ok(Some(Ok(ended)))
    }

    async fn count_failure(&self, id: &str, lock_at: u32, now: i64) -> Result<Option<AuthSession>, SessionStoreError> {
        let mut inner = self.guard()?;
        let Some((session, _)) = inner.sessions.get_mut(id) else { return Ok(None) };
        if !session.is_pending(now) {
            return Ok(Some(session.clone()));
        }
        session.failures += 1;
        let locked = session.failures >= lock_at;
        if locked {
            session.status = SessionStatus::Locked;
            session.ended_at = Some(now);
        }
        let after = session.clone();
        drop(inner);
        if locked {
            self.hub.notify(id);
        }
        Ok(Some(after))
    }

    async fn subscribe(&self, id: &str) -> Result<SessionEvents, SessionStoreError> {
        self.hub.subscribe(id)
    }

    fn event_channels(&self) -> usize {
        self.hub.len()
    }

    async fn add_units(&self, key: &str, units: u32, window: Duration) -> Result<u32, SessionStoreError> {
        let now = Instant::now();
        let mut inner = self.guard()?;
        inner.sweep(now);
        let (w, hits) = inner.weighted.entry(key.to_string()).or_insert_with(|| (window, VecDeque::new()));
        *w = window;
        while hits.front().is_some_and(|(t, _)| now.duration_since(*t) >= window) {
            hits.pop_front();
        }
        hits.push_back((now, units));
        Ok(hits.iter().map(|(_, u)| *u).sum())
    }

    async fn lock(&self, key: &str, ttl: Duration) -> Result<(), SessionStoreError> {
        let mut inner = self.guard()?;
        inner.locks.insert(key.to_string(), Instant::now() + ttl);
        Ok(())
    }

    async fn lock_remaining(&self, key: &str) -> Result<Option<Duration>, SessionStoreError> {
        let inner = self.guard()?;
        let now = Instant::now();
        Ok(inner.locks.get(key).filter(|until| **until > now).map(|until| *until - now))
    }

    async fn put_member(
        &self,
        key: &str,
        member: &str,
        value: &str,
        expires_at: i64,
        max: usize,
    ) -> Result<(), SessionStoreError> {
        let unix = crate::ids::now_unix();
        let mut inner = self.guard()?;
        inner.sweep(Instant::now());
        let set = inner.sets.entry(key.to_string()).or_default();
        set.retain(|_, (_, exp)| *exp > unix);
        set.insert(member.to_string(), (value.to_string(), expires_at));
        while set.len() > max {
            let Some(first) = set.iter().min_by_key(|(m, (_, exp))| (*exp, (*m).clone())).map(|(m, _)| m.clone())
            else {
                break;
            };
            set.remove(&first);
        }
        Ok(())
    }

    async fn members(&self, key: &str, now: i64) -> Result<Vec<Member>, SessionStoreError> {
        let inner = self.guard()?;
        let mut out: Vec<Member> = inner
            .sets
            .get(key)
            .into_iter()
            .flatten()
            .filter(|(_, (_, exp))| *exp > now)
            .map(|(m, (v, exp))| Member { member: m.clone(), value: v.clone(), expires_at: *exp })
            .collect();
        out.sort_by(|a, b| (a.expires_at, &a.member).cmp(&(b.expires_at, &b.member)));
        Ok(out)
    }

    async fn take_member(&self, key: &str, member: &str, now: i64) -> Result<Option<String>, SessionStoreError> {
        let mut inner = self.guard()?;
        let Some(set) = inner.sets.get_mut(key) else { return Ok(None) };
        let taken = set.remove(member).filter(|(_, exp)| *exp > now).map(|(v, _)| v);
        if set.is_empty() {
            inner.sets.remove(key);
        }
        Ok(taken)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn nonce_single_use_and_expiry() {
        let s = MemorySessionStore::new();
        s.put_nonce("a", Duration::from_secs(60)).await.unwrap();
        assert!(s.take_nonce("a").await.unwrap());
        assert!(!s.take_nonce("a").await.unwrap());
        s.put_nonce("b", Duration::from_millis(1)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert!(!s.take_nonce("b").await.unwrap());
        assert!(!s.take_nonce("never").await.unwrap());
    }

    #[tokio::test]
    async fn values_are_taken_once() {
        let s = MemorySessionStore::new();
        s.put_value("k", "v", Duration::from_secs(60)).await.unwrap();
        assert_eq!(s.take_value("k").await.unwrap().as_deref(), Some("v"));
        assert_eq!(s.take_value("k").await.unwrap(), None);
        s.put_value("g", "v", Duration::from_secs(60)).await.unwrap();
        assert_eq!(s.get_value("g").await.unwrap().as_deref(), Some("v"));
        assert_eq!(s.get_value("g").await.unwrap().as_deref(), Some("v"));
        assert_eq!(s.take_value("g").await.unwrap().as_deref(), Some("v"));
        assert_eq!(s.get_value("g").await.unwrap(), None);
        s.put_value("short", "v", Duration::from_millis(1)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert_eq!(s.take_value("short").await.unwrap(), None);
    }

    #[tokio::test]
    async fn bounded_sets_expire_members_and_drop_the_soonest_expiring_past_the_bound() {
        let s = MemorySessionStore::new();
        let now = crate::ids::now_unix();
        s.put_member("p", "a", "va", now + 100, 2).await.unwrap();
        s.put_member("p", "b", "vb", now + 300, 2).await.unwrap();
        s.put_member("p", "gone", "vg", now - 1, 2).await.unwrap();
        let m = s.members("p", now).await.unwrap();
        assert_eq!(m.iter().map(|m| m.member.as_str()).collect::<Vec<_>>(), ["a", "b"], "expired never listed");
        s.put_member("p", "c", "vc", now + 200, 2).await.unwrap();
        let m = s.members("p", now).await.unwrap();
        assert_eq!(m.iter().map(|m| m.member.as_str()).collect::<Vec<_>>(), ["c", "b"], "a expired first: dropped");
        assert_eq!(m[0].value, "vc");
        assert_eq!(s.members("p", now + 250).await.unwrap().len(), 1, "c is past its expiry at now+250");
        assert_eq!(s.take_member("p", "b", now).await.unwrap().as_deref(), Some("vb"));
        assert_eq!(s.take_member("p", "b", now).await.unwrap(), None, "taken once");
        assert_eq!(s.take_member("p", "c", now + 250).await.unwrap(), None, "an expired member is not returned");
        assert!(s.members("p", now).await.unwrap().is_empty());
        assert!(s.members("other", now).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn sliding_window() {
        let s = MemorySessionStore::new();
        for _ in 0..3 {
            assert!(s.hit("k", 3, Duration::from_secs(60)).await.unwrap().is_ok());
        }
        let wait = s.hit("k", 3, Duration::from_secs(60)).await.unwrap().unwrap_err();
        assert!(wait <= Duration::from_secs(60) && wait > Duration::from_secs(50));
        assert!(s.hit("other", 3, Duration::from_secs(60)).await.unwrap().is_ok());
    }
}
