//! PostgreSQL durable store: shared by every node of a cluster (architecture.md §Stores).

use std::future::Future;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::Row;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions, PgSslMode};

use super::config::{DatabaseConfig, DatabaseTls};
use super::rows::{audit_from_row, checkpoint_from_row, enrollment_from_row, is_unique_violation, key_from_row};
use super::{
    AuditCheckpoint, AuditEvent, AuditRecord, CatalogEntry, DurableStore, Enrollment, EnrollmentStatus, KeyState,
    KeyTransition, SEALED_COLUMNS, SealedColumn, SealedValue, StoreError, audit, envelope_like, key_state_column,
};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// Key of the transaction-scoped advisory lock that serializes audit appends
/// across nodes ("symbolon" in ASCII, truncated to 63 bits).
const AUDIT_LOCK: i64 = 0x73_79_6d_62_6f_6c_6f;

/// The PostgreSQL store.
#[derive(Debug, Clone)]
pub struct PostgresStore {
    pool: PgPool,
    /// Bound on one call (waiting for a connection included), so no request hangs on
    /// an unreachable database.
    call_timeout: Duration,
}

impl PostgresStore {
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
        Ok(Self { pool, call_timeout: config.acquire_timeout + config.statement_timeout })
    }

    async fn bounded<T>(&self, f: impl Future<Output = Result<T, StoreError>>) -> Result<T, StoreError> {
        tokio::time::timeout(self.call_timeout, f)
            .await
            .unwrap_or_else(|_| Err(StoreError::Unavailable("database call timed out".into())))
    }
}

#[async_trait]
impl DurableStore for PostgresStore {
    async fn ping(&self) -> Result<(), StoreError> {
        self.bounded(async {
            sqlx::query("SELECT 1").execute(&self.pool).await?;
            Ok(())
        })
        .await
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        // Not bounded: a first migration may take a while; sqlx takes an advisory lock
        // so nodes starting together migrate once.
        MIGRATOR.run(&self.pool).await.map_err(|e| StoreError::Migration(e.to_string()))
    }

    async fn list_keys(&self) -> Result<Vec<CatalogEntry>, StoreError> {
        self.bounded(async {
            let rows =
                sqlx::query("SELECT * FROM keys ORDER BY purpose, created_at, label").fetch_all(&self.pool).await?;
            rows.iter().map(key_from_row).collect()
        })
        .await
    }

    async fn insert_key(&self, e: &CatalogEntry) -> Result<bool, StoreError> {
        self.bounded(async {
            let mut conn = self.pool.acquire().await?;
            insert_key(&mut conn, e).await
        })
        .await
    }

    async fn insert_key_audited(
        &self,
        entry: &CatalogEntry,
        event: &AuditEvent,
    ) -> Result<Option<AuditRecord>, StoreError> {
        self.bounded(async {
            let mut tx = self.pool.begin().await?;
            if !insert_key(&mut tx, entry).await? {
                return Ok(None);
            }
            let record = append_audit(&mut tx, event).await?;
            tx.commit().await?;
            Ok(Some(record))
        })
        .await
    }

