//! Typed configuration: built-in defaults < TOML file < `SYMBOLON_*` environment
//! (`__` separates levels, e.g. `SYMBOLON_HSM__WORKERS=4`). Durations are written
//! like `90s`, `5m`, `1h`. Secrets never live here: the HSM PIN comes from a file,
//! a systemd credential or `SYMBOLON_HSM_PIN` (see `keys::pin`).

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Toml};
use serde::{Deserialize, Serialize};

use crate::saml::{SamlConfig, SamlSpConfig};
use crate::trust::TrustConfig;

/// Default location of the configuration file.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/symbolon/symbolon.toml";

/// The whole configuration.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerConfig,
    pub hsm: crate::keys::HsmConfig,
    pub database: DatabaseConfig,
    pub session_store: SessionStoreConfig,
    pub telemetry: TelemetryConfig,
    pub device: DeviceConfig,
    pub auth: AuthConfig,
    pub limits: LimitsConfig,
    pub trust: TrustConfig,
    pub push: crate::push::PushConfig,
    pub audit: AuditConfig,
    /// Key life cycle: catalog re-sync and the optional rotation schedule (`[keys]`).
    pub keys: crate::keyring::KeysConfig,
    /// The SAML 2.0 identity provider (`[saml]`, protocol.md §8).
    pub saml: SamlConfig,
    /// The demo relying-party page (`[demo]`).
    pub demo: DemoConfig,
    /// Relying parties (`[[services]]`).
    pub services: Vec<ServiceConfig>,
    /// The management API on the admin listener (`[management]`).
    pub management: ManagementConfig,
    /// Prometheus metrics on the admin listener (`[metrics]`).
    pub metrics: MetricsConfig,
}

/// `GET /metrics` on the admin listener.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Serve `/metrics` (the admin listener only).
    pub enabled: bool,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self { enabled: true }
    }
}

/// Signature algorithms an operator token may use: asymmetric only, so a public JWKS
/// key can never serve as an HMAC secret.
pub const MANAGEMENT_ALGORITHMS: [&str; 9] =
    ["ES256", "ES384", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "EdDSA"];

/// The management API `/api/management/v1/` (admin listener), authorised by bearer
/// JWTs from the operator's OIDC provider. It fails closed: without `issuer`,
/// `audience` and `jwks_url` (or a break-glass token file) it answers
/// `404 management_disabled`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ManagementConfig {
    /// Expected `iss` of operator tokens, e.g. `https://login.example/realms/ops`.
    pub issuer: String,
    /// Expected `aud` (one of the token's audiences), e.g. `symbolon-management`.
    pub audience: String,
    /// The provider's JWKS, e.g. `https://login.example/realms/ops/protocol/openid-connect/certs`.
    /// `https://` (plain `http://` only to a loopback address).
    pub jwks_url: String,
    /// Claim holding the scopes: a space-separated string or an array of strings.
    pub scope_claim: String,
    /// Prefix the provider puts before each scope (e.g. `api://symbolon/`); scopes
    /// without it are ignored.
    pub scope_prefix: String,
    /// Leeway on `exp`, `nbf` and `iat`.
    #[serde(with = "humantime_serde")]
    pub clock_skew: Duration,
    /// How long fetched keys are used before the JWKS is fetched again.
    #[serde(with = "humantime_serde")]
    pub jwks_cache: Duration,
    /// Least time between two fetches caused by an unknown `kid`.
    #[serde(with = "humantime_serde")]
    pub jwks_refetch_interval: Duration,
    /// Accepted `alg` values (a subset of ES256, ES384, RS256, RS384, RS512, PS256, PS384,
    /// PS512, EdDSA).
    pub algorithms: Vec<String>,
    /// File holding a static break-glass bearer token (at least 256 bits, hex or
    /// base64). It grants every scope; each use is audited.
    pub break_glass_token_file: Option<PathBuf>,
}

impl Default for ManagementConfig {
    fn default() -> Self {
        Self {
            issuer: String::new(),
            audience: String::new(),
            jwks_url: String::new(),
            scope_claim: "scope".into(),
            scope_prefix: String::new(),
            clock_skew: Duration::from_secs(60),
            jwks_cache: Duration::from_secs(600),
            jwks_refetch_interval: Duration::from_secs(30),
            algorithms: vec!["ES256".into(), "ES384".into(), "RS256".into(), "PS256".into(), "EdDSA".into()],
            break_glass_token_file: None,
        }
    }
}

impl ManagementConfig {
    /// An OIDC provider is configured (issuer, audience and JWKS URL).
    pub fn oidc_configured(&self) -> bool {
        !self.issuer.is_empty() && !self.audience.is_empty() && !self.jwks_url.is_empty()
    }

