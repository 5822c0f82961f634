//! The management API `/api/management/v1/` (admin listener only, docs/protocol.md §11).
//!
//! Every route first authenticates the bearer token (`401 invalid_token`), then checks
//! the route's scope (`403 insufficient_scope`), then parses its input. Each call,
//! refused scope included, is audited with the operator's `sub`, except a change
//! repeated (the credential is in that state already, the user is deleted already):
//! it changes nothing and writes no second event. The rules and events are the
//! service's (`service::management`), shared with the console and the command line.

use axum::Json;
use axum::Router;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::AppState;
use super::extract::StrictJson;
use super::operator::Operator;
use crate::error::{ApiError, ErrorCode};
use crate::ids::now_unix;
use crate::service::key_admin::{ChangedKey, KeyChange};
use crate::service::management::{
    AuditEntry, CredentialAction, CredentialView, DEFAULT_LIMIT, FlowStatus, FlowView, MAX_LIMIT, OperatorCall,
    UserView,
};
use crate::service::operations::{ReloadReport, TrustRefreshOutcome};

/// The scopes of docs/protocol.md §11.
pub mod scopes {
    pub const USERS_READ: &str = "management.users.read";
    pub const USERS_DELETE: &str = "management.users.delete";
    pub const CREDENTIALS_READ: &str = "management.credentials.read";
    pub const CREDENTIALS_SUSPEND: &str = "management.credentials.suspend";
    pub const CREDENTIALS_ACTIVATE: &str = "management.credentials.activate";
    pub const CREDENTIALS_REVOKE: &str = "management.credentials.revoke";
    pub const FLOWS_READ: &str = "management.flows.read";
    pub const AUDIT_READ: &str = "management.audit.read";
    pub const KEYS_WRITE: &str = "management.keys.write";
    pub const TRUST_REFRESH: &str = "management.trust.refresh";
    pub const CONFIG_RELOAD: &str = "management.config.reload";
}

/// Path prefix of every route.
pub const PREFIX: &str = "/api/management/v1";

/// The management routes (merged into the admin router).
pub fn routes() -> Router<AppState> {
    Router::new()
        .route(&format!("{PREFIX}/users"), get(list_users))
        .route(&format!("{PREFIX}/users/{{token_id}}"), get(get_user).delete(delete_user))
        .route(&format!("{PREFIX}/credentials/{{device_id}}"), get(get_credential))
        .route(&format!("{PREFIX}/credentials/{{device_id}}/suspend"), post(suspend))
        .route(&format!("{PREFIX}/credentials/{{device_id}}/activate"), post(activate))
        .route(&format!("{PREFIX}/credentials/{{device_id}}/revoke"), post(revoke))
        .route(&format!("{PREFIX}/flows"), get(list_flows))
        .route(&format!("{PREFIX}/audit"), get(list_audit))
        .route(&format!("{PREFIX}/keys/generate/{{purpose}}"), post(generate_key))
        .route(&format!("{PREFIX}/keys/rotate/{{purpose}}"), post(rotate_key))
        .route(&format!("{PREFIX}/keys/retire/{{label}}"), post(retire_key))
        .route(&format!("{PREFIX}/trust/refresh"), post(refresh_trust))
        .route(&format!("{PREFIX}/config/reload"), post(reload_config))
}

/// Authenticates the caller and checks `scope`. A refused scope is audited.
async fn authorize(state: &AppState, headers: &HeaderMap, scope: &str) -> Result<Operator, ApiError> {
    let operator = state.operators.authenticate(headers).await?;
    if !operator.has(scope) {
        state
            .services
            .management()
            .record(&operator.actor(), "management", json!({"action": "denied", "missing_scope": scope}))
            .await?;
        return Err(ApiError::new(ErrorCode::InsufficientScope, format!("this call needs the scope {scope}")));
    }
    Ok(operator)
}

