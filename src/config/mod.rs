//! Typed configuration: built-in defaults < TOML file < `SYMBOLON_*` environment
//! (`__` separates levels, e.g. `SYMBOLON_HSM__WORKERS=4`). Durations are written
//! like `90s`, `5m`, `1h`. Secrets never live here: the HSM PIN comes from a file,
//! a systemd credential or `SYMBOLON_HSM_PIN` (see `keys::pin`).
//!
//! Each room owns its section's type and checks (`[hsm]` in `keys`, `[database]` in
//! `store`, `[auth]` in `service`, ...). This module only composes them: it reads the
//! file and the environment, runs every section's `problems()` and the checks across
//! sections, and hands each room the values it runs with. Nothing below imports it
//! (docs/architecture.md).

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Toml};
use serde::{Deserialize, Serialize};

pub use crate::error::ConfigProblem;
use crate::http::config::{ConsoleConfig, HttpSettings, ManagementConfig, MetricsConfig};
use crate::keyring::KeysConfig;
use crate::keys::HsmConfig;
use crate::push::PushConfig;
use crate::saml::{SamlConfig, SamlSpConfig};
use crate::service::config::{
    AuditConfig, AuthConfig, DemoConfig, DeviceConfig, LimitsConfig, ServiceConfig, Settings,
};
use crate::store::config::{DatabaseConfig, SessionStoreConfig};
use crate::telemetry::TelemetryConfig;
use crate::trust::TrustConfig;

/// Default location of the configuration file.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/symbolon/symbolon.toml";

/// The whole configuration.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerConfig,
    pub hsm: HsmConfig,
    pub database: DatabaseConfig,
    pub session_store: SessionStoreConfig,
    pub telemetry: TelemetryConfig,
    pub device: DeviceConfig,
    pub auth: AuthConfig,
    pub limits: LimitsConfig,
    pub trust: TrustConfig,
    pub push: PushConfig,
    pub audit: AuditConfig,
    /// Key life cycle: catalog re-sync and the optional rotation schedule (`[keys]`).
    pub keys: KeysConfig,
    /// The SAML 2.0 identity provider (`[saml]`, docs/protocol.md §8).
    pub saml: SamlConfig,
    /// The demo relying-party page (`[demo]`).
    pub demo: DemoConfig,
    /// Relying parties (`[[services]]`).
    pub services: Vec<ServiceConfig>,
    /// The management API on the admin listener (`[management]`).
    pub management: ManagementConfig,
    /// Prometheus metrics on the admin listener (`[metrics]`).
    pub metrics: MetricsConfig,
    /// The operator console on the admin listener (`[console]`).
    pub console: ConsoleConfig,
}

/// Listeners, identity and process settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Public listener: the protocol (docs/protocol.md §3–§9) and `/health`.
    pub public_listen: SocketAddr,
    /// Admin listener: `/livez`, `/readyz`, `/health`, metrics and management.
    pub admin_listen: SocketAddr,
    /// Issuer URL: the `iss` of identity tokens and the base of SAML entity ids.
    pub issuer: String,
    /// State directory: SQLite database, trust-list cache.
    pub state_dir: PathBuf,
    /// Proxies whose `X-Forwarded-For` is believed (docs/protocol.md §12 rule 12).
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

impl Config {
    /// Loads defaults < `file` (when given; a missing file is an error) < environment.
    pub fn load(file: Option<&Path>) -> Result<Config, Vec<ConfigProblem>> {
        Self::from_figment(Self::figment(file)?)
    }

    /// Loads like [`Config::load`] but always returns a configuration: every field that
    /// was refused holds its default, and the problems found come alongside (`config
    /// check`, which then checks the rest too).
    pub fn load_lenient(file: Option<&Path>) -> (Config, Vec<ConfigProblem>) {
        match Self::figment(file) {
            Ok(figment) => Self::read(figment),
            Err(problems) => (Config::default(), problems),
        }
    }

    fn require_file(file: &Path) -> Result<(), Vec<ConfigProblem>> {
        match std::fs::metadata(file) {
            Ok(m) if m.is_file() => Ok(()),
            Ok(_) => Err(vec![ConfigProblem::new("(file)", format!("{} is not a file", file.display()))]),
            Err(e) => Err(vec![ConfigProblem::new("(file)", format!("cannot read {}: {e}", file.display()))]),
        }
    }

