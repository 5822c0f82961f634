//! The OpenID Connect provider over HTTP (docs/protocol.md §14) with the real server,
//! SoftHSM2 and the reference device approving: discovery, the authorization request
//! rules (error page without redirect, error redirects with `state` and `iss`), the
//! hosted page's completion and cancel, the token endpoint with every client
//! authentication method, code single use and replay revocation, PKCE, userinfo,
//! pairwise subjects, and the audit events and counters.

use std::collections::HashMap;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};
use softhsm_tests::device::Decision;
use softhsm_tests::jose::compact_es256;
use softhsm_tests::oidc::{Ed25519IssuerKey, IssuerKey, RsaIssuerKey};
use softhsm_tests::signin::SignIn;
use softhsm_tests::{ServerOptions, TestToken, symbolon_cli};

const WEB_CB: &str = "https://rp.example/cb";
const SPA_CB: &str = "http://127.0.0.1:8090/callback";
const POST_CB: &str = "https://post.example/cb";
const JWT_CB: &str = "https://jwt.example/cb";
const PUB_CB: &str = "https://public.example/cb";
/// A PKCE pair (RFC 7636 appendix B).
const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

struct Env {
    env: SignIn,
    web_secret: String,
    post_secret: String,
    es: IssuerKey,
    rsa: RsaIssuerKey,
    ed: Ed25519IssuerKey,
}

async fn start() -> Env {
    start_with("", ServerOptions::default()).await
}

/// The clients of [`start`], with `extra` TOML and `options` for the server.
async fn start_with(extra: &str, options: ServerOptions) -> Env {
    let (web_secret, web_hash) = symbolon::oidc::new_client_secret();
    let (post_secret, post_hash) = symbolon::oidc::new_client_secret();
    let es = IssuerKey::generate("es-1");
    let rsa = RsaIssuerKey::generate("rsa-1").unwrap();
    let ed = Ed25519IssuerKey::generate("ed-1").unwrap();
    let jwks = json!({"keys": [es.jwk(), rsa.jwk(), ed.jwk()]}).to_string().replace('\'', "");
    let toml = format!(
        r#"
[[services]]
id = "web"
name = "Web App"
allowed_scopes = ["name", "age"]
[services.oidc]
redirect_uris = ["{WEB_CB}"]
post_logout_redirect_uris = ["https://rp.example/bye"]
token_endpoint_auth_method = "client_secret_basic"
client_secret_sha256 = "{web_hash}"

[[services]]
id = "spa"
name = "Single Page"
allowed_scopes = ["age"]
[services.oidc]
redirect_uris = ["{SPA_CB}"]
token_endpoint_auth_method = "none"

[[services]]
id = "post"
name = "Post Client"
allowed_scopes = ["name"]
[services.oidc]
redirect_uris = ["{POST_CB}"]
token_endpoint_auth_method = "client_secret_post"
client_secret_sha256 = "{post_hash}"

[[services]]
id = "jwt"
name = "JWT Client"
allowed_scopes = ["name"]
[services.oidc]
redirect_uris = ["{JWT_CB}"]
token_endpoint_auth_method = "private_key_jwt"
jwks = '{jwks}'

[[services]]
id = "pub"
name = "Public Subjects"
allowed_scopes = ["name"]
subject_type = "public"
[services.oidc]
redirect_uris = ["{PUB_CB}"]
token_endpoint_auth_method = "none"
{extra}
"#
    );
    let env = SignIn::start(&toml, options).await.unwrap();
    Env { env, web_secret, post_secret, es, rsa, ed }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap()
}

fn query_of(location: &str) -> HashMap<String, String> {
    reqwest::Url::parse(location).unwrap().query_pairs().into_owned().collect()
}

fn between<'a>(s: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let i = s.find(start)? + start.len();
    let j = s[i..].find(end)? + i;
    Some(&s[i..j])
}

fn jwt_payload(jwt: &str) -> Value {
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(jwt.split('.').nth(1).unwrap()).unwrap()).unwrap()
}

struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: String,
}

impl Answer {
    /// The sign-in flow's cookie (`name=value`) the authorization page set.
    fn flow_cookie(&self) -> String {
        let set = self.headers["set-cookie"].to_str().unwrap();
        set.split(';').next().unwrap().to_string()
    }
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
    fn location(&self) -> Option<String> {
        self.headers.get("location").map(|l| l.to_str().unwrap().to_string())
    }
}

async fn answer(r: reqwest::RequestBuilder) -> Answer {
    let r = r.send().await.unwrap();
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    Answer { status, headers, body: r.text().await.unwrap() }
}

