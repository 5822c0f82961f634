//! Push to the device: the FCM service account's key imported into a fresh SoftHSM2
//! token, RS256 assertions signed there, messages sent over HTTP to the fake FCM.
//! One test per process: `cargo nextest run -p softhsm-tests -E 'test(/^push::/)'`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cryptoki::object::{Attribute, AttributeInfo, AttributeType, ObjectClass};
use rsa::pkcs1v15::{Signature, VerifyingKey};
use rsa::signature::Verifier;
use sha2::Sha256;
use softhsm_tests::TestToken;
use softhsm_tests::fake_fcm::{FakeFcm, ServiceAccountFixture};
use symbolon::keyring::KeyPurpose;
use symbolon::keys::{HsmPin, SessionPool};
use symbolon::push::cli::{ImportedServiceAccount, import_service_account};
use symbolon::push::{
    AssertionIdentity, AuthPush, FailureHook, FcmClient, PushConfig, PushError, PushFailure, PushProvider, PushQueue,
    build_assertion,
};

const PROJECT: &str = "symbolon-test";

struct Rig {
    token: TestToken,
    pool: SessionPool,
    fake: FakeFcm,
    account: ServiceAccountFixture,
    imported: ImportedServiceAccount,
    config: PushConfig,
}

fn pool_for(token: &TestToken) -> SessionPool {
    token.use_in_process().unwrap();
    SessionPool::start(
        symbolon::keys::Module::load(&token.module).unwrap(),
        Some(token.label.clone()),
        None,
        HsmPin::resolve(Some(&token.pin_file)).unwrap(),
        2,
        64,
        Duration::from_secs(5),
    )
    .unwrap()
}

async fn import(pool: &SessionPool, token: &TestToken, account: &ServiceAccountFixture) -> ImportedServiceAccount {
    let path = token.dir.path().join("service-account.json");
    account.write_to(&path).unwrap();
    import_service_account(pool, &path).await.unwrap()
}

/// A token with the service account's key imported, a fake FCM trusting it, and the
/// `[push]` configuration `symbolon keys import-fcm` would print.
async fn rig() -> Rig {
    let token = TestToken::new().unwrap();
    let pool = pool_for(&token);
    let fake = FakeFcm::start().await.unwrap();
    let account = fake.new_service_account(PROJECT).unwrap();
    let imported = import(&pool, &token, &account).await;
    let config = PushConfig {
        provider: PushProvider::Fcm,
        fcm_base_url: fake.base_url(),
        project_id: imported.project_id.clone(),
        client_email: imported.client_email.clone(),
        token_uri: imported.token_uri.clone(),
        key_label: imported.label.clone(),
        private_key_id: imported.private_key_id.clone(),
        request_timeout: Duration::from_secs(5),
        ..PushConfig::default()
    };
    Rig { token, pool, fake, account, imported, config }
}

impl Rig {
    fn client(&self) -> Arc<FcmClient> {
        Arc::new(FcmClient::new(&self.config, Arc::new(self.pool.clone())).unwrap())
    }

    /// A queue with a short initial backoff, and the failures it reports.
    fn queue(&self, backoff: Duration) -> (PushQueue, Arc<Mutex<Vec<PushFailure>>>) {
        let failures = Arc::new(Mutex::new(Vec::new()));
        let sink = failures.clone();
        let hook: FailureHook = Arc::new(move |f| sink.lock().unwrap().push(f));
        let queue = PushQueue::new(Some(self.client()), &self.config, hook, backoff);
        (queue, failures)
    }
}

fn now() -> i64 {
    symbolon::ids::now_unix()
}

fn auth_push(session_id: &str, device_token: &str, ttl: i64) -> AuthPush {
    AuthPush::auth(
        session_id,
        device_token,
        "493817",
        "shop",
        "Example Shop",
        &["name".into(), "age".into()],
        now() + ttl,
    )
}

async fn wait_until(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        if done() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    done()
}

