//! The OAuth 2.0 JWT-bearer assertion (RFC 7523 §2.1) that buys an FCM access token,
//! signed RS256 by the service account's key inside the HSM.

use async_trait::async_trait;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Serialize;

use crate::keys::{HsmError, SessionPool};

/// The OAuth scope FCM's `messages:send` requires.
pub const FCM_SCOPE: &str = "https://www.googleapis.com/auth/firebase.messaging";
/// Lifetime of an assertion; Google accepts at most one hour.
pub const ASSERTION_LIFETIME_SECS: i64 = 3600;

/// Signs with a private key that never leaves its keystore.
#[async_trait]
pub trait AssertionSigner: Send + Sync {
    /// RSASSA-PKCS1-v1_5 SHA-256 signature of `message` by the key `key_label`.
    async fn sign_rs256(&self, key_label: &str, message: &[u8]) -> Result<Vec<u8>, HsmError>;
}

#[async_trait]
impl AssertionSigner for SessionPool {
    async fn sign_rs256(&self, key_label: &str, message: &[u8]) -> Result<Vec<u8>, HsmError> {
        let (label, message) = (key_label.to_owned(), message.to_vec());
        let start = std::time::Instant::now();
        let result = self.run_as(crate::metrics::HsmOp::SignRs256, move |s| s.sign_rs256(&label, &message)).await;
        let metrics = &crate::metrics::METRICS.hsm;
        metrics.record(crate::metrics::HsmOp::SignRs256, None, start.elapsed(), result.as_ref().err());
        result
    }
}

#[derive(Serialize)]
struct Header<'a> {
    alg: &'static str,
    typ: &'static str,
    #[serde(skip_serializing_if = "str::is_empty")]
    kid: &'a str,
}

#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    scope: &'static str,
    aud: &'a str,
    iat: i64,
    exp: i64,
}

/// Who the assertion speaks for and which key signs it.
#[derive(Debug, Clone)]
pub struct AssertionIdentity {
    /// `iss`: the service account's `client_email`.
    pub client_email: String,
    /// `aud`: the token endpoint.
    pub token_uri: String,
    /// `kid`: the service account's `private_key_id` (omitted when empty).
    pub private_key_id: String,
    /// HSM label of the private key.
    pub key_label: String,
}

/// A compact JWS `header.claims.signature` asserting `identity` at `now` (Unix seconds).
pub async fn build_assertion(
    signer: &dyn AssertionSigner,
    identity: &AssertionIdentity,
    now: i64,
) -> Result<String, HsmError> {
    let header = Header { alg: "RS256", typ: "JWT", kid: &identity.private_key_id };
    let claims = Claims {
        iss: &identity.client_email,
        scope: FCM_SCOPE,
        aud: &identity.token_uri,
        iat: now,
        exp: now + ASSERTION_LIFETIME_SECS,
    };
    let header = serde_json::to_vec(&header).map_err(|_| HsmError::Malformed("JWT header"))?;
    let claims = serde_json::to_vec(&claims).map_err(|_| HsmError::Malformed("JWT claims"))?;
    let mut jws = URL_SAFE_NO_PAD.encode(header);
    jws.push('.');
    jws.push_str(&URL_SAFE_NO_PAD.encode(claims));
    let signature = signer.sign_rs256(&identity.key_label, jws.as_bytes()).await?;
    jws.push('.');
    jws.push_str(&URL_SAFE_NO_PAD.encode(signature));
    Ok(jws)
}
