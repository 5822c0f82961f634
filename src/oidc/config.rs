//! A relying party's OpenID Connect registration: the `[services.oidc]` table of a
//! `[[services]]` entry (docs/protocol.md §14.2), and its checks for `config check`.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::ConfigProblem;

/// How a client authenticates at the token endpoint (OIDC Core §9).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthMethod {
    /// A JWT signed with a key of the client's registered `jwks` (RFC 7523).
    PrivateKeyJwt,
    /// `Authorization: Basic` with the client id and secret (RFC 6749 §2.3.1).
    ClientSecretBasic,
    /// `client_id` and `client_secret` form fields.
    ClientSecretPost,
    /// A public client (no secret): PKCE is required.
    None,
}

impl AuthMethod {
    pub const ALL: [AuthMethod; 4] =
        [AuthMethod::PrivateKeyJwt, AuthMethod::ClientSecretBasic, AuthMethod::ClientSecretPost, AuthMethod::None];

    pub fn as_str(self) -> &'static str {
        match self {
            AuthMethod::PrivateKeyJwt => "private_key_jwt",
            AuthMethod::ClientSecretBasic => "client_secret_basic",
            AuthMethod::ClientSecretPost => "client_secret_post",
            AuthMethod::None => "none",
        }
    }

    /// Whether the client holds a shared secret.
    pub fn uses_secret(self) -> bool {
        matches!(self, AuthMethod::ClientSecretBasic | AuthMethod::ClientSecretPost)
    }
}

/// `[services.oidc]`: the service is an OpenID Connect client; its `id` is the
/// `client_id` and its `name` is shown on the sign-in page.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcClientConfig {
    /// Where codes may be sent, compared as exact strings: `https://`, or `http://`
    /// to a loopback host (`127.0.0.1`, `[::1]`, `localhost`).
    pub redirect_uris: Vec<String>,
    /// Where RP-initiated logout may return to (same rules).
    #[serde(default)]
    pub post_logout_redirect_uris: Vec<String>,
    pub token_endpoint_auth_method: AuthMethod,
    /// SHA-256 (hex) of the client secret for `client_secret_basic`/`_post`; the
    /// secret itself is never in the configuration (`symbolon services new-secret`).
    #[serde(default)]
    pub client_secret_sha256: Option<String>,
    /// The client's public keys for `private_key_jwt`: a JWKS, as a TOML table or a
    /// JSON string.
    #[serde(default)]
    pub jwks: Option<serde_json::Value>,
    /// Or where the client publishes them (`https://`; fetched and cached).
    #[serde(default)]
    pub jwks_uri: Option<String>,
    /// Life of this client's id_tokens (default `auth.token_ttl`).
    #[serde(default, with = "humantime_serde")]
    pub id_token_lifetime: Option<Duration>,
}

impl OidcClientConfig {
    /// How this client authenticates (its method and credentials).
    pub fn registration(&self) -> Registration<'_> {
        Registration {
            method: self.token_endpoint_auth_method,
            secret_sha256: self.client_secret_sha256.as_deref(),
            jwks: self.jwks.as_ref(),
            jwks_uri: self.jwks_uri.as_deref(),
        }
    }

    /// The inline `jwks`'s keys (see [`Registration::jwks_keys`]).
    pub fn jwks_keys(&self) -> Vec<serde_json::Value> {
        self.registration().jwks_keys()
    }

    /// Whether `uri` is exactly one of the registered redirect URIs.
    pub fn has_redirect_uri(&self, uri: &str) -> bool {
        self.redirect_uris.iter().any(|r| r == uri)
    }

    /// What is wrong with this registration; `at` is the table's path.
    pub fn problems(&self, at: &str) -> Vec<ConfigProblem> {
        let mut p = Vec::new();
        if self.redirect_uris.is_empty() {
            p.push(ConfigProblem::new(format!("{at}.redirect_uris"), "at least one redirect URI is required"));
        }
        for (field, uris) in
            [("redirect_uris", &self.redirect_uris), ("post_logout_redirect_uris", &self.post_logout_redirect_uris)]
        {
            for uri in uris {
                if let Err(why) = check_redirect_uri(uri) {
                    p.push(ConfigProblem::new(format!("{at}.{field}"), format!("{uri:?}: {why}")));
                }
            }
        }
        p.extend(self.registration().problems(at));
        if let Some(l) = self.id_token_lifetime
            && !(Duration::from_secs(60)..=Duration::from_secs(3600)).contains(&l)
        {
            p.push(ConfigProblem::new(format!("{at}.id_token_lifetime"), "must be between 1m and 1h"));
        }
        p
    }
}

