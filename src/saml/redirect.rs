//! HTTP-Redirect binding (SAML bindings §3.4): decoding `SAMLRequest` (base64 of raw
//! DEFLATE, inflated with a size cap), strict parsing of `AuthnRequest` and
//! `LogoutRequest`, verification of the query-string signature (`SigAlg` +
//! `Signature` over the octets exactly as received) with the SP's certificate, and the
//! signed `LogoutResponse` sent back the same way. Every failure is a
//! [`RequestError`] with a reason for the log; nothing here panics on any input.

use std::collections::HashSet;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use der::{Decode, Encode};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};

use super::config::NameIdFormat;
use super::config::{SamlConfig, SamlSpConfig, SignatureAlgorithm};
use super::dsig::{ALG_ECDSA_SHA256, ALG_RSA_SHA256};
use super::xml::{Element, XmlWriter, parse};
use super::{
    ASYNC_SLO_NS, BINDING_POST, NAMEID_PERSISTENT, NAMEID_TRANSIENT, NAMEID_UNSPECIFIED, SAML_NS, SAMLP_NS,
    STATUS_SUCCESS, SamlError, entity_id, new_saml_id, parse_saml_time, saml_time,
};
use crate::keyring::KeyRing;

/// Largest inflated message accepted.
pub const MAX_INFLATED: usize = 64 * 1024;
/// Largest query string accepted (before any decoding).
pub const MAX_QUERY: usize = 64 * 1024;
/// `RelayState` limit of SAML bindings §3.4.3.
pub const MAX_RELAY_STATE: usize = 80;
const MAX_ID: usize = 256;

