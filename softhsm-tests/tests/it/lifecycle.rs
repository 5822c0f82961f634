//! Key life cycle end to end (issue 8, docs/architecture.md §Keys "Catalog and rotation"):
//! `symbolon keys rotate | retire | rewrap | adopt` against a running server on a real
//! SoftHSM2 token, keys made by `hsm/gen-key`, and the refusal of unsafe keys.
//!
//! Servers re-read the catalog every second here (`keys.sync_interval`), and identity
//! tokens live 10 s, so a retiring JWT key may retire 12 s after its rotation.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeInfo, AttributeType, ObjectClass};
use serde_json::Value;
use softhsm_tests::device::Decision;
use softhsm_tests::signin::SignIn;
use softhsm_tests::{ServerOptions, TestToken};

/// Catalog re-read every second; JWT keys retire 10 s + 1 s + 1 s after rotation, data
/// keys 1 s + 1 s + 15 s + 5 s (their identity tokens sealed in the session store; the
/// 5 s access tokens and 60 s codes of OpenID Connect are sealed under them too, so the
/// code lifetime makes it 1 s + 1 s + 60 s).
const FAST_KEYS: &str = "[keys]\nsync_interval = \"1s\"\nclock_skew = \"1s\"\n\n[auth]\nmax_pending = 100\ntoken_ttl = \"10s\"\n\
                         otp_ttl = \"15s\"\nbrowser_grace = \"5s\"\naccess_token_ttl = \"5s\"\n";

fn options() -> ServerOptions {
    ServerOptions {
        env: vec![("SYMBOLON_LIMITS__INITIATE_PER_TOKEN_PER_MINUTE".into(), "100000".into())],
        ..Default::default()
    }
}

async fn start(extra: &str) -> SignIn {
    SignIn::start(&format!("{FAST_KEYS}\n{extra}"), options()).await.unwrap()
}

/// Runs `symbolon ARGS` with the server's configuration: (success, stdout, stderr).
async fn cli(env: &SignIn, args: &[&str]) -> (bool, String, String) {
    let (conf, token_var, token_conf) = (env.server.config_path.clone(), env.token.conf_var, env.token.conf.clone());
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(softhsm_tests::symbolon_bin().unwrap())
            .arg("--config")
            .arg(&conf)
            .args(&args)
            .env(token_var, &token_conf)
            .env_remove("SYMBOLON_HSM_PIN")
            .env_remove("SYMBOLON_BIN")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `cli` that must succeed; its stdout.
async fn cli_ok(env: &SignIn, args: &[&str]) -> String {
    let (ok, out, err) = cli(env, args).await;
    assert!(ok, "symbolon {args:?} failed:\n{out}\n{err}");
    out
}

/// One record of `symbolon keys list --json`.
#[derive(Debug, Clone)]
struct Row {
    purpose: String,
    label: String,
    state: String,
    kid: String,
    /// `generated` or `imported`.
    origin: String,
    /// `sealed=N` for data keys.
    note: String,
}

fn parse_list(out: &str) -> Vec<Row> {
    let doc: serde_json::Value = serde_json::from_str(out).unwrap_or_else(|e| panic!("{e}: {out}"));
    let text = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_string();
    doc["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| Row {
            purpose: text(&k["purpose"]),
            label: text(&k["label"]),
            state: text(&k["state"]),
            kid: text(&k["kid"]),
            origin: text(&k["origin"]),
            note: k["sealed"].as_u64().map(|n| format!("sealed={n}")).unwrap_or_default(),
        })
        .collect()
}

async fn catalog(env: &SignIn) -> Vec<Row> {
    parse_list(&cli_ok(env, &["keys", "list", "--json"]).await)
}

fn find<'a>(rows: &'a [Row], purpose: &str, state: &str) -> Vec<&'a Row> {
    rows.iter().filter(|r| r.purpose == purpose && r.state == state).collect()
}

/// The label after `prefix` in `keys rotate` output (`active:   LABEL`).
fn rotated(out: &str, prefix: &str) -> String {
    out.lines()
        .find_map(|l| l.strip_prefix(prefix))
        .map(|l| l.split_whitespace().next().unwrap_or_default().to_string())
        .unwrap_or_else(|| panic!("no {prefix:?} in {out}"))
}

