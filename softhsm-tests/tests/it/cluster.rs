//! A cluster: `symbolon serve` nodes sharing PostgreSQL and Redis (issue 6). Two
//! nodes serving one sign-in, shared nonces and lockouts, the atomic verify across
//! nodes, Redis and PostgreSQL going away and coming back, and the audit trail's
//! tamper evidence.

use std::time::{Duration, Instant};

use futures_util::SinkExt;
use serde_json::{Value, json};
use softhsm_tests::backends::{ClusterStores, PgDatabase, PrivateRedis, RedisPrefix, TcpCut, pg_addr};
use softhsm_tests::device::client::DeviceClient;
use softhsm_tests::device::{Decision, Device, EnrollPayload, Push, unix_now};
use softhsm_tests::signin::{SignIn, Ws, next_message};
use softhsm_tests::{ServerOptions, TestServer, symbolon_cli};
use tokio_tungstenite::tungstenite::Message;

async fn connect(server: &TestServer, session_id: &str, token: &str) -> Ws {
    let url = format!("{}/v1/auth/sessions/{session_id}/ws", server.public_url.replace("http://", "ws://"));
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    ws.send(Message::Text(json!({"type": "hello", "browser_token": token}).to_string().into())).await.unwrap();
    ws
}

async fn initiate(server: &TestServer, token_id: &str) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(format!("{}/v1/auth/initiate", server.public_url))
        .json(&json!({"token_id": token_id, "service_id": "rp1", "scopes": ["name"]}))
        .timeout(Duration::from_secs(20))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

async fn readyz(server: &TestServer) -> u16 {
    match reqwest::Client::new()
        .get(format!("{}/readyz", server.admin_url))
        .timeout(Duration::from_secs(10))
        .send()
        .await
    {
        Ok(r) => r.status().as_u16(),
        Err(_) => 0,
    }
}

