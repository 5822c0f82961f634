//! FCM HTTP v1 client: one `messages:send` per call, with an OAuth 2.0 access token
//! bought by a JWT-bearer grant (RFC 7523) and cached until shortly before it expires.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use reqwest::header::{AUTHORIZATION, HeaderMap, RETRY_AFTER};
use reqwest::{Response, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::Mutex;

use super::assertion::{AssertionIdentity, AssertionSigner, build_assertion};
use super::config::{PushConfig, PushProvider};
use super::{AuthPush, PushError};

const JWT_BEARER_GRANT: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
/// An access token is replaced this long before it expires (at most half its life).
const TOKEN_REFRESH_MARGIN: Duration = Duration::from_secs(60);
/// Used when the token endpoint omits `expires_in`.
const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(3600);
/// The longest access-token lifetime believed (Google's are one hour).
const MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(24 * 3600);
/// The longest `Retry-After` honoured; the session TTL bounds retries anyway.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

struct AccessToken {
    value: SecretString,
    refresh_at: Instant,
}

/// The cached token and the last failed fetch, under one lock so that callers who
/// waited for a fetch share its outcome instead of each trying again.
#[derive(Default)]
struct TokenCache {
    token: Option<AccessToken>,
    failed: Option<(Instant, PushError)>,
}

/// Sends FCM HTTP v1 data messages for one service account.
pub struct FcmClient {
    http: reqwest::Client,
    send_url: String,
    identity: AssertionIdentity,
    signer: Arc<dyn AssertionSigner>,
    token: Mutex<TokenCache>,
    token_fetches: AtomicU64,
}

impl std::fmt::Debug for FcmClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FcmClient")
            .field("send_url", &self.send_url)
            .field("client_email", &self.identity.client_email)
            .field("key_label", &self.identity.key_label)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    #[serde(default)]
    expires_in: Option<u64>,
    #[serde(default)]
    token_type: Option<String>,
}

#[derive(Deserialize)]
struct OAuthError {
    #[serde(default)]
    error: String,
}

#[derive(Deserialize)]
struct GoogleErrorBody {
    error: GoogleError,
}

#[derive(Deserialize)]
struct GoogleError {
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    details: Vec<GoogleErrorDetail>,
}

#[derive(Deserialize)]
struct GoogleErrorDetail {
    #[serde(default, rename = "errorCode")]
    error_code: Option<String>,
}

#[derive(Deserialize)]
struct SendResponse {
    #[serde(default)]
    name: String,
}

impl FcmClient {
    /// A client for the `[push]` configuration; `signer` holds the key `key_label`.
    pub fn new(config: &PushConfig, signer: Arc<dyn AssertionSigner>) -> Result<Self, PushError> {
        if config.provider != PushProvider::Fcm {
            return Err(PushError::Config("push.provider is not \"fcm\"".into()));
        }
        if let Some(problem) = config.problems().into_iter().next() {
            return Err(PushError::Config(problem.to_string()));
        }
        let http = reqwest::Client::builder()
            .timeout(config.request_timeout)
            .connect_timeout(config.request_timeout)
            // A redirect would carry the bearer token or the assertion elsewhere.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("symbolon/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| PushError::Config(format!("HTTP client: {e}")))?;
        Ok(Self {
            http,
            send_url: format!(
                "{}/v1/projects/{}/messages:send",
                config.fcm_base_url.trim_end_matches('/'),
                config.project_id
            ),
            identity: AssertionIdentity {
                client_email: config.client_email.clone(),
                token_uri: config.token_uri.clone(),
                private_key_id: config.private_key_id.clone(),
                key_label: config.key_label.clone(),
            },
            signer,
            token: Mutex::new(TokenCache::default()),
            token_fetches: AtomicU64::new(0),
        })
    }

    /// How many access tokens were fetched so far.
    pub fn token_fetches(&self) -> u64 {
        self.token_fetches.load(Ordering::Relaxed)
    }

