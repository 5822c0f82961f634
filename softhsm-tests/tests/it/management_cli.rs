//! `symbolon users` and `symbolon flows` (docs/operations.md "Users and flows from the
//! command line") against a running server, SoftHSM2 and its real stores: SQLite with
//! in-memory sessions, and PostgreSQL with Redis. The commands and the management API
//! share their rules and audit events: a reason goes into the event, and repeating a
//! change changes nothing and writes no second event.

use reqwest::Method;
use serde_json::{Value, json};
use softhsm_tests::backends::ClusterStores;
use softhsm_tests::signin::SignIn;
use softhsm_tests::{ServerOptions, symbolon_cli};

const SECRET: &str = "0c1e5f04a7d14e6bb5a5f0e62f8a9d3c3b7a3f7e1f0d4c2b9a8e7d6c5b4a3f2e";

struct Env {
    signin: SignIn,
    _dir: tempfile::TempDir,
}

/// A server with the break-glass token, an enrolled device, and `stores` TOML.
async fn start(stores: &str) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("break-glass");
    std::fs::write(&file, format!("{SECRET}\n")).unwrap();
    let extra = format!("[management]\nbreak_glass_token_file = \"{}\"\n{stores}", file.display());
    let signin = SignIn::start(&extra, ServerOptions::default()).await.unwrap();
    Env { signin, _dir: dir }
}

impl Env {
    /// `symbolon ARGS`: (success, stdout, stderr).
    fn cli(&self, args: &[&str]) -> (bool, String, String) {
        let out = symbolon_cli(&self.signin.token, &self.signin.server.config_path, args).unwrap();
        let (stdout, stderr) =
            (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned());
        (out.status.success(), stdout, stderr)
    }

    fn ok(&self, args: &[&str]) -> String {
        let (ok, out, err) = self.cli(args);
        assert!(ok, "symbolon {args:?} failed:\n{out}{err}");
        out
    }

    fn json(&self, args: &[&str]) -> Value {
        let out = self.ok(args);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("symbolon {args:?}: not JSON ({e}):\n{out}"))
    }

    /// Every audit event, read with `symbolon audit export` (one JSON object a line).
    fn events(&self) -> Vec<Value> {
        self.ok(&["audit", "export"])
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("export line not JSON ({e}): {l}")))
            .collect()
    }

    /// The management events of `action` by `actor`.
    fn actions(&self, actor: &str, action: &str) -> Vec<Value> {
        self.events()
            .into_iter()
            .filter(|e| e["kind"] == "management.action" && e["actor"] == actor && e["detail"]["action"] == action)
            .collect()
    }

    async fn api(&self, method: Method, path: &str, body: Option<&str>) -> (u16, Value) {
        let url = format!("{}/api/management/v1{path}", self.signin.server.admin_url);
        let mut request = reqwest::Client::new().request(method, url).bearer_auth(SECRET);
        if let Some(body) = body {
            request = request.header("content-type", "application/json").body(body.to_string());
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        (status, if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap() })
    }
}

