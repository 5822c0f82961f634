//! The operator console at `/console/` (admin listener only; docs/operations.md,
//! "Operator console"): a backend-for-frontend over the same `Services` calls as the
//! management API. The browser holds one opaque cookie (`HttpOnly`,
//! `SameSite=Strict`, `Secure` with a `__Host-` name on https); the session — who
//! signed in, their scopes, the provider's tokens, the CSRF token — lives in the
//! session store. Every state-changing request is a form POST carrying the CSRF
//! token; every action checks its scope on the server whatever the page showed.
//!
//! `signin.rs`: the authorization code flow with PKCE and the break-glass form;
//! `pages.rs`: Overview, Users (with their actions), Sign-in flows and Audit;
//! `keys.rs`: the key catalog and its life cycle; `trust.rs`: the trust lists and
//! "Refresh now"; `services.rs`: the relying parties and "Reload configuration".

mod keys;
mod pages;
mod services;
mod signin;
mod trust;

use axum::Router;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use super::AppState;
use super::config::ConsoleConfig;
use super::operator::Operator;
use crate::error::ApiError;
use crate::ids::now_unix;
use crate::web;

/// The console routes (merged into the admin router when `[console] enabled`).
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/console", get(|| async { Redirect::to("/console/") }))
        .route("/console/", get(pages::overview))
        .route("/console/signin", get(signin::signin_page))
        .route("/console/login", post(signin::login))
        .route("/console/callback", get(signin::callback))
        .route("/console/break-glass", post(signin::break_glass))
        .route("/console/signout", post(signin::signout))
        .route("/console/users", get(pages::users))
        .route("/console/users/{token_id}", get(pages::user))
        .route("/console/users/{token_id}/delete", get(pages::confirm_delete).post(pages::delete))
        .route("/console/credentials/{device_id}/{action}", get(pages::confirm_change).post(pages::change))
        .route("/console/keys", get(keys::keys))
        .route("/console/keys/{action}/{target}", get(keys::confirm).post(keys::change))
        .route("/console/trust", get(trust::trust))
        .route("/console/trust/refresh", get(trust::confirm_refresh).post(trust::refresh))
        .route("/console/services", get(services::services))
        .route("/console/services/reload", get(services::confirm_reload).post(services::reload))
        .route("/console/flows", get(pages::flows))
        .route("/console/audit", get(pages::audit))
        .route("/console/audit/export", get(pages::audit_export))
}

/// The session cookie's name: `__Host-` on https (`Secure`, `Path=/`, no `Domain`).
fn session_cookie_name(config: &ConsoleConfig) -> &'static str {
    if config.secure() { "__Host-symbolon-console" } else { "symbolon-console" }
}

/// The sign-in cookie: binds a pending sign-in and the sign-in forms' CSRF token to
/// the browser that opened the sign-in page.
fn signin_cookie_name(config: &ConsoleConfig) -> &'static str {
    if config.secure() { "__Host-symbolon-console-signin" } else { "symbolon-console-signin" }
}

/// A `Set-Cookie` value (`max_age` 0 clears the cookie).
fn cookie(config: &ConsoleConfig, name: &str, value: &str, max_age: u64) -> Option<HeaderValue> {
    let secure = if config.secure() { "; Secure" } else { "" };
    HeaderValue::from_str(&format!("{name}={value}; Path=/; Max-Age={max_age}; HttpOnly; SameSite=Strict{secure}")).ok()
}

/// The value of cookie `name`, if sent exactly once.
fn cookie_value(headers: &HeaderMap, name: &str) -> Option<String> {
    let mut found = None;
    for h in headers.get_all(header::COOKIE) {
        for pair in h.to_str().ok()?.split(';') {
            if let Some((k, v)) = pair.trim().split_once('=')
                && k == name
                && found.replace(v.to_string()).is_some()
            {
                return None;
            }
        }
    }
    found.filter(|v: &String| crate::ids::is_id(v))
}

