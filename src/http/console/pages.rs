//! The console's pages (Keys is in `keys.rs`): Overview, Users (a user, and suspend / activate / revoke /
//! delete behind a confirmation step), Sign-in flows and Audit. Each
//! page checks the scope the management API's route of the same data needs; each
//! action checks the CSRF token, then its scope, then calls the same `Services`
//! method as the API (which audits it).

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use serde_json::json;

use super::{Console, api_error_page, error_page, html};
use crate::http::AppState;
use crate::http::management::scopes;
use crate::ids::now_unix;
use crate::service::console::TrustView;
use crate::service::management::{CredentialAction, FlowStatus, MAX_REASON, OperatorCall};
use crate::web::console::{self as view, NavItem, date, state as st, table};
use crate::web::{self, escape};

/// Rows per page of the lists.
const PAGE_SIZE: u32 = 50;

/// The pages this operator may open.
fn nav(console: &Console) -> Vec<NavItem> {
    let o = &console.operator;
    let mut items = vec![
        NavItem { href: "/console/", label: "Overview" },
        NavItem { href: "/console/keys", label: "Keys" },
        NavItem { href: "/console/trust", label: "Trust" },
        NavItem { href: "/console/services", label: "Relying parties" },
    ];
    if o.has(scopes::USERS_READ) {
        items.push(NavItem { href: "/console/users", label: "Users" });
    }
    if o.has(scopes::FLOWS_READ) {
        items.push(NavItem { href: "/console/flows", label: "Sign-in flows" });
    }
    if o.has(scopes::AUDIT_READ) {
        items.push(NavItem { href: "/console/audit", label: "Audit" });
    }
    items
}

pub(super) fn render(console: &Console, current: &str, title: &str, body: &str) -> Response {
    let items = nav(console);
    let operator = console.operator.actor();
    let frame = view::Frame { operator: &operator, csrf: console.csrf(), nav: &items, current };
    html(StatusCode::OK, view::page(&web::nonce(), &frame, title, body))
}

pub(super) fn opt_date(t: Option<i64>) -> String {
    t.map(date).unwrap_or_else(|| "—".into())
}

/// `GET /console/`: health, trust lists, keys, and the last hour's activity.
pub async fn overview(State(state): State<AppState>, console: Console) -> Response {
    let now = now_unix();
    let ready = state.services.readiness().await;
    let probe = |ok: bool| st(if ok { "ok" } else { "failing" });
    let missing = state.services.missing(now);
    let (last_refresh, lists) = state.services.console_trust(now);
    let fresh = lists.iter().all(|l| l.fresh);
    let mut body = String::from("<h1>Overview</h1>\n<div class=\"cards\">\n");
    body.push_str(&format!(
        "<section class=\"card\" aria-labelledby=\"health-title\"><h2 id=\"health-title\">Health</h2>\
         <dl class=\"facts\"><dt>Database</dt><dd>{}</dd><dt>Session store</dt><dd>{}</dd><dt>HSM</dt><dd>{}</dd>\
         <dt>Trust lists</dt><dd>{}</dd><dt>Configuration</dt><dd>{}</dd></dl></section>\n",
        probe(ready.database.ok()),
        probe(ready.session_store.ok()),
        probe(ready.hsm.ok()),
        if lists.is_empty() { st("not configured") } else { probe(fresh) },
        if missing.is_empty() { st("ok") } else { st(&format!("{} missing", missing.len())) },
    ));
    if console.operator.has(scopes::AUDIT_READ) {
        match state.services.console_recent_activity(now - 3600).await {
            Ok(a) => body.push_str(&format!(
                "<section class=\"card\" aria-labelledby=\"activity-title\"><h2 id=\"activity-title\">Last hour</h2>\
                 <dl class=\"facts\" id=\"activity\"><dt>Sign-ins approved</dt><dd>{}</dd><dt>Sign-ins rejected</dt><dd>{}</dd>\
                 <dt>Sessions locked (wrong codes)</dt><dd>{}</dd><dt>Token lockouts</dt><dd>{}</dd>\
                 <dt>Push failures</dt><dd>{}</dd></dl>{}</section>\n",
                a.approved,
                a.rejected,
                a.sessions_locked,
                a.lockouts,
                a.push_failed,
                if a.truncated { "<p class=\"hint\">More events than counted: these are lower bounds.</p>" } else { "" },
            )),
            Err(e) => return api_error_page(&e),
        }
    }
    body.push_str("</div>\n");
    if !missing.is_empty() {
        let rows: Vec<Vec<String>> =
            missing.iter().map(|m| vec![escape(&m.check), escape(&m.problem), escape(&m.fix)]).collect();
        body.push_str(&table("missing", "What keeps this node from being ready", &["Check", "Problem", "Fix"], &rows));
    }
    let keys: Vec<Vec<String>> = state
        .services
        .console_keys()
        .into_iter()
        .map(|k| {
            vec![
                escape(k.purpose),
                format!("<code>{}</code>", escape(&k.label)),
                st(k.state),
                date(k.created_at),
                opt_date(k.activated_at),
                opt_date(k.retiring_at),
            ]
        })
        .collect();
    body.push_str("<h2>Keys</h2>\n");
    body.push_str(&table(
        "keys",
        "HSM keys by purpose",
        &["Purpose", "Label", "State", "Created", "Activated", "Retiring since"],
        &keys,
    ));
    body.push_str(&format!(
        "<h2>Trust lists</h2>\n<p>Last refresh: {} · {}</p>\n",
        escape(&opt_date(last_refresh)),
        view::link("/console/trust", "Trust page")
    ));
    body.push_str(&trust_table(&lists, now));
    render(&console, "/console/", "Overview", &body)
}