impl Env {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.env.server.public_url)
    }

    fn issuer(&self) -> String {
        self.env.server.public_url.clone()
    }

    async fn authorize(&self, pairs: &[(&str, &str)]) -> Answer {
        answer(client().get(self.url("/authorize")).query(pairs)).await
    }

    /// The authorization request's page → initiate from the issuer origin → the device
    /// approves `grant` → completion. Returns the redirect's query.
    async fn sign_in(&self, client_id: &str, pairs: &[(&str, &str)], grant: &[&str]) -> HashMap<String, String> {
        let mut all = vec![("client_id", client_id), ("response_type", "code")];
        all.extend_from_slice(pairs);
        let url = reqwest::Url::parse_with_params(&self.url("/authorize"), &all).unwrap();
        query_of(&self.sign_in_at(url.as_str(), client_id, grant).await)
    }

    /// As [`Env::sign_in`] from a complete authorization URL; returns the redirect.
    async fn sign_in_at(&self, url: &str, client_id: &str, grant: &[&str]) -> String {
        let page = answer(client().get(url)).await;
        assert_eq!(page.status, 200, "{}", page.body);
        let context = between(&page.body, "name=\"context\" value=\"", "\"").unwrap().to_string();
        let scopes = between(&page.body, "data-scopes=\"", "\"").unwrap().to_string();
        let scopes: Vec<&str> = scopes.split(' ').filter(|s| !s.is_empty()).collect();
        let (sid, bt) = self.approved_session(client_id, &scopes, grant).await;
        let done = answer(client().post(self.url("/authorize/complete")).header("cookie", page.flow_cookie()).form(&[
            ("context", context.as_str()),
            ("session_id", &sid),
            ("browser_token", &bt),
        ]))
        .await;
        assert_eq!(done.status, 303, "{}", done.body);
        let location = done.location().unwrap();
        let q = query_of(&location);
        assert_eq!(q.get("iss"), Some(&self.issuer()), "RFC 9207 iss in {location}");
        assert!(!location.contains(&bt), "the browser token never leaves the issuer origin");
        location
    }

    /// A session for `client_id` started from the issuer origin (as the hosted page
    /// does) and approved on the device with `grant`: (session id, browser token).
    async fn approved_session(&self, client_id: &str, scopes: &[&str], grant: &[&str]) -> (String, String) {
        let started = answer(
            client()
                .post(self.url("/v1/auth/initiate"))
                .header("Origin", self.issuer())
                .json(&json!({"token_id": self.env.token_id, "service_id": client_id, "scopes": scopes})),
        )
        .await;
        assert_eq!(started.status, 201, "{}", started.body);
        let started = started.json();
        let sid = started["session_id"].as_str().unwrap().to_string();
        let bt = started["browser_token"].as_str().unwrap().to_string();
        let pending = self.env.device_client.pending(&self.env.device).await.unwrap();
        let entry = pending.sessions.iter().find(|s| s.session_id == sid).unwrap();
        let granted = grant.iter().map(|s| s.to_string()).collect();
        self.env
            .device_client
            .verify(&self.env.device, &sid, &entry.otp, Decision::Approve, Some(granted))
            .await
            .unwrap();
        (sid, bt)
    }

    /// The hosted page of a good authorization request: (context, the flow's cookie).
    async fn page(&self, client_id: &str, redirect_uri: &str, state: &str) -> (String, String) {
        let pairs = [
            ("client_id", client_id),
            ("redirect_uri", redirect_uri),
            ("response_type", "code"),
            ("scope", "openid name"),
            ("state", state),
        ];
        let page = self.authorize(&pairs).await;
        assert_eq!(page.status, 200, "{}", page.body);
        let context = between(&page.body, "name=\"context\" value=\"", "\"").unwrap().to_string();
        (context, page.flow_cookie())
    }

    /// A form post of the hosted page (`/authorize/complete` or `/cancel`) with `cookie`.
    async fn page_step(&self, path: &str, form: &[(&str, &str)], cookie: Option<&str>) -> Answer {
        let mut r = client().post(self.url(path)).form(form);
        if let Some(cookie) = cookie {
            r = r.header("cookie", cookie);
        }
        answer(r).await
    }

    async fn token(&self, form: &[(&str, &str)], basic: Option<(&str, &str)>) -> Answer {
        let mut r = client().post(self.url("/token")).form(form);
        if let Some((id, secret)) = basic {
            r = r.basic_auth(id, Some(secret));
        }
        answer(r).await
    }

    async fn userinfo(&self, access_token: &str) -> Answer {
        answer(client().get(self.url("/userinfo")).bearer_auth(access_token)).await
    }

    fn assertion(&self, claims: &Value) -> String {
        compact_es256(&self.es.key, &json!({"alg": "ES256", "kid": self.es.kid, "typ": "JWT"}), claims).unwrap()
    }

    fn assertion_claims(&self, aud: &str, exp_in: i64, jti: &str) -> Value {
        let now = symbolon::ids::now_unix();
        json!({"iss": "jwt", "sub": "jwt", "aud": aud, "exp": now + exp_in, "iat": now, "jti": jti})
    }

    async fn jwks(&self) -> Value {
        answer(client().get(self.url("/jwks"))).await.json()
    }

    async fn logged(&self, needle: &str) -> bool {
        for _ in 0..50 {
            if self.env.server.log().contains(needle) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    }
}

/// Verifies an id_token's ES256 signature against our JWKS and returns its claims.
fn verify_id_token(jwt: &str, jwks: &Value, aud: &str, iss: &str) -> Value {
    let header = jsonwebtoken::decode_header(jwt).unwrap();
    assert_eq!(header.alg, jsonwebtoken::Algorithm::ES256);
    let kid = header.kid.unwrap();
    let jwk = jwks["keys"].as_array().unwrap().iter().find(|k| k["kid"] == kid.as_str()).unwrap();
    let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_value(jwk.clone()).unwrap();
    let key = jsonwebtoken::DecodingKey::from_jwk(&jwk).unwrap();
    let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
    v.set_audience(&[aud]);
    v.set_issuer(&[iss]);
    jsonwebtoken::decode::<Value>(jwt, &key, &v).unwrap().claims
}

#[tokio::test]
async fn discovery_documents_the_provider() {
    let e = start().await;
    for path in ["/.well-known/openid-configuration", "/.well-known/oauth-authorization-server"] {
        let d = answer(client().get(e.url(path))).await;
        assert_eq!(d.status, 200, "{path}");
        let d = d.json();
        assert_eq!(d["issuer"], e.issuer());
        assert_eq!(d["authorization_endpoint"], e.url("/authorize"));
        assert_eq!(d["token_endpoint"], e.url("/token"));
        assert_eq!(d["userinfo_endpoint"], e.url("/userinfo"));
        assert_eq!(d["jwks_uri"], e.url("/jwks"));
        assert_eq!(d["response_types_supported"], json!(["code"]));
        assert_eq!(d["grant_types_supported"], json!(["authorization_code"]));
        assert_eq!(d["subject_types_supported"], json!(["pairwise", "public"]));
        assert_eq!(d["id_token_signing_alg_values_supported"], json!(["ES256"]));
        assert_eq!(d["code_challenge_methods_supported"], json!(["S256"]));
        assert_eq!(d["authorization_response_iss_parameter_supported"], true);
        assert_eq!(d["request_parameter_supported"], false);
        let methods = d["token_endpoint_auth_methods_supported"].as_array().unwrap();
        for m in ["private_key_jwt", "client_secret_basic", "client_secret_post", "none"] {
            assert!(methods.contains(&json!(m)), "{m}");
        }
        for alg in ["ES256", "RS256", "EdDSA"] {
            assert!(d["token_endpoint_auth_signing_alg_values_supported"].as_array().unwrap().contains(&json!(alg)));
        }
        assert!(d["scopes_supported"].as_array().unwrap().contains(&json!("openid")));
        assert!(d["claims_supported"].as_array().unwrap().contains(&json!("given_name")));
    }
}

