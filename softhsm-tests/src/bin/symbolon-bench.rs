//! symbolon-bench: load benchmark of full sign-ins (issue 5 item 12) against the real
//! `symbolon serve` on a fresh SoftHSM2 token, with the raw bound measured in the same run.
//!
//! Sign-ins spread over `--devices` enrolled devices (1,000 by default, each with its own
//! token id and key, enrolled with its own fixture seal), round robin, and request
//! `--scopes` (the claims are unsealed and filtered). Each sign-in does what a browser
//! and a phone do: the browser initiates over HTTP, opens the WebSocket, sends its hello
//! and receives the `otp`; the phone learns the session from `POST /v1/device/pending`
//! (as after a push, or when the app opens), checks the code matches and POSTs its
//! verify; the browser receives `approved`.
//!
//! Phases:
//! 1. raw rates: HSM ES256 signs/s, HMAC-SHA256/s and AES-256-GCM/s through an in-process
//!    `SessionPool` (2 workers) on a separate fresh token, P-256 verifies/s on 2 threads
//!    (ring and the p256 crate);
//! 2. peak: N closed-loop browsers and phones run full sign-ins for D s. The HSM operations
//!    the server did per sign-in are read from its `symbolon_hsm_operations_total`, and
//!    the in-run bound is 1 / Σ (operations per sign-in / rate), device-JWS verifies (two:
//!    pending and verify) with the implementation the server uses, all competing for the
//!    same cores, so their times add up;
//! 3. half of the peak, open loop (paced arrivals);
//! 4. 10,000 pending WebSocket sessions held open, server RSS from /proc;
//! 5. 3× the peak offered open loop: 201 vs 503 and how long the 503s took, RSS before/after;
//! 6. scale-out (issue 6): the closed-loop peak with PostgreSQL + Redis as the stores, on
//!    1 node and on 2 nodes sharing them (each sign-in starts on one node and is verified
//!    on the other), against the SQLite/memory server, in alternating rounds; the ratio
//!    is the median over the rounds. All nodes, PostgreSQL and Redis share this
//!    machine's cores with the bench client;
//! 7. bogus WebSocket upgrades (issue 15 item 1): 100,000 upgrades to random session ids,
//!    each with a hello carrying a random browser token (every third hangs up at once),
//!    server RSS and the open socket / channel gauges before and after.
//!
//! 8. initiate timing (issue 15 item 4): a server with push on (fake FCM), initiates
//!    alternating between the token id enrolled with a push token and an unknown token
//!    id, one at a time; the latency distributions (p50/p90/p99) of both classes.
//!
//! `--hardening` runs only the phases of issue 15 (7 and 8) against a fresh server.
//!
//! Prints a table of targets with PASS/MISS; never asserts timings.
//!
//! Usage: symbolon-bench [--seconds D] [--concurrency N] [--devices 1000] [--scopes name,age]
//!        [--pending 10000] [--overload-seconds 4] [--no-cluster] [--bogus-upgrades 100000]
//!        [--timing-samples 400] [--hardening]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use p256::ecdsa::signature::{Signer, Verifier};
use p256::ecdsa::{Signature, SigningKey, VerifyingKey};
use serde_json::{Value, json};
use softhsm_tests::backends::{PgDatabase, RedisPrefix};
use softhsm_tests::bench::{HsmOp, pool_rate, self_cpu, threads_rate};
use softhsm_tests::device::client::{DeviceClient, PendingSessions};
use softhsm_tests::device::{Decision, Device, PendingPayload, Push, VerifyPayload, unix_now};
use softhsm_tests::signin::SignIn;
use softhsm_tests::trustenv::FixtureChain;
use softhsm_tests::{ServerOptions, TestServer, TestToken};
use symbolon::keyring::{KeyPurpose, key_kind};
use symbolon::keys::{HsmPin, SessionPool, initialize_module};
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

#[derive(Parser, Clone)]
#[command(about = "Load benchmark of full Symbolon sign-ins against the in-run raw bound")]
struct Args {
    /// Seconds of the peak (closed-loop) and half-peak (open-loop) measurements.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Concurrent closed-loop browsers in the peak measurement.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Seconds per raw-bound measurement.
    #[arg(long, default_value_t = 3.0)]
    raw_seconds: f64,
    /// Pending WebSocket sessions to hold in phase 4.
    #[arg(long, default_value_t = 10_000)]
    pending: usize,
    /// Seconds of 3× peak offered load in phase 5.
    #[arg(long, default_value_t = 4.0)]
    overload_seconds: f64,
    /// The server's `hsm.deadline` (the bound on any wait for the HSM, hence on a 503).
    #[arg(long, default_value = "250ms")]
    hsm_deadline: String,
    /// The server's `server.max_in_flight` (requests served at once; more are shed at once
    /// with 503). The shipped default, 4096, lets a 2-core server queue seconds of work.
    #[arg(long, default_value_t = 128)]
    max_in_flight: usize,
    /// The server's log level (`telemetry.level`).
    #[arg(long, default_value = "info")]
    log_level: String,
    /// Scopes requested and granted (comma separated; empty = none: no claims to unseal).
    #[arg(long, default_value = "name,age")]
    scopes: String,
    /// Devices enrolled (each its own token id, key and seal); sign-ins go round robin.
    #[arg(long, default_value_t = 1000)]
    devices: usize,
    /// Skip phase 6 (PostgreSQL + Redis, 1 and 2 nodes; needs both servers reachable at
    /// SYMBOLON_TEST_PG_URL / SYMBOLON_TEST_REDIS_URL, default 127.0.0.1).
    #[arg(long)]
    no_cluster: bool,
    /// Bogus WebSocket upgrades in phase 7.
    #[arg(long, default_value_t = 100_000)]
    bogus_upgrades: usize,
    /// Initiates per class (enrolled with push, unknown) in phase 8.
    #[arg(long, default_value_t = 400)]
    timing_samples: usize,
    /// Run only the phases of issue 15 (7: bogus upgrades; 8: initiate timing).
    #[arg(long)]
    hardening: bool,
    /// Same-run A/B only: a second SQLite/memory server runs `serve` with this binary
    /// (B) next to the default one (A); closed-loop rounds alternate between them.
    #[arg(long)]
    ab: Option<std::path::PathBuf>,
    /// Rounds per server in the A/B (each `--seconds` / rounds long).
    #[arg(long, default_value_t = 6)]
    ab_rounds: usize,
    /// Only the OpenID Connect code flow (issue 21 item 4): phase 1, then closed-loop
    /// code flows (authorize → sign-in → /token with private_key_jwt → /userinfo)
    /// against their own in-run bound.
    #[arg(long)]
    oidc: bool,
    /// Only memory at scale (issue 21 item 5): idle RSS, `--pending` WebSocket sessions
    /// held (RSS per session), released, then `--bogus-upgrades` (RSS before/after).
    #[arg(long)]
    memory: bool,
}

// ---------------------------------------------------------------------------------------
// Process accounting

/// CPU seconds of another process from /proc/<pid>/stat (clock ticks of 1/100 s).
fn proc_cpu(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return 0.0 };
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else { return 0.0 };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (tick(11) + tick(12)) / 100.0
}

