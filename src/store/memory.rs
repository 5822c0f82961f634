//! In-process session store for a single node.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;

use super::{SessionStore, SessionStoreError};

/// Entries expire lazily; a sweep runs every `SWEEP_EVERY` writes so memory stays bounded.
const SWEEP_EVERY: u64 = 1024;

#[derive(Debug, Default)]
struct Inner {
    nonces: HashMap<String, Instant>,
    windows: HashMap<String, (Duration, VecDeque<Instant>)>,
    writes: u64,
}

impl Inner {
    fn sweep(&mut self, now: Instant) {
        self.writes += 1;
        if self.writes % SWEEP_EVERY != 0 {
            return;
        }
        self.nonces.retain(|_, exp| *exp > now);
        self.windows.retain(|_, (window, hits)| hits.back().is_some_and(|last| now.duration_since(*last) < *window));
    }
}

/// Nonces and counters in process memory.
#[derive(Debug, Default)]
pub struct MemorySessionStore {
    inner: Mutex<Inner>,
}

impl MemorySessionStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Inner>, SessionStoreError> {
        self.inner.lock().map_err(|_| SessionStoreError::Unavailable("poisoned lock".into()))
    }
}

#[async_trait]
impl SessionStore for MemorySessionStore {
    async fn ping(&self) -> Result<(), SessionStoreError> {
        self.lock().map(|_| ())
    }

    async fn put_nonce(&self, nonce: &str, ttl: Duration) -> Result<(), SessionStoreError> {
        let now = Instant::now();
        let mut inner = self.lock()?;
        inner.sweep(now);
        inner.nonces.insert(nonce.to_string(), now + ttl);
        Ok(())
    }

    async fn take_nonce(&self, nonce: &str) -> Result<bool, SessionStoreError> {
        let now = Instant::now();
        let mut inner = self.lock()?;
        Ok(inner.nonces.remove(nonce).is_some_and(|exp| exp > now))
    }

    async fn hit(&self, key: &str, limit: u32, window: Duration) -> Result<Result<(), Duration>, SessionStoreError> {
        let now = Instant::now();
        let mut inner = self.lock()?;
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
