//! IdP-initiated single logout (SAML profiles §4.4): the `LogoutRequest` the IdP sends
//! an SP over the HTTP-Redirect binding, and the strict parsing and checking of the
//! `LogoutResponse` the SP sends back. Nothing here knows HTTP or the stores.

use super::config::{NameIdFormat, SamlConfig, SamlSpConfig};
use super::redirect::{
    RedirectMessage, RequestError, check_attrs, check_destination, check_signature, check_time, common, decode,
    invalid, xml_root,
};
use super::xml::XmlWriter;
use super::{SAML_NS, SAMLP_NS, STATUS_SUCCESS, entity_id, saml_time};

/// `Reason` of a logout the user asked for (SAML core §3.7.3.2).
pub const REASON_USER: &str = "urn:oasis:names:tc:SAML:2.0:logout:user";

/// Whom an IdP-initiated `LogoutRequest` logs out: the subject and session the SP was
/// given in the assertion.
#[derive(Debug, Clone, Copy)]
pub struct LogoutSubject<'a> {
    pub name_id: &'a str,
    pub name_id_format: NameIdFormat,
    /// The SP's entity id (the assertion's `SPNameQualifier`).
    pub sp_name_qualifier: &'a str,
    pub session_index: &'a str,
}

/// The `LogoutRequest` XML for `destination` (the SP's SLO URL), unsigned: the
/// redirect binding signs the query string. `NotOnOrAfter` bounds how long it may be
/// acted on.
pub fn logout_request_xml(
    issuer: &str,
    destination: &str,
    id: &str,
    subject: &LogoutSubject<'_>,
    now: i64,
    not_on_or_after: i64,
) -> String {
    let idp = entity_id(issuer);
    let mut w = XmlWriter::new();
    w.start(
        "samlp:LogoutRequest",
        &[
            ("xmlns:samlp", SAMLP_NS),
            ("xmlns:saml", SAML_NS),
            ("ID", id),
            ("Version", "2.0"),
            ("IssueInstant", &saml_time(now)),
            ("Destination", destination),
            ("NotOnOrAfter", &saml_time(not_on_or_after)),
            ("Reason", REASON_USER),
        ],
    );
    w.leaf("saml:Issuer", &[], &idp);
    w.leaf(
        "saml:NameID",
        &[
            ("Format", subject.name_id_format.uri()),
            ("NameQualifier", &idp),
            ("SPNameQualifier", subject.sp_name_qualifier),
        ],
        subject.name_id,
    );
    w.leaf("samlp:SessionIndex", &[], subject.session_index);
    w.finish()
}

/// A parsed `LogoutResponse` (not yet checked against anything).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogoutResponse {
    pub id: String,
    pub in_response_to: Option<String>,
    pub issue_instant: i64,
    pub destination: Option<String>,
    pub issuer: String,
    /// The top-level `StatusCode`.
    pub status: String,
}

impl LogoutResponse {
    /// The SP says the session is gone.
    pub fn is_success(&self) -> bool {
        self.status == STATUS_SUCCESS
    }
}

/// Strict parsing of a `LogoutResponse` (SAML core §3.7.2 / §3.2.2).
pub fn parse_logout_response(xml: &str) -> Result<LogoutResponse, RequestError> {
    let root = xml_root(xml, "LogoutResponse")?;
    check_attrs(&root, &["ID", "InResponseTo", "Version", "IssueInstant", "Destination", "Consent"])?;
    for c in &root.children {
        let known = c.is(SAML_NS, "Issuer") || c.is(SAMLP_NS, "Extensions") || c.is(SAMLP_NS, "Status");
        if !known {
            return Err(invalid(format!("unexpected element {{{}}}{} in LogoutResponse", c.ns, c.local)));
        }
    }
    if root.children_named(SAMLP_NS, "Status").count() != 1 {
        return Err(invalid("LogoutResponse needs exactly one Status"));
    }
    let (id, issue_instant, destination, issuer) = common(&root)?;
    let status = root
        .child(SAMLP_NS, "Status")
        .and_then(|s| s.child(SAMLP_NS, "StatusCode"))
        .and_then(|c| c.attr("Value"))
        .filter(|v| !v.is_empty())
        .ok_or_else(|| invalid("Status has no StatusCode Value"))?
        .to_string();
    Ok(LogoutResponse {
        id,
        in_response_to: root.attr("InResponseTo").map(str::to_string),
        issue_instant,
        destination,
        issuer,
        status,
    })
}

/// A `LogoutResponse` as received on the redirect binding, parsed but not trusted:
/// the caller finds the request it answers, then [`check_logout_response`].
#[derive(Debug, Clone)]
pub struct ReceivedLogoutResponse {
    pub message: RedirectMessage,
    pub response: LogoutResponse,
}

/// Decodes and parses the `SAMLResponse` of `query`.
pub fn read_logout_response(query: &str) -> Result<ReceivedLogoutResponse, RequestError> {
    let message = decode(query, "SAMLResponse")?;
    let response = parse_logout_response(&message.xml)?;
    Ok(ReceivedLogoutResponse { message, response })
}

