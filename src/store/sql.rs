//! The durable store's SQL, written once for SQLite and PostgreSQL: numbered
//! placeholders (`$1`, which both accept), the same tables and column types (TEXT
//! and 64-bit integers), rows mapped by `rows.rs`. What really differs between the
//! two databases is a [`Dialect`]: how a write transaction starts, how audit appends
//! are serialized across nodes, and whether a call is bounded in time.

use std::future::Future;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::query::Query;
use sqlx::{ColumnIndex, Database, Decode, Encode, Executor, IntoArguments, Pool, Transaction, Type};

use super::audit::{PartitionsMaintained, RetentionMechanism};
use super::management::DeletionEvent;
use super::rows::{
    StoreRow, archive_from_row, audit_from_row, checkpoint_from_row, enrollment_from_row, is_unique_violation,
    key_from_row,
};
use super::{
    AuditArchive, AuditCheckpoint, AuditEvent, AuditRecord, AuditStore, CatalogEntry, DurableStore, Enrollment,
    EnrollmentStatus, EnrollmentStore, KeyCatalogStore, KeyState, KeyTransition, ManagementQueries, SEALED_COLUMNS,
    SealedColumn, SealedValue, StoreError, audit,
};

/// What differs between the databases the durable store runs on.
pub trait Dialect: Database {
    /// The statement that opens a write transaction (`None`: the driver's `BEGIN`).
    const BEGIN_WRITE: Option<&'static str>;
    /// A statement run first in every transaction that appends to the audit chain, so
    /// that appenders on every node chain in order (`None`: the write transaction
    /// itself serializes them).
    const AUDIT_LOCK: Option<&'static str>;
    /// A statement lifting the per-statement time bound for the rest of a transaction
    /// that may delete many rows (retention); `None`: there is no bound.
    const UNBOUNDED_TX: Option<&'static str>;
    /// The statement writing an online, consistent copy of the database to the file
    /// `$1` (`None`: the database has its own backup tools).
    const BACKUP_INTO: Option<&'static str>;
    /// The audit table is partitioned by month (PostgreSQL, migration 0008): retention
    /// drops partitions and maintenance keeps future ones.
    const PARTITIONED_AUDIT: bool;
    /// A query answering one row, column `n`: 1 when this connection's role may change
    /// the audit table's structure (owns it), else 0 (`None`: always may).
    const AUDIT_OWNER_QUERY: Option<&'static str>;

    /// Rows an `INSERT`, `UPDATE` or `DELETE` changed.
    fn rows_affected(result: &Self::QueryResult) -> u64;

    /// Applies this database's migrations.
    fn migrate(pool: &Pool<Self>) -> impl Future<Output = Result<(), sqlx::migrate::MigrateError>> + Send;
}

/// The durable store on one database.
#[derive(Debug, Clone)]
pub struct SqlStore<DB: Database> {
    pool: Pool<DB>,
    /// Bound on one call (waiting for a connection included), so no request hangs on
    /// an unreachable database; `None` for an embedded one.
    call_timeout: Option<Duration>,
}

/// Rows read per `IN (...)` list.
const IN_CHUNK: usize = 500;

