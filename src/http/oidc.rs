//! OpenID Connect endpoints (docs/protocol.md §14): discovery, `/authorize` and the
//! hosted page's completion and cancel steps, `/token` and `/userinfo`. Thin: they
//! read the request and shape the answer; the flow is `service::oidc`. Problems at
//! the authorization endpoint before the client is known become an HTML error page
//! (never a redirect); `/token` and `/userinfo` answer RFC 6749 §5.2 / RFC 6750 §3
//! error JSON, mapped here in [`oauth_error`] and nowhere else.

use std::net::IpAddr;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::extract::ClientIp;
use super::flow::{self, is_form, page_form};
use super::pages::{error_page, html};
use crate::ids::now_unix;
use crate::service::flow::FlowKind;
use crate::service::oidc::{AuthorizeFailure, Completion, EndSession, OAuthError, OidcPageError};
use crate::service::saml::SIGN_IN_CONTEXT_TTL;
use crate::web::{self, OidcReturn, SignInTarget};

fn redirect(status: StatusCode, url: &str) -> Response {
    match HeaderValue::from_str(url) {
        Ok(location) => {
            let mut r = status.into_response();
            r.headers_mut().insert(header::LOCATION, location);
            r
        }
        Err(_) => page_error("redirect", &OidcPageError::BadRedirectUri),
    }
}

/// The error page for a refused step, logged with its reason.
fn page_error(step: &'static str, e: &OidcPageError) -> Response {
    let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_REQUEST);
    if status.is_server_error() {
        tracing::error!(step, reason = %e, "OIDC step failed");
    } else {
        tracing::warn!(step, reason = %e, "OIDC request refused");
    }
    let (title, message) = e.user_message();
    let retry_after = if let OidcPageError::Api(api) = e { api.retry_after } else { None };
    error_page(status, title, &message, retry_after)
}

/// An OAuth error as JSON (RFC 6749 §5.2), `no-store`; client authentication failures
/// are `401` with a `Basic` challenge, bearer-token failures `401` with a `Bearer` one.
fn oauth_error(e: &OAuthError) -> Response {
    let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::BAD_REQUEST);
    let body = serde_json::json!({"error": e.error, "error_description": e.description});
    let mut r = (status, Json(body)).into_response();
    let h = r.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    let challenge = match e.error {
        "invalid_client" => Some("Basic realm=\"symbolon\"".to_string()),
        "invalid_token" => Some(format!(
            "Bearer realm=\"symbolon\", error=\"invalid_token\", error_description=\"{}\"",
            e.description.replace(['"', '\\'], "")
        )),
        _ => None,
    };
    if let Some(v) = challenge.and_then(|c| HeaderValue::from_str(&c).ok()) {
        h.insert(header::WWW_AUTHENTICATE, v);
    }
    r
}

/// `GET /.well-known/openid-configuration` (and the RFC 8414 path).
pub async fn discovery(State(state): State<AppState>) -> Response {
    let mut r = Json(state.services.oidc_discovery()).into_response();
    r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=300"));
    r
}

async fn authorize(state: &AppState, ip: IpAddr, raw: &[u8], answer: StatusCode) -> Response {
    match state.services.oidc_authorize(raw, ip, now_unix()).await {
        Ok(start) => {
            let target = SignInTarget {
                service_id: &start.service.id,
                service_name: &start.service.name,
                scopes: &start.scopes,
            };
            let ret = OidcReturn {
                context_id: &start.context_id,
                return_host: &start.return_host,
                return_origin: start.return_origin.as_deref(),
                login_hint: start.login_hint.as_deref(),
            };
            let origin = state.services.settings().issuer_origin();
            let mut response =
                html(StatusCode::OK, web::oidc_signin_page(&web::nonce(), origin.as_deref(), &target, &ret));
            let ttl = SIGN_IN_CONTEXT_TTL.as_secs();
            if let Some(cookie) = flow::set_cookie(state, FlowKind::Oidc, &start.context_id, &start.browser_secret, ttl)
            {
                response.headers_mut().append(header::SET_COOKIE, cookie);
            }
            response
        }
        Err(AuthorizeFailure::Page(e)) => page_error("authorize", &e),
        Err(AuthorizeFailure::Redirect { url, .. }) => redirect(answer, &url),
    }
}