/// `[services.client_auth]`: how a raw-API service with `initiate = "backend"`
/// authenticates its `POST /v1/auth/initiate` calls (docs/protocol.md §5.1): the
/// methods of the token endpoint except `none`, with the same credentials.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientAuthConfig {
    /// `client_secret_basic`, `client_secret_post` or `private_key_jwt`.
    pub method: AuthMethod,
    /// SHA-256 (hex) of the secret for `client_secret_*` (`symbolon services new-secret`).
    #[serde(default)]
    pub client_secret_sha256: Option<String>,
    /// The service's public keys for `private_key_jwt`: a JWKS, as a TOML table or a
    /// JSON string.
    #[serde(default)]
    pub jwks: Option<serde_json::Value>,
    /// Or where the service publishes them (`https://`; fetched and cached).
    #[serde(default)]
    pub jwks_uri: Option<String>,
}

impl ClientAuthConfig {
    /// How the service authenticates (its method and credentials).
    pub fn registration(&self) -> Registration<'_> {
        Registration {
            method: self.method,
            secret_sha256: self.client_secret_sha256.as_deref(),
            jwks: self.jwks.as_ref(),
            jwks_uri: self.jwks_uri.as_deref(),
        }
    }

    /// What is wrong with this table; `at` is its path.
    pub fn problems(&self, at: &str) -> Vec<ConfigProblem> {
        let mut p = self.registration().problems(at);
        if self.method == AuthMethod::None {
            p.push(ConfigProblem::new(
                format!("{at}.method"),
                "backend initiate needs client authentication: client_secret_basic, client_secret_post or private_key_jwt",
            ));
        }
        p
    }
}

/// A client's authentication method and the credentials registered for it, whether
/// from `[services.oidc]` or `[services.client_auth]`.
#[derive(Debug, Clone, Copy)]
pub struct Registration<'a> {
    pub method: AuthMethod,
    pub secret_sha256: Option<&'a str>,
    pub jwks: Option<&'a serde_json::Value>,
    pub jwks_uri: Option<&'a str>,
}

impl Registration<'_> {
    /// The registered JWKS's `keys`, whether given as a table or a JSON string.
    pub fn jwks_keys(&self) -> Vec<serde_json::Value> {
        let set = match self.jwks {
            Some(serde_json::Value::String(s)) => serde_json::from_str(s).unwrap_or(serde_json::Value::Null),
            Some(v) => v.clone(),
            None => serde_json::Value::Null,
        };
        set.get("keys").and_then(|k| k.as_array()).cloned().unwrap_or_default()
    }

    /// What is wrong with the credentials for the method; `at` is the table's path.
    pub fn problems(&self, at: &str) -> Vec<ConfigProblem> {
        let mut p = Vec::new();
        let method = self.method;
        match (self.secret_sha256, method.uses_secret()) {
            (Some(h), true) if h.len() != 64 || !h.bytes().all(|b| b.is_ascii_hexdigit()) => {
                p.push(ConfigProblem::new(
                    format!("{at}.client_secret_sha256"),
                    "must be the 64 hex digits printed by `symbolon services new-secret`",
                ))
            }
            (None, true) => p.push(ConfigProblem::new(
                format!("{at}.client_secret_sha256"),
                format!("{} needs the secret's SHA-256 (`symbolon services new-secret`)", method.as_str()),
            )),
            (Some(_), false) => p.push(ConfigProblem::new(
                format!("{at}.client_secret_sha256"),
                format!("a secret is not used with {}", method.as_str()),
            )),
            _ => {}
        }
        match (self.jwks, self.jwks_uri, method) {
            (None, None, AuthMethod::PrivateKeyJwt) => p.push(ConfigProblem::new(
                format!("{at}.jwks"),
                "private_key_jwt needs the client's public keys (jwks or jwks_uri)",
            )),
            (Some(_), Some(_), AuthMethod::PrivateKeyJwt) => {
                p.push(ConfigProblem::new(format!("{at}.jwks_uri"), "give jwks or jwks_uri, not both"))
            }
            (Some(_), None, AuthMethod::PrivateKeyJwt) => {
                let keys = self.jwks_keys();
                if keys.is_empty() || keys.iter().any(|k| super::jwk::assertion_key(k).is_none()) {
                    p.push(ConfigProblem::new(
                        format!("{at}.jwks"),
                        "must be a JWKS of public signing keys (EC P-256/P-384, RSA, Ed25519)",
                    ));
                }
            }
            (None, Some(uri), AuthMethod::PrivateKeyJwt) => {
                if let Err(e) = crate::error::check_https_url(uri) {
                    p.push(ConfigProblem::new(format!("{at}.jwks_uri"), e));
                }
            }
            (jwks, uri, _) => {
                if jwks.is_some() {
                    p.push(ConfigProblem::new(
                        format!("{at}.jwks"),
                        format!("keys are not used with {}", method.as_str()),
                    ));
                }
                if uri.is_some() {
                    p.push(ConfigProblem::new(
                        format!("{at}.jwks_uri"),
                        format!("keys are not used with {}", method.as_str()),
                    ));
                }
            }
        }
        p
    }
}

