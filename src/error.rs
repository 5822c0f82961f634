//! The one API error: every failure a client can see is an [`ApiError`] carrying a
//! stable [`ErrorCode`] from docs/protocol.md §10. Its HTTP mapping (problem+json, RFC 9457)
//! lives in `http/problem.rs` and nowhere else.
//!
//! And the one shape of a configuration problem, [`ConfigProblem`]: every room owns
//! its configuration section and reports what is wrong with it this way (`problems()`);
//! `config/` composes them for `symbolon config check` (docs/architecture.md).

use std::fmt;

/// The stable error codes of docs/protocol.md §10. The string form is part of the wire contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    InvalidRequest,
    InvalidScope,
    InvalidNonce,
    InvalidSignature,
    UnknownDevice,
    DeviceInactive,
    UntrustedCredential,
    RevokedCredential,
    ExpiredCredential,
    AlreadyEnrolled,
    SessionNotFound,
    NotFound,
    SessionClosed,
    OtpMismatch,
    TooManyPending,
    RateLimited,
    LockedOut,
    PayloadTooLarge,
    UnsupportedMediaType,
    Overloaded,
    Unavailable,
    Internal,
    ClockSkew,
    UnknownService,
    OriginNotAllowed,
    /// Management API: the bearer token is missing, malformed, expired or not from
    /// the configured provider (RFC 6750 `invalid_token`).
    InvalidToken,
    /// Management API: a valid token without the scope the route needs.
    InsufficientScope,
    /// Management API: not configured on this server (it fails closed).
    ManagementDisabled,
    /// Management API: the change is not possible from the resource's state
    /// (e.g. activating a revoked credential).
    InvalidState,
    /// The route exists but not with this method (405).
    MethodNotAllowed,
    /// `POST /v1/auth/initiate` for a service with `initiate = "backend"`: client
    /// authentication is missing or failed (RFC 6749 §5.2 `invalid_client`).
    InvalidClient,
}

impl ErrorCode {
    /// The wire string of the code.
    pub fn as_str(self) -> &'static str {
        use ErrorCode::*;
        match self {
            InvalidRequest => "invalid_request",
            InvalidScope => "invalid_scope",
            InvalidNonce => "invalid_nonce",
            InvalidSignature => "invalid_signature",
            UnknownDevice => "unknown_device",
            DeviceInactive => "device_inactive",
            UntrustedCredential => "untrusted_credential",
            RevokedCredential => "revoked_credential",
            ExpiredCredential => "expired_credential",
            AlreadyEnrolled => "already_enrolled",
            SessionNotFound => "session_not_found",
            NotFound => "not_found",
            SessionClosed => "session_closed",
            OtpMismatch => "otp_mismatch",
            TooManyPending => "too_many_pending",
            RateLimited => "rate_limited",
            LockedOut => "locked_out",
            PayloadTooLarge => "payload_too_large",
            UnsupportedMediaType => "unsupported_media_type",
            Overloaded => "overloaded",
            Unavailable => "unavailable",
            Internal => "internal",
            ClockSkew => "clock_skew",
            UnknownService => "unknown_service",
            OriginNotAllowed => "origin_not_allowed",
            InvalidToken => "invalid_token",
            InsufficientScope => "insufficient_scope",
            ManagementDisabled => "management_disabled",
            InvalidState => "invalid_state",
            MethodNotAllowed => "method_not_allowed",
            InvalidClient => "invalid_client",
        }
    }

    /// The HTTP status of the code (docs/protocol.md §10).
    pub fn status(self) -> u16 {
        use ErrorCode::*;
        match self {
            InvalidRequest | InvalidScope | InvalidNonce | UnknownService => 400,
            InvalidSignature | UnknownDevice | OtpMismatch | ClockSkew | InvalidToken | InvalidClient => 401,
            DeviceInactive | OriginNotAllowed | InsufficientScope => 403,
            SessionNotFound | NotFound | ManagementDisabled => 404,
            MethodNotAllowed => 405,
            AlreadyEnrolled | SessionClosed | InvalidState => 409,
            PayloadTooLarge => 413,
            UnsupportedMediaType => 415,
            UntrustedCredential | RevokedCredential | ExpiredCredential => 422,
            TooManyPending | RateLimited | LockedOut => 429,
            Internal => 500,
            Overloaded | Unavailable => 503,
        }
    }

    /// The short human title used in problem+json.
    pub fn title(self) -> &'static str {
        use ErrorCode::*;
        match self {
            InvalidRequest => "Invalid request",
            InvalidScope => "Invalid scope",
            InvalidNonce => "Invalid or expired nonce",
            InvalidSignature => "Invalid signature",
            UnknownDevice => "Unknown device",
            DeviceInactive => "Device inactive",
            UntrustedCredential => "Untrusted credential",
            RevokedCredential => "Revoked credential",
            ExpiredCredential => "Expired credential",
            AlreadyEnrolled => "Already enrolled",
            SessionNotFound => "Session not found",
            NotFound => "Not found",
            SessionClosed => "Session closed",
            OtpMismatch => "One-time code mismatch",
            TooManyPending => "Too many pending sessions",
            RateLimited => "Rate limited",
            LockedOut => "Locked out",
            PayloadTooLarge => "Payload too large",
            UnsupportedMediaType => "Unsupported media type",
            Overloaded => "Overloaded",
            Unavailable => "Service unavailable",
            Internal => "Internal error",
            ClockSkew => "Clock skew",
            UnknownService => "Unknown service",
            OriginNotAllowed => "Origin not allowed",
            InvalidToken => "Invalid bearer token",
            InsufficientScope => "Insufficient scope",
            ManagementDisabled => "Management API disabled",
            InvalidState => "Invalid state",
            MethodNotAllowed => "Method not allowed",
            InvalidClient => "Client authentication failed",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error a client sees. `detail` is human readable and must never carry a secret,
/// an OTP or a claim value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub code: ErrorCode,
    pub detail: String,
    /// Seconds for `Retry-After` (every 429 and 503 carries one).
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(code: ErrorCode, detail: impl Into<String>) -> Self {
        let retry_after = match code.status() {
            429 | 503 => Some(1),
            _ => None,
        };
        Self { code, detail: detail.into(), retry_after }
    }

    pub fn with_retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds.max(1));
        self
    }

    pub fn invalid_request(detail: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidRequest, detail)
    }

    pub fn internal() -> Self {
        Self::new(ErrorCode::Internal, "internal error")
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.detail)
    }
}

impl std::error::Error for ApiError {}

/// One problem found in a configuration, with the dotted path of the bad field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    pub path: String,
    pub message: String,
}

impl ConfigProblem {
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self { path: path.into(), message: message.into() }
    }
}

impl std::fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// An `https://` URL, or `http://` to a loopback host (local test servers): the rule
/// of every URL the server fetches secrets or keys from (FCM, operator JWKS).
pub fn check_https_url(raw: &str) -> Result<(), String> {
    let url = url::Url::parse(raw).map_err(|e| format!("not a URL: {e}"))?;
    match url.scheme() {
        "https" => Ok(()),
        "http" if is_loopback(&url) => Ok(()),
        _ => Err("must be an https:// URL (http:// only to a loopback address)".into()),
    }
}

fn is_loopback(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d == "localhost",
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}