#[tokio::test]
async fn code_flow_with_client_secret_basic_then_replay_revokes() {
    let e = start().await;
    let q = e
        .sign_in(
            "web",
            &[("redirect_uri", WEB_CB), ("scope", "openid name age"), ("state", "st-1"), ("nonce", "n-1")],
            &["name"],
        )
        .await;
    assert_eq!(q.get("state").map(String::as_str), Some("st-1"));
    let code = q.get("code").unwrap().clone();
    assert_eq!(URL_SAFE_NO_PAD.decode(&code).unwrap().len(), 32, "256-bit code");
    let form = [("grant_type", "authorization_code"), ("code", code.as_str()), ("redirect_uri", WEB_CB)];
    let t = e.token(&form, Some(("web", &e.web_secret))).await;
    assert_eq!(t.status, 200, "{}", t.body);
    assert_eq!(t.headers["cache-control"], "no-store");
    let tokens = t.json();
    assert_eq!(tokens["token_type"], "Bearer");
    assert_eq!(tokens["expires_in"], 300);
    assert_eq!(tokens["scope"], "openid name", "the phone granted only name");
    let at = tokens["access_token"].as_str().unwrap();
    assert_eq!(URL_SAFE_NO_PAD.decode(at).unwrap().len(), 32);
    let claims = verify_id_token(tokens["id_token"].as_str().unwrap(), &e.jwks().await, "web", &e.issuer());
    assert_eq!(claims["nonce"], "n-1");
    assert_eq!(claims["amr"], json!(["pop"]));
    assert!(claims["auth_time"].as_i64().unwrap() <= claims["iat"].as_i64().unwrap());
    assert!(claims["sid"].as_str().is_some_and(|s| !s.is_empty()));
    assert_eq!(claims["at_hash"], symbolon::oidc::at_hash(at));
    assert!(claims["given_name"].is_string(), "name was granted: {claims}");
    assert!(claims.get("age_over_18").is_none() && claims.get("birthdate").is_none(), "{claims}");
    let sub = claims["sub"].as_str().unwrap().to_string();
    assert_ne!(sub, e.env.token_id, "pairwise is the default for OIDC clients");
    assert_eq!(URL_SAFE_NO_PAD.decode(&sub).unwrap().len(), 32);

    let info = e.userinfo(at).await;
    assert_eq!(info.status, 200, "{}", info.body);
    let info = info.json();
    assert_eq!(info["sub"], sub.as_str());
    assert_eq!(info["given_name"], claims["given_name"]);
    let post = answer(client().post(e.url("/userinfo")).bearer_auth(at)).await;
    assert_eq!(post.status, 200);

    // Replay: invalid_grant, and the access token of the first use is revoked.
    let again = e.token(&form, Some(("web", &e.web_secret))).await;
    assert_eq!(again.status, 400);
    assert_eq!(again.json()["error"], "invalid_grant");
    assert_eq!(again.headers["cache-control"], "no-store");
    let revoked = e.userinfo(at).await;
    assert_eq!(revoked.status, 401);
    assert!(revoked.headers["www-authenticate"].to_str().unwrap().contains("error=\"invalid_token\""));
    assert_eq!(e.userinfo("not-a-token").await.status, 401);
    assert_eq!(answer(client().get(e.url("/userinfo"))).await.status, 401);

    let (_, samples) = softhsm_tests::metrics::scrape(&e.env.server.admin_url).await.unwrap();
    for event in ["code_issued", "token_issued", "code_replayed"] {
        let series = format!("symbolon_oidc_events_total{{event=\"{event}\"}}");
        assert_eq!(samples.get(&series).copied(), Some(1.0), "{series}");
    }
    assert!(e.logged("authorization code replayed").await);
    let log = e.env.server.log();
    assert!(!log.contains(&code) && !log.contains(at) && !log.contains(&e.web_secret), "no secret in the log");
}

