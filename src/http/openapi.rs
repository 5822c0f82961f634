//! The OpenAPI 3.1 document of the public and management APIs, generated from the
//! handlers' annotations and served at `GET /openapi.json` on the admin listener.
//! The browser WebSocket (`/v1/auth/sessions/{id}/ws`, docs/protocol.md §5.2) and the
//! SAML endpoints are not HTTP APIs of this kind and are described in the protocol.

use std::collections::BTreeMap;

use axum::Json;
use serde::Serialize;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, Response, ResponseBuilder, ResponsesBuilder};
use utoipa::{Modify, OpenApi};

/// RFC 9457 problem details, as every error is answered (`application/problem+json`).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Problem {
    /// Always `about:blank`.
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    /// The stable error code (docs/protocol.md §10), e.g. `invalid_token`.
    pub code: String,
    pub detail: String,
}

/// A problem+json response with `description`.
fn problem(description: &str) -> Response {
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/problem+json",
            ContentBuilder::new().schema(Some(Ref::from_schema_name("Problem"))).build(),
        )
        .build()
}

/// The errors every route with a request body can answer besides its own, each as
/// problem+json.
pub struct BodyErrors;

impl utoipa::IntoResponses for BodyErrors {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        ResponsesBuilder::new()
            .response("413", problem("Body too large (`payload_too_large`)"))
            .response("415", problem("Wrong content type (`unsupported_media_type`)"))
            .response("503", problem("Overloaded or a store is unavailable (`overloaded`, `unavailable`)"))
            .build()
            .into()
    }
}

/// The errors every management route can answer, each as problem+json.
pub struct ManagementErrors;

impl utoipa::IntoResponses for ManagementErrors {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        ResponsesBuilder::new()
            .response("401", problem("Missing or invalid bearer token (`invalid_token`)"))
            .response("403", problem("The token lacks the scope (`insufficient_scope`)"))
            .response("404", problem("Not found, or the management API is not configured (`management_disabled`)"))
            .response("503", problem("Unavailable"))
            .build()
            .into()
    }
}

/// The bearer schemes: operator JWTs (management) and browser tokens (polling).
struct BearerSchemes;

impl Modify for BearerSchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let mut operator = Http::new(HttpAuthScheme::Bearer);
        operator.bearer_format = Some("JWT".into());
        operator.description =
            Some("A JWT from the operator's OIDC provider carrying the route's scope, or the break-glass token".into());
        components.add_security_scheme("operator", SecurityScheme::Http(operator));
        let mut browser = Http::new(HttpAuthScheme::Bearer);
        browser.description = Some("The `browser_token` returned by initiate".into());
        components.add_security_scheme("browser_token", SecurityScheme::Http(browser));
    }
}

/// The document.
#[derive(OpenApi)]
#[openapi(
    info(title = "Symbolon", description = "Hardware-backed out-of-band authentication: the public protocol and the management API."),
    paths(
        super::health::public_health,
        super::enroll::challenge,
        super::enroll::enroll,
        super::auth::initiate,
        super::auth::poll,
        super::auth::device_pending,
        super::auth::verify,
        super::auth::jwks,
        super::management::list_users,
        super::management::get_user,
        super::management::delete_user,
        super::management::get_credential,
        super::management::suspend,
        super::management::activate,
        super::management::revoke,
        super::management::list_flows,
        super::management::list_audit,
        super::management::generate_key,
        super::management::rotate_key,
        super::management::retire_key,
        super::management::refresh_trust,
        super::management::reload_config,
    ),
    // `Problem` is named by `BodyErrors` and `ManagementErrors` (hand-written maps) too.
    components(schemas(Problem)),
    modifiers(&BearerSchemes),
    tags(
        (name = "public", description = "The protocol (public listener)"),
        (name = "health", description = "Health (public and admin listeners)"),
        (name = "management", description = "Management API (admin listener only)"),
    )
)]
pub struct ApiDoc;

/// `GET /openapi.json` (admin listener).
pub async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    let mut doc = ApiDoc::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").into();
    Json(doc)
}