/// `GET /authorize`.
pub async fn authorize_get(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    RawQuery(query): RawQuery,
) -> Response {
    authorize(&state, ip, query.unwrap_or_default().as_bytes(), StatusCode::FOUND).await
}

/// `POST /authorize` (form).
pub async fn authorize_post(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !is_form(&headers) {
        return page_error("authorize", &OidcPageError::UnknownClient);
    }
    authorize(&state, ip, &body, StatusCode::SEE_OTHER).await
}

/// The redirect that ends a flow, dropping the flow's cookie (a refused attempt keeps
/// it; it expires with the context).
fn flow_end(state: &AppState, context_id: &str, url: &str) -> Response {
    let mut response = redirect(StatusCode::SEE_OTHER, url);
    if let Some(clear) = flow::set_cookie(state, FlowKind::Oidc, context_id, "", 0) {
        response.headers_mut().append(header::SET_COOKIE, clear);
    }
    response
}

/// `POST /authorize/complete` (form: `context`, `session_id`, `browser_token`; the
/// flow's cookie): the redirect to the client with `code`, `state` and `iss`.
pub async fn complete(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some([ctx, sid, bt]) = page_form(&headers, &body, ["context", "session_id", "browser_token"]) else {
        return page_error("complete", &OidcPageError::ContextGone);
    };
    let secret = flow::presented(&state, &headers, FlowKind::Oidc, &ctx);
    let step =
        Completion { context_id: &ctx, session_id: &sid, browser_token: &bt, browser_secret: secret.as_deref(), ip };
    match state.services.oidc_complete(step, now_unix()).await {
        Ok(url) => flow_end(&state, &ctx, &url),
        Err(e) => page_error("complete", &e),
    }
}

/// `POST /authorize/cancel` (form: `context`; the flow's cookie): back to the client
/// with `access_denied`.
pub async fn cancel(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some([ctx]) = page_form(&headers, &body, ["context"]) else {
        return page_error("cancel", &OidcPageError::ContextGone);
    };
    let secret = flow::presented(&state, &headers, FlowKind::Oidc, &ctx);
    match state.services.oidc_cancel(&ctx, secret.as_deref(), ip).await {
        Ok(url) => flow_end(&state, &ctx, &url),
        Err(e) => page_error("cancel", &e),
    }
}

/// `POST /token`.
pub async fn token(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    if !is_form(&headers) {
        return oauth_error(&OAuthError::invalid_request("the body must be application/x-www-form-urlencoded"));
    }
    let authorization = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    match state.services.oidc_token(authorization, &body, now_unix()).await {
        Ok(tokens) => {
            let mut r = Json(tokens).into_response();
            let h = r.headers_mut();
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
            r
        }
        Err(e) => oauth_error(&e),
    }
}

async fn end_session(state: &AppState, raw: &[u8]) -> Response {
    match state.services.oidc_end_session(raw).await {
        Ok(EndSession::Redirect(url)) => redirect(StatusCode::SEE_OTHER, &url),
        Ok(EndSession::SamlLogout(start)) => super::pages::start_logout_chain(state, &start),
        Ok(EndSession::SignedOut) => html(
            StatusCode::OK,
            web::notice_page(&web::nonce(), "Signed out", "You are signed out. You can close this window."),
        ),
        Err(e) => page_error("end_session", &e),
    }
}

/// `GET /end_session` (RP-Initiated Logout 1.0).
pub async fn end_session_get(State(state): State<AppState>, RawQuery(query): RawQuery) -> Response {
    end_session(&state, query.unwrap_or_default().as_bytes()).await
}

/// `POST /end_session` (form).
pub async fn end_session_post(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    if !is_form(&headers) {
        return page_error("end_session", &OidcPageError::BadLogout("the body must be a form"));
    }
    end_session(&state, &body).await
}

/// `GET`/`POST /userinfo` with `Authorization: Bearer`.
pub async fn userinfo(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim());
    match state.services.oidc_userinfo(token).await {
        Ok(claims) => {
            let mut r = Json(claims).into_response();
            r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            r
        }
        Err(e) => oauth_error(&e),
    }
}
