//! Enrollment end to end (docs/protocol.md §4, docs/credentials.md §3): the real server, a SoftHSM2
//! token, SQLite, a generated trust chain and the reference device.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::Value;
use softhsm_tests::device::client::{ClientError, DeviceClient};
use softhsm_tests::device::{Device, EnrollPayload, JwsFault, Push, unix_now};
use softhsm_tests::fixtures::{Outcome, republish_aus_vrl, resign_list};
use softhsm_tests::trustenv::FixtureChain;
use softhsm_tests::{ServerOptions, TestServer, TestToken};
use symbolon::store::{DurableStore, EnrollmentStatus};

struct Env {
    _token: TestToken,
    chain: FixtureChain,
    server: TestServer,
    client: DeviceClient,
}

fn start(refresh: &str, extra: &str) -> Env {
    start_with(FixtureChain::new().unwrap(), refresh, extra)
}

/// Starts a server trusting `chain` (changed before the start).
fn start_with(chain: FixtureChain, refresh: &str, extra: &str) -> Env {
    let token = TestToken::new().unwrap();
    let extra_toml = format!("{}\n{extra}", chain.trust_toml(refresh));
    let server = TestServer::start(&token, ServerOptions { extra_toml, ..Default::default() }).unwrap();
    let client = DeviceClient::new(&server.public_url).unwrap();
    Env { _token: token, chain, server, client }
}

const RELAXED: &str = "[limits]\nenroll_per_ip_per_minute = 100000\n";

/// The server's durable store, whichever database its configuration names.
async fn store(env: &Env) -> std::sync::Arc<dyn DurableStore> {
    let config = symbolon::config::Config::load(Some(&env.server.config_path)).unwrap();
    symbolon::store::open_durable(&config.database, &config.server.state_dir).await.unwrap()
}

fn outcome_code(o: &Outcome) -> Option<&'static str> {
    match o {
        Outcome::Ok => None,
        Outcome::UntrustedCredential => Some("untrusted_credential"),
        Outcome::RevokedCredential => Some("revoked_credential"),
        Outcome::ExpiredCredential => Some("expired_credential"),
        Outcome::InvalidRequest => Some("invalid_request"),
        Outcome::Unavailable => Some("unavailable"),
    }
}

/// Every claim value the fixtures carry; none may appear in the server log.
const CLAIM_VALUES: &[&str] = &["JANE", "CITIZEN", "PA1234567", "1990-04-01", "2031-04-01"];

#[tokio::test]
async fn every_fixture_seal_gets_its_expected_outcome_and_rejections_leave_no_row() {
    let env = start("1h", RELAXED);
    let store = store(&env).await;
    let mut enrolled = 0;
    for seal in &env.chain.manifest.seals {
        let device = Device::generate();
        let before = store.count_enrollments().await.unwrap();
        let r =
            env.client.enroll(&device, &seal.vds, Push::Fcm { token: "fcm-token-secret-1".into() }, "Pixel 9").await;
        match (outcome_code(&seal.expected), r) {
            (None, Ok(body)) => {
                enrolled += 1;
                assert_eq!(body["token_id"], seal.tid.clone().unwrap(), "{}", seal.name);
                assert_eq!(body["device_id"], device.device_id());
                let claims: Vec<String> = serde_json::from_value(body["claims"].clone()).unwrap();
                assert_eq!(claims, seal.claims, "{}", seal.name);
                let row = store.enrollment_by_device(&device.device_id()).await.unwrap().unwrap();
                assert_eq!(row.status, EnrollmentStatus::Active);
                assert!(row.claims_sealed.starts_with("v1.symbolon-data-"), "claims are sealed");
                assert!(!row.claims_sealed.contains("JANE"));
                assert!(row.push_token_sealed.as_deref().unwrap().starts_with("v1.symbolon-data-"));
            }
            (Some(want), Err(e)) => {
                let (status, got) = e.problem_code();
                assert_eq!(got, want, "{}: {e}", seal.name);
                let want_status = match want {
                    "invalid_request" => 400,
                    "unavailable" => 503,
                    _ => 422,
                };
                assert_eq!(status, want_status, "{}", seal.name);
                assert_eq!(store.count_enrollments().await.unwrap(), before, "{} left a row", seal.name);
            }
            (want, got) => panic!("{}: expected {want:?}, got {got:?}", seal.name),
        }
    }
    assert!(enrolled >= 7);
    let log = env.server.log();
    for value in CLAIM_VALUES.iter().chain(["fcm-token-secret-1"].iter()) {
        assert!(!log.contains(value), "the log contains {value:?}");
    }
}

