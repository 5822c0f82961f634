//! The OpenID Connect authorization code flow (docs/protocol.md §14) on top of the
//! authentication sessions of §5, like the SAML flow: a checked authorization request
//! is kept server-side as a single-use sign-in context; the hosted page runs an
//! ordinary session for the client's service and, once the phone approved it, trades
//! (context, session, browser token) for a code sent to the registered redirect URI.
//! The browser token never leaves the issuer origin. The token endpoint authenticates
//! the client, exchanges the code once and signs the id_token in the HSM. Nothing here
//! knows HTTP.

use std::net::IpAddr;
use std::sync::Arc;

use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::Services;
use super::config::{SCOPES, ServiceConfig};
use super::flow::{BrowserSecret, FlowKind, browser_bound};
use super::idtoken::signing_input;
use super::saml::SIGN_IN_CONTEXT_TTL;
use super::saml_logout::{LogoutFinish, LogoutStart};
use crate::error::{ApiError, ErrorCode};
use crate::keyring::KeyPurpose;
use crate::metrics::{METRICS, OidcEvent};
pub use crate::oidc::OAuthError;
use crate::oidc::authorize;
use crate::oidc::client_auth::{self, Credentials};
use crate::oidc::discovery::{self, TOKEN_PATH};
use crate::oidc::params::Params;
use crate::oidc::{AMR, CLAIMS, CODE_LIFETIME, OidcClientConfig};
use crate::store::SessionStatus;
use crate::store::audit::kinds;

pub use crate::oidc::new_client_secret;

impl From<crate::store::SessionStoreError> for OAuthError {
    fn from(e: crate::store::SessionStoreError) -> Self {
        OAuthError::from(ApiError::from(e))
    }
}

/// A checked authorization request waiting for the user to sign in.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct AuthzContext {
    client_id: String,
    redirect_uri: String,
    state: Option<String>,
    nonce: Option<String>,
    code_challenge: Option<String>,
    created_at: i64,
    /// SHA-256 of the flow's browser secret (`service::flow`): only the browser that
    /// got the page completes or cancels it.
    browser_secret_sha256: String,
}

/// What an authorization code stands for, kept under its hash for [`CODE_LIFETIME`],
/// sealed under the data key (it holds the claims).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct CodeRecord {
    client_id: String,
    redirect_uri: String,
    code_challenge: Option<String>,
    nonce: Option<String>,
    /// Granted scopes of docs/protocol.md §7.3 (without `openid`).
    scopes: Vec<String>,
    session_id: String,
    auth_time: i64,
    sub: String,
    claims: Map<String, Value>,
    created_at: i64,
    /// The person's key for single logout (`service::saml_logout::person_key`).
    #[serde(default)]
    person: String,
}

/// What an access token stands for, kept under its hash for `auth.access_token_ttl`,
/// sealed under the data key (it holds the claims).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct AccessRecord {
    client_id: String,
    scopes: Vec<String>,
    sub: String,
    claims: Map<String, Value>,
}

/// What the hosted sign-in page needs after a checked authorization request.
#[derive(Debug, Clone)]
pub struct AuthorizeStart {
    /// Random id of the stored context, embedded in the page.
    pub context_id: String,
    pub service: Arc<ServiceConfig>,
    /// The scopes the page asks the phone for.
    pub scopes: Vec<String>,
    pub login_hint: Option<String>,
    /// The host the browser returns to (shown on the page).
    pub return_host: String,
    /// The origin of the redirect URI (the page's `form-action`).
    pub return_origin: Option<String>,
    /// The flow's browser secret, for the cookie set with the page; only its digest
    /// is stored.
    pub browser_secret: String,
}

/// The completion form of the hosted page, with the flow's cookie and the client IP.
#[derive(Debug, Clone, Copy)]
pub struct Completion<'a> {
    pub context_id: &'a str,
    pub session_id: &'a str,
    pub browser_token: &'a str,
    /// The flow's cookie, if the browser sent it.
    pub browser_secret: Option<&'a str>,
    pub ip: IpAddr,
}

