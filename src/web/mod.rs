//! Server-rendered browser pages: the SAML sign-in page, the page that auto-POSTs a
//! SAML `Response` to an SP, the demo relying-party page and the error page. Every
//! page is self-contained (no third-party assets), its script and style carry a
//! per-response nonce, and its Content-Security-Policy is built here with it.
//! Nothing here knows HTTP: handlers set the headers these functions describe.

pub mod console;

use base64::Engine;
use rand_core::{OsRng, RngCore};

const STYLE: &str = include_str!("style.css");
const SIGNIN_JS: &str = include_str!("signin.js");
const POST_JS: &str = "document.getElementById('saml-post').submit();";
/// After load, so the step page stays in the history: Back from an SP that does not
/// answer returns here and the chain goes on.
const LOGOUT_JS: &str = "window.addEventListener('load',function(){setTimeout(function(){\
location.assign(document.getElementById('logout-next').href);},0);});";

/// A rendered page with the CSP that must accompany it.
#[derive(Debug, Clone)]
pub struct Page {
    pub html: String,
    pub csp: String,
}

/// A fresh CSP nonce: 128 random bits, base64.
pub fn nonce() -> String {
    let mut b = [0u8; 16];
    OsRng.fill_bytes(&mut b);
    base64::engine::general_purpose::STANDARD.encode(b)
}

/// Escapes text for HTML element content and double-quoted attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The origin (`scheme://host[:port]`) of an http(s) URL.
pub fn origin_of(url: &str) -> Option<String> {
    url::Url::parse(url).ok().map(|u| u.origin()).filter(|o| o.is_tuple()).map(|o| o.ascii_serialization())
}

/// `ws://` / `wss://` form of an http(s) origin, for `connect-src` (CSP level 2
/// browsers do not let `'self'` cover WebSockets).
fn ws_origin(origin: &str) -> Option<String> {
    origin
        .strip_prefix("https://")
        .map(|h| format!("wss://{h}"))
        .or_else(|| origin.strip_prefix("http://").map(|h| format!("ws://{h}")))
}

/// The policy of our pages: nothing by default, our nonce'd script and style,
/// fetch/WebSocket to ourselves only, forms only to `form_action`, never framed.
pub fn csp(nonce: &str, issuer_origin: Option<&str>, form_action: &str) -> String {
    let mut connect = "'self'".to_string();
    if let Some(ws) = issuer_origin.and_then(ws_origin) {
        connect.push(' ');
        connect.push_str(&ws);
    }
    format!(
        "default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; connect-src {connect}; \
         img-src 'self' data:; form-action {form_action}; frame-ancestors 'none'; base-uri 'none'"
    )
}

fn layout(nonce: &str, title: &str, body: &str, script: Option<&str>) -> String {
    let script = script.map(|s| format!("<script nonce=\"{nonce}\">{s}</script>")).unwrap_or_default();
    format!(
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <meta name=\"referrer\" content=\"no-referrer\">\n<title>{title}</title>\n\
         <style nonce=\"{nonce}\">{STYLE}</style>\n</head>\n<body>\n<main>\n{body}\n</main>\n{script}\n</body>\n</html>\n",
        title = escape(title),
    )
}

/// What the sign-in part of a page starts sessions for.
#[derive(Debug, Clone)]
pub struct SignInTarget<'a> {
    /// `service_id` for initiate.
    pub service_id: &'a str,
    /// Shown to the user.
    pub service_name: &'a str,
    /// Requested scopes.
    pub scopes: &'a [String],
}