/// `VmRSS` and `VmHWM` of a process in MiB.
fn rss_mib(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .map_or(f64::NAN, |kib| kib / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Busy and total CPU seconds of the whole machine from /proc/stat (all cores).
fn machine_cpu() -> (f64, f64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let v: Vec<f64> =
        stat.lines().next().unwrap_or_default().split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
    let total: f64 = v.iter().take(8).sum();
    let idle = v.get(3).copied().unwrap_or(0.0) + v.get(4).copied().unwrap_or(0.0);
    ((total - idle) / 100.0, total / 100.0)
}

/// CPU used during a phase: the server, this bench, and everything else on the machine.
struct CpuMeter {
    pid: u32,
    at: Instant,
    server: f64,
    me: f64,
    machine: f64,
}

impl CpuMeter {
    fn start(pid: u32) -> Self {
        Self { pid, at: Instant::now(), server: proc_cpu(pid), me: self_cpu(), machine: machine_cpu().0 }
    }
    /// (server, bench, others) CPU seconds since start, and the wall seconds.
    fn read(&self) -> (f64, f64, f64, f64) {
        let (server, me) = (proc_cpu(self.pid) - self.server, self_cpu() - self.me);
        let others = (machine_cpu().0 - self.machine - server - me).max(0.0);
        (server, me, others, self.at.elapsed().as_secs_f64())
    }
    fn line(&self) -> String {
        let (server, me, others, wall) = self.read();
        format!(
            "cores busy: server {:.2}, bench {:.2}, other processes {:.2} (of {})",
            server / wall,
            me / wall,
            others / wall,
            std::thread::available_parallelism().map_or(0, |n| n.get())
        )
    }
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// Raises RLIMIT_NOFILE to 400,000 where allowed (root), else to the hard limit; the
/// server child inherits it (`--memory` holds 100,000 sockets on each side).
fn raise_nofile() -> u64 {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((_, hard)) => {
            if setrlimit(Resource::RLIMIT_NOFILE, 400_000, 400_000.max(hard)).is_err() {
                let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
            }
            getrlimit(Resource::RLIMIT_NOFILE).map_or(0, |(soft, _)| soft)
        }
        Err(_) => 0,
    }
}

// ---------------------------------------------------------------------------------------
// Phase 1: raw bound

/// A device verify JWS signing input is about this long.
const VERIFY_INPUT: [u8; 330] = [b'e'; 330];

/// Which P-256 verify the server uses for device JWS (src/service/jws.rs): the bound
/// counts this one and prints the other as a what-if.
const SERVER_VERIFY: Verify = Verify::Ring;

/// Device JWS the server verifies per sign-in: the phone's pending list and its verify.
const DEVICE_JWS_PER_SIGN_IN: f64 = 2.0;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Verify {
    Ring,
    P256Crate,
}

impl Verify {
    fn name(self) -> &'static str {
        match self {
            Verify::Ring => "ring",
            Verify::P256Crate => "p256 crate",
        }
    }
}

/// P-256 ECDSA verifies/s (software) on `threads` threads and CPU seconds per verify.
fn verify_rate(how: Verify, threads: usize, secs: f64) -> anyhow::Result<(f64, f64)> {
    let key = SigningKey::random(&mut rand_core::OsRng);
    let sig: Signature = key.sign(&VERIFY_INPUT);
    let vk = VerifyingKey::from(&key);
    let r = match how {
        Verify::P256Crate => {
            threads_rate(threads, secs, move || Ok(move || Ok(vk.verify(&VERIFY_INPUT, &sig).is_ok())))?
        }
        Verify::Ring => {
            let (sig, public) = (sig.to_bytes().to_vec(), vk.to_encoded_point(false).as_bytes().to_vec());
            threads_rate(threads, secs, move || {
                let key =
                    ring::signature::UnparsedPublicKey::new(&ring::signature::ECDSA_P256_SHA256_FIXED, public.clone());
                let sig = sig.clone();
                Ok(move || Ok(key.verify(&VERIFY_INPUT, &sig).is_ok()))
            })?
        }
    };
    Ok((r.per_second, r.cpu_per_op))
}

/// Rates (per second, CPU seconds per operation) measured in phase 1.
struct Raw {
    sign: (f64, f64),
    hmac: (f64, f64),
    aes: (f64, f64),
    verify: (f64, f64),
    /// The verify the server does not use (what-if).
    other_verify: (f64, f64),
}

/// Operations the server did per completed sign-in (phase 2).
#[derive(Clone, Copy, Debug, Default)]
struct PerSignIn {
    verify: f64,
    sign: f64,
    hmac: f64,
    encrypt: f64,
    decrypt: f64,
}

impl PerSignIn {
    /// Sign-ins/s: the costs share the machine, so their times per sign-in add up.
    /// AES-GCM decryptions are counted at the measured encryption rate.
    fn bound(&self, raw: &Raw, verify: (f64, f64)) -> f64 {
        1.0 / (self.verify / verify.0
            + self.sign / raw.sign.0
            + self.hmac / raw.hmac.0
            + (self.encrypt + self.decrypt) / raw.aes.0)
    }
    /// CPU seconds per sign-in of the bound's work.
    fn cpu(&self, raw: &Raw, verify: (f64, f64)) -> f64 {
        self.verify * verify.1
            + self.sign * raw.sign.1
            + self.hmac * raw.hmac.1
            + (self.encrypt + self.decrypt) * raw.aes.1
    }
}

async fn raw_rates(secs: f64) -> anyhow::Result<Raw> {
    let token = TestToken::new()?;
    token.use_in_process()?;
    let module = symbolon::keys::Module::load(&token.module)?;
    initialize_module(module.context())?;
    let pin = HsmPin::resolve(Some(&token.pin_file))?;
    let pool = SessionPool::start(module, Some(token.label.clone()), None, pin, 2, 4096, Duration::from_secs(10))?;
    let jwt = KeyPurpose::Jwt.new_label(1_800_000_000);
    let otp = KeyPurpose::Otp.new_label(1_800_000_000);
    let data = KeyPurpose::Data.new_label(1_800_000_000);
    for (purpose, label) in
        [(KeyPurpose::Jwt, jwt.clone()), (KeyPurpose::Otp, otp.clone()), (KeyPurpose::Data, data.clone())]
    {
        pool.run(move |s| s.generate(key_kind(purpose), &label)).await?;
    }
    let pair = |r: softhsm_tests::bench::Rate| (r.per_second, r.cpu_per_op);
    let sign = pair(pool_rate(&pool, &jwt, HsmOp::Es256, 16, secs).await);
    let hmac = pair(pool_rate(&pool, &otp, HsmOp::Hmac, 16, secs).await);
    let aes = pair(pool_rate(&pool, &data, HsmOp::AesGcm, 16, secs).await);
    pool.shutdown();
    let other = if SERVER_VERIFY == Verify::Ring { Verify::P256Crate } else { Verify::Ring };
    let verify = tokio::task::spawn_blocking(move || verify_rate(SERVER_VERIFY, 2, secs)).await??;
    let other_verify = tokio::task::spawn_blocking(move || verify_rate(other, 2, secs)).await??;
    Ok(Raw { sign, hmac, aes, verify, other_verify })
}

/// The server's `symbolon_hsm_operations_total` by operation: (sign, hmac, encrypt, decrypt).
async fn hsm_operations(admin_url: &str) -> anyhow::Result<[f64; 4]> {
    let (_, samples) = softhsm_tests::metrics::scrape(admin_url).await?;
    let op = |name: &str| {
        softhsm_tests::metrics::sum(&samples, "symbolon_hsm_operations_total", &[&format!("operation=\"{name}\"")])
    };
    Ok([op("sign"), op("hmac"), op("encrypt"), op("decrypt")])
}

/// Enrolls the fixture chain's bulk devices (`bulk_*` seals), 16 at a time.
async fn enroll_devices(env: &SignIn, count: usize) -> anyhow::Result<Vec<(Arc<Device>, String)>> {
    let seals: Vec<(String, String)> = env
        .chain
        .manifest
        .seals
        .iter()
        .filter(|s| s.name.starts_with("bulk_"))
        .filter_map(|s| Some((s.vds.clone(), s.tid.clone()?)))
        .take(count)
        .collect();
    if seals.len() < count {
        bail!("the fixture chain has {} bulk seals, {count} wanted", seals.len());
    }
    let client = Arc::new(DeviceClient::new(&env.server.public_url)?);
    let sem = Arc::new(tokio::sync::Semaphore::new(16));
    let mut set = JoinSet::new();
    for (i, (vds, tid)) in seals.into_iter().enumerate() {
        let (client, sem) = (client.clone(), sem.clone());
        set.spawn(async move {
            let _permit = sem.acquire_owned().await?;
            let device = Device::generate();
            client.enroll(&device, &vds, Push::None, "bench phone").await.map_err(|e| anyhow::anyhow!("{e}"))?;
            anyhow::Ok((i, Arc::new(device), tid))
        });
    }
    let mut out = Vec::with_capacity(count);
    while let Some(r) = set.join_next().await {
        match r? {
            Ok(enrolled) => out.push(enrolled),
            Err(e) => {
                let log = env.server.log();
                let errors: Vec<&str> = log.lines().filter(|l| l.contains("ERROR")).take(3).collect();
                bail!("enrolling device {} of {count}: {e:#}; the server's first errors: {errors:?}", out.len() + 1);
            }
        }
    }
    out.sort_by_key(|(i, _, _)| *i);
    Ok(out.into_iter().map(|(_, d, t)| (d, t)).collect())
}

/// A server with `devices` bulk devices enrolled: the sign-in environment and the devices.
async fn start_signin(
    extra: &str,
    options: ServerOptions,
    devices: usize,
) -> anyhow::Result<(SignIn, Vec<(Arc<Device>, String)>)> {
    let chain = FixtureChain::with_bulk_ids(devices)?;
    let env = SignIn::start_with_chain(TestToken::new()?, chain, extra, options, Push::None).await?;
    let t = Instant::now();
    let enrolled = enroll_devices(&env, devices).await?;
    println!("    {} devices enrolled in {:.1} s", enrolled.len(), t.elapsed().as_secs_f64());
    Ok((env, enrolled))
}

// ---------------------------------------------------------------------------------------
// The sign-in driver

struct Bench {
    env: SignIn,
    browser: reqwest::Client,
    device: reqwest::Client,
    /// The nodes' public base URLs: `env.server` first, then `_more_nodes`.
    nodes: Vec<String>,
    /// Round robin over the nodes: sign-in n starts on node n and is verified on n + 1.
    next_node: AtomicU64,
    /// The enrolled devices and their token ids; sign-in n uses device n.
    devices: Vec<(Arc<Device>, String)>,
    next_device: AtomicU64,
    scopes: Vec<String>,
    pid: u32,
    /// The server's RSS (MiB) once started and the devices enrolled.
    rss_idle: f64,
    /// The OpenID Connect client of `--oidc` (then every sign-in is a code flow).
    oidc: Option<OidcClient>,
    /// Nodes besides `env.server` (phase 6), stopped when the bench is dropped.
    _more_nodes: Vec<TestServer>,
    /// The PostgreSQL database and Redis prefix of phase 6, dropped after the nodes.
    _stores: Option<(PgDatabase, RedisPrefix)>,
}

impl Bench {
    fn new(
        env: SignIn,
        devices: Vec<(Arc<Device>, String)>,
        more: Vec<TestServer>,
        stores: Option<(PgDatabase, RedisPrefix)>,
        scopes: &[String],
    ) -> anyhow::Result<Self> {
        let http =
            || reqwest::Client::builder().timeout(Duration::from_secs(30)).pool_max_idle_per_host(usize::MAX).build();
        let pid = env.server.pid().context("server pid")?;
        let mut nodes = vec![env.server.public_url.clone()];
        nodes.extend(more.iter().map(|s| s.public_url.clone()));
        Ok(Bench {
            browser: http()?,
            device: http()?,
            nodes,
            next_node: AtomicU64::new(0),
            devices,
            next_device: AtomicU64::new(0),
            scopes: scopes.to_vec(),
            pid,
            rss_idle: rss_mib(pid).0,
            oidc: None,
            env,
            _more_nodes: more,
            _stores: stores,
        })
    }

    /// (node that starts the sign-in, node that verifies it).
    fn pick_nodes(&self) -> (&str, &str) {
        let n = self.next_node.fetch_add(1, Ordering::Relaxed) as usize;
        (&self.nodes[n % self.nodes.len()], &self.nodes[(n + 1) % self.nodes.len()])
    }

    /// The next device (round robin) and its token id.
    fn pick_device(&self) -> &(Arc<Device>, String) {
        let n = self.next_device.fetch_add(1, Ordering::Relaxed) as usize;
        &self.devices[n % self.devices.len()]
    }
}

/// Timings of one completed sign-in.
#[derive(Clone, Copy, Default)]
struct Trace {
    /// `POST /v1/auth/initiate` round trip.
    initiate: Duration,
    /// WebSocket connect + hello until `otp` arrives.
    otp: Duration,
    /// The phone's `POST /v1/device/pending` round trip.
    pending: Duration,
    /// Building the signed device JWS.
    jws: Duration,
    /// Verify sent until its `200`.
    verify: Duration,
    /// Verify sent until the browser's `approved` (the headline latency).
    approved: Duration,
    /// Code flow only: the authorization page, the completion (303 with the code),
    /// the token request, the userinfo request.
    authorize: Duration,
    complete: Duration,
    token: Duration,
    userinfo: Duration,
    /// Whole sign-in.
    total: Duration,
}

/// One attempted sign-in: the status and latency of each HTTP request it made.
#[derive(Default)]
struct Attempt {
    initiate: Option<(u16, Duration)>,
    verify: Option<(u16, Duration)>,
    trace: Option<Trace>,
    error: Option<String>,
}

async fn next_json(ws: &mut Ws) -> anyhow::Result<Value> {
    loop {
        match tokio::time::timeout(Duration::from_secs(30), ws.next()).await.context("websocket timeout")? {
            Some(Ok(Message::Text(t))) => return Ok(serde_json::from_str(&t)?),
            Some(Ok(Message::Close(f))) => bail!("websocket closed: {f:?}"),
            Some(Ok(_)) => continue,
            Some(Err(e)) => bail!("websocket: {e}"),
            None => bail!("websocket ended"),
        }
    }
}

/// Initiate; on 201 returns (session_id, browser_token).
async fn initiate(b: &Bench, node: &str, body: String, a: &mut Attempt) -> anyhow::Result<Option<(String, String)>> {
    let t = Instant::now();
    let r = b
        .browser
        .post(format!("{node}/v1/auth/initiate"))
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body)
        .send()
        .await?;
    let status = r.status().as_u16();
    let bytes = r.bytes().await?;
    a.initiate = Some((status, t.elapsed()));
    if status != 201 {
        return Ok(None);
    }
    let v: Value = serde_json::from_slice(&bytes)?;
    let field = |n: &str| v[n].as_str().map(str::to_string).context("initiate answer");
    Ok(Some((field("session_id")?, field("browser_token")?)))
}

