//! `[push]` configuration. Only the non-secret half of the FCM service account lives
//! here; its RSA private key is in the HSM under `key_label` (see `push::cli`).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{ConfigProblem, check_https_url};

/// Google's FCM endpoint.
pub const DEFAULT_FCM_BASE_URL: &str = "https://fcm.googleapis.com";
/// Google's OAuth 2.0 token endpoint (the `token_uri` of every service account).
pub const DEFAULT_TOKEN_URI: &str = "https://oauth2.googleapis.com/token";

/// Which push service wakes the device.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PushProvider {
    /// No push: the device pulls (`POST /v1/device/pending`).
    #[default]
    None,
    /// Firebase Cloud Messaging, HTTP v1 API.
    Fcm,
}

/// Push settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PushConfig {
    /// `none` (default) or `fcm`.
    pub provider: PushProvider,
    /// FCM base URL; `messages:send` is posted to
    /// `{fcm_base_url}/v1/projects/{project_id}/messages:send`.
    pub fcm_base_url: String,
    /// The service account's `project_id`.
    pub project_id: String,
    /// The service account's `client_email`: the `iss` of the JWT assertion.
    pub client_email: String,
    /// The service account's `token_uri`: where the assertion is exchanged, and its `aud`.
    pub token_uri: String,
    /// HSM label of the service account's private key (`symbolon keys import-fcm`).
    pub key_label: String,
    /// The service account's `private_key_id`: the `kid` of the assertion (omitted if empty).
    pub private_key_id: String,
    /// Timeout of one HTTP request to FCM or the token endpoint.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Pushes waiting or retrying at once; more are dropped with an error log.
    pub max_queued: usize,
    /// HTTP requests to FCM in flight at once.
    pub max_in_flight: usize,
}

impl Default for PushConfig {
    fn default() -> Self {
        Self {
            provider: PushProvider::None,
            fcm_base_url: DEFAULT_FCM_BASE_URL.into(),
            project_id: String::new(),
            client_email: String::new(),
            token_uri: DEFAULT_TOKEN_URI.into(),
            key_label: String::new(),
            private_key_id: String::new(),
            request_timeout: Duration::from_secs(10),
            max_queued: 10_000,
            max_in_flight: 32,
        }
    }
}

impl PushConfig {
    /// Problems with the configuration as (field path, message); empty when valid.
    /// FCM fields are checked only when `provider = "fcm"`.
    pub fn problems(&self) -> Vec<ConfigProblem> {
        let mut problems = Vec::new();
        let mut bad = |field: &str, msg: String| problems.push(ConfigProblem::new(format!("push.{field}"), msg));
        if self.max_queued == 0 {
            bad("max_queued", "must be at least 1".into());
        }
        if self.max_in_flight == 0 {
            bad("max_in_flight", "must be at least 1".into());
        }
        if self.request_timeout.is_zero() {
            bad("request_timeout", "must be greater than zero".into());
        }
        if self.provider != PushProvider::Fcm {
            return problems;
        }
        if let Err(e) = check_https_url(&self.fcm_base_url) {
            bad("fcm_base_url", e);
        }
        if let Err(e) = check_https_url(&self.token_uri) {
            bad("token_uri", e);
        }
        // The project id becomes a URL path segment.
        if self.project_id.is_empty()
            || !self
                .project_id
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.' || b == b':')
        {
            bad(
                "project_id",
                "required with provider = \"fcm\": the service account's project_id \
                 (lower-case letters, digits, '-', '.', ':')"
                    .into(),
            );
        }
        if !self.client_email.contains('@') {
            bad("client_email", "required with provider = \"fcm\": the service account's client_email".into());
        }
        if self.key_label.trim().is_empty() {
            bad(
                "key_label",
                "required with provider = \"fcm\": the HSM label printed by \
                 `symbolon keys import-fcm`"
                    .into(),
            );
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn none_needs_no_fcm_fields() {
        assert!(PushConfig::default().problems().is_empty());
    }

    #[test]
    fn fcm_requires_its_fields() {
        let c = PushConfig {
            provider: PushProvider::Fcm,
            fcm_base_url: "http://fcm.example.com".into(),
            project_id: "Bad/Project".into(),
            ..PushConfig::default()
        };
        let fields: Vec<String> = c.problems().into_iter().map(|p| p.path).collect();
        assert_eq!(fields, ["push.fcm_base_url", "push.project_id", "push.client_email", "push.key_label"]);
    }

    #[test]
    fn loopback_http_is_allowed() {
        let c = PushConfig {
            provider: PushProvider::Fcm,
            fcm_base_url: "http://127.0.0.1:4000".into(),
            token_uri: "http://localhost:4000/token".into(),
            project_id: "demo-project".into(),
            client_email: "push@demo-project.iam.gserviceaccount.com".into(),
            key_label: "symbolon-fcm-20260101T000000Z".into(),
            ..PushConfig::default()
        };
        assert!(c.problems().is_empty(), "{:?}", c.problems());
    }

    #[test]
    fn parses_toml_shape() {
        let c: PushConfig = serde_json::from_value(serde_json::json!({
            "provider": "fcm", "request_timeout": "5s"
        }))
        .unwrap();
        assert_eq!(c.provider, PushProvider::Fcm);
        assert_eq!(c.request_timeout, Duration::from_secs(5));
        assert!(serde_json::from_value::<PushConfig>(serde_json::json!({"nope": 1})).is_err());
    }
}
