//! Signed audit archives, retention and backup (issue 20, docs/operations.md "Audit
//! archives and retention", docs/backup.md): `symbolon audit archive | verify
//! --archive | maintain` on SQLite and PostgreSQL with a real SoftHSM2 audit key, and
//! `symbolon backup` → wipe → restore → verify, enrollment and sign-in.

use std::path::{Path, PathBuf};

use softhsm_tests::backends::PgDatabase;
use softhsm_tests::device::Decision;
use softhsm_tests::signin::SignIn;
use softhsm_tests::{ServerOptions, TestToken, free_ports, symbolon_cli, write_config};
use symbolon::store::{AuditEvent, DatabaseConfig, open_durable};

/// The database under test, for SQL behind the server's back.
enum Db {
    Sqlite(PathBuf),
    Pg(PgDatabase),
}

impl Db {
    async fn sql(&self, sql: &str) -> Result<String, String> {
        match self {
            Db::Sqlite(path) => {
                let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", path.display())).await.unwrap();
                let rows = sqlx::raw_sql(sql).fetch_all(&pool).await.map_err(|e| e.to_string());
                pool.close().await;
                Ok(rows?.first().map(|r| sqlx::Row::get::<i64, _>(r, 0).to_string()).unwrap_or_default())
            }
            Db::Pg(db) => db.sql(sql).map(|s| s.trim().to_string()).map_err(|e| e.to_string()),
        }
    }

    async fn int(&self, sql: &str) -> i64 {
        self.sql(sql).await.unwrap().parse().unwrap()
    }
}

struct Setup {
    token: TestToken,
    config: PathBuf,
    db: Db,
    _dir: tempfile::TempDir,
}

impl Setup {
    /// `symbolon ARGS` with this configuration: (success, stdout + stderr).
    fn cli(&self, args: &[&str]) -> (bool, String) {
        let out = symbolon_cli(&self.token, &self.config, args).unwrap();
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        (out.status.success(), text)
    }

    fn ok(&self, args: &[&str]) -> String {
        let (ok, out) = self.cli(args);
        assert!(ok, "symbolon {args:?} failed:\n{out}");
        out
    }

    fn refused(&self, args: &[&str], needle: &str) -> String {
        let (ok, out) = self.cli(args);
        assert!(!ok && out.contains(needle), "symbolon {args:?} should fail with {needle:?}:\n{out}");
        out
    }
}

/// Unix seconds of `day` (1-based) of `month` 2026, noon UTC.
fn day_of(month: u8, day: u8) -> i64 {
    let d = time::Date::from_calendar_date(2026, time::Month::try_from(month).unwrap(), day).unwrap();
    d.midnight().assume_utc().unix_timestamp() + 12 * 3600
}

/// A token with keys and a database holding ten events in each of January, February
/// and March 2026, then the key events of `keys init` (now).
async fn setup(postgres: bool) -> Setup {
    let stamps: Vec<i64> = (1..=3u8).flat_map(|month| (0..10u8).map(move |i| day_of(month, 1 + i))).collect();
    setup_with(postgres, &stamps).await
}

