//! The systemd protocol of `symbolon serve`: sd_notify messages on a socket the
//! test owns (READY, WATCHDOG, RELOADING around SIGHUP, STOPPING), the watchdog's
//! WATCHDOG_PID rule, and the root refusal with its `--allow-root` override.

use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use softhsm_tests::{ServerOptions, TestServer, TestToken, free_ports, symbolon_bin, symbolon_cli, write_config};

/// A bound `NOTIFY_SOCKET` that collects datagrams.
struct NotifySocket {
    socket: UnixDatagram,
    path: PathBuf,
    _dir: tempfile::TempDir,
}

impl NotifySocket {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let socket = UnixDatagram::bind(&path).unwrap();
        socket.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
        Self { socket, path, _dir: dir }
    }

    fn env(&self) -> (String, String) {
        ("NOTIFY_SOCKET".into(), self.path.display().to_string())
    }

    /// Messages (one per datagram) until one contains `want` or `within` passes.
    fn wait_for(&self, want: &str, within: Duration) -> Vec<String> {
        let start = Instant::now();
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        while start.elapsed() < within {
            if let Ok(n) = self.socket.recv(&mut buf) {
                let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
                let done = msg.lines().any(|l| l == want);
                seen.push(msg);
                if done {
                    return seen;
                }
            }
        }
        panic!("no {want} within {within:?}; got {seen:?}");
    }

    /// Every message that arrives within `window`.
    fn drain(&self, window: Duration) -> Vec<String> {
        let start = Instant::now();
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        while start.elapsed() < window {
            if let Ok(n) = self.socket.recv(&mut buf) {
                seen.push(String::from_utf8_lossy(&buf[..n]).into_owned());
            }
        }
        seen
    }
}

#[test]
fn notify_socket_gets_ready_watchdog_reloading_and_stopping() {
    let token = TestToken::new().unwrap();
    let notify = NotifySocket::new();
    // WATCHDOG_PID is left unset: as with sd_watchdog_enabled(3), that means "this process".
    let options =
        ServerOptions { env: vec![notify.env(), ("WATCHDOG_USEC".into(), "400000".into())], ..Default::default() };
    let mut server = TestServer::start(&token, options).unwrap();
    notify.wait_for("READY=1", Duration::from_secs(5));
    // Pings every WATCHDOG_USEC / 2 = 200 ms: several within a second.
    let pings =
        notify.drain(Duration::from_millis(1100)).iter().filter(|m| m.lines().any(|l| l == "WATCHDOG=1")).count();
    assert!(pings >= 3, "{pings} watchdog pings in 1.1 s: {}", server.log());

    let pid = Pid::from_raw(i32::try_from(server.pid().unwrap()).unwrap());
    kill(pid, Signal::SIGHUP).unwrap();
    let msgs = notify.wait_for("READY=1", Duration::from_secs(5));
    let reloading = msgs
        .iter()
        .find(|m| m.lines().any(|l| l == "RELOADING=1"))
        .unwrap_or_else(|| panic!("no RELOADING=1 before READY=1: {msgs:?}"));
    assert!(
        reloading.lines().any(|l| l.starts_with("MONOTONIC_USEC=")),
        "RELOADING=1 carries MONOTONIC_USEC: {reloading:?}"
    );
    assert!(server.log().contains("configuration re-read"), "{}", server.log());

    let status = server.stop().unwrap();
    assert!(status.success(), "graceful exit: {status}");
    notify.wait_for("STOPPING=1", Duration::from_secs(1));
}

#[test]
fn watchdog_for_another_pid_is_not_pinged() {
    let token = TestToken::new().unwrap();
    let notify = NotifySocket::new();
    let options = ServerOptions {
        env: vec![notify.env(), ("WATCHDOG_USEC".into(), "200000".into()), ("WATCHDOG_PID".into(), "1".into())],
        ..Default::default()
    };
    let mut server = TestServer::start(&token, options).unwrap();
    notify.wait_for("READY=1", Duration::from_secs(5));
    let msgs = notify.drain(Duration::from_millis(600));
    assert!(!msgs.iter().any(|m| m.contains("WATCHDOG=1")), "pinged a watchdog meant for pid 1: {msgs:?}");
    assert!(server.stop().unwrap().success());
}

#[test]
fn root_needs_allow_root_from_config_or_flag() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: the root refusal needs the test to run as root");
        return;
    }
    let token = TestToken::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let [public, admin] = free_ports().unwrap();
    let cfg = write_config(dir.path(), &token, public, admin, "").unwrap();
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(&cfg, text.replace("allow_root = true", "allow_root = false")).unwrap();
    let out = symbolon_cli(&token, &cfg, &["keys", "init"]).unwrap();
    assert!(out.status.success(), "{out:?}");

    let out = symbolon_cli(&token, &cfg, &["serve"]).unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("refusing to run as root"), "{err}");

    let notify = NotifySocket::new();
    let mut child = Command::new(symbolon_bin().unwrap())
        .arg("--config")
        .arg(&cfg)
        .args(["serve", "--allow-root"])
        .env(token.conf_var, &token.conf)
        .env_remove("SYMBOLON_HSM_PIN")
        .env_remove("SYMBOLON_BIN")
        .env_remove("JOURNAL_STREAM")
        .env("NOTIFY_SOCKET", &notify.path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    notify.wait_for("READY=1", Duration::from_secs(15));
    kill(Pid::from_raw(i32::try_from(child.id()).unwrap()), Signal::SIGTERM).unwrap();
    assert!(child.wait().unwrap().success());
}