    /// Sends one data message; `Ok` is FCM's message name. A `401` makes the client
    /// buy a new access token and try once more.
    pub async fn send(&self, push: &AuthPush) -> Result<String, PushError> {
        let remaining = push.expires_at - crate::ids::now_unix();
        if remaining <= 0 {
            return Err(PushError::Expired);
        }
        let body = message_body(push, remaining);
        let token = self.access_token().await?;
        let response = self.post_message(&token, &body).await?;
        let response = if response.status() == StatusCode::UNAUTHORIZED {
            self.forget_token(&token).await;
            let token = self.access_token().await?;
            self.post_message(&token, &body).await?
        } else {
            response
        };
        let status = response.status();
        if status.is_success() {
            let name = response.json::<SendResponse>().await.map(|r| r.name).unwrap_or_default();
            return Ok(name);
        }
        let retry_after = retry_after(response.headers());
        let code = response
            .json::<GoogleErrorBody>()
            .await
            .ok()
            .and_then(|b| b.error.details.into_iter().find_map(|d| d.error_code).or(b.error.status))
            .map(sanitize_code);
        Err(PushError::Rejected { status: status.as_u16(), code, retry_after })
    }

    async fn post_message(&self, token: &SecretString, body: &serde_json::Value) -> Result<Response, PushError> {
        self.http
            .post(&self.send_url)
            .header(AUTHORIZATION, format!("Bearer {}", token.expose_secret()))
            .json(body)
            .send()
            .await
            .map_err(transport)
    }

    /// The cached access token, or a new one. Concurrent callers wait for one fetch.
    async fn access_token(&self) -> Result<SecretString, PushError> {
        let waiting_since = Instant::now();
        let mut cache = self.token.lock().await;
        if let Some(t) = cache.token.as_ref().filter(|t| Instant::now() < t.refresh_at) {
            return Ok(t.value.clone());
        }
        if let Some((at, e)) = cache.failed.as_ref().filter(|(at, _)| *at >= waiting_since) {
            tracing::debug!(
                failed_ms_ago = at.elapsed().as_millis() as u64,
                "sharing the outcome of a failed token fetch"
            );
            return Err(e.shared_copy());
        }
        match self.fetch_token().await {
            Ok(fresh) => {
                let value = fresh.value.clone();
                *cache = TokenCache { token: Some(fresh), failed: None };
                Ok(value)
            }
            Err(e) => {
                cache.failed = Some((Instant::now(), e.shared_copy()));
                Err(e)
            }
        }
    }

    /// Drops the cached token if it is still the one FCM refused.
    async fn forget_token(&self, refused: &SecretString) {
        let mut cache = self.token.lock().await;
        if cache.token.as_ref().is_some_and(|t| t.value.expose_secret() == refused.expose_secret()) {
            cache.token = None;
        }
    }

    async fn fetch_token(&self) -> Result<AccessToken, PushError> {
        let started = Instant::now();
        let assertion = build_assertion(self.signer.as_ref(), &self.identity, crate::ids::now_unix()).await?;
        self.token_fetches.fetch_add(1, Ordering::Relaxed);
        let response = self
            .http
            .post(&self.identity.token_uri)
            .form(&[("grant_type", JWT_BEARER_GRANT), ("assertion", &assertion)])
            .send()
            .await
            .map_err(transport)?;
        let status = response.status();
        if !status.is_success() {
            let retry_after = retry_after(response.headers());
            let error = response.json::<OAuthError>().await.map(|e| sanitize_code(e.error)).unwrap_or_default();
            return Err(PushError::TokenRefused {
                status: status.as_u16(),
                error: if error.is_empty() { "no error code".into() } else { error },
                retry_after,
            });
        }
        let body: TokenResponse =
            response.json().await.map_err(|_| PushError::Protocol("token endpoint answer is not a token response"))?;
        if body.access_token.is_empty() {
            return Err(PushError::Protocol("token endpoint returned an empty token"));
        }
        if body.token_type.as_deref().is_some_and(|t| !t.eq_ignore_ascii_case("bearer")) {
            return Err(PushError::Protocol("token endpoint returned a non-Bearer token"));
        }
        let refresh_at = refresh_at(started, body.expires_in);
        tracing::debug!(
            lifetime_s = refresh_at.saturating_duration_since(started).as_secs(),
            "fetched an FCM access token"
        );
        Ok(AccessToken { value: SecretString::from(body.access_token), refresh_at })
    }
}

