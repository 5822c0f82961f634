//! SQLite durable store: the single-node default, a file in the state directory.

use std::str::FromStr;

use sqlx::SqliteConnection;

use async_trait::async_trait;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{QueryBuilder, Row, Sqlite};

use super::config::DatabaseConfig;
use super::rows::{audit_from_row, checkpoint_from_row, enrollment_from_row, is_unique_violation, key_from_row};
use super::{
    AuditCheckpoint, AuditEvent, AuditRecord, CatalogEntry, DurableStore, Enrollment, EnrollmentStatus, KeyState,
    KeyTransition, SEALED_COLUMNS, SealedColumn, SealedValue, StoreError, audit, envelope_like, key_state_column,
};

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
        let mut conn = self.pool.acquire().await?;
        insert_key(&mut conn, e).await
    }

    async fn set_key_state(&self, label: &str, state: KeyState, at: i64) -> Result<(), StoreError> {
        let column = key_state_column(state);
        sqlx::query(&format!("UPDATE keys SET state = ?, {column} = ? WHERE label = ?"))
            .bind(state.as_str())
            .bind(at)
            .bind(label)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn insert_key_audited(
        &self,
        entry: &CatalogEntry,
        event: &AuditEvent,
    ) -> Result<Option<AuditRecord>, StoreError> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        if !insert_key(&mut tx, entry).await? {
            return Ok(None);
        }
        let record = append_audit(&mut tx, event).await?;
        tx.commit().await?;
        Ok(Some(record))
    }

    async fn transition_keys(
        &self,
        changes: &[KeyTransition],
        events: &[AuditEvent],
    ) -> Result<Vec<AuditRecord>, StoreError> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        for c in changes {
            let column = key_state_column(c.to);
            let done = sqlx::query(&format!("UPDATE keys SET state = ?, {column} = ? WHERE label = ? AND state = ?"))
                .bind(c.to.as_str())
                .bind(c.at)
                .bind(&c.label)
                .bind(c.from.as_str())
                .execute(&mut *tx)
                .await;
            match done {
                Ok(d) if d.rows_affected() == 1 => {}
                Ok(_) => return Err(StoreError::KeyStateChanged(c.label.clone())),
                Err(e) if is_unique_violation(&e) => return Err(StoreError::KeyStateChanged(c.label.clone())),
                Err(e) => return Err(e.into()),
            }
        }
        let mut records = Vec::with_capacity(events.len());
        for event in events {
            records.push(append_audit(&mut tx, event).await?);
        }
        tx.commit().await?;
        Ok(records)
    }

    async fn count_sealed(&self, label: &str) -> Result<i64, StoreError> {
        let pattern = envelope_like(label);
        let mut total = 0;
        for c in SEALED_COLUMNS {
            let sql = format!("SELECT COUNT(*) AS n FROM {} WHERE {} LIKE ? ESCAPE '\\'", c.table, c.column);
            let n: i64 = sqlx::query(&sql).bind(&pattern).fetch_one(&self.pool).await?.try_get("n")?;
            total += n;
        }
        Ok(total)
    }

    async fn sealed_page(
        &self,
        column: &SealedColumn,
        key_label: &str,
        after_id: &str,
        limit: i64,
    ) -> Result<Vec<SealedValue>, StoreError> {
        let (t, id, col) = (column.table, column.id, column.column);
        let sql = format!(
            "SELECT {id} AS id, {col} AS sealed FROM {t}
             WHERE {col} IS NOT NULL AND {col} NOT LIKE ? ESCAPE '\\' AND {id} > ? ORDER BY {id} LIMIT ?"
        );
        let rows =
            sqlx::query(&sql).bind(envelope_like(key_label)).bind(after_id).bind(limit).fetch_all(&self.pool).await?;
        rows.iter()
            .map(|r| Ok(SealedValue { column: *column, id: r.try_get("id")?, sealed: r.try_get("sealed")? }))
            .collect()
    }

    async fn replace_sealed(&self, value: &SealedValue, new_sealed: &str) -> Result<bool, StoreError> {
        let (t, id, col) = (value.column.table, value.column.id, value.column.column);
        let done = sqlx::query(&format!("UPDATE {t} SET {col} = ? WHERE {id} = ? AND {col} = ?"))
            .bind(new_sealed)
            .bind(&value.id)
            .bind(&value.sealed)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn try_lease(&self, name: &str, holder: &str, now: i64, until: i64) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "INSERT INTO leases (name, holder, expires_at) VALUES (?, ?, ?)
             ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at
             WHERE leases.holder = excluded.holder OR leases.expires_at <= ?",
        )
        .bind(name)
        .bind(holder)
        .bind(until)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn insert_enrollment(&self, e: &Enrollment) -> Result<(), StoreError> {
        let mut conn = self.pool.acquire().await?;
        insert_enrollment(&mut conn, e).await
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

    async fn suspend_token_ids(
        &self,
        territory: &str,
        ca_sha256: &str,
        token_ids: &[String],
        reason: &str,
        at: i64,
    ) -> Result<Vec<String>, StoreError> {
        let mut changed = Vec::new();
        for chunk in token_ids.chunks(500) {
            let mut q: QueryBuilder<Sqlite> =
                QueryBuilder::new("UPDATE enrollments SET status = 'suspended', status_reason = ");
            q.push_bind(reason).push(", updated_at = ").push_bind(at);
            q.push(" WHERE status = 'active' AND territory = ").push_bind(territory);
            q.push(" AND ca_sha256 = ").push_bind(ca_sha256);
            q.push(" AND token_id IN (");
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

    async fn enrollments_page(&self, after_token_id: &str, limit: i64) -> Result<Vec<Enrollment>, StoreError> {
        let rows = sqlx::query(
            "SELECT * FROM enrollments WHERE token_id IN
                (SELECT DISTINCT token_id FROM enrollments WHERE token_id > ? ORDER BY token_id LIMIT ?)
             ORDER BY token_id, created_at, device_id",
        )
        .bind(after_token_id)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(enrollment_from_row).collect()
    }

    async fn enrollments_of(&self, token_id: &str) -> Result<Vec<Enrollment>, StoreError> {
        let rows = sqlx::query("SELECT * FROM enrollments WHERE token_id = ? ORDER BY created_at, device_id")
            .bind(token_id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(enrollment_from_row).collect()
    }

    async fn delete_enrollments(&self, token_id: &str) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM enrollments WHERE token_id = ?").bind(token_id).execute(&self.pool).await?;
        Ok(done.rows_affected())
    }

    async fn set_enrollment_status(
        &self,
        device_id: &str,
        from: EnrollmentStatus,
        to: EnrollmentStatus,
        reason: Option<&str>,
        at: i64,
    ) -> Result<bool, StoreError> {
        let result = sqlx::query(
            "UPDATE enrollments SET status = ?, status_reason = ?, updated_at = ? WHERE device_id = ? AND status = ?",
        )
        .bind(to.as_str())
        .bind(reason)
        .bind(at)
        .bind(device_id)
        .bind(from.as_str())
        .execute(&self.pool)
        .await;
        match result {
            Ok(done) => Ok(done.rows_affected() == 1),
            Err(err) if is_unique_violation(&err) => Err(StoreError::AlreadyEnrolled),
            Err(err) => Err(err.into()),
        }
    }

    async fn count_enrollments(&self) -> Result<i64, StoreError> {
        Ok(sqlx::query("SELECT COUNT(*) AS n FROM enrollments").fetch_one(&self.pool).await?.try_get("n")?)
    }

    async fn insert_enrollment_audited(&self, e: &Enrollment, event: &AuditEvent) -> Result<AuditRecord, StoreError> {
        // IMMEDIATE takes the write lock first, so two appenders cannot read the same head.
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        insert_enrollment(&mut tx, e).await?;
        let record = append_audit(&mut tx, event).await?;
        tx.commit().await?;
        Ok(record)
    }

    async fn append_audit(&self, event: &AuditEvent) -> Result<AuditRecord, StoreError> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let record = append_audit(&mut tx, event).await?;
        tx.commit().await?;
        Ok(record)
    }

    async fn audit_head(&self) -> Result<Option<(i64, String)>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        audit_head(&mut conn).await
    }

    async fn audit_page(&self, after_seq: i64, since: i64, limit: i64) -> Result<Vec<AuditRecord>, StoreError> {
        let rows = sqlx::query("SELECT * FROM audit WHERE seq > ? AND at >= ? ORDER BY seq LIMIT ?")
            .bind(after_seq)
            .bind(since)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(audit_from_row).collect()
    }

    async fn insert_checkpoint(&self, c: &AuditCheckpoint) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "INSERT INTO audit_checkpoints (seq, hash, at, key_label, signature) VALUES (?, ?, ?, ?, ?)
             ON CONFLICT (seq) DO NOTHING",
        )
        .bind(c.seq)
        .bind(&c.hash)
        .bind(c.at)
        .bind(&c.key_label)
        .bind(&c.signature)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn checkpoints(&self) -> Result<Vec<AuditCheckpoint>, StoreError> {
        let rows = sqlx::query("SELECT * FROM audit_checkpoints ORDER BY seq").fetch_all(&self.pool).await?;
        rows.iter().map(checkpoint_from_row).collect()
    }

    async fn last_checkpoint(&self) -> Result<Option<AuditCheckpoint>, StoreError> {
        let row =
            sqlx::query("SELECT * FROM audit_checkpoints ORDER BY seq DESC LIMIT 1").fetch_optional(&self.pool).await?;
        row.as_ref().map(checkpoint_from_row).transpose()
    }
}

