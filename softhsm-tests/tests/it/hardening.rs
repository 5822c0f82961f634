//! Findings of the adversarial review (issue 15) on the public endpoints, each with the
//! bound that fixes it, checked against the real server through its metrics (gauges of
//! open sockets and channels, the HSM pool's operation counters), never wall time.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::SinkExt;
use serde_json::{Value, json};
use softhsm_tests::ServerOptions;
use softhsm_tests::backends::{ClusterStores, PgDatabase, RedisPrefix};
use softhsm_tests::device::client::ClientError;
use softhsm_tests::device::{Decision, Device, Push};
use softhsm_tests::fake_fcm::FakeFcm;
use softhsm_tests::metrics::{hsm_operations, value};
use softhsm_tests::signin::{SignIn, Ws, next_message};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

fn env_vars(vars: &[(&str, &str)]) -> ServerOptions {
    ServerOptions { env: vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(), ..Default::default() }
}

async fn open(url: &str) -> Result<Ws, tokio_tungstenite::tungstenite::Error> {
    let config = WebSocketConfig::default().read_buffer_size(4096);
    tokio_tungstenite::connect_async_with_config(url, Some(config), true).await.map(|(ws, _)| ws)
}

async fn hello(ws: &mut Ws, browser_token: &str) {
    let msg = json!({"type": "hello", "browser_token": browser_token}).to_string();
    ws.send(Message::Text(msg.into())).await.unwrap();
}

/// The HTTP answer to an upgrade the server refused: (status, problem code, Retry-After).
fn refused(err: tokio_tungstenite::tungstenite::Error) -> (u16, String, Option<String>) {
    match err {
        tokio_tungstenite::tungstenite::Error::Http(resp) => {
            let retry = resp.headers().get("retry-after").map(|v| v.to_str().unwrap().to_string());
            let body: Value = resp.body().as_deref().map(|b| serde_json::from_slice(b).unwrap()).unwrap_or_default();
            (resp.status().as_u16(), body["code"].as_str().unwrap_or_default().to_string(), retry)
        }
        other => panic!("expected an HTTP refusal, got {other:?}"),
    }
}

