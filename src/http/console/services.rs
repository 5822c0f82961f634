//! The Relying parties page: every `[[services]]` entry with its SAML and OpenID
//! Connect settings, read only (never a secret, a secret's hash or a key), and
//! "Reload configuration" behind a confirmation step (with a reason) and the scope
//! `management.config.reload` — the same `Services` call as the management API's
//! `POST /config/reload`, which re-reads the file as SIGHUP does and audits it.

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::pages::render;
use super::{Console, api_error_page};
use crate::http::AppState;
use crate::http::management::scopes;
use crate::ids::now_unix;
use crate::service::management::{MAX_REASON, OperatorCall};
use crate::web::console::{self as view, notice};
use crate::web::escape;

/// Query of the page after a reload: what it did.
#[derive(Debug, Deserialize)]
pub struct ServicesQuery {
    /// `applied`, `invalid` or `nofile`.
    reload: Option<String>,
    added: Option<usize>,
    removed: Option<usize>,
    changed: Option<usize>,
    problems: Option<usize>,
    restart: Option<usize>,
}

/// Settings as a definition list (values escaped here).
fn settings(id: &str, caption: &str, items: &[(&'static str, String)]) -> String {
    format!(
        "<h3 id=\"{id}\">{}</h3>{}",
        escape(caption),
        view::facts(&items.iter().map(|(k, v)| (*k, v.clone())).collect::<Vec<_>>())
    )
}

fn reload_notice(q: &ServicesQuery) -> Option<String> {
    let n = |v: Option<usize>| v.unwrap_or(0);
    Some(match q.reload.as_deref()? {
        "applied" => {
            let mut text = format!(
                "Configuration reloaded: {} relying part(ies) added, {} removed, {} changed.",
                n(q.added),
                n(q.removed),
                n(q.changed)
            );
            if n(q.restart) > 0 {
                text.push_str(&format!(
                    " {} other section(s) changed and take effect at the next restart (see the log).",
                    n(q.restart)
                ));
            }
            text
        }
        "invalid" => format!(
            "The configuration file has {} problem(s) and was not applied; the running relying parties stay. \
             `symbolon config check` names them.",
            n(q.problems)
        ),
        "nofile" => "This server runs without a configuration file: there is nothing to re-read.".into(),
        _ => return None,
    })
}

/// `GET /console/services`: the relying parties in effect.
pub async fn services(State(state): State<AppState>, console: Console, Query(q): Query<ServicesQuery>) -> Response {
    let mut body = String::from("<h1>Relying parties</h1>\n");
    if let Some(text) = reload_notice(&q) {
        body.push_str(&notice(&text));
    }
    body.push_str(
        "<p>The <code>[[services]]</code> of the configuration file, as this node runs them. They change when the \
         file is re-read (SIGHUP, <code>systemctl reload symbolon</code>, or Reload configuration here); secrets \
         and their hashes are never shown.</p>\n",
    );
    if console.operator.has(scopes::CONFIG_RELOAD) {
        body.push_str(&format!(
            "<p>{}</p>\n",
            view::button_link("reload-config", "/console/services/reload", "Reload configuration", false)
        ));
    }
    let rps = state.services.console_relying_parties();
    if rps.is_empty() {
        body.push_str("<p>No relying party is configured.</p>\n");
    }
    for (i, rp) in rps.iter().enumerate() {
        let kinds: Vec<&str> = [(rp.oidc.is_some(), "OpenID Connect"), (rp.saml.is_some(), "SAML")]
            .iter()
            .filter(|k| k.0)
            .map(|k| k.1)
            .collect();
        body.push_str(&format!(
            "<section class=\"card rp\" aria-labelledby=\"rp-{i}\"><h2 id=\"rp-{i}\"><code>{}</code> · {}</h2>\
             <p class=\"hint\">{}</p>",
            escape(&rp.id),
            escape(&rp.name),
            escape(&if kinds.is_empty() { "Raw API".to_string() } else { format!("Raw API, {}", kinds.join(", ")) }),
        ));
        body.push_str(&view::facts(&rp.settings.iter().map(|(k, v)| (*k, v.clone())).collect::<Vec<_>>()));
        if let Some(oidc) = &rp.oidc {
            body.push_str(&settings(&format!("rp-{i}-oidc"), "OpenID Connect client", oidc));
        }
        if let Some(saml) = &rp.saml {
            body.push_str(&settings(&format!("rp-{i}-saml"), "SAML service provider", saml));
        }
        body.push_str("</section>\n");
    }
    render(&console, "/console/services", "Relying parties", &body)
}

const RELOAD_TITLE: &str = "Reload configuration";

/// `GET /console/services/reload`: the confirmation step.
pub async fn confirm_reload(State(state): State<AppState>, console: Console) -> Response {
    if let Err(r) = console.require(&state, scopes::CONFIG_RELOAD).await {
        return r;
    }
    let body = view::confirm_body(&view::Confirm {
        title: RELOAD_TITLE,
        effect: "The configuration file is read again, as on SIGHUP: when it is valid its relying parties replace \
                 the running ones at once (other sections that changed wait for a restart); an invalid file changes \
                 nothing. Then the trust lists are refreshed. Other nodes keep theirs until they are reloaded too.",
        action: "/console/services/reload",
        back: "/console/services",
        csrf: console.csrf(),
        danger: false,
        max_reason: MAX_REASON,
    });
    render(&console, "/console/services", RELOAD_TITLE, &body)
}

/// `POST /console/services/reload` (form: `csrf`, `reason`).
pub async fn reload(State(state): State<AppState>, console: Console, headers: HeaderMap, body: Bytes) -> Response {
    let reason = match console.confirmed(&state, scopes::CONFIG_RELOAD, &headers, &body).await {
        Ok(r) => r,
        Err(r) => return r,
    };
    let actor = console.operator.actor();
    let by = OperatorCall { actor: &actor, auth: console.auth(), reason: Some(&reason) };
    let report = match state.services.management_reload(&by, now_unix()).await {
        Ok(r) => r,
        Err(e) => return api_error_page(&e),
    };
    let to = match (&report.relying_parties, report.file) {
        (_, false) => "/console/services?reload=nofile".to_string(),
        (None, true) => format!("/console/services?reload=invalid&problems={}", report.problems.len()),
        (Some(c), true) => format!(
            "/console/services?reload=applied&added={}&removed={}&changed={}&restart={}",
            c.added.len(),
            c.removed.len(),
            c.changed.len(),
            report.restart.len()
        ),
    };
    Redirect::to(&to).into_response()
}
