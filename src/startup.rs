//! Building the application (stores, HSM, routers) and running it until stopped.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;

use crate::config::Config;
use crate::http::{AppState, admin_router, public_router};
use crate::keyring::KeyRing;
use crate::keys::open_pool;
use crate::service::{Parts, Services};
use crate::store::{open_durable, open_session_store};
use crate::trust::TrustStore;

/// A built, bound, not yet serving application.
pub struct Application {
    /// The configuration read at start (SIGHUP applies only its relying parties).
    config: Config,
    state: AppState,
    public: TcpListener,
    admin: TcpListener,
}

/// Process hardening at start (docs/architecture.md §Process): no core dumps, not
/// ptrace-able by other users, private file mode, not root unless allowed.
pub fn harden_process(allow_root: bool) -> anyhow::Result<()> {
    use nix::sys::resource::{Resource, setrlimit};
    use nix::sys::stat::{Mode, umask};
    setrlimit(Resource::RLIMIT_CORE, 0, 0).context("setrlimit(RLIMIT_CORE)")?;
    nix::sys::prctl::set_dumpable(false).context("prctl(PR_SET_DUMPABLE)")?;
    umask(Mode::from_bits_truncate(0o077));
    if nix::unistd::geteuid().is_root() && !allow_root {
        anyhow::bail!("refusing to run as root: run as the symbolon system user, or set server.allow_root = true");
    }
    Ok(())
}

