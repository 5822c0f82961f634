//! HTTP: routers for the public and admin listeners, extractors, middleware.
//! Handlers parse and authorize here and call [`Services`] for everything else; they
//! import nothing of `store/`, `trust/` or `keys/` (docs/architecture.md).

mod auth;
pub mod config;
mod console;
mod enroll;
pub mod extract;
mod flow;
mod health;
pub mod management;
mod metrics;
mod oidc;
pub mod openapi;
pub mod operator;
mod pages;
mod problem;
pub mod request_id;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderValue, header};
use axum::routing::{get, post};
use tower_http::set_header::SetResponseHeaderLayer;

use crate::error::{ApiError, ErrorCode};
use crate::service::Services;

/// Everything a handler may use: the domain services and who may manage them.
#[derive(Clone, Debug)]
pub struct AppState {
    pub services: Arc<Services>,
    /// Authenticates management API callers.
    pub operators: Arc<operator::OperatorAuth>,
    /// The values the routers and extractors need.
    pub http: Arc<config::HttpSettings>,
    /// The public `/health` answer, reused for a second.
    pub health: Arc<health::HealthCache>,
}

/// Requests beyond `server.max_in_flight` are shed at once with `503 overloaded`
/// rather than queued without bound (docs/protocol.md §9).
async fn shed(err: tower::BoxError) -> ApiError {
    if err.is::<tower::load_shed::error::Overloaded>() {
        ApiError::new(ErrorCode::Overloaded, "the server is at capacity, retry shortly")
    } else {
        tracing::error!(error = %err, "middleware error");
        ApiError::internal()
    }
}

fn common_layers(router: Router<AppState>, state: &AppState, listener: &'static str) -> Router {
    let http = &state.http;
    let csp = HeaderValue::from_static("default-src 'none'; frame-ancestors 'none'; base-uri 'none'");
    let router = router
        .layer(
            tower::ServiceBuilder::new()
                .layer(axum::error_handling::HandleErrorLayer::new(shed))
                .load_shed()
                .concurrency_limit(http.max_in_flight),
        )
        .layer(DefaultBodyLimit::max(http.body_max_bytes))
        // Pages that need more (SAML sign-in, demo) set their own policy with a nonce.
        .layer(SetResponseHeaderLayer::if_not_present(header::CONTENT_SECURITY_POLICY, csp));
    let router = if http.hsts {
        router.layer(SetResponseHeaderLayer::overriding(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=31536000; includeSubDomains"),
        ))
    } else {
        router
    };
    router
        .layer(SetResponseHeaderLayer::overriding(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")))
        .layer(SetResponseHeaderLayer::overriding(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer")))
        .layer(SetResponseHeaderLayer::overriding(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")))
        .layer(SetResponseHeaderLayer::if_not_present(header::CACHE_CONTROL, HeaderValue::from_static("no-store")))
        .layer(axum::middleware::from_fn(request_id::assign))
        .layer(axum::middleware::from_fn_with_state(listener, metrics::count))
        .with_state(state.clone())
}

/// The public listener: the protocol and `/health` (docs/protocol.md §12 rule 11).
pub fn public_router(state: AppState) -> Router {
    let router = Router::new()
        .route("/health", get(health::public_health))
        .route("/v1/enroll/challenge", post(enroll::challenge))
        .route("/v1/enroll", post(enroll::enroll))
        .route("/v1/auth/initiate", post(auth::initiate))
        .route("/v1/auth/sessions/{id}", get(auth::poll))
        .route("/v1/auth/sessions/{id}/ws", get(auth::websocket))
        .route("/v1/device/pending", post(auth::device_pending))
        .route("/v1/auth/verify", post(auth::verify))
        .route("/jwks", get(auth::jwks))
        .route("/.well-known/jwks.json", get(auth::jwks))
        .route("/.well-known/openid-configuration", get(oidc::discovery))
        .route("/.well-known/oauth-authorization-server", get(oidc::discovery))
        .route("/authorize", get(oidc::authorize_get).post(oidc::authorize_post))
        .route("/authorize/complete", post(oidc::complete))
        .route("/authorize/cancel", post(oidc::cancel))
        .route("/token", post(oidc::token))
        .route("/userinfo", get(oidc::userinfo).post(oidc::userinfo))
        .route("/end_session", get(oidc::end_session_get).post(oidc::end_session_post));
    let router = if state.services.settings().saml.enabled {
        router
            .route("/saml/metadata", get(pages::metadata))
            .route("/saml/sso", get(pages::sso))
            .route("/saml/slo", get(pages::slo))
            .route("/saml/logout", get(pages::logout_step))
            .route("/saml/complete", post(pages::complete))
            .route("/saml/cancel", post(pages::cancel))
    } else {
        router
    };
    let router = if state.services.settings().demo.enabled { router.route("/demo", get(pages::demo)) } else { router };
    common_layers(
        router.fallback(health::not_found).method_not_allowed_fallback(health::method_not_allowed),
        &state,
        "public",
    )
    .layer(cors(&state))
}

/// CORS for the relying parties' browser origins (`allowed_origins` of every service,
/// as configured now: a SIGHUP that changes them applies to the next request).
fn cors(state: &AppState) -> tower_http::cors::CorsLayer {
    let services = state.services.clone();
    let allowed = tower_http::cors::AllowOrigin::predicate(move |origin: &HeaderValue, _| {
        origin.to_str().is_ok_and(|o| services.allows_origin(o))
    });
    tower_http::cors::CorsLayer::new()
        .allow_origin(allowed)
        .allow_methods([axum::http::Method::GET, axum::http::Method::POST])
        .allow_headers([header::CONTENT_TYPE, header::AUTHORIZATION])
        .expose_headers([header::RETRY_AFTER, axum::http::HeaderName::from_static(request_id::REQUEST_ID)])
        .max_age(std::time::Duration::from_secs(600))
}

/// The admin listener: probes, metrics and the management API (never on the public one).
pub fn admin_router(state: AppState) -> Router {
    let router = Router::new()
        .route("/livez", get(health::livez))
        .route("/readyz", get(health::readyz))
        .route("/health", get(health::health))
        .route("/openapi.json", get(openapi::openapi))
        .merge(management::routes());
    let router = if state.http.metrics { router.route("/metrics", get(metrics::metrics)) } else { router };
    let router = if state.http.console.enabled { router.merge(console::routes()) } else { router };
    common_layers(
        router.fallback(health::not_found).method_not_allowed_fallback(health::method_not_allowed),
        &state,
        "admin",
    )
}
