//! The SAML IdP over HTTP (docs/protocol.md §8) with the real server, SoftHSM2 and the
//! reference device: SP-initiated sign-in through the sign-in page and the completion
//! step, the produced Response checked by xmlsec1 and a pysaml2 SP, every bad request
//! answered by an error page, SLO, and headless Chromium walking the page to an ACS.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde_json::Value;
use softhsm_tests::device::Decision;
use softhsm_tests::python::{python_or_skip, target_dir};
use softhsm_tests::signin::SignIn;
use softhsm_tests::{ServerOptions, free_port};
use symbolon::saml::redirect::{encode_query, inflate};
use symbolon::saml::saml_time;

const SP_ENTITY: &str = "https://sp.example/saml2/metadata";
const SP_SLO: &str = "https://sp.example/saml2/slo";
const SIGNED_SP_ENTITY: &str = "https://signed-sp.example/metadata";
const THIRD_SP_ENTITY: &str = "https://third-sp.example/metadata";
const THIRD_SP_SLO: &str = "https://third-sp.example/slo";
const RP_BYE: &str = "https://rp.example/bye";
const SCOPES: [&str; 3] = ["name", "age", "nationality"];
const SAMLP: &str = "urn:oasis:names:tc:SAML:2.0:protocol";
const SAML: &str = "urn:oasis:names:tc:SAML:2.0:assertion";

/// The server with two SAML SPs (one that must sign its requests) and the demo.
struct Env {
    env: SignIn,
    acs: String,
    dir: tempfile::TempDir,
    sp_key: PathBuf,
}

fn sh(cmd: &mut Command) -> (bool, String) {
    let out = cmd.output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

async fn start(acs_port: u16) -> Env {
    start_with(acs_port, "").await
}

/// [`start`] with extra `[saml]` settings.
async fn start_with(acs_port: u16, saml_extra: &str) -> Env {
    start_full(acs_port, saml_extra, "").await
}

/// [`start_with`] with more `[[services]]` at the end.
async fn start_full(acs_port: u16, saml_extra: &str, services_extra: &str) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let sp_key = dir.path().join("sp-key.pem");
    let sp_cert = dir.path().join("sp-cert.pem");
    let (ok, text) = sh(Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "2"])
        .args(["-subj", "/CN=signed-sp.example", "-keyout"])
        .arg(&sp_key)
        .arg("-out")
        .arg(&sp_cert));
    assert!(ok, "{text}");
    let acs = format!("http://127.0.0.1:{acs_port}/saml2/acs");
    let toml = format!(
        r#"
[saml]
enabled = true
{saml_extra}

[demo]
enabled = true

[[services]]
id = "demo"
name = "Symbolon Demo"
allowed_scopes = ["name", "age"]

[[services]]
id = "sp1"
name = "Example SP"
allowed_scopes = ["name", "age", "nationality"]
[services.saml]
entity_id = "{SP_ENTITY}"
acs_url = "{acs}"
slo_url = "{SP_SLO}"
default_scopes = ["name", "age", "nationality"]
[services.saml.attribute_names]
given_name = "urn:oid:2.5.4.42"

[[services]]
id = "sp2"
name = "Signed SP"
allowed_scopes = ["age"]
[services.saml]
entity_id = "{SIGNED_SP_ENTITY}"
acs_url = "https://signed-sp.example/acs"
requests_signed = true
certificate_pem = "{cert}"
default_scopes = ["age"]

[[services]]
id = "sp3"
name = "Third SP"
allowed_scopes = ["age"]
[services.saml]
entity_id = "{THIRD_SP_ENTITY}"
acs_url = "https://third-sp.example/acs"
slo_url = "{THIRD_SP_SLO}"
requests_signed = true
certificate_pem = "{cert}"
default_scopes = ["age"]

[[services]]
id = "oidc1"
name = "OIDC App"
allowed_scopes = ["name"]
[services.oidc]
redirect_uris = ["https://rp.example/cb"]
post_logout_redirect_uris = ["{RP_BYE}"]
token_endpoint_auth_method = "none"
{services_extra}
"#,
        cert = sp_cert.display()
    );
    let env = SignIn::start(&toml, ServerOptions::default()).await.unwrap();
    Env { env, acs, dir, sp_key }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap()
}

