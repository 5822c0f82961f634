//! The operator console at `/console/` (docs/operations.md, "Operator console") with
//! the real server, SoftHSM2, the test OIDC provider running the code flow with PKCE,
//! and the reference device: sign-in, the session cookie, CSRF and scope enforcement,
//! break-glass (audited, rate limited), idle timeout, sign-out, the admin listener
//! only; and headless Chromium walking every page with axe-core.

use std::path::{Path, PathBuf};
use std::process::Command;

use reqwest::StatusCode;
use reqwest::header::{HeaderMap, LOCATION, SET_COOKIE};
use serde_json::Value;
use softhsm_tests::device::Decision;
use softhsm_tests::oidc::TestIssuer;
use softhsm_tests::python::{python_or_skip, target_dir};
use softhsm_tests::signin::SignIn;
use softhsm_tests::{ServerOptions, free_ports};

const CLIENT_ID: &str = "symbolon-console";
const READ_ONLY: [&str; 1] = ["management.users.read"];
const OPERATOR: [&str; 10] = [
    "management.users.read",
    "management.users.delete",
    "management.credentials.suspend",
    "management.credentials.activate",
    "management.credentials.revoke",
    "management.flows.read",
    "management.audit.read",
    "management.keys.write",
    "management.trust.refresh",
    "management.config.reload",
];
/// A break-glass token of 256 bits (hex).
const BREAK_GLASS: &str = "7c1f0e5a9b3d4c2e8f6a1b0c9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f4a3b2c1d0e";

/// A server with the console on, the test provider as the operator IdP, a
/// break-glass token and an enrolled device.
struct Env {
    issuer: TestIssuer,
    env: SignIn,
    admin: String,
    _dir: tempfile::TempDir,
}

async fn start(console_extra: &str) -> Env {
    let issuer = TestIssuer::start().await.unwrap();
    let [public, admin_port] = free_ports().unwrap();
    let admin = format!("http://127.0.0.1:{admin_port}");
    let dir = tempfile::tempdir().unwrap();
    let bg = dir.path().join("break-glass");
    std::fs::write(&bg, BREAK_GLASS).unwrap();
    let extra = format!(
        "{}\n{}{console_extra}\n",
        issuer.management_toml(&format!("break_glass_token_file = \"{}\"", bg.display())),
        issuer.console_toml(&admin, CLIENT_ID),
    );
    let options = ServerOptions { ports: Some([public, admin_port]), ..Default::default() };
    let env = SignIn::start(&extra, options).await.unwrap();
    Env { issuer, env, admin, _dir: dir }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap()
}

/// The `Set-Cookie` header setting `name`.
fn set_cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")))
        .map(str::to_owned)
}

fn cookie_value(set_cookie: &str) -> String {
    set_cookie.split(';').next().unwrap().split_once('=').unwrap().1.to_string()
}

/// The value of the first `name="csrf"` hidden field.
fn csrf_of(html: &str) -> String {
    let at = html.find("name=\"csrf\" value=\"").expect("a CSRF field") + 19;
    html[at..].split('"').next().unwrap().to_string()
}

/// A browser-like client: cookies by hand, redirects not followed.
struct Operator {
    http: reqwest::Client,
    admin: String,
    cookies: Vec<(String, String)>,
}

impl Operator {
    fn new(admin: &str) -> Self {
        Operator { http: client(), admin: admin.to_string(), cookies: Vec::new() }
    }

    fn cookie_header(&self) -> String {
        self.cookies.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("; ")
    }

    fn keep(&mut self, headers: &HeaderMap) {
        for v in headers.get_all(SET_COOKIE).iter().filter_map(|v| v.to_str().ok()) {
            let (name, value) = v.split(';').next().unwrap().split_once('=').unwrap();
            self.cookies.retain(|(k, _)| k != name);
            if !v.contains("Max-Age=0") {
                self.cookies.push((name.to_string(), value.to_string()));
            }
        }
    }

    async fn get(&mut self, path: &str) -> (StatusCode, HeaderMap, String) {
        let url = if path.starts_with("http") { path.to_string() } else { format!("{}{path}", self.admin) };
        let r = self.http.get(url).header("cookie", self.cookie_header()).send().await.unwrap();
        let (status, headers) = (r.status(), r.headers().clone());
        self.keep(&headers);
        (status, headers, r.text().await.unwrap())
    }

    async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> (StatusCode, HeaderMap, String) {
        let r = self
            .http
            .post(format!("{}{path}", self.admin))
            .header("cookie", self.cookie_header())
            .form(form)
            .send()
            .await
            .unwrap();
        let (status, headers) = (r.status(), r.headers().clone());
        self.keep(&headers);
        (status, headers, r.text().await.unwrap())
    }