/// Why a step of the flow ends on an error page of ours rather than at the client.
#[derive(Debug, thiserror::Error)]
pub enum OidcPageError {
    #[error("client_id is missing, repeated or names no OpenID Connect client")]
    UnknownClient,
    #[error("redirect_uri is missing, repeated or not registered for the client")]
    BadRedirectUri,
    #[error("the sign-in context is unknown, expired or already used")]
    ContextGone,
    #[error("the session is unknown, its browser token is wrong, or it is not approved")]
    NotApproved,
    #[error("the sign-in was not started in this browser (the flow's cookie is missing or wrong)")]
    OtherBrowser,
    #[error("the session was started for another client or before the page")]
    WrongService,
    #[error("the session already produced a code")]
    SessionUsed,
    #[error("the approved session carries no readable identity token")]
    BadIdToken,
    #[error("logout request refused: {0}")]
    BadLogout(&'static str),
    #[error("{0}")]
    Api(ApiError),
}

impl From<ApiError> for OidcPageError {
    fn from(e: ApiError) -> Self {
        OidcPageError::Api(e)
    }
}

impl From<crate::store::SessionStoreError> for OidcPageError {
    fn from(e: crate::store::SessionStoreError) -> Self {
        OidcPageError::Api(e.into())
    }
}

impl OidcPageError {
    /// HTTP status of the error page.
    pub fn status(&self) -> u16 {
        match self {
            OidcPageError::Api(e) => e.code.status(),
            OidcPageError::BadIdToken => 500,
            OidcPageError::OtherBrowser => ErrorCode::OriginNotAllowed.status(),
            OidcPageError::ContextGone | OidcPageError::NotApproved | OidcPageError::SessionUsed => 409,
            _ => 400,
        }
    }

    /// A short title and a sentence for the person in front of the browser.
    pub fn user_message(&self) -> (&'static str, String) {
        let back = "Go back to the service you came from and start signing in again.";
        match self {
            OidcPageError::UnknownClient => {
                ("Unknown service", "The service that sent you here is not registered with this sign-in server.".into())
            }
            OidcPageError::BadRedirectUri => (
                "Sign-in request refused",
                "The service asked for the answer to go to an address that is not registered for it.".into(),
            ),
            OidcPageError::ContextGone => {
                ("Sign-in page expired", format!("This sign-in page expired or was already used. {back}"))
            }
            OidcPageError::OtherBrowser => (
                "Sign-in started elsewhere",
                format!(
                    "This sign-in was started in another browser, or your browser did not keep its cookie \
                     (error origin_not_allowed). {back}"
                ),
            ),
            OidcPageError::NotApproved | OidcPageError::WrongService | OidcPageError::SessionUsed => (
                "Sign-in not completed",
                format!("This sign-in was not approved on the phone or was already used. {back}"),
            ),
            OidcPageError::BadLogout(_) => (
                "Sign-out request refused",
                "The service's sign-out request could not be verified or names an address not registered for it."
                    .into(),
            ),
            OidcPageError::Api(e) if e.code == ErrorCode::RateLimited => (
                "Too many requests",
                "Too many sign-in requests came from your network. Wait a minute and try again.".into(),
            ),
            OidcPageError::Api(e) if e.code == ErrorCode::Overloaded || e.code == ErrorCode::Unavailable => {
                ("Busy", "The sign-in server is busy. Try again in a moment.".into())
            }
            OidcPageError::BadIdToken | OidcPageError::Api(_) => {
                ("Something went wrong", "The sign-in server could not complete the sign-in. Try again later.".into())
            }
        }
    }
}

/// An authorization request that cannot go on.
#[derive(Debug)]
pub enum AuthorizeFailure {
    /// The client or its redirect URI is wrong: an error page, never a redirect.
    Page(OidcPageError),
    /// Back to the client with `error`, `error_description`, `state` and `iss`.
    Redirect { url: String, error: OAuthError },
}

/// A successful token response (RFC 6749 §5.1, OIDC Core §3.1.3.3).
#[derive(Debug, Clone, Serialize)]
pub struct TokenResponse {
    pub access_token: String,
    pub token_type: &'static str,
    pub expires_in: u64,
    pub id_token: String,
    pub scope: String,
}

fn context_key(id: &str) -> String {
    format!("oidc-authz:{id}")
}
fn code_key(hash: &str) -> String {
    format!("oidc-code:{hash}")
}
fn code_used_key(hash: &str) -> String {
    format!("oidc-code-used:{hash}")
}
fn access_key(hash: &str) -> String {
    format!("oidc-at:{hash}")
}
fn sid_key(sid: &str) -> String {
    format!("oidc-sid:{sid}")
}
/// The person a sign-in (`sid`) was for, for RP-initiated logout to reach their SAML
/// SP sessions.
fn sid_person_key(sid: &str) -> String {
    format!("oidc-sid-person:{sid}")
}

/// Where RP-initiated logout goes.
#[derive(Debug, Clone)]
pub enum EndSession {
    /// Back to the client's registered `post_logout_redirect_uri` (with `state`).
    Redirect(String),
    /// A "signed out" page on Symbolon.
    SignedOut,
    /// The person's SAML SP sessions are logged out first (`service::saml_logout`);
    /// the chain ends where the two other variants would.
    SamlLogout(LogoutStart),
}

/// The payload of a compact JWS as a JSON object (our own token, read not re-verified).
fn jwt_claims(jwt: &str) -> Option<Map<String, Value>> {
    let payload = jwt.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).ok()?;
    match serde_json::from_slice(&bytes).ok()? {
        Value::Object(m) => Some(m),
        _ => None,
    }
}

