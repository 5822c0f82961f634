//! The management API (docs/protocol.md §11) end to end: the real server and SoftHSM2, a
//! test OIDC provider serving its JWKS over HTTP, operator tokens minted by it.

use reqwest::Method;
use serde_json::{Value, json};
use softhsm_tests::device::{Decision, Device, Push};
use softhsm_tests::oidc::{IssuerKey, TestIssuer};
use softhsm_tests::signin::SignIn;
use softhsm_tests::{ServerOptions, TestServer, TestToken};

const ALL_SCOPES: [&str; 8] = [
    "management.users.read",
    "management.users.delete",
    "management.credentials.read",
    "management.credentials.suspend",
    "management.credentials.activate",
    "management.credentials.revoke",
    "management.flows.read",
    "management.audit.read",
];

/// A call's status, JSON body (Null when empty) and `WWW-Authenticate`.
struct Answer {
    status: u16,
    body: Value,
    challenge: Option<String>,
}

impl Answer {
    fn code(&self) -> &str {
        self.body["code"].as_str().unwrap_or_default()
    }
}

async fn call(method: Method, url: &str, token: Option<&str>) -> Answer {
    let mut request = reqwest::Client::new().request(method, url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let challenge = response.headers().get("www-authenticate").map(|v| v.to_str().unwrap().to_string());
    let text = response.text().await.unwrap();
    let body = if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap() };
    Answer { status, body, challenge }
}

async fn get(server: &TestServer, path: &str, token: Option<&str>) -> Answer {
    call(Method::GET, &format!("{}/api/management/v1{path}", server.admin_url), token).await
}

