//! The `Response` sent to an SP's ACS (HTTP-POST binding): a signed `Assertion` for
//! the person (persistent or transient NameID), bearer `SubjectConfirmation`,
//! `Conditions` with the SP as audience, `AuthnStatement`, and the granted claims as
//! attributes named per SP; or, for a request we cannot serve as asked, a signed
//! `Response` carrying only an error status. SAML 2.0 Profiles §4.1.4.2 and core §2, §3.2.2.

use std::time::Duration;

use super::cert::SigningCertificate;
use super::config::{AttributeName, Claim, NameIdFormat, SamlSpConfig};
use super::dsig;
use super::xml::XmlWriter;
use super::{
    SAML_NS, SAMLP_NS, STATUS_AUTHN_FAILED, STATUS_INVALID_NAMEID_POLICY, STATUS_REQUESTER, STATUS_RESPONDER,
    STATUS_SUCCESS, SamlError, entity_id, new_saml_id, saml_time,
};
use crate::keyring::KeyRing;

/// `AuthnContextClassRef` of our assertions.
pub const AUTHN_CONTEXT: &str = "urn:oasis:names:tc:SAML:2.0:ac:classes:unspecified";
/// Bearer subject confirmation.
pub const CM_BEARER: &str = "urn:oasis:names:tc:SAML:2.0:cm:bearer";

/// A claim value: text, or a boolean (`age_over_*`), written `true` / `false`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimValue {
    Text(String),
    Bool(bool),
}

impl ClaimValue {
    fn render(&self) -> String {
        match self {
            ClaimValue::Text(s) => s.clone(),
            ClaimValue::Bool(b) => b.to_string(),
        }
    }
}

/// `YYYY-MM-DD` as `schacDateOfBirth` writes it (`YYYYMMDD`); `None` for a partial
/// date (`YYYY-MM`, `YYYY`: docs/protocol.md §12 rule 8), which that syntax cannot
/// carry.
fn schac_date(value: &str) -> Option<String> {
    let b = value.as_bytes();
    let digits = |r: std::ops::Range<usize>| b.get(r).is_some_and(|d| d.iter().all(u8::is_ascii_digit));
    (b.len() == 10 && digits(0..4) && b[4] == b'-' && digits(5..7) && b[7] == b'-' && digits(8..10))
        .then(|| value.replace('-', ""))
}

/// Claims in the JSON shape of identity tokens (`{"given_name":"JANE","age_over_18":true,...}`)
/// as SAML claims; other members (`iss`, `sub`, ...) and other value types are left out.
pub fn claims_from_json(claims: &serde_json::Map<String, serde_json::Value>) -> Vec<(Claim, ClaimValue)> {
    Claim::ALL
        .into_iter()
        .filter_map(|c| {
            let v = match claims.get(c.as_str())? {
                serde_json::Value::String(s) => ClaimValue::Text(s.clone()),
                serde_json::Value::Bool(b) => ClaimValue::Bool(*b),
                _ => return None,
            };
            Some((c, v))
        })
        .collect()
}

/// Everything a `Response` says.
#[derive(Debug, Clone)]
pub struct ResponseParams<'a> {
    /// `server.issuer` (the IdP entity id is `{issuer}/saml/metadata`).
    pub issuer: &'a str,
    pub sp: &'a SamlSpConfig,
    /// The `AuthnRequest` ID (none for IdP-initiated).
    pub in_response_to: Option<&'a str>,
    /// The NameID: the person's persistent identifier, or a fresh transient id.
    pub name_id: &'a str,
    pub name_id_format: NameIdFormat,
    /// `SessionIndex` (e.g. the auth session id).
    pub session_index: &'a str,
    /// When the user approved on the phone.
    pub authn_instant: i64,
    pub now: i64,
    /// `NotOnOrAfter` = `now` + lifetime.
    pub lifetime: Duration,
    /// `NotBefore` = `now` − skew.
    pub clock_skew: Duration,
    /// `SessionNotOnOrAfter` of the `AuthnStatement`, when the SP session has a limit.
    pub session_not_on_or_after: Option<i64>,
    /// Granted claims (any order; written in the order of docs/protocol.md §7.3).
    pub claims: &'a [(Claim, ClaimValue)],
}

