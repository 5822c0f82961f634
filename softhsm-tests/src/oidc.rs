//! A test OIDC provider for the management API: its own P-256 keys, a JWKS served
//! over HTTP (counting fetches), and minting of ES256 operator tokens, including
//! malformed ones for negative tests (`alg: none`, HS256 keyed with the public key).
//! For the operator console it also runs the authorization code flow with PKCE:
//! `/authorize` signs in whoever [`TestIssuer::sign_in_as`] names at once (no page)
//! and `/token` checks the code, the verifier, the client and the redirect URI
//! before it issues an id_token and an access token.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::Context;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use p256::ecdsa::signature::Signer;
use p256::ecdsa::{Signature, SigningKey};
use rand_core::OsRng;
use serde_json::{Value, json};
use tokio::sync::oneshot;

/// Audience the test server is configured with.
pub const AUDIENCE: &str = "symbolon-management";

/// One signing key with its `kid`.
#[derive(Clone)]
pub struct IssuerKey {
    pub kid: String,
    pub key: SigningKey,
}

impl IssuerKey {
    /// A fresh P-256 key.
    pub fn generate(kid: &str) -> Self {
        Self { kid: kid.to_owned(), key: SigningKey::random(&mut OsRng) }
    }

    /// The public JWK (`kty` EC, `crv` P-256, `use` sig, `alg` ES256).
    pub fn jwk(&self) -> Value {
        let point = self.key.verifying_key().to_encoded_point(false);
        let x: &[u8] = point.x().map(|x| &x[..]).unwrap_or_default();
        let y: &[u8] = point.y().map(|y| &y[..]).unwrap_or_default();
        json!({"kty": "EC", "crv": "P-256", "kid": self.kid, "use": "sig", "alg": "ES256",
               "x": URL_SAFE_NO_PAD.encode(x), "y": URL_SAFE_NO_PAD.encode(y)})
    }
}

struct Shared {
    /// Public JWKs served.
    published: Mutex<Vec<Value>>,
    fetches: AtomicUsize,
    /// Who `/authorize` signs in: `sub` and scopes.
    operator: Mutex<Option<(String, Vec<String>)>>,
    /// Codes issued and not yet redeemed.
    codes: Mutex<HashMap<String, IssuedCode>>,
    /// Token requests answered with tokens.
    tokens_issued: AtomicUsize,
    issuer: String,
    key: IssuerKey,
}

/// What an authorization code stands for.
struct IssuedCode {
    client_id: String,
    redirect_uri: String,
    challenge: String,
    nonce: String,
    sub: String,
    scopes: Vec<String>,
}

/// `GET /authorize`: the code flow with PKCE S256 only; signs in the configured
/// operator at once and redirects back with `code` and `state`.
async fn authorize(State(shared): State<Arc<Shared>>, Query(q): Query<HashMap<String, String>>) -> Response {
    let get = |k: &str| q.get(k).cloned().unwrap_or_default();
    if get("response_type") != "code" || get("code_challenge_method") != "S256" || get("code_challenge").is_empty() {
        return (StatusCode::BAD_REQUEST, "code flow with PKCE S256 only").into_response();
    }
    if !get("scope").split(' ').any(|s| s == "openid") {
        return (StatusCode::BAD_REQUEST, "scope must include openid").into_response();
    }
    let Some((sub, scopes)) = shared.operator.lock().ok().and_then(|o| o.clone()) else {
        let Ok(mut back) = reqwest::Url::parse(&get("redirect_uri")) else {
            return (StatusCode::BAD_REQUEST, "bad redirect_uri").into_response();
        };
        back.query_pairs_mut().append_pair("error", "access_denied").append_pair("state", &get("state"));
        return Redirect::to(back.as_str()).into_response();
    };
    let code = URL_SAFE_NO_PAD.encode(rand_bytes());
    let issued = IssuedCode {
        client_id: get("client_id"),
        redirect_uri: get("redirect_uri"),
        challenge: get("code_challenge"),
        nonce: get("nonce"),
        sub,
        scopes,
    };
    if let Ok(mut codes) = shared.codes.lock() {
        codes.insert(code.clone(), issued);
    }
    let Ok(mut back) = reqwest::Url::parse(&get("redirect_uri")) else {
        return (StatusCode::BAD_REQUEST, "bad redirect_uri").into_response();
    };
    back.query_pairs_mut().append_pair("code", &code).append_pair("state", &get("state"));
    Redirect::to(back.as_str()).into_response()
}

