//! The SAML sign-in flow (docs/protocol.md §8) on top of the authentication sessions of
//! §5: an SP's `AuthnRequest` is checked and remembered server-side as a single-use
//! sign-in context; the browser then runs an ordinary session for the SP's service and,
//! once the phone approved it, trades (context, session, browser token) for a signed
//! `Response` to the SP's registered ACS URL. Nothing here knows HTTP.

use std::time::Duration;

use base64::Engine;
use serde::{Deserialize, Serialize};

use super::Services;
use super::config::ServiceConfig;
use super::flow::{BrowserSecret, FlowKind, browser_bound};
use super::saml_logout::{LogoutFinish, LogoutStart, SpSession};
use crate::error::{ApiError, ErrorCode};
use crate::saml::redirect::{self, RequestError};
use crate::saml::response::{
    Refusal, ResponseParams, build_refusal, build_response, claims_from_json, post_binding_value,
};
use crate::saml::{
    CertificateParams, NameIdFormat, SamlError, SamlSpConfig, active_certificate, metadata, new_saml_id,
};
use crate::store::SessionStatus;

/// How long a rendered sign-in page may be completed (typing the token id, a few
/// OTP attempts of `auth.otp_ttl` each).
pub const SIGN_IN_CONTEXT_TTL: Duration = Duration::from_secs(15 * 60);

/// An SP's request waiting for the user to sign in, kept in the session store under
/// a random id that only the rendered page knows.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SsoContext {
    pub service_id: String,
    pub sp_entity_id: String,
    /// The `AuthnRequest` ID (`InResponseTo`).
    pub request_id: String,
    pub relay_state: Option<String>,
    pub created_at: i64,
    /// SHA-256 (hex) of the flow's browser secret: `/saml/complete` must present the
    /// secret in the flow's cookie, so only the browser that got the page completes it.
    pub browser_secret_sha256: String,
    /// The NameID format the assertion gets (from the request's `NameIDPolicy`).
    #[serde(default)]
    pub name_id_format: NameIdFormat,
}

/// What `GET /saml/sso` leads to.
#[derive(Debug, Clone)]
pub enum SsoBegin {
    /// The sign-in page.
    Page(Box<SsoStart>),
    /// The request cannot be served as asked (a `NameIDPolicy` format we cannot
    /// issue): a signed refusal goes back to the SP's ACS at once.
    Refused(SamlPost),
}

/// What `GET /saml/slo` leads to.
#[derive(Debug, Clone)]
pub enum SloOutcome {
    /// Redirect to this URL carrying the signed `LogoutResponse`.
    Redirect(String),
    /// The request was asynchronous: no `LogoutResponse`, a plain page instead.
    Asynchronous,
    /// The person has other SP sessions: their logout chain runs first
    /// (`service::saml_logout`), and ends with the `LogoutResponse` (or the page).
    Chain(LogoutStart),
}

/// What the sign-in page needs after a checked `AuthnRequest`.
#[derive(Debug, Clone)]
pub struct SsoStart {
    /// Random id of the stored [`SsoContext`], embedded in the page.
    pub context_id: String,
    pub service: ServiceConfig,
    pub sp: SamlSpConfig,
    /// Scopes the page asks for: the SP's `default_scopes`.
    pub scopes: Vec<String>,
    /// The flow's browser secret, for the cookie set with the page
    /// ([`super::flow::flow_cookie_name`]); only its digest is stored.
    pub browser_secret: String,
}

/// The HTTP-POST binding message for the SP's ACS.
#[derive(Debug, Clone)]
pub struct SamlPost {
    /// The registered ACS URL (never one from a request).
    pub acs_url: String,
    pub saml_response: String,
    pub relay_state: Option<String>,
}

