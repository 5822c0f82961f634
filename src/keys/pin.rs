//! The token PIN: read once at start from the URI's `pin-source`, the systemd
//! credential `hsm-pin` or `SYMBOLON_HSM_PIN`, kept zeroized, never printed.

use std::fmt;
use std::path::{Path, PathBuf};

use secrecy::{ExposeSecret, SecretString};

/// Where the PIN came from (safe to log).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PinOrigin {
    File(PathBuf),
    Credential(PathBuf),
    Environment,
}

impl fmt::Display for PinOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PinOrigin::File(p) => write!(f, "pin-source file {}", p.display()),
            PinOrigin::Credential(p) => write!(f, "systemd credential {}", p.display()),
            PinOrigin::Environment => f.write_str("SYMBOLON_HSM_PIN"),
        }
    }
}

/// The user PIN of the token. `Debug` never shows the value.
pub struct HsmPin {
    secret: SecretString,
    origin: PinOrigin,
}

impl fmt::Debug for HsmPin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HsmPin").field("origin", &self.origin).finish_non_exhaustive()
    }
}

/// Why no PIN could be had.
#[derive(Debug, thiserror::Error)]
pub enum PinError {
    // `error`, not `source`: the reason is part of this message, so an error chain
    // (`{:#}`) does not print it a second time.
    #[error("cannot read the HSM PIN from {origin}: {error}")]
    Unreadable { origin: PinOrigin, error: std::io::Error },
    #[error("the HSM PIN from {0} is empty")]
    Empty(PinOrigin),
    #[error(
        "no HSM PIN: set pin-source=file:/path in hsm.uri, provide the systemd credential hsm-pin, or SYMBOLON_HSM_PIN"
    )]
    Missing,
}

impl HsmPin {
    /// Resolves the PIN: `pin-source` first, then `$CREDENTIALS_DIRECTORY/hsm-pin`,
    /// then `SYMBOLON_HSM_PIN`.
    pub fn resolve(pin_source: Option<&Path>) -> Result<HsmPin, PinError> {
        if let Some(path) = pin_source {
            return Self::from_file(PinOrigin::File(path.to_path_buf()));
        }
        if let Some(dir) = std::env::var_os("CREDENTIALS_DIRECTORY") {
            let path = Path::new(&dir).join("hsm-pin");
            if path.exists() {
                return Self::from_file(PinOrigin::Credential(path));
            }
        }
        match std::env::var("SYMBOLON_HSM_PIN") {
            Ok(v) => Self::from_string(v, PinOrigin::Environment),
            Err(_) => Err(PinError::Missing),
        }
    }

    fn from_file(origin: PinOrigin) -> Result<HsmPin, PinError> {
        let path = match &origin {
            PinOrigin::File(p) | PinOrigin::Credential(p) => p.clone(),
            PinOrigin::Environment => return Err(PinError::Missing),
        };
        // A regular file of bounded size: never a device or a FIFO (src/files.rs).
        match crate::files::read_bounded_string(&path, crate::files::MAX_SECRET_BYTES) {
            Ok(v) => Self::from_string(v, origin),
            Err(crate::files::FileError::Io { source, .. }) => Err(PinError::Unreadable { origin, error: source }),
            Err(other) => Err(PinError::Unreadable { origin, error: std::io::Error::other(other.to_string()) }),
        }
    }

    fn from_string(mut value: String, origin: PinOrigin) -> Result<HsmPin, PinError> {
        let trimmed = value.trim_end_matches(['\n', '\r']).to_string();
        zeroize::Zeroize::zeroize(&mut value);
        if trimmed.is_empty() {
            return Err(PinError::Empty(origin));
        }
        Ok(HsmPin { secret: SecretString::from(trimmed), origin })
    }

    /// Where the PIN came from.
    pub fn origin(&self) -> &PinOrigin {
        &self.origin
    }

    pub(crate) fn auth_pin(&self) -> cryptoki::types::AuthPin {
        cryptoki::types::AuthPin::from(self.secret.expose_secret().to_string())
    }
}