/// Why an SP request was refused. The message is for the log; the user sees an
/// error page.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("malformed query string: {0}")]
    Query(String),
    #[error("missing parameter {0}")]
    Missing(&'static str),
    #[error("bad base64 in {0}")]
    Base64(&'static str),
    #[error("bad DEFLATE data")]
    Deflate,
    #[error("inflated message exceeds {MAX_INFLATED} bytes")]
    TooLarge,
    #[error("malformed XML: {0}")]
    Xml(String),
    #[error("invalid message: {0}")]
    Invalid(String),
    #[error("unknown service provider {0:?}")]
    UnknownSp(String),
    #[error("AssertionConsumerServiceURL {0:?} is not the registered one")]
    AcsMismatch(String),
    #[error("Destination {0:?} is not this endpoint")]
    DestinationMismatch(String),
    #[error("request is expired or from the future (IssueInstant {0})")]
    Stale(String),
    #[error("the SP must sign its requests and this one is unsigned")]
    Unsigned,
    #[error("unsupported SigAlg {0:?}")]
    UnsupportedSigAlg(String),
    #[error("signature does not verify")]
    BadSignature,
    #[error("SP certificate: {0}")]
    Certificate(String),
}

/// A decoded redirect-binding message.
#[derive(Debug, Clone)]
pub struct RedirectMessage {
    /// The inflated XML.
    pub xml: String,
    pub relay_state: Option<String>,
    pub sig_alg: Option<String>,
    signature: Option<Vec<u8>>,
    /// `SAMLRequest=…[&RelayState=…]&SigAlg=…` as received (still URL-encoded).
    signed_octets: Vec<u8>,
}

fn form_decode(raw: &str) -> Result<String, RequestError> {
    let plus = raw.replace('+', " ");
    percent_decode_str(&plus)
        .decode_utf8()
        .map(|c| c.into_owned())
        .map_err(|_| RequestError::Query("parameter is not UTF-8".into()))
}

fn b64_param(value: &str, name: &'static str) -> Result<Vec<u8>, RequestError> {
    // A '+' the SP forgot to encode arrives as a space; line breaks are tolerated.
    let cleaned: String =
        value.chars().filter(|c| !matches!(c, '\r' | '\n')).map(|c| if c == ' ' { '+' } else { c }).collect();
    STANDARD.decode(cleaned.as_bytes()).map_err(|_| RequestError::Base64(name))
}

/// Raw DEFLATE (RFC 1951) inflate, refusing output past `limit` bytes.
pub fn inflate(data: &[u8], limit: usize) -> Result<Vec<u8>, RequestError> {
    use miniz_oxide::inflate::{TINFLStatus, decompress_to_vec_with_limit};
    decompress_to_vec_with_limit(data, limit).map_err(|e| match e.status {
        TINFLStatus::HasMoreOutput => RequestError::TooLarge,
        _ => RequestError::Deflate,
    })
}

/// Raw DEFLATE of `data`.
pub fn deflate(data: &[u8]) -> Vec<u8> {
    miniz_oxide::deflate::compress_to_vec(data, 6)
}

/// Decodes the redirect-binding message in `query` (the raw query string, without
/// `?`), carried in the parameter `param` (`SAMLRequest` or `SAMLResponse`).
pub fn decode(query: &str, param: &'static str) -> Result<RedirectMessage, RequestError> {
    if query.len() > MAX_QUERY {
        return Err(RequestError::Query("too long".into()));
    }
    let mut seen = HashSet::new();
    let (mut msg, mut relay, mut sig_alg, mut sig) = (None, None, None, None);
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let key = form_decode(k)?;
        if !seen.insert(key.clone())
            && matches!(key.as_str(), "SAMLRequest" | "SAMLResponse" | "RelayState" | "SigAlg" | "Signature")
        {
            return Err(RequestError::Query(format!("{key} given twice")));
        }
        match key.as_str() {
            k if k == param => msg = Some(v),
            "RelayState" => relay = Some(v),
            "SigAlg" => sig_alg = Some(v),
            "Signature" => sig = Some(v),
            "SAMLRequest" | "SAMLResponse" => {
                return Err(RequestError::Query(format!("unexpected {key}")));
            }
            _ => {}
        }
    }
    let raw_msg = msg.ok_or(RequestError::Missing(param))?;
    let deflated = b64_param(&form_decode(raw_msg)?, param)?;
    let inflated = inflate(&deflated, MAX_INFLATED)?;
    let xml = String::from_utf8(inflated).map_err(|_| RequestError::Xml("message is not UTF-8".into()))?;
    let relay_state = relay.map(form_decode).transpose()?;
    if relay_state.as_ref().is_some_and(|r| r.len() > MAX_RELAY_STATE) {
        return Err(RequestError::Invalid(format!("RelayState longer than {MAX_RELAY_STATE} bytes")));
    }
    let sig_alg_value = sig_alg.map(form_decode).transpose()?;
    let signature = sig.map(|s| form_decode(s).and_then(|d| b64_param(&d, "Signature"))).transpose()?;
    if signature.is_some() != sig_alg_value.is_some() {
        return Err(RequestError::Invalid("Signature and SigAlg must come together".into()));
    }
    let mut signed_octets = format!("{param}={raw_msg}");
    if let Some(r) = relay {
        signed_octets.push_str(&format!("&RelayState={r}"));
    }
    if let Some(a) = sig_alg {
        signed_octets.push_str(&format!("&SigAlg={a}"));
    }
    Ok(RedirectMessage {
        xml,
        relay_state,
        sig_alg: sig_alg_value,
        signature,
        signed_octets: signed_octets.into_bytes(),
    })
}

impl RedirectMessage {
    /// Whether the query carried a signature.
    pub fn is_signed(&self) -> bool {
        self.signature.is_some()
    }

    /// Verifies the query-string signature with the SP's certificate (DER).
    /// RSA-SHA256 (PKCS#1 v1.5) and ECDSA-SHA256 (P-256; raw `r||s` or DER) are accepted.
    pub fn verify(&self, cert_der: &[u8]) -> Result<(), RequestError> {
        let (Some(alg), Some(sig)) = (&self.sig_alg, &self.signature) else {
            return Err(RequestError::Unsigned);
        };
        verify_signature(alg, &self.signed_octets, sig, cert_der)
    }
}