/// A redirect URI may be registered when it is absolute, without fragment or user
/// info, and `https://` — or `http://` to a loopback host (RFC 8252 §7.3).
pub fn check_redirect_uri(uri: &str) -> Result<(), &'static str> {
    let u = url::Url::parse(uri).map_err(|_| "not an absolute URL")?;
    if u.fragment().is_some() {
        return Err("must not have a fragment");
    }
    if !u.username().is_empty() || u.password().is_some() {
        return Err("must not carry user info");
    }
    match u.scheme() {
        "https" if u.host().is_some() => Ok(()),
        "http" if is_loopback(&u) => Ok(()),
        "http" => Err("http:// is allowed only to a loopback host (127.0.0.1, [::1], localhost)"),
        _ => Err("must be https:// (or http:// to a loopback host)"),
    }
}

fn is_loopback(u: &url::Url) -> bool {
    match u.host() {
        Some(url::Host::Ipv4(a)) => a.is_loopback(),
        Some(url::Host::Ipv6(a)) => a.is_loopback(),
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn redirect_uri_rules() {
        assert!(check_redirect_uri("https://rp.example/cb?x=1").is_ok());
        assert!(check_redirect_uri("http://127.0.0.1:8090/callback").is_ok());
        assert!(check_redirect_uri("http://[::1]/cb").is_ok());
        assert!(check_redirect_uri("http://localhost/cb").is_ok());
        for bad in [
            "http://rp.example/cb",
            "https://rp.example/cb#f",
            "rp.example/cb",
            "javascript:alert(1)",
            "https://u:p@rp.example/",
        ] {
            assert!(check_redirect_uri(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn method_needs_its_credential() {
        assert_eq!(client(AuthMethod::None).problems("s").len(), 0);
        let p = client(AuthMethod::ClientSecretBasic).problems("s");
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].path, "s.client_secret_sha256");
        let mut c = client(AuthMethod::ClientSecretPost);
        c.client_secret_sha256 = Some("ab".repeat(32));
        assert!(c.problems("s").is_empty());
        c.client_secret_sha256 = Some("zz".repeat(32));
        assert_eq!(c.problems("s").len(), 1);
        let mut c = client(AuthMethod::PrivateKeyJwt);
        assert_eq!(c.problems("s")[0].path, "s.jwks");
        c.jwks = Some(serde_json::json!({"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}));
        assert_eq!(c.problems("s")[0].path, "s.jwks");
        c.jwks = None;
        c.jwks_uri = Some("http://keys.example/jwks".into());
        assert_eq!(c.problems("s")[0].path, "s.jwks_uri", "https only");
        c.jwks_uri = Some("https://keys.example/jwks".into());
        assert!(c.problems("s").is_empty());
        c.jwks = Some(serde_json::json!({"keys": []}));
        assert_eq!(c.problems("s")[0].path, "s.jwks_uri", "not both");
        let mut c = client(AuthMethod::None);
        c.redirect_uris = vec!["http://rp.example/cb".into()];
        c.id_token_lifetime = Some(Duration::from_secs(5));
        assert_eq!(c.problems("s").len(), 2);
    }
}
