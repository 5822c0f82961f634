//! `X-Request-Id` (docs/protocol.md §1, §12 rule 13): the inbound id when it is at most 64
//! `[A-Za-z0-9._-]` characters, else a new one; in every log line of the request and
//! on every response, the WebSocket's `101` included.

use axum::extract::Request;
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

/// Header name.
pub const REQUEST_ID: &str = "x-request-id";

/// The request id, available to handlers as an extension.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

tokio::task_local! {
    /// The id of the request being handled, for pages that show it (error pages).
    static CURRENT: String;
}

/// The id of the request this task is handling, if any.
pub fn current() -> Option<String> {
    CURRENT.try_with(Clone::clone).ok()
}

fn valid(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Middleware: assigns the id, opens the request span, stamps the response.
pub async fn assign(mut request: Request, next: Next) -> Response {
    let id = request
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| valid(v))
        .map(str::to_string)
        .unwrap_or_else(crate::ids::short_id);
    request.extensions_mut().insert(RequestId(id.clone()));
    let span = tracing::info_span!(
        "request",
        request_id = %id,
        method = %request.method(),
        path = %request.uri().path(),
    );
    let started = std::time::Instant::now();
    let mut response = CURRENT.scope(id.clone(), next.run(request).instrument(span.clone())).await;
    let latency_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
    span.in_scope(|| tracing::info!(status = response.status().as_u16(), latency_us, "request done"));
    if let Ok(v) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(REQUEST_ID, v);
    }
    response
}

#[cfg(test)]
mod tests {
    #[test]
    fn validity() {
        assert!(super::valid("abc-DEF_1.2"));
        assert!(!super::valid(""));
        assert!(!super::valid(&"a".repeat(65)));
        assert!(!super::valid("a b"));
        assert!(!super::valid("a\nb"));
    }
}