/// Source addresses WebSockets are opened from, in turn: one address has about 28,000
/// ephemeral ports, and `--memory` holds 100,000 sockets to one server port.
const SOURCE_ADDRESSES: u64 = 32;
static NEXT_SOURCE: AtomicU64 = AtomicU64::new(0);

/// Opens a WebSocket to the loopback `url` from the next of 127.0.0.1..=127.0.0.32.
async fn ws_connect(url: &str) -> anyhow::Result<Ws> {
    // Small read buffer: tungstenite's 128 KiB default would make the bench, not the
    // server, the memory hog when 100,000 sessions are held.
    let config = WebSocketConfig::default().read_buffer_size(4096);
    let parsed = reqwest::Url::parse(url)?;
    let host: std::net::IpAddr = parsed.host_str().context("no host")?.parse()?;
    let server = std::net::SocketAddr::new(host, parsed.port().context("no port")?);
    let socket = tokio::net::TcpSocket::new_v4()?;
    if host.is_loopback() {
        let n = (NEXT_SOURCE.fetch_add(1, Ordering::Relaxed) % SOURCE_ADDRESSES) as u8;
        socket.bind(std::net::SocketAddr::new(std::net::Ipv4Addr::new(127, 0, 0, 1 + n).into(), 0))?;
    }
    let stream = socket.connect(server).await?;
    stream.set_nodelay(true)?;
    let (ws, _) = tokio_tungstenite::client_async_with_config(
        url,
        tokio_tungstenite::MaybeTlsStream::Plain(stream),
        Some(config),
    )
    .await?;
    Ok(ws)
}

/// Opens the browser channel and waits for `otp`.
async fn open_channel(node: &str, sid: &str, bt: &str) -> anyhow::Result<(Ws, String)> {
    let url = format!("{}/v1/auth/sessions/{sid}/ws", node.replace("http://", "ws://"));
    let mut ws = ws_connect(&url).await?;
    ws.send(Message::Text(json!({"type": "hello", "browser_token": bt}).to_string().into())).await?;
    let msg = next_json(&mut ws).await?;
    if msg["type"] != "otp" {
        bail!("expected otp, got {msg}");
    }
    Ok((ws, msg["otp"].as_str().unwrap_or_default().to_string()))
}

async fn sign_in(b: &Bench) -> Attempt {
    let mut a = Attempt::default();
    if let Err(e) = sign_in_inner(b, &mut a).await {
        a.error = Some(format!("{e:#}"));
    }
    a
}

async fn sign_in_inner(b: &Bench, a: &mut Attempt) -> anyhow::Result<()> {
    if b.oidc.is_some() {
        return code_flow(b, a).await;
    }
    let (start_node, verify_node) = b.pick_nodes();
    let (device, token_id) = b.pick_device();
    let body = json!({"token_id": token_id, "service_id": "rp1", "scopes": b.scopes}).to_string();
    let t0 = Instant::now();
    let Some((sid, bt)) = initiate(b, start_node, body, a).await? else { return Ok(()) };
    let initiated = t0.elapsed();
    let Some(mut trace) = approve(b, start_node, verify_node, device, sid, &bt, a).await? else { return Ok(()) };
    trace.initiate = initiated;
    trace.total = t0.elapsed();
    a.trace = Some(trace);
    Ok(())
}

/// After initiate: the browser's channel and `otp`, the phone's pending list and
/// verify, the browser's `approved`. `None` when the verify was refused (in `a`).
async fn approve(
    b: &Bench,
    start_node: &str,
    verify_node: &str,
    device: &Device,
    sid: String,
    bt: &str,
    a: &mut Attempt,
) -> anyhow::Result<Option<Trace>> {
    let t1 = Instant::now();
    let (mut ws, otp) = open_channel(start_node, &sid, bt).await?;
    let t2 = Instant::now();
    // The phone learns the session from its pending list, and the user compares codes.
    let pending = b
        .device
        .post(format!("{verify_node}/v1/device/pending"))
        .header(reqwest::header::CONTENT_TYPE, "application/jose")
        .body(device.device_jws(&PendingPayload { iat: unix_now() }))
        .send()
        .await?;
    let status = pending.status().as_u16();
    if status != 200 {
        bail!("pending answered {status}");
    }
    let pending: PendingSessions = pending.json().await?;
    let Some(entry) = pending.sessions.iter().find(|s| s.session_id == sid) else {
        bail!("the session is not in the device's pending list");
    };
    if entry.otp != otp {
        bail!("the phone's code differs from the browser's");
    }
    let t2p = Instant::now();
    let payload = VerifyPayload {
        session_id: sid,
        otp,
        decision: Decision::Approve,
        scopes: Some(b.scopes.clone()),
        iat: unix_now(),
    };
    let jws = device.device_jws(&payload);
    let t3 = Instant::now();
    let verify = async {
        let r = b
            .device
            .post(format!("{verify_node}/v1/auth/verify"))
            .header(reqwest::header::CONTENT_TYPE, "application/jose")
            .body(jws)
            .send()
            .await?;
        let status = r.status().as_u16();
        let _ = r.bytes().await?;
        anyhow::Ok((status, t3.elapsed()))
    };
    tokio::pin!(verify);
    let (mut verified, mut approved) = (None, None);
    while verified.is_none() || approved.is_none() {
        tokio::select! {
            r = &mut verify, if verified.is_none() => {
                let (status, took) = r?;
                a.verify = Some((status, took));
                if status != 200 {
                    return Ok(None);
                }
                verified = Some(took);
            }
            m = next_json(&mut ws), if approved.is_none() => {
                let m = m?;
                if m["type"] != "approved" {
                    bail!("expected approved, got {m}");
                }
                approved = Some(t3.elapsed());
            }
        }
    }
    Ok(Some(Trace {
        otp: t2 - t1,
        pending: t2p - t2,
        jws: t3 - t2p,
        verify: verified.unwrap_or_default(),
        approved: approved.unwrap_or_default(),
        ..Trace::default()
    }))
}

// ---------------------------------------------------------------------------------------
// The OpenID Connect code flow (`--oidc`)

/// The relying party of `--oidc`: a confidential client authenticating at `/token` with
/// `private_key_jwt` (ES256), redirect URI never followed.
struct OidcClient {
    key: softhsm_tests::oidc::IssuerKey,
    /// No redirects followed (the completion answers 303 to the client's callback).
    http: reqwest::Client,
}

const OIDC_CLIENT: &str = "bench-oidc";
const OIDC_CALLBACK: &str = "https://rp.bench.example/cb";
/// A PKCE pair (RFC 7636 appendix B).
const PKCE_VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
const PKCE_CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

impl OidcClient {
    fn new() -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(usize::MAX)
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Self { key: softhsm_tests::oidc::IssuerKey::generate("bench-es-1"), http })
    }

    /// The `[[services]]` entry of the client, its key inline.
    fn toml(&self, scopes: &[String]) -> String {
        let jwks = json!({"keys": [self.key.jwk()]}).to_string();
        let allowed: Vec<String> = scopes.iter().map(|s| format!("{s:?}")).collect();
        format!(
            "[[services]]\nid = \"{OIDC_CLIENT}\"\nname = \"Bench RP\"\nallowed_scopes = [{}]\n\
             [services.oidc]\nredirect_uris = [\"{OIDC_CALLBACK}\"]\n\
             token_endpoint_auth_method = \"private_key_jwt\"\njwks = '{jwks}'\n",
            allowed.join(", ")
        )
    }

    /// A fresh client assertion for the token endpoint at `token_url`.
    fn assertion(&self, token_url: &str) -> anyhow::Result<String> {
        let now = unix_now();
        let claims = json!({"iss": OIDC_CLIENT, "sub": OIDC_CLIENT, "aud": token_url, "iat": now,
                            "exp": now + 60, "jti": symbolon::ids::new_id()});
        let header = json!({"alg": "ES256", "kid": self.key.kid, "typ": "JWT"});
        Ok(softhsm_tests::jose::compact_es256(&self.key.key, &header, &claims)?)
    }
}

fn between<'a>(s: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let i = s.find(start)? + start.len();
    let j = s[i..].find(end)? + i;
    Some(&s[i..j])
}