    fn figment(file: Option<&Path>) -> Result<Figment, Vec<ConfigProblem>> {
        let mut figment = Figment::new();
        if let Some(file) = file {
            Self::require_file(file)?;
            figment = figment.merge(Toml::file_exact(file));
        }
        Self::with_environment(figment)
    }

    /// The environment layer over `figment`: `SYMBOLON_<SECTION>__<KEY>` variables.
    ///
    /// figment 0.10.19 panics on a double-quoted value with a backslash escape after a
    /// non-ASCII character (`value/escape.rs` slices the string at a character index;
    /// found by `fuzz/fuzz_targets/config.rs`), so such values are refused here with a
    /// problem instead of reaching it.
    fn with_environment(figment: Figment) -> Result<Figment, Vec<ConfigProblem>> {
        let problems: Vec<ConfigProblem> = std::env::vars_os()
            .filter_map(|(name, value)| Some((name.into_string().ok()?, value.into_string().ok()?)))
            .filter(|(name, value)| {
                name.strip_prefix("SYMBOLON_").is_some_and(|key| key.contains("__")) && figment_cannot_read(value)
            })
            .map(|(name, _)| {
                let message = "a double-quoted value with a backslash escape must be ASCII; \
                               write other characters unquoted or as \\u escapes";
                ConfigProblem::new(name, message)
            })
            .collect();
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(figment.merge(Env::prefixed("SYMBOLON_").split("__").filter(|k| k.as_str().contains('.'))))
    }

    /// Fuzzing entry (`fuzz/fuzz_targets/config.rs`): `toml` as the configuration file,
    /// composed with the environment and checked exactly as [`Config::load`] does.
    #[doc(hidden)]
    pub fn fuzz_compose(toml: &str) -> Result<Config, Vec<ConfigProblem>> {
        Self::from_figment(Self::with_environment(Figment::from(Toml::string(toml)))?)
    }

    /// Extracts section by section and, within a section, drops each bad field and tries
    /// again, so that one run reports every mistake of the file and the environment; then
    /// validates the values themselves (except fields already reported). Each problem
    /// names where its value came from (the file or the `SYMBOLON_*` variable).
    fn from_figment(figment: Figment) -> Result<Config, Vec<ConfigProblem>> {
        let (config, problems) = Self::read(figment);
        if problems.is_empty() { Ok(config) } else { Err(problems) }
    }

