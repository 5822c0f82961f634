//! Client authentication, one code for both places that use it: the token endpoint
//! (docs/protocol.md §14.4) and `POST /v1/auth/initiate` for a service with
//! `initiate = "backend"` (§5.1). The presented credentials must use the client's
//! registered method and no other; secrets are compared as SHA-256 in constant time;
//! a `private_key_jwt` assertion is verified by `oidc::client_auth` and its `jti` is
//! used once cluster-wide (the session store). Failures are counted, logged and
//! audited without the secret or assertion.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

use super::Services;
use super::config::{InitiateMode, ServiceConfig};
use crate::error::{ApiError, ErrorCode};
use crate::jwks::{Entry, RemoteJwks};
use crate::metrics::{METRICS, OidcEvent};
use crate::oidc::client_auth::{self, Credentials};
use crate::oidc::discovery;
use crate::oidc::params::Params;
use crate::oidc::{OAuthError, Registration};
use crate::store::audit::kinds;

/// The path of backend initiate, an accepted `aud` of its client assertions.
pub const INITIATE_PATH: &str = "/v1/auth/initiate";

/// The client authentication members of a backend initiate's JSON body (named like
/// the form fields of RFC 6749 §2.3.1 and RFC 7523 §2.2).
#[derive(Debug, Default, Clone)]
pub struct InitiateCredentials<'a> {
    pub client_id: Option<&'a str>,
    pub client_secret: Option<&'a str>,
    pub client_assertion_type: Option<&'a str>,
    pub client_assertion: Option<&'a str>,
}

impl InitiateCredentials<'_> {
    fn any(&self) -> bool {
        self.client_id.is_some()
            || self.client_secret.is_some()
            || self.client_assertion_type.is_some()
            || self.client_assertion.is_some()
    }
}

/// The key sets of clients that publish their `private_key_jwt` keys at a `jwks_uri`
/// (`crate::jwks`, as the management API's operator keys): one cache per URL, made on
/// first use, so a client added by SIGHUP gets one when it first authenticates.
#[derive(Debug)]
pub struct ClientJwks {
    cache_for: Duration,
    refetch_interval: Duration,
    sets: Mutex<HashMap<String, Arc<RemoteJwks<Value>>>>,
}

impl ClientJwks {
    /// `auth.client_jwks_cache` and `auth.client_jwks_refetch_interval`.
    pub fn new(cache_for: Duration, refetch_interval: Duration) -> Self {
        Self { cache_for, refetch_interval, sets: Mutex::new(HashMap::new()) }
    }

    fn set(&self, url: &str) -> Result<Arc<RemoteJwks<Value>>, OAuthError> {
        let mut sets = self.sets.lock().map_err(|_| OAuthError::server_error())?;
        if let Some(set) = sets.get(url) {
            return Ok(set.clone());
        }
        let set = RemoteJwks::new(url, self.cache_for, self.refetch_interval, assertion_entry).map_err(|e| {
            tracing::error!(error = %e, "cannot set up a client JWKS");
            OAuthError::server_error()
        })?;
        let set = Arc::new(set);
        sets.insert(url.to_string(), set.clone());
        Ok(set)
    }

    /// The usable keys at `url`, fresh enough to hold `kid` if the client published it
    /// (fetched again at most once per refetch interval). A set never fetched is
    /// `temporarily_unavailable`: the client cannot be checked, which is not its fault.
    async fn keys(&self, url: &str, kid: Option<&str>) -> Result<Vec<Value>, OAuthError> {
        let keys = self.set(url)?.keys(kid).await.map_err(|e| {
            tracing::warn!(error = %e, "client JWKS unavailable");
            OAuthError::temporarily_unavailable()
        })?;
        Ok(keys.iter().map(|e| e.key.clone()).collect())
    }
}

/// A JWKS entry that can verify client assertions, kept as the JWK itself.
fn assertion_entry(jwk: &Value) -> Option<Entry<Value>> {
    let (kid, _, _) = crate::oidc::jwk::assertion_key(jwk)?;
    Some(Entry { kid, key: jwk.clone() })
}

/// An OAuth error of client authentication as the stable code of docs/protocol.md §10.
fn api_error(e: OAuthError) -> ApiError {
    let code = match e.error {
        "invalid_client" => ErrorCode::InvalidClient,
        "invalid_request" => ErrorCode::InvalidRequest,
        "temporarily_unavailable" => ErrorCode::Unavailable,
        _ => ErrorCode::Internal,
    };
    ApiError::new(code, e.description)
}

