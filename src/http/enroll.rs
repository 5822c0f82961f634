//! `POST /v1/enroll/challenge` and `POST /v1/enroll` (protocol.md §4).

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

pub async fn challenge(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    StrictJson(ChallengeRequest {}): StrictJson<ChallengeRequest, true>,
) -> Result<Json<Challenge>, ApiError> {
    state.rate_limit(&format!("ip-enroll:{ip}"), state.config.limits.enroll_per_ip_per_minute).await?;
    Ok(Json(state.enroll_challenge(now_unix()).await?))
}

pub async fn enroll(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    JoseBody(body): JoseBody,
) -> Result<(StatusCode, Json<Enrolled>), ApiError> {
    state.rate_limit(&format!("ip-enroll:{ip}"), state.config.limits.enroll_per_ip_per_minute).await?;
    let enrolled = state.enroll(&body, now_unix()).await.inspect_err(|e| {
        tracing::info!(code = %e.code, "enrollment refused");
        METRICS.enrollment(e.code.as_str());
    })?;
    METRICS.enrollment("ok");
    Ok((StatusCode::CREATED, Json(enrolled)))
}
