//! The real `symbolon` binary: serve, probes, CLI commands, start-up refusals.

use std::process::Command;

use cryptoki::context::Pkcs11;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, KeyType, ObjectClass};
use softhsm_tests::{ServerOptions, TestServer, TestToken, free_ports, symbolon_bin, symbolon_cli, write_config};

fn get(url: &str) -> reqwest::blocking::Response {
    reqwest::blocking::Client::new().get(url).send().unwrap()
}

#[test]
fn serve_answers_livez_readyz_health_and_stops_on_sigterm() {
    let token = TestToken::new().unwrap();
    let mut server = TestServer::start(&token, ServerOptions::default()).unwrap();
    let r = get(&format!("{}/livez", server.admin_url));
    assert_eq!(r.status(), 200);
    assert!(r.headers().contains_key("x-request-id"));
    let r = get(&format!("{}/readyz", server.admin_url));
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().unwrap();
    assert_eq!(body["checks"]["hsm"]["ok"], true, "{body}");
    assert_eq!(body["checks"]["database"]["ok"], true, "{body}");
    // The public listener serves /health but not the probes.
    let r = get(&format!("{}/health", server.public_url));
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().unwrap();
    // No trust lists configured: enrollment cannot work, so the node is degraded (200).
    assert_eq!(body["status"], "degraded");
    assert_eq!(body["checks"]["trust"]["configured"], false);
    let r = get(&format!("{}/readyz", server.public_url));
    assert_eq!(r.status(), 404);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    let problem: serde_json::Value = r.json().unwrap();
    assert_eq!(problem["code"], "not_found");
    // A valid inbound request id is echoed, an invalid one replaced.
    let client = reqwest::blocking::Client::new();
    let r = client.get(format!("{}/livez", server.admin_url)).header("x-request-id", "abc.DEF-1_2").send().unwrap();
    assert_eq!(r.headers()["x-request-id"], "abc.DEF-1_2");
    let r = client.get(format!("{}/livez", server.admin_url)).header("x-request-id", "bad id!").send().unwrap();
    assert_ne!(r.headers()["x-request-id"], "bad id!");
    let status = server.stop().unwrap();
    assert!(status.success(), "graceful exit: {status}");
    assert!(server.log().contains("shutting down"));
}

#[test]
fn keys_init_list_and_generate() {
    let token = TestToken::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let [public, admin] = free_ports().unwrap();
    let cfg = write_config(dir.path(), &token, public, admin, "").unwrap();
    let out = symbolon_cli(&token, &cfg, &["keys", "init"]).unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    for p in ["otp", "jwt", "saml", "data", "audit", "pairwise"] {
        assert!(text.contains(&format!("symbolon-{p}-")), "{text}");
    }
    let out = symbolon_cli(&token, &cfg, &["keys", "generate", "--purpose", "jwt"]).unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("next"));
    let out = symbolon_cli(&token, &cfg, &["keys", "list"]).unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.lines().filter(|l| l.starts_with("jwt")).count(), 2, "{text}");
    assert_eq!(text.matches(" active ").count(), 6, "{text}");
    assert!(text.contains(" next "), "{text}");
    let out = symbolon_cli(&token, &cfg, &["keys", "generate", "--purpose", "nonsense"]).unwrap();
    assert!(!out.status.success());
    // Idempotent migrate.
    for _ in 0..2 {
        let out = symbolon_cli(&token, &cfg, &["migrate"]).unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
}

#[test]
fn serve_refuses_an_extractable_key() {
    let token = TestToken::new().unwrap();
    token.use_in_process().unwrap();
    let ctx = Pkcs11::new(&token.module).unwrap();
    let session = token.user_session(&ctx).unwrap();
    session
        .generate_key(
            &Mechanism::GenericSecretKeyGen,
            &[
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::KeyType(KeyType::GENERIC_SECRET),
                Attribute::ValueLen(32.into()),
                Attribute::Token(true),
                Attribute::Sensitive(true),
                Attribute::Extractable(true),
                Attribute::Label(b"symbolon-otp-20260101T000000Z".to_vec()),
            ],
        )
        .unwrap();
    drop(session);
    let err = TestServer::start(&token, ServerOptions { no_keys: true, ..Default::default() }).err().unwrap();
    let text = format!("{err:#}");
    assert!(text.contains("symbolon-otp-20260101T000000Z") && text.contains("CKA_EXTRACTABLE"), "{text}");
}

#[test]
fn startup_errors_name_what_is_wrong() {
    let token = TestToken::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let [public, admin] = free_ports().unwrap();
    let cfg = write_config(dir.path(), &token, public, admin, "").unwrap();
    let text = std::fs::read_to_string(&cfg).unwrap();
    let cases = [
        (format!("token={}", token.label), "token=nosuch".to_string(), "no token \"nosuch\""),
        (token.pin_file.display().to_string(), "/nonexistent/pin".to_string(), "/nonexistent/pin"),
    ];
    for (from, to, expect) in cases {
        std::fs::write(&cfg, text.replace(&from, &to)).unwrap();
        let out = symbolon_cli(&token, &cfg, &["serve"]).unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(expect), "want {expect:?} in {err}");
    }
    let wrong = dir.path().join("wrong-pin");
    std::fs::write(&wrong, "1111").unwrap();
    std::fs::write(&cfg, text.replace(&token.pin_file.display().to_string(), &wrong.display().to_string())).unwrap();
    let out = symbolon_cli(&token, &cfg, &["serve"]).unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("wrong PIN"), "{err}");
    assert!(!err.contains(&token.pin), "the PIN never appears");
}

#[test]
fn config_check_reports_each_bad_field() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        r#"
[server]
public_listen = "not an address"
[hsm]
uri = "pkcs11:token=x"
deadline = "soon"
[database]
max_connections = 0
[nonsense]
x = 1
"#,
    )
    .unwrap();
    let out = Command::new(symbolon_bin().unwrap()).args(["config", "check"]).arg(&bad).output().unwrap();
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for path in ["server.public_listen", "hsm.deadline", "nonsense"] {
        assert!(text.contains(path), "missing {path} in:\n{text}");
    }
    let good = dir.path().join("good.toml");
    std::fs::write(&good, "[hsm]\nuri = \"pkcs11:token=x?module-path=/usr/lib/softhsm/libsofthsm2.so\"\n[server]\nshutdown_grace = \"90s\"\n")
        .unwrap();
    let out = Command::new(symbolon_bin().unwrap()).args(["config", "check"]).arg(&good).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    // The shipped example configuration is valid.
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../packaging/symbolon.example.toml");
    let out = Command::new(symbolon_bin().unwrap()).args(["config", "check", example]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
}
