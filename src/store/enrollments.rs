//! Enrolled devices: what the enrollment and sign-in flows store and read, and the
//! suspensions a trust refresh applies.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::{AuditEvent, AuditRecord, StoreError};

/// Status of an enrolled device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum EnrollmentStatus {
    Active,
    Suspended,
    Revoked,
}

impl EnrollmentStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            EnrollmentStatus::Active => "active",
            EnrollmentStatus::Suspended => "suspended",
            EnrollmentStatus::Revoked => "revoked",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "active" => Some(EnrollmentStatus::Active),
            "suspended" => Some(EnrollmentStatus::Suspended),
            "revoked" => Some(EnrollmentStatus::Revoked),
            _ => None,
        }
    }
}

/// An enrolled device as stored. Push token and claims stay sealed
/// (`keys::Envelope` text, the row id as AAD) until a caller opens them in the HSM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enrollment {
    pub id: String,
    pub token_id: String,
    pub device_id: String,
    /// The device public key, JWK JSON text.
    pub device_jwk: String,
    pub device_name: String,
    pub status: EnrollmentStatus,
    pub status_reason: Option<String>,
    pub push_provider: String,
    pub push_token_sealed: Option<String>,
    pub claims_sealed: String,
    /// Names of the stored claims (never their values).
    pub claim_names: Vec<String>,
    /// TSL territory of the CA that issued the credential (the token id's prefix): only
    /// that territory's VRLs may suspend it (docs/credentials.md §6 rule 10).
    pub territory: String,
    /// SHA-256 (hex) of the CA that issued the credential's signer (its TSL service), and
    /// the signer's serial (hex), so a later CRL of that CA, or a VRL its service names,
    /// can suspend this enrollment.
    pub ca_sha256: String,
    pub signer_serial: String,
    pub created_at: i64,
    pub updated_at: i64,
    /// When the device last approved a sign-in, to within the granularity its writer
    /// keeps (never set on enrollment).
    pub last_used_at: Option<i64>,
}

/// Enrollments as the enrollment and sign-in flows and the trust refresh use them.
#[async_trait]
pub trait EnrollmentStore: Send + Sync {
    /// Stores a new active enrollment; `AlreadyEnrolled` when the token id has an active
    /// or a suspended one (only revoking or deleting it frees the token id).
    async fn insert_enrollment(&self, e: &Enrollment) -> Result<(), StoreError>;
    /// Stores a new active enrollment and its audit event in one transaction
    /// (`AlreadyEnrolled` as [`EnrollmentStore::insert_enrollment`]).
    async fn insert_enrollment_audited(&self, e: &Enrollment, event: &AuditEvent) -> Result<AuditRecord, StoreError>;
    /// The enrollment of a device id (any status).
    async fn enrollment_by_device(&self, device_id: &str) -> Result<Option<Enrollment>, StoreError>;
    /// The active enrollment of a token id.
    async fn active_enrollment(&self, token_id: &str) -> Result<Option<Enrollment>, StoreError>;
    /// Records that the device was used at `at`, unless a use at or after `not_before`
    /// is recorded already (another node wrote it meanwhile). Changes nothing else.
    async fn record_device_use(&self, device_id: &str, at: i64, not_before: i64) -> Result<(), StoreError>;
    /// Suspends the active enrollments of these token ids made in `territory` with a
    /// credential of the CA `ca_sha256` (the VRL's scope, docs/credentials.md §6 rule 10);
    /// returns those changed.
    async fn suspend_token_ids(
        &self,
        territory: &str,
        ca_sha256: &str,
        token_ids: &[String],
        reason: &str,
        at: i64,
    ) -> Result<Vec<String>, StoreError>;
    /// Suspends active enrollments whose credential signer is (ca_sha256, serial); returns
    /// the token ids changed.
    async fn suspend_signer(
        &self,
        ca_sha256: &str,
        serial: &str,
        reason: &str,
        at: i64,
    ) -> Result<Vec<String>, StoreError>;
}
