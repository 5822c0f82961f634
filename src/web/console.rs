//! The operator console's pages (docs/operations.md, "Operator console"): the
//! sign-in page, the frame every signed-in page shares (navigation, operator,
//! sign-out) and the bodies of Overview, Users, a user, the confirmation step,
//! Sign-in flows and Audit. No script at all: forms post to the console, each with
//! its CSRF token; style carries the response's nonce. Values come in as plain text
//! and are escaped here; the views carry names, states and dates, never a claim
//! value, OTP, push token or secret.

use super::{STYLE, escape};
use crate::web::Page;

const CONSOLE_STYLE: &str = include_str!("console.css");

/// The console's policy: no script, our nonce'd style, forms to `form_action`.
pub fn console_csp(nonce: &str, form_action: &str) -> String {
    format!(
        "default-src 'none'; style-src 'nonce-{nonce}'; img-src 'self' data:; form-action {form_action}; \
         frame-ancestors 'none'; base-uri 'none'"
    )
}

fn layout(nonce: &str, title: &str, top: &str, body: &str) -> String {
    format!(
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <meta name=\"referrer\" content=\"no-referrer\">\n<title>{title} · Symbolon console</title>\n\
         <style nonce=\"{nonce}\">{STYLE}\n{CONSOLE_STYLE}</style>\n</head>\n<body class=\"console\">\n{top}\n\
         <main id=\"main\">\n{body}\n</main>\n</body>\n</html>\n",
        title = escape(title),
    )
}

/// Unix seconds as `2026-12-06 12:43 UTC` (or `—`).
pub fn date(unix: i64) -> String {
    const FORMAT: &[time::format_description::FormatItem<'static>] =
        time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second] UTC");
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| t.format(FORMAT).ok())
        .unwrap_or_else(|| "—".into())
}

/// A hidden CSRF field.
fn csrf_field(csrf: &str) -> String {
    format!("<input type=\"hidden\" name=\"csrf\" value=\"{}\">", escape(csrf))
}

/// What the sign-in page offers.
#[derive(Debug, Clone, Default)]
pub struct SignInView {
    /// Sign-in through the operator identity provider is configured.
    pub provider: bool,
    /// The break-glass form is offered.
    pub break_glass: bool,
    /// The sign-in forms' CSRF token (also in the sign-in cookie).
    pub csrf: String,
    /// A message to show (e.g. "signed out", "session expired").
    pub message: Option<String>,
    /// An error to show.
    pub error: Option<String>,
    /// The authorization endpoint's origin: the provider form's post is answered by a
    /// redirect there, which `form-action` must allow.
    pub provider_origin: Option<String>,
}

/// The console's sign-in page.
pub fn signin_page(nonce: &str, view: &SignInView) -> Page {
    let mut body = String::from("<div class=\"signin-box\">\n<h1>Symbolon console</h1>\n");
    if let Some(m) = &view.message {
        body.push_str(&format!("<p class=\"notice\" role=\"status\">{}</p>\n", escape(m)));
    }
    if let Some(e) = &view.error {
        body.push_str(&format!("<p class=\"alert\" role=\"alert\" id=\"signin-error\">{}</p>\n", escape(e)));
    }
    if view.provider {
        body.push_str(&format!(
            "<form method=\"post\" action=\"/console/login\">\n{}\n\
             <p>Sign in with your organisation's operator account.</p>\n\
             <button id=\"signin-provider\" type=\"submit\">Sign in</button>\n</form>\n",
            csrf_field(&view.csrf)
        ));
    }
    if view.break_glass {
        if view.provider {
            body.push_str("<hr>\n");
        }
        body.push_str(&format!(
            "<form method=\"post\" action=\"/console/break-glass\">\n{}\n<h2>Break-glass access</h2>\n\
             <p class=\"hint\" id=\"bg-help\">Only when the identity provider is unavailable. Every use is audited.</p>\n\
             <label for=\"bg-token\">Break-glass token</label>\n\
             <input id=\"bg-token\" name=\"token\" type=\"password\" autocomplete=\"off\" required aria-describedby=\"bg-help\">\n\
             <button id=\"signin-break-glass\" type=\"submit\">Sign in with the break-glass token</button>\n</form>\n",
            csrf_field(&view.csrf)
        ));
    }
    if !view.provider && !view.break_glass {
        body.push_str("<p class=\"alert\">No sign-in method is configured.</p>\n");
    }
    body.push_str("</div>");
    let action = match &view.provider_origin {
        Some(o) => format!("'self' {o}"),
        None => "'self'".into(),
    };
    Page { html: layout(nonce, "Sign in", "", &body), csp: console_csp(nonce, &action) }
}