impl Env {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.env.server.public_url)
    }

    fn authn_request(&self, id: &str, issuer: &str, acs: Option<&str>, instant: i64, extra_attrs: &str) -> String {
        let acs = acs.map(|a| format!(r#" AssertionConsumerServiceURL="{a}""#)).unwrap_or_default();
        format!(
            r#"<samlp:AuthnRequest xmlns:samlp="{SAMLP}" xmlns:saml="{SAML}" ID="{id}" Version="2.0" IssueInstant="{t}" Destination="{dest}"{acs} ProtocolBinding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST"{extra_attrs}><saml:Issuer>{issuer}</saml:Issuer><samlp:NameIDPolicy Format="urn:oasis:names:tc:SAML:2.0:nameid-format:persistent" AllowCreate="true"/></samlp:AuthnRequest>"#,
            t = saml_time(instant),
            dest = self.url("/saml/sso"),
        )
    }

    fn good_request(&self, id: &str) -> String {
        self.authn_request(id, SP_ENTITY, Some(&self.acs), now(), "")
    }

    fn sso_url(&self, xml: &str, relay: Option<&str>) -> String {
        format!("{}?{}", self.url("/saml/sso"), encode_query("SAMLRequest", xml, relay, None, |_| Vec::new()))
    }

    /// A query signed by the signed SP's key (openssl, DER ECDSA) or by `key`.
    fn signed_query(&self, xml: &str, key: &Path) -> String {
        let dir = self.dir.path().to_path_buf();
        encode_query(
            "SAMLRequest",
            xml,
            Some("rs"),
            Some("http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha256"),
            |octets| {
                let input = dir.join("octets");
                std::fs::write(&input, octets).unwrap();
                let out = Command::new("openssl").args(["dgst", "-sha256", "-sign"]).arg(key).arg(&input).output();
                out.unwrap().stdout
            },
        )
    }

    async fn get(&self, url: &str) -> (u16, reqwest::header::HeaderMap, String) {
        let r = client().get(url).send().await.unwrap();
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        (status, headers, r.text().await.unwrap())
    }

    async fn metadata_cert_pem(&self) -> (String, String) {
        let (status, headers, md) = self.get(&self.url("/saml/metadata")).await;
        assert_eq!(status, 200, "{md}");
        assert_eq!(headers["content-type"], "application/samlmetadata+xml");
        let b64 = between(&md, "<ds:X509Certificate>", "</ds:X509Certificate>").unwrap();
        let der = STANDARD.decode(b64).unwrap();
        (md, der::pem::encode_string("CERTIFICATE", der::pem::LineEnding::LF, &der).unwrap())
    }

    /// SSO page → initiate from the issuer origin → the device approves → completion.
    /// Returns the completion page and the session's identity-token claims.
    async fn sign_in(&self, sso: &str) -> (u16, reqwest::header::HeaderMap, String, Value) {
        self.sign_in_to(sso, "sp1", &SCOPES).await
    }

    /// [`Env::sign_in`] for the SP of `service` with `scopes`.
    async fn sign_in_to(
        &self,
        sso: &str,
        service: &str,
        scopes: &[&str],
    ) -> (u16, reqwest::header::HeaderMap, String, Value) {
        let (status, headers, page) = self.get(sso).await;
        assert_eq!(status, 200, "{page}");
        let context = attr_value(&page, "name=\"context\" value=\"").unwrap();
        let cookie = flow_cookie(&headers);
        let (sid, bt, claims) = self.approved_session_for(service, scopes).await;
        let r = client()
            .post(self.url("/saml/complete"))
            .header("cookie", cookie)
            .form(&[("context", context.as_str()), ("session_id", &sid), ("browser_token", &bt)])
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        (status, headers, r.text().await.unwrap(), claims)
    }

    /// A session for sp1 started as the sign-in page does, approved by the device.
    async fn approved_session(&self) -> (String, String, Value) {
        self.approved_session_for("sp1", &SCOPES).await
    }

    /// A session for `service` started as the sign-in page does, approved with `scopes`.
    async fn approved_session_for(&self, service: &str, scopes: &[&str]) -> (String, String, Value) {
        let r = client()
            .post(self.url("/v1/auth/initiate"))
            .header("Origin", &self.env.server.public_url)
            .json(&serde_json::json!({"token_id": self.env.token_id, "service_id": service, "scopes": scopes}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 201, "initiate from the issuer origin");
        let started: Value = r.json().await.unwrap();
        let sid = started["session_id"].as_str().unwrap().to_string();
        let bt = started["browser_token"].as_str().unwrap().to_string();
        let pending = self.env.device_client.pending(&self.env.device).await.unwrap();
        let entry = pending.sessions.iter().find(|s| s.session_id == sid).unwrap();
        let scopes = scopes.iter().map(|s| s.to_string()).collect();
        self.env
            .device_client
            .verify(&self.env.device, &sid, &entry.otp, Decision::Approve, Some(scopes))
            .await
            .unwrap();
        let polled: Value = client()
            .get(self.url(&format!("/v1/auth/sessions/{sid}")))
            .bearer_auth(&bt)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(polled["status"], "approved");
        let jwt = polled["id_token"].as_str().unwrap();
        let claims: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(jwt.split('.').nth(1).unwrap()).unwrap()).unwrap();
        (sid, bt, claims)
    }

    /// Asserts an error page: HTML, the status, no SAMLResponse anywhere, the reason logged.
    async fn assert_error_page(&self, url: &str, status: u16, log_reason: &str) {
        let (got, headers, body) = self.get(url).await;
        assert_error_body(got, &headers, &body, status);
        self.assert_logged(log_reason).await;
    }

    async fn assert_logged(&self, needle: &str) {
        for _ in 0..50 {
            if self.env.server.log().contains(needle) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("{needle:?} not in the server log:\n{}", self.env.server.log());
    }
}

fn assert_error_body(got: u16, headers: &reqwest::header::HeaderMap, body: &str, status: u16) {
    assert_eq!(got, status, "{body}");
    assert!(headers["content-type"].to_str().unwrap().starts_with("text/html"), "{headers:?}");
    assert!(headers.contains_key("content-security-policy"));
    assert!(!body.contains("SAMLResponse") && !body.contains("<script"), "{body}");
    assert!(body.contains("role=\"alert\""), "{body}");
    // The request id to quote to support, the same as the response header's.
    let id = headers["x-request-id"].to_str().unwrap();
    assert!(body.contains(&format!("<code id=\"request-id\">{id}</code>")), "{body}");
}

fn now() -> i64 {
    symbolon::ids::now_unix()
}

/// `name=value` of the SAML flow cookie the sign-in page set (docs/security.md item 6).
fn flow_cookie(headers: &reqwest::header::HeaderMap) -> String {
    let set = headers["set-cookie"].to_str().unwrap();
    assert!(set.contains("; HttpOnly") && set.contains("; SameSite=Strict") && set.contains("; Path=/"), "{set}");
    set.split(';').next().unwrap().to_string()
}

fn between<'a>(s: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let i = s.find(start)? + start.len();
    let j = s[i..].find(end)? + i;
    Some(&s[i..j])
}

fn attr_value(html: &str, prefix: &str) -> Option<String> {
    between(html, prefix, "\"").map(|v| v.replace("&quot;", "\"").replace("&#39;", "'").replace("&amp;", "&"))
}

fn xmlsec_verify(dir: &Path, cert_pem: &str, xml: &str) -> (bool, String) {
    xmlsec_verify_signed(dir, cert_pem, xml, "urn:oasis:names:tc:SAML:2.0:assertion:Assertion")
}

/// xmlsec1 verifies the signature over the element `element` (`namespace:name`) of `xml`.
fn xmlsec_verify_signed(dir: &Path, cert_pem: &str, xml: &str, element: &str) -> (bool, String) {
    let cert = dir.join("idp-cert.pem");
    std::fs::write(&cert, cert_pem).unwrap();
    let doc = dir.join("response.xml");
    std::fs::write(&doc, xml).unwrap();
    sh(Command::new("xmlsec1")
        .args(["--verify", "--pubkey-cert-pem"])
        .arg(&cert)
        .args(["--id-attr:ID", element])
        .arg(&doc))
}

/// xmlsec1 and (when available) pysaml2 accept `xml`, reject a tampered copy; the
/// protocol fields are those of Profiles §4.1.4.2.
fn check_response(e: &Env, md: &str, cert_pem: &str, xml: &str, request_id: &str, claims: &Value) {
    let dir = e.dir.path();
    let (ok, text) = xmlsec_verify(dir, cert_pem, xml);
    assert!(ok && text.contains("OK"), "xmlsec1 rejected the Response:\n{text}\n{xml}");
    let tampered = xml.replacen(&format!(">{}<", e.env.token_id), ">someone-else<", 1);
    assert_ne!(tampered, xml);
    let (ok, text) = xmlsec_verify(dir, cert_pem, &tampered);
    assert!(!ok, "tampered Response verified: {text}");
    assert!(xml.contains(&format!("InResponseTo=\"{request_id}\"")), "{xml}");
    assert!(xml.contains(&format!("Recipient=\"{}\"", e.acs)), "{xml}");
    assert!(xml.contains(&format!("Destination=\"{}\"", e.acs)), "{xml}");
    assert!(xml.contains(&format!("<saml:Audience>{SP_ENTITY}</saml:Audience>")), "{xml}");
    let Some(py) = python_or_skip(&["saml2"], "pysaml2 SP") else { return };
    std::fs::write(dir.join("idp.xml"), md).unwrap();
    std::fs::write(dir.join("good.xml"), xml).unwrap();
    std::fs::write(dir.join("bad.xml"), &tampered).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/saml_sp_check.py");
    let given = claims["given_name"].as_str().unwrap();
    let nationality = claims["nationality"].as_str().unwrap();
    let age18 = claims["age_over_18"].as_bool().unwrap();
    let (ok, text) = sh(Command::new(py)
        .arg(script)
        .arg(dir.join("idp.xml"))
        .arg(dir.join("good.xml"))
        .arg(dir.join("bad.xml"))
        .arg(dir)
        .args(["--sp-entity", SP_ENTITY, "--acs", &e.acs, "--request-id", request_id])
        .args(["--idp-entity", &format!("{}/saml/metadata", e.env.server.public_url)])
        .args(["--expect-name-id", &e.env.token_id])
        .args(["--expect", &format!("givenName={given}")])
        .args(["--expect", &format!("nationality={nationality}")])
        .args(["--expect", &format!("age_over_18={age18}")]));
    eprintln!("pysaml2:\n{text}");
    assert!(ok, "pysaml2 did not accept the Response / reject the tampered one:\n{text}");
}

/// Cancel on the sign-in page answers the SP at its ACS: a `Response` without an
/// assertion, status `Responder`/`AuthnFailed`, signed as a whole, which xmlsec1 and the
/// pysaml2 SP verify and read as "not authenticated"; only from the browser that got the
/// page, once.
#[tokio::test]
async fn cancel_answers_the_sp_with_a_signed_not_authenticated_response() {
    let e = start(free_port().unwrap()).await;
    let (md, cert_pem) = e.metadata_cert_pem().await;
    let page_of = |id: &'static str| {
        let e = &e;
        async move {
            let (status, headers, page) = e.get(&e.sso_url(&e.good_request(id), Some("rs-cancel"))).await;
            assert_eq!(status, 200, "{page}");
            assert!(page.contains("action=\"/saml/cancel\"") && page.contains("Cancel and return to Example SP"));
            (attr_value(&page, "name=\"context\" value=\"").unwrap(), flow_cookie(&headers))
        }
    };
    let cancel = |context: String, cookie: Option<String>| {
        let e = &e;
        async move {
            let mut r = client().post(e.url("/saml/cancel")).form(&[("context", context.as_str())]);
            if let Some(cookie) = cookie {
                r = r.header("cookie", cookie);
            }
            let r = r.send().await.unwrap();
            let status = r.status().as_u16();
            let headers = r.headers().clone();
            (status, headers, r.text().await.unwrap())
        }
    };
    // From another browser (no flow cookie): an error page, nothing for the SP.
    let (context, _) = page_of("_cancel0").await;
    let (status, headers, body) = cancel(context, None).await;
    assert_error_body(status, &headers, &body, 403);
    let (context, cookie) = page_of("_cancel1").await;
    let (status, headers, page) = cancel(context.clone(), Some(cookie.clone())).await;
    assert_eq!(status, 200, "{page}");
    assert!(headers["set-cookie"].to_str().unwrap().contains("Max-Age=0"), "the flow's cookie is dropped");
    assert_eq!(attr_value(&page, "<form id=\"saml-post\" method=\"post\" action=\"").as_deref(), Some(e.acs.as_str()));
    assert_eq!(attr_value(&page, "name=\"RelayState\" value=\"").as_deref(), Some("rs-cancel"));
    let xml = saml_response_of(&page);
    assert!(!xml.contains("Assertion"), "no assertion: {xml}");
    assert!(xml.contains("InResponseTo=\"_cancel1\"") && xml.contains(&format!("Destination=\"{}\"", e.acs)), "{xml}");
    let status_xml = between(&xml, "<samlp:Status>", "</samlp:Status>").unwrap();
    assert_eq!(
        status_xml,
        "<samlp:StatusCode Value=\"urn:oasis:names:tc:SAML:2.0:status:Responder\">\
         <samlp:StatusCode Value=\"urn:oasis:names:tc:SAML:2.0:status:AuthnFailed\"></samlp:StatusCode></samlp:StatusCode>\
         <samlp:StatusMessage>The user cancelled the sign-in.</samlp:StatusMessage>"
    );
    let response = "urn:oasis:names:tc:SAML:2.0:protocol:Response";
    let (ok, text) = xmlsec_verify_signed(e.dir.path(), &cert_pem, &xml, response);
    assert!(ok && text.contains("OK"), "xmlsec1 rejected the refusal:\n{text}\n{xml}");
    let tampered = xml.replace("status:AuthnFailed", "status:RequestDenied");
    let (ok, _) = xmlsec_verify_signed(e.dir.path(), &cert_pem, &tampered, response);
    assert!(!ok, "a changed status still verifies");
    let (status, _, body) = cancel(context, Some(cookie)).await;
    assert_eq!(status, 409, "a flow is cancelled once: {body}");
    e.assert_logged("SAML sign-in cancelled by the user").await;
    let Some(py) = python_or_skip(&["saml2"], "pysaml2 SP") else { return };
    let dir = e.dir.path();
    std::fs::write(dir.join("idp.xml"), &md).unwrap();
    std::fs::write(dir.join("refusal.xml"), &xml).unwrap();
    std::fs::write(dir.join("refusal-tampered.xml"), &tampered).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/saml_sp_check.py");
    let (ok, text) = sh(Command::new(py)
        .arg(script)
        .arg(dir.join("idp.xml"))
        .arg(dir.join("refusal.xml"))
        .arg(dir.join("refusal-tampered.xml"))
        .arg(dir)
        .args(["--sp-entity", SP_ENTITY, "--acs", &e.acs, "--request-id", "_cancel1"])
        .args(["--expect-status", "urn:oasis:names:tc:SAML:2.0:status:AuthnFailed"]));
    eprintln!("pysaml2:\n{text}");
    assert!(ok, "pysaml2 did not read the refusal / reject the tampered one:\n{text}");
}

