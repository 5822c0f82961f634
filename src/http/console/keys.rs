//! The Keys page: the HSM key catalog with states, and generate / rotate / retire
//! behind a confirmation step and the scope `management.keys.write` — the same
//! `Services` calls as the management API's `/keys/...` routes (which audit them).

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::pages::{opt_date, render, url_segment};
use super::{Console, api_error_page, error_page};
use crate::http::AppState;
use crate::http::management::scopes;
use crate::ids::now_unix;

use crate::service::key_admin::{KeyChange, KeyPurpose};
use crate::service::management::{MAX_REASON, OperatorCall};
use crate::web::console::{self as view, date, notice, state as st, table};
use crate::web::escape;

/// Query of the Keys page: the action just done and on what.
#[derive(Debug, Deserialize)]
pub struct KeysQuery {
    done: Option<String>,
    target: Option<String>,
}

/// `GET /console/keys`: every key of the catalog; the actions with the write scope.
pub async fn keys(State(state): State<AppState>, console: Console, Query(q): Query<KeysQuery>) -> Response {
    let write = console.operator.has(scopes::KEYS_WRITE);
    let mut body = String::from("<h1>Keys</h1>\n");
    if let (Some(done), Some(target)) = (q.done.as_deref(), q.target.as_deref()) {
        let text = match done {
            "generate" => format!("A {target} key was generated."),
            "rotate" => format!("The {target} keys were rotated."),
            "retire" => format!("{target} is retired."),
            _ => String::new(),
        };
        if !text.is_empty() {
            body.push_str(&notice(&text));
        }
    }
    body.push_str(
        "<p>Keys live in the HSM. Rotation makes the next key active and the active key retiring; \
         a retiring key may retire once what it made has expired. The same as <code>symbolon keys</code>.</p>\n",
    );
    let catalog = state.services.console_keys();
    let mut headers = vec!["Purpose", "Label", "State", "Created", "Activated", "Retiring since"];
    if write {
        headers.push("Action");
    }
    let rows: Vec<Vec<String>> = catalog
        .iter()
        .map(|k| {
            let mut row = vec![
                escape(k.purpose),
                format!("<code>{}</code>", escape(&k.label)),
                st(k.state),
                date(k.created_at),
                opt_date(k.activated_at),
                opt_date(k.retiring_at),
            ];
            if write {
                row.push(if matches!(k.state, "retiring" | "next") {
                    let href = format!("/console/keys/retire/{}", url_segment(&k.label));
                    view::button_link(&format!("retire-{}", k.label), &href, "Retire", true)
                } else {
                    String::new()
                });
            }
            row
        })
        .collect();
    body.push_str(&table("keys", "HSM keys by purpose", &headers, &rows));
    if write {
        body.push_str("<h2>Rotate or generate</h2>\n<ul class=\"key-actions\">");
        for p in KeyPurpose::ALL.into_iter().filter(|p| p.rotates()) {
            let name = p.as_str();
            body.push_str(&format!(
                "<li>{} {}</li>",
                view::button_link(
                    &format!("rotate-{name}"),
                    &format!("/console/keys/rotate/{name}"),
                    &format!("Rotate {name}"),
                    false
                ),
                view::button_link(
                    &format!("generate-{name}"),
                    &format!("/console/keys/generate/{name}"),
                    &format!("Generate next {name}"),
                    false
                ),
            ));
        }
        body.push_str("</ul>\n");
    }
    render(&console, "/console/keys", "Keys", &body)
}

fn title_and_effect(change: KeyChange<'_>) -> (String, String) {
    match change {
        KeyChange::Generate(p) => (
            format!("Generate a {} key", p.as_str()),
            format!(
                "A new {} key is made in the HSM: active if the purpose has none, else next (published, used after the next rotation).",
                p.as_str()
            ),
        ),
        KeyChange::Rotate(p) => (
            format!("Rotate the {} keys", p.as_str()),
            format!(
                "The next {0} key becomes active and the active one retiring; a new next key is generated. Every node switches within keys.sync_interval.",
                p.as_str()
            ),
        ),
        KeyChange::Retire(target) => (
            "Retire key".into(),
            format!(
                "{target} is no longer used or published. It stays in the HSM. Refused while what it made may still be in use."
            ),
        ),
    }
}

/// `GET /console/keys/{action}/{target}`: the confirmation step.
pub async fn confirm(
    State(state): State<AppState>,
    console: Console,
    Path((action, target)): Path<(String, String)>,
) -> Response {
    let Ok(change) = KeyChange::parse(&action, &target) else {
        return error_page(StatusCode::NOT_FOUND, "Not found", "No such action.");
    };
    if let Err(r) = console.require(&state, scopes::KEYS_WRITE).await {
        return r;
    }
    let (title, effect) = title_and_effect(change);
    let action_url = format!("/console/keys/{action}/{}", url_segment(&target));
    let body = view::confirm_body(&view::Confirm {
        title: &title,
        effect: &effect,
        action: &action_url,
        back: "/console/keys",
        csrf: console.csrf(),
        danger: matches!(change, KeyChange::Retire(_)),
        max_reason: MAX_REASON,
    });
    render(&console, "/console/keys", &title, &body)
}

/// `POST /console/keys/{action}/{target}` (form: `csrf`, `reason`).
pub async fn change(
    State(state): State<AppState>,
    console: Console,
    Path((action, target)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Ok(change) = KeyChange::parse(&action, &target) else {
        return error_page(StatusCode::NOT_FOUND, "Not found", "No such action.");
    };
    let reason = match console.confirmed(&state, scopes::KEYS_WRITE, &headers, &body).await {
        Ok(r) => r,
        Err(r) => return r,
    };
    let actor = console.operator.actor();
    let by = OperatorCall { actor: &actor, auth: console.auth(), reason: Some(&reason) };
    match state.services.change_key(change, &by, now_unix()).await {
        Ok(_) => {
            let to = format!("/console/keys?done={action}&target={}", url_segment(&target));
            Redirect::to(&to).into_response()
        }
        Err(e) => api_error_page(&e),
    }
}