impl<DB> SqlStore<DB>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> Option<&'q str>: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    for<'q> Option<i64>: Encode<'q, DB> + Type<DB>,
    for<'r> String: Decode<'r, DB> + Type<DB>,
    for<'r> i64: Decode<'r, DB>,
    for<'a> &'a str: ColumnIndex<DB::Row>,
{
    pub(super) fn new(pool: Pool<DB>, call_timeout: Option<Duration>) -> Self {
        Self { pool, call_timeout }
    }

    async fn bounded<T>(&self, f: impl Future<Output = Result<T, StoreError>>) -> Result<T, StoreError> {
        match self.call_timeout {
            Some(limit) => tokio::time::timeout(limit, f)
                .await
                .unwrap_or_else(|_| Err(StoreError::Unavailable("database call timed out".into()))),
            None => f.await,
        }
    }

    async fn begin_write(&self) -> Result<Transaction<'static, DB>, StoreError> {
        Ok(match DB::BEGIN_WRITE {
            Some(statement) => self.pool.begin_with(statement).await?,
            None => self.pool.begin().await?,
        })
    }

    /// Rows of one statement.
    async fn fetch_all<'q>(&self, q: Query<'q, DB, DB::Arguments<'q>>) -> Result<Vec<DB::Row>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        Ok(q.fetch_all(&mut *conn).await?)
    }

    /// At most one row of one statement.
    async fn fetch_optional<'q>(&self, q: Query<'q, DB, DB::Arguments<'q>>) -> Result<Option<DB::Row>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        Ok(q.fetch_optional(&mut *conn).await?)
    }

    /// Rows changed by one statement.
    async fn execute<'q>(&self, q: Query<'q, DB, DB::Arguments<'q>>) -> Result<u64, StoreError> {
        let mut conn = self.pool.acquire().await?;
        Ok(DB::rows_affected(&q.execute(&mut *conn).await?))
    }

    /// Inserts a catalog entry; `false` when the label exists. A second active key for a
    /// purpose is `KeyStateChanged`.
    async fn insert_key_in(conn: &mut DB::Connection, e: &CatalogEntry) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "INSERT INTO keys (label, purpose, kid, state, created_at, activated_at, retiring_at, retired_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (label) DO NOTHING",
        )
        .bind(e.label.as_str())
        .bind(e.purpose.as_str())
        .bind(e.kid.as_str())
        .bind(e.state.as_str())
        .bind(e.created_at)
        .bind(e.activated_at)
        .bind(e.retiring_at)
        .bind(e.retired_at)
        .execute(&mut *conn)
        .await;
        match done {
            Ok(d) => Ok(DB::rows_affected(&d) == 1),
            Err(err) if is_unique_violation(&err) => Err(StoreError::KeyStateChanged(e.label.clone())),
            Err(err) => Err(err.into()),
        }
    }

    /// Inserts an active enrollment unless the token id has a suspended one (which
    /// holds it until revoked or deleted) or an active one (the one-active index).
    async fn insert_enrollment_in(conn: &mut DB::Connection, e: &Enrollment) -> Result<(), StoreError> {
        let claim_names = e.claim_names.join(" ");
        let result = sqlx::query(
            "INSERT INTO enrollments (id, token_id, device_id, device_jwk, device_name, status, status_reason,
                push_provider, push_token_sealed, claims_sealed, claim_names, territory, ca_sha256, signer_serial,
                created_at, updated_at)
             SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16
             WHERE NOT EXISTS (SELECT 1 FROM enrollments WHERE token_id = $2 AND status = 'suspended')",
        )
        .bind(e.id.as_str())
        .bind(e.token_id.as_str())
        .bind(e.device_id.as_str())
        .bind(e.device_jwk.as_str())
        .bind(e.device_name.as_str())
        .bind(e.status.as_str())
        .bind(e.status_reason.as_deref())
        .bind(e.push_provider.as_str())
        .bind(e.push_token_sealed.as_deref())
        .bind(e.claims_sealed.as_str())
        .bind(claim_names.as_str())
        .bind(e.territory.as_str())
        .bind(e.ca_sha256.as_str())
        .bind(e.signer_serial.as_str())
        .bind(e.created_at)
        .bind(e.updated_at)
        .execute(&mut *conn)
        .await;
        match result {
            // A suspended enrollment holds its token id until revoked or deleted.
            Ok(done) if DB::rows_affected(&done) == 0 => Err(StoreError::AlreadyEnrolled),
            Ok(_) => Ok(()),
            // Both the one-active-device index and a reused device key land here.
            Err(err) if is_unique_violation(&err) => Err(StoreError::AlreadyEnrolled),
            Err(err) => Err(err.into()),
        }
    }

    /// Moves a device's enrollment from `from` to `to`; `false` when it was not in `from`.
    async fn set_enrollment_status_in(
        conn: &mut DB::Connection,
        device_id: &str,
        from: EnrollmentStatus,
        to: EnrollmentStatus,
        reason: Option<&str>,
        at: i64,
    ) -> Result<bool, StoreError> {
        let q = sqlx::query(
            "UPDATE enrollments SET status = $1, status_reason = $2, updated_at = $3
             WHERE device_id = $4 AND status = $5",
        );
        let q = q.bind(to.as_str()).bind(reason).bind(at).bind(device_id).bind(from.as_str());
        match q.execute(&mut *conn).await {
            Ok(done) => Ok(DB::rows_affected(&done) == 1),
            // Activating while the token id has another active device.
            Err(err) if is_unique_violation(&err) => Err(StoreError::AlreadyEnrolled),
            Err(err) => Err(err.into()),
        }
    }

    async fn audit_head_in(conn: &mut DB::Connection) -> Result<Option<(i64, String)>, StoreError> {
        let row =
            sqlx::query("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetch_optional(&mut *conn).await?;
        row.map(|r| Ok((r.int("seq")?, r.text("hash")?))).transpose()
    }

    /// Appends inside the caller's write transaction, after the dialect's audit lock.
    async fn append_audit_in(conn: &mut DB::Connection, event: &AuditEvent) -> Result<AuditRecord, StoreError> {
        if let Some(lock) = DB::AUDIT_LOCK {
            sqlx::query(lock).execute(&mut *conn).await?;
        }
        let head = Self::audit_head_in(conn).await?;
        let r = audit::next_record(head, event).map_err(StoreError::Corrupt)?;
        let detail = r.detail_text();
        sqlx::query(
            "INSERT INTO audit (seq, at, kind, actor, subject, detail, prev_hash, hash)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(r.seq)
        .bind(r.at)
        .bind(r.kind.as_str())
        .bind(r.actor.as_str())
        .bind(r.subject.as_str())
        .bind(detail.as_str())
        .bind(r.prev_hash.as_str())
        .bind(r.hash.as_str())
        .execute(&mut *conn)
        .await?;
        Ok(r)
    }
}

/// The column of `keys` that records when a key entered `state`.
fn key_state_column(state: KeyState) -> &'static str {
    match state {
        KeyState::Next => "created_at",
        KeyState::Active => "activated_at",
        KeyState::Retiring => "retiring_at",
        KeyState::Retired => "retired_at",
    }
}

