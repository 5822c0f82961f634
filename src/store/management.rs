//! What the management API reads and changes in the durable store beyond the flows:
//! listing, reading, changing and deleting enrollments by token id and device id.

use async_trait::async_trait;

use super::{AuditEvent, AuditRecord, Enrollment, EnrollmentStatus, StoreError};

/// Makes the audit event of a deletion from the device ids it removed.
pub type DeletionEvent<'a> = &'a (dyn Fn(&[String]) -> AuditEvent + Send + Sync);

/// The management API's queries.
#[async_trait]
pub trait ManagementQueries: Send + Sync {
    /// The enrollments (any status) of the first `limit` token ids greater than
    /// `after_token_id`, ordered by token id then creation (management user list).
    async fn enrollments_page(&self, after_token_id: &str, limit: i64) -> Result<Vec<Enrollment>, StoreError>;
    /// Every enrollment (any status) of a token id, oldest first.
    async fn enrollments_of(&self, token_id: &str) -> Result<Vec<Enrollment>, StoreError>;
    /// Removes every enrollment of a token id; returns how many rows went.
    async fn delete_enrollments(&self, token_id: &str) -> Result<u64, StoreError>;
    /// Moves a device's enrollment from `from` to `to` (compare and set); `false` when it
    /// was not in `from`. Activating while the token id has another active device is
    /// `AlreadyEnrolled`.
    async fn set_enrollment_status(
        &self,
        device_id: &str,
        from: EnrollmentStatus,
        to: EnrollmentStatus,
        reason: Option<&str>,
        at: i64,
    ) -> Result<bool, StoreError>;
    /// As [`ManagementQueries::set_enrollment_status`], and appends `event` to the audit
    /// chain in the same transaction: both or neither. `Ok(None)` (nothing written) when
    /// the enrollment was not in `from`.
    async fn set_enrollment_status_audited(
        &self,
        device_id: &str,
        from: EnrollmentStatus,
        to: EnrollmentStatus,
        reason: Option<&str>,
        at: i64,
        event: &AuditEvent,
    ) -> Result<Option<AuditRecord>, StoreError>;
    /// Removes every enrollment of a token id and appends `event(removed device ids)`
    /// to the audit chain in the same transaction: both or neither. `Ok(None)` (nothing
    /// written) when the token id had no enrollment.
    async fn delete_enrollments_audited(
        &self,
        token_id: &str,
        event: DeletionEvent<'_>,
    ) -> Result<Option<(Vec<String>, AuditRecord)>, StoreError>;
    /// Counts rows (for tests and status): enrollments in total.
    async fn count_enrollments(&self) -> Result<i64, StoreError>;
}