#[tokio::test]
async fn imported_key_is_sensitive_and_signs_rs256_in_the_token() {
    let token = TestToken::new().unwrap();
    let pool = pool_for(&token);
    let account = ServiceAccountFixture::generate(PROJECT, "https://oauth2.googleapis.com/token").unwrap();
    let imported = import(&pool, &token, &account).await;
    assert!(imported.label.starts_with("symbolon-fcm-"), "{}", imported.label);
    assert_eq!(KeyPurpose::from_label(&imported.label), None);
    assert_eq!(imported.client_email, account.client_email);
    assert_eq!(imported.private_key_id, account.private_key_id);
    assert_eq!(imported.token_uri, "https://oauth2.googleapis.com/token");
    let snippet = imported.config_snippet();
    assert!(snippet.contains(&format!("key_label = \"{}\"", imported.label)), "{snippet}");

    // The private parts cannot be read back: sensitive, not extractable.
    let ctx = pool.context();
    let session = token.user_session(ctx).unwrap();
    let found = session
        .find_objects(&[
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::Label(imported.label.as_bytes().to_vec()),
        ])
        .unwrap();
    assert_eq!(found.len(), 1);
    let attrs = session
        .get_attributes(
            found[0],
            &[AttributeType::Sensitive, AttributeType::Extractable, AttributeType::Sign, AttributeType::Decrypt],
        )
        .unwrap();
    for want in
        [Attribute::Sensitive(true), Attribute::Extractable(false), Attribute::Sign(true), Attribute::Decrypt(false)]
    {
        assert!(attrs.contains(&want), "{want:?} not in {attrs:?}");
    }
    let secret_parts = [
        AttributeType::PrivateExponent,
        AttributeType::Prime1,
        AttributeType::Prime2,
        AttributeType::Exponent1,
        AttributeType::Exponent2,
        AttributeType::Coefficient,
        AttributeType::Value,
    ];
    let info = session.get_attribute_info(found[0], &secret_parts).unwrap();
    for (t, i) in secret_parts.iter().zip(&info) {
        assert!(matches!(i, AttributeInfo::Sensitive | AttributeInfo::TypeInvalid), "{t:?} is readable: {i:?}");
    }
    assert!(
        session.get_attributes(found[0], &[AttributeType::PrivateExponent]).map(|a| a.is_empty()).unwrap_or(true),
        "CKA_PRIVATE_EXPONENT was returned"
    );
    // The key layer's start-up safety check sees it as safe.
    let listed =
        pool.run(|s| s.list_keys("symbolon-")).await.unwrap().into_iter().find(|k| k.label == imported.label).unwrap();
    assert!(listed.sensitive && !listed.extractable, "{listed:?}");

    // CKM_SHA256_RSA_PKCS in the token verifies with the service account's public key.
    let msg = b"header.claims".to_vec();
    let (label, m) = (imported.label.clone(), msg.clone());
    let sig = pool.run(move |s| s.sign_rs256(&label, &m)).await.unwrap();
    let key = VerifyingKey::<Sha256>::new(account.public_key.clone());
    let sig = Signature::try_from(sig.as_slice()).unwrap();
    key.verify(&msg, &sig).unwrap();
    assert!(key.verify(b"other", &sig).is_err());
}

#[tokio::test]
async fn message_is_sent_with_exact_data_and_the_token_is_reused() {
    let rig = rig().await;
    let client = rig.client();
    let push = auth_push("session-one", "device-token-abc", 120);
    let name = client.send(&push).await.unwrap();
    assert!(name.starts_with(&format!("projects/{PROJECT}/messages/")), "{name}");
    client.send(&auth_push("session-two", "device-token-abc", 60)).await.unwrap();

    let got = rig.fake.messages();
    assert_eq!(got.len(), 2);
    let m = &got[0];
    assert_eq!(m.project_id, PROJECT);
    assert_eq!(m.token, "device-token-abc");
    let want: Vec<(&str, String)> = vec![
        ("expires_at", push.expires_at.to_string()),
        ("otp", "493817".into()),
        ("scopes", "name age".into()),
        ("service_id", "shop".into()),
        ("service_name", "Example Shop".into()),
        ("session_id", "session-one".into()),
        ("type", "auth".into()),
    ];
    let have: Vec<(&str, String)> = m.data.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
    assert_eq!(have, want);
    assert_eq!(m.android_priority.as_deref(), Some("high"));
    let ttl = m.ttl_secs().unwrap();
    assert!((115..=120).contains(&ttl), "ttl {ttl}");
    assert!((55..=60).contains(&got[1].ttl_secs().unwrap()));
    assert_eq!(m.apns_headers.get("apns-expiration"), Some(&push.expires_at.to_string()));
    // One assertion, one access token, reused for the second send.
    assert_eq!(rig.fake.token_requests(), 1);
    assert_eq!(client.token_fetches(), 1);
}

