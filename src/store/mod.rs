//! Persistence, split by concern (docs/architecture.md): enrollments, the key catalog,
//! the audit trail and the management queries in the durable store (SQLite for one
//! node, PostgreSQL for a cluster); sessions, nonces and counters in the session store
//! (memory or Redis). Each concern is a small trait; [`DurableStore`] is all of the
//! durable ones, kept by one implementation whose SQL serves both databases
//! (`sql.rs`); `sqlite.rs` and `postgres.rs` hold only what differs.

pub mod audit;
pub mod catalog;
pub mod config;
pub mod enrollments;
mod events;
pub mod management;
mod memory;
mod postgres;
mod redis;
mod rows;
pub mod sessions;
mod sql;
mod sqlite;

pub use audit::{AuditArchive, AuditCheckpoint, AuditEvent, AuditRecord, AuditStore};
pub use catalog::{
    CatalogEntry, KeyCatalogStore, KeyPurpose, KeyState, KeyTransition, SEALED_COLUMNS, SealedColumn, SealedValue,
};
pub use config::{DatabaseConfig, DatabaseTls, SessionStoreConfig};
pub use enrollments::{Enrollment, EnrollmentStatus, EnrollmentStore};
pub use events::{DEFAULT_MAX_CHANNELS, ENROLLMENT_CHANGES_QUEUE, EnrollmentChange, EventHub, SessionEvents};
pub use management::ManagementQueries;
pub use memory::MemorySessionStore;
pub use postgres::PostgresStore;
pub use redis::RedisSessionStore;
pub use sessions::{
    AuthSession, Member, SESSION_INDEX_MAX, SessionEnd, SessionStatus, SessionStore, SessionStoreError,
    session_position, session_position_since,
};
pub use sql::SqlStore;
pub use sqlite::SqliteStore;

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;

use crate::error::{ApiError, ErrorCode};

/// Durable store failures.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the token id already has an active device")]
    AlreadyEnrolled,
    #[error("database unavailable: {0}")]
    Unavailable(String),
    #[error("database error: {0}")]
    Database(String),
    #[error("migration failed: {0}")]
    Migration(String),
    #[error("stored row is malformed: {0}")]
    Corrupt(String),
    /// A key was not in the state a transition expected (another node or operator
    /// changed it first), or a second key would have become active for its purpose.
    #[error("key {0} changed state meanwhile; re-read the catalog and retry")]
    KeyStateChanged(String),
    /// The operation is not offered on this database (e.g. `backup` on PostgreSQL).
    #[error("{0}")]
    Unsupported(String),
    /// The database state does not allow the operation; the message says why
    /// (e.g. retention refusing a partition that holds records no archive covers).
    #[error("{0}")]
    Refused(String),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        match e {
            sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::WorkerCrashed => StoreError::Unavailable(e.to_string()),
            // PostgreSQL: connection exceptions (08), insufficient resources (53),
            // operator intervention such as a shutdown or a statement timeout (57).
            sqlx::Error::Database(ref db)
                if db.code().is_some_and(|c| c.starts_with("08") || c.starts_with("53") || c.starts_with("57")) =>
            {
                StoreError::Unavailable(e.to_string())
            }
            // SQLite: the database stayed busy or locked by another writer past the busy
            // timeout (primary codes 5 and 6 under their extended codes): a load
            // condition like a pool timeout, not a fault.
            sqlx::Error::Database(ref db) if sqlite_busy(db.as_ref()) => StoreError::Unavailable(e.to_string()),
            other => StoreError::Database(other.to_string()),
        }
    }
}

/// `SQLITE_BUSY` or `SQLITE_LOCKED`, whatever the extended code (sqlx reports the
/// extended result code; its low byte is the primary one).
fn sqlite_busy(db: &dyn sqlx::error::DatabaseError) -> bool {
    db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some()
        && db.code().and_then(|c| c.parse::<i32>().ok()).is_some_and(|c| matches!(c & 0xff, 5 | 6))
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::AlreadyEnrolled => ApiError::new(
                ErrorCode::AlreadyEnrolled,
                "this token id already has an active device; an operator must revoke it first",
            ),
            StoreError::Unavailable(_) => {
                tracing::error!(error = %e, "durable store unavailable");
                ApiError::new(ErrorCode::Unavailable, "the database is not available")
            }
            other => {
                tracing::error!(error = %other, "durable store error");
                ApiError::internal()
            }
        }
    }
}

/// The durable store: every durable concern, on one database.
#[async_trait]
pub trait DurableStore: EnrollmentStore + KeyCatalogStore + AuditStore + ManagementQueries + std::fmt::Debug {
    /// A round trip to the database.
    async fn ping(&self) -> Result<(), StoreError>;
    /// Applies pending migrations (idempotent).
    async fn migrate(&self) -> Result<(), StoreError>;
    /// Writes an online, consistent copy of the database to `path` (a new file);
    /// `Unsupported` where the database has its own tools (PostgreSQL: `pg_dump`).
    async fn backup_to(&self, path: &Path) -> Result<(), StoreError>;
}

/// Opens the durable store named by the configuration (the default SQLite file lies
/// in `state_dir`).
pub async fn open_durable(config: &DatabaseConfig, state_dir: &Path) -> Result<Arc<dyn DurableStore>, StoreError> {
    let url = config.url_in(state_dir);
    if url.starts_with("sqlite:") {
        Ok(Arc::new(SqliteStore::open(&url, config).await?))
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Arc::new(PostgresStore::open(&url, config)?))
    } else {
        Err(StoreError::Unavailable(format!("unsupported database url scheme in {url:?}")))
    }
}

/// Opens the session store named by the configuration. A Redis store connects lazily
/// (and reconnects by itself), so a node starts while Redis is down and becomes
/// ready when it answers; it must be called inside the Tokio runtime.
/// `max_channels` bounds the session event channels this process holds.
pub fn open_session_store(
    config: &SessionStoreConfig,
    max_channels: usize,
) -> Result<Arc<dyn SessionStore>, SessionStoreError> {
    match config.url.as_str() {
        "memory://" => Ok(Arc::new(MemorySessionStore::with_max_channels(max_channels))),
        url if url.starts_with("redis://") || url.starts_with("rediss://") => {
            Ok(Arc::new(RedisSessionStore::open_with_max_channels(config, max_channels)?))
        }
        other => Err(SessionStoreError::Unavailable(format!("unsupported session store url {other:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use sqlx::sqlite::SqliteConnectOptions;
    use sqlx::{Connection, SqliteConnection};

    use super::StoreError;

    #[tokio::test]
    async fn a_busy_sqlite_database_is_unavailable_not_a_fault() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("db.sqlite").display());
        let options = SqliteConnectOptions::from_str(&url).unwrap().create_if_missing(true);
        let mut writer = SqliteConnection::connect_with(&options).await.unwrap();
        sqlx::query("CREATE TABLE t (x INTEGER)").execute(&mut writer).await.unwrap();
        sqlx::query("BEGIN IMMEDIATE").execute(&mut writer).await.unwrap();

        let impatient = options.busy_timeout(std::time::Duration::ZERO);
        let mut other = SqliteConnection::connect_with(&impatient).await.unwrap();
        let err = sqlx::query("BEGIN IMMEDIATE").execute(&mut other).await.unwrap_err();
        assert!(matches!(StoreError::from(err), StoreError::Unavailable(_)));

        // Other database errors stay faults.
        let err = sqlx::query("SELECT nope FROM t").execute(&mut writer).await.unwrap_err();
        assert!(matches!(StoreError::from(err), StoreError::Database(_)));
    }
}