/// Audits a read that was allowed, with its outcome (HTTP status).
async fn audited<T: IntoResponse>(
    state: &AppState,
    operator: &Operator,
    action: &str,
    subject: &str,
    result: Result<T, ApiError>,
) -> Result<Response, ApiError> {
    let actor = operator.actor();
    let by = operator_call(operator, &actor, None);
    state.services.management().audited(&by, action, subject, result).await.map(IntoResponse::into_response)
}

/// The optional body of a change: why the operator makes it (into the audit event).
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ActionBody {
    /// At most 200 characters, no control characters; kept in the audit event.
    pub reason: Option<String>,
}

/// The body of a change: empty, or `{"reason": "..."}` (parsed after authorization).
type ActionInput = Result<StrictJson<ActionBody, true>, ApiError>;

/// `cursor` and `limit` of a listing.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct UsersQuery {
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Page size, 1..=200 (default 50).
    pub limit: Option<u32>,
}

/// A page of users.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct UsersPage {
    pub users: Vec<UserView>,
    /// Absent on the last page.
    pub next_cursor: Option<String>,
}

/// A page of flows.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct FlowsPage {
    pub flows: Vec<FlowView>,
    pub next_cursor: Option<String>,
}

/// A page of audit records.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AuditPage {
    pub events: Vec<AuditEntry>,
    pub next_cursor: Option<String>,
}

/// Filters of `GET /flows`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct FlowsQuery {
    /// `pending`, `approved`, `rejected`, `locked` or `expired`.
    pub status: Option<String>,
    /// Unix seconds: flows created at or after.
    pub since: Option<i64>,
    pub cursor: Option<String>,
    pub limit: Option<u32>,
}

/// Filters of `GET /audit`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// Unix seconds: events at or after.
    pub since: Option<i64>,
    pub cursor: Option<String>,
    pub limit: Option<u32>,
}

fn query<T>(q: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    q.map(|Query(v)| v).map_err(|e| ApiError::invalid_request(format!("bad query: {}", e.body_text())))
}

fn limit(limit: Option<u32>) -> Result<u32, ApiError> {
    match limit.unwrap_or(DEFAULT_LIMIT) {
        n @ 1..=MAX_LIMIT => Ok(n),
        _ => Err(ApiError::invalid_request(format!("limit must be 1..={MAX_LIMIT}"))),
    }
}

#[utoipa::path(get, path = "/api/management/v1/users", tag = "management",
    security(("operator" = ["management.users.read"])),
    params(UsersQuery),
    responses(
        (status = 200, description = "A page of users", body = UsersPage),
        (status = 400, description = "Bad query", body = super::openapi::Problem, content_type = "application/problem+json"),
        super::openapi::ManagementErrors
    )
)]
pub async fn list_users(
    State(state): State<AppState>,
    headers: HeaderMap,
    q: Result<Query<UsersQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let operator = authorize(&state, &headers, scopes::USERS_READ).await?;
    let result = async {
        let q = query(q)?;
        let page = state.services.management().users(q.cursor.as_deref(), limit(q.limit)?).await?;
        Ok(Json(UsersPage { users: page.items, next_cursor: page.next_cursor }))
    }
    .await;
    audited(&state, &operator, "users.list", "users", result).await
}

#[utoipa::path(get, path = "/api/management/v1/users/{token_id}", tag = "management",
    security(("operator" = ["management.users.read"])),
    params(("token_id" = String, Path, description = "Token id")),
    responses(
        (status = 200, description = "The user", body = UserView),
        super::openapi::ManagementErrors
    )
)]
pub async fn get_user(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(token_id): Path<String>,
) -> Result<Response, ApiError> {
    let operator = authorize(&state, &headers, scopes::USERS_READ).await?;
    let result = state.services.management().user(&token_id).await.map(Json);
    audited(&state, &operator, "users.get", &token_id, result).await
}

