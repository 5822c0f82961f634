//! Compact JWS with ES256 (RFC 7515 / RFC 7518 §3.4): the one signing format shared
//! by the trust lists, the VRL and every device message.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE, URL_SAFE_NO_PAD};
use p256::ecdsa::signature::{Signer as _, Verifier as _};
use p256::ecdsa::{Signature, SigningKey, VerifyingKey};
use serde::Serialize;

/// base64url without padding (the protocol's *b64u*).
pub fn b64u(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// base64url with `=` padding, as some state-issued seals carry it.
pub fn b64u_padded(bytes: &[u8]) -> String {
    URL_SAFE.encode(bytes)
}

/// Standard base64 with padding (`x5c`, `ca` in TSLs).
pub fn b64_std(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

/// Decodes base64url with or without padding.
pub fn b64u_decode(text: &str) -> Result<Vec<u8>, base64::DecodeError> {
    URL_SAFE_NO_PAD.decode(text.trim_end_matches('='))
}

/// Raw `r||s` ES256 signature (64 bytes) over `message`.
pub fn es256_sign(key: &SigningKey, message: &[u8]) -> [u8; 64] {
    let signature: Signature = key.sign(message);
    let mut raw = [0u8; 64];
    raw.copy_from_slice(&signature.to_bytes());
    raw
}

/// Builds `b64u(header).b64u(payload).b64u(r||s)` over serialisable header and payload.
pub fn compact_es256<H: Serialize, P: Serialize>(
    key: &SigningKey,
    header: &H,
    payload: &P,
) -> serde_json::Result<String> {
    let header = serde_json::to_vec(header)?;
    let payload = serde_json::to_vec(payload)?;
    Ok(compact_es256_raw(key, &header, &payload))
}

/// Same as [`compact_es256`] over already serialised header and payload bytes.
pub fn compact_es256_raw(key: &SigningKey, header: &[u8], payload: &[u8]) -> String {
    let signing_input = format!("{}.{}", b64u(header), b64u(payload));
    let signature = es256_sign(key, signing_input.as_bytes());
    format!("{signing_input}.{}", b64u(&signature))
}

/// The three decoded parts of a compact JWS.
#[derive(Debug, Clone)]
pub struct DecodedJws {
    /// Protected header as JSON.
    pub header: serde_json::Value,
    /// Payload as JSON.
    pub payload: serde_json::Value,
    /// Raw signature bytes.
    pub signature: Vec<u8>,
    /// `b64u(header).b64u(payload)`, the bytes that were signed.
    pub signing_input: String,
}

/// Errors from [`decode_compact`] / [`verify_es256`].
#[derive(Debug, thiserror::Error)]
pub enum JwsError {
    /// Not three dot-separated parts.
    #[error("not a compact JWS")]
    Shape,
    /// A part is not base64url.
    #[error("bad base64url: {0}")]
    Base64(#[from] base64::DecodeError),
    /// Header or payload is not JSON.
    #[error("bad JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// Signature is not 64 bytes or does not verify.
    #[error("signature does not verify")]
    Signature,
}

/// Splits and decodes a compact JWS without checking the signature.
pub fn decode_compact(jws: &str) -> Result<DecodedJws, JwsError> {
    let mut parts = jws.split('.');
    let (Some(h), Some(p), Some(s), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err(JwsError::Shape);
    };
    Ok(DecodedJws {
        header: serde_json::from_slice(&URL_SAFE_NO_PAD.decode(h)?)?,
        payload: serde_json::from_slice(&URL_SAFE_NO_PAD.decode(p)?)?,
        signature: URL_SAFE_NO_PAD.decode(s)?,
        signing_input: format!("{h}.{p}"),
    })
}

/// Decodes a compact JWS and verifies its raw `r||s` ES256 signature with `key`.
pub fn verify_es256(jws: &str, key: &VerifyingKey) -> Result<DecodedJws, JwsError> {
    let decoded = decode_compact(jws)?;
    let signature = Signature::from_slice(&decoded.signature).map_err(|_| JwsError::Signature)?;
    key.verify(decoded.signing_input.as_bytes(), &signature).map_err(|_| JwsError::Signature)?;
    Ok(decoded)
}