/// Constant-time equality of two tokens.
fn same(a: &str, b: &str) -> bool {
    !a.is_empty() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// An HTML answer with its CSP.
fn html(status: StatusCode, page: web::Page) -> Response {
    super::pages::html(status, page)
}

/// The console's error page (HTML, with the request id).
fn error_page(status: StatusCode, title: &str, message: &str) -> Response {
    html(status, web::error_page(&web::nonce(), title, message, super::request_id::current().as_deref()))
}

/// An [`ApiError`] as the console's error page; server errors are logged.
fn api_error_page(e: &ApiError) -> Response {
    let status = StatusCode::from_u16(e.code.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if status.is_server_error() {
        tracing::error!(code = e.code.as_str(), "console request failed");
        return error_page(status, "Something went wrong", "The request could not be completed. Try again.");
    }
    let mut r = error_page(status, "Not possible", &e.detail);
    if let Some(s) = e.retry_after
        && let Ok(v) = HeaderValue::from_str(&s.to_string())
    {
        r.headers_mut().insert(header::RETRY_AFTER, v);
    }
    r
}

/// A console session as kept in the session store.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct SessionRecord {
    sub: String,
    scopes: Vec<String>,
    break_glass: bool,
    csrf: String,
    created_at: i64,
    seen_at: i64,
    /// The provider's tokens (absent for break-glass): the access token is checked
    /// again on every request, as the management API checks it.
    access_token: Option<String>,
    refresh_token: Option<String>,
}

impl SessionRecord {
    fn operator(&self) -> Operator {
        Operator::restore(self.sub.clone(), self.scopes.clone(), self.break_glass)
    }

    /// Seconds the session may still live at `now`: the idle and the absolute limit.
    fn ttl(&self, config: &ConsoleConfig, now: i64) -> i64 {
        let idle = self.seen_at + config.idle_timeout.as_secs() as i64 - now;
        let absolute = self.created_at + config.absolute_timeout.as_secs() as i64 - now;
        idle.min(absolute)
    }
}

/// Stores `record` under the cookie `secret` for what its limits leave.
async fn save(state: &AppState, secret: &str, record: &SessionRecord, now: i64) -> Result<(), ApiError> {
    let ttl = record.ttl(&state.http.console, now).max(1) as u64;
    let text = serde_json::to_string(record).map_err(|_| ApiError::internal())?;
    state.services.console_put_session(secret, &text, std::time::Duration::from_secs(ttl)).await
}

/// A signed-in operator (the extractor of every signed-in page). Without a live
/// session: a GET is sent to the sign-in page, anything else gets `401`.
pub struct Console {
    secret: String,
    record: SessionRecord,
    pub operator: Operator,
}

impl Console {
    /// The session's CSRF token.
    fn csrf(&self) -> &str {
        &self.record.csrf
    }

    /// The posted CSRF token matches the session's.
    fn csrf_ok(&self, posted: Option<&str>) -> bool {
        posted.is_some_and(|p| same(p, &self.record.csrf))
    }

    /// `403` with the console's page when the operator lacks `scope`; the refusal is
    /// audited as the management API audits it.
    async fn require(&self, state: &AppState, scope: &str) -> Result<(), Response> {
        if self.operator.has(scope) {
            return Ok(());
        }
        let detail = serde_json::json!({"action": "denied", "missing_scope": scope, "via": "console"});
        if let Err(e) = state.services.management().record(&self.operator.actor(), "management", detail).await {
            return Err(api_error_page(&e));
        }
        Err(error_page(StatusCode::FORBIDDEN, "Not allowed", &format!("This needs the scope {scope}.")))
    }

    /// A confirmation form posted for an action needing `scope`: the CSRF token first
    /// (`403`), then the scope (`403`, audited), then the reason (`400` without one).
    /// Returns the reason.
    async fn confirmed(
        &self,
        state: &AppState,
        scope: &str,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<String, Response> {
        if !csrf_posted(self, headers, body) {
            return Err(csrf_refused());
        }
        self.require(state, scope).await?;
        reason_posted(headers, body).ok_or_else(reason_missing)
    }

    /// How the operator authenticated, for audit events.
    fn auth(&self) -> &'static str {
        if self.operator.break_glass { "break_glass" } else { "oidc" }
    }
}

fn to_signin(parts: &Parts, message: &str) -> Response {
    if parts.method == axum::http::Method::GET {
        Redirect::to(&format!("/console/signin?m={message}")).into_response()
    } else {
        error_page(StatusCode::UNAUTHORIZED, "Signed out", "Your console session has ended. Sign in again.")
    }
}

impl FromRequestParts<AppState> for Console {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        let config = &state.http.console;
        let Some(secret) = cookie_value(&parts.headers, session_cookie_name(config)) else {
            return Err(to_signin(parts, "signin"));
        };
        let text = state.services.console_session(&secret).await.map_err(|e| api_error_page(&e))?;
        let Some(mut record) = text.and_then(|t| serde_json::from_str::<SessionRecord>(&t).ok()) else {
            return Err(to_signin(parts, "expired"));
        };
        let now = now_unix();
        if record.ttl(config, now) <= 0 {
            let _ = state.services.console_end_session(&secret).await;
            return Err(to_signin(parts, "expired"));
        }
        if !record.break_glass {
            match signin::current_operator(state, &mut record).await {
                Some(operator) => {
                    record.sub = operator.sub.clone();
                    record.scopes = operator.scope_list();
                }
                None => {
                    let _ = state.services.console_end_session(&secret).await;
                    return Err(to_signin(parts, "expired"));
                }
            }
        }
        record.seen_at = now;
        save(state, &secret, &record, now).await.map_err(|e| api_error_page(&e))?;
        let operator = record.operator();
        Ok(Console { secret, record, operator })
    }
}

