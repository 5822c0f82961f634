//! The key catalog's vocabulary, owned by the store that keeps it: key purposes, key
//! states, catalog rows and state transitions. The key ring (`keyring/`) drives it and
//! owns the label scheme; the token (`keys/`) knows none of it.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// What a key is for (docs/keys.md).
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

/// A key state change for [`super::DurableStore::transition_keys`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyTransition {
    pub label: String,
    /// The state the key must still be in.
    pub from: KeyState,
    pub to: KeyState,
    /// Unix seconds, stored in the column of `to` (`activated_at`, `retiring_at`, ...).
    pub at: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_pairwise_key_never_rotates() {
        assert!(!KeyPurpose::Pairwise.rotates());
        assert!(KeyPurpose::ALL.iter().filter(|p| **p != KeyPurpose::Pairwise).all(|p| p.rotates()));
        assert_eq!(KeyPurpose::Pairwise.mechanism(), "CKM_SHA256_HMAC");
    }
}
