//! Sign-in with FCM push through the fake FCM server (docs/protocol.md §5.3, §12 rule 10):
//! the service-account key is imported into the HSM and the JWT-bearer assertion is
//! signed there.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use softhsm_tests::device::{Decision, Push};
use softhsm_tests::fake_fcm::FakeFcm;
use softhsm_tests::signin::SignIn;
use softhsm_tests::{ServerOptions, TestToken};
use tokio_tungstenite::tungstenite::Message;

const PUSH_TOKEN: &str = "fcm-registration-token-0123456789";

async fn start(fake: &FakeFcm) -> SignIn {
    let token = TestToken::new().unwrap();
    token.use_in_process().unwrap();
    let account = fake.new_service_account("symbolon-test").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let json_path = dir.path().join("sa.json");
    account.write_to(&json_path).unwrap();
    let module = symbolon::keys::Module::load(&token.module).unwrap();
    let pin = symbolon::keys::HsmPin::resolve(Some(&token.pin_file)).unwrap();
    let pool =
        symbolon::keys::SessionPool::start(module, Some(token.label.clone()), None, pin, 1, 4, Duration::from_secs(5))
            .unwrap();
    let imported = symbolon::push::cli::import_service_account(&pool, &json_path).await.unwrap();
    pool.shutdown();
    let extra = format!(
        "[push]\nprovider = \"fcm\"\nfcm_base_url = \"{}\"\nproject_id = \"{}\"\nclient_email = \"{}\"\ntoken_uri = \"{}\"\nprivate_key_id = \"{}\"\nkey_label = \"{}\"\n",
        fake.base_url(),
        imported.project_id,
        imported.client_email,
        imported.token_uri,
        imported.private_key_id,
        imported.label
    );
    SignIn::start_full(token, &extra, ServerOptions::default(), Push::Fcm { token: PUSH_TOKEN.into() }).await.unwrap()
}

async fn ws_otp(env: &SignIn, started: &Value) -> String {
    let sid = started["session_id"].as_str().unwrap();
    let (mut ws, _) = tokio_tungstenite::connect_async(env.ws_url(sid)).await.unwrap();
    ws.send(Message::Text(json!({"type": "hello", "browser_token": started["browser_token"]}).to_string().into()))
        .await
        .unwrap();
    match ws.next().await {
        Some(Ok(Message::Text(t))) => serde_json::from_str::<Value>(&t).unwrap()["otp"].as_str().unwrap().to_string(),
        other => panic!("expected the otp message, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_carries_the_same_otp_as_the_websocket() {
    let fake = FakeFcm::start().await.unwrap();
    let env = start(&fake).await;
    let (status, started, _) = env.initiate(&env.token_id, "rp1", &["name", "age"]).await.unwrap();
    assert_eq!(status, 201);
    let otp = ws_otp(&env, &started).await;
    let messages = fake.wait_for_messages(1, Duration::from_secs(10)).await;
    assert_eq!(messages.len(), 1);
    let m = &messages[0];
    assert_eq!(m.token, PUSH_TOKEN);
    assert_eq!(m.data["type"], "auth");
    assert_eq!(m.data["otp"], otp);
    assert_eq!(m.data["session_id"], started["session_id"].as_str().unwrap());
    assert_eq!(m.data["service_id"], "rp1");
    assert_eq!(m.data["service_name"], "Demo Bank");
    assert_eq!(m.data["scopes"], "name age");
    assert_eq!(m.data["expires_at"], started["expires_at"].to_string());
    assert_eq!(m.android_priority.as_deref(), Some("high"));
    assert!(m.ttl_secs().unwrap() <= 120 && m.ttl_secs().unwrap() >= 100);
    // The user approves on the phone.
    let sid = started["session_id"].as_str().unwrap();
    let r =
        env.device_client.verify(&env.device, sid, &otp, Decision::Approve, Some(vec!["age".into()])).await.unwrap();
    assert_eq!(r["status"], "approved");
    // An unknown token id gets no push.
    let (status, _, _) = env.initiate("AUS-NOBODY01", "rp1", &[]).await.unwrap();
    assert_eq!(status, 201);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(fake.messages().len(), 1);
    let log = env.server.log();
    for secret in [PUSH_TOKEN, otp.as_str()] {
        assert!(!log.contains(secret), "log contains {secret}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_push_is_retried_and_a_dead_fcm_never_fails_initiate() {
    let fake = FakeFcm::start().await.unwrap();
    let env = start(&fake).await;
    fake.fail_next(1, 503);
    let (status, started, _) = env.initiate(&env.token_id, "rp1", &[]).await.unwrap();
    assert_eq!(status, 201);
    let otp = ws_otp(&env, &started).await;
    // First send fails (503), the retry after ~1 s delivers.
    let messages = fake.wait_for_messages(1, Duration::from_secs(10)).await;
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].data["otp"], otp);
    assert!(fake.send_requests() >= 2);
    assert!(env.server.log().contains("push failed"));
    // FCM down for good: initiate still answers 201 and the device pulls.
    fake.fail_next(1000, 503);
    let (status, started, _) = env.initiate(&env.token_id, "rp1", &[]).await.unwrap();
    assert_eq!(status, 201);
    let pending = env.device_client.pending(&env.device).await.unwrap();
    let s = pending.sessions.iter().find(|s| s.session_id == started["session_id"].as_str().unwrap()).unwrap();
    let r = env.device_client.verify(&env.device, &s.session_id, &s.otp, Decision::Reject, None).await.unwrap();
    assert_eq!(r["status"], "rejected");
}
