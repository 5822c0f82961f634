//! The command line: `serve`, `migrate`, `keys`, `config check`, `trust`, `vds`, `audit`, `backup`,
//! `users`, `flows`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{CommandFactory, Parser, Subcommand};

use crate::config::{Config, DEFAULT_CONFIG_PATH};
use crate::startup::{Application, harden_process};
use crate::store::open_durable;

/// Files, environment and signals, for `--help` and the man page.
const OPERATOR_NOTES: &str = "\
Files:
  /etc/symbolon/symbolon.toml   configuration (check it with `symbolon config check`)
  /etc/symbolon/hsm-pin         HSM user PIN, passed to the service as the credential hsm-pin
  /var/lib/symbolon             state: SQLite database, trust-list cache, SoftHSM2 tokens

Environment:
  SYMBOLON_CONFIG               configuration file (instead of --config)
  SYMBOLON_<SECTION>__<KEY>     overrides one configuration value
  SYMBOLON_LOG                  tracing filter (overrides telemetry.level)
  CREDENTIALS_DIRECTORY         systemd credentials; the HSM PIN is read from hsm-pin there

Signals (serve):
  SIGTERM, SIGINT               stop accepting, drain for server.shutdown_grace, exit
  SIGHUP                        reload (systemctl reload symbolon): re-read the file; a valid
                                one replaces the relying parties ([[services]]) at once, other
                                changed sections are named in the log and wait for a restart;
                                fetch the trust lists now";