/// One code flow as a browser, a phone and a relying party's back end do it: the
/// authorization page, the sign-in started from the issuer's origin, the completion
/// (303 to the callback with the code), `/token` with `private_key_jwt` and PKCE, then
/// `/userinfo` with the access token.
async fn code_flow(b: &Bench, a: &mut Attempt) -> anyhow::Result<()> {
    let Some(rp) = &b.oidc else { bail!("no OIDC client") };
    let node = b.nodes[0].as_str();
    let (device, token_id) = b.pick_device();
    let scope = std::iter::once("openid").chain(b.scopes.iter().map(String::as_str)).collect::<Vec<_>>().join(" ");
    let state = symbolon::ids::short_id();
    let t0 = Instant::now();
    let url = reqwest::Url::parse_with_params(
        &format!("{node}/authorize"),
        [
            ("client_id", OIDC_CLIENT),
            ("response_type", "code"),
            ("redirect_uri", OIDC_CALLBACK),
            ("scope", scope.as_str()),
            ("state", state.as_str()),
            ("code_challenge", PKCE_CHALLENGE),
            ("code_challenge_method", "S256"),
        ],
    )?;
    let page = rp.http.get(url).send().await?;
    if page.status() != 200 {
        bail!("authorize answered {}", page.status());
    }
    let cookie = page
        .headers()
        .get(reqwest::header::SET_COOKIE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(str::to_string)
        .context("the authorization page set no flow cookie")?;
    let html = page.text().await?;
    let context = between(&html, "name=\"context\" value=\"", "\"").context("no context on the page")?.to_string();
    let authorized = t0.elapsed();

    // The hosted page starts the sign-in from the issuer's origin.
    let t1 = Instant::now();
    let body = json!({"token_id": token_id, "service_id": OIDC_CLIENT, "scopes": b.scopes}).to_string();
    let r = b
        .browser
        .post(format!("{node}/v1/auth/initiate"))
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header(reqwest::header::ORIGIN, node)
        .body(body)
        .send()
        .await?;
    let status = r.status().as_u16();
    let bytes = r.bytes().await?;
    a.initiate = Some((status, t1.elapsed()));
    if status != 201 {
        return Ok(());
    }
    let v: Value = serde_json::from_slice(&bytes)?;
    let field = |n: &str| v[n].as_str().map(str::to_string).context("initiate answer");
    let (sid, bt) = (field("session_id")?, field("browser_token")?);
    let initiated = t1.elapsed();
    let Some(mut trace) = approve(b, node, node, device, sid.clone(), &bt, a).await? else { return Ok(()) };

    let t4 = Instant::now();
    let done = rp
        .http
        .post(format!("{node}/authorize/complete"))
        .header(reqwest::header::COOKIE, cookie)
        .form(&[("context", context.as_str()), ("session_id", sid.as_str()), ("browser_token", bt.as_str())])
        .send()
        .await?;
    if done.status() != 303 {
        bail!("completion answered {}", done.status());
    }
    let location = done.headers().get(reqwest::header::LOCATION).and_then(|v| v.to_str().ok()).unwrap_or_default();
    let location = reqwest::Url::parse(location)?;
    let code = location.query_pairs().find(|(k, _)| k == "code").map(|(_, v)| v.into_owned()).context("no code")?;
    let completed = t4.elapsed();

    let t5 = Instant::now();
    let token_url = format!("{node}/token");
    let assertion = rp.assertion(&token_url)?;
    let tokens = rp
        .http
        .post(&token_url)
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("redirect_uri", OIDC_CALLBACK),
            ("code_verifier", PKCE_VERIFIER),
            ("client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"),
            ("client_assertion", assertion.as_str()),
        ])
        .send()
        .await?;
    if tokens.status() != 200 {
        let status = tokens.status();
        bail!("token answered {status}: {}", tokens.text().await.unwrap_or_default());
    }
    let tokens: Value = tokens.json().await?;
    let access = tokens["access_token"].as_str().context("no access_token")?.to_string();
    if tokens["id_token"].as_str().is_none() {
        bail!("no id_token");
    }
    let token_took = t5.elapsed();

    let t6 = Instant::now();
    let info = rp.http.get(format!("{node}/userinfo")).bearer_auth(access).send().await?;
    if info.status() != 200 {
        bail!("userinfo answered {}", info.status());
    }
    let info: Value = info.json().await?;
    if info["sub"].as_str().is_none() {
        bail!("userinfo without sub: {info}");
    }
    trace.authorize = authorized;
    trace.initiate = initiated;
    trace.complete = completed;
    trace.token = token_took;
    trace.userinfo = t6.elapsed();
    trace.total = t0.elapsed();
    a.trace = Some(trace);
    Ok(())
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn sorted(traces: &[Trace], f: impl Fn(&Trace) -> Duration) -> Vec<Duration> {
    let mut v: Vec<Duration> = traces.iter().map(f).collect();
    v.sort();
    v
}

/// Prints p50/p99 of every step.
fn print_steps(traces: &[Trace]) {
    type Step = (&'static str, fn(&Trace) -> Duration);
    let steps: [Step; 7] = [
        ("initiate (HTTP)", |t| t.initiate),
        ("ws connect+hello→otp", |t| t.otp),
        ("device pending (HTTP)", |t| t.pending),
        ("device JWS (client)", |t| t.jws),
        ("verify (HTTP 200)", |t| t.verify),
        ("verify→approved (WS)", |t| t.approved),
        ("whole sign-in", |t| t.total),
    ];
    let flow: [Step; 4] = [
        ("authorize page (HTTP)", |t| t.authorize),
        ("complete → 303 code", |t| t.complete),
        ("/token private_key_jwt", |t| t.token),
        ("/userinfo", |t| t.userinfo),
    ];
    let code_flow = traces.iter().any(|t| t.token > Duration::ZERO);
    println!("    {:<24} {:>9} {:>9} {:>9}", "step", "p50 ms", "p99 ms", "mean ms");
    for (name, f) in steps.into_iter().chain(flow.into_iter().filter(|_| code_flow)) {
        let v = sorted(traces, f);
        let mean = if v.is_empty() { 0.0 } else { v.iter().map(|d| ms(*d)).sum::<f64>() / v.len() as f64 };
        println!("    {:<24} {:>9.2} {:>9.2} {:>9.2}", name, ms(pct(&v, 50.0)), ms(pct(&v, 99.0)), mean);
    }
}

fn print_errors(attempts: &[Attempt]) {
    let mut errors: Vec<&str> = attempts.iter().filter_map(|a| a.error.as_deref()).collect();
    let n = errors.len();
    if n > 0 {
        errors.sort();
        errors.dedup();
        println!("    {n} attempts failed, e.g.: {}", errors.iter().take(3).copied().collect::<Vec<_>>().join(" | "));
    }
    let odd: Vec<u16> = attempts
        .iter()
        .flat_map(|a| [a.initiate, a.verify])
        .flatten()
        .map(|(s, _)| s)
        .filter(|s| ![200, 201].contains(s))
        .collect();
    if !odd.is_empty() {
        let mut kinds = odd.clone();
        kinds.sort();
        kinds.dedup();
        println!("    {} requests answered {:?}", odd.len(), kinds);
    }
}

/// What [`closed_loop`] measured.
struct ClosedLoop {
    /// The attempts started after the warm-up and finished before the stop.
    attempts: Vec<Attempt>,
    /// Measured wall seconds, server and bench CPU seconds.
    elapsed: f64,
    server_cpu: f64,
    bench_cpu: f64,
    /// Sign-ins completed from the first start to the last end (warm-up included).
    completed_all: u64,
}

/// Phase 2: `n` closed-loop browsers for `secs` after a warm-up second.
async fn closed_loop(b: &Arc<Bench>, n: usize, secs: f64) -> ClosedLoop {
    let warm = Duration::from_secs(1);
    let stop = Arc::new(AtomicBool::new(false));
    let completed = Arc::new(AtomicU64::new(0));
    let begin = Instant::now();
    let mut set = JoinSet::new();
    for _ in 0..n {
        let (b, stop, completed) = (b.clone(), stop.clone(), completed.clone());
        set.spawn(async move {
            let mut done = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                let a = sign_in(&b).await;
                if a.trace.is_some() {
                    completed.fetch_add(1, Ordering::Relaxed);
                }
                if started >= begin + warm && !stop.load(Ordering::Relaxed) {
                    done.push(a);
                }
            }
            done
        });
    }
    tokio::time::sleep(warm).await;
    let meter = CpuMeter::start(b.pid);
    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
    stop.store(true, Ordering::Relaxed);
    let (srv, me, _, elapsed) = meter.read();
    println!("    {}", meter.line());
    let mut all = Vec::new();
    while let Some(r) = set.join_next().await {
        all.extend(r.unwrap_or_default());
    }
    ClosedLoop {
        attempts: all,
        elapsed,
        server_cpu: srv,
        bench_cpu: me,
        completed_all: completed.load(Ordering::Relaxed),
    }
}

/// Open loop: sign-ins started at `rate`/s for `secs` regardless of completions.
async fn open_loop(b: &Arc<Bench>, rate: f64, secs: f64) -> (Vec<Attempt>, f64, f64) {
    let start = Instant::now();
    let meter = CpuMeter::start(b.pid);
    let mut set = JoinSet::new();
    let mut k = 0u64;
    let mut late = Duration::ZERO;
    loop {
        let at = start + Duration::from_secs_f64(k as f64 / rate);
        if at >= start + Duration::from_secs_f64(secs) {
            break;
        }
        tokio::time::sleep_until(at.into()).await;
        late = late.max(at.elapsed());
        let b = b.clone();
        set.spawn(async move { sign_in(&b).await });
        k += 1;
    }
    let offered = k as f64 / start.elapsed().as_secs_f64();
    let mut all = Vec::new();
    while let Some(r) = set.join_next().await {
        if let Ok(a) = r {
            all.push(a);
        }
    }
    println!("    offered {offered:.0}/s ({k} sign-ins), pacer at most {:.1} ms late", ms(late));
    println!("    {}", meter.line());
    (all, offered, start.elapsed().as_secs_f64())
}

/// Phase 4: holds `count` pending sessions (unknown token ids) on open WebSockets.
async fn hold_pending(b: &Arc<Bench>, count: usize) -> anyhow::Result<(Vec<Ws>, usize)> {
    let sem = Arc::new(tokio::sync::Semaphore::new(64));
    let mut set = JoinSet::new();
    let run = unix_now() % 100_000;
    for i in 0..count {
        let (b, sem) = (b.clone(), sem.clone());
        set.spawn(async move {
            let _permit = sem.acquire_owned().await?;
            let body = json!({"token_id": format!("BENCH-{run}-{i:06}"), "service_id": "rp1", "scopes": []});
            let mut a = Attempt::default();
            let node = b.nodes[0].as_str();
            let Some((sid, bt)) = initiate(&b, node, body.to_string(), &mut a).await? else {
                bail!("initiate answered {:?}", a.initiate.map(|(s, _)| s));
            };
            Ok(open_channel(node, &sid, &bt).await?.0)
        });
    }
    let mut held = Vec::with_capacity(count);
    let mut failed = 0;
    let mut first_error = None;
    while let Some(r) = set.join_next().await {
        match r {
            Ok(Ok(ws)) => held.push(ws),
            Ok(Err(e)) => {
                failed += 1;
                first_error.get_or_insert(format!("{e:#}"));
            }
            Err(e) => {
                failed += 1;
                first_error.get_or_insert(e.to_string());
            }
        }
    }
    if let Some(e) = first_error {
        println!("    {failed} pending sessions failed, first: {e}");
    }
    Ok((held, failed))
}

