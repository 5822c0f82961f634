//! Signing in to the console: the authorization code flow with PKCE against the
//! `[management]` provider (the tokens stay on the server), the break-glass form
//! (rate limited per client IP, every attempt audited), and signing out.

use std::sync::OnceLock;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};

use super::{
    Console, SessionRecord, api_error_page, cookie, cookie_value, csrf_refused, error_page, form, html, same, save,
    session_cookie_name, signin_cookie_name,
};
use crate::error::ApiError;
use crate::http::AppState;
use crate::http::extract::ClientIp;
use crate::http::operator::Operator;
use crate::ids::{new_id, now_unix};
use crate::web::{self, console as view};

/// How long a started sign-in (and the sign-in page's cookie) lives.
const SIGNIN_TTL: Duration = Duration::from_secs(600);
/// Largest token endpoint answer read.
const TOKEN_RESPONSE_MAX_BYTES: usize = 64 * 1024;

/// A sign-in waiting for the provider's answer, kept under its `state`.
#[derive(Debug, Serialize, Deserialize)]
struct PendingSignIn {
    verifier: String,
    nonce: String,
    /// The sign-in cookie of the browser that started it.
    browser: String,
}

/// The token endpoint's answer (RFC 6749 §5.1, OpenID Connect Core §3.1.3.3).
#[derive(Debug, Deserialize)]
struct TokenResponse {
    access_token: String,
    id_token: Option<String>,
    refresh_token: Option<String>,
}

/// `m` of the sign-in page: why the operator is there.
#[derive(Debug, Deserialize)]
pub struct SignInQuery {
    m: Option<String>,
}

fn message(m: Option<&str>) -> Option<String> {
    Some(
        match m? {
            "expired" => "Your console session has ended. Sign in again.",
            "signedout" => "You are signed out.",
            _ => return None,
        }
        .into(),
    )
}

/// The sign-in page with a fresh sign-in cookie (its value is also the forms' CSRF token).
fn signin_response(state: &AppState, status: StatusCode, msg: Option<String>, error: Option<String>) -> Response {
    let config = &state.http.console;
    let csrf = new_id();
    let view = view::SignInView {
        provider: config.oidc_configured(),
        break_glass: state.operators.break_glass_configured(),
        csrf: csrf.clone(),
        message: msg,
        error,
        provider_origin: web::origin_of(&config.authorization_endpoint),
    };
    let mut r = html(status, view::signin_page(&web::nonce(), &view));
    if let Some(c) = cookie(config, signin_cookie_name(config), &csrf, SIGNIN_TTL.as_secs()) {
        r.headers_mut().append(header::SET_COOKIE, c);
    }
    r
}

/// `GET /console/signin`.
pub async fn signin_page(State(state): State<AppState>, Query(q): Query<SignInQuery>) -> Response {
    signin_response(&state, StatusCode::OK, message(q.m.as_deref()), None)
}

/// The sign-in form was sent by the page this browser got (its CSRF token is the
/// sign-in cookie's value).
fn signin_form(
    state: &AppState,
    headers: &HeaderMap,
    body: &[u8],
) -> Option<(String, std::collections::HashMap<String, String>)> {
    let config = &state.http.console;
    let browser = cookie_value(headers, signin_cookie_name(config))?;
    let fields = form(headers, body)?;
    same(fields.get("csrf")?, &browser).then_some((browser, fields))
}

/// `POST /console/login`: starts the authorization code flow with PKCE (S256) and a
/// nonce, and sends the browser to the provider.
pub async fn login(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let config = &state.http.console;
    if !config.oidc_configured() {
        return error_page(StatusCode::NOT_FOUND, "Not found", "Sign-in through a provider is not configured.");
    }
    let Some((browser, _)) = signin_form(&state, &headers, &body) else { return csrf_refused() };
    let pending = PendingSignIn { verifier: new_id(), nonce: new_id(), browser };
    let signin_state = new_id();
    let Ok(text) = serde_json::to_string(&pending) else { return api_error_page(&ApiError::internal()) };
    if let Err(e) = state.services.console_put_login(&signin_state, &text, SIGNIN_TTL).await {
        return api_error_page(&e);
    }
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(pending.verifier.as_bytes()));
    let Ok(mut url) = url::Url::parse(&config.authorization_endpoint) else {
        return api_error_page(&ApiError::internal());
    };
    url.query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", &config.client_id)
        .append_pair("redirect_uri", &config.redirect_uri())
        .append_pair("scope", &config.scopes.join(" "))
        .append_pair("state", &signin_state)
        .append_pair("nonce", &pending.nonce)
        .append_pair("code_challenge", &challenge)
        .append_pair("code_challenge_method", "S256");
    Redirect::to(url.as_str()).into_response()
}

