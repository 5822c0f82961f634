//! Who may call the management API: bearer JWTs from the operator's OIDC provider,
//! checked against its JWKS, or the optional break-glass token (docs/protocol.md §11).
//!
//! Only asymmetric algorithms are accepted and each key is used only with the
//! algorithm its type and curve allow, so neither `alg: none` nor an HMAC "signed"
//! with the public key material can pass.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::str::FromStr;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, Validation, jwk::Jwk};
use serde_json::Value;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::config::ManagementConfig;
use crate::error::{ApiError, ErrorCode};

/// Largest JWKS document accepted.
const JWKS_MAX_BYTES: usize = 256 * 1024;

/// Failures while setting up operator authentication.
#[derive(Debug, thiserror::Error)]
pub enum OperatorSetupError {
    #[error("cannot read the break-glass token file {path}: {reason}")]
    BreakGlassFile { path: String, reason: String },
    #[error("the break-glass token in {0} is weaker than 256 bits (use e.g. `openssl rand -hex 32`)")]
    BreakGlassWeak(String),
    #[error("cannot build the JWKS HTTP client: {0}")]
    Client(String),
}

/// An authenticated operator.
#[derive(Debug, Clone)]
pub struct Operator {
    /// `sub` of the token, or `break-glass`.
    pub sub: String,
    scopes: HashSet<String>,
    /// Authenticated with the static break-glass token (every scope).
    pub break_glass: bool,
}

impl Operator {
    /// The operator holds `scope` (the break-glass token holds every scope).
    pub fn has(&self, scope: &str) -> bool {
        self.break_glass || self.scopes.contains(scope)
    }

    /// The actor recorded in the audit trail.
    pub fn actor(&self) -> String {
        if self.break_glass { "break-glass".into() } else { format!("operator:{}", self.sub) }
    }

    /// The scopes held, sorted (empty for break-glass, which holds every scope).
    pub fn scope_list(&self) -> Vec<String> {
        let mut v: Vec<String> = self.scopes.iter().cloned().collect();
        v.sort();
        v
    }

    /// An operator authenticated before (a console session keeps who signed in).
    pub(super) fn restore(sub: String, scopes: Vec<String>, break_glass: bool) -> Self {
        Self { sub, scopes: scopes.into_iter().collect(), break_glass }
    }
}

/// A JWKS key and the algorithms its type and curve (or its `alg`) allow.
#[derive(Clone)]
struct ProviderKey {
    algorithms: Vec<Algorithm>,
    key: DecodingKey,
}

/// Keys fetched from the JWKS, by `kid`.
struct KeyCache {
    keys: HashMap<String, ProviderKey>,
    fetched_at: Option<Instant>,
}

/// Verifies operator tokens. Built once at start; `disabled` when nothing is configured.
pub struct OperatorAuth {
    oidc: Option<Oidc>,
    /// SHA-256 of the break-glass token: compared in constant time, length hidden.
    break_glass: Option<[u8; 32]>,
}

struct Oidc {
    config: ManagementConfig,
    algorithms: Vec<Algorithm>,
    client: reqwest::Client,
    cache: RwLock<KeyCache>,
    /// One fetch at a time; holds when the last one started: at most one attempt per
    /// `jwks_refetch_interval`, whether for an unknown kid, a stale cache or a retry
    /// while the provider is down.
    fetch: tokio::sync::Mutex<Option<Instant>>,
}

impl std::fmt::Debug for OperatorAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OperatorAuth")
            .field("oidc", &self.oidc.as_ref().map(|o| &o.config.issuer))
            .field("break_glass", &self.break_glass.is_some())
            .finish()
    }
}