fn saml_response_of(page: &str) -> String {
    let b64 = attr_value(page, "name=\"SAMLResponse\" value=\"").unwrap();
    String::from_utf8(STANDARD.decode(b64).unwrap()).unwrap()
}

// ------------------------------------------------------------------ the page

#[tokio::test]
async fn sso_page_has_a_nonce_csp_and_no_inline_handlers() {
    let e = start(free_port().unwrap()).await;
    let (status, headers, page) = e.get(&e.sso_url(&e.good_request("_page1"), Some("rs1"))).await;
    assert_eq!(status, 200, "{page}");
    assert!(headers["content-type"].to_str().unwrap().starts_with("text/html"));
    let csp = headers["content-security-policy"].to_str().unwrap();
    let nonce = between(csp, "script-src 'nonce-", "'").unwrap();
    assert!(nonce.len() >= 22, "{csp}");
    for directive in [
        "default-src 'none'",
        &format!("style-src 'nonce-{nonce}'"),
        "form-action 'self'",
        "frame-ancestors 'none'",
        "base-uri 'none'",
    ] {
        assert!(csp.contains(directive), "{directive} in {csp}");
    }
    let ws_self = e.env.server.public_url.replace("http://", "ws://");
    assert!(csp.contains(&format!("connect-src 'self' {ws_self}")), "{csp}");
    assert_eq!(headers["x-frame-options"], "DENY");
    assert_eq!(headers["cache-control"], "no-store");
    for tag in ["<script", "<style"] {
        let n = page.matches(tag).count();
        assert!(n >= 1);
        assert_eq!(page.matches(&format!("{tag} nonce=\"{nonce}\"")).count(), n, "every {tag} has the nonce");
    }
    let lower = page.to_lowercase();
    for handler in [" onclick=", " onload=", " onsubmit=", " onerror=", "javascript:", "<link", "src=\"http"] {
        assert!(!lower.contains(handler), "{handler} in the page");
    }
    assert!(page.contains("<label for=\"token-id\">"), "labelled input");
    assert!(page.contains("aria-live=\"polite\""), "live status");
    assert!(page.contains("Example SP"));
    // A second page gets a new nonce.
    let (_, headers2, _) = e.get(&e.sso_url(&e.good_request("_page2"), None)).await;
    assert_ne!(headers2["content-security-policy"], headers["content-security-policy"]);
}

// ------------------------------------------------------------------ the flow over HTTP

#[tokio::test]
async fn sso_round_trip_over_http_gives_a_response_xmlsec1_and_pysaml2_accept() {
    let e = start(free_port().unwrap()).await;
    let (md, cert_pem) = e.metadata_cert_pem().await;
    assert!(md.contains(&format!("entityID=\"{}/saml/metadata\"", e.env.server.public_url)));
    let (status, headers, page, claims) = e.sign_in(&e.sso_url(&e.good_request("_flow1"), Some("relay-42"))).await;
    assert_eq!(status, 200, "{page}");
    let csp = headers["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains(&format!(
            "form-action http://127.0.0.1:{};",
            e.acs.split(':').nth(2).unwrap().split('/').next().unwrap()
        )),
        "{csp}"
    );
    assert!(page.contains(&format!("action=\"{}\"", e.acs)), "{page}");
    assert!(page.contains("name=\"RelayState\" value=\"relay-42\""), "{page}");
    assert!(page.contains("<noscript>") && page.contains("<button type=\"submit\">"), "no-script button");
    let nonce = between(csp, "script-src 'nonce-", "'").unwrap();
    assert!(page.contains(&format!("<script nonce=\"{nonce}\">")));
    let xml = saml_response_of(&page);
    check_response(&e, &md, &cert_pem, &xml, "_flow1", &claims);
    e.assert_logged("SAML response issued").await;
}

