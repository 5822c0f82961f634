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
use crate::service::readiness::Missing;

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

/// The round trips and what the node lacks to sign someone in: ready when the list of
/// missing pieces is empty.
async fn readiness(state: &AppState) -> (Vec<Missing>, serde_json::Value) {
    let r = state.services.readiness().await;
    let checks = json!({"database": probe(r.database), "session_store": probe(r.session_store), "hsm": probe(r.hsm)});
    let mut missing = Vec::new();
    for (name, p, what) in [
        ("database", r.database, "the database"),
        ("session_store", r.session_store, "the session store"),
        ("hsm", r.hsm, "the HSM"),
    ] {
        if !p.ok() {
            missing.push(Missing {
                check: name.into(),
                problem: format!("{what} does not answer"),
                fix: format!("see the log for the error; check the [{name}] section"),
            });
        }
    }
    missing.extend(state.services.missing(crate::ids::now_unix()));
    (missing, checks)
}

/// `GET /readyz`: 200 only when the store, the session store and an HSM round trip
/// answer and nothing the node needs to sign someone in is missing (an active key for
/// each purpose in use, trust lists when configured); else 503 naming what is missing.
pub async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    let (missing, checks) = readiness(&state).await;
    let ok = missing.is_empty();
    let status = if ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(json!({"status": if ok {"ready"} else {"not_ready"}, "missing": missing, "checks": checks})))
}

/// How long the public `/health` answer is reused.
pub const HEALTH_REUSE: Duration = Duration::from_secs(1);

/// The last public `/health` answer and when it was made: anyone may call it, and each
/// fresh answer costs an HSM, a database and a session-store round trip, so it is made
/// at most once per [`HEALTH_REUSE`]; callers meanwhile wait for it and share it.
#[derive(Debug, Default)]
pub struct HealthCache {
    last: tokio::sync::Mutex<Option<(Instant, StatusCode, serde_json::Value)>>,
}

/// `GET /health` on the public listener: only `status` (`ok`, `degraded` or
/// `unavailable`, 503); the details stay on the admin listener. The answer is made at
/// most once a second ([`HealthCache`]).
#[utoipa::path(get, path = "/health", tag = "health",
    responses(
        (status = 200, description = "`ok`, or `degraded` when trust lists are stale or not configured", body = Object),
        (status = 503, description = "`unavailable`: a round trip failed or something needed to sign in is missing", body = Object)
    )
)]
pub async fn public_health(State(state): State<AppState>) -> impl IntoResponse {
    let mut last = state.health.last.lock().await;
    if let Some((at, status, body)) = &*last
        && at.elapsed() < HEALTH_REUSE
    {
        return (*status, Json(body.clone()));
    }
    let (status, body) = health_report(&state).await;
    let body = json!({"status": body["status"]});
    *last = Some((Instant::now(), status, body.clone()));
    (status, Json(body))
}

/// `GET /health` on the admin listener: the checks, what is missing with its fix, the
/// trust lists' freshness and the version. 503 when a required check fails or something
/// is missing; stale or unconfigured trust lists make it `degraded` with 200
/// (docs/protocol.md §12 rule 11).
pub async fn health(State(state): State<AppState>) -> impl IntoResponse {
    let (status, body) = health_report(&state).await;
    (status, Json(body))
}

async fn health_report(state: &AppState) -> (StatusCode, serde_json::Value) {
    let (missing, mut checks) = readiness(state).await;
    let trust = state.services.trust_health(crate::ids::now_unix());
    let stale: Vec<&str> = trust.lists.iter().filter(|(_, fresh)| !fresh).map(|(name, _)| name.as_str()).collect();
    checks["trust"] =
        json!({"configured": trust.configured, "fresh": trust.fresh, "age_s": trust.age_s, "stale": stale});
    let ok = missing.is_empty();
    let status = if ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let summary = match (ok, trust.fresh) {
        (false, _) => "unavailable",
        (true, false) => "degraded",
        (true, true) => "ok",
    };
    let body = json!({
        "status": summary,
        "version": env!("CARGO_PKG_VERSION"),
        "missing": missing,
        "checks": checks,
    });
    (status, body)
}

/// A known route with another method answers problem+json like everything else.
pub async fn method_not_allowed() -> ApiError {
    ApiError::new(ErrorCode::MethodNotAllowed, "this resource does not accept this method")
}

/// Unknown routes answer problem+json like everything else.
pub async fn not_found() -> ApiError {
    ApiError::new(ErrorCode::NotFound, "no such resource")
}