fn assert_invalid_token(a: &Answer, why: &str) {
    assert_eq!(a.status, 401, "{why}: {}", a.body);
    assert_eq!(a.code(), "invalid_token", "{why}: {}", a.body);
    let challenge = a.challenge.as_deref().unwrap_or_default();
    assert!(challenge.starts_with("Bearer "), "{why}: WWW-Authenticate {challenge:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tokens_get_401_and_missing_scopes_403() {
    let issuer = TestIssuer::start().await.unwrap();
    let token = TestToken::new().unwrap();
    let extra = issuer.management_toml("jwks_refetch_interval = \"0s\"");
    let server = TestServer::start(&token, ServerOptions { extra_toml: extra, ..Default::default() }).unwrap();
    let scope = ["management.audit.read"];

    assert_invalid_token(&get(&server, "/audit", None).await, "no token");
    assert_invalid_token(&get(&server, "/audit", Some("not-a-jwt")).await, "garbage");

    let claims = issuer.claims("alice", json!("management.audit.read"));
    let with = |field: &str, value: Value| {
        let mut c = claims.clone();
        c[field] = value;
        c
    };
    let now = softhsm_tests::device::unix_now();
    for (why, bad) in [
        ("wrong issuer", with("iss", json!("https://other.example"))),
        ("wrong audience", with("aud", json!("someone-else"))),
        ("expired", with("exp", json!(now - 600))),
        ("not yet valid", with("nbf", json!(now + 600))),
    ] {
        assert_invalid_token(&get(&server, "/audit", Some(&issuer.sign(&issuer.key, &bad))).await, why);
    }
    let mut no_sub = claims.clone();
    no_sub.as_object_mut().unwrap().remove("sub");
    assert_invalid_token(&get(&server, "/audit", Some(&issuer.sign(&issuer.key, &no_sub))).await, "no sub");

    assert_invalid_token(&get(&server, "/audit", Some(&issuer.unsigned(&claims))).await, "alg none");
    for raw_x in [false, true] {
        let forged = issuer.hs256_with_public_key(&claims, raw_x);
        assert_invalid_token(&get(&server, "/audit", Some(&forged)).await, "HS256 keyed with the public key");
    }
    let mislabelled = issuer.with_header_alg("ES384", &claims);
    assert_invalid_token(&get(&server, "/audit", Some(&mislabelled)).await, "alg not the key's");
    // A token signed by a key the provider does not publish (the server refetches, in vain).
    let stranger = IssuerKey::generate("unknown-kid");
    let fetches = issuer.fetches();
    assert_invalid_token(&get(&server, "/audit", Some(&issuer.sign(&stranger, &claims))).await, "unknown kid");
    assert!(issuer.fetches() > fetches, "an unknown kid makes the server fetch the JWKS again");
    // A tampered payload under a real signature.
    let good = issuer.token("alice", &scope);
    let parts: Vec<&str> = good.split('.').collect();
    let forged_payload = base64_url(&with("sub", json!("mallory")).to_string());
    let tampered = format!("{}.{forged_payload}.{}", parts[0], parts[2]);
    assert_invalid_token(&get(&server, "/audit", Some(&tampered)).await, "tampered payload");

    // Valid token, but not the route's scope: 403.
    let other = issuer.token("alice", &["management.users.read"]);
    let a = get(&server, "/audit", Some(&other)).await;
    assert_eq!((a.status, a.code()), (403, "insufficient_scope"), "{}", a.body);
    // The scope as a space-separated string works.
    let a = get(&server, "/audit", Some(&good)).await;
    assert_eq!(a.status, 200, "{}", a.body);

    // Key rotation at the provider: a new kid is fetched on first sight.
    let rotated = IssuerKey::generate("op-key-2");
    issuer.publish(&rotated);
    let a = get(&server, "/audit", Some(&issuer.sign(&rotated, &issuer.claims("bob", json!(scope))))).await;
    assert_eq!(a.status, 200, "token signed with a newly published key: {}", a.body);

    // RSA keys (published without `alg`): RS256 and PS256.
    let rsa_key = softhsm_tests::oidc::RsaIssuerKey::generate("op-rsa-1").unwrap();
    issuer.publish_jwk(rsa_key.jwk());
    for alg in ["RS256", "PS256"] {
        let t = rsa_key.sign(alg, &issuer.claims("dave", json!(scope))).unwrap();
        let a = get(&server, "/audit", Some(&t)).await;
        assert_eq!(a.status, 200, "{alg}: {}", a.body);
    }
    // An Ed25519 key: EdDSA.
    let ed_key = softhsm_tests::oidc::Ed25519IssuerKey::generate("op-ed-1").unwrap();
    issuer.publish_jwk(ed_key.jwk());
    let a = get(&server, "/audit", Some(&ed_key.sign(&issuer.claims("erin", json!(scope))))).await;
    assert_eq!(a.status, 200, "EdDSA: {}", a.body);

    // The management API is not on the public listener.
    let a = call(Method::GET, &format!("{}/api/management/v1/audit", server.public_url), Some(&good)).await;
    assert_eq!((a.status, a.code()), (404, "not_found"));

    // Each allowed call and each refused scope is audited with the operator's sub.
    let events = get(&server, "/audit?limit=200", Some(&good)).await.body["events"].as_array().unwrap().clone();
    let management: Vec<&Value> = events.iter().filter(|e| e["kind"] == "management.action").collect();
    assert!(management.iter().any(|e| e["actor"] == "operator:alice" && e["detail"]["action"] == "audit.list"));
    assert!(management.iter().any(|e| e["actor"] == "operator:bob"));
    assert!(
        management.iter().any(|e| e["actor"] == "operator:alice" && e["detail"]["action"] == "denied"),
        "a refused scope is audited"
    );
    assert!(!management.iter().any(|e| e["actor"] == "operator:mallory"), "invalid tokens do not act");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_kids_do_not_make_the_server_refetch_without_limit() {
    let issuer = TestIssuer::start().await.unwrap();
    let token = TestToken::new().unwrap();
    let extra = issuer.management_toml("jwks_refetch_interval = \"1h\"");
    let server = TestServer::start(&token, ServerOptions { extra_toml: extra, ..Default::default() }).unwrap();
    let good = issuer.token("alice", &["management.audit.read"]);
    assert_eq!(get(&server, "/audit", Some(&good)).await.status, 200);
    let fetched = issuer.fetches();
    assert_eq!(fetched, 1);
    let stranger = IssuerKey::generate("unknown-kid");
    let claims = issuer.claims("alice", json!("management.audit.read"));
    for _ in 0..5 {
        assert_invalid_token(&get(&server, "/audit", Some(&issuer.sign(&stranger, &claims))).await, "unknown kid");
    }
    assert_eq!(issuer.fetches(), fetched, "refetches on unknown kids are rate limited");
    assert_eq!(get(&server, "/audit", Some(&good)).await.status, 200, "cached keys still serve");
}

fn base64_url(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
}

/// A token with every scope but `missing`, in the `scp` array form with a prefix.
fn token_without(issuer: &TestIssuer, missing: Option<&str>) -> String {
    let scopes: Vec<String> =
        ALL_SCOPES.iter().filter(|s| Some(**s) != missing).map(|s| format!("api://symbolon/{s}")).collect();
    let mut claims = issuer.claims("carol", Value::Null);
    claims.as_object_mut().unwrap().remove("scope");
    claims["scp"] = json!(scopes);
    issuer.sign(&issuer.key, &claims)
}

async fn pending_otp(env: &SignIn, device: &Device, session_id: &str) -> String {
    let pending = env.device_client.pending(device).await.unwrap();
    pending.sessions.iter().find(|s| s.session_id == session_id).expect("pending session").otp.clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_needs_its_scope_and_does_its_job() {
    let issuer = TestIssuer::start().await.unwrap();
    let extra = issuer.management_toml("scope_claim = \"scp\"\nscope_prefix = \"api://symbolon/\"");
    let env = SignIn::start(&extra, ServerOptions::default()).await.unwrap();
    let server = &env.server;
    // Three more users.
    for case in ["valid_padded", "valid_dob_year", "valid_minimal"] {
        let seal = env.chain.manifest.seal(case).unwrap();
        env.device_client.enroll(&Device::generate(), &seal.vds, Push::None, "other phone").await.unwrap();
    }
    let device_id = env.device.device_id();
    let tid = env.token_id.clone();
    let all = token_without(&issuer, None);

    // Every route refuses a token lacking exactly its scope, before touching anything.
    let routes: [(Method, String, &str); 9] = [
        (Method::GET, "/users".into(), "management.users.read"),
        (Method::GET, format!("/users/{tid}"), "management.users.read"),
        (Method::DELETE, format!("/users/{tid}"), "management.users.delete"),
        (Method::GET, format!("/credentials/{device_id}"), "management.credentials.read"),
        (Method::POST, format!("/credentials/{device_id}/suspend"), "management.credentials.suspend"),
        (Method::POST, format!("/credentials/{device_id}/activate"), "management.credentials.activate"),
        (Method::POST, format!("/credentials/{device_id}/revoke"), "management.credentials.revoke"),
        (Method::GET, "/flows".into(), "management.flows.read"),
        (Method::GET, "/audit".into(), "management.audit.read"),
    ];
    for (method, path, scope) in &routes {
        let url = format!("{}/api/management/v1{path}", server.admin_url);
        let a = call(method.clone(), &url, Some(&token_without(&issuer, Some(scope)))).await;
        assert_eq!((a.status, a.code()), (403, "insufficient_scope"), "{method} {path}: {}", a.body);
        let a = call(method.clone(), &url, None).await;
        assert_eq!((a.status, a.code()), (401, "invalid_token"), "{method} {path}");
    }

    // Users, two per page.
    let page1 = get(server, "/users?limit=2", Some(&all)).await;
    assert_eq!(page1.status, 200, "{}", page1.body);
    let users1 = page1.body["users"].as_array().unwrap().clone();
    assert_eq!(users1.len(), 2);
    let cursor = page1.body["next_cursor"].as_str().unwrap().to_string();
    let page2 = get(server, &format!("/users?limit=2&cursor={cursor}"), Some(&all)).await;
    let users2 = page2.body["users"].as_array().unwrap().clone();
    assert_eq!(users2.len(), 2);
    assert!(page2.body["next_cursor"].is_null(), "last page: {}", page2.body);
    let mut ids: Vec<&str> = users1.iter().chain(&users2).map(|u| u["token_id"].as_str().unwrap()).collect();
    let listed = ids.clone();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 4);
    assert_eq!(listed, ids, "users come in token id order");
    assert_eq!(get(server, "/users?limit=0", Some(&all)).await.code(), "invalid_request");
    assert_eq!(get(server, "/users?cursor=%%%", Some(&all)).await.status, 400);

    // One user: claim names and device, no claim values or push token.
    let user = get(server, &format!("/users/{tid}"), Some(&all)).await;
    assert_eq!(user.status, 200, "{}", user.body);
    assert_eq!(user.body["enrolled"], true);
    let device = &user.body["devices"][0];
    assert_eq!(device["device_id"], device_id.as_str());
    assert_eq!(device["status"], "active");
    assert!(device["claim_names"].as_array().unwrap().iter().any(|c| c == "given_name"));
    let text = user.body.to_string();
    assert!(!text.contains("sealed") && !text.contains("v1."), "no sealed data: {text}");
    assert_eq!(get(server, "/users/NOBODY", Some(&all)).await.code(), "not_found");

    let cred = get(server, &format!("/credentials/{device_id}"), Some(&all)).await;
    assert_eq!((cred.status, cred.body["token_id"].as_str()), (200, Some(tid.as_str())), "{}", cred.body);
    assert_eq!(get(server, "/credentials/nope", Some(&all)).await.code(), "not_found");

    // Suspend: the device's verify gets device_inactive; activate restores it.
    let (_, started, _) = env.initiate(&tid, "rp1", &["name"]).await.unwrap();
    let sid = started["session_id"].as_str().unwrap().to_string();
    let otp = pending_otp(&env, &env.device, &sid).await;
    let post = |action: &str| {
        let url = format!("{}/api/management/v1/credentials/{device_id}/{action}", server.admin_url);
        let all = all.clone();
        async move { call(Method::POST, &url, Some(&all)).await }
    };
    let a = post("suspend").await;
    assert_eq!((a.status, a.body["status"].as_str()), (200, Some("suspended")), "{}", a.body);
    let e = env.device_client.verify(&env.device, &sid, &otp, Decision::Approve, Some(vec![])).await.unwrap_err();
    assert_eq!(e.problem_code(), (403, "device_inactive".into()));
    let a = post("activate").await;
    assert_eq!((a.status, a.body["status"].as_str()), (200, Some("active")), "{}", a.body);
    let r = env.device_client.verify(&env.device, &sid, &otp, Decision::Approve, Some(vec![])).await.unwrap();
    assert_eq!(r["status"], "approved");

    // Flows: the sessions with service and status, no OTP; filtered and paged.
    let (_, second, _) = env.initiate("UNKNOWN-TID", "rp2", &["age"]).await.unwrap();
    let flows = get(server, "/flows", Some(&all)).await;
    assert_eq!(flows.status, 200, "{}", flows.body);
    let list = flows.body["flows"].as_array().unwrap();
    assert_eq!(list.len(), 2, "{}", flows.body);
    let approved = list.iter().find(|f| f["id"] == sid.as_str()).unwrap();
    assert_eq!((approved["status"].as_str(), approved["service_id"].as_str()), (Some("approved"), Some("rp1")));
    assert!(approved["ended_at"].is_i64() && approved["created_at"].is_i64() && approved["expires_at"].is_i64());
    assert!(list.iter().any(|f| f["id"] == second["session_id"]));
    let text = flows.body.to_string();
    assert!(!text.contains(&otp) && !text.contains("id_token") && !text.contains(&tid), "{text}");
    let pending = get(server, "/flows?status=pending", Some(&all)).await;
    assert_eq!(pending.body["flows"].as_array().unwrap().len(), 1);
    assert_eq!(pending.body["flows"][0]["service_id"], "rp2");
    let first = get(server, "/flows?limit=1", Some(&all)).await;
    let cursor = first.body["next_cursor"].as_str().unwrap().to_string();
    let next = get(server, &format!("/flows?limit=1&cursor={cursor}"), Some(&all)).await;
    assert_eq!(next.body["flows"].as_array().unwrap().len(), 1, "{}", next.body);
    assert_ne!(next.body["flows"][0]["id"], first.body["flows"][0]["id"], "the second page holds the other flow");
    let later = get(server, &format!("/flows?since={}", softhsm_tests::device::unix_now() + 60), Some(&all)).await;
    assert!(later.body["flows"].as_array().unwrap().is_empty());
    assert_eq!(get(server, "/flows?status=bogus", Some(&all)).await.code(), "invalid_request");

    // Revoke is final.
    let a = post("revoke").await;
    assert_eq!((a.status, a.body["status"].as_str()), (200, Some("revoked")), "{}", a.body);
    for action in ["activate", "suspend"] {
        let a = post(action).await;
        assert_eq!((a.status, a.code()), (409, "invalid_state"), "{action} after revoke: {}", a.body);
    }
    let e = env.device_client.pending(&env.device).await.unwrap_err();
    assert_eq!(e.problem_code(), (403, "device_inactive".into()));

    // Audit, paged; every call above is in it with the operator's sub.
    let mut seqs = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/audit?limit=5&cursor={c}"),
            None => "/audit?limit=5".to_string(),
        };
        let page = get(server, &path, Some(&all)).await;
        assert_eq!(page.status, 200, "{}", page.body);
        for e in page.body["events"].as_array().unwrap() {
            seqs.push((e["seq"].as_i64().unwrap(), e.clone()));
        }
        match page.body["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    assert!(seqs.windows(2).all(|w| w[0].0 < w[1].0), "audit pages are in chain order without repeats");
    let actions: Vec<&str> = seqs
        .iter()
        .filter(|(_, e)| e["kind"] == "management.action" && e["actor"] == "operator:carol")
        .filter_map(|(_, e)| e["detail"]["action"].as_str())
        .collect();
    for wanted in [
        "users.list",
        "users.get",
        "credentials.get",
        "credentials.suspend",
        "credentials.activate",
        "credentials.revoke",
        "flows.list",
        "denied",
    ] {
        assert!(actions.contains(&wanted), "{wanted} audited: {actions:?}");
    }

    // Delete: the user's enrollment data goes; the audit event names no token id.
    let url = format!("{}/api/management/v1/users/{tid}", server.admin_url);
    let a = call(Method::DELETE, &url, Some(&all)).await;
    assert_eq!(a.status, 204, "{}", a.body);
    assert_eq!(get(server, &format!("/users/{tid}"), Some(&all)).await.code(), "not_found");
    assert_eq!(get(server, &format!("/credentials/{device_id}"), Some(&all)).await.code(), "not_found");
    assert_eq!(call(Method::DELETE, &url, Some(&all)).await.code(), "not_found");
    let events = get(server, "/audit?limit=200", Some(&all)).await.body["events"].as_array().unwrap().clone();
    let deleted =
        events.iter().find(|e| e["detail"]["action"] == "users.delete" && e["detail"]["status"] == 204).unwrap();
    assert!(!deleted.to_string().contains(&tid), "{deleted}");
    assert_eq!(deleted["detail"]["devices"], json!([device_id]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn break_glass_token_grants_every_scope_and_is_audited() {
    let token = TestToken::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let secret = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
    let file = dir.path().join("break-glass");
    std::fs::write(&file, format!("{secret}\n")).unwrap();
    let extra = format!("[management]\nbreak_glass_token_file = \"{}\"\n", file.display());
    let server = TestServer::start(&token, ServerOptions { extra_toml: extra, ..Default::default() }).unwrap();
    assert_invalid_token(&get(&server, "/users", Some(&secret[..63])).await, "a prefix of the token");
    assert_invalid_token(&get(&server, "/users", Some(&format!("{secret}0"))).await, "a longer token");
    for path in ["/users", "/flows", "/audit"] {
        let a = get(&server, path, Some(secret)).await;
        assert_eq!(a.status, 200, "{path}: {}", a.body);
    }
    let events = get(&server, "/audit?limit=200", Some(secret)).await.body["events"].as_array().unwrap().clone();
    assert!(events.iter().any(|e| e["actor"] == "break-glass" && e["detail"]["auth"] == "break_glass"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_configuration_the_api_is_off() {
    let token = TestToken::new().unwrap();
    let server = TestServer::start(&token, ServerOptions::default()).unwrap();
    let a = get(&server, "/users", Some("anything")).await;
    assert_eq!((a.status, a.code()), (404, "management_disabled"), "{}", a.body);
    let a = get(&server, "/users", None).await;
    assert_eq!((a.status, a.code()), (404, "management_disabled"));
}
