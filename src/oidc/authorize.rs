//! The rules of an authorization request (docs/protocol.md §14.3; OIDC Core §3.1.2,
//! RFC 6749 §4.1, RFC 7636, RFC 9207). The client and its redirect URI are checked
//! first, by the caller; once both are right every refusal goes back to the client as
//! a redirect carrying `error`, `error_description`, `state` and `iss`.

use super::OAuthError;
use super::config::{AuthMethod, OidcClientConfig};
use super::params::Params;

/// Longest accepted `state`, `nonce` and `login_hint`.
const MAX_VALUE: usize = 1024;

/// A checked authorization request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthorizeRequest {
    pub state: Option<String>,
    pub nonce: Option<String>,
    /// The requested scopes of docs/protocol.md §7.3 the client may have (`openid` and
    /// unknown values are not listed).
    pub scopes: Vec<String>,
    /// PKCE `S256` challenge.
    pub code_challenge: Option<String>,
    /// A well-formed token id to prefill on the sign-in page.
    pub login_hint: Option<String>,
}

fn is_b64u(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Token ids as in docs/credentials.md §2.
fn is_token_id(t: &str) -> bool {
    (6..=64).contains(&t.len()) && t.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Checks everything after `client_id` and `redirect_uri` (already matched by the
/// caller). `known_scopes` are the scopes of docs/protocol.md §7.3, `allowed` the
/// client's. Unknown scope values are ignored (OIDC Core §3.1.2.1); a known one the
/// client may not have is `invalid_scope`.
pub fn check(
    params: &Params,
    client: &OidcClientConfig,
    known_scopes: &[&str],
    allowed: &[String],
) -> Result<AuthorizeRequest, OAuthError> {
    if let Some(name) = params.repeated().first() {
        return Err(OAuthError::invalid_request(format!("parameter {name} is repeated")));
    }
    if params.get("request").is_some() {
        return Err(OAuthError::request_not_supported("request objects are not supported"));
    }
    if params.get("request_uri").is_some() {
        return Err(OAuthError::request_uri_not_supported("request_uri is not supported"));
    }
    match params.get("response_type") {
        None => return Err(OAuthError::invalid_request("response_type is required")),
        Some("code") => {}
        Some(_) => return Err(OAuthError::unsupported_response_type("only response_type=code is supported")),
    }
    if params.get("response_mode").is_some_and(|m| m != "query") {
        return Err(OAuthError::invalid_request("only response_mode=query is supported"));
    }
    let scope = params.get("scope").unwrap_or("");
    let requested: Vec<&str> = scope.split(' ').filter(|s| !s.is_empty()).collect();
    if !requested.contains(&"openid") {
        return Err(OAuthError::invalid_scope("scope must contain openid"));
    }
    let mut scopes = Vec::new();
    for s in &requested {
        if !known_scopes.contains(s) {
            continue;
        }
        if !allowed.iter().any(|a| a == s) {
            return Err(OAuthError::invalid_scope(format!("scope {s} is not allowed for this client")));
        }
        if !scopes.iter().any(|x: &String| x == s) {
            scopes.push((*s).to_string());
        }
    }
    let code_challenge = match (params.get("code_challenge"), params.get("code_challenge_method")) {
        (None, None) => None,
        (None, Some(_)) => return Err(OAuthError::invalid_request("code_challenge_method without code_challenge")),
        (Some(c), Some("S256")) if c.len() == 43 && is_b64u(c) => Some(c.to_string()),
        (Some(_), Some("S256")) => {
            return Err(OAuthError::invalid_request("code_challenge must be 43 base64url characters (S256)"));
        }
        (Some(_), _) => return Err(OAuthError::invalid_request("code_challenge_method must be S256")),
    };
    if code_challenge.is_none() && client.token_endpoint_auth_method == AuthMethod::None {
        return Err(OAuthError::invalid_request("public clients must use PKCE (code_challenge with S256)"));
    }
    let prompts: Vec<&str> = params.get("prompt").unwrap_or("").split(' ').filter(|s| !s.is_empty()).collect();
    if prompts.contains(&"none") {
        if prompts.len() > 1 {
            return Err(OAuthError::invalid_request("prompt=none cannot be combined with other values"));
        }
        return Err(OAuthError::login_required("signing in always needs the user's phone"));
    }
    for name in ["state", "nonce", "login_hint"] {
        if params.get(name).is_some_and(|v| v.len() > MAX_VALUE) {
            return Err(OAuthError::invalid_request(format!("{name} is longer than {MAX_VALUE} bytes")));
        }
    }
    Ok(AuthorizeRequest {
        state: params.get("state").map(str::to_string),
        nonce: params.get("nonce").map(str::to_string),
        scopes,
        code_challenge,
        login_hint: params.get("login_hint").filter(|h| is_token_id(h)).map(str::to_string),
    })
}

/// `redirect_uri` with `pairs` added to its query (RFC 6749 §4.1.2: existing query
/// components are kept).
pub fn redirect_with(redirect_uri: &str, pairs: &[(&str, &str)]) -> Option<String> {
    let mut u = url::Url::parse(redirect_uri).ok()?;
    {
        let mut q = u.query_pairs_mut();
        for (k, v) in pairs {
            q.append_pair(k, v);
        }
    }
    Some(u.to_string())
}

/// The error redirect of RFC 6749 §4.1.2.1 with `iss` (RFC 9207).
pub fn error_redirect(redirect_uri: &str, error: &OAuthError, state: Option<&str>, issuer: &str) -> Option<String> {
    let mut pairs = vec![("error", error.error), ("error_description", error.description.as_str())];
    if let Some(s) = state {
        pairs.push(("state", s));
    }
    pairs.push(("iss", issuer));
    redirect_with(redirect_uri, &pairs)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KNOWN: [&str; 5] = ["name", "birthdate", "age", "nationality", "document"];

    fn client(method: AuthMethod) -> OidcClientConfig {
        OidcClientConfig {
            redirect_uris: vec!["https://rp.example/cb".into()],
            post_logout_redirect_uris: vec![],
            token_endpoint_auth_method: method,
            client_secret_sha256: None,
            jwks: None,
            jwks_uri: None,
            id_token_lifetime: None,
        }
    }

    fn run(query: &str, method: AuthMethod) -> Result<AuthorizeRequest, OAuthError> {
        check(&Params::parse(query.as_bytes()), &client(method), &KNOWN, &["name".into(), "age".into()])
    }

    const CH: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

    #[test]
    fn a_good_request() {
        let r = run(
            &format!("response_type=code&scope=openid+age+profile+name&state=s&nonce=n&code_challenge={CH}&code_challenge_method=S256&login_hint=AUS-123456"),
            AuthMethod::None,
        )
        .unwrap();
        assert_eq!(r.scopes, vec!["age".to_string(), "name".into()]);
        assert_eq!(r.state.as_deref(), Some("s"));
        assert_eq!(r.nonce.as_deref(), Some("n"));
        assert_eq!(r.code_challenge.as_deref(), Some(CH));
        assert_eq!(r.login_hint.as_deref(), Some("AUS-123456"));
        let r = run("response_type=code&scope=openid&login_hint=a%20b", AuthMethod::ClientSecretBasic).unwrap();
        assert_eq!(r.login_hint, None);
        assert_eq!(r.code_challenge, None);
    }

    #[test]
    fn refusals() {
        let basic = AuthMethod::ClientSecretBasic;
        let with_ch = format!("response_type=code&scope=openid&code_challenge={CH}");
        let plain = format!("{with_ch}&code_challenge_method=plain");
        let cases: [(&str, &str); 15] = [
            ("response_type=code&scope=openid&scope=openid", "invalid_request"),
            ("response_type=code&scope=openid&request=eyJ", "request_not_supported"),
            ("response_type=code&scope=openid&request_uri=https://x", "request_uri_not_supported"),
            ("scope=openid", "invalid_request"),
            ("response_type=token&scope=openid", "unsupported_response_type"),
            ("response_type=code+id_token&scope=openid", "unsupported_response_type"),
            ("response_type=code&scope=openid&response_mode=fragment", "invalid_request"),
            ("response_type=code&scope=name", "invalid_scope"),
            ("response_type=code&scope=openid+document", "invalid_scope"),
            ("response_type=code&scope=openid&code_challenge_method=S256", "invalid_request"),
            (&with_ch, "invalid_request"),
            (&plain, "invalid_request"),
            ("response_type=code&scope=openid&code_challenge=short&code_challenge_method=S256", "invalid_request"),
            ("response_type=code&scope=openid&prompt=none", "login_required"),
            ("response_type=code&scope=openid&prompt=none+login", "invalid_request"),
        ];
        for (q, want) in cases {
            assert_eq!(run(q, basic).map_err(|e| e.error), Err(want), "{q}");
        }
        assert_eq!(
            run("response_type=code&scope=openid", AuthMethod::None).map_err(|e| e.error),
            Err("invalid_request")
        );
        let long = "x".repeat(MAX_VALUE + 1);
        assert_eq!(
            run(&format!("response_type=code&scope=openid&state={long}"), basic).map_err(|e| e.error),
            Err("invalid_request")
        );
    }

    #[test]
    fn error_redirect_keeps_query_and_adds_iss() {
        let e = OAuthError::access_denied("cancelled");
        let url = error_redirect("https://rp.example/cb?a=1", &e, Some("st&ate"), "https://idp.example").unwrap();
        assert_eq!(
            url,
            "https://rp.example/cb?a=1&error=access_denied&error_description=cancelled&state=st%26ate&iss=https%3A%2F%2Fidp.example"
        );
    }
}