    /// Signs in through the provider; returns the session's `Set-Cookie`.
    async fn sign_in(&mut self) -> String {
        let (status, _, html) = self.get("/console/signin").await;
        assert_eq!(status, 200);
        let csrf = csrf_of(&html);
        let (status, headers, _) = self.post("/console/login", &[("csrf", &csrf)]).await;
        assert_eq!(status, StatusCode::SEE_OTHER);
        let to_provider = headers[LOCATION].to_str().unwrap().to_string();
        assert!(to_provider.contains("code_challenge_method=S256") && to_provider.contains("nonce="), "{to_provider}");
        let (status, headers, _) = self.get(&to_provider).await;
        assert!(status.is_redirection(), "{status}");
        let back = headers[LOCATION].to_str().unwrap().to_string();
        assert!(back.starts_with(&format!("{}/console/callback?", self.admin)), "{back}");
        let (status, headers, body) = self.get(&back).await;
        assert_eq!(status, StatusCode::SEE_OTHER, "{body}");
        assert_eq!(headers[LOCATION], "/console/");
        set_cookie(&headers, "symbolon-console").expect("the session cookie")
    }

    /// The CSRF token of a signed-in page.
    async fn csrf(&mut self) -> String {
        let (status, _, html) = self.get("/console/").await;
        assert_eq!(status, 200, "{html}");
        csrf_of(&html)
    }
}