fn oidc_client(service: &ServiceConfig) -> Option<&OidcClientConfig> {
    service.oidc.as_ref()
}

impl Services {
    /// The discovery document (`/.well-known/openid-configuration`).
    pub fn oidc_discovery(&self) -> Value {
        discovery::document(&self.settings.issuer, &SCOPES)
    }

    fn oidc_error_redirect(&self, redirect_uri: &str, state: Option<&str>, error: OAuthError) -> AuthorizeFailure {
        match authorize::error_redirect(redirect_uri, &error, state, &self.settings.issuer) {
            Some(url) => AuthorizeFailure::Redirect { url, error },
            None => AuthorizeFailure::Page(OidcPageError::BadRedirectUri),
        }
    }

    /// `GET`/`POST /authorize`: the client IP's rate (`429`), then the client and
    /// redirect URI (an error page when either is wrong), then the rules of
    /// docs/protocol.md §14.3; then the cap on pending contexts (`503 overloaded`), and
    /// a good request is stored as a sign-in context for the hosted page, bound to the
    /// browser by [`AuthorizeStart::browser_secret`].
    pub async fn oidc_authorize(&self, raw: &[u8], ip: IpAddr, now: i64) -> Result<AuthorizeStart, AuthorizeFailure> {
        let limit = self.settings.limits.oidc_authorize_per_ip_per_minute;
        self.rate_limit(&format!("ip-oidc-authorize:{ip}"), limit)
            .await
            .map_err(|e| AuthorizeFailure::Page(e.into()))?;
        let params = Params::parse(raw);
        let service = params
            .get("client_id")
            .and_then(|id| self.service(id))
            .filter(|s| s.oidc.is_some())
            .ok_or(AuthorizeFailure::Page(OidcPageError::UnknownClient))?;
        let client = oidc_client(&service).ok_or(AuthorizeFailure::Page(OidcPageError::UnknownClient))?;
        let redirect_uri = params
            .get("redirect_uri")
            .filter(|r| client.has_redirect_uri(r))
            .ok_or(AuthorizeFailure::Page(OidcPageError::BadRedirectUri))?
            .to_string();
        let request = authorize::check(&params, client, &SCOPES, &service.allowed_scopes).map_err(|e| {
            tracing::info!(client_id = %service.id, error = e.error, reason = %e.description, "authorization request refused");
            self.oidc_error_redirect(&redirect_uri, params.get("state"), e)
        })?;
        let cap = self.settings.limits.oidc_max_pending_contexts;
        self.admit_sign_in_context(FlowKind::Oidc, cap, SIGN_IN_CONTEXT_TTL)
            .await
            .map_err(|e| AuthorizeFailure::Page(e.into()))?;
        let browser = BrowserSecret::generate();
        let context = AuthzContext {
            client_id: service.id.clone(),
            redirect_uri: redirect_uri.clone(),
            state: request.state,
            nonce: request.nonce,
            code_challenge: request.code_challenge,
            created_at: now,
            browser_secret_sha256: browser.digest,
        };
        let context_id = crate::ids::new_id();
        let json = serde_json::to_string(&context).map_err(|_| AuthorizeFailure::Page(ApiError::internal().into()))?;
        self.sessions
            .put_value(&context_key(&context_id), &json, SIGN_IN_CONTEXT_TTL)
            .await
            .map_err(|e| AuthorizeFailure::Page(e.into()))?;
        let url = url::Url::parse(&redirect_uri).ok();
        Ok(AuthorizeStart {
            context_id,
            scopes: request.scopes,
            login_hint: request.login_hint,
            return_host: url.as_ref().and_then(|u| u.host_str().map(str::to_string)).unwrap_or_default(),
            return_origin: url.map(|u| u.origin()).filter(|o| o.is_tuple()).map(|o| o.ascii_serialization()),
            service,
            browser_secret: browser.secret,
        })
    }