/// When a token fetched at `started` with `expires_in` (seconds, as the token endpoint
/// said) is replaced: [`TOKEN_REFRESH_MARGIN`] (at most half its life) before it expires.
/// The lifetime is capped at [`MAX_TOKEN_LIFETIME`], so no value of `expires_in` can
/// overflow the clock.
fn refresh_at(started: Instant, expires_in: Option<u64>) -> Instant {
    let lifetime = expires_in.map_or(DEFAULT_TOKEN_LIFETIME, Duration::from_secs).min(MAX_TOKEN_LIFETIME);
    let margin = TOKEN_REFRESH_MARGIN.min(lifetime / 2);
    started.checked_add(lifetime - margin).unwrap_or(started)
}

/// The `messages:send` body (docs/protocol.md §5.3, §12 rule 10).
fn message_body(push: &AuthPush, remaining: i64) -> serde_json::Value {
    json!({
        "message": {
            "token": push.device_push_token,
            "data": push.data,
            "android": {
                "priority": "high",
                "ttl": format!("{remaining}s"),
            },
            "apns": {
                "headers": {
                    // APNs drops the notification after the session expires. No
                    // apns-priority: 10 is refused for content-available-only pushes.
                    "apns-expiration": push.expires_at.to_string(),
                },
            },
        }
    })
}

/// `Retry-After` as seconds or an HTTP date.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let raw = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    let wait = if let Ok(secs) = raw.parse::<u64>() {
        Duration::from_secs(secs)
    } else {
        let at = time::OffsetDateTime::parse(raw, &time::format_description::well_known::Rfc2822).ok()?;
        let secs = (at - time::OffsetDateTime::now_utc()).whole_seconds().max(0);
        Duration::from_secs(u64::try_from(secs).unwrap_or(0))
    };
    Some(wait.min(MAX_RETRY_AFTER))
}

/// Error codes come from the remote side: keep them short and printable.
fn sanitize_code(code: String) -> String {
    code.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '_').take(64).collect()
}

fn transport(e: reqwest::Error) -> PushError {
    let kind = if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connect"
    } else {
        "request"
    };
    PushError::Transport(format!("{kind}: {}", e.without_url()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn body_shape() {
        let p = AuthPush::auth("s", "tok", "123456", "svc", "Svc", &[], 100);
        let b = message_body(&p, 42);
        assert_eq!(b["message"]["token"], "tok");
        assert_eq!(b["message"]["android"]["ttl"], "42s");
        assert_eq!(b["message"]["android"]["priority"], "high");
        assert_eq!(b["message"]["data"]["otp"], "123456");
        assert_eq!(b["message"]["apns"]["headers"]["apns-expiration"], "100");
    }

    /// Any `expires_in` gives a refresh time within a day, never an overflow panic
    /// (issue 15 item 6).
    #[test]
    fn token_lifetime_arithmetic_cannot_overflow() {
        let t = Instant::now();
        assert_eq!(refresh_at(t, Some(u64::MAX)), t + MAX_TOKEN_LIFETIME - TOKEN_REFRESH_MARGIN);
        assert_eq!(refresh_at(t, Some(u64::MAX / 2 + 1)), t + MAX_TOKEN_LIFETIME - TOKEN_REFRESH_MARGIN);
        assert_eq!(refresh_at(t, Some(3600)), t + Duration::from_secs(3540));
        assert_eq!(refresh_at(t, None), t + Duration::from_secs(3540));
        assert_eq!(refresh_at(t, Some(60)), t + Duration::from_secs(30), "half the life when it is short");
        assert_eq!(refresh_at(t, Some(0)), t);
        assert_eq!(refresh_at(t, Some(1)), t + Duration::from_millis(500));
    }

    #[test]
    fn retry_after_forms() {
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, HeaderValue::from_static("7"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(7)));
        h.insert(RETRY_AFTER, HeaderValue::from_static("Sun, 06 Nov 1994 08:49:37 GMT"));
        assert_eq!(retry_after(&h), Some(Duration::ZERO));
        h.insert(RETRY_AFTER, HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&h), None);
    }
}
