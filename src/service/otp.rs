//! One-time codes (docs/protocol.md §6): HMAC-SHA256 inside the HSM over a fixed message,
//! dynamic truncation, 6 to 8 digits. Recomputed when needed, never stored.

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
