//! The OAuth error vocabulary (RFC 6749 §4.1.2.1, §5.2; OIDC Core §3.1.2.6; RFC 6750
//! §3.1). The token and userinfo endpoints answer these as `{"error", "error_description"}`
//! JSON (mapped in `http::oidc`, one place); the authorization endpoint sends them to
//! the client's redirect URI. `description` never carries a secret or a claim value.

/// An OAuth error: its registered code, a description, and the HTTP status the token
/// or userinfo endpoint answers it with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{error}: {description}")]
pub struct OAuthError {
    pub error: &'static str,
    pub description: String,
    pub status: u16,
}

impl OAuthError {
    fn new(error: &'static str, status: u16, description: impl Into<String>) -> Self {
        Self { error, description: description.into(), status }
    }

    pub fn invalid_request(d: impl Into<String>) -> Self {
        Self::new("invalid_request", 400, d)
    }
    /// Client authentication failed: `401` with `WWW-Authenticate` (RFC 6749 §5.2).
    pub fn invalid_client(d: impl Into<String>) -> Self {
        Self::new("invalid_client", 401, d)
    }
    pub fn invalid_grant(d: impl Into<String>) -> Self {
        Self::new("invalid_grant", 400, d)
    }
    pub fn unauthorized_client(d: impl Into<String>) -> Self {
        Self::new("unauthorized_client", 400, d)
    }
    pub fn unsupported_grant_type(d: impl Into<String>) -> Self {
        Self::new("unsupported_grant_type", 400, d)
    }
    pub fn invalid_scope(d: impl Into<String>) -> Self {
        Self::new("invalid_scope", 400, d)
    }
    pub fn unsupported_response_type(d: impl Into<String>) -> Self {
        Self::new("unsupported_response_type", 400, d)
    }
    pub fn access_denied(d: impl Into<String>) -> Self {
        Self::new("access_denied", 400, d)
    }
    pub fn login_required(d: impl Into<String>) -> Self {
        Self::new("login_required", 400, d)
    }
    pub fn request_not_supported(d: impl Into<String>) -> Self {
        Self::new("request_not_supported", 400, d)
    }
    pub fn request_uri_not_supported(d: impl Into<String>) -> Self {
        Self::new("request_uri_not_supported", 400, d)
    }
    /// A bearer token that is missing, unknown, expired or revoked (RFC 6750 §3.1).
    pub fn invalid_token(d: impl Into<String>) -> Self {
        Self::new("invalid_token", 401, d)
    }
    pub fn server_error() -> Self {
        Self::new("server_error", 500, "the server could not complete the request")
    }
    pub fn temporarily_unavailable() -> Self {
        Self::new("temporarily_unavailable", 503, "the server is busy, retry shortly")
    }

    /// Whether this is a client authentication failure (`401` + `WWW-Authenticate`).
    pub fn is_client_auth(&self) -> bool {
        self.error == "invalid_client"
    }
}

impl From<crate::error::ApiError> for OAuthError {
    fn from(e: crate::error::ApiError) -> Self {
        match e.code.status() {
            503 | 429 => OAuthError::temporarily_unavailable(),
            _ => OAuthError::server_error(),
        }
    }
}
