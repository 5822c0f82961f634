//! Client authentication outside the token endpoint's own tests, with the real server
//! and SoftHSM2: `POST /v1/auth/initiate` for services with `initiate = "backend"`
//! (docs/protocol.md §5.1) with each method and each refusal, browser-mode services
//! unchanged; `private_key_jwt` keys from a `jwks_uri`, cached and fetched again for an
//! unknown `kid` at most once per `auth.client_jwks_refetch_interval`.

use serde_json::{Value, json};
use softhsm_tests::ServerOptions;
use softhsm_tests::jose::compact_es256;
use softhsm_tests::oidc::{IssuerKey, TestIssuer};
use softhsm_tests::signin::SignIn;

const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

struct Backend {
    env: SignIn,
    basic_secret: String,
    post_secret: String,
    key: IssuerKey,
}

async fn start_backend() -> Backend {
    let (basic_secret, basic_hash) = symbolon::oidc::new_client_secret();
    let (post_secret, post_hash) = symbolon::oidc::new_client_secret();
    let key = IssuerKey::generate("backend-1");
    let jwks = json!({"keys": [key.jwk()]}).to_string();
    let toml = format!(
        r#"
[[services]]
id = "bank-basic"
name = "Bank (Basic)"
allowed_scopes = ["name"]
initiate = "backend"
[services.client_auth]
method = "client_secret_basic"
client_secret_sha256 = "{basic_hash}"

[[services]]
id = "bank-post"
name = "Bank (post)"
allowed_scopes = ["name"]
initiate = "backend"
[services.client_auth]
method = "client_secret_post"
client_secret_sha256 = "{post_hash}"

[[services]]
id = "bank-jwt"
name = "Bank (JWT)"
allowed_scopes = ["name"]
initiate = "backend"
[services.client_auth]
method = "private_key_jwt"
jwks = '{jwks}'
"#
    );
    let env = SignIn::start(&toml, ServerOptions::default()).await.unwrap();
    Backend { env, basic_secret, post_secret, key }
}

struct Answer {
    status: u16,
    body: Value,
    www_authenticate: Option<String>,
}

impl Backend {
    fn initiate_url(&self) -> String {
        format!("{}/v1/auth/initiate", self.env.server.public_url)
    }

    /// `POST /v1/auth/initiate` for `service` with the body's extra members and an
    /// optional `Authorization` header. Every call uses a fresh token id, so the
    /// per-token limits never interfere.
    async fn initiate(&self, service: &str, extra: Value, authorization: Option<String>) -> Answer {
        let tid = format!("AUS-B{:08}", rand_suffix());
        let mut body = json!({"token_id": tid, "service_id": service, "scopes": ["name"]});
        if let (Some(b), Value::Object(extra)) = (body.as_object_mut(), extra) {
            b.extend(extra);
        }
        let mut r = reqwest::Client::new().post(self.initiate_url()).json(&body);
        if let Some(a) = authorization {
            r = r.header("Authorization", a);
        }
        let r = r.send().await.unwrap();
        let status = r.status().as_u16();
        let www_authenticate = r.headers().get("www-authenticate").map(|v| v.to_str().unwrap_or_default().to_string());
        Answer { status, body: r.json().await.unwrap_or(Value::Null), www_authenticate }
    }

    fn assertion(&self, aud: &str, exp_in: i64, jti: &str) -> String {
        let now = symbolon::ids::now_unix();
        let claims =
            json!({"iss": "bank-jwt", "sub": "bank-jwt", "aud": aud, "exp": now + exp_in, "iat": now, "jti": jti});
        compact_es256(&self.key.key, &json!({"alg": "ES256", "kid": self.key.kid, "typ": "JWT"}), &claims).unwrap()
    }
}

fn rand_suffix() -> u32 {
    use rand_core::RngCore;
    rand_core::OsRng.next_u32() % 100_000_000
}

fn basic(id: &str, secret: &str) -> Option<String> {
    use base64::Engine;
    Some(format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}"))))
}

#[track_caller]
fn refused(a: &Answer, status: u16, code: &str, why: &str) {
    assert_eq!((a.status, a.body["code"].as_str()), (status, Some(code)), "{why}: {}", a.body);
    if code == "invalid_client" {
        assert_eq!(a.www_authenticate.as_deref(), Some("Basic realm=\"symbolon\""), "{why}");
    }
}