/// Deletes a user's enrollment data. The audit event names the removed device ids
/// and the reason, not the token id, so it keeps no personal data of the deleted user.
/// A repeated deletion answers `404 not_found` and writes no audit event.
#[utoipa::path(delete, path = "/api/management/v1/users/{token_id}", tag = "management",
    security(("operator" = ["management.users.delete"])),
    params(("token_id" = String, Path, description = "Token id")),
    request_body(content = Option<ActionBody>, description = "Optional: why (into the audit event)", content_type = "application/json"),
    responses(
        (status = 204, description = "Enrollment data removed"),
        (status = 400, description = "Bad body or reason", body = super::openapi::Problem, content_type = "application/problem+json"),
        super::openapi::ManagementErrors
    )
)]
pub async fn delete_user(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(token_id): Path<String>,
    body: ActionInput,
) -> Result<Response, ApiError> {
    let operator = authorize(&state, &headers, scopes::USERS_DELETE).await?;
    let actor = operator.actor();
    let StrictJson(body) = body?;
    // Audited by the service: with the deletion in one transaction, or the refusal.
    let by = operator_call(&operator, &actor, body.reason.as_deref());
    state.services.management().delete_user(&token_id, &by).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// The operator as the service audits a call.
fn operator_call<'a>(operator: &Operator, actor: &'a str, reason: Option<&'a str>) -> OperatorCall<'a> {
    OperatorCall { actor, auth: if operator.break_glass { "break_glass" } else { "oidc" }, reason }
}

#[utoipa::path(get, path = "/api/management/v1/credentials/{device_id}", tag = "management",
    security(("operator" = ["management.credentials.read"])),
    params(("device_id" = String, Path, description = "Device id")),
    responses(
        (status = 200, description = "The credential", body = CredentialView),
        super::openapi::ManagementErrors
    )
)]
pub async fn get_credential(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(device_id): Path<String>,
) -> Result<Response, ApiError> {
    let operator = authorize(&state, &headers, scopes::CREDENTIALS_READ).await?;
    let result = state.services.management().credential(&device_id).await.map(Json);
    audited(&state, &operator, "credentials.get", &device_id, result).await
}

async fn change(
    state: AppState,
    headers: HeaderMap,
    device_id: String,
    body: ActionInput,
    action: CredentialAction,
    scope: &str,
) -> Result<Response, ApiError> {
    let operator = authorize(&state, &headers, scope).await?;
    let actor = operator.actor();
    let StrictJson(body) = body?;
    // Audited by the service: with the change in one transaction, or the refusal; a
    // repetition (the credential is in that state already) changes and audits nothing.
    let by = operator_call(&operator, &actor, body.reason.as_deref());
    let outcome = state.services.management().change_credential(&device_id, action, &by, now_unix()).await?;
    if outcome.changed {
        tracing::warn!(device_id = %device_id, action = action.as_str(), actor = %actor, "credential changed by an operator");
    }
    Ok(Json(outcome.credential).into_response())
}

#[utoipa::path(post, path = "/api/management/v1/credentials/{device_id}/suspend", tag = "management",
    security(("operator" = ["management.credentials.suspend"])),
    params(("device_id" = String, Path, description = "Device id")),
    request_body(content = Option<ActionBody>, description = "Optional: why (into the audit event)", content_type = "application/json"),
    responses(
        (status = 200, description = "The credential, suspended; unchanged (and not audited again) when it was so already", body = CredentialView),
        (status = 400, description = "Bad body or reason (`invalid_request`)", body = super::openapi::Problem, content_type = "application/problem+json"),
        (status = 409, description = "Revoked (`invalid_state`)", body = super::openapi::Problem, content_type = "application/problem+json"),
        super::openapi::ManagementErrors
    )
)]
pub async fn suspend(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(device_id): Path<String>,
    body: ActionInput,
) -> Result<Response, ApiError> {
    change(state, headers, device_id, body, CredentialAction::Suspend, scopes::CREDENTIALS_SUSPEND).await
}

