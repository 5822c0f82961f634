//! Sign-in endpoints (docs/protocol.md §5, §7.2): initiate, the browser's WebSocket and
//! polling, the device's pending list and verify, and the JWKS.

use std::time::Duration;

use axum::Json;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::AppState;
use super::extract::{ClientIp, JoseBody, StrictJson};
use crate::error::{ApiError, ErrorCode};
use crate::ids::now_unix;
use crate::service::auth::{BrowserView, InitiateRequest, Initiated, PendingList, Verified};

/// WebSocket close code for a missing or wrong `hello` (docs/protocol.md §5.2).
const CLOSE_UNAUTHORIZED: u16 = 4401;

fn origin(headers: &HeaderMap) -> Option<&str> {
    headers.get(header::ORIGIN).and_then(|v| v.to_str().ok())
}

/// `POST /v1/auth/initiate`: starts a sign-in for a token id (docs/protocol.md §5.1);
/// a service with `initiate = "backend"` authenticates with `Authorization: Basic`,
/// `Authorization: Bearer <client assertion>` or the body's `client_*` members.
#[utoipa::path(post, path = "/v1/auth/initiate", tag = "public",
    request_body(content = InitiateRequest, content_type = "application/json"),
    responses(
        (status = 201, description = "Session started", body = Initiated),
        (status = 400, description = "Malformed body, unknown service or scope (`invalid_request`, `unknown_service`, `invalid_scope`)", body = super::openapi::Problem, content_type = "application/problem+json"),
        (status = 401, description = "A backend-initiate service's client authentication is missing or failed (`invalid_client`)", body = super::openapi::Problem, content_type = "application/problem+json"),
        (status = 403, description = "Origin not allowed (`origin_not_allowed`)", body = super::openapi::Problem, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited, locked out or too many pending sessions", body = super::openapi::Problem, content_type = "application/problem+json"),
        super::openapi::BodyErrors
    )
)]
pub async fn initiate(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    StrictJson(req): StrictJson<InitiateRequest>,
) -> Result<(StatusCode, Json<Initiated>), ApiError> {
    let authorization = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    let started = state.services.initiate(req, origin(&headers), authorization, ip, now_unix()).await?;
    Ok((StatusCode::CREATED, Json(started)))
}

/// `GET /v1/auth/sessions/{id}` with `Authorization: Bearer <browser_token>`.
#[utoipa::path(get, path = "/v1/auth/sessions/{id}", tag = "public",
    params(("id" = String, Path, description = "Session id")),
    security(("browser_token" = [])),
    responses(
        (status = 200, description = "The session as the browser may see it", body = BrowserView),
        (status = 404, description = "Unknown session or wrong browser token (`session_not_found`, `not_found`)", body = super::openapi::Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many polls from this IP (`rate_limited`)", body = super::openapi::Problem, content_type = "application/problem+json"),
        (status = 503, description = "Unavailable", body = super::openapi::Problem, content_type = "application/problem+json")
    )
)]
pub async fn poll(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
) -> Result<Json<BrowserView>, ApiError> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| ApiError::new(ErrorCode::NotFound, "no such session"))?;
    Ok(Json(state.services.poll_session(&id, token.trim(), ip, now_unix()).await?))
}

/// `POST /v1/device/pending`: the device's pending sessions with their OTPs.
#[utoipa::path(post, path = "/v1/device/pending", tag = "public",
    request_body(content = String, content_type = "application/jose", description = "Compact JWS signed by the device key (docs/protocol.md §3)"),
    responses(
        (status = 200, description = "Pending sessions", body = PendingList),
        (status = 400, description = "Malformed JWS (`invalid_request`)", body = super::openapi::Problem, content_type = "application/problem+json"),
        (status = 401, description = "Unknown device, bad signature or clock skew", body = super::openapi::Problem, content_type = "application/problem+json"),
        (status = 403, description = "Device inactive (`device_inactive`)", body = super::openapi::Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many polls from this IP (`rate_limited`)", body = super::openapi::Problem, content_type = "application/problem+json"),
        super::openapi::BodyErrors
    )
)]
pub async fn device_pending(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    JoseBody(body): JoseBody,
) -> Result<Json<PendingList>, ApiError> {
    Ok(Json(state.services.device_pending(&body, ip, now_unix()).await?))
}

/// `POST /v1/auth/verify`: the device approves or rejects a session (docs/protocol.md §5.5).
#[utoipa::path(post, path = "/v1/auth/verify", tag = "public",
    request_body(content = String, content_type = "application/jose", description = "Compact JWS signed by the device key (docs/protocol.md §3)"),
    responses(
        (status = 200, description = "Decision recorded", body = Verified),
        (status = 400, description = "Malformed JWS or scope (`invalid_request`, `invalid_scope`)", body = super::openapi::Problem, content_type = "application/problem+json"),
        (status = 401, description = "Unknown device, bad signature, clock skew or OTP mismatch", body = super::openapi::Problem, content_type = "application/problem+json"),
        (status = 403, description = "Device inactive (`device_inactive`)", body = super::openapi::Problem, content_type = "application/problem+json"),
        (status = 404, description = "Unknown session (`session_not_found`)", body = super::openapi::Problem, content_type = "application/problem+json"),
        (status = 409, description = "Session ended (`session_closed`)", body = super::openapi::Problem, content_type = "application/problem+json"),
        (status = 429, description = "Locked out (`locked_out`)", body = super::openapi::Problem, content_type = "application/problem+json"),
        super::openapi::BodyErrors
    )
)]
pub async fn verify(State(state): State<AppState>, JoseBody(body): JoseBody) -> Result<Json<Verified>, ApiError> {
    let outcome = state.services.verify(&body, now_unix()).await.inspect_err(|e| {
        tracing::info!(code = %e.code, "verify refused");
    })?;
    Ok(Json(outcome))
}

