//! The provider's endpoints and its discovery document (OpenID Connect Discovery 1.0
//! §3, RFC 8414 §2), served at `/.well-known/openid-configuration` and
//! `/.well-known/oauth-authorization-server`.

use serde_json::{Value, json};

use super::CLAIMS;
use super::config::AuthMethod;
use super::jwk::ASSERTION_ALGS;

pub const AUTHORIZE_PATH: &str = "/authorize";
pub const TOKEN_PATH: &str = "/token";
pub const USERINFO_PATH: &str = "/userinfo";
pub const JWKS_PATH: &str = "/jwks";
pub const END_SESSION_PATH: &str = "/end_session";
/// The sign-in page's completion and cancel steps (issuer origin only).
pub const COMPLETE_PATH: &str = "/authorize/complete";
pub const CANCEL_PATH: &str = "/authorize/cancel";

/// `issuer` + `path`.
pub fn endpoint(issuer: &str, path: &str) -> String {
    format!("{}{path}", issuer.trim_end_matches('/'))
}

/// The discovery document. `scopes` are the protocol's scopes (docs/protocol.md §7.3).
pub fn document(issuer: &str, scopes: &[&str]) -> Value {
    let mut scopes_supported = vec!["openid"];
    scopes_supported.extend_from_slice(scopes);
    let mut claims = vec!["iss", "sub", "aud", "exp", "iat", "auth_time", "nonce", "sid", "amr", "at_hash"];
    claims.extend_from_slice(&CLAIMS);
    json!({
        "issuer": issuer,
        "authorization_endpoint": endpoint(issuer, AUTHORIZE_PATH),
        "token_endpoint": endpoint(issuer, TOKEN_PATH),
        "userinfo_endpoint": endpoint(issuer, USERINFO_PATH),
        "jwks_uri": endpoint(issuer, JWKS_PATH),
        "end_session_endpoint": endpoint(issuer, END_SESSION_PATH),
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": ["authorization_code"],
        "subject_types_supported": ["pairwise", "public"],
        "id_token_signing_alg_values_supported": ["ES256"],
        "userinfo_signing_alg_values_supported": ["none"],
        "token_endpoint_auth_methods_supported": AuthMethod::ALL.iter().map(|m| m.as_str()).collect::<Vec<_>>(),
        "token_endpoint_auth_signing_alg_values_supported": ASSERTION_ALGS,
        "code_challenge_methods_supported": ["S256"],
        "scopes_supported": scopes_supported,
        "claims_supported": claims,
        "claims_parameter_supported": false,
        "request_parameter_supported": false,
        "request_uri_parameter_supported": false,
        "authorization_response_iss_parameter_supported": true,
        "prompt_values_supported": ["none", "login"],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn document_names_our_endpoints() {
        let d = document("https://idp.example/", &["name", "age"]);
        assert_eq!(d["authorization_endpoint"], "https://idp.example/authorize");
        assert_eq!(d["token_endpoint"], "https://idp.example/token");
        assert_eq!(d["scopes_supported"], json!(["openid", "name", "age"]));
        assert_eq!(
            d["token_endpoint_auth_methods_supported"],
            json!(["private_key_jwt", "client_secret_basic", "client_secret_post", "none"])
        );
        assert_eq!(d["authorization_response_iss_parameter_supported"], true);
    }
}