    fn read(figment: Figment) -> (Config, Vec<ConfigProblem>) {
        let mut problems = Vec::new();
        let mut config = Config::default();
        let root = match figment.extract::<figment::value::Dict>() {
            Ok(root) => root,
            Err(e) => {
                for e in e {
                    let message = plain(&e.kind.to_string());
                    let from = e.metadata.as_ref().map(|m| format!(" (in {})", m.name)).unwrap_or_default();
                    problems.push(ConfigProblem::new("(file)", format!("{message}{from}")));
                }
                return (config, problems);
            }
        };
        let mut reader = SectionReader { figment: &figment, problems: &mut problems };
        // Each section is named once: extracted into its field and listed as known.
        macro_rules! sections {
            ($($name:ident),* $(,)?) => {{
                $( reader.read(&root, stringify!($name), &mut config.$name); )*
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
            metrics,
            console
        );
        for (key, value) in root.iter().filter(|(k, _)| !known.contains(&k.as_str())) {
            let message = format!("unknown section{}", did_you_mean(key, &known));
            problems.push(ConfigProblem::new(key, format!("{message}{}", source_of(&figment, key, value))));
        }
        let reported: Vec<String> = problems.iter().map(|p| p.path.clone()).collect();
        for mut p in config.validate() {
            // A field refused while reading holds its default now: not a second problem.
            if reported.iter().any(|r| p.path == *r || p.path.starts_with(&format!("{r}."))) {
                continue;
            }
            if let Some(value) = find_value(&root, &p.path) {
                p.message.push_str(&source_of(&figment, &p.path, value));
            }
            problems.push(p);
        }
        (config, problems)
    }

    /// Checks values that parse but make no sense: each section's own checks (owned by
    /// its room), then the checks across sections.
    pub fn validate(&self) -> Vec<ConfigProblem> {
        let mut p = Vec::new();
        p.extend(self.hsm.problems());
        p.extend(self.server.problems());
        p.extend(self.database.problems(&self.server.state_dir));
        p.extend(self.session_store.problems());
        p.extend(self.telemetry.problems());
        p.extend(self.device.problems());
        p.extend(self.auth.problems());
        p.extend(crate::service::config::services_problems(&self.services));
        p.extend(self.audit.problems());
        p.extend(self.saml.problems());
        p.extend(crate::service::config::saml_sp_problems(&self.services));
        if self.saml.enabled && self.services.iter().all(|s| s.saml.is_none()) {
            p.push(ConfigProblem::new("saml.enabled", "no [services.saml] service provider is configured"));
        }
        if self.demo.enabled {
            match self.service(&self.demo.service_id) {
                None => p.push(ConfigProblem::new(
                    "demo.service_id",
                    format!("names no [[services]] entry (add one with id = {:?})", self.demo.service_id),
                )),
                Some(s) if s.saml.is_some() => p.push(ConfigProblem::new(
                    "demo.service_id",
                    "the demo service must not be a SAML service provider",
                )),
                Some(s) if s.initiate == crate::service::config::InitiateMode::Backend => p.push(ConfigProblem::new(
                    "demo.service_id",
                    "the demo page starts sign-ins from the browser: its service must keep initiate = \"browser\"",
                )),
                Some(_) => {}
            }
        }
        p.extend(self.limits.problems());
        p.extend(self.trust.problems());
        p.extend(self.push.problems());
        p.extend(self.keys.problems());
        p.extend(self.management.problems());
        p.extend(self.console.problems(&self.management));
        p
    }

    /// What `serve` would refuse at start beyond the values themselves, checked without
    /// side effects (`config check`): the PKCS#11 module loads, the token of the URI
    /// exists and the PIN source is readable; every file the configuration names is
    /// readable; `server.state_dir` is (or can be made) a writable directory; a
    /// `file://` governance list exists. Call after [`HsmConfig::apply_module_env`].
    pub fn start_problems(&self) -> Vec<ConfigProblem> {
        let mut p = crate::keys::start_problems(&self.hsm);
        let files = [
            ("database.ca_file", &self.database.ca_file),
            ("database.password_file", &self.database.password_file),
            ("session_store.ca_file", &self.session_store.ca_file),
            ("session_store.password_file", &self.session_store.password_file),
            ("management.break_glass_token_file", &self.management.break_glass_token_file),
            ("console.client_secret_file", &self.console.client_secret_file),
        ];
        for (path, file) in files {
            if let Some(file) = file
                && let Err(e) = std::fs::File::open(file)
            {
                p.push(ConfigProblem::new(path, format!("cannot read {}: {e}", file.display())));
            }
        }
        if let Some(problem) = writable_dir_problem(&self.server.state_dir) {
            p.push(ConfigProblem::new("server.state_dir", problem));
        }
        p.extend(self.trust.start_problems());
        p
    }

    /// The origin of `server.issuer` (`https://idp.example`), where the IdP's own pages
    /// (SAML sign-in, demo) run.
    pub fn issuer_origin(&self) -> Option<String> {
        crate::service::config::issuer_origin(&self.server.issuer)
    }

    /// How long what each key purpose makes stays in use: the key ring's lower bounds
    /// on a key's `retiring` time.
    pub fn key_lifetimes(&self) -> crate::keyring::KeyLifetimes {
        crate::keyring::KeyLifetimes {
            id_token: self.auth.token_ttl,
            otp: self.auth.otp_ttl,
            sealed_kept: (self.auth.otp_ttl + self.auth.browser_grace)
                .max(self.auth.access_token_ttl)
                .max(crate::oidc::CODE_LIFETIME)
                // SAML SP session records (single logout) are sealed too.
                .max(if self.saml.enabled { self.saml.session_lifetime } else { Duration::ZERO }),
            saml_assertion: self.saml.assertion_lifetime,
            saml_clock_skew: self.saml.clock_skew,
        }
    }

    /// The key purposes `symbolon keys init` (and `keys.init_on_start`) make a key
    /// for: every purpose, but the RSA SAML key (`saml-rsa`) only when `[saml]` is
    /// enabled, since generating RSA-3072 takes a while and few installations need it.
    pub fn key_purposes_to_init(&self) -> Vec<crate::keyring::KeyPurpose> {
        use crate::keyring::KeyPurpose;
        KeyPurpose::ALL.into_iter().filter(|p| *p != KeyPurpose::SamlRsa || self.saml.enabled).collect()
    }

    /// The values the domain (`service/`) runs with.
    pub fn service_settings(&self) -> Settings {
        Settings {
            issuer: self.server.issuer.clone(),
            auth: self.auth.clone(),
            device: self.device.clone(),
            limits: self.limits.clone(),
            saml: self.saml.clone(),
            demo: self.demo.clone(),
        }
    }

    /// The values the routers (`http/`) need.
    pub fn http_settings(&self) -> HttpSettings {
        HttpSettings {
            max_in_flight: self.server.max_in_flight,
            body_max_bytes: self.limits.body_max_bytes,
            hsts: self.server.hsts,
            trusted_proxies: self.server.trusted_proxies.clone(),
            metrics: self.metrics.enabled,
            console: self.console.clone(),
        }
    }

    /// The SAML service providers, in configuration order, with their service ids.
    pub fn saml_sps(&self) -> impl Iterator<Item = (&ServiceConfig, &SamlSpConfig)> {
        self.services.iter().filter_map(|s| s.saml.as_ref().map(|sp| (s, sp)))
    }

    /// Whether the IdP's own pages start sessions for this service (see
    /// [`Settings::served_by_idp_pages`]).
    pub fn served_by_idp_pages(&self, service: &ServiceConfig) -> bool {
        crate::service::config::served_by_idp_pages(&self.saml, &self.demo, service)
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
        self.database.url_in(&self.server.state_dir)
    }
}

impl ServerConfig {
    /// What is wrong with `[server]`.
    pub fn problems(&self) -> Vec<ConfigProblem> {
        let mut p = Vec::new();
        if self.max_in_flight == 0 {
            p.push(ConfigProblem::new("server.max_in_flight", "must be at least 1"));
        }
        if !(self.issuer.starts_with("https://") || self.issuer.starts_with("http://")) {
            p.push(ConfigProblem::new("server.issuer", "must be an http(s) URL"));
        }
        if self.public_listen == self.admin_listen {
            p.push(ConfigProblem::new("server.admin_listen", "must differ from server.public_listen"));
        }
        p
    }
}

/// Why `dir` is not a writable directory that `serve` can use or create, if it is not.
fn writable_dir_problem(dir: &Path) -> Option<String> {
    use nix::unistd::{AccessFlags, access};
    let mut existing = dir;
    while !existing.exists() {
        existing = existing.parent()?;
    }
    if !existing.is_dir() {
        return Some(format!("{} is not a directory", existing.display()));
    }
    match access(existing, AccessFlags::W_OK | AccessFlags::X_OK) {
        Ok(()) => None,
        Err(e) if existing == dir => Some(format!("{} is not writable: {e}", dir.display())),
        Err(e) => Some(format!(
            "{} does not exist and cannot be created: {} is not writable: {e}",
            dir.display(),
            existing.display()
        )),
    }
}

/// Reads sections into their types, reporting every bad field.
struct SectionReader<'a> {
    figment: &'a Figment,
    problems: &'a mut Vec<ConfigProblem>,
}

impl SectionReader<'_> {
    /// Deserializes `root[name]` into `slot`; on an error records it, removes the
    /// offending field (its default applies) and tries again, until the rest reads.
    fn read<T: serde::de::DeserializeOwned>(&mut self, root: &figment::value::Dict, name: &str, slot: &mut T) {
        let Some(value) = root.get(name) else { return };
        let mut value = value.clone();
        // Each round removes one field, so this ends; the bound only guards the loop.
        for _ in 0..256 {
            let errors = match value.deserialize::<T>() {
                Ok(v) => {
                    *slot = v;
                    return;
                }
                Err(e) => e,
            };
            let mut removed = false;
            for e in errors {
                let (segments, message) = describe(&e);
                let mut full = vec![name.to_string()];
                full.extend(e.path.iter().cloned());
                let shown = display_path(&full, &segments);
                let from = lookup(&value, &e.path)
                    .map(|v| source_of(self.figment, &shown, v))
                    .or_else(|| root.get(name).map(|v| source_of(self.figment, name, v)))
                    .unwrap_or_default();
                self.problems.push(ConfigProblem::new(shown, format!("{message}{from}")));
                // A missing field is not fixed by removing anything: stop at it.
                let missing = matches!(e.kind, figment::error::Kind::MissingField(_));
                removed |= !missing && !e.path.is_empty() && remove(&mut value, &e.path);
            }
            if !removed {
                return;
            }
        }
    }
}

