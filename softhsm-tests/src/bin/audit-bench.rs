//! audit-bench: the audit trail at scale (issue 20 item 6), against the real `symbolon`
//! commands on a fresh SoftHSM2 token and a fresh database, with in-run baselines.
//!
//! For each size (`--small`, 100,000 by default, and `--events`, 1,000,000) a fresh
//! database gets that many chained audit events, stamped evenly over January to
//! October 2026 (the chain computed with the server's own rule, inserted in batches),
//! then the keys of `symbolon keys init`. Then, each as a child process whose wall time
//! and peak RSS (`wait4`'s `ru_maxrss`) are read:
//!
//! 1. PostgreSQL only: `audit maintain` (the records wait in the default partition and
//!    are moved into ten monthly partitions);
//! 2. `audit verify` (the whole chain);
//! 3. `audit export` to /dev/null (streaming: its peak RSS at `--events` over its peak
//!    RSS at `--small` is the flatness ratio, PASS when ≤ 1.25);
//! 4. `audit archive --through 2026-10` (ten signed monthly archives);
//! 5. `audit verify --archive` (every archive re-read, then the live table).
//!
//! Then, on the large PostgreSQL database (partitioned): the audit insert rate of
//! `--appenders` in-process appenders alone (baseline) and while `--concurrency`
//! closed-loop sign-ins run against a `symbolon serve` on the same database; the
//! ratio of the two, the sign-ins/s, and the server's own audit events/s.
//!
//! Prints what it measured with PASS/MISS where there is a target; never asserts
//! timings.
//!
//! Usage: audit-bench [--events 1000000] [--small 100000] [--sqlite] [--seconds 10]
//!        [--appenders 4] [--concurrency 3] [--inserts-only [--unpartitioned-baseline]]

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use softhsm_tests::backends::PgDatabase;
use softhsm_tests::device::Decision;
use softhsm_tests::signin::SignIn;
use softhsm_tests::{ServerOptions, TestToken, free_ports, symbolon_bin, write_config};
use symbolon::store::audit::next_record;
use symbolon::store::{AuditEvent, DatabaseConfig, DurableStore, open_durable};

#[derive(Parser, Clone)]
#[command(about = "The audit trail at 1M events: verify, export, archive, partitions, insert rate")]
struct Args {
    /// Events of the large database.
    #[arg(long, default_value_t = 1_000_000)]
    events: u64,
    /// Events of the small database (the baseline of the memory flatness).
    #[arg(long, default_value_t = 100_000)]
    small: u64,
    /// Also run the commands on SQLite.
    #[arg(long)]
    sqlite: bool,
    /// Seconds of each insert-rate measurement.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// In-process audit appenders of the insert-rate measurement.
    #[arg(long, default_value_t = 4)]
    appenders: usize,
    /// Closed-loop sign-ins during the loaded insert-rate measurement (one device: at
    /// most `auth.max_pending`, 3, can be pending at once).
    #[arg(long, default_value_t = 3)]
    concurrency: usize,
    /// Only the insert-rate measurement (on a PostgreSQL database of `--events`
    /// records, partitioned by `audit maintain`), not the commands.
    #[arg(long)]
    inserts_only: bool,
    /// With --inserts-only: measure the same on a database of as many records whose
    /// audit table is not partitioned (migrations through 0007), after the partitioned one.
    #[arg(long)]
    unpartitioned_baseline: bool,
}

/// Wall time and peak RSS of one command.
#[derive(Debug, Clone, Copy)]
struct Run {
    secs: f64,
    rss_mib: f64,
}

/// The first instant of January 2026 and of November 2026 (UTC).
const FROM: i64 = 1_767_225_600;
const UNTIL: i64 = 1_793_491_200;
const BATCH: usize = 1000;

/// A database with `n` events and a token with keys; the config to run commands with.
struct Filled {
    token: TestToken,
    config: PathBuf,
    dir: tempfile::TempDir,
    pg: Option<PgDatabase>,
    fill_secs: f64,
}

impl Filled {
    fn database(&self) -> DatabaseConfig {
        DatabaseConfig { url: self.pg.as_ref().map(PgDatabase::url).unwrap_or_default(), ..Default::default() }
    }

    fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// Runs `symbolon ARGS`, stdout to `out` (or /dev/null); wall time and peak RSS.
    fn run(&self, args: &[&str]) -> anyhow::Result<(Run, String)> {
        let mut cmd = Command::new(symbolon_bin()?);
        cmd.arg("--config")
            .arg(&self.config)
            .args(args)
            .env(self.token.conf_var, &self.token.conf)
            .env_remove("SYMBOLON_HSM_PIN")
            .env_remove("SYMBOLON_BIN")
            .stderr(std::process::Stdio::piped());
        let export = args.first() == Some(&"audit") && args.get(1) == Some(&"export");
        cmd.stdout(if export { std::process::Stdio::null() } else { std::process::Stdio::piped() });
        let start = Instant::now();
        let child = cmd.spawn().context("spawning symbolon")?;
        let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id())?);
        let out = child.wait_with_output_rusage(pid)?;
        let secs = start.elapsed().as_secs_f64();
        let (status, stdout, stderr, maxrss_kib) = out;
        if !status.success() {
            bail!("symbolon {args:?} failed: {stdout}{stderr}");
        }
        Ok((Run { secs, rss_mib: maxrss_kib as f64 / 1024.0 }, stdout))
    }
}

/// `wait4` on a spawned child, for its own peak RSS.
trait WaitRusage {
    fn wait_with_output_rusage(
        self,
        pid: nix::unistd::Pid,
    ) -> anyhow::Result<(std::process::ExitStatus, String, String, i64)>;
}

impl WaitRusage for std::process::Child {
    fn wait_with_output_rusage(
        mut self,
        pid: nix::unistd::Pid,
    ) -> anyhow::Result<(std::process::ExitStatus, String, String, i64)> {
        use std::io::Read;
        use std::os::unix::process::ExitStatusExt;
        let (mut stdout, mut stderr) = (String::new(), String::new());
        let out = self.stdout.take();
        let err = self.stderr.take();
        let reader = std::thread::spawn(move || {
            let mut e = String::new();
            if let Some(mut err) = err {
                let _ = err.read_to_string(&mut e);
            }
            e
        });
        if let Some(mut out) = out {
            out.read_to_string(&mut stdout)?;
        }
        stderr.push_str(&reader.join().unwrap_or_default());
        let mut status: libc::c_int = 0;
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: wait4 on our own child's pid with valid pointers to locals.
        let r = unsafe { libc::wait4(pid.as_raw(), &mut status, 0, &mut usage) };
        if r < 0 {
            bail!("wait4: {}", std::io::Error::last_os_error());
        }
        Ok((std::process::ExitStatus::from_raw(status), stdout, stderr, usage.ru_maxrss))
    }
}

/// A fresh database (PostgreSQL or SQLite) with `n` chained events, then `keys init`.
async fn fill(n: u64, postgres: bool) -> anyhow::Result<Filled> {
    fill_at(n, postgres, false).await
}

/// As [`fill`]; `unpartitioned`: PostgreSQL migrated through 0007 only (the audit
/// table before partitioning), and nothing migrates it further (`auto_migrate = false`).
async fn fill_at(n: u64, postgres: bool, unpartitioned: bool) -> anyhow::Result<Filled> {
    let token = TestToken::new()?;
    let dir = tempfile::Builder::new().prefix("audit-bench-").tempdir()?;
    let pg = if postgres { Some(PgDatabase::create()?) } else { None };
    let db_toml = pg.as_ref().map(PgDatabase::toml).unwrap_or_default();
    // Commands may run for minutes on a million records.
    let mut db_toml = db_toml.replace("statement_timeout = \"2s\"", "statement_timeout = \"600s\"");
    if unpartitioned {
        db_toml.push_str("auto_migrate = false\n");
    }
    let [public, admin] = free_ports()?;
    let config = write_config(dir.path(), &token, public, admin, &db_toml)?;
    let filled = Filled { token, config, dir, pg, fill_secs: 0.0 };
    match (&filled.pg, unpartitioned) {
        (Some(pg), true) => {
            let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../migrations/postgres");
            let old = tempfile::tempdir()?;
            for entry in std::fs::read_dir(src)? {
                let path = entry?.path();
                let name = path.file_name().context("file name")?.to_string_lossy().into_owned();
                if name.as_str() < "0008" {
                    std::fs::copy(&path, old.path().join(&name))?;
                }
            }
            let pool = sqlx::PgPool::connect(&pg.url()).await?;
            sqlx::migrate::Migrator::new(old.path()).await?.run(&pool).await?;
            pool.close().await;
        }
        _ => {
            let store = open_durable(&filled.database(), &filled.state()).await?;
            store.migrate().await?;
        }
    }
    let start = Instant::now();
    match &filled.pg {
        Some(pg) => {
            let pool = sqlx::PgPool::connect(&pg.url()).await?;
            insert_chain(n, |sql| {
                let pool = pool.clone();
                async move { sqlx::raw_sql(&sql).execute(&pool).await.map(|_| ()) }
            })
            .await?;
            pool.close().await;
        }
        None => {
            let url = format!("sqlite://{}", filled.state().join("symbolon.db").display());
            let pool = sqlx::SqlitePool::connect(&url).await?;
            insert_chain(n, |sql| {
                let pool = pool.clone();
                async move { sqlx::raw_sql(&sql).execute(&pool).await.map(|_| ()) }
            })
            .await?;
            pool.close().await;
        }
    }
    let fill_secs = start.elapsed().as_secs_f64();
    let filled = Filled { fill_secs, ..filled };
    filled.run(&["keys", "init"])?;
    Ok(filled)
}