/// Polls `check` every 100 ms until it returns `Some`, for at most `within`.
async fn eventually<T, F, Fut>(within: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(start.elapsed() < within, "timed out after {within:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the server logged that it uses `label` as its active key.
async fn server_noticed(env: &SignIn, label: &str) {
    eventually(Duration::from_secs(20), &format!("the server to activate {label}"), || async {
        env.server
            .log()
            .lines()
            .any(|l| l.contains("key catalog changed") && l.contains(label) && l.contains("\"to\":\"active\""))
            .then_some(())
    })
    .await
}

/// Approves session `sid` from the device with the OTP it shows; the OTP used.
async fn approve(env: &SignIn, sid: &str, scopes: &[&str]) -> anyhow::Result<String> {
    let pending = env.device_client.pending(&env.device).await?;
    let s = pending
        .sessions
        .iter()
        .find(|s| s.session_id == sid)
        .ok_or_else(|| anyhow::anyhow!("session {sid} not pending on the device"))?;
    let scopes = Some(scopes.iter().map(|s| s.to_string()).collect());
    let r = env.device_client.verify(&env.device, sid, &s.otp, Decision::Approve, scopes).await?;
    anyhow::ensure!(r == serde_json::json!({"status": "approved"}), "verify answered {r}");
    Ok(s.otp.clone())
}

/// The browser's view of a session.
async fn poll(env: &SignIn, sid: &str, browser_token: &str) -> anyhow::Result<Value> {
    let url = format!("{}/v1/auth/sessions/{sid}", env.server.public_url);
    Ok(reqwest::Client::new().get(url).bearer_auth(browser_token).send().await?.json().await?)
}

/// A whole sign-in (initiate, approve on the device, read the outcome); the identity
/// token, verified against the server's JWKS.
async fn sign_in(env: &SignIn, scopes: &[&str]) -> anyhow::Result<String> {
    sign_in_to(env, "rp1", scopes).await
}

/// [`sign_in`] to the relying party `service`.
async fn sign_in_to(env: &SignIn, service: &str, scopes: &[&str]) -> anyhow::Result<String> {
    let (status, started, _) = env.initiate(&env.token_id, service, scopes).await?;
    anyhow::ensure!(status == 201, "initiate answered {status}: {started}");
    let sid = started["session_id"].as_str().unwrap_or_default().to_string();
    let bt = started["browser_token"].as_str().unwrap_or_default().to_string();
    approve(env, &sid, scopes).await?;
    let outcome = poll(env, &sid, &bt).await?;
    anyhow::ensure!(outcome["status"] == "approved", "session outcome {outcome}");
    let jwt = outcome["id_token"].as_str().unwrap_or_default().to_string();
    jwks_verify_for(env, &jwt, service).await?;
    Ok(jwt)
}

/// The `kid`s the server publishes.
async fn jwks_kids(env: &SignIn) -> Vec<String> {
    let jwks: Value =
        reqwest::get(format!("{}/.well-known/jwks.json", env.server.public_url)).await.unwrap().json().await.unwrap();
    jwks["keys"].as_array().unwrap().iter().map(|k| k["kid"].as_str().unwrap().to_string()).collect()
}

fn kid_of(jwt: &str) -> String {
    jsonwebtoken::decode_header(jwt).unwrap().kid.unwrap()
}

/// Verifies an identity token with the key of its `kid` in the server's JWKS.
async fn jwks_verify(env: &SignIn, jwt: &str) -> anyhow::Result<Value> {
    jwks_verify_for(env, jwt, "rp1").await
}

/// [`jwks_verify`] of a token for the relying party `aud`.
async fn jwks_verify_for(env: &SignIn, jwt: &str, aud: &str) -> anyhow::Result<Value> {
    let jwks: jsonwebtoken::jwk::JwkSet =
        reqwest::get(format!("{}/.well-known/jwks.json", env.server.public_url)).await?.json().await?;
    let kid = jsonwebtoken::decode_header(jwt)?.kid.unwrap_or_default();
    let jwk = jwks.find(&kid).ok_or_else(|| anyhow::anyhow!("kid {kid} not in JWKS"))?;
    let key = jsonwebtoken::DecodingKey::from_jwk(jwk)?;
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
    validation.set_audience(&[aud]);
    validation.set_issuer(&[env.server.public_url.as_str()]);
    Ok(jsonwebtoken::decode::<Value>(jwt, &key, &validation)?.claims)
}

/// The audit trail as JSON records.
async fn audit_records(env: &SignIn) -> Vec<Value> {
    let out = cli_ok(env, &["audit", "export"]).await;
    out.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rotating_every_purpose_under_sign_in_load_fails_no_sign_in() {
    let env = Arc::new(start("[audit]\ncheckpoint_every = 20\n").await);
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for _ in 0..3 {
        let (env, stop, done) = (env.clone(), stop.clone(), done.clone());
        workers.push(tokio::spawn(async move {
            let mut failures = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                match sign_in(&env, &["name", "age"]).await {
                    Ok(_) => {
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => failures.push(e.to_string()),
                }
            }
            failures
        }));
    }
    let progressed = |n: usize| {
        let done = done.clone();
        async move {
            eventually(Duration::from_secs(60), "sign-ins to progress", || async {
                (done.load(Ordering::Relaxed) >= n).then_some(())
            })
            .await
        }
    };
    progressed(3).await;
    // Twice per purpose: the first rotation activates a key generated on the spot, the
    // second one the `next` key the first left behind.
    for round in 0..2 {
        for purpose in ["jwt", "otp", "data", "saml", "audit"] {
            let out = cli_ok(&env, &["keys", "rotate", "--purpose", purpose]).await;
            let active = rotated(&out, "active:");
            server_noticed(&env, &active).await;
            let seen = done.load(Ordering::Relaxed);
            progressed(seen + 2).await;
            eprintln!("round {round}: {purpose} rotated to {active}; {} sign-ins so far", done.load(Ordering::Relaxed));
        }
    }
    stop.store(true, Ordering::Relaxed);
    let mut failures = Vec::new();
    for w in workers {
        failures.extend(w.await.unwrap());
    }
    assert!(failures.is_empty(), "{} failed sign-ins: {failures:#?}", failures.len());
    let rows = catalog(&env).await;
    for purpose in ["jwt", "otp", "data", "saml", "audit"] {
        assert_eq!(find(&rows, purpose, "active").len(), 1, "{rows:#?}");
        assert_eq!(find(&rows, purpose, "next").len(), 1, "{rows:#?}");
    }
    // Every change is audited; the chain and its checkpoints (signed with the audit
    // keys of the time, named in each checkpoint) verify.
    let audit = audit_records(&env).await;
    let rotations = audit
        .iter()
        .filter(|r| r["kind"] == "key.state_changed" && r["detail"]["reason"] == "rotated" && r["actor"] == "operator")
        .count();
    assert!(rotations >= 2 * 5 + 5, "key.state_changed events for the rotations: {rotations}");
    let text = serde_json::to_string(&audit).unwrap();
    assert!(!text.contains("\"value\""), "no key material in the audit trail");
    let verified = cli_ok(&env, &["audit", "verify"]).await;
    assert!(verified.starts_with("OK:"), "{verified}");
}

#[tokio::test]
async fn token_signed_before_rotation_verifies_after_and_retiring_key_leaves_jwks_only_after_its_time() {
    let env = start("").await;
    let before = sign_in(&env, &[]).await.unwrap();
    let old_kid = kid_of(&before);
    let old = catalog(&env).await.into_iter().find(|r| r.kid == old_kid).unwrap();
    assert_eq!(old.state, "active");

    let out = cli_ok(&env, &["keys", "rotate", "--purpose", "jwt"]).await;
    let new_label = rotated(&out, "active:");
    assert_eq!(rotated(&out, "retiring:"), old.label);
    // Too early to retire: tokens signed by the old key may still be in use.
    let (ok, _, err) = cli(&env, &["keys", "retire", &old.label]).await;
    assert!(!ok, "retire must be refused while tokens may be valid");
    assert!(err.contains("stay retiring for at least 12s") && err.contains("auth.token_ttl"), "{err}");
    let (ok, _, err) = cli(&env, &["keys", "retire", &new_label]).await;
    assert!(!ok && err.contains("is the active jwt key: rotate first"), "{err}");
    server_noticed(&env, &new_label).await;
    let new_kid = catalog(&env).await.into_iter().find(|r| r.label == new_label).unwrap().kid;
    let kids = jwks_kids(&env).await;
    assert!(kids.contains(&old_kid) && kids.contains(&new_kid), "{kids:?}");
    // The token signed before the rotation still verifies through the JWKS.
    jwks_verify(&env, &before).await.unwrap();
    // New tokens are signed with the new key.
    let after = sign_in(&env, &[]).await.unwrap();
    assert_eq!(kid_of(&after), new_kid);

    // The server retires it once its time is over, and only then it leaves the JWKS.
    eventually(Duration::from_secs(60), "the old kid to leave the JWKS", || async {
        (!jwks_kids(&env).await.contains(&old_kid)).then_some(())
    })
    .await;
    let audit = audit_records(&env).await;
    let at = |to: &str| {
        audit
            .iter()
            .find(|r| r["kind"] == "key.state_changed" && r["subject"] == old.label.as_str() && r["detail"]["to"] == to)
            .unwrap_or_else(|| panic!("no {to} event for {}", old.label))
            .clone()
    };
    let (retiring, retired) = (at("retiring"), at("retired"));
    assert!(retired["at"].as_i64().unwrap() - retiring["at"].as_i64().unwrap() >= 12, "{retiring} {retired}");
    assert!(retired["actor"].as_str().unwrap().starts_with("node:"), "retired by the server: {retired}");
    assert!(jwks_kids(&env).await.contains(&new_kid));
    let rows = catalog(&env).await;
    assert_eq!(rows.iter().find(|r| r.label == old.label).unwrap().state, "retired");
}

#[tokio::test]
async fn sessions_pending_under_the_old_otp_key_still_verify_after_rotation() {
    let env = start("").await;
    let (status, first, _) = env.initiate(&env.token_id, "rp1", &[]).await.unwrap();
    assert_eq!(status, 201);
    let sid1 = first["session_id"].as_str().unwrap().to_string();
    let pending = env.device_client.pending(&env.device).await.unwrap();
    let otp1 = pending.sessions.iter().find(|s| s.session_id == sid1).unwrap().otp.clone();
    let old = find(&catalog(&env).await, "otp", "active")[0].label.clone();

    let out = cli_ok(&env, &["keys", "rotate", "--purpose", "otp"]).await;
    let new = rotated(&out, "active:");
    server_noticed(&env, &new).await;
    let (status, second, _) = env.initiate(&env.token_id, "rp1", &[]).await.unwrap();
    assert_eq!(status, 201);
    let sid2 = second["session_id"].as_str().unwrap().to_string();

    // The old key may not retire while sessions made with it may be pending.
    let (ok, _, err) = cli(&env, &["keys", "retire", &old]).await;
    assert!(!ok && err.contains("auth.otp_ttl"), "{err}");

    // The session started before the rotation shows and accepts the same OTP (the key
    // named on the session), and the one started after works too.
    assert_eq!(approve(&env, &sid1, &[]).await.unwrap(), otp1);
    approve(&env, &sid2, &[]).await.unwrap();
    for (sid, started) in [(&sid1, &first), (&sid2, &second)] {
        let outcome = poll(&env, sid, started["browser_token"].as_str().unwrap()).await.unwrap();
        assert_eq!(outcome["status"], "approved", "{outcome}");
    }
}

#[tokio::test]
async fn rewrap_lets_the_old_data_key_retire_and_retire_is_refused_before() {
    let env = start("").await;
    let old = find(&catalog(&env).await, "data", "active")[0].clone();
    assert_eq!(old.note, "sealed=1", "the enrollment's claims are sealed under the first data key");
    let out = cli_ok(&env, &["keys", "rotate", "--purpose", "data", "--no-next"]).await;
    let new = rotated(&out, "active:");
    assert!(out.contains("keys rewrap"), "{out}");

    let (ok, _, err) = cli(&env, &["keys", "retire", &old.label]).await;
    assert!(!ok, "retire must be refused while a ciphertext names the key");
    assert!(err.contains("1 stored ciphertext(s) are sealed under") && err.contains("symbolon keys rewrap"), "{err}");

    let out = cli_ok(&env, &["keys", "rewrap"]).await;
    assert!(out.contains(&format!("rewrapped 1 stored ciphertext(s) under {new}")), "{out}");
    // Resumable and idempotent: a second run has nothing left to do.
    let out = cli_ok(&env, &["keys", "rewrap"]).await;
    assert!(out.contains("rewrapped 0 stored ciphertext(s)"), "{out}");
    let rows = catalog(&env).await;
    assert_eq!(rows.iter().find(|r| r.label == new).unwrap().note, "sealed=1", "{rows:#?}");

    // Now only the retiring time holds it (the server may retire it first).
    eventually(Duration::from_secs(90), "the old data key to retire", || async {
        let (ok, out, err) = cli(&env, &["keys", "retire", &old.label]).await;
        if ok {
            assert!(out.contains(&format!("retired {}", old.label)), "{out}");
            return Some(());
        }
        if err.contains("retired already") {
            return Some(());
        }
        // The server's own sync may retire it in the same instant: the CLI then refuses
        // with "changed state meanwhile" and the next round sees it retired.
        assert!(
            err.contains("has been retiring for") || err.contains("changed state meanwhile"),
            "only the time (or the server retiring it concurrently) may hold it now: {err}"
        );
        None
    })
    .await;
    assert_eq!(catalog(&env).await.iter().find(|r| r.label == old.label).unwrap().state, "retired");
    // The claims, now sealed under the new key, still open for a sign-in with scopes.
    let claims = jwks_verify(&env, &sign_in(&env, &["name"]).await.unwrap()).await.unwrap();
    assert!(claims["given_name"].is_string(), "{claims}");
    let audit = audit_records(&env).await;
    assert!(audit.iter().any(|r| r["kind"] == "management.action" && r["detail"]["action"] == "keys.rewrap"));
}

fn gen_key(token: &TestToken, purpose: &str) -> String {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../hsm/gen-key");
    let out = std::process::Command::new(script)
        .arg(purpose)
        .arg("--uri")
        .arg(token.uri())
        .env(token.conf_var, &token.conf)
        .output()
        .unwrap();
    assert!(out.status.success(), "hsm/gen-key {purpose}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[tokio::test]
async fn keys_made_by_hsm_gen_key_are_adopted_by_the_server_and_used() {
    let env = start("[audit]\ncheckpoint_every = 1\n").await;
    let mut made = Vec::new();
    for purpose in ["otp", "jwt", "saml", "data", "audit"] {
        let label = gen_key(&env.token, purpose);
        assert!(label.starts_with(&format!("symbolon-{purpose}-")), "{label}");
        made.push((purpose, label));
    }
    // The running server adopts them by itself (as next: every purpose has an active key).
    for (_, label) in &made {
        eventually(Duration::from_secs(20), "the server to adopt the key", || async {
            env.server
                .log()
                .lines()
                .any(|l| l.contains("key added to the catalog") && l.contains(label.as_str()))
                .then_some(())
        })
        .await;
    }
    for (_, label) in &made {
        let out = cli_ok(&env, &["keys", "adopt", label]).await;
        assert!(out.contains(&format!("{label} is in the catalog as next")), "{out}");
    }
    let (ok, _, err) = cli(&env, &["keys", "adopt", "my-own-key"]).await;
    assert!(!ok && err.contains("does not follow the scheme"), "{err}");
    let rows = catalog(&env).await;
    let jwt_kid = rows.iter().find(|r| r.label == made[1].1).unwrap().kid.clone();
    assert!(jwks_kids(&env).await.contains(&jwt_kid), "a next key is published");

    for (purpose, label) in &made {
        let out = cli_ok(&env, &["keys", "rotate", "--purpose", purpose, "--no-next"]).await;
        assert_eq!(&rotated(&out, "active:"), label);
        server_noticed(&env, label).await;
    }
    // Data: re-encrypt under the gen-key AES key, which must encrypt and decrypt.
    let out = cli_ok(&env, &["keys", "rewrap"]).await;
    assert!(out.contains(&format!("rewrapped 1 stored ciphertext(s) under {}", made[3].1)), "{out}");
    // OTP (HMAC), data (claims) and JWT keys from gen-key serve a whole sign-in.
    let jwt = sign_in(&env, &["name", "age"]).await.unwrap();
    assert_eq!(kid_of(&jwt), jwt_kid);
    // Audit checkpoints signed by the gen-key audit key verify.
    let verified = cli_ok(&env, &["audit", "verify"]).await;
    assert!(verified.starts_with("OK:"), "{verified}");
}

/// An AES key of our label scheme made outside Symbolon with the given attributes.
fn create_aes(session: &cryptoki::session::Session, label: &str, sensitive: bool, extractable: bool, encrypt: bool) {
    session
        .generate_key(
            &Mechanism::AesKeyGen,
            &[
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::ValueLen(32.into()),
                Attribute::Token(true),
                Attribute::Private(true),
                Attribute::Sensitive(sensitive),
                Attribute::Extractable(extractable),
                Attribute::Encrypt(encrypt),
                Attribute::Decrypt(true),
                Attribute::Label(label.as_bytes().to_vec()),
            ],
        )
        .unwrap();
}

#[tokio::test]
async fn extractable_or_non_sensitive_keys_are_refused_with_a_clear_error() {
    let env = start("").await;
    env.token.use_in_process().unwrap();
    let ctx = cryptoki::context::Pkcs11::new(&env.token.module).unwrap();
    let session = env.token.user_session(&ctx).unwrap();
    let label = "symbolon-data-20300101T000000Z";
    for (sensitive, extractable, reason) in
        [(true, true, "CKA_EXTRACTABLE is true"), (false, false, "CKA_SENSITIVE is false")]
    {
        create_aes(&session, label, sensitive, extractable, true);
        for args in [&["keys", "adopt", label][..], &["keys", "list"][..]] {
            let (ok, out, err) = cli(&env, args).await;
            assert!(!ok, "{args:?} must fail: {out}");
            assert!(err.contains(&format!("key \"{label}\" is refused: {reason}")), "{args:?}: {err}");
        }
        // The running server refuses it too and keeps serving with the catalog it has.
        eventually(Duration::from_secs(20), "the server to refuse the key", || async {
            env.server
                .log()
                .lines()
                .any(|l| l.contains("cannot re-read the key catalog") && l.contains(reason))
                .then_some(())
        })
        .await;
        sign_in(&env, &[]).await.unwrap();
        let found = session.find_objects(&[Attribute::Label(label.as_bytes().to_vec())]).unwrap();
        for h in found {
            session.destroy_object(h).unwrap();
        }
    }
    assert!(!catalog(&env).await.iter().any(|r| r.label == label));

    // A safe key that cannot do its job (a data key without CKA_ENCRYPT) is adopted
    // as next, but a rotation refuses to activate it; an unused next key may retire.
    let unusable = "symbolon-data-20300101T000001Z";
    create_aes(&session, unusable, true, false, false);
    let active = find(&catalog(&env).await, "data", "active")[0].label.clone();
    let (ok, _, err) = cli(&env, &["keys", "rotate", "--purpose", "data", "--no-next"]).await;
    assert!(!ok && err.contains(&format!("key {unusable} cannot be used as a data key")), "{err}");
    let rows = catalog(&env).await;
    assert_eq!(find(&rows, "data", "active")[0].label, active, "nothing changed");
    assert_eq!(rows.iter().find(|r| r.label == unusable).unwrap().state, "next");
    assert!(cli_ok(&env, &["keys", "retire", unusable]).await.contains(&format!("retired {unusable}")));
    sign_in(&env, &["name"]).await.unwrap();
    drop(session);
    ctx.finalize().unwrap();
}

#[tokio::test]
async fn no_key_value_can_be_read_from_the_token() {
    let env = start("").await;
    let mut labels: Vec<(String, ObjectClass)> = Vec::new();
    for purpose in ["otp", "jwt", "saml", "data", "audit"] {
        let label = gen_key(&env.token, purpose);
        let class = if matches!(purpose, "otp" | "data") { ObjectClass::SECRET_KEY } else { ObjectClass::PRIVATE_KEY };
        labels.push((label, class));
    }
    // And the keys `symbolon keys init` generated (the pairwise key among them).
    for row in catalog(&env).await {
        if !labels.iter().any(|(l, _)| *l == row.label) {
            let class = if matches!(row.purpose.as_str(), "otp" | "data" | "pairwise") {
                ObjectClass::SECRET_KEY
            } else {
                ObjectClass::PRIVATE_KEY
            };
            labels.push((row.label, class));
        }
    }
    assert_eq!(labels.len(), 11, "{labels:?}");
    env.token.use_in_process().unwrap();
    let ctx = cryptoki::context::Pkcs11::new(&env.token.module).unwrap();
    let session = env.token.user_session(&ctx).unwrap();
    for (label, class) in &labels {
        let handle =
            session.find_objects(&[Attribute::Class(*class), Attribute::Label(label.as_bytes().to_vec())]).unwrap()[0];
        // C_GetAttributeValue(CKA_VALUE) answers CKR_ATTRIBUTE_SENSITIVE.
        let info = session.get_attribute_info(handle, &[AttributeType::Value]).unwrap();
        assert!(matches!(info.as_slice(), [AttributeInfo::Sensitive]), "{label}: {info:?}");
        let attrs = session
            .get_attributes(handle, &[AttributeType::Sensitive, AttributeType::Extractable, AttributeType::Value])
            .unwrap();
        assert!(
            attrs.contains(&Attribute::Sensitive(true)) && attrs.contains(&Attribute::Extractable(false)),
            "{label}"
        );
        assert!(!attrs.iter().any(|a| matches!(a, Attribute::Value(_))), "{label}: CKA_VALUE returned");
    }
    // Wrapping a key out of the token fails: CKR_KEY_UNEXTRACTABLE.
    let wrapper = TestToken::session_aes_key(&session, &[Attribute::Wrap(true)]).unwrap();
    for (label, class) in labels.iter().filter(|(_, c)| *c == ObjectClass::SECRET_KEY) {
        let handle =
            session.find_objects(&[Attribute::Class(*class), Attribute::Label(label.as_bytes().to_vec())]).unwrap()[0];
        match session.wrap_key(&Mechanism::AesKeyWrap, wrapper, handle) {
            Err(cryptoki::error::Error::Pkcs11(rv, _)) => {
                assert_eq!(rv, env.token.unextractable_rv(*class), "{label}")
            }
            other => panic!("wrapping {label} must fail with {:?}, got {other:?}", env.token.unextractable_rv(*class)),
        }
    }
    drop(session);
    ctx.finalize().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn scheduled_rotation_runs_on_one_node_of_a_cluster_and_every_node_follows() {
    // Two nodes on PostgreSQL and Redis; the jwt key rotates every 12 s, its successor
    // published 4 s ahead.
    let stores = softhsm_tests::backends::ClusterStores::new().unwrap();
    let schedule = "[keys.schedule.jwt]\nperiod = \"12s\"\nlead = \"4s\"\n";
    let env = start(&format!("{schedule}\n{}", stores.toml())).await;
    let node2 = env.another_node().unwrap();
    let scheduled = |audit: &[Value]| -> Vec<Value> {
        audit
            .iter()
            .filter(|r| {
                r["kind"] == "key.state_changed"
                    && r["detail"]["reason"] == "rotated"
                    && r["detail"]["to"] == "active"
                    && r["actor"].as_str().is_some_and(|a| a.starts_with("node:"))
            })
            .cloned()
            .collect()
    };
    let mut signed = 0;
    eventually(Duration::from_secs(90), "two scheduled rotations", || {
        signed += 1;
        let env = &env;
        async move {
            // Sign-ins keep working throughout.
            sign_in(env, &[]).await.unwrap();
            (scheduled(&audit_records(env).await).len() >= 2).then_some(())
        }
    })
    .await;
    let audit = audit_records(&env).await;
    let rotations = scheduled(&audit);
    // One node (the lease holder) rotated, each time once.
    let actors: std::collections::BTreeSet<&str> = rotations.iter().map(|r| r["actor"].as_str().unwrap()).collect();
    assert_eq!(actors.len(), 1, "{rotations:#?}");
    let labels: std::collections::BTreeSet<&str> = rotations.iter().map(|r| r["subject"].as_str().unwrap()).collect();
    assert_eq!(labels.len(), rotations.len(), "no key activated twice: {rotations:#?}");
    // Each activated key entered the catalog (and was published) ahead of its activation:
    // recorded as "generated" by the node that made it, or as "adopted" by the other
    // node when its catalog sync saw the new token object first.
    for r in &rotations {
        let label = r["subject"].as_str().unwrap();
        let generated = audit
            .iter()
            .find(|g| g["kind"] == "key.state_changed" && g["subject"] == label && g["detail"]["from"].is_null())
            .unwrap_or_else(|| panic!("no event adding {label} to the catalog"));
        assert!(r["at"].as_i64().unwrap() - generated["at"].as_i64().unwrap() >= 4, "{generated} {r}");
    }
    // The other node follows: same JWKS.
    let node2_kids = || async {
        let jwks: Value =
            reqwest::get(format!("{}/.well-known/jwks.json", node2.public_url)).await.unwrap().json().await.unwrap();
        let mut kids: Vec<String> =
            jwks["keys"].as_array().unwrap().iter().map(|k| k["kid"].as_str().unwrap().to_string()).collect();
        kids.sort();
        kids
    };
    eventually(Duration::from_secs(20), "both nodes to publish the same keys", || async {
        let mut kids = jwks_kids(&env).await;
        kids.sort();
        (kids == node2_kids().await).then_some(())
    })
    .await;
    assert!(signed >= 2);
    let rows = catalog(&env).await;
    assert_eq!(find(&rows, "jwt", "active").len(), 1, "{rows:#?}");
    drop(node2);
    drop(env);
    drop(stores);
}

// ------------------------------------------------------------------ pairwise subjects

/// Three pairwise services in two sectors (one sector named by its origin, one set
/// explicitly) beside the public `rp1`.
const PAIRWISE_SERVICES: &str = r#"
[[services]]
id = "pw-a"
name = "Sector A"
subject_type = "pairwise"
allowed_origins = ["https://a.example"]

[[services]]
id = "pw-a2"
name = "Sector A, second service"
subject_type = "pairwise"
sector_identifier = "a.example"

[[services]]
id = "pw-b"
name = "Sector B"
subject_type = "pairwise"
sector_identifier = "b.example"
"#;

/// The `sub` of a fresh sign-in to `service`.
async fn subject(env: &SignIn, service: &str) -> String {
    let jwt = sign_in_to(env, service, &[]).await.unwrap();
    jwks_verify_for(env, &jwt, service).await.unwrap()["sub"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn pairwise_subjects_differ_by_sector_match_an_independent_hmac_and_survive_every_other_rotation() {
    use base64::Engine;
    use hmac::{Hmac, Mac};
    // A pairwise key of known value, imported before the server makes its keys, so the
    // subject can be computed outside the HSM (docs/protocol.md §13).
    let token = TestToken::new().unwrap();
    token.use_in_process().unwrap();
    let module = symbolon::keys::Module::load(&token.module).unwrap();
    let pin = symbolon::keys::HsmPin::resolve(Some(&token.pin_file)).unwrap();
    let pool =
        symbolon::keys::SessionPool::start(module, Some(token.label.clone()), None, pin, 1, 4, Duration::from_secs(5))
            .unwrap();
    let known: Vec<u8> = (0u8..32).map(|b| b.wrapping_mul(13).wrapping_add(1)).collect();
    let k = known.clone();
    pool.run(move |s| s.import_secret(symbolon::keys::KeyKind::HmacSecret, "symbolon-pairwise-20260101T000000Z", &k))
        .await
        .unwrap();
    pool.shutdown();
    // Imported from a known value, the token reports the key CKA_ALWAYS_SENSITIVE and
    // CKA_NEVER_EXTRACTABLE false: it is accepted only because keys.imported names it.
    let keys = FAST_KEYS.replacen("[keys]\n", "[keys]\nimported = [\"symbolon-pairwise-20260101T000000Z\"]\n", 1);
    let env = SignIn::start_with_token(token, &format!("{keys}\n{PAIRWISE_SERVICES}"), options()).await.unwrap();
    for row in catalog(&env).await {
        let want = if row.purpose == "pairwise" { "imported" } else { "generated" };
        assert_eq!(row.origin, want, "keys list ORIGIN of {row:?}");
    }
    let expected = |sector: &str| {
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&known).unwrap();
        mac.update(format!("symbolon-pairwise-v1\0{sector}\0{}", env.token_id).as_bytes());
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    };
    let before: Vec<String> = [
        subject(&env, "pw-a").await,
        subject(&env, "pw-a2").await,
        subject(&env, "pw-b").await,
        subject(&env, "rp1").await,
    ]
    .into();
    assert_eq!(before[0], expected("a.example"), "sub = b64u(HMAC(K_pairwise, label 0 sector 0 token_id))");
    assert_eq!(before[0], before[1], "one sector, one subject");
    assert_eq!(before[2], expected("b.example"));
    assert_ne!(before[0], before[2], "two sectors, two subjects");
    assert_eq!(before[3], env.token_id, "a public service gets the token id");
    assert!(!before[0].contains(&env.token_id) && before[0].len() == 43);
    // Every other purpose rotates; the subjects stay.
    for purpose in ["jwt", "otp", "data", "saml", "audit"] {
        let out = cli_ok(&env, &["keys", "rotate", "--purpose", purpose]).await;
        server_noticed(&env, &rotated(&out, "active:")).await;
    }
    let after: Vec<String> = [
        subject(&env, "pw-a").await,
        subject(&env, "pw-a2").await,
        subject(&env, "pw-b").await,
        subject(&env, "rp1").await,
    ]
    .into();
    assert_eq!(before, after, "pairwise subjects are stable across rotations of every other purpose");
}

#[tokio::test]
async fn the_pairwise_key_is_made_by_keys_init_and_never_rotated() {
    let env = start(PAIRWISE_SERVICES).await;
    let rows = catalog(&env).await;
    let pairwise = find(&rows, "pairwise", "active");
    assert_eq!(pairwise.len(), 1, "keys init made the pairwise key: {rows:#?}");
    let label = pairwise[0].label.clone();
    let listed: serde_json::Value = serde_json::from_str(&cli_ok(&env, &["keys", "list", "--json"]).await).unwrap();
    let record = listed["keys"].as_array().unwrap().iter().find(|k| k["label"] == label.as_str()).unwrap();
    assert_eq!(record["mechanism"], "CKM_SHA256_HMAC", "{listed}");
    let (ok, out, err) = cli(&env, &["keys", "rotate", "--purpose", "pairwise"]).await;
    assert!(!ok, "rotating the pairwise key is refused: {out}");
    assert!(err.contains("never rotated") && err.contains("pairwise subject"), "the reason is given: {err}");
    let (ok, out, err) = cli(&env, &["keys", "generate", "--purpose", "pairwise"]).await;
    assert!(!ok, "a second pairwise key is refused: {out}");
    assert!(err.contains(&label) && err.contains("never rotated"), "{err}");
    let (ok, _, err) = cli(&env, &["keys", "retire", &label]).await;
    assert!(!ok && err.contains("active"), "the pairwise key cannot be retired: {err}");
    let rows = catalog(&env).await;
    assert_eq!(find(&rows, "pairwise", "active").len(), 1);
    assert!(find(&rows, "pairwise", "next").is_empty() && find(&rows, "pairwise", "retiring").is_empty());
    let listed = cli_ok(&env, &["keys", "list"]).await;
    assert!(listed.contains("pairwise never rotated"), "{listed}");
    // A scheduled rotation of it is a configuration error.
    let bad = env.server.state_dir.join("bad.toml");
    let text = std::fs::read_to_string(&env.server.config_path).unwrap();
    std::fs::write(&bad, format!("{text}\n[keys.schedule.pairwise]\nperiod = \"30days\"\n")).unwrap();
    let (ok, out, err) = cli(&env, &["config", "check", bad.to_str().unwrap()]).await;
    assert!(!ok && format!("{out}{err}").contains("keys.schedule.pairwise"), "{out}{err}");
}
