//! Starts the real `symbolon serve` on free ports with a generated configuration
//! and hands back its URLs. Used by every end-to-end test.

use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::token::TestToken;

/// The `symbolon` binary: `SYMBOLON_BIN`, else next to the test executable's `deps/`.
pub fn symbolon_bin() -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os("SYMBOLON_BIN") {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe()?;
    let mut dir = exe.parent().context("test executable has no directory")?.to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let bin = dir.join("symbolon");
    if !bin.exists() {
        bail!("{} not found: run `cargo build --workspace --bins` first", bin.display());
    }
    Ok(bin)
}

/// A free TCP port on 127.0.0.1 (bound and released; the server binds it right after).
pub fn free_port() -> anyhow::Result<u16> {
    let [port] = free_ports()?;
    Ok(port)
}

/// `N` distinct free TCP ports on 127.0.0.1. Every probe stays bound until all are
/// chosen: ports taken one after another can repeat, since a released port may be
/// handed out again at once.
pub fn free_ports<const N: usize>() -> anyhow::Result<[u16; N]> {
    let listeners = (0..N).map(|_| TcpListener::bind("127.0.0.1:0")).collect::<Result<Vec<_>, _>>()?;
    let mut ports = [0u16; N];
    for (port, listener) in ports.iter_mut().zip(&listeners) {
        *port = listener.local_addr()?.port();
    }
    Ok(ports)
}

/// What a test wants of its server.
#[derive(Debug, Clone, Default)]
pub struct ServerOptions {
    /// Extra TOML appended to the generated configuration.
    pub extra_toml: String,
    /// Skip `symbolon keys init` before start.
    pub no_keys: bool,
    /// Extra environment.
    pub env: Vec<(String, String)>,
    /// Wait only until `/livez` answers (a server expected not to be ready).
    pub live_only: bool,
    /// Run `serve` with this binary instead of [`symbolon_bin`] (benchmark A/B runs).
    pub serve_bin: Option<PathBuf>,
    /// Public and admin ports chosen by the caller (e.g. for a configuration that
    /// names the admin URL); free ports otherwise.
    pub ports: Option<[u16; 2]>,
}

/// A running server. Stopped (SIGTERM) when dropped.
pub struct TestServer {
    pub public_url: String,
    pub admin_url: String,
    pub config_path: PathBuf,
    pub state_dir: PathBuf,
    pub log_path: PathBuf,
    /// The extra TOML the server runs with (to start more nodes like it).
    pub extra_toml: String,
    env: Vec<(String, String)>,
    serve_bin: Option<PathBuf>,
    child: Option<Child>,
    _dir: tempfile::TempDir,
    /// PostgreSQL and Redis when `SYMBOLON_TEST_STORES` asked for them; dropped after
    /// the server stopped.
    pub stores: Option<crate::backends::ClusterStores>,
}

/// The generated configuration for `token`.
pub fn write_config(dir: &Path, token: &TestToken, public: u16, admin: u16, extra: &str) -> anyhow::Result<PathBuf> {
    let state_dir = dir.join("state");
    std::fs::create_dir_all(&state_dir)?;
    let path = dir.join("symbolon.toml");
    let mut f = std::fs::File::create(&path)?;
    write!(
        f,
        r#"[server]
public_listen = "127.0.0.1:{public}"
admin_listen = "127.0.0.1:{admin}"
issuer = "http://127.0.0.1:{public}"
state_dir = "{state}"
allow_root = true
shutdown_grace = "5s"

[hsm]
uri = "{uri}"
workers = 2
deadline = "5s"

[telemetry]
level = "info"
format = "json"

{extra}
"#,
        state = state_dir.display(),
        uri = token.uri(),
    )?;
    Ok(path)
}

/// Runs the `symbolon` CLI with a configuration and the token's environment.
pub fn symbolon_cli(token: &TestToken, config: &Path, args: &[&str]) -> anyhow::Result<std::process::Output> {
    Ok(Command::new(symbolon_bin()?)
        .arg("--config")
        .arg(config)
        .args(args)
        .env(token.conf_var, &token.conf)
        .env_remove("SYMBOLON_HSM_PIN")
        // SYMBOLON_<SECTION> variables are configuration; this one is only for the harness.
        .env_remove("SYMBOLON_BIN")
        .output()?)
}