/// Computes `n` records with the server's chain rule and inserts them, `BATCH` per
/// statement (one transaction each).
async fn insert_chain<F, Fut>(n: u64, exec: F) -> anyhow::Result<()>
where
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = Result<(), sqlx::Error>>,
{
    let step = (UNTIL - FROM) as f64 / n as f64;
    let mut head: Option<(i64, String)> = None;
    let mut i = 0u64;
    while i < n {
        let mut sql =
            String::from("BEGIN; INSERT INTO audit (seq, at, kind, actor, subject, detail, prev_hash, hash) VALUES ");
        for j in 0..BATCH.min(usize::try_from(n - i)?) {
            let at = FROM + (step * (i + j as u64) as f64) as i64;
            let event = AuditEvent::new(
                at,
                "auth.approved",
                "device:bench",
                format!("session-{}", i + j as u64),
                serde_json::json!({"service_id": "rp1", "scopes": ["name", "age"], "token_id_hash": "0f3a9c"}),
            );
            let r = next_record(head.take(), &event).map_err(anyhow::Error::msg)?;
            if j > 0 {
                sql.push(',');
            }
            sql.push_str(&format!(
                "({}, {}, '{}', '{}', '{}', '{}', '{}', '{}')",
                r.seq,
                r.at,
                r.kind,
                r.actor,
                r.subject,
                r.detail_text().replace('\'', "''"),
                r.prev_hash,
                r.hash
            ));
            head = Some((r.seq, r.hash));
        }
        sql.push_str("; COMMIT;");
        exec(sql).await?;
        i += BATCH as u64;
        i = i.min(n);
    }
    Ok(())
}

/// What the commands measured on one database.
struct Sized {
    n: u64,
    fill_secs: f64,
    maintain: Option<Run>,
    verify: Run,
    export: Run,
    archive: Run,
    verify_archive: Run,
}

async fn commands(n: u64, postgres: bool) -> anyhow::Result<(Sized, Filled)> {
    let f = fill(n, postgres).await?;
    let maintain = if postgres {
        let (run, out) = f.run(&["audit", "maintain"])?;
        eprintln!("  {}", out.trim());
        Some(run)
    } else {
        None
    };
    let (verify, out) = f.run(&["audit", "verify"])?;
    eprintln!("  {}", out.trim());
    let (export, _) = f.run(&["audit", "export"])?;
    let archive_dir = f.dir.path().join("archive");
    let a = archive_dir.to_str().context("archive path")?;
    let (archive, out) = f.run(&["audit", "archive", "--through", "2026-10", "--out", a])?;
    eprintln!("  {} months archived", out.lines().count());
    let (verify_archive, out) = f.run(&["audit", "verify", "--archive", a])?;
    eprintln!("  {}", out.trim().replace('\n', " / "));
    Ok((Sized { n, fill_secs: f.fill_secs, maintain, verify, export, archive, verify_archive }, f))
}

