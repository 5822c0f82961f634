//! Key purposes, the label scheme `symbolon-<purpose>-<UTC timestamp>` and key states.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Label prefix of every Symbolon key.
pub const LABEL_PREFIX: &str = "symbolon-";

/// What a key is for (architecture.md §Keys).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum KeyPurpose {
    /// HMAC secret deriving one-time codes.
    Otp,
    /// EC P-256 key signing identity tokens.
    Jwt,
    /// EC P-256 key signing SAML assertions.
    Saml,
    /// AES-256 key encrypting stored personal data.
    Data,
    /// EC P-256 key signing audit checkpoints.
    Audit,
    /// HMAC secret deriving pairwise subjects (docs/protocol.md §13). Never rotated:
    /// a new key would give every person a new `sub` at every relying party.
    Pairwise,
}

impl KeyPurpose {
    pub const ALL: [KeyPurpose; 6] =
        [KeyPurpose::Otp, KeyPurpose::Jwt, KeyPurpose::Saml, KeyPurpose::Data, KeyPurpose::Audit, KeyPurpose::Pairwise];

    pub fn as_str(self) -> &'static str {
        match self {
            KeyPurpose::Otp => "otp",
            KeyPurpose::Jwt => "jwt",
            KeyPurpose::Saml => "saml",
            KeyPurpose::Data => "data",
            KeyPurpose::Audit => "audit",
            KeyPurpose::Pairwise => "pairwise",
        }
    }

    /// Whether keys of this purpose may be rotated. Pairwise subjects are HMACs under
    /// the one pairwise key, so replacing it would change every `sub` and NameID.
    pub fn rotates(self) -> bool {
        self != KeyPurpose::Pairwise
    }

    /// EC key pairs have a public half and a JWK `kid`.
    pub fn is_key_pair(self) -> bool {
        matches!(self, KeyPurpose::Jwt | KeyPurpose::Saml | KeyPurpose::Audit)
    }

    /// The PKCS#11 mechanism this purpose's key is used with.
    pub fn mechanism(self) -> &'static str {
        match self {
            KeyPurpose::Otp | KeyPurpose::Pairwise => "CKM_SHA256_HMAC",
            KeyPurpose::Jwt | KeyPurpose::Saml | KeyPurpose::Audit => "CKM_ECDSA",
            KeyPurpose::Data => "CKM_AES_GCM",
        }
    }

    /// A fresh label for a key made at `unix` seconds.
    pub fn new_label(self, unix: i64) -> String {
        let ts = time::OffsetDateTime::from_unix_timestamp(unix).unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
        let fmt = time::macros::format_description!("[year][month][day]T[hour][minute][second]Z");
        let stamp = ts.format(&fmt).unwrap_or_else(|_| unix.to_string());
        format!("{LABEL_PREFIX}{}-{stamp}", self.as_str())
    }

    /// The purpose named by a label of our scheme, if it is one.
    pub fn from_label(label: &str) -> Option<KeyPurpose> {
        let rest = label.strip_prefix(LABEL_PREFIX)?;
        let (purpose, stamp) = rest.split_once('-')?;
        let ok_stamp = !stamp.is_empty()
            && stamp.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_');
        if !ok_stamp {
            return None;
        }
        purpose.parse().ok()
    }
}

impl fmt::Display for KeyPurpose {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for KeyPurpose {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        KeyPurpose::ALL.into_iter().find(|p| p.as_str() == s).ok_or_else(|| format!("unknown key purpose {s:?}"))
    }
}

/// Life-cycle state of a key (architecture.md §Keys "Catalog and rotation").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyState {
    Next,
    Active,
    Retiring,
    Retired,
}

impl KeyState {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyState::Next => "next",
            KeyState::Active => "active",
            KeyState::Retiring => "retiring",
            KeyState::Retired => "retired",
        }
    }
}

impl FromStr for KeyState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "next" => Ok(KeyState::Next),
            "active" => Ok(KeyState::Active),
            "retiring" => Ok(KeyState::Retiring),
            "retired" => Ok(KeyState::Retired),
            _ => Err(format!("unknown key state {s:?}")),
        }
    }
}

/// One row of the key catalog.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CatalogEntry {
    pub label: String,
    pub purpose: KeyPurpose,
    /// RFC 7638 thumbprint for key pairs; empty for secret keys.
    pub kid: String,
    pub state: KeyState,
    pub created_at: i64,
    pub activated_at: Option<i64>,
    pub retiring_at: Option<i64>,
    pub retired_at: Option<i64>,
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
        assert!(!KeyPurpose::Pairwise.rotates() && KeyPurpose::Otp.rotates());
    }
}
