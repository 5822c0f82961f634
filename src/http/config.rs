//! The admin listener's sections: `[management]` (who may call the management API)
//! and `[metrics]`; and the values of other sections the routers need.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{ConfigProblem, check_https_url};

/// `GET /metrics` on the admin listener.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Serve `/metrics` (the admin listener only).
    pub enabled: bool,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self { enabled: true }
    }
}

/// Signature algorithms an operator token may use: asymmetric only, so a public JWKS
/// key can never serve as an HMAC secret.
pub const MANAGEMENT_ALGORITHMS: [&str; 9] =
    ["ES256", "ES384", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "EdDSA"];

/// The management API `/api/management/v1/` (admin listener), authorised by bearer
/// JWTs from the operator's OIDC provider. It fails closed: without `issuer`,
/// `audience` and `jwks_url` (or a break-glass token file) it answers
/// `404 management_disabled`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ManagementConfig {
    /// Expected `iss` of operator tokens, e.g. `https://login.example/realms/ops`.
    pub issuer: String,
    /// Expected `aud` (one of the token's audiences), e.g. `symbolon-management`.
    pub audience: String,
    /// The provider's JWKS, e.g. `https://login.example/realms/ops/protocol/openid-connect/certs`.
    /// `https://` (plain `http://` only to a loopback address).
    pub jwks_url: String,
    /// Claim holding the scopes: a space-separated string or an array of strings.
    pub scope_claim: String,
    /// Prefix the provider puts before each scope (e.g. `api://symbolon/`); scopes
    /// without it are ignored.
    pub scope_prefix: String,
    /// Leeway on `exp`, `nbf` and `iat`.
    #[serde(with = "humantime_serde")]
    pub clock_skew: Duration,
    /// How long fetched keys are used before the JWKS is fetched again.
    #[serde(with = "humantime_serde")]
    pub jwks_cache: Duration,
    /// Least time between two fetches caused by an unknown `kid`.
    #[serde(with = "humantime_serde")]
    pub jwks_refetch_interval: Duration,
    /// Accepted `alg` values (a subset of ES256, ES384, RS256, RS384, RS512, PS256, PS384,
    /// PS512, EdDSA).
    pub algorithms: Vec<String>,
    /// File holding a static break-glass bearer token (at least 256 bits, hex or
    /// base64). It grants every scope; each use is audited.
    pub break_glass_token_file: Option<PathBuf>,
}

impl Default for ManagementConfig {
    fn default() -> Self {
        Self {
            issuer: String::new(),
            audience: String::new(),
            jwks_url: String::new(),
            scope_claim: "scope".into(),
            scope_prefix: String::new(),
            clock_skew: Duration::from_secs(60),
            jwks_cache: Duration::from_secs(600),
            jwks_refetch_interval: Duration::from_secs(30),
            algorithms: vec!["ES256".into(), "ES384".into(), "RS256".into(), "PS256".into(), "EdDSA".into()],
            break_glass_token_file: None,
        }
    }
}

impl ManagementConfig {
    /// An OIDC provider is configured (issuer, audience and JWKS URL).
    pub fn oidc_configured(&self) -> bool {
        !self.issuer.is_empty() && !self.audience.is_empty() && !self.jwks_url.is_empty()
    }

    /// What is wrong with `[management]`.
    pub fn problems(&self) -> Vec<ConfigProblem> {
        let mut p = Vec::new();
        let set = [&self.issuer, &self.audience, &self.jwks_url].iter().filter(|v| !v.is_empty()).count();
        if set != 0 && set != 3 {
            p.push(ConfigProblem::new(
                "management.issuer",
                "issuer, audience and jwks_url are set together or not at all",
            ));
        }
        if !self.jwks_url.is_empty()
            && let Err(e) = check_https_url(&self.jwks_url)
        {
            p.push(ConfigProblem::new("management.jwks_url", e));
        }
        if self.scope_claim.is_empty() {
            p.push(ConfigProblem::new("management.scope_claim", "must not be empty"));
        }
        if self.algorithms.is_empty() {
            p.push(ConfigProblem::new("management.algorithms", "must name at least one algorithm"));
        }
        for alg in &self.algorithms {
            if !MANAGEMENT_ALGORITHMS.contains(&alg.as_str()) {
                p.push(ConfigProblem::new(
                    "management.algorithms",
                    format!("{alg:?} is not an accepted asymmetric algorithm ({MANAGEMENT_ALGORITHMS:?})"),
                ));
            }
        }
        if self.jwks_cache.is_zero() {
            p.push(ConfigProblem::new("management.jwks_cache", "must be greater than zero"));
        }
        p
    }
}