    fn validate(&self) -> Vec<ConfigProblem> {
        let mut p = Vec::new();
        let set = [&self.issuer, &self.audience, &self.jwks_url].iter().filter(|v| !v.is_empty()).count();
        if set != 0 && set != 3 {
            p.push(problem("management.issuer", "issuer, audience and jwks_url are set together or not at all".into()));
        }
        if !self.jwks_url.is_empty()
            && let Err(e) = check_https_url(&self.jwks_url)
        {
            p.push(problem("management.jwks_url", e));
        }
        if self.scope_claim.is_empty() {
            p.push(problem("management.scope_claim", "must not be empty".into()));
        }
        if self.algorithms.is_empty() {
            p.push(problem("management.algorithms", "must name at least one algorithm".into()));
        }
        for alg in &self.algorithms {
            if !MANAGEMENT_ALGORITHMS.contains(&alg.as_str()) {
                p.push(problem(
                    "management.algorithms",
                    format!("{alg:?} is not an accepted asymmetric algorithm ({MANAGEMENT_ALGORITHMS:?})"),
                ));
            }
        }
        if self.jwks_cache.is_zero() {
            p.push(problem("management.jwks_cache", "must be greater than zero".into()));
        }
        p
    }
}

/// An `https://` URL, or `http://` to a loopback host (local test servers).
pub(crate) fn check_https_url(raw: &str) -> Result<(), String> {
    let url = url::Url::parse(raw).map_err(|e| format!("not a URL: {e}"))?;
    match url.scheme() {
        "https" => Ok(()),
        "http" if is_loopback(&url) => Ok(()),
        _ => Err("must be an https:// URL (http:// only to a loopback address)".into()),
    }
}

fn is_loopback(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d == "localhost",
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

/// The demo relying-party page `GET /demo`: enter a token id, see the OTP, see the
/// identity token after approval. Off by default; meant for trying Symbolon out.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DemoConfig {
    /// Serve `/demo`.
    pub enabled: bool,
    /// The `[[services]]` entry the page signs in to; its allowed scopes are requested.
    pub service_id: String,
}

impl Default for DemoConfig {
    fn default() -> Self {
        Self { enabled: false, service_id: "demo".into() }
    }
}

/// A relying party.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    /// `service_id` in the protocol, `aud` of identity tokens.
    pub id: String,
    /// Shown to the user on the phone.
    pub name: String,
    /// Scopes this service may request (protocol.md §7.3).
    #[serde(default)]
    pub allowed_scopes: Vec<String>,
    /// Browser origins allowed to start sessions (`Origin` header), e.g. `https://rp.example`.
    #[serde(default)]
    pub allowed_origins: Vec<String>,
    /// The service is also a SAML service provider (`[services.saml]`).
    #[serde(default)]
    pub saml: Option<SamlSpConfig>,
    /// The `sub` of this service's identity tokens: `public` (the token id) or
    /// `pairwise` (docs/protocol.md §13). Default: `public`.
    #[serde(default)]
    pub subject_type: Option<SubjectType>,
    /// The sector of pairwise subjects: services of one sector see the same `sub` for a
    /// person. Default: the one host of the service's SAML ACS URL or allowed origins.
    #[serde(default)]
    pub sector_identifier: Option<String>,
}

/// What a relying party receives as the person's subject (OIDC Core §8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SubjectType {
    /// The token id, the same at every relying party.
    Public,
    /// An HMAC of the sector and the token id made in the HSM (docs/protocol.md §13):
    /// relying parties of different sectors cannot correlate people by `sub`.
    Pairwise,
}

impl SubjectType {
    pub fn as_str(self) -> &'static str {
        match self {
            SubjectType::Public => "public",
            SubjectType::Pairwise => "pairwise",
        }
    }
}

impl ServiceConfig {
    /// The subject type in effect (the configured one, else the default).
    pub fn subject_type(&self) -> SubjectType {
        self.subject_type.unwrap_or(SubjectType::Public)
    }

    /// The sector of this service's pairwise subjects: `sector_identifier`, else the
    /// one host its URLs name (SAML ACS URL, allowed origins). An error says why none
    /// can be chosen.
    pub fn sector(&self) -> Result<String, String> {
        if let Some(s) = &self.sector_identifier {
            return Ok(s.clone());
        }
        let urls =
            self.saml.iter().map(|sp| sp.acs_url.as_str()).chain(self.allowed_origins.iter().map(String::as_str));
        let mut hosts: Vec<String> = Vec::new();
        for url in urls {
            let Some(host) = url::Url::parse(url).ok().and_then(|u| u.host_str().map(str::to_ascii_lowercase)) else {
                continue;
            };
            if !hosts.contains(&host) {
                hosts.push(host);
            }
        }
        match hosts.as_slice() {
            [one] => Ok(one.clone()),
            [] => Err("no URL of the service names a host: set sector_identifier".into()),
            _ => Err(format!("its URLs name several hosts ({}): set sector_identifier", hosts.join(", "))),
        }
    }
}

/// A sector identifier: a host name (letters, digits, `-`, `.`) or IP literal, lower case.
fn valid_sector(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'.' | b':' | b'[' | b']'))
}

/// The scopes of protocol.md §7.3, in table order.
pub const SCOPES: [&str; 5] = ["name", "birthdate", "age", "nationality", "document"];