#[tokio::test]
async fn backend_initiate_requires_the_services_client_authentication() {
    let b = start_backend().await;
    let url = b.initiate_url();

    // client_secret_basic.
    refused(&b.initiate("bank-basic", json!({}), None).await, 401, "invalid_client", "no credentials");
    refused(
        &b.initiate("bank-basic", json!({}), basic("bank-basic", "wrong")).await,
        401,
        "invalid_client",
        "wrong secret",
    );
    refused(
        &b.initiate("bank-basic", json!({}), basic("bank-post", &b.post_secret)).await,
        401,
        "invalid_client",
        "another service's credentials",
    );
    refused(
        &b.initiate("bank-basic", json!({"client_secret": b.basic_secret}), None).await,
        401,
        "invalid_client",
        "the registered method is Basic, not the body",
    );
    refused(
        &b.initiate("bank-basic", json!({"client_secret": b.basic_secret}), basic("bank-basic", &b.basic_secret)).await,
        400,
        "invalid_request",
        "two methods at once",
    );
    refused(
        &b.initiate("bank-basic", json!({}), Some("Basic %%%".into())).await,
        401,
        "invalid_client",
        "malformed Basic",
    );
    let ok = b.initiate("bank-basic", json!({}), basic("bank-basic", &b.basic_secret)).await;
    assert_eq!(ok.status, 201, "{}", ok.body);
    assert!(ok.body["browser_token"].is_string() && ok.body["session_id"].is_string(), "{}", ok.body);

    // client_secret_post: the secret as a body member (client_id optional, = service_id).
    refused(
        &b.initiate("bank-post", json!({"client_secret": "wrong"}), None).await,
        401,
        "invalid_client",
        "wrong posted secret",
    );
    refused(
        &b.initiate("bank-post", json!({"client_id": "bank-basic", "client_secret": b.post_secret}), None).await,
        401,
        "invalid_client",
        "client_id is not the service",
    );
    let ok = b.initiate("bank-post", json!({"client_secret": b.post_secret}), None).await;
    assert_eq!(ok.status, 201, "{}", ok.body);
    let ok = b.initiate("bank-post", json!({"client_id": "bank-post", "client_secret": b.post_secret}), None).await;
    assert_eq!(ok.status, 201, "{}", ok.body);

    // private_key_jwt: as body members or as a Bearer assertion; aud the initiate URL or
    // the issuer; jti single use; the token endpoint's URL is not an accepted audience.
    let member = |a: &str| json!({"client_assertion_type": JWT_BEARER, "client_assertion": a});
    let first = b.assertion(&url, 60, "i-1");
    let ok = b.initiate("bank-jwt", member(&first), None).await;
    assert_eq!(ok.status, 201, "{}", ok.body);
    refused(&b.initiate("bank-jwt", member(&first), None).await, 401, "invalid_client", "jti reused");
    refused(
        &b.initiate("bank-jwt", json!({}), Some(format!("Bearer {first}"))).await,
        401,
        "invalid_client",
        "jti reused as Bearer",
    );
    let issuer = b.env.server.public_url.clone();
    let ok = b.initiate("bank-jwt", json!({}), Some(format!("Bearer {}", b.assertion(&issuer, 60, "i-2")))).await;
    assert_eq!(ok.status, 201, "{}", ok.body);
    let token_url = format!("{issuer}/token");
    refused(
        &b.initiate("bank-jwt", member(&b.assertion(&token_url, 60, "i-3")), None).await,
        401,
        "invalid_client",
        "aud is the token endpoint",
    );
    refused(
        &b.initiate("bank-jwt", member(&b.assertion(&url, -120, "i-4")), None).await,
        401,
        "invalid_client",
        "expired",
    );
    refused(
        &b.initiate("bank-jwt", member(&b.assertion(&url, 3600, "i-5")), None).await,
        401,
        "invalid_client",
        "exp too far ahead",
    );
    let stranger = IssuerKey::generate("backend-1");
    let forged = compact_es256(
        &stranger.key,
        &json!({"alg": "ES256", "kid": "backend-1"}),
        &json!({"iss": "bank-jwt", "sub": "bank-jwt", "aud": url, "exp": symbolon::ids::now_unix() + 60, "jti": "i-6"}),
    )
    .unwrap();
    refused(&b.initiate("bank-jwt", member(&forged), None).await, 401, "invalid_client", "another key");
    refused(
        &b.initiate(
            "bank-jwt",
            json!({"client_assertion_type": "x", "client_assertion": b.assertion(&url, 60, "i-7")}),
            None,
        )
        .await,
        400,
        "invalid_request",
        "wrong client_assertion_type",
    );
    refused(
        &b.initiate(
            "bank-jwt",
            member(&b.assertion(&url, 60, "i-8")),
            Some(format!("Bearer {}", b.assertion(&url, 60, "i-9"))),
        )
        .await,
        400,
        "invalid_request",
        "Bearer and body assertion together",
    );
    refused(
        &b.initiate("bank-jwt", json!({}), basic("bank-jwt", "x")).await,
        401,
        "invalid_client",
        "a secret for a JWT client",
    );

    // Unchanged for browser-mode services; credentials there are a mistake.
    let ok = b.initiate("rp1", json!({}), None).await;
    assert_eq!(ok.status, 201, "{}", ok.body);
    refused(
        &b.initiate("rp1", json!({"client_secret": b.basic_secret}), None).await,
        400,
        "invalid_request",
        "credentials for a browser-mode service",
    );
    refused(&b.initiate("nobody", json!({}), None).await, 400, "unknown_service", "unknown service first");

    // Counted, logged without the secrets, and audited.
    let (_, samples) = softhsm_tests::metrics::scrape(&b.env.server.admin_url).await.unwrap();
    let failed = samples.get("symbolon_oidc_events_total{event=\"client_auth_failed\"}").copied();
    assert_eq!(failed, Some(14.0), "every invalid_client above");
    let log = b.env.server.log();
    assert!(log.contains("client authentication failed") && log.contains("/v1/auth/initiate"));
    assert!(!log.contains(&b.basic_secret) && !log.contains(&b.post_secret) && !log.contains(&first));
}

