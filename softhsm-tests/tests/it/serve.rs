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
    // The public listener serves /health with its status only, not the probes.
    let r = get(&format!("{}/health", server.public_url));
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().unwrap();
    // No trust lists configured: enrollment cannot work, so the node is degraded (200).
    assert_eq!(body, serde_json::json!({"status": "degraded"}), "public /health shows only the status");
    // The details (checks, version, what is missing) are on the admin listener.
    let body: serde_json::Value = get(&format!("{}/health", server.admin_url)).json().unwrap();
    assert_eq!(body["status"], "degraded");
    assert_eq!(body["checks"]["trust"]["configured"], false);
    assert_eq!(body["missing"], serde_json::json!([]), "{body}");
    assert!(body["version"].is_string(), "{body}");
    let r = get(&format!("{}/readyz", server.public_url));
    assert_eq!(r.status(), 404);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    let problem: serde_json::Value = r.json().unwrap();
    assert_eq!(problem["code"], "not_found");
    // A known route with another method: 405, problem+json too, on both listeners, with
    // the `Allow` header RFC 9110 §15.5.6 requires.
    for (url, allow) in [
        (format!("{}/livez", server.admin_url), "GET,HEAD"),
        (format!("{}/health", server.public_url), "GET,HEAD"),
        (format!("{}/token", server.public_url), "POST"),
        (format!("{}/authorize", server.public_url), "GET,HEAD,POST"),
    ] {
        let r = reqwest::blocking::Client::new().delete(&url).send().unwrap();
        assert_eq!(r.status(), 405, "{url}");
        assert_eq!(r.headers().get("allow").and_then(|v| v.to_str().ok()), Some(allow), "{url}");
        assert_eq!(r.headers()["content-type"], "application/problem+json");
        assert!(r.headers().contains_key("x-request-id"));
        let problem: serde_json::Value = r.json().unwrap();
        assert_eq!(problem["code"], "method_not_allowed", "{problem}");
        assert_eq!(problem["status"], 405, "{problem}");
    }
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

