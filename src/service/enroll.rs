//! Device enrollment (docs/protocol.md §4): a single-use nonce, then the enrollment JWS
//! with proof of possession, the VDS credential and its trust chain, one active
//! device per token id, and the enrollment stored with its secrets sealed in the HSM.

use serde::{Deserialize, Serialize};

use super::Services;
use super::claims::StoredClaims;
use super::jws::{HasIat, ParsedJws, TYP_ENROLL};
use crate::error::{ApiError, ErrorCode};
use crate::store::{Enrollment, EnrollmentStatus};

/// `POST /v1/enroll/challenge` answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Challenge {
    pub nonce: String,
    pub expires_at: i64,
}

/// Push registration in the enrollment payload.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PushRegistration {
    pub provider: String,
    #[serde(default)]
    pub token: Option<String>,
}

/// The enrollment JWS payload (docs/protocol.md §4.2).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrollPayload {
    pub vds: String,
    #[serde(default)]
    pub push: Option<PushRegistration>,
    #[serde(default)]
    pub device_name: Option<String>,
    #[serde(default)]
    pub iat: Option<i64>,
}

impl HasIat for EnrollPayload {
    fn iat(&self) -> Option<i64> {
        self.iat
    }
}

/// `201` answer: names of the stored claims, never their values.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Enrolled {
    pub token_id: String,
    pub device_id: String,
    pub claims: Vec<String>,
}

const MAX_DEVICE_NAME: usize = 128;
const MAX_PUSH_TOKEN: usize = 4096;

impl Services {
    /// Counts an enrollment call from `ip` against `limits.enroll_per_ip_per_minute`
    /// (challenge and enroll share it); `429 rate_limited` past it.
    pub async fn limit_enrollment(&self, ip: std::net::IpAddr) -> Result<(), ApiError> {
        self.rate_limit(&format!("ip-enroll:{ip}"), self.settings.limits.enroll_per_ip_per_minute).await
    }

    /// Issues a single-use enrollment nonce.
    pub async fn enroll_challenge(&self, now: i64) -> Result<Challenge, ApiError> {
        let nonce = crate::ids::new_id();
        let ttl = self.settings.device.enroll_nonce_ttl;
        self.sessions.put_nonce(&nonce, ttl).await?;
        Ok(Challenge { nonce, expires_at: now + ttl.as_secs() as i64 })
    }

    /// Enrolls a device from its enrollment JWS, checking in the order of §4.2.
    pub async fn enroll(&self, body: &[u8], now: i64) -> Result<Enrolled, ApiError> {
        // 1. JWS, alg, typ, jwk, proof of possession, payload, iat.
        let jws = ParsedJws::parse(body, TYP_ENROLL)?;
        let (jwk, key) = jws.header_jwk()?;
        let nonce = jws
            .header_str("nonce")
            .ok_or_else(|| ApiError::new(ErrorCode::InvalidRequest, "nonce must be a string"))?
            .to_string();
        jws.verify(&key)?;
        let payload: EnrollPayload = jws.payload(now, self.settings.device.iat_skew.as_secs())?;
        let (push_provider, push_token) = match payload.push {
            None => ("none".to_string(), None),
            Some(PushRegistration { provider, token }) => match (provider.as_str(), token) {
                ("none", None) => ("none".to_string(), None),
                ("fcm", Some(t)) if !t.is_empty() && t.len() <= MAX_PUSH_TOKEN => ("fcm".to_string(), Some(t)),
                _ => {
                    return Err(ApiError::invalid_request(
                        "push must be {\"provider\":\"fcm\",\"token\":\"...\"} or {\"provider\":\"none\"}",
                    ));
                }
            },
        };
        let device_name = payload.device_name.unwrap_or_default();
        if device_name.chars().count() > MAX_DEVICE_NAME {
            return Err(ApiError::invalid_request("device_name is longer than 128 characters"));
        }
        // 2. The nonce, single use.
        if !self.sessions.take_nonce(&nonce).await? {
            return Err(ApiError::new(ErrorCode::InvalidNonce, "the nonce is unknown, used or expired"));
        }
        // 3. The credential and its trust chain.
        let verified = self.trust.verify_credential(&payload.vds, now)?;
        let credential = &verified.credential;
        // 4. One device per token id: an active or a suspended one holds it until an
        // operator revokes or deletes it (the store enforces it again on insert).
        let held = self.store.enrollments_of(&credential.token_id).await?;
        if held.iter().any(|e| matches!(e.status, EnrollmentStatus::Active | EnrollmentStatus::Suspended)) {
            return Err(ApiError::new(
                ErrorCode::AlreadyEnrolled,
                "this token id already has an active or suspended device; an operator must revoke it first",
            ));
        }
        // 5. Store, with push token and claims sealed in the HSM under the row id.
        let id = crate::ids::short_id();
        let claims = StoredClaims::from(credential);
        let claims_json = serde_json::to_vec(&claims).map_err(|_| ApiError::internal())?;
        let claims_sealed = self.keys.seal(&id, claims_json).await?;
        let push_token_sealed = match push_token {
            Some(t) => Some(self.keys.seal(&id, t.into_bytes()).await?),
            None => None,
        };
        let device_id = jwk.thumbprint();
        let names: Vec<String> = credential.claim_names().into_iter().map(str::to_string).collect();
        let enrollment = Enrollment {
            id,
            token_id: credential.token_id.clone(),
            device_id: device_id.clone(),
            device_jwk: serde_json::to_string(&jwk).map_err(|_| ApiError::internal())?,
            device_name,
            status: EnrollmentStatus::Active,
            status_reason: None,
            push_provider,
            push_token_sealed,
            claims_sealed,
            claim_names: names.clone(),
            territory: verified.territory.clone(),
            ca_sha256: verified.ca_sha256.clone(),
            signer_serial: verified.signer_serial_hex.clone(),
            created_at: now,
            updated_at: now,
            last_used_at: None,
        };
        // The enrollment and its audit event commit together.
        let event = crate::store::AuditEvent::new(
            now,
            crate::store::audit::kinds::ENROLLMENT_CREATED,
            format!("device:{device_id}"),
            &enrollment.token_id,
            serde_json::json!({
                "enrollment_id": enrollment.id,
                "device_id": device_id,
                "push_provider": enrollment.push_provider,
                "claims": names,
                "doc_type": verified.doc_type.to_string(),
                "territory": verified.territory.to_string(),
                "ca_sha256": enrollment.ca_sha256,
                "signer_serial": enrollment.signer_serial,
            }),
        );
        let record = self.store.insert_enrollment_audited(&enrollment, &event).await?;
        self.audit.appended(&record);
        // Nodes that cached "no active enrollment" for this token id forget it.
        super::enrollment_cache::announce(
            &self.enrollments,
            self.sessions.as_ref(),
            std::slice::from_ref(&enrollment.token_id),
        )
        .await;
        tracing::info!(
            token_id = %enrollment.token_id,
            device_id = %device_id,
            doc_type = %verified.doc_type,
            territory = %verified.territory,
            "device enrolled"
        );
        Ok(Enrolled { token_id: enrollment.token_id, device_id, claims: names })
    }
}