#[tokio::test]
async fn public_client_with_pkce_and_post_and_pairwise_sectors() {
    let e = start().await;
    // PKCE mismatch: invalid_grant, and the code is spent.
    let q = e
        .sign_in(
            "spa",
            &[
                ("redirect_uri", SPA_CB),
                ("scope", "openid age"),
                ("code_challenge", CHALLENGE),
                ("code_challenge_method", "S256"),
            ],
            &["age"],
        )
        .await;
    let code = q.get("code").unwrap();
    let wrong = "x".repeat(43);
    let bad = e
        .token(
            &[
                ("grant_type", "authorization_code"),
                ("code", code),
                ("redirect_uri", SPA_CB),
                ("client_id", "spa"),
                ("code_verifier", &wrong),
            ],
            None,
        )
        .await;
    assert_eq!((bad.status, bad.json()["error"].clone()), (400, json!("invalid_grant")), "{}", bad.body);
    let spent = e
        .token(
            &[
                ("grant_type", "authorization_code"),
                ("code", code),
                ("redirect_uri", SPA_CB),
                ("client_id", "spa"),
                ("code_verifier", VERIFIER),
            ],
            None,
        )
        .await;
    assert_eq!(spent.json()["error"], "invalid_grant");

    // The right verifier; a missing one fails.
    let q = e
        .sign_in(
            "spa",
            &[
                ("redirect_uri", SPA_CB),
                ("scope", "openid age"),
                ("code_challenge", CHALLENGE),
                ("code_challenge_method", "S256"),
            ],
            &["age"],
        )
        .await;
    let code = q.get("code").unwrap();
    let missing = e
        .token(
            &[("grant_type", "authorization_code"), ("code", code), ("redirect_uri", SPA_CB), ("client_id", "spa")],
            None,
        )
        .await;
    assert_eq!(missing.json()["error"], "invalid_grant");
    let q = e
        .sign_in(
            "spa",
            &[
                ("redirect_uri", SPA_CB),
                ("scope", "openid age"),
                ("code_challenge", CHALLENGE),
                ("code_challenge_method", "S256"),
            ],
            &["age"],
        )
        .await;
    let ok = e
        .token(
            &[
                ("grant_type", "authorization_code"),
                ("code", q.get("code").unwrap()),
                ("redirect_uri", SPA_CB),
                ("client_id", "spa"),
                ("code_verifier", VERIFIER),
            ],
            None,
        )
        .await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    let spa = verify_id_token(ok.json()["id_token"].as_str().unwrap(), &e.jwks().await, "spa", &e.issuer());
    assert!(spa["age_over_18"].is_boolean(), "{spa}");
    assert!(spa.get("nonce").is_none());

    // client_secret_post, and a different sector gives a different pairwise sub.
    let q = e.sign_in("post", &[("redirect_uri", POST_CB), ("scope", "openid")], &[]).await;
    let code = q.get("code").unwrap();
    let form = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", POST_CB),
        ("client_id", "post"),
    ];
    // The wrong method for this client (Basic) is a client authentication failure,
    // which leaves the code unused.
    let basic = e.token(&form, Some(("post", &e.post_secret))).await;
    assert_eq!((basic.status, basic.json()["error"].clone()), (401, json!("invalid_client")), "{}", basic.body);
    let mut with_secret = form.to_vec();
    with_secret.push(("client_secret", &e.post_secret));
    let ok = e.token(&with_secret, None).await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    let post = verify_id_token(ok.json()["id_token"].as_str().unwrap(), &e.jwks().await, "post", &e.issuer());
    assert_ne!(post["sub"], spa["sub"], "sectors post.example and 127.0.0.1 see different subjects");
    assert_ne!(post["sub"].as_str(), Some(e.env.token_id.as_str()));

    // subject_type = "public": the token id.
    let q = e
        .sign_in(
            "pub",
            &[
                ("redirect_uri", PUB_CB),
                ("scope", "openid"),
                ("code_challenge", CHALLENGE),
                ("code_challenge_method", "S256"),
            ],
            &[],
        )
        .await;
    let ok = e
        .token(
            &[
                ("grant_type", "authorization_code"),
                ("code", q.get("code").unwrap()),
                ("redirect_uri", PUB_CB),
                ("client_id", "pub"),
                ("code_verifier", VERIFIER),
            ],
            None,
        )
        .await;
    let public = jwt_payload(ok.json()["id_token"].as_str().unwrap());
    assert_eq!(public["sub"].as_str(), Some(e.env.token_id.as_str()));
}

#[tokio::test]
async fn authorize_refuses_without_redirect_when_client_or_redirect_uri_is_wrong() {
    let e = start().await;
    let cases: [&[(&str, &str)]; 6] = [
        &[("response_type", "code"), ("scope", "openid"), ("redirect_uri", WEB_CB)],
        &[("client_id", "nobody"), ("response_type", "code"), ("scope", "openid"), ("redirect_uri", WEB_CB)],
        &[("client_id", "rp1"), ("response_type", "code"), ("scope", "openid"), ("redirect_uri", WEB_CB)],
        &[
            ("client_id", "web"),
            ("response_type", "code"),
            ("scope", "openid"),
            ("redirect_uri", "https://evil.example/cb"),
        ],
        &[
            ("client_id", "web"),
            ("response_type", "code"),
            ("scope", "openid"),
            ("redirect_uri", "https://rp.example/cb/"),
        ],
        &[("client_id", "web"), ("response_type", "code"), ("scope", "openid")],
    ];
    for pairs in cases {
        let a = e.authorize(pairs).await;
        assert_eq!(a.status, 400, "{pairs:?}");
        assert!(a.location().is_none(), "never a redirect: {pairs:?}");
        assert!(a.headers["content-type"].to_str().unwrap().starts_with("text/html"));
        assert!(a.body.contains("role=\"alert\"") && !a.body.contains("<script"), "{}", a.body);
    }
    // A repeated redirect_uri is not trusted either.
    let a = answer(client().get(format!(
        "{}?client_id=web&response_type=code&scope=openid&redirect_uri={WEB_CB}&redirect_uri={WEB_CB}",
        e.url("/authorize")
    )))
    .await;
    assert_eq!((a.status, a.location()), (400, None));
}

