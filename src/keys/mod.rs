//! Everything PKCS#11: the token URI and PIN, the session pool, key purposes and
//! the catalog of their states, and the operations the server needs (ES256, HMAC,
//! AES-GCM envelopes). No private or secret key ever leaves the token; this module
//! knows nothing of HTTP.

mod catalog;
mod cert;
pub mod cli;
mod config;
mod envelope;
mod jwk;
mod lifecycle;
mod pin;
mod pool;
mod rewrap;
mod ring;
mod rsa;
mod token;
mod uri;

pub use catalog::{CatalogEntry, KeyPurpose, KeyState, LABEL_PREFIX};
pub use config::{KeysConfig, RotationSchedule};
pub use envelope::Envelope;
pub use jwk::EcPublicJwk;
pub use lifecycle::{Lifecycle, Rotation, SchedulePlan, node_name, spawn_maintenance};
pub use pin::{HsmPin, PinError, PinOrigin};
pub use pool::SessionPool;
pub use rewrap::{RewrapReport, rewrap};
pub use ring::KeyRing;
pub use token::{TokenInfo, TokenKey, TokenSession, initialize as initialize_module};
pub use uri::{Pkcs11Uri, UriError};

use cryptoki::context::Pkcs11;
use cryptoki::error::{Error as CkError, RvError};

use crate::config::HsmConfig;
use crate::error::{ApiError, ErrorCode};

/// A PKCS#11 return value that is an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rv(pub RvError);

impl Rv {
    /// The session is gone and a fresh one (with a new login) may succeed.
    pub fn needs_new_session(self) -> bool {
        matches!(
            self.0,
            RvError::SessionHandleInvalid
                | RvError::SessionClosed
                | RvError::DeviceRemoved
                | RvError::TokenNotPresent
                | RvError::UserNotLoggedIn
                | RvError::CryptokiNotInitialized
                | RvError::DeviceError
                // A handle found through a session that no longer exists (module restart).
                | RvError::KeyHandleInvalid
                | RvError::ObjectHandleInvalid
        )
    }

    /// The module was finalized underneath us.
    pub fn is_not_initialized(self) -> bool {
        self.0 == RvError::CryptokiNotInitialized
    }
}

impl std::fmt::Display for Rv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

/// Everything that can go wrong in the key layer. Messages name the token, label or
/// file involved, never a PIN or key material.
#[derive(Debug, thiserror::Error)]
pub enum HsmError {
    #[error("invalid hsm.uri: {0}")]
    Uri(#[from] UriError),
    #[error(transparent)]
    Pin(#[from] PinError),
    #[error("cannot load the PKCS#11 module {path}: {reason}")]
    Module { path: String, reason: String },
    #[error("no token {wanted:?} found (tokens present: {seen:?})")]
    TokenNotFound { wanted: String, seen: Vec<String> },
    #[error("the token refused the PIN (wrong PIN); not retrying to avoid locking the token")]
    WrongPin,
    #[error("the token's user PIN is locked")]
    PinLocked,
    #[error("PKCS#11 error {0}")]
    Pkcs11(Rv),
    #[error("PKCS#11 library error: {0}")]
    Library(String),
    #[error("key {0:?} not found on the token")]
    KeyNotFound(String),
    #[error("more than one object is labelled {0:?}")]
    DuplicateLabel(String),
    #[error("unexpected value from the token: {0}")]
    Malformed(&'static str),
    #[error("decryption failed (wrong key, AAD or tampered data)")]
    DecryptFailed,
    #[error("key {label:?} is refused: {reason}")]
    UnsafeKey { label: String, reason: &'static str },
    #[error("no active {0} key: run `symbolon keys generate --purpose {0}`")]
    NoActiveKey(KeyPurpose),
    #[error("the HSM is saturated (queue full or deadline passed)")]
    Overloaded,
    #[error("the HSM pool is not available")]
    Unavailable,
    #[error("cannot start an HSM worker thread: {0}")]
    Thread(String),
    #[error("key catalog: {0}")]
    Catalog(String),
    #[error("key {0} changed state meanwhile (another node or operator); nothing was changed, retry")]
    StateChanged(String),
    /// A life-cycle step that the rules forbid now (the message says why and what to do).
    #[error("{0}")]
    Refused(String),
    #[error("unusable key material: {0}")]
    KeyMaterial(&'static str),
}

impl From<CkError> for HsmError {
    fn from(e: CkError) -> Self {
        match e {
            CkError::Pkcs11(rv, _) => HsmError::Pkcs11(Rv(rv)),
            other => HsmError::Library(other.to_string()),
        }
    }
}

impl From<HsmError> for ApiError {
    fn from(e: HsmError) -> Self {
        match e {
            HsmError::Overloaded => ApiError::new(ErrorCode::Overloaded, "the HSM is busy, retry shortly"),
            HsmError::DecryptFailed => {
                tracing::error!(error = %e, "stored ciphertext does not decrypt");
                ApiError::internal()
            }
            other => {
                tracing::error!(error = %other, "HSM operation failed");
                ApiError::new(ErrorCode::Unavailable, "the HSM is not available")
            }
        }
    }
}

/// Loads the module named in the configuration, reads the PIN and starts the pool.
pub fn open_pool(config: &HsmConfig) -> Result<SessionPool, HsmError> {
    let uri = Pkcs11Uri::parse(&config.uri)?;
    let pin = HsmPin::resolve(uri.pin_source.as_deref())?;
    let ctx = Pkcs11::new(&uri.module_path)
        .map_err(|e| HsmError::Module { path: uri.module_path.display().to_string(), reason: e.to_string() })?;
    SessionPool::start(ctx, uri.token, uri.serial, pin, config.worker_count(), config.queue_depth, config.deadline)
}