#[tokio::test]
async fn completion_is_single_use_and_needs_an_approved_session_of_the_sp() {
    let e = start(free_port().unwrap()).await;
    let (_, headers, page) = e.get(&e.sso_url(&e.good_request("_once"), None)).await;
    let context = attr_value(&page, "name=\"context\" value=\"").unwrap();
    let cookie = std::cell::RefCell::new(flow_cookie(&headers));
    let complete = |ctx: String, sid: String, bt: String| {
        let url = e.url("/saml/complete");
        let cookie = cookie.borrow().clone();
        async move {
            let r = client()
                .post(url)
                .header("cookie", cookie)
                .form(&[("context", ctx), ("session_id", sid), ("browser_token", bt)])
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            let headers = r.headers().clone();
            (status, headers, r.text().await.unwrap())
        }
    };
    // A pending session: not approved.
    let (_, started, _) = e.env.initiate(&e.env.token_id, "sp1", &["age"]).await.unwrap();
    let (psid, pbt) = (started["session_id"].as_str().unwrap(), started["browser_token"].as_str().unwrap());
    let (s, h, b) = complete(context.clone(), psid.into(), pbt.into()).await;
    assert_error_body(s, &h, &b, 409);
    // An approved session of another service (rp1 from the harness, Origin-less).
    let (_, other, _) = e.env.initiate(&e.env.token_id, "rp1", &[]).await.unwrap();
    let osid = other["session_id"].as_str().unwrap().to_string();
    let obt = other["browser_token"].as_str().unwrap().to_string();
    let pending = e.env.device_client.pending(&e.env.device).await.unwrap();
    let otp = pending.sessions.iter().find(|p| p.session_id == osid).unwrap().otp.clone();
    e.env.device_client.verify(&e.env.device, &osid, &otp, Decision::Approve, Some(vec![])).await.unwrap();
    let (s, h, b) = complete(context.clone(), osid.clone(), obt.clone()).await;
    assert_error_body(s, &h, &b, 400);
    e.assert_logged("another service").await;
    // The context was consumed by that attempt; a fresh page and a good session work once.
    let (_, headers, page) = e.get(&e.sso_url(&e.good_request("_once2"), None)).await;
    let context = attr_value(&page, "name=\"context\" value=\"").unwrap();
    cookie.replace(flow_cookie(&headers));
    let (sid, bt, _) = e.approved_session().await;
    let (s, h, b) = complete(context.clone(), sid.clone(), "wrong-token".into()).await;
    assert_error_body(s, &h, &b, 409);
    let (s, _, b) = complete(context.clone(), sid.clone(), bt.clone()).await;
    assert_eq!(s, 200, "{b}");
    assert!(b.contains("SAMLResponse"));
    let (s, h, b) = complete(context.clone(), sid.clone(), bt.clone()).await;
    assert_error_body(s, &h, &b, 409);
    // The same approved session with a new page: the session was used already.
    let (_, headers, page) = e.get(&e.sso_url(&e.good_request("_once3"), None)).await;
    let context = attr_value(&page, "name=\"context\" value=\"").unwrap();
    cookie.replace(flow_cookie(&headers));
    let (s, h, b) = complete(context, sid, bt).await;
    assert_error_body(s, &h, &b, 409);
    e.assert_logged("already produced a SAML response").await;
    // A malformed form.
    let r = client()
        .post(e.url("/saml/complete"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("context=a&context=b&session_id=x&browser_token=y")
        .send()
        .await
        .unwrap();
    let (s, h) = (r.status().as_u16(), r.headers().clone());
    assert_error_body(s, &h, &r.text().await.unwrap(), 400);
}

// ------------------------------------------------------------------ bad input

#[tokio::test]
async fn every_bad_request_gets_the_error_page_and_no_response() {
    let e = start(free_port().unwrap()).await;
    let sso = e.url("/saml/sso");
    // Unknown SP.
    let xml = e.authn_request("_u1", "https://unknown.example", None, now(), "");
    e.assert_error_page(&e.sso_url(&xml, None), 400, "unknown service provider").await;
    // ACS that is not the registered one.
    let xml = e.authn_request("_a1", SP_ENTITY, Some("https://evil.example/acs"), now(), "");
    e.assert_error_page(&e.sso_url(&xml, None), 400, "is not the registered one").await;
    // Malformed: no parameter, bad base64, bad DEFLATE, not XML, wrong root.
    e.assert_error_page(&sso, 400, "missing parameter SAMLRequest").await;
    e.assert_error_page(&format!("{sso}?SAMLRequest=%%%25%21"), 400, "bad base64").await;
    e.assert_error_page(&format!("{sso}?SAMLRequest=bm90LWRlZmxhdGU%3D"), 400, "bad DEFLATE data").await;
    e.assert_error_page(&e.sso_url("<not-xml", None), 400, "malformed XML").await;
    e.assert_error_page(&e.sso_url("<a xmlns=\"urn:x\"/>", None), 400, "expected samlp:AuthnRequest").await;
    // A document type declaration (entity tricks) is refused by the parser.
    let dtd = format!("<!DOCTYPE x [<!ENTITY e \"boom\">]>{}", e.good_request("_dtd"));
    e.assert_error_page(&e.sso_url(&dtd, None), 400, "malformed XML").await;
    // Oversized after inflating (a small deflate of a large document).
    let big = e.good_request("_big").replace("<saml:Issuer>", &format!("<!--{}--><saml:Issuer>", " ".repeat(200_000)));
    e.assert_error_page(&e.sso_url(&big, None), 400, "inflated message exceeds").await;
    // Stale and future IssueInstant.
    let xml = e.authn_request("_s1", SP_ENTITY, Some(&e.acs), now() - 3600, "");
    e.assert_error_page(&e.sso_url(&xml, None), 400, "request is expired").await;
    let xml = e.authn_request("_s2", SP_ENTITY, Some(&e.acs), now() + 3600, "");
    e.assert_error_page(&e.sso_url(&xml, None), 400, "request is expired").await;
    // Replayed request ID.
    let url = e.sso_url(&e.good_request("_replay"), None);
    let (status, _, _) = e.get(&url).await;
    assert_eq!(status, 200);
    e.assert_error_page(&url, 400, "was already used (replay)").await;
    // IsPassive cannot be served.
    let xml = e.authn_request("_p1", SP_ENTITY, Some(&e.acs), now(), " IsPassive=\"true\"");
    e.assert_error_page(&e.sso_url(&xml, None), 400, "IsPassive").await;
    // Signed SP: unsigned, signed by another key, signed right.
    let signed_dest = |id: &str| e.authn_request(id, SIGNED_SP_ENTITY, None, now(), "");
    e.assert_error_page(&e.sso_url(&signed_dest("_g1"), None), 400, "this one is unsigned").await;
    let other_key = e.dir.path().join("other.pem");
    let (ok, text) = sh(Command::new("openssl")
        .args(["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out"])
        .arg(&other_key));
    assert!(ok, "{text}");
    let q = e.signed_query(&signed_dest("_g2"), &other_key);
    e.assert_error_page(&format!("{sso}?{q}"), 400, "signature does not verify").await;
    // Tampered after signing: the signature no longer covers the query.
    let q = e.signed_query(&signed_dest("_g3"), &e.sp_key).replace("RelayState=rs", "RelayState=rX");
    e.assert_error_page(&format!("{sso}?{q}"), 400, "signature does not verify").await;
    let q = e.signed_query(&signed_dest("_g4"), &e.sp_key);
    let (status, _, page) = e.get(&format!("{sso}?{q}")).await;
    assert_eq!(status, 200, "a correctly signed request is served: {page}");
    assert!(page.contains("Signed SP"));
    // The server is still fine.
    let (status, _, _) = e.get(&e.url("/health")).await;
    assert_eq!(status, 200);
}

// ------------------------------------------------------------------ SLO

#[tokio::test]
async fn slo_round_trip_answers_a_signed_logout_response() {
    let e = start(free_port().unwrap()).await;
    let (_, cert_pem) = e.metadata_cert_pem().await;
    let xml = format!(
        r#"<samlp:LogoutRequest xmlns:samlp="{SAMLP}" xmlns:saml="{SAML}" ID="_lo1" Version="2.0" IssueInstant="{t}" Destination="{d}"><saml:Issuer>{SP_ENTITY}</saml:Issuer><saml:NameID Format="urn:oasis:names:tc:SAML:2.0:nameid-format:persistent">{tid}</saml:NameID><samlp:SessionIndex>abc</samlp:SessionIndex></samlp:LogoutRequest>"#,
        t = saml_time(now()),
        d = e.url("/saml/slo"),
        tid = e.env.token_id,
    );
    let url = format!("{}?{}", e.url("/saml/slo"), encode_query("SAMLRequest", &xml, Some("back"), None, |_| vec![]));
    let (status, headers, body) = e.get(&url).await;
    assert_eq!(status, 303, "{body}");
    let location = headers["location"].to_str().unwrap();
    let query = location.strip_prefix(&format!("{SP_SLO}?")).unwrap_or_else(|| panic!("{location}"));
    // Verify the query signature independently: raw r||s ECDSA P-256 over the octets.
    let (signed, sig) = query.rsplit_once("&Signature=").unwrap();
    let sig = STANDARD.decode(percent_encoding::percent_decode_str(sig).decode_utf8().unwrap().as_ref()).unwrap();
    assert!(
        signed.contains("&RelayState=back&SigAlg=http%3A%2F%2Fwww.w3.org%2F2001%2F04%2Fxmldsig-more%23ecdsa-sha256")
    );
    use der::DecodePem;
    let cert = x509_cert::Certificate::from_pem(cert_pem.as_bytes()).unwrap();
    let point = cert.tbs_certificate.subject_public_key_info.subject_public_key.raw_bytes();
    let key = p256::ecdsa::VerifyingKey::from_sec1_bytes(point).unwrap();
    use p256::ecdsa::signature::Verifier;
    key.verify(signed.as_bytes(), &p256::ecdsa::Signature::from_slice(&sig).unwrap())
        .expect("LogoutResponse signature");
    let msg = signed.split('&').next().unwrap().strip_prefix("SAMLResponse=").unwrap();
    let deflated = STANDARD.decode(percent_encoding::percent_decode_str(msg).decode_utf8().unwrap().as_ref()).unwrap();
    let response = String::from_utf8(inflate(&deflated, 65536).unwrap()).unwrap();
    assert!(response.contains("InResponseTo=\"_lo1\""), "{response}");
    assert!(response.contains(&format!("Destination=\"{SP_SLO}\"")), "{response}");
    assert!(response.contains("urn:oasis:names:tc:SAML:2.0:status:Success"), "{response}");
    // Replay, and an SP without slo_url, get the error page.
    e.assert_error_page(&url, 400, "was already used (replay)").await;
    let xml2 = xml.replace("_lo1", "_lo2").replace(SP_ENTITY, SIGNED_SP_ENTITY);
    let q = e.signed_query(&xml2.replace("<samlp:SessionIndex>abc</samlp:SessionIndex>", ""), &e.sp_key);
    e.assert_error_page(&format!("{}?{q}", e.url("/saml/slo")), 400, "no slo_url configured").await;
}

// ------------------------------------------------------------------ Chromium

struct Browser {
    child: std::process::Child,
    lines: std::io::Lines<BufReader<std::process::ChildStdout>>,
}

impl Browser {
    fn start(py: &Path, args: &[&str]) -> Browser {
        Browser::script(py, "browser_signin.py", args)
    }

    /// Runs `softhsm-tests/python/<name>` with `args`, reading its stdout by lines.
    fn script(py: &Path, name: &str, args: &[&str]) -> Browser {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("python").join(name);
        let mut child =
            Command::new(py).arg(script).args(args).stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn().unwrap();
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        Browser { child, lines }
    }

    /// The OTP the page shows (blocking read of the script's "OTP <code>" line).
    fn otp(&mut self) -> String {
        for line in self.lines.by_ref() {
            let line = line.unwrap();
            eprintln!("browser: {line}");
            if let Some(otp) = line.strip_prefix("OTP ") {
                return otp.trim().to_string();
            }
        }
        panic!("the browser script ended without showing an OTP");
    }

    fn finish(mut self) {
        for line in self.lines.by_ref() {
            eprintln!("browser: {}", line.unwrap());
        }
        let status = self.child.wait().unwrap();
        assert!(status.success(), "browser script failed: {status}");
    }
}

fn browser_python() -> Option<PathBuf> {
    let py = python_or_skip(&["selenium", "saml2"], "headless Chromium")?;
    for bin in ["/usr/bin/chromium", "/usr/bin/chromedriver"] {
        if !Path::new(bin).exists() {
            softhsm_tests::python::missing_tool(&format!("{bin} missing (scripts/install-deps --with-test-deps)"));
            return None;
        }
    }
    Some(py)
}

async fn approve_shown_otp(e: &Env, otp: &str, scopes: Vec<String>) {
    let pending = e.env.device_client.pending(&e.env.device).await.unwrap();
    let entry = pending.sessions.iter().find(|s| s.otp == otp).expect("the device sees the code the page shows");
    e.env.device_client.verify(&e.env.device, &entry.session_id, otp, Decision::Approve, Some(scopes)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_walks_the_sign_in_page_to_the_sp_acs() {
    let Some(py) = browser_python() else { return };
    let acs_port = free_port().unwrap();
    let e = start(acs_port).await;
    let (md, cert_pem) = e.metadata_cert_pem().await;
    let shots = target_dir().join("screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let shot = shots.join("signin-otp.png");
    let out = e.dir.path().join("acs.json");
    let sso = e.sso_url(&e.good_request("_chromium1"), Some("after-login"));
    let port = acs_port.to_string();
    let mut browser = Browser::start(
        &py,
        &[
            "saml",
            "--url",
            &sso,
            "--token-id",
            &e.env.token_id,
            "--acs-port",
            &port,
            "--out",
            out.to_str().unwrap(),
            "--screenshot",
            shot.to_str().unwrap(),
        ],
    );
    let otp = tokio::task::block_in_place(|| browser.otp());
    approve_shown_otp(&e, &otp, SCOPES.iter().map(|s| s.to_string()).collect()).await;
    tokio::task::block_in_place(|| browser.finish());
    let posted: Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    assert_eq!(posted["_path"], "/saml2/acs");
    assert_eq!(posted["RelayState"], "after-login");
    assert!(posted["_content_type"].as_str().unwrap().starts_with("application/x-www-form-urlencoded"));
    let xml = String::from_utf8(STANDARD.decode(posted["SAMLResponse"].as_str().unwrap()).unwrap()).unwrap();
    // The claims the phone released, as the identity token carries them.
    let claims = serde_json::json!({"given_name": between(&xml, "FriendlyName=\"given_name\"><saml:AttributeValue>", "<").unwrap(),
        "nationality": between(&xml, "FriendlyName=\"nationality\"><saml:AttributeValue>", "<").unwrap(),
        "age_over_18": between(&xml, "FriendlyName=\"age_over_18\"><saml:AttributeValue>", "<").unwrap() == "true"});
    check_response(&e, &md, &cert_pem, &xml, "_chromium1", &claims);
    assert!(shot.metadata().unwrap().len() > 1000, "screenshot saved at {}", shot.display());
    eprintln!("screenshot: {}", shot.display());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_walks_the_demo_page_and_verifies_the_token_in_the_browser() {
    let Some(py) = browser_python() else { return };
    let e = start(free_port().unwrap()).await;
    let shots = target_dir().join("screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let shot = shots.join("demo-otp.png");
    let out = e.dir.path().join("demo.json");
    let url = e.url("/demo");
    let mut browser = Browser::start(
        &py,
        &[
            "demo",
            "--url",
            &url,
            "--token-id",
            &e.env.token_id,
            "--out",
            out.to_str().unwrap(),
            "--screenshot",
            shot.to_str().unwrap(),
            "--result-screenshot",
            shots.join("demo-token.png").to_str().unwrap(),
        ],
    );
    let otp = tokio::task::block_in_place(|| browser.otp());
    approve_shown_otp(&e, &otp, vec!["name".into(), "age".into()]).await;
    tokio::task::block_in_place(|| browser.finish());
    let result: Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    assert_eq!(result["verified"], "true", "{result}");
    assert_eq!(result["header"]["alg"], "ES256");
    assert_eq!(result["claims"]["aud"], "demo");
    assert_eq!(result["claims"]["sub"], e.env.token_id.as_str());
    assert_eq!(result["claims"]["scope"], "name age");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_shows_a_rejection_with_a_retry_and_posts_nothing() {
    let Some(py) = browser_python() else { return };
    let acs_port = free_port().unwrap();
    let e = start(acs_port).await;
    let shots = target_dir().join("screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let out = e.dir.path().join("rejected.json");
    let sso = e.sso_url(&e.good_request("_chromium_reject"), None);
    let port = acs_port.to_string();
    let mut browser = Browser::start(
        &py,
        &[
            "saml",
            "--url",
            &sso,
            "--token-id",
            &e.env.token_id,
            "--acs-port",
            &port,
            "--out",
            out.to_str().unwrap(),
            "--screenshot",
            shots.join("signin-otp-2.png").to_str().unwrap(),
            "--result-screenshot",
            shots.join("signin-rejected.png").to_str().unwrap(),
            "--expect-failure",
        ],
    );
    let otp = tokio::task::block_in_place(|| browser.otp());
    let pending = e.env.device_client.pending(&e.env.device).await.unwrap();
    let entry = pending.sessions.iter().find(|s| s.otp == otp).unwrap();
    e.env.device_client.verify(&e.env.device, &entry.session_id, &otp, Decision::Reject, None).await.unwrap();
    tokio::task::block_in_place(|| browser.finish());
    let result: Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    assert!(result["alert"].as_str().unwrap().contains("rejected"), "{result}");
    assert_eq!(result["otp_hidden"], true);
    assert_eq!(result["form_back"], true);
    assert_eq!(result["acs_posted"], false);
}

/// The sign-in pages on a 390 px wide phone (docs/security.md, issue 19 item 5): a
/// mistyped token id gets the "check the token id" hint after 20 s without approval,
/// Cancel returns to the token id, the page's "Cancel and return" answers the SP, and
/// no page (SAML and OIDC sign-in, code shown, hint, error, demo approved) scrolls
/// sideways.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_on_a_phone_cancels_hints_and_never_scrolls_sideways() {
    let Some(py) = browser_python() else { return };
    let acs_port = free_port().unwrap();
    let e = start(acs_port).await;
    let out = e.dir.path().join("pages.json");
    let sso = e.sso_url(&e.good_request("_pages1"), Some("rs-pages"));
    let oidc = format!(
        "{}?client_id=oidc1&response_type=code&scope=openid%20name&redirect_uri=https%3A%2F%2Frp.example%2Fcb\
         &code_challenge=E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM&code_challenge_method=S256",
        e.url("/authorize")
    );
    let (port, error_url, demo_url) = (acs_port.to_string(), e.url("/saml/sso"), e.url("/demo"));
    let wrong = "MISTYPED-0001";
    let mut browser = Browser::script(
        &py,
        "browser_pages.py",
        &[
            "--saml-url",
            &sso,
            "--oidc-url",
            &oidc,
            "--error-url",
            &error_url,
            "--demo-url",
            &demo_url,
            "--token-id",
            &e.env.token_id,
            "--wrong-token-id",
            wrong,
            "--acs-port",
            &port,
            "--out",
            out.to_str().unwrap(),
        ],
    );
    let otp = tokio::task::block_in_place(|| browser.otp());
    approve_shown_otp(&e, &otp, vec!["name".into(), "age".into()]).await;
    tokio::task::block_in_place(|| browser.finish());
    let result: Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    eprintln!("{result:#}");
    let hint = &result["hint"];
    assert_eq!(hint["hidden_at_first"], true, "{hint}");
    assert!(hint["text"].as_str().unwrap().contains(wrong), "the hint names the id typed: {hint}");
    let cancel = &result["cancel"];
    assert_eq!(cancel["code_hidden"], true, "{cancel}");
    assert!(cancel["status"].as_str().unwrap().contains("cancelled"), "{cancel}");
    // "Cancel and return" reached the SP's ACS with a signed refusal of this request.
    let acs = &result["acs"];
    assert_eq!(acs["RelayState"], "rs-pages", "{acs}");
    let xml = String::from_utf8(STANDARD.decode(acs["SAMLResponse"].as_str().unwrap()).unwrap()).unwrap();
    assert!(xml.contains("InResponseTo=\"_pages1\"") && xml.contains("status:AuthnFailed"), "{xml}");
    assert_eq!(result["demo_verified"], "true", "{result}");
    assert_eq!(result["csp_violations"], serde_json::json!([]), "{result}");
    let widths = result["widths"].as_object().unwrap();
    for step in
        ["saml sign-in", "saml code shown", "saml hint shown", "oidc sign-in", "error", "demo sign-in", "demo approved"]
    {
        let w = &widths[step];
        let (scroll, inner) = (w[0].as_u64().unwrap(), w[1].as_u64().unwrap());
        assert_eq!(inner, 390, "{step}: the window is a 390 px phone");
        assert!(scroll <= inner, "{step} scrolls sideways: {scroll} px of content in {inner} px");
    }
}

#[tokio::test]
async fn demo_page_is_off_by_default_and_csp_strict_when_on() {
    let e = start(free_port().unwrap()).await;
    let (status, headers, page) = e.get(&e.url("/demo")).await;
    assert_eq!(status, 200, "{page}");
    let csp = headers["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("form-action 'none'") && csp.contains("default-src 'none'"), "{csp}");
    assert!(page.contains("data-service-id=\"demo\"") && page.contains("data-scopes=\"name age\""));
    // The demo service accepts the issuer origin; another origin is still refused.
    for (origin, want) in [(e.env.server.public_url.clone(), 201), ("https://evil.example".to_string(), 403)] {
        let r = client()
            .post(e.url("/v1/auth/initiate"))
            .header("Origin", origin)
            .json(&serde_json::json!({"token_id": "someone-1", "service_id": "demo", "scopes": ["age"]}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), want);
    }
    // The WebSocket upgrade applies the same rule.
    let (_, started, _) = e.env.initiate("someone-3", "demo", &["age"]).await.unwrap();
    let ws_url = e.env.ws_url(started["session_id"].as_str().unwrap());
    for (origin, ok) in [(e.env.server.public_url.as_str(), true), ("https://evil.example", false)] {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let mut req = ws_url.as_str().into_client_request().unwrap();
        req.headers_mut().insert("Origin", origin.parse().unwrap());
        assert_eq!(tokio_tungstenite::connect_async(req).await.is_ok(), ok, "WebSocket from {origin}");
    }
    // rp1 (not served by IdP pages) does not accept the issuer origin.
    let r = client()
        .post(e.url("/v1/auth/initiate"))
        .header("Origin", &e.env.server.public_url)
        .json(&serde_json::json!({"token_id": "someone-2", "service_id": "rp1", "scopes": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 403);
    drop(e);
    let plain = SignIn::start("", ServerOptions::default()).await.unwrap();
    for path in ["/demo", "/saml/metadata", "/saml/sso"] {
        let r = client().get(format!("{}{path}", plain.server.public_url)).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 404, "{path} off by default");
    }
}

// ------------------------------------------------------------------ NameID policy, async SLO

#[tokio::test]
async fn transient_name_ids_are_fresh_per_assertion_and_unknown_formats_get_invalid_name_id_policy() {
    let e = start(free_port().unwrap()).await;
    let (_, cert_pem) = e.metadata_cert_pem().await;
    let transient = |id: &str| e.good_request(id).replace("nameid-format:persistent", "nameid-format:transient");
    let mut seen = Vec::new();
    for id in ["_tr1", "_tr2"] {
        let (status, _, page, _) = e.sign_in(&e.sso_url(&transient(id), None)).await;
        assert_eq!(status, 200, "{page}");
        let xml = saml_response_of(&page);
        let (ok, text) = xmlsec_verify(e.dir.path(), &cert_pem, &xml);
        assert!(ok, "{text}");
        let name_id = between(&xml, "nameid-format:transient\" NameQualifier=", "</saml:NameID>").unwrap();
        let value = name_id.rsplit('>').next().unwrap().to_string();
        assert!(value.starts_with('_') && value.len() == 33, "{xml}");
        assert!(!xml.contains(&e.env.token_id), "no token id in a transient assertion: {xml}");
        seen.push(value);
    }
    assert_ne!(seen[0], seen[1], "a fresh transient NameID per assertion");
    // An email NameID cannot be issued: a signed Requester/InvalidNameIDPolicy Response
    // goes back to the ACS at once (no sign-in page, no session).
    let email = e.good_request("_em1").replace(
        "urn:oasis:names:tc:SAML:2.0:nameid-format:persistent",
        "urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress",
    );
    let (status, headers, page) = e.get(&e.sso_url(&email, Some("rs-em"))).await;
    assert_eq!(status, 200, "{page}");
    assert!(headers.get("set-cookie").is_none(), "no sign-in flow started");
    assert!(page.contains(&format!("action=\"{}\"", e.acs)) && page.contains("value=\"rs-em\""), "{page}");
    assert!(!page.contains("token-id"), "not the sign-in page: {page}");
    let xml = saml_response_of(&page);
    assert!(xml.contains("InResponseTo=\"_em1\""), "{xml}");
    assert!(
        xml.contains(r#"<samlp:StatusCode Value="urn:oasis:names:tc:SAML:2.0:status:Requester"><samlp:StatusCode Value="urn:oasis:names:tc:SAML:2.0:status:InvalidNameIDPolicy"></samlp:StatusCode></samlp:StatusCode>"#),
        "{xml}"
    );
    assert!(!xml.contains("<saml:Assertion"), "{xml}");
    let (ok, text) = sh(Command::new("xmlsec1")
        .args(["--verify", "--pubkey-cert-pem"])
        .arg({
            let p = e.dir.path().join("idp.pem");
            std::fs::write(&p, &cert_pem).unwrap();
            p
        })
        .args(["--id-attr:ID", "urn:oasis:names:tc:SAML:2.0:protocol:Response"])
        .arg({
            let p = e.dir.path().join("refusal.xml");
            std::fs::write(&p, &xml).unwrap();
            p
        }));
    assert!(ok, "the refusal is signed: {text}\n{xml}");
    e.assert_logged("InvalidNameIDPolicy sent to the SP").await;
}

#[tokio::test]
async fn asynchronous_logout_request_gets_no_logout_response() {
    let e = start(free_port().unwrap()).await;
    let xml = |id: &str, ext: &str| {
        format!(
            r#"<samlp:LogoutRequest xmlns:samlp="{SAMLP}" xmlns:saml="{SAML}" xmlns:aslo="urn:oasis:names:tc:SAML:2.0:protocol:ext:async-slo" ID="{id}" Version="2.0" IssueInstant="{t}" Destination="{d}"><saml:Issuer>{SP_ENTITY}</saml:Issuer>{ext}<saml:NameID Format="urn:oasis:names:tc:SAML:2.0:nameid-format:transient">_abc</saml:NameID></samlp:LogoutRequest>"#,
            t = saml_time(now()),
            d = e.url("/saml/slo"),
        )
    };
    let url =
        |x: &str| format!("{}?{}", e.url("/saml/slo"), encode_query("SAMLRequest", x, Some("back"), None, |_| vec![]));
    let (status, headers, body) =
        e.get(&url(&xml("_async1", "<samlp:Extensions><aslo:Asynchronous/></samlp:Extensions>"))).await;
    assert_eq!(status, 200, "{body}");
    assert!(headers.get("location").is_none());
    assert!(!body.contains("SAMLResponse") && body.contains("Signed out"), "{body}");
    e.assert_logged("SAML asynchronous logout: no response sent").await;
    // The same request without the extension is answered (transient NameID accepted).
    let (status, headers, _) = e.get(&url(&xml("_async2", ""))).await;
    assert_eq!(status, 303);
    assert!(headers["location"].to_str().unwrap().starts_with(&format!("{SP_SLO}?SAMLResponse=")));
}

// ------------------------------------------------------------------ single logout (§8.1)

/// One run of a logout chain as a browser would: the cookie it holds.
struct LogoutBrowser {
    cookie: String,
}

impl Env {
    /// A sign-in of the public OIDC client `oidc1` (PKCE) for the same token id:
    /// its id_token.
    async fn oidc_id_token(&self) -> String {
        let tokens = self.env.oidc_public_sign_in("oidc1", "https://rp.example/cb", &["name"]).await.unwrap();
        tokens["id_token"].as_str().unwrap().to_string()
    }

    /// RP-initiated logout with `hint`, returning to `RP_BYE` with `state`.
    async fn end_session(&self, hint: &str, state: &str) -> (u16, reqwest::header::HeaderMap, String) {
        let pairs = [("id_token_hint", hint), ("post_logout_redirect_uri", RP_BYE), ("state", state)];
        let url = reqwest::Url::parse_with_params(&self.url("/end_session"), &pairs).unwrap();
        self.get(url.as_str()).await
    }

    async fn get_with(&self, url: &str, cookie: Option<&str>) -> (u16, reqwest::header::HeaderMap, String) {
        let mut r = client().get(url);
        if let Some(c) = cookie {
            r = r.header("cookie", c);
        }
        let r = r.send().await.unwrap();
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        (status, headers, r.text().await.unwrap())
    }

    /// Starts the chain that `end_session` answered with: the browser with its cookie
    /// and the first step page.
    fn chain_started(&self, headers: &reqwest::header::HeaderMap) -> (LogoutBrowser, String) {
        let set = headers["set-cookie"].to_str().unwrap();
        assert!(
            set.starts_with("symbolon-logout=") && set.contains("HttpOnly") && set.contains("SameSite=Lax"),
            "{set}"
        );
        let location = headers["location"].to_str().unwrap();
        assert!(location.starts_with("/saml/logout?chain="), "{location}");
        (LogoutBrowser { cookie: set.split(';').next().unwrap().to_string() }, self.url(location))
    }

    /// The step page at `step`: the SP's SLO URL it sends the browser to, checked
    /// (signed by our published key over the query, the LogoutRequest's fields): the
    /// request XML and the RelayState (the chain id).
    async fn logout_step(&self, b: &LogoutBrowser, step: &str, cert_pem: &str, slo: &str) -> (String, String) {
        let (status, headers, page) = self.get_with(step, Some(&b.cookie)).await;
        assert_eq!(status, 200, "{page}");
        assert_eq!(headers["cache-control"], "no-store");
        assert!(headers["content-security-policy"].to_str().unwrap().contains("script-src 'nonce-"));
        let next = attr_value(&page, "id=\"logout-next\" href=\"").unwrap();
        let query = next.strip_prefix(&format!("{slo}?")).unwrap_or_else(|| panic!("{next}"));
        let (signed, sig) = query.rsplit_once("&Signature=").unwrap();
        let sig = STANDARD.decode(percent_encoding::percent_decode_str(sig).decode_utf8().unwrap().as_ref()).unwrap();
        use der::DecodePem;
        let cert = x509_cert::Certificate::from_pem(cert_pem.as_bytes()).unwrap();
        let point = cert.tbs_certificate.subject_public_key_info.subject_public_key.raw_bytes();
        let key = p256::ecdsa::VerifyingKey::from_sec1_bytes(point).unwrap();
        use p256::ecdsa::signature::Verifier;
        key.verify(signed.as_bytes(), &p256::ecdsa::Signature::from_slice(&sig).unwrap())
            .expect("LogoutRequest signature");
        let pairs: std::collections::HashMap<String, String> =
            reqwest::Url::parse(&format!("http://sp/?{signed}")).unwrap().query_pairs().into_owned().collect();
        let deflated = STANDARD.decode(&pairs["SAMLRequest"]).unwrap();
        let xml = String::from_utf8(inflate(&deflated, 65536).unwrap()).unwrap();
        assert!(xml.contains(&format!("Destination=\"{slo}\"")), "{xml}");
        assert!(xml.contains("Reason=\"urn:oasis:names:tc:SAML:2.0:logout:user\""), "{xml}");
        (xml, pairs["RelayState"].clone())
    }

    /// The SP's `LogoutResponse` to `irt` at our `/saml/slo`, unsigned or signed by `key`.
    async fn answer_logout(
        &self,
        b: Option<&LogoutBrowser>,
        issuer: &str,
        irt: &str,
        relay: &str,
        status: &str,
        key: Option<&Path>,
    ) -> (u16, reqwest::header::HeaderMap, String) {
        let xml = format!(
            r#"<samlp:LogoutResponse xmlns:samlp="{SAMLP}" xmlns:saml="{SAML}" ID="_resp{n}" Version="2.0" IssueInstant="{t}" Destination="{d}" InResponseTo="{irt}"><saml:Issuer>{issuer}</saml:Issuer><samlp:Status><samlp:StatusCode Value="{status}"/></samlp:Status></samlp:LogoutResponse>"#,
            n = symbolon::ids::new_id().replace('-', "_"),
            t = saml_time(now()),
            d = self.url("/saml/slo"),
        );
        let dir = self.dir.path().to_path_buf();
        let query = match key {
            None => encode_query("SAMLResponse", &xml, Some(relay), None, |_| vec![]),
            Some(key) => encode_query(
                "SAMLResponse",
                &xml,
                Some(relay),
                Some("http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha256"),
                |octets| {
                    let input = dir.join("octets");
                    std::fs::write(&input, octets).unwrap();
                    Command::new("openssl")
                        .args(["dgst", "-sha256", "-sign"])
                        .arg(key)
                        .arg(&input)
                        .output()
                        .unwrap()
                        .stdout
                },
            ),
        };
        self.get_with(&format!("{}?{query}", self.url("/saml/slo")), b.map(|b| b.cookie.as_str())).await
    }
}

fn request_id_of(xml: &str) -> String {
    between(xml, " ID=\"", "\"").unwrap().to_string()
}

fn session_index_of(xml: &str) -> String {
    between(xml, "<samlp:SessionIndex>", "</samlp:SessionIndex>").unwrap().to_string()
}

const SUCCESS: &str = "urn:oasis:names:tc:SAML:2.0:status:Success";

#[tokio::test]
async fn rp_initiated_logout_logs_the_person_out_of_their_saml_sps_one_after_another() {
    let e = start(free_port().unwrap()).await;
    let (_, cert_pem) = e.metadata_cert_pem().await;
    // SP sessions at sp1 (persistent NameID) and sp3 (transient), then an OIDC sign-in.
    let (status, _, page, _) = e.sign_in(&e.sso_url(&e.good_request("_slo1"), None)).await;
    assert_eq!(status, 200, "{page}");
    let sp1_xml = saml_response_of(&page);
    let sp1_index = between(&sp1_xml, "SessionIndex=\"", "\"").unwrap().to_string();
    assert!(sp1_xml.contains("SessionNotOnOrAfter=\""), "{sp1_xml}");
    let third = e
        .authn_request("_slo3", THIRD_SP_ENTITY, Some("https://third-sp.example/acs"), now(), "")
        .replace("nameid-format:persistent", "nameid-format:transient");
    let q = e.signed_query(&third, &e.sp_key);
    let (status, _, page, _) = e.sign_in_to(&format!("{}?{q}", e.url("/saml/sso")), "sp3", &["age"]).await;
    assert_eq!(status, 200, "{page}");
    let sp3_xml = saml_response_of(&page);
    let sp3_name_id = between(&sp3_xml, "nameid-format:transient\" NameQualifier=", "</saml:NameID>")
        .unwrap()
        .rsplit('>')
        .next()
        .unwrap()
        .to_string();
    let hint = e.oidc_id_token().await;

    // Run 1: sp1 answers with a wrong InResponseTo, sp3 with a forged signature: both
    // refused and logged, the chain goes on and ends at the RP with its state.
    let (status, headers, body) = e.end_session(&hint, "s-1").await;
    assert_eq!(status, 303, "{body}");
    let (b, step) = e.chain_started(&headers);
    let (xml, relay) = e.logout_step(&b, &step, &cert_pem, SP_SLO).await;
    assert!(xml.contains(&format!(">{}</saml:NameID>", e.env.token_id)), "persistent NameID: {xml}");
    assert!(xml.contains(&format!("SPNameQualifier=\"{SP_ENTITY}\"")), "{xml}");
    assert_eq!(session_index_of(&xml), sp1_index);
    let (status, headers, body) = e.answer_logout(Some(&b), SP_ENTITY, "_not_ours", &relay, SUCCESS, None).await;
    assert_eq!(status, 303, "{body}");
    assert_eq!(e.url(headers["location"].to_str().unwrap()), step);
    e.assert_logged("InResponseTo does not name the LogoutRequest we sent").await;
    let (xml, relay3) = e.logout_step(&b, &step, &cert_pem, THIRD_SP_SLO).await;
    assert_eq!(relay3, relay, "one chain: its id is every request's RelayState");
    assert!(xml.contains(&format!(">{sp3_name_id}</saml:NameID>")) && xml.contains("transient"), "{xml}");
    let forger = e.dir.path().join("forger.pem");
    let (ok, text) =
        sh(Command::new("openssl").args(["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out"]).arg(&forger));
    assert!(ok, "{text}");
    let (status, _, body) =
        e.answer_logout(Some(&b), THIRD_SP_ENTITY, &request_id_of(&xml), &relay, SUCCESS, Some(&forger)).await;
    assert_eq!(status, 303, "{body}");
    e.assert_logged("signature does not verify").await;
    let (status, headers, body) = e.get_with(&step, Some(&b.cookie)).await;
    assert_eq!(status, 303, "{body}");
    assert_eq!(headers["location"], format!("{RP_BYE}?state=s-1").as_str());
    assert!(headers["set-cookie"].to_str().unwrap().contains("Max-Age=0"), "the chain's cookie is cleared");
    // The chain is over: a late answer, or the step again, gets the error page.
    let (status, _, _) = e.get_with(&step, Some(&b.cookie)).await;
    assert_eq!(status, 409);

    // Run 2 (the same hint again: the RP may repeat a logout): both SP sessions are
    // still there (refused answers end nothing). sp1 does
    // not answer (the browser comes back to the step): skipped; sp3 answers Success,
    // signed by its key. A response without the chain's cookie is refused.
    let (status, headers, _) = e.end_session(&hint, "s-2").await;
    assert_eq!(status, 303);
    let (b, step) = e.chain_started(&headers);
    let (xml, _) = e.logout_step(&b, &step, &cert_pem, SP_SLO).await;
    assert_eq!(session_index_of(&xml), sp1_index, "sp1's session was kept after the wrong answer");
    let (xml, relay) = e.logout_step(&b, &step, &cert_pem, THIRD_SP_SLO).await;
    e.assert_logged("the SP did not answer; going on").await;
    let irt = request_id_of(&xml);
    let (status, _, body) = e.answer_logout(None, THIRD_SP_ENTITY, &irt, &relay, SUCCESS, Some(&e.sp_key)).await;
    assert_eq!(status, 403, "no cookie, another browser: {body}");
    let (status, _, body) = e.answer_logout(Some(&b), THIRD_SP_ENTITY, &irt, &relay, SUCCESS, Some(&e.sp_key)).await;
    assert_eq!(status, 303, "{body}");
    e.assert_logged("SAML LogoutResponse: the SP ended its session").await;
    let (status, headers, _) = e.get_with(&step, Some(&b.cookie)).await;
    assert_eq!((status, headers["location"].to_str().unwrap()), (303, format!("{RP_BYE}?state=s-2").as_str()));

    // Run 3: only sp1 is left; it answers Success (unsigned: it does not sign).
    let (status, headers, _) = e.end_session(&hint, "s-3").await;
    assert_eq!(status, 303);
    let (b, step) = e.chain_started(&headers);
    let (xml, relay) = e.logout_step(&b, &step, &cert_pem, SP_SLO).await;
    let (status, _, _) = e.answer_logout(Some(&b), SP_ENTITY, &request_id_of(&xml), &relay, SUCCESS, None).await;
    assert_eq!(status, 303);
    let (status, headers, _) = e.get_with(&step, Some(&b.cookie)).await;
    assert_eq!((status, headers["location"].to_str().unwrap()), (303, format!("{RP_BYE}?state=s-3").as_str()));

    // Run 4: no SP session left: straight back to the RP.
    let (status, headers, _) = e.end_session(&hint, "s-4").await;
    assert_eq!(status, 303);
    assert_eq!(headers["location"], format!("{RP_BYE}?state=s-4").as_str());
    assert!(headers.get("set-cookie").is_none());
}

#[tokio::test]
async fn sp_initiated_logout_goes_on_to_the_persons_other_sps_then_answers() {
    let e = start(free_port().unwrap()).await;
    let (_, cert_pem) = e.metadata_cert_pem().await;
    let (_, _, page, _) = e.sign_in(&e.sso_url(&e.good_request("_spi1"), None)).await;
    let sp1_index = between(&saml_response_of(&page), "SessionIndex=\"", "\"").unwrap().to_string();
    let third = e.authn_request("_spi3", THIRD_SP_ENTITY, Some("https://third-sp.example/acs"), now(), "");
    let q = e.signed_query(&third, &e.sp_key);
    let (status, _, page, _) = e.sign_in_to(&format!("{}?{q}", e.url("/saml/sso")), "sp3", &["age"]).await;
    assert_eq!(status, 200, "{page}");
    // sp1 asks to log out its session: sp3 gets a LogoutRequest first, then sp1 its
    // LogoutResponse with its RelayState.
    let xml = format!(
        r#"<samlp:LogoutRequest xmlns:samlp="{SAMLP}" xmlns:saml="{SAML}" ID="_spi_lo" Version="2.0" IssueInstant="{t}" Destination="{d}"><saml:Issuer>{SP_ENTITY}</saml:Issuer><saml:NameID Format="urn:oasis:names:tc:SAML:2.0:nameid-format:persistent">{tid}</saml:NameID><samlp:SessionIndex>{sp1_index}</samlp:SessionIndex></samlp:LogoutRequest>"#,
        t = saml_time(now()),
        d = e.url("/saml/slo"),
        tid = e.env.token_id,
    );
    let url =
        format!("{}?{}", e.url("/saml/slo"), encode_query("SAMLRequest", &xml, Some("sp1-back"), None, |_| vec![]));
    let (status, headers, body) = e.get(&url).await;
    assert_eq!(status, 303, "{body}");
    let (b, step) = e.chain_started(&headers);
    let (lr, relay) = e.logout_step(&b, &step, &cert_pem, THIRD_SP_SLO).await;
    let (status, _, _) =
        e.answer_logout(Some(&b), THIRD_SP_ENTITY, &request_id_of(&lr), &relay, SUCCESS, Some(&e.sp_key)).await;
    assert_eq!(status, 303);
    let (status, headers, _) = e.get_with(&step, Some(&b.cookie)).await;
    assert_eq!(status, 303);
    let location = headers["location"].to_str().unwrap();
    assert!(location.starts_with(&format!("{SP_SLO}?SAMLResponse=")) && location.contains("RelayState=sp1-back"));
    let pairs: std::collections::HashMap<String, String> =
        reqwest::Url::parse(location).unwrap().query_pairs().into_owned().collect();
    let response =
        String::from_utf8(inflate(&STANDARD.decode(&pairs["SAMLResponse"]).unwrap(), 65536).unwrap()).unwrap();
    assert!(response.contains("InResponseTo=\"_spi_lo\"") && response.contains(SUCCESS), "{response}");
    // Both SP sessions are gone: an OIDC logout of the same person now has no SP to visit.
    let (status, headers, _) = e.end_session(&e.oidc_id_token().await, "after").await;
    assert_eq!((status, headers["location"].to_str().unwrap()), (303, format!("{RP_BYE}?state=after").as_str()));
}

#[tokio::test]
async fn an_expired_sp_session_is_not_logged_out_again() {
    let e = start_with(free_port().unwrap(), "session_lifetime = \"10s\"").await;
    let (_, _, page, _) = e.sign_in(&e.sso_url(&e.good_request("_exp1"), None)).await;
    let xml = saml_response_of(&page);
    let end = between(&xml, "SessionNotOnOrAfter=\"", "\"").unwrap();
    let end = symbolon::saml::parse_saml_time(end).unwrap();
    assert!((end - now() - 10).abs() <= 2, "SessionNotOnOrAfter is now + session_lifetime: {xml}");
    let hint = e.oidc_id_token().await;
    tokio::time::sleep(Duration::from_secs(11)).await;
    let (status, headers, _) = e.end_session(&hint, "late").await;
    assert_eq!((status, headers["location"].to_str().unwrap()), (303, format!("{RP_BYE}?state=late").as_str()));
    assert!(headers.get("set-cookie").is_none(), "no chain for an expired SP session");
}

/// pysaml2, an SP nobody here wrote, receives the LogoutRequest of an RP-initiated
/// logout (RSA-SHA256: pysaml2 has no ECDSA on the redirect binding), verifies its
/// query signature against our metadata, finds its NameID, and answers with its own
/// RSA-signed LogoutResponse, which Symbolon verifies with the SP's certificate and
/// takes as the end of that SP session. A tampered request fails pysaml2's check.
#[tokio::test]
async fn pysaml2_sp_answers_the_logout_request_of_an_rp_initiated_logout() {
    let Some(py) = python_or_skip(&["saml2"], "pysaml2 SP") else { return };
    let keys = tempfile::tempdir().unwrap();
    let (key, cert) = (keys.path().join("py-key.pem"), keys.path().join("py-cert.pem"));
    let (ok, text) = sh(Command::new("openssl")
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=py-sp", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert));
    assert!(ok, "{text}");
    let (py_entity, py_slo, py_acs) =
        ("https://py-sp.example/md", "https://py-sp.example/slo", "https://py-sp.example/acs");
    let sp4 = format!(
        r#"
[[services]]
id = "sp4"
name = "pysaml2 SP"
allowed_scopes = ["age"]
[services.saml]
entity_id = "{py_entity}"
acs_url = "{py_acs}"
slo_url = "{py_slo}"
signature_algorithm = "rsa-sha256"
certificate_pem = "{cert}"
default_scopes = ["age"]
"#,
        cert = cert.display()
    );
    let e = start_full(free_port().unwrap(), "", &sp4).await;
    let (status, _, md) = e.get(&e.url("/saml/metadata")).await;
    assert_eq!(status, 200);
    let (status, _, page, _) = e
        .sign_in_to(&e.sso_url(&e.authn_request("_py1", py_entity, Some(py_acs), now(), ""), None), "sp4", &["age"])
        .await;
    assert_eq!(status, 200, "{page}");
    let (status, headers, _) = e.end_session(&e.oidc_id_token().await, "py").await;
    assert_eq!(status, 303);
    let (b, step) = e.chain_started(&headers);
    let (status, _, page) = e.get_with(&step, Some(&b.cookie)).await;
    assert_eq!(status, 200, "{page}");
    let request_url = attr_value(&page, "id=\"logout-next\" href=\"").unwrap();
    assert!(request_url.starts_with(&format!("{py_slo}?SAMLRequest=")), "{request_url}");
    assert!(request_url.contains("SigAlg=http%3A%2F%2Fwww.w3.org%2F2001%2F04%2Fxmldsig-more%23rsa-sha256"));
    let md_path = keys.path().join("idp.xml");
    std::fs::write(&md_path, &md).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/saml_sp_logout.py");
    let run = |url: &str| {
        sh(Command::new(&py)
            .arg(&script)
            .arg(&md_path)
            .args([py_entity, py_slo])
            .arg(&key)
            .arg(&cert)
            .args([url, e.env.token_id.as_str()]))
    };
    // pysaml2 refuses a request whose signed query was changed.
    let (ok, text) = run(&request_url.replace("RelayState=", "RelayState=x"));
    assert!(!ok && text.contains("REJECTED") && !text.contains("VERIFIED"), "pysaml2 took a tampered request:\n{text}");
    eprintln!("pysaml2 on the tampered request: {text}");
    let (ok, text) = run(&request_url);
    eprintln!("pysaml2:\n{text}");
    assert!(ok && text.contains(&format!("VERIFIED {} ", e.env.token_id)), "{text}");
    let location = text.lines().find_map(|l| l.strip_prefix("LOCATION ")).unwrap().trim().to_string();
    assert!(location.starts_with(&format!("{}?SAMLResponse=", e.url("/saml/slo"))), "{location}");
    let (status, headers, body) = e.get_with(&location, Some(&b.cookie)).await;
    assert_eq!(status, 303, "{body}");
    assert_eq!(e.url(headers["location"].to_str().unwrap()), step);
    e.assert_logged("SAML LogoutResponse: the SP ended its session").await;
    let (status, headers, _) = e.get_with(&step, Some(&b.cookie)).await;
    assert_eq!((status, headers["location"].to_str().unwrap()), (303, format!("{RP_BYE}?state=py").as_str()));
}
