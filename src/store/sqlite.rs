//! SQLite, the single-node default: a file in the state directory. Its SQL is the
//! shared one (`sql.rs`); a write transaction takes the write lock at once.

use std::str::FromStr;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Pool, Sqlite};

use super::StoreError;
use super::config::DatabaseConfig;
use super::sql::{Dialect, SqlStore};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// The SQLite store.
pub type SqliteStore = SqlStore<Sqlite>;

impl Dialect for Sqlite {
    // IMMEDIATE takes the write lock first, so two appenders cannot read the same
    // audit head.
    const BEGIN_WRITE: Option<&'static str> = Some("BEGIN IMMEDIATE");
    const AUDIT_LOCK: Option<&'static str> = None;

    const UNBOUNDED_TX: Option<&'static str> = None;
    const BACKUP_INTO: Option<&'static str> = Some("VACUUM INTO $1");
    const PARTITIONED_AUDIT: bool = false;
    const AUDIT_OWNER_QUERY: Option<&'static str> = None;

    fn rows_affected(result: &sqlx::sqlite::SqliteQueryResult) -> u64 {
        result.rows_affected()
    }

    async fn migrate(pool: &Pool<Self>) -> Result<(), sqlx::migrate::MigrateError> {
        MIGRATOR.run(pool).await
    }
}

impl SqlStore<Sqlite> {
    /// Opens (creating when missing) the database at `url` (`sqlite://PATH`).
    pub async fn open(url: &str, config: &DatabaseConfig) -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::from_str(url)
            .map_err(|e| StoreError::Unavailable(format!("bad sqlite url: {e}")))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(config.acquire_timeout);
        let pool: SqlitePool = SqlitePoolOptions::new()
            .max_connections(config.max_connections)
            .acquire_timeout(config.acquire_timeout)
            .connect_with(options)
            .await
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        Ok(Self::new(pool, None))
    }
}
