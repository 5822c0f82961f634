//! The key ring: which key of the token serves which purpose, and the life cycle of
//! those keys (docs/keys.md). It joins the PKCS#11 core (`keys/`) and the catalog of
//! key states kept in the durable store (`store::catalog`), so every node agrees which
//! key signs, MACs or encrypts; rotation, retirement, the schedule, `keys rewrap` and
//! the `symbolon keys` commands live here.

pub mod cli;
mod config;
mod labels;
mod lifecycle;
mod rewrap;
mod ring;

pub use config::{KeysConfig, RotationSchedule};
pub use lifecycle::{KeyLifetimes, Lifecycle, Rotation, SchedulePlan, node_name, spawn_maintenance};
pub use rewrap::{RewrapReport, rewrap};
pub use ring::{KEY_GENERATION_DEADLINE, KeyRing, check_key_safety, origin};

/// The catalog's vocabulary, owned by the store that keeps it.
pub use crate::store::catalog::{CatalogEntry, KeyPurpose, KeyState};

use crate::error::{ApiError, ErrorCode};
use crate::keys::{HsmError, KeyKind};

/// The kind of token key a purpose uses.
pub fn key_kind(purpose: KeyPurpose) -> KeyKind {
    match purpose {
        KeyPurpose::Otp | KeyPurpose::Pairwise => KeyKind::HmacSecret,
        KeyPurpose::Data => KeyKind::Aes256,
        KeyPurpose::Jwt | KeyPurpose::Saml | KeyPurpose::Audit => KeyKind::EcP256,
        KeyPurpose::SamlRsa => KeyKind::Rsa3072,
    }
}

/// What can go wrong using or changing the key ring: the token's own failures, and
/// the catalog's. Messages name labels and purposes, never key material.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error(transparent)]
    Hsm(#[from] HsmError),
    #[error("no active {0} key: run `symbolon keys generate --purpose {0}`")]
    NoActiveKey(KeyPurpose),
    #[error("key catalog: {0}")]
    Catalog(String),
    #[error("key {0} changed state meanwhile (another node or operator); nothing was changed, retry")]
    StateChanged(String),
    /// A life-cycle step that the rules forbid now (the message says why and what to do).
    #[error("{0}")]
    Refused(String),
}

impl From<KeyError> for ApiError {
    fn from(e: KeyError) -> Self {
        match e {
            KeyError::Hsm(e) => e.into(),
            other => {
                tracing::error!(error = %other, "HSM operation failed");
                ApiError::new(ErrorCode::Unavailable, "the HSM is not available")
            }
        }
    }
}