/// Why a SAML step was refused. [`SamlFlowError::user_message`] is what the error
/// page says; the `Display` text is the reason for the log.
#[derive(Debug, thiserror::Error)]
pub enum SamlFlowError {
    #[error("SAML is not enabled")]
    Disabled,
    #[error(transparent)]
    Request(#[from] RequestError),
    #[error("request ID {0:?} was already used (replay)")]
    Replayed(String),
    #[error("IsPassive requests cannot be served: signing in needs the user's phone")]
    Passive,
    #[error("the sign-in context is unknown, expired or already used")]
    ContextGone,
    #[error("the session is unknown, its browser token is wrong, or it is not approved")]
    NotApproved,
    #[error("the sign-in was not started in this browser (the flow's cookie is missing or wrong)")]
    OtherBrowser,
    #[error("the session was started for another service than the SAML request's")]
    WrongService,
    #[error("the session already produced a SAML response")]
    SessionUsed,
    #[error("the approved session carries no readable identity token")]
    BadIdToken,
    #[error("the logout is unknown, expired or already finished")]
    LogoutGone,
    #[error("{0}")]
    Api(ApiError),
    #[error("SAML: {0}")]
    Saml(#[from] SamlError),
}

impl From<ApiError> for SamlFlowError {
    fn from(e: ApiError) -> Self {
        SamlFlowError::Api(e)
    }
}

impl From<crate::store::SessionStoreError> for SamlFlowError {
    fn from(e: crate::store::SessionStoreError) -> Self {
        SamlFlowError::Api(e.into())
    }
}

impl SamlFlowError {
    /// The signed `LogoutResponse` redirect is not a valid `Location`.
    pub fn bad_slo_url() -> Self {
        SamlFlowError::Saml(SamlError::Config("bad SLO URL".into()))
    }

    /// `POST /saml/complete` or `/saml/cancel` without exactly their fields.
    pub fn malformed_completion_form() -> Self {
        SamlFlowError::Request(RequestError::Invalid("malformed completion or cancel form".into()))
    }

    /// HTTP status of the error page.
    pub fn status(&self) -> u16 {
        match self {
            SamlFlowError::Disabled => 404,
            SamlFlowError::Api(e) => e.code.status(),
            SamlFlowError::Saml(_) => 500,
            SamlFlowError::ContextGone
            | SamlFlowError::NotApproved
            | SamlFlowError::SessionUsed
            | SamlFlowError::LogoutGone => 409,
            SamlFlowError::OtherBrowser => ErrorCode::OriginNotAllowed.status(),
            _ => 400,
        }
    }

    /// A short title and a sentence for the person in front of the browser. Never
    /// names which check failed in detail beyond what helps them.
    pub fn user_message(&self) -> (&'static str, String) {
        let back = "Go back to the service you came from and start signing in again.";
        match self {
            SamlFlowError::Disabled => ("Not found", "This server does not offer SAML sign-in.".into()),
            SamlFlowError::Request(RequestError::UnknownSp(_)) => {
                ("Unknown service", "The service that sent you here is not registered with this sign-in server.".into())
            }
            SamlFlowError::Request(RequestError::AcsMismatch(_)) => (
                "Sign-in request refused",
                "The service asked for the answer to go to an address that is not registered for it.".into(),
            ),
            SamlFlowError::Request(RequestError::Stale(_)) => {
                ("Sign-in request expired", format!("The sign-in request is too old or its clock is off. {back}"))
            }
            SamlFlowError::Request(
                RequestError::Unsigned
                | RequestError::BadSignature
                | RequestError::UnsupportedSigAlg(_)
                | RequestError::Certificate(_),
            ) => ("Sign-in request refused", "The sign-in request's signature could not be verified.".into()),
            SamlFlowError::Request(_) => {
                ("Invalid sign-in request", format!("The sign-in request could not be understood. {back}"))
            }
            SamlFlowError::Replayed(_) => {
                ("Sign-in request already used", format!("This request was used before. {back}"))
            }
            SamlFlowError::Passive => (
                "Sign-in needs you",
                "The service asked to sign you in without interaction, which is not possible here.".into(),
            ),
            SamlFlowError::ContextGone => {
                ("Sign-in page expired", format!("This sign-in page expired or was already used. {back}"))
            }
            SamlFlowError::OtherBrowser => (
                "Sign-in started elsewhere",
                format!(
                    "This sign-in was started in another browser, or your browser did not keep its cookie \
                     (error origin_not_allowed). {back}"
                ),
            ),
            SamlFlowError::NotApproved | SamlFlowError::WrongService | SamlFlowError::SessionUsed => (
                "Sign-in not completed",
                format!("This sign-in was not approved on the phone or was already used. {back}"),
            ),
            SamlFlowError::LogoutGone => (
                "Sign-out already finished",
                "This sign-out finished or expired. You may still be signed in to services that did not answer; \
                 sign out there if so."
                    .into(),
            ),
            SamlFlowError::BadIdToken | SamlFlowError::Saml(_) => {
                ("Something went wrong", "The sign-in server could not complete the sign-in. Try again later.".into())
            }
            SamlFlowError::Api(e) if e.code == ErrorCode::RateLimited => (
                "Too many requests",
                "Too many sign-in requests came from your network. Wait a minute and try again.".into(),
            ),
            SamlFlowError::Api(e) if e.code == ErrorCode::Overloaded || e.code == ErrorCode::Unavailable => {
                ("Busy", "The sign-in server is busy. Try again in a moment.".into())
            }
            SamlFlowError::Api(_) => ("Something went wrong", "The sign-in could not be completed.".into()),
        }
    }
}

fn secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX / 4)
}

