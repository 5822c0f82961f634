//! Row mapping shared by the SQLite and PostgreSQL stores (same columns, same types:
//! TEXT and 64-bit integers).

use std::str::FromStr;

use sqlx::{ColumnIndex, Decode, Row, Type};

use super::{
    AuditArchive, AuditCheckpoint, AuditRecord, CatalogEntry, Enrollment, EnrollmentStatus, KeyPurpose, KeyState,
    StoreError,
};

/// A row of either database whose TEXT and BIGINT columns decode as `String` and `i64`.
pub(super) trait StoreRow: Row
where
    for<'a> &'a str: ColumnIndex<Self>,
{
    fn text(&self, col: &str) -> Result<String, StoreError>;
    fn opt_text(&self, col: &str) -> Result<Option<String>, StoreError>;
    fn int(&self, col: &str) -> Result<i64, StoreError>;
    fn opt_int(&self, col: &str) -> Result<Option<i64>, StoreError>;
}

impl<R> StoreRow for R
where
    R: Row,
    for<'a> &'a str: ColumnIndex<R>,
    for<'r> String: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
{
    fn text(&self, col: &str) -> Result<String, StoreError> {
        Ok(self.try_get::<String, _>(col)?)
    }
    fn opt_text(&self, col: &str) -> Result<Option<String>, StoreError> {
        Ok(self.try_get::<Option<String>, _>(col)?)
    }
    fn int(&self, col: &str) -> Result<i64, StoreError> {
        Ok(self.try_get::<i64, _>(col)?)
    }
    fn opt_int(&self, col: &str) -> Result<Option<i64>, StoreError> {
        Ok(self.try_get::<Option<i64>, _>(col)?)
    }
}

pub(super) fn key_from_row<R: StoreRow>(row: &R) -> Result<CatalogEntry, StoreError>
where
    for<'a> &'a str: ColumnIndex<R>,
{
    let purpose = row.text("purpose")?;
    let state = row.text("state")?;
    Ok(CatalogEntry {
        label: row.text("label")?,
        purpose: KeyPurpose::from_str(&purpose).map_err(StoreError::Corrupt)?,
        kid: row.text("kid")?,
        state: KeyState::from_str(&state).map_err(StoreError::Corrupt)?,
        created_at: row.int("created_at")?,
        activated_at: row.opt_int("activated_at")?,
        retiring_at: row.opt_int("retiring_at")?,
        retired_at: row.opt_int("retired_at")?,
    })
}

pub(super) fn enrollment_from_row<R: StoreRow>(row: &R) -> Result<Enrollment, StoreError>
where
    for<'a> &'a str: ColumnIndex<R>,
{
    let status = row.text("status")?;
    let names = row.text("claim_names")?;
    Ok(Enrollment {
        id: row.text("id")?,
        token_id: row.text("token_id")?,
        device_id: row.text("device_id")?,
        device_jwk: row.text("device_jwk")?,
        device_name: row.text("device_name")?,
        status: EnrollmentStatus::parse(&status).ok_or_else(|| StoreError::Corrupt(format!("status {status:?}")))?,
        status_reason: row.opt_text("status_reason")?,
        push_provider: row.text("push_provider")?,
        push_token_sealed: row.opt_text("push_token_sealed")?,
        claims_sealed: row.text("claims_sealed")?,
        claim_names: names.split(' ').filter(|s| !s.is_empty()).map(str::to_string).collect(),
        territory: row.text("territory")?,
        ca_sha256: row.text("ca_sha256")?,
        signer_serial: row.text("signer_serial")?,
        created_at: row.int("created_at")?,
        updated_at: row.int("updated_at")?,
        last_used_at: row.opt_int("last_used_at")?,
    })
}

/// A stored audit row. A `detail` that is not JSON is kept as a JSON string so that
/// `audit verify` reports the broken link instead of failing to read it.
pub(super) fn audit_from_row<R: StoreRow>(row: &R) -> Result<AuditRecord, StoreError>
where
    for<'a> &'a str: ColumnIndex<R>,
{
    let detail = row.text("detail")?;
    Ok(AuditRecord {
        seq: row.int("seq")?,
        at: row.int("at")?,
        kind: row.text("kind")?,
        actor: row.text("actor")?,
        subject: row.text("subject")?,
        detail: serde_json::from_str(&detail).unwrap_or(serde_json::Value::String(detail)),
        prev_hash: row.text("prev_hash")?,
        hash: row.text("hash")?,
    })
}

pub(super) fn checkpoint_from_row<R: StoreRow>(row: &R) -> Result<AuditCheckpoint, StoreError>
where
    for<'a> &'a str: ColumnIndex<R>,
{
    Ok(AuditCheckpoint {
        seq: row.int("seq")?,
        hash: row.text("hash")?,
        at: row.int("at")?,
        key_label: row.text("key_label")?,
        signature: row.text("signature")?,
    })
}

pub(super) fn archive_from_row<R: StoreRow>(row: &R) -> Result<AuditArchive, StoreError>
where
    for<'a> &'a str: ColumnIndex<R>,
{
    Ok(AuditArchive {
        month: row.text("month")?,
        file: row.text("file")?,
        first_seq: row.int("first_seq")?,
        last_seq: row.int("last_seq")?,
        count: row.int("count")?,
        prev_hash: row.text("prev_hash")?,
        first_hash: row.text("first_hash")?,
        last_hash: row.text("last_hash")?,
        sha256: row.text("sha256")?,
        created_at: row.int("created_at")?,
        key_label: row.text("key_label")?,
        signature: row.text("signature")?,
    })
}

pub(super) fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.is_unique_violation())
}
