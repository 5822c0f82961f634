//! The Trust page: every trust list, CRL and VRL with seq, issued, next update, age
//! and source, and "Refresh now" behind a confirmation step (with a reason) and the
//! scope `management.trust.refresh` — the same `Services` call as the management
//! API's `POST /trust/refresh`, which runs the refresh the server runs on its
//! schedule and audits it.

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::pages::{opt_date, render, trust_table};
use super::{Console, api_error_page};
use crate::http::AppState;
use crate::http::management::scopes;
use crate::ids::now_unix;
use crate::service::management::{MAX_REASON, OperatorCall};
use crate::web::console::{self as view, notice};
use crate::web::escape;

/// Query of the Trust page: what the refresh just done found.
#[derive(Debug, Deserialize)]
pub struct TrustQuery {
    updated: Option<usize>,
    failed: Option<usize>,
}

/// `GET /console/trust`: the lists; "Refresh now" with the scope.
pub async fn trust(State(state): State<AppState>, console: Console, Query(q): Query<TrustQuery>) -> Response {
    let now = now_unix();
    let (last_refresh, lists) = state.services.console_trust(now);
    let mut body = String::from("<h1>Trust</h1>\n");
    if let (Some(updated), Some(failed)) = (q.updated, q.failed) {
        body.push_str(&notice(&format!(
            "Refreshed: {updated} document(s) changed, {failed} refused or unreachable (their last good copy stays)."
        )));
    }
    body.push_str(&format!(
        "<p>Seals are checked against these documents (docs/credentials.md). The server fetches them again on its \
         schedule (<code>trust.refresh</code>) and on SIGHUP; a document past its next update is stale and enrollment \
         fails closed. Last refresh: <span id=\"last-refresh\">{}</span>.</p>\n",
        escape(&opt_date(last_refresh))
    ));
    if console.operator.has(scopes::TRUST_REFRESH) && state.services.trust_configured() {
        body.push_str(&format!(
            "<p>{}</p>\n",
            view::button_link("refresh-trust", "/console/trust/refresh", "Refresh now", false)
        ));
    }
    body.push_str(&trust_table(&lists, now));
    render(&console, "/console/trust", "Trust", &body)
}

const REFRESH_TITLE: &str = "Refresh the trust lists";

/// `GET /console/trust/refresh`: the confirmation step.
pub async fn confirm_refresh(State(state): State<AppState>, console: Console) -> Response {
    if let Err(r) = console.require(&state, scopes::TRUST_REFRESH).await {
        return r;
    }
    let body = view::confirm_body(&view::Confirm {
        title: REFRESH_TITLE,
        effect: "Every trust list, CRL and VRL is fetched now, as on the schedule. A document that is refused or \
                 unreachable keeps its last good copy; devices whose credential a new CRL or VRL revokes are suspended.",
        action: "/console/trust/refresh",
        back: "/console/trust",
        csrf: console.csrf(),
        danger: false,
        max_reason: MAX_REASON,
    });
    render(&console, "/console/trust", REFRESH_TITLE, &body)
}

/// `POST /console/trust/refresh` (form: `csrf`, `reason`).
pub async fn refresh(State(state): State<AppState>, console: Console, headers: HeaderMap, body: Bytes) -> Response {
    let reason = match console.confirmed(&state, scopes::TRUST_REFRESH, &headers, &body).await {
        Ok(r) => r,
        Err(r) => return r,
    };
    let actor = console.operator.actor();
    let by = OperatorCall { actor: &actor, auth: console.auth(), reason: Some(&reason) };
    match state.services.management_refresh_trust(&by, now_unix()).await {
        Ok(o) => Redirect::to(&format!("/console/trust?updated={}&failed={}", o.updated.len(), o.failed.len()))
            .into_response(),
        Err(e) => api_error_page(&e),
    }
}