async fn audit_actions(env: &Env) -> Vec<Value> {
    let out = softhsm_tests::symbolon_cli(&env.env.token, &env.env.server.config_path, &["audit", "export"]).unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|r| r["kind"] == "management.action")
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_in_through_the_provider_with_a_strict_cookie_and_csrf_and_scopes_enforced() {
    let e = start("").await;
    let public = e.env.server.public_url.clone();
    // Not on the public listener.
    let (status, _, _) = Operator::new(&public).get("/console/").await;
    assert_eq!(status, 404, "the console is served on the admin listener only");
    let (status, _, _) = Operator::new(&public).get("/console/signin").await;
    assert_eq!(status, 404);

    // Signed out: pages send the browser to sign in; a POST is refused.
    let mut op = Operator::new(&e.admin);
    let (status, headers, _) = op.get("/console/users").await;
    assert_eq!((status, headers[LOCATION].to_str().unwrap()), (StatusCode::SEE_OTHER, "/console/signin?m=signin"));
    let (status, _, _) = op.post("/console/signout", &[("csrf", "x")]).await;
    assert_eq!(status, 401);

    // The sign-in page runs no script; its cookie binds the sign-in to this browser.
    let (_, headers, html) = op.get("/console/signin").await;
    let csp = headers["content-security-policy"].to_str().unwrap();
    assert!(!csp.contains("script-src") && csp.contains("default-src 'none'"), "{csp}");
    assert!(!html.contains("<script"));
    let signin = set_cookie(&headers, "symbolon-console-signin").unwrap();
    assert!(signin.contains("HttpOnly") && signin.contains("SameSite=Strict") && signin.contains("Path=/"), "{signin}");
    // A login post without the sign-in page's CSRF token is refused.
    let (status, _, _) = op.post("/console/login", &[("csrf", "forged")]).await;
    assert_eq!(status, 403);

    // A read-only operator: no action buttons, and a forged POST gets 403.
    e.issuer.sign_in_as(Some(("olivia", &READ_ONLY)));
    let session = op.sign_in().await;
    assert!(
        session.contains("HttpOnly") && session.contains("SameSite=Strict") && session.contains("Path=/"),
        "{session}"
    );
    assert!(!session.contains("Secure"), "http:// admin origin: not Secure (the https case is a unit test)");
    assert!(session.contains(&format!("Max-Age={}", 8 * 3600)), "{session}");
    assert!(!session.contains("Domain="));
    let secret = cookie_value(&session);
    assert_eq!(secret.len(), 43, "an opaque 256-bit id");
    assert_eq!(e.issuer.tokens_issued(), 1);
    let tid = e.env.token_id.clone();
    let (status, _, html) = op.get(&format!("/console/users/{tid}")).await;
    assert_eq!(status, 200, "{html}");
    assert!(html.contains("test phone") && html.contains("given_name"), "device and claim names: {html}");
    assert!(!html.contains("id=\"suspend-") && !html.contains("id=\"revoke-") && !html.contains("delete-user"));
    let (_, _, users) = op.get(&format!("/console/users?q={}", &tid[..4])).await;
    assert!(users.contains(&format!("/console/users/{tid}")), "prefix search finds the user: {users}");
    let (_, _, nav) = op.get("/console/").await;
    assert!(
        !nav.contains("/console/audit") && !nav.contains("/console/flows"),
        "pages beyond the scopes are not offered"
    );
    let device_id = e.env.device.device_id();
    let csrf = op.csrf().await;
    let (status, _, body) =
        op.post(&format!("/console/credentials/{device_id}/suspend"), &[("csrf", &csrf), ("reason", "x")]).await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("management.credentials.suspend"), "{body}");
    let (status, _, _) = op.get("/console/audit").await;
    assert_eq!(status, 403);

    // An operator with the write scopes: a POST without the CSRF token is refused,
    // with it the device is suspended and its next verify gets device_inactive.
    e.issuer.sign_in_as(Some(("alice", &OPERATOR)));
    let mut alice = Operator::new(&e.admin);
    alice.sign_in().await;
    let (_, _, html) = alice.get(&format!("/console/users/{tid}")).await;
    assert!(html.contains(&format!("id=\"suspend-{device_id}\"")), "{html}");
    let (status, _, html) = alice.get(&format!("/console/credentials/{device_id}/suspend")).await;
    assert_eq!(status, 200);
    assert!(html.contains("id=\"confirm\"") && html.contains("name=\"csrf\""), "a confirmation step: {html}");
    let (_, started, _) = e.env.initiate(&tid, "rp1", &["name"]).await.unwrap();
    let sid = started["session_id"].as_str().unwrap().to_string();
    let pending = e.env.device_client.pending(&e.env.device).await.unwrap();
    let otp = pending.sessions.iter().find(|s| s.session_id == sid).unwrap().otp.clone();
    let path = format!("/console/credentials/{device_id}/suspend");
    let (status, _, _) = alice.post(&path, &[("reason", "lost phone")]).await;
    assert_eq!(status, 403, "no CSRF token");
    let (status, _, _) = alice.post(&path, &[("csrf", "wrong"), ("reason", "lost phone")]).await;
    assert_eq!(status, 403, "a wrong CSRF token");
    let csrf = alice.csrf().await;
    assert!(html.contains("name=\"reason\"") && html.contains("required"), "the confirmation asks why: {html}");
    let (status, _, body) = alice.post(&path, &[("csrf", &csrf), ("reason", "  ")]).await;
    assert_eq!(status, 400, "a reason is needed: {body}");
    let (status, headers, body) = alice.post(&path, &[("csrf", &csrf), ("reason", "lost phone, ticket 4711")]).await;
    assert_eq!(status, StatusCode::SEE_OTHER, "{body}");
    assert_eq!(headers[LOCATION].to_str().unwrap(), format!("/console/users/{tid}?done=suspend"));
    let err = e.env.device_client.verify(&e.env.device, &sid, &otp, Decision::Approve, Some(vec![])).await.unwrap_err();
    assert_eq!(err.problem_code(), (403, "device_inactive".into()));
    let (_, _, html) = alice.get(&format!("/console/users/{tid}?done=suspend")).await;
    assert!(html.contains("The device is suspended.") && html.contains(&format!("id=\"activate-{device_id}\"")));

    // Audited: sign-ins, the refused scope, the change.
    let actions = audit_actions(&e).await;
    let has =
        |actor: &str, action: &str| actions.iter().any(|r| r["actor"] == actor && r["detail"]["action"] == action);
    assert!(has("operator:olivia", "console.sign_in") && has("operator:alice", "console.sign_in"));
    assert!(has("operator:olivia", "denied"));
    assert!(has("operator:alice", "credentials.suspend"));
    let suspensions = |actions: &[Value]| -> Vec<Value> {
        actions.iter().filter(|r| r["detail"]["action"] == "credentials.suspend").cloned().collect()
    };
    let first = suspensions(&actions);
    assert_eq!(first.len(), 1, "{first:?}");
    assert_eq!(first[0]["detail"]["reason"], "lost phone, ticket 4711", "the reason is in the audit event");
    // Suspending again changes nothing and writes no second event.
    let csrf = alice.csrf().await;
    let (status, _, body) = alice.post(&path, &[("csrf", &csrf), ("reason", "again")]).await;
    assert_eq!(status, StatusCode::SEE_OTHER, "{body}");
    assert_eq!(suspensions(&audit_actions(&e).await).len(), 1, "idempotent: no second event");

    // Sign-out ends the session on the server: the old cookie no longer works.
    let csrf = alice.csrf().await;
    let old = alice.cookies.clone();
    let (status, headers, _) = alice.post("/console/signout", &[("csrf", &csrf)]).await;
    assert_eq!((status, headers[LOCATION].to_str().unwrap()), (StatusCode::SEE_OTHER, "/console/signin?m=signedout"));
    alice.cookies = old;
    let (status, headers, _) = alice.get("/console/").await;
    assert_eq!((status, headers[LOCATION].to_str().unwrap()), (StatusCode::SEE_OTHER, "/console/signin?m=expired"));
}

