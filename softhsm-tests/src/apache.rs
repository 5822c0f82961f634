//! Apache httpd (Debian's `apache2`) as an outside relying party in interop tests:
//! started in the foreground on a loopback port with its own configuration, logs and
//! runtime files in a temporary directory (no system file is read or written besides
//! the module files), stopped on drop.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// Debian's httpd binary (package `apache2`).
pub const APACHE_BIN: &str = "/usr/sbin/apache2";
/// Where Debian installs the modules.
pub const MODULES_DIR: &str = "/usr/lib/apache2/modules";
/// Modules every configuration gets: one process per connection (`prefork`, so CGI
/// runs with `mod_cgi`), `AuthType`/`Require`, and CGI.
const BASE_MODULES: [&str; 5] = ["mpm_prefork", "authn_core", "authz_core", "authz_user", "cgi"];

/// A running Apache.
pub struct Apache {
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl Apache {
    /// Why Apache or one of `modules` cannot run here (`None` when all are present).
    pub fn missing(modules: &[&str]) -> Option<String> {
        if !Path::new(APACHE_BIN).exists() {
            return Some(format!("{APACHE_BIN} missing (scripts/install-deps --with-test-deps: apache2)"));
        }
        BASE_MODULES
            .iter()
            .chain(modules)
            .map(|m| module_path(m))
            .find(|p| !p.exists())
            .map(|p| format!("{} missing (scripts/install-deps --with-test-deps)", p.display()))
    }

    /// Writes `files` (path relative to the directory, content, mode) and a
    /// configuration that listens on `127.0.0.1:port`, loads the base modules and
    /// `modules`, and ends with `site` (where `@DIR@` stands for the directory), then
    /// starts `apache2 -DFOREGROUND` and waits until the port answers. Worker
    /// processes run as `www-data` when started as root, so the directory is made
    /// readable by all.
    pub fn start(port: u16, modules: &[&str], site: &str, files: &[(&str, &[u8], u32)]) -> anyhow::Result<Self> {
        if let Some(why) = Self::missing(modules) {
            bail!("{why}");
        }
        let dir = tempfile::Builder::new().prefix("symbolon-apache-").tempdir()?;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))?;
        std::fs::create_dir(dir.path().join("run"))?;
        for (rel, content, mode) in files {
            let path = dir.path().join(rel);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)?;
                std::fs::set_permissions(parent, std::fs::Permissions::from_mode(0o755))?;
            }
            std::fs::write(&path, content)?;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(*mode))?;
        }
        let d = dir.path().display().to_string();
        let mut conf = format!(
            "ServerRoot {d}\nServerName 127.0.0.1\nListen 127.0.0.1:{port}\nPidFile {d}/run/httpd.pid\n\
             DefaultRuntimeDir {d}/run\nMutex file:{d}/run default\nErrorLog {d}/error.log\n\
             LogLevel warn\nDocumentRoot {d}\n"
        );
        for m in BASE_MODULES.iter().chain(modules) {
            conf.push_str(&format!("LoadModule {m}_module {}\n", module_path(m).display()));
        }
        let root = std::fs::metadata("/proc/self").is_ok_and(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0);
        if root {
            conf.push_str("User www-data\nGroup www-data\n");
        }
        conf.push_str(&site.replace("@DIR@", &d));
        let conf_path = dir.path().join("httpd.conf");
        std::fs::write(&conf_path, conf)?;
        let check = Command::new(APACHE_BIN).arg("-t").arg("-f").arg(&conf_path).output()?;
        if !check.status.success() {
            bail!("apache2 -t: {}", String::from_utf8_lossy(&check.stderr));
        }
        // Its own process group: at shutdown httpd signals its whole group, which must
        // not be the test's.
        let child = Command::new(APACHE_BIN)
            .process_group(0)
            .arg("-f")
            .arg(&conf_path)
            .arg("-DFOREGROUND")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting apache2")?;
        let mut apache = Self { url: format!("http://127.0.0.1:{port}"), dir, child: Some(child) };
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(child) = apache.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                bail!("apache2 exited ({status}): {}", apache.error_log());
            }
            if start.elapsed() > Duration::from_secs(20) {
                bail!("apache2 does not listen on {port}: {}", apache.error_log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(apache)
    }

    /// A path in Apache's directory.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// The error log so far.
    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.path("error.log")).unwrap_or_default()
    }
}

fn module_path(name: &str) -> PathBuf {
    Path::new(MODULES_DIR).join(format!("mod_{name}.so"))
}

impl Drop for Apache {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else { return };
        // SIGTERM: the parent stops its workers, then exits.
        if let Ok(pid) = i32::try_from(child.id()) {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGTERM);
        }
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}