    /// The page's own steps (completion, cancel) per client IP (`429`), counted before
    /// anything else.
    async fn limit_page_step(&self, ip: IpAddr) -> Result<(), OidcPageError> {
        let limit = self.settings.limits.oidc_authorize_per_ip_per_minute;
        Ok(self.rate_limit(&format!("ip-oidc-page:{ip}"), limit).await?)
    }

    /// The context of a page step, used up whatever follows; it must be bound to this
    /// browser (`browser_secret` is the flow's cookie).
    async fn take_bound_context(
        &self,
        context_id: &str,
        browser_secret: Option<&str>,
    ) -> Result<AuthzContext, OidcPageError> {
        let raw = self.sessions.take_value(&context_key(context_id)).await?.ok_or(OidcPageError::ContextGone)?;
        let context: AuthzContext = serde_json::from_str(&raw).map_err(|_| OidcPageError::ContextGone)?;
        if !browser_bound(&context.browser_secret_sha256, browser_secret) {
            return Err(OidcPageError::OtherBrowser);
        }
        Ok(context)
    }

    /// Cancel on the sign-in page (in the browser that got it): the context is used up
    /// and the client gets `access_denied`.
    pub async fn oidc_cancel(
        &self,
        context_id: &str,
        browser_secret: Option<&str>,
        ip: IpAddr,
    ) -> Result<String, OidcPageError> {
        self.limit_page_step(ip).await?;
        let context = self.take_bound_context(context_id, browser_secret).await?;
        METRICS.oidc(OidcEvent::Cancelled);
        let e = OAuthError::access_denied("the user cancelled the sign-in");
        authorize::error_redirect(&context.redirect_uri, &e, context.state.as_deref(), &self.settings.issuer)
            .ok_or(OidcPageError::BadRedirectUri)
    }

