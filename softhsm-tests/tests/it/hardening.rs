//! Findings of the adversarial review (issue 15) on the public endpoints, each with the
//! bound that fixes it, checked against the real server through its metrics (gauges of
//! open sockets and channels, the HSM pool's operation counters), never wall time.

use std::sync::Arc;
use std::time::Duration;

use futures_util::SinkExt;
use serde_json::{Value, json};
use softhsm_tests::ServerOptions;
use softhsm_tests::backends::RedisPrefix;
use softhsm_tests::device::Decision;
use softhsm_tests::metrics::value;
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
