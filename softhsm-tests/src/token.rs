//! A fresh SoftHSM2 token per test: its own token directory and `softhsm2.conf` in a
//! temporary directory, a random label and PINs, the module found on Debian or RPM
//! paths (or `SOFTHSM2_MODULE`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use anyhow::{Context, bail};
use rand_core::{OsRng, RngCore};

const MODULE_PATHS: &[&str] = &[
    "/usr/lib/softhsm/libsofthsm2.so",
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib64/pkcs11/libsofthsm2.so",
    "/usr/lib64/softhsm/libsofthsm2.so",
    "/usr/lib/pkcs11/libsofthsm2.so",
];

/// The SoftHSM2 module path.
pub fn softhsm_module() -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os("SOFTHSM2_MODULE") {
        return Ok(PathBuf::from(p));
    }
    MODULE_PATHS
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .context("libsofthsm2.so not found: install softhsm2 (apt-get install softhsm2) or set SOFTHSM2_MODULE")
}

fn random_hex(n: usize) -> String {
    let mut b = vec![0u8; n];
    OsRng.fill_bytes(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A token in a temporary directory. Dropping it removes the directory.
pub struct TestToken {
    pub dir: tempfile::TempDir,
    pub conf: PathBuf,
    pub label: String,
    pub pin: String,
    pub pin_file: PathBuf,
    pub module: PathBuf,
}

impl TestToken {
    /// Creates the directory, the configuration and an initialized token.
    pub fn new() -> anyhow::Result<Self> {
        let module = softhsm_module()?;
        let dir = tempfile::Builder::new().prefix("symbolon-hsm-").tempdir()?;
        let tokens = dir.path().join("tokens");
        std::fs::create_dir_all(&tokens)?;
        let conf = dir.path().join("softhsm2.conf");
        std::fs::write(
            &conf,
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n",
                tokens.display()
            ),
        )?;
        let label = format!("t{}", random_hex(6));
        let pin = random_hex(8);
        let so_pin = random_hex(8);
        let out = Command::new("softhsm2-util")
            .env("SOFTHSM2_CONF", &conf)
            .args(["--init-token", "--free", "--label", &label, "--pin", &pin, "--so-pin", &so_pin])
            .output()
            .context("running softhsm2-util (apt-get install softhsm2)")?;
        if !out.status.success() {
            bail!("softhsm2-util --init-token failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        let pin_file = dir.path().join("user-pin");
        std::fs::write(&pin_file, &pin)?;
        Ok(Self { dir, conf, label, pin, pin_file, module })
    }

    /// The RFC 7512 URI for Symbolon's `hsm.uri`.
    pub fn uri(&self) -> String {
        self.uri_with_pin_file(&self.pin_file)
    }

    /// The URI naming another PIN file.
    pub fn uri_with_pin_file(&self, pin_file: &Path) -> String {
        format!(
            "pkcs11:token={}?module-path={}&pin-source=file:{}",
            self.label,
            self.module.display(),
            pin_file.display()
        )
    }

    /// A read/write session on this token, logged in as the user, opened through `ctx`
    /// (for tests that inspect or prepare objects outside the server's pool).
    pub fn user_session(&self, ctx: &cryptoki::context::Pkcs11) -> anyhow::Result<cryptoki::session::Session> {
        symbolon::keys::initialize_module(ctx)?;
        let mut slot = None;
        for s in ctx.get_slots_with_token()? {
            if ctx.get_token_info(s)?.label().trim() == self.label {
                slot = Some(s);
            }
        }
        let session = ctx.open_rw_session(slot.context("token slot")?)?;
        match session.login(cryptoki::session::UserType::User, Some(&cryptoki::types::AuthPin::from(self.pin.clone())))
        {
            Ok(()) | Err(cryptoki::error::Error::Pkcs11(cryptoki::error::RvError::UserAlreadyLoggedIn, _)) => {}
            Err(e) => return Err(e.into()),
        }
        Ok(session)
    }

    /// Points this process's SoftHSM2 at this token's configuration. SoftHSM2 reads
    /// `SOFTHSM2_CONF` once, when the module is first initialized, so one process can
    /// use one token directory: tests run one per process (cargo nextest).
    pub fn use_in_process(&self) -> anyhow::Result<()> {
        static CONF: OnceLock<PathBuf> = OnceLock::new();
        let chosen = CONF.get_or_init(|| {
            // SAFETY: set before any PKCS#11 module is loaded by this process, and tests
            // that call this run one per process under nextest.
            unsafe { std::env::set_var("SOFTHSM2_CONF", &self.conf) };
            self.conf.clone()
        });
        if chosen != &self.conf {
            bail!("one SoftHSM2 configuration per process: run the tests with cargo nextest");
        }
        Ok(())
    }
}