/// A token endpoint answering `expires_in` = u64::MAX (or 0) neither panics the client
/// nor breaks sending: the lifetime is capped (issue 15 item 6, checked arithmetic).
#[tokio::test]
async fn extreme_token_lifetimes_neither_panic_nor_break_sending() {
    let rig = rig().await;
    rig.fake.set_token_lifetime(u64::MAX);
    let client = rig.client();
    client.send(&auth_push("s1", "dev", 120)).await.unwrap();
    client.send(&auth_push("s2", "dev", 120)).await.unwrap();
    assert_eq!(client.token_fetches(), 1, "a huge lifetime keeps the token (capped at a day)");
    rig.fake.set_token_lifetime(0);
    rig.fake.revoke_tokens();
    client.send(&auth_push("s3", "dev", 120)).await.unwrap();
    assert_eq!(rig.fake.messages().len(), 3);
}

#[tokio::test]
async fn a_revoked_token_is_refreshed_once_on_401() {
    let rig = rig().await;
    let client = rig.client();
    client.send(&auth_push("s1", "dev", 120)).await.unwrap();
    rig.fake.revoke_tokens();
    client.send(&auth_push("s2", "dev", 120)).await.unwrap();
    assert_eq!(rig.fake.messages().len(), 2);
    assert_eq!(rig.fake.tokens_issued(), 2);
    assert_eq!(client.token_fetches(), 2);
    // The second send was refused once, then retried with the new token.
    assert_eq!(rig.fake.send_requests(), 3);
}

#[tokio::test]
async fn unavailable_twice_then_delivered_with_doubling_backoff() {
    let rig = rig().await;
    rig.fake.fail_next(2, 503);
    let (queue, failures) = rig.queue(Duration::from_millis(100));
    queue.push(auth_push("sess-retry", "dev-retry", 120), || async { true });
    let got = rig.fake.wait_for_messages(1, Duration::from_secs(10)).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].data["session_id"], "sess-retry");

    let times = rig.fake.send_times();
    assert_eq!(times.len(), 3);
    let first_gap = times[1] - times[0];
    let second_gap = times[2] - times[1];
    assert!(first_gap >= Duration::from_millis(100), "{first_gap:?}");
    assert!(second_gap >= Duration::from_millis(200), "{second_gap:?}");

    let failures = failures.lock().unwrap().clone();
    assert_eq!(failures.len(), 2, "{failures:?}");
    for (i, f) in failures.iter().enumerate() {
        assert_eq!(f.session_id, "sess-retry");
        assert_eq!(f.attempt, i as u32 + 1);
        assert_eq!(f.status, Some(503));
        assert!(!f.gave_up);
        assert_eq!(f.token_hash, symbolon::push::token_hash("dev-retry"));
        assert!(!f.reason.contains("493817") && !f.reason.contains("dev-retry"));
    }
    assert!(wait_until(Duration::from_secs(2), || queue.queued() == 0).await);
    assert_eq!(rig.fake.token_requests(), 1);
}

#[tokio::test]
async fn retry_after_is_honoured() {
    let rig = rig().await;
    rig.fake.fail_next(1, 429);
    rig.fake.set_retry_after(Some(1));
    let (queue, failures) = rig.queue(Duration::from_millis(20));
    queue.push(auth_push("sess-429", "dev", 120), || async { true });
    assert_eq!(rig.fake.wait_for_messages(1, Duration::from_secs(5)).await.len(), 1);
    let times = rig.fake.send_times();
    assert!(times[1] - times[0] >= Duration::from_secs(1), "{:?}", times[1] - times[0]);
    assert_eq!(failures.lock().unwrap()[0].status, Some(429));
}

#[tokio::test]
async fn unregistered_404_is_permanent() {
    let rig = rig().await;
    rig.fake.fail_next(1, 404);
    let (queue, failures) = rig.queue(Duration::from_millis(20));
    queue.push(auth_push("sess-404", "stale-token", 120), || async { true });
    assert!(wait_until(Duration::from_secs(5), || !failures.lock().unwrap().is_empty()).await);
    // Several backoff periods later, still exactly one send.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(rig.fake.send_times().len(), 1);
    assert!(rig.fake.messages().is_empty());
    let failures = failures.lock().unwrap().clone();
    assert_eq!(failures.len(), 1);
    assert_eq!(failures[0].status, Some(404));
    assert!(failures[0].gave_up);
    assert!(failures[0].reason.contains("UNREGISTERED"), "{}", failures[0].reason);
    assert_eq!(queue.queued(), 0);
}