fn row(name: &str, small: Option<Run>, large: Option<Run>, n_small: u64, n_large: u64) {
    let (Some(s), Some(l)) = (small, large) else { return };
    println!(
        "| {name} | {:.1} s, {:.0} MiB | {:.1} s, {:.0} MiB | {:.0} / s | {:.2} |",
        s.secs,
        s.rss_mib,
        l.secs,
        l.rss_mib,
        n_large as f64 / l.secs,
        l.rss_mib / s.rss_mib
    );
    let _ = n_small;
}

fn table(label: &str, small: &Sized, large: &Sized) -> bool {
    println!("\n## {label}: {} and {} events\n", small.n, large.n);
    println!(
        "bulk fill (chain computed, {BATCH} rows per INSERT): {:.1} s and {:.1} s\n",
        small.fill_secs, large.fill_secs
    );
    println!("| command | {} events | {} events | records/s (large) | peak RSS large / small |", small.n, large.n);
    println!("|---|---|---|---|---|");
    row("audit maintain (partitions)", small.maintain, large.maintain, small.n, large.n);
    row("audit verify", Some(small.verify), Some(large.verify), small.n, large.n);
    row("audit export > /dev/null", Some(small.export), Some(large.export), small.n, large.n);
    row("audit archive --through 2026-10", Some(small.archive), Some(large.archive), small.n, large.n);
    row("audit verify --archive", Some(small.verify_archive), Some(large.verify_archive), small.n, large.n);
    let mut all = true;
    for (name, s, l) in [
        ("export", small.export, large.export),
        ("verify", small.verify, large.verify),
        ("archive", small.archive, large.archive),
        ("verify --archive", small.verify_archive, large.verify_archive),
    ] {
        let ratio = l.rss_mib / s.rss_mib;
        let pass = ratio <= 1.25;
        all &= pass;
        println!(
            "{} {name}: peak RSS at {} events is {ratio:.2}× that at {} (target ≤ 1.25: memory flat)",
            if pass { "PASS" } else { "MISS" },
            large.n,
            small.n
        );
    }
    all
}

/// Appends from `appenders` in-process appenders for `seconds`; appends/s.
async fn append_rate(store: Arc<dyn DurableStore>, appenders: usize, seconds: f64) -> anyhow::Result<f64> {
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for w in 0..appenders {
        let (store, stop, done) = (store.clone(), stop.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let e = AuditEvent::new(
                    symbolon::ids::now_unix(),
                    "bench.append",
                    format!("bench:{w}"),
                    "insert-rate",
                    serde_json::json!({}),
                );
                store.append_audit(&e).await?;
                done.fetch_add(1, Ordering::Relaxed);
            }
            anyhow::Ok(())
        }));
    }
    let start = Instant::now();
    tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await??;
    }
    Ok(done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64())
}