/// Polls `url` until it answers `want` (up to 20 s; refused connections are retried);
/// returns the JSON body.
fn wait_status(url: &str, want: u16) -> serde_json::Value {
    let start = std::time::Instant::now();
    loop {
        if let Ok(r) = reqwest::blocking::Client::new().get(url).send()
            && r.status() == want
        {
            return r.json().unwrap();
        }
        assert!(start.elapsed() < std::time::Duration::from_secs(20), "{url} never answered {want}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

#[test]
fn serve_without_keys_is_not_ready_and_says_what_is_missing_until_keys_init() {
    let token = TestToken::new().unwrap();
    // A pairwise relying party: the pairwise key is needed too; SAML is off, so no SAML key.
    let extra = "[keys]\nsync_interval = \"1s\"\n\n[[services]]\nid = \"rp\"\nname = \"RP\"\n\
                 allowed_origins = [\"https://rp.example\"]\nsubject_type = \"pairwise\"\n";
    let server = TestServer::start(
        &token,
        ServerOptions { extra_toml: extra.into(), no_keys: true, live_only: true, ..Default::default() },
    )
    .unwrap();
    let r = get(&format!("{}/readyz", server.admin_url));
    assert_eq!(r.status(), 503);
    let body: serde_json::Value = r.json().unwrap();
    assert_eq!(body["status"], "not_ready");
    let checks: Vec<&str> = body["missing"].as_array().unwrap().iter().map(|m| m["check"].as_str().unwrap()).collect();
    assert_eq!(checks, ["keys.otp", "keys.jwt", "keys.data", "keys.audit", "keys.pairwise"], "{body}");
    assert!(body["missing"][0]["fix"].as_str().unwrap().contains("symbolon keys init"), "{body}");
    // /health says the same on the admin listener (503), only the status on the public one.
    let r = get(&format!("{}/health", server.admin_url));
    assert_eq!(r.status(), 503);
    let health: serde_json::Value = r.json().unwrap();
    assert_eq!(health["status"], "unavailable");
    assert_eq!(health["missing"], body["missing"]);
    let r = get(&format!("{}/health", server.public_url));
    assert_eq!(r.status(), 503);
    assert_eq!(r.json::<serde_json::Value>().unwrap(), serde_json::json!({"status": "unavailable"}));
    // The log says what is missing and the fix.
    let log = server.log();
    assert!(log.contains("no active otp key") && log.contains("symbolon keys init"), "{log}");
    // The operator runs the fix; the node picks the keys up within keys.sync_interval.
    let out = symbolon_cli(&token, &server.config_path, &["keys", "init"]).unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let body = wait_status(&format!("{}/readyz", server.admin_url), 200);
    assert_eq!(body["missing"], serde_json::json!([]), "{body}");
}

#[test]
fn keys_init_on_start_makes_the_missing_keys() {
    let token = TestToken::new().unwrap();
    let server = TestServer::start(
        &token,
        ServerOptions { extra_toml: "[keys]\ninit_on_start = true\n".into(), no_keys: true, ..Default::default() },
    )
    .unwrap();
    // Started ready (TestServer waited for /readyz 200) with every purpose's key.
    assert!(server.log().contains("keys.init_on_start: generated a key"), "{}", server.log());
    let out = symbolon_cli(&token, &server.config_path, &["keys", "list"]).unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    for p in ["otp", "jwt", "saml", "data", "audit", "pairwise"] {
        assert!(text.contains(&format!("symbolon-{p}-")), "{text}");
    }
}

#[test]
fn configured_trust_lists_that_never_loaded_keep_the_node_not_ready() {
    let token = TestToken::new().unwrap();
    let extra = "[trust]\ngovernance_url = \"file:///nonexistent/governance.jws\"\n\
                 governance_signer_sha256 = [\"9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08\"]\n";
    let server =
        TestServer::start(&token, ServerOptions { extra_toml: extra.into(), live_only: true, ..Default::default() })
            .unwrap();
    let r = get(&format!("{}/readyz", server.admin_url));
    assert_eq!(r.status(), 503);
    let body: serde_json::Value = r.json().unwrap();
    assert_eq!(body["missing"][0]["check"], "trust", "{body}");
    assert!(body["missing"][0]["fix"].as_str().unwrap().contains("symbolon trust refresh"), "{body}");
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
    for line in text.lines() {
        assert!(line.chars().count() <= 100, "wider than 100 columns: {line:?}");
    }
    // Human dates (UTC, to the minute), not Unix seconds or RFC 3339.
    let jwt = text.lines().find(|l| l.starts_with("jwt")).unwrap();
    let date = jwt.split_whitespace().nth(3).unwrap();
    assert!(date.len() == 10 && date.as_bytes()[4] == b'-', "{jwt}");
    // --json: the full records.
    let out = symbolon_cli(&token, &cfg, &["keys", "list", "--json"]).unwrap();
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let keys = doc["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 7, "{doc}");
    let jwt = keys.iter().find(|k| k["purpose"] == "jwt" && k["state"] == "active").unwrap();
    assert_eq!(jwt["mechanism"], "CKM_ECDSA", "{jwt}");
    assert_eq!(jwt["kid"].as_str().unwrap().len(), 43, "{jwt}");
    assert!(jwt["created_at"].as_i64().unwrap() > 1_700_000_000 && jwt["activated_at"].is_i64(), "{jwt}");
    assert!(keys.iter().find(|k| k["purpose"] == "data").unwrap()["sealed"].is_u64());
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
        // Said once: the path and the reason are not repeated down the error chain.
        assert_eq!(err.matches(expect).count(), 1, "{err}");
        assert!(err.matches("os error").count() <= 1, "{err}");
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
fn config_check_reports_every_mistake_once_in_one_format() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        r#"
[server]
pubic_listen = "127.0.0.1:9000"
max_in_flight = 0
[hsm]
uri = "pkcs11:token=x"
deadline = "soon"
workers = "many"
[database]
max_connections = 0
[telemetry]
format = "jsn"
[nonsense]
x = 1
"#,
    )
    .unwrap();
    let out = Command::new(symbolon_bin().unwrap())
        .args(["config", "check", "--values-only"])
        .arg(&bad)
        .env_remove("SYMBOLON_BIN")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().skip(1).collect();
    let starts = [
        "server.pubic_listen: unknown field; did you mean `public_listen`? (in ",
        "server.max_in_flight: must be at least 1",
        "hsm.deadline: ",
        "hsm.workers: expected ",
        "hsm.uri: ",
        "database.max_connections: ",
        "telemetry.format: unknown value \"jsn\"",
        "nonsense: unknown section (in ",
    ];
    for want in starts {
        assert_eq!(lines.iter().filter(|l| l.starts_with(want)).count(), 1, "want one {want:?} in:\n{text}");
    }
    assert_eq!(lines.len(), starts.len(), "one line per mistake:\n{text}");
    for line in &lines {
        // One path, then the problem: no repeated section, no nested backticks.
        let (path, _) = line.split_once(": ").unwrap();
        assert!(!line[path.len()..].contains(&format!("{path}.")), "{line}");
        assert!(!line.contains("``") && !line.contains("`one of"), "{line}");
        if !line.contains("did you mean") {
            assert!(!line.contains('`'), "plain quotes: {line}");
        }
    }
    assert!(text.contains("did you mean `json`?"), "{text}");
    // The shipped example configuration is valid.
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../packaging/symbolon.example.toml");
    let out = Command::new(symbolon_bin().unwrap())
        .args(["config", "check", "--values-only", example])
        .env_remove("SYMBOLON_BIN")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
}

#[test]
fn config_check_reads_the_environment_and_checks_what_serve_would_refuse() {
    let token = TestToken::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let [public, admin] = free_ports().unwrap();
    let cfg = write_config(dir.path(), &token, public, admin, "").unwrap();
    // No FILE: the --config file, with the environment of `serve`.
    let out = symbolon_cli(&token, &cfg, &["config", "check"]).unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    let check = |toml: &str, env: &[(&str, &str)]| {
        let path = dir.path().join("case.toml");
        std::fs::write(&path, toml).unwrap();
        let mut cmd = Command::new(symbolon_bin().unwrap());
        cmd.arg("--config").arg(&path).args(["config", "check"]).env(token.conf_var, &token.conf);
        cmd.env_remove("SYMBOLON_HSM_PIN").env_remove("SYMBOLON_BIN");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let good = std::fs::read_to_string(&cfg).unwrap();
    let (code, text) = check(&good, &[("SYMBOLON_HSM__WORKERS", "abc")]);
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains("hsm.workers: expected ") && text.contains("(from environment variable SYMBOLON_HSM__WORKERS)"),
        "{text}"
    );
    // Everything serve would refuse at start, all in one run.
    let uri = token.uri();
    let bad = good
        .replace(&token.pin_file.display().to_string(), "/nonexistent/hsm-pin")
        .replace(&format!("token={}", token.label), "token=nosuch")
        .replace(&format!("state_dir = \"{}", dir.path().join("state").display()), "state_dir = \"/etc/passwd/state")
        + "[trust]\ngovernance_url = \"file:///nonexistent/governance.jws\"\n\
           governance_signer_sha256 = [\"9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08\"]\n\
           [management]\nbreak_glass_token_file = \"/nonexistent/break-glass\"\n";
    assert_ne!(bad, good);
    let (code, text) = check(&bad, &[]);
    assert_eq!(code, Some(1), "{text}");
    for want in [
        "hsm.uri: pin-source: cannot read the HSM PIN from pin-source file /nonexistent/hsm-pin",
        "hsm.uri: no token \"nosuch\" found",
        "server.state_dir: /etc/passwd is not a directory",
        "trust.governance_url: cannot read /nonexistent/governance.jws",
        "management.break_glass_token_file: cannot read /nonexistent/break-glass",
    ] {
        assert!(text.lines().any(|l| l.starts_with(want)), "want {want:?} in:\n{text}");
    }
    assert_eq!(text.matches("/nonexistent/hsm-pin").count(), 1, "the PIN path once: {text}");
    // A module that does not load.
    let (code, text) =
        check(&good.replace(&uri, &uri.replace(&token.module.display().to_string(), "/nonexistent/libp11.so")), &[]);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("hsm.uri: module-path: cannot load the PKCS#11 module /nonexistent/libp11.so"), "{text}");
    // Nothing was created.
    assert!(!std::path::Path::new("/nonexistent").exists());
}

#[test]
fn hsm_module_env_in_the_config_finds_the_token_without_an_exported_variable() {
    let token = TestToken::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let [public, admin] = free_ports().unwrap();
    let bare = write_config(dir.path(), &token, public, admin, "").unwrap();
    let run = |cfg: &std::path::Path, args: &[&str]| {
        Command::new(symbolon_bin().unwrap())
            .arg("--config")
            .arg(cfg)
            .args(args)
            .env_remove(token.conf_var)
            .env_remove("SYMBOLON_HSM_PIN")
            .env_remove("SYMBOLON_BIN")
            .output()
            .unwrap()
    };
    // Without the variable the module looks elsewhere; the error points at module_env.
    let out = run(&bare, &["keys", "list"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("module_env"), "{err}");
    // With it in [hsm], the CLI and the server find the token.
    let text = std::fs::read_to_string(&bare).unwrap().replace(
        "workers = 2\n",
        &format!("workers = 2\nmodule_env = {{ {} = \"{}\" }}\n", token.conf_var, token.conf.display()),
    );
    let cfg = dir.path().join("with-env.toml");
    std::fs::write(&cfg, text).unwrap();
    let out = run(&cfg, &["keys", "init"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = run(&cfg, &["keys", "list"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains(&token.label));
    let mut child = Command::new(symbolon_bin().unwrap())
        .arg("--config")
        .arg(&cfg)
        .arg("serve")
        .env_remove(token.conf_var)
        .env_remove("SYMBOLON_HSM_PIN")
        .env_remove("SYMBOLON_BIN")
        .env_remove("NOTIFY_SOCKET")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let body = wait_status(&format!("http://127.0.0.1:{admin}/readyz"), 200);
    assert_eq!(body["checks"]["hsm"]["ok"], true, "{body}");
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGTERM);
    assert!(child.wait().unwrap().success());
}