/// Server-side latencies (from its `request done` log lines after byte `from`) of the
/// responses with `status`, or of all responses when `status` is `None`.
fn server_latencies(log: &std::path::Path, from: u64, status: Option<u64>) -> Vec<Duration> {
    let text = std::fs::read(log).unwrap_or_default();
    let text = String::from_utf8_lossy(text.get(from as usize..).unwrap_or_default());
    let mut out: Vec<Duration> = text
        .lines()
        .filter(|l| l.contains("request done"))
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        // The server logs JSON with the event's fields flattened into the line.
        .filter(|v| status.is_none() || v["status"].as_u64() == status)
        .filter_map(|v| v["latency_us"].as_u64())
        .map(Duration::from_micros)
        .collect();
    out.sort();
    out
}

fn log_len(log: &std::path::Path) -> u64 {
    std::fs::metadata(log).map_or(0, |m| m.len())
}

struct Overload {
    max_503: Duration,
    server_max_503: Duration,
    shed: usize,
    failed: usize,
    rss_after: f64,
}

/// Phase 5: `rate` sign-ins/s offered open loop for `secs`; counts 201/503 and their latencies.
async fn overload(b: &Arc<Bench>, rate: f64, secs: f64) -> Overload {
    let (rss_before, _) = rss_mib(b.pid);
    let log_from = log_len(&b.env.server.log_path);
    let (attempts, _, elapsed) = open_loop(b, rate, secs).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (rss_after, hwm) = rss_mib(b.pid);
    let count = |f: &dyn Fn(&Attempt) -> Option<(u16, Duration)>, code: u16| {
        attempts.iter().filter_map(f).filter(|(s, _)| *s == code).count()
    };
    let init = |a: &Attempt| a.initiate;
    let ver = |a: &Attempt| a.verify;
    let mut shed: Vec<Duration> = attempts
        .iter()
        .flat_map(|a| [a.initiate, a.verify])
        .flatten()
        .filter(|(s, _)| *s == 503)
        .map(|(_, d)| d)
        .collect();
    shed.sort();
    let completed = attempts.iter().filter(|a| a.trace.is_some()).count();
    println!(
        "    initiate: {} × 201, {} × 503; verify: {} × 200, {} × 503; {completed} sign-ins completed \
         ({:.0}/s over the {elapsed:.1} s until the last answer)",
        count(&init, 201),
        count(&init, 503),
        count(&ver, 200),
        count(&ver, 503),
        completed as f64 / elapsed
    );
    println!(
        "    503 latency seen by the client: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        ms(pct(&shed, 50.0)),
        ms(pct(&shed, 99.0)),
        ms(shed.last().copied().unwrap_or_default())
    );
    let srv_503 = server_latencies(&b.env.server.log_path, log_from, Some(503));
    let srv_all = server_latencies(&b.env.server.log_path, log_from, None);
    if !srv_all.is_empty() {
        println!(
            "    server-side (its log): 503 max {:.1} ms; all {} responses p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            ms(srv_503.last().copied().unwrap_or_default()),
            srv_all.len(),
            ms(pct(&srv_all, 50.0)),
            ms(pct(&srv_all, 99.0)),
            ms(srv_all.last().copied().unwrap_or_default())
        );
    }
    print_errors(&attempts);
    println!("    server RSS {rss_before:.1} → {rss_after:.1} MiB (peak {hwm:.1})");
    Overload {
        max_503: shed.last().copied().unwrap_or_default(),
        server_max_503: srv_503.last().copied().unwrap_or_default(),
        shed: shed.len(),
        failed: attempts.iter().filter(|a| a.error.is_some()).count(),
        rss_after,
    }
}

/// What phase 7 measured.
struct BogusUpgrades {
    rss_before: f64,
    rss_after: f64,
    hwm: f64,
    refused_4401: usize,
    failed: usize,
    channels_after: f64,
    sockets_after: f64,
    secs: f64,
}

/// Phase 7: `count` upgrades to random session ids with a random browser token in the
/// hello, 64 at a time; every third client hangs up right after its hello.
async fn bogus_upgrades(b: &Arc<Bench>, count: usize) -> anyhow::Result<BogusUpgrades> {
    let admin = b.env.server.admin_url.clone();
    let (rss_before, _) = rss_mib(b.pid);
    let ws_base = b.nodes[0].replace("http://", "ws://");
    let sem = Arc::new(tokio::sync::Semaphore::new(64));
    let mut set = JoinSet::new();
    let t = Instant::now();
    for i in 0..count {
        let (sem, url) = (sem.clone(), format!("{ws_base}/v1/auth/sessions/{}/ws", symbolon::ids::new_id()));
        set.spawn(async move {
            let _permit = sem.acquire_owned().await?;
            let mut ws = ws_connect(&url).await?;
            let hello = json!({"type": "hello", "browser_token": symbolon::ids::new_id()});
            ws.send(Message::Text(hello.to_string().into())).await?;
            if i % 3 == 0 {
                return anyhow::Ok(None);
            }
            loop {
                match tokio::time::timeout(Duration::from_secs(30), ws.next()).await? {
                    Some(Ok(Message::Close(f))) => return Ok(f.map(|f| u16::from(f.code))),
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => bail!("websocket: {e}"),
                    None => return Ok(None),
                }
            }
        });
    }
    let (mut refused_4401, mut failed) = (0, 0);
    while let Some(r) = set.join_next().await {
        match r {
            Ok(Ok(Some(4401))) => refused_4401 += 1,
            Ok(Ok(None)) => {}
            _ => failed += 1,
        }
    }
    let secs = t.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (rss_after, hwm) = rss_mib(b.pid);
    let gauge = |name: &'static str| {
        let admin = admin.clone();
        async move { softhsm_tests::metrics::value(&admin, name).await.unwrap_or(f64::NAN) }
    };
    Ok(BogusUpgrades {
        rss_before,
        rss_after,
        hwm,
        refused_4401,
        failed,
        channels_after: gauge("symbolon_session_event_channels").await,
        sockets_after: gauge("symbolon_websockets_open").await,
        secs,
    })
}

fn bogus_row(count: usize, r: &BogusUpgrades) -> Row {
    println!(
        "    {count} upgrades in {:.1} s ({:.0}/s): {} closed 4401, {} hung up by the client, {} failed",
        r.secs,
        count as f64 / r.secs,
        r.refused_4401,
        count - r.refused_4401 - r.failed,
        r.failed
    );
    println!(
        "    server RSS {:.1} → {:.1} MiB (peak {:.1}); after: {} sockets open, {} session channels held",
        r.rss_before, r.rss_after, r.hwm, r.sockets_after, r.channels_after
    );
    Row {
        what: format!("{count} bogus WS upgrades: RSS before → after"),
        measured: format!("{:.1} → {:.1} MiB, {} channels left", r.rss_before, r.rss_after, r.channels_after),
        target: "0 channels left, RSS ≤ before + 10 %".into(),
        pass: r.channels_after == 0.0 && r.failed == 0 && r.rss_after <= r.rss_before * 1.10,
    }
}

fn print_rows(rows: &[Row]) {
    println!("\n{:<48} {:<34} {:<34} result", "target", "measured", "goal");
    for r in rows {
        let result = if r.target == "(info)" {
            "-"
        } else if r.pass {
            "PASS"
        } else {
            "MISS"
        };
        println!("{:<48} {:<34} {:<34} {result}", r.what, r.measured, r.target);
    }
    println!("load average at end {}", loadavg());
}

struct Row {
    what: String,
    measured: String,
    target: String,
    pass: bool,
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let nofile = raise_nofile();
    let scopes: Vec<String> = args.scopes.split(',').filter(|s| !s.is_empty()).map(str::to_string).collect();
    println!(
        "symbolon-bench: {} cores, load average {} at start, RLIMIT_NOFILE {nofile}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        loadavg()
    );

    if let Some(bin) = &args.ab {
        return ab_run(&args, &scopes, bin).await;
    }

    if args.oidc {
        return oidc_run(&args, &scopes).await;
    }
    if args.memory {
        return memory_run(&args, &scopes).await;
    }

    if args.hardening {
        let (b, _) = start_server(&args, &scopes, None).await?;
        let rows = hardening_phases(&args, &b, true).await?;
        print_rows(&rows);
        return Ok(());
    }

    // Phase 1 ----------------------------------------------------------------------------
    println!("\n[1] raw rates ({:.0} s per measurement, fresh SoftHSM2 token)", args.raw_seconds);
    let raw = raw_rates(args.raw_seconds).await?;
    let show = |what: &str, r: (f64, f64)| println!("    {what:<38} {:>8.0}/s  {:>7.1} µs CPU/op", r.0, r.1 * 1e6);
    show("HSM ES256 sign   (pool, 2 workers)", raw.sign);
    show("HSM HMAC-SHA256  (pool, 2 workers)", raw.hmac);
    show("HSM AES-256-GCM  (pool, 2 workers)", raw.aes);
    show(&format!("P-256 verify, {} (server's, 2 thr)", SERVER_VERIFY.name()), raw.verify);
    show("P-256 verify, the other (what-if)", raw.other_verify);

    // Server -------------------------------------------------------------------------------
    println!("\nscopes requested and granted: {:?}; {} devices", scopes, args.devices);
    let (b, env_overrides) = start_server(&args, &scopes, None).await?;
    let (pid, rss_idle) = (b.pid, b.rss_idle);