/// Symbolon: hardware-backed mutual out-of-band authentication server.
#[derive(Debug, Parser)]
#[command(name = "symbolon", version, about, long_about = None, after_long_help = OPERATOR_NOTES)]
pub struct Cli {
    /// Configuration file (TOML). Environment variables SYMBOLON_<SECTION>__<KEY> override it.
    #[arg(long, global = true, env = "SYMBOLON_CONFIG", default_value = DEFAULT_CONFIG_PATH)]
    pub config: PathBuf,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server (public and admin listeners) until SIGTERM; SIGHUP reloads.
    Serve {
        /// Run even as root (same as `server.allow_root = true`); meant for containers.
        #[arg(long)]
        allow_root: bool,
    },
    /// Apply database migrations and exit (idempotent).
    Migrate,
    /// Manage keys in the HSM and their life cycle (list, generate, adopt, rotate, retire, rewrap).
    #[command(subcommand)]
    Keys(crate::keyring::cli::KeysCommand),
    /// Configuration tools.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Trust lists: status and refresh.
    #[command(subcommand)]
    Trust(TrustCommand),
    /// VDS-NC seals.
    #[command(subcommand)]
    Vds(VdsCommand),
    /// Relying parties (`[[services]]`).
    #[command(subcommand)]
    Services(ServicesCommand),
    /// The audit trail: verify the hash chain and its signed checkpoints, export events.
    #[command(subcommand)]
    Audit(crate::service::audit::cli::AuditCommand),
    /// Users and their devices: list, show, suspend, activate, revoke, delete (as the
    /// management API, audited with the actor cli:<unix user>).
    #[command(subcommand)]
    Users(crate::service::management_cli::UsersCommand),
    /// Sign-in flows the session store keeps (Redis): list with state and service.
    #[command(subcommand)]
    Flows(crate::service::management_cli::FlowsCommand),
    /// Write an online, consistent copy of the SQLite database to FILE (a new file; the
    /// server may keep running). PostgreSQL: pg_dump (docs/backup.md).
    Backup {
        /// The backup file to create.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Write the man pages (section 8) into DIR (packaging; hidden).
    #[command(hide = true)]
    GenerateMan {
        /// Output directory.
        dir: PathBuf,
    },
    /// Write bash, zsh and fish completions into DIR (packaging; hidden).
    #[command(hide = true)]
    GenerateCompletions {
        /// Output directory.
        dir: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum TrustCommand {
    /// Show every list, CRL and VRL with seq, issued, next_update, freshness and source.
    Status(crate::trust::cli::TrustStatusArgs),
    /// Fetch every list, CRL and VRL now; exit non-zero on any failure.
    Refresh(crate::trust::cli::TrustRefreshArgs),
}

#[derive(Debug, Subcommand)]
pub enum VdsCommand {
    /// Verify a seal's signature and chain; print its header and message; exit 0 only when valid.
    Verify(crate::trust::cli::VdsVerifyArgs),
}

#[derive(Debug, Subcommand)]
pub enum ServicesCommand {
    /// Print a new OpenID Connect client secret (256 random bits) and the SHA-256 to
    /// put in `[services.oidc] client_secret_sha256`; the secret goes to the client only.
    NewSecret,
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Check the configuration as `serve` would read it, without side effects.
    ///
    /// Reads FILE (default: --config) with the SYMBOLON_<SECTION>__<KEY> overrides of
    /// the environment, prints every problem as `<field path>: <problem>` with where its
    /// value came from, and checks what `serve` would refuse at start: the PKCS#11
    /// module loads, the token of the URI exists, the PIN source is readable, named
    /// files are readable, state_dir is writable, a file:// governance list exists.
    /// Exit 0 when there is no problem, else 1.
    Check {
        /// The file to check (default: --config).
        file: Option<PathBuf>,
        /// Check the values only, not this machine's module, token, PIN, files and
        /// directories (a configuration written for another host, e.g. when packaging).
        #[arg(long)]
        values_only: bool,
    },
}

/// The Rust runtime ignores SIGPIPE, so a command whose output goes to a reader that
/// stops early (`symbolon keys list | head -1`, `grep -q`) would panic on the next
/// print. CLI commands end quietly instead, as Unix tools do; `serve` keeps SIGPIPE
/// ignored, where a closed socket is an error to handle, not a reason to exit.
fn default_sigpipe() {
    use nix::sys::signal::{SigHandler, Signal, signal};
    // SAFETY: called before any other thread exists; SIG_DFL installs no handler code.
    let _ = unsafe { signal(Signal::SIGPIPE, SigHandler::SigDfl) };
}

/// Reads the configuration and sets `[hsm] module_env` while the process still has one
/// thread (every command loads the configuration before it starts the runtime).
fn load_config(path: &std::path::Path) -> anyhow::Result<Config> {
    let config = Config::load(Some(path)).map_err(|problems| {
        for p in &problems {
            eprintln!("config error: {p}");
        }
        anyhow::anyhow!("invalid configuration in {}", path.display())
    })?;
    config.hsm.apply_module_env();
    Ok(config)
}

/// Runs the parsed command.
pub fn run(cli: Cli) -> ExitCode {
    if !matches!(cli.command, Command::Serve { .. }) {
        default_sigpipe();
    }
    match dispatch(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The stores the `users` and `flows` commands open.
fn management_stores(config: &Config) -> crate::service::management_cli::Stores<'_> {
    crate::service::management_cli::Stores {
        state_dir: &config.server.state_dir,
        database: &config.database,
        session_store: &config.session_store,
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().context("tokio runtime")
}

fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    // Every command may create state (database, token objects): private by default,
    // also when an operator runs `keys init` by hand rather than under the unit's UMask=.
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    match cli.command {
        Command::Config(ConfigCommand::Check { file, values_only }) => {
            let file = file.unwrap_or(cli.config);
            let (config, mut problems) = Config::load_lenient(Some(&file));
            if !values_only && !problems.iter().any(|p| p.path == "(file)") {
                // Still one thread: the module must see its environment when it loads.
                config.hsm.apply_module_env();
                let reported: Vec<String> = problems.iter().map(|p| p.path.clone()).collect();
                problems.extend(config.start_problems().into_iter().filter(|p| !reported.contains(&p.path)));
            }
            if problems.is_empty() {
                println!("{}: OK", file.display());
                return Ok(ExitCode::SUCCESS);
            }
            println!("{}: {} problem(s)", file.display(), problems.len());
            for p in &problems {
                println!("{p}");
            }
            Ok(ExitCode::FAILURE)
        }
        Command::Serve { allow_root } => {
            let config = load_config(&cli.config)?;
            crate::telemetry::init(&config.telemetry)?;
            harden_process(allow_root || config.server.allow_root)?;
            let config_path = cli.config;
            runtime()?.block_on(async move {
                let app = Application::build(config).await?;
                app.with_config_path(config_path).run_until_stopped().await
            })?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Services(ServicesCommand::NewSecret) => {
            let (secret, hash) = crate::service::oidc::new_client_secret();
            println!("client_secret = {secret}");
            println!("client_secret_sha256 = \"{hash}\"");
            Ok(ExitCode::SUCCESS)
        }
        Command::GenerateMan { dir } => {
            crate::cli_docs::write_man_pages(Cli::command(), &dir)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::GenerateCompletions { dir } => {
            crate::cli_docs::write_completions(Cli::command(), &dir)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Migrate => {
            let config = load_config(&cli.config)?;
            crate::telemetry::init_cli();
            runtime()?.block_on(async move {
                let store = open_durable(&config.database, &config.server.state_dir).await?;
                store.migrate().await?;
                println!("migrations applied");
                anyhow::Ok(())
            })?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Backup { out } => {
            let config = load_config(&cli.config)?;
            crate::telemetry::init_cli();
            if out.exists() {
                anyhow::bail!("{} exists already; the backup goes to a new file", out.display());
            }
            let out = std::path::absolute(&out).with_context(|| format!("backup path {}", out.display()))?;
            runtime()?.block_on(async {
                let store = open_durable(&config.database, &config.server.state_dir).await?;
                store.backup_to(&out).await?;
                anyhow::Ok(())
            })?;
            let file = std::fs::File::open(&out).with_context(|| format!("cannot open {}", out.display()))?;
            file.sync_all().with_context(|| format!("cannot sync {}", out.display()))?;
            let bytes = file.metadata().map(|m| m.len()).unwrap_or(0);
            println!("backup written to {} ({bytes} bytes)", out.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Trust(cmd) => {
            let config = load_config(&cli.config)?;
            crate::telemetry::init_cli();
            let ok = runtime()?.block_on(async {
                match cmd {
                    TrustCommand::Status(args) => {
                        crate::trust::cli::trust_status(&args, &config.trust, &config.server.state_dir).await
                    }
                    TrustCommand::Refresh(args) => {
                        crate::trust::cli::trust_refresh(&args, &config.trust, &config.server.state_dir).await
                    }
                }
            })?;
            Ok(if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
        Command::Vds(VdsCommand::Verify(args)) => {
            crate::telemetry::init_cli();
            // With --ca the seal is checked against the given CAs alone; without, against
            // the configured trust lists (cached in the state directory).
            let store = if args.ca.is_empty() {
                let config = load_config(&cli.config)?;
                Some(crate::trust::TrustStore::load(&config.trust, &config.server.state_dir)?)
            } else {
                None
            };
            let ok = crate::trust::cli::vds_verify(&args, store.as_ref())?;
            Ok(if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
        Command::Audit(cmd) => {
            let config = load_config(&cli.config)?;
            crate::telemetry::init_cli();
            let ok = runtime()?.block_on(crate::service::audit::cli::run(
                &config.server.state_dir,
                &config.database,
                &config.hsm,
                &config.audit,
                &config.keys.imported,
                cmd,
            ))?;
            Ok(if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
        Command::Users(cmd) => {
            let config = load_config(&cli.config)?;
            crate::telemetry::init_cli();
            let stores = management_stores(&config);
            let ok = runtime()?.block_on(crate::service::management_cli::run_users(&stores, cmd))?;
            Ok(if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
        Command::Flows(cmd) => {
            let config = load_config(&cli.config)?;
            crate::telemetry::init_cli();
            let stores = management_stores(&config);
            let ok = runtime()?.block_on(crate::service::management_cli::run_flows(&stores, cmd))?;
            Ok(if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
        Command::Keys(cmd) => {
            let config = load_config(&cli.config)?;
            crate::telemetry::init_cli();
            let setup = crate::keyring::cli::KeysSetup {
                state_dir: &config.server.state_dir,
                database: &config.database,
                hsm: &config.hsm,
                keys: &config.keys,
                lifetimes: config.key_lifetimes(),
                init_purposes: &config.key_purposes_to_init(),
            };
            runtime()?.block_on(crate::keyring::cli::run(setup, cmd))?;
            Ok(ExitCode::SUCCESS)
        }
    }
}