impl OperatorAuth {
    /// From the `[management]` section; reads the break-glass token file when named.
    pub fn from_config(config: &ManagementConfig) -> Result<Self, OperatorSetupError> {
        let break_glass = config.break_glass_token_file.as_deref().map(read_break_glass).transpose()?;
        let oidc = if config.oidc_configured() {
            let client = reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .map_err(|e| OperatorSetupError::Client(e.to_string()))?;
            Some(Oidc {
                algorithms: config.algorithms.iter().filter_map(|a| Algorithm::from_str(a).ok()).collect(),
                config: config.clone(),
                client,
                cache: RwLock::new(KeyCache { keys: HashMap::new(), fetched_at: None }),
                fetch: tokio::sync::Mutex::new(None),
            })
        } else {
            None
        };
        Ok(Self { oidc, break_glass })
    }

    /// Neither a provider nor a break-glass token: the API is off.
    pub fn disabled(&self) -> bool {
        self.oidc.is_none() && self.break_glass.is_none()
    }

    /// Authenticates the request's bearer token. `401 invalid_token` when it is missing
    /// or not valid; `404 management_disabled` when nothing is configured.
    pub async fn authenticate(&self, headers: &HeaderMap) -> Result<Operator, ApiError> {
        if self.disabled() {
            return Err(disabled());
        }
        let token = bearer(headers).ok_or_else(|| invalid("a bearer token is required"))?;
        if let Some(operator) = self.break_glass(token) {
            tracing::warn!("management API called with the break-glass token");
            return Ok(operator);
        }
        self.access_token(token).await
    }

    /// A break-glass token is configured.
    pub fn break_glass_configured(&self) -> bool {
        self.break_glass.is_some()
    }

    /// The break-glass operator when `token` is the configured break-glass token
    /// (compared in constant time over its SHA-256).
    pub fn break_glass(&self, token: &str) -> Option<Operator> {
        let expected = self.break_glass.as_ref()?;
        let presented: [u8; 32] = Sha256::digest(token.trim().as_bytes()).into();
        bool::from(presented.ct_eq(expected)).then(|| Operator {
            sub: "break-glass".into(),
            scopes: HashSet::new(),
            break_glass: true,
        })
    }

    /// Checks an access token of the `[management]` provider as the management API
    /// does (never the break-glass token): the operator with its scopes.
    pub async fn access_token(&self, token: &str) -> Result<Operator, ApiError> {
        let oidc = self.oidc.as_ref().ok_or_else(|| invalid("the bearer token is not valid"))?;
        oidc.verify(token).await
    }

    /// Checks an id_token of the `[management]` provider for the console's client:
    /// signature with a JWKS key, `iss`, `aud` = `client_id`, `exp`, `nbf`, and the
    /// `nonce` of the sign-in. Returns its `sub`.
    pub async fn id_token(&self, token: &str, client_id: &str, nonce: &str) -> Result<String, ApiError> {
        let oidc = self.oidc.as_ref().ok_or_else(|| invalid("no operator provider is configured"))?;
        let (alg, kid) = token_header(token, &oidc.algorithms)?;
        let key = oidc.key(&kid).await?;
        let config = ManagementConfig { audience: client_id.to_string(), ..oidc.config.clone() };
        let claims = validated_claims(&config, token, alg, &key)?;
        let presented = claims.get("nonce").and_then(Value::as_str).unwrap_or_default();
        if !bool::from(presented.as_bytes().ct_eq(nonce.as_bytes())) || nonce.is_empty() {
            return Err(invalid("the id_token's nonce does not match the sign-in"));
        }
        claims
            .get("sub")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .ok_or_else(|| invalid("the id_token has no subject"))
    }
}

fn disabled() -> ApiError {
    ApiError::new(ErrorCode::ManagementDisabled, "the management API is not configured on this server")
}

fn invalid(detail: &str) -> ApiError {
    ApiError::new(ErrorCode::InvalidToken, detail)
}

/// The token of `Authorization: Bearer <token>` (scheme case-insensitive).
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

fn read_break_glass(path: &Path) -> Result<[u8; 32], OperatorSetupError> {
    let text = crate::files::read_bounded_string(path, crate::files::MAX_SECRET_BYTES)
        .map_err(|e| OperatorSetupError::BreakGlassFile { path: path.display().to_string(), reason: e.to_string() })?;
    let token = text.trim();
    if entropy_bytes(token) < 32 {
        return Err(OperatorSetupError::BreakGlassWeak(path.display().to_string()));
    }
    Ok(Sha256::digest(token.as_bytes()).into())
}

