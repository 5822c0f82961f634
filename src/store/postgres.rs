//! PostgreSQL, shared by every node of a cluster (docs/cluster.md). Its SQL is the
//! shared one (`sql.rs`); audit appends take a transaction-scoped advisory lock, and
//! every call is bounded in time.

use std::str::FromStr;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgSslMode};
use sqlx::{Pool, Postgres};

use super::StoreError;
use super::config::{DatabaseConfig, DatabaseTls};
use super::sql::{Dialect, SqlStore};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// The PostgreSQL store.
pub type PostgresStore = SqlStore<Postgres>;

impl Dialect for Postgres {
    const BEGIN_WRITE: Option<&'static str> = None;
    // Held until commit, so that concurrent appenders on any node chain in order; the
    // key is "symbolon" in ASCII, truncated to 63 bits.
    const AUDIT_LOCK: Option<&'static str> = Some("SELECT pg_advisory_xact_lock(32503133031591023)");

    const UNBOUNDED_TX: Option<&'static str> = Some("SET LOCAL statement_timeout = 0");
    const BACKUP_INTO: Option<&'static str> = None;
    const PARTITIONED_AUDIT: bool = true;
    // Creating, detaching and dropping partitions needs ownership of `audit` (or
    // membership in the role that owns it); the runtime role has neither.
    const AUDIT_OWNER_QUERY: Option<&'static str> = Some(
        "SELECT CAST(CASE WHEN pg_has_role(current_user, c.relowner, 'USAGE') THEN 1 ELSE 0 END AS BIGINT) AS n
         FROM pg_class c WHERE c.oid = CAST('audit' AS regclass)",
    );

    fn rows_affected(result: &sqlx::postgres::PgQueryResult) -> u64 {
        result.rows_affected()
    }

    async fn migrate(pool: &Pool<Self>) -> Result<(), sqlx::migrate::MigrateError> {
        MIGRATOR.run(pool).await
    }
}

impl SqlStore<Postgres> {
    /// A store for `url` (`postgres://USER@HOST:PORT/DB`). Connections are opened on
    /// first use and re-opened after the server comes back.
    pub fn open(url: &str, config: &DatabaseConfig) -> Result<Self, StoreError> {
        let mut options = connect_options(url, config)?;
        if let Some(file) = &config.password_file {
            let password = crate::files::read_bounded_string(file, crate::files::MAX_SECRET_BYTES)
                .map_err(|e| StoreError::Unavailable(e.to_string()))?;
            options = options.password(password.trim_end_matches(['\r', '\n']));
        }
        let pool = PgPoolOptions::new()
            .max_connections(config.max_connections)
            .acquire_timeout(config.acquire_timeout)
            .test_before_acquire(true)
            .connect_lazy_with(options);
        Ok(Self::new(pool, Some(config.acquire_timeout + config.statement_timeout)))
    }
}

/// The connection options for `url` under `[database]` (password aside): the TLS mode
/// (see [`ssl_mode`]), the CA, the statement timeout.
pub fn connect_options(url: &str, config: &DatabaseConfig) -> Result<PgConnectOptions, StoreError> {
    let parsed =
        PgConnectOptions::from_str(url).map_err(|e| StoreError::Unavailable(format!("bad postgres url: {e}")))?;
    let mode = ssl_mode(config.tls, url, &parsed);
    let mut options = parsed
        .application_name("symbolon")
        .ssl_mode(mode)
        .options([("statement_timeout", config.statement_timeout.as_millis().to_string())]);
    if let Some(ca) = &config.ca_file {
        let pem = crate::files::read_bounded(ca, crate::files::MAX_PEM_BYTES)
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        options = options.ssl_root_cert_from_pem(pem);
    }
    Ok(options)
}

/// `database.tls` as a libpq `sslmode`. `auto` is `verify-full` (certificate chain and
/// host name) unless the server is on this machine (a loopback address, `localhost` or
/// a Unix socket), where it stays `prefer` as libpq's default; an `sslmode` given in the
/// URL (or `PGSSLMODE`) is kept.
fn ssl_mode(tls: DatabaseTls, url: &str, parsed: &PgConnectOptions) -> PgSslMode {
    match tls {
        DatabaseTls::Disable => PgSslMode::Disable,
        DatabaseTls::Prefer => PgSslMode::Prefer,
        DatabaseTls::Require => PgSslMode::Require,
        DatabaseTls::VerifyFull => PgSslMode::VerifyFull,
        DatabaseTls::Auto => {
            let in_url = url::Url::parse(url)
                .map(|u| u.query_pairs().any(|(k, _)| k == "sslmode" || k == "ssl-mode"))
                .unwrap_or(false);
            if in_url || std::env::var_os("PGSSLMODE").is_some() {
                parsed.get_ssl_mode()
            } else if is_local(parsed) {
                PgSslMode::Prefer
            } else {
                PgSslMode::VerifyFull
            }
        }
    }
}