/// Authentication sessions (protocol.md §5, §6, §7).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Life of a session and its OTP.
    #[serde(with = "humantime_serde")]
    pub otp_ttl: Duration,
    /// OTP length, 6 to 8.
    pub otp_digits: u8,
    /// Pending sessions allowed per token id.
    pub max_pending: u32,
    /// Failed verifies that lock a session.
    pub session_max_failures: u32,
    /// Life of identity tokens.
    #[serde(with = "humantime_serde")]
    pub token_ttl: Duration,
    /// How long after `expires_at` the browser token still reads the outcome.
    #[serde(with = "humantime_serde")]
    pub browser_grace: Duration,
    /// Time the browser has to send `hello` on the WebSocket.
    #[serde(with = "humantime_serde")]
    pub hello_timeout: Duration,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            otp_ttl: Duration::from_secs(120),
            otp_digits: 6,
            max_pending: 3,
            session_max_failures: 5,
            token_ttl: Duration::from_secs(300),
            browser_grace: Duration::from_secs(60),
            hello_timeout: Duration::from_secs(5),
        }
    }
}

/// Listeners, identity and process settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Public listener: the protocol (protocol.md §3–§9) and `/health`.
    pub public_listen: SocketAddr,
    /// Admin listener: `/livez`, `/readyz`, `/health`, metrics and management.
    pub admin_listen: SocketAddr,
    /// Issuer URL: the `iss` of identity tokens and the base of SAML entity ids.
    pub issuer: String,
    /// State directory: SQLite database, trust-list cache.
    pub state_dir: PathBuf,
    /// Proxies whose `X-Forwarded-For` is believed (protocol.md §12 rule 12).
    pub trusted_proxies: Vec<IpAddr>,
    /// Allow running as root (refused by default).
    pub allow_root: bool,
    /// How long in-flight requests may take to finish after SIGTERM.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// Requests served at once per listener; more are answered `503 overloaded`.
    pub max_in_flight: usize,
    /// Send `Strict-Transport-Security` (set when clients reach Symbolon over HTTPS,
    /// e.g. through a TLS-terminating proxy).
    pub hsts: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            public_listen: SocketAddr::from(([0, 0, 0, 0], 8080)),
            admin_listen: SocketAddr::from(([127, 0, 0, 1], 8081)),
            issuer: "http://localhost:8080".into(),
            state_dir: PathBuf::from("/var/lib/symbolon"),
            trusted_proxies: Vec::new(),
            allow_root: false,
            shutdown_grace: Duration::from_secs(10),
            // Small enough that a saturated node sheds load in milliseconds, not seconds
            // (symbolon-bench: with 4096 a 2-core node's 503s took up to 9 s at 3x load).
            max_in_flight: 256,
            hsts: false,
        }
    }
}

/// The durable store.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// `sqlite://PATH` (default: `symbolon.db` in the state directory) or
    /// `postgres://USER@HOST:PORT/DB` (a cluster; see docs/cluster.md).
    pub url: String,
    /// Run migrations when `serve` starts (`false`: run `symbolon migrate` as a separate step).
    pub auto_migrate: bool,
    pub max_connections: u32,
    /// Longest wait for a pooled connection (connecting included).
    #[serde(with = "humantime_serde")]
    pub acquire_timeout: Duration,
    /// Longest a single database call may take before the request gets `503 unavailable`.
    #[serde(with = "humantime_serde")]
    pub statement_timeout: Duration,
    /// PostgreSQL TLS: `disable`, `prefer`, `require` or `verify-full`.
    pub tls: DatabaseTls,
    /// PEM file of the CA that signs the PostgreSQL server certificate (`verify-full`).
    pub ca_file: Option<PathBuf>,
    /// File holding the PostgreSQL password (keeps it out of the URL and the TOML).
    pub password_file: Option<PathBuf>,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            url: String::new(),
            auto_migrate: true,
            max_connections: 8,
            acquire_timeout: Duration::from_secs(3),
            statement_timeout: Duration::from_secs(5),
            tls: DatabaseTls::Prefer,
            ca_file: None,
            password_file: None,
        }
    }
}

/// TLS towards PostgreSQL (libpq `sslmode` names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DatabaseTls {
    Disable,
    Prefer,
    Require,
    VerifyFull,
}

/// The session store (nonces, auth sessions, counters).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SessionStoreConfig {
    /// `memory://` (single node), `redis://[USER[:PASSWORD]@]HOST:PORT[/DB]` or `rediss://...` (TLS).
    pub url: String,
    /// Prefix of every Redis key and of the events channel, so several deployments can
    /// share one Redis.
    pub key_prefix: String,
    /// Longest a single Redis call may take before the request gets `503 unavailable`.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// PEM file of the CA that signs the Redis server certificate (`rediss://`; default:
    /// the system roots).
    pub ca_file: Option<PathBuf>,
    /// File holding the Redis password (ACL user from the URL, password from here).
    pub password_file: Option<PathBuf>,
}

impl Default for SessionStoreConfig {
    fn default() -> Self {
        Self {
            url: "memory://".into(),
            key_prefix: "symbolon:".into(),
            timeout: Duration::from_secs(2),
            ca_file: None,
            password_file: None,
        }
    }
}

/// The audit trail's signed checkpoints (architecture.md §Stores, Audit).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// Sign a checkpoint after this many new events...
    pub checkpoint_every: u32,
    /// ...or this long after the last one when events were added since.
    #[serde(with = "humantime_serde")]
    pub checkpoint_interval: Duration,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self { checkpoint_every: 100, checkpoint_interval: Duration::from_secs(60) }
    }
}