#[utoipa::path(post, path = "/api/management/v1/credentials/{device_id}/activate", tag = "management",
    security(("operator" = ["management.credentials.activate"])),
    params(("device_id" = String, Path, description = "Device id")),
    request_body(content = Option<ActionBody>, description = "Optional: why (into the audit event)", content_type = "application/json"),
    responses(
        (status = 200, description = "The credential, active; unchanged (and not audited again) when it was so already", body = CredentialView),
        (status = 400, description = "Bad body or reason (`invalid_request`)", body = super::openapi::Problem, content_type = "application/problem+json"),
        (status = 409, description = "Revoked (`invalid_state`), or another device of the token id is active (`already_enrolled`)", body = super::openapi::Problem, content_type = "application/problem+json"),
        super::openapi::ManagementErrors
    )
)]
pub async fn activate(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(device_id): Path<String>,
    body: ActionInput,
) -> Result<Response, ApiError> {
    change(state, headers, device_id, body, CredentialAction::Activate, scopes::CREDENTIALS_ACTIVATE).await
}

#[utoipa::path(post, path = "/api/management/v1/credentials/{device_id}/revoke", tag = "management",
    security(("operator" = ["management.credentials.revoke"])),
    params(("device_id" = String, Path, description = "Device id")),
    request_body(content = Option<ActionBody>, description = "Optional: why (into the audit event)", content_type = "application/json"),
    responses(
        (status = 200, description = "The credential, revoked (final); unchanged (and not audited again) when it was so already", body = CredentialView),
        (status = 400, description = "Bad body or reason (`invalid_request`)", body = super::openapi::Problem, content_type = "application/problem+json"),
        super::openapi::ManagementErrors
    )
)]
pub async fn revoke(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(device_id): Path<String>,
    body: ActionInput,
) -> Result<Response, ApiError> {
    change(state, headers, device_id, body, CredentialAction::Revoke, scopes::CREDENTIALS_REVOKE).await
}

#[utoipa::path(get, path = "/api/management/v1/flows", tag = "management",
    security(("operator" = ["management.flows.read"])),
    params(FlowsQuery),
    responses(
        (status = 200, description = "A page of authentication flows", body = FlowsPage),
        (status = 400, description = "Bad query", body = super::openapi::Problem, content_type = "application/problem+json"),
        super::openapi::ManagementErrors
    )
)]
pub async fn list_flows(
    State(state): State<AppState>,
    headers: HeaderMap,
    q: Result<Query<FlowsQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let operator = authorize(&state, &headers, scopes::FLOWS_READ).await?;
    let result = async {
        let q = query(q)?;
        let status = match q.status.as_deref() {
            None | Some("") => None,
            Some(s) => Some(FlowStatus::parse(s).ok_or_else(|| {
                ApiError::invalid_request("status must be pending, approved, rejected, locked or expired")
            })?),
        };
        let page = state
            .services
            .management()
            .flows(status, q.since.unwrap_or(0), q.cursor.as_deref(), limit(q.limit)?, now_unix())
            .await?;
        Ok(Json(FlowsPage { flows: page.items, next_cursor: page.next_cursor }))
    }
    .await;
    audited(&state, &operator, "flows.list", "flows", result).await
}

#[utoipa::path(get, path = "/api/management/v1/audit", tag = "management",
    security(("operator" = ["management.audit.read"])),
    params(AuditQuery),
    responses(
        (status = 200, description = "A page of audit records", body = AuditPage),
        (status = 400, description = "Bad query", body = super::openapi::Problem, content_type = "application/problem+json"),
        super::openapi::ManagementErrors
    )
)]
pub async fn list_audit(
    State(state): State<AppState>,
    headers: HeaderMap,
    q: Result<Query<AuditQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let operator = authorize(&state, &headers, scopes::AUDIT_READ).await?;
    let result = async {
        let q = query(q)?;
        let page = state
            .services
            .management()
            .audit_events(q.since.unwrap_or(i64::MIN), q.cursor.as_deref(), limit(q.limit)?)
            .await?;
        Ok(Json(AuditPage { events: page.items, next_cursor: page.next_cursor }))
    }
    .await;
    audited(&state, &operator, "audit.list", "audit", result).await
}

/// The keys an operator's change touched, with their new states.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct KeysChanged {
    pub keys: Vec<ChangedKey>,
}