async fn wait_readyz(server: &TestServer, want: u16, within: Duration) {
    let start = Instant::now();
    loop {
        let got = readyz(server).await;
        if got == want {
            return;
        }
        assert!(start.elapsed() < within, "/readyz still {got}, wanted {want} after {within:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A whole sign-in on `server` ending approved: the browser's socket, the device's
/// pull and verify.
async fn sign_in(env: &SignIn, server: &TestServer) {
    let (status, started) = initiate(server, &env.token_id).await;
    assert_eq!(status, 201, "{started}");
    let sid = started["session_id"].as_str().unwrap();
    let mut ws = connect(server, sid, started["browser_token"].as_str().unwrap()).await;
    let otp = next_message(&mut ws).await.unwrap()["otp"].as_str().unwrap().to_string();
    let device = DeviceClient::new(&server.public_url).unwrap();
    let r = device.verify(&env.device, sid, &otp, Decision::Approve, Some(vec!["name".into()])).await.unwrap();
    assert_eq!(r, json!({"status": "approved"}));
    assert_eq!(next_message(&mut ws).await.unwrap()["type"], "approved");
}

async fn cluster(extra: &str) -> (ClusterStores, SignIn, TestServer) {
    let stores = ClusterStores::new().unwrap();
    let env = SignIn::start(&format!("{}\n{extra}", stores.toml()), ServerOptions::default()).await.unwrap();
    let b = env.another_node().unwrap();
    (stores, env, b)
}

#[tokio::test]
async fn browser_on_one_node_device_on_the_other() {
    let (_stores, env, b) = cluster("").await;
    let a = &env.server;
    let device_b = DeviceClient::new(&b.public_url).unwrap();
    for round in 0..3 {
        let (status, started) = initiate(a, &env.token_id).await;
        assert_eq!(status, 201, "{started}");
        let sid = started["session_id"].as_str().unwrap();
        let bt = started["browser_token"].as_str().unwrap();
        let mut ws = connect(a, sid, bt).await;
        let otp = next_message(&mut ws).await.unwrap()["otp"].as_str().unwrap().to_string();
        // Node B sees node A's session, with the same OTP (derived in the one HSM).
        let pending = device_b.pending(&env.device).await.unwrap();
        assert_eq!(pending.sessions.len(), 1, "round {round}");
        assert_eq!(pending.sessions[0].otp, otp);
        let r = device_b.verify(&env.device, sid, &otp, Decision::Approve, Some(vec!["name".into()])).await.unwrap();
        assert_eq!(r, json!({"status": "approved"}));
        // The terminal event crosses nodes: A's socket hears B's verify at once.
        let approved = next_message(&mut ws).await.unwrap();
        assert_eq!(approved["type"], "approved", "round {round}");
        assert_eq!(next_message(&mut ws).await.unwrap_err(), Some(1000));
        let polled: Value = reqwest::Client::new()
            .get(format!("{}/v1/auth/sessions/{sid}", b.public_url))
            .bearer_auth(bt)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(polled, json!({"status": "approved", "id_token": approved["id_token"]}));
    }
}

const BREAK_GLASS: &str = "5d0a3c9e8b7f6a5e4d3c2b1a0f9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a2f1e";

/// A management call with the break-glass token: its status.
async fn manage(server: &TestServer, path: &str, body: Value) -> u16 {
    let r = reqwest::Client::new()
        .post(format!("{}/api/management/v1{path}", server.admin_url))
        .bearer_auth(BREAK_GLASS)
        .json(&body)
        .timeout(Duration::from_secs(20))
        .send()
        .await
        .unwrap();
    r.status().as_u16()
}

/// Issue 21 item 2: each node keeps the enrollments its sign-ins read in memory; a
/// change made through one node reaches the other's cache at once, through Redis.
#[tokio::test]
async fn a_suspension_on_one_node_is_seen_by_the_next_verify_on_the_other() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("break-glass");
    std::fs::write(&file, format!("{BREAK_GLASS}\n")).unwrap();
    let (_stores, env, b) = cluster(&format!("[management]\nbreak_glass_token_file = \"{}\"", file.display())).await;
    let a = &env.server;
    let device_b = DeviceClient::new(&b.public_url).unwrap();
    let device_id = env.device.device_id();
    // Two rounds of two initiates each: `initiate_per_token_per_minute` is 5.
    for round in 0..2 {
        // B reads the device (and caches it) for a sign-in and a pending session.
        sign_in(&env, &b).await;
        let (status, started) = initiate(&b, &env.token_id).await;
        assert_eq!(status, 201, "{started}");
        let sid = started["session_id"].as_str().unwrap();
        let pending = device_b.pending(&env.device).await.unwrap();
        assert_eq!(pending.sessions.len(), 1, "round {round}");
        let otp = pending.sessions[0].otp.clone();

        assert_eq!(manage(a, &format!("/credentials/{device_id}/suspend"), json!({"reason": "lost"})).await, 200);
        let e = device_b.verify(&env.device, sid, &otp, Decision::Approve, None).await.unwrap_err();
        assert_eq!(e.problem_code(), (403, "device_inactive".into()), "round {round}: B's next verify");
        let e = device_b.pending(&env.device).await.unwrap_err();
        assert_eq!(e.problem_code(), (403, "device_inactive".into()), "round {round}");

        assert_eq!(manage(a, &format!("/credentials/{device_id}/activate"), json!({})).await, 200);
        let r = device_b.verify(&env.device, sid, &otp, Decision::Approve, None).await.unwrap();
        assert_eq!(r, json!({"status": "approved"}), "round {round}: activated on A, B takes it at once");
    }
    // A command-line change announces itself through Redis too.
    let out =
        symbolon_cli(&env.token, &a.config_path, &["users", "suspend", &env.token_id, "--reason", "cli"]).unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let e = device_b.pending(&env.device).await.unwrap_err();
    assert_eq!(e.problem_code(), (403, "device_inactive".into()), "B hears the command's suspension");
    // Deleted on A: B no longer knows the device, and initiate on B finds no device to push to.
    let out =
        symbolon_cli(&env.token, &a.config_path, &["users", "delete", &env.token_id, "--reason", "gone"]).unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let e = device_b.pending(&env.device).await.unwrap_err();
    assert_eq!(e.problem_code(), (401, "unknown_device".into()));
}

/// The cache at work: with the database cut, a node still serves the device it has
/// cached, and answers `503 unavailable` fast for what it must read.
#[tokio::test]
async fn a_cached_device_needs_no_database_round_trip() {
    let pg = PgDatabase::create().unwrap();
    let cut = TcpCut::start(pg_addr().unwrap()).unwrap();
    let prefix = RedisPrefix::new();
    let env = SignIn::start(&format!("{}\n{}", pg.toml_via(cut.port), prefix.toml()), ServerOptions::default())
        .await
        .unwrap();
    let server = &env.server;
    sign_in(&env, server).await;
    // The approval's audit event is appended in the background: let it land first (a
    // node whose last append failed reads enrollments from the database).
    tokio::time::sleep(Duration::from_secs(1)).await;
    cut.cut();
    for _ in 0..3 {
        let pending = env.device_client.pending(&env.device).await.unwrap();
        assert!(pending.sessions.is_empty());
    }
    let start = Instant::now();
    let e = env.device_client.pending(&Device::generate()).await.unwrap_err();
    assert_eq!(e.problem_code(), (503, "unavailable".into()), "an unknown device must be read");
    assert!(start.elapsed() < Duration::from_secs(5), "took {:?}", start.elapsed());
    cut.restore();
}

#[tokio::test]
async fn nonce_issued_by_one_node_is_consumed_by_the_other() {
    let (_stores, env, b) = cluster("").await;
    let client_a = DeviceClient::new(&env.server.public_url).unwrap();
    let client_b = DeviceClient::new(&b.public_url).unwrap();
    let seal = env.chain.manifest.seal("valid_minimal").unwrap();
    let device = Device::generate();
    let challenge = client_a.challenge().await.unwrap();
    let payload =
        EnrollPayload { vds: seal.vds.clone(), push: Push::None, device_name: "second".into(), iat: unix_now() };
    let jws = device.enrollment_jws(&challenge.nonce, &payload);
    let enrolled: Value = client_b.post_jose("/v1/enroll", jws.clone()).await.unwrap();
    assert_eq!(enrolled["token_id"], seal.tid.clone().unwrap());
    // Spent on B, so A refuses it too.
    let e = client_a.post_jose::<Value>("/v1/enroll", jws).await.unwrap_err();
    assert_eq!(e.problem_code(), (400, "invalid_nonce".into()));
    // And the enrollment B stored is A's to use.
    assert_eq!(client_a.pending(&device).await.unwrap().sessions.len(), 0);
}

#[tokio::test]
async fn lockout_is_counted_across_both_nodes() {
    let (_stores, env, b) = cluster("").await;
    let a = &env.server;
    let clients = [DeviceClient::new(&a.public_url).unwrap(), DeviceClient::new(&b.public_url).unwrap()];
    // Two sessions, failures spread over both nodes: 3 + 2 failed verifies = 10 units.
    let mut sessions = Vec::new();
    for server in [a, &b] {
        let (status, started) = initiate(server, &env.token_id).await;
        assert_eq!(status, 201);
        sessions.push(started["session_id"].as_str().unwrap().to_string());
    }
    let pending = clients[0].pending(&env.device).await.unwrap();
    let otp = &pending.sessions[0].otp;
    let wrong = if otp == "000000" { "000001" } else { "000000" };
    for i in 0..5 {
        let sid = &sessions[usize::from(i >= 3)];
        let e = clients[i % 2].verify(&env.device, sid, wrong, Decision::Approve, None).await.unwrap_err();
        assert_eq!(e.problem_code(), (401, "otp_mismatch".into()), "failure {i}");
    }
    for server in [a, &b] {
        let (status, body) = initiate(server, &env.token_id).await;
        assert_eq!((status, body["code"].as_str().unwrap()), (429, "locked_out"), "{body}");
    }
}

#[tokio::test]
async fn concurrent_double_verify_across_nodes_exactly_one_wins() {
    let (_stores, env, b) = cluster("").await;
    let client_a = DeviceClient::new(&env.server.public_url).unwrap();
    let client_b = DeviceClient::new(&b.public_url).unwrap();
    for round in 0..5 {
        let (_, started) = initiate(&env.server, &env.token_id).await;
        let sid = started["session_id"].as_str().unwrap().to_string();
        let mut ws = connect(&b, &sid, started["browser_token"].as_str().unwrap()).await;
        let otp = next_message(&mut ws).await.unwrap()["otp"].as_str().unwrap().to_string();
        let approve = client_a.verify(&env.device, &sid, &otp, Decision::Approve, Some(vec!["name".into()]));
        let reject = client_b.verify(&env.device, &sid, &otp, Decision::Reject, None);
        let (x, y) = tokio::join!(approve, reject);
        assert_eq!(usize::from(x.is_ok()) + usize::from(y.is_ok()), 1, "round {round}: {x:?} {y:?}");
        let (loser, outcome) = match (x, y) {
            (Ok(_), Err(e)) => (e, "approved"),
            (Err(e), Ok(_)) => (e, "rejected"),
            other => panic!("round {round}: {other:?}"),
        };
        assert_eq!(loser.problem_code(), (409, "session_closed".into()));
        // The browser hears the winner, and only it.
        assert_eq!(next_message(&mut ws).await.unwrap()["type"], outcome, "round {round}");
    }
}

#[tokio::test]
async fn redis_restarted_mid_flow_ends_sessions_and_the_node_recovers() {
    let mut redis = PrivateRedis::start().unwrap();
    let pg = PgDatabase::create().unwrap();
    let prefix = RedisPrefix::on(&redis.url());
    let env = SignIn::start(&format!("{}\n{}", pg.toml(), prefix.toml()), ServerOptions::default()).await.unwrap();
    let server = &env.server;
    sign_in(&env, server).await;

    let (_, started) = initiate(server, &env.token_id).await;
    let sid = started["session_id"].as_str().unwrap().to_string();
    let mut ws = connect(server, &sid, started["browser_token"].as_str().unwrap()).await;
    let otp = next_message(&mut ws).await.unwrap()["otp"].as_str().unwrap().to_string();

    redis.stop().unwrap();
    // The browser learns the session is gone (closed "unavailable"), never approved.
    match next_message(&mut ws).await {
        Err(Some(1011)) => {}
        Ok(m) if m["type"] == "expired" => {}
        other => panic!("browser got {other:?}"),
    }
    wait_readyz(server, 503, Duration::from_secs(5)).await;
    let start = Instant::now();
    let (status, body) = initiate(server, &env.token_id).await;
    assert_eq!((status, body["code"].as_str().unwrap()), (503, "unavailable"), "{body}");
    assert!(start.elapsed() < Duration::from_secs(3), "initiate took {:?}", start.elapsed());
    let e = env.device_client.verify(&env.device, &sid, &otp, Decision::Approve, None).await.unwrap_err();
    assert_eq!(e.problem_code(), (503, "unavailable".into()));

    // Redis back, empty: the node recovers without a restart.
    redis.start_again().unwrap();
    wait_readyz(server, 200, Duration::from_secs(15)).await;
    let e = env.device_client.verify(&env.device, &sid, &otp, Decision::Approve, None).await.unwrap_err();
    assert_eq!(e.problem_code(), (404, "session_not_found".into()), "the lost session is never approved");
    // Nothing durable was lost: the device is still enrolled and signs in, and the
    // event subscription is back (the socket hears the verify at once).
    sign_in(&env, server).await;
}

#[tokio::test]
async fn postgres_unreachable_gives_503_fast_and_the_node_recovers() {
    let pg = PgDatabase::create().unwrap();
    let cut = TcpCut::start(pg_addr().unwrap()).unwrap();
    let prefix = RedisPrefix::new();
    let env = SignIn::start(&format!("{}\n{}", pg.toml_via(cut.port), prefix.toml()), ServerOptions::default())
        .await
        .unwrap();
    let server = &env.server;
    sign_in(&env, server).await;

    cut.cut();
    wait_readyz(server, 503, Duration::from_secs(8)).await;
    let start = Instant::now();
    // Token ids and devices this node has not cached (see the test above for those it has).
    let (status, body) = initiate(server, "UNSEEN-TOKEN").await;
    assert_eq!((status, body["code"].as_str().unwrap()), (503, "unavailable"), "{body}");
    assert!(start.elapsed() < Duration::from_secs(5), "initiate took {:?}", start.elapsed());
    let e = env.device_client.pending(&Device::generate()).await.unwrap_err();
    assert_eq!(e.problem_code(), (503, "unavailable".into()));

    cut.restore();
    wait_readyz(server, 200, Duration::from_secs(15)).await;
    sign_in(&env, server).await;
}

fn cli(env: &SignIn, args: &[&str]) -> (bool, String) {
    let out = symbolon_cli(&env.token, &env.server.config_path, args).unwrap();
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

#[tokio::test]
async fn audit_chain_verifies_and_names_the_first_broken_link() {
    let stores = ClusterStores::new().unwrap();
    let extra = format!("{}\n[audit]\ncheckpoint_every = 1\n", stores.toml());
    let env = SignIn::start(&extra, ServerOptions::default()).await.unwrap();
    let db = &stores.pg;
    // The enrollment's event, with a checkpoint signed right after it.
    let start = Instant::now();
    // (Other events, e.g. the trust lists loaded at start, may come first.)
    while db.sql("SELECT count(*) FROM audit_checkpoints").unwrap().trim().parse::<i64>().unwrap_or(0) < 1 {
        assert!(start.elapsed() < Duration::from_secs(10), "no checkpoint signed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let config = symbolon::config::Config::load(Some(&env.server.config_path)).unwrap();
    let store = symbolon::store::open_durable(&config.database, &config.server.state_dir).await.unwrap();
    for i in 0..4 {
        let e = symbolon::store::AuditEvent::new(
            unix_now(),
            "test.event",
            "system",
            format!("subject-{i}"),
            json!({"i": i}),
        );
        store.append_audit(&e).await.unwrap();
    }
    let (ok, out) = cli(&env, &["audit", "verify"]);
    assert!(ok, "{out}");
    // Events recorded without checkpoints still verify (how many are checkpointed
    // depends on when the server's checkpointing ran).
    assert!(out.starts_with("OK:"), "{out}");

    let (ok, out) = cli(&env, &["audit", "export", "--since", "1h"]);
    assert!(ok, "{out}");
    let lines: Vec<Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert!(lines.len() >= 5, "{out}");
    let enrolled = lines.iter().find(|l| l["kind"] == "enrollment.created").expect("enrollment event");
    assert_eq!(enrolled["subject"], env.token_id.as_str());
    assert_eq!(lines[0]["seq"], 1);
    for pair in lines.windows(2) {
        assert_eq!(pair[1]["prev_hash"], pair[0]["hash"]);
    }
    for secret in ["JANE", "CITIZEN", "PA1234567"] {
        assert!(!out.contains(secret), "claim value {secret} in the audit trail");
    }

    // The database refuses to change the trail...
    assert!(db.sql("UPDATE audit SET subject = 'mallory' WHERE seq = 3").is_err());
    // ...so a superuser disables the trigger first; verify still names the record.
    let tamper = |sql: &str| {
        db.sql(&format!(
            "ALTER TABLE audit DISABLE TRIGGER audit_append_only; {sql}; ALTER TABLE audit ENABLE TRIGGER audit_append_only"
        ))
        .unwrap()
    };
    let original = db.sql("SELECT subject FROM audit WHERE seq = 3").unwrap().trim().to_string();
    tamper("UPDATE audit SET subject = 'mallory' WHERE seq = 3");
    let (ok, out) = cli(&env, &["audit", "verify"]);
    assert!(!ok, "{out}");
    assert!(out.contains("BROKEN at seq 3: hash does not match"), "{out}");
    tamper(&format!("UPDATE audit SET subject = '{original}' WHERE seq = 3"));
    assert!(cli(&env, &["audit", "verify"]).0);
    // A record taken out of the middle.
    tamper("DELETE FROM audit WHERE seq = 2");
    let (ok, out) = cli(&env, &["audit", "verify"]);
    assert!(!ok, "{out}");
    assert!(out.contains("BROKEN at seq 2: record 2 is missing"), "{out}");
    // A forged checkpoint signature.
    db.sql(
        "ALTER TABLE audit_checkpoints DISABLE TRIGGER audit_checkpoints_append_only;
         UPDATE audit_checkpoints SET signature = 'AAAA' || substr(signature, 5);
         ALTER TABLE audit_checkpoints ENABLE TRIGGER audit_checkpoints_append_only",
    )
    .unwrap();
    let (ok, out) = cli(&env, &["audit", "verify"]);
    // The walk reports the first broken link in seq order: the forged checkpoint when
    // it covers seq 1 (the usual case), else the record still missing at seq 2.
    let first_checkpoint = db.sql("SELECT min(seq) FROM audit_checkpoints").unwrap().trim().to_string();
    if first_checkpoint == "1" {
        assert!(!ok && out.contains("BROKEN at seq 1: checkpoint 1 signature does not verify"), "{out}");
    } else {
        assert!(!ok && out.contains("BROKEN at seq 2: record 2 is missing"), "{out}");
    }
}

#[tokio::test]
async fn audit_on_sqlite_and_migrate_as_a_separate_step() {
    let env = SignIn::start("[audit]\ncheckpoint_every = 1\n", ServerOptions::default()).await.unwrap();
    let start = Instant::now();
    loop {
        let (ok, out) = cli(&env, &["audit", "verify"]);
        assert!(ok, "{out}");
        // The enrollment's event (and the trust lists' at start), each checkpointed.
        if out.starts_with("OK:")
            && out.contains(", 0 events after the last checkpoint")
            && !out.contains("OK: 0 events")
        {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "{out}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // PostgreSQL: `migrate` is idempotent, and `serve` with auto_migrate = false does
    // not migrate (so it cannot start on an empty database).
    let pg = PgDatabase::create().unwrap();
    let toml = format!("{}auto_migrate = false\n", pg.toml());
    let err =
        TestServer::start(&env.token, ServerOptions { extra_toml: toml.clone(), no_keys: true, ..Default::default() });
    assert!(err.is_err());
    assert_eq!(pg.sql("SELECT count(*) FROM pg_tables WHERE tablename = 'enrollments'").unwrap().trim(), "0");
    let dir = tempfile::tempdir().unwrap();
    let config = softhsm_tests::write_config(dir.path(), &env.token, 1, 2, &toml).unwrap();
    for _ in 0..2 {
        let out = symbolon_cli(&env.token, &config, &["migrate"]).unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    let migrations = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../migrations/postgres")).unwrap().count();
    assert_eq!(pg.sql("SELECT count(*) FROM _sqlx_migrations").unwrap().trim(), migrations.to_string());
}

/// Roles of one test, dropped (after its database) when the test ends.
struct Roles(Vec<String>);

impl Drop for Roles {
    fn drop(&mut self) {
        for r in &self.0 {
            let _ = softhsm_tests::backends::psql("postgres", &format!("DROP ROLE IF EXISTS {r}"));
        }
    }
}

#[tokio::test]
async fn two_roles_the_runtime_role_cannot_change_the_audit_trail() {
    let suffix = &symbolon::ids::short_id().to_lowercase().replace(['-', '_'], "")[..8];
    let (owner, runtime) = (format!("symbolon_owner_{suffix}"), format!("symbolon_rt_{suffix}"));
    let roles = Roles(vec![owner.clone(), runtime.clone()]);
    let db = PgDatabase::create().unwrap();
    softhsm_tests::backends::psql(
        "postgres",
        &format!(
            "CREATE ROLE {owner} LOGIN PASSWORD 'owner-pw'; CREATE ROLE {runtime} LOGIN PASSWORD 'runtime-pw';
             ALTER DATABASE {} OWNER TO {owner}",
            db.name
        ),
    )
    .unwrap();
    let addr = pg_addr().unwrap();
    let url = |role: &str, pw: &str| format!("postgres://{role}:{pw}@{addr}/{}", db.name);
    let db_toml = |u: &str| format!("[database]\nurl = \"{u}\"\ntls = \"disable\"\nauto_migrate = false\n");

    // The owner migrates and grants (the documented script).
    let token = softhsm_tests::TestToken::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = softhsm_tests::write_config(dir.path(), &token, 1, 2, &db_toml(&url(&owner, "owner-pw"))).unwrap();
    let out = symbolon_cli(&token, &config, &["migrate"]).unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let grants = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/postgres-runtime-role.sql");
    let out = std::process::Command::new("psql")
        .arg(url(&owner, "owner-pw"))
        .args(["-q", "-v", &format!("runtime={runtime}"), "-f", grants])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    // The runtime role runs the server: keys, enrollment (with its audit event), sign-in.
    // Its password comes from a file, as docs/cluster.md recommends.
    let redis = RedisPrefix::new();
    let password_file = dir.path().join("db-password");
    std::fs::write(&password_file, "runtime-pw\n").unwrap();
    let runtime_toml = format!(
        "{}password_file = \"{}\"\n",
        db_toml(&format!("postgres://{runtime}@{addr}/{}", db.name)),
        password_file.display()
    );
    let extra = format!("{runtime_toml}\n{}", redis.toml());
    let env = SignIn::start_with_token(token, &extra, ServerOptions::default()).await.unwrap();
    sign_in(&env, &env.server).await;

    // ...and may add to the audit trail, never change it.
    let as_runtime = |sql: &str| {
        std::process::Command::new("psql").arg(url(&runtime, "runtime-pw")).args(["-Atqc", sql]).output().unwrap()
    };
    // The enrollment and the sign-in were recorded by the runtime role.
    let kinds = as_runtime("SELECT string_agg(kind, ' ' ORDER BY seq) FROM audit");
    let kinds = String::from_utf8_lossy(&kinds.stdout).to_string();
    assert!(kinds.contains("enrollment.created") && kinds.contains("auth.approved"), "{kinds}");
    for sql in ["UPDATE audit SET kind = 'x'", "DELETE FROM audit", "TRUNCATE audit", "DELETE FROM audit_checkpoints"] {
        let out = as_runtime(sql);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains("permission denied"), "{sql}: {err}");
    }
    // Nor its monthly partitions (migration 0008): no privilege on them, no ownership to
    // detach or drop one, no right to run the maintenance function.
    let now = time::OffsetDateTime::now_utc();
    let current = format!("audit_y{:04}m{:02}", now.year(), u8::from(now.month()));
    for sql in [
        "DROP TABLE audit".to_string(),
        format!("DROP TABLE {current}"),
        "DROP TABLE audit_default".to_string(),
        format!("ALTER TABLE audit DETACH PARTITION {current}"),
        format!("DELETE FROM {current}"),
        format!("UPDATE {current} SET kind = 'x'"),
        format!("TRUNCATE {current}"),
        "SELECT audit_maintain_partitions(0, 3)".to_string(),
    ] {
        let out = as_runtime(&sql);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && (err.contains("permission denied") || err.contains("must be owner")),
            "{sql}: {err}"
        );
    }
    let count = |out: std::process::Output| String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert_eq!(count(as_runtime(&format!("SELECT count(*) FROM pg_class WHERE relname = '{current}'"))), "1");
    // `audit maintain` needs the owner's credentials, as `migrate` does.
    let out = symbolon_cli(&env.token, &env.server.config_path, &["audit", "maintain"]).unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success() && text.contains("does not own the audit table"), "{text}");
    let out = symbolon_cli(&env.token, &config, &["audit", "maintain"]).unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.contains("partitions:"), "{text}");
    drop(env);
    drop(db);
    drop(roles);
}

#[tokio::test]
async fn audit_verify_refuses_a_checkpoint_signed_by_a_key_that_is_not_an_audit_key() {
    // The JWT key signs what clients ask for; a checkpoint it signed proves nothing, even
    // though its signature verifies with a key of the same token.
    let env =
        SignIn::start("[audit]\ncheckpoint_every = 100000\ncheckpoint_interval = \"1h\"\n", ServerOptions::default())
            .await
            .unwrap();
    let config = symbolon::config::Config::load(Some(&env.server.config_path)).unwrap();
    let store = symbolon::store::open_durable(&config.database, &config.server.state_dir).await.unwrap();
    let (seq, hash) = store.audit_head().await.unwrap().unwrap();
    let jwt = store
        .list_keys()
        .await
        .unwrap()
        .into_iter()
        .find(|k| k.purpose == symbolon::keyring::KeyPurpose::Jwt && k.state == symbolon::keyring::KeyState::Active)
        .unwrap();
    env.token.use_in_process().unwrap();
    let hsm = config.hsm.clone();
    let pool = tokio::task::spawn_blocking(move || symbolon::keys::open_pool(&hsm)).await.unwrap().unwrap();
    let ring = symbolon::keyring::KeyRing::open(pool.clone(), store.clone(), unix_now()).await.unwrap();
    let at = unix_now();
    let message = symbolon::store::audit::checkpoint_message(seq, &hash, at, &jwt.label);
    let signature = ring.sign_with(&jwt.label, message).await.unwrap();
    tokio::task::spawn_blocking(move || pool.shutdown()).await.unwrap();
    let forged = symbolon::store::AuditCheckpoint {
        seq,
        hash,
        at,
        key_label: jwt.label.clone(),
        signature: softhsm_tests::jose::b64u(&signature),
    };
    assert!(store.insert_checkpoint(&forged).await.unwrap());
    let (ok, out) = cli(&env, &["audit", "verify"]);
    assert!(!ok, "{out}");
    assert!(
        out.contains(&format!(
            "BROKEN at seq {seq}: checkpoint {seq}: {} is not an audit key of the catalog",
            jwt.label
        )),
        "{out}"
    );
}