    /// The completion step: the session must be approved, readable with its browser
    /// token; the context must be bound to this browser (no login CSRF), for the
    /// session's client and made before the session; the context and the session are
    /// each used once. Returns the redirect with `code`, `state`, `iss`.
    pub async fn oidc_complete(&self, step: Completion<'_>, now: i64) -> Result<String, OidcPageError> {
        self.limit_page_step(step.ip).await?;
        let session = self
            .browser_session(step.session_id, step.browser_token, now)
            .await
            .map_err(|_| OidcPageError::NotApproved)?;
        if session.status != SessionStatus::Approved {
            return Err(OidcPageError::NotApproved);
        }
        let context = self.take_bound_context(step.context_id, step.browser_secret).await?;
        if context.client_id != session.service_id {
            return Err(OidcPageError::WrongService);
        }
        let keep = self.settings.auth.otp_ttl + self.settings.auth.browser_grace;
        let used = self.sessions.hit(&format!("oidc-session:{}", session.id), 1, keep.max(CODE_LIFETIME)).await?;
        if used.is_err() {
            return Err(OidcPageError::SessionUsed);
        }
        if session.created_at < context.created_at {
            return Err(OidcPageError::WrongService);
        }
        let service =
            self.service(&context.client_id).filter(|s| s.oidc.is_some()).ok_or(OidcPageError::WrongService)?;
        let id_token = self.approved_id_token(&session).await.map_err(|_| OidcPageError::BadIdToken)?;
        let token_claims = jwt_claims(&id_token).ok_or(OidcPageError::BadIdToken)?;
        let sub = token_claims.get("sub").and_then(Value::as_str).ok_or(OidcPageError::BadIdToken)?.to_string();
        let scopes: Vec<String> = token_claims
            .get("scope")
            .and_then(Value::as_str)
            .unwrap_or("")
            .split(' ')
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect();
        let claims: Map<String, Value> =
            token_claims.into_iter().filter(|(k, _)| CLAIMS.contains(&k.as_str())).collect();
        let code = crate::oidc::random_token();
        let record = CodeRecord {
            client_id: service.id.clone(),
            redirect_uri: context.redirect_uri.clone(),
            code_challenge: context.code_challenge,
            nonce: context.nonce,
            scopes,
            session_id: session.id.clone(),
            auth_time: session.ended_at.unwrap_or(now),
            sub,
            claims,
            created_at: now,
            person: super::saml_logout::person_key(&session.token_id),
        };
        let key = code_key(&crate::oidc::sha256_hex(&code));
        let sealed = self.seal_record(&key, &record).await?;
        self.sessions.put_value(&key, &sealed, CODE_LIFETIME).await?;
        METRICS.oidc(OidcEvent::CodeIssued);
        self.audit_event(
            kinds::OIDC_CODE_ISSUED,
            &service.id,
            &service.id,
            serde_json::json!({"client_id": service.id, "session_id": session.id}),
        );
        tracing::info!(client_id = %service.id, session_id = %session.id, "authorization code issued");
        let mut pairs = vec![("code", code.as_str())];
        if let Some(s) = context.state.as_deref() {
            pairs.push(("state", s));
        }
        pairs.push(("iss", self.settings.issuer.as_str()));
        authorize::redirect_with(&context.redirect_uri, &pairs).ok_or(OidcPageError::BadRedirectUri)
    }

    /// Client authentication at the token endpoint by the client's registered method
    /// (`service::client_auth`).
    async fn authenticate_client(
        &self,
        authorization: Option<&str>,
        params: &Params,
        now: i64,
    ) -> Result<Arc<ServiceConfig>, OAuthError> {
        let credentials = match client_auth::presented(authorization, params) {
            Ok(c) => c,
            Err(e) => {
                if e.is_client_auth() {
                    self.client_auth_failed(TOKEN_PATH, "-", "-", &e);
                }
                return Err(e);
            }
        };
        let result = self.check_client(&credentials, now).await;
        if let Err(e) = &result
            && e.is_client_auth()
        {
            self.client_auth_failed(TOKEN_PATH, credentials.client_id(), credentials.method().as_str(), e);
        }
        result
    }

    async fn check_client(&self, credentials: &Credentials, now: i64) -> Result<Arc<ServiceConfig>, OAuthError> {
        let service = self
            .service(credentials.client_id())
            .filter(|s| s.oidc.is_some())
            .ok_or_else(|| OAuthError::invalid_client("unknown client"))?;
        let client = oidc_client(&service).ok_or_else(|| OAuthError::invalid_client("unknown client"))?;
        let token_url = discovery::endpoint(&self.settings.issuer, TOKEN_PATH);
        let issuer = self.settings.issuer.as_str();
        let audiences = [token_url.as_str(), issuer, issuer.trim_end_matches('/')];
        self.check_credentials(&service.id, client.registration(), credentials, &audiences, now).await?;
        Ok(service)
    }