/// What the provider sends back to `/console/callback`.
#[derive(Debug, Deserialize)]
pub struct Callback {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
}

/// `GET /console/callback`: the code is exchanged with the PKCE verifier, the
/// id_token checked (signature, issuer, audience = client id, nonce) and the access
/// token checked as the management API checks it; then the session starts.
pub async fn callback(State(state): State<AppState>, headers: HeaderMap, Query(q): Query<Callback>) -> Response {
    let config = &state.http.console;
    if !config.oidc_configured() {
        return error_page(StatusCode::NOT_FOUND, "Not found", "Sign-in through a provider is not configured.");
    }
    let refused = |why: &str| {
        tracing::warn!(reason = why, "console sign-in refused");
        signin_response(&state, StatusCode::BAD_REQUEST, None, Some(format!("Sign-in failed: {why}. Try again.")))
    };
    if let Some(error) = q.error.as_deref() {
        let error: String = error.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '_').take(64).collect();
        return refused(&format!("the identity provider answered {error}"));
    }
    let (Some(code), Some(signin_state)) = (q.code, q.state) else { return refused("the answer lacks code or state") };
    let pending = match state.services.console_take_login(&signin_state).await {
        Ok(Some(text)) => serde_json::from_str::<PendingSignIn>(&text).ok(),
        Ok(None) => None,
        Err(e) => return api_error_page(&e),
    };
    let Some(pending) = pending else { return refused("the sign-in is unknown, used or expired") };
    let browser = cookie_value(&headers, signin_cookie_name(config));
    if !browser.is_some_and(|b| same(&b, &pending.browser)) {
        return refused("the sign-in was started in another browser");
    }
    let tokens = match token_request(
        &state,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", &config.redirect_uri()),
            ("code_verifier", &pending.verifier),
        ],
    )
    .await
    {
        Ok(t) => t,
        Err(why) => {
            tracing::warn!(reason = %why, "console token request failed");
            return refused("the identity provider did not issue tokens");
        }
    };
    let Some(id_token) = tokens.id_token.as_deref() else { return refused("the provider sent no id_token") };
    if let Err(e) = state.operators.id_token(id_token, &config.client_id, &pending.nonce).await {
        tracing::warn!(reason = %e.detail, "console id_token refused");
        return refused("the id_token is not valid");
    }
    let operator = match state.operators.access_token(&tokens.access_token).await {
        Ok(o) => o,
        Err(e) => {
            tracing::warn!(reason = %e.detail, "console access token refused");
            return refused("the access token is not valid for the management API");
        }
    };
    start_session(&state, operator, Some(tokens.access_token), tokens.refresh_token).await
}

/// Creates the session, audits the sign-in and sets the cookie.
async fn start_session(
    state: &AppState,
    operator: Operator,
    access_token: Option<String>,
    refresh_token: Option<String>,
) -> Response {
    let config = &state.http.console;
    let now = now_unix();
    let record = SessionRecord {
        sub: operator.sub.clone(),
        scopes: operator.scope_list(),
        break_glass: operator.break_glass,
        csrf: new_id(),
        created_at: now,
        seen_at: now,
        access_token,
        refresh_token,
    };
    let secret = new_id();
    if let Err(e) = save(state, &secret, &record, now).await {
        return api_error_page(&e);
    }
    let auth = if operator.break_glass { "break_glass" } else { "oidc" };
    let detail = json!({"action": "console.sign_in", "status": 200, "auth": auth});
    if let Err(e) = state.services.management().record(&operator.actor(), "console", detail).await {
        let _ = state.services.console_end_session(&secret).await;
        return api_error_page(&e);
    }
    tracing::info!(actor = %operator.actor(), auth, "operator signed in to the console");
    let mut r = Redirect::to("/console/").into_response();
    let max_age = config.absolute_timeout.as_secs();
    if let Some(c) = cookie(config, session_cookie_name(config), &secret, max_age) {
        r.headers_mut().append(header::SET_COOKIE, c);
    }
    if let Some(c) = cookie(config, signin_cookie_name(config), "", 0) {
        r.headers_mut().append(header::SET_COOKIE, c);
    }
    r
}

