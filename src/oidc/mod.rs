//! OpenID Connect provider: the protocol logic of the authorization code flow
//! (docs/protocol.md §14) — client registrations (`[services.oidc]`), the rules of an
//! authorization request, client authentication at the token endpoint, the discovery
//! document and the OAuth error vocabulary. Nothing here knows HTTP, the HSM or the
//! stores: the flow runs in `service::oidc`, the handlers live in `http::oidc`.

pub mod authorize;
pub mod client_auth;
pub mod config;
pub mod discovery;
pub mod error;
pub mod jwk;
pub mod logout;
pub mod params;

pub use config::{AuthMethod, ClientAuthConfig, OidcClientConfig, Registration};
pub use error::OAuthError;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};

/// How long an authorization code may be exchanged (docs/protocol.md §14.4).
pub const CODE_LIFETIME: std::time::Duration = std::time::Duration::from_secs(60);
/// The furthest in the future a client assertion's `exp` may lie (RFC 7523 §3).
pub const ASSERTION_MAX_LIFETIME: i64 = 300;
/// Clock skew accepted on client assertions.
pub const ASSERTION_SKEW: i64 = 30;
/// `amr` of every token: proof of possession of the enrolled device key (RFC 8176).
pub const AMR: &str = "pop";

/// The claim names of docs/protocol.md §7.3 an id_token and userinfo may carry.
pub const CLAIMS: [&str; 10] = [
    "given_name",
    "family_name",
    "birthdate",
    "age_over_18",
    "age_over_21",
    "nationality",
    "document_type",
    "document_number",
    "issuing_country",
    "document_expiry",
];

/// A fresh 256-bit random value, base64url (codes, access tokens, client secrets).
pub fn random_token() -> String {
    use rand_core::{OsRng, RngCore};
    let mut b = [0u8; 32];
    OsRng.fill_bytes(&mut b);
    URL_SAFE_NO_PAD.encode(b)
}

/// SHA-256 hex of a secret value (codes, access tokens and client secrets are kept
/// only as this).
pub fn sha256_hex(value: &str) -> String {
    Sha256::digest(value.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

/// The PKCE `S256` transform: b64u(SHA-256(verifier)) (RFC 7636 §4.2).
pub fn s256(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

/// `at_hash`: b64u of the left half of SHA-256 of the access token (OIDC Core §3.3.2.11).
pub fn at_hash(access_token: &str) -> String {
    let d = Sha256::digest(access_token.as_bytes());
    URL_SAFE_NO_PAD.encode(&d[..16])
}

/// A new client secret (256 random bits) and the SHA-256 hex the configuration keeps
/// (`symbolon services new-secret`).
pub fn new_client_secret() -> (String, String) {
    let secret = random_token();
    let hash = sha256_hex(&secret);
    (secret, hash)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkce_s256_matches_rfc7636_appendix_b() {
        assert_eq!(s256("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"), "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM");
    }

    #[test]
    fn secrets_are_256_bits() {
        let (secret, hash) = new_client_secret();
        assert_eq!(URL_SAFE_NO_PAD.decode(&secret).map(|b| b.len()).ok(), Some(32));
        assert_eq!(hash, sha256_hex(&secret));
        assert_eq!(hash.len(), 64);
    }
}