fn verify_signature(alg: &str, message: &[u8], sig: &[u8], cert_der: &[u8]) -> Result<(), RequestError> {
    let cert = x509_cert::Certificate::from_der(cert_der).map_err(|e| RequestError::Certificate(e.to_string()))?;
    let spki =
        cert.tbs_certificate.subject_public_key_info.to_der().map_err(|e| RequestError::Certificate(e.to_string()))?;
    match alg {
        ALG_RSA_SHA256 => {
            use rsa::pkcs8::DecodePublicKey;
            use rsa::signature::Verifier;
            let key = rsa::RsaPublicKey::from_public_key_der(&spki)
                .map_err(|_| RequestError::Certificate("not an RSA key".into()))?;
            let vk = rsa::pkcs1v15::VerifyingKey::<sha2::Sha256>::new(key);
            let s = rsa::pkcs1v15::Signature::try_from(sig).map_err(|_| RequestError::BadSignature)?;
            vk.verify(message, &s).map_err(|_| RequestError::BadSignature)
        }
        ALG_ECDSA_SHA256 => {
            use p256::ecdsa::signature::Verifier;
            use p256::pkcs8::DecodePublicKey;
            let vk = p256::ecdsa::VerifyingKey::from_public_key_der(&spki)
                .map_err(|_| RequestError::Certificate("not a P-256 key".into()))?;
            let s = if sig.len() == 64 {
                p256::ecdsa::Signature::from_slice(sig)
            } else {
                p256::ecdsa::Signature::from_der(sig)
            }
            .map_err(|_| RequestError::BadSignature)?;
            vk.verify(message, &s).map_err(|_| RequestError::BadSignature)
        }
        other => Err(RequestError::UnsupportedSigAlg(other.to_string())),
    }
}

/// A parsed `AuthnRequest`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthnRequest {
    pub id: String,
    pub issue_instant: i64,
    pub destination: Option<String>,
    pub acs_url: Option<String>,
    pub acs_index: Option<u32>,
    pub protocol_binding: Option<String>,
    pub issuer: String,
    pub force_authn: bool,
    pub is_passive: bool,
    pub name_id_format: Option<String>,
}

/// A parsed `LogoutRequest`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogoutRequest {
    pub id: String,
    pub issue_instant: i64,
    pub destination: Option<String>,
    pub issuer: String,
    pub name_id: String,
    pub session_indexes: Vec<String>,
    pub not_on_or_after: Option<i64>,
    /// `Extensions` carries the Asynchronous Single Logout `Asynchronous` element:
    /// the SP wants no `LogoutResponse`.
    pub asynchronous: bool,
}

pub(super) fn invalid(s: impl Into<String>) -> RequestError {
    RequestError::Invalid(s.into())
}

pub(super) fn xml_root(xml: &str, local: &str) -> Result<Element, RequestError> {
    let root = parse(xml).map_err(|e| RequestError::Xml(e.to_string()))?;
    if !root.is(SAMLP_NS, local) {
        return Err(invalid(format!("expected samlp:{local}, got {{{}}}{}", root.ns, root.local)));
    }
    if root.child("http://www.w3.org/2000/09/xmldsig#", "Signature").is_some() {
        return Err(invalid("XML signature inside a redirect-binding message (bindings §3.4.4.1)"));
    }
    Ok(root)
}

pub(super) fn check_attrs(el: &Element, allowed: &[&str]) -> Result<(), RequestError> {
    for (ns, local, _) in &el.attrs {
        if ns.is_empty() && !allowed.contains(&local.as_str()) {
            return Err(invalid(format!("unexpected attribute {local} on {}", el.local)));
        }
        if ns == SAMLP_NS || ns == SAML_NS {
            return Err(invalid(format!("unexpected attribute {{{ns}}}{local}")));
        }
    }
    Ok(())
}