fn context_key(id: &str) -> String {
    format!("saml-sso:{id}")
}

impl Services {
    /// Parameters of a self-signed SAML certificate made for a new key.
    pub(super) fn saml_certificate_params(&self) -> CertificateParams {
        CertificateParams {
            subject_cn: self.settings.saml.subject_cn(&self.settings.issuer),
            validity: self.settings.saml.certificate_validity,
        }
    }

    fn saml_url(&self, path: &str) -> String {
        format!("{}/saml/{path}", self.settings.issuer.trim_end_matches('/'))
    }

    fn saml_sps(&self) -> Vec<SamlSpConfig> {
        self.relying_parties.saml_sps().into_iter().map(|(_, sp)| sp).collect()
    }

    /// IdP metadata (`GET /saml/metadata`). `WantAuthnRequestsSigned` is true only
    /// when every configured SP signs its requests.
    pub async fn saml_metadata(&self, now: i64) -> Result<String, SamlFlowError> {
        if !self.settings.saml.enabled {
            return Err(SamlFlowError::Disabled);
        }
        let want_signed = self.relying_parties.saml_sps().iter().all(|(_, sp)| sp.requests_signed);
        let params = self.saml_certificate_params();
        Ok(metadata::idp_metadata_for(&self.keys, &self.settings.issuer, &params, want_signed, now).await?)
    }