/// The label of the active key of `purpose`, from `symbolon keys list --json`.
fn active_key(env: &Env, purpose: &str) -> String {
    let out =
        softhsm_tests::symbolon_cli(&env.env.token, &env.env.server.config_path, &["keys", "list", "--json"]).unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let list: Value = serde_json::from_slice(&out.stdout).unwrap();
    let keys = list["keys"].as_array().unwrap();
    let active = keys.iter().find(|k| k["purpose"] == purpose && k["state"] == "active").expect("an active key");
    active["label"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_are_rotated_in_the_console_and_the_api_only_with_the_keys_write_scope() {
    let e = start("").await;
    let before = active_key(&e, "jwt");
    let api = |path: &str, sub: &str, scopes: &[&str]| {
        client()
            .post(format!("{}/api/management/v1/keys/{path}", e.admin))
            .bearer_auth(e.issuer.token(sub, scopes))
            .send()
    };

    // Without management.keys.write: the catalog, no buttons; the server refuses anyway.
    e.issuer.sign_in_as(Some(("olivia", &READ_ONLY)));
    let mut olivia = Operator::new(&e.admin);
    olivia.sign_in().await;
    let (status, _, html) = olivia.get("/console/keys").await;
    assert_eq!(status, 200, "{html}");
    assert!(html.contains(&before), "the catalog lists the active key: {html}");
    assert!(!html.contains("id=\"rotate-") && !html.contains("id=\"generate-") && !html.contains("id=\"retire-"));
    let (status, _, _) = olivia.get("/console/keys/rotate/jwt").await;
    assert_eq!(status, 403);
    let csrf = olivia.csrf().await;
    let (status, _, body) = olivia.post("/console/keys/rotate/jwt", &[("csrf", &csrf), ("reason", "x")]).await;
    assert_eq!(status, 403, "a forged POST: {body}");
    assert!(body.contains("management.keys.write"), "{body}");
    let r = api("rotate/jwt", "olivia", &READ_ONLY).await.unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(r.json::<Value>().await.unwrap()["code"], "insufficient_scope");
    assert_eq!(active_key(&e, "jwt"), before, "nothing rotated");

    // With it: a confirmation step, then the rotation; the old key is retiring.
    e.issuer.sign_in_as(Some(("alice", &OPERATOR)));
    let mut alice = Operator::new(&e.admin);
    alice.sign_in().await;
    let (_, _, html) = alice.get("/console/keys").await;
    assert!(html.contains("id=\"rotate-jwt\"") && !html.contains("id=\"rotate-pairwise\""), "{html}");
    let (status, _, html) = alice.get("/console/keys/rotate/jwt").await;
    assert_eq!(status, 200);
    assert!(html.contains("id=\"confirm\"") && html.contains("name=\"csrf\""), "a confirmation step: {html}");
    let (status, _, _) = alice.post("/console/keys/rotate/jwt", &[("csrf", "wrong")]).await;
    assert_eq!(status, 403, "a wrong CSRF token");
    let csrf = alice.csrf().await;
    let (status, headers, body) =
        alice.post("/console/keys/rotate/jwt", &[("csrf", &csrf), ("reason", "yearly rotation")]).await;
    assert_eq!(status, StatusCode::SEE_OTHER, "{body}");
    assert_eq!(headers[LOCATION], "/console/keys?done=rotate&target=jwt");
    let rotated = active_key(&e, "jwt");
    assert_ne!(rotated, before, "the console's rotation changed the active key");
    let (_, _, html) = alice.get("/console/keys?done=rotate&target=jwt").await;
    assert!(html.contains("The jwt keys were rotated.") && html.contains(&format!("id=\"retire-{before}\"")), "{html}");

    // The API: the same rotation, and the life-cycle rules' refusals as 409.
    let r = api("rotate/jwt", "alice", &OPERATOR).await.unwrap();
    assert_eq!(r.status(), 200);
    let changed: Value = r.json().await.unwrap();
    assert_eq!(changed["keys"][0]["state"], "active", "{changed}");
    assert_ne!(active_key(&e, "jwt"), rotated);
    let r = api("rotate/pairwise", "alice", &OPERATOR).await.unwrap();
    assert_eq!(r.status(), 409);
    assert_eq!(r.json::<Value>().await.unwrap()["code"], "invalid_state");
    let r = api("rotate/nonsense", "alice", &OPERATOR).await.unwrap();
    assert_eq!(r.status(), 400);
    let r = api(&format!("retire/{before}"), "alice", &OPERATOR).await.unwrap();
    assert_eq!(r.status(), 409, "tokens it signed may still be valid");

    // Audited with the operator, refusals included.
    let actions = audit_actions(&e).await;
    let has = |actor: &str, action: &str, status: i64| {
        actions
            .iter()
            .any(|r| r["actor"] == actor && r["detail"]["action"] == action && r["detail"]["status"] == status)
    };
    assert!(has("operator:alice", "keys.rotate", 200) && has("operator:alice", "keys.rotate", 409));
    assert!(has("operator:alice", "keys.retire", 409));
    assert!(
        actions
            .iter()
            .any(|r| r["actor"] == "operator:olivia" && r["detail"]["missing_scope"] == "management.keys.write"),
        "the refused scope is audited"
    );
}

/// A relying party with an OpenID Connect client (secret hash) and a SAML SP.
const RICH_SERVICE: &str = r#"
[[services]]
id = "rp-oidc"
name = "Portal"
allowed_scopes = ["name"]

[services.oidc]
redirect_uris = ["https://portal.example/cb"]
token_endpoint_auth_method = "client_secret_basic"
client_secret_sha256 = "5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8"

[services.saml]
entity_id = "https://portal.example/sp"
acs_url = "https://portal.example/acs"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trust_refresh_and_configuration_reload_need_their_scopes_a_reason_and_are_audited() {
    let e = start(&format!("\n{RICH_SERVICE}")).await;
    const REFRESH: [&str; 1] = ["management.trust.refresh"];
    const RELOAD: [&str; 1] = ["management.config.reload"];

    // Read-only: the pages, no buttons; forged POSTs refused.
    e.issuer.sign_in_as(Some(("olivia", &READ_ONLY)));
    let mut olivia = Operator::new(&e.admin);
    olivia.sign_in().await;
    let (status, _, html) = olivia.get("/console/trust").await;
    assert_eq!(status, 200, "{html}");
    for kind in ["governance", "tsl", "crl"] {
        assert!(html.contains(&format!("<td>{kind}</td>")), "{kind} listed: {html}");
    }
    assert!(html.contains("Age (fetched)") && html.contains("Next update") && !html.contains("id=\"refresh-trust\""));
    let (status, _, html) = olivia.get("/console/services").await;
    assert_eq!(status, 200, "{html}");
    assert!(
        html.contains("rp1")
            && html.contains("https://portal.example/cb")
            && html.contains("https://portal.example/acs")
    );
    assert!(html.contains("client_secret_basic") && html.contains("a secret (its hash is configured)"), "{html}");
    assert!(!html.contains("5e884898da28"), "never a secret's hash");
    assert!(!html.contains("id=\"reload-config\""));
    let csrf = olivia.csrf().await;
    for path in ["/console/trust/refresh", "/console/services/reload"] {
        let (status, _, body) = olivia.post(path, &[("csrf", &csrf), ("reason", "x")]).await;
        assert_eq!(status, 403, "{path}: {body}");
    }

    // With the scopes: a confirmation with a reason; the refresh runs.
    e.issuer.sign_in_as(Some(("alice", &OPERATOR)));
    let mut alice = Operator::new(&e.admin);
    alice.sign_in().await;
    let (_, _, html) = alice.get("/console/trust").await;
    assert!(html.contains("id=\"refresh-trust\""), "{html}");
    let (status, _, html) = alice.get("/console/trust/refresh").await;
    assert_eq!(status, 200);
    assert!(html.contains("id=\"confirm\"") && html.contains("name=\"reason\""), "{html}");
    let csrf = alice.csrf().await;
    let (status, _, _) = alice.post("/console/trust/refresh", &[("reason", "check")]).await;
    assert_eq!(status, 403, "no CSRF token");
    let (status, _, _) = alice.post("/console/trust/refresh", &[("csrf", &csrf)]).await;
    assert_eq!(status, 400, "no reason");
    let (status, headers, body) =
        alice.post("/console/trust/refresh", &[("csrf", &csrf), ("reason", "CRL published early")]).await;
    assert_eq!(status, StatusCode::SEE_OTHER, "{body}");
    assert_eq!(headers[LOCATION], "/console/trust?updated=0&failed=0", "nothing changed at the source");
    let (_, _, html) = alice.get("/console/trust?updated=0&failed=0").await;
    assert!(html.contains("id=\"notice\""), "{html}");

    // Reload: a service added to the file is in effect at once.
    let path = e.env.server.config_path.clone();
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str("\n[[services]]\nid = \"rp-new\"\nname = \"New Shop\"\nallowed_scopes = [\"age\"]\n");
    std::fs::write(&path, text).unwrap();
    let (status, _, html) = alice.get("/console/services/reload").await;
    assert_eq!(status, 200);
    assert!(html.contains("name=\"reason\""), "{html}");
    let (status, headers, body) =
        alice.post("/console/services/reload", &[("csrf", &csrf), ("reason", "shop onboarded")]).await;
    assert_eq!(status, StatusCode::SEE_OTHER, "{body}");
    assert_eq!(headers[LOCATION], "/console/services?reload=applied&added=1&removed=0&changed=0&restart=0");
    let (_, _, html) = alice.get("/console/services").await;
    assert!(html.contains("rp-new") && html.contains("New Shop"), "{html}");
    let (status, _, _) = e.env.initiate(&e.env.token_id, "rp-new", &["age"]).await.unwrap();
    assert_eq!(status, 201, "the new service signs in");

    // An invalid file changes nothing.
    let good = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, format!("{good}\n[nonsense]\nx = 1\n")).unwrap();
    let (status, headers, _) = alice.post("/console/services/reload", &[("csrf", &csrf), ("reason", "typo")]).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert!(headers[LOCATION].to_str().unwrap().starts_with("/console/services?reload=invalid&problems="));
    std::fs::write(&path, good).unwrap();

    // The API: the same calls, scope-checked.
    let api = |path: &str, sub: &str, scopes: &[&str]| {
        client()
            .post(format!("{}/api/management/v1/{path}", e.admin))
            .bearer_auth(e.issuer.token(sub, scopes))
            .json(&serde_json::json!({"reason": "from the API"}))
            .send()
    };
    let r = api("trust/refresh", "olivia", &READ_ONLY).await.unwrap();
    assert_eq!(r.status(), 403);
    let r = api("config/reload", "olivia", &REFRESH).await.unwrap();
    assert_eq!(r.status(), 403, "the refresh scope does not reload");
    let r = api("trust/refresh", "bob", &REFRESH).await.unwrap();
    assert_eq!(r.status(), 200);
    let refreshed: Value = r.json().await.unwrap();
    assert_eq!((refreshed["fresh"].clone(), refreshed["failed"].clone()), (Value::Bool(true), serde_json::json!([])));
    let r = api("config/reload", "bob", &RELOAD).await.unwrap();
    assert_eq!(r.status(), 200);
    let reloaded: Value = r.json().await.unwrap();
    assert_eq!(reloaded["applied"], true, "{reloaded}");
    assert_eq!(reloaded["relying_parties"]["added"], serde_json::json!([]), "nothing new since: {reloaded}");

    // Audited with operator and reason.
    let actions = audit_actions(&e).await;
    let found = |actor: &str, action: &str, reason: &str| {
        actions
            .iter()
            .any(|r| r["actor"] == actor && r["detail"]["action"] == action && r["detail"]["reason"] == reason)
    };
    assert!(found("operator:alice", "trust.refresh", "CRL published early"), "{actions:?}");
    assert!(found("operator:alice", "config.reload", "shop onboarded"));
    assert!(found("operator:alice", "config.reload", "typo"));
    assert!(
        found("operator:bob", "trust.refresh", "from the API")
            && found("operator:bob", "config.reload", "from the API")
    );
    let reload = actions.iter().find(|r| r["detail"]["reason"] == "shop onboarded").unwrap();
    assert_eq!(reload["detail"]["added"], serde_json::json!(["rp-new"]));
    let typo = actions.iter().find(|r| r["detail"]["reason"] == "typo").unwrap();
    assert_eq!(typo["detail"]["applied"], false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_or_replayed_sign_in_starts_no_session() {
    let e = start("").await;
    // The provider refuses.
    e.issuer.sign_in_as(None);
    let mut op = Operator::new(&e.admin);
    let (_, _, html) = op.get("/console/signin").await;
    let (_, headers, _) = op.post("/console/login", &[("csrf", &csrf_of(&html))]).await;
    let (_, headers, _) = op.get(headers[LOCATION].to_str().unwrap()).await;
    let (status, headers, body) = op.get(headers[LOCATION].to_str().unwrap()).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("access_denied") && set_cookie(&headers, "symbolon-console").is_none());

    // A callback taken to another browser (no sign-in cookie) is refused, and its
    // state is spent.
    e.issuer.sign_in_as(Some(("alice", &OPERATOR)));
    let (_, _, html) = op.get("/console/signin").await;
    let (_, headers, _) = op.post("/console/login", &[("csrf", &csrf_of(&html))]).await;
    let (_, headers, _) = op.get(headers[LOCATION].to_str().unwrap()).await;
    let callback = headers[LOCATION].to_str().unwrap().to_string();
    let mut other = Operator::new(&e.admin);
    let (status, _, body) = other.get(&callback).await;
    assert_eq!(status, 400);
    assert!(body.contains("another browser"), "{body}");
    let (status, _, body) = op.get(&callback).await;
    assert_eq!(status, 400);
    assert!(body.contains("unknown, used or expired"), "{body}");
    assert_eq!(e.issuer.tokens_issued(), 0, "no code was redeemed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn break_glass_is_audited_rate_limited_and_sessions_end_when_idle() {
    let e = start("idle_timeout = \"2s\"\nbreak_glass_per_minute = 2\n").await;
    let mut op = Operator::new(&e.admin);
    let (_, _, html) = op.get("/console/signin").await;
    assert!(html.contains("id=\"bg-token\""));
    let csrf = csrf_of(&html);
    let (status, _, body) = op.post("/console/break-glass", &[("csrf", &csrf), ("token", "wrong")]).await;
    assert_eq!(status, 401, "{body}");
    let csrf = csrf_of(&body);
    let (status, _, _) = op.post("/console/break-glass", &[("csrf", "forged"), ("token", BREAK_GLASS)]).await;
    assert_eq!(status, 403, "CSRF checked before anything else");
    let (status, headers, _) = op.post("/console/break-glass", &[("csrf", &csrf), ("token", BREAK_GLASS)]).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert!(set_cookie(&headers, "symbolon-console").is_some());
    let (status, _, html) = op.get("/console/audit").await;
    assert_eq!(status, 200, "break-glass holds every scope: {html}");
    assert!(html.contains("<strong id=\"operator\">break-glass</strong>"));

    // Idle past 2 s: the session is gone.
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    let (status, headers, _) = op.get("/console/").await;
    assert_eq!((status, headers[LOCATION].to_str().unwrap()), (StatusCode::SEE_OTHER, "/console/signin?m=expired"));

    // Two attempts a minute: the third is refused.
    let (_, _, html) = op.get("/console/signin").await;
    let (status, headers, _) =
        op.post("/console/break-glass", &[("csrf", &csrf_of(&html)), ("token", BREAK_GLASS)]).await;
    assert_eq!(status, 429);
    assert!(headers.contains_key("retry-after"));

    let actions = audit_actions(&e).await;
    let sign_ins: Vec<(&str, i64)> = actions
        .iter()
        .filter(|r| r["detail"]["action"] == "console.sign_in")
        .map(|r| (r["actor"].as_str().unwrap(), r["detail"]["status"].as_i64().unwrap()))
        .collect();
    assert_eq!(sign_ins, [("anonymous", 401), ("break-glass", 200)]);
    let log = e.env.server.log();
    assert!(!log.contains(BREAK_GLASS), "the token is never logged");
}

// ------------------------------------------------------------------ Chromium

fn axe_script() -> Option<PathBuf> {
    let path = target_dir().join("axe/node_modules/axe-core/axe.min.js");
    if path.exists() {
        return Some(path);
    }
    softhsm_tests::python::missing_tool(&format!(
        "{} missing (scripts/test installs axe-core with npm)",
        path.display()
    ));
    None
}

fn browser_python() -> Option<PathBuf> {
    let py = python_or_skip(&["selenium"], "headless Chromium")?;
    for bin in ["/usr/bin/chromium", "/usr/bin/chromedriver"] {
        if !Path::new(bin).exists() {
            softhsm_tests::python::missing_tool(&format!("{bin} missing (scripts/install-deps --with-test-deps)"));
            return None;
        }
    }
    Some(py)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_walks_every_page_with_axe_and_suspends_a_device_and_rotates_keys() {
    let (Some(py), Some(axe)) = (browser_python(), axe_script()) else { return };
    let e = start("").await;
    e.issuer.sign_in_as(Some(("alice", &OPERATOR)));
    let shots = target_dir().join("screenshots/console");
    std::fs::create_dir_all(&shots).unwrap();
    let out = e._dir.path().join("console.json");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/console_browser.py");
    let tid = e.env.token_id.clone();
    let (_, started, _) = e.env.initiate(&tid, "rp1", &["name"]).await.unwrap();
    let sid = started["session_id"].as_str().unwrap().to_string();
    let pending = e.env.device_client.pending(&e.env.device).await.unwrap();
    let otp = pending.sessions.iter().find(|s| s.session_id == sid).unwrap().otp.clone();
    let status = tokio::task::block_in_place(|| {
        Command::new(&py)
            .arg(&script)
            .args(["--admin", &e.admin, "--token-id", &tid, "--axe"])
            .arg(&axe)
            .arg("--shots")
            .arg(&shots)
            .arg("--out")
            .arg(&out)
            .status()
            .unwrap()
    });
    let result: Value = serde_json::from_slice(&std::fs::read(&out).unwrap_or_default()).unwrap_or(Value::Null);
    assert!(status.success(), "browser script failed: {result}");
    let pages = result["pages"].as_array().unwrap();
    assert!(pages.len() >= 8, "{result}");
    for p in pages {
        assert_eq!(p["violations"], serde_json::json!([]), "axe serious/critical on {}", p["name"]);
        assert_eq!(p["csp"], serde_json::json!([]), "CSP violations on {}", p["name"]);
        for width in [1280, 390] {
            let shot = shots.join(format!("{}-{width}.png", p["name"].as_str().unwrap()));
            assert!(shot.metadata().map(|m| m.len() > 1000).unwrap_or(false), "{}", shot.display());
        }
    }
    assert_eq!(result["suspended"], true, "{result}");
    assert_eq!(result["rotated"], true, "{result}");
    assert_eq!(result["refreshed"], true, "{result}");
    assert_eq!(result["reloaded"], true, "{result}");
    for page in ["trust", "services", "confirm-refresh", "confirm-reload"] {
        assert!(pages.iter().any(|p| p["name"] == page), "axe ran on {page}");
    }
    let err = e.env.device_client.verify(&e.env.device, &sid, &otp, Decision::Approve, Some(vec![])).await.unwrap_err();
    assert_eq!(err.problem_code(), (403, "device_inactive".into()));
    eprintln!("screenshots: {}", shots.display());
}

/// Approves a sign-in of the enrolled device.
async fn approve_sign_in(e: &Env) {
    let (_, started, _) = e.env.initiate(&e.env.token_id, "rp1", &["name"]).await.unwrap();
    let sid = started["session_id"].as_str().unwrap().to_string();
    let pending = e.env.device_client.pending(&e.env.device).await.unwrap();
    let otp = pending.sessions.iter().find(|s| s.session_id == sid).unwrap().otp.clone();
    e.env.device_client.verify(&e.env.device, &sid, &otp, Decision::Approve, Some(vec![])).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_shows_when_it_was_last_used_written_at_most_once_per_interval() {
    let e = start("").await;
    let user = || async {
        let r = client()
            .get(format!("{}/api/management/v1/users/{}", e.admin, e.env.token_id))
            .bearer_auth(e.issuer.token("alice", &READ_ONLY))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        r.json::<Value>().await.unwrap()["devices"][0]["last_used_at"].clone()
    };
    assert_eq!(user().await, Value::Null, "never used yet");
    let before = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    approve_sign_in(&e).await;
    // Written off the response path: wait for it.
    let mut first = Value::Null;
    for _ in 0..50 {
        first = user().await;
        if !first.is_null() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let t = first.as_i64().expect("last_used_at recorded after an approved sign-in");
    assert!((before..=before + 30).contains(&t), "{t} vs {before}");
    // A second sign-in within the interval writes nothing.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    approve_sign_in(&e).await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(user().await, first, "at most one write per 5 minutes per device");

    // The console shows it next to the enrollment time.
    e.issuer.sign_in_as(Some(("olivia", &READ_ONLY)));
    let mut olivia = Operator::new(&e.admin);
    olivia.sign_in().await;
    let (_, _, html) = olivia.get(&format!("/console/users/{}", e.env.token_id)).await;
    assert!(html.contains("<th scope=\"col\">Last used</th>") && html.contains("<th scope=\"col\">Enrolled</th>"));
    let shown = time::OffsetDateTime::from_unix_timestamp(t).unwrap();
    let text = format!(
        "{:04}-{:02}-{:02} {:02}:{:02}",
        shown.year(),
        shown.month() as u8,
        shown.day(),
        shown.hour(),
        shown.minute()
    );
    assert!(html.contains(&text), "{text} in {html}");
}