/// Closed-loop sign-ins (initiate, pending, approve) until `stop`; completed count.
async fn sign_ins(env: Arc<SignIn>, stop: Arc<AtomicBool>, done: Arc<AtomicU64>, failed: Arc<AtomicU64>) {
    let mut reported = false;
    while !stop.load(Ordering::Relaxed) {
        let ok = async {
            let (status, started, _) = env.initiate(&env.token_id, "rp1", &["name"]).await?;
            if status != 201 {
                bail!("initiate {status}: {started}");
            }
            let sid = started["session_id"].as_str().context("session_id")?.to_string();
            let pending = env.device_client.pending(&env.device).await.map_err(|e| anyhow::anyhow!("{e:?}"))?;
            let otp = pending.sessions.iter().find(|p| p.session_id == sid).context("not pending")?.otp.clone();
            let r = env
                .device_client
                .verify(&env.device, &sid, &otp, Decision::Approve, Some(vec!["name".into()]))
                .await
                .map_err(|e| anyhow::anyhow!("{e:?}"))?;
            if r["status"] != "approved" {
                bail!("verify answered {r}");
            }
            anyhow::Ok(())
        }
        .await;
        match ok {
            Ok(()) => done.fetch_add(1, Ordering::Relaxed),
            Err(e) => {
                if !reported {
                    eprintln!("  a sign-in failed: {e:#}");
                    reported = true;
                }
                failed.fetch_add(1, Ordering::Relaxed)
            }
        };
    }
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

async fn count(pg: &PgDatabase) -> anyhow::Result<i64> {
    Ok(pg.sql("SELECT count(*) FROM audit")?.trim().parse()?)
}

async fn insert_under_load(args: &Args, large: Filled, unpartitioned: bool) -> anyhow::Result<()> {
    let pg = large.pg.as_ref().context("PostgreSQL")?;
    let partitions = pg.sql("SELECT count(*) FROM pg_inherits WHERE inhparent = 'audit'::regclass")?;
    println!(
        "\n## audit inserts on PostgreSQL, {} partitions{}, {} records in the table\n",
        partitions.trim(),
        if unpartitioned { " (migrated through 0007: not partitioned)" } else { "" },
        count(pg).await?
    );
    let store = open_durable(&large.database(), &large.state()).await?;
    let idle = append_rate(store.clone(), args.appenders, args.seconds).await?;
    println!("load average before the sign-ins: {}", load_average());

    let extra = format!(
        "{}{}\n[session_store]\nurl = \"memory://\"\n[audit]\npartition_interval = \"1h\"\n",
        pg.toml().replace("statement_timeout = \"2s\"", "statement_timeout = \"10s\""),
        if unpartitioned { "auto_migrate = false\n" } else { "" }
    );
    // One enrolled device signs in over and over: lift its per-token guard.
    let options = ServerOptions {
        env: vec![("SYMBOLON_LIMITS__INITIATE_PER_TOKEN_PER_MINUTE".into(), "1000000".into())],
        ..Default::default()
    };
    let env = Arc::new(SignIn::start_with_token(large.token, &extra, options).await?);
    let (stop, done, failed) =
        (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut loops = Vec::new();
    for _ in 0..args.concurrency {
        loops.push(tokio::spawn(sign_ins(env.clone(), stop.clone(), done.clone(), failed.clone())));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (before, server_before, t0) = (count(pg).await?, done.load(Ordering::Relaxed), Instant::now());
    let loaded = append_rate(store.clone(), args.appenders, args.seconds).await?;
    let secs = t0.elapsed().as_secs_f64();
    let (after, server_after) = (count(pg).await?, done.load(Ordering::Relaxed));
    let load = load_average();
    stop.store(true, Ordering::Relaxed);
    for l in loops {
        let _ = l.await;
    }
    let signins = (server_after - server_before) as f64 / secs;
    let total_rate = (after - before) as f64 / secs;
    println!("| measurement | appends/s ({} appenders) |", args.appenders);
    println!("|---|---|");
    println!("| alone | {idle:.0} |");
    println!("| with {} closed-loop sign-ins | {loaded:.0} |", args.concurrency);
    println!(
        "\nwith sign-ins: {signins:.1} sign-ins/s ({} failed), all audit records {total_rate:.0}/s (the bench's and the server's); appends {:.0} % of alone; load average {load}",
        failed.load(Ordering::Relaxed),
        100.0 * loaded / idle
    );
    Ok(())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    println!("# audit-bench: load average at start {}", load_average());
    let mut flat = true;
    let mut backends = vec![true];
    if args.sqlite {
        backends.push(false);
    }
    let mut large_pg = None;
    if args.inserts_only {
        let f = fill(args.events, true).await?;
        f.run(&["audit", "maintain"])?;
        backends.clear();
        large_pg = Some(f);
    }
    let unpartitioned = if args.inserts_only && args.unpartitioned_baseline {
        Some(fill_at(args.events, true, true).await?)
    } else {
        None
    };
    for postgres in backends {
        let label = if postgres { "PostgreSQL (partitioned)" } else { "SQLite" };
        eprintln!("{label}: {} events", args.small);
        let (small, _f) = commands(args.small, postgres).await?;
        drop(_f);
        eprintln!("{label}: {} events", args.events);
        let (large, f) = commands(args.events, postgres).await?;
        flat &= table(label, &small, &large);
        if postgres {
            large_pg = Some(f);
        }
    }
    if let Some(f) = large_pg {
        insert_under_load(&args, f, false).await?;
    }
    if let Some(f) = unpartitioned {
        insert_under_load(&args, f, true).await?;
    }
    println!("\nload average at the end {}", load_average());
    if !args.inserts_only {
        println!("{}", if flat { "PASS: memory flat" } else { "MISS: memory not flat" });
    }
    Ok(())
}