/// What the routers and extractors need from the server's configuration, passed in
/// at start (values of `[server]`, `[limits]`, `[saml]`, `[demo]` and `[metrics]`).
#[derive(Debug, Clone)]
pub struct HttpSettings {
    /// Requests served at once per listener (`server.max_in_flight`).
    pub max_in_flight: usize,
    /// Largest accepted request body (`limits.body_max_bytes`).
    pub body_max_bytes: usize,
    /// Send `Strict-Transport-Security` (`server.hsts`).
    pub hsts: bool,
    /// Proxies whose `X-Forwarded-For` is believed (`server.trusted_proxies`).
    pub trusted_proxies: Vec<IpAddr>,
    /// Serve `/metrics` on the admin listener (`metrics.enabled`).
    pub metrics: bool,
    /// The operator console (`[console]`).
    pub console: ConsoleConfig,
}

/// The operator console at `/console/` on the admin listener (docs/operations.md,
/// "Operator console"). Operators sign in through the `[management]` OIDC provider
/// (authorization code with PKCE, the server keeps the tokens) or with the
/// break-glass token; the browser holds only an opaque session cookie.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConsoleConfig {
    /// Serve the console.
    pub enabled: bool,
    /// The admin listener's URL as operators' browsers reach it, e.g.
    /// `https://symbolon-admin.example`: the redirect URI is this plus
    /// `/console/callback`; `https://` makes the cookie `Secure` with a `__Host-` name.
    pub url: String,
    /// The console's client id at the `[management]` provider (empty: sign-in with the
    /// break-glass token only).
    pub client_id: String,
    /// File holding the client secret (`client_secret_basic`); none: a public client
    /// with PKCE only.
    pub client_secret_file: Option<PathBuf>,
    /// The provider's authorization endpoint.
    pub authorization_endpoint: String,
    /// The provider's token endpoint (`https://`, plain `http://` only to loopback).
    pub token_endpoint: String,
    /// Scopes requested (`openid` and what the provider needs to put the management
    /// scopes into the access token).
    pub scopes: Vec<String>,
    /// A console session ends after this long without a request.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// A console session ends this long after sign-in whatever happens.
    #[serde(with = "humantime_serde")]
    pub absolute_timeout: Duration,
    /// Break-glass sign-in attempts per client IP and minute.
    pub break_glass_per_minute: u32,
}

impl Default for ConsoleConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            url: String::new(),
            client_id: String::new(),
            client_secret_file: None,
            authorization_endpoint: String::new(),
            token_endpoint: String::new(),
            scopes: vec!["openid".into()],
            idle_timeout: Duration::from_secs(15 * 60),
            absolute_timeout: Duration::from_secs(8 * 3600),
            break_glass_per_minute: 5,
        }
    }
}

impl ConsoleConfig {
    /// Sign-in through the `[management]` provider is configured.
    pub fn oidc_configured(&self) -> bool {
        !self.client_id.is_empty()
    }

    /// The console's origin is `https://` (Secure, `__Host-` cookies).
    pub fn secure(&self) -> bool {
        self.url.starts_with("https://")
    }

    /// Where the provider sends the operator back.
    pub fn redirect_uri(&self) -> String {
        format!("{}/console/callback", self.url.trim_end_matches('/'))
    }

    /// What is wrong with `[console]` (given `[management]`).
    pub fn problems(&self, management: &ManagementConfig) -> Vec<ConfigProblem> {
        let mut p = Vec::new();
        if !self.enabled {
            return p;
        }
        match url::Url::parse(&self.url) {
            Ok(u) if u.path() == "/" && u.query().is_none() => {
                if let Err(e) = check_https_url(&self.url) {
                    p.push(ConfigProblem::new("console.url", e));
                }
            }
            Ok(_) => p.push(ConfigProblem::new("console.url", "must be an origin without path or query")),
            Err(e) => p.push(ConfigProblem::new("console.url", format!("not a URL: {e}"))),
        }
        if self.oidc_configured() {
            if !management.oidc_configured() {
                p.push(ConfigProblem::new(
                    "console.client_id",
                    "needs the [management] provider (issuer, audience, jwks_url)",
                ));
            }
            for (path, value) in [
                ("console.authorization_endpoint", &self.authorization_endpoint),
                ("console.token_endpoint", &self.token_endpoint),
            ] {
                if let Err(e) = check_https_url(value) {
                    p.push(ConfigProblem::new(path, e));
                }
            }
            if !self.scopes.iter().any(|s| s == "openid") {
                p.push(ConfigProblem::new("console.scopes", "must include openid"));
            }
        } else if management.break_glass_token_file.is_none() {
            p.push(ConfigProblem::new(
                "console.enabled",
                "no way to sign in: set client_id or management.break_glass_token_file",
            ));
        }
        if self.idle_timeout.is_zero() || self.idle_timeout > self.absolute_timeout {
            p.push(ConfigProblem::new(
                "console.idle_timeout",
                "must be greater than zero and at most absolute_timeout",
            ));
        }
        if self.absolute_timeout > Duration::from_secs(24 * 3600) {
            p.push(ConfigProblem::new("console.absolute_timeout", "must be at most 24 h"));
        }
        if self.break_glass_per_minute == 0 {
            p.push(ConfigProblem::new("console.break_glass_per_minute", "must be at least 1"));
        }
        p
    }
}