/// The table of every trust list, CRL and VRL at `now` (Overview and the Trust page).
pub(super) fn trust_table(lists: &[TrustView], now: i64) -> String {
    let rows: Vec<Vec<String>> = lists
        .iter()
        .map(|l| {
            let age = l.fetched_at.map(|f| format!("{} min", (now - f).max(0) / 60)).unwrap_or_else(|| "—".into());
            vec![
                escape(l.kind),
                escape(&l.name),
                l.seq.map(|s| s.to_string()).unwrap_or_else(|| "—".into()),
                opt_date(l.issued),
                opt_date(l.next_update),
                age,
                if l.fresh {
                    st("fresh")
                } else {
                    st(&format!("stale{}", l.error.as_ref().map(|e| format!(": {e}")).unwrap_or_default()))
                },
                format!("<span class=\"mono wrap\">{}</span>", escape(&l.source)),
            ]
        })
        .collect();
    table(
        "trust",
        "Trust lists, CRLs and VRLs",
        &["Kind", "Name", "Seq", "Issued", "Next update", "Age (fetched)", "State", "Source"],
        &rows,
    )
}

/// Query of `GET /console/users`.
#[derive(Debug, Deserialize)]
pub struct UsersQuery {
    q: Option<String>,
    cursor: Option<String>,
    done: Option<String>,
}

/// `GET /console/users`: search by token id prefix, with paging.
pub async fn users(State(state): State<AppState>, console: Console, Query(q): Query<UsersQuery>) -> Response {
    if let Err(r) = console.require(&state, scopes::USERS_READ).await {
        return r;
    }
    let prefix = q.q.as_deref().unwrap_or("").trim().to_string();
    let page = match state.services.console_users(&prefix, q.cursor.as_deref(), PAGE_SIZE).await {
        Ok(p) => p,
        Err(e) => return api_error_page(&e),
    };
    let mut body = String::from("<h1>Users</h1>\n");
    if q.done.as_deref() == Some("deleted") {
        body.push_str(&view::notice("The user's enrollment data was deleted."));
    }
    body.push_str(&view::search_form(
        "/console/users",
        "q",
        "Token id starts with",
        &prefix,
        "The token id printed in the Symbolon app; leave empty to list all.",
    ));
    let rows: Vec<Vec<String>> = page
        .items
        .iter()
        .map(|u| {
            let states: Vec<String> = u.devices.iter().map(|d| st(d.status.as_str())).collect();
            vec![
                view::link(&format!("/console/users/{}", url_segment(&u.token_id)), &u.token_id),
                states.join(", "),
                u.devices.len().to_string(),
                date(u.created_at),
                date(u.updated_at),
            ]
        })
        .collect();
    body.push_str(&table(
        "users",
        "Users",
        &["Token id", "Devices' states", "Devices", "First enrolled", "Last change"],
        &rows,
    ));
    if let Some(next) = &page.next_cursor {
        let href = format!("/console/users?q={}&cursor={}", query_value(&prefix), query_value(next));
        body.push_str(&format!("<p>{}</p>", view::link(&href, "Next page")));
    }
    render(&console, "/console/users", "Users", &body)
}