#[utoipa::path(post, path = "/api/management/v1/keys/generate/{purpose}", tag = "management",
    security(("operator" = ["management.keys.write"])),
    params(("purpose" = String, Path, description = "otp, jwt, saml, saml-rsa, data, audit or pairwise")),
    request_body(content = Option<ActionBody>, description = "Optional: why (into the audit event)", content_type = "application/json"),
    responses(
        (status = 200, description = "The key generated in the HSM (active when the purpose had none, else next)", body = KeysChanged),
        (status = 400, description = "Unknown purpose, bad body or reason (`invalid_request`)", body = super::openapi::Problem, content_type = "application/problem+json"),
        (status = 409, description = "The pairwise key exists and never rotates (`invalid_state`)", body = super::openapi::Problem, content_type = "application/problem+json"),
        super::openapi::ManagementErrors
    )
)]
pub async fn generate_key(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(purpose): Path<String>,
    body: ActionInput,
) -> Result<Response, ApiError> {
    change_key(&state, &headers, body, KeyChange::parse("generate", &purpose)?).await
}

#[utoipa::path(post, path = "/api/management/v1/keys/rotate/{purpose}", tag = "management",
    security(("operator" = ["management.keys.write"])),
    params(("purpose" = String, Path, description = "otp, jwt, saml, saml-rsa, data or audit")),
    request_body(content = Option<ActionBody>, description = "Optional: why (into the audit event)", content_type = "application/json"),
    responses(
        (status = 200, description = "next -> active, active -> retiring, and the new next key", body = KeysChanged),
        (status = 400, description = "Unknown purpose, bad body or reason (`invalid_request`)", body = super::openapi::Problem, content_type = "application/problem+json"),
        (status = 409, description = "Refused by the life-cycle rules, e.g. pairwise (`invalid_state`)", body = super::openapi::Problem, content_type = "application/problem+json"),
        super::openapi::ManagementErrors
    )
)]
pub async fn rotate_key(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(purpose): Path<String>,
    body: ActionInput,
) -> Result<Response, ApiError> {
    change_key(&state, &headers, body, KeyChange::parse("rotate", &purpose)?).await
}

#[utoipa::path(post, path = "/api/management/v1/keys/retire/{label}", tag = "management",
    security(("operator" = ["management.keys.write"])),
    params(("label" = String, Path, description = "The key's label")),
    request_body(content = Option<ActionBody>, description = "Optional: why (into the audit event)", content_type = "application/json"),
    responses(
        (status = 200, description = "The key, retired (it stays in the token)", body = KeysChanged),
        (status = 400, description = "Bad body or reason (`invalid_request`)", body = super::openapi::Problem, content_type = "application/problem+json"),
        (status = 409, description = "Unknown key, or not retirable yet; the detail says when (`invalid_state`)", body = super::openapi::Problem, content_type = "application/problem+json"),
        super::openapi::ManagementErrors
    )
)]
pub async fn retire_key(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(label): Path<String>,
    body: ActionInput,
) -> Result<Response, ApiError> {
    change_key(&state, &headers, body, KeyChange::Retire(&label)).await
}

/// The three key routes: `management.keys.write`, then the change, audited by the
/// service (refusals included).
async fn change_key(
    state: &AppState,
    headers: &HeaderMap,
    body: ActionInput,
    change: KeyChange<'_>,
) -> Result<Response, ApiError> {
    let operator = authorize(state, headers, scopes::KEYS_WRITE).await?;
    let actor = operator.actor();
    let StrictJson(body) = body?;
    // Audited by the service, refusals included.
    let by = operator_call(&operator, &actor, body.reason.as_deref());
    let keys = state.services.change_key(change, &by, now_unix()).await?;
    Ok(Json(KeysChanged { keys }).into_response())
}

/// What a trust refresh did.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TrustRefreshed {
    /// Lists, CRLs and VRLs whose content changed.
    pub updated: Vec<String>,
    /// `list: reason` of each document refused or unreachable (the last good copy stays).
    pub failed: Vec<String>,
    /// Every document is fresh now.
    pub fresh: bool,
}

