//! `POST /v1/enroll/challenge` and `POST /v1/enroll` (docs/protocol.md §4).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;

use super::AppState;
use super::extract::{ClientIp, JoseBody, StrictJson};
use crate::error::ApiError;
use crate::ids::now_unix;
use crate::metrics::METRICS;
use crate::service::enroll::{Challenge, Enrolled};

/// The challenge request body: `{}` (or empty).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChallengeRequest {}

/// `POST /v1/enroll/challenge`: a single-use enrollment nonce.
#[utoipa::path(post, path = "/v1/enroll/challenge", tag = "public",
    request_body(content = Object, description = "`{}` or empty"),
    responses(
        (status = 200, description = "A nonce", body = Challenge),
        (status = 400, description = "Malformed body (`invalid_request`)", body = super::openapi::Problem, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited (`rate_limited`)", body = super::openapi::Problem, content_type = "application/problem+json"),
        super::openapi::BodyErrors
    )
)]
pub async fn challenge(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    StrictJson(ChallengeRequest {}): StrictJson<ChallengeRequest, true>,
) -> Result<Json<Challenge>, ApiError> {
    state.services.limit_enrollment(ip).await?;
    Ok(Json(state.services.enroll_challenge(now_unix()).await?))
}

/// `POST /v1/enroll`: enrolls a device with a credential seal (docs/protocol.md §4).
#[utoipa::path(post, path = "/v1/enroll", tag = "public",
    request_body(content = String, content_type = "application/jose", description = "Compact JWS signed by the device key (docs/protocol.md §3)"),
    responses(
        (status = 201, description = "Enrolled; names of the stored claims", body = Enrolled),
        (status = 400, description = "Malformed JWS or payload (`invalid_request`, `invalid_nonce`)", body = super::openapi::Problem, content_type = "application/problem+json"),
        (status = 401, description = "Bad signature or clock skew (`invalid_signature`, `clock_skew`)", body = super::openapi::Problem, content_type = "application/problem+json"),
        (status = 409, description = "Token id already enrolled (`already_enrolled`)", body = super::openapi::Problem, content_type = "application/problem+json"),
        (status = 422, description = "Credential not trusted, revoked or expired", body = super::openapi::Problem, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited (`rate_limited`)", body = super::openapi::Problem, content_type = "application/problem+json"),
        super::openapi::BodyErrors
    )
)]
pub async fn enroll(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    JoseBody(body): JoseBody,
) -> Result<(StatusCode, Json<Enrolled>), ApiError> {
    state.services.limit_enrollment(ip).await?;
    let enrolled = state.services.enroll(&body, now_unix()).await.inspect_err(|e| {
        tracing::info!(code = %e.code, "enrollment refused");
        METRICS.enrollment(e.code.as_str());
    })?;
    METRICS.enrollment("ok");
    Ok((StatusCode::CREATED, Json(enrolled)))
}