fn check_children(el: &Element, allowed: &[(&str, &str)]) -> Result<(), RequestError> {
    for c in &el.children {
        if !allowed.iter().any(|(ns, l)| c.is(ns, l)) {
            return Err(invalid(format!("unexpected element {{{}}}{} in {}", c.ns, c.local, el.local)));
        }
    }
    for (ns, l) in allowed {
        if el.children_named(ns, l).count() > 1 && *l != "SessionIndex" {
            return Err(invalid(format!("{l} given more than once")));
        }
    }
    if !el.text.trim().is_empty() {
        return Err(invalid(format!("text inside {}", el.local)));
    }
    Ok(())
}

fn saml_id(el: &Element) -> Result<String, RequestError> {
    let id = el.attr("ID").ok_or(RequestError::Invalid("ID missing".into()))?;
    let mut chars = id.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    if !first_ok || id.len() > MAX_ID || !id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
    {
        return Err(invalid("ID is not an NCName of at most 256 characters"));
    }
    Ok(id.to_string())
}

pub(super) fn common(el: &Element) -> Result<(String, i64, Option<String>, String), RequestError> {
    let id = saml_id(el)?;
    if el.attr("Version") != Some("2.0") {
        return Err(invalid("Version must be 2.0"));
    }
    let instant = el.attr("IssueInstant").ok_or(invalid("IssueInstant missing"))?;
    let issue_instant = parse_saml_time(instant).ok_or_else(|| invalid("IssueInstant is not an xs:dateTime"))?;
    let destination = el.attr("Destination").map(str::to_string);
    let issuer_el = el.child(SAML_NS, "Issuer").ok_or(invalid("Issuer missing"))?;
    if el.children.first().map(|c| c.is(SAML_NS, "Issuer")) != Some(true) {
        return Err(invalid("Issuer must be the first child"));
    }
    if let Some(f) = issuer_el.attr("Format")
        && f != "urn:oasis:names:tc:SAML:2.0:nameid-format:entity"
    {
        return Err(invalid("Issuer Format must be entity"));
    }
    let issuer = issuer_el.text.trim().to_string();
    if issuer.is_empty() || !issuer_el.children.is_empty() {
        return Err(invalid("Issuer is empty or not text"));
    }
    Ok((id, issue_instant, destination, issuer))
}

fn bool_attr(el: &Element, name: &str) -> Result<bool, RequestError> {
    match el.attr(name) {
        None | Some("false") | Some("0") => Ok(false),
        Some("true") | Some("1") => Ok(true),
        Some(_) => Err(invalid(format!("{name} is not a boolean"))),
    }
}

/// Parses an `AuthnRequest` strictly (SAML core §3.4.1).
pub fn parse_authn_request(xml: &str) -> Result<AuthnRequest, RequestError> {
    let root = xml_root(xml, "AuthnRequest")?;
    check_attrs(
        &root,
        &[
            "ID",
            "Version",
            "IssueInstant",
            "Destination",
            "Consent",
            "ForceAuthn",
            "IsPassive",
            "ProtocolBinding",
            "AssertionConsumerServiceIndex",
            "AssertionConsumerServiceURL",
            "AttributeConsumingServiceIndex",
            "ProviderName",
        ],
    )?;
    check_children(
        &root,
        &[
            (SAML_NS, "Issuer"),
            (SAMLP_NS, "Extensions"),
            (SAMLP_NS, "NameIDPolicy"),
            (SAML_NS, "Conditions"),
            (SAMLP_NS, "RequestedAuthnContext"),
            (SAMLP_NS, "Scoping"),
        ],
    )?;
    if root.child(SAML_NS, "Subject").is_some() {
        return Err(invalid("Subject in AuthnRequest is not supported"));
    }
    let (id, issue_instant, destination, issuer) = common(&root)?;
    let acs_url = root.attr("AssertionConsumerServiceURL").map(str::to_string);
    let acs_index = root
        .attr("AssertionConsumerServiceIndex")
        .map(|v| v.parse::<u32>().map_err(|_| invalid("bad AssertionConsumerServiceIndex")))
        .transpose()?;
    if acs_url.is_some() && acs_index.is_some() {
        return Err(invalid("AssertionConsumerServiceURL and AssertionConsumerServiceIndex are exclusive"));
    }
    let name_id_format = match root.child(SAMLP_NS, "NameIDPolicy") {
        Some(p) => {
            check_attrs(p, &["Format", "SPNameQualifier", "AllowCreate"])?;
            bool_attr(p, "AllowCreate")?;
            p.attr("Format").map(str::to_string)
        }
        None => None,
    };
    Ok(AuthnRequest {
        id,
        issue_instant,
        destination,
        acs_url,
        acs_index,
        protocol_binding: root.attr("ProtocolBinding").map(str::to_string),
        issuer,
        force_authn: bool_attr(&root, "ForceAuthn")?,
        is_passive: bool_attr(&root, "IsPassive")?,
        name_id_format,
    })
}