fn signin_form(mode: &str, target: &SignInTarget<'_>, extra_data: &str, prefill: Option<&str>) -> String {
    let value = prefill.map(|p| format!(" value=\"{}\"", escape(p))).unwrap_or_default();
    format!(
        r#"<div id="app" data-mode="{mode}" data-service-id="{sid}" data-scopes="{scopes}"{extra_data}>
<section id="step-start" aria-labelledby="start-title">
<h2 id="start-title" class="visually-hidden">Your token id</h2>
<form id="start-form" novalidate>
<label for="token-id">Token id</label>
<input id="token-id" name="token_id" type="text" autocomplete="username" autocapitalize="none" spellcheck="false" required minlength="6" maxlength="64" pattern="[A-Za-z0-9._\-]{{6,64}}" aria-describedby="token-help"{value}>
<p id="token-help" class="hint">The token id of your enrolled document, as shown in the Symbolon app.</p>
<button id="start-button" type="submit">Continue</button>
</form>
</section>
<section id="step-otp" hidden aria-labelledby="otp-title">
<h2 id="otp-title">Check that your phone shows the same code</h2>
<p class="otp" id="otp" aria-describedby="otp-help"></p>
<p id="otp-help">Open the Symbolon app on your phone. Approve only if it shows exactly this code and the service <strong>{name}</strong>.</p>
<p class="hint" id="countdown"></p>
<p class="hint" id="slow-hint" hidden>Nothing on your phone yet? Check the token id you entered: <strong id="entered-id"></strong>.</p>
<button id="cancel-signin" type="button" class="link">Cancel: enter another token id</button>
</section>
<p id="status" role="status" aria-live="polite"></p>
<p id="alert" role="alert" class="alert" hidden></p>
<button id="retry" type="button" hidden>Try again</button>
<noscript><p class="alert">This sign-in page needs JavaScript to talk to your phone. Please enable it and reload.</p></noscript>
</div>"#,
        sid = escape(target.service_id),
        scopes = escape(&target.scopes.join(" ")),
        name = escape(target.service_name),
    )
}

/// The hidden completion form a hosted sign-in page submits once the phone approved,
/// and its cancel form (back to `back_to` with a refusal): both carry the context.
fn flow_forms(complete_action: &str, cancel_action: &str, context_id: &str, back_to: &str) -> String {
    format!(
        r#"<form id="complete-form" method="post" action="{complete_action}" hidden>
<input type="hidden" name="context" value="{ctx}">
<input type="hidden" name="session_id" value="">
<input type="hidden" name="browser_token" value="">
</form>
<form id="cancel-form" method="post" action="{cancel_action}">
<input type="hidden" name="context" value="{ctx}">
<button id="cancel" type="submit" class="link">Cancel and return to {back}</button>
</form>"#,
        ctx = escape(context_id),
        back = escape(back_to),
    )
}

/// The SAML sign-in page for a checked `AuthnRequest`. It posts to `/saml/complete`
/// or `/saml/cancel`, hence `form-action 'self'`; the page answering either post is
/// the one allowed to send a form to the SP ([`saml_post_page`]).
pub fn signin_page(nonce: &str, issuer_origin: Option<&str>, target: &SignInTarget<'_>, context_id: &str) -> Page {
    let body = format!(
        r#"<h1>Sign in to {name}</h1>
<p class="lead"><strong>{name}</strong> asks you to confirm who you are with your phone.</p>
{form}
{forms}"#,
        name = escape(target.service_name),
        form = signin_form("saml", target, "", None),
        forms = flow_forms("/saml/complete", "/saml/cancel", context_id, target.service_name),
    );
    Page {
        html: layout(nonce, &format!("Sign in to {}", target.service_name), &body, Some(SIGNIN_JS)),
        csp: csp(nonce, issuer_origin, "'self'"),
    }
}

/// Where an OpenID Connect sign-in page returns to, and what it prefills.
#[derive(Debug, Clone)]
pub struct OidcReturn<'a> {
    /// The sign-in context id (hidden field of the completion and cancel forms).
    pub context_id: &'a str,
    /// The host of the client's redirect URI, shown to the user.
    pub return_host: &'a str,
    /// The origin of the redirect URI: the completion answers with a redirect there,
    /// which `form-action` must allow.
    pub return_origin: Option<&'a str>,
    /// Token id from `login_hint`.
    pub login_hint: Option<&'a str>,
}