/// The unsigned `Assertion` element with its ID.
pub fn assertion_xml(p: &ResponseParams<'_>) -> (String, String) {
    let id = new_saml_id();
    let idp = entity_id(p.issuer);
    let now = saml_time(p.now);
    let not_after = saml_time(p.now.saturating_add(secs(p.lifetime)));
    let not_before = saml_time(p.now.saturating_sub(secs(p.clock_skew)));
    let mut w = XmlWriter::new();
    w.start("saml:Assertion", &[("xmlns:saml", SAML_NS), ("ID", &id), ("Version", "2.0"), ("IssueInstant", &now)]);
    w.leaf("saml:Issuer", &[], &idp);
    w.start("saml:Subject", &[]);
    w.leaf(
        "saml:NameID",
        &[("Format", p.name_id_format.uri()), ("NameQualifier", &idp), ("SPNameQualifier", &p.sp.entity_id)],
        p.name_id,
    );
    w.start("saml:SubjectConfirmation", &[("Method", CM_BEARER)]);
    let mut scd: Vec<(&str, &str)> = Vec::new();
    if let Some(irt) = p.in_response_to {
        scd.push(("InResponseTo", irt));
    }
    scd.push(("NotOnOrAfter", &not_after));
    scd.push(("Recipient", &p.sp.acs_url));
    w.leaf("saml:SubjectConfirmationData", &scd, "");
    w.end(); // SubjectConfirmation
    w.end(); // Subject
    w.start("saml:Conditions", &[("NotBefore", &not_before), ("NotOnOrAfter", &not_after)]);
    w.start("saml:AudienceRestriction", &[]);
    w.leaf("saml:Audience", &[], &p.sp.entity_id);
    w.end();
    w.end();
    let authn_instant = saml_time(p.authn_instant);
    let session_end = p.session_not_on_or_after.map(saml_time);
    let mut statement = vec![("AuthnInstant", authn_instant.as_str()), ("SessionIndex", p.session_index)];
    if let Some(end) = &session_end {
        statement.push(("SessionNotOnOrAfter", end.as_str()));
    }
    w.start("saml:AuthnStatement", &statement);
    w.start("saml:AuthnContext", &[]);
    w.leaf("saml:AuthnContextClassRef", &[], AUTHN_CONTEXT);
    w.end();
    w.end();
    let mut claims: Vec<&(Claim, ClaimValue)> = p.claims.iter().collect();
    claims.sort_by_key(|(c, _)| *c);
    claims.dedup_by_key(|(c, _)| *c);
    if !claims.is_empty() {
        w.start("saml:AttributeStatement", &[]);
        for (claim, value) in claims {
            let mut a = p.sp.attribute_name(*claim);
            let mut rendered = value.render();
            if a.standard_syntax && *claim == Claim::Birthdate {
                match schac_date(&rendered) {
                    Some(d) => rendered = d,
                    // A partial date goes out as the plain `birthdate` attribute.
                    None => a = AttributeName::basic(*claim),
                }
            }
            w.start("saml:Attribute", &[("Name", a.name), ("NameFormat", a.format), ("FriendlyName", a.friendly)]);
            w.leaf("saml:AttributeValue", &[], &rendered);
            w.end();
        }
        w.end();
    }
    (w.finish(), id)
}

fn secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX / 4)
}

/// The `Response` around `assertion` (already signed or not).
fn response_xml(p: &ResponseParams<'_>, id: &str, assertion: &str) -> String {
    let now = saml_time(p.now);
    let mut attrs: Vec<(&str, &str)> = vec![
        ("xmlns:samlp", SAMLP_NS),
        ("xmlns:saml", SAML_NS),
        ("ID", id),
        ("Version", "2.0"),
        ("IssueInstant", &now),
        ("Destination", &p.sp.acs_url),
    ];
    if let Some(irt) = p.in_response_to {
        attrs.push(("InResponseTo", irt));
    }
    let mut w = XmlWriter::new();
    w.start("samlp:Response", &attrs);
    w.leaf("saml:Issuer", &[], &entity_id(p.issuer));
    w.start("samlp:Status", &[]);
    w.leaf("samlp:StatusCode", &[("Value", STATUS_SUCCESS)], "");
    w.end();
    w.raw(assertion);
    w.finish()
}

