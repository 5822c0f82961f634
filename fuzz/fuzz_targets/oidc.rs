//! OpenID Connect requests: the `/authorize` parameters (strict query/form parsing,
//! docs/protocol.md §14.3 rules, the error redirect) and the `/token` form with its
//! client authentication (Basic header, form secret, `private_key_jwt` assertion
//! verified against the registered JWKS). Input: the client's JWKS JSON, a newline,
//! the `Authorization` header value (empty for none), a newline, the query or form
//! body. Any input must return, never panic.
#![no_main]
use symbolon::oidc::authorize;
use symbolon::oidc::client_auth::{self, Credentials};
use symbolon::oidc::config::{AuthMethod, OidcClientConfig};
use symbolon::oidc::params::Params;

const REDIRECT_URI: &str = "https://rp.example/cb?x=1";
const ISSUER: &str = "https://id.example";
const KNOWN_SCOPES: [&str; 4] = ["name", "age", "nationality", "age_over_18"];
/// The instant the 5-minute `exp` bound is checked against; the seeds' assertions
/// expire 100 s after it (jsonwebtoken checks `exp` against the clock: year 2100).
const NOW: i64 = 4_102_444_700;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let mut parts = data.splitn(3, |b| *b == b'\n');
    let (Some(jwks), Some(authorization), Some(body)) = (parts.next(), parts.next(), parts.next()) else {
        return;
    };
    let jwks: Option<serde_json::Value> = serde_json::from_slice(jwks).ok();
    let authorization = std::str::from_utf8(authorization).ok().filter(|a| !a.is_empty());
    let params = Params::parse(body);
    let allowed: Vec<String> = ["name", "age"].iter().map(|s| s.to_string()).collect();
    for method in [AuthMethod::None, AuthMethod::PrivateKeyJwt] {
        // Built as the configuration file would be, so new optional fields need no change here.
        let registration = serde_json::json!({
            "redirect_uris": [REDIRECT_URI],
            "token_endpoint_auth_method": method.as_str(),
            "jwks": jwks,
        });
        let Ok(client) = serde_json::from_value::<OidcClientConfig>(registration) else {
            return;
        };
        match authorize::check(&params, &client, &KNOWN_SCOPES, &allowed) {
            Ok(request) => {
                let state = request.state.as_deref();
                let mut pairs = vec![("code", "c")];
                pairs.extend(state.map(|s| ("state", s)));
                let _ = authorize::redirect_with(REDIRECT_URI, &pairs);
            }
            Err(e) => {
                let _ = authorize::error_redirect(REDIRECT_URI, &e, params.get("state"), ISSUER);
            }
        }
        if method == AuthMethod::PrivateKeyJwt
            && let Ok(Credentials::Assertion { client_id, assertion }) = client_auth::presented(authorization, &params)
        {
            let token_url = format!("{ISSUER}/token");
            let _ = client_auth::verify_assertion(&assertion, &client.jwks_keys(), &client_id, &[token_url.as_str(), ISSUER], NOW);
        }
    }
    if let Ok(Credentials::Basic { secret, .. } | Credentials::Post { secret, .. }) =
        client_auth::presented(authorization, &params)
    {
        let _ = client_auth::secret_matches(&secret, "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08");
    }
});
