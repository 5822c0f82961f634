//! The PKCS#11 core: the token URI and PIN, the session pool, the kinds of key and
//! their mechanisms (ES256, HMAC, AES-GCM envelopes, RS256 for the FCM assertion and
//! SAML service providers that need RSA). No
//! private or secret key ever leaves the token. It imports nothing of the crate but
//! `error`, `files` (bounded reads of the PIN file) and its own configuration: which key serves what, and in which state, is
//! the key ring's business (`keyring/`, docs/architecture.md).

mod cert;
mod config;
mod envelope;
mod jwk;
mod module;
mod op;
mod pin;
mod pool;
mod rsa;
mod token;
mod uri;

pub use config::HsmConfig;
pub use envelope::Envelope;
pub use jwk::EcPublicJwk;
pub use module::{Module, TokenDescription};
pub use op::HsmOp;
pub use pin::{HsmPin, PinError, PinOrigin};
pub use pool::SessionPool;
pub use rsa::{RSA_BITS, RsaPublicParts};
pub use token::{KeyKind, TokenInfo, TokenKey, TokenSession, initialize as initialize_module};
pub use uri::{Pkcs11Uri, UriError};

use cryptoki::error::{Error as CkError, RvError};

use crate::error::{ApiError, ErrorCode};

/// Label prefix of every token object Symbolon makes or adopts.
pub const LABEL_PREFIX: &str = "symbolon-";

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
    #[error(
        "no token {wanted:?} found (tokens present: {seen:?}); if the module finds its tokens through the \
         environment (SoftHSM2: SOFTHSM2_CONF), set it in [hsm] module_env"
    )]
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
    #[error("the token does not implement {0}")]
    Unsupported(&'static str),
    #[error("key {label:?} is refused: {reason}")]
    UnsafeKey { label: String, reason: &'static str },
    #[error("the HSM is saturated (queue full or deadline passed)")]
    Overloaded,
    #[error("the HSM pool is not available")]
    Unavailable,
    #[error("cannot start an HSM worker thread: {0}")]
    Thread(String),
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

/// What `serve` would refuse about `[hsm]` at start, found without side effects: the
/// PIN source is readable (not used), the module loads and the token of the URI exists
/// (no session is opened, nothing is logged in). `config check` runs it after
/// [`HsmConfig::apply_module_env`].
pub fn start_problems(config: &HsmConfig) -> Vec<crate::error::ConfigProblem> {
    use crate::error::ConfigProblem;
    let Ok(uri) = Pkcs11Uri::parse(&config.uri) else { return Vec::new() }; // reported by problems()
    let mut p = Vec::new();
    if let Err(e) = HsmPin::resolve(uri.pin_source.as_deref()) {
        p.push(ConfigProblem::new("hsm.uri", format!("pin-source: {e}")));
    }
    let module = match Module::load(&uri.module_path) {
        Ok(module) => module,
        Err(e) => {
            p.push(ConfigProblem::new("hsm.uri", format!("module-path: {e}")));
            return p;
        }
    };
    if let Err(e) = module.find_token(uri.token.as_deref(), uri.serial.as_deref()) {
        p.push(ConfigProblem::new("hsm.uri", e.to_string()));
    }
    let _ = module.context().clone().finalize();
    p
}

/// Loads the module named in the configuration, reads the PIN and starts the pool.
pub fn open_pool(config: &HsmConfig) -> Result<SessionPool, HsmError> {
    let uri = Pkcs11Uri::parse(&config.uri)?;
    let pin = HsmPin::resolve(uri.pin_source.as_deref())?;
    let module = Module::load(&uri.module_path)?;
    SessionPool::start(module, uri.token, uri.serial, pin, config.worker_count(), config.queue_depth, config.deadline)
}