    /// `POST /token` (`grant_type=authorization_code`).
    pub async fn oidc_token(
        &self,
        authorization: Option<&str>,
        body: &[u8],
        now: i64,
    ) -> Result<TokenResponse, OAuthError> {
        let result = self.oidc_token_inner(authorization, body, now).await;
        if let Err(e) = &result
            && !e.is_client_auth()
        {
            METRICS.oidc(OidcEvent::TokenRefused);
            tracing::info!(error = e.error, reason = %e.description, "token request refused");
        }
        result
    }

    async fn oidc_token_inner(
        &self,
        authorization: Option<&str>,
        body: &[u8],
        now: i64,
    ) -> Result<TokenResponse, OAuthError> {
        let params = Params::parse(body);
        let service = self.authenticate_client(authorization, &params, now).await?;
        if let Some(name) = params.repeated().first() {
            return Err(OAuthError::invalid_request(format!("parameter {name} is repeated")));
        }
        match params.get("grant_type") {
            None => return Err(OAuthError::invalid_request("grant_type is required")),
            Some("authorization_code") => {}
            Some(_) => return Err(OAuthError::unsupported_grant_type("only authorization_code is supported")),
        }
        let code = params.get("code").ok_or_else(|| OAuthError::invalid_request("code is required"))?;
        let code_hash = crate::oidc::sha256_hex(code);
        let Some(raw) = self.sessions.take_value(&code_key(&code_hash)).await? else {
            // Used before (RFC 6749 §4.1.2): revoke what the first use issued.
            if let Some(at_hash) = self.sessions.take_value(&code_used_key(&code_hash)).await? {
                let revoked = self.sessions.take_value(&access_key(&at_hash)).await?.is_some();
                METRICS.oidc(OidcEvent::CodeReplayed);
                tracing::warn!(client_id = %service.id, revoked, "authorization code replayed; its access token revoked");
                self.audit_event(
                    kinds::OIDC_CODE_REPLAYED,
                    &service.id,
                    &service.id,
                    serde_json::json!({"client_id": service.id, "access_token_revoked": revoked}),
                );
                return Err(OAuthError::invalid_grant("the code was already used; the tokens it gave are revoked"));
            }
            return Err(OAuthError::invalid_grant("the code is unknown or expired"));
        };
        let record: CodeRecord = self.open_record(&code_key(&code_hash), &raw).await?;
        // From here the code is spent: a failed exchange cannot be retried.
        let access_token = crate::oidc::random_token();
        let at_hash = crate::oidc::sha256_hex(&access_token);
        self.sessions.put_value(&code_used_key(&code_hash), &at_hash, self.settings.auth.access_token_ttl).await?;
        if record.client_id != service.id {
            return Err(OAuthError::invalid_grant("the code was issued to another client"));
        }
        if now > record.created_at + CODE_LIFETIME.as_secs() as i64 {
            return Err(OAuthError::invalid_grant("the code has expired"));
        }
        if params.get("redirect_uri") != Some(record.redirect_uri.as_str()) {
            return Err(OAuthError::invalid_grant("redirect_uri differs from the authorization request's"));
        }
        match (&record.code_challenge, params.get("code_verifier")) {
            (None, None) => {}
            (None, Some(_)) => return Err(OAuthError::invalid_grant("code_verifier without a code_challenge")),
            (Some(_), None) => return Err(OAuthError::invalid_grant("code_verifier is required")),
            (Some(challenge), Some(verifier)) => {
                let well_formed = (43..=128).contains(&verifier.len())
                    && verifier.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'));
                if !well_formed || !crate::service::otp::codes_equal(&crate::oidc::s256(verifier), challenge) {
                    return Err(OAuthError::invalid_grant("code_verifier does not match the code_challenge"));
                }
            }
        }
        let lifetime = oidc_client(&service).and_then(|c| c.id_token_lifetime).unwrap_or(self.settings.auth.token_ttl);
        let mut payload = Map::new();
        payload.insert("iss".into(), self.settings.issuer.clone().into());
        payload.insert("sub".into(), record.sub.clone().into());
        payload.insert("aud".into(), service.id.clone().into());
        payload.insert("exp".into(), (now + lifetime.as_secs() as i64).into());
        payload.insert("iat".into(), now.into());
        payload.insert("auth_time".into(), record.auth_time.into());
        if let Some(nonce) = &record.nonce {
            payload.insert("nonce".into(), nonce.clone().into());
        }
        payload.insert("sid".into(), record.session_id.clone().into());
        payload.insert("amr".into(), serde_json::json!([AMR]));
        payload.insert("jti".into(), crate::ids::new_id().into());
        payload.insert("at_hash".into(), crate::oidc::at_hash(&access_token).into());
        for (k, v) in &record.claims {
            payload.insert(k.clone(), v.clone());
        }
        let id_token = self.sign_jwt(&Value::Object(payload)).await.map_err(OAuthError::from)?;
        let access = AccessRecord {
            client_id: service.id.clone(),
            scopes: record.scopes.clone(),
            sub: record.sub.clone(),
            claims: record.claims.clone(),
        };
        let sealed = self.seal_record(&access_key(&at_hash), &access).await?;
        self.sessions.put_value(&access_key(&at_hash), &sealed, self.settings.auth.access_token_ttl).await?;
        // RP-initiated logout ends what the sign-in (`sid`) still holds: this token.
        self.sessions.put_value(&sid_key(&record.session_id), &at_hash, self.settings.auth.access_token_ttl).await?;
        if !record.person.is_empty() {
            let keep = self.settings.saml.session_lifetime.max(lifetime);
            self.sessions.put_value(&sid_person_key(&record.session_id), &record.person, keep).await?;
        }
        METRICS.oidc(OidcEvent::TokenIssued);
        self.audit_event(
            kinds::OIDC_TOKEN_ISSUED,
            &service.id,
            &service.id,
            serde_json::json!({"client_id": service.id, "session_id": record.session_id, "scopes": record.scopes}),
        );
        tracing::info!(client_id = %service.id, session_id = %record.session_id, "tokens issued");
        let mut scope = vec!["openid".to_string()];
        scope.extend(record.scopes);
        Ok(TokenResponse {
            access_token,
            token_type: "Bearer",
            expires_in: self.settings.auth.access_token_ttl.as_secs(),
            id_token,
            scope: scope.join(" "),
        })
    }