/// Log output.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    /// `tracing` filter directive, e.g. `info` or `symbolon=debug,info`.
    /// `SYMBOLON_LOG` overrides it.
    pub level: String,
    /// `auto` (journald under systemd, pretty on a terminal, JSON otherwise),
    /// `journald`, `json` or `pretty`.
    pub format: LogFormat,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self { level: "info".into(), format: LogFormat::Auto }
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Auto,
    Journald,
    Json,
    Pretty,
}

/// Device message rules (protocol.md §3, §4).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeviceConfig {
    /// Accepted `|now - iat|` of device JWS payloads.
    #[serde(with = "humantime_serde")]
    pub iat_skew: Duration,
    /// Life of an enrollment nonce.
    #[serde(with = "humantime_serde")]
    pub enroll_nonce_ttl: Duration,
}

impl Default for DeviceConfig {
    fn default() -> Self {
        Self { iat_skew: Duration::from_secs(120), enroll_nonce_ttl: Duration::from_secs(300) }
    }
}

/// Abuse limits (protocol.md §9).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Largest accepted request body.
    pub body_max_bytes: usize,
    /// Requests per client IP per minute to `/v1/enroll*`.
    pub enroll_per_ip_per_minute: u32,
    /// Requests per client IP per minute to `/v1/auth/initiate`.
    pub initiate_per_ip_per_minute: u32,
    /// Initiates per token id per minute (push-bombing guard).
    pub initiate_per_token_per_minute: u32,
    /// Failure units per token id within `failure_window` that lock it out.
    pub failure_units: u32,
    #[serde(with = "humantime_serde")]
    pub failure_window: Duration,
    /// Units a failed verify costs.
    pub verify_failure_cost: u32,
    /// How long a token id stays locked out.
    #[serde(with = "humantime_serde")]
    pub lockout: Duration,
    /// WebSocket upgrades (`/v1/auth/sessions/{id}/ws`) per client IP per minute;
    /// more get `429 rate_limited` before the upgrade.
    pub websocket_per_ip_per_minute: u32,
    /// Browser WebSockets open at once on this node (and session event channels held);
    /// more upgrades get `503 overloaded`.
    pub websocket_max_open: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            body_max_bytes: 64 * 1024,
            enroll_per_ip_per_minute: 30,
            initiate_per_ip_per_minute: 60,
            initiate_per_token_per_minute: 5,
            failure_units: 10,
            failure_window: Duration::from_secs(60),
            verify_failure_cost: 2,
            lockout: Duration::from_secs(300),
            // A browser opens one channel per sign-in and may reconnect a few times;
            // many browsers can share an IP behind NAT.
            websocket_per_ip_per_minute: 120,
            websocket_max_open: 20_000,
        }
    }
}

impl LimitsConfig {
    /// Limits that would refuse every request (zero) are configuration mistakes.
    fn problems(&self) -> Vec<ConfigProblem> {
        let mut p = Vec::new();
        let per_minute = [("websocket_per_ip_per_minute", self.websocket_per_ip_per_minute)];
        for (name, value) in per_minute {
            if value == 0 {
                p.push(problem(&format!("limits.{name}"), "must be at least 1".into()));
            }
        }
        if self.websocket_max_open == 0 {
            p.push(problem("limits.websocket_max_open", "must be at least 1".into()));
        }
        p
    }
}

/// One problem found in a configuration, with the dotted path of the bad field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    pub path: String,
    pub message: String,
}

impl std::fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

impl Config {
    /// Loads defaults < `file` (when given; a missing file is an error) < environment.
    pub fn load(file: Option<&Path>) -> Result<Config, Vec<ConfigProblem>> {
        Self::from_figment(Self::figment(file)?)
    }

    /// Loads `file` alone over the defaults, without the environment (`config check`).
    pub fn check_file(file: &Path) -> Result<Config, Vec<ConfigProblem>> {
        Self::require_file(file)?;
        let figment = Figment::from(Toml::file_exact(file));
        Self::from_figment(figment)
    }

    fn require_file(file: &Path) -> Result<(), Vec<ConfigProblem>> {
        match std::fs::metadata(file) {
            Ok(m) if m.is_file() => Ok(()),
            Ok(_) => Err(vec![problem("(file)", format!("{} is not a file", file.display()))]),
            Err(e) => Err(vec![problem("(file)", format!("cannot read {}: {e}", file.display()))]),
        }
    }

    fn figment(file: Option<&Path>) -> Result<Figment, Vec<ConfigProblem>> {
        let mut figment = Figment::new();
        if let Some(file) = file {
            Self::require_file(file)?;
            figment = figment.merge(Toml::file_exact(file));
        }
        Ok(figment.merge(Env::prefixed("SYMBOLON_").split("__").filter(|k| k.as_str().contains('.'))))
    }