/// The server is on this machine: a Unix socket, `localhost` or a loopback address.
fn is_local(options: &PgConnectOptions) -> bool {
    let host = options.get_host().trim_start_matches('[').trim_end_matches(']');
    options.get_socket().is_some()
        || host.starts_with('/')
        || host.eq_ignore_ascii_case("localhost")
        || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(url: &str, tls: DatabaseTls) -> String {
        let config = DatabaseConfig { tls, ..DatabaseConfig::default() };
        format!("{:?}", connect_options(url, &config).unwrap().get_ssl_mode())
    }

    #[test]
    fn tls_defaults_to_verify_full_for_hosts_that_are_not_loopback() {
        assert_eq!(DatabaseConfig::default().tls, DatabaseTls::Auto);
        for url in [
            "postgres://symbolon@db.internal:5432/symbolon",
            "postgres://symbolon@10.0.0.5/symbolon",
            "postgres://symbolon@[2001:db8::1]:5432/symbolon",
            "postgresql://symbolon@localhost.example.com/symbolon",
            "postgres://symbolon@128.0.0.1/symbolon",
        ] {
            assert_eq!(mode(url, DatabaseTls::Auto), "VerifyFull", "{url}");
        }
        // Loopback and Unix sockets keep today's default (libpq's prefer).
        for url in [
            "postgres://postgres@127.0.0.1:5432/x",
            "postgres://postgres@127.8.9.10/x",
            "postgres://postgres@localhost/x",
            "postgres://postgres@[::1]:5432/x",
            "postgres://postgres@%2Fvar%2Frun%2Fpostgresql/x",
            "postgres:///x?host=/var/run/postgresql",
        ] {
            assert_eq!(mode(url, DatabaseTls::Auto), "Prefer", "{url}");
        }
    }

    #[test]
    fn an_explicit_tls_setting_or_url_sslmode_wins() {
        let remote = "postgres://symbolon@db.internal/symbolon";
        assert_eq!(mode(remote, DatabaseTls::Prefer), "Prefer");
        assert_eq!(mode(remote, DatabaseTls::Require), "Require");
        assert_eq!(mode(remote, DatabaseTls::Disable), "Disable");
        assert_eq!(mode("postgres://p@127.0.0.1/x", DatabaseTls::VerifyFull), "VerifyFull");
        assert_eq!(mode("postgres://symbolon@db.internal/symbolon?sslmode=require", DatabaseTls::Auto), "Require");
        // The configuration's explicit value beats the URL's, as before.
        assert_eq!(
            mode("postgres://symbolon@db.internal/symbolon?sslmode=disable", DatabaseTls::VerifyFull),
            "VerifyFull"
        );
    }

    #[test]
    fn the_tls_setting_parses_from_toml_names() {
        #[derive(serde::Deserialize)]
        struct T {
            tls: DatabaseTls,
        }
        let parse = |toml: &str| {
            use figment::providers::Format;
            figment::Figment::from(figment::providers::Toml::string(toml)).extract::<T>().map_err(Box::new)
        };
        for (name, want) in [
            ("auto", DatabaseTls::Auto),
            ("disable", DatabaseTls::Disable),
            ("prefer", DatabaseTls::Prefer),
            ("require", DatabaseTls::Require),
            ("verify-full", DatabaseTls::VerifyFull),
        ] {
            assert_eq!(parse(&format!("tls = \"{name}\"")).unwrap().tls, want);
        }
        assert!(parse("tls = \"verify-ca\"").is_err());
    }

    #[test]
    fn the_audit_lock_key_is_symbolon_in_ascii() {
        let key: i64 = 0x73_79_6d_62_6f_6c_6f;
        assert_eq!(<Postgres as Dialect>::AUDIT_LOCK, Some(format!("SELECT pg_advisory_xact_lock({key})").as_str()));
    }
}