    /// `GET`/`POST /userinfo`: the claims and `sub` of the id_token, for a live access
    /// token of a client that is still configured.
    pub async fn oidc_userinfo(&self, access_token: Option<&str>) -> Result<Value, OAuthError> {
        let token = access_token.ok_or_else(|| OAuthError::invalid_token("no access token"))?;
        let key = access_key(&crate::oidc::sha256_hex(token));
        let raw = self
            .sessions
            .get_value(&key)
            .await?
            .ok_or_else(|| OAuthError::invalid_token("the access token is unknown, expired or revoked"))?;
        let record: AccessRecord = self.open_record(&key, &raw).await?;
        if self.service(&record.client_id).is_none_or(|s| s.oidc.is_none()) {
            return Err(OAuthError::invalid_token("the access token's client is no longer configured"));
        }
        let mut out = Map::new();
        out.insert("sub".into(), record.sub.into());
        out.extend(record.claims);
        Ok(Value::Object(out))
    }

    /// `GET`/`POST /end_session` (RP-Initiated Logout 1.0): `id_token_hint` verified
    /// with our keys (expiry ignored), `client_id` consistent with it,
    /// `post_logout_redirect_uri` an exact registered one (it needs a client), `state`
    /// returned. The access token the hinted sign-in (`sid`) was given is revoked, and
    /// when the same person has SAML SP sessions with a SingleLogoutService, a logout
    /// chain ends them before the redirect (docs/protocol.md §14.6).
    pub async fn oidc_end_session(&self, raw: &[u8]) -> Result<EndSession, OidcPageError> {
        let params = Params::parse(raw);
        if !params.repeated().is_empty() {
            return Err(OidcPageError::BadLogout("a parameter is repeated"));
        }
        let mut client_id = params.get("client_id").map(str::to_string);
        let mut sid = None;
        if let Some(hint) = params.get("id_token_hint") {
            let mut keys = Vec::new();
            for e in self.keys.published(KeyPurpose::Jwt) {
                let jwk = self.keys.public_jwk(&e.label).await.map_err(|e| OidcPageError::Api(e.into()))?;
                keys.push(crate::oidc::logout::OurKey { kid: e.kid.clone(), x: jwk.x, y: jwk.y });
            }
            let claims = crate::oidc::logout::verify_id_token_hint(hint, &keys, &self.settings.issuer)
                .map_err(OidcPageError::BadLogout)?;
            let aud = claims.get("aud").and_then(Value::as_str).ok_or(OidcPageError::BadLogout("no aud"))?;
            if client_id.as_deref().is_some_and(|c| c != aud) {
                return Err(OidcPageError::BadLogout("client_id is not the hint's audience"));
            }
            client_id = Some(aud.to_string());
            sid = claims.get("sid").and_then(Value::as_str).map(str::to_string);
        }
        // Everything is checked before anything ends: a refused request ends nothing.
        let answer = match params.get("post_logout_redirect_uri") {
            None => EndSession::SignedOut,
            Some(uri) => {
                let client = client_id
                    .as_deref()
                    .and_then(|id| self.service(id))
                    .and_then(|s| s.oidc.clone())
                    .ok_or(OidcPageError::BadLogout("post_logout_redirect_uri without a known client"))?;
                if !client.post_logout_redirect_uris.iter().any(|r| r == uri) {
                    return Err(OidcPageError::BadLogout("post_logout_redirect_uri is not registered"));
                }
                let pairs: Vec<(&str, &str)> = params.get("state").map(|s| vec![("state", s)]).unwrap_or_default();
                EndSession::Redirect(authorize::redirect_with(uri, &pairs).ok_or(OidcPageError::BadRedirectUri)?)
            }
        };
        let Some(sid) = sid else { return Ok(answer) };
        if let Some(at_hash) = self.sessions.take_value(&sid_key(&sid)).await? {
            let revoked = self.sessions.take_value(&access_key(&at_hash)).await?.is_some();
            tracing::info!(client_id = ?client_id, revoked, "RP-initiated logout ended the sign-in's access token");
        }
        let Some(person) = self.sessions.get_value(&sid_person_key(&sid)).await? else { return Ok(answer) };
        let finish = match &answer {
            EndSession::Redirect(url) => LogoutFinish::Redirect(url.clone()),
            _ => LogoutFinish::SignedOut,
        };
        match self.begin_sp_logout(&person, None, finish, crate::ids::now_unix()).await? {
            Some(start) => {
                tracing::info!(client_id = ?client_id, "RP-initiated logout goes on to the person's SAML SPs");
                Ok(EndSession::SamlLogout(start))
            }
            None => Ok(answer),
        }
    }