/// The OpenID Connect sign-in page for a checked authorization request (the same
/// machinery as the SAML page). It posts to `/authorize/complete`, whose answer
/// redirects to the client, or to `/authorize/cancel` (`access_denied`). The browser
/// token stays on this origin.
pub fn oidc_signin_page(
    nonce: &str,
    issuer_origin: Option<&str>,
    target: &SignInTarget<'_>,
    ret: &OidcReturn<'_>,
) -> Page {
    let body = format!(
        r#"<h1>Sign in to {name}</h1>
<p class="lead"><strong>{name}</strong> asks you to confirm who you are with your phone. You will then return to <strong>{host}</strong>.</p>
{form}
{forms}"#,
        name = escape(target.service_name),
        host = escape(ret.return_host),
        form = signin_form("oidc", target, "", ret.login_hint),
        forms = flow_forms("/authorize/complete", "/authorize/cancel", ret.context_id, ret.return_host),
    );
    let action = match ret.return_origin {
        Some(o) => format!("'self' {o}"),
        None => "'self'".to_string(),
    };
    Page {
        html: layout(nonce, &format!("Sign in to {}", target.service_name), &body, Some(SIGNIN_JS)),
        csp: csp(nonce, issuer_origin, &action),
    }
}

/// The demo relying-party page: sign in, then see the identity token decoded and its
/// signature checked in the browser against `/jwks` (WebCrypto).
pub fn demo_page(nonce: &str, issuer_origin: Option<&str>, target: &SignInTarget<'_>) -> Page {
    let body = format!(
        r#"<h1>Symbolon demo</h1>
<p class="lead">A relying party called <strong>{name}</strong>: sign in with your token id, compare the code with your phone, approve, and see the identity token you get.</p>
{form}
<section id="result" hidden aria-labelledby="result-title">
<h2 id="result-title">Identity token</h2>
<p id="signature" role="status"></p>
<h3>Header</h3>
<pre id="jwt-header"></pre>
<h3>Claims</h3>
<pre id="jwt-claims"></pre>
<h3>Compact form</h3>
<pre id="jwt-raw" class="raw"></pre>
</section>"#,
        name = escape(target.service_name),
        form = signin_form("demo", target, "", None),
    );
    Page { html: layout(nonce, "Symbolon demo", &body, Some(SIGNIN_JS)), csp: csp(nonce, issuer_origin, "'none'") }
}

/// The page that sends the SAML `Response` to the ACS (HTTP-POST binding): submitted
/// by a nonce'd script, with a button for browsers without script.
pub fn saml_post_page(nonce: &str, acs_url: &str, saml_response: &str, relay_state: Option<&str>) -> Page {
    post_page(nonce, "Signing you in", "Approved. Taking you back to the service…", acs_url, saml_response, relay_state)
}

/// The auto-POST of a SAML refusal (e.g. `InvalidNameIDPolicy`) to the SP's ACS: the
/// same form as [`saml_post_page`], saying that nobody was signed in.
pub fn saml_refusal_page(nonce: &str, acs_url: &str, saml_response: &str, relay_state: Option<&str>) -> Page {
    let status = "The service asked for something this sign-in server does not offer. Taking you back to it…";
    post_page(nonce, "Returning to the service", status, acs_url, saml_response, relay_state)
}