impl Application {
    /// Opens the stores (migrating when configured), the HSM pool and key ring, and
    /// binds both listeners.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        std::fs::create_dir_all(&config.server.state_dir)
            .with_context(|| format!("cannot create state directory {}", config.server.state_dir.display()))?;
        let store = open_durable(&config.database, &config.server.state_dir).await.context("durable store")?;
        if config.database.auto_migrate {
            store.migrate().await.context("database migration")?;
        }
        let sessions =
            open_session_store(&config.session_store, config.limits.websocket_max_open).context("session store")?;
        let hsm_config = config.hsm.clone();
        let pool = tokio::task::spawn_blocking(move || open_pool(&hsm_config))
            .await
            .context("HSM start-up task")?
            .context("HSM")?;
        tracing::info!(
            token = %pool.token().label,
            serial = %pool.token().serial,
            workers = pool.workers(),
            "HSM session pool ready"
        );
        let keys = KeyRing::open_with(
            pool,
            store.clone(),
            crate::ids::now_unix(),
            &crate::keyring::node_name(),
            &config.keys.imported,
        )
        .await
        .context("key ring")?;
        let public = TcpListener::bind(config.server.public_listen)
            .await
            .with_context(|| format!("cannot bind public listener {}", config.server.public_listen))?;
        let admin = TcpListener::bind(config.server.admin_listen)
            .await
            .with_context(|| format!("cannot bind admin listener {}", config.server.admin_listen))?;
        let trust = TrustStore::load(&config.trust, &config.server.state_dir).context("trust cache")?;
        let audit = crate::service::audit::Audit::new(store.clone(), keys.clone(), &config.audit);
        let push_audit = audit.clone();
        let push = crate::push::PushQueue::from_config(
            &config.push,
            Arc::new(keys.pool().clone()),
            Arc::new(move |f: crate::push::PushFailure| {
                push_audit.record_detached(crate::store::AuditEvent::new(
                    crate::ids::now_unix(),
                    crate::store::audit::kinds::PUSH_FAILED,
                    "symbolon",
                    f.session_id.clone(),
                    serde_json::json!({
                        "attempt": f.attempt, "status": f.status, "reason": f.reason,
                        "push_token_hash": f.token_hash, "gave_up": f.gave_up,
                    }),
                ));
                tracing::warn!(
                    session_id = %f.session_id,
                    attempt = f.attempt,
                    status = ?f.status,
                    reason = %f.reason,
                    push_token_hash = %f.token_hash,
                    gave_up = f.gave_up,
                    "push failed"
                );
            }),
        )
        .context("push")?;
        if config.keys.init_on_start {
            for e in keys
                .generate_missing(&config.key_purposes_to_init(), crate::ids::now_unix())
                .await
                .context("keys.init_on_start")?
            {
                tracing::info!(label = %e.label, purpose = %e.purpose, "keys.init_on_start: generated a key");
            }
        }
        let relying_parties = crate::service::relying_parties::RelyingParties::new(config.services.clone());
        let browser_channels = crate::service::channel::OpenChannels::new(config.limits.websocket_max_open);
        let key_rules = crate::keyring::Lifecycle::new(keys.clone(), &config.keys, config.key_lifetimes());
        let services = Arc::new(Services::new(Parts {
            settings: config.service_settings(),
            relying_parties,
            keys,
            key_rules,
            store,
            sessions,
            trust,
            push,
            audit,
            browser_channels,
            enrollment_change_file: (config.session_store.url == "memory://")
                .then(|| config.server.state_dir.join(crate::service::enrollment_cache::CHANGE_FILE)),
        }));
        services.prepare_push_decoy().await;
        if services.trust_configured() {
            if let Err(e) = services.refresh_trust(crate::ids::now_unix()).await {
                tracing::warn!(error = %e, "initial trust refresh failed; using the cached lists");
            }
        } else {
            tracing::warn!("trust.governance_url is empty: enrollment is disabled until trust lists are configured");
        }
        let operators =
            crate::http::operator::OperatorAuth::from_config(&config.management).context("management API")?;
        if operators.disabled() {
            tracing::info!("management API disabled: no [management] provider or break-glass token configured");
        }
        for m in services.missing(crate::ids::now_unix()) {
            tracing::error!(check = %m.check, fix = %m.fix, "{}: not ready until fixed: {}", m.problem, m.fix);
        }
        let state = AppState {
            services,
            operators: Arc::new(operators),
            http: Arc::new(config.http_settings()),
            health: Default::default(),
        };
        Ok(Self { config, state, public, admin })
    }

    /// Names the configuration file that a reload (SIGHUP, the console) re-reads.
    pub fn with_config_path(self, path: PathBuf) -> Self {
        let source = ConfigFile { running: self.config.clone(), path };
        self.state.services.set_config_source(Arc::new(source));
        self
    }

    /// The bound public address.
    pub fn public_addr(&self) -> std::io::Result<SocketAddr> {
        self.public.local_addr()
    }

    /// The bound admin address.
    pub fn admin_addr(&self) -> std::io::Result<SocketAddr> {
        self.admin.local_addr()
    }

    /// Serves until SIGTERM or SIGINT, then drains within `server.shutdown_grace`.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let grace = self.config.server.shutdown_grace;
        let public = public_router(self.state.clone()).into_make_service_with_connect_info::<SocketAddr>();
        let admin = admin_router(self.state.clone()).into_make_service_with_connect_info::<SocketAddr>();
        let wait = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|stop| *stop).await;
        };
        let public_task =
            tokio::spawn(axum::serve(self.public, public).with_graceful_shutdown(wait(stop_rx.clone())).into_future());
        let admin_task =
            tokio::spawn(axum::serve(self.admin, admin).with_graceful_shutdown(wait(stop_rx.clone())).into_future());
        // Handlers before READY=1: a SIGTERM or SIGHUP right after it must not kill us.
        let mut signals = ProcessSignals::install()?;
        notify(&[sd_notify::NotifyState::Ready]);
        tracing::info!(
            public = %self.config.server.public_listen,
            admin = %self.config.server.admin_listen,
            "symbolon serving"
        );
        let watchdog = spawn_watchdog(self.state.clone());
        let services = &self.state.services;
        let checkpoints = Some(services.spawn_checkpoint_loop());
        let expiry = Some(services.spawn_expiry_counter());
        // Rotations made elsewhere reach this node within keys.sync_interval.
        let key_maintenance = Some(services.spawn_key_maintenance());
        let audit_partitions = services.spawn_audit_partitions();
        let refresher = services.trust_configured().then(|| services.spawn_trust_refresh_loop());
        while let ProcessSignal::Reload = signals.next().await {
            let mut reloading = vec![sd_notify::NotifyState::Reloading];
            if let Ok(now) = sd_notify::NotifyState::monotonic_usec_now() {
                reloading.push(now);
            }
            notify(&reloading);
            self.state.services.reload_configuration("SIGHUP", crate::ids::now_unix()).await;
            notify(&[sd_notify::NotifyState::Ready]);
        }
        tracing::info!("shutting down");
        notify(&[sd_notify::NotifyState::Stopping]);
        let _ = stop_tx.send(true);
        self.state.services.stop_push();
        for task in [watchdog, refresher, checkpoints, key_maintenance, expiry, audit_partitions].into_iter().flatten()
        {
            task.abort();
        }
        let drained = tokio::time::timeout(grace, async {
            let _ = public_task.await;
            let _ = admin_task.await;
        })
        .await;
        if drained.is_err() {
            tracing::warn!("requests still running after the shutdown grace period; exiting");
        }
        // Sign the events of the last moments before the HSM goes away.
        self.state.services.close(crate::ids::now_unix()).await;
        Ok(())
    }
}