/// A token with keys and a database holding one event stamped at each of `stamps`
/// (subjects `m<month>-<i>`), then the key events of `keys init` (now).
async fn setup_with(postgres: bool, stamps: &[i64]) -> Setup {
    let token = TestToken::new().unwrap();
    let dir = tempfile::Builder::new().prefix("symbolon-archive-").tempdir().unwrap();
    let pg = postgres.then(|| PgDatabase::create().unwrap());
    let db_toml = pg.as_ref().map(PgDatabase::toml).unwrap_or_default();
    let [public, admin] = free_ports().unwrap();
    let config =
        write_config(dir.path(), &token, public, admin, &format!("{db_toml}\n[audit]\nretention_months = 3\n"))
            .unwrap();
    let state = dir.path().join("state");
    let database = DatabaseConfig { url: pg.as_ref().map(PgDatabase::url).unwrap_or_default(), ..Default::default() };
    let store = open_durable(&database, &state).await.unwrap();
    store.migrate().await.unwrap();
    let mut per_month = std::collections::BTreeMap::<u8, u32>::new();
    for &at in stamps {
        let month = u8::from(time::OffsetDateTime::from_unix_timestamp(at).unwrap().month());
        let i = per_month.entry(month).or_default();
        let e = AuditEvent::new(at, "test.event", "system", format!("m{month}-{i}"), serde_json::json!({"n": *i}));
        *i += 1;
        store.append_audit(&e).await.unwrap();
    }
    drop(store);
    let db = match pg {
        Some(pg) => Db::Pg(pg),
        None => Db::Sqlite(state.join("symbolon.db")),
    };
    let s = Setup { token, config, db, _dir: dir };
    s.ok(&["keys", "init"]);
    s
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

async fn archive_tamper_and_retention(postgres: bool) {
    let s = setup(postgres).await;
    let base = tempfile::tempdir().unwrap();
    let archive = base.path().join("archive");
    let a = archive.to_str().unwrap();
    let total = s.db.int("SELECT count(*) FROM audit").await;
    assert!(total > 30, "{total}");
    if postgres {
        // The months of 2026 were appended after the migration made the current and
        // the next three months' partitions: they wait in the default partition until
        // maintenance moves them into partitions of their own, chain intact.
        assert_eq!(s.db.int("SELECT count(*) FROM audit_default").await, 30);
        let out = s.ok(&["audit", "maintain"]);
        assert!(out.contains("partitions: created 2026-01, 2026-02, 2026-03 (30 records moved"), "{out}");
        assert_eq!(s.db.int("SELECT count(*) FROM audit_default").await, 0);
        for month in ["01", "02", "03"] {
            assert_eq!(s.db.int(&format!("SELECT count(*) FROM audit_y2026m{month}")).await, 10);
        }
        assert_eq!(s.db.int("SELECT count(*) FROM audit").await, total + 1);
        assert_eq!(
            s.db.int("SELECT count(*) FROM audit WHERE kind = 'audit.partitions_maintained' AND actor = 'operator'")
                .await,
            1
        );
        assert!(s.ok(&["audit", "maintain"]).contains("the current and the next 3 months are ready"));
        assert!(s.ok(&["audit", "verify"]).starts_with("OK: "));
    }

    // Only ended months; a bad month is refused with its reason.
    s.refused(&["audit", "archive", "--through", "2026-13", "--out", a], "not a month");
    let this_month = time::OffsetDateTime::now_utc();
    let current = format!("{:04}-{:02}", this_month.year(), u8::from(this_month.month()));
    s.refused(&["audit", "archive", "--through", &current, "--out", a], "has not ended yet");

    let out = s.ok(&["audit", "archive", "--through", "2026-02", "--out", a]);
    assert!(out.contains("archived 2026-01: seq 1..=10 (10 events)"), "{out}");
    assert!(out.contains("archived 2026-02: seq 11..=20 (10 events)"), "{out}");
    // Idempotent: nothing new through February.
    assert!(s.ok(&["audit", "archive", "--through", "2026-02", "--out", a]).contains("nothing to archive"));
    assert_eq!(s.db.int("SELECT count(*) FROM audit_archives").await, 2);
    // Standard gzip: zcat reads the lines of `audit export`.
    let gz = std::process::Command::new("gzip").arg("-dc").arg(archive.join("audit-2026-01.ndjson.gz")).output();
    let gz = gz.unwrap();
    assert!(gz.status.success());
    let lines: Vec<serde_json::Value> =
        String::from_utf8(gz.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 10);
    assert_eq!(lines[0]["seq"], 1);
    assert_eq!(lines[9]["subject"], "m1-9");
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(archive.join("audit-2026-01.manifest.json")).unwrap()).unwrap();
    assert!(manifest["key_label"].as_str().unwrap().starts_with("symbolon-audit-"), "{manifest}");

    let out = s.ok(&["audit", "verify", "--archive", a]);
    assert!(out.contains("OK: 2 archives, 20 archived events"), "{out}");

    // Tampering with an archive file: one changed byte.
    let tampered = base.path().join("tampered");
    let t = tampered.to_str().unwrap();
    copy_dir(&archive, &tampered);
    let file = tampered.join("audit-2026-02.ndjson.gz");
    let mut bytes = std::fs::read(&file).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(&file, &bytes).unwrap();
    let out = s.refused(&["audit", "verify", "--archive", t], "BROKEN at seq 11: audit-2026-02.ndjson.gz");
    assert!(!out.contains("OK:"), "{out}");
    // ...a file replaced by a valid gzip of other content (the February archive under
    // January's name): the chain and the SHA-256 say so.
    copy_dir(&archive, &tampered);
    std::fs::copy(archive.join("audit-2026-02.ndjson.gz"), tampered.join("audit-2026-01.ndjson.gz")).unwrap();
    s.refused(&["audit", "verify", "--archive", t], "BROKEN at seq 1: audit-2026-01.ndjson.gz");
    // Retention refuses to drop a month whose file does not verify, and deletes nothing.
    let total = s.db.int("SELECT count(*) FROM audit").await;
    let out = s.refused(&["audit", "maintain", "--archive", t], "REFUSED: 2026-01 is due but not dropped");
    assert!(out.contains("audit-2026-01.ndjson.gz"), "{out}");
    assert_eq!(s.db.int("SELECT count(*) FROM audit").await, total);

    // Tampering with a manifest file: it no longer matches the recorded one.
    copy_dir(&archive, &tampered);
    let mpath = tampered.join("audit-2026-01.manifest.json");
    let text = std::fs::read_to_string(&mpath).unwrap();
    let edited = text.replacen("\"count\": 10", "\"count\": 9", 1).replacen("\"last_seq\": 10", "\"last_seq\": 9", 1);
    assert_ne!(text, edited);
    std::fs::write(&mpath, edited).unwrap();
    s.refused(&["audit", "verify", "--archive", t], "the manifest of 2026-01 differs from the one recorded");
    // ...or is unparseable, or missing.
    std::fs::write(&mpath, "{\"month\": \"2026-01\", \"file\": \"../x\"}").unwrap();
    s.refused(&["audit", "verify", "--archive", t], "audit-2026-01.manifest.json: not a manifest");
    std::fs::remove_file(&mpath).unwrap();
    s.refused(&["audit", "verify", "--archive", t], "the archive of 2026-01 is not in");
    s.refused(&["audit", "maintain", "--archive", t], "2026-01 is due but not dropped: no manifest of it");

    // Retention: January and February go (their files verified), the last archived
    // record stays as the anchor; March has no archive: refused, with the way out.
    // On PostgreSQL the months' partitions are dropped whole: the first live record
    // continues from the last archived hash.
    let anchor = if postgres { 0 } else { 1 };
    let out = s.refused(&["audit", "maintain", "--archive", a], "REFUSED: 2026-03 is due but not dropped");
    assert!(out.contains(&format!("dropped 2026-01: {} records deleted", 10 - anchor)), "{out}");
    assert!(out.contains("dropped 2026-02: 10 records deleted"), "{out}");
    assert!(out.contains("audit archive --through 2026-03"), "{out}");
    assert_eq!(s.db.int("SELECT min(seq) FROM audit").await, 21 - anchor);
    if postgres {
        let left = s.db.sql("SELECT count(*) FROM pg_class WHERE relname IN ('audit_y2026m01', 'audit_y2026m02')");
        assert_eq!(left.await.unwrap(), "0", "the partitions are gone");
        assert_eq!(s.db.int("SELECT count(*) FROM audit_y2026m03").await, 10);
    }
    let dropped: Vec<serde_json::Value> = s
        .ok(&["audit", "export"])
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|r| r["kind"] == "audit.retention_dropped")
        .collect();
    assert_eq!(dropped.len(), 2, "{dropped:?}");
    if postgres {
        assert_eq!(dropped[1]["detail"]["partitions_through"], "2026-02");
    } else {
        assert_eq!(dropped[1]["detail"]["anchor_seq"], 20);
    }
    let out = s.ok(&["audit", "verify"]);
    assert!(out.starts_with("OK: "), "{out}");
    let out = s.ok(&["audit", "verify", "--archive", a]);
    assert!(out.contains("OK: 2 archives, 20 archived events"), "{out}");

    // The database refuses to delete the anchor or a record no archive covers.
    let first_live = 21 - anchor;
    assert!(s.db.sql(&format!("DELETE FROM audit WHERE seq = {first_live}")).await.is_err());
    assert!(s.db.sql("DELETE FROM audit WHERE seq = 25").await.is_err());
    assert!(s.db.sql("DELETE FROM audit_archives").await.is_err());

    // March archived, then dropped; nothing else is due.
    let out = s.ok(&["audit", "archive", "--through", "2026-03", "--out", a]);
    assert!(out.contains("archived 2026-03: seq 21..=30"), "{out}");
    let out = s.ok(&["audit", "maintain", "--archive", a]);
    assert!(out.contains("dropped 2026-03: 10 records deleted"), "{out}");
    assert_eq!(s.db.int("SELECT min(seq) FROM audit").await, 31 - anchor);
    assert!(s.ok(&["audit", "verify", "--archive", a]).contains("OK: 3 archives, 30 archived events"));
    s.ok(&["audit", "verify"]);

    // A recorded manifest changed behind the server's back: its signature no longer holds.
    let unlock = match &s.db {
        Db::Sqlite(_) => "DROP TRIGGER audit_archives_no_update",
        Db::Pg(_) => "ALTER TABLE audit_archives DISABLE TRIGGER audit_archives_append_only",
    };
    s.db.sql(&format!(
        "{unlock}; UPDATE audit_archives SET count = count, created_at = created_at + 1 WHERE month = '2026-02'"
    ))
    .await
    .unwrap();
    s.refused(&["audit", "verify"], "BROKEN at seq 11: recorded manifest of 2026-02: signature does not verify");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archive_tamper_and_retention_on_sqlite() {
    archive_tamper_and_retention(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archive_tamper_and_retention_on_postgres() {
    archive_tamper_and_retention(true).await;
}

/// PostgreSQL: a record chained after January's archive but stamped in January (a
/// clock stepped back) lies in January's partition. Dropping that partition would lose
/// a record January's archive does not hold: retention refuses and says why, and drops
/// it together with February, whose archive holds the record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partition_retention_waits_for_a_record_stamped_out_of_order() {
    let mut stamps: Vec<i64> = (1..=5u8).map(|d| day_of(1, d)).collect();
    stamps.extend([day_of(2, 2), day_of(1, 20), day_of(2, 3)]);
    let s = setup_with(true, &stamps).await;
    let base = tempfile::tempdir().unwrap();
    let archive = base.path().join("archive");
    let a = archive.to_str().unwrap();
    assert!(s.ok(&["audit", "maintain"]).contains("partitions: created 2026-01, 2026-02 (8 records moved"));
    assert_eq!(s.db.int("SELECT count(*) FROM audit_y2026m01").await, 6);

    let out = s.ok(&["audit", "archive", "--through", "2026-01", "--out", a]);
    assert!(out.contains("archived 2026-01: seq 1..=5 (5 events)"), "{out}");
    let out = s.refused(&["audit", "maintain", "--archive", a], "REFUSED: 2026-01 is due but not dropped: 1 records after its archive's last one (seq 5) are stamped in or before it");
    assert!(!out.contains("dropped 2026"), "{out}");
    assert_eq!(s.db.int("SELECT count(*) FROM audit_y2026m01").await, 6, "nothing dropped");

    let out = s.ok(&["audit", "archive", "--through", "2026-02", "--out", a]);
    assert!(out.contains("archived 2026-02: seq 6..=8 (3 events)"), "{out}");
    let out = s.ok(&["audit", "maintain", "--archive", a]);
    assert!(out.contains("dropped 2026-02: 8 records deleted") && !out.contains("REFUSED"), "{out}");
    assert_eq!(s.db.int("SELECT min(seq) FROM audit").await, 9);
    assert!(s.ok(&["audit", "verify", "--archive", a]).contains("OK: 2 archives, 8 archived events"));
}

/// PostgreSQL: a server whose role owns the audit table keeps the current and the next
/// three months' partitions itself, at start and every `audit.partition_interval`, on
/// the node holding the key schedule's lease, and audits it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_keeps_the_partitions_ahead() {
    let pg = PgDatabase::create().unwrap();
    let database = DatabaseConfig { url: pg.url(), ..Default::default() };
    let store = open_durable(&database, Path::new("/nonexistent")).await.unwrap();
    store.migrate().await.unwrap();
    drop(store);
    let now = time::OffsetDateTime::now_utc();
    let (mut year, mut month) = (now.year(), u8::from(now.month()) + 3);
    if month > 12 {
        (year, month) = (year + 1, month - 12);
    }
    let furthest = format!("audit_y{year:04}m{month:02}");
    let exists = |name: &str| pg.sql(&format!("SELECT count(*) FROM pg_class WHERE relname = '{name}'")).unwrap();
    assert_eq!(exists(&furthest).trim(), "1", "the migration made it");
    pg.sql(&format!("ALTER TABLE audit DETACH PARTITION {furthest}; DROP TABLE {furthest}")).unwrap();

    let extra = format!(
        "{}
[session_store]
url = \"memory://\"
[audit]
partition_interval = \"1s\"
",
        pg.toml()
    );
    let env = SignIn::start(&extra, ServerOptions::default()).await.unwrap();
    let start = std::time::Instant::now();
    while exists(&furthest).trim() != "1" {
        assert!(start.elapsed() < std::time::Duration::from_secs(30), "the server did not create {furthest}");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let event = pg.sql("SELECT actor || ' ' || detail FROM audit WHERE kind = 'audit.partitions_maintained'").unwrap();
    assert!(event.starts_with("node:"), "{event}");
    assert!(event.contains(&format!("\"created\":[\"{year:04}-{month:02}\"]")), "{event}");
    let holder = pg.sql("SELECT holder FROM leases WHERE name = 'keys.schedule'").unwrap();
    assert_eq!(holder.trim(), event.split_whitespace().next().unwrap(), "under the key schedule's lease");
    let (ok, out) = cli(&env, &["audit", "verify"]);
    assert!(ok && out.starts_with("OK:"), "{out}");
}

/// `symbolon ARGS` with the server's configuration: (success, stdout + stderr).
fn cli(env: &SignIn, args: &[&str]) -> (bool, String) {
    let out = symbolon_cli(&env.token, &env.server.config_path, args).unwrap();
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

/// `symbolon backup` while serving, the state wiped (database and SoftHSM2 token
/// directory), both restored: the chain verifies, the enrollment is there, a sign-in
/// is approved.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_wipe_restore_then_verify_enrollment_and_sign_in() {
    let mut env = SignIn::start("[audit]\ncheckpoint_every = 1\n", ServerOptions::default()).await.unwrap();
    let base = tempfile::tempdir().unwrap();
    let backup = base.path().join("symbolon-backup.db");
    let b = backup.to_str().unwrap();
    if env.server.stores.is_some() {
        // PostgreSQL: pg_dump is the tool (docs/backup.md); the command says so.
        let (ok, out) = cli(&env, &["backup", "--out", b]);
        assert!(!ok && out.contains("pg_dump"), "{out}");
        return;
    }
    let (ok, before) = cli(&env, &["audit", "verify"]);
    assert!(ok, "{before}");
    let (ok, out) = cli(&env, &["backup", "--out", b]);
    assert!(ok && out.contains("backup written to"), "{out}");
    let (ok, out) = cli(&env, &["backup", "--out", b]);
    assert!(!ok && out.contains("exists already"), "{out}");

    // The token while stopped, then wipe both.
    env.server.stop().unwrap();
    let token = TokenCopy::take(&env, base.path());
    for name in ["symbolon.db", "symbolon.db-wal", "symbolon.db-shm"] {
        let _ = std::fs::remove_file(env.server.state_dir.join(name));
    }
    let (ok, _) = cli(&env, &["audit", "verify"]);
    assert!(!ok, "verify passes on a wiped state");

    // Restore and start again.
    std::fs::copy(&backup, env.server.state_dir.join("symbolon.db")).unwrap();
    token.restore();
    env.server.restart(&env.token).unwrap();
    let (ok, after) = cli(&env, &["audit", "verify"]);
    assert!(ok, "{after}");
    // The events of the backup are all there (the restart may have added some).
    let events = |s: &str| s.split_whitespace().nth(1).and_then(|n| n.parse::<i64>().ok()).unwrap();
    assert!(events(&after) >= events(&before), "{before} / {after}");

    // The enrollment survived: its device signs in.
    assert_signs_in(&env).await;
}

/// The enrolled device approves a new sign-in.
async fn assert_signs_in(env: &SignIn) {
    let (status, started, _) = env.initiate(&env.token_id, "rp1", &["name"]).await.unwrap();
    assert_eq!(status, 201, "{started}");
    let sid = started["session_id"].as_str().unwrap().to_string();
    let pending = env.device_client.pending(&env.device).await.unwrap();
    let otp = pending.sessions.iter().find(|p| p.session_id == sid).unwrap().otp.clone();
    let r = env.device_client.verify(&env.device, &sid, &otp, Decision::Approve, Some(vec!["name".into()])).await;
    assert_eq!(r.unwrap(), serde_json::json!({"status": "approved"}));
}

/// A copy of the SoftHSM2 token directory taken while the server is stopped, the
/// directory then emptied (docs/backup.md "The token"). Nothing for another token.
struct TokenCopy {
    tokens: PathBuf,
    copy: Option<PathBuf>,
}

impl TokenCopy {
    fn take(env: &SignIn, base: &Path) -> Self {
        let tokens = env.token.dir.path().join("tokens");
        if !tokens.is_dir() {
            return Self { tokens, copy: None };
        }
        let copy = base.join("tokens");
        assert!(std::process::Command::new("cp").arg("-a").arg(&tokens).arg(&copy).status().unwrap().success());
        std::fs::remove_dir_all(&tokens).unwrap();
        std::fs::create_dir(&tokens).unwrap();
        Self { tokens, copy: Some(copy) }
    }

    fn restore(&self) {
        if let Some(copy) = &self.copy {
            std::fs::remove_dir_all(&self.tokens).unwrap();
            assert!(std::process::Command::new("cp").arg("-a").arg(copy).arg(&self.tokens).status().unwrap().success());
        }
    }
}

/// Runs a PostgreSQL client tool; its stdout, or a panic with its stderr.
fn pg_tool(program: &str, args: &[&str]) -> String {
    let out = std::process::Command::new(program).args(args).output().unwrap();
    assert!(out.status.success(), "{program} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The PostgreSQL procedure of docs/backup.md on a running installation: `pg_dump`
/// while serving, the server stopped and its token directory copied; the database
/// dropped and the token emptied (`audit verify` then fails); an empty database
/// created, `pg_restore` into it and the token restored. The server starts on the
/// restored pair, the chain and its signed checkpoints verify with every event of the
/// dump, the enrollment is there and its device approves a sign-in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_dump_wipe_restore_then_verify_enrollment_and_sign_in() {
    let pg = PgDatabase::create().unwrap();
    let extra = format!(
        "{}
[session_store]\nurl = \"memory://\"\n[audit]\ncheckpoint_every = 1\n",
        pg.toml()
    );
    let mut env = SignIn::start(&extra, ServerOptions::default()).await.unwrap();
    let base = tempfile::tempdir().unwrap();
    let dump = base.path().join("symbolon.dump");
    let (ok, before) = cli(&env, &["audit", "verify"]);
    assert!(ok, "{before}");
    let events_before = pg.sql("SELECT count(*) FROM audit").unwrap().trim().parse::<i64>().unwrap();
    let enrolled = pg.sql("SELECT count(*) FROM enrollments").unwrap();
    assert_eq!(enrolled.trim(), "1");
    pg_tool("pg_dump", &["--format=custom", "--no-owner", "--file", dump.to_str().unwrap(), &pg.url()]);

    env.server.stop().unwrap();
    let token = TokenCopy::take(&env, base.path());
    softhsm_tests::backends::psql("postgres", &format!("DROP DATABASE {} WITH (FORCE)", pg.name)).unwrap();
    softhsm_tests::backends::psql("postgres", &format!("CREATE DATABASE {}", pg.name)).unwrap();
    let (ok, out) = cli(&env, &["audit", "verify"]);
    assert!(!ok, "verify passes on an empty database: {out}");

    pg_tool("pg_restore", &["--no-owner", "--exit-on-error", "-d", &pg.url(), dump.to_str().unwrap()]);
    token.restore();
    env.server.restart(&env.token).unwrap();
    let (ok, after) = cli(&env, &["audit", "verify"]);
    assert!(ok && after.starts_with("OK:"), "{after}");
    let events = |s: &str| s.split_whitespace().nth(1).and_then(|n| n.parse::<i64>().ok()).unwrap();
    assert!(events(&after) >= events_before, "{events_before} before the dump / {after}");
    // The append-only triggers came back with the schema.
    let refused = pg.sql("UPDATE audit SET kind = 'x' WHERE seq = 1");
    assert!(refused.is_err_and(|e| e.to_string().contains("append-only")), "triggers restored");
    assert_eq!(pg.sql("SELECT count(*) FROM enrollments").unwrap().trim(), "1");
    assert_signs_in(&env).await;
}
