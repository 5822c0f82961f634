//! The device's HTTP side: challenge, enrollment, pending sessions, verify.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{Decision, Device, EnrollPayload, PendingPayload, Push, VerifyPayload, unix_now};

/// An RFC 9457 problem as the server sends it (docs/protocol.md §1).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Problem {
    /// `about:blank`.
    #[serde(default, rename = "type")]
    pub kind: String,
    /// Short title.
    #[serde(default)]
    pub title: String,
    /// HTTP status.
    #[serde(default)]
    pub status: u16,
    /// Stable code (docs/protocol.md §10).
    #[serde(default)]
    pub code: String,
    /// Human-readable detail.
    #[serde(default)]
    pub detail: String,
}

/// Errors talking to the server.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Transport failure.
    #[error("HTTP request failed")]
    Http(#[from] reqwest::Error),
    /// The server answered with a problem document.
    #[error("{status} {}: {}", problem.code, problem.detail)]
    Problem {
        /// HTTP status.
        status: u16,
        /// The problem body (fields empty when the body was not problem+json).
        problem: Box<Problem>,
        /// Raw body text.
        body: String,
    },
    /// A success response that is not the expected JSON.
    #[error("unexpected response: {0}")]
    Unexpected(String),
}

impl ClientError {
    /// (HTTP status, problem code) of a problem answer; panics on any other error
    /// (for tests that expect the server to refuse).
    pub fn problem_code(&self) -> (u16, String) {
        match self {
            ClientError::Problem { status, problem, .. } => (*status, problem.code.clone()),
            other => panic!("expected a problem, got {other:?}"),
        }
    }
}

/// `POST /v1/enroll/challenge` response.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Challenge {
    /// Single-use nonce.
    pub nonce: String,
    /// When it expires.
    pub expires_at: i64,
}

/// One pending session (docs/protocol.md §5.4).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingSession {
    /// Session id.
    pub session_id: String,
    /// OTP shown to the user.
    pub otp: String,
    /// Relying party id.
    pub service_id: String,
    /// Relying party name.
    pub service_name: String,
    /// Requested scopes.
    pub scopes: Vec<String>,
    /// Expiry.
    pub expires_at: i64,
}

/// `POST /v1/device/pending` response.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PendingSessions {
    /// This device's pending sessions.
    pub sessions: Vec<PendingSession>,
}

/// Talks to one Symbolon server as a device.
pub struct DeviceClient {
    http: reqwest::Client,
    server: String,
}

impl DeviceClient {
    /// Client for `server` (base URL, e.g. `http://127.0.0.1:8080`).
    pub fn new(server: &str) -> Result<Self, ClientError> {
        Ok(Self {
            http: reqwest::Client::builder().timeout(std::time::Duration::from_secs(30)).build()?,
            server: server.trim_end_matches('/').to_owned(),
        })
    }

    /// `POST /v1/enroll/challenge` with `{}`.
    pub async fn challenge(&self) -> Result<Challenge, ClientError> {
        let response = self
            .http
            .post(format!("{}/v1/enroll/challenge", self.server))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body("{}")
            .send()
            .await?;
        parse(response).await
    }

    /// Challenge, then `POST /v1/enroll`; returns the `201` body.
    pub async fn enroll(
        &self,
        device: &Device,
        vds: &str,
        push: Push,
        device_name: &str,
    ) -> Result<Value, ClientError> {
        let challenge = self.challenge().await?;
        let payload = EnrollPayload { vds: vds.to_owned(), push, device_name: device_name.to_owned(), iat: unix_now() };
        self.post_jose("/v1/enroll", device.enrollment_jws(&challenge.nonce, &payload)).await
    }

    /// `POST /v1/device/pending`.
    pub async fn pending(&self, device: &Device) -> Result<PendingSessions, ClientError> {
        let jws = device.device_jws(&PendingPayload { iat: unix_now() });
        self.post_jose("/v1/device/pending", jws).await
    }

    /// `POST /v1/auth/verify` with an approve or reject decision.
    pub async fn verify(
        &self,
        device: &Device,
        session_id: &str,
        otp: &str,
        decision: Decision,
        scopes: Option<Vec<String>>,
    ) -> Result<Value, ClientError> {
        let payload =
            VerifyPayload { session_id: session_id.to_owned(), otp: otp.to_owned(), decision, scopes, iat: unix_now() };
        self.post_jose("/v1/auth/verify", device.device_jws(&payload)).await
    }

    /// Posts any compact JWS as `application/jose` (for negative tests too).
    pub async fn post_jose<T: serde::de::DeserializeOwned>(&self, path: &str, jws: String) -> Result<T, ClientError> {
        let response = self
            .http
            .post(format!("{}{path}", self.server))
            .header(reqwest::header::CONTENT_TYPE, "application/jose")
            .body(jws)
            .send()
            .await?;
        parse(response).await
    }
}

async fn parse<T: serde::de::DeserializeOwned>(response: reqwest::Response) -> Result<T, ClientError> {
    let status = response.status();
    let body = response.text().await?;
    if !status.is_success() {
        let problem = serde_json::from_str(&body).unwrap_or_else(|_| Problem {
            kind: String::new(),
            title: String::new(),
            status: status.as_u16(),
            code: String::new(),
            detail: body.clone(),
        });
        return Err(ClientError::Problem { status: status.as_u16(), problem: Box::new(problem), body });
    }
    serde_json::from_str(&body).map_err(|e| ClientError::Unexpected(format!("{e}: {body}")))
}