    /// `GET /saml/sso`: the client IP's rate (`429`), then checks the `AuthnRequest`
    /// (strict parsing, registered SP and ACS, signature when required, freshness) and
    /// its ID against replay; then the cap on pending contexts (`503 overloaded`) and
    /// stores the sign-in context for the page.
    pub async fn saml_begin(&self, query: &str, ip: std::net::IpAddr, now: i64) -> Result<SsoBegin, SamlFlowError> {
        let cfg = &self.settings.saml;
        if !cfg.enabled {
            return Err(SamlFlowError::Disabled);
        }
        self.rate_limit(&format!("ip-saml-sso:{ip}"), self.settings.limits.saml_sso_per_ip_per_minute).await?;
        let sps = self.saml_sps();
        let sso = redirect::receive_authn_request(query, &sps, &self.saml_url("sso"), cfg, now)?;
        let (service, sp) = self
            .relying_parties
            .saml_sps()
            .into_iter()
            .find(|(_, sp)| sp.entity_id == sso.sp.entity_id)
            .ok_or_else(|| RequestError::UnknownSp(sso.sp.entity_id.clone()))?;
        if sso.request.is_passive {
            return Err(SamlFlowError::Passive);
        }
        // Remember the ID for as long as the request could still pass the freshness check.
        let window = cfg.request_max_age + cfg.clock_skew * 2;
        let replay_key = format!("saml-authn:{}:{}", sp.entity_id, sso.request.id);
        if self.sessions.hit(&replay_key, 1, window).await?.is_err() {
            return Err(SamlFlowError::Replayed(sso.request.id));
        }
        let name_id_format = match &sso.name_id_format {
            Ok(f) => *f,
            Err(asked) => return Ok(SsoBegin::Refused(self.saml_refuse_name_id_policy(&sp, &sso, asked, now).await?)),
        };
        let context = SsoContext {
            service_id: service.id.clone(),
            sp_entity_id: sp.entity_id.clone(),
            request_id: sso.request.id.clone(),
            relay_state: sso.relay_state.clone(),
            created_at: now,
            browser_secret_sha256: String::new(),
            name_id_format,
        };
        let cap = self.settings.limits.saml_max_pending_contexts;
        self.admit_sign_in_context(FlowKind::Saml, cap, SIGN_IN_CONTEXT_TTL).await?;
        let context_id = crate::ids::new_id();
        let browser = BrowserSecret::generate();
        let context = SsoContext { browser_secret_sha256: browser.digest, ..context };
        let value = serde_json::to_string(&context).map_err(|_| ApiError::internal())?;
        self.sessions.put_value(&context_key(&context_id), &value, SIGN_IN_CONTEXT_TTL).await?;
        tracing::info!(sp = %sp.entity_id, request_id = %sso.request.id, "SAML sign-in started");
        Ok(SsoBegin::Page(Box::new(SsoStart {
            context_id,
            service: (*service).clone(),
            sp: sp.clone(),
            scopes: sp.default_scopes.clone(),
            browser_secret: browser.secret,
        })))
    }

    /// The signed `InvalidNameIDPolicy` Response for a request asking a NameID format
    /// we cannot issue (SAML core §3.4.1.1), posted to the SP's registered ACS.
    async fn saml_refuse_name_id_policy(
        &self,
        sp: &SamlSpConfig,
        sso: &redirect::SsoRequest<'_>,
        asked: &str,
        now: i64,
    ) -> Result<SamlPost, SamlFlowError> {
        let cert = active_certificate(&self.keys, &self.saml_certificate_params(), sp.signature_algorithm, now).await?;
        let refusal = Refusal::InvalidNameIdPolicy;
        let issuer = &self.settings.issuer;
        let xml = build_refusal(&self.keys, &cert, issuer, sp, &sso.request.id, refusal, now).await?;
        tracing::warn!(sp = %sp.entity_id, request_id = %sso.request.id, format = %asked, "SAML request refused: InvalidNameIDPolicy sent to the SP");
        Ok(SamlPost {
            acs_url: sp.acs_url.clone(),
            saml_response: post_binding_value(&xml),
            relay_state: sso.relay_state.clone(),
        })
    }

    /// The context of a page step (completion, cancel), used up whatever follows; it
    /// must be bound to this browser (`browser_secret` is the flow's cookie), compared in
    /// constant time, so that only the browser that got the page acts on it.
    async fn take_bound_sso_context(
        &self,
        context_id: &str,
        browser_secret: Option<&str>,
    ) -> Result<SsoContext, SamlFlowError> {
        let raw = self.sessions.take_value(&context_key(context_id)).await?.ok_or(SamlFlowError::ContextGone)?;
        let context: SsoContext = serde_json::from_str(&raw).map_err(|_| SamlFlowError::ContextGone)?;
        if !browser_bound(&context.browser_secret_sha256, browser_secret) {
            return Err(SamlFlowError::OtherBrowser);
        }
        Ok(context)
    }

