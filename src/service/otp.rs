//! One-time codes (docs/protocol.md §6): HMAC-SHA256 inside the HSM over a fixed message,
//! dynamic truncation, 6 to 8 digits. Never stored: the session store keeps no OTP.
//! This process remembers a session's code in its memory ([`OtpCache`]) until the
//! session expires or ends here, so a sign-in costs one HMAC per node that serves it
//! however often its code is shown or checked; another node, or this one after a
//! restart, computes it again.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::OnceCell;

/// Codes held at most unless configured (`auth.otp_cache_entries`).
pub const DEFAULT_OTP_CACHE_ENTRIES: usize = 100_000;

/// Each live session's OTP as computed, in this process's memory only, until the
/// session expires or [`OtpCache::forget`]; at most `capacity` codes (past it a code
/// is computed and not kept). Concurrent requests for one session share one computation.
#[derive(Debug)]
pub struct OtpCache {
    inner: Mutex<CacheInner>,
    capacity: usize,
}

#[derive(Debug, Default)]
struct CacheInner {
    /// Session id -> (its `expires_at`, the code).
    codes: HashMap<String, (i64, Arc<OnceCell<String>>)>,
    /// When expired codes were last swept (unix seconds).
    swept: i64,
}

impl Default for OtpCache {
    fn default() -> Self {
        Self::new(DEFAULT_OTP_CACHE_ENTRIES)
    }
}

impl OtpCache {
    /// A cache of at most `capacity` codes (0: none kept).
    pub fn new(capacity: usize) -> Self {
        Self { inner: Mutex::new(CacheInner::default()), capacity }
    }

    /// The code of session `id`, which expires at `expires_at` (unix seconds): computed
    /// by `compute` unless it was computed (or is being computed) here before. A failed
    /// computation is not kept.
    pub async fn get_or_compute<E, F, Fut>(&self, id: &str, expires_at: i64, compute: F) -> Result<String, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<String, E>>,
    {
        let cell = {
            let now = crate::ids::now_unix();
            let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
            // Forget expired codes at most once a second.
            if inner.swept != now {
                inner.codes.retain(|_, (until, _)| *until >= now);
                inner.swept = now;
            }
            match inner.codes.get(id) {
                Some((_, cell)) => cell.clone(),
                None => {
                    let cell = Arc::new(OnceCell::new());
                    if inner.codes.len() < self.capacity && expires_at >= now {
                        inner.codes.insert(id.to_string(), (expires_at, cell.clone()));
                    }
                    cell
                }
            }
        };
        let result = cell.get_or_try_init(compute).await.cloned();
        if result.is_err() {
            // The next caller computes again rather than waiting on a failed cell.
            let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
            if inner.codes.get(id).is_some_and(|(_, c)| Arc::ptr_eq(c, &cell)) {
                inner.codes.remove(id);
            }
        }
        result
    }

    /// Forgets the code of a session that ended.
    pub fn forget(&self, id: &str) {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner).codes.remove(id);
    }

    /// Codes held now.
    pub fn len(&self) -> usize {
        self.inner.lock().map(|i| i.codes.len()).unwrap_or(0)
    }

    /// No code is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The HMAC input for a session.
pub fn otp_message(session_id: &str, token_id: &str, created_at: i64) -> Vec<u8> {
    let mut msg = Vec::with_capacity(16 + session_id.len() + token_id.len() + 11);
    msg.extend_from_slice(b"symbolon-otp-v1");
    msg.push(0);
    msg.extend_from_slice(session_id.as_bytes());
    msg.push(0);
    msg.extend_from_slice(token_id.as_bytes());
    msg.push(0);
    // created_at is never negative for a real session; clamp rather than wrap.
    msg.extend_from_slice(&u64::try_from(created_at).unwrap_or(0).to_be_bytes());
    msg
}