#[tokio::test]
async fn authorize_errors_redirect_with_state_and_iss() {
    let e = start().await;
    let base = [("client_id", "web"), ("redirect_uri", WEB_CB), ("state", "s-9")];
    let cases: [(&[(&str, &str)], &str); 9] = [
        (&[("response_type", "code"), ("scope", "openid document")], "invalid_scope"),
        (&[("response_type", "code"), ("scope", "name")], "invalid_scope"),
        (&[("response_type", "code"), ("scope", "openid"), ("prompt", "none")], "login_required"),
        (
            &[("response_type", "code"), ("scope", "openid"), ("request", "eyJhbGciOiJub25lIn0.e30.")],
            "request_not_supported",
        ),
        (
            &[("response_type", "code"), ("scope", "openid"), ("request_uri", "https://rp.example/r")],
            "request_uri_not_supported",
        ),
        (&[("response_type", "token"), ("scope", "openid")], "unsupported_response_type"),
        (&[("scope", "openid")], "invalid_request"),
        (
            &[
                ("response_type", "code"),
                ("scope", "openid"),
                ("code_challenge", CHALLENGE),
                ("code_challenge_method", "plain"),
            ],
            "invalid_request",
        ),
        (&[("response_type", "code"), ("scope", "openid"), ("code_challenge", CHALLENGE)], "invalid_request"),
    ];
    for (extra, want) in cases {
        let mut pairs = base.to_vec();
        pairs.extend_from_slice(extra);
        let a = e.authorize(&pairs).await;
        assert_eq!(a.status, 302, "{extra:?}: {}", a.body);
        let location = a.location().unwrap();
        assert!(location.starts_with(&format!("{WEB_CB}?")), "{location}");
        let q = query_of(&location);
        assert_eq!(q.get("error").map(String::as_str), Some(want), "{extra:?}");
        assert!(q.get("error_description").is_some_and(|d| !d.is_empty()));
        assert_eq!(q.get("state").map(String::as_str), Some("s-9"));
        assert_eq!(q.get("iss"), Some(&e.issuer()));
    }
    // A public client must use PKCE.
    let a = e
        .authorize(&[("client_id", "spa"), ("redirect_uri", SPA_CB), ("response_type", "code"), ("scope", "openid")])
        .await;
    assert_eq!(query_of(&a.location().unwrap()).get("error").map(String::as_str), Some("invalid_request"));
    // Unknown scope values are ignored; login_hint prefills; POST works like GET.
    let ok = answer(client().post(e.url("/authorize")).form(&[
        ("client_id", "web"),
        ("redirect_uri", WEB_CB),
        ("response_type", "code"),
        ("scope", "openid profile email name"),
        ("login_hint", "AUS-123456"),
    ]))
    .await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert!(ok.body.contains("data-scopes=\"name\""), "{}", ok.body);
    assert!(ok.body.contains("value=\"AUS-123456\""));
    assert!(ok.body.contains("rp.example"), "the page names the host it returns to");
    assert!(ok.body.contains("/authorize/cancel"));
    let csp = ok.headers["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("form-action 'self' https://rp.example"), "{csp}");
}

#[tokio::test]
async fn cancel_returns_access_denied_once() {
    let e = start().await;
    // Cancel from another browser (without the flow's cookie): refused, nothing goes to
    // the client, and the context is spent.
    let (context, _) = e.page("web", WEB_CB, "c-0").await;
    let other = e.page_step("/authorize/cancel", &[("context", &context)], None).await;
    assert_eq!((other.status, other.location()), (403, None), "{}", other.body);
    let (context, cookie) = e.page("web", WEB_CB, "c-1").await;
    let a = e.page_step("/authorize/cancel", &[("context", &context)], Some(&cookie)).await;
    assert_eq!(a.status, 303);
    assert!(a.headers["set-cookie"].to_str().unwrap().contains("Max-Age=0"), "the flow's cookie is dropped");
    let q = query_of(&a.location().unwrap());
    assert_eq!(q.get("error").map(String::as_str), Some("access_denied"));
    assert_eq!(q.get("state").map(String::as_str), Some("c-1"));
    assert_eq!(q.get("iss"), Some(&e.issuer()));
    let again = e.page_step("/authorize/cancel", &[("context", &context)], Some(&cookie)).await;
    assert_eq!((again.status, again.location()), (409, None));
    let bad = answer(client().post(e.url("/authorize/complete")).form(&[("context", "x"), ("session_id", "y")])).await;
    assert_eq!((bad.status, bad.location()), (409, None));
}

/// Login CSRF: the attacker's page, approved session and browser token do not complete
/// a sign-in in another browser; only the browser holding the flow's cookie does.
#[tokio::test]
async fn completion_is_bound_to_the_browser_that_started_the_flow() {
    let e = start().await;
    let (sid, bt) = e.approved_session("web", &["name"], &["name"]).await;
    let complete = |context: String, cookie: Option<String>| {
        let (sid, bt, e) = (sid.clone(), bt.clone(), &e);
        async move {
            let form = [("context", context.as_str()), ("session_id", &sid), ("browser_token", &bt)];
            e.page_step("/authorize/complete", &form, cookie.as_deref()).await
        }
    };
    let (context, cookie) = e.page("web", WEB_CB, "s1").await;
    assert!(cookie.starts_with(&format!("symbolon-oidc-{}=", &context[..16])), "{cookie}");
    // Posted without the flow's cookie (a cross-site post carries no SameSite=Strict
    // cookie): 403 origin_not_allowed, no redirect, and the context is spent.
    let refused = complete(context.clone(), None).await;
    assert_eq!((refused.status, refused.location()), (403, None), "{}", refused.body);
    assert!(refused.body.contains("origin_not_allowed"), "{}", refused.body);
    assert_eq!(complete(context, Some(cookie)).await.status, 409, "the refused attempt used the context");
    // Another flow's cookie, under its own name or under this flow's name: refused.
    let (context, _) = e.page("web", WEB_CB, "s2").await;
    let (_, other) = e.page("web", WEB_CB, "s3").await;
    assert_eq!(complete(context, Some(other.clone())).await.status, 403);
    let (context, _) = e.page("web", WEB_CB, "s4").await;
    let forged = format!("symbolon-oidc-{}={}", &context[..16], other.split_once('=').unwrap().1);
    assert_eq!(complete(context, Some(forged)).await.status, 403);
    assert!(e.logged("not started in this browser").await);
    // The browser that started the flow completes it with the same session.
    let (context, cookie) = e.page("web", WEB_CB, "s5").await;
    let done = complete(context.clone(), Some(format!("unrelated=1; {cookie}"))).await;
    assert_eq!(done.status, 303, "{}", done.body);
    let q = query_of(&done.location().unwrap());
    assert!(q.contains_key("code") && q.get("state").map(String::as_str) == Some("s5"), "{q:?}");
    let cleared = done.headers["set-cookie"].to_str().unwrap();
    assert!(cleared.starts_with(&format!("symbolon-oidc-{}=;", &context[..16])) && cleared.contains("Max-Age=0"));
}

#[tokio::test]
async fn authorize_is_limited_per_ip_and_pending_contexts_are_capped() {
    let options = ServerOptions {
        env: [
            ("SYMBOLON_LIMITS__OIDC_AUTHORIZE_PER_IP_PER_MINUTE", "3"),
            ("SYMBOLON_LIMITS__OIDC_MAX_PENDING_CONTEXTS", "2"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect(),
        ..Default::default()
    };
    let e = start_with("", options).await;
    let mut cookies = Vec::new();
    for n in 0..2 {
        cookies.push(e.page("web", WEB_CB, &format!("cap{n}")).await);
    }
    // A third context would pass the cap: 503 overloaded, an error page with Retry-After.
    let full = e
        .authorize(&[("client_id", "web"), ("redirect_uri", WEB_CB), ("response_type", "code"), ("scope", "openid")])
        .await;
    assert_eq!((full.status, full.location()), (503, None), "{}", full.body);
    assert!(full.body.contains("role=\"alert\"") && !full.body.contains("name=\"context\""), "{}", full.body);
    let retry: u64 = full.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    assert!(e.logged("too many pending sign-in contexts").await);
    // The fourth request from this IP within the minute: 429, before any parsing.
    for query in [&[("client_id", "web")][..], &[("client_id", "no such client")][..]] {
        let limited = e.authorize(query).await;
        assert_eq!((limited.status, limited.location()), (429, None), "{}", limited.body);
        assert!(limited.headers.contains_key("retry-after"));
    }
    // The page's own steps are counted apart: three, then 429 (even for a good cancel).
    for (context, cookie) in &cookies[..] {
        let step = e.page_step("/authorize/cancel", &[("context", context)], Some(cookie)).await;
        assert_eq!(step.status, 303, "{}", step.body);
    }
    let bogus = e
        .page_step("/authorize/complete", &[("context", "x"), ("session_id", "y"), ("browser_token", "z")], None)
        .await;
    assert_eq!(bogus.status, 409);
    let limited = e.page_step("/authorize/cancel", &[("context", "x")], None).await;
    assert_eq!((limited.status, limited.location()), (429, None), "{}", limited.body);
}

/// Authorization codes and access tokens stand for claims for minutes: the session
/// store holds them only as data-key envelopes, never a claim value.
#[tokio::test]
async fn codes_and_access_tokens_are_kept_only_sealed_in_the_session_store() {
    let redis = softhsm_tests::backends::RedisPrefix::new();
    let e = start_with(&redis.toml(), ServerOptions::default()).await;
    let q = e.sign_in("web", &[("redirect_uri", WEB_CB), ("scope", "openid name")], &["name"]).await;
    let with_code = redis.raw_values().unwrap();
    let form = [("grant_type", "authorization_code"), ("code", q["code"].as_str()), ("redirect_uri", WEB_CB)];
    let tokens = e.token(&form, Some(("web", &e.web_secret))).await;
    assert_eq!(tokens.status, 200, "{}", tokens.body);
    let tokens = tokens.json();
    let with_token = redis.raw_values().unwrap();
    let claims = jwt_payload(tokens["id_token"].as_str().unwrap());
    let userinfo = e.userinfo(tokens["access_token"].as_str().unwrap()).await.json();
    assert_eq!(userinfo["given_name"], claims["given_name"], "the sealed access-token record opens");
    let secrets: Vec<&str> = ["given_name", "family_name"].iter().filter_map(|c| claims[*c].as_str()).collect();
    assert_eq!(secrets.len(), 2, "{claims}");
    for (stage, values) in [("code", &with_code), ("access token", &with_token)] {
        for v in values.iter() {
            for secret in &secrets {
                assert!(
                    !v.contains(secret),
                    "with the {stage} stored, the session store holds {secret:?} in clear: {v}"
                );
            }
        }
    }
    for (values, kind) in [(&with_code, "oidc-code:"), (&with_token, "oidc-at:")] {
        let i = values.iter().position(|v| v.contains(kind)).unwrap_or_else(|| panic!("a {kind} record"));
        assert!(values[i + 1].starts_with("v1.symbolon-data-"), "{kind} is an envelope: {}", values[i + 1]);
    }
}

#[tokio::test]
async fn token_endpoint_refusals() {
    let e = start().await;
    let q = e.sign_in("web", &[("redirect_uri", WEB_CB), ("scope", "openid")], &[]).await;
    let code = q.get("code").unwrap().as_str();
    let form = [("grant_type", "authorization_code"), ("code", code), ("redirect_uri", WEB_CB)];
    // Client authentication failures: 401, WWW-Authenticate, and the code stays usable.
    for (basic, why) in [
        (Some(("web", "wrong")), "wrong secret"),
        (Some(("nobody", e.web_secret.as_str())), "unknown client"),
        (None, "no authentication"),
    ] {
        let t = e.token(&form, basic).await;
        assert_eq!(t.status, 401, "{why}: {}", t.body);
        assert_eq!(t.json()["error"], "invalid_client", "{why}");
        assert!(t.headers["www-authenticate"].to_str().unwrap().starts_with("Basic"), "{why}");
        assert_eq!(t.headers["cache-control"], "no-store");
    }
    let as_post = [
        ("grant_type", "authorization_code"),
        ("code", code),
        ("redirect_uri", WEB_CB),
        ("client_id", "web"),
        ("client_secret", e.web_secret.as_str()),
    ];
    assert_eq!(e.token(&as_post, None).await.status, 401, "web must use client_secret_basic");
    let grant = e.token(&[("grant_type", "password"), ("code", code)], Some(("web", &e.web_secret))).await;
    assert_eq!(grant.json()["error"], "unsupported_grant_type");
    let repeated = e
        .token(&[("grant_type", "authorization_code"), ("code", code), ("code", code)], Some(("web", &e.web_secret)))
        .await;
    assert_eq!(repeated.json()["error"], "invalid_request");
    let json_body =
        answer(client().post(e.url("/token")).basic_auth("web", Some(&e.web_secret)).json(&json!({}))).await;
    assert_eq!(json_body.json()["error"], "invalid_request");
    // A wrong redirect_uri spends the code.
    let t = e
        .token(
            &[("grant_type", "authorization_code"), ("code", code), ("redirect_uri", "https://rp.example/other")],
            Some(("web", &e.web_secret)),
        )
        .await;
    assert_eq!(t.json()["error"], "invalid_grant");
    assert_eq!(e.token(&form, Some(("web", &e.web_secret))).await.json()["error"], "invalid_grant");
    // A code of another client.
    let q = e.sign_in("post", &[("redirect_uri", POST_CB), ("scope", "openid")], &[]).await;
    let t = e
        .token(
            &[("grant_type", "authorization_code"), ("code", q.get("code").unwrap()), ("redirect_uri", POST_CB)],
            Some(("web", &e.web_secret)),
        )
        .await;
    assert_eq!(t.json()["error"], "invalid_grant");
    let (_, samples) = softhsm_tests::metrics::scrape(&e.env.server.admin_url).await.unwrap();
    assert_eq!(samples.get("symbolon_oidc_events_total{event=\"client_auth_failed\"}").copied(), Some(4.0));
    assert!(e.logged("client authentication failed").await);
}

#[tokio::test]
async fn private_key_jwt_with_es256_rs256_and_eddsa() {
    let e = start().await;
    let token_url = e.url("/token");
    let exchange = |assertion: String, code: String| {
        let e = &e;
        async move {
            e.token(
                &[
                    ("grant_type", "authorization_code"),
                    ("code", &code),
                    ("redirect_uri", JWT_CB),
                    ("client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"),
                    ("client_assertion", &assertion),
                ],
                None,
            )
            .await
        }
    };
    let code = e.sign_in("jwt", &[("redirect_uri", JWT_CB), ("scope", "openid name")], &["name"]).await["code"].clone();
    // Refusals first (each leaves the code unused).
    let refusals = [
        (e.assertion(&e.assertion_claims("https://other.example/token", 60, "j-aud")), "wrong aud"),
        (e.assertion(&e.assertion_claims(&token_url, -120, "j-exp")), "expired"),
        (e.assertion(&e.assertion_claims(&token_url, 3600, "j-far")), "exp too far ahead"),
        (e.assertion(&json!({"iss": "web", "sub": "jwt", "aud": token_url, "exp": symbolon::ids::now_unix() + 60, "jti": "j-iss"})), "iss is not the client"),
        (e.assertion(&json!({"iss": "jwt", "sub": "jwt", "aud": token_url, "exp": symbolon::ids::now_unix() + 60})), "no jti"),
        (
            compact_es256(&IssuerKey::generate("es-1").key, &json!({"alg": "ES256", "kid": "es-1"}), &e.assertion_claims(&token_url, 60, "j-key")).unwrap(),
            "another key",
        ),
    ];
    for (assertion, why) in refusals {
        let t = exchange(assertion, code.clone()).await;
        assert_eq!(t.status, 401, "{why}: {}", t.body);
        assert_eq!(t.json()["error"], "invalid_client", "{why}");
    }
    let first = e.assertion(&e.assertion_claims(&token_url, 60, "j-1"));
    let t = exchange(first.clone(), code).await;
    assert_eq!(t.status, 200, "{}", t.body);
    // The same jti again (a new code): refused, cluster-wide single use.
    let code = e.sign_in("jwt", &[("redirect_uri", JWT_CB), ("scope", "openid")], &[]).await["code"].clone();
    let t = exchange(first, code.clone()).await;
    assert_eq!((t.status, t.json()["error"].clone()), (401, json!("invalid_client")));
    // aud = the issuer is accepted; RS256 and EdDSA keys work too.
    let t = exchange(e.assertion(&e.assertion_claims(&e.issuer(), 60, "j-2")), code).await;
    assert_eq!(t.status, 200, "{}", t.body);
    let code = e.sign_in("jwt", &[("redirect_uri", JWT_CB), ("scope", "openid")], &[]).await["code"].clone();
    let t = exchange(e.rsa.sign("RS256", &e.assertion_claims(&token_url, 60, "j-3")).unwrap(), code).await;
    assert_eq!(t.status, 200, "RS256: {}", t.body);
    let code = e.sign_in("jwt", &[("redirect_uri", JWT_CB), ("scope", "openid")], &[]).await["code"].clone();
    let t = exchange(e.ed.sign(&e.assertion_claims(&token_url, 60, "j-4")), code).await;
    assert_eq!(t.status, 200, "EdDSA: {}", t.body);
}

#[tokio::test]
async fn an_expired_code_is_refused() {
    let e = start().await;
    let q = e.sign_in("web", &[("redirect_uri", WEB_CB), ("scope", "openid")], &[]).await;
    tokio::time::sleep(Duration::from_secs(61)).await;
    let t = e
        .token(
            &[("grant_type", "authorization_code"), ("code", q.get("code").unwrap()), ("redirect_uri", WEB_CB)],
            Some(("web", &e.web_secret)),
        )
        .await;
    assert_eq!((t.status, t.json()["error"].clone()), (400, json!("invalid_grant")), "{}", t.body);
}

#[tokio::test]
async fn rp_initiated_logout_checks_the_hint_and_the_return_address() {
    let e = start().await;
    let d = answer(client().get(e.url("/.well-known/openid-configuration"))).await.json();
    assert_eq!(d["end_session_endpoint"], e.url("/end_session"));
    let q = e.sign_in("web", &[("redirect_uri", WEB_CB), ("scope", "openid name")], &["name"]).await;
    let form = [("grant_type", "authorization_code"), ("code", q["code"].as_str()), ("redirect_uri", WEB_CB)];
    let tokens = e.token(&form, Some(("web", &e.web_secret))).await.json();
    let hint = tokens["id_token"].as_str().unwrap().to_string();
    let at = tokens["access_token"].as_str().unwrap().to_string();
    let logout = |pairs: Vec<(&'static str, String)>| {
        let url = reqwest::Url::parse_with_params(&e.url("/end_session"), &pairs).unwrap();
        async move { answer(client().get(url)).await }
    };
    // Refused without a redirect: an unregistered return address, a forged hint, a
    // client_id other than the hint's audience, a return address without a client.
    let forged = compact_es256(
        &IssuerKey::generate("k").key,
        &json!({"alg": "ES256", "kid": jwt_payload_header_kid(&hint)}),
        &jwt_payload(&hint),
    )
    .unwrap();
    for (pairs, why) in [
        (
            vec![("id_token_hint", hint.clone()), ("post_logout_redirect_uri", "https://evil.example/".into())],
            "unregistered",
        ),
        (vec![("id_token_hint", forged), ("post_logout_redirect_uri", "https://rp.example/bye".into())], "forged"),
        (vec![("id_token_hint", hint.clone()), ("client_id", "spa".into())], "other client"),
        (vec![("post_logout_redirect_uri", "https://rp.example/bye".to_string())], "no client"),
    ] {
        let a = logout(pairs).await;
        assert_eq!((a.status, a.location()), (400, None), "{why}: {}", a.body);
    }
    assert_eq!(e.userinfo(&at).await.status, 200, "refused logouts end nothing");
    let a = logout(vec![
        ("id_token_hint", hint.clone()),
        ("post_logout_redirect_uri", "https://rp.example/bye".into()),
        ("state", "bye-1".into()),
    ])
    .await;
    assert_eq!(a.status, 303, "{}", a.body);
    assert_eq!(a.location().as_deref(), Some("https://rp.example/bye?state=bye-1"));
    assert_eq!(e.userinfo(&at).await.status, 401, "logout revoked the sign-in's access token");
    let a = logout(vec![]).await;
    assert_eq!(a.status, 200);
    assert!(a.body.contains("signed out"), "{}", a.body);
}

fn jwt_payload_header_kid(jwt: &str) -> String {
    let header: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(jwt.split('.').next().unwrap()).unwrap()).unwrap();
    header["kid"].as_str().unwrap().to_string()
}

/// authlib, a client library nobody here wrote: code + PKCE + nonce, id_token
/// validated against our JWKS, userinfo.
#[tokio::test]
async fn authlib_client_signs_in_with_pkce_and_validates_the_id_token() {
    use std::io::{BufRead, BufReader, Write};
    let Some(python) = softhsm_tests::python::python_or_skip(&["authlib", "requests"], "authlib OIDC client") else {
        return;
    };
    let e = start().await;
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("python/oidc_authlib_check.py");
    let mut child = std::process::Command::new(python)
        .arg(script)
        .args([e.issuer().as_str(), "web", e.web_secret.as_str(), WEB_CB, "openid name"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    let auth_url = line.trim().to_string();
    assert!(auth_url.starts_with(&e.url("/authorize?")), "{auth_url}");
    assert!(auth_url.contains("code_challenge_method=S256"), "{auth_url}");
    let callback = e.sign_in_at(&auth_url, "web", &["name"]).await;
    let mut stdin = child.stdin.take().unwrap();
    writeln!(stdin, "{callback}").unwrap();
    drop(stdin);
    let mut result = String::new();
    out.read_line(&mut result).unwrap();
    assert!(child.wait().unwrap().success(), "authlib client failed");
    let result: Value = serde_json::from_str(&result).unwrap();
    assert_eq!(result["claims"]["iss"], e.issuer());
    assert_eq!(result["claims"]["aud"], "web");
    assert_eq!(result["claims"]["amr"], json!(["pop"]));
    assert!(result["claims"]["given_name"].is_string(), "{result}");
    assert_eq!(result["userinfo"]["sub"], result["claims"]["sub"]);
    assert_eq!(result["userinfo"]["given_name"], result["claims"]["given_name"]);
    assert_eq!(result["scope"], "openid name");
}

#[tokio::test]
async fn new_secret_prints_a_secret_and_its_hash() {
    let token = TestToken::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = softhsm_tests::write_config(dir.path(), &token, 1, 2, "").unwrap();
    let out = symbolon_cli(&token, &config, &["services", "new-secret"]).unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let secret = between(&text, "client_secret = ", "\n").unwrap();
    let hash = between(&text, "client_secret_sha256 = \"", "\"").unwrap();
    assert_eq!(URL_SAFE_NO_PAD.decode(secret).unwrap().len(), 32);
    assert_eq!(symbolon::oidc::sha256_hex(secret), hash);
    // config check refuses a client with a bad registration.
    let bad = format!(
        "{}\n[[services]]\nid = \"c\"\nname = \"C\"\n[services.oidc]\nredirect_uris = [\"http://rp.example/cb\"]\ntoken_endpoint_auth_method = \"client_secret_basic\"\n",
        std::fs::read_to_string(&config).unwrap()
    );
    std::fs::write(&config, bad).unwrap();
    let out = symbolon_cli(&token, &config, &["config", "check", config.to_str().unwrap()]).unwrap();
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("services[0].oidc.redirect_uris"), "{text}");
    assert!(text.contains("services[0].oidc.client_secret_sha256"), "{text}");
}