    /// A code or access-token record as the session store keeps it: its JSON sealed
    /// under the active data key in the HSM, with its store key as associated data (so
    /// a record cannot be moved to another key), like an approved identity token.
    async fn seal_record<T: Serialize>(&self, key: &str, record: &T) -> Result<String, ApiError> {
        let json = serde_json::to_vec(record).map_err(|_| ApiError::internal())?;
        Ok(self.keys.seal(key, json).await?)
    }

    /// The record [`Self::seal_record`] stored under `key`.
    async fn open_record<T: serde::de::DeserializeOwned>(&self, key: &str, sealed: &str) -> Result<T, OAuthError> {
        let plain = self.keys.open_sealed(key, sealed).await.map_err(|e| OAuthError::from(ApiError::from(e)))?;
        serde_json::from_slice(&plain).map_err(|_| OAuthError::server_error())
    }

    /// Signs a JWT payload with the active `jwt` key in the HSM (ES256).
    async fn sign_jwt(&self, payload: &Value) -> Result<String, ApiError> {
        let key = self.keys.active(KeyPurpose::Jwt)?;
        let input = signing_input(&key.kid, payload).map_err(|_| ApiError::internal())?;
        let sig = self.keys.sign_with(&key.label, input.clone().into_bytes()).await?;
        Ok(format!("{input}.{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sig)))
    }
}