/// Bytes of randomness a hex or base64 token encodes (0 when it is neither).
fn entropy_bytes(token: &str) -> usize {
    if !token.is_empty() && token.len().is_multiple_of(2) && token.bytes().all(|b| b.is_ascii_hexdigit()) {
        return token.len() / 2;
    }
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD]
        .iter()
        .find_map(|e| e.decode(token).ok())
        .map_or(0, |b| b.len())
}

impl Oidc {
    async fn verify(&self, token: &str) -> Result<Operator, ApiError> {
        let (alg, kid) = token_header(token, &self.algorithms)?;
        let key = self.key(&kid).await?;
        validate(&self.config, token, alg, &key)
    }

    /// The key for `kid`: from the cache while it is fresh; else the JWKS is fetched
    /// again, at most once per `jwks_refetch_interval`. While the provider cannot be
    /// reached, keys fetched before still serve.
    async fn key(&self, kid: &str) -> Result<ProviderKey, ApiError> {
        let unknown = || invalid("the bearer token's key is unknown");
        if let (Some(found), true) = self.cached(kid) {
            return Ok(found);
        }
        let mut last = self.fetch.lock().await;
        // Another request may have fetched while this one waited.
        let (cached, fresh) = self.cached(kid);
        if let (Some(found), true) = (&cached, fresh) {
            return Ok(found.clone());
        }
        if last.is_some_and(|t| t.elapsed() < self.config.jwks_refetch_interval) {
            return cached.ok_or_else(unknown);
        }
        *last = Some(Instant::now());
        match self.fetch_jwks().await {
            Ok(keys) => {
                if let Ok(mut c) = self.cache.write() {
                    *c = KeyCache { keys, fetched_at: Some(Instant::now()) };
                }
                self.cached(kid).0.ok_or_else(unknown)
            }
            Err(reason) => {
                tracing::warn!(url = %self.config.jwks_url, %reason, "cannot fetch the management JWKS");
                let never = self.cache.read().map(|c| c.fetched_at.is_none()).unwrap_or(true);
                match cached {
                    Some(found) => Ok(found),
                    None if never => Err(ApiError::new(
                        ErrorCode::Unavailable,
                        "the operator identity provider's keys cannot be fetched",
                    )),
                    None => Err(unknown()),
                }
            }
        }
    }

    /// The cached key for `kid`, and whether the cache is within `jwks_cache`.
    fn cached(&self, kid: &str) -> (Option<ProviderKey>, bool) {
        match self.cache.read() {
            Ok(c) => (c.keys.get(kid).cloned(), c.fetched_at.is_some_and(|t| t.elapsed() < self.config.jwks_cache)),
            Err(_) => (None, false),
        }
    }

    async fn fetch_jwks(&self) -> Result<HashMap<String, ProviderKey>, String> {
        let mut response = self.client.get(&self.config.jwks_url).send().await.map_err(|e| e.to_string())?;
        if !response.status().is_success() {
            return Err(format!("HTTP {}", response.status()));
        }
        // Read at most JWKS_MAX_BYTES, whatever the server claims or sends.
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| e.to_string())? {
            if body.len() + chunk.len() > JWKS_MAX_BYTES {
                return Err("the JWKS is too large".into());
            }
            body.extend_from_slice(&chunk);
        }
        let out = jwks_keys(&body)?;
        tracing::info!(keys = out.len(), "management JWKS fetched");
        Ok(out)
    }
}

/// The JWS header of an operator token: its algorithm, which must be one of
/// `accepted`, and its `kid`.
fn token_header(token: &str, accepted: &[Algorithm]) -> Result<(Algorithm, String), ApiError> {
    let header = jsonwebtoken::decode_header(token).map_err(|_| invalid("the bearer token is not a valid JWT"))?;
    if !accepted.contains(&header.alg) {
        return Err(invalid("the bearer token's algorithm is not accepted"));
    }
    let kid = header.kid.ok_or_else(|| invalid("the bearer token names no key (kid)"))?;
    Ok((header.alg, kid))
}