/// Inserts a catalog entry; `false` when the label exists. A second active key for a
/// purpose is `KeyStateChanged`.
async fn insert_key(conn: &mut SqliteConnection, e: &CatalogEntry) -> Result<bool, StoreError> {
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
    .execute(&mut *conn)
    .await;
    match done {
        Ok(d) => Ok(d.rows_affected() == 1),
        Err(err) if is_unique_violation(&err) => Err(StoreError::KeyStateChanged(e.label.clone())),
        Err(err) => Err(err.into()),
    }
}

async fn insert_enrollment(conn: &mut SqliteConnection, e: &Enrollment) -> Result<(), StoreError> {
    let result = sqlx::query(
        "INSERT INTO enrollments (id, token_id, device_id, device_jwk, device_name, status, status_reason,
            push_provider, push_token_sealed, claims_sealed, claim_names, territory, ca_sha256, signer_serial,
            created_at, updated_at)
         SELECT ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?
         WHERE NOT EXISTS (SELECT 1 FROM enrollments WHERE token_id = ? AND status = 'suspended')",
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
    .bind(&e.territory)
    .bind(&e.ca_sha256)
    .bind(&e.signer_serial)
    .bind(e.created_at)
    .bind(e.updated_at)
    .bind(&e.token_id)
    .execute(&mut *conn)
    .await;
    match result {
        // A suspended enrollment holds its token id until revoked or deleted.
        Ok(done) if done.rows_affected() == 0 => Err(StoreError::AlreadyEnrolled),
        Ok(_) => Ok(()),
        // Both the one-active-device index and a reused device key land here.
        Err(err) if is_unique_violation(&err) => Err(StoreError::AlreadyEnrolled),
        Err(err) => Err(err.into()),
    }
}

async fn audit_head(conn: &mut SqliteConnection) -> Result<Option<(i64, String)>, StoreError> {
    let row = sqlx::query("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetch_optional(&mut *conn).await?;
    row.map(|r| Ok((r.try_get("seq")?, r.try_get("hash")?))).transpose()
}

/// Appends inside the caller's write transaction.
async fn append_audit(conn: &mut SqliteConnection, event: &AuditEvent) -> Result<AuditRecord, StoreError> {
    let head = audit_head(conn).await?;
    let r = audit::next_record(head, event).map_err(StoreError::Corrupt)?;
    sqlx::query(
        "INSERT INTO audit (seq, at, kind, actor, subject, detail, prev_hash, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(r.seq)
    .bind(r.at)
    .bind(&r.kind)
    .bind(&r.actor)
    .bind(&r.subject)
    .bind(r.detail_text())
    .bind(&r.prev_hash)
    .bind(&r.hash)
    .execute(&mut *conn)
    .await?;
    Ok(r)
}
