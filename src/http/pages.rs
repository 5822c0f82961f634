//! Browser-facing routes (docs/protocol.md §8): SAML metadata, SSO, SLO and the
//! completion step, and the demo relying-party page. SAML input problems become an
//! HTML error page and a log line with the reason, never a problem+json.

use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::extract::ClientIp;
use super::flow;
use crate::ids::now_unix;
use crate::service::flow::FlowKind;
use crate::service::saml::{SIGN_IN_CONTEXT_TTL, SamlFlowError, SamlPost, SloOutcome, SsoBegin};
use crate::service::saml_logout::{LOGOUT_CHAIN_TTL, LogoutFinish, LogoutStart, LogoutStep};
use crate::web::{self, Page, SignInTarget};

pub(super) fn html(status: StatusCode, page: Page) -> Response {
    let mut response = (status, page.html).into_response();
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    if let Ok(v) = HeaderValue::from_str(&page.csp) {
        h.insert(header::CONTENT_SECURITY_POLICY, v);
    }
    response
}

/// The error page for a refused SAML step, logged with its reason.
fn saml_error(step: &'static str, e: &SamlFlowError) -> Response {
    let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_REQUEST);
    if status.is_server_error() {
        tracing::error!(step, reason = %e, "SAML step failed");
    } else {
        tracing::warn!(step, reason = %e, "SAML request refused");
    }
    let (title, message) = e.user_message();
    let retry_after = if let SamlFlowError::Api(api) = e { api.retry_after } else { None };
    error_page(status, title, &message, retry_after)
}