fn post_page(
    nonce: &str,
    title: &str,
    status: &str,
    acs_url: &str,
    saml_response: &str,
    relay_state: Option<&str>,
) -> Page {
    let relay = relay_state
        .map(|r| format!("<input type=\"hidden\" name=\"RelayState\" value=\"{}\">\n", escape(r)))
        .unwrap_or_default();
    let body = format!(
        r#"<h1>{title}</h1>
<p role="status">{status}</p>
<form id="saml-post" method="post" action="{acs}">
<input type="hidden" name="SAMLResponse" value="{resp}">
{relay}<noscript><p>Script is off: press the button to continue.</p><button type="submit">Continue</button></noscript>
</form>"#,
        title = escape(title),
        status = escape(status),
        acs = escape(acs_url),
        resp = escape(saml_response),
    );
    let action = origin_of(acs_url).unwrap_or_else(|| "'none'".into());
    Page { html: layout(nonce, title, &body, Some(POST_JS)), csp: csp(nonce, None, &action) }
}

/// One step of a single logout (docs/protocol.md §8.1): a nonce'd script follows the
/// link to the SP's SingleLogoutService with the signed `LogoutRequest`; the page says
/// which SP, and offers to skip it when it does not send the browser back.
pub fn logout_step_page(nonce: &str, sp_name: &str, url: &str, skip_url: &str, position: usize, total: usize) -> Page {
    let body = format!(
        r#"<h1>Signing you out</h1>
<p role="status">Signing you out of <strong>{sp}</strong> ({position} of {total})…</p>
<p><a id="logout-next" href="{url}">Continue to {sp}</a></p>
<p class="hint">If {sp} does not send you back, return to this page or <a id="logout-skip" href="{skip}">skip it</a>.</p>"#,
        sp = escape(sp_name),
        url = escape(url),
        skip = escape(skip_url),
    );
    Page { html: layout(nonce, "Signing you out", &body, Some(LOGOUT_JS)), csp: csp(nonce, None, "'none'") }
}

/// A notice (e.g. "signed out"): a title and a sentence, no script.
pub fn notice_page(nonce: &str, title: &str, message: &str) -> Page {
    let body = format!("<h1>{}</h1>\n<p role=\"status\">{}</p>", escape(title), escape(message));
    Page { html: layout(nonce, title, &body, None), csp: csp(nonce, None, "'none'") }
}