fn rand_bytes() -> [u8; 32] {
    use rand_core::RngCore;
    let mut b = [0u8; 32];
    OsRng.fill_bytes(&mut b);
    b
}

fn oauth_error(error: &str) -> Response {
    (StatusCode::BAD_REQUEST, Json(json!({"error": error}))).into_response()
}

/// `POST /token`: redeems a code once, checking the client, the redirect URI and
/// the PKCE verifier.
async fn token(State(shared): State<Arc<Shared>>, Form(f): Form<HashMap<String, String>>) -> Response {
    let get = |k: &str| f.get(k).cloned().unwrap_or_default();
    if get("grant_type") != "authorization_code" {
        return oauth_error("unsupported_grant_type");
    }
    let Some(code) = shared.codes.lock().ok().and_then(|mut c| c.remove(&get("code"))) else {
        return oauth_error("invalid_grant");
    };
    use sha2::Digest;
    let challenge = URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(get("code_verifier").as_bytes()));
    if challenge != code.challenge || get("redirect_uri") != code.redirect_uri {
        return oauth_error("invalid_grant");
    }
    if get("client_id") != code.client_id {
        return oauth_error("invalid_client");
    }
    let (issuer, key) = (&shared.issuer, &shared.key);
    let now = crate::device::unix_now();
    let access = json!({"iss": issuer, "aud": AUDIENCE, "sub": code.sub, "iat": now, "exp": now + 600,
                        "scope": code.scopes.join(" ")});
    let id = json!({"iss": issuer, "aud": code.client_id, "sub": code.sub, "iat": now, "exp": now + 600,
                    "nonce": code.nonce});
    shared.tokens_issued.fetch_add(1, Ordering::SeqCst);
    Json(json!({"access_token": sign_with(key, &access), "id_token": sign_with(key, &id),
                "token_type": "Bearer", "expires_in": 600}))
    .into_response()
}

fn sign_with(key: &IssuerKey, claims: &Value) -> String {
    let header = json!({"alg": "ES256", "typ": "JWT", "kid": key.kid});
    let input = signing_input(&header, claims);
    let sig: Signature = key.key.sign(input.as_bytes());
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.to_bytes()))
}

/// The running provider.
pub struct TestIssuer {
    /// `iss` of its tokens.
    pub issuer: String,
    /// Where its JWKS is served.
    pub jwks_url: String,
    /// `http://127.0.0.1:<port>`: `/authorize` and `/token` are below it.
    pub base_url: String,
    /// The key tokens are signed with by default (published).
    pub key: IssuerKey,
    shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
}

impl Drop for TestIssuer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

async fn jwks(State(shared): State<Arc<Shared>>) -> Json<Value> {
    shared.fetches.fetch_add(1, Ordering::SeqCst);
    let keys: Vec<Value> = shared.published.lock().map(|k| k.clone()).unwrap_or_default();
    // A symmetric key in the set must be ignored by the server, never used as an HMAC secret.
    let mut keys = keys;
    keys.push(json!({"kty": "oct", "kid": "hmac-key", "k": URL_SAFE_NO_PAD.encode(b"not a verification key")}));
    Json(json!({"keys": keys}))
}

