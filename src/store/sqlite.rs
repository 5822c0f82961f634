//! SQLite durable store: the single-node default, a file in the state directory.

use std::str::FromStr;

use async_trait::async_trait;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{QueryBuilder, Row, Sqlite};

use super::{DurableStore, Enrollment, EnrollmentStatus, StoreError};
use crate::config::DatabaseConfig;
use crate::keys::{CatalogEntry, KeyPurpose, KeyState};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// The SQLite store.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
}

impl SqliteStore {
    /// Opens (creating when missing) the database at `url` (`sqlite://PATH`).
    pub async fn open(url: &str, config: &DatabaseConfig) -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::from_str(url)
            .map_err(|e| StoreError::Unavailable(format!("bad sqlite url: {e}")))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(config.acquire_timeout);
        let pool = SqlitePoolOptions::new()
            .max_connections(config.max_connections)
            .acquire_timeout(config.acquire_timeout)
            .connect_with(options)
            .await
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        Ok(Self { pool })
    }
}

fn key_from_row(row: &sqlx::sqlite::SqliteRow) -> Result<CatalogEntry, StoreError> {
    let purpose: String = row.try_get("purpose")?;
    let state: String = row.try_get("state")?;
    Ok(CatalogEntry {
        label: row.try_get("label")?,
        purpose: KeyPurpose::from_str(&purpose).map_err(StoreError::Corrupt)?,
        kid: row.try_get("kid")?,
        state: KeyState::from_str(&state).map_err(StoreError::Corrupt)?,
        created_at: row.try_get("created_at")?,
        activated_at: row.try_get("activated_at")?,
        retiring_at: row.try_get("retiring_at")?,
        retired_at: row.try_get("retired_at")?,
    })
}

fn enrollment_from_row(row: &sqlx::sqlite::SqliteRow) -> Result<Enrollment, StoreError> {
    let status: String = row.try_get("status")?;
    let names: String = row.try_get("claim_names")?;
    Ok(Enrollment {
        id: row.try_get("id")?,
        token_id: row.try_get("token_id")?,
        device_id: row.try_get("device_id")?,
        device_jwk: row.try_get("device_jwk")?,
        device_name: row.try_get("device_name")?,
        status: EnrollmentStatus::parse(&status).ok_or_else(|| StoreError::Corrupt(format!("status {status:?}")))?,
        status_reason: row.try_get("status_reason")?,
        push_provider: row.try_get("push_provider")?,
        push_token_sealed: row.try_get("push_token_sealed")?,
        claims_sealed: row.try_get("claims_sealed")?,
        claim_names: names.split(' ').filter(|s| !s.is_empty()).map(str::to_string).collect(),
        ca_sha256: row.try_get("ca_sha256")?,
        signer_serial: row.try_get("signer_serial")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.is_unique_violation())
}

#[async_trait]
impl DurableStore for SqliteStore {
    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        MIGRATOR.run(&self.pool).await.map_err(|e| StoreError::Migration(e.to_string()))
    }

    async fn list_keys(&self) -> Result<Vec<CatalogEntry>, StoreError> {
        let rows = sqlx::query("SELECT * FROM keys ORDER BY purpose, created_at, label").fetch_all(&self.pool).await?;
        rows.iter().map(key_from_row).collect()
    }

    async fn insert_key(&self, e: &CatalogEntry) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "INSERT INTO keys (label, purpose, kid, state, created_at, activated_at, retiring_at, retired_at)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (label) DO NOTHING",
        )
        .bind(&e.label)
        .bind(e.purpose.as_str())
        .bind(&e.kid)
        .bind(e.state.as_str())
        .bind(e.created_at)
        .bind(e.activated_at)
        .bind(e.retiring_at)
        .bind(e.retired_at)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn set_key_state(&self, label: &str, state: KeyState, at: i64) -> Result<(), StoreError> {
        let column = match state {
            KeyState::Next => "created_at",
            KeyState::Active => "activated_at",
            KeyState::Retiring => "retiring_at",
            KeyState::Retired => "retired_at",
        };
        sqlx::query(&format!("UPDATE keys SET state = ?, {column} = ? WHERE label = ?"))
            .bind(state.as_str())
            .bind(at)
            .bind(label)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn insert_enrollment(&self, e: &Enrollment) -> Result<(), StoreError> {
        let result = sqlx::query(
            "INSERT INTO enrollments (id, token_id, device_id, device_jwk, device_name, status, status_reason,
                push_provider, push_token_sealed, claims_sealed, claim_names, ca_sha256, signer_serial,
                created_at, updated_at)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&e.id)
        .bind(&e.token_id)
        .bind(&e.device_id)
        .bind(&e.device_jwk)
        .bind(&e.device_name)
        .bind(e.status.as_str())
        .bind(&e.status_reason)
        .bind(&e.push_provider)
        .bind(&e.push_token_sealed)
        .bind(&e.claims_sealed)
        .bind(e.claim_names.join(" "))
        .bind(&e.ca_sha256)
        .bind(&e.signer_serial)
        .bind(e.created_at)
        .bind(e.updated_at)
        .execute(&self.pool)
        .await;
        match result {
            Ok(_) => Ok(()),
            // Both the one-active-device index and a reused device key land here.
            Err(err) if is_unique_violation(&err) => Err(StoreError::AlreadyEnrolled),
            Err(err) => Err(err.into()),
        }
    }

    async fn enrollment_by_device(&self, device_id: &str) -> Result<Option<Enrollment>, StoreError> {
        let row = sqlx::query("SELECT * FROM enrollments WHERE device_id = ?")
            .bind(device_id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(enrollment_from_row).transpose()
    }

    async fn active_enrollment(&self, token_id: &str) -> Result<Option<Enrollment>, StoreError> {
        let row = sqlx::query("SELECT * FROM enrollments WHERE token_id = ? AND status = 'active'")
            .bind(token_id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(enrollment_from_row).transpose()
    }

    async fn suspend_token_ids(&self, token_ids: &[String], reason: &str, at: i64) -> Result<Vec<String>, StoreError> {
        let mut changed = Vec::new();
        for chunk in token_ids.chunks(500) {
            let mut q: QueryBuilder<Sqlite> =
                QueryBuilder::new("UPDATE enrollments SET status = 'suspended', status_reason = ");
            q.push_bind(reason).push(", updated_at = ").push_bind(at);
            q.push(" WHERE status = 'active' AND token_id IN (");
            let mut sep = q.separated(", ");
            for id in chunk {
                sep.push_bind(id);
            }
            q.push(") RETURNING token_id");
            for row in q.build().fetch_all(&self.pool).await? {
                changed.push(row.try_get("token_id")?);
            }
        }
        Ok(changed)
    }

    async fn suspend_signer(
        &self,
        ca_sha256: &str,
        serial: &str,
        reason: &str,
        at: i64,
    ) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query(
            "UPDATE enrollments SET status = 'suspended', status_reason = ?, updated_at = ?
             WHERE status = 'active' AND ca_sha256 = ? AND signer_serial = ? RETURNING token_id",
        )
        .bind(reason)
        .bind(at)
        .bind(ca_sha256)
        .bind(serial)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| r.try_get("token_id").map_err(StoreError::from)).collect()
    }

    async fn count_enrollments(&self) -> Result<i64, StoreError> {
        Ok(sqlx::query("SELECT COUNT(*) AS n FROM enrollments").fetch_one(&self.pool).await?.try_get("n")?)
    }
}
