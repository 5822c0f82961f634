//! A fresh PKCS#11 token per test: its own storage and configuration in a temporary
//! directory, a random label and PINs. SoftHSM2 by default (module found on Debian or
//! RPM paths, or `SOFTHSM2_MODULE`); `SYMBOLON_TEST_TOKEN=kryoptic` makes it a
//! Kryoptic token instead (module `SYMBOLON_KRYOPTIC_MODULE`, built by
//! `scripts/build-kryoptic`), so the same tests run against a second, independent
//! implementation.

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

/// Where `scripts/build-kryoptic` puts the module when `SYMBOLON_KRYOPTIC_MODULE` is unset.
const KRYOPTIC_DEFAULT_MODULE: &str = "/var/tmp/symbolon-kryoptic/lib/libkryoptic_pkcs11.so";

/// The PKCS#11 implementation behind [`TestToken`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    SoftHsm2,
    Kryoptic,
}

impl TokenKind {
    /// From `SYMBOLON_TEST_TOKEN` (`softhsm2`, the default, or `kryoptic`).
    pub fn from_env() -> anyhow::Result<Self> {
        match std::env::var("SYMBOLON_TEST_TOKEN").as_deref() {
            Err(_) | Ok("") | Ok("softhsm2") | Ok("softhsm") => Ok(Self::SoftHsm2),
            Ok("kryoptic") => Ok(Self::Kryoptic),
            Ok(other) => bail!("SYMBOLON_TEST_TOKEN={other}: expected softhsm2 or kryoptic"),
        }
    }

    /// The environment variable naming the module's configuration file.
    pub fn conf_var(self) -> &'static str {
        match self {
            Self::SoftHsm2 => "SOFTHSM2_CONF",
            Self::Kryoptic => "KRYOPTIC_CONF",
        }
    }
}

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

