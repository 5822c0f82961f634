//! Push to the device (docs/protocol.md §5.3, §12 rule 10): an FCM HTTP v1 client that
//! authenticates with an RS256 assertion signed in the HSM, and a bounded queue that
//! retries each push with backoff until it is delivered, the session ends or expires.
//! A push never blocks or fails the caller, and neither the device's push token nor
//! the OTP ever reaches a log line or a failure report.

mod assertion;
pub mod cli;
mod config;
mod fcm;
mod queue;

use std::collections::BTreeMap;
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::keys::HsmError;

pub use assertion::{ASSERTION_LIFETIME_SECS, AssertionIdentity, AssertionSigner, FCM_SCOPE, build_assertion};
pub use config::{DEFAULT_FCM_BASE_URL, DEFAULT_TOKEN_URI, PushConfig, PushProvider};
pub use fcm::FcmClient;
pub use queue::{DEFAULT_INITIAL_BACKOFF, FailureHook, PushFailure, PushQueue};

/// One data message for one device.
#[derive(Clone)]
pub struct AuthPush {
    /// The session this push belongs to (for logs and failure reports).
    pub session_id: String,
    /// The device's FCM registration token. Never logged.
    pub device_push_token: String,
    /// The FCM `data` map (values are strings). Carries the OTP: never logged.
    pub data: BTreeMap<String, String>,
    /// Session expiry, Unix seconds: the push is not sent or retried past it.
    pub expires_at: i64,
}

impl AuthPush {
    /// The §5.3 `auth` data message for a session.
    pub fn auth(
        session_id: &str,
        device_push_token: &str,
        otp: &str,
        service_id: &str,
        service_name: &str,
        scopes: &[String],
        expires_at: i64,
    ) -> Self {
        let data = [
            ("type", "auth".to_owned()),
            ("session_id", session_id.to_owned()),
            ("otp", otp.to_owned()),
            ("service_id", service_id.to_owned()),
            ("service_name", service_name.to_owned()),
            ("scopes", scopes.join(" ")),
            ("expires_at", expires_at.to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        Self { session_id: session_id.to_owned(), device_push_token: device_push_token.to_owned(), data, expires_at }
    }

    /// A short, non-reversible name for the push token, for correlating log lines.
    pub fn token_hash(&self) -> String {
        token_hash(&self.device_push_token)
    }
}

impl std::fmt::Debug for AuthPush {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthPush")
            .field("session_id", &self.session_id)
            .field("token_hash", &self.token_hash())
            .field("data_keys", &self.data.keys().collect::<Vec<_>>())
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// First 8 hex digits of SHA-256 of a push token.
pub fn token_hash(token: &str) -> String {
    Sha256::digest(token.as_bytes())[..4].iter().map(|b| format!("{b:02x}")).collect()
}

/// Why a push attempt (or the setup of push) failed. Messages carry status codes and
/// FCM/OAuth error codes, never a token, an OTP or a response body.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    #[error("FCM answered {status} ({})", code.as_deref().unwrap_or("no error code"))]
    Rejected {
        status: u16,
        /// FCM's `errorCode` (e.g. `UNREGISTERED`) or the Google API `status`.
        code: Option<String>,
        retry_after: Option<Duration>,
    },
    #[error("the OAuth token endpoint answered {status} ({error})")]
    TokenRefused {
        status: u16,
        /// The OAuth `error` code (e.g. `invalid_grant`).
        error: String,
        retry_after: Option<Duration>,
    },
    #[error("HTTP request failed: {0}")]
    Transport(String),
    #[error("signing the FCM assertion in the HSM: {0}")]
    Signer(#[from] HsmError),
    #[error("unexpected response: {0}")]
    Protocol(&'static str),
    #[error("the session expired before the push was delivered")]
    Expired,
    #[error("service account file: {0}")]
    ServiceAccount(String),
    #[error("push configuration: {0}")]
    Config(String),
}

impl PushError {
    /// Retrying cannot help: the token is unregistered, the message or the credentials
    /// are refused, or the session is over.
    pub fn is_permanent(&self) -> bool {
        match self {
            PushError::Rejected { status, .. } => {
                !(*status == 401 || *status == 408 || *status == 429 || *status >= 500)
            }
            PushError::TokenRefused { status, .. } => !(*status == 429 || *status >= 500),
            PushError::Transport(_) | PushError::Protocol(_) => false,
            PushError::Signer(e) => {
                !matches!(e, HsmError::Overloaded | HsmError::Unavailable | HsmError::Pkcs11(_) | HsmError::Library(_))
            }
            PushError::Expired | PushError::ServiceAccount(_) | PushError::Config(_) => true,
        }
    }

    /// The HTTP status behind the failure, if there was one.
    pub fn status(&self) -> Option<u16> {
        match self {
            PushError::Rejected { status, .. } | PushError::TokenRefused { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The same failure for another caller (errors are not `Clone`: an HSM error is
    /// carried as its message, with the same permanence).
    pub(crate) fn shared_copy(&self) -> PushError {
        match self {
            PushError::Rejected { status, code, retry_after } => {
                PushError::Rejected { status: *status, code: code.clone(), retry_after: *retry_after }
            }
            PushError::TokenRefused { status, error, retry_after } => {
                PushError::TokenRefused { status: *status, error: error.clone(), retry_after: *retry_after }
            }
            PushError::Transport(m) => PushError::Transport(m.clone()),
            PushError::Protocol(m) => PushError::Protocol(m),
            PushError::Expired => PushError::Expired,
            PushError::ServiceAccount(m) => PushError::ServiceAccount(m.clone()),
            PushError::Config(m) => PushError::Config(m.clone()),
            PushError::Signer(e) if self.is_permanent() => {
                PushError::Config(format!("signing the FCM assertion in the HSM: {e}"))
            }
            PushError::Signer(e) => PushError::Transport(format!("signing the FCM assertion in the HSM: {e}")),
        }
    }

    /// The server's `Retry-After`, if it sent one.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            PushError::Rejected { retry_after, .. } | PushError::TokenRefused { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth_message_is_all_strings_per_5_3() {
        let p = AuthPush::auth(
            "sid",
            "device-token",
            "123456",
            "svc",
            "Service",
            &["name".into(), "age".into()],
            1_763_800_120,
        );
        let keys: Vec<&str> = p.data.keys().map(String::as_str).collect();
        assert_eq!(keys, ["expires_at", "otp", "scopes", "service_id", "service_name", "session_id", "type"]);
        assert_eq!(p.data["scopes"], "name age");
        assert_eq!(p.data["expires_at"], "1763800120");
        let debug = format!("{p:?}");
        assert!(!debug.contains("123456") && !debug.contains("device-token"), "{debug}");
    }

    #[test]
    fn classification() {
        let rejected = |status| PushError::Rejected { status, code: None, retry_after: None };
        assert!(rejected(404).is_permanent());
        assert!(rejected(400).is_permanent());
        assert!(rejected(403).is_permanent());
        assert!(!rejected(429).is_permanent());
        assert!(!rejected(503).is_permanent());
        assert!(!rejected(401).is_permanent());
        assert!(!PushError::Signer(HsmError::Overloaded).is_permanent());
        assert!(PushError::Signer(HsmError::KeyNotFound("x".into())).is_permanent());
    }
}