#[tokio::test]
async fn push_stops_when_the_session_is_no_longer_pending() {
    let rig = rig().await;
    rig.fake.fail_next(1000, 503);
    let (queue, failures) = rig.queue(Duration::from_millis(50));
    let pending = Arc::new(AtomicBool::new(true));
    let p = pending.clone();
    queue.push(auth_push("sess-ends", "dev", 120), move || {
        let p = p.clone();
        async move { p.load(Ordering::SeqCst) }
    });
    assert!(wait_until(Duration::from_secs(5), || rig.fake.send_times().len() >= 2).await);
    pending.store(false, Ordering::SeqCst);
    assert!(wait_until(Duration::from_secs(5), || queue.queued() == 0).await);
    let sends = rig.fake.send_times().len();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(rig.fake.send_times().len(), sends);
    assert!(failures.lock().unwrap().iter().all(|f| !f.gave_up));

    // A session that already ended is not pushed at all.
    queue.push(auth_push("sess-over", "dev", 120), || async { false });
    assert!(wait_until(Duration::from_secs(2), || queue.queued() == 0).await);
    assert_eq!(rig.fake.send_times().len(), sends);
}

#[tokio::test]
async fn retries_stop_at_session_expiry() {
    let rig = rig().await;
    rig.fake.fail_next(1000, 503);
    let (queue, failures) = rig.queue(Duration::from_millis(400));
    queue.push(auth_push("sess-short", "dev", 1), || async { true });
    assert!(wait_until(Duration::from_secs(5), || queue.queued() == 0).await);
    let failures = failures.lock().unwrap().clone();
    let last = failures.last().unwrap();
    assert!(last.gave_up, "{failures:?}");
    assert!(failures.len() <= 3, "{failures:?}");
}

#[tokio::test]
async fn a_full_queue_drops_and_reports_without_blocking() {
    let mut rig = rig().await;
    rig.config.max_queued = 1;
    rig.fake.fail_next(1000, 503);
    let (queue, failures) = rig.queue(Duration::from_secs(30));
    queue.push(auth_push("sess-a", "dev-a", 120), || async { true });
    let started = Instant::now();
    queue.push(auth_push("sess-b", "dev-b", 120), || async { true });
    assert!(started.elapsed() < Duration::from_millis(50));
    let dropped = failures.lock().unwrap().iter().find(|f| f.session_id == "sess-b").cloned().unwrap();
    assert_eq!(dropped.attempt, 0);
    assert!(dropped.gave_up);
    queue.shutdown();
    assert!(wait_until(Duration::from_secs(5), || queue.queued() == 0).await);
}

#[tokio::test]
async fn the_fake_verifies_the_assertion_and_the_bearer() {
    let rig = rig().await;
    let http = reqwest::Client::new();
    let identity = AssertionIdentity {
        client_email: rig.imported.client_email.clone(),
        token_uri: rig.fake.token_uri(),
        private_key_id: rig.imported.private_key_id.clone(),
        key_label: rig.imported.label.clone(),
    };
    let exchange = |assertion: String| {
        let http = http.clone();
        let uri = rig.fake.token_uri();
        async move {
            let r = http
                .post(uri)
                .form(&[
                    ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
                    ("assertion", assertion.as_str()),
                ])
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.json::<serde_json::Value>().await.unwrap())
        }
    };
    // The HSM-signed assertion is accepted.
    let good = build_assertion(&rig.pool, &identity, now()).await.unwrap();
    let (status, body) = exchange(good.clone()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["token_type"], "Bearer");
    let access = body["access_token"].as_str().unwrap().to_owned();

    // Claims changed after signing: the signature no longer verifies.
    let parts: Vec<&str> = good.split('.').collect();
    let claims = serde_json::json!({
        "iss": identity.client_email, "scope": symbolon::push::FCM_SCOPE,
        "aud": identity.token_uri, "iat": now(), "exp": now() + 600,
    });
    use base64::Engine;
    let forged = format!(
        "{}.{}.{}",
        parts[0],
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(claims.to_string()),
        parts[2]
    );
    let (status, body) = exchange(forged).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"], "invalid_grant");
    assert_eq!(body["error_description"], "Invalid JWT Signature.");

    // Wrong audience, even correctly signed.
    let wrong_aud = AssertionIdentity { token_uri: "https://oauth2.googleapis.com/token".into(), ..identity.clone() };
    let (status, _) = exchange(build_assertion(&rig.pool, &wrong_aud, now()).await.unwrap()).await;
    assert_eq!(status, 400);

    // Bearer checks on messages:send.
    let send = |bearer: String, project: &str| {
        let http = http.clone();
        let url = format!("{}/v1/projects/{project}/messages:send", rig.fake.base_url());
        async move {
            http.post(url)
                .bearer_auth(bearer)
                .json(&serde_json::json!({"message": {"token": "t", "data": {"a": "b"},
                    "android": {"priority": "high", "ttl": "10s"}}}))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(send("ya29.not-issued".into(), PROJECT).await, 401);
    assert_eq!(send(access.clone(), "another-project").await, 403);
    assert_eq!(send(access.clone(), PROJECT).await, 200);

    // Message shape: data values must be strings.
    let status = http
        .post(format!("{}/v1/projects/{PROJECT}/messages:send", rig.fake.base_url()))
        .bearer_auth(&access)
        .json(&serde_json::json!({"message": {"token": "t", "data": {"n": 1}}}))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status.as_u16(), 400);
}

