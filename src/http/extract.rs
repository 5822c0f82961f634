//! Extractors that turn request bodies and peers into checked values, mapping every
//! failure to the one API error (413, 415, 400 with stable codes).

use std::net::{IpAddr, SocketAddr};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::header::CONTENT_TYPE;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use super::AppState;
use crate::error::{ApiError, ErrorCode};

fn media_type(req: &Request) -> Option<String> {
    let v = req.headers().get(CONTENT_TYPE)?.to_str().ok()?;
    Some(v.split(';').next().unwrap_or("").trim().to_ascii_lowercase())
}

async fn body_bytes(req: Request, state: &AppState) -> Result<Bytes, ApiError> {
    Bytes::from_request(req, state).await.map_err(|e| match e {
        BytesRejection::FailedToBufferBody(_) => {
            ApiError::new(ErrorCode::PayloadTooLarge, "the request body is too large")
        }
        _ => ApiError::invalid_request("cannot read the request body"),
    })
}

/// A device JWS body: `Content-Type: application/jose` (docs/protocol.md §12 rule 1).
#[derive(Debug)]
pub struct JoseBody(pub Bytes);

impl FromRequest<AppState> for JoseBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        if media_type(&req).as_deref() != Some("application/jose") {
            return Err(ApiError::new(ErrorCode::UnsupportedMediaType, "the body must be application/jose"));
        }
        Ok(JoseBody(body_bytes(req, state).await?))
    }
}

/// A JSON body parsed strictly into `T` (unknown members are refused by `T`).
/// `EMPTY_OK`: an empty body stands for `{}` and any content type is accepted
/// (`/v1/enroll/challenge`).
#[derive(Debug)]
pub struct StrictJson<T, const EMPTY_OK: bool = false>(pub T);

impl<T: DeserializeOwned, const EMPTY_OK: bool> FromRequest<AppState> for StrictJson<T, EMPTY_OK> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        let media = media_type(&req);
        if !EMPTY_OK && media.as_deref() != Some("application/json") {
            return Err(ApiError::new(ErrorCode::UnsupportedMediaType, "the body must be application/json"));
        }
        let bytes = body_bytes(req, state).await?;
        let bytes: &[u8] = if EMPTY_OK && bytes.iter().all(u8::is_ascii_whitespace) { b"{}" } else { &bytes };
        let Some(value) = crate::service::jws::strict_json_object(bytes) else {
            return Err(ApiError::invalid_request("the body is not a JSON object"));
        };
        let parsed = serde_json::from_value(value)
            .map_err(|e| ApiError::invalid_request(format!("the body is not as specified: {e}")))?;
        Ok(StrictJson(parsed))
    }
}

/// The client IP (docs/protocol.md §12 rule 12): the socket peer, unless it is a trusted
/// proxy; then the right-most `X-Forwarded-For` address that is not one.
#[derive(Debug, Clone, Copy)]
pub struct ClientIp(pub IpAddr);

impl FromRequestParts<AppState> for ClientIp {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let peer =
            parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip()).ok_or_else(ApiError::internal)?;
        let trusted = &state.http.trusted_proxies;
        if !trusted.contains(&peer) {
            return Ok(ClientIp(peer));
        }
        let forwarded = parts
            .headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|s| s.trim().parse::<IpAddr>().ok())
            .collect::<Vec<_>>();
        Ok(ClientIp(forwarded.into_iter().rev().find(|ip| !trusted.contains(ip)).unwrap_or(peer)))
    }
}