/// One entry of the navigation.
#[derive(Debug, Clone)]
pub struct NavItem {
    pub href: &'static str,
    pub label: &'static str,
}

/// The frame of a signed-in page.
#[derive(Debug, Clone)]
pub struct Frame<'a> {
    /// Who is signed in (the operator's `sub`, or `break-glass`).
    pub operator: &'a str,
    /// The session's CSRF token (for sign-out).
    pub csrf: &'a str,
    /// The pages this operator may see.
    pub nav: &'a [NavItem],
    /// `href` of the current page.
    pub current: &'a str,
}

/// A signed-in page: the frame around `body` (already escaped HTML).
pub fn page(nonce: &str, frame: &Frame<'_>, title: &str, body: &str) -> Page {
    let items: String = frame
        .nav
        .iter()
        .map(|n| {
            let current = if n.href == frame.current { " aria-current=\"page\"" } else { "" };
            format!("<li><a href=\"{}\"{current}>{}</a></li>", n.href, escape(n.label))
        })
        .collect();
    let top = format!(
        "<header class=\"topbar\">\n<span class=\"brand\">Symbolon console</span>\n\
         <nav aria-label=\"Console\"><ul>{items}</ul></nav>\n\
         <div class=\"who\"><span>Signed in as <strong id=\"operator\">{op}</strong></span>\n\
         <form method=\"post\" action=\"/console/signout\">{csrf}<button id=\"signout\" type=\"submit\" class=\"link\">Sign out</button></form></div>\n\
         </header>",
        op = escape(frame.operator),
        csrf = csrf_field(frame.csrf),
    );
    Page { html: layout(nonce, title, &top, body), csp: console_csp(nonce, "'self'") }
}

/// A table with a caption; cells are escaped HTML already.
pub fn table(id: &str, caption: &str, headers: &[&str], rows: &[Vec<String>]) -> String {
    let head: String = headers.iter().map(|h| format!("<th scope=\"col\">{}</th>", escape(h))).collect();
    let body: String = rows
        .iter()
        .map(|r| format!("<tr>{}</tr>", r.iter().map(|c| format!("<td>{c}</td>")).collect::<String>()))
        .collect();
    let empty = if rows.is_empty() {
        format!("<tr><td colspan=\"{}\">None.</td></tr>", headers.len().max(1))
    } else {
        String::new()
    };
    format!(
        "<div class=\"table-wrap\" role=\"region\" aria-labelledby=\"{id}-caption\" tabindex=\"0\">\
         <table id=\"{id}\"><caption id=\"{id}-caption\">{}</caption><thead><tr>{head}</tr></thead>\
         <tbody>{body}{empty}</tbody></table></div>",
        escape(caption)
    )
}

/// A state shown with its colour class (`active`, `suspended`, `ok`, ...).
pub fn state(s: &str) -> String {
    let class: String = s.chars().filter(|c| c.is_ascii_alphanumeric()).collect();
    format!("<span class=\"state-{class}\">{}</span>", escape(s))
}

/// A notice after an action (`role=status`).
pub fn notice(text: &str) -> String {
    format!("<p class=\"notice\" role=\"status\" id=\"notice\">{}</p>", escape(text))
}

/// A term/description list of facts (values escaped here).
pub fn facts(items: &[(&str, String)]) -> String {
    let inner: String = items.iter().map(|(k, v)| format!("<dt>{}</dt><dd>{}</dd>", escape(k), escape(v))).collect();
    format!("<dl class=\"facts\">{inner}</dl>")
}

/// The confirmation step of an action: what will happen, confirm or cancel.
#[derive(Debug, Clone)]
pub struct Confirm<'a> {
    /// E.g. "Suspend device".
    pub title: &'a str,
    /// One sentence on the effect.
    pub effect: &'a str,
    /// Where the form posts.
    pub action: &'a str,
    /// Where "Cancel" goes.
    pub back: &'a str,
    pub csrf: &'a str,
    /// The button is red (revoke, delete).
    pub danger: bool,
    /// The longest reason the server takes.
    pub max_reason: usize,
}