/// A problem in plain words, and extra path segments it concerns (a missing field).
fn describe(e: &figment::Error) -> (Vec<String>, String) {
    use figment::error::Kind;
    match &e.kind {
        Kind::UnknownField(_, expected) => {
            let found = e.path.last().map(String::as_str).unwrap_or_default();
            (vec![], format!("unknown field{}", did_you_mean(found, expected)))
        }
        Kind::UnknownVariant(found, expected) => {
            let choices = expected.iter().map(|c| format!("\"{c}\"")).collect::<Vec<_>>().join(", ");
            (vec![], format!("unknown value \"{found}\" (one of {choices}){}", did_you_mean(found, expected)))
        }
        Kind::MissingField(field) => (vec![field.to_string()], "required".into()),
        Kind::InvalidType(actual, expected) => {
            (vec![], format!("expected {}, found {}", plain(expected), plain(&actual.to_string())))
        }
        Kind::InvalidValue(actual, expected) => {
            (vec![], format!("invalid value {}: expected {}", plain(&actual.to_string()), plain(expected)))
        }
        Kind::Message(m) => (vec![], plain(m)),
        other => (vec![], plain(&other.to_string())),
    }
}

/// Whether figment's escape parser would panic on this environment value (see
/// [`Config::with_environment`]): quoted, with a backslash after a non-ASCII character.
fn figment_cannot_read(value: &str) -> bool {
    let value = value.trim();
    value.starts_with('"') && value.find('\\').is_some_and(|at| !value[..at].is_ascii())
}