/// A `LIKE` pattern (backslash escapes) matching envelopes sealed under `label`.
fn envelope_like(label: &str) -> String {
    let mut p = String::from("v1.");
    for c in label.chars() {
        if matches!(c, '%' | '_' | '\\') {
            p.push('\\');
        }
        p.push(c);
    }
    p.push_str(".%");
    p
}

/// `$first, $first+1, ...`: `n` numbered placeholders.
fn placeholders(first: usize, n: usize) -> String {
    (first..first + n).map(|i| format!("${i}")).collect::<Vec<_>>().join(", ")
}

#[async_trait]
impl<DB> DurableStore for SqlStore<DB>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> Option<&'q str>: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    for<'q> Option<i64>: Encode<'q, DB> + Type<DB>,
    for<'r> String: Decode<'r, DB> + Type<DB>,
    for<'r> i64: Decode<'r, DB>,
    for<'a> &'a str: ColumnIndex<DB::Row>,
{
    async fn ping(&self) -> Result<(), StoreError> {
        self.bounded(async { self.execute(sqlx::query("SELECT 1")).await.map(drop) }).await
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        // Not bounded: a first migration may take a while; PostgreSQL nodes starting
        // together take sqlx's advisory lock and migrate once.
        DB::migrate(&self.pool).await.map_err(|e| StoreError::Migration(e.to_string()))
    }

    async fn backup_to(&self, path: &std::path::Path) -> Result<(), StoreError> {
        let Some(statement) = DB::BACKUP_INTO else {
            return Err(StoreError::Unsupported(
                "this database is backed up with its own tools (PostgreSQL: pg_dump, docs/backup.md)".into(),
            ));
        };
        let path = path
            .to_str()
            .ok_or_else(|| StoreError::Unsupported(format!("backup path {} is not UTF-8", path.display())))?;
        self.execute(sqlx::query(statement).bind(path)).await.map(drop)
    }
}