#[tokio::test]
async fn config_check_explains_backend_initiate() {
    let dir = tempfile::tempdir().unwrap();
    let case = |toml: &str| {
        let path = dir.path().join("case.toml");
        std::fs::write(&path, toml).unwrap();
        let out = std::process::Command::new(softhsm_tests::symbolon_bin().unwrap())
            .args(["config", "check", "--values-only"])
            .arg(&path)
            .env_remove("SYMBOLON_BIN")
            .output()
            .unwrap();
        (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let base = "[hsm]\nuri = \"pkcs11:token=symbolon?module-path=/usr/lib/softhsm/libsofthsm2.so\"\n";
    let (ok, text) = case(&format!("{base}[[services]]\nid = \"b\"\nname = \"B\"\ninitiate = \"backend\"\n"));
    assert!(!ok && text.contains("services[0].client_auth") && text.contains("[services.client_auth]"), "{text}");
    let (ok, text) = case(&format!(
        "{base}[[services]]\nid = \"b\"\nname = \"B\"\n[services.client_auth]\nmethod = \"client_secret_post\"\nclient_secret_sha256 = \"{}\"\n",
        "ab".repeat(32)
    ));
    assert!(!ok && text.contains("used only with initiate = \"backend\""), "{text}");
    let (ok, text) = case(&format!(
        "{base}[[services]]\nid = \"b\"\nname = \"B\"\ninitiate = \"backend\"\n[services.client_auth]\nmethod = \"none\"\n"
    ));
    assert!(!ok && text.contains("services[0].client_auth.method"), "{text}");
    let (ok, text) = case(&format!(
        "{base}[[services]]\nid = \"b\"\nname = \"B\"\ninitiate = \"backend\"\n[services.client_auth]\nmethod = \"private_key_jwt\"\n\
         [services.oidc]\nredirect_uris = [\"https://b.example/cb\"]\ntoken_endpoint_auth_method = \"none\"\n"
    ));
    assert!(!ok && text.contains("services[0].initiate") && text.contains("services[0].client_auth.jwks"), "{text}");
    let (ok, text) = case(&format!(
        "{base}[[services]]\nid = \"b\"\nname = \"B\"\ninitiate = \"backend\"\n[services.client_auth]\nmethod = \"client_secret_basic\"\nclient_secret_sha256 = \"{}\"\n",
        "ab".repeat(32)
    ));
    assert!(ok, "{text}");
}

#[tokio::test]
async fn jwks_uri_keys_are_cached_and_fetched_again_for_an_unknown_kid_at_most_once_per_interval() {
    // The service's keys are published by a local JWKS server (plain http:// on
    // loopback, which `jwks_uri` allows like `management.jwks_url`).
    let keys = TestIssuer::start().await.unwrap();
    let closed = softhsm_tests::free_ports::<1>().unwrap()[0];
    let toml = format!(
        r#"
[auth]
client_jwks_refetch_interval = "3s"

[[services]]
id = "bank-uri"
name = "Bank (jwks_uri)"
allowed_scopes = ["name"]
initiate = "backend"
[services.client_auth]
method = "private_key_jwt"
jwks_uri = "{}"

[[services]]
id = "bank-gone"
name = "Bank (keys unreachable)"
initiate = "backend"
[services.client_auth]
method = "private_key_jwt"
jwks_uri = "http://127.0.0.1:{closed}/jwks"
"#,
        keys.jwks_url
    );
    let env = SignIn::start(&toml, ServerOptions::default()).await.unwrap();
    let url = format!("{}/v1/auth/initiate", env.server.public_url);
    let signed = |key: &IssuerKey, sub: &str, jti: &str| {
        let now = symbolon::ids::now_unix();
        let claims = json!({"iss": sub, "sub": sub, "aud": url, "exp": now + 60, "iat": now, "jti": jti});
        compact_es256(&key.key, &json!({"alg": "ES256", "kid": key.kid, "typ": "JWT"}), &claims).unwrap()
    };
    let initiate = |service: &'static str, assertion: String| {
        let url = url.clone();
        async move {
            let tid = format!("AUS-J{:08}", rand_suffix());
            let r = reqwest::Client::new()
                .post(&url)
                .bearer_auth(assertion)
                .json(&json!({"token_id": tid, "service_id": service}))
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let (status, body) = initiate("bank-uri", signed(&keys.key, "bank-uri", "u-1")).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(keys.fetches(), 1);
    let (status, _) = initiate("bank-uri", signed(&keys.key, "bank-uri", "u-2")).await;
    assert_eq!((status, keys.fetches()), (201, 1), "cached");

    // A key the service has not published yet: after the interval one fetch, then no
    // more however often it is tried.
    let rotated = IssuerKey::generate("backend-2");
    tokio::time::sleep(std::time::Duration::from_secs(4)).await;
    for i in 0..5 {
        let (status, body) = initiate("bank-uri", signed(&rotated, "bank-uri", &format!("r-{i}"))).await;
        assert_eq!((status, body["code"].as_str()), (401, Some("invalid_client")), "{body}");
    }
    assert_eq!(keys.fetches(), 2, "an unknown kid fetches again, at most once per interval");
    // Published: accepted once the interval has passed; the old key still serves.
    keys.publish(&rotated);
    tokio::time::sleep(std::time::Duration::from_secs(4)).await;
    let (status, body) = initiate("bank-uri", signed(&rotated, "bank-uri", "r-ok")).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(keys.fetches(), 3);
    let (status, _) = initiate("bank-uri", signed(&keys.key, "bank-uri", "u-3")).await;
    assert_eq!(status, 201);
    // A forged key claiming a published kid is still refused (signature).
    let forged = IssuerKey { kid: rotated.kid.clone(), key: IssuerKey::generate("x").key };
    let (status, _) = initiate("bank-uri", signed(&forged, "bank-uri", "f-1")).await;
    assert_eq!(status, 401);

    // Keys that were never fetched: 503 unavailable, not the client's fault.
    let (status, body) = initiate("bank-gone", signed(&keys.key, "bank-gone", "g-1")).await;
    assert_eq!((status, body["code"].as_str()), (503, Some("unavailable")), "{body}");
    assert!(env.server.log().contains("cannot fetch the JWKS"));
}