    /// Extracts section by section so that one run reports every bad section, then
    /// validates the values themselves.
    fn from_figment(figment: Figment) -> Result<Config, Vec<ConfigProblem>> {
        let mut problems = Vec::new();
        let mut config = Config::default();
        // Each section is named once: extracted into its field and listed as known.
        macro_rules! sections {
            ($($name:ident),* $(,)?) => {{
                $( section(&figment, stringify!($name), &mut config.$name, &mut problems); )*
                [$(stringify!($name)),*]
            }};
        }
        let known = sections!(
            server,
            hsm,
            database,
            session_store,
            telemetry,
            device,
            auth,
            limits,
            trust,
            push,
            audit,
            keys,
            services,
            saml,
            demo,
            management,
            metrics
        );
        match figment.extract::<figment::value::Dict>() {
            Ok(dict) => {
                for key in dict.keys().filter(|k| !known.contains(&k.as_str())) {
                    problems.push(problem(key, "unknown section".to_string()));
                }
            }
            Err(e) => problems.extend(figment_problems(e, "")),
        }
        if problems.is_empty() {
            problems.extend(config.validate());
        }
        if problems.is_empty() { Ok(config) } else { Err(problems) }
    }

    /// Checks values that parse but make no sense.
    pub fn validate(&self) -> Vec<ConfigProblem> {
        let mut p = Vec::new();
        p.extend(self.hsm.problems().into_iter().map(|(path, message)| ConfigProblem { path, message }));
        if self.server.max_in_flight == 0 {
            p.push(problem("server.max_in_flight", "must be at least 1".into()));
        }
        if !(self.server.issuer.starts_with("https://") || self.server.issuer.starts_with("http://")) {
            p.push(problem("server.issuer", "must be an http(s) URL".into()));
        }
        if self.server.public_listen == self.server.admin_listen {
            p.push(problem("server.admin_listen", "must differ from server.public_listen".into()));
        }
        let url = self.database_url();
        let postgres = url.starts_with("postgres://") || url.starts_with("postgresql://");
        if !url.starts_with("sqlite:") && !postgres {
            p.push(problem("database.url", "unsupported scheme (expected sqlite://PATH or postgres://...)".into()));
        }
        if self.database.max_connections == 0 {
            p.push(problem("database.max_connections", "must be at least 1".into()));
        }
        if self.database.acquire_timeout.is_zero() || self.database.statement_timeout.is_zero() {
            p.push(problem("database.acquire_timeout", "acquire_timeout and statement_timeout must be > 0".into()));
        }
        if url.starts_with("sqlite:") && (self.database.ca_file.is_some() || self.database.password_file.is_some()) {
            p.push(problem("database.ca_file", "ca_file and password_file apply to postgres:// only".into()));
        }
        if self.database.ca_file.is_some() && self.database.tls == DatabaseTls::Disable {
            p.push(problem("database.tls", "ca_file is set but tls = \"disable\"".into()));
        }
        let redis = match url::Url::parse(&self.session_store.url) {
            Ok(u) if matches!(u.scheme(), "redis" | "rediss") && u.host_str().is_some_and(|h| !h.is_empty()) => true,
            _ if self.session_store.url == "memory://" => false,
            _ => {
                p.push(problem(
                    "session_store.url",
                    "unsupported (expected memory://, redis://HOST:PORT or rediss://HOST:PORT)".into(),
                ));
                false
            }
        };
        if redis && self.session_store.timeout.is_zero() {
            p.push(problem("session_store.timeout", "must be greater than zero".into()));
        }
        if redis && self.session_store.key_prefix.is_empty() {
            p.push(problem("session_store.key_prefix", "must not be empty".into()));
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.telemetry.level) {
            p.push(problem("telemetry.level", e.to_string()));
        }
        if self.device.iat_skew.is_zero() {
            p.push(problem("device.iat_skew", "must be greater than zero".into()));
        }
        if !(6..=8).contains(&self.auth.otp_digits) {
            p.push(problem("auth.otp_digits", "must be 6, 7 or 8".into()));
        }
        if self.auth.otp_ttl < Duration::from_secs(1) {
            p.push(problem("auth.otp_ttl", "must be at least 1s".into()));
        }
        if self.auth.max_pending == 0 || self.auth.session_max_failures == 0 {
            p.push(problem("auth.max_pending", "max_pending and session_max_failures must be at least 1".into()));
        }
        if self.auth.token_ttl < Duration::from_secs(10) {
            p.push(problem("auth.token_ttl", "must be at least 10s".into()));
        }
        let mut seen = std::collections::HashSet::new();
        for (i, s) in self.services.iter().enumerate() {
            let at = |f: &str| format!("services[{i}].{f}");
            if s.id.is_empty() || s.id.len() > 128 {
                p.push(problem(&at("id"), "must be 1..128 characters".into()));
            }
            if !seen.insert(s.id.as_str()) {
                p.push(problem(&at("id"), format!("duplicate service id {:?}", s.id)));
            }
            if s.name.is_empty() {
                p.push(problem(&at("name"), "must not be empty".into()));
            }
            for scope in &s.allowed_scopes {
                if !SCOPES.contains(&scope.as_str()) {
                    p.push(problem(&at("allowed_scopes"), format!("unknown scope {scope:?} (known: {SCOPES:?})")));
                }
            }
            if let Some(sector) = &s.sector_identifier
                && !valid_sector(sector)
            {
                p.push(problem(
                    &at("sector_identifier"),
                    format!("{sector:?} is not a host name like rp.example (lower case, no scheme or path)"),
                ));
            }
            if s.subject_type() == SubjectType::Pairwise
                && let Err(e) = s.sector()
            {
                p.push(problem(&at("subject_type"), format!("pairwise subjects need a sector: {e}")));
            }
            for origin in &s.allowed_origins {
                let ok = (origin.starts_with("https://") || origin.starts_with("http://"))
                    && !origin.ends_with('/')
                    && origin.matches('/').count() == 2;
                if !ok {
                    p.push(problem(
                        &at("allowed_origins"),
                        format!("{origin:?} is not an origin like https://rp.example"),
                    ));
                }
            }
        }
        if self.audit.checkpoint_every == 0 || self.audit.checkpoint_interval < Duration::from_secs(1) {
            p.push(problem("audit.checkpoint_every", "checkpoint_every ≥ 1 and checkpoint_interval ≥ 1s".into()));
        }
        p.extend(self.validate_saml());
        if self.demo.enabled {
            match self.service(&self.demo.service_id) {
                None => p.push(problem(
                    "demo.service_id",
                    format!("names no [[services]] entry (add one with id = {:?})", self.demo.service_id),
                )),
                Some(s) if s.saml.is_some() => {
                    p.push(problem("demo.service_id", "the demo service must not be a SAML service provider".into()))
                }
                Some(_) => {}
            }
        }
        if self.limits.body_max_bytes < 1024 {
            p.push(problem("limits.body_max_bytes", "must be at least 1024".into()));
        }
        p.extend(self.limits.problems());
        p.extend(self.trust.validate().into_iter().map(|(path, message)| ConfigProblem { path, message }));
        p.extend(self.push.validate().into_iter().map(|(path, message)| ConfigProblem { path, message }));
        p.extend(self.keys.problems().into_iter().map(|(path, message)| ConfigProblem { path, message }));
        p.extend(self.management.validate());
        p
    }