#[tokio::test]
async fn malformed_device_jws_get_their_codes() {
    let env = start("1h", RELAXED);
    let store = store(&env).await;
    let seal = env.chain.manifest.seal("valid_full").unwrap();
    for fault in JwsFault::ALL {
        let device = Device::generate();
        let challenge = env.client.challenge().await.unwrap();
        let payload =
            EnrollPayload { vds: seal.vds.clone(), push: Push::None, device_name: "x".into(), iat: unix_now() };
        let jws = device.enrollment_jws_with(&challenge.nonce, &payload, fault);
        let err = env.client.post_jose::<Value>("/v1/enroll", jws).await.unwrap_err();
        let (status, got) = err.problem_code();
        assert_eq!(got, fault.expected_code(), "{fault:?}");
        let want_status = match fault.expected_code() {
            "invalid_request" => 400,
            _ => 401,
        };
        assert_eq!(status, want_status, "{fault:?}");
    }
    assert_eq!(store.count_enrollments().await.unwrap(), 0);
}

#[tokio::test]
async fn nonce_is_single_use_and_unknown_nonces_fail() {
    let env = start("1h", RELAXED);
    let seal = env.chain.manifest.seal("valid_full").unwrap();
    let device = Device::generate();
    let payload = EnrollPayload { vds: seal.vds.clone(), push: Push::None, device_name: "x".into(), iat: unix_now() };
    let unknown = URL_SAFE_NO_PAD.encode([7u8; 32]);
    let err = env.client.post_jose::<Value>("/v1/enroll", device.enrollment_jws(&unknown, &payload)).await.unwrap_err();
    assert_eq!(err.problem_code(), (400, "invalid_nonce".into()));
    let challenge = env.client.challenge().await.unwrap();
    assert_eq!(challenge.nonce.len(), 43);
    assert!(challenge.expires_at >= unix_now() + 299);
    let jws = device.enrollment_jws(&challenge.nonce, &payload);
    env.client.post_jose::<Value>("/v1/enroll", jws.clone()).await.unwrap();
    // The same nonce again (a replay with another device too) fails.
    let other = Device::generate();
    let err = env
        .client
        .post_jose::<Value>("/v1/enroll", other.enrollment_jws(&challenge.nonce, &payload))
        .await
        .unwrap_err();
    assert_eq!(err.problem_code(), (400, "invalid_nonce".into()));
}

#[tokio::test]
async fn one_active_device_per_token_id() {
    let env = start("1h", RELAXED);
    let seal = env.chain.manifest.seal("valid_full").unwrap();
    env.client.enroll(&Device::generate(), &seal.vds, Push::None, "first").await.unwrap();
    let err = env.client.enroll(&Device::generate(), &seal.vds, Push::None, "second").await.unwrap_err();
    assert_eq!(err.problem_code(), (409, "already_enrolled".into()));
    assert_eq!(store(&env).await.count_enrollments().await.unwrap(), 1);
}

#[tokio::test]
async fn content_type_size_and_unknown_members() {
    let env = start("1h", RELAXED);
    let http = reqwest::Client::new();
    let url = format!("{}/v1/enroll", env.server.public_url);
    let r = http.post(&url).header("content-type", "application/json").body("a.b.c").send().await.unwrap();
    assert_eq!(r.status(), 415);
    let problem: Value = r.json().await.unwrap();
    assert_eq!(problem["code"], "unsupported_media_type");
    let r = http.post(&url).body("a.b.c").send().await.unwrap();
    assert_eq!(r.status(), 415);
    let big = "a".repeat(65 * 1024);
    let r = http.post(&url).header("content-type", "application/jose").body(big).send().await.unwrap();
    assert_eq!(r.status(), 413);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    assert_eq!(r.json::<Value>().await.unwrap()["code"], "payload_too_large");
    // The challenge takes {} or nothing, with or without a content type; nothing else.
    let curl = format!("{}/v1/enroll/challenge", env.server.public_url);
    for (ct, body) in [(Some("application/json"), "{}"), (None, ""), (None, "{}"), (Some("application/json"), "")] {
        let mut req = http.post(&curl).body(body);
        if let Some(ct) = ct {
            req = req.header("content-type", ct);
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), 200, "{ct:?} {body:?}");
        assert!(r.headers().contains_key("x-request-id"));
    }
    for body in [r#"{"x":1}"#, "[]", "{", r#"{}{}"#] {
        let r = http.post(&curl).header("content-type", "application/json").body(body).send().await.unwrap();
        assert_eq!(r.status(), 400, "{body}");
        assert_eq!(r.json::<Value>().await.unwrap()["code"], "invalid_request");
    }
}