/// The fields of a urlencoded form body, each at most once (a repeated field or
/// another media type: `None`).
fn form(headers: &HeaderMap, body: &[u8]) -> Option<std::collections::HashMap<String, String>> {
    let media = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok())?;
    if media.split(';').next()?.trim() != "application/x-www-form-urlencoded" {
        return None;
    }
    let mut out = std::collections::HashMap::new();
    for (k, v) in url::form_urlencoded::parse(body) {
        if out.insert(k.into_owned(), v.into_owned()).is_some() {
            return None;
        }
    }
    Some(out)
}

/// The posted form of an action carries the session's CSRF token.
fn csrf_posted(console: &Console, headers: &HeaderMap, body: &[u8]) -> bool {
    let fields = form(headers, body);
    console.csrf_ok(fields.as_ref().and_then(|f| f.get("csrf")).map(String::as_str))
}

/// The reason an operator gave in a confirmation form (required there; the service
/// checks its length and characters); `None` when the field is missing or blank.
fn reason_posted(headers: &HeaderMap, body: &[u8]) -> Option<String> {
    let reason = form(headers, body)?.remove("reason")?.trim().to_string();
    (!reason.is_empty()).then_some(reason)
}

/// `400` for a confirmation posted without a reason.
fn reason_missing() -> Response {
    error_page(
        StatusCode::BAD_REQUEST,
        "A reason is needed",
        "Say why in the Reason field (it is kept in the audit trail), then confirm again.",
    )
}

/// `403` for a state-changing request without the right CSRF token.
fn csrf_refused() -> Response {
    tracing::warn!("console request refused: missing or wrong CSRF token");
    error_page(StatusCode::FORBIDDEN, "Request refused", "The form was not sent by this console (CSRF check failed).")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn cookies_are_host_prefixed_and_secure_on_https_only() {
        let https = ConsoleConfig { url: "https://admin.example".into(), ..Default::default() };
        let c = cookie(&https, session_cookie_name(&https), "v", 60).unwrap();
        assert_eq!(c, "__Host-symbolon-console=v; Path=/; Max-Age=60; HttpOnly; SameSite=Strict; Secure");
        assert_eq!(signin_cookie_name(&https), "__Host-symbolon-console-signin");
        let http = ConsoleConfig { url: "http://127.0.0.1:8081".into(), ..Default::default() };
        let c = cookie(&http, session_cookie_name(&http), "v", 0).unwrap();
        assert_eq!(c, "symbolon-console=v; Path=/; Max-Age=0; HttpOnly; SameSite=Strict");
        assert_eq!(http.redirect_uri(), "http://127.0.0.1:8081/console/callback");
    }

    #[test]
    fn only_an_id_shaped_cookie_sent_once_counts() {
        let id = crate::ids::new_id();
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, HeaderValue::from_str(&format!("a=b; symbolon-console={id}")).unwrap());
        assert_eq!(cookie_value(&h, "symbolon-console"), Some(id.clone()));
        h.append(header::COOKIE, HeaderValue::from_str(&format!("symbolon-console={id}")).unwrap());
        assert_eq!(cookie_value(&h, "symbolon-console"), None, "sent twice");
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, HeaderValue::from_static("symbolon-console=short"));
        assert_eq!(cookie_value(&h, "symbolon-console"), None);
        assert!(!same("", ""), "an empty token never matches");
    }

    #[test]
    fn a_session_lives_until_idle_or_absolute_limit() {
        let config = ConsoleConfig::default();
        let r = SessionRecord {
            sub: "a".into(),
            scopes: vec![],
            break_glass: false,
            csrf: "c".into(),
            created_at: 0,
            seen_at: 0,
            access_token: None,
            refresh_token: None,
        };
        assert_eq!(r.ttl(&config, 0), 15 * 60);
        let late = SessionRecord { seen_at: 8 * 3600 - 60, ..r };
        assert_eq!(late.ttl(&config, 8 * 3600 - 60), 60, "the absolute limit wins");
    }
}