    /// SAML checks: the IdP settings, every `[services.saml]`, entity ids unique.
    fn validate_saml(&self) -> Vec<ConfigProblem> {
        let mut p = Vec::new();
        let saml = &self.saml;
        if saml.assertion_lifetime < Duration::from_secs(10) {
            p.push(problem("saml.assertion_lifetime", "must be at least 10s".into()));
        }
        if saml.request_max_age < Duration::from_secs(10) {
            p.push(problem("saml.request_max_age", "must be at least 10s".into()));
        }
        if saml.certificate_validity < Duration::from_secs(86_400) {
            p.push(problem("saml.certificate_validity", "must be at least 1 day".into()));
        }
        if saml.certificate_subject.chars().count() > 64 {
            p.push(problem("saml.certificate_subject", "at most 64 characters".into()));
        }
        let mut entities = std::collections::HashSet::new();
        for (i, s) in self.services.iter().enumerate() {
            let Some(sp) = &s.saml else { continue };
            let at = format!("services[{i}].saml");
            if let Err(e) = sp.validate() {
                p.push(problem(&at, e));
            }
            if !entities.insert(sp.entity_id.as_str()) {
                p.push(problem(&format!("{at}.entity_id"), format!("duplicate SP entity id {:?}", sp.entity_id)));
            }
            for scope in &sp.default_scopes {
                if !s.allowed_scopes.contains(scope) {
                    p.push(problem(
                        &format!("{at}.default_scopes"),
                        format!("{scope:?} is not among the service's allowed_scopes"),
                    ));
                }
            }
        }
        if saml.enabled && self.services.iter().all(|s| s.saml.is_none()) {
            p.push(problem("saml.enabled", "no [services.saml] service provider is configured".into()));
        }
        p
    }

    /// The origin of `server.issuer` (`https://idp.example`), where the IdP's own pages
    /// (SAML sign-in, demo) run.
    pub fn issuer_origin(&self) -> Option<String> {
        url::Url::parse(&self.server.issuer)
            .ok()
            .map(|u| u.origin())
            .filter(|o| o.is_tuple())
            .map(|o| o.ascii_serialization())
    }

    /// How long what each key purpose makes stays in use: the key ring's lower bounds
    /// on a key's `retiring` time.
    pub fn key_lifetimes(&self) -> crate::keyring::KeyLifetimes {
        crate::keyring::KeyLifetimes {
            id_token: self.auth.token_ttl,
            otp: self.auth.otp_ttl,
            saml_assertion: self.saml.assertion_lifetime,
            saml_clock_skew: self.saml.clock_skew,
        }
    }

    /// The SAML service providers, in configuration order, with their service ids.
    pub fn saml_sps(&self) -> impl Iterator<Item = (&ServiceConfig, &SamlSpConfig)> {
        self.services.iter().filter_map(|s| s.saml.as_ref().map(|sp| (s, sp)))
    }

    /// Whether the IdP's own pages start sessions for this service: a SAML SP (when
    /// SAML is enabled) or the demo service (when the demo is enabled). For such a
    /// service the issuer origin is accepted as an `Origin` besides `allowed_origins`.
    pub fn served_by_idp_pages(&self, service: &ServiceConfig) -> bool {
        (self.saml.enabled && service.saml.is_some()) || (self.demo.enabled && service.id == self.demo.service_id)
    }