/// A hosted flow's error page: the request id to quote, and `Retry-After` when the
/// refusal says when to come back (a rate limit, a full cap).
pub(super) fn error_page(status: StatusCode, title: &str, message: &str, retry_after: Option<u64>) -> Response {
    let mut response =
        html(status, web::error_page(&web::nonce(), title, message, super::request_id::current().as_deref()));
    if let Some(seconds) = retry_after {
        response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    response
}

/// `GET /saml/metadata`.
pub async fn metadata(State(state): State<AppState>) -> Response {
    match state.services.saml_metadata(now_unix()).await {
        Ok(xml) => {
            let mut r = xml.into_response();
            let h = r.headers_mut();
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/samlmetadata+xml"));
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=300"));
            r
        }
        Err(e) => saml_error("metadata", &e),
    }
}

/// `GET /saml/sso`: a checked `AuthnRequest` gets the sign-in page (or, when it asks
/// for a NameID format we cannot issue, the auto-POST of a signed refusal to the ACS).
pub async fn sso(State(state): State<AppState>, ClientIp(ip): ClientIp, RawQuery(query): RawQuery) -> Response {
    match state.services.saml_begin(query.as_deref().unwrap_or(""), ip, now_unix()).await {
        Ok(SsoBegin::Refused(post)) => html(
            StatusCode::OK,
            web::saml_refusal_page(&web::nonce(), &post.acs_url, &post.saml_response, post.relay_state.as_deref()),
        ),
        Ok(SsoBegin::Page(start)) => {
            let target = SignInTarget {
                service_id: &start.service.id,
                service_name: &start.service.name,
                scopes: &start.scopes,
            };
            let origin = state.services.settings().issuer_origin();
            let mut response =
                html(StatusCode::OK, web::signin_page(&web::nonce(), origin.as_deref(), &target, &start.context_id));
            let ttl = SIGN_IN_CONTEXT_TTL.as_secs();
            if let Some(cookie) =
                flow::set_cookie(&state, FlowKind::Saml, &start.context_id, &start.browser_secret, ttl)
            {
                response.headers_mut().append(header::SET_COOKIE, cookie);
            }
            response
        }
        Err(e) => saml_error("sso", &e),
    }
}

/// A `303 See Other` to `url`.
fn see_other(url: &str) -> Option<Response> {
    let location = HeaderValue::from_str(url).ok()?;
    let mut r = StatusCode::SEE_OTHER.into_response();
    r.headers_mut().insert(header::LOCATION, location);
    Some(r)
}

fn logout_step_url(chain_id: &str) -> String {
    format!(
        "/saml/logout?chain={}",
        percent_encoding::utf8_percent_encode(chain_id, percent_encoding::NON_ALPHANUMERIC)
    )
}

/// A started logout chain: its cookie, and on to its first step.
pub(super) fn start_logout_chain(state: &AppState, start: &LogoutStart) -> Response {
    let Some(mut r) = see_other(&logout_step_url(&start.chain_id)) else {
        return saml_error("slo", &SamlFlowError::LogoutGone);
    };
    if let Some(cookie) = flow::set_logout_cookie(state, &start.browser_secret, LOGOUT_CHAIN_TTL.as_secs()) {
        r.headers_mut().append(header::SET_COOKIE, cookie);
    }
    r
}

/// `GET /saml/logout?chain=…`: the next step of a single logout (docs/protocol.md
/// §8.1): the page that sends the browser to the next SP, or the chain's end (its
/// cookie cleared).
pub async fn logout_step(State(state): State<AppState>, headers: HeaderMap, RawQuery(query): RawQuery) -> Response {
    let query = query.unwrap_or_default();
    let chain = url::form_urlencoded::parse(query.as_bytes()).find(|(k, _)| k == "chain").map(|(_, v)| v.into_owned());
    let Some(chain) = chain else { return saml_error("logout", &SamlFlowError::LogoutGone) };
    let secret = flow::presented_logout(&state, &headers);
    let step = state.services.saml_logout_step(&chain, secret.as_deref(), now_unix()).await;
    let mut response = match step {
        Ok(LogoutStep::ToSp { url, sp_name, position, total }) => {
            let page = web::logout_step_page(&web::nonce(), &sp_name, &url, &logout_step_url(&chain), position, total);
            let mut r = html(StatusCode::OK, page);
            r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            return r;
        }
        Ok(LogoutStep::Done(LogoutFinish::Redirect(url))) => {
            see_other(&url).unwrap_or_else(|| saml_error("logout", &SamlFlowError::bad_slo_url()))
        }
        Ok(LogoutStep::Done(LogoutFinish::SignedOut)) => html(
            StatusCode::OK,
            web::notice_page(&web::nonce(), "Signed out", "You are signed out. You can close this window."),
        ),
        Err(e) => return saml_error("logout", &e),
    };
    if let Some(clear) = flow::set_logout_cookie(&state, "", 0) {
        response.headers_mut().append(header::SET_COOKIE, clear);
    }
    response
}

/// `GET /saml/slo`: a checked `LogoutRequest` is answered by a redirect carrying the
/// signed `LogoutResponse` (after the person's other SPs, when they have some); an
/// asynchronous one by a plain page. A `LogoutResponse` answers a step of a logout
/// chain, which then goes on.
pub async fn slo(State(state): State<AppState>, headers: HeaderMap, RawQuery(query): RawQuery) -> Response {
    let query = query.unwrap_or_default();
    let is_response = query.split('&').any(|p| p.starts_with("SAMLResponse="));
    if is_response {
        let secret = flow::presented_logout(&state, &headers);
        return match state.services.saml_logout_answer(&query, secret.as_deref(), now_unix()).await {
            Ok(chain) => {
                see_other(&logout_step_url(&chain)).unwrap_or_else(|| saml_error("slo", &SamlFlowError::LogoutGone))
            }
            Err(e) => saml_error("slo", &e),
        };
    }
    match state.services.saml_logout(&query, now_unix()).await {
        Ok(SloOutcome::Chain(start)) => start_logout_chain(&state, &start),
        Ok(SloOutcome::Asynchronous) => html(
            StatusCode::OK,
            web::notice_page(
                &web::nonce(),
                "Signed out",
                "You are signed out. The service asked for no answer, so you can close this page.",
            ),
        ),
        Ok(SloOutcome::Redirect(url)) => match HeaderValue::from_str(&url) {
            Ok(location) => {
                let mut r = StatusCode::SEE_OTHER.into_response();
                r.headers_mut().insert(header::LOCATION, location);
                r
            }
            Err(_) => saml_error("slo", &SamlFlowError::bad_slo_url()),
        },
        Err(e) => saml_error("slo", &e),
    }
}

/// `POST /saml/complete` (form: `context`, `session_id`, `browser_token`): the page
/// that auto-POSTs the signed `Response` to the SP's registered ACS.
pub async fn complete(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let Some([ctx, sid, bt]) = flow::page_form(&headers, &body, ["context", "session_id", "browser_token"]) else {
        let e = SamlFlowError::malformed_completion_form();
        return saml_error("complete", &e);
    };
    let secret = flow::presented(&state, &headers, FlowKind::Saml, &ctx);
    match state.services.saml_complete(&ctx, &sid, &bt, secret.as_deref(), now_unix()).await {
        Ok(post) => post_to_sp(&state, &ctx, &post),
        Err(e) => saml_error("complete", &e),
    }
}

/// The page that posts a SAML `Response` to the SP's ACS, ending the flow: its cookie
/// is dropped (a refused attempt keeps it; it expires with the context).
fn post_to_sp(state: &AppState, context_id: &str, post: &SamlPost) -> Response {
    let page = web::saml_post_page(&web::nonce(), &post.acs_url, &post.saml_response, post.relay_state.as_deref());
    let mut response = html(StatusCode::OK, page);
    if let Some(clear) = flow::set_cookie(state, FlowKind::Saml, context_id, "", 0) {
        response.headers_mut().append(header::SET_COOKIE, clear);
    }
    response
}

/// `POST /saml/cancel` (form: `context`; the flow's cookie): the page that posts a
/// signed "not authenticated" `Response` to the SP's ACS.
pub async fn cancel(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let Some([ctx]) = flow::page_form(&headers, &body, ["context"]) else {
        return saml_error("cancel", &SamlFlowError::malformed_completion_form());
    };
    let secret = flow::presented(&state, &headers, FlowKind::Saml, &ctx);
    match state.services.saml_cancel(&ctx, secret.as_deref(), now_unix()).await {
        Ok(post) => post_to_sp(&state, &ctx, &post),
        Err(e) => saml_error("cancel", &e),
    }
}

/// `GET /demo`: the demo relying party (only routed when `[demo] enabled`).
pub async fn demo(State(state): State<AppState>) -> Response {
    let Some(service) = state.services.demo_service() else {
        return html(
            StatusCode::NOT_FOUND,
            web::error_page(
                &web::nonce(),
                "Not found",
                "The demo is not configured.",
                super::request_id::current().as_deref(),
            ),
        );
    };
    let target = SignInTarget { service_id: &service.id, service_name: &service.name, scopes: &service.allowed_scopes };
    let origin = state.services.settings().issuer_origin();
    html(StatusCode::OK, web::demo_page(&web::nonce(), origin.as_deref(), &target))
}