/// Dynamic truncation of a 32-byte MAC to `digits` decimal digits.
pub fn truncate(mac: &[u8; 32], digits: u8) -> String {
    let off = usize::from(mac[31] & 0x0f);
    let bin = (u32::from(mac[off]) & 0x7f) << 24
        | u32::from(mac[off + 1]) << 16
        | u32::from(mac[off + 2]) << 8
        | u32::from(mac[off + 3]);
    let digits = u32::from(digits.clamp(6, 8));
    format!("{:0width$}", bin % 10u32.pow(digits), width = digits as usize)
}

/// Constant-time comparison of two codes.
pub fn codes_equal(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_code_is_computed_once_per_session_until_it_ends() {
        use std::sync::atomic::{AtomicU32, Ordering::SeqCst};
        let cache = OtpCache::new(3);
        let later = crate::ids::now_unix() + 120;
        let computed = AtomicU32::new(0);
        let compute = || async {
            computed.fetch_add(1, SeqCst);
            Ok::<_, ()>("123456".to_string())
        };
        let (a, b) =
            tokio::join!(cache.get_or_compute("s1", later, compute), cache.get_or_compute("s1", later, compute));
        assert_eq!((a, b), (Ok("123456".into()), Ok("123456".into())));
        tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
        assert_eq!(cache.get_or_compute("s1", later, compute).await, Ok("123456".into()));
        assert_eq!(computed.load(SeqCst), 1, "concurrent and later calls share one computation");
        cache.get_or_compute("s2", later, compute).await.unwrap();
        assert_eq!(computed.load(SeqCst), 2, "another session computes its own");
        // A failure is not kept.
        assert_eq!(cache.get_or_compute("s3", later, || async { Err::<String, _>(7) }).await, Err(7));
        assert_eq!(cache.get_or_compute("s3", later, || async { Ok::<_, u8>("1".into()) }).await, Ok("1".into()));
        assert_eq!(cache.len(), 3);
        // Full: a fourth session's code is computed and not kept.
        cache.get_or_compute("s4", later, compute).await.unwrap();
        cache.get_or_compute("s4", later, compute).await.unwrap();
        assert_eq!(computed.load(SeqCst), 4, "past capacity every call computes");
        assert_eq!(cache.len(), 3, "bounded");
        // The session ends: its code goes.
        cache.forget("s1");
        cache.get_or_compute("s1", later, compute).await.unwrap();
        assert_eq!(computed.load(SeqCst), 5, "computed again after the session ended here");
        // An expired session's code is swept.
        let gone = crate::ids::now_unix() - 1;
        cache.forget("s2");
        cache.forget("s3");
        cache.get_or_compute("old", gone, compute).await.unwrap();
        assert!(!cache.inner.lock().unwrap().codes.contains_key("old"), "an expired session's code is not kept");
    }

    #[test]
    fn message_layout() {
        let m = otp_message("s", "t", 1);
        assert_eq!(m, b"symbolon-otp-v1\0s\0t\0\0\0\0\0\0\0\0\x01");
    }

    #[test]
    fn truncation_pads_and_respects_digits() {
        let mut mac = [0u8; 32];
        mac[31] = 0x00; // offset 0
        mac[0..4].copy_from_slice(&[0x80, 0x00, 0x00, 0x07]); // top bit masked
        assert_eq!(truncate(&mac, 6), "000007");
        assert_eq!(truncate(&mac, 8), "00000007");
        mac[0..4].copy_from_slice(&[0x7f, 0xff, 0xff, 0xff]);
        assert_eq!(truncate(&mac, 6), format!("{:06}", 0x7fff_ffffu32 % 1_000_000));
        mac[31] = 0x0f;
        mac[15..19].copy_from_slice(&[0x12, 0x34, 0x56, 0x78]);
        assert_eq!(truncate(&mac, 7), format!("{:07}", 0x1234_5678u32 % 10_000_000));
    }

    #[test]
    fn constant_time_equal() {
        assert!(codes_equal("123456", "123456"));
        assert!(!codes_equal("123456", "123457"));
        assert!(!codes_equal("123456", "1234567"));
    }
}