    /// The SP a context was made for, as configured now.
    fn context_sp(&self, context: &SsoContext) -> Result<SamlSpConfig, SamlFlowError> {
        self.service(&context.service_id)
            .and_then(|s| s.saml.clone())
            .filter(|sp| sp.entity_id == context.sp_entity_id)
            .ok_or(SamlFlowError::WrongService)
    }

    /// The completion step: the session must be approved, readable with its browser
    /// token; the context must exist (it is then consumed) and `browser_secret` (the
    /// flow's cookie) must be its secret, compared in constant time, so that only the
    /// browser that got the page completes it (no login CSRF); the session must be for
    /// the context's service and started after the page; the context and the session
    /// are each used once. The claims are those of the session's identity token
    /// (signed by us; its payload is read, not re-verified).
    pub async fn saml_complete(
        &self,
        context_id: &str,
        session_id: &str,
        browser_token: &str,
        browser_secret: Option<&str>,
        now: i64,
    ) -> Result<SamlPost, SamlFlowError> {
        if !self.settings.saml.enabled {
            return Err(SamlFlowError::Disabled);
        }
        let session =
            self.browser_session(session_id, browser_token, now).await.map_err(|_| SamlFlowError::NotApproved)?;
        if session.status != SessionStatus::Approved {
            return Err(SamlFlowError::NotApproved);
        }
        let context = self.take_bound_sso_context(context_id, browser_secret).await?;
        if context.service_id != session.service_id {
            return Err(SamlFlowError::WrongService);
        }
        // "Already used" before the timing check, so a second completion of one session
        // is always reported as such, whichever second the new page was made in.
        let keep = secs(self.settings.auth.otp_ttl + self.settings.auth.browser_grace).max(60);
        let used =
            self.sessions.hit(&format!("saml-session:{}", session.id), 1, Duration::from_secs(keep as u64)).await?;
        if used.is_err() {
            return Err(SamlFlowError::SessionUsed);
        }
        if session.created_at < context.created_at {
            return Err(SamlFlowError::WrongService);
        }
        let sp = self.context_sp(&context)?;
        let id_token = self.approved_id_token(&session).await.map_err(|_| SamlFlowError::BadIdToken)?;
        let claims = id_token_claims(&id_token).ok_or(SamlFlowError::BadIdToken)?;
        let claims = claims_from_json(&claims);
        let cert = active_certificate(&self.keys, &self.saml_certificate_params(), sp.signature_algorithm, now).await?;
        let cfg = &self.settings.saml;
        // A transient NameID is a fresh opaque id per assertion (SAML core §8.3.8).
        let transient;
        let name_id = match context.name_id_format {
            NameIdFormat::Persistent => session.token_id.as_str(),
            NameIdFormat::Transient => {
                transient = new_saml_id();
                transient.as_str()
            }
        };
        let session_end = now.saturating_add(secs(cfg.session_lifetime));
        let sp_session = SpSession {
            service_id: context.service_id.clone(),
            sp_entity_id: sp.entity_id.clone(),
            name_id: name_id.to_string(),
            name_id_format: context.name_id_format,
            session_index: session.id.clone(),
        };
        self.record_sp_session(&session.token_id, &sp_session, session_end, now).await?;
        let xml = build_response(
            &self.keys,
            &cert,
            &ResponseParams {
                issuer: &self.settings.issuer,
                sp: &sp,
                in_response_to: Some(&context.request_id),
                name_id,
                name_id_format: context.name_id_format,
                session_index: &session.id,
                authn_instant: session.ended_at.unwrap_or(now),
                now,
                lifetime: cfg.assertion_lifetime,
                clock_skew: cfg.clock_skew,
                session_not_on_or_after: Some(session_end),
                claims: &claims,
            },
        )
        .await?;
        tracing::info!(sp = %sp.entity_id, session_id = %session.id, request_id = %context.request_id, "SAML response issued");
        Ok(SamlPost {
            acs_url: sp.acs_url.clone(),
            saml_response: post_binding_value(&xml),
            relay_state: context.relay_state,
        })
    }

