//! What the hosted sign-in pages' own steps (SAML and OpenID Connect completion and
//! cancel) share: their strict forms, and the cookie that binds a flow to the browser
//! that got its page (`service::flow`), set with the page and cleared when it ends.

use axum::http::{HeaderMap, HeaderValue, header};

use super::AppState;
use crate::service::flow::{FlowKind, flow_cookie_name};

fn secure(state: &AppState) -> bool {
    state.services.settings().issuer.starts_with("https://")
}

/// The `Set-Cookie` of a flow's browser secret (`max_age` 0 clears it): `HttpOnly`,
/// `SameSite=Strict` (the completion is a same-site form post from the sign-in page),
/// and `Secure` with the `__Host-` name when the issuer is `https://`.
pub(super) fn set_cookie(
    state: &AppState,
    kind: FlowKind,
    context_id: &str,
    value: &str,
    max_age: u64,
) -> Option<HeaderValue> {
    let secure = secure(state);
    let name = flow_cookie_name(kind, context_id, secure)?;
    let flags = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!("{name}={value}; Path=/; Max-Age={max_age}; HttpOnly; SameSite=Strict{flags}")).ok()
}

/// The cookie of a single-logout chain (one per browser; a new chain replaces it):
/// `SameSite=Lax`, because the SPs send the browser back to `/saml/slo` by a top-level
/// redirect from their site; `HttpOnly`, and `__Host-`/`Secure` on an `https://` issuer.
fn logout_cookie_name(secure: bool) -> &'static str {
    if secure { "__Host-symbolon-logout" } else { "symbolon-logout" }
}

/// The `Set-Cookie` of a logout chain's browser secret (`max_age` 0 clears it).
pub(super) fn set_logout_cookie(state: &AppState, value: &str, max_age: u64) -> Option<HeaderValue> {
    let secure = secure(state);
    let flags = if secure { "; Secure" } else { "" };
    let name = logout_cookie_name(secure);
    HeaderValue::from_str(&format!("{name}={value}; Path=/; Max-Age={max_age}; HttpOnly; SameSite=Lax{flags}")).ok()
}

/// The logout chain's browser secret as the request presents it (sent exactly once).
pub(super) fn presented_logout(state: &AppState, headers: &HeaderMap) -> Option<String> {
    cookie_once(headers, logout_cookie_name(secure(state)))
}

fn cookie_once(headers: &HeaderMap, name: &str) -> Option<String> {
    let mut found = None;
    for header in headers.get_all(header::COOKIE) {
        for pair in header.to_str().ok()?.split(';') {
            if let Some((k, v)) = pair.trim().split_once('=')
                && k == name
                && found.replace(v.to_string()).is_some()
            {
                return None;
            }
        }
    }
    found
}

/// The flow's browser secret as the request presents it: its cookie, sent exactly once.
pub(super) fn presented(state: &AppState, headers: &HeaderMap, kind: FlowKind, context_id: &str) -> Option<String> {
    let name = flow_cookie_name(kind, context_id, secure(state))?;
    cookie_once(headers, &name)
}

pub(super) fn is_form(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/x-www-form-urlencoded"))
}

/// The fields of a completion or cancel form, each exactly once, nothing else.
pub(super) fn page_form<const N: usize>(headers: &HeaderMap, body: &[u8], names: [&str; N]) -> Option<[String; N]> {
    if !is_form(headers) {
        return None;
    }
    let mut out: [Option<String>; N] = std::array::from_fn(|_| None);
    for (k, v) in url::form_urlencoded::parse(body) {
        let i = names.iter().position(|n| *n == k)?;
        if out[i].replace(v.into_owned()).is_some() {
            return None;
        }
    }
    let mut done: [String; N] = std::array::from_fn(|_| String::new());
    for (slot, value) in done.iter_mut().zip(out) {
        *slot = value?;
    }
    Some(done)
}