impl TestServer {
    /// Generates keys (unless told not to), starts the server and waits for `/readyz`.
    pub fn start(token: &TestToken, options: ServerOptions) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new().prefix("symbolon-srv-").tempdir()?;
        let [public, admin] = match options.ports {
            Some(p) => p,
            None => free_ports()?,
        };
        let stores = crate::backends::ClusterStores::from_env(&options.extra_toml)?;
        let extra_toml = match &stores {
            Some(s) => format!("{}\n{}", options.extra_toml, s.toml()),
            None => options.extra_toml.clone(),
        };
        let config_path = write_config(dir.path(), token, public, admin, &extra_toml)?;
        if !options.no_keys {
            let out = symbolon_cli(token, &config_path, &["keys", "init"])?;
            if !out.status.success() {
                bail!("symbolon keys init failed: {}", String::from_utf8_lossy(&out.stderr));
            }
        }
        let log_path = dir.path().join("server.log");
        let child = spawn_serve(token, &config_path, &log_path, &options.env, options.serve_bin.as_deref())?;
        let mut server = TestServer {
            public_url: format!("http://127.0.0.1:{public}"),
            admin_url: format!("http://127.0.0.1:{admin}"),
            state_dir: dir.path().join("state"),
            config_path,
            log_path,
            extra_toml,
            env: options.env.clone(),
            serve_bin: options.serve_bin.clone(),
            child: Some(child),
            _dir: dir,
            stores,
        };
        let probe = if options.live_only { "/livez" } else { "/readyz" };
        server.wait_for(probe, Duration::from_secs(30))?;
        Ok(server)
    }

    fn wait_for(&mut self, probe: &str, within: Duration) -> anyhow::Result<()> {
        let start = Instant::now();
        let url = format!("{}{probe}", self.admin_url);
        while start.elapsed() < within {
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                bail!("symbolon serve exited with {status}: {}", self.log());
            }
            if let Ok(resp) = blocking_get(&url)
                && resp == 200
            {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!("symbolon serve: {probe} not 200 within {within:?}: {}", self.log())
    }

    /// Starts the stopped server again with the same configuration and state (its log
    /// is appended to) and waits for `/readyz`.
    pub fn restart(&mut self, token: &TestToken) -> anyhow::Result<()> {
        if self.child.is_some() {
            bail!("server still running");
        }
        self.child = Some(spawn_serve(token, &self.config_path, &self.log_path, &self.env, self.serve_bin.as_deref())?);
        self.wait_for("/readyz", Duration::from_secs(30))
    }

    /// The server process id while it runs (e.g. to read `/proc/<pid>/status`).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn stop(&mut self) -> anyhow::Result<std::process::ExitStatus> {
        let mut child = self.child.take().context("server already stopped")?;
        let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id())?);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let start = Instant::now();
        loop {
            if let Some(status) = child.try_wait()? {
                return Ok(status);
            }
            if start.elapsed() > Duration::from_secs(15) {
                child.kill()?;
                return Ok(child.wait()?);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if self.child.is_some() {
            let _ = self.stop();
        }
    }
}

/// `symbolon serve` with `config`, its stderr appended to `log_path`.
fn spawn_serve(
    token: &TestToken,
    config: &Path,
    log_path: &Path,
    env: &[(String, String)],
    serve_bin: Option<&Path>,
) -> anyhow::Result<Child> {
    let log = std::fs::OpenOptions::new().create(true).append(true).open(log_path)?;
    let mut cmd = Command::new(match serve_bin {
        Some(bin) => bin.to_path_buf(),
        None => symbolon_bin()?,
    });
    cmd.arg("--config")
        .arg(config)
        .arg("serve")
        .env(token.conf_var, &token.conf)
        .env_remove("SYMBOLON_HSM_PIN")
        .env_remove("SYMBOLON_BIN")
        .env_remove("JOURNAL_STREAM")
        .env_remove("NOTIFY_SOCKET")
        .stdout(Stdio::null())
        .stderr(log);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.spawn().context("starting symbolon serve")
}

/// A minimal blocking GET returning the status code (readiness polling without a runtime).
fn blocking_get(url: &str) -> anyhow::Result<u16> {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://").context("http only")?;
    let (host, path) = rest.split_once('/').map(|(h, p)| (h, format!("/{p}"))).unwrap_or((rest, "/".into()));
    let mut s = std::net::TcpStream::connect(host)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n")?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    let text = String::from_utf8_lossy(&buf);
    let code = text.split_whitespace().nth(1).context("no status")?.parse()?;
    Ok(code)
}