/// `GET /jwks` (also `/.well-known/jwks.json`): keys that verify identity tokens.
#[utoipa::path(get, path = "/jwks", tag = "public",
    responses(
        (status = 200, description = "JSON Web Key Set", body = Object),
        (status = 503, description = "HSM unavailable", body = super::openapi::Problem, content_type = "application/problem+json")
    )
)]
pub async fn jwks(State(state): State<AppState>) -> Result<Response, ApiError> {
    let mut response = Json(state.services.jwks().await?).into_response();
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=300"));
    Ok(response)
}

/// `GET /v1/auth/sessions/{id}/ws`. An unknown but well-formed session id still
/// upgrades and is closed with 4401 after the hello (§12 rule 7: no session oracle);
/// limits are checked before the upgrade (`429`/`503` with `Retry-After`).
pub async fn websocket(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    let permit = state.services.admit_browser_channel(&id, origin(&headers), ip).await?;
    // The browser sends one small `hello`: a read buffer of HELLO_READ_BUFFER bytes
    // instead of tungstenite's 128 KiB default (10,000 held sessions took 1.3 GB with
    // it, and 4 KiB was still 40 % of a pending session's memory); larger messages, up
    // to the 4 KiB limit, are still read, in more than one read.
    Ok(upgrade.max_message_size(4096).read_buffer_size(HELLO_READ_BUFFER).on_upgrade(move |socket| async move {
        browser_channel(state, id, socket).await;
        drop(permit);
    }))
}

/// Bytes read from a browser socket at a time (and held by it while it waits): a
/// `hello` is about 80.
const HELLO_READ_BUFFER: usize = 256;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Hello {
    #[serde(rename = "type")]
    kind: String,
    browser_token: String,
}

async fn close(mut socket: WebSocket, code: u16, reason: &'static str) {
    let _ = socket.send(Message::Close(Some(CloseFrame { code, reason: reason.into() }))).await;
}

fn terminal_message(view: &BrowserView) -> Option<serde_json::Value> {
    match view {
        BrowserView::Pending { .. } => None,
        BrowserView::Approved { id_token } => Some(json!({"type": "approved", "id_token": id_token})),
        BrowserView::Rejected => Some(json!({"type": "rejected"})),
        BrowserView::Expired => Some(json!({"type": "expired"})),
        BrowserView::Locked => Some(json!({"type": "locked"})),
    }
}

async fn send_json(socket: &mut WebSocket, value: &serde_json::Value) -> bool {
    socket.send(Message::Text(value.to_string().into())).await.is_ok()
}

/// Close code for a refusal that may succeed later (RFC 6455 §7.4.1 "Try Again Later").
const CLOSE_TRY_AGAIN: u16 = 1013;

/// The browser channel: hello, then `otp`, then exactly one terminal message, then
/// close 1000 (§5.2).
async fn browser_channel(state: AppState, id: String, mut socket: WebSocket) {
    let hello = tokio::time::timeout(state.services.settings().auth.hello_timeout, socket.recv()).await;
    let token = match hello {
        Ok(Some(Ok(Message::Text(text)))) => match serde_json::from_str::<Hello>(&text) {
            Ok(h) if h.kind == "hello" => h.browser_token,
            _ => return close(socket, CLOSE_UNAUTHORIZED, "hello expected").await,
        },
        _ => return close(socket, CLOSE_UNAUTHORIZED, "hello expected").await,
    };
    // The one-shot calls are boxed: their futures would otherwise stay part of this
    // task's state while it waits, about 2 KiB per pending session.
    let attached = match Box::pin(state.services.attach_browser_channel(&id, &token, now_unix())).await {
        Ok(a) => a,
        Err(e) if e.code == ErrorCode::NotFound => return close(socket, CLOSE_UNAUTHORIZED, "unauthorized").await,
        Err(e) if e.code == ErrorCode::Overloaded => return close(socket, CLOSE_TRY_AGAIN, "overloaded").await,
        Err(_) => return close(socket, 1011, "unavailable").await,
    };
    let (view, expires_at, mut events) = (attached.view, attached.expires_at, attached.events);
    if let BrowserView::Pending { otp, expires_at: otp_expires } = &view {
        if !send_json(&mut socket, &json!({"type": "otp", "otp": otp, "expires_at": otp_expires})).await {
            return;
        }
        loop {
            let left = Duration::from_secs(u64::try_from(expires_at - now_unix()).unwrap_or(0));
            tokio::select! {
                changed = events.changed() => {
                    if !changed {
                        // The store dropped the channel: fall back to the expiry timer.
                        tokio::time::sleep(left).await;
                    }
                }
                _ = tokio::time::sleep(left) => {}
                incoming = socket.recv() => match incoming {
                    // The browser went away; nothing to deliver.
                    None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                    Some(Ok(_)) => continue,
                },
            }
            let Ok(view) = Box::pin(state.services.browser_update(&id, now_unix())).await else {
                return close(socket, 1011, "unavailable").await;
            };
            if let Some(msg) = terminal_message(&view) {
                if send_json(&mut socket, &msg).await {
                    close(socket, 1000, "done").await;
                }
                return;
            }
        }
    }
    if let Some(msg) = terminal_message(&view)
        && send_json(&mut socket, &msg).await
    {
        close(socket, 1000, "done").await;
    }
}