    /// The sections other than `[[services]]` whose values differ in `other`. A SIGHUP
    /// applies only `[[services]]`; these take effect at the next restart.
    pub fn sections_needing_restart(&self, other: &Config) -> Vec<String> {
        let (Ok(serde_json::Value::Object(mine)), Ok(theirs)) =
            (serde_json::to_value(self), serde_json::to_value(other))
        else {
            return vec!["(configuration not comparable)".to_string()];
        };
        mine.into_iter().filter(|(k, v)| k != "services" && theirs.get(k) != Some(v)).map(|(k, _)| k).collect()
    }

    /// The relying party with this id.
    pub fn service(&self, id: &str) -> Option<&ServiceConfig> {
        self.services.iter().find(|s| s.id == id)
    }

    /// The durable store URL with the default resolved.
    pub fn database_url(&self) -> String {
        if self.database.url.is_empty() {
            format!("sqlite://{}", self.server.state_dir.join("symbolon.db").display())
        } else {
            self.database.url.clone()
        }
    }
}

fn problem(path: &str, message: String) -> ConfigProblem {
    ConfigProblem { path: path.to_string(), message }
}

fn section<T: serde::de::DeserializeOwned>(
    figment: &Figment,
    name: &str,
    slot: &mut T,
    problems: &mut Vec<ConfigProblem>,
) {
    if !figment.contains(name) {
        return;
    }
    match figment.extract_inner::<T>(name) {
        Ok(v) => *slot = v,
        Err(e) => problems.extend(figment_problems(e, name)),
    }
}

