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
use crate::http::config::{HttpSettings, ManagementConfig, MetricsConfig};
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

    /// Loads `file` alone over the defaults, without the environment (`config check`).
    pub fn check_file(file: &Path) -> Result<Config, Vec<ConfigProblem>> {
        Self::require_file(file)?;
        let figment = Figment::from(Toml::file_exact(file));
        Self::from_figment(figment)
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
                    problems.push(ConfigProblem::new(key, "unknown section"));
                }
            }
            Err(e) => problems.extend(figment_problems(e, "")),
        }
        if problems.is_empty() {
            problems.extend(config.validate());
        }
        if problems.is_empty() { Ok(config) } else { Err(problems) }
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
                Some(_) => {}
            }
        }
        p.extend(self.limits.problems());
        p.extend(self.trust.problems());
        p.extend(self.push.problems());
        p.extend(self.keys.problems());
        p.extend(self.management.problems());
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
            session_kept: self.auth.otp_ttl + self.auth.browser_grace,
            saml_assertion: self.saml.assertion_lifetime,
            saml_clock_skew: self.saml.clock_skew,
        }
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
