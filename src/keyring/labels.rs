//! The label scheme of our keys, `symbolon-<purpose>-<UTC timestamp>`: how the ring
//! names the keys it makes and recognises those made with vendor tooling (`hsm/gen-key`).

use super::KeyPurpose;
use crate::keys::LABEL_PREFIX;

/// Purposes whose keys come from outside and are imported into the token, so the
/// token reports `CKA_ALWAYS_SENSITIVE` and `CKA_NEVER_EXTRACTABLE` false for them:
/// `fcm`, the FCM service account's RSA key (`symbolon keys import-fcm`). They are not
/// in the catalog; `keys list` shows them as imported.
pub const IMPORTED_PURPOSES: &[(&str, &str)] = &[("fcm", "CKM_SHA256_RSA_PKCS")];

/// The imported purpose (and its mechanism) of a label `symbolon-<purpose>-...`, if any.
pub fn imported_purpose(label: &str) -> Option<(&'static str, &'static str)> {
    let (purpose, _) = label.strip_prefix(LABEL_PREFIX)?.split_once('-')?;
    IMPORTED_PURPOSES.iter().copied().find(|(p, _)| *p == purpose)
}

// An inherent impl outside `store::catalog`, where the type lives: the store keeps
// purposes without knowing how the token names keys.
impl KeyPurpose {
    /// A fresh label for a key made at `unix` seconds.
    pub fn new_label(self, unix: i64) -> String {
        let ts = time::OffsetDateTime::from_unix_timestamp(unix).unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
        let fmt = time::macros::format_description!("[year][month][day]T[hour][minute][second]Z");
        let stamp = ts.format(&fmt).unwrap_or_else(|_| unix.to_string());
        format!("{LABEL_PREFIX}{}-{stamp}", self.as_str())
    }

    /// The purpose named by a label of our scheme, if it is one.
    /// Purpose names may contain `-` (`saml-rsa`), so the longest purpose name that
    /// is followed by `-` wins: `symbolon-saml-rsa-…` is a `saml-rsa` key.
    pub fn from_label(label: &str) -> Option<KeyPurpose> {
        let rest = label.strip_prefix(LABEL_PREFIX)?;
        let (purpose, stamp) = KeyPurpose::ALL
            .into_iter()
            .filter_map(|p| Some((p, rest.strip_prefix(p.as_str())?.strip_prefix('-')?)))
            .max_by_key(|(p, _)| p.as_str().len())?;
        let ok_stamp = !stamp.is_empty()
            && stamp.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_');
        ok_stamp.then_some(purpose)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_round_trip() {
        let l = KeyPurpose::Jwt.new_label(1_763_800_000);
        assert_eq!(l, "symbolon-jwt-20251122T082640Z");
        assert_eq!(KeyPurpose::from_label(&l), Some(KeyPurpose::Jwt));
        assert_eq!(KeyPurpose::from_label("symbolon-foo-1"), None);
        assert_eq!(KeyPurpose::from_label("other-jwt-1"), None);
        assert_eq!(KeyPurpose::from_label("symbolon-otp-"), None);
        assert_eq!(KeyPurpose::from_label("symbolon-pairwise-20251122T082640Z"), Some(KeyPurpose::Pairwise));
        let rsa = KeyPurpose::SamlRsa.new_label(1_763_800_000);
        assert_eq!(rsa, "symbolon-saml-rsa-20251122T082640Z");
        assert_eq!(KeyPurpose::from_label(&rsa), Some(KeyPurpose::SamlRsa));
        assert_eq!(KeyPurpose::from_label("symbolon-saml-20251122T082640Z-1"), Some(KeyPurpose::Saml));
        assert_eq!(KeyPurpose::from_label("symbolon-saml-rsa-"), None);
    }
}