#[tokio::test]
async fn a_key_the_fake_does_not_trust_is_refused_permanently() {
    let rig = rig().await;
    // Same account name and kid, different key pair: only the signature is wrong.
    let other = ServiceAccountFixture::generate(PROJECT, &rig.fake.token_uri()).unwrap();
    let pool = rig.pool.clone();
    let imported = import(&pool, &rig.token, &other).await;
    assert_ne!(imported.label, rig.imported.label);
    let config = PushConfig { key_label: imported.label, ..rig.config.clone() };
    let client = FcmClient::new(&config, Arc::new(pool)).unwrap();
    // Three concurrent sends share the outcome of one token fetch.
    let pushes: Vec<AuthPush> = (1..=3).map(|n| auth_push(&format!("s{n}"), "dev", 120)).collect();
    let (a, b, c) = tokio::join!(client.send(&pushes[0]), client.send(&pushes[1]), client.send(&pushes[2]),);
    for result in [a, b, c] {
        let err = result.unwrap_err();
        match &err {
            PushError::TokenRefused { status, error, .. } => {
                assert_eq!(*status, 400);
                assert_eq!(error, "invalid_grant");
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(err.is_permanent());
    }
    assert_eq!(rig.fake.token_requests(), 1);
    assert!(rig.fake.messages().is_empty());
    let _ = &rig.account;
}

#[tokio::test]
async fn provider_none_sends_nothing() {
    let rig = rig().await;
    let hook: FailureHook = Arc::new(|_| {});
    let queue = PushQueue::from_config(&PushConfig::default(), Arc::new(rig.pool.clone()), hook).unwrap();
    assert!(!queue.is_enabled());
    queue.push(auth_push("s", "dev", 120), || async { true });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(rig.fake.send_requests(), 0);
}

/// Collects everything the process logs.
#[derive(Clone, Default)]
struct LogCapture(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogCapture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn logs_never_carry_the_push_token_or_the_otp() {
    let capture = LogCapture::default();
    let writer = capture.clone();
    tracing_subscriber::fmt()
        .with_max_level(tracing_subscriber::filter::LevelFilter::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .init();
    let mut rig = rig().await;
    rig.config.max_queued = 3;
    let device_token = "fcm-device-token-SECRET-7f3a9c";
    let otp = "493817";
    // Retries, a permanent failure, a delivery and a dropped push.
    rig.fake.fail_next(2, 503);
    rig.fake.fail_next(1, 404);
    let (queue, failures) = rig.queue(Duration::from_millis(20));
    queue.push(auth_push("sess-log-1", device_token, 120), || async { true });
    assert!(wait_until(Duration::from_secs(5), || queue.queued() == 0).await);
    queue.push(auth_push("sess-log-2", device_token, 120), || async { true });
    assert_eq!(rig.fake.wait_for_messages(1, Duration::from_secs(5)).await.len(), 1);
    rig.fake.fail_next(1000, 503);
    for n in 0..5 {
        queue.push(auth_push(&format!("sess-log-q{n}"), device_token, 120), || async { true });
    }
    queue.shutdown();
    assert!(wait_until(Duration::from_secs(5), || queue.queued() == 0).await);
    assert!(failures.lock().unwrap().iter().any(|f| f.attempt == 0));

    let logs = String::from_utf8_lossy(&capture.0.lock().unwrap()).into_owned();
    assert!(logs.contains("sess-log-1") && logs.contains("push delivered"), "{logs}");
    assert!(logs.contains("will retry") && logs.contains("giving up"), "{logs}");
    assert!(logs.contains("push queue is full"), "{logs}");
    assert!(logs.contains(&symbolon::push::token_hash(device_token)));
    if std::env::var_os("PUSH_TEST_DUMP_LOGS").is_some() {
        eprintln!("{logs}");
    }
    assert!(!logs.contains(device_token), "push token in logs:\n{logs}");
    assert!(!logs.contains(otp), "OTP in logs:\n{logs}");
    assert!(!logs.contains("ya29."), "access token in logs:\n{logs}");
    assert!(!logs.contains("PRIVATE KEY"), "key in logs");
}