impl Services {
    /// Checks `credentials` against the client's registration: the registered method
    /// and no other, the secret, or the assertion (signed by a registered key, `aud`
    /// one of `audiences`, `jti` not used before). Every failure is `invalid_client`.
    pub(super) async fn check_credentials(
        &self,
        client_id: &str,
        registration: Registration<'_>,
        credentials: &Credentials,
        audiences: &[&str],
        now: i64,
    ) -> Result<(), OAuthError> {
        if credentials.client_id() != client_id {
            return Err(OAuthError::invalid_client("the credentials are for another client"));
        }
        if credentials.method() != registration.method {
            return Err(OAuthError::invalid_client(format!(
                "the client must authenticate with {}",
                registration.method.as_str()
            )));
        }
        match credentials {
            Credentials::Basic { secret, .. } | Credentials::Post { secret, .. } => {
                let ok = registration.secret_sha256.is_some_and(|h| client_auth::secret_matches(secret, h));
                if !ok {
                    return Err(OAuthError::invalid_client("wrong client secret"));
                }
            }
            Credentials::Assertion { assertion, .. } => {
                let keys = match registration.jwks_uri {
                    Some(url) => self.client_jwks.keys(url, client_auth::assertion_kid(assertion).as_deref()).await?,
                    None => registration.jwks_keys(),
                };
                let verified = client_auth::verify_assertion(assertion, &keys, client_id, audiences, now)?;
                let window = (verified.exp - now + crate::oidc::ASSERTION_SKEW).clamp(1, 3600);
                let key = format!("oidc-jti:{client_id}:{}", verified.jti);
                if self.sessions.hit(&key, 1, Duration::from_secs(window.unsigned_abs())).await?.is_err() {
                    return Err(OAuthError::invalid_client("client assertion refused: jti already used"));
                }
            }
            Credentials::Public { .. } => {}
        }
        Ok(())
    }

    /// Counts, logs and audits a failed client authentication at `endpoint`: the client
    /// id when it names a configured service (else `-`: a caller's arbitrary string is
    /// not recorded), never the secret or assertion.
    pub(super) fn client_auth_failed(&self, endpoint: &str, client_id: &str, method: &str, e: &OAuthError) {
        let client_id = if self.service(client_id).is_some() { client_id } else { "-" };
        METRICS.oidc(OidcEvent::ClientAuthFailed);
        tracing::warn!(endpoint, client_id = %client_id, method, reason = %e.description, "client authentication failed");
        self.audit_event(
            kinds::OIDC_CLIENT_AUTH_FAILED,
            client_id,
            client_id,
            serde_json::json!({"client_id": client_id, "method": method, "reason": e.description, "endpoint": endpoint}),
        );
    }

    /// `POST /v1/auth/initiate` for `service`: with `initiate = "backend"` the call must
    /// authenticate as the service (docs/protocol.md §5.1; `401 invalid_client`
    /// otherwise); a browser-mode service takes no credential members.
    pub(super) async fn authenticate_initiate(
        &self,
        service: &ServiceConfig,
        authorization: Option<&str>,
        given: &InitiateCredentials<'_>,
        now: i64,
    ) -> Result<(), ApiError> {
        let registration = match (service.initiate, &service.client_auth) {
            (InitiateMode::Browser, _) if given.any() => {
                return Err(ApiError::invalid_request("this service takes no client authentication on initiate"));
            }
            (InitiateMode::Browser, _) => return Ok(()),
            (InitiateMode::Backend, Some(auth)) => auth.registration(),
            // `config check` refuses a backend service without credentials.
            (InitiateMode::Backend, None) => return Err(ApiError::internal()),
        };
        // The client id is the service's; said once more only where nothing else names it.
        let client_id = given.client_id.or(authorization.is_none().then_some(service.id.as_str()));
        let params = Params::from_pairs([
            ("client_id", client_id),
            ("client_secret", given.client_secret),
            ("client_assertion_type", given.client_assertion_type),
            ("client_assertion", given.client_assertion),
        ]);
        let endpoint = INITIATE_PATH;
        let credentials = match client_auth::presented_with_bearer(authorization, &params) {
            Ok(c) => c,
            Err(e) => {
                if e.is_client_auth() {
                    self.client_auth_failed(endpoint, &service.id, "-", &e);
                }
                return Err(api_error(e));
            }
        };
        let initiate_url = discovery::endpoint(&self.settings.issuer, INITIATE_PATH);
        let issuer = self.settings.issuer.as_str();
        let audiences = [initiate_url.as_str(), issuer, issuer.trim_end_matches('/')];
        let checked = self.check_credentials(&service.id, registration, &credentials, &audiences, now).await;
        checked.map_err(|e| {
            if e.is_client_auth() {
                self.client_auth_failed(endpoint, credentials.client_id(), credentials.method().as_str(), &e);
            }
            api_error(e)
        })
    }
}
