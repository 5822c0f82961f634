//! `GET /metrics` (docs/protocol.md §11) after a real sign-in: the Prometheus text parses
//! and the counters say what happened, with no identifier in any label.

use std::collections::HashMap;

use softhsm_tests::ServerOptions;
use softhsm_tests::device::Decision;
use softhsm_tests::metrics::{parse, sum};
use softhsm_tests::signin::SignIn;

async fn scrape(env: &SignIn) -> (String, HashMap<String, f64>) {
    let r = reqwest::get(format!("{}/metrics", env.server.admin_url)).await.unwrap();
    assert_eq!(r.status(), 200);
    let content_type = r.headers()["content-type"].to_str().unwrap().to_string();
    assert!(content_type.starts_with("text/plain; version=0.0.4"), "{content_type}");
    let text = r.text().await.unwrap();
    let samples = parse(&text).unwrap();
    (text, samples)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_after_a_sign_in() {
    let env = SignIn::start("", ServerOptions::default()).await.unwrap();
    let (_, started, _) = env.initiate(&env.token_id, "rp1", &["name"]).await.unwrap();
    let sid = started["session_id"].as_str().unwrap().to_string();
    let pending = env.device_client.pending(&env.device).await.unwrap();
    let otp = pending.sessions[0].otp.clone();
    let r = env.device_client.verify(&env.device, &sid, &otp, Decision::Approve, Some(vec!["name".into()])).await;
    assert_eq!(r.unwrap()["status"], "approved");
    // A request that matches no route.
    let r = reqwest::get(format!("{}/no/such/{}", env.server.public_url, env.token_id)).await.unwrap();
    assert_eq!(r.status(), 404);

    let (text, m) = scrape(&env).await;
    assert_eq!(m["symbolon_build_info{version=\"0.1.0\"}"], 1.0);
    assert_eq!(m["symbolon_auth_sessions_created_total"], 1.0);
    assert_eq!(m["symbolon_auth_sessions_ended_total{outcome=\"approved\"}"], 1.0);
    assert_eq!(m["symbolon_auth_sessions_ended_total{outcome=\"rejected\"}"], 0.0);
    assert_eq!(m["symbolon_auth_sessions_ended_total{outcome=\"expired\"}"], 0.0);
    assert_eq!(m["symbolon_auth_sessions_ended_total{outcome=\"locked\"}"], 0.0);
    assert_eq!(m["symbolon_auth_sessions_pending"], 0.0, "the session ended");
    assert_eq!(m["symbolon_websockets_open"], 0.0);
    // The process: memory, CPU, descriptors and start time from /proc.
    assert!(m["process_resident_memory_bytes"] > 1e6, "{text}");
    assert!(m["process_cpu_seconds_total"] > 0.0, "{text}");
    assert!(m["process_open_fds"] >= 3.0, "{text}");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
    let started = m["process_start_time_seconds"];
    assert!(started <= now + 1.0 && started > now - 600.0, "started {started}, now {now}");
    // When each kind of trust list must be refreshed by, and list ids without spaces.
    for kind in ["governance", "scheme", "tsl", "vrl", "crl"] {
        let at = m[&format!("symbolon_trust_next_update_timestamp_seconds{{kind=\"{kind}\"}}")];
        assert!(at > now, "{kind} next_update {at}: {text}");
    }
    let lists: Vec<&str> = text.lines().filter(|l| l.starts_with("symbolon_trust_list_fresh{")).collect();
    assert!(!lists.is_empty(), "{text}");
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let labels = line.split_once('{').and_then(|(_, rest)| rest.rsplit_once('}')).map(|(l, _)| l).unwrap_or("");
        assert!(!labels.contains(' '), "a label value with a space: {line}");
    }
    assert_eq!(m["symbolon_enrollments_total{result=\"ok\"}"], 1.0);
    assert_eq!(m["symbolon_lockouts_total"], 0.0);
    assert_eq!(m["symbolon_push_attempts_total"], 0.0, "the device enrolled without push");

    // HTTP by route template and status; raw paths never become labels.
    let verify = "symbolon_http_request_duration_seconds_count{listener=\"public\",method=\"POST\",route=\"/v1/auth/verify\",status=\"200\"}";
    assert_eq!(m[verify], 1.0, "{text}");
    let initiate = "symbolon_http_request_duration_seconds_count{listener=\"public\",method=\"POST\",route=\"/v1/auth/initiate\",status=\"201\"}";
    assert_eq!(m[initiate], 1.0);
    assert_eq!(
        sum(&m, "symbolon_http_request_duration_seconds_count", &["route=\"unmatched\"", "status=\"404\""]),
        1.0
    );
    assert_eq!(
        sum(&m, "symbolon_http_request_duration_seconds_bucket", &["/v1/auth/verify", "le=\"+Inf\""]),
        m[verify],
        "histogram +Inf bucket equals the count"
    );

    // HSM: the OTP HMAC and the identity token signature. A session's code is computed at
    // most once a second per node (docs/security.md ### 5), so initiate, pending and verify
    // done within a second share one HMAC; three seconds apart they would make three.
    let hmac =
        sum(&m, "symbolon_hsm_operation_duration_seconds_count", &["mechanism=\"CKM_SHA256_HMAC\"", "purpose=\"otp\""]);
    assert!((1.0..=3.0).contains(&hmac), "OTP HMACs: {hmac}\n{text}");
    let sign = sum(&m, "symbolon_hsm_operation_duration_seconds_count", &["operation=\"sign\"", "purpose=\"jwt\""]);
    assert!(sign >= 1.0, "identity token signatures: {sign}");
    assert!(sum(&m, "symbolon_hsm_operation_duration_seconds_count", &["mechanism=\"CKM_AES_GCM\""]) >= 1.0);
    assert_eq!(sum(&m, "symbolon_hsm_errors_total", &[]), 0.0);
    assert!(m.contains_key("symbolon_hsm_queue_depth"), "queue depth (a background job may be queued at any time)");
    assert!(m["symbolon_hsm_workers"] >= 1.0);
    assert_eq!(m["symbolon_trust_configured"], 1.0);
    assert_eq!(m["symbolon_trust_fresh"], 1.0);
    assert!(m.contains_key("symbolon_trust_age_seconds"));

    // No identifier in any label.
    for secret in [env.token_id.as_str(), sid.as_str(), &env.device.device_id()] {
        assert!(!text.contains(secret), "{secret} in the metrics");
    }

    // The public listener does not serve metrics.
    let r = reqwest::get(format!("{}/metrics", env.server.public_url)).await.unwrap();
    assert_eq!(r.status(), 404);
    // Scrapes themselves are counted on the admin listener.
    let (_, again) = scrape(&env).await;
    assert!(
        again["symbolon_http_request_duration_seconds_count{listener=\"admin\",method=\"GET\",route=\"/metrics\",status=\"200\"}"]
            >= 1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_pending_then_expired_and_rejected_each_counted_once() {
    let env = SignIn::start("[auth]\notp_ttl = \"2s\"\n", ServerOptions::default()).await.unwrap();
    // One session left to expire, one rejected.
    env.initiate(&env.token_id, "rp1", &["name"]).await.unwrap();
    let (_, m) = scrape(&env).await;
    assert_eq!(m["symbolon_auth_sessions_created_total"], 1.0);
    assert_eq!(m["symbolon_auth_sessions_pending"], 1.0);
    let (_, started, _) = env.initiate(&env.token_id, "rp1", &["name"]).await.unwrap();
    let sid = started["session_id"].as_str().unwrap().to_string();
    let pending = env.device_client.pending(&env.device).await.unwrap();
    let otp = pending.sessions.iter().find(|s| s.session_id == sid).unwrap().otp.clone();
    let r = env.device_client.verify(&env.device, &sid, &otp, Decision::Reject, None).await.unwrap();
    assert_eq!(r["status"], "rejected");
    let (_, m) = scrape(&env).await;
    assert_eq!(m["symbolon_auth_sessions_pending"], 1.0, "the rejected one is no longer pending");
    // The expiry is counted within the sweep period (5 s) after the 2 s life.
    let mut expired = 0.0;
    for _ in 0..100 {
        let (_, m) = scrape(&env).await;
        expired = m["symbolon_auth_sessions_ended_total{outcome=\"expired\"}"];
        if expired > 0.0 {
            assert_eq!(m["symbolon_auth_sessions_pending"], 0.0);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert_eq!(expired, 1.0);
    let (_, m) = scrape(&env).await;
    assert_eq!(m["symbolon_auth_sessions_created_total"], 2.0);
    let ended = sum(&m, "symbolon_auth_sessions_ended_total", &[]);
    assert_eq!(ended, 2.0, "created = ended once everything ended: no double counting");
    assert_eq!(m["symbolon_auth_sessions_ended_total{outcome=\"rejected\"}"], 1.0);
}
