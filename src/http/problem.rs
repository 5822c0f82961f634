//! The one place where [`ApiError`] becomes an HTTP response: RFC 9457 problem+json.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::error::{ApiError, ErrorCode};

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.code.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::json!({
            "type": "about:blank",
            "title": self.code.title(),
            "status": status.as_u16(),
            "code": self.code.as_str(),
            "detail": self.detail,
        });
        let mut response = (status, body.to_string()).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
        // RFC 6750 §3: a bearer-token failure names the scheme and the error.
        let challenge = match self.code {
            ErrorCode::InvalidToken => Some(r#"Bearer realm="symbolon-management", error="invalid_token""#),
            ErrorCode::InsufficientScope => Some(r#"Bearer realm="symbolon-management", error="insufficient_scope""#),
            // RFC 6749 §5.2: a client authentication failure names a scheme the client may use.
            ErrorCode::InvalidClient => Some(r#"Basic realm="symbolon""#),
            _ => None,
        };
        if let Some(challenge) = challenge {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
        }
        if let Some(secs) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}