/// The body of a confirmation page: the effect, a required reason (kept in the audit
/// event), confirm or cancel.
pub fn confirm_body(c: &Confirm<'_>) -> String {
    format!(
        "<h1>{title}</h1>\n<p id=\"effect\">{effect}</p>\n<form method=\"post\" action=\"{action}\">\n{csrf}\n\
         <div class=\"field\"><label for=\"reason\">Reason</label>\
         <input id=\"reason\" name=\"reason\" type=\"text\" required maxlength=\"{max}\" autocomplete=\"off\" aria-describedby=\"reason-help\">\
         <p class=\"hint\" id=\"reason-help\">Why, e.g. a ticket number: kept in the audit trail with your name (at most {max} characters).</p></div>\n\
         <div class=\"actions\"><button id=\"confirm\" type=\"submit\"{danger}>{title}</button>\
         <a class=\"button\" id=\"cancel\" href=\"{back}\">Cancel</a></div>\n</form>",
        title = escape(c.title),
        effect = escape(c.effect),
        action = escape(c.action),
        back = escape(c.back),
        csrf = csrf_field(c.csrf),
        danger = if c.danger { " class=\"danger\"" } else { "" },
        max = c.max_reason,
    )
}

/// A link (href and text escaped here).
pub fn link(href: &str, text: &str) -> String {
    format!("<a href=\"{}\">{}</a>", escape(href), escape(text))
}

/// A button-styled link (href and text escaped here).
pub fn button_link(id: &str, href: &str, text: &str, danger: bool) -> String {
    let class = if danger { "button danger" } else { "button" };
    format!("<a class=\"{class}\" id=\"{}\" href=\"{}\">{}</a>", escape(id), escape(href), escape(text))
}

/// A GET search form with one text field.
pub fn search_form(action: &str, name: &str, label: &str, value: &str, hint: &str) -> String {
    format!(
        "<form class=\"search\" method=\"get\" action=\"{action}\" role=\"search\"><div>\
         <label for=\"q-{name}\">{label}</label>\
         <input id=\"q-{name}\" name=\"{name}\" type=\"search\" value=\"{value}\" aria-describedby=\"q-{name}-help\" autocomplete=\"off\" spellcheck=\"false\">\
         <p class=\"hint\" id=\"q-{name}-help\">{hint}</p></div>\
         <button type=\"submit\">Search</button></form>",
        action = escape(action),
        name = escape(name),
        label = escape(label),
        value = escape(value),
        hint = escape(hint),
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn console_pages_escape_run_no_script_and_carry_csrf() {
        let view = SignInView {
            provider: true,
            break_glass: true,
            csrf: "C\"1".into(),
            provider_origin: Some("https://login.example".into()),
            ..Default::default()
        };
        let p = signin_page("N", &view);
        assert!(!p.html.contains("<script"));
        assert!(p.csp.contains("form-action 'self' https://login.example;"));
        assert!(!p.csp.contains("script-src"));
        assert_eq!(p.html.matches("name=\"csrf\" value=\"C&quot;1\"").count(), 2);
        let nav = [NavItem { href: "/console/", label: "Overview" }];
        let frame = Frame { operator: "<op>", csrf: "X", nav: &nav, current: "/console/" };
        let p = page("N", &frame, "Overview", &table("t", "Users", &["Token id"], &[]));
        assert!(p.html.contains("&lt;op&gt;") && !p.html.contains("<op>"));
        assert!(p.html.contains("aria-current=\"page\""));
        assert!(p.html.contains("<td colspan=\"1\">None.</td>"));
        for (i, _) in p.html.match_indices("<style") {
            assert!(p.html[i..].starts_with("<style nonce=\"N\""));
        }
        let c = confirm_body(&Confirm {
            title: "Revoke",
            effect: "x",
            action: "/console/a",
            back: "/console/b",
            csrf: "X",
            danger: true,
            max_reason: 200,
        });
        assert!(c.contains("name=\"csrf\" value=\"X\"") && c.contains("id=\"cancel\" href=\"/console/b\""));
        assert!(c.contains("name=\"reason\" type=\"text\" required maxlength=\"200\""), "a required reason: {c}");
        assert_eq!(date(0), "1970-01-01 00:00:00 UTC");
    }
}