/// Parses a `LogoutRequest` strictly (SAML core §3.7.1).
pub fn parse_logout_request(xml: &str) -> Result<LogoutRequest, RequestError> {
    let root = xml_root(xml, "LogoutRequest")?;
    check_attrs(&root, &["ID", "Version", "IssueInstant", "Destination", "Consent", "NotOnOrAfter", "Reason"])?;
    check_children(
        &root,
        &[(SAML_NS, "Issuer"), (SAMLP_NS, "Extensions"), (SAML_NS, "NameID"), (SAMLP_NS, "SessionIndex")],
    )?;
    let (id, issue_instant, destination, issuer) = common(&root)?;
    let name_id_el =
        root.child(SAML_NS, "NameID").ok_or(invalid("NameID missing (BaseID and EncryptedID are not supported)"))?;
    if let Some(f) = name_id_el.attr("Format")
        && !matches!(f, NAMEID_PERSISTENT | NAMEID_TRANSIENT | NAMEID_UNSPECIFIED)
    {
        return Err(invalid("NameID Format must be persistent, transient or unspecified"));
    }
    let name_id = name_id_el.text.trim().to_string();
    if name_id.is_empty() {
        return Err(invalid("NameID is empty"));
    }
    let not_on_or_after =
        root.attr("NotOnOrAfter").map(|t| parse_saml_time(t).ok_or_else(|| invalid("bad NotOnOrAfter"))).transpose()?;
    Ok(LogoutRequest {
        id,
        issue_instant,
        destination,
        issuer,
        name_id,
        session_indexes: root.children_named(SAMLP_NS, "SessionIndex").map(|s| s.text.trim().to_string()).collect(),
        not_on_or_after,
        asynchronous: root
            .child(SAMLP_NS, "Extensions")
            .is_some_and(|e| e.children.iter().any(|c| c.is(ASYNC_SLO_NS, "Asynchronous"))),
    })
}

pub(super) fn check_time(instant: i64, now: i64, cfg: &SamlConfig) -> Result<(), RequestError> {
    let skew = i64::try_from(cfg.clock_skew.as_secs()).unwrap_or(0);
    let max_age = i64::try_from(cfg.request_max_age.as_secs()).unwrap_or(0);
    if instant > now.saturating_add(skew) || instant < now.saturating_sub(max_age + skew) {
        return Err(RequestError::Stale(saml_time(instant)));
    }
    Ok(())
}

pub(super) fn check_signature(msg: &RedirectMessage, sp: &SamlSpConfig) -> Result<(), RequestError> {
    let cert = sp.certificate_der().map_err(RequestError::Certificate)?;
    match (sp.requests_signed, msg.is_signed(), cert) {
        (true, false, _) => Err(RequestError::Unsigned),
        (true, true, None) => Err(RequestError::Certificate("not configured".into())),
        (_, true, Some(c)) => msg.verify(&c),
        // Signed but nobody to check it against, or unsigned and not required.
        _ => Ok(()),
    }
}