/// The `Response` XML (not yet base64) with the `Assertion` signed by the active SAML
/// key in the HSM, and the `Response` signed too when the SP asks for it. `cert` must
/// be the active key's certificate ([`super::cert::active_certificate`]).
pub async fn build_response(
    ring: &KeyRing,
    cert: &SigningCertificate,
    p: &ResponseParams<'_>,
) -> Result<String, SamlError> {
    let (assertion, assertion_id) = assertion_xml(p);
    let response_id = new_saml_id();
    let doc = response_xml(p, &response_id, &assertion);
    let doc = dsig::sign_enveloped(ring, &doc, &assertion_id, cert).await?;
    if !p.sp.sign_response {
        return Ok(doc);
    }
    dsig::sign_enveloped(ring, &doc, &response_id, cert).await
}

/// Why the IdP answers an `AuthnRequest` without an assertion: SAML core §3.2.2.2
/// top-level and second-level status codes, and a message for the SP's log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The user cancelled on the sign-in page: `Responder` with `AuthnFailed` ("the
    /// responding provider was unable to successfully authenticate the principal").
    /// `RequestDenied` would tell the SP that its request was refused on security
    /// grounds, which a cancel is not.
    Cancelled,
    /// The `NameIDPolicy` asks for a format we cannot issue: `Requester` with
    /// `InvalidNameIDPolicy` (SAML core §3.4.1.1).
    InvalidNameIdPolicy,
}

impl Refusal {
    fn codes(self) -> (&'static str, &'static str, &'static str) {
        match self {
            Refusal::Cancelled => (STATUS_RESPONDER, STATUS_AUTHN_FAILED, "The user cancelled the sign-in."),
            Refusal::InvalidNameIdPolicy => (
                STATUS_REQUESTER,
                STATUS_INVALID_NAMEID_POLICY,
                "NameIDPolicy Format is not supported (persistent, transient or unspecified).",
            ),
        }
    }
}

/// A `Response` without an assertion that refuses the request `in_response_to` with
/// `refusal`'s status, sent to the SP's registered ACS and signed (the whole `Response`:
/// there is no assertion to carry a signature) by the active key of `cert`'s algorithm in the HSM.
pub async fn build_refusal(
    ring: &KeyRing,
    cert: &SigningCertificate,
    issuer: &str,
    sp: &SamlSpConfig,
    in_response_to: &str,
    refusal: Refusal,
    now: i64,
) -> Result<String, SamlError> {
    let (top, second, message) = refusal.codes();
    let id = new_saml_id();
    let instant = saml_time(now);
    let mut w = XmlWriter::new();
    w.start(
        "samlp:Response",
        &[
            ("xmlns:samlp", SAMLP_NS),
            ("xmlns:saml", SAML_NS),
            ("ID", &id),
            ("Version", "2.0"),
            ("IssueInstant", &instant),
            ("Destination", &sp.acs_url),
            ("InResponseTo", in_response_to),
        ],
    );
    w.leaf("saml:Issuer", &[], &entity_id(issuer));
    w.start("samlp:Status", &[]);
    w.start("samlp:StatusCode", &[("Value", top)]);
    w.leaf("samlp:StatusCode", &[("Value", second)], "");
    w.end();
    w.leaf("samlp:StatusMessage", &[], message);
    w.end();
    dsig::sign_enveloped(ring, &w.finish(), &id, cert).await
}

/// The value of the `SAMLResponse` form field (base64 of the XML).
pub fn post_binding_value(response_xml: &str) -> String {
    super::b64(response_xml.as_bytes())
}
