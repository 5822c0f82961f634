//! SIGHUP re-reads the configuration: a valid file replaces the relying parties at
//! once (initiate, Origin checks, CORS); an invalid one changes nothing; other sections
//! wait for a restart and the log says so.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use softhsm_tests::{ServerOptions, TestServer, TestToken, symbolon_cli};

const BEFORE: &str = r#"
[[services]]
id = "rp-a"
name = "Bank A"
allowed_scopes = ["name"]
allowed_origins = ["https://a.example"]
"#;

const AFTER: &str = r#"
[[services]]
id = "rp-a"
name = "Bank A"
allowed_scopes = ["name"]
allowed_origins = ["https://a2.example"]

[[services]]
id = "rp-b"
name = "Shop B"
allowed_scopes = ["age"]
allowed_origins = ["https://b.example"]
"#;

/// `POST /v1/auth/initiate` for a new token id each time (3 pending per token id at most).
fn initiate(server: &TestServer, service: &str, origin: &str) -> (u16, serde_json::Value) {
    static N: AtomicUsize = AtomicUsize::new(0);
    let token_id = format!("RELOAD-TEST-{}", N.fetch_add(1, Ordering::Relaxed));
    let r = reqwest::blocking::Client::new()
        .post(format!("{}/v1/auth/initiate", server.public_url))
        .header("origin", origin)
        .json(&serde_json::json!({"token_id": token_id, "service_id": service, "scopes": []}))
        .send()
        .unwrap();
    (r.status().as_u16(), r.json().unwrap_or_default())
}

/// The `Access-Control-Allow-Origin` a CORS preflight from `origin` gets.
fn preflight(server: &TestServer, origin: &str) -> Option<String> {
    let r = reqwest::blocking::Client::new()
        .request(reqwest::Method::OPTIONS, format!("{}/v1/auth/initiate", server.public_url))
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "content-type")
        .send()
        .unwrap();
    r.headers().get("access-control-allow-origin").and_then(|v| v.to_str().ok()).map(str::to_string)
}

/// Rewrites the server's configuration with `services` in place of the `BEFORE` block.
fn rewrite(server: &TestServer, from: &str, to: &str) {
    let text = std::fs::read_to_string(&server.config_path).unwrap();
    assert!(text.contains(from), "configuration does not hold the expected block");
    std::fs::write(&server.config_path, text.replace(from, to)).unwrap();
}

fn sighup_and_wait(server: &TestServer, log_line: &str, occurrences: usize) {
    let pid = Pid::from_raw(i32::try_from(server.pid().unwrap()).unwrap());
    kill(pid, Signal::SIGHUP).unwrap();
    let start = Instant::now();
    while server.log().matches(log_line).count() < occurrences {
        assert!(start.elapsed() < Duration::from_secs(10), "no {log_line:?} in the log: {}", server.log());
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn sighup_replaces_relying_parties_and_keeps_them_on_a_bad_file() {
    let token = TestToken::new().unwrap();
    let server = TestServer::start(&token, ServerOptions { extra_toml: BEFORE.into(), ..Default::default() }).unwrap();

    assert_eq!(initiate(&server, "rp-a", "https://a.example").0, 201);
    let (status, body) = initiate(&server, "rp-b", "https://b.example");
    assert_eq!((status, body["code"].as_str()), (400, Some("unknown_service")));
    assert_eq!(preflight(&server, "https://a.example").as_deref(), Some("https://a.example"));
    assert_eq!(preflight(&server, "https://b.example"), None);

    // A valid new file: rp-b appears, rp-a's origin moves; a changed [limits] waits.
    rewrite(&server, BEFORE, &format!("{AFTER}\n[limits]\nbody_max_bytes = 20000\n"));
    sighup_and_wait(&server, "relying parties replaced", 1);
    assert!(server.log().contains("take effect at the next restart"), "{}", server.log());
    assert!(server.log().contains("limits"), "{}", server.log());

    assert_eq!(initiate(&server, "rp-b", "https://b.example").0, 201);
    let (status, body) = initiate(&server, "rp-a", "https://a.example");
    assert_eq!((status, body["code"].as_str()), (403, Some("origin_not_allowed")));
    assert_eq!(initiate(&server, "rp-a", "https://a2.example").0, 201);
    assert_eq!(preflight(&server, "https://b.example").as_deref(), Some("https://b.example"));
    assert_eq!(preflight(&server, "https://a.example"), None);

    // The change is in the audit trail, without anything but service ids.
    let start = Instant::now();
    loop {
        let out = symbolon_cli(&token, &server.config_path, &["audit", "export", "--since", "0"]).unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        if let Some(line) = text.lines().find(|l| l.contains("config.relying_parties_changed")) {
            let event: serde_json::Value = serde_json::from_str(line).unwrap();
            let detail = &event["detail"];
            assert_eq!(detail["added"], serde_json::json!(["rp-b"]), "{event}");
            assert_eq!(detail["changed"], serde_json::json!(["rp-a"]), "{event}");
            assert_eq!(detail["removed"], serde_json::json!([]), "{event}");
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "no reload event in the audit export: {text}");
        std::thread::sleep(Duration::from_millis(200));
    }

    // An invalid file (a service without a name) changes nothing.
    rewrite(&server, "name = \"Shop B\"\n", "");
    sighup_and_wait(&server, "configuration not applied", 1);
    assert_eq!(initiate(&server, "rp-b", "https://b.example").0, 201);
}