/// Checks an operator token with the provider's key for its `kid`: the algorithm the
/// key allows, the signature, `iss`, `aud`, `exp`, `nbf`, a non-empty `sub`; the scopes
/// come from the configured claim.
fn validate(config: &ManagementConfig, token: &str, alg: Algorithm, key: &ProviderKey) -> Result<Operator, ApiError> {
    let claims = validated_claims(config, token, alg, key)?;
    let sub = claims.get("sub").and_then(Value::as_str).filter(|s| !s.is_empty());
    let sub = sub.ok_or_else(|| invalid("the bearer token has no subject"))?.to_string();
    let scopes = scopes(config, claims.get(&config.scope_claim));
    Ok(Operator { sub, scopes, break_glass: false })
}

/// The claims of a token whose algorithm, signature, `iss`, `aud`, `exp` and `nbf`
/// check out (see [`validate`]).
fn validated_claims(
    config: &ManagementConfig,
    token: &str,
    alg: Algorithm,
    key: &ProviderKey,
) -> Result<Value, ApiError> {
    if !key.algorithms.contains(&alg) {
        return Err(invalid("the bearer token's algorithm does not match its key"));
    }
    let mut validation = Validation::new(alg);
    validation.set_issuer(&[&config.issuer]);
    validation.set_audience(&[&config.audience]);
    validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
    validation.leeway = config.clock_skew.as_secs();
    validation.validate_nbf = true;
    let data = jsonwebtoken::decode::<Value>(token, &key.key, &validation).map_err(|e| {
        use jsonwebtoken::errors::ErrorKind;
        match e.kind() {
            ErrorKind::ExpiredSignature => invalid("the bearer token has expired"),
            ErrorKind::ImmatureSignature => invalid("the bearer token is not valid yet"),
            ErrorKind::InvalidIssuer => invalid("the bearer token is from another issuer"),
            ErrorKind::InvalidAudience => invalid("the bearer token is for another audience"),
            ErrorKind::MissingRequiredClaim(_) => invalid("the bearer token lacks a required claim"),
            _ => invalid("the bearer token is not valid"),
        }
    })?;
    Ok(data.claims)
}