impl TestIssuer {
    /// Starts the provider on a free loopback port.
    pub async fn start() -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await.context("binding")?;
        let addr = listener.local_addr()?;
        let key = IssuerKey::generate("op-key-1");
        let issuer = format!("http://{addr}/realms/ops");
        let shared = Arc::new(Shared {
            published: Mutex::new(vec![key.jwk()]),
            fetches: AtomicUsize::new(0),
            operator: Mutex::new(None),
            codes: Mutex::new(HashMap::new()),
            tokens_issued: AtomicUsize::new(0),
            issuer: issuer.clone(),
            key: key.clone(),
        });
        let app = Router::new()
            .route("/jwks", get(jwks))
            .route("/authorize", get(authorize))
            .route("/token", post(token))
            .with_state(shared.clone());
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await;
        });
        Ok(Self {
            issuer,
            jwks_url: format!("http://{addr}/jwks"),
            base_url: format!("http://{addr}"),
            key,
            shared,
            stop: Some(stop),
        })
    }

    /// The `[management]` section for a server trusting this provider.
    pub fn management_toml(&self, extra: &str) -> String {
        format!(
            "[management]\nissuer = \"{}\"\naudience = \"{AUDIENCE}\"\njwks_url = \"{}\"\n{extra}\n",
            self.issuer, self.jwks_url
        )
    }

    /// The `[console]` section for a console at `url` signing in through this provider.
    pub fn console_toml(&self, url: &str, client_id: &str) -> String {
        format!(
            "[console]\nenabled = true\nurl = \"{url}\"\nclient_id = \"{client_id}\"\n\
             authorization_endpoint = \"{b}/authorize\"\ntoken_endpoint = \"{b}/token\"\n\
             scopes = [\"openid\", \"management\"]\n",
            b = self.base_url
        )
    }

    /// The operator `/authorize` signs in from now on (`None`: it answers `access_denied`).
    pub fn sign_in_as(&self, operator: Option<(&str, &[&str])>) {
        if let Ok(mut o) = self.shared.operator.lock() {
            *o = operator.map(|(sub, scopes)| (sub.to_string(), scopes.iter().map(|s| s.to_string()).collect()));
        }
    }

    /// Token requests that were answered with tokens.
    pub fn tokens_issued(&self) -> usize {
        self.shared.tokens_issued.load(Ordering::SeqCst)
    }

    /// Publishes another key (key rotation at the provider).
    pub fn publish(&self, key: &IssuerKey) {
        self.publish_jwk(key.jwk());
    }

    /// Publishes any public JWK.
    pub fn publish_jwk(&self, jwk: Value) {
        if let Ok(mut keys) = self.shared.published.lock() {
            keys.push(jwk);
        }
    }

    /// How many times the JWKS was fetched.
    pub fn fetches(&self) -> usize {
        self.shared.fetches.load(Ordering::SeqCst)
    }

    /// Claims of a valid token for `sub` with `scope` (any JSON value), valid for 5 minutes.
    pub fn claims(&self, sub: &str, scope: Value) -> Value {
        let now = crate::device::unix_now();
        json!({"iss": self.issuer, "aud": AUDIENCE, "sub": sub, "iat": now, "nbf": now - 5, "exp": now + 300, "scope": scope})
    }

    /// An ES256 token signed with the default key.
    pub fn token(&self, sub: &str, scopes: &[&str]) -> String {
        self.sign(&self.key, &self.claims(sub, json!(scopes.join(" "))))
    }

    /// An ES256 token over `claims` with `key`.
    pub fn sign(&self, key: &IssuerKey, claims: &Value) -> String {
        let header = json!({"alg": "ES256", "typ": "JWT", "kid": key.kid});
        let input = signing_input(&header, claims);
        let sig: Signature = key.key.sign(input.as_bytes());
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.to_bytes()))
    }

    /// An unsigned token (`alg: none`) naming the published key.
    pub fn unsigned(&self, claims: &Value) -> String {
        let header = json!({"alg": "none", "typ": "JWT", "kid": self.key.kid});
        format!("{}.", signing_input(&header, claims))
    }

    /// An HS256 token whose HMAC key is the published public key (the JWK JSON and,
    /// separately, its raw `x` coordinate): the classic algorithm-confusion forgery.
    pub fn hs256_with_public_key(&self, claims: &Value, raw_x: bool) -> String {
        let header = json!({"alg": "HS256", "typ": "JWT", "kid": self.key.kid});
        let input = signing_input(&header, claims);
        let jwk = self.key.jwk();
        let secret = if raw_x {
            URL_SAFE_NO_PAD.decode(jwk["x"].as_str().unwrap_or_default()).unwrap_or_default()
        } else {
            jwk.to_string().into_bytes()
        };
        let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(&secret).unwrap_or_else(|_| unreachable!());
        mac.update(input.as_bytes());
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes()))
    }

    /// A token signed with the real key but whose header names `alg` (e.g. ES384).
    pub fn with_header_alg(&self, alg: &str, claims: &Value) -> String {
        let header = json!({"alg": alg, "typ": "JWT", "kid": self.key.kid});
        let input = signing_input(&header, claims);
        let sig: Signature = self.key.key.sign(input.as_bytes());
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.to_bytes()))
    }
}