    // Phase 2 ----------------------------------------------------------------------------
    println!("\n[2] peak: {} closed-loop browsers, {:.0} s (after 1 s warm-up)", args.concurrency, args.seconds);
    let ops_before = hsm_operations(&b.env.server.admin_url).await?;
    let run = closed_loop(&b, args.concurrency, args.seconds).await;
    let ops_after = hsm_operations(&b.env.server.admin_url).await?;
    let done = run.completed_all.max(1) as f64;
    let per_op = |i: usize| (ops_after[i] - ops_before[i]) / done;
    let per = PerSignIn {
        verify: DEVICE_JWS_PER_SIGN_IN,
        sign: per_op(0),
        hmac: per_op(1),
        encrypt: per_op(2),
        decrypt: per_op(3),
    };
    let traces: Vec<Trace> = run.attempts.iter().filter_map(|a| a.trace).collect();
    let elapsed = run.elapsed;
    let peak = traces.len() as f64 / elapsed;
    print_steps(&traces);
    print_errors(&run.attempts);
    let (bound, bound_cpu) = (per.bound(&raw, raw.verify), per.cpu(&raw, raw.verify));
    let what_if = per.bound(&raw, raw.other_verify);
    let ratio = peak / bound;
    println!(
        "    server work per sign-in (its metrics, {} sign-ins): {:.2} ES256 signs, {:.2} HMACs, {:.2} AES-GCM \
         encryptions, {:.2} decryptions; {:.0} device-JWS verifies",
        run.completed_all, per.sign, per.hmac, per.encrypt, per.decrypt, per.verify
    );
    println!(
        "    bound = 1 / Σ(ops per sign-in / rate) = {bound:.0} sign-ins/s ({:.0} µs CPU per sign-in); \
         what-if with the other verify ({}): {what_if:.0}/s",
        bound_cpu * 1e6,
        if SERVER_VERIFY == Verify::Ring { Verify::P256Crate.name() } else { Verify::Ring.name() }
    );
    let per_cpu = |cpu: f64| cpu / traces.len().max(1) as f64 * 1e6;
    let server_us = per_cpu(run.server_cpu);
    println!("    {} sign-ins in {elapsed:.1} s = {peak:.0}/s = {:.0} % of the bound", traces.len(), ratio * 100.0);
    println!(
        "    CPU per sign-in: server {server_us:.0} µs (bound's crypto {:.0} µs = {:.0} % of it; {:.1}×), bench client \
         {:.0} µs; machine {:.2} of 2 cores busy with both",
        bound_cpu * 1e6,
        bound_cpu * 1e6 / server_us * 100.0,
        server_us / (bound_cpu * 1e6),
        per_cpu(run.bench_cpu),
        (run.server_cpu + run.bench_cpu) / elapsed
    );
    let peak_approved = sorted(&traces, |t| t.approved);
    let (rss_peak, _) = rss_mib(pid);
    println!("    server RSS {rss_peak:.1} MiB");

    // Phase 3 ----------------------------------------------------------------------------
    let half = (peak / 2.0).max(1.0);
    println!("\n[3] half of peak: {half:.0} sign-ins/s open loop, {:.0} s", args.seconds);
    let (attempts, _, _) = open_loop(&b, half, args.seconds).await;
    let half_traces: Vec<Trace> = attempts.iter().filter_map(|a| a.trace).collect();
    print_steps(&half_traces);
    print_errors(&attempts);
    let half_approved = sorted(&half_traces, |t| t.approved);
    let half_p99 = pct(&half_approved, 99.0);

    // Phase 4 ----------------------------------------------------------------------------
    println!("\n[4] {} pending WebSocket sessions (unknown token ids, hello done, otp received)", args.pending);
    let (rss_before_pending, _) = rss_mib(pid);
    let t = Instant::now();
    let (held, failed) = hold_pending(&b, args.pending).await?;
    let opened_in = t.elapsed();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (rss_pending, hwm_pending) = rss_mib(pid);
    let (me_rss, _) = rss_mib(std::process::id());
    println!(
        "    {} held ({failed} failed), opened in {:.1} s; server RSS {rss_before_pending:.1} → {rss_pending:.1} MiB \
         (peak {hwm_pending:.1}), {:.1} KiB per session; bench RSS {me_rss:.1} MiB",
        held.len(),
        opened_in.as_secs_f64(),
        (rss_pending - rss_before_pending) * 1024.0 / held.len().max(1) as f64
    );
    let held_count = held.len();
    let per_session_kib = (rss_pending - rss_before_pending) * 1024.0 / held_count.max(1) as f64;
    drop(held);
    tokio::time::sleep(Duration::from_secs(2)).await;

    // Phase 5 ----------------------------------------------------------------------------
    let over = peak * 3.0;
    let rss_before = rss_mib(pid).0;
    let mut bursts = Vec::new();
    for n in 1..=2 {
        println!("\n[5.{n}] 3× peak offered: {over:.0} sign-ins/s open loop, {:.0} s", args.overload_seconds);
        bursts.push(overload(&b, over, args.overload_seconds).await);
    }
    let max_503 = bursts.iter().map(|o| o.max_503).max().unwrap_or_default();
    let srv_max_503 = bursts.iter().map(|o| o.server_max_503).max().unwrap_or_default();
    let shed: usize = bursts.iter().map(|o| o.shed).sum();
    let other_errors: usize = bursts.iter().map(|o| o.failed).sum();
    let rss_after: Vec<f64> = bursts.iter().map(|o| o.rss_after).collect();

    // Phases 7 and 8 --------------------------------------------------------------------
    // Phase 1 used this process's one SoftHSM2 configuration; phase 8 needs its own.
    let hardening = hardening_phases(&args, &b, false).await?;

    // Phase 6 ----------------------------------------------------------------------------
    let scale_out = if args.no_cluster {
        println!("\n[6] scale-out: skipped (--no-cluster)");
        Vec::new()
    } else {
        scale_out(&args, &env_overrides, &scopes, b).await?
    };

    // Summary ----------------------------------------------------------------------------
    let deadline = humantime_ms(&args.hsm_deadline);
    let bound_503 = deadline + 100.0;
    let mut rows = vec![
        Row {
            what: "peak sign-ins/s vs in-run bound".into(),
            measured: format!("{peak:.0}/s of {bound:.0}/s = {:.0} %", ratio * 100.0),
            target: "≥ 50 %".into(),
            pass: ratio >= 0.5,
        },
        Row {
            what: "server CPU per sign-in vs the bound's crypto".into(),
            measured: format!("{server_us:.0} µs vs {:.0} µs = {:.1}×", bound_cpu * 1e6, server_us / (bound_cpu * 1e6)),
            target: "≤ 2×".into(),
            pass: server_us <= 2.0 * bound_cpu * 1e6,
        },
        Row {
            what: "server RSS idle (after start and enrollments)".into(),
            measured: format!("{rss_idle:.1} MiB"),
            target: "≤ 64 MiB".into(),
            pass: rss_idle <= 64.0,
        },
        Row {
            what: "peak: verify→approved p50 / p99".into(),
            measured: format!("{:.1} / {:.1} ms", ms(pct(&peak_approved, 50.0)), ms(pct(&peak_approved, 99.0))),
            target: "(info)".into(),
            pass: true,
        },
        Row {
            what: format!("half peak ({half:.0}/s): verify→approved p50 / p99"),
            measured: format!("{:.1} / {:.1} ms", ms(pct(&half_approved, 50.0)), ms(half_p99)),
            target: "p99 ≤ 5 ms".into(),
            pass: !half_approved.is_empty() && half_p99 <= Duration::from_millis(5),
        },
        Row {
            what: format!("server RSS holding {held_count} pending WS"),
            measured: format!("{rss_pending:.1} MiB, {per_session_kib:.1} KiB per session"),
            target: format!("{} held, ≤ 5 KiB per session", args.pending),
            pass: held_count == args.pending && per_session_kib <= 5.0,
        },
        Row {
            what: "3× peak: 503 max latency (client / server)".into(),
            measured: format!("{:.0} / {:.0} ms ({shed} × 503)", ms(max_503), ms(srv_max_503)),
            target: format!("≤ hsm.deadline + 100 ms = {bound_503:.0} ms"),
            pass: ms(max_503) <= bound_503,
        },
        Row {
            what: "3× peak: only 2xx or 503, no failures".into(),
            measured: format!("{other_errors} failed"),
            target: "0".into(),
            pass: other_errors == 0,
        },
        Row {
            what: "3× peak: server RSS before → burst 1 → burst 2".into(),
            measured: format!("{rss_before:.0} → {:.0} → {:.0} MiB", rss_after[0], rss_after[1]),
            target: "flat: burst 2 ≤ burst 1 + 10 %".into(),
            pass: rss_after[1] <= rss_after[0] * 1.10,
        },
    ];
    for (nodes, rate, r) in &scale_out {
        rows.push(Row {
            what: format!("PG + Redis, {nodes} node(s): peak vs SQLite/memory"),
            measured: format!("{rate:.0}/s, median of rounds {:.0} %", r * 100.0),
            target: "≥ 70 %".into(),
            pass: *r >= 0.7,
        });
    }
    rows.extend(hardening);
    print_rows(&rows);
    Ok(())
}