/// Checks a received `LogoutResponse` against the request we sent `sp`: issued by that
/// SP, signed when the SP must sign (and verified whenever signed), for our SLO
/// endpoint, fresh, and `InResponseTo` our request's ID.
pub fn check_logout_response(
    received: &ReceivedLogoutResponse,
    sp: &SamlSpConfig,
    our_slo_url: &str,
    request_id: &str,
    cfg: &SamlConfig,
    now: i64,
) -> Result<(), RequestError> {
    let r = &received.response;
    if r.issuer != sp.entity_id {
        return Err(invalid(format!("LogoutResponse issued by {:?}, not the SP the request went to", r.issuer)));
    }
    check_signature(&received.message, sp)?;
    check_destination(r.destination.as_deref(), our_slo_url, received.message.is_signed())?;
    check_time(r.issue_instant, now, cfg)?;
    if r.in_response_to.as_deref() != Some(request_id) {
        return Err(invalid("InResponseTo does not name the LogoutRequest we sent"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::saml::STATUS_RESPONDER;
    use crate::saml::redirect::{encode_query, parse_logout_request};

    fn sp() -> SamlSpConfig {
        SamlSpConfig {
            entity_id: "https://sp.example/md".into(),
            acs_url: "https://sp.example/acs".into(),
            slo_url: Some("https://sp.example/slo".into()),
            attribute_names: Default::default(),
            requests_signed: false,
            certificate_pem: None,
            sign_response: false,
            default_scopes: vec![],
            signature_algorithm: Default::default(),
            name_id_format: Default::default(),
            attribute_name_format: Default::default(),
        }
    }

    fn response(irt: &str, issuer: &str, status: &str, t: i64) -> String {
        format!(
            r#"<samlp:LogoutResponse xmlns:samlp="{SAMLP_NS}" xmlns:saml="{SAML_NS}" ID="_r1" Version="2.0" IssueInstant="{}" Destination="https://idp.example/saml/slo" InResponseTo="{irt}"><saml:Issuer>{issuer}</saml:Issuer><samlp:Status><samlp:StatusCode Value="{status}"/></samlp:Status></samlp:LogoutResponse>"#,
            saml_time(t)
        )
    }

    #[test]
    fn the_request_we_send_is_one_our_own_strict_parser_reads() {
        let subject = LogoutSubject {
            name_id: "_abc",
            name_id_format: NameIdFormat::Transient,
            sp_name_qualifier: "https://sp.example/md",
            session_index: "sess-1",
        };
        let xml = logout_request_xml("https://idp.example", "https://sp.example/slo", "_lr1", &subject, 100, 400);
        // The parser checks an SP's request; ours must pass the same strictness.
        let r = parse_logout_request(&xml).unwrap();
        assert_eq!(r.id, "_lr1");
        assert_eq!(r.issuer, "https://idp.example/saml/metadata");
        assert_eq!(r.name_id, "_abc");
        assert_eq!(r.session_indexes, vec!["sess-1".to_string()]);
        assert_eq!(r.destination.as_deref(), Some("https://sp.example/slo"));
        assert_eq!(r.not_on_or_after, Some(400));
        assert!(xml.contains(r#"SPNameQualifier="https://sp.example/md""#), "{xml}");
        assert!(xml.contains(crate::saml::NAMEID_TRANSIENT), "{xml}");
    }

    #[test]
    fn responses_are_checked_against_the_request_and_the_sp() {
        let cfg = SamlConfig::default();
        let now = 1_800_000_000;
        let ours = "https://idp.example/saml/slo";
        let read = |xml: &str| read_logout_response(&encode_query("SAMLResponse", xml, Some("c"), None, |_| vec![]));
        let good = read(&response("_lr1", "https://sp.example/md", STATUS_SUCCESS, now)).unwrap();
        assert!(good.response.is_success());
        assert_eq!(good.message.relay_state.as_deref(), Some("c"));
        check_logout_response(&good, &sp(), ours, "_lr1", &cfg, now).unwrap();
        // A wrong InResponseTo, another issuer, a stale one, a wrong destination.
        assert!(check_logout_response(&good, &sp(), ours, "_other", &cfg, now).is_err());
        let other = read(&response("_lr1", "https://evil.example/md", STATUS_SUCCESS, now)).unwrap();
        assert!(check_logout_response(&other, &sp(), ours, "_lr1", &cfg, now).is_err());
        let stale = read(&response("_lr1", "https://sp.example/md", STATUS_SUCCESS, now - 3600)).unwrap();
        assert!(matches!(check_logout_response(&stale, &sp(), ours, "_lr1", &cfg, now), Err(RequestError::Stale(_))));
        assert!(check_logout_response(&good, &sp(), "https://idp.example/other", "_lr1", &cfg, now).is_err());
        // An SP that must sign: the unsigned response is refused; a bad signature too.
        let mut signed_sp = sp();
        signed_sp.requests_signed = true;
        assert_eq!(check_logout_response(&good, &signed_sp, ours, "_lr1", &cfg, now), Err(RequestError::Unsigned));
        // An error status parses and is not success.
        let failed = read(&response("_lr1", "https://sp.example/md", STATUS_RESPONDER, now)).unwrap();
        assert!(!failed.response.is_success());
        // Malformed ones.
        for bad in [
            "<x/>".to_string(),
            response("_lr1", "https://sp.example/md", STATUS_SUCCESS, now).replace("<samlp:Status>", "<samlp:Statu>"),
            response("_lr1", "https://sp.example/md", "", now),
        ] {
            assert!(read(&bad).is_err(), "{bad}");
        }
    }
}