/// Waits until `series` reads `want` (sockets close asynchronously); returns the last value.
async fn settle(admin_url: &str, series: &str, want: f64) -> f64 {
    let mut last = f64::NAN;
    for _ in 0..100 {
        last = value(admin_url, series).await.unwrap();
        if last == want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    last
}

/// `count` upgrades to random well-formed session ids, each saying hello with a random
/// browser token; every third one hangs up right after its hello without waiting for
/// the answer. The others must be closed with 4401.
async fn bogus_upgrades(ws_base: &str, count: usize) {
    let sem = Arc::new(tokio::sync::Semaphore::new(64));
    let mut set = tokio::task::JoinSet::new();
    for i in 0..count {
        let (sem, url) = (sem.clone(), format!("{ws_base}/v1/auth/sessions/{}/ws", symbolon::ids::new_id()));
        set.spawn(async move {
            let _permit = sem.acquire_owned().await.unwrap();
            let mut ws = open(&url).await.unwrap();
            hello(&mut ws, &symbolon::ids::new_id()).await;
            if i % 3 == 0 {
                return;
            }
            assert_eq!(next_message(&mut ws).await.unwrap_err(), Some(4401));
        });
    }
    while let Some(r) = set.join_next().await {
        r.unwrap();
    }
}

/// Issue 15 item 1 on the given stores: unauthenticated upgrades hold no session
/// channel, and an authenticated one holds exactly one until its session ends.
async fn bogus_upgrades_leave_nothing_behind(extra_toml: &str, count: usize) {
    let env = SignIn::start(extra_toml, ServerOptions::default()).await.unwrap();
    let admin = env.server.admin_url.clone();
    let ws_base = env.server.public_url.replace("http://", "ws://");

    // A real browser waiting for its phone holds one socket and one channel.
    let (_, started, _) = env.initiate(&env.token_id, "rp1", &[]).await.unwrap();
    let (sid, bt) = (started["session_id"].as_str().unwrap(), started["browser_token"].as_str().unwrap());
    let mut browser = open(&env.ws_url(sid)).await.unwrap();
    hello(&mut browser, bt).await;
    let otp = next_message(&mut browser).await.unwrap();
    assert_eq!(otp["type"], "otp");
    assert_eq!(value(&admin, "symbolon_session_event_channels").await.unwrap(), 1.0);
    assert_eq!(value(&admin, "symbolon_websockets_open").await.unwrap(), 1.0);

    bogus_upgrades(&ws_base, count).await;
    assert_eq!(settle(&admin, "symbolon_websockets_open", 1.0).await, 1.0, "only the real browser is left");
    assert_eq!(value(&admin, "symbolon_session_event_channels").await.unwrap(), 1.0, "bogus upgrades hold no channel");

    // The real browser still gets its outcome, and then nothing is held.
    let otp = otp["otp"].as_str().unwrap().to_string();
    env.device_client.verify(&env.device, sid, &otp, Decision::Approve, None).await.unwrap();
    assert_eq!(next_message(&mut browser).await.unwrap()["type"], "approved");
    assert_eq!(next_message(&mut browser).await.unwrap_err(), Some(1000));
    assert_eq!(settle(&admin, "symbolon_websockets_open", 0.0).await, 0.0);
    assert_eq!(value(&admin, "symbolon_session_event_channels").await.unwrap(), 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bogus_websocket_upgrades_leave_the_channel_map_empty() {
    bogus_upgrades_leave_nothing_behind("", 20_000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bogus_websocket_upgrades_leave_the_channel_map_empty_on_redis() {
    let redis = RedisPrefix::new();
    bogus_upgrades_leave_nothing_behind(&redis.toml(), 5_000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_limits_answer_before_the_upgrade() {
    let options = env_vars(&[
        ("SYMBOLON_LIMITS__WEBSOCKET_PER_IP_PER_MINUTE", "3"),
        ("SYMBOLON_LIMITS__WEBSOCKET_MAX_OPEN", "2"),
        ("SYMBOLON_AUTH__HELLO_TIMEOUT", "30s"),
    ]);
    let env = SignIn::start("", options).await.unwrap();
    let url = |id: &str| format!("{}/v1/auth/sessions/{id}/ws", env.server.public_url.replace("http://", "ws://"));

    // An id that cannot be a session id is refused before anything else, uncounted.
    for id in ["A".repeat(16 * 1024), "A".repeat(44), "short".into(), format!("{}=", "A".repeat(42))] {
        let (status, code, _) = refused(open(&url(&id)).await.unwrap_err());
        assert_eq!((status, code.as_str()), (404, "not_found"), "id of {} chars", id.len());
    }
    // Two sockets fill the node; a third upgrade is 503 overloaded, before upgrading.
    let _a = open(&url(&symbolon::ids::new_id())).await.unwrap();
    let _b = open(&url(&symbolon::ids::new_id())).await.unwrap();
    assert_eq!(value(&env.server.admin_url, "symbolon_websockets_open").await.unwrap(), 2.0);
    let (status, code, retry) = refused(open(&url(&symbolon::ids::new_id())).await.unwrap_err());
    assert_eq!((status, code.as_str()), (503, "overloaded"));
    assert!(retry.is_some(), "503 carries Retry-After");
    // The fourth upgrade from this IP within the minute is 429 rate_limited.
    let (status, code, retry) = refused(open(&url(&symbolon::ids::new_id())).await.unwrap_err());
    assert_eq!((status, code.as_str()), (429, "rate_limited"));
    let retry: u64 = retry.expect("429 carries Retry-After").parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
}

// ---------------------------------------------------------------------------------------
// Item 4: one timing class for initiate

const PUSH_TOKEN: &str = "fcm-registration-token-0123456789";

/// HSM operations by kind since `before`, without the kinds background work may run
/// meanwhile (catalog syncs, pings); kinds that did not run are left out.
async fn ops_since(admin_url: &str, before: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    let after = hsm_operations(admin_url).await.unwrap();
    after
        .into_iter()
        .filter(|(op, _)| op != "catalog" && op != "ping")
        .map(|(op, n)| {
            let d = n - before.get(&op).copied().unwrap_or(0);
            (op, d)
        })
        .filter(|(_, d)| *d > 0)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn initiate_asks_the_hsm_for_the_same_operations_whatever_the_token_id() {
    let fake = FakeFcm::start().await.unwrap();
    let options = env_vars(&[
        ("SYMBOLON_LIMITS__INITIATE_PER_TOKEN_PER_MINUTE", "1000"),
        ("SYMBOLON_AUTH__MAX_PENDING", "1000"),
        ("SYMBOLON_AUDIT__CHECKPOINT_INTERVAL", "1h"),
    ]);
    let env = SignIn::start_with_fcm(&fake, PUSH_TOKEN, "", options).await.unwrap();
    let admin = env.server.admin_url.clone();
    // A second token id enrolled without push.
    let seal = env.chain.manifest.seal("valid_minimal").unwrap();
    let no_push_tid = seal.tid.clone().unwrap();
    assert_ne!(no_push_tid, env.token_id);
    env.device_client.enroll(&Device::generate(), &seal.vds, Push::None, "no push").await.unwrap();
    // The first push fetches the FCM access token (one RS256 signature in the HSM).
    assert_eq!(env.initiate(&env.token_id, "rp1", &[]).await.unwrap().0, 201);
    assert_eq!(fake.wait_for_messages(1, Duration::from_secs(10)).await.len(), 1);

    let classes = [env.token_id.as_str(), no_push_tid.as_str(), "AUS-NOBODY01", "UTO-UNKNOWN9"];
    let want = BTreeMap::from([("decrypt".to_string(), 1), ("hmac".to_string(), 1)]);
    for round in 0..3 {
        for token_id in classes {
            let before = hsm_operations(&admin).await.unwrap();
            let (status, _, _) = env.initiate(token_id, "rp1", &[]).await.unwrap();
            assert_eq!(status, 201, "{token_id}");
            let ops = ops_since(&admin, &before).await;
            assert_eq!(ops, want, "round {round}, token id {token_id}: HSM operations of one initiate");
        }
    }
    // Only the device with a push token was pushed (once per round, plus the first).
    assert_eq!(fake.wait_for_messages(4, Duration::from_secs(10)).await.len(), 4);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(fake.messages().iter().all(|m| m.token == PUSH_TOKEN));
}

// ---------------------------------------------------------------------------------------
// Item 5: bounds on polls, /saml/sso, OTP computations and /health

async fn poll(env: &SignIn, sid: &str, bt: &str) -> (u16, Value, Option<String>) {
    let r = reqwest::Client::new()
        .get(format!("{}/v1/auth/sessions/{sid}", env.server.public_url))
        .bearer_auth(bt)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let retry = r.headers().get("retry-after").map(|v| v.to_str().unwrap().to_string());
    (status, r.json().await.unwrap(), retry)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polls_are_limited_per_ip() {
    let env = SignIn::start("", env_vars(&[("SYMBOLON_LIMITS__POLL_PER_IP_PER_MINUTE", "4")])).await.unwrap();
    let (_, started, _) = env.initiate(&env.token_id, "rp1", &[]).await.unwrap();
    let (sid, bt) = (started["session_id"].as_str().unwrap(), started["browser_token"].as_str().unwrap());
    // A path id that cannot be a session id is 404 before it is counted.
    let (status, body, _) = poll(&env, "short", bt).await;
    assert_eq!((status, body["code"].as_str()), (404, Some("not_found")));
    for _ in 0..4 {
        let (status, body, _) = poll(&env, sid, bt).await;
        assert_eq!((status, body["status"].as_str()), (200, Some("pending")), "{body}");
    }
    let (status, body, retry) = poll(&env, sid, bt).await;
    assert_eq!((status, body["code"].as_str()), (429, Some("rate_limited")), "{body}");
    let retry: u64 = retry.expect("429 carries Retry-After").parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    // The device's pending list counts on its own.
    for _ in 0..4 {
        assert_eq!(env.device_client.pending(&env.device).await.unwrap().sessions.len(), 1);
    }
    match env.device_client.pending(&env.device).await {
        Err(ClientError::Problem { status, problem, .. }) => {
            assert_eq!((status, problem.code.as_str()), (429, "rate_limited"))
        }
        other => panic!("expected 429, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polling_computes_a_session_otp_once_per_node() {
    let env = SignIn::start("", ServerOptions::default()).await.unwrap();
    let admin = env.server.admin_url.clone();
    let (_, started, _) = env.initiate(&env.token_id, "rp1", &[]).await.unwrap();
    let (sid, bt) = (started["session_id"].as_str().unwrap(), started["browser_token"].as_str().unwrap());
    let before = hsm_operations(&admin).await.unwrap();
    let t = std::time::Instant::now();
    let mut otps = std::collections::BTreeSet::new();
    // 30 polls one after the other, 30 at once, 20 pending lists of the device.
    for _ in 0..30 {
        let (status, body, _) = poll(&env, sid, bt).await;
        assert_eq!(status, 200, "{body}");
        otps.insert(body["otp"].as_str().unwrap().to_string());
    }
    let at_once = futures_util::future::join_all((0..30).map(|_| poll(&env, sid, bt))).await;
    for (status, body, _) in at_once {
        assert_eq!(status, 200, "{body}");
        otps.insert(body["otp"].as_str().unwrap().to_string());
    }
    // Well past a second after initiate computed the code: still no new computation.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    for _ in 0..20 {
        let pending = env.device_client.pending(&env.device).await.unwrap();
        otps.insert(pending.sessions[0].otp.clone());
    }
    let elapsed = t.elapsed().as_secs_f64();
    let ops = ops_since(&admin, &before).await;
    let hmacs = ops.get("hmac").copied().unwrap_or(0);
    assert_eq!(otps.len(), 1, "every answer carries the session's one code");
    assert_eq!(hmacs, 0, "{hmacs} OTP computations for 80 polls in {elapsed:.2} s: initiate's is kept for the session");
    assert_eq!(ops.keys().filter(|k| *k != "hmac").count(), 0, "{ops:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn public_health_is_computed_at_most_once_a_second() {
    let env = SignIn::start("", ServerOptions::default()).await.unwrap();
    let admin = env.server.admin_url.clone();
    let url = format!("{}/health", env.server.public_url);
    let pings = || async { hsm_operations(&admin).await.unwrap().get("ping").copied().unwrap_or(0) };
    let before = pings().await;
    let t = std::time::Instant::now();
    let client = reqwest::Client::new();
    for _ in 0..5 {
        let answers = futures_util::future::join_all((0..10).map(|_| client.get(&url).send())).await;
        for r in answers {
            let r = r.unwrap();
            assert_eq!(r.status().as_u16(), 200);
            let body: Value = r.json().await.unwrap();
            assert_eq!(body["status"], "ok", "{body}");
        }
    }
    let elapsed = t.elapsed().as_secs_f64();
    let computed = pings().await - before;
    assert!(computed >= 1);
    assert!(
        computed as f64 <= elapsed.floor() + 1.0,
        "{computed} HSM pings for 50 /health calls in {elapsed:.2} s: at most one a second"
    );
    // The admin listener's /health is the live answer (operators, not the public).
    let before = pings().await;
    for _ in 0..3 {
        assert_eq!(client.get(format!("{admin}/health")).send().await.unwrap().status().as_u16(), 200);
    }
    assert_eq!(pings().await - before, 3);
}

const SP_ENTITY: &str = "https://sp.example/saml2/metadata";

/// `[saml]` with one SP that does not sign its requests.
const SAML_TOML: &str = r#"
[saml]
enabled = true

[[services]]
id = "sp1"
name = "Example SP"
allowed_scopes = ["age"]
[services.saml]
entity_id = "https://sp.example/saml2/metadata"
acs_url = "https://sp.example/saml2/acs"
default_scopes = ["age"]
"#;

/// `GET /saml/sso` with a fresh unsigned `AuthnRequest`: (status, headers, page).
async fn sso(env: &SignIn, client: &reqwest::Client, request_id: &str) -> (u16, reqwest::header::HeaderMap, String) {
    let xml = format!(
        r#"<samlp:AuthnRequest xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol" xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion" ID="{request_id}" Version="2.0" IssueInstant="{}"><saml:Issuer>{SP_ENTITY}</saml:Issuer></samlp:AuthnRequest>"#,
        symbolon::saml::saml_time(symbolon::ids::now_unix())
    );
    let query = symbolon::saml::redirect::encode_query("SAMLRequest", &xml, None, None, |_| Vec::new());
    let r = client.get(format!("{}/saml/sso?{query}", env.server.public_url)).send().await.unwrap();
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    (status, headers, r.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn saml_sso_is_limited_per_ip_and_pending_contexts_are_capped() {
    let options = env_vars(&[
        ("SYMBOLON_LIMITS__SAML_SSO_PER_IP_PER_MINUTE", "3"),
        ("SYMBOLON_LIMITS__SAML_MAX_PENDING_CONTEXTS", "2"),
    ]);
    let env = SignIn::start(SAML_TOML, options).await.unwrap();
    let client = reqwest::Client::new();
    for n in 0..2 {
        let (status, _, page) = sso(&env, &client, &format!("_cap{n}")).await;
        assert_eq!(status, 200, "{page}");
        assert!(page.contains("name=\"context\""), "{page}");
    }
    // A third context would pass the cap: 503 overloaded, with Retry-After.
    let (status, headers, page) = sso(&env, &client, "_cap2").await;
    assert_eq!(status, 503, "{page}");
    assert!(page.contains("role=\"alert\"") && !page.contains("name=\"context\""), "{page}");
    let retry: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    assert!(env.server.log().contains("too many pending sign-in contexts"));
    // The fourth request from this IP within the minute: 429, before any parsing.
    let (status, headers, page) = sso(&env, &client, "_cap3").await;
    assert_eq!(status, 429, "{page}");
    assert!(headers.contains_key("retry-after"));
    let (status, _, _) = sso(&env, &client, "not even parsed").await;
    assert_eq!(status, 429);
}

// ---------------------------------------------------------------------------------------
// Item 6: low findings

/// The value of the sign-in page's hidden `context` field.
fn page_context(page: &str) -> String {
    let start = page.find("name=\"context\" value=\"").expect("context field") + "name=\"context\" value=\"".len();
    page[start..].split('"').next().unwrap().to_string()
}

/// A session for `service` approved on the enrolled device with `scopes`: (id, browser token).
async fn approved_session(env: &SignIn, node: &str, service: &str, scopes: &[&str]) -> (String, String) {
    let r = reqwest::Client::new()
        .post(format!("{node}/v1/auth/initiate"))
        .json(&json!({"token_id": env.token_id, "service_id": service, "scopes": scopes}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    let started: Value = r.json().await.unwrap();
    let (sid, bt) = (started["session_id"].as_str().unwrap(), started["browser_token"].as_str().unwrap());
    let pending = env.device_client.pending(&env.device).await.unwrap();
    let otp = pending.sessions.iter().find(|s| s.session_id == sid).unwrap().otp.clone();
    let granted = Some(scopes.iter().map(|s| s.to_string()).collect());
    let device = softhsm_tests::device::client::DeviceClient::new(node).unwrap();
    assert_eq!(device.verify(&env.device, sid, &otp, Decision::Approve, granted).await.unwrap()["status"], "approved");
    (sid.to_string(), bt.to_string())
}

async fn complete(env: &SignIn, context: &str, sid: &str, bt: &str, cookie: Option<&str>) -> (u16, String) {
    let mut request = reqwest::Client::new().post(format!("{}/saml/complete", env.server.public_url)).form(&[
        ("context", context),
        ("session_id", sid),
        ("browser_token", bt),
    ]);
    if let Some(cookie) = cookie {
        request = request.header("cookie", cookie);
    }
    let r = request.send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// Login CSRF: the attacker's page, session and browser token do not complete a sign-in
/// in another browser; only the browser holding the flow's cookie does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn saml_completion_is_bound_to_the_browser_that_started_the_flow() {
    let env = SignIn::start(SAML_TOML, ServerOptions::default()).await.unwrap();
    let client = reqwest::Client::new();
    let flow = |request_id: &'static str| {
        let (env, client) = (&env, &client);
        async move {
            let (status, headers, page) = sso(env, client, request_id).await;
            assert_eq!(status, 200, "{page}");
            let context = page_context(&page);
            let set = headers["set-cookie"].to_str().unwrap().to_string();
            (context, set)
        }
    };
    let (context, set) = flow("_bind1").await;
    let name = format!("symbolon-saml-{}", &context[..16]);
    assert!(set.starts_with(&format!("{name}=")), "{set}");
    for attribute in ["; Path=/", "; Max-Age=900", "; HttpOnly", "; SameSite=Strict"] {
        assert!(set.contains(attribute), "{attribute} in {set}");
    }
    assert!(!set.contains("Secure"), "http:// issuer: not Secure (https:// gets Secure and __Host-)");
    // The attacker's session, approved on the attacker's phone.
    let (sid, bt) = approved_session(&env, &env.server.public_url, "sp1", &["age"]).await;

    // Posted from a browser without the flow's cookie (a cross-site form post carries no
    // SameSite=Strict cookie): refused, and the context is spent.
    let (status, page) = complete(&env, &context, &sid, &bt, None).await;
    assert_eq!(status, 403, "{page}");
    assert!(page.contains("origin_not_allowed") && !page.contains("SAMLResponse"), "{page}");
    let (status, _) = complete(&env, &context, &sid, &bt, Some(set.split(';').next().unwrap())).await;
    assert_eq!(status, 409, "the context was used by the refused attempt");
    // Another flow's cookie, under its own name or under this flow's name: refused.
    let (context, _) = flow("_bind2").await;
    let (_, other) = flow("_bind3").await;
    let other = other.split(';').next().unwrap().to_string();
    let (status, _) = complete(&env, &context, &sid, &bt, Some(&other)).await;
    assert_eq!(status, 403);
    let (context, _) = flow("_bind4").await;
    let value = other.split_once('=').unwrap().1;
    let wrong = format!("symbolon-saml-{}={value}", &context[..16]);
    let (status, _) = complete(&env, &context, &sid, &bt, Some(&wrong)).await;
    assert_eq!(status, 403);
    assert!(env.server.log().contains("not started in this browser"));
    // The browser that started the flow completes it with the same session.
    let (context, set) = flow("_bind5").await;
    let r = reqwest::Client::new()
        .post(format!("{}/saml/complete", env.server.public_url))
        .header("cookie", format!("unrelated=1; {}", set.split(';').next().unwrap()))
        .form(&[("context", context.as_str()), ("session_id", &sid), ("browser_token", &bt)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let cleared = r.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(cleared.starts_with(&format!("symbolon-saml-{}=;", &context[..16])) && cleared.contains("Max-Age=0"));
    assert!(r.text().await.unwrap().contains("SAMLResponse"));
}

/// An approved identity token is in the session store only as a data-key envelope; the
/// browser still receives it, from either node of a cluster.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approved_id_token_is_kept_only_sealed_in_the_session_store() {
    let stores = ClusterStores::new().unwrap();
    let env = SignIn::start(&stores.toml(), ServerOptions::default()).await.unwrap();
    let b = env.another_node().unwrap();
    // Started and approved on node A, verified through node B.
    let r = reqwest::Client::new()
        .post(format!("{}/v1/auth/initiate", env.server.public_url))
        .json(&json!({"token_id": env.token_id, "service_id": "rp1", "scopes": ["name"]}))
        .send()
        .await
        .unwrap();
    let started: Value = r.json().await.unwrap();
    let (sid, bt) = (started["session_id"].as_str().unwrap(), started["browser_token"].as_str().unwrap());
    let mut ws =
        open(&format!("{}/v1/auth/sessions/{sid}/ws", b.public_url.replace("http://", "ws://"))).await.unwrap();
    hello(&mut ws, bt).await;
    let otp = next_message(&mut ws).await.unwrap()["otp"].as_str().unwrap().to_string();
    let device_b = softhsm_tests::device::client::DeviceClient::new(&b.public_url).unwrap();
    device_b.verify(&env.device, sid, &otp, Decision::Approve, Some(vec!["name".into()])).await.unwrap();
    let pushed = next_message(&mut ws).await.unwrap();
    assert_eq!(pushed["type"], "approved");
    let jwt = pushed["id_token"].as_str().unwrap().to_string();
    assert_eq!(jwt.split('.').count(), 3);
    // Both nodes' polls deliver the same token.
    for node in [&env.server.public_url, &b.public_url] {
        let r =
            reqwest::Client::new().get(format!("{node}/v1/auth/sessions/{sid}")).bearer_auth(bt).send().await.unwrap();
        let view: Value = r.json().await.unwrap();
        assert_eq!((view["status"].as_str(), view["id_token"].as_str()), (Some("approved"), Some(jwt.as_str())));
    }
    // The raw store: no part of the token (header, claims or signature), an envelope instead.
    let values = stores.redis.raw_values().unwrap();
    let parts: Vec<&str> = jwt.split('.').collect();
    for v in &values {
        for part in [jwt.as_str(), parts[1], parts[2]] {
            assert!(!v.contains(part), "the session store holds the identity token in clear: {v}");
        }
    }
    let i = values.iter().position(|v| v == "id_token_sealed").expect("the session's sealed identity token");
    assert!(values[i + 1].starts_with("v1.symbolon-data-"), "{}", values[i + 1]);
    drop(b);
}

/// The break-glass token of the management tests.
const BREAK_GLASS: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

fn break_glass_toml(dir: &std::path::Path) -> String {
    let file = dir.join("break-glass");
    std::fs::write(&file, format!("{BREAK_GLASS}\n")).unwrap();
    format!("[management]\nbreak_glass_token_file = \"{}\"\n", file.display())
}

async fn manage(env: &SignIn, method: reqwest::Method, path: &str) -> (u16, Value) {
    let r = reqwest::Client::new()
        .request(method, format!("{}/api/management/v1{path}", env.server.admin_url))
        .bearer_auth(BREAK_GLASS)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// With the audit insert failing (a trigger), a suspension, a revocation and a
/// deletion are refused and leave the enrollment as it was; without the trigger the
/// change and exactly one audit event of it commit.
async fn management_changes_commit_with_their_audit_event(store_toml: &str, refuse: &dyn Fn(bool)) {
    let dir = tempfile::tempdir().unwrap();
    let env = SignIn::start(&format!("{store_toml}\n{}", break_glass_toml(dir.path())), ServerOptions::default())
        .await
        .unwrap();
    let (status, user) = manage(&env, reqwest::Method::GET, &format!("/users/{}", env.token_id)).await;
    assert_eq!(status, 200, "{user}");
    let device = user["devices"][0]["device_id"].as_str().unwrap().to_string();

    refuse(true);
    for action in ["suspend", "revoke"] {
        let (status, body) = manage(&env, reqwest::Method::POST, &format!("/credentials/{device}/{action}")).await;
        assert!(status >= 500, "{action} without its audit event: {status} {body}");
    }
    let (status, body) = manage(&env, reqwest::Method::DELETE, &format!("/users/{}", env.token_id)).await;
    assert!(status >= 500, "delete without its audit event: {status} {body}");
    refuse(false);

    let (status, credential) = manage(&env, reqwest::Method::GET, &format!("/credentials/{device}")).await;
    assert_eq!((status, credential["status"].as_str()), (200, Some("active")), "rolled back: {credential}");
    let (status, body) = manage(&env, reqwest::Method::POST, &format!("/credentials/{device}/suspend")).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("suspended")), "{body}");
    let (_, audit) = manage(&env, reqwest::Method::GET, "/audit?limit=200").await;
    let suspensions: Vec<&Value> = audit["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["detail"]["action"] == "credentials.suspend" && e["detail"]["status"] == 200)
        .collect();
    assert_eq!(suspensions.len(), 1, "{audit}");
    assert_eq!(suspensions[0]["subject"], device.as_str());
    let (status, _) = manage(&env, reqwest::Method::DELETE, &format!("/users/{}", env.token_id)).await;
    assert_eq!(status, 204);
    let (status, _) = manage(&env, reqwest::Method::GET, &format!("/users/{}", env.token_id)).await;
    assert_eq!(status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_management_change_and_its_audit_event_commit_together_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("symbolon.db");
    let toml = format!("[database]\nurl = \"sqlite://{}\"\n", path.display());
    let sqlite = |sql: &str| {
        // The server may hold the write lock for a moment: wait for it as the server does.
        let out = std::process::Command::new("sqlite3")
            .args(["-cmd", ".timeout 10000"])
            .arg(&path)
            .arg(sql)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    };
    let refuse = |on: bool| {
        if on {
            sqlite(
                "CREATE TRIGGER refuse_audit BEFORE INSERT ON audit BEGIN SELECT RAISE(ABORT, 'audit refused'); END;",
            );
        } else {
            sqlite("DROP TRIGGER refuse_audit;");
        }
    };
    management_changes_commit_with_their_audit_event(&toml, &refuse).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_management_change_and_its_audit_event_commit_together_postgres() {
    let pg = PgDatabase::create().unwrap();
    let refuse = |on: bool| {
        let sql = if on {
            "CREATE FUNCTION refuse_audit() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'audit refused'; END $$;
             CREATE TRIGGER refuse_audit BEFORE INSERT ON audit FOR EACH ROW EXECUTE FUNCTION refuse_audit();"
        } else {
            "DROP TRIGGER refuse_audit ON audit; DROP FUNCTION refuse_audit();"
        };
        pg.sql(sql).unwrap();
    };
    management_changes_commit_with_their_audit_event(&pg.toml(), &refuse).await;
}
