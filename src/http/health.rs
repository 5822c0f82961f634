//! Liveness, readiness and health (docs/protocol.md §11).

use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde_json::json;

use super::AppState;
use crate::error::{ApiError, ErrorCode};
use crate::service::probe::Probe;

/// `GET /livez`: 200 while the process serves.
pub async fn livez() -> impl IntoResponse {
    (StatusCode::OK, Json(json!({"status": "ok"})))
}

fn probe(p: Probe) -> serde_json::Value {
    match p {
        Probe::Ok { latency_ms } => json!({"ok": true, "latency_ms": latency_ms}),
        Probe::Failed => json!({"ok": false, "error": "check failed"}),
        Probe::TimedOut => json!({"ok": false, "error": "timed out"}),
    }
}

async fn checks(state: &AppState) -> (bool, serde_json::Value) {
    let r = state.services.readiness().await;
    (r.ok(), json!({"database": probe(r.database), "session_store": probe(r.session_store), "hsm": probe(r.hsm)}))
}

/// `GET /readyz`: 200 only when the store, the session store and an HSM round trip answer.
pub async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    let (ok, checks) = checks(&state).await;
    let status = if ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(json!({"status": if ok {"ready"} else {"not_ready"}, "checks": checks})))
}

/// How long the public `/health` answer is reused.
pub const HEALTH_REUSE: Duration = Duration::from_secs(1);

/// The last `/health` answer of the public listener and when it was made: anyone may
/// call it, and each fresh answer costs an HSM and a database round trip, so it is
/// made at most once per [`HEALTH_REUSE`]; callers meanwhile wait for it and share it.
#[derive(Debug, Default)]
pub struct HealthCache {
    last: tokio::sync::Mutex<Option<(Instant, StatusCode, serde_json::Value)>>,
}

async fn health_answer(state: &AppState) -> (StatusCode, serde_json::Value) {
    let (ok, mut checks) = checks(state).await;
    let trust = state.services.trust_health(crate::ids::now_unix());
    let stale: Vec<&str> = trust.lists.iter().filter(|(_, fresh)| !fresh).map(|(name, _)| name.as_str()).collect();
    checks["trust"] =
        json!({"configured": trust.configured, "fresh": trust.fresh, "age_s": trust.age_s, "stale": stale});
    let status = if ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let body = json!({
        "status": if ok && trust.fresh {"ok"} else {"degraded"},
        "version": env!("CARGO_PKG_VERSION"),
        "checks": checks,
    });
    (status, body)
}

#[utoipa::path(get, path = "/health", tag = "health",
    responses(
        (status = 200, description = "`ok`, or `degraded` when trust lists are stale", body = Object),
        (status = 503, description = "The database, session store or HSM check failed", body = Object)
    )
)]
/// `GET /health` (admin listener): the checks with a summary; 503 when a required check
/// fails. Stale or unconfigured trust lists make it `degraded` with 200 (docs/protocol.md
/// §12 rule 11).
pub async fn health(State(state): State<AppState>) -> impl IntoResponse {
    let (status, body) = health_answer(&state).await;
    (status, Json(body))
}

/// `GET /health` on the public listener: as on the admin listener, the answer made at
/// most once a second ([`HealthCache`]).
pub async fn public_health(State(state): State<AppState>) -> impl IntoResponse {
    let mut last = state.health.last.lock().await;
    if let Some((at, status, body)) = &*last
        && at.elapsed() < HEALTH_REUSE
    {
        return (*status, Json(body.clone()));
    }
    let (status, body) = health_answer(&state).await;
    *last = Some((Instant::now(), status, body.clone()));
    (status, Json(body))
}

/// Unknown routes answer problem+json like everything else.
pub async fn not_found() -> ApiError {
    ApiError::new(ErrorCode::NotFound, "no such resource")
}