/// `--oidc`: phase 1, then the code flow's closed-loop peak against its own bound: the
/// HSM operations the server did per flow (its metrics) plus three P-256 verifies (the
/// phone's pending list and verify, and the client assertion at `/token`, which
/// jsonwebtoken verifies with ring).
async fn oidc_run(args: &Args, scopes: &[String]) -> anyhow::Result<()> {
    println!("\n[1] raw rates ({:.0} s per measurement, fresh SoftHSM2 token)", args.raw_seconds);
    let raw = raw_rates(args.raw_seconds).await?;
    let show = |what: &str, r: (f64, f64)| println!("    {what:<38} {:>8.0}/s  {:>7.1} µs CPU/op", r.0, r.1 * 1e6);
    show("HSM ES256 sign   (pool, 2 workers)", raw.sign);
    show("HSM HMAC-SHA256  (pool, 2 workers)", raw.hmac);
    show("HSM AES-256-GCM  (pool, 2 workers)", raw.aes);
    show(&format!("P-256 verify, {} (server's, 2 thr)", SERVER_VERIFY.name()), raw.verify);
    println!("\nOIDC code flows, scopes {scopes:?}, {} devices", args.devices);
    let (b, _) = start_server_with(args, scopes, None, Some(OidcClient::new()?), Vec::new()).await?;
    println!("\n[oidc] peak: {} closed-loop flows, {:.0} s (after 1 s warm-up)", args.concurrency, args.seconds);
    let ops_before = hsm_operations(&b.env.server.admin_url).await?;
    let run = closed_loop(&b, args.concurrency, args.seconds).await;
    let ops_after = hsm_operations(&b.env.server.admin_url).await?;
    let done = run.completed_all.max(1) as f64;
    let per_op = |i: usize| (ops_after[i] - ops_before[i]) / done;
    let per = PerSignIn {
        verify: DEVICE_JWS_PER_SIGN_IN + 1.0,
        sign: per_op(0),
        hmac: per_op(1),
        encrypt: per_op(2),
        decrypt: per_op(3),
    };
    let traces: Vec<Trace> = run.attempts.iter().filter_map(|a| a.trace).collect();
    let peak = traces.len() as f64 / run.elapsed;
    print_steps(&traces);
    print_errors(&run.attempts);
    let (bound, bound_cpu) = (per.bound(&raw, raw.verify), per.cpu(&raw, raw.verify));
    let ratio = peak / bound;
    let server_us = run.server_cpu / traces.len().max(1) as f64 * 1e6;
    println!(
        "    server work per flow (its metrics, {} flows): {:.2} ES256 signs, {:.2} HMACs, {:.2} AES-GCM \
         encryptions, {:.2} decryptions; {:.0} P-256 verifies (2 device JWS, 1 client assertion)",
        run.completed_all, per.sign, per.hmac, per.encrypt, per.decrypt, per.verify
    );
    println!(
        "    bound = 1 / Σ(ops per flow / rate) = {bound:.0} flows/s ({:.0} µs CPU per flow); \
         {} flows in {:.1} s = {peak:.0}/s = {:.0} % of it",
        bound_cpu * 1e6,
        traces.len(),
        run.elapsed,
        ratio * 100.0
    );
    println!(
        "    CPU per flow: server {server_us:.0} µs ({:.1}× the bound's crypto), bench client {:.0} µs",
        server_us / (bound_cpu * 1e6),
        run.bench_cpu / traces.len().max(1) as f64 * 1e6
    );
    let approved = sorted(&traces, |t| t.approved);
    let rows = vec![
        Row {
            what: "OIDC code flow peak vs its in-run bound".into(),
            measured: format!("{peak:.0}/s of {bound:.0}/s = {:.0} %", ratio * 100.0),
            target: "≥ 50 %".into(),
            pass: ratio >= 0.5,
        },
        Row {
            what: "server CPU per code flow vs the bound's crypto".into(),
            measured: format!("{server_us:.0} µs vs {:.0} µs = {:.1}×", bound_cpu * 1e6, server_us / (bound_cpu * 1e6)),
            target: "(info)".into(),
            pass: true,
        },
        Row {
            what: "code flow: verify→approved p50 / p99".into(),
            measured: format!("{:.1} / {:.1} ms", ms(pct(&approved, 50.0)), ms(pct(&approved, 99.0))),
            target: "(info)".into(),
            pass: true,
        },
    ];
    print_rows(&rows);
    Ok(())
}