#[async_trait]
impl<DB> KeyCatalogStore for SqlStore<DB>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> Option<&'q str>: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    for<'q> Option<i64>: Encode<'q, DB> + Type<DB>,
    for<'r> String: Decode<'r, DB> + Type<DB>,
    for<'r> i64: Decode<'r, DB>,
    for<'a> &'a str: ColumnIndex<DB::Row>,
{
    async fn list_keys(&self) -> Result<Vec<CatalogEntry>, StoreError> {
        self.bounded(async {
            let rows = self.fetch_all(sqlx::query("SELECT * FROM keys ORDER BY purpose, created_at, label")).await?;
            rows.iter().map(key_from_row).collect()
        })
        .await
    }

    async fn insert_key(&self, e: &CatalogEntry) -> Result<bool, StoreError> {
        self.bounded(async {
            let mut conn = self.pool.acquire().await?;
            Self::insert_key_in(&mut conn, e).await
        })
        .await
    }

    async fn set_key_state(&self, label: &str, state: KeyState, at: i64) -> Result<(), StoreError> {
        self.bounded(async {
            let sql = format!("UPDATE keys SET state = $1, {} = $2 WHERE label = $3", key_state_column(state));
            self.execute(sqlx::query(&sql).bind(state.as_str()).bind(at).bind(label)).await.map(drop)
        })
        .await
    }

    async fn insert_key_audited(
        &self,
        entry: &CatalogEntry,
        event: &AuditEvent,
    ) -> Result<Option<AuditRecord>, StoreError> {
        self.bounded(async {
            let mut tx = self.begin_write().await?;
            if !Self::insert_key_in(&mut tx, entry).await? {
                return Ok(None);
            }
            let record = Self::append_audit_in(&mut tx, event).await?;
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
            let mut tx = self.begin_write().await?;
            for c in changes {
                let sql = format!(
                    "UPDATE keys SET state = $1, {} = $2 WHERE label = $3 AND state = $4",
                    key_state_column(c.to)
                );
                let done = sqlx::query(&sql)
                    .bind(c.to.as_str())
                    .bind(c.at)
                    .bind(c.label.as_str())
                    .bind(c.from.as_str())
                    .execute(&mut *tx)
                    .await;
                match done {
                    Ok(d) if DB::rows_affected(&d) == 1 => {}
                    Ok(_) => return Err(StoreError::KeyStateChanged(c.label.clone())),
                    Err(e) if is_unique_violation(&e) => return Err(StoreError::KeyStateChanged(c.label.clone())),
                    Err(e) => return Err(e.into()),
                }
            }
            let mut records = Vec::with_capacity(events.len());
            for event in events {
                records.push(Self::append_audit_in(&mut tx, event).await?);
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
                if let Some(row) = self.fetch_optional(sqlx::query(&sql).bind(pattern.as_str())).await? {
                    total += row.int("n")?;
                }
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
            let pattern = envelope_like(key_label);
            let sql = format!(
                "SELECT {id} AS id, {col} AS sealed FROM {t}
                 WHERE {col} IS NOT NULL AND {col} NOT LIKE $1 ESCAPE '\\' AND {id} > $2 ORDER BY {id} LIMIT $3"
            );
            let rows = self.fetch_all(sqlx::query(&sql).bind(pattern.as_str()).bind(after_id).bind(limit)).await?;
            rows.iter()
                .map(|r| Ok(SealedValue { column: *column, id: r.text("id")?, sealed: r.text("sealed")? }))
                .collect()
        })
        .await
    }

    async fn replace_sealed(&self, value: &SealedValue, new_sealed: &str) -> Result<bool, StoreError> {
        self.bounded(async {
            let (t, id, col) = (value.column.table, value.column.id, value.column.column);
            let sql = format!("UPDATE {t} SET {col} = $1 WHERE {id} = $2 AND {col} = $3");
            let q = sqlx::query(&sql).bind(new_sealed).bind(value.id.as_str()).bind(value.sealed.as_str());
            Ok(self.execute(q).await? == 1)
        })
        .await
    }

    async fn try_lease(&self, name: &str, holder: &str, now: i64, until: i64) -> Result<bool, StoreError> {
        self.bounded(async {
            let q = sqlx::query(
                "INSERT INTO leases (name, holder, expires_at) VALUES ($1, $2, $3)
                 ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at
                 WHERE leases.holder = excluded.holder OR leases.expires_at <= $4",
            );
            Ok(self.execute(q.bind(name).bind(holder).bind(until).bind(now)).await? == 1)
        })
        .await
    }
}

#[async_trait]
impl<DB> EnrollmentStore for SqlStore<DB>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> Option<&'q str>: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    for<'q> Option<i64>: Encode<'q, DB> + Type<DB>,
    for<'r> String: Decode<'r, DB> + Type<DB>,
    for<'r> i64: Decode<'r, DB>,
    for<'a> &'a str: ColumnIndex<DB::Row>,
{
    async fn insert_enrollment(&self, e: &Enrollment) -> Result<(), StoreError> {
        self.bounded(async {
            let mut conn = self.pool.acquire().await?;
            Self::insert_enrollment_in(&mut conn, e).await
        })
        .await
    }

    async fn insert_enrollment_audited(&self, e: &Enrollment, event: &AuditEvent) -> Result<AuditRecord, StoreError> {
        self.bounded(async {
            let mut tx = self.begin_write().await?;
            Self::insert_enrollment_in(&mut tx, e).await?;
            let record = Self::append_audit_in(&mut tx, event).await?;
            tx.commit().await?;
            Ok(record)
        })
        .await
    }

    async fn enrollment_by_device(&self, device_id: &str) -> Result<Option<Enrollment>, StoreError> {
        self.bounded(async {
            let q = sqlx::query("SELECT * FROM enrollments WHERE device_id = $1").bind(device_id);
            self.fetch_optional(q).await?.as_ref().map(enrollment_from_row).transpose()
        })
        .await
    }

    async fn record_device_use(&self, device_id: &str, at: i64, not_before: i64) -> Result<(), StoreError> {
        self.bounded(async {
            let q = sqlx::query(
                "UPDATE enrollments SET last_used_at = $1
                  WHERE device_id = $2 AND (last_used_at IS NULL OR last_used_at < $3)",
            )
            .bind(at)
            .bind(device_id)
            .bind(not_before);
            self.execute(q).await.map(|_| ())
        })
        .await
    }

    async fn active_enrollment(&self, token_id: &str) -> Result<Option<Enrollment>, StoreError> {
        self.bounded(async {
            let q = sqlx::query("SELECT * FROM enrollments WHERE token_id = $1 AND status = 'active'").bind(token_id);
            self.fetch_optional(q).await?.as_ref().map(enrollment_from_row).transpose()
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
            let mut changed = Vec::new();
            for chunk in token_ids.chunks(IN_CHUNK) {
                let sql = format!(
                    "UPDATE enrollments SET status = 'suspended', status_reason = $1, updated_at = $2
                     WHERE status = 'active' AND territory = $3 AND ca_sha256 = $4 AND token_id IN ({})
                     RETURNING token_id",
                    placeholders(5, chunk.len())
                );
                let mut q = sqlx::query(&sql).bind(reason).bind(at).bind(territory).bind(ca_sha256);
                for id in chunk {
                    q = q.bind(id.as_str());
                }
                for row in self.fetch_all(q).await? {
                    changed.push(row.text("token_id")?);
                }
            }
            Ok(changed)
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
            let q = sqlx::query(
                "UPDATE enrollments SET status = 'suspended', status_reason = $1, updated_at = $2
                 WHERE status = 'active' AND ca_sha256 = $3 AND signer_serial = $4 RETURNING token_id",
            );
            let q = q.bind(reason).bind(at).bind(ca_sha256).bind(serial);
            self.fetch_all(q).await?.iter().map(|r| r.text("token_id")).collect()
        })
        .await
    }
}

#[async_trait]
impl<DB> ManagementQueries for SqlStore<DB>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> Option<&'q str>: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    for<'q> Option<i64>: Encode<'q, DB> + Type<DB>,
    for<'r> String: Decode<'r, DB> + Type<DB>,
    for<'r> i64: Decode<'r, DB>,
    for<'a> &'a str: ColumnIndex<DB::Row>,
{
    async fn enrollments_page(&self, after_token_id: &str, limit: i64) -> Result<Vec<Enrollment>, StoreError> {
        self.bounded(async {
            let q = sqlx::query(
                "SELECT * FROM enrollments WHERE token_id IN
                    (SELECT DISTINCT token_id FROM enrollments WHERE token_id > $1 ORDER BY token_id LIMIT $2)
                 ORDER BY token_id, created_at, device_id",
            );
            self.fetch_all(q.bind(after_token_id).bind(limit)).await?.iter().map(enrollment_from_row).collect()
        })
        .await
    }

    async fn enrollments_of(&self, token_id: &str) -> Result<Vec<Enrollment>, StoreError> {
        self.bounded(async {
            let q = sqlx::query("SELECT * FROM enrollments WHERE token_id = $1 ORDER BY created_at, device_id");
            self.fetch_all(q.bind(token_id)).await?.iter().map(enrollment_from_row).collect()
        })
        .await
    }

    async fn delete_enrollments(&self, token_id: &str) -> Result<u64, StoreError> {
        self.bounded(async {
            self.execute(sqlx::query("DELETE FROM enrollments WHERE token_id = $1").bind(token_id)).await
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
            let mut conn = self.pool.acquire().await?;
            Self::set_enrollment_status_in(&mut conn, device_id, from, to, reason, at).await
        })
        .await
    }

    async fn set_enrollment_status_audited(
        &self,
        device_id: &str,
        from: EnrollmentStatus,
        to: EnrollmentStatus,
        reason: Option<&str>,
        at: i64,
        event: &AuditEvent,
    ) -> Result<Option<AuditRecord>, StoreError> {
        self.bounded(async {
            let mut tx = self.begin_write().await?;
            if !Self::set_enrollment_status_in(&mut tx, device_id, from, to, reason, at).await? {
                return Ok(None);
            }
            let record = Self::append_audit_in(&mut tx, event).await?;
            tx.commit().await?;
            Ok(Some(record))
        })
        .await
    }

    async fn delete_enrollments_audited(
        &self,
        token_id: &str,
        event: DeletionEvent<'_>,
    ) -> Result<Option<(Vec<String>, AuditRecord)>, StoreError> {
        self.bounded(async {
            let mut tx = self.begin_write().await?;
            let rows = sqlx::query("DELETE FROM enrollments WHERE token_id = $1 RETURNING device_id")
                .bind(token_id)
                .fetch_all(&mut *tx)
                .await?;
            let mut devices = rows.iter().map(|r| r.text("device_id")).collect::<Result<Vec<_>, _>>()?;
            if devices.is_empty() {
                return Ok(None);
            }
            devices.sort();
            let record = Self::append_audit_in(&mut tx, &event(&devices)).await?;
            tx.commit().await?;
            Ok(Some((devices, record)))
        })
        .await
    }

    async fn count_enrollments(&self) -> Result<i64, StoreError> {
        self.bounded(async {
            match self.fetch_optional(sqlx::query("SELECT COUNT(*) AS n FROM enrollments")).await? {
                Some(row) => row.int("n"),
                None => Ok(0),
            }
        })
        .await
    }
}

#[async_trait]
impl<DB> AuditStore for SqlStore<DB>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> Option<&'q str>: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    for<'q> Option<i64>: Encode<'q, DB> + Type<DB>,
    for<'r> String: Decode<'r, DB> + Type<DB>,
    for<'r> i64: Decode<'r, DB>,
    for<'a> &'a str: ColumnIndex<DB::Row>,
{
    async fn append_audit(&self, event: &AuditEvent) -> Result<AuditRecord, StoreError> {
        self.bounded(async {
            let mut tx = self.begin_write().await?;
            let record = Self::append_audit_in(&mut tx, event).await?;
            tx.commit().await?;
            Ok(record)
        })
        .await
    }

    async fn audit_head(&self) -> Result<Option<(i64, String)>, StoreError> {
        self.bounded(async {
            let mut conn = self.pool.acquire().await?;
            Self::audit_head_in(&mut conn).await
        })
        .await
    }

    async fn audit_page(&self, after_seq: i64, since: i64, limit: i64) -> Result<Vec<AuditRecord>, StoreError> {
        self.bounded(async {
            let q = sqlx::query("SELECT * FROM audit WHERE seq > $1 AND at >= $2 ORDER BY seq LIMIT $3");
            self.fetch_all(q.bind(after_seq).bind(since).bind(limit)).await?.iter().map(audit_from_row).collect()
        })
        .await
    }

    async fn insert_checkpoint(&self, c: &AuditCheckpoint) -> Result<bool, StoreError> {
        self.bounded(async {
            let q = sqlx::query(
                "INSERT INTO audit_checkpoints (seq, hash, at, key_label, signature) VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (seq) DO NOTHING",
            );
            let q =
                q.bind(c.seq).bind(c.hash.as_str()).bind(c.at).bind(c.key_label.as_str()).bind(c.signature.as_str());
            Ok(self.execute(q).await? == 1)
        })
        .await
    }

    async fn checkpoints(&self) -> Result<Vec<AuditCheckpoint>, StoreError> {
        self.bounded(async {
            let rows = self.fetch_all(sqlx::query("SELECT * FROM audit_checkpoints ORDER BY seq")).await?;
            rows.iter().map(checkpoint_from_row).collect()
        })
        .await
    }

    async fn last_checkpoint(&self) -> Result<Option<AuditCheckpoint>, StoreError> {
        self.bounded(async {
            let row =
                self.fetch_optional(sqlx::query("SELECT * FROM audit_checkpoints ORDER BY seq DESC LIMIT 1")).await?;
            row.as_ref().map(checkpoint_from_row).transpose()
        })
        .await
    }

    async fn audit_first_at_or_after(&self, after_seq: i64, at: i64) -> Result<Option<i64>, StoreError> {
        self.bounded(async {
            let q = sqlx::query("SELECT seq FROM audit WHERE seq > $1 AND at >= $2 ORDER BY seq LIMIT 1");
            self.fetch_optional(q.bind(after_seq).bind(at)).await?.map(|r| r.int("seq")).transpose()
        })
        .await
    }

    async fn insert_archive(&self, a: &AuditArchive) -> Result<bool, StoreError> {
        self.bounded(async {
            let q = sqlx::query(
                "INSERT INTO audit_archives (month, file, first_seq, last_seq, count, prev_hash, first_hash,
                    last_hash, sha256, created_at, key_label, signature)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) ON CONFLICT (month) DO NOTHING",
            )
            .bind(a.month.as_str())
            .bind(a.file.as_str())
            .bind(a.first_seq)
            .bind(a.last_seq)
            .bind(a.count)
            .bind(a.prev_hash.as_str())
            .bind(a.first_hash.as_str())
            .bind(a.last_hash.as_str())
            .bind(a.sha256.as_str())
            .bind(a.created_at)
            .bind(a.key_label.as_str())
            .bind(a.signature.as_str());
            Ok(self.execute(q).await? == 1)
        })
        .await
    }

    async fn archives(&self) -> Result<Vec<AuditArchive>, StoreError> {
        self.bounded(async {
            let rows = self.fetch_all(sqlx::query("SELECT * FROM audit_archives ORDER BY first_seq")).await?;
            rows.iter().map(archive_from_row).collect()
        })
        .await
    }

    async fn drop_archived(&self, a: &AuditArchive, event: &AuditEvent) -> Result<(u64, AuditRecord), StoreError> {
        // Not bounded by the per-call time: a month may hold many records. The audit
        // lock first, so no appender reads the head while the records go.
        let mut tx = self.begin_write().await?;
        if let Some(unbounded) = DB::UNBOUNDED_TX {
            sqlx::query(unbounded).execute(&mut *tx).await?;
        }
        if let Some(lock) = DB::AUDIT_LOCK {
            sqlx::query(lock).execute(&mut *tx).await?;
        }
        let removed = if DB::PARTITIONED_AUDIT {
            Self::drop_partitions_in(&mut tx, a).await?
        } else {
            let done = sqlx::query("DELETE FROM audit WHERE seq < $1").bind(a.last_seq).execute(&mut *tx).await?;
            DB::rows_affected(&done)
        };
        let record = Self::append_audit_in(&mut tx, event).await?;
        tx.commit().await?;
        Ok((removed, record))
    }

    fn retention_mechanism(&self) -> RetentionMechanism {
        if DB::PARTITIONED_AUDIT {
            RetentionMechanism::DropPartitions
        } else {
            RetentionMechanism::DeleteRowsKeepAnchor
        }
    }

    async fn audit_owner_rights(&self) -> Result<bool, StoreError> {
        let Some(query) = DB::AUDIT_OWNER_QUERY else { return Ok(true) };
        self.bounded(async {
            let row = self.fetch_optional(sqlx::query(query)).await?;
            Ok(row.map(|r| r.int("n")).transpose()? == Some(1))
        })
        .await
    }

    async fn maintain_partitions(
        &self,
        now: i64,
        ahead: u32,
        actor: &str,
    ) -> Result<Option<PartitionsMaintained>, StoreError> {
        if !DB::PARTITIONED_AUDIT {
            return Ok(None);
        }
        let mut tx = self.begin_write().await?;
        if let Some(unbounded) = DB::UNBOUNDED_TX {
            sqlx::query(unbounded).execute(&mut *tx).await?;
        }
        if let Some(lock) = DB::AUDIT_LOCK {
            sqlx::query(lock).execute(&mut *tx).await?;
        }
        let row = sqlx::query(
            "SELECT coalesce(array_to_string(created, ','), '') AS created, moved AS n
             FROM audit_maintain_partitions($1, CAST($2 AS INTEGER))",
        )
        .bind(now)
        .bind(i64::from(ahead))
        .fetch_one(&mut *tx)
        .await?;
        let created: Vec<String> =
            row.text("created")?.split(',').filter(|m| !m.is_empty()).map(String::from).collect();
        let moved = row.int("n")?;
        let record = if created.is_empty() && moved == 0 {
            None
        } else {
            let event = AuditEvent::new(
                now,
                audit::kinds::AUDIT_PARTITIONS_MAINTAINED,
                actor,
                "audit",
                serde_json::json!({"created": created, "moved": moved, "ahead": ahead}),
            );
            Some(Self::append_audit_in(&mut tx, &event).await?)
        };
        tx.commit().await?;
        Ok(Some(PartitionsMaintained { created, moved, record }))
    }
}

