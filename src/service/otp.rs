//! One-time codes (docs/protocol.md §6): HMAC-SHA256 inside the HSM over a fixed message,
//! dynamic truncation, 6 to 8 digits. Recomputed when needed, never stored: the session
//! store keeps no OTP; this process remembers a session's code for one second at most
//! ([`OtpCache`]), so polling cannot make the HSM compute it more than once a second.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::OnceCell;

/// How long a computed OTP is reused for its session.
pub const OTP_REUSE: Duration = Duration::from_secs(1);

/// Each session's OTP as last computed, for [`OTP_REUSE`], in this process's memory only.
/// Concurrent requests for one session share one computation.
#[derive(Debug, Default)]
pub struct OtpCache {
    inner: Mutex<CacheInner>,
}

#[derive(Debug, Default)]
struct CacheInner {
    codes: HashMap<String, (Instant, Arc<OnceCell<String>>)>,
    swept: Option<Instant>,
}

impl OtpCache {
    /// The code of session `id`: computed by `compute` unless it was computed (or is
    /// being computed) less than [`OTP_REUSE`] ago. A failed computation is not kept.
    pub async fn get_or_compute<E, F, Fut>(&self, id: &str, compute: F) -> Result<String, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<String, E>>,
    {
        let cell = {
            let now = Instant::now();
            let mut inner = self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            // Forget stale codes at most once per reuse period: the map holds the codes
            // of about two periods, never more.
            if inner.swept.is_none_or(|t| now.duration_since(t) >= OTP_REUSE) {
                inner.codes.retain(|_, (at, _)| now.duration_since(*at) < OTP_REUSE);
                inner.swept = Some(now);
            }
            match inner.codes.get(id) {
                Some((at, cell)) if now.duration_since(*at) < OTP_REUSE => cell.clone(),
                _ => {
                    let cell = Arc::new(OnceCell::new());
                    inner.codes.insert(id.to_string(), (now, cell.clone()));
                    cell
                }
            }
        };
        cell.get_or_try_init(compute).await.cloned()
    }

    /// Codes held now (tests).
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
    async fn a_code_is_computed_once_per_second_per_session() {
        let cache = OtpCache::default();
        let computed = std::sync::atomic::AtomicU32::new(0);
        let compute = || async {
            computed.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Ok::<_, ()>("123456".to_string())
        };
        let (a, b) = tokio::join!(cache.get_or_compute("s1", compute), cache.get_or_compute("s1", compute));
        assert_eq!((a, b), (Ok("123456".into()), Ok("123456".into())));
        assert_eq!(cache.get_or_compute("s1", compute).await, Ok("123456".into()));
        assert_eq!(computed.load(std::sync::atomic::Ordering::SeqCst), 1, "concurrent and repeated calls share one");
        cache.get_or_compute("s2", compute).await.unwrap();
        assert_eq!(computed.load(std::sync::atomic::Ordering::SeqCst), 2, "another session computes its own");
        // A failure is not kept.
        assert_eq!(cache.get_or_compute("s3", || async { Err::<String, _>(7) }).await, Err(7));
        assert_eq!(cache.get_or_compute("s3", || async { Ok::<_, u8>("1".into()) }).await, Ok("1".into()));
        tokio::time::sleep(OTP_REUSE + Duration::from_millis(50)).await;
        cache.get_or_compute("s1", compute).await.unwrap();
        assert_eq!(computed.load(std::sync::atomic::Ordering::SeqCst), 3, "recomputed after a second");
        assert_eq!(cache.len(), 1, "stale codes are forgotten");
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