/// `--memory`: the server's RSS idle, holding `--pending` pending WebSocket sessions
/// (each a distinct unknown token id: hello done, `otp` received), after they are
/// released, and around `--bogus-upgrades` upgrades to random session ids.
async fn memory_run(args: &Args, scopes: &[String]) -> anyhow::Result<()> {
    let open = (args.pending + 1000).to_string();
    let extra_env = vec![("SYMBOLON_LIMITS__WEBSOCKET_MAX_OPEN".to_string(), open)];
    let (b, _) = start_server_with(args, scopes, None, None, extra_env).await?;
    let pid = b.pid;
    // Let the start-up settle (enrollments, the smoke test's session) before the baseline.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (rss_idle, _) = rss_mib(pid);
    println!("\n[4] {} pending WebSocket sessions (unknown token ids, hello done, otp received)", args.pending);
    let t = Instant::now();
    let (held, failed) = hold_pending(&b, args.pending).await?;
    let opened_in = t.elapsed();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (rss_pending, hwm) = rss_mib(pid);
    let per_session_kib = (rss_pending - rss_idle) * 1024.0 / held.len().max(1) as f64;
    println!(
        "    {} held ({failed} failed), opened in {:.1} s; server RSS {rss_idle:.1} → {rss_pending:.1} MiB \
         (peak {hwm:.1}), {per_session_kib:.2} KiB per session",
        held.len(),
        opened_in.as_secs_f64(),
    );
    let held_count = held.len();
    drop(held);
    let admin = b.env.server.admin_url.clone();
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(30) {
        let open = softhsm_tests::metrics::value(&admin, "symbolon_websockets_open").await.unwrap_or(f64::NAN);
        if open == 0.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (rss_released, _) = rss_mib(pid);
    println!("    released: server RSS {rss_released:.1} MiB");
    let mut rows = vec![
        Row {
            what: "server RSS idle (after start and enrollments)".into(),
            measured: format!("{rss_idle:.1} MiB"),
            target: "≤ 64 MiB".into(),
            pass: rss_idle <= 64.0,
        },
        Row {
            what: format!("server RSS holding {held_count} pending WS"),
            measured: format!("{rss_pending:.1} MiB, {per_session_kib:.2} KiB per session"),
            target: format!("{} held, ≤ 5 KiB per session", args.pending),
            pass: held_count == args.pending && per_session_kib <= 5.0,
        },
        Row {
            what: "server RSS after the sessions closed".into(),
            measured: format!("{rss_released:.1} MiB"),
            target: "(info)".into(),
            pass: true,
        },
    ];
    rows.extend(hardening_phases(args, &b, false).await?);
    print_rows(&rows);
    Ok(())
}

/// Same-run A/B: servers A (the default binary) and B (`bin`), alike but for the binary,
/// take turns in closed-loop rounds; prints each one's sign-ins/s and server CPU per
/// sign-in per round and the medians of the per-round ratios B / A.
async fn ab_run(args: &Args, scopes: &[String], bin: &std::path::Path) -> anyhow::Result<()> {
    let (a, _) = start_server(args, scopes, None).await?;
    let (b, _) = start_server(args, scopes, Some(bin.to_path_buf())).await?;
    let rounds = args.ab_rounds.max(1);
    let secs = args.seconds / rounds as f64;
    println!("\n[A/B] A = default binary, B = {}; {rounds} rounds of {secs:.1} s each, alternating", bin.display());
    // (sign-ins/s, server µs CPU per sign-in) per round.
    let mut res: [Vec<(f64, f64)>; 2] = [Vec::new(), Vec::new()];
    for round in 0..rounds {
        // Alternate which goes first, so drift hits both alike.
        let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        for i in order {
            let server = if i == 0 { &a } else { &b };
            println!("  round {}, {}", round + 1, if i == 0 { "A" } else { "B" });
            let run = closed_loop(server, args.concurrency, secs).await;
            let ok = run.attempts.iter().filter(|x| x.trace.is_some()).count();
            print_errors(&run.attempts);
            res[i].push((ok as f64 / run.elapsed, run.server_cpu / ok.max(1) as f64 * 1e6));
        }
    }
    let show = |name: &str, r: &[(f64, f64)]| {
        let rates: Vec<String> = r.iter().map(|x| format!("{:.0}", x.0)).collect();
        let cpus: Vec<String> = r.iter().map(|x| format!("{:.0}", x.1)).collect();
        println!("  {name}: sign-ins/s [{}]; server µs CPU per sign-in [{}]", rates.join(", "), cpus.join(", "));
    };
    show("A", &res[0]);
    show("B", &res[1]);
    let mut rate: Vec<f64> = res[1].iter().zip(&res[0]).map(|(b, a)| b.0 / a.0).collect();
    let mut cpu: Vec<f64> = res[1].iter().zip(&res[0]).map(|(b, a)| b.1 / a.1).collect();
    println!(
        "  B / A, median of the per-round ratios: sign-ins/s {:.3}, server CPU per sign-in {:.3}",
        softhsm_tests::bench::median(&mut rate),
        softhsm_tests::bench::median(&mut cpu)
    );
    println!("load average at end {}", loadavg());
    Ok(())
}

/// The server of phases 2–5 and 7 (limits lifted), checked by one sign-in; with the
/// environment it was started with. `serve_bin` replaces the `symbolon` binary (A/B).
async fn start_server(
    args: &Args,
    scopes: &[String],
    serve_bin: Option<std::path::PathBuf>,
) -> anyhow::Result<(Arc<Bench>, Vec<(String, String)>)> {
    start_server_with(args, scopes, serve_bin, None, Vec::new()).await
}

/// As [`start_server`]; with `oidc`, its client is configured and every sign-in is a
/// code flow (the `/authorize` limits lifted too).
async fn start_server_with(
    args: &Args,
    scopes: &[String],
    serve_bin: Option<std::path::PathBuf>,
    oidc: Option<OidcClient>,
    extra_env: Vec<(String, String)>,
) -> anyhow::Result<(Arc<Bench>, Vec<(String, String)>)> {
    let max_in_flight = args.max_in_flight.to_string();
    let mut env_overrides: Vec<(String, String)> = [
        ("SYMBOLON_AUTH__MAX_PENDING", "1000000"),
        ("SYMBOLON_LIMITS__INITIATE_PER_IP_PER_MINUTE", "1000000000"),
        ("SYMBOLON_LIMITS__INITIATE_PER_TOKEN_PER_MINUTE", "1000000000"),
        ("SYMBOLON_LIMITS__WEBSOCKET_PER_IP_PER_MINUTE", "1000000000"),
        ("SYMBOLON_LIMITS__POLL_PER_IP_PER_MINUTE", "1000000000"),
        ("SYMBOLON_HSM__DEADLINE", args.hsm_deadline.as_str()),
        ("SYMBOLON_SERVER__MAX_IN_FLIGHT", max_in_flight.as_str()),
        ("SYMBOLON_TELEMETRY__LEVEL", args.log_level.as_str()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    env_overrides.extend(extra_env);
    let extra = match &oidc {
        Some(rp) => {
            env_overrides.push(("SYMBOLON_LIMITS__OIDC_AUTHORIZE_PER_IP_PER_MINUTE".into(), "1000000000".into()));
            env_overrides.push(("SYMBOLON_LIMITS__OIDC_MAX_PENDING_CONTEXTS".into(), "1000000".into()));
            rp.toml(scopes)
        }
        None => String::new(),
    };
    let (env, devices) = start_signin(
        &extra,
        ServerOptions { env: env_overrides.clone(), serve_bin, ..Default::default() },
        args.devices,
    )
    .await?;
    let mut b = Bench::new(env, devices, Vec::new(), None, scopes)?;
    b.oidc = oidc;
    let b = Arc::new(b);
    println!("\nserver pid {}, hsm.workers 2, limits lifted so they do not shape the numbers:", b.pid);
    for (k, v) in &env_overrides {
        println!("    {k}={v}");
    }
    println!("    server RSS idle {:.1} MiB", b.rss_idle);
    smoke_test(&b).await?;
    Ok((b, env_overrides))
}

/// The phases of issue 15: 7 (bogus upgrades), 8 (initiate timing) when `timing`.
/// Phase 8 opens a token in this process, and SoftHSM2 reads one configuration per
/// process: after phase 1 it cannot, so the full run leaves it to `--hardening`.
async fn hardening_phases(args: &Args, b: &Arc<Bench>, timing: bool) -> anyhow::Result<Vec<Row>> {
    println!("\n[7] {} bogus WebSocket upgrades (random session ids and browser tokens)", args.bogus_upgrades);
    let bogus = bogus_upgrades(b, args.bogus_upgrades).await?;
    let mut rows = vec![bogus_row(args.bogus_upgrades, &bogus)];
    if !timing {
        println!("\n[8] initiate timing: skipped (phase 1 opened this process's token; run --hardening)");
        return Ok(rows);
    }
    println!(
        "\n[8] initiate timing with push on: {} initiates per class, enrolled (push token) and unknown alternating",
        args.timing_samples
    );
    rows.extend(initiate_timing(args).await?);
    Ok(rows)
}

/// Phase 8: a fresh server with push on (the fake FCM), limits lifted; initiates one
/// at a time, alternating between the enrolled token id (its push token is opened and
/// the push queued) and a new unknown token id (the decoy envelope is opened).
async fn initiate_timing(args: &Args) -> anyhow::Result<Vec<Row>> {
    let fake = softhsm_tests::fake_fcm::FakeFcm::start().await?;
    let options = ServerOptions {
        env: [
            ("SYMBOLON_AUTH__MAX_PENDING", "1000000"),
            ("SYMBOLON_LIMITS__INITIATE_PER_IP_PER_MINUTE", "1000000000"),
            ("SYMBOLON_LIMITS__INITIATE_PER_TOKEN_PER_MINUTE", "1000000000"),
            ("SYMBOLON_TELEMETRY__LEVEL", args.log_level.as_str()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect(),
        ..Default::default()
    };
    let env = SignIn::start_with_fcm(&fake, "fcm-registration-token-bench-0123456789", "", options).await?;
    let client = reqwest::Client::builder().timeout(Duration::from_secs(30)).build()?;
    let url = format!("{}/v1/auth/initiate", env.server.public_url);
    let initiate = |token_id: String| {
        let (client, url) = (client.clone(), url.clone());
        async move {
            let body = json!({"token_id": token_id, "service_id": "rp1", "scopes": []});
            let t = Instant::now();
            let r = client.post(&url).json(&body).send().await?;
            let status = r.status().as_u16();
            r.bytes().await?;
            let took = t.elapsed();
            if status != 201 {
                bail!("initiate answered {status}");
            }
            anyhow::Ok(took)
        }
    };
    // Warm-up: connections, the FCM access token, the decoy.
    for _ in 0..20 {
        initiate(env.token_id.clone()).await?;
        initiate("AUS-UNKNOWN001".to_string()).await?;
    }
    let (mut enrolled, mut unknown) = (Vec::new(), Vec::new());
    // One unknown token id throughout, so both classes hold as many pending sessions
    // (the pending cap is lifted; the session store's work then matches too).
    let unknown_id = "AUS-UNKNOWN001".to_string();
    for n in 0..args.timing_samples {
        // Alternate which class goes first, so drift affects both alike.
        if n % 2 == 0 {
            enrolled.push(initiate(env.token_id.clone()).await?);
            unknown.push(initiate(unknown_id.clone()).await?);
        } else {
            unknown.push(initiate(unknown_id.clone()).await?);
            enrolled.push(initiate(env.token_id.clone()).await?);
        }
    }
    enrolled.sort();
    unknown.sort();
    let dist =
        |v: &[Duration]| format!("{:.2} / {:.2} / {:.2} ms", ms(pct(v, 50.0)), ms(pct(v, 90.0)), ms(pct(v, 99.0)));
    println!("    enrolled (push token opened, push queued): p50 / p90 / p99 = {}", dist(&enrolled));
    println!("    unknown  (decoy envelope opened):          p50 / p90 / p99 = {}", dist(&unknown));
    let pushed = fake.messages().len();
    println!("    pushes received by the fake FCM: {pushed}");
    let p50 = |v: &[Duration]| ms(pct(v, 50.0));
    let gap = (p50(&enrolled) - p50(&unknown)).abs();
    Ok(vec![
        Row {
            what: "initiate with push on: enrolled p50/p90/p99".into(),
            measured: dist(&enrolled),
            target: "(info)".into(),
            pass: true,
        },
        Row {
            what: "initiate with push on: unknown p50/p90/p99".into(),
            measured: dist(&unknown),
            target: "(info)".into(),
            pass: true,
        },
        Row {
            what: "initiate p50 gap, enrolled vs unknown".into(),
            measured: format!("{gap:.3} ms"),
            target: "(info; equal HSM work is tested)".into(),
            pass: true,
        },
    ])
}

/// One full sign-in must work before anything is measured.
async fn smoke_test(b: &Bench) -> anyhow::Result<()> {
    let smoke = sign_in(b).await;
    if smoke.trace.is_none() {
        bail!(
            "a single sign-in failed: initiate {:?} verify {:?} {:?}\n{}",
            smoke.initiate.map(|x| x.0),
            smoke.verify.map(|x| x.0),
            smoke.error,
            b.env.server.log()
        );
    }
    Ok(())
}

/// Phase 6: the closed-loop peak of the SQLite/memory server of phases 1–5 against
/// PostgreSQL + Redis with 1 node and with 2 nodes (fresh database and key prefix
/// each). The three set-ups take turns in short rounds, so load that comes and goes
/// on the machine hits them alike; each ratio is the median of its rounds.
/// Returns (nodes, sign-ins/s, median ratio to SQLite/memory) per cluster set-up.
async fn scale_out(
    args: &Args,
    env_overrides: &[(String, String)],
    scopes: &[String],
    sqlite: Arc<Bench>,
) -> anyhow::Result<Vec<(usize, f64, f64)>> {
    const ROUNDS: usize = 3;
    println!(
        "\n[6] scale-out: {} closed-loop browsers, {ROUNDS} rounds of {:.1} s per set-up, PostgreSQL {} + Redis {}",
        args.concurrency,
        args.seconds / ROUNDS as f64,
        softhsm_tests::backends::pg_addr().map_or_else(|e| format!("({e})"), |a| a.to_string()),
        softhsm_tests::backends::redis_url()
    );
    let mut setups = vec![(0usize, sqlite)];
    for nodes in [1usize, 2] {
        let pg = match PgDatabase::create() {
            Ok(pg) => pg,
            Err(e) => {
                println!("    skipped: PostgreSQL not reachable ({e:#})");
                return Ok(Vec::new());
            }
        };
        let redis = RedisPrefix::new();
        if let Err(e) = redis.key_count() {
            println!("    skipped: Redis not reachable ({e:#})");
            return Ok(Vec::new());
        }
        let stores_toml = format!("{}\n{}", pg.toml(), redis.toml());
        let options = ServerOptions { env: env_overrides.to_vec(), ..Default::default() };
        let (env, devices) = start_signin(&stores_toml, options, args.devices).await?;
        let mut more = Vec::new();
        for _ in 1..nodes {
            let options = ServerOptions {
                extra_toml: env.server.extra_toml.clone(),
                env: env_overrides.to_vec(),
                ..Default::default()
            };
            more.push(TestServer::start(&env.token, options)?);
        }
        let b = Arc::new(Bench::new(env, devices, more, Some((pg, redis)), scopes)?);
        smoke_test(&b).await?;
        setups.push((nodes, b));
    }
    // rates[set-up][round], and every completed sign-in's trace per set-up.
    let mut rates: Vec<Vec<f64>> = setups.iter().map(|_| Vec::new()).collect();
    let mut traces: Vec<Vec<Trace>> = setups.iter().map(|_| Vec::new()).collect();
    let mut attempts: Vec<Vec<Attempt>> = setups.iter().map(|_| Vec::new()).collect();
    for round in 1..=ROUNDS {
        for (i, (nodes, b)) in setups.iter().enumerate() {
            let what =
                if *nodes == 0 { "SQLite/memory".to_string() } else { format!("PostgreSQL + Redis, {nodes} node(s)") };
            println!("  round {round}, {what}");
            let run = closed_loop(b, args.concurrency, args.seconds / ROUNDS as f64).await;
            let ok: Vec<Trace> = run.attempts.iter().filter_map(|a| a.trace).collect();
            rates[i].push(ok.len() as f64 / run.elapsed);
            traces[i].extend(ok);
            attempts[i].extend(run.attempts);
        }
    }
    let mut out = Vec::new();
    for (i, (nodes, _)) in setups.iter().enumerate() {
        let rate = rates[i].iter().sum::<f64>() / ROUNDS as f64;
        if *nodes == 0 {
            println!("  SQLite/memory: {rate:.0}/s (rounds {:.0?})", rates[i]);
            continue;
        }
        let mut ratios: Vec<f64> = rates[i].iter().zip(&rates[0]).map(|(c, s)| c / s).collect();
        let ratio = softhsm_tests::bench::median(&mut ratios);
        println!(
            "  PostgreSQL + Redis, {nodes} node(s): {rate:.0}/s (rounds {:.0?}), median ratio {:.0} %",
            rates[i],
            ratio * 100.0
        );
        print_steps(&traces[i]);
        print_errors(&attempts[i]);
        out.push((*nodes, rate, ratio));
    }
    Ok(out)
}

/// Milliseconds of a humantime duration such as `250ms` or `2s` (NaN if unreadable).
fn humantime_ms(s: &str) -> f64 {
    let s = s.trim();
    if let Some(v) = s.strip_suffix("ms") {
        return v.trim().parse().unwrap_or(f64::NAN);
    }
    if let Some(v) = s.strip_suffix('s') {
        return v.trim().parse::<f64>().map_or(f64::NAN, |v| v * 1000.0);
    }
    f64::NAN
}