/// Percent-encodes a path segment (RFC 3986 unreserved characters stay).
pub(super) fn url_segment(s: &str) -> String {
    const SEGMENT: &percent_encoding::AsciiSet =
        &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');
    percent_encoding::utf8_percent_encode(s, SEGMENT).to_string()
}

/// Percent-encodes a query value.
fn query_value(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// Query of a user's page: the action just done.
#[derive(Debug, Deserialize)]
pub struct DoneQuery {
    done: Option<String>,
}

/// `GET /console/users/{token_id}`: the devices with state, dates and claim names,
/// and the actions this operator's scopes allow.
pub async fn user(
    State(state): State<AppState>,
    console: Console,
    Path(token_id): Path<String>,
    Query(q): Query<DoneQuery>,
) -> Response {
    if let Err(r) = console.require(&state, scopes::USERS_READ).await {
        return r;
    }
    let result = state.services.management().user(&token_id).await;
    let status = result.as_ref().map_or_else(|e| e.code.status(), |_| 200);
    let detail = json!({"action": "users.get", "status": status, "auth": console.auth(), "via": "console"});
    if let Err(e) = state.services.management().record(&console.operator.actor(), &token_id, detail).await {
        return api_error_page(&e);
    }
    let user = match result {
        Ok(u) => u,
        Err(e) => return api_error_page(&e),
    };
    let o = &console.operator;
    let mut body = format!("<h1>User <code>{}</code></h1>\n", escape(&user.token_id));
    if let Some(done) = q.done.as_deref() {
        let text = match done {
            "suspend" => "The device is suspended.",
            "activate" => "The device is active.",
            "revoke" => "The device is revoked.",
            _ => "",
        };
        if !text.is_empty() {
            body.push_str(&view::notice(text));
        }
    }
    body.push_str(&view::facts(&[
        ("Enrolled", if user.enrolled { "yes (an active device)".into() } else { "no active device".into() }),
        ("First enrollment", date(user.created_at)),
        ("Last change", date(user.updated_at)),
    ]));
    let rows: Vec<Vec<String>> = user
        .devices
        .iter()
        .map(|d| {
            let mut actions = Vec::new();
            let mut action = |a: CredentialAction, scope: &str, label: &str, danger: bool| {
                if o.has(scope) {
                    let href = format!("/console/credentials/{}/{}", url_segment(&d.device_id), a.as_str());
                    actions.push(view::button_link(&format!("{}-{}", a.as_str(), d.device_id), &href, label, danger));
                }
            };
            match d.status.as_str() {
                "active" => action(CredentialAction::Suspend, scopes::CREDENTIALS_SUSPEND, "Suspend", false),
                "suspended" => action(CredentialAction::Activate, scopes::CREDENTIALS_ACTIVATE, "Activate", false),
                _ => {}
            }
            if d.status.as_str() != "revoked" {
                action(CredentialAction::Revoke, scopes::CREDENTIALS_REVOKE, "Revoke", true);
            }
            let state_cell = match &d.status_reason {
                Some(r) => format!("{}<br><span class=\"hint\">{}</span>", st(d.status.as_str()), escape(r)),
                None => st(d.status.as_str()),
            };
            vec![
                format!("<code class=\"wrap\">{}</code>", escape(&d.device_id)),
                state_cell,
                format!("<div class=\"actions\">{}</div>", actions.join("")),
                escape(&d.device_name),
                format!("<span class=\"wrap\">{}</span>", escape(&d.claim_names.join(", "))),
                if d.push_registered { escape(&d.push_provider) } else { "none".into() },
                date(d.created_at),
                opt_date(d.last_used_at),
                date(d.updated_at),
            ]
        })
        .collect();
    body.push_str("<h2>Devices</h2>\n");
    body.push_str(&table(
        "devices",
        "Enrolled devices",
        &["Device id", "State", "Actions", "Name", "Claims (names)", "Push", "Enrolled", "Last used", "Last change"],
        &rows,
    ));
    if o.has(scopes::USERS_DELETE) {
        let href = format!("/console/users/{}/delete", url_segment(&user.token_id));
        body.push_str(&format!(
            "<h2>Delete</h2>\n<p>Deleting removes every enrollment of this token id, sealed claims included.</p>\n<p>{}</p>",
            view::button_link("delete-user", &href, "Delete user", true)
        ));
    }
    render(&console, "/console/users", "User", &body)
}

fn parse_action(a: &str) -> Option<(CredentialAction, &'static str, &'static str, &'static str)> {
    Some(match a {
        "suspend" => (
            CredentialAction::Suspend,
            scopes::CREDENTIALS_SUSPEND,
            "Suspend device",
            "The device cannot sign in until it is activated again.",
        ),
        "activate" => (
            CredentialAction::Activate,
            scopes::CREDENTIALS_ACTIVATE,
            "Activate device",
            "The device can sign in again.",
        ),
        "revoke" => (
            CredentialAction::Revoke,
            scopes::CREDENTIALS_REVOKE,
            "Revoke device",
            "The device can never sign in again; the user must enroll anew. This cannot be undone.",
        ),
        _ => return None,
    })
}

/// `GET /console/credentials/{device_id}/{action}`: the confirmation step.
pub async fn confirm_change(
    State(state): State<AppState>,
    console: Console,
    Path((device_id, action)): Path<(String, String)>,
) -> Response {
    let Some((a, scope, title, effect)) = parse_action(&action) else {
        return error_page(StatusCode::NOT_FOUND, "Not found", "No such action.");
    };
    if let Err(r) = console.require(&state, scope).await {
        return r;
    }
    let credential = match state.services.management().credential(&device_id).await {
        Ok(c) => c,
        Err(e) => return api_error_page(&e),
    };
    let back = format!("/console/users/{}", url_segment(&credential.token_id));
    let effect = format!("Device {} of token id {}: {effect}", credential.device_id, credential.token_id);
    let action_url = format!("/console/credentials/{}/{}", url_segment(&device_id), a.as_str());
    let body = view::confirm_body(&view::Confirm {
        title,
        effect: &effect,
        action: &action_url,
        back: &back,
        csrf: console.csrf(),
        danger: a == CredentialAction::Revoke,
        max_reason: MAX_REASON,
    });
    render(&console, "/console/users", title, &body)
}

/// `POST /console/credentials/{device_id}/{action}` (form: `csrf`, `reason`).
pub async fn change(
    State(state): State<AppState>,
    console: Console,
    Path((device_id, action)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some((a, scope, _, _)) = parse_action(&action) else {
        return error_page(StatusCode::NOT_FOUND, "Not found", "No such action.");
    };
    let reason = match console.confirmed(&state, scope, &headers, &body).await {
        Ok(r) => r,
        Err(r) => return r,
    };
    let actor = console.operator.actor();
    let by = OperatorCall { actor: &actor, auth: console.auth(), reason: Some(&reason) };
    match state.services.management().change_credential(&device_id, a, &by, now_unix()).await {
        Ok(outcome) => {
            let view = outcome.credential;
            if outcome.changed {
                tracing::warn!(device_id = %device_id, action = a.as_str(), actor = %actor, "credential changed in the console");
            }
            Redirect::to(&format!("/console/users/{}?done={}", url_segment(&view.token_id), a.as_str())).into_response()
        }
        Err(e) => api_error_page(&e),
    }
}

/// `GET /console/users/{token_id}/delete`: the confirmation step.
pub async fn confirm_delete(State(state): State<AppState>, console: Console, Path(token_id): Path<String>) -> Response {
    if let Err(r) = console.require(&state, scopes::USERS_DELETE).await {
        return r;
    }
    let back = format!("/console/users/{}", url_segment(&token_id));
    let action = format!("{back}/delete");
    let effect = format!(
        "Every enrollment of token id {token_id} is removed with its sealed claims and push token. This cannot be undone."
    );
    let body = view::confirm_body(&view::Confirm {
        title: "Delete user",
        effect: &effect,
        action: &action,
        back: &back,
        csrf: console.csrf(),
        danger: true,
        max_reason: MAX_REASON,
    });
    render(&console, "/console/users", "Delete user", &body)
}

/// `POST /console/users/{token_id}/delete` (form: `csrf`, `reason`).
pub async fn delete(
    State(state): State<AppState>,
    console: Console,
    Path(token_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let reason = match console.confirmed(&state, scopes::USERS_DELETE, &headers, &body).await {
        Ok(r) => r,
        Err(r) => return r,
    };
    let actor = console.operator.actor();
    let by = OperatorCall { actor: &actor, auth: console.auth(), reason: Some(&reason) };
    match state.services.management().delete_user(&token_id, &by).await {
        Ok(_) => Redirect::to("/console/users?done=deleted").into_response(),
        Err(e) => api_error_page(&e),
    }
}

/// Filters of `GET /console/flows`.
#[derive(Debug, Deserialize)]
pub struct FlowsQuery {
    status: Option<String>,
    service: Option<String>,
    /// Hours back (default 24).
    hours: Option<i64>,
    cursor: Option<String>,
}

/// A `<select>` with its label; `options` are (value, text).
fn select(name: &str, label: &str, options: &[(&str, &str)], current: &str) -> String {
    let opts: String = options
        .iter()
        .map(|(v, t)| {
            let sel = if *v == current { " selected" } else { "" };
            format!("<option value=\"{}\"{sel}>{}</option>", escape(v), escape(t))
        })
        .collect();
    format!(
        "<div><label for=\"f-{name}\">{}</label><select id=\"f-{name}\" name=\"{name}\">{opts}</select></div>",
        escape(label)
    )
}

const HOURS: [(&str, &str); 4] =
    [("1", "Last hour"), ("24", "Last 24 hours"), ("168", "Last 7 days"), ("0", "Everything kept")];

fn since(hours: i64, now: i64) -> i64 {
    if hours <= 0 { 0 } else { now - hours * 3600 }
}

/// `GET /console/flows`: sign-in flows by outcome, service and time.
pub async fn flows(State(state): State<AppState>, console: Console, Query(q): Query<FlowsQuery>) -> Response {
    if let Err(r) = console.require(&state, scopes::FLOWS_READ).await {
        return r;
    }
    let now = now_unix();
    let hours = q.hours.unwrap_or(24);
    let status = q.status.as_deref().filter(|s| !s.is_empty());
    let service = q.service.as_deref().map(str::trim).filter(|s| !s.is_empty());
    let parsed = match status.map(FlowStatus::parse) {
        Some(None) => return error_page(StatusCode::BAD_REQUEST, "Bad filter", "Unknown outcome."),
        Some(s) => s,
        None => None,
    };
    let page =
        match state.services.management().flows(parsed, since(hours, now), q.cursor.as_deref(), PAGE_SIZE, now).await {
            Ok(p) => p,
            Err(e) => return api_error_page(&e),
        };
    let mut body =
        String::from("<h1>Sign-in flows</h1>\n<form class=\"search\" method=\"get\" action=\"/console/flows\">");
    body.push_str(&select(
        "status",
        "Outcome",
        &[
            ("", "Any"),
            ("approved", "Approved"),
            ("rejected", "Rejected"),
            ("locked", "Locked"),
            ("expired", "Expired"),
            ("pending", "Pending"),
        ],
        status.unwrap_or(""),
    ));
    body.push_str(&format!(
        "<div><label for=\"f-service\">Service id</label><input id=\"f-service\" name=\"service\" type=\"search\" value=\"{}\"></div>",
        escape(service.unwrap_or(""))
    ));
    body.push_str(&select("hours", "Time", &HOURS, &hours.to_string()));
    body.push_str("<button type=\"submit\">Filter</button></form>\n");
    let rows: Vec<Vec<String>> = page
        .items
        .iter()
        .filter(|f| service.is_none_or(|s| f.service_id == s))
        .map(|f| {
            let outcome =
                serde_json::to_value(f.status).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default();
            vec![
                date(f.created_at),
                escape(&f.service_id),
                st(&outcome),
                f.failures.to_string(),
                escape(&f.scopes.join(" ")),
                opt_date(f.ended_at),
            ]
        })
        .collect();
    body.push_str(&table(
        "flows",
        "Sign-in flows, oldest first",
        &["Started", "Service", "Outcome", "Wrong codes", "Scopes", "Ended"],
        &rows,
    ));
    if let Some(next) = &page.next_cursor {
        let href = format!(
            "/console/flows?status={}&service={}&hours={hours}&cursor={}",
            query_value(status.unwrap_or("")),
            query_value(service.unwrap_or("")),
            query_value(next)
        );
        body.push_str(&format!("<p>{}</p>", view::link(&href, "Next page")));
    }
    render(&console, "/console/flows", "Sign-in flows", &body)
}

/// Filters of `GET /console/audit`.
#[derive(Debug, Deserialize)]
pub struct AuditQuery {
    kind: Option<String>,
    hours: Option<i64>,
    cursor: Option<String>,
    verify: Option<String>,
}

/// `GET /console/audit`: records by type and time, the chain's state and the latest
/// signed checkpoint, the NDJSON export.
pub async fn audit(State(state): State<AppState>, console: Console, Query(q): Query<AuditQuery>) -> Response {
    if let Err(r) = console.require(&state, scopes::AUDIT_READ).await {
        return r;
    }
    let now = now_unix();
    let hours = q.hours.unwrap_or(24);
    let kind = q.kind.as_deref().map(str::trim).filter(|s| !s.is_empty());
    let chain = match state.services.console_audit_chain(q.verify.is_some()).await {
        Ok(c) => c,
        Err(e) => return api_error_page(&e),
    };
    let page = match state.services.management().audit_events(since(hours, now), q.cursor.as_deref(), 200).await {
        Ok(p) => p,
        Err(e) => return api_error_page(&e),
    };
    let mut body = String::from("<h1>Audit</h1>\n");
    let checkpoint = match &chain.checkpoint {
        Some((seq, at, label)) => format!("record {seq}, signed {} by HSM key {label}", date(*at)),
        None => "none yet".into(),
    };
    let verified = match &chain.verified {
        None => format!(
            "not checked on this page · {}",
            "<a id=\"verify\" href=\"/console/audit?verify=1\">Verify the chain now</a>"
        ),
        Some(Ok(text)) => format!("<span class=\"state-ok\">{}</span>", escape(text)),
        Some(Err(text)) => format!("<span class=\"state-bad\" id=\"chain-broken\">{}</span>", escape(text)),
    };
    body.push_str(&format!(
        "<dl class=\"facts\"><dt>Latest signed checkpoint</dt><dd id=\"checkpoint\">{}</dd><dt>Chain</dt><dd id=\"chain\">{verified}</dd></dl>\n",
        escape(&checkpoint)
    ));
    body.push_str("<form class=\"search\" method=\"get\" action=\"/console/audit\">");
    body.push_str(&format!(
        "<div><label for=\"f-kind\">Type</label><input id=\"f-kind\" name=\"kind\" type=\"search\" value=\"{}\" aria-describedby=\"f-kind-help\"><p class=\"hint\" id=\"f-kind-help\">E.g. management.action, auth.approved</p></div>",
        escape(kind.unwrap_or(""))
    ));
    body.push_str(&select("hours", "Time", &HOURS, &hours.to_string()));
    body.push_str("<button type=\"submit\">Filter</button></form>\n");
    body.push_str(&format!(
        "<p>{}</p>\n",
        view::link(&format!("/console/audit/export?hours={hours}"), "Export these records as NDJSON")
    ));
    let rows: Vec<Vec<String>> = page
        .items
        .iter()
        .filter(|e| kind.is_none_or(|k| e.kind == k))
        .map(|e| {
            vec![
                e.seq.to_string(),
                date(e.at),
                escape(&e.kind),
                escape(&e.actor),
                format!("<span class=\"mono\">{}</span>", escape(&e.subject)),
                format!("<span class=\"mono wrap\">{}</span>", escape(&e.detail.to_string())),
            ]
        })
        .collect();
    body.push_str(&table(
        "audit",
        "Audit records, oldest first",
        &["Seq", "Time", "Type", "Actor", "Subject", "Detail"],
        &rows,
    ));
    if let Some(next) = &page.next_cursor {
        let href = format!(
            "/console/audit?kind={}&hours={hours}&cursor={}",
            query_value(kind.unwrap_or("")),
            query_value(next)
        );
        body.push_str(&format!("<p>{}</p>", view::link(&href, "Next page")));
    }
    render(&console, "/console/audit", "Audit", &body)
}

/// `GET /console/audit/export?hours=N`: NDJSON download, audited.
pub async fn audit_export(State(state): State<AppState>, console: Console, Query(q): Query<AuditQuery>) -> Response {
    if let Err(r) = console.require(&state, scopes::AUDIT_READ).await {
        return r;
    }
    let hours = q.hours.unwrap_or(24);
    let (bytes, n) = match state.services.console_audit_export(since(hours, now_unix())).await {
        Ok(x) => x,
        Err(e) => return api_error_page(&e),
    };
    let detail =
        json!({"action": "audit.export", "status": 200, "auth": console.auth(), "via": "console", "records": n});
    if let Err(e) = state.services.management().record(&console.operator.actor(), "audit", detail).await {
        return api_error_page(&e);
    }
    let mut r = bytes.into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/x-ndjson"));
    h.insert(header::CONTENT_DISPOSITION, HeaderValue::from_static("attachment; filename=\"symbolon-audit.ndjson\""));
    r
}