/// A checked SSO request: the request, its SP, the `RelayState` to carry.
#[derive(Debug, Clone)]
pub struct SsoRequest<'a> {
    pub request: AuthnRequest,
    pub sp: &'a SamlSpConfig,
    pub relay_state: Option<String>,
    /// The NameID format to issue (`NameIDPolicy`, else the SP's `name_id_format`),
    /// or the requested format we cannot issue: the SP then gets an
    /// `InvalidNameIDPolicy` Response (SAML core §3.4.1.1).
    pub name_id_format: Result<NameIdFormat, String>,
}

/// Everything `GET /saml/sso` checks before showing the sign-in page: decoding, strict
/// parsing, a configured SP, its signature when required, the ACS URL (absent or the
/// registered one; an index is refused), the binding, `Destination` (when present; required
/// when signed), `IssueInstant` freshness; then resolves the `NameIDPolicy` (a format we
/// cannot issue is not an error here: the SP is answered with a status). Replay of the
/// request ID is the caller's to check (remember IDs for `request_max_age` + skew).
pub fn receive_authn_request<'a>(
    query: &str,
    sps: &'a [SamlSpConfig],
    sso_url: &str,
    cfg: &SamlConfig,
    now: i64,
) -> Result<SsoRequest<'a>, RequestError> {
    let msg = decode(query, "SAMLRequest")?;
    let request = parse_authn_request(&msg.xml)?;
    let sp = sps
        .iter()
        .find(|s| s.entity_id == request.issuer)
        .ok_or_else(|| RequestError::UnknownSp(request.issuer.clone()))?;
    check_signature(&msg, sp)?;
    match &request.acs_url {
        Some(u) if u != &sp.acs_url => return Err(RequestError::AcsMismatch(u.clone())),
        _ => {}
    }
    if request.acs_index.is_some() {
        return Err(invalid("AssertionConsumerServiceIndex is not supported; send the URL"));
    }
    if let Some(b) = &request.protocol_binding
        && b != BINDING_POST
    {
        return Err(invalid(format!("ProtocolBinding {b} is not supported")));
    }
    check_destination(request.destination.as_deref(), sso_url, msg.is_signed())?;
    check_time(request.issue_instant, now, cfg)?;
    let name_id_format =
        NameIdFormat::requested(request.name_id_format.as_deref()).map(|f| f.unwrap_or(sp.name_id_format));
    Ok(SsoRequest { request, sp, relay_state: msg.relay_state, name_id_format })
}

pub(super) fn check_destination(dest: Option<&str>, ours: &str, signed: bool) -> Result<(), RequestError> {
    match dest {
        Some(d) if d != ours => Err(RequestError::DestinationMismatch(d.to_string())),
        None if signed => Err(invalid("Destination is required on a signed request")),
        _ => Ok(()),
    }
}

/// A checked SLO request.
#[derive(Debug, Clone)]
pub struct SloRequest<'a> {
    pub request: LogoutRequest,
    pub sp: &'a SamlSpConfig,
    pub slo_url: &'a str,
    pub relay_state: Option<String>,
}

/// Everything `GET /saml/slo` checks: as for SSO, plus the SP must have an `slo_url`
/// and the request must not be past its `NotOnOrAfter`.
pub fn receive_logout_request<'a>(
    query: &str,
    sps: &'a [SamlSpConfig],
    slo_url: &str,
    cfg: &SamlConfig,
    now: i64,
) -> Result<SloRequest<'a>, RequestError> {
    let msg = decode(query, "SAMLRequest")?;
    let request = parse_logout_request(&msg.xml)?;
    let sp = sps
        .iter()
        .find(|s| s.entity_id == request.issuer)
        .ok_or_else(|| RequestError::UnknownSp(request.issuer.clone()))?;
    check_signature(&msg, sp)?;
    check_destination(request.destination.as_deref(), slo_url, msg.is_signed())?;
    check_time(request.issue_instant, now, cfg)?;
    if request.not_on_or_after.is_some_and(|t| now >= t) {
        return Err(RequestError::Stale(saml_time(request.issue_instant)));
    }
    let sp_slo = sp.slo_url.as_deref().ok_or_else(|| invalid("the SP has no slo_url configured"))?;
    Ok(SloRequest { request, sp, slo_url: sp_slo, relay_state: msg.relay_state })
}

