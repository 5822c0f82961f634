//! PostgreSQL and Redis for tests: a fresh database and a fresh key prefix per test
//! on the machine's shared servers (started by `scripts/test`), and a private
//! `redis-server` a test may stop and start.
//!
//! `SYMBOLON_TEST_PG_URL` (default `postgres://postgres@127.0.0.1:5432`) names a
//! superuser connection; `SYMBOLON_TEST_REDIS_URL` (default `redis://127.0.0.1:6379`).

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::free_port;

/// Superuser URL of the test PostgreSQL server (no database part).
pub fn pg_admin_url() -> String {
    std::env::var("SYMBOLON_TEST_PG_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

/// Address of the test PostgreSQL server (host:port of [`pg_admin_url`]).
pub fn pg_addr() -> anyhow::Result<std::net::SocketAddr> {
    let url = pg_admin_url();
    let host_port = url.rsplit_once('@').map_or(url.as_str(), |(_, h)| h).trim_start_matches("postgres://");
    use std::net::ToSocketAddrs;
    host_port.to_socket_addrs()?.next().context("PostgreSQL address does not resolve")
}

/// URL of the shared test Redis.
pub fn redis_url() -> String {
    std::env::var("SYMBOLON_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

fn random_suffix() -> String {
    let mut b = [0u8; 8];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Runs SQL as the superuser with `psql` against `database`; returns stdout.
pub fn psql(database: &str, sql: &str) -> anyhow::Result<String> {
    let out = Command::new("psql")
        .arg(format!("{}/{database}", pg_admin_url()))
        .args(["-v", "ON_ERROR_STOP=1", "-Atqc", sql])
        .output()
        .context("running psql")?;
    if !out.status.success() {
        bail!("psql failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A database of its own on the test server, dropped with this value.
pub struct PgDatabase {
    pub name: String,
}

impl PgDatabase {
    pub fn create() -> anyhow::Result<Self> {
        let name = format!("symbolon_test_{}", random_suffix());
        psql("postgres", &format!("CREATE DATABASE {name}"))?;
        Ok(Self { name })
    }

    /// URL for the server (superuser: tests also tamper with the audit table).
    pub fn url(&self) -> String {
        format!("{}/{}", pg_admin_url(), self.name)
    }

    /// `[database]` TOML for a server using this database.
    pub fn toml(&self) -> String {
        format!(
            "[database]\nurl = \"{}\"\ntls = \"disable\"\nacquire_timeout = \"1s\"\nstatement_timeout = \"2s\"\n",
            self.url()
        )
    }

    /// `[database]` TOML reaching this database through `127.0.0.1:port` (a [`TcpCut`]).
    pub fn toml_via(&self, port: u16) -> String {
        let admin = pg_admin_url();
        let user = admin.trim_start_matches("postgres://").split_once('@').map_or("postgres", |(u, _)| u).to_string();
        self.toml().replace(&self.url(), &format!("postgres://{user}@127.0.0.1:{port}/{}", self.name))
    }

    /// Runs SQL in this database as the superuser.
    pub fn sql(&self, sql: &str) -> anyhow::Result<String> {
        psql(&self.name, sql)
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        let _ = psql("postgres", &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name));
    }
}

/// A key prefix of its own on a Redis, its keys deleted with this value.
pub struct RedisPrefix {
    pub url: String,
    pub prefix: String,
}

impl RedisPrefix {
    /// A prefix on the shared test Redis.
    pub fn new() -> Self {
        Self::on(&redis_url())
    }

    /// A prefix on the Redis at `url`.
    pub fn on(url: &str) -> Self {
        Self { url: url.to_string(), prefix: format!("symbolon-test-{}:", random_suffix()) }
    }

    /// `[session_store]` TOML for a server using this prefix.
    pub fn toml(&self) -> String {
        format!("[session_store]\nurl = \"{}\"\nkey_prefix = \"{}\"\ntimeout = \"1s\"\n", self.url, self.prefix)
    }

    /// The session-store settings of the store contract tests for this prefix.
    pub fn session_store_config(&self) -> symbolon::store::SessionStoreConfig {
        symbolon::store::SessionStoreConfig {
            url: self.url.clone(),
            key_prefix: self.prefix.clone(),
            timeout: Duration::from_secs(2),
            ..Default::default()
        }
    }

    /// Every raw key and value under the prefix: strings, hash fields and values, set,
    /// sorted-set and list members (to check what the store holds in clear).
    pub fn raw_values(&self) -> anyhow::Result<Vec<String>> {
        let client = redis::Client::open(self.url.as_str())?;
        let mut conn = client.get_connection_with_timeout(Duration::from_secs(2))?;
        let keys: Vec<String> = redis::cmd("KEYS").arg(format!("{}*", self.prefix)).query(&mut conn)?;
        let mut values = Vec::new();
        for key in keys {
            let kind: String = redis::cmd("TYPE").arg(&key).query(&mut conn)?;
            let mut more: Vec<String> = match kind.as_str() {
                "string" => vec![redis::cmd("GET").arg(&key).query(&mut conn)?],
                "hash" => redis::cmd("HGETALL").arg(&key).query(&mut conn)?,
                "zset" => redis::cmd("ZRANGE").arg(&key).arg(0).arg(-1).query(&mut conn)?,
                "set" => redis::cmd("SMEMBERS").arg(&key).query(&mut conn)?,
                "list" => redis::cmd("LRANGE").arg(&key).arg(0).arg(-1).query(&mut conn)?,
                other => anyhow::bail!("unexpected Redis type {other} of {key}"),
            };
            values.push(key);
            values.append(&mut more);
        }
        Ok(values)
    }

    /// The number of keys under the prefix.
    pub fn key_count(&self) -> anyhow::Result<usize> {
        Ok(self.keys()?.len())
    }

    fn keys(&self) -> anyhow::Result<Vec<String>> {
        let client = redis::Client::open(self.url.as_str())?;
        let mut conn = client.get_connection_with_timeout(Duration::from_secs(2))?;
        let keys: Vec<String> = redis::cmd("KEYS").arg(format!("{}*", self.prefix)).query(&mut conn)?;
        Ok(keys)
    }
}

impl Default for RedisPrefix {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for RedisPrefix {
    fn drop(&mut self) {
        let cleanup = || -> anyhow::Result<()> {
            let keys = self.keys()?;
            if !keys.is_empty() {
                let client = redis::Client::open(self.url.as_str())?;
                let mut conn = client.get_connection_with_timeout(Duration::from_secs(2))?;
                redis::cmd("DEL").arg(keys).query::<()>(&mut conn)?;
            }
            Ok(())
        };
        let _ = cleanup();
    }
}

/// The shared stores of a cluster test: a database and a key prefix of its own.
pub struct ClusterStores {
    pub pg: PgDatabase,
    pub redis: RedisPrefix,
}

impl ClusterStores {
    pub fn new() -> anyhow::Result<Self> {
        Ok(Self { pg: PgDatabase::create()?, redis: RedisPrefix::new() })
    }

    /// `[database]` and `[session_store]` TOML.
    pub fn toml(&self) -> String {
        format!("{}\n{}", self.pg.toml(), self.redis.toml())
    }

    /// `SYMBOLON_TEST_STORES=postgres+redis` runs every server of the end-to-end tests on
    /// PostgreSQL and Redis instead of SQLite and memory (`scripts/test` does a pass so),
    /// unless the test names its stores itself.
    pub fn from_env(extra_toml: &str) -> anyhow::Result<Option<Self>> {
        let wanted = std::env::var("SYMBOLON_TEST_STORES").is_ok_and(|v| v == "postgres+redis");
        if !wanted || extra_toml.contains("[database]") || extra_toml.contains("[session_store]") {
            return Ok(None);
        }
        Self::new().map(Some)
    }
}

/// The Redis ACL rules of the `symbolon` user exactly as docs/cluster.md gives them
/// (`ACL SETUSER symbolon <rules>`), its `>PASSWORD` replaced by `>{password}`.
pub fn documented_redis_acl(password: &str) -> anyhow::Result<Vec<String>> {
    let docs = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/cluster.md"))?;
    let rules: Vec<String> = docs
        .lines()
        .map(str::trim)
        .skip_while(|l| !l.starts_with("ACL SETUSER symbolon "))
        .take_while(|l| !l.starts_with("```"))
        .flat_map(str::split_whitespace)
        .skip(3)
        .map(|word| if word == ">PASSWORD" { format!(">{password}") } else { word.to_string() })
        .collect();
    anyhow::ensure!(
        rules.iter().any(|r| r == "+evalsha") && rules.iter().any(|r| r.starts_with('>')),
        "no ACL SETUSER symbolon block in docs/cluster.md: {rules:?}"
    );
    Ok(rules)
}

/// A `redis-server` of this test alone, on a free port, without persistence: stopping
/// it loses every key, like a restart of a Redis without AOF/RDB.
pub struct PrivateRedis {
    pub port: u16,
    /// TLS only (`cert`, `key`) when set: then the URL is `rediss://localhost:PORT`.
    tls: Option<(std::path::PathBuf, std::path::PathBuf)>,
    child: Option<Child>,
}

impl PrivateRedis {
    pub fn start() -> anyhow::Result<Self> {
        let mut r = Self { port: free_port()?, tls: None, child: None };
        r.start_again()?;
        Ok(r)
    }

    /// A server speaking TLS only, with this certificate chain and key (PEM).
    pub fn start_tls(cert: &std::path::Path, key: &std::path::Path) -> anyhow::Result<Self> {
        let mut r = Self { port: free_port()?, tls: Some((cert.to_path_buf(), key.to_path_buf())), child: None };
        r.start_again()?;
        Ok(r)
    }

    pub fn url(&self) -> String {
        match self.tls {
            Some(_) => format!("rediss://localhost:{}", self.port),
            None => format!("redis://127.0.0.1:{}", self.port),
        }
    }

    /// Starts the server (again) on the same port and waits until it answers.
    pub fn start_again(&mut self) -> anyhow::Result<()> {
        let port = self.port.to_string();
        let mut cmd = Command::new("redis-server");
        cmd.args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]);
        match &self.tls {
            None => cmd.args(["--port", &port]),
            Some((cert, key)) => cmd
                .args(["--port", "0", "--tls-port", &port, "--tls-auth-clients", "no", "--tls-cert-file"])
                .arg(cert)
                .arg("--tls-key-file")
                .arg(key),
        };
        let child = cmd.stdout(Stdio::null()).stderr(Stdio::null()).spawn().context("starting redis-server")?;
        self.child = Some(child);
        let start = Instant::now();
        if self.tls.is_some() {
            // No TLS in the harness's own Redis client: wait for the port.
            while start.elapsed() < Duration::from_secs(10) {
                if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                    return Ok(());
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        while start.elapsed() < Duration::from_secs(10) {
            if let Ok(client) = redis::Client::open(self.url().as_str())
                && let Ok(mut conn) = client.get_connection_with_timeout(Duration::from_millis(200))
                && redis::cmd("PING").query::<String>(&mut conn).is_ok()
            {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        bail!("private redis-server did not answer on port {}", self.port)
    }

    /// Kills the server (no clean shutdown) and waits for it to exit.
    pub fn stop(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill()?;
            child.wait()?;
        }
        Ok(())
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

/// A TCP forwarder on a free port to a shared server (PostgreSQL), that a test can
/// cut and restore: the server looks unreachable to whoever connects through it,
/// without touching the machine's shared service.
pub struct TcpCut {
    pub port: u16,
    target: std::net::SocketAddr,
    state: std::sync::Arc<CutState>,
}

#[derive(Default)]
struct CutState {
    open: std::sync::atomic::AtomicBool,
    conns: std::sync::Mutex<Vec<std::net::TcpStream>>,
}

impl TcpCut {
    /// Forwards `127.0.0.1:<free port>` to `target`, open.
    pub fn start(target: std::net::SocketAddr) -> anyhow::Result<Self> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        let state = std::sync::Arc::new(CutState::default());
        state.open.store(true, std::sync::atomic::Ordering::SeqCst);
        let st = state.clone();
        std::thread::spawn(move || {
            for incoming in listener.incoming() {
                let Ok(client) = incoming else { continue };
                if !st.open.load(std::sync::atomic::Ordering::SeqCst) {
                    drop(client); // refused while cut
                    continue;
                }
                let Ok(server) = std::net::TcpStream::connect(target) else { continue };
                if let (Ok(c2), Ok(s2), Ok(mut conns)) = (client.try_clone(), server.try_clone(), st.conns.lock()) {
                    conns.push(c2);
                    conns.push(s2);
                }
                pipe(client, server);
            }
        });
        Ok(Self { port, target, state })
    }

    /// Cuts: closes every forwarded connection and refuses new ones.
    pub fn cut(&self) {
        self.state.open.store(false, std::sync::atomic::Ordering::SeqCst);
        if let Ok(mut conns) = self.state.conns.lock() {
            for c in conns.drain(..) {
                let _ = c.shutdown(std::net::Shutdown::Both);
            }
        }
    }

    /// Forwards again.
    pub fn restore(&self) {
        self.state.open.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// The target this forwards to.
    pub fn target(&self) -> std::net::SocketAddr {
        self.target
    }
}

impl Drop for TcpCut {
    fn drop(&mut self) {
        self.cut();
    }
}

fn pipe(a: std::net::TcpStream, b: std::net::TcpStream) {
    let copy = |mut from: std::net::TcpStream, mut to: std::net::TcpStream| {
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut from, &mut to);
            let _ = to.shutdown(std::net::Shutdown::Both);
        });
    };
    if let (Ok(a2), Ok(b2)) = (a.try_clone(), b.try_clone()) {
        copy(a, b2);
        copy(b, a2);
    }
}

/// The database settings of the store contract tests: no TLS, short timeouts.
pub fn test_database_config() -> symbolon::store::DatabaseConfig {
    symbolon::store::DatabaseConfig {
        tls: symbolon::store::DatabaseTls::Disable,
        acquire_timeout: Duration::from_secs(2),
        statement_timeout: Duration::from_secs(5),
        ..Default::default()
    }
}

/// Two durable-store handles ("nodes") on one store.
pub type StorePair =
    (std::sync::Arc<dyn symbolon::store::DurableStore>, std::sync::Arc<dyn symbolon::store::DurableStore>);

/// Two handles on one SQLite file in `dir`.
pub async fn sqlite_nodes(dir: &std::path::Path) -> anyhow::Result<StorePair> {
    let (url, config) = (format!("sqlite://{}", dir.join("t.db").display()), test_database_config());
    let open = || symbolon::store::SqliteStore::open(&url, &config);
    Ok((std::sync::Arc::new(open().await?), std::sync::Arc::new(open().await?)))
}

/// Two handles on one PostgreSQL database.
pub fn postgres_nodes(db: &PgDatabase) -> anyhow::Result<StorePair> {
    let open = || symbolon::store::PostgresStore::open(&db.url(), &test_database_config());
    Ok((std::sync::Arc::new(open()?), std::sync::Arc::new(open()?)))
}
