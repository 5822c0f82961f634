//! A fresh PKCS#11 token per test: its own storage and configuration in a temporary
//! directory, a random label and PINs. SoftHSM2 by default (module found on Debian or
//! RPM paths, or `SOFTHSM2_MODULE`); `SYMBOLON_TEST_TOKEN=kryoptic` makes it a
//! Kryoptic token instead (module `SYMBOLON_KRYOPTIC_MODULE`, built by
//! `scripts/build-kryoptic`), so the same tests run against a second, independent
//! implementation. `SYMBOLON_TEST_TOKEN=opencryptoki` uses openCryptoki's soft token, a
//! third implementation: it has one system-wide token (slot 3 of Debian's
//! `/etc/opencryptoki/opencryptoki.conf`, served by `pkcsslotd`), so every `TestToken`
//! re-initializes that token (which deletes its objects) and holds an exclusive lock
//! on it for its lifetime: tests using it run one after another.

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

/// openCryptoki's PKCS#11 library on Debian and RPM systems (it talks to `pkcsslotd`).
const OPENCRYPTOKI_MODULE_PATHS: &[&str] = &[
    "/usr/lib/x86_64-linux-gnu/pkcs11/libopencryptoki.so",
    "/usr/lib/aarch64-linux-gnu/pkcs11/libopencryptoki.so",
    "/usr/lib64/opencryptoki/libopencryptoki.so",
    "/usr/lib/opencryptoki/libopencryptoki.so",
];
/// The soft token's slot in the configuration the Debian package installs.
const OPENCRYPTOKI_DEFAULT_SLOT: &str = "3";
/// The soft token's SO PIN as shipped; re-initializing the token keeps it.
const OPENCRYPTOKI_DEFAULT_SO_PIN: &str = "87654321";
/// Held (flock) while a test owns the one openCryptoki soft token.
const OPENCRYPTOKI_LOCK: &str = "/var/lock/symbolon-opencryptoki-test.lock";

/// The PKCS#11 implementation behind [`TestToken`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    SoftHsm2,
    Kryoptic,
    OpenCryptoki,
}

impl TokenKind {
    /// From `SYMBOLON_TEST_TOKEN` (`softhsm2`, the default, `kryoptic` or `opencryptoki`).
    pub fn from_env() -> anyhow::Result<Self> {
        match std::env::var("SYMBOLON_TEST_TOKEN").as_deref() {
            Err(_) | Ok("") | Ok("softhsm2") | Ok("softhsm") => Ok(Self::SoftHsm2),
            Ok("kryoptic") => Ok(Self::Kryoptic),
            Ok("opencryptoki") => Ok(Self::OpenCryptoki),
            Ok(other) => bail!("SYMBOLON_TEST_TOKEN={other}: expected softhsm2, kryoptic or opencryptoki"),
        }
    }

    /// The environment variable naming the module's configuration file. openCryptoki
    /// reads a fixed system-wide file; its variable is informational only.
    pub fn conf_var(self) -> &'static str {
        match self {
            Self::SoftHsm2 => "SOFTHSM2_CONF",
            Self::Kryoptic => "KRYOPTIC_CONF",
            Self::OpenCryptoki => "SYMBOLON_OPENCRYPTOKI_CONF",
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

/// The openCryptoki module path (`SYMBOLON_OPENCRYPTOKI_MODULE` or the packages' paths).
pub fn opencryptoki_module() -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os("SYMBOLON_OPENCRYPTOKI_MODULE") {
        return Ok(PathBuf::from(p));
    }
    OPENCRYPTOKI_MODULE_PATHS.iter().map(PathBuf::from).find(|p| p.exists()).context(
        "libopencryptoki.so not found: install opencryptoki (apt-get install opencryptoki) or set SYMBOLON_OPENCRYPTOKI_MODULE",
    )
}

fn env_or(var: &str, default: &str) -> String {
    std::env::var(var).ok().filter(|v| !v.is_empty()).unwrap_or_else(|| default.to_string())
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
    /// openCryptoki: the lock on the one system-wide token, released on drop.
    _exclusive: Option<nix::fcntl::Flock<std::fs::File>>,
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
        let mut pin = random_hex(8);
        let so_pin = random_hex(8);
        let mut exclusive = None;
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
            TokenKind::OpenCryptoki => {
                let module = opencryptoki_module()?;
                let file =
                    std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(OPENCRYPTOKI_LOCK)?;
                exclusive = Some(
                    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
                        .map_err(|(_, e)| anyhow::anyhow!("locking {OPENCRYPTOKI_LOCK}: {e}"))?,
                );
                // The soft token takes PINs of 4 to 8 characters.
                pin = random_hex(4);
                let slot = env_or("SYMBOLON_OPENCRYPTOKI_SLOT", OPENCRYPTOKI_DEFAULT_SLOT);
                let so_pin = env_or("SYMBOLON_OPENCRYPTOKI_SO_PIN", OPENCRYPTOKI_DEFAULT_SO_PIN);
                // pkcsconf -I reads the new label from standard input.
                let mut init = Command::new("pkcsconf")
                    .args(["-I", "-c", &slot, "-S", &so_pin])
                    .stdin(std::process::Stdio::piped())
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .context("running pkcsconf (apt-get install opencryptoki; is pkcsslotd running?)")?;
                if let Some(mut stdin) = init.stdin.take() {
                    use std::io::Write;
                    writeln!(stdin, "{label}")?;
                }
                let out = init.wait_with_output()?;
                if !out.status.success() {
                    bail!(
                        "pkcsconf -I failed (is pkcsslotd running?): {}{}",
                        String::from_utf8_lossy(&out.stdout),
                        String::from_utf8_lossy(&out.stderr)
                    );
                }
                run("pkcsconf -u", Command::new("pkcsconf").args(["-u", "-c", &slot, "-S", &so_pin, "-n", &pin]))?;
                (module, PathBuf::from("/etc/opencryptoki/opencryptoki.conf"))
            }
        };
        let pin_file = dir.path().join("user-pin");
        std::fs::write(&pin_file, &pin)?;
        Ok(Self { dir, kind, conf, conf_var: kind.conf_var(), label, pin, pin_file, module, _exclusive: exclusive })
    }

    /// The mechanism the tests wrap keys with: `CKM_AES_KEY_WRAP` (RFC 3394) where the
    /// token has it, `CKM_AES_CBC_PAD` on openCryptoki's soft token, which has no AES
    /// key wrap.
    pub fn wrap_mechanism(&self) -> cryptoki::mechanism::Mechanism<'static> {
        match self.kind {
            TokenKind::OpenCryptoki => cryptoki::mechanism::Mechanism::AesCbcPad([0u8; 16]),
            _ => cryptoki::mechanism::Mechanism::AesKeyWrap,
        }
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
        // Found through Symbolon's tolerant reader of CK_TOKEN_INFO: cryptoki's own
        // get_token_info fails on openCryptoki's clock field (src/keys/module.rs).
        let module = symbolon::keys::Module::load(&self.module)?;
        let slot = module.find_token(Some(&self.label), None)?.slot;
        let session = ctx.open_rw_session(slot)?;
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