    /// Cancel on the sign-in page, in the browser that got it (`browser_secret` is the
    /// flow's cookie): the context is used up and the SP gets a signed `Response` that
    /// says the user was not authenticated ([`Refusal::Cancelled`]), with the request's
    /// `RelayState`, at its registered ACS.
    pub async fn saml_cancel(
        &self,
        context_id: &str,
        browser_secret: Option<&str>,
        now: i64,
    ) -> Result<SamlPost, SamlFlowError> {
        if !self.settings.saml.enabled {
            return Err(SamlFlowError::Disabled);
        }
        let context = self.take_bound_sso_context(context_id, browser_secret).await?;
        let sp = self.context_sp(&context)?;
        let cert = active_certificate(&self.keys, &self.saml_certificate_params(), sp.signature_algorithm, now).await?;
        let xml =
            build_refusal(&self.keys, &cert, &self.settings.issuer, &sp, &context.request_id, Refusal::Cancelled, now)
                .await?;
        tracing::info!(sp = %sp.entity_id, request_id = %context.request_id, "SAML sign-in cancelled by the user");
        Ok(SamlPost {
            acs_url: sp.acs_url.clone(),
            saml_response: post_binding_value(&xml),
            relay_state: context.relay_state,
        })
    }

    /// `GET /saml/slo`: a checked `LogoutRequest` gets a signed `LogoutResponse`
    /// (Success; the IdP keeps no browser session to end) redirected to the SP's SLO URL,
    /// unless it is asynchronous (its `Extensions` carry `aslo:Asynchronous`): then no
    /// response is sent at all. The SP session it names is forgotten, and when the same
    /// person has other SP sessions with a SingleLogoutService, a logout chain logs
    /// them out first (SAML profiles §4.4.3.1) and the response (or the page) ends it.
    pub async fn saml_logout(&self, query: &str, now: i64) -> Result<SloOutcome, SamlFlowError> {
        let cfg = &self.settings.saml;
        if !cfg.enabled {
            return Err(SamlFlowError::Disabled);
        }
        let sps = self.saml_sps();
        let slo = redirect::receive_logout_request(query, &sps, &self.saml_url("slo"), cfg, now)?;
        let window = cfg.request_max_age + cfg.clock_skew * 2;
        let replay_key = format!("saml-logout:{}:{}", slo.sp.entity_id, slo.request.id);
        if self.sessions.hit(&replay_key, 1, window).await?.is_err() {
            return Err(SamlFlowError::Replayed(slo.request.id));
        }
        let finish = if slo.request.asynchronous {
            LogoutFinish::SignedOut
        } else {
            LogoutFinish::Redirect(
                redirect::logout_response_redirect(&self.keys, &self.settings.issuer, &slo, now).await?,
            )
        };
        let r = &slo.request;
        if let Some(start) =
            self.propagate_sp_logout(&slo.sp.entity_id, &r.name_id, &r.session_indexes, finish.clone(), now).await?
        {
            tracing::info!(sp = %slo.sp.entity_id, request_id = %r.id, "SAML logout goes on to the person's other SPs");
            return Ok(SloOutcome::Chain(start));
        }
        if slo.request.asynchronous {
            tracing::info!(sp = %slo.sp.entity_id, request_id = %slo.request.id, "SAML asynchronous logout: no response sent");
            return Ok(SloOutcome::Asynchronous);
        }
        let LogoutFinish::Redirect(url) = finish else { return Ok(SloOutcome::Asynchronous) };
        tracing::info!(sp = %slo.sp.entity_id, request_id = %slo.request.id, "SAML logout answered");
        Ok(SloOutcome::Redirect(url))
    }
}

/// The payload of a compact JWS as a JSON object.
fn id_token_claims(jwt: &str) -> Option<serde_json::Map<String, serde_json::Value>> {
    let payload = jwt.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).ok()?;
    match serde_json::from_slice(&bytes).ok()? {
        serde_json::Value::Object(m) => Some(m),
        _ => None,
    }
}