/// Backticks become plain double quotes (messages from serde and figment use them).
fn plain(s: &str) -> String {
    s.replace('`', "\"")
}

/// `services.0.saml` is shown as `services[0].saml`, like the checks' own paths.
fn display_path(path: &[String], extra: &[String]) -> String {
    let mut out = String::new();
    for seg in path.iter().chain(extra) {
        if seg.parse::<usize>().is_ok() {
            out.push_str(&format!("[{seg}]"));
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(seg);
        }
    }
    out
}

/// " (did you mean `x`?)" when one of `candidates` is a near miss of `found`.
fn did_you_mean(found: &str, candidates: &[&str]) -> String {
    let limit = (found.chars().count() / 3).max(2);
    candidates
        .iter()
        .map(|c| (strsim::damerau_levenshtein(found, c), *c))
        .filter(|(d, _)| *d <= limit)
        .min()
        .map(|(_, c)| format!("; did you mean `{c}`?"))
        .unwrap_or_default()
}

/// " (from SYMBOLON_HSM__WORKERS)" or " (in /etc/symbolon/symbolon.toml)": where a value
/// was set.
fn source_of(figment: &Figment, shown_path: &str, value: &figment::value::Value) -> String {
    let Some(md) = figment.get_metadata(value.tag()) else { return String::new() };
    match &md.source {
        Some(figment::Source::File(file)) => format!(" (in {})", file.display()),
        _ if md.name.contains("environment") => {
            let var = shown_path.replace(['[', ']'], ".").replace("..", ".").trim_end_matches('.').to_string();
            format!(" (from environment variable SYMBOLON_{})", var.to_uppercase().replace('.', "__"))
        }
        _ => format!(" (from {})", md.name),
    }
}

/// The value at a shown path (`services[0].saml.acs_url`) of the merged tree.
fn find_value<'a>(root: &'a figment::value::Dict, shown_path: &str) -> Option<&'a figment::value::Value> {
    let segments: Vec<String> =
        shown_path.replace('[', ".").replace(']', "").split('.').filter(|s| !s.is_empty()).map(String::from).collect();
    let (first, rest) = segments.split_first()?;
    lookup(root.get(first)?, rest)
}

/// The value at `path` (dictionary keys and array indexes) under `value`.
fn lookup<'a>(value: &'a figment::value::Value, path: &[String]) -> Option<&'a figment::value::Value> {
    use figment::value::Value;
    let Some((first, rest)) = path.split_first() else { return Some(value) };
    let next = match value {
        Value::Dict(_, dict) => dict.get(first)?,
        Value::Array(_, items) => items.get(first.parse::<usize>().ok()?)?,
        _ => return None,
    };
    lookup(next, rest)
}

