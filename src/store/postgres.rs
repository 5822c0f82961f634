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

    const BACKUP_INTO: Option<&'static str> = None;

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
        let mut options = PgConnectOptions::from_str(url)
            .map_err(|e| StoreError::Unavailable(format!("bad postgres url: {e}")))?
            .application_name("symbolon")
            .ssl_mode(match config.tls {
                DatabaseTls::Disable => PgSslMode::Disable,
                DatabaseTls::Prefer => PgSslMode::Prefer,
                DatabaseTls::Require => PgSslMode::Require,
                DatabaseTls::VerifyFull => PgSslMode::VerifyFull,
            })
            .options([("statement_timeout", config.statement_timeout.as_millis().to_string())]);
        if let Some(ca) = &config.ca_file {
            options = options.ssl_root_cert(ca);
        }
        if let Some(file) = &config.password_file {
            let password = std::fs::read_to_string(file)
                .map_err(|e| StoreError::Unavailable(format!("cannot read {}: {e}", file.display())))?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_audit_lock_key_is_symbolon_in_ascii() {
        let key: i64 = 0x73_79_6d_62_6f_6c_6f;
        assert_eq!(<Postgres as Dialect>::AUDIT_LOCK, Some(format!("SELECT pg_advisory_xact_lock({key})").as_str()));
    }
}