#[tokio::test]
async fn per_ip_rate_limit_on_enroll() {
    let env = start("1h", "[limits]\nenroll_per_ip_per_minute = 5\n");
    for _ in 0..5 {
        env.client.challenge().await.unwrap();
    }
    let r = reqwest::Client::new().post(format!("{}/v1/enroll/challenge", env.server.public_url)).send().await.unwrap();
    assert_eq!(r.status(), 429);
    let retry: u64 = r.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry));
    assert_eq!(r.json::<Value>().await.unwrap()["code"], "rate_limited");
}

async fn wait_trust_fresh(env: &Env, fresh: bool) -> Value {
    for _ in 0..100 {
        let health: Value =
            reqwest::get(format!("{}/health", env.server.admin_url)).await.unwrap().json().await.unwrap();
        if health["checks"]["trust"]["fresh"] == fresh {
            return health;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("trust.fresh never became {fresh}");
}

#[tokio::test]
async fn stale_governance_list_blocks_enrollment_until_refreshed() {
    let env = start("1s", RELAXED);
    let seal = env.chain.manifest.seal("valid_full").unwrap();
    env.chain.swap("governance.jws", "governance-stale.jws").unwrap();
    let health = wait_trust_fresh(&env, false).await;
    // A stale list degrades /health but does not fail it.
    assert_eq!(health["status"], "degraded");
    let err = env.client.enroll(&Device::generate(), &seal.vds, Push::None, "x").await.unwrap_err();
    assert_eq!(err.problem_code(), (503, "unavailable".into()));
    match &err {
        ClientError::Problem { problem, .. } => assert!(problem.detail.contains("governance"), "{}", problem.detail),
        _ => unreachable!(),
    }
    assert_eq!(store(&env).await.count_enrollments().await.unwrap(), 0);
    env.chain.swap("governance.jws", "governance-next.jws").unwrap();
    let health = wait_trust_fresh(&env, true).await;
    assert_eq!(health["status"], "ok");
    env.client.enroll(&Device::generate(), &seal.vds, Push::None, "x").await.unwrap();
}

#[tokio::test]
async fn vrl_revoking_an_enrolled_token_suspends_it() {
    let env = start("1s", RELAXED);
    let seal = env.chain.manifest.seal("valid_full").unwrap();
    let device = Device::generate();
    env.client.enroll(&device, &seal.vds, Push::None, "x").await.unwrap();
    let tid = seal.tid.clone().unwrap();
    republish_aus_vrl(env.chain.dir.path(), 89, &[&tid], unix_now()).unwrap();
    let store = store(&env).await;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let row = store.enrollment_by_device(&device.device_id()).await.unwrap().unwrap();
        if row.status == EnrollmentStatus::Suspended {
            assert!(row.status_reason.unwrap().contains("VRL"));
            // A new enrollment of the revoked token id is refused too.
            let err = env.client.enroll(&Device::generate(), &seal.vds, Push::None, "y").await.unwrap_err();
            assert_eq!(err.problem_code(), (422, "revoked_credential".into()));
            return;
        }
    }
    panic!("enrollment not suspended after the VRL refresh");
}

#[tokio::test]
async fn a_tsl_pointing_its_crl_at_dev_zero_neither_stops_the_start_nor_other_territories() {
    // The crash loop of the review: the first refresh runs before serving, and read
    // /dev/zero until the process died.
    let chain = FixtureChain::new().unwrap();
    resign_list(chain.dir.path(), "lists/tsl-aus.jws", "tsl-aus-signer", |tsl| {
        for svc in tsl["services"].as_array_mut().unwrap() {
            svc["crl_urls"] = serde_json::json!(["file:///dev/zero"]);
        }
    })
    .unwrap();
    let env = start_with(chain, "1h", RELAXED);
    let health: Value = reqwest::get(format!("{}/health", env.server.admin_url)).await.unwrap().json().await.unwrap();
    assert_eq!(health["checks"]["trust"]["fresh"], false);
    // That territory's CA fails closed; the other territory enrolls.
    let aus = env.chain.manifest.seal("valid_full").unwrap();
    let err = env.client.enroll(&Device::generate(), &aus.vds, Push::None, "x").await.unwrap_err();
    assert_eq!(err.problem_code(), (503, "unavailable".into()));
    let uto = env.chain.manifest.seal("valid_state_rsa_chain").unwrap();
    env.client.enroll(&Device::generate(), &uto.vds, Push::None, "x").await.unwrap();
    let log = env.server.log();
    assert!(log.contains("outside the governance list"), "{log}");
}

/// Waits until the server log shows that a refresh took `label`'s new copy.
async fn wait_list_updated(env: &Env, label: &str) {
    for _ in 0..100 {
        if env.server.log().lines().any(|l| l.contains("trust document updated") && l.contains(label)) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{label} was never refreshed");
}

/// Waits until the enrollment of `device` has `status`.
async fn wait_status(env: &Env, device: &Device, status: EnrollmentStatus) {
    let store = store(env).await;
    for _ in 0..100 {
        if store.enrollment_by_device(&device.device_id()).await.unwrap().unwrap().status == status {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("enrollment never became {status:?}");
}

#[tokio::test]
async fn another_territory_can_neither_suspend_nor_take_over_a_token_id() {
    // The exploit of the review: territory X (here UTO) lists an AUS token id on its VRL
    // (the AUS user is suspended), drops it again and enrolls its own seal carrying it.
    let env = start("1s", RELAXED);
    let victim = env.chain.manifest.seal("valid_full").unwrap();
    let other = env.chain.manifest.seal("valid_padded").unwrap();
    let (victim_device, other_device) = (Device::generate(), Device::generate());
    env.client.enroll(&victim_device, &victim.vds, Push::None, "x").await.unwrap();
    env.client.enroll(&other_device, &other.vds, Push::None, "x").await.unwrap();
    let victim_tid = victim.tid.clone().unwrap();
    assert_eq!(victim_tid, "AUS-OK000001");

    // 1. UTO's VRL lists the AUS token id: it suspends nothing.
    resign_list(env.chain.dir.path(), "vrl/uto.jws", "vrl-uto-signer", |vrl| {
        vrl["revoked"] = serde_json::json!([{"tid": victim_tid, "revoked_at": unix_now(), "reason": "stolen"}]);
    })
    .unwrap();
    wait_list_updated(&env, "VRL symbolon-test/UTO").await;
    // A later AUS VRL change shows that revocations were applied after UTO's VRL came in.
    republish_aus_vrl(env.chain.dir.path(), 89, &[other.tid.as_deref().unwrap()], unix_now()).unwrap();
    wait_status(&env, &other_device, EnrollmentStatus::Suspended).await;
    let row = store(&env).await.enrollment_by_device(&victim_device.device_id()).await.unwrap().unwrap();
    assert_eq!(row.status, EnrollmentStatus::Active, "UTO's VRL suspended an AUS user");
    assert_eq!(row.territory, "AUS");

    // 2. UTO's own seal carrying the AUS token id is refused, whatever the AUS device's state.
    let foreign = env.chain.manifest.seal("foreign_tid").unwrap();
    assert_eq!(foreign.tid.as_deref(), Some(victim_tid.as_str()));
    let err = env.client.enroll(&Device::generate(), &foreign.vds, Push::None, "x").await.unwrap_err();
    assert_eq!(err.problem_code(), (422, "untrusted_credential".into()));
    // Only the AUS device holds the token id (relying parties would have got sub=AUS-OK000001).
    assert_eq!(store(&env).await.enrollments_of(&victim_tid).await.unwrap().len(), 1);
}

#[tokio::test]
async fn a_suspended_enrollment_holds_its_token_id() {
    // Suspended by its VRL, then dropped from the next one: the seal is valid again, yet
    // a new device cannot enroll it while the suspended one exists (only an operator's
    // revoke or delete frees it).
    let env = start("1s", RELAXED);
    let seal = env.chain.manifest.seal("valid_full").unwrap();
    let device = Device::generate();
    env.client.enroll(&device, &seal.vds, Push::None, "x").await.unwrap();
    republish_aus_vrl(env.chain.dir.path(), 89, &[seal.tid.as_deref().unwrap()], unix_now()).unwrap();
    wait_status(&env, &device, EnrollmentStatus::Suspended).await;
    republish_aus_vrl(env.chain.dir.path(), 90, &[], unix_now()).unwrap();
    for _ in 0..100 {
        let err = env.client.enroll(&Device::generate(), &seal.vds, Push::None, "y").await.unwrap_err();
        if err.problem_code() == (422, "revoked_credential".into()) {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        }
        assert_eq!(err.problem_code(), (409, "already_enrolled".into()));
        assert_eq!(store(&env).await.enrollments_of(seal.tid.as_deref().unwrap()).await.unwrap().len(), 1);
        return;
    }
    panic!("the token id stayed on the VRL");
}