/// Removes the field at `path` under `value`; false when there is none.
fn remove(value: &mut figment::value::Value, path: &[String]) -> bool {
    use figment::value::Value;
    let Some((first, rest)) = path.split_first() else { return false };
    match value {
        Value::Dict(_, dict) if rest.is_empty() => dict.remove(first).is_some(),
        Value::Dict(_, dict) => dict.get_mut(first).is_some_and(|v| remove(v, rest)),
        // Elements stay (removing one would renumber the others in later messages).
        Value::Array(_, items) if !rest.is_empty() => {
            first.parse::<usize>().ok().and_then(|i| items.get_mut(i)).is_some_and(|v| remove(v, rest))
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::config::SubjectType;
    use crate::store::DatabaseTls;

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
    fn data_keys_outlive_everything_sealed_under_them() {
        let mut c = Config::default();
        // Defaults: access tokens (300 s) outlive a session and its grace (120 s + 60 s).
        assert_eq!(c.key_lifetimes().sealed_kept, Duration::from_secs(300));
        c.auth.access_token_ttl = Duration::from_secs(5);
        assert_eq!(c.key_lifetimes().sealed_kept, Duration::from_secs(180));
        c.auth.otp_ttl = Duration::from_secs(10);
        c.auth.browser_grace = Duration::from_secs(5);
        // Then the 60 s authorization codes are what lives longest.
        assert_eq!(c.key_lifetimes().sealed_kept, crate::oidc::CODE_LIFETIME);
        c.auth.access_token_ttl = Duration::from_secs(4);
        assert!(c.auth.problems().iter().any(|p| p.path == "auth.access_token_ttl"));
        // With SAML on, the SP session records kept for single logout live longest.
        c.saml.enabled = true;
        assert_eq!(c.key_lifetimes().sealed_kept, c.saml.session_lifetime);
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment::Jail's closure signature
    fn environment_values_figment_would_panic_on_are_refused() {
        // The input fuzz/fuzz_targets/config.rs found: figment 0.10.19 panicked on it.
        figment::Jail::expect_with(|jail| {
            jail.set_env("SYMBOLON_DEMO__TITLE", "\"x_op2000 \u{423}\\\\t!'s \"");
            jail.set_env("SYMBOLON_HSM_PIN", "\"\u{423}\\\\\"");
            let Err(problems) = Config::fuzz_compose("") else { panic!("the value was accepted") };
            assert_eq!(problems.len(), 1, "{problems:?}");
            assert_eq!(problems[0].path, "SYMBOLON_DEMO__TITLE");
            assert!(problems[0].message.contains("must be ASCII"));
            jail.set_env("SYMBOLON_DEMO__TITLE", "\"\u{423}\"");
            let c = Config::fuzz_compose("");
            assert!(c.err().unwrap_or_default().iter().all(|p| p.path != "SYMBOLON_DEMO__TITLE"));
            Ok(())
        });
        assert!(figment_cannot_read(" \"\u{423}\\n\""));
        assert!(!figment_cannot_read("\"ascii\\n \u{423}\""));
        assert!(!figment_cannot_read("\u{423}\\n"));
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
    fn the_console_needs_an_origin_and_a_way_to_sign_in() {
        let mut c = Config::default();
        c.hsm.uri = "pkcs11:token=t?module-path=/x.so".into();
        let paths = |c: &Config| c.validate().into_iter().map(|p| p.path).collect::<Vec<_>>();
        c.console.enabled = true;
        assert_eq!(paths(&c), ["console.url", "console.enabled"]);
        c.console.url = "https://admin.example/console".into();
        c.console.client_id = "symbolon-console".into();
        c.console.token_endpoint = "http://login.example/token".into();
        assert_eq!(
            paths(&c),
            ["console.url", "console.client_id", "console.authorization_endpoint", "console.token_endpoint"],
            "an origin only; the [management] provider; https endpoints"
        );
        c.console.url = "https://admin.example".into();
        c.management.issuer = "https://login.example".into();
        c.management.audience = "symbolon".into();
        c.management.jwks_url = "https://login.example/jwks".into();
        c.console.authorization_endpoint = "https://login.example/auth".into();
        c.console.token_endpoint = "https://login.example/token".into();
        assert!(paths(&c).is_empty(), "{:?}", c.validate());
        c.console.idle_timeout = std::time::Duration::from_secs(9 * 3600);
        c.console.scopes = vec!["profile".into()];
        assert_eq!(paths(&c), ["console.scopes", "console.idle_timeout"]);
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
            let c = Config::load(Some(Path::new("c.toml"))).map_err(|p| format!("{p:?}"))?;
            assert!(c.saml.enabled && c.demo.enabled);
            assert_eq!(c.saml.request_max_age, Duration::from_secs(120));
            let sp = c.service("sp").and_then(|s| s.saml.as_ref()).ok_or("no sp")?;
            assert_eq!(sp.attribute_name(crate::saml::Claim::GivenName).name, "urn:oid:2.5.4.42");
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
            signature_algorithm: Default::default(),
            name_id_format: Default::default(),
            attribute_name_format: Default::default(),
        };
        let service = |id: &str, saml| ServiceConfig {
            id: id.into(),
            name: id.into(),
            allowed_scopes: vec!["name".into()],
            allowed_origins: vec![],
            saml,
            subject_type: None,
            sector_identifier: None,
            oidc: None,
            initiate: Default::default(),
            client_auth: None,
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
            oidc: None,
            initiate: Default::default(),
            client_auth: None,
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
    #[allow(clippy::result_large_err)] // figment::Jail's closure signature
    fn every_mistake_is_reported_once_with_its_source_and_near_misses() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "c.toml",
                "[server]\npubic_listen = \"127.0.0.1:1\"\nshutdown_grace = 5\n[hsm]\nurl = \"x\"\n\
                 [[services]]\nid = \"a\"\nname = \"A\"\nsubject_typ = \"public\"\n[sesion_store]\n",
            )?;
            jail.set_env("SYMBOLON_HSM__WORKERS", "abc");
            let problems = Config::load(Some(Path::new("c.toml"))).err().ok_or("accepted")?;
            let lines: Vec<String> = problems.iter().map(ToString::to_string).collect();
            let has = |start: &str| lines.iter().filter(|l| l.starts_with(start)).count() == 1;
            assert!(has("server.pubic_listen: unknown field; did you mean `public_listen`? (in "), "{lines:#?}");
            assert!(has("server.shutdown_grace: expected "), "{lines:#?}");
            assert!(has("hsm.url: unknown field; did you mean `uri`?"), "{lines:#?}");
            assert!(has("hsm.uri: required"), "validation still runs: {lines:#?}");
            assert!(has("services[0].subject_typ: unknown field; did you mean `subject_type`?"), "{lines:#?}");
            assert!(has("sesion_store: unknown section; did you mean `session_store`?"), "{lines:#?}");
            let workers = lines.iter().find(|l| l.starts_with("hsm.workers: ")).ok_or("no hsm.workers")?;
            assert!(workers.ends_with("(from environment variable SYMBOLON_HSM__WORKERS)"), "{workers}");
            assert_eq!(lines.len(), 7, "{lines:#?}");
            Ok(())
        });
    }

    #[test]
    fn near_misses_only() {
        assert_eq!(did_you_mean("pubic_listen", &["public_listen", "admin_listen"]), "; did you mean `public_listen`?");
        assert_eq!(did_you_mean("colour", &["public_listen", "admin_listen"]), "");
        assert_eq!(
            display_path(&["services".into(), "0".into(), "saml".into()], &["acs_url".into()]),
            "services[0].saml.acs_url"
        );
    }

    #[test]
    fn state_dir_must_be_a_writable_directory_or_creatable() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(writable_dir_problem(&dir.path().join("a/b")), None, "created by serve");
        let file = dir.path().join("f");
        std::fs::write(&file, "x").unwrap_or_else(|e| panic!("{e}"));
        let problem = writable_dir_problem(&file.join("state")).unwrap_or_default();
        assert!(problem.ends_with("is not a directory"), "{problem}");
    }

    /// Every option's dotted path in the schema: the sections' defaults, and a relying
    /// party with a SAML and an OIDC table for `[[services]]`.
    fn schema_paths() -> std::collections::BTreeSet<String> {
        fn walk(prefix: &str, value: &serde_json::Value, out: &mut std::collections::BTreeSet<String>) {
            if let serde_json::Value::Object(map) = value {
                for (k, v) in map {
                    let path = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                    out.insert(path.clone());
                    // Tables of free keys (maps) are options themselves, not sections.
                    let free =
                        ["keys.schedule", "trust.doc_type_codes", "hsm.module_env", "services.saml.attribute_names"];
                    if !free.contains(&path.as_str()) {
                        walk(&path, v, out);
                    }
                }
            }
        }
        let sample = "id = \"x\"\nname = \"x\"\n[saml]\nentity_id = \"e\"\nacs_url = \"a\"\n\
                      [oidc]\nredirect_uris = []\ntoken_endpoint_auth_method = \"none\"\n\
                      [client_auth]\nmethod = \"client_secret_basic\"\n";
        let service: ServiceConfig = Figment::from(Toml::string(sample)).extract().unwrap_or_else(|e| panic!("{e}"));
        let mut config = serde_json::to_value(Config::default()).unwrap_or_else(|e| panic!("{e}"));
        config["services"] = serde_json::to_value(service).unwrap_or_else(|e| panic!("{e}"));
        let mut out = std::collections::BTreeSet::new();
        walk("", &config, &mut out);
        out
    }

    /// The dotted paths the example file shows, commented out or not: table headers
    /// (`[x]`, `[[x]]`, `# [x.y]`) and `key =` lines under them.
    fn example_paths(text: &str) -> std::collections::BTreeSet<String> {
        let mut out = std::collections::BTreeSet::new();
        let mut table = String::new();
        for line in text.lines() {
            let line = line.trim();
            let line = line.strip_prefix('#').map_or(line, str::trim_start);
            if let Some(header) = line.strip_prefix('[') {
                let name = header.trim_start_matches('[').split(']').next().unwrap_or_default().trim();
                if !name.is_empty() && name.chars().all(|c| c.is_ascii_lowercase() || c == '_' || c == '.') {
                    table = name.to_string();
                    let mut prefix = String::new();
                    for part in table.split('.') {
                        prefix = if prefix.is_empty() { part.to_string() } else { format!("{prefix}.{part}") };
                        out.insert(prefix.clone());
                    }
                }
                continue;
            }
            if let Some((key, _)) = line.split_once('=') {
                let key = key.trim();
                if !key.is_empty() && key.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_') {
                    out.insert(if table.is_empty() { key.to_string() } else { format!("{table}.{key}") });
                }
            }
        }
        out
    }

    #[test]
    fn every_option_of_the_schema_is_in_the_example_file() {
        let text = include_str!("../../packaging/symbolon.example.toml");
        let shown = example_paths(text);
        let missing: Vec<String> = schema_paths().into_iter().filter(|p| !shown.contains(p)).collect();
        assert!(missing.is_empty(), "packaging/symbolon.example.toml does not show: {missing:#?}");
        // And shows nothing the schema does not know (a renamed or removed option).
        let schema = schema_paths();
        let unknown: Vec<&String> =
            shown.iter().filter(|p| !schema.iter().any(|s| s == *p || p.starts_with(&format!("{s}.")))).collect();
        assert!(unknown.is_empty(), "the example shows options the schema lacks: {unknown:#?}");
    }

    #[test]
    fn the_example_file_shows_the_defaults() {
        // The file as shipped is valid (config check --values-only in serve:: tests); its
        // values are the defaults: loading it changes nothing but hsm.uri.
        let text = include_str!("../../packaging/symbolon.example.toml");
        let (config, problems) = Config::read(Figment::from(Toml::string(text)));
        assert!(problems.is_empty(), "{problems:#?}");
        let mut defaults = serde_json::to_value(Config::default()).unwrap_or_else(|e| panic!("{e}"));
        defaults["hsm"]["uri"] = config.hsm.uri.clone().into();
        let shipped = serde_json::to_value(&config).unwrap_or_else(|e| panic!("{e}"));
        for (section, value) in defaults.as_object().into_iter().flatten() {
            assert_eq!(&shipped[section], value, "[{section}] of the example differs from the defaults");
        }
    }

    #[test]
    fn defaults_plus_uri_validate() {
        let mut c = Config::default();
        c.hsm.uri = "pkcs11:token=t?module-path=/x.so".into();
        assert!(c.validate().is_empty(), "{:?}", c.validate());
    }
}