fn notify(states: &[sd_notify::NotifyState]) {
    if std::env::var_os("NOTIFY_SOCKET").is_some()
        && let Err(e) = sd_notify::notify(false, states)
    {
        tracing::warn!(error = %e, "sd_notify failed");
    }
}

/// Sends `WATCHDOG=1` at half the systemd watchdog interval while the HSM and store answer.
fn spawn_watchdog(state: AppState) -> Option<tokio::task::JoinHandle<()>> {
    let period = watchdog_interval()? / 2;
    Some(tokio::spawn(async move {
        let mut tick = tokio::time::interval(period);
        loop {
            tick.tick().await;
            if state.services.alive().await {
                notify(&[sd_notify::NotifyState::Watchdog]);
            } else {
                tracing::error!("watchdog check failed: HSM or database not answering");
            }
        }
    }))
}

/// `WATCHDOG_USEC` when the watchdog is meant for this process: like
/// `sd_watchdog_enabled(3)`, an unset `WATCHDOG_PID` means "this process".
fn watchdog_interval() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    if let Ok(pid) = std::env::var("WATCHDOG_PID")
        && pid.parse::<u32>().ok() != Some(std::process::id())
    {
        return None;
    }
    (usec > 0).then(|| Duration::from_micros(usec))
}

/// What a signal asks of the serving process.
enum ProcessSignal {
    Stop,
    Reload,
}

/// SIGTERM and SIGINT (stop) and SIGHUP (reload), registered up front.
struct ProcessSignals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl ProcessSignals {
    fn install() -> anyhow::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self {
            term: signal(SignalKind::terminate()).context("installing the SIGTERM handler")?,
            int: signal(SignalKind::interrupt()).context("installing the SIGINT handler")?,
            hup: signal(SignalKind::hangup()).context("installing the SIGHUP handler")?,
        })
    }

    async fn next(&mut self) -> ProcessSignal {
        tokio::select! {
            _ = self.term.recv() => ProcessSignal::Stop,
            _ = self.int.recv() => ProcessSignal::Stop,
            _ = self.hup.recv() => ProcessSignal::Reload,
        }
    }
}

/// The configuration file a reload re-reads, and the configuration running since start
/// (to name the sections that changed and wait for a restart).
struct ConfigFile {
    running: Config,
    path: PathBuf,
}

impl crate::service::operations::ConfigSource for ConfigFile {
    fn reread(&self) -> crate::service::operations::Reread {
        use crate::service::operations::Reread;
        match Config::load(Some(&self.path)) {
            Ok(new) => Reread::Valid { restart: self.running.sections_needing_restart(&new), services: new.services },
            Err(problems) => Reread::Invalid(problems.iter().map(ToString::to_string).collect()),
        }
    }
}