impl From<TrustRefreshOutcome> for TrustRefreshed {
    fn from(o: TrustRefreshOutcome) -> Self {
        Self { updated: o.updated, failed: o.failed, fresh: o.fresh }
    }
}

/// The relying parties a reload added, removed or changed, by service id.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RelyingPartiesChanged {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub changed: Vec<String>,
}

/// What a reload did.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Reloaded {
    /// A configuration file was read (`false`: the server runs without one).
    pub file: bool,
    /// The file was valid and its relying parties are in effect.
    pub applied: bool,
    /// Why the file was not applied.
    pub problems: Vec<String>,
    /// Sections that changed and take effect at the next restart.
    pub restart: Vec<String>,
    /// Absent when the file was not applied.
    pub relying_parties: Option<RelyingPartiesChanged>,
    /// The trust refresh that followed (absent when no trust lists are configured).
    pub trust: Option<TrustRefreshed>,
    /// Why that refresh failed.
    pub trust_error: Option<String>,
}

impl From<ReloadReport> for Reloaded {
    fn from(r: ReloadReport) -> Self {
        let (trust, trust_error) = match r.trust {
            Some(Ok(o)) => (Some(o.into()), None),
            Some(Err(e)) => (None, Some(e)),
            None => (None, None),
        };
        Self {
            file: r.file,
            applied: r.relying_parties.is_some(),
            problems: r.problems,
            restart: r.restart,
            relying_parties: r.relying_parties.map(|c| RelyingPartiesChanged {
                added: c.added,
                removed: c.removed,
                changed: c.changed,
            }),
            trust,
            trust_error,
        }
    }
}

#[utoipa::path(post, path = "/api/management/v1/trust/refresh", tag = "management",
    security(("operator" = ["management.trust.refresh"])),
    request_body(content = Option<ActionBody>, description = "Optional: why (into the audit event)", content_type = "application/json"),
    responses(
        (status = 200, description = "The trust lists, CRLs and VRLs fetched now, as on the schedule (changes audited, revocations applied)", body = TrustRefreshed),
        (status = 400, description = "Bad body or reason (`invalid_request`)", body = super::openapi::Problem, content_type = "application/problem+json"),
        (status = 409, description = "No trust lists are configured (`invalid_state`)", body = super::openapi::Problem, content_type = "application/problem+json"),
        super::openapi::ManagementErrors
    )
)]
pub async fn refresh_trust(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: ActionInput,
) -> Result<Response, ApiError> {
    let operator = authorize(&state, &headers, scopes::TRUST_REFRESH).await?;
    let actor = operator.actor();
    let StrictJson(body) = body?;
    // Audited by the service, refusals included.
    let by = operator_call(&operator, &actor, body.reason.as_deref());
    let outcome = state.services.management_refresh_trust(&by, now_unix()).await?;
    Ok(Json(TrustRefreshed::from(outcome)).into_response())
}

#[utoipa::path(post, path = "/api/management/v1/config/reload", tag = "management",
    security(("operator" = ["management.config.reload"])),
    request_body(content = Option<ActionBody>, description = "Optional: why (into the audit event)", content_type = "application/json"),
    responses(
        (status = 200, description = "The configuration file re-read as on SIGHUP: a valid file's relying parties are in effect, an invalid file changed nothing (`applied` false, `problems`); then the trust lists were refreshed", body = Reloaded),
        (status = 400, description = "Bad body or reason (`invalid_request`)", body = super::openapi::Problem, content_type = "application/problem+json"),
        super::openapi::ManagementErrors
    )
)]
pub async fn reload_config(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: ActionInput,
) -> Result<Response, ApiError> {
    let operator = authorize(&state, &headers, scopes::CONFIG_RELOAD).await?;
    let actor = operator.actor();
    let StrictJson(body) = body?;
    let by = operator_call(&operator, &actor, body.reason.as_deref());
    let report = state.services.management_reload(&by, now_unix()).await?;
    Ok(Json(Reloaded::from(report)).into_response())
}