fn figment_problems(err: figment::Error, section: &str) -> Vec<ConfigProblem> {
    err.into_iter()
        .map(|e| {
            let mut path = e.path.join(".");
            if path.is_empty() {
                path = section.to_string();
            } else if !section.is_empty() && !path.starts_with(section) {
                path = format!("{section}.{path}");
            }
            if path.is_empty() {
                path = "(root)".into();
            }
            let mut message = e.kind.to_string();
            if let Some(md) = &e.metadata {
                message = format!("{message} (from {})", md.name);
            }
            ConfigProblem { path, message }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(clippy::result_large_err)] // figment::Jail's closure signature
    fn environment_overrides_sections_only() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("c.toml", "[hsm]\nuri = \"pkcs11:token=t?module-path=/x.so\"\nworkers = 2\n")?;
            jail.set_env("SYMBOLON_HSM__WORKERS", "3");
            jail.set_env("SYMBOLON_SERVER__SHUTDOWN_GRACE", "90s");
            // Not configuration: top-level SYMBOLON_ variables (PIN, binary paths, log filter).
            jail.set_env("SYMBOLON_HSM_PIN", "1234");
            jail.set_env("SYMBOLON_BIN", "/x");
            let c = Config::load(Some(Path::new("c.toml"))).map_err(|p| format!("{p:?}"))?;
            assert_eq!(c.hsm.workers, 3);
            assert_eq!(c.server.shutdown_grace, Duration::from_secs(90));
            Ok(())
        });
    }

    #[test]
    fn management_is_configured_whole_with_asymmetric_algorithms() {
        let mut c = Config::default();
        c.hsm.uri = "pkcs11:token=t?module-path=/x.so".into();
        let paths = |c: &Config| c.validate().into_iter().map(|p| p.path).collect::<Vec<_>>();
        assert!(paths(&c).is_empty());
        c.management.issuer = "https://login.example".into();
        assert_eq!(paths(&c), ["management.issuer"], "issuer without audience and jwks_url");
        c.management.audience = "symbolon".into();
        c.management.jwks_url = "http://login.example/jwks".into();
        assert_eq!(paths(&c), ["management.jwks_url"], "plain http to a remote host");
        c.management.jwks_url = "http://127.0.0.1:8089/jwks".into();
        assert!(paths(&c).is_empty());
        assert!(c.management.oidc_configured());
        c.management.algorithms = vec!["HS256".into(), "none".into()];
        assert_eq!(paths(&c), ["management.algorithms", "management.algorithms"]);
    }

    #[test]
    fn cluster_store_urls() {
        let mut c = Config::default();
        c.hsm.uri = "pkcs11:token=t?module-path=/x.so".into();
        c.database.url = "postgres://symbolon@db:5432/symbolon".into();
        c.database.tls = DatabaseTls::VerifyFull;
        c.database.ca_file = Some("/etc/symbolon/db-ca.pem".into());
        c.session_store.url = "rediss://symbolon@redis:6380/0".into();
        assert!(c.validate().is_empty(), "{:?}", c.validate());
        c.database.url = "mysql://x".into();
        c.session_store.url = "redis://".into();
        let paths: Vec<String> = c.validate().into_iter().map(|p| p.path).collect();
        assert_eq!(paths, ["database.url", "session_store.url"]);
        c.database.url = "sqlite:///tmp/x.db".into();
        c.session_store.url = "memory://".into();
        let paths: Vec<String> = c.validate().into_iter().map(|p| p.path).collect();
        assert_eq!(paths, ["database.ca_file"], "ca_file is for postgres only");
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment::Jail's closure signature
    fn saml_demo_and_service_provider_sections_load() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "c.toml",
                r#"
[hsm]
uri = "pkcs11:token=t?module-path=/x.so"
[saml]
enabled = true
request_max_age = "2m"
[demo]
enabled = true
[[services]]
id = "demo"
name = "Demo"
allowed_scopes = ["age"]
[[services]]
id = "sp"
name = "SP"
allowed_scopes = ["name", "age"]
[services.saml]
entity_id = "https://sp.example/md"
acs_url = "https://sp.example/acs"
default_scopes = ["name"]
[services.saml.attribute_names]
given_name = "urn:oid:2.5.4.42"
"#,
            )?;
            let c = Config::check_file(Path::new("c.toml")).map_err(|p| format!("{p:?}"))?;
            assert!(c.saml.enabled && c.demo.enabled);
            assert_eq!(c.saml.request_max_age, Duration::from_secs(120));
            let sp = c.service("sp").and_then(|s| s.saml.as_ref()).ok_or("no sp")?;
            assert_eq!(sp.attribute_name(crate::saml::Claim::GivenName).0, "urn:oid:2.5.4.42");
            assert!(c.served_by_idp_pages(c.service("demo").ok_or("no demo")?));
            assert_eq!(c.issuer_origin().as_deref(), Some("http://localhost:8080"));
            Ok(())
        });
    }

    #[test]
    fn saml_and_demo_problems_name_the_field() {
        let mut c = Config::default();
        c.hsm.uri = "pkcs11:token=t?module-path=/x.so".into();
        c.saml.enabled = true;
        c.demo.enabled = true;
        c.demo.service_id = "nope".into();
        let sp = |entity: &str, acs: &str| SamlSpConfig {
            entity_id: entity.into(),
            acs_url: acs.into(),
            slo_url: None,
            attribute_names: Default::default(),
            requests_signed: false,
            certificate_pem: None,
            sign_response: false,
            default_scopes: vec!["document".into()],
        };
        let service = |id: &str, saml| ServiceConfig {
            id: id.into(),
            name: id.into(),
            allowed_scopes: vec!["name".into()],
            allowed_origins: vec![],
            saml,
            subject_type: None,
            sector_identifier: None,
        };
        c.services = vec![
            service("a", Some(sp("https://sp.example", "not a url"))),
            service("b", Some(sp("https://sp.example", "https://sp.example/acs"))),
        ];
        let problems: Vec<String> = c.validate().iter().map(ToString::to_string).collect();
        let has = |s: &str| problems.iter().any(|p| p.contains(s));
        assert!(has("services[0].saml: acs_url"), "{problems:?}");
        assert!(has("services[1].saml.entity_id: duplicate"), "{problems:?}");
        assert!(has("services[1].saml.default_scopes: \"document\" is not among"), "{problems:?}");
        assert!(has("demo.service_id"), "{problems:?}");
        c.services.clear();
        c.demo.enabled = false;
        let problems: Vec<String> = c.validate().iter().map(ToString::to_string).collect();
        assert!(problems.iter().any(|p| p.starts_with("saml.enabled")), "{problems:?}");
    }

    #[test]
    fn pairwise_services_need_one_sector() {
        let mut c = Config::default();
        c.hsm.uri = "pkcs11:token=t?module-path=/x.so".into();
        let service = |origins: &[&str], sector: Option<&str>| ServiceConfig {
            id: "rp".into(),
            name: "RP".into(),
            allowed_scopes: vec![],
            allowed_origins: origins.iter().map(|o| o.to_string()).collect(),
            saml: None,
            subject_type: Some(SubjectType::Pairwise),
            sector_identifier: sector.map(str::to_string),
        };
        let paths = |c: &Config| c.validate().into_iter().map(|p| p.path).collect::<Vec<_>>();
        c.services = vec![service(&["https://Bank.example:8443"], None)];
        assert!(paths(&c).is_empty());
        assert_eq!(c.services[0].sector().as_deref(), Ok("bank.example"));
        c.services = vec![service(&[], None)];
        assert_eq!(paths(&c), ["services[0].subject_type"], "no host to take the sector from");
        c.services = vec![service(&["https://a.example", "https://b.example"], None)];
        assert_eq!(paths(&c), ["services[0].subject_type"], "two hosts: which sector?");
        c.services = vec![service(&["https://a.example", "https://b.example"], Some("a.example"))];
        assert!(paths(&c).is_empty());
        c.services = vec![service(&[], Some("https://a.example/"))];
        assert_eq!(paths(&c), ["services[0].sector_identifier"]);
        c.services[0].subject_type = None;
        c.services[0].sector_identifier = None;
        assert_eq!(c.services[0].subject_type(), SubjectType::Public, "public unless asked");
        assert!(paths(&c).is_empty());
    }

    #[test]
    fn defaults_plus_uri_validate() {
        let mut c = Config::default();
        c.hsm.uri = "pkcs11:token=t?module-path=/x.so".into();
        assert!(c.validate().is_empty(), "{:?}", c.validate());
    }
}
