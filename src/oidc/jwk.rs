//! A client's registered public keys (`[services.oidc] jwks`): which entries can
//! verify `private_key_jwt` assertions, and with which algorithms.

use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::Value;

/// Algorithms accepted on client assertions (discovery's
/// `token_endpoint_auth_signing_alg_values_supported`).
pub const ASSERTION_ALGS: [&str; 5] = ["ES256", "ES384", "RS256", "PS256", "EdDSA"];

/// A JWKS entry that can verify client assertions: a public signing key, its `kid`
/// (if any) and the algorithms its type and curve (or its `alg`) allow.
pub fn assertion_key(key: &Value) -> Option<(Option<String>, Vec<Algorithm>, DecodingKey)> {
    let field = |name: &str| key.get(name).and_then(Value::as_str);
    if field("use").is_some_and(|u| u != "sig") || key.get("d").is_some() {
        return None;
    }
    use Algorithm::{ES256, ES384, EdDSA, PS256, RS256};
    let algorithms = match (field("kty")?, field("crv"), field("alg")) {
        ("EC", Some("P-256"), None | Some("ES256")) => vec![ES256],
        ("EC", Some("P-384"), None | Some("ES384")) => vec![ES384],
        ("OKP", Some("Ed25519"), None | Some("EdDSA")) => vec![EdDSA],
        ("RSA", _, None) => vec![RS256, PS256],
        ("RSA", _, Some("RS256")) => vec![RS256],
        ("RSA", _, Some("PS256")) => vec![PS256],
        _ => return None,
    };
    let jwk: Jwk = serde_json::from_value(key.clone()).ok()?;
    let decoding = DecodingKey::from_jwk(&jwk).ok()?;
    Some((field("kid").map(str::to_string), algorithms, decoding))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_public_signing_keys() {
        let oct = serde_json::json!({"kty": "oct", "k": "c2VjcmV0"});
        assert!(assertion_key(&oct).is_none());
        let enc = serde_json::json!({"kty": "EC", "crv": "P-256", "use": "enc", "x": "", "y": ""});
        assert!(assertion_key(&enc).is_none());
        let private = serde_json::json!({"kty": "EC", "crv": "P-256", "d": "x", "x": "", "y": ""});
        assert!(assertion_key(&private).is_none());
        let hs = serde_json::json!({"kty": "EC", "crv": "P-256", "alg": "HS256", "x": "", "y": ""});
        assert!(assertion_key(&hs).is_none());
    }
}