/// `POST /console/break-glass` (form: `csrf`, `token`).
pub async fn break_glass(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !state.operators.break_glass_configured() {
        return error_page(StatusCode::NOT_FOUND, "Not found", "Break-glass access is not configured.");
    }
    let Some((_, fields)) = signin_form(&state, &headers, &body) else { return csrf_refused() };
    if let Err(e) = state.services.console_limit_break_glass(ip, state.http.console.break_glass_per_minute).await {
        tracing::warn!(%ip, "console break-glass sign-in rate limited");
        return api_error_page(&e);
    }
    let token = fields.get("token").map(String::as_str).unwrap_or_default();
    match state.operators.break_glass(token) {
        Some(operator) => {
            tracing::warn!(%ip, "console signed in with the break-glass token");
            start_session(&state, operator, None, None).await
        }
        None => {
            let detail =
                json!({"action": "console.sign_in", "status": 401, "auth": "break_glass", "ip": ip.to_string()});
            if let Err(e) = state.services.management().record("anonymous", "console", detail).await {
                return api_error_page(&e);
            }
            tracing::warn!(%ip, "console break-glass sign-in refused: wrong token");
            signin_response(&state, StatusCode::UNAUTHORIZED, None, Some("That is not the break-glass token.".into()))
        }
    }
}

/// `POST /console/signout` (form: `csrf`): ends the session here; the provider's
/// own session is left to the provider.
pub async fn signout(State(state): State<AppState>, console: Console, headers: HeaderMap, body: Bytes) -> Response {
    let fields = form(&headers, &body);
    if !console.csrf_ok(fields.as_ref().and_then(|f| f.get("csrf")).map(String::as_str)) {
        return csrf_refused();
    }
    if let Err(e) = state.services.console_end_session(&console.secret).await {
        return api_error_page(&e);
    }
    let detail = json!({"action": "console.sign_out", "status": 200, "auth": console.auth()});
    if let Err(e) = state.services.management().record(&console.operator.actor(), "console", detail).await {
        return api_error_page(&e);
    }
    let config = &state.http.console;
    let mut r = Redirect::to("/console/signin?m=signedout").into_response();
    if let Some(c) = cookie(config, session_cookie_name(config), "", 0) {
        r.headers_mut().append(header::SET_COOKIE, c);
    }
    r
}

/// The operator of a provider session now: its access token checked again; when it
/// no longer passes and a refresh token is kept, new tokens are fetched (and kept in
/// `record`). `None`: the session must end.
pub(super) async fn current_operator(state: &AppState, record: &mut SessionRecord) -> Option<Operator> {
    let access = record.access_token.as_deref()?;
    if let Ok(operator) = state.operators.access_token(access).await {
        return Some(operator);
    }
    let refresh = record.refresh_token.clone()?;
    let tokens = match token_request(state, &[("grant_type", "refresh_token"), ("refresh_token", &refresh)]).await {
        Ok(t) => t,
        Err(why) => {
            tracing::info!(reason = %why, "console session ends: its tokens cannot be refreshed");
            return None;
        }
    };
    let operator = state.operators.access_token(&tokens.access_token).await.ok()?;
    record.access_token = Some(tokens.access_token);
    if tokens.refresh_token.is_some() {
        record.refresh_token = tokens.refresh_token;
    }
    Some(operator)
}

fn client() -> Option<&'static reqwest::Client> {
    static CLIENT: OnceLock<Option<reqwest::Client>> = OnceLock::new();
    CLIENT
        .get_or_init(|| {
            reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .ok()
        })
        .as_ref()
}

/// A token endpoint request with the console's client authentication
/// (`client_secret_basic` when a secret file is configured, else `client_id` in the
/// form as a public client).
async fn token_request(state: &AppState, params: &[(&str, &str)]) -> Result<TokenResponse, String> {
    let config = &state.http.console;
    let client = client().ok_or("cannot build the HTTP client")?;
    let mut form: Vec<(&str, &str)> = params.to_vec();
    let mut request = client.post(&config.token_endpoint).header(header::ACCEPT, "application/json");
    let secret;
    match &config.client_secret_file {
        Some(path) => {
            secret = crate::files::read_bounded_string(path, crate::files::MAX_SECRET_BYTES)
                .map_err(|e| format!("cannot read console.client_secret_file: {e}"))?;
            let enc = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
            request = request.basic_auth(enc(&config.client_id), Some(enc(secret.trim())));
        }
        None => form.push(("client_id", &config.client_id)),
    }
    let mut response = request.form(&form).send().await.map_err(|e| e.to_string())?;
    let status = response.status();
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| e.to_string())? {
        if body.len() + chunk.len() > TOKEN_RESPONSE_MAX_BYTES {
            return Err("the token response is too large".into());
        }
        body.extend_from_slice(&chunk);
    }
    if !status.is_success() {
        let error = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_owned))
            .unwrap_or_default();
        return Err(format!("HTTP {status} {error}"));
    }
    serde_json::from_slice(&body).map_err(|e| format!("not a token response: {e}"))
}