    async fn transition_keys(
        &self,
        changes: &[KeyTransition],
        events: &[AuditEvent],
    ) -> Result<Vec<AuditRecord>, StoreError> {
        self.bounded(async {
            let mut tx = self.pool.begin().await?;
            for c in changes {
                let column = key_state_column(c.to);
                let done =
                    sqlx::query(&format!("UPDATE keys SET state = $1, {column} = $2 WHERE label = $3 AND state = $4"))
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
        })
        .await
    }

    async fn count_sealed(&self, label: &str) -> Result<i64, StoreError> {
        self.bounded(async {
            let pattern = envelope_like(label);
            let mut total = 0;
            for c in SEALED_COLUMNS {
                let sql = format!("SELECT COUNT(*) AS n FROM {} WHERE {} LIKE $1 ESCAPE '\\'", c.table, c.column);
                let n: i64 = sqlx::query(&sql).bind(&pattern).fetch_one(&self.pool).await?.try_get("n")?;
                total += n;
            }
            Ok(total)
        })
        .await
    }

    async fn sealed_page(
        &self,
        column: &SealedColumn,
        key_label: &str,
        after_id: &str,
        limit: i64,
    ) -> Result<Vec<SealedValue>, StoreError> {
        self.bounded(async {
            let (t, id, col) = (column.table, column.id, column.column);
            let sql = format!(
                "SELECT {id} AS id, {col} AS sealed FROM {t}
                 WHERE {col} IS NOT NULL AND {col} NOT LIKE $1 ESCAPE '\\' AND {id} > $2 ORDER BY {id} LIMIT $3"
            );
            let rows = sqlx::query(&sql)
                .bind(envelope_like(key_label))
                .bind(after_id)
                .bind(limit)
                .fetch_all(&self.pool)
                .await?;
            rows.iter()
                .map(|r| Ok(SealedValue { column: *column, id: r.try_get("id")?, sealed: r.try_get("sealed")? }))
                .collect()
        })
        .await
    }

    async fn replace_sealed(&self, value: &SealedValue, new_sealed: &str) -> Result<bool, StoreError> {
        self.bounded(async {
            let (t, id, col) = (value.column.table, value.column.id, value.column.column);
            let done = sqlx::query(&format!("UPDATE {t} SET {col} = $1 WHERE {id} = $2 AND {col} = $3"))
                .bind(new_sealed)
                .bind(&value.id)
                .bind(&value.sealed)
                .execute(&self.pool)
                .await?;
            Ok(done.rows_affected() == 1)
        })
        .await
    }

    async fn try_lease(&self, name: &str, holder: &str, now: i64, until: i64) -> Result<bool, StoreError> {
        self.bounded(async {
            let done = sqlx::query(
                "INSERT INTO leases (name, holder, expires_at) VALUES ($1, $2, $3)
                 ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at
                 WHERE leases.holder = excluded.holder OR leases.expires_at <= $4",
            )
            .bind(name)
            .bind(holder)
            .bind(until)
            .bind(now)
            .execute(&self.pool)
            .await?;
            Ok(done.rows_affected() == 1)
        })
        .await
    }

    async fn set_key_state(&self, label: &str, state: KeyState, at: i64) -> Result<(), StoreError> {
        let column = key_state_column(state);
        self.bounded(async {
            sqlx::query(&format!("UPDATE keys SET state = $1, {column} = $2 WHERE label = $3"))
                .bind(state.as_str())
                .bind(at)
                .bind(label)
                .execute(&self.pool)
                .await?;
            Ok(())
        })
        .await
    }

    async fn insert_enrollment(&self, e: &Enrollment) -> Result<(), StoreError> {
        self.bounded(async {
            let mut conn = self.pool.acquire().await?;
            insert_enrollment(&mut conn, e).await
        })
        .await
    }

    async fn enrollment_by_device(&self, device_id: &str) -> Result<Option<Enrollment>, StoreError> {
        self.bounded(async {
            let row = sqlx::query("SELECT * FROM enrollments WHERE device_id = $1")
                .bind(device_id)
                .fetch_optional(&self.pool)
                .await?;
            row.as_ref().map(enrollment_from_row).transpose()
        })
        .await
    }

    async fn active_enrollment(&self, token_id: &str) -> Result<Option<Enrollment>, StoreError> {
        self.bounded(async {
            let row = sqlx::query("SELECT * FROM enrollments WHERE token_id = $1 AND status = 'active'")
                .bind(token_id)
                .fetch_optional(&self.pool)
                .await?;
            row.as_ref().map(enrollment_from_row).transpose()
        })
        .await
    }

    async fn suspend_token_ids(
        &self,
        territory: &str,
        ca_sha256: &str,
        token_ids: &[String],
        reason: &str,
        at: i64,
    ) -> Result<Vec<String>, StoreError> {
        self.bounded(async {
            let rows = sqlx::query(
                "UPDATE enrollments SET status = 'suspended', status_reason = $1, updated_at = $2
                 WHERE status = 'active' AND territory = $3 AND ca_sha256 = $4 AND token_id = ANY($5)
                 RETURNING token_id",
            )
            .bind(reason)
            .bind(at)
            .bind(territory)
            .bind(ca_sha256)
            .bind(token_ids)
            .fetch_all(&self.pool)
            .await?;
            rows.iter().map(|r| r.try_get("token_id").map_err(StoreError::from)).collect()
        })
        .await
    }

    async fn suspend_signer(
        &self,
        ca_sha256: &str,
        serial: &str,
        reason: &str,
        at: i64,
    ) -> Result<Vec<String>, StoreError> {
        self.bounded(async {
            let rows = sqlx::query(
                "UPDATE enrollments SET status = 'suspended', status_reason = $1, updated_at = $2
                 WHERE status = 'active' AND ca_sha256 = $3 AND signer_serial = $4 RETURNING token_id",
            )
            .bind(reason)
            .bind(at)
            .bind(ca_sha256)
            .bind(serial)
            .fetch_all(&self.pool)
            .await?;
            rows.iter().map(|r| r.try_get("token_id").map_err(StoreError::from)).collect()
        })
        .await
    }

    async fn enrollments_page(&self, after_token_id: &str, limit: i64) -> Result<Vec<Enrollment>, StoreError> {
        self.bounded(async {
            let rows = sqlx::query(
                "SELECT * FROM enrollments WHERE token_id IN
                    (SELECT DISTINCT token_id FROM enrollments WHERE token_id > $1 ORDER BY token_id LIMIT $2)
                 ORDER BY token_id, created_at, device_id",
            )
            .bind(after_token_id)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
            rows.iter().map(enrollment_from_row).collect()
        })
        .await
    }

    async fn enrollments_of(&self, token_id: &str) -> Result<Vec<Enrollment>, StoreError> {
        self.bounded(async {
            let rows = sqlx::query("SELECT * FROM enrollments WHERE token_id = $1 ORDER BY created_at, device_id")
                .bind(token_id)
                .fetch_all(&self.pool)
                .await?;
            rows.iter().map(enrollment_from_row).collect()
        })
        .await
    }

    async fn delete_enrollments(&self, token_id: &str) -> Result<u64, StoreError> {
        self.bounded(async {
            let done =
                sqlx::query("DELETE FROM enrollments WHERE token_id = $1").bind(token_id).execute(&self.pool).await?;
            Ok(done.rows_affected())
        })
        .await
    }

    async fn set_enrollment_status(
        &self,
        device_id: &str,
        from: EnrollmentStatus,
        to: EnrollmentStatus,
        reason: Option<&str>,
        at: i64,
    ) -> Result<bool, StoreError> {
        self.bounded(async {
            let result = sqlx::query(
                "UPDATE enrollments SET status = $1, status_reason = $2, updated_at = $3
                 WHERE device_id = $4 AND status = $5",
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
        })
        .await
    }

    async fn count_enrollments(&self) -> Result<i64, StoreError> {
        self.bounded(async {
            Ok(sqlx::query("SELECT COUNT(*) AS n FROM enrollments").fetch_one(&self.pool).await?.try_get("n")?)
        })
        .await
    }

    async fn insert_enrollment_audited(&self, e: &Enrollment, event: &AuditEvent) -> Result<AuditRecord, StoreError> {
        self.bounded(async {
            let mut tx = self.pool.begin().await?;
            insert_enrollment(&mut tx, e).await?;
            let record = append_audit(&mut tx, event).await?;
            tx.commit().await?;
            Ok(record)
        })
        .await
    }

    async fn append_audit(&self, event: &AuditEvent) -> Result<AuditRecord, StoreError> {
        self.bounded(async {
            let mut tx = self.pool.begin().await?;
            let record = append_audit(&mut tx, event).await?;
            tx.commit().await?;
            Ok(record)
        })
        .await
    }

    async fn audit_head(&self) -> Result<Option<(i64, String)>, StoreError> {
        self.bounded(async {
            let mut conn = self.pool.acquire().await?;
            audit_head(&mut conn).await
        })
        .await
    }

    async fn audit_page(&self, after_seq: i64, since: i64, limit: i64) -> Result<Vec<AuditRecord>, StoreError> {
        self.bounded(async {
            let rows = sqlx::query("SELECT * FROM audit WHERE seq > $1 AND at >= $2 ORDER BY seq LIMIT $3")
                .bind(after_seq)
                .bind(since)
                .bind(limit)
                .fetch_all(&self.pool)
                .await?;
            rows.iter().map(audit_from_row).collect()
        })
        .await
    }

    async fn insert_checkpoint(&self, c: &AuditCheckpoint) -> Result<bool, StoreError> {
        self.bounded(async {
            let done = sqlx::query(
                "INSERT INTO audit_checkpoints (seq, hash, at, key_label, signature) VALUES ($1, $2, $3, $4, $5)
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
        })
        .await
    }

    async fn checkpoints(&self) -> Result<Vec<AuditCheckpoint>, StoreError> {
        self.bounded(async {
            let rows = sqlx::query("SELECT * FROM audit_checkpoints ORDER BY seq").fetch_all(&self.pool).await?;
            rows.iter().map(checkpoint_from_row).collect()
        })
        .await
    }

    async fn last_checkpoint(&self) -> Result<Option<AuditCheckpoint>, StoreError> {
        self.bounded(async {
            let row = sqlx::query("SELECT * FROM audit_checkpoints ORDER BY seq DESC LIMIT 1")
                .fetch_optional(&self.pool)
                .await?;
            row.as_ref().map(checkpoint_from_row).transpose()
        })
        .await
    }
}

/// Inserts a catalog entry; `false` when the label exists. A second active key for a
/// purpose is `KeyStateChanged`.
async fn insert_key(conn: &mut PgConnection, e: &CatalogEntry) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "INSERT INTO keys (label, purpose, kid, state, created_at, activated_at, retiring_at, retired_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (label) DO NOTHING",
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

async fn insert_enrollment(conn: &mut PgConnection, e: &Enrollment) -> Result<(), StoreError> {
    let result = sqlx::query(
        "INSERT INTO enrollments (id, token_id, device_id, device_jwk, device_name, status, status_reason,
            push_provider, push_token_sealed, claims_sealed, claim_names, territory, ca_sha256, signer_serial,
            created_at, updated_at)
         SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16
         WHERE NOT EXISTS (SELECT 1 FROM enrollments WHERE token_id = $2 AND status = 'suspended')",
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

async fn audit_head(conn: &mut PgConnection) -> Result<Option<(i64, String)>, StoreError> {
    let row = sqlx::query("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetch_optional(&mut *conn).await?;
    row.map(|r| Ok((r.try_get("seq")?, r.try_get("hash")?))).transpose()
}

/// Appends inside the caller's transaction, after taking the audit advisory lock
/// (held until commit) so that concurrent appenders on any node chain in order.
async fn append_audit(conn: &mut PgConnection, event: &AuditEvent) -> Result<AuditRecord, StoreError> {
    sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(AUDIT_LOCK).execute(&mut *conn).await?;
    let head = audit_head(conn).await?;
    let r = audit::next_record(head, event).map_err(StoreError::Corrupt)?;
    sqlx::query(
        "INSERT INTO audit (seq, at, kind, actor, subject, detail, prev_hash, hash)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
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