/// The `LogoutResponse` XML (unsigned: the redirect binding signs the query string).
pub fn logout_response_xml(issuer: &str, destination: &str, in_response_to: &str, status: &str, now: i64) -> String {
    let id = new_saml_id();
    let instant = saml_time(now);
    let mut w = XmlWriter::new();
    w.start(
        "samlp:LogoutResponse",
        &[
            ("xmlns:samlp", SAMLP_NS),
            ("xmlns:saml", SAML_NS),
            ("ID", &id),
            ("Version", "2.0"),
            ("IssueInstant", &instant),
            ("Destination", destination),
            ("InResponseTo", in_response_to),
        ],
    );
    w.leaf("saml:Issuer", &[], &entity_id(issuer));
    w.start("samlp:Status", &[]);
    w.leaf("samlp:StatusCode", &[("Value", status)], "");
    w.end();
    w.finish()
}

/// RFC 3986 unreserved characters stay; everything else is percent-encoded.
const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~');

pub(super) fn enc(s: &str) -> String {
    utf8_percent_encode(s, QUERY_VALUE).to_string()
}

/// The redirect URL carrying a signed `LogoutResponse` (Success) for `req` to the SP's
/// SLO URL: `SAMLResponse`, `RelayState`, `SigAlg` (the SP's signature algorithm) and
/// `Signature` (base64; raw `r||s` for ECDSA) computed in the HSM over the query.
pub async fn logout_response_redirect(
    ring: &KeyRing,
    issuer: &str,
    slo: &SloRequest<'_>,
    now: i64,
) -> Result<String, SamlError> {
    let xml = logout_response_xml(issuer, slo.slo_url, &slo.request.id, STATUS_SUCCESS, now);
    let alg = slo.sp.signature_algorithm;
    signed_redirect_url(ring, alg, slo.slo_url, "SAMLResponse", &xml, slo.relay_state.as_deref()).await
}

/// `url?{param}=…&RelayState=…&SigAlg=…&Signature=…` with the message deflated, base64'd
/// and the query signed in the HSM with the active key of `algorithm`.
pub async fn signed_redirect_url(
    ring: &KeyRing,
    algorithm: SignatureAlgorithm,
    url: &str,
    param: &str,
    xml: &str,
    relay_state: Option<&str>,
) -> Result<String, SamlError> {
    let mut query = format!("{param}={}", enc(&STANDARD.encode(deflate(xml.as_bytes()))));
    if let Some(r) = relay_state {
        query.push_str(&format!("&RelayState={}", enc(r)));
    }
    query.push_str(&format!("&SigAlg={}", enc(algorithm.uri())));
    let (_, sig) = super::dsig::sign_active(ring, algorithm, query.clone().into_bytes()).await?;
    query.push_str(&format!("&Signature={}", enc(&STANDARD.encode(sig))));
    let sep = if url.contains('?') { '&' } else { '?' };
    Ok(format!("{url}{sep}{query}"))
}

/// Builds a redirect-binding query for `xml` signed by `sign` (tests and SP tooling):
/// returns the query string without `?`.
pub fn encode_query(
    param: &str,
    xml: &str,
    relay_state: Option<&str>,
    sig_alg: Option<&str>,
    sign: impl FnOnce(&[u8]) -> Vec<u8>,
) -> String {
    let mut query = format!("{param}={}", enc(&STANDARD.encode(deflate(xml.as_bytes()))));
    if let Some(r) = relay_state {
        query.push_str(&format!("&RelayState={}", enc(r)));
    }
    if let Some(a) = sig_alg {
        query.push_str(&format!("&SigAlg={}", enc(a)));
        let sig = sign(query.as_bytes());
        query.push_str(&format!("&Signature={}", enc(&STANDARD.encode(sig))));
    }
    query
}