/// An error page: a title, a sentence and the request id to quote to support (no
/// script).
pub fn error_page(nonce: &str, title: &str, message: &str, request_id: Option<&str>) -> Page {
    let mut body = format!("<h1>{}</h1>\n<p class=\"alert\" role=\"alert\">{}</p>", escape(title), escape(message));
    if let Some(id) = request_id {
        body.push_str(&format!(
            "\n<p class=\"hint\">If you contact support, quote this request id: <code id=\"request-id\">{}</code></p>",
            escape(id)
        ));
    }
    Page { html: layout(nonce, title, &body, None), csp: csp(nonce, None, "'none'") }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn escaping_and_policy() {
        assert_eq!(escape(r#"<a href="x">'&'</a>"#), "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;");
        let p = csp("N", Some("https://idp.example"), "https://sp.example");
        assert!(p.contains("script-src 'nonce-N'"));
        assert!(p.contains("connect-src 'self' wss://idp.example"));
        assert!(p.contains("form-action https://sp.example"));
        assert!(p.contains("frame-ancestors 'none'"));
        assert_eq!(origin_of("https://sp.example:8443/acs?x=1").as_deref(), Some("https://sp.example:8443"));
    }

    #[test]
    fn pages_have_no_inline_handlers_and_nonce_everywhere() {
        let scopes = vec!["name".to_string()];
        let target = SignInTarget { service_id: "rp\"1", service_name: "<Bank>", scopes: &scopes };
        let page = signin_page("NONCE", Some("http://127.0.0.1:1"), &target, "ctx");
        assert!(!page.html.contains("<Bank>"));
        assert!(page.html.contains("rp&quot;1"));
        for tag in ["<script", "<style"] {
            for (i, _) in page.html.match_indices(tag) {
                assert!(page.html[i..].starts_with(&format!("{tag} nonce=\"NONCE\"")));
            }
        }
        assert!(!page.html.contains(" onclick=") && !page.html.contains(" onload="));
        let post = saml_post_page("N2", "https://sp.example/acs", "PHg+", Some("r&s"));
        assert!(post.html.contains("value=\"r&amp;s\""));
        assert!(post.csp.contains("form-action https://sp.example;"));
    }

    #[test]
    fn sign_in_pages_offer_cancel_and_a_delayed_token_id_hint() {
        let scopes = vec!["name".to_string()];
        let target = SignInTarget { service_id: "rp1", service_name: "Example Bank", scopes: &scopes };
        for page in [signin_page("N", None, &target, "ctx"), demo_page("N", None, &target)] {
            assert!(page.html.contains("id=\"cancel-signin\""), "{}", page.html);
            assert!(page.html.contains("<p class=\"hint\" id=\"slow-hint\" hidden>"), "hidden until 20 s passed");
            assert!(page.html.contains("Example Bank"), "the relying party's display name");
        }
        assert!(SIGNIN_JS.contains("SLOW_HINT_AFTER_MS = 20000"));
        // The hosted pages also cancel the whole flow, back to the relying party.
        let saml = signin_page("N", None, &target, "ctx\"1").html;
        assert!(saml.contains("<form id=\"cancel-form\" method=\"post\" action=\"/saml/cancel\">"), "{saml}");
        assert!(saml.contains("name=\"context\" value=\"ctx&quot;1\""), "{saml}");
        assert!(saml.contains("Cancel and return to Example Bank"), "{saml}");
        let ret = OidcReturn { context_id: "c2", return_host: "rp.example", return_origin: None, login_hint: None };
        let oidc = oidc_signin_page("N", None, &target, &ret).html;
        assert!(oidc.contains("action=\"/authorize/cancel\"") && oidc.contains("Cancel and return to rp.example"));
        let page = error_page("N", "Refused", "No.", Some("req-1<"));
        assert!(page.html.contains("<code id=\"request-id\">req-1&lt;</code>"), "{}", page.html);
        assert!(!error_page("N", "Refused", "No.", None).html.contains("request id"));
    }

    /// WCAG 2 contrast ratio of two `#rrggbb` colours.
    fn contrast(a: &str, b: &str) -> f64 {
        let lum = |hex: &str| {
            let c = |i: usize| {
                let v = f64::from(u8::from_str_radix(&hex[i..i + 2], 16).unwrap()) / 255.0;
                if v <= 0.03928 { v / 12.92 } else { ((v + 0.055) / 1.055).powf(2.4) }
            };
            0.2126 * c(1) + 0.7152 * c(3) + 0.0722 * c(5)
        };
        let (x, y) = (lum(a), lum(b));
        (x.max(y) + 0.05) / (x.min(y) + 0.05)
    }

    #[test]
    fn text_colours_have_at_least_4_5_to_1_contrast_in_light_and_dark() {
        // Canvas is white in light mode and #121212 (Chromium) in dark mode.
        let var = |css: &str, name: &str| {
            let at = css.find(&format!("--{name}: #")).unwrap_or_else(|| panic!("--{name} in {css}"));
            css[at + name.len() + 4..at + name.len() + 11].to_string()
        };
        let (light, dark) = STYLE.split_once("@media (prefers-color-scheme: dark)").unwrap();
        for name in ["link", "bad", "good", "muted"] {
            let ratio = contrast(&var(light, name), "#ffffff");
            assert!(ratio >= 4.5, "--{name} on white: {ratio:.2}");
            let ratio = contrast(&var(dark, name), "#121212");
            assert!(ratio >= 4.5, "--{name} on the dark canvas: {ratio:.2}");
        }
        // White text on the accent buttons.
        assert!(contrast(&var(light, "accent"), "#ffffff") >= 4.5);
        assert!(!STYLE.contains("GrayText;"), "GrayText is 3.9:1 on white");
        assert!(STYLE.contains("overflow-wrap: anywhere"), "long ids wrap on a phone");
    }
}
