//! Plain store records for the store contract tests: a pending sign-in session and
//! an active enrollment with placeholder values.

use symbolon::store::{AuthSession, Enrollment, EnrollmentStatus, SessionStatus};

/// A pending session of `token_id` created at `created_at`, expiring `ttl` s later.
pub fn pending_session(token_id: &str, created_at: i64, ttl: i64) -> AuthSession {
    AuthSession {
        id: symbolon::ids::new_id(),
        browser_token_sha256: "ab".repeat(32),
        token_id: token_id.into(),
        service_id: "rp1".into(),
        scopes: vec![],
        created_at,
        expires_at: created_at + ttl,
        otp_key: "symbolon-otp-x".into(),
        otp_digits: 6,
        device_id: Some("dev".into()),
        status: SessionStatus::Pending,
        failures: 0,
        id_token_sealed: None,
        ended_at: None,
    }
}

/// An active enrollment of `device_id` for `token_id` made at `t`.
pub fn active_enrollment(token_id: &str, device_id: &str, t: i64) -> Enrollment {
    Enrollment {
        id: symbolon::ids::short_id(),
        token_id: token_id.into(),
        device_id: device_id.into(),
        device_jwk: "{}".into(),
        device_name: "phone".into(),
        status: EnrollmentStatus::Active,
        status_reason: None,
        push_provider: "none".into(),
        push_token_sealed: None,
        claims_sealed: "v1.x.y".into(),
        claim_names: vec!["given_name".into(), "birthdate".into()],
        territory: token_id.split_once('-').map(|(t, _)| t.to_owned()).unwrap_or_default(),
        ca_sha256: "ca".into(),
        signer_serial: "01".into(),
        created_at: t,
        updated_at: t,
        last_used_at: None,
    }
}
