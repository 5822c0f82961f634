//! `[database]` and `[session_store]`: which engines hold the durable and the
//! short-lived state, and how to reach them (docs/cluster.md).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::ConfigProblem;

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
    /// PostgreSQL TLS: `auto` (the default: `verify-full`, unless the host is loopback
    /// or a Unix socket, then `prefer`; an `sslmode` in the URL wins), `disable`,
    /// `prefer`, `require` or `verify-full`.
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
            tls: DatabaseTls::Auto,
            ca_file: None,
            password_file: None,
        }
    }
}

/// TLS towards PostgreSQL (libpq `sslmode` names, and `auto`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DatabaseTls {
    /// `verify-full` for a host that is not loopback; `prefer` (the libpq default) for
    /// loopback addresses, `localhost` and Unix sockets; the URL's `sslmode` if it has one.
    Auto,
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

impl DatabaseConfig {
    /// The database URL: `url`, or by default `symbolon.db` in the state directory.
    pub fn url_in(&self, state_dir: &Path) -> String {
        if self.url.is_empty() {
            format!("sqlite://{}", state_dir.join("symbolon.db").display())
        } else {
            self.url.clone()
        }
    }

    /// What is wrong with `[database]` (the default URL lies in `state_dir`).
    pub fn problems(&self, state_dir: &Path) -> Vec<ConfigProblem> {
        let mut p = Vec::new();
        let url = self.url_in(state_dir);
        let postgres = url.starts_with("postgres://") || url.starts_with("postgresql://");
        if !url.starts_with("sqlite:") && !postgres {
            p.push(ConfigProblem::new("database.url", "unsupported scheme (expected sqlite://PATH or postgres://...)"));
        }
        if self.max_connections == 0 {
            p.push(ConfigProblem::new("database.max_connections", "must be at least 1"));
        }
        if self.acquire_timeout.is_zero() || self.statement_timeout.is_zero() {
            p.push(ConfigProblem::new("database.acquire_timeout", "acquire_timeout and statement_timeout must be > 0"));
        }
        if url.starts_with("sqlite:") && (self.ca_file.is_some() || self.password_file.is_some()) {
            p.push(ConfigProblem::new("database.ca_file", "ca_file and password_file apply to postgres:// only"));
        }
        if self.ca_file.is_some() && self.tls == DatabaseTls::Disable {
            p.push(ConfigProblem::new("database.tls", "ca_file is set but tls = \"disable\""));
        }
        p
    }
}

impl SessionStoreConfig {
    /// What is wrong with `[session_store]`.
    pub fn problems(&self) -> Vec<ConfigProblem> {
        let mut p = Vec::new();
        let redis = match url::Url::parse(&self.url) {
            Ok(u) if matches!(u.scheme(), "redis" | "rediss") && u.host_str().is_some_and(|h| !h.is_empty()) => true,
            _ if self.url == "memory://" => false,
            _ => {
                p.push(ConfigProblem::new(
                    "session_store.url",
                    "unsupported (expected memory://, redis://HOST:PORT or rediss://HOST:PORT)",
                ));
                false
            }
        };
        if redis && self.timeout.is_zero() {
            p.push(ConfigProblem::new("session_store.timeout", "must be greater than zero"));
        }
        if redis && self.key_prefix.is_empty() {
            p.push(ConfigProblem::new("session_store.key_prefix", "must not be empty"));
        }
        p
    }
}
