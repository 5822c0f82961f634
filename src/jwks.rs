//! A remote JSON Web Key Set (RFC 7517 §5) as a verifier uses it: fetched over HTTP
//! without redirects, bounded in size and time, cached, and fetched again when the
//! cache is stale or a key id is unknown — at most once per refetch interval, whatever
//! asks (an unknown `kid`, a stale cache, a retry while the server is down). While the
//! set cannot be fetched, the keys fetched before keep serving.
//!
//! Used for the operator provider's keys of the management API (`http::operator`) and
//! for the `jwks_uri` of OpenID Connect clients and backend-initiate services
//! (`service::client_auth`, docs/protocol.md §14.2). Which entries are usable keys, and
//! for which algorithms, is the caller's `parse`. URL rules (`https://`, plain `http://`
//! only to loopback) are checked by the callers' configuration.

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Largest JWKS document accepted.
pub const JWKS_MAX_BYTES: usize = 256 * 1024;

/// Time allowed for one fetch.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// One usable key of the set: its `kid` (when the entry has one) and what the caller
/// made of it.
#[derive(Debug, Clone)]
pub struct Entry<K> {
    pub kid: Option<String>,
    pub key: K,
}

/// The keys of a fetched set.
pub type Keys<K> = Arc<Vec<Entry<K>>>;

/// Why no key set can be given.
#[derive(Debug, thiserror::Error)]
pub enum JwksError {
    #[error("cannot build the JWKS HTTP client: {0}")]
    Client(String),
    #[error("the JWKS at {url} has never been fetched: {reason}")]
    Unavailable { url: String, reason: String },
}

struct Cache<K> {
    keys: Keys<K>,
    fetched_at: Option<Instant>,
}

/// A key set at a URL, cached.
pub struct RemoteJwks<K> {
    url: String,
    cache_for: Duration,
    refetch_interval: Duration,
    parse: fn(&Value) -> Option<Entry<K>>,
    client: reqwest::Client,
    cache: RwLock<Cache<K>>,
    /// One fetch at a time; holds when the last one started.
    fetch: tokio::sync::Mutex<Option<Instant>>,
}

impl<K> std::fmt::Debug for RemoteJwks<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteJwks").field("url", &self.url).finish()
    }
}

impl<K> RemoteJwks<K> {
    /// A set at `url`, used for `cache_for` after each fetch, fetched at most once per
    /// `refetch_interval`; `parse` turns an entry into a usable key or skips it.
    pub fn new(
        url: &str,
        cache_for: Duration,
        refetch_interval: Duration,
        parse: fn(&Value) -> Option<Entry<K>>,
    ) -> Result<Self, JwksError> {
        let client = reqwest::Client::builder()
            .timeout(FETCH_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| JwksError::Client(e.to_string()))?;
        Ok(Self {
            url: url.to_string(),
            cache_for,
            refetch_interval,
            parse,
            client,
            cache: RwLock::new(Cache { keys: Arc::new(Vec::new()), fetched_at: None }),
            fetch: tokio::sync::Mutex::new(None),
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// The keys: the cached set while it is fresh and, when `kid` is given, holds that
    /// kid; otherwise the set is fetched again, at most once per refetch interval (in
    /// between, the cached set as it is, perhaps empty). When a fetch fails the keys
    /// fetched before still serve; it is an error only when no fetch ever succeeded.
    pub async fn keys(&self, kid: Option<&str>) -> Result<Keys<K>, JwksError> {
        if let (keys, true) = self.cached(kid) {
            return Ok(keys);
        }
        let mut last = self.fetch.lock().await;
        // Another request may have fetched while this one waited.
        let (cached, usable) = self.cached(kid);
        if usable || last.is_some_and(|t| t.elapsed() < self.refetch_interval) {
            return Ok(cached);
        }
        *last = Some(Instant::now());
        match self.fetch_set().await {
            Ok(keys) => {
                let keys = Arc::new(keys);
                tracing::info!(url = %self.url, keys = keys.len(), "JWKS fetched");
                if let Ok(mut c) = self.cache.write() {
                    *c = Cache { keys: keys.clone(), fetched_at: Some(Instant::now()) };
                }
                Ok(keys)
            }
            Err(reason) => {
                tracing::warn!(url = %self.url, %reason, "cannot fetch the JWKS");
                let never = self.cache.read().map(|c| c.fetched_at.is_none()).unwrap_or(true);
                if never { Err(JwksError::Unavailable { url: self.url.clone(), reason }) } else { Ok(cached) }
            }
        }
    }

    /// The cached keys, and whether they serve as they are: fetched within `cache_for`
    /// and holding `kid` when one is asked for.
    fn cached(&self, kid: Option<&str>) -> (Keys<K>, bool) {
        match self.cache.read() {
            Ok(c) => {
                let fresh = c.fetched_at.is_some_and(|t| t.elapsed() < self.cache_for);
                let has = kid.is_none_or(|k| c.keys.iter().any(|e| e.kid.as_deref() == Some(k)));
                (c.keys.clone(), fresh && has)
            }
            Err(_) => (Arc::new(Vec::new()), false),
        }
    }

    async fn fetch_set(&self) -> Result<Vec<Entry<K>>, String> {
        let mut response = self.client.get(&self.url).send().await.map_err(|e| e.to_string())?;
        if !response.status().is_success() {
            return Err(format!("HTTP {}", response.status()));
        }
        // Read at most JWKS_MAX_BYTES, whatever the server claims or sends.
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| e.to_string())? {
            if body.len() + chunk.len() > JWKS_MAX_BYTES {
                return Err("the JWKS is too large".into());
            }
            body.extend_from_slice(&chunk);
        }
        parse_set(&body, self.parse)
    }
}

/// The usable entries of a JWKS document (`{"keys": [...]}`), in document order.
pub fn parse_set<K>(body: &[u8], parse: fn(&Value) -> Option<Entry<K>>) -> Result<Vec<Entry<K>>, String> {
    let doc: Value = serde_json::from_slice(body).map_err(|e| format!("not JSON: {e}"))?;
    let keys = doc.get("keys").and_then(Value::as_array).ok_or("no \"keys\" array")?;
    Ok(keys.iter().filter_map(parse).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kid_only(v: &Value) -> Option<Entry<()>> {
        let kid = v.get("kid").and_then(Value::as_str)?;
        (kid != "skip").then(|| Entry { kid: Some(kid.to_string()), key: () })
    }

    #[test]
    fn documents_and_entries() {
        let set = parse_set(br#"{"keys":[{"kid":"a"},{"kid":"skip"},{"x":1},{"kid":"b"}]}"#, kid_only).unwrap();
        let kids: Vec<_> = set.iter().map(|e| e.kid.clone().unwrap_or_default()).collect();
        assert_eq!(kids, ["a", "b"]);
        assert!(parse_set(b"[]", kid_only).is_err());
        assert!(parse_set(b"{\"keys\": 1}", kid_only).is_err());
        assert!(parse_set(b"not json", kid_only).is_err());
    }

    #[tokio::test]
    async fn an_unreachable_set_is_unavailable_then_rate_limited() {
        // Port 9 on loopback: nothing listens (connection refused at once).
        let jwks =
            RemoteJwks::new("http://127.0.0.1:9/jwks", Duration::from_secs(60), Duration::from_secs(3600), kid_only)
                .unwrap();
        assert!(matches!(jwks.keys(Some("a")).await, Err(JwksError::Unavailable { .. })));
        // Within the refetch interval nothing is fetched: the (empty) cache answers.
        assert!(jwks.keys(Some("a")).await.map(|k| k.is_empty()).unwrap_or(false));
    }
}
