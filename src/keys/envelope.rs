//! Stored ciphertexts: `v1.<key label>.<b64u(iv || ciphertext || tag)>`, AES-256-GCM in
//! the HSM with the row id as additional authenticated data (docs/architecture.md §Keys).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// A parsed envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    pub key_label: String,
    pub sealed: Vec<u8>,
}

impl Envelope {
    /// The stored text form.
    pub fn encode(&self) -> String {
        format!("v1.{}.{}", self.key_label, URL_SAFE_NO_PAD.encode(&self.sealed))
    }

    /// Parses the stored text form.
    pub fn decode(text: &str) -> Option<Envelope> {
        let rest = text.strip_prefix("v1.")?;
        let (label, b64) = rest.rsplit_once('.')?;
        if label.is_empty() || !label.starts_with(super::LABEL_PREFIX) {
            return None;
        }
        let sealed = URL_SAFE_NO_PAD.decode(b64).ok()?;
        Some(Envelope { key_label: label.to_string(), sealed })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_garbage() {
        let e = Envelope { key_label: "symbolon-data-20260101T000000Z".into(), sealed: vec![1, 2, 3] };
        assert_eq!(Envelope::decode(&e.encode()), Some(e));
        for bad in ["", "v2.symbolon-data-1.AQ", "v1..AQ", "v1.symbolon-data-1.!!", "v1.other.AQ", "v1.nodot"] {
            assert_eq!(Envelope::decode(bad), None, "{bad}");
        }
    }
}