/// Scopes from the configured claim (a space-separated string or an array of
/// strings), with the configured prefix removed; scopes without it are ignored.
fn scopes(config: &ManagementConfig, claim: Option<&Value>) -> HashSet<String> {
    let raw: Vec<&str> = match claim {
        Some(Value::String(s)) => s.split_whitespace().collect(),
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    raw.into_iter().filter_map(|s| s.strip_prefix(config.scope_prefix.as_str())).map(str::to_owned).collect()
}

/// The usable keys of a JWKS document, by `kid` (see [`usable_key`]).
fn jwks_keys(body: &[u8]) -> Result<HashMap<String, ProviderKey>, String> {
    let doc: Value = serde_json::from_slice(body).map_err(|e| format!("not JSON: {e}"))?;
    let keys = doc.get("keys").and_then(Value::as_array).ok_or("no \"keys\" array")?;
    let mut out = HashMap::new();
    for key in keys {
        if let Some((kid, algorithms, key)) = usable_key(key) {
            out.insert(kid, ProviderKey { algorithms, key });
        }
    }
    Ok(out)
}

/// Fuzzing entry (`fuzz/fuzz_targets/operator_jwt.rs`): everything operator
/// authentication does with outside bytes, without the network. The input is a JWKS
/// document, a newline, then an `Authorization` header value (or a bare token): the
/// header is parsed, the token's JWS header checked against every asymmetric
/// algorithm, and the token validated (signature, claims, scopes) with the JWKS key of
/// its `kid`, or else with every key of the document. Any input must return, never panic.
#[doc(hidden)]
pub fn fuzz_operator_token(data: &[u8]) {
    use Algorithm::{ES256, ES384, EdDSA, PS256, PS384, PS512, RS256, RS384, RS512};
    static CONFIG: std::sync::OnceLock<ManagementConfig> = std::sync::OnceLock::new();
    let config = CONFIG.get_or_init(|| ManagementConfig {
        issuer: "https://idp.example".into(),
        audience: "symbolon-management".into(),
        ..ManagementConfig::default()
    });
    let split = data.iter().position(|b| *b == b'\n').unwrap_or(data.len());
    let (jwks, rest) = data.split_at(split);
    let keys = jwks_keys(jwks).unwrap_or_default();
    let Ok(text) = std::str::from_utf8(rest.get(1..).unwrap_or_default()) else { return };
    let mut headers = HeaderMap::new();
    if let Ok(value) = axum::http::HeaderValue::from_str(text) {
        headers.insert(AUTHORIZATION, value);
    }
    let token = bearer(&headers).unwrap_or(text);
    let all = [ES256, ES384, EdDSA, RS256, RS384, RS512, PS256, PS384, PS512];
    if let Ok((alg, kid)) = token_header(token, &all) {
        match keys.get(&kid) {
            Some(key) => drop(validate(config, token, alg, key)),
            None => keys.values().for_each(|key| drop(validate(config, token, alg, key))),
        }
    }
}

/// A JWKS entry that can verify operator tokens: a signing public key with a `kid`,
/// and the algorithms its type and curve (or its `alg`) allow: one for EC and OKP
/// keys, the RSA family for an RSA key without `alg`. Symmetric (`oct`) keys,
/// encryption keys, private keys and unknown types are skipped.
fn usable_key(key: &Value) -> Option<(String, Vec<Algorithm>, DecodingKey)> {
    let field = |name: &str| key.get(name).and_then(Value::as_str);
    let kid = field("kid")?.to_string();
    if field("use").is_some_and(|u| u != "sig") || key.get("d").is_some() {
        return None;
    }
    use Algorithm::{ES256, ES384, EdDSA, PS256, PS384, PS512, RS256, RS384, RS512};
    let algorithms = match (field("kty")?, field("crv"), field("alg")) {
        ("EC", Some("P-256"), None | Some("ES256")) => vec![ES256],
        ("EC", Some("P-384"), None | Some("ES384")) => vec![ES384],
        ("OKP", Some("Ed25519"), None | Some("EdDSA")) => vec![EdDSA],
        ("RSA", _, None) => vec![RS256, RS384, RS512, PS256, PS384, PS512],
        ("RSA", _, Some(a @ ("RS256" | "RS384" | "RS512" | "PS256" | "PS384" | "PS512"))) => {
            vec![Algorithm::from_str(a).ok()?]
        }
        _ => return None,
    };
    let jwk: Jwk = serde_json::from_value(key.clone()).ok()?;
    let decoding = DecodingKey::from_jwk(&jwk).ok()?;
    Some((kid, algorithms, decoding))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn break_glass_needs_256_bits() {
        assert_eq!(entropy_bytes(&"ab".repeat(32)), 32);
        assert_eq!(entropy_bytes(&"ab".repeat(31)), 31);
        assert_eq!(entropy_bytes("q83vEjRWeJCrze8SNFZ4kKvN7xI0VniQq83vEjRWeJA="), 32);
        assert_eq!(entropy_bytes("not a token"), 0);
    }

    #[test]
    fn symmetric_and_private_keys_are_skipped() {
        let oct = serde_json::json!({"kty": "oct", "kid": "k", "k": "c2VjcmV0"});
        assert!(usable_key(&oct).is_none());
        let enc = serde_json::json!({"kty": "EC", "kid": "k", "crv": "P-256", "use": "enc", "x": "", "y": ""});
        assert!(usable_key(&enc).is_none());
        let mismatched = serde_json::json!({"kty": "EC", "kid": "k", "crv": "P-256", "alg": "HS256", "x": "", "y": ""});
        assert!(usable_key(&mismatched).is_none());
    }
}
