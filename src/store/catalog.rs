//! The key catalog's vocabulary, owned by the store that keeps it: key purposes, key
//! states, catalog rows and state transitions. The key ring (`keyring/`) drives it and
//! owns the label scheme; the token (`keys/`) knows none of it.

use std::fmt;
use std::str::FromStr;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::{AuditEvent, AuditRecord, StoreError};

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
    /// RSA-3072 key signing SAML assertions for service providers that use
    /// `signature_algorithm = "rsa-sha256"` (docs/saml.md).
    #[serde(rename = "saml-rsa")]
    #[value(name = "saml-rsa")]
    SamlRsa,
}

impl KeyPurpose {
    pub const ALL: [KeyPurpose; 7] = [
        KeyPurpose::Otp,
        KeyPurpose::Jwt,
        KeyPurpose::Saml,
        KeyPurpose::Data,
        KeyPurpose::Audit,
        KeyPurpose::Pairwise,
        KeyPurpose::SamlRsa,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            KeyPurpose::Otp => "otp",
            KeyPurpose::Jwt => "jwt",
            KeyPurpose::Saml => "saml",
            KeyPurpose::Data => "data",
            KeyPurpose::Audit => "audit",
            KeyPurpose::Pairwise => "pairwise",
            KeyPurpose::SamlRsa => "saml-rsa",
        }
    }

    /// Whether keys of this purpose may be rotated. Pairwise subjects are HMACs under
    /// the one pairwise key, so replacing it would change every `sub` and NameID.
    pub fn rotates(self) -> bool {
        self != KeyPurpose::Pairwise
    }

    /// Key pairs (EC, and RSA for `saml-rsa`) have a public half and a `kid` (the
    /// RFC 7638 thumbprint of their public JWK).
    pub fn is_key_pair(self) -> bool {
        matches!(self, KeyPurpose::Jwt | KeyPurpose::Saml | KeyPurpose::Audit | KeyPurpose::SamlRsa)
    }

    /// The PKCS#11 mechanism this purpose's key is used with.
    pub fn mechanism(self) -> &'static str {
        match self {
            KeyPurpose::Otp | KeyPurpose::Pairwise => "CKM_SHA256_HMAC",
            KeyPurpose::Jwt | KeyPurpose::Saml | KeyPurpose::Audit => "CKM_ECDSA",
            KeyPurpose::Data => "CKM_AES_GCM",
            KeyPurpose::SamlRsa => "CKM_SHA256_RSA_PKCS",
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

/// Life-cycle state of a key (docs/keys.md).
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

/// A key state change for [`KeyCatalogStore::transition_keys`].
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

/// A stored column holding envelope text (`keys::Envelope`) sealed with its row id as AAD.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SealedColumn {
    pub table: &'static str,
    /// The row id column (also the envelope's AAD).
    pub id: &'static str,
    pub column: &'static str,
}

/// Every column holding envelopes. `keys rewrap` walks these and `keys retire` counts
/// them, so a new sealed column must be added here.
pub const SEALED_COLUMNS: [SealedColumn; 2] = [
    SealedColumn { table: "enrollments", id: "id", column: "claims_sealed" },
    SealedColumn { table: "enrollments", id: "id", column: "push_token_sealed" },
];

/// One stored envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedValue {
    pub column: SealedColumn,
    pub id: String,
    pub sealed: String,
}

/// The key catalog, the stored envelopes a key change must account for, and the
/// leases that let one node at a time apply the rotation schedule.
#[async_trait]
pub trait KeyCatalogStore: Send + Sync {
    /// Every key of the catalog.
    async fn list_keys(&self) -> Result<Vec<CatalogEntry>, StoreError>;
    /// Inserts a key; `false` when the label was already there.
    async fn insert_key(&self, entry: &CatalogEntry) -> Result<bool, StoreError>;
    /// Moves a key to `state` at `at` (no audit event; the key ring uses
    /// [`KeyCatalogStore::transition_keys`]).
    async fn set_key_state(&self, label: &str, state: KeyState, at: i64) -> Result<(), StoreError>;
    /// Inserts a key and its audit event in one transaction. `Ok(None)` when the label
    /// is in the catalog already; `KeyStateChanged` when the entry is `active` and its
    /// purpose has an active key already (the one-active index).
    async fn insert_key_audited(
        &self,
        entry: &CatalogEntry,
        event: &AuditEvent,
    ) -> Result<Option<AuditRecord>, StoreError>;
    /// Applies key state transitions in order, each only while the key is still in its
    /// `from` state, and appends `events`, all in one transaction. Nothing is applied
    /// (`KeyStateChanged`) when a key moved meanwhile or a purpose would get two
    /// active keys.
    async fn transition_keys(
        &self,
        changes: &[KeyTransition],
        events: &[AuditEvent],
    ) -> Result<Vec<AuditRecord>, StoreError>;
    /// How many stored envelopes (every [`SEALED_COLUMNS`] column) name the key `label`.
    async fn count_sealed(&self, label: &str) -> Result<i64, StoreError>;
    /// Up to `limit` envelopes of `column` that do not name `key_label`, with row ids
    /// greater than `after_id`, in id order (a resumable walk for `keys rewrap`).
    async fn sealed_page(
        &self,
        column: &SealedColumn,
        key_label: &str,
        after_id: &str,
        limit: i64,
    ) -> Result<Vec<SealedValue>, StoreError>;
    /// Replaces an envelope while it still holds `value.sealed`; `false` when the row
    /// changed (or went) meanwhile.
    async fn replace_sealed(&self, value: &SealedValue, new_sealed: &str) -> Result<bool, StoreError>;
    /// Takes or renews the lease `name` for `holder` until `until`; `false` while
    /// another holder's lease has not expired at `now`.
    async fn try_lease(&self, name: &str, holder: &str, now: i64, until: i64) -> Result<bool, StoreError>;
}
