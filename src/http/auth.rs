//! Sign-in endpoints (protocol.md §5, §7.2): initiate, the browser's WebSocket and
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

/// WebSocket close code for a missing or wrong `hello` (protocol.md §5.2).
const CLOSE_UNAUTHORIZED: u16 = 4401;

fn origin(headers: &HeaderMap) -> Option<&str> {
    headers.get(header::ORIGIN).and_then(|v| v.to_str().ok())
}

pub async fn initiate(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    StrictJson(req): StrictJson<InitiateRequest>,
) -> Result<(StatusCode, Json<Initiated>), ApiError> {
    let started = state.initiate(req, origin(&headers), ip, now_unix()).await?;
    Ok((StatusCode::CREATED, Json(started)))
}

/// `GET /v1/auth/sessions/{id}` with `Authorization: Bearer <browser_token>`.
pub async fn poll(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Json<BrowserView>, ApiError> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| ApiError::new(ErrorCode::NotFound, "no such session"))?;
    let now = now_unix();
    let session = state.browser_session(&id, token.trim(), now).await?;
    Ok(Json(state.browser_view(&session, now).await?))
}

pub async fn device_pending(
    State(state): State<AppState>,
    JoseBody(body): JoseBody,
) -> Result<Json<PendingList>, ApiError> {
    Ok(Json(state.device_pending(&body, now_unix()).await?))
}

pub async fn verify(State(state): State<AppState>, JoseBody(body): JoseBody) -> Result<Json<Verified>, ApiError> {
    let outcome = state.verify(&body, now_unix()).await.inspect_err(|e| {
        tracing::info!(code = %e.code, "verify refused");
    })?;
    Ok(Json(outcome))
}

pub async fn jwks(State(state): State<AppState>) -> Result<Response, ApiError> {
    let mut response = Json(state.jwks().await?).into_response();
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=300"));
    Ok(response)
}

/// `GET /v1/auth/sessions/{id}/ws`. An unknown session still upgrades and is closed
/// with 4401 after the hello (§12 rule 7: no session oracle).
pub async fn websocket(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    if let Some(o) = origin(&headers)
        && let Some(session) = state.sessions.get_session(&id).await?
        && let Some(service) = state.service(&session.service_id)
    {
        state.check_origin(&service, Some(o))?;
    }
    // The browser sends one small `hello`: a 4 KiB read buffer instead of tungstenite's
    // 128 KiB default keeps a pending session's socket at a few KiB (10,000 held sessions
    // took 1.3 GB with the default).
    Ok(upgrade
        .max_message_size(4096)
        .read_buffer_size(4096)
        .on_upgrade(move |socket| browser_channel(state, id, socket)))
}

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

/// The browser channel: hello, then `otp`, then exactly one terminal message, then
/// close 1000 (§5.2).
async fn browser_channel(state: AppState, id: String, mut socket: WebSocket) {
    let hello = tokio::time::timeout(state.config.auth.hello_timeout, socket.recv()).await;
    let token = match hello {
        Ok(Some(Ok(Message::Text(text)))) => match serde_json::from_str::<Hello>(&text) {
            Ok(h) if h.kind == "hello" => h.browser_token,
            _ => return close(socket, CLOSE_UNAUTHORIZED, "hello expected").await,
        },
        _ => return close(socket, CLOSE_UNAUTHORIZED, "hello expected").await,
    };
    // Subscribe before reading the session so an end in between is not missed.
    let Ok(mut events) = state.sessions.subscribe(&id).await else {
        return close(socket, 1011, "unavailable").await;
    };
    let Ok(session) = state.browser_session(&id, &token, now_unix()).await else {
        return close(socket, CLOSE_UNAUTHORIZED, "unauthorized").await;
    };
    let Ok(view) = state.browser_view(&session, now_unix()).await else {
        return close(socket, 1011, "unavailable").await;
    };
    if let BrowserView::Pending { otp, expires_at } = &view {
        if !send_json(&mut socket, &json!({"type": "otp", "otp": otp, "expires_at": expires_at})).await {
            return;
        }
        let expires_at = session.expires_at;
        loop {
            let left = Duration::from_secs(u64::try_from(expires_at - now_unix()).unwrap_or(0));
            tokio::select! {
                event = events.recv() => {
                    if let Err(tokio::sync::broadcast::error::RecvError::Closed) = event {
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
            let now = now_unix();
            let current = match state.sessions.get_session(&id).await {
                Ok(Some(s)) => s,
                _ => return close(socket, 1011, "unavailable").await,
            };
            let Ok(view) = state.browser_view(&current, now).await else {
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
