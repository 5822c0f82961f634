//! Sign-in end to end (docs/protocol.md §5–§7, §9, §12): the real server, SoftHSM2, a
//! real WebSocket client and the reference device.

use std::time::Duration;

use futures_util::SinkExt;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use softhsm_tests::device::{Decision, Device, Push, VerifyPayload, unix_now};
use softhsm_tests::signin::{SignIn, Ws, next_message};
use softhsm_tests::{ServerOptions, TestToken};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

async fn connect(env: &SignIn, session_id: &str, token: &str) -> Ws {
    let (mut ws, resp) = tokio_tungstenite::connect_async(env.ws_url(session_id)).await.unwrap();
    assert!(resp.headers().contains_key("x-request-id"), "X-Request-Id on the 101");
    ws.send(Message::Text(json!({"type": "hello", "browser_token": token}).to_string().into())).await.unwrap();
    ws
}

/// The audit export once it holds an event of each of `kinds` (events are written in
/// the background, in no guaranteed order).
async fn audit_with(env: &SignIn, kinds: &[&str]) -> String {
    for _ in 0..50 {
        let out =
            softhsm_tests::symbolon_cli(&env.token, &env.server.config_path, &["audit", "export", "--since", "1h"])
                .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let text = String::from_utf8(out.stdout).unwrap();
        if kinds.iter().all(|kind| text.contains(&format!("\"{kind}\""))) {
            return text;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("not all of {kinds:?} in the audit trail");
}

/// The polling view of a session.
async fn poll(env: &SignIn, sid: &str, browser_token: &str) -> Value {
    let url = format!("{}/v1/auth/sessions/{sid}", env.server.public_url);
    reqwest::Client::new().get(url).bearer_auth(browser_token).send().await.unwrap().json().await.unwrap()
}

async fn jwks_verify(env: &SignIn, jwt: &str) -> Value {
    let r = reqwest::get(format!("{}/.well-known/jwks.json", env.server.public_url)).await.unwrap();
    assert_eq!(r.headers()["cache-control"], "public, max-age=300");
    let jwks: jsonwebtoken::jwk::JwkSet = r.json().await.unwrap();
    let header = jsonwebtoken::decode_header(jwt).unwrap();
    assert_eq!(header.alg, jsonwebtoken::Algorithm::ES256);
    assert_eq!(header.typ.as_deref(), Some("JWT"));
    let jwk = jwks.find(header.kid.as_deref().unwrap()).expect("kid in JWKS");
    let key = jsonwebtoken::DecodingKey::from_jwk(jwk).unwrap();
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
    validation.set_audience(&["rp1"]);
    validation.set_issuer(&[env.server.public_url.as_str()]);
    jsonwebtoken::decode::<Value>(jwt, &key, &validation).unwrap().claims
}

#[tokio::test]
async fn happy_path_browser_and_device_see_the_same_otp_and_the_token_verifies() {
    let env = SignIn::start("", ServerOptions::default()).await.unwrap();
    let (status, started, _) = env.initiate(&env.token_id, "rp1", &["name", "age", "document"]).await.unwrap();
    assert_eq!(status, 201, "{started}");
    let sid = started["session_id"].as_str().unwrap().to_string();
    let bt = started["browser_token"].as_str().unwrap().to_string();
    assert_eq!(sid.len(), 43);
    assert_eq!(started["ws_url"], format!("/v1/auth/sessions/{sid}/ws"));
    let mut ws = connect(&env, &sid, &bt).await;
    let otp_msg = next_message(&mut ws).await.unwrap();
    assert_eq!(otp_msg["type"], "otp");
    let otp = otp_msg["otp"].as_str().unwrap().to_string();
    assert_eq!(otp.len(), 6);
    assert_eq!(otp_msg["expires_at"], started["expires_at"]);
    let pending = env.device_client.pending(&env.device).await.unwrap();
    assert_eq!(pending.sessions.len(), 1);
    assert_eq!(pending.sessions[0].otp, otp);
    assert_eq!(pending.sessions[0].service_name, "Demo Bank");
    assert_eq!(pending.sessions[0].scopes, vec!["name", "age", "document"]);
    let r = env
        .device_client
        .verify(&env.device, &sid, &otp, Decision::Approve, Some(vec!["name".into(), "age".into()]))
        .await
        .unwrap();
    assert_eq!(r, json!({"status": "approved"}));
    let approved = next_message(&mut ws).await.unwrap();
    assert_eq!(approved["type"], "approved");
    let jwt = approved["id_token"].as_str().unwrap().to_string();
    assert_eq!(next_message(&mut ws).await.unwrap_err(), Some(1000));
    let claims = jwks_verify(&env, &jwt).await;
    let mut keys: Vec<&str> = claims.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort();
    assert_eq!(
        keys,
        vec![
            "age_over_18",
            "age_over_21",
            "aud",
            "exp",
            "family_name",
            "given_name",
            "iat",
            "iss",
            "jti",
            "nbf",
            "scope",
            "sid",
            "sub"
        ]
    );
    assert_eq!(claims["sub"], env.token_id);
    assert_eq!(claims["aud"], "rp1");
    assert_eq!(claims["sid"], sid);
    assert_eq!(claims["scope"], "name age");
    assert_eq!(claims["given_name"], "JANE");
    assert_eq!(claims["age_over_18"], true);
    assert_eq!(claims["nbf"], claims["iat"]);
    assert_eq!(claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(), 300);
    // Polling delivers the same token.
    assert_eq!(poll(&env, &sid, &bt).await, json!({"status": "approved", "id_token": jwt}));
    // Nothing secret in the log or the audit trail, which records the outcome.
    let log = env.server.log();
    let audit = audit_with(&env, &["auth.approved", "enrollment.created"]).await;
    assert!(audit.contains(&sid) && audit.contains("enrollment.created"), "{audit}");
    for secret in [otp.as_str(), "JANE", "CITIZEN", "PA1234567", bt.as_str(), jwt.as_str()] {
        assert!(!log.contains(secret), "log contains {secret:?}");
        assert!(!audit.contains(secret), "audit contains {secret:?}");
    }
}

#[tokio::test]
async fn otp_derivation_matches_an_independent_computation() {
    let token = TestToken::new().unwrap();
    // Import a known OTP key before the server makes its keys; it becomes the active one.
    token.use_in_process().unwrap();
    let module = symbolon::keys::Module::load(&token.module).unwrap();
    let pin = symbolon::keys::HsmPin::resolve(Some(&token.pin_file)).unwrap();
    let pool =
        symbolon::keys::SessionPool::start(module, Some(token.label.clone()), None, pin, 1, 4, Duration::from_secs(5))
            .unwrap();
    let known: Vec<u8> = (0u8..32).map(|b| b.wrapping_mul(7)).collect();
    let k = known.clone();
    pool.run(move |s| s.import_secret(symbolon::keys::KeyKind::HmacSecret, "symbolon-otp-20260101T000000Z", &k))
        .await
        .unwrap();
    pool.shutdown();
    // Imported from a known value, it must be named in keys.imported (docs/keys.md).
    let config = "[auth]\notp_digits = 8\n[keys]\nimported = [\"symbolon-otp-20260101T000000Z\"]\n";
    let env = SignIn::start_with_token(token, config, ServerOptions::default()).await.unwrap();
    let (_, started, _) = env.initiate(&env.token_id, "rp1", &[]).await.unwrap();
    let sid = started["session_id"].as_str().unwrap();
    let created_at = started["expires_at"].as_i64().unwrap() - 120;
    let mut ws = connect(&env, sid, started["browser_token"].as_str().unwrap()).await;
    let otp = next_message(&mut ws).await.unwrap()["otp"].as_str().unwrap().to_string();
    let mut msg = b"symbolon-otp-v1\0".to_vec();
    msg.extend_from_slice(sid.as_bytes());
    msg.push(0);
    msg.extend_from_slice(env.token_id.as_bytes());
    msg.push(0);
    msg.extend_from_slice(&(created_at as u64).to_be_bytes());
    let mut mac = Hmac::<Sha256>::new_from_slice(&known).unwrap();
    mac.update(&msg);
    let mac = mac.finalize().into_bytes();
    let off = usize::from(mac[31] & 0x0f);
    let bin = u32::from_be_bytes([mac[off] & 0x7f, mac[off + 1], mac[off + 2], mac[off + 3]]);
    assert_eq!(otp, format!("{:08}", bin % 100_000_000));
}

#[tokio::test]
async fn reject_ends_the_session_as_rejected() {
    let env = SignIn::start("", ServerOptions::default()).await.unwrap();
    let (_, started, _) = env.initiate(&env.token_id, "rp1", &["name"]).await.unwrap();
    let sid = started["session_id"].as_str().unwrap();
    let mut ws = connect(&env, sid, started["browser_token"].as_str().unwrap()).await;
    let otp = next_message(&mut ws).await.unwrap()["otp"].as_str().unwrap().to_string();
    let r = env.device_client.verify(&env.device, sid, &otp, Decision::Reject, None).await.unwrap();
    assert_eq!(r, json!({"status": "rejected"}));
    assert_eq!(next_message(&mut ws).await.unwrap(), json!({"type": "rejected"}));
    assert_eq!(next_message(&mut ws).await.unwrap_err(), Some(1000));
    // A session that already ended: a new socket gets the terminal message at once.
    let mut ws = connect(&env, sid, started["browser_token"].as_str().unwrap()).await;
    assert_eq!(next_message(&mut ws).await.unwrap(), json!({"type": "rejected"}));
}

#[tokio::test]
async fn five_wrong_otps_lock_the_session_and_lock_out_the_token() {
    let env = SignIn::start("", ServerOptions::default()).await.unwrap();
    let (_, started, _) = env.initiate(&env.token_id, "rp1", &[]).await.unwrap();
    let sid = started["session_id"].as_str().unwrap();
    let mut ws = connect(&env, sid, started["browser_token"].as_str().unwrap()).await;
    let otp = next_message(&mut ws).await.unwrap()["otp"].as_str().unwrap().to_string();
    let wrong = if otp == "000000" { "000001" } else { "000000" };
    for _ in 0..5 {
        let e = env.device_client.verify(&env.device, sid, wrong, Decision::Approve, None).await.unwrap_err();
        assert_eq!(e.problem_code(), (401, "otp_mismatch".into()));
    }
    assert_eq!(next_message(&mut ws).await.unwrap(), json!({"type": "locked"}));
    let e = env.device_client.verify(&env.device, sid, &otp, Decision::Approve, None).await.unwrap_err();
    assert_eq!(e.problem_code(), (409, "session_closed".into()));
    // 5 failures × 2 units = 10: the token is locked out.
    let (status, body, headers) = env.initiate(&env.token_id, "rp1", &[]).await.unwrap();
    assert_eq!((status, body["code"].as_str().unwrap()), (429, "locked_out"));
    let retry: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((250..=300).contains(&retry), "{retry}");
    audit_with(&env, &["auth.token_locked_out", "auth.session_locked"]).await;
}

#[tokio::test]
async fn concurrent_double_verify_exactly_one_wins() {
    let env = SignIn::start("", ServerOptions::default()).await.unwrap();
    for round in 0..3 {
        let (_, started, _) = env.initiate(&env.token_id, "rp1", &["name"]).await.unwrap();
        let sid = started["session_id"].as_str().unwrap().to_string();
        let otp = env.device_client.pending(&env.device).await.unwrap().sessions[0].otp.clone();
        let a = env.device_client.verify(&env.device, &sid, &otp, Decision::Approve, Some(vec!["name".into()]));
        let b = env.device_client.verify(&env.device, &sid, &otp, Decision::Reject, None);
        let (a, b) = tokio::join!(a, b);
        let oks = [a.is_ok(), b.is_ok()].iter().filter(|x| **x).count();
        assert_eq!(oks, 1, "round {round}: {a:?} {b:?}");
        let loser = match (a, b) {
            (Err(e), _) | (_, Err(e)) => e,
            _ => unreachable!(),
        };
        assert_eq!(loser.problem_code(), (409, "session_closed".into()));
    }
}

#[tokio::test]
async fn sessions_expire_with_a_short_ttl() {
    let env = SignIn::start("[auth]\notp_ttl = \"2s\"\n", ServerOptions::default()).await.unwrap();
    let (_, started, _) = env.initiate(&env.token_id, "rp1", &[]).await.unwrap();
    let sid = started["session_id"].as_str().unwrap();
    let bt = started["browser_token"].as_str().unwrap();
    let mut ws = connect(&env, sid, bt).await;
    let otp = next_message(&mut ws).await.unwrap()["otp"].as_str().unwrap().to_string();
    assert_eq!(next_message(&mut ws).await.unwrap(), json!({"type": "expired"}));
    assert_eq!(next_message(&mut ws).await.unwrap_err(), Some(1000));
    let e = env.device_client.verify(&env.device, sid, &otp, Decision::Approve, None).await.unwrap_err();
    assert_eq!(e.problem_code(), (409, "session_closed".into()));
    assert_eq!(poll(&env, sid, bt).await, json!({"status": "expired"}));
}

#[tokio::test]
async fn websocket_hello_timeout_wrong_token_and_unknown_session_close_4401() {
    let env = SignIn::start("[auth]\nhello_timeout = \"1s\"\n", ServerOptions::default()).await.unwrap();
    let (_, started, _) = env.initiate(&env.token_id, "rp1", &[]).await.unwrap();
    let sid = started["session_id"].as_str().unwrap();
    // No hello at all.
    let (mut ws, _) = tokio_tungstenite::connect_async(env.ws_url(sid)).await.unwrap();
    assert_eq!(next_message(&mut ws).await.unwrap_err(), Some(4401));
    // A wrong browser token.
    let mut ws = connect(&env, sid, "not-the-token").await;
    assert_eq!(next_message(&mut ws).await.unwrap_err(), Some(4401));
    // An unknown session still upgrades, then closes 4401.
    let mut ws = connect(&env, &"A".repeat(43), "whatever").await;
    assert_eq!(next_message(&mut ws).await.unwrap_err(), Some(4401));
    // Polling: wrong token and unknown session are both 404 not_found.
    for (id, tok) in [(sid, "wrong"), ("unknown-session", started["browser_token"].as_str().unwrap())] {
        let r = reqwest::Client::new()
            .get(format!("{}/v1/auth/sessions/{id}", env.server.public_url))
            .bearer_auth(tok)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404);
        assert_eq!(r.json::<Value>().await.unwrap()["code"], "not_found");
    }
    // A disallowed Origin on the upgrade is refused.
    let mut req =
        tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(env.ws_url(sid)).unwrap();
    req.headers_mut().insert("origin", "https://evil.example".parse().unwrap());
    let err = tokio_tungstenite::connect_async(req).await.unwrap_err();
    match err {
        tokio_tungstenite::tungstenite::Error::Http(resp) => assert_eq!(resp.status(), 403),
        other => panic!("expected 403, got {other:?}"),
    }
    let _ = CloseCode::Normal;
}

#[tokio::test]
async fn unknown_token_id_gets_the_same_shape_and_can_only_expire() {
    let env = SignIn::start("", ServerOptions::default()).await.unwrap();
    let (s1, known, _) = env.initiate(&env.token_id, "rp1", &["name"]).await.unwrap();
    let (s2, unknown, _) = env.initiate("AUS-NOBODY01", "rp1", &["name"]).await.unwrap();
    assert_eq!((s1, s2), (201, 201));
    let shape = |v: &Value| {
        let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        k.sort();
        k
    };
    assert_eq!(shape(&known), shape(&unknown));
    let sid = unknown["session_id"].as_str().unwrap();
    let mut ws = connect(&env, sid, unknown["browser_token"].as_str().unwrap()).await;
    assert_eq!(next_message(&mut ws).await.unwrap()["type"], "otp");
    // The enrolled device does not see it; verifying it is session_not_found.
    let pending = env.device_client.pending(&env.device).await.unwrap();
    assert!(pending.sessions.iter().all(|s| s.session_id != sid));
    let e = env.device_client.verify(&env.device, sid, "123456", Decision::Approve, None).await.unwrap_err();
    assert_eq!(e.problem_code(), (404, "session_not_found".into()));
}

#[tokio::test]
async fn initiate_limits_in_order() {
    let env = SignIn::start("", ServerOptions::default()).await.unwrap();
    for _ in 0..3 {
        assert_eq!(env.initiate(&env.token_id, "rp1", &[]).await.unwrap().0, 201);
    }
    let (status, body, headers) = env.initiate(&env.token_id, "rp1", &[]).await.unwrap();
    assert_eq!((status, body["code"].as_str().unwrap()), (429, "too_many_pending"));
    assert!(headers.contains_key("retry-after"));
    // The per-token rate (5/min) is checked before the pending cap, so the 5th attempt
    // still meets the cap and the 6th the rate limit.
    let (status, body, _) = env.initiate(&env.token_id, "rp1", &[]).await.unwrap();
    assert_eq!((status, body["code"].as_str().unwrap()), (429, "too_many_pending"), "{body}");
    let (status, body, headers) = env.initiate(&env.token_id, "rp1", &[]).await.unwrap();
    assert_eq!((status, body["code"].as_str().unwrap()), (429, "rate_limited"), "{body}");
    assert!(headers.contains_key("retry-after"));
    // Unknown service, disallowed scope, bad token id, disallowed origin.
    let (status, body, _) = env.initiate("AUS-OTHER001", "nope", &[]).await.unwrap();
    assert_eq!((status, body["code"].as_str().unwrap()), (400, "unknown_service"));
    let (status, body, _) = env.initiate("AUS-OTHER001", "rp2", &["name"]).await.unwrap();
    assert_eq!((status, body["code"].as_str().unwrap()), (400, "invalid_scope"));
    let (status, body, _) = env.initiate("x y", "rp2", &[]).await.unwrap();
    assert_eq!((status, body["code"].as_str().unwrap()), (400, "invalid_request"));
    let r = reqwest::Client::new()
        .post(format!("{}/v1/auth/initiate", env.server.public_url))
        .header("origin", "https://evil.example")
        .json(&json!({"token_id": "AUS-OTHER001", "service_id": "rp1", "scopes": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(r.json::<Value>().await.unwrap()["code"], "origin_not_allowed");
    let r = reqwest::Client::new()
        .post(format!("{}/v1/auth/initiate", env.server.public_url))
        .header("origin", "https://rp.example")
        .json(&json!({"token_id": "AUS-OTHER001", "service_id": "rp1", "scopes": [], "extra": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400, "unknown members are refused");
}

#[tokio::test]
async fn scope_escalation_and_another_tokens_device_are_refused() {
    let env = SignIn::start("", ServerOptions::default()).await.unwrap();
    let (_, started, _) = env.initiate(&env.token_id, "rp1", &["age"]).await.unwrap();
    let sid = started["session_id"].as_str().unwrap();
    let otp = env.device_client.pending(&env.device).await.unwrap().sessions[0].otp.clone();
    let e = env
        .device_client
        .verify(&env.device, sid, &otp, Decision::Approve, Some(vec!["age".into(), "name".into()]))
        .await
        .unwrap_err();
    assert_eq!(e.problem_code(), (400, "invalid_scope".into()));
    // A second enrolled device (another token id) cannot verify this session.
    let other = Device::generate();
    let seal = env.chain.manifest.seal("valid_padded").unwrap();
    env.device_client.enroll(&other, &seal.vds, Push::None, "other").await.unwrap();
    let e = env.device_client.verify(&other, sid, &otp, Decision::Approve, Some(vec![])).await.unwrap_err();
    assert_eq!(e.problem_code(), (404, "session_not_found".into()));
    // Approve with no scopes is allowed: a token without scope claims.
    let r = env.device_client.verify(&env.device, sid, &otp, Decision::Approve, Some(vec![])).await.unwrap();
    assert_eq!(r["status"], "approved");
    // An unknown device and a skewed iat.
    let stranger = Device::generate();
    let e = env.device_client.pending(&stranger).await.unwrap_err();
    assert_eq!(e.problem_code(), (401, "unknown_device".into()));
    let skewed = env.device.device_jws(&VerifyPayload {
        session_id: sid.into(),
        otp: otp.clone(),
        decision: Decision::Approve,
        scopes: None,
        iat: unix_now() - 3600,
    });
    let e = env.device_client.post_jose::<Value>("/v1/auth/verify", skewed).await.unwrap_err();
    assert_eq!(e.problem_code(), (401, "clock_skew".into()));
}