impl<DB> SqlStore<DB>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    for<'r> String: Decode<'r, DB> + Type<DB>,
    for<'r> i64: Decode<'r, DB>,
    for<'a> &'a str: ColumnIndex<DB::Row>,
{
    /// PostgreSQL retention of the archive `a` (caller holds the audit lock): drops every
    /// monthly partition through `a.month` once they hold exactly the records up to
    /// `a.last_seq` and no such record lives elsewhere. Returns the records dropped.
    async fn drop_partitions_in(conn: &mut DB::Connection, a: &AuditArchive) -> Result<u64, StoreError> {
        let (year, month) = a
            .month
            .split_once('-')
            .filter(|(y, m)| y.len() == 4 && m.len() == 2 && y.bytes().chain(m.bytes()).all(|b| b.is_ascii_digit()))
            .ok_or_else(|| StoreError::Corrupt(format!("archive month {:?} is not YYYY-MM", a.month)))?;
        let last_partition = format!("audit_y{year}m{month}");
        let end: i64 = sqlx::query(
            "SELECT CAST(extract(epoch FROM (to_date($1, 'YYYY-MM') + interval '1 month')) AS BIGINT) AS n",
        )
        .bind(a.month.as_str())
        .fetch_one(&mut *conn)
        .await?
        .int("n")?;
        let checks: [(&str, String); 3] = [
            (
                "SELECT count(*) AS n FROM audit_default WHERE at < $1 AND CAST($2 AS BIGINT) IS NOT NULL",
                "the default partition holds records stamped in or before it: run `symbolon audit maintain` \
                 (without --archive) to move them into monthly partitions first"
                    .to_string(),
            ),
            (
                "SELECT count(*) AS n FROM audit WHERE at < $1 AND seq > $2",
                format!(
                    "records after its archive's last one (seq {}) are stamped in or before it (a clock stepped \
                     back): its partitions are dropped together with the later month whose archive holds them",
                    a.last_seq
                ),
            ),
            (
                "SELECT count(*) AS n FROM audit WHERE at >= $1 AND seq <= $2",
                format!(
                    "records of its archive (seq <= {}) are stamped after it (clock skew) and live in a later \
                     partition: it is dropped together with that month",
                    a.last_seq
                ),
            ),
        ];
        for (sql, why) in checks {
            let n = sqlx::query(sql).bind(end).bind(a.last_seq).fetch_one(&mut *conn).await?.int("n")?;
            if n > 0 {
                return Err(StoreError::Refused(format!("{n} {why}")));
            }
        }
        let partitions: Vec<String> = sqlx::query(
            "SELECT c.relname AS name FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
             WHERE i.inhparent = CAST('audit' AS regclass) AND c.relname LIKE 'audit\\_y____m__' AND c.relname <= $1
             ORDER BY c.relname",
        )
        .bind(last_partition.as_str())
        .fetch_all(&mut *conn)
        .await?
        .iter()
        .map(|r| r.text("name"))
        .collect::<Result<_, _>>()?;
        let mut removed = 0u64;
        for name in partitions {
            // Names come from the catalog and match audit_yYYYYmMM: safe to quote as is.
            let n =
                sqlx::query(&format!("SELECT count(*) AS n FROM \"{name}\"")).fetch_one(&mut *conn).await?.int("n")?;
            sqlx::query(&format!("ALTER TABLE audit DETACH PARTITION \"{name}\"")).execute(&mut *conn).await?;
            sqlx::query(&format!("DROP TABLE \"{name}\"")).execute(&mut *conn).await?;
            removed += u64::try_from(n).unwrap_or(0);
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn envelope_patterns_escape_like_wildcards() {
        assert_eq!(super::envelope_like("symbolon-data-1"), "v1.symbolon-data-1.%");
        assert_eq!(super::envelope_like("symbolon-data_1%"), "v1.symbolon-data\\_1\\%.%");
    }
}