/// The Kryoptic module path.
pub fn kryoptic_module() -> anyhow::Result<PathBuf> {
    let p = std::env::var_os("SYMBOLON_KRYOPTIC_MODULE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(KRYOPTIC_DEFAULT_MODULE));
    if !p.exists() {
        bail!("{} not found: build it with scripts/build-kryoptic or set SYMBOLON_KRYOPTIC_MODULE", p.display());
    }
    Ok(p)
}

fn random_hex(n: usize) -> String {
    let mut b = vec![0u8; n];
    OsRng.fill_bytes(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn run(what: &str, cmd: &mut Command) -> anyhow::Result<()> {
    let out = cmd.output().with_context(|| format!("running {what}"))?;
    if !out.status.success() {
        bail!("{what} failed: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

/// A token in a temporary directory. Dropping it removes the directory.
pub struct TestToken {
    pub dir: tempfile::TempDir,
    pub kind: TokenKind,
    /// The module's configuration file, for child processes as `.env(conf_var, &conf)`.
    pub conf: PathBuf,
    /// `SOFTHSM2_CONF` or `KRYOPTIC_CONF`.
    pub conf_var: &'static str,
    pub label: String,
    pub pin: String,
    pub pin_file: PathBuf,
    pub module: PathBuf,
}

impl TestToken {
    /// Creates the directory, the configuration and an initialized token of the kind
    /// `SYMBOLON_TEST_TOKEN` names.
    pub fn new() -> anyhow::Result<Self> {
        Self::of_kind(TokenKind::from_env()?)
    }

    /// Creates a token of `kind`.
    pub fn of_kind(kind: TokenKind) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new().prefix("symbolon-hsm-").tempdir()?;
        let label = format!("t{}", random_hex(6));
        let pin = random_hex(8);
        let so_pin = random_hex(8);
        let (module, conf) = match kind {
            TokenKind::SoftHsm2 => {
                let module = softhsm_module()?;
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
                run(
                    "softhsm2-util --init-token (apt-get install softhsm2)",
                    Command::new("softhsm2-util").env("SOFTHSM2_CONF", &conf).args([
                        "--init-token",
                        "--free",
                        "--label",
                        &label,
                        "--pin",
                        &pin,
                        "--so-pin",
                        &so_pin,
                    ]),
                )?;
                (module, conf)
            }
            TokenKind::Kryoptic => {
                let module = kryoptic_module()?;
                let conf = dir.path().join("kryoptic.conf");
                std::fs::write(
                    &conf,
                    format!(
                        "[[slots]]\nslot = 1\ndbtype = \"sqlite\"\ndbargs = \"{}\"\n",
                        dir.path().join("token.sql").display()
                    ),
                )?;
                let tool = || {
                    let mut c = Command::new("pkcs11-tool");
                    c.env("KRYOPTIC_CONF", &conf).arg("--module").arg(&module);
                    c
                };
                run(
                    "pkcs11-tool --init-token (apt-get install opensc)",
                    tool().args(["--slot", "1", "--init-token", "--label", &label, "--so-pin", &so_pin]),
                )?;
                run(
                    "pkcs11-tool --init-pin",
                    tool().args([
                        "--token-label",
                        &label,
                        "--login",
                        "--login-type",
                        "so",
                        "--so-pin",
                        &so_pin,
                        "--init-pin",
                        "--pin",
                        &pin,
                    ]),
                )?;
                (module, conf)
            }
        };
        let pin_file = dir.path().join("user-pin");
        std::fs::write(&pin_file, &pin)?;
        Ok(Self { dir, kind, conf, conf_var: kind.conf_var(), label, pin, pin_file, module })
    }

    /// What `C_WrapKey` answers for a key of `class` with `CKA_EXTRACTABLE=false`.
    /// PKCS#11 says `CKR_KEY_UNEXTRACTABLE` (SoftHSM2, and Kryoptic for secret keys);
    /// Kryoptic checks an EC private key's `CKA_EXTRACTABLE` like a usage flag and
    /// answers `CKR_KEY_FUNCTION_NOT_PERMITTED`.
    pub fn unextractable_rv(&self, class: cryptoki::object::ObjectClass) -> cryptoki::error::RvError {
        match self.kind {
            TokenKind::Kryoptic if class == cryptoki::object::ObjectClass::PRIVATE_KEY => {
                cryptoki::error::RvError::KeyFunctionNotPermitted
            }
            _ => cryptoki::error::RvError::KeyUnextractable,
        }
    }

    /// A session object (`CKA_TOKEN=false`) AES-256 key with `extra` attributes, such
    /// as a wrapping key for tests that try to wrap keys out of the token.
    pub fn session_aes_key(
        session: &cryptoki::session::Session,
        extra: &[cryptoki::object::Attribute],
    ) -> cryptoki::error::Result<cryptoki::object::ObjectHandle> {
        use cryptoki::object::{Attribute, ObjectClass};
        let mut template =
            vec![Attribute::Class(ObjectClass::SECRET_KEY), Attribute::ValueLen(32.into()), Attribute::Token(false)];
        template.extend_from_slice(extra);
        session.generate_key(&cryptoki::mechanism::Mechanism::AesKeyGen, &template)
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

    /// Points this process's module at this token's configuration. SoftHSM2 and
    /// Kryoptic read their configuration variable once, when the module is first
    /// initialized, so one process can use one token: tests run one per process
    /// (cargo nextest).
    pub fn use_in_process(&self) -> anyhow::Result<()> {
        static CONF: OnceLock<PathBuf> = OnceLock::new();
        let chosen = CONF.get_or_init(|| {
            // SAFETY: set before any PKCS#11 module is loaded by this process, and tests
            // that call this run one per process under nextest.
            unsafe { std::env::set_var(self.conf_var, &self.conf) };
            self.conf.clone()
        });
        if chosen != &self.conf {
            bail!("one token configuration per process: run the tests with cargo nextest");
        }
        Ok(())
    }
}