fn unix_user() -> String {
    let out = std::process::Command::new("id").arg("-un").output().unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn assert_fits(text: &str) {
    for line in text.lines() {
        assert!(line.chars().count() <= 100, "line wider than 100 columns:\n{line}");
    }
}

async fn contract(env: &Env, flows_in_redis: bool) {
    let s = &env.signin;
    let tid = s.token_id.clone();
    let device_id = s.device.device_id();
    let cli_actor = format!("cli:{}", unix_user());
    let today = time::OffsetDateTime::now_utc().date().to_string();

    // Listings: JSON as the API answers, a table of at most 100 columns otherwise.
    let users = env.json(&["users", "list", "--json"]);
    let listed = users["users"].as_array().unwrap();
    assert_eq!(listed.len(), 1, "{users}");
    assert_eq!((listed[0]["token_id"].as_str(), listed[0]["enrolled"].as_bool()), (Some(tid.as_str()), Some(true)));
    assert_eq!(listed[0]["devices"][0]["device_id"], device_id.as_str());
    assert!(users["next_cursor"].is_null(), "{users}");
    let table = env.ok(&["users", "list"]);
    assert_fits(&table);
    assert!(table.contains(&tid) && table.contains("1 active") && table.contains(&today), "{table}");
    let user = env.json(&["users", "show", &tid, "--json"]);
    assert!(user["devices"][0]["claim_names"].as_array().unwrap().iter().any(|c| c == "given_name"), "{user}");
    assert!(!user.to_string().contains("sealed"), "{user}");
    let shown = env.ok(&["users", "show", &tid]);
    assert_fits(&shown);
    assert!(shown.contains(&device_id) && shown.contains("given_name") && shown.contains("test phone"), "{shown}");
    assert!(env.actions(&cli_actor, "users.list").len() >= 2, "reads are audited as by the API");
    let (ok, _, err) = env.cli(&["users", "show", "NOBODY"]);
    assert!(!ok && err.contains("no such user"), "{err}");

    // A flow for `flows list`, while the device is active.
    let (status, started, _) = s.initiate(&tid, "rp1", &["name"]).await.unwrap();
    assert_eq!(status, 201, "{started}");
    let session_id = started["session_id"].as_str().unwrap().to_string();
    if flows_in_redis {
        let flows = env.json(&["flows", "list", "--json"]);
        let flow = flows["flows"].as_array().unwrap().iter().find(|f| f["id"] == session_id.as_str()).cloned();
        let flow = flow.unwrap_or_else(|| panic!("flow {session_id} listed: {flows}"));
        assert_eq!((flow["status"].as_str(), flow["service_id"].as_str()), (Some("pending"), Some("rp1")));
        assert!(!flows.to_string().contains(&tid), "no token id in flows: {flows}");
        let none = env.json(&["flows", "list", "--status", "approved", "--json"]);
        assert_eq!(none["flows"], json!([]), "{none}");
        let recent = env.json(&["flows", "list", "--since", "1h", "--json"]);
        assert_eq!(recent["flows"].as_array().unwrap().len(), 1, "{recent}");
        let table = env.ok(&["flows", "list"]);
        assert_fits(&table);
        assert!(table.contains(&session_id) && table.contains("pending") && table.contains(&today), "{table}");
        assert_eq!(env.actions(&cli_actor, "flows.list").len(), 4);
    } else {
        let (ok, _, err) = env.cli(&["flows", "list"]);
        assert!(!ok && err.contains("memory://") && err.contains("/api/management/v1/flows"), "{err}");
    }
    let (ok, _, err) = env.cli(&["flows", "list", "--status", "bogus"]);
    assert!(!ok && err.contains("--status"), "{err}");

    // The API takes a reason; a repeated suspend changes nothing and is not audited again.
    let suspend = format!("/credentials/{device_id}/suspend");
    let reason = r#"{"reason":"api: phone reported lost"}"#;
    for _ in 0..2 {
        let (status, body) = env.api(Method::POST, &suspend, Some(reason)).await;
        assert_eq!((status, body["status"].as_str()), (200, Some("suspended")), "{body}");
    }
    let events = env.actions("break-glass", "credentials.suspend");
    assert_eq!(events.len(), 1, "one event for two suspends: {events:?}");
    assert_eq!(events[0]["detail"]["reason"], "api: phone reported lost");
    let (status, body) = env.api(Method::POST, &suspend, Some("{\"reason\":\"two\\nlines\"}")).await;
    assert_eq!((status, body["code"].as_str()), (400, Some("invalid_request")), "{body}");
    let (status, body) = env.api(Method::POST, &suspend, Some(r#"{"why":"x"}"#)).await;
    assert_eq!(status, 400, "unknown members are refused: {body}");
    let (status, body) = env.api(Method::POST, &format!("/credentials/{device_id}/activate"), None).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("active")), "{body}");
    s.device_client.pending(&s.device).await.unwrap();

    // The command line: the same rules and events, actor cli:<unix user>.
    let out = env.ok(&["users", "suspend", &tid, "--reason", "lost phone, ticket 4711"]);
    assert!(out.contains("suspended") && !out.contains("nothing changed"), "{out}");
    let e = s.device_client.pending(&s.device).await.unwrap_err();
    assert_eq!(e.problem_code(), (403, "device_inactive".into()), "the running server sees the suspension");
    let out = env.ok(&["users", "suspend", &tid, "--reason", "again"]);
    assert!(out.contains("suspended already: nothing changed"), "{out}");
    let events = env.actions(&cli_actor, "credentials.suspend");
    assert_eq!(events.len(), 1, "one event for two suspends: {events:?}");
    let detail = &events[0]["detail"];
    assert_eq!((detail["reason"].as_str(), detail["auth"].as_str()), (Some("lost phone, ticket 4711"), Some("cli")));
    assert_eq!((events[0]["subject"].as_str(), detail["status"].as_i64()), (Some(device_id.as_str()), Some(200)));
    let (ok, _, err) = env.cli(&["users", "activate", &tid, "--device", "not-a-device"]);
    assert!(!ok && err.contains("not a device of"), "{err}");
    let (ok, _, err) = env.cli(&["users", "suspend", &tid, "--reason", &"x".repeat(201)]);
    assert!(!ok && err.contains("at most 200"), "{err}");
    env.ok(&["users", "activate", &tid, "--device", &device_id]);
    s.device_client.pending(&s.device).await.unwrap();
    env.ok(&["users", "revoke", &tid, "--reason", "device stolen"]);
    let (ok, _, err) = env.cli(&["users", "activate", &tid]);
    assert!(!ok && err.contains("revocation is final"), "{err}");
    let refused = env.actions(&cli_actor, "credentials.activate");
    assert_eq!(refused.iter().filter(|e| e["detail"]["status"] == 409).count(), 1, "{refused:?}");
    assert_eq!(env.actions(&cli_actor, "credentials.revoke").len(), 1);

    // Delete, twice: one event, naming the devices and the reason, not the token id.
    let out = env.ok(&["users", "delete", &tid, "--reason", "erasure request 12"]);
    assert!(out.contains("1 device(s) removed"), "{out}");
    let out = env.ok(&["users", "delete", &tid, "--reason", "erasure request 12"]);
    assert!(out.contains("nothing deleted"), "{out}");
    let deleted = env.actions(&cli_actor, "users.delete");
    assert_eq!(deleted.len(), 1, "{deleted:?}");
    assert_eq!(deleted[0]["detail"]["devices"], json!([device_id]));
    assert_eq!(deleted[0]["detail"]["reason"], "erasure request 12");
    assert!(!deleted[0].to_string().contains(&tid), "{}", deleted[0]);
    let (status, _) = env.api(Method::DELETE, &format!("/users/{tid}"), None).await;
    assert_eq!(status, 404);
    assert!(env.actions("break-glass", "users.delete").is_empty(), "a repeated delete writes no event");
    assert_eq!(env.json(&["users", "list", "--json"])["users"], json!([]));
    assert!(env.ok(&["users", "list"]).contains("no users"));

    // The chain the commands appended to verifies (the HSM-signed checkpoints included).
    let out = env.ok(&["audit", "verify"]);
    assert!(out.starts_with("OK:"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_and_flows_commands_on_sqlite() {
    let env = start("[session_store]\nurl = \"memory://\"\n").await;
    contract(&env, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_and_flows_commands_on_postgres_and_redis() {
    let stores = ClusterStores::new().unwrap();
    let env = start(&stores.toml()).await;
    contract(&env, true).await;
    drop(env);
}
