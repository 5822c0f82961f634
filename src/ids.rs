//! Identifiers: 32 random bytes from the OS CSPRNG, b64u (docs/protocol.md §1).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand_core::{OsRng, RngCore};

/// A new 43-character identifier (session id, browser token, jti, nonce).
pub fn new_id() -> String {
    let mut bytes = [0u8; 32];
    OsRng.fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Length of a [`new_id`] identifier.
pub const ID_LEN: usize = 43;

/// Has the shape of a [`new_id`] identifier: 43 b64u characters. The shape is public
/// (docs/protocol.md §1), so refusing other shapes early reveals nothing.
pub fn is_id(s: &str) -> bool {
    s.len() == ID_LEN && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// A shorter random id (16 bytes) for request ids and row ids.
pub fn short_id() -> String {
    let mut bytes = [0u8; 16];
    OsRng.fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Current Unix time in seconds.
pub fn now_unix() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

#[cfg(test)]
mod tests {
    #[test]
    fn id_shape() {
        assert!(super::is_id(&super::new_id()));
        assert!(super::is_id(&"A".repeat(43)));
        for bad in ["", "short", &"A".repeat(44), &"A".repeat(16 * 1024), &format!("{}=", "A".repeat(42))] {
            assert!(!super::is_id(bad), "{bad}");
        }
    }
}
