//! `GET /metrics` (admin listener) and the middleware that counts HTTP requests.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::AppState;
use crate::metrics::METRICS;

/// Counts a request by listener, method, route template and status, with its latency.
/// A request that matched no route is counted as `unmatched`: raw paths never become labels.
pub async fn count(State(listener): State<&'static str>, request: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = request.method().clone();
    let route = request.extensions().get::<MatchedPath>().map(|p| p.as_str().to_owned());
    let response = next.run(request).await;
    let method = if KNOWN_METHODS.contains(&method.as_str()) { method.as_str() } else { "other" };
    METRICS.http_request(
        listener,
        method,
        route.as_deref().unwrap_or("unmatched"),
        response.status().as_u16(),
        start.elapsed(),
    );
    response
}

/// Methods counted by name; anything else is `other` (a client picks the method).
const KNOWN_METHODS: [&str; 7] = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"];

/// `GET /metrics`: Prometheus text exposition format 0.0.4.
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let gauges = state.services.scrape_gauges(crate::ids::now_unix());
    (
        [(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"))],
        METRICS.encode(&gauges),
    )
}