fn signing_input(header: &Value, claims: &Value) -> String {
    format!("{}.{}", URL_SAFE_NO_PAD.encode(header.to_string()), URL_SAFE_NO_PAD.encode(claims.to_string()))
}

/// An RSA signing key (2048 bits) for RS256 and PS256 operator tokens.
pub struct RsaIssuerKey {
    pub kid: String,
    key: rsa::RsaPrivateKey,
}

impl RsaIssuerKey {
    /// A fresh key.
    pub fn generate(kid: &str) -> anyhow::Result<Self> {
        Ok(Self { kid: kid.to_owned(), key: rsa::RsaPrivateKey::new(&mut OsRng, 2048)? })
    }

    /// The public JWK, without `alg` (as many providers publish RSA keys).
    pub fn jwk(&self) -> Value {
        use rsa::traits::PublicKeyParts;
        json!({"kty": "RSA", "kid": self.kid, "use": "sig",
               "n": URL_SAFE_NO_PAD.encode(self.key.n().to_bytes_be()),
               "e": URL_SAFE_NO_PAD.encode(self.key.e().to_bytes_be())})
    }

    /// A token over `claims` with `alg` `RS256` or `PS256`.
    pub fn sign(&self, alg: &str, claims: &Value) -> anyhow::Result<String> {
        use rsa::signature::{RandomizedSigner, SignatureEncoding};
        let header = json!({"alg": alg, "typ": "JWT", "kid": self.kid});
        let input = signing_input(&header, claims);
        let sig = match alg {
            "RS256" => rsa::pkcs1v15::SigningKey::<sha2::Sha256>::new(self.key.clone()).sign(input.as_bytes()).to_vec(),
            "PS256" => rsa::pss::BlindedSigningKey::<sha2::Sha256>::new(self.key.clone())
                .sign_with_rng(&mut OsRng, input.as_bytes())
                .to_vec(),
            other => anyhow::bail!("unsupported alg {other}"),
        };
        Ok(format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig)))
    }
}

/// An Ed25519 signing key for EdDSA operator tokens (ring, already in the tree).
pub struct Ed25519IssuerKey {
    pub kid: String,
    key: ring::signature::Ed25519KeyPair,
}

impl Ed25519IssuerKey {
    /// A fresh key.
    pub fn generate(kid: &str) -> anyhow::Result<Self> {
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng).map_err(|_| anyhow::anyhow!("keygen"))?;
        let key = ring::signature::Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).map_err(|_| anyhow::anyhow!("pkcs8"))?;
        Ok(Self { kid: kid.to_owned(), key })
    }

    /// The public JWK (RFC 8037 `OKP`/`Ed25519`).
    pub fn jwk(&self) -> Value {
        use ring::signature::KeyPair;
        json!({"kty": "OKP", "crv": "Ed25519", "kid": self.kid, "use": "sig", "alg": "EdDSA",
               "x": URL_SAFE_NO_PAD.encode(self.key.public_key().as_ref())})
    }

    /// An `EdDSA` token over `claims`.
    pub fn sign(&self, claims: &Value) -> String {
        let header = json!({"alg": "EdDSA", "typ": "JWT", "kid": self.kid});
        let input = signing_input(&header, claims);
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(self.key.sign(input.as_bytes()).as_ref()))
    }
}
