//! Unit tests without an HSM: canonicalization vectors, signing with a software key,
//! document contents, redirect-binding decoding and its failure modes.

use std::collections::BTreeMap;
use std::time::Duration;

use p256::ecdsa::SigningKey;
use p256::ecdsa::signature::Signer;

use super::c14n::{self, Options, Selection, XmlError, canonicalize_document};
use super::config::{Claim, SamlConfig, SamlSpConfig, SignatureAlgorithm};
use super::dsig;
use super::redirect::{self, RequestError, encode_query};
use super::response::{ClaimValue, ResponseParams, assertion_xml};
use super::xml::parse;
use super::{SAML_NS, SAMLP_NS, saml_time};
use crate::trust::testkit::{TestCa, TestKey, rsa2048};

fn c14n_str(xml: &str) -> String {
    String::from_utf8(canonicalize_document(xml).unwrap()).unwrap()
}

fn c14n_id(xml: &str, id: &str) -> String {
    String::from_utf8(c14n::canonicalize_enveloped(xml, id).unwrap()).unwrap()
}

#[test]
fn c14n_orders_namespaces_and_attributes() {
    let got = c14n_str(r#"<a:e xmlns:b="http://b" xmlns:a="http://a" b:attr="1" z="2" a:attr="3" attr="4"/>"#);
    assert_eq!(got, r#"<a:e xmlns:a="http://a" xmlns:b="http://b" attr="4" z="2" a:attr="3" b:attr="1"></a:e>"#);
}

#[test]
fn c14n_drops_unused_and_repeated_namespaces() {
    let got = c14n_str(
        r#"<r xmlns="http://d" xmlns:u="http://unused"><c xmlns="http://d"><x:y xmlns:x="http://x"/></c></r>"#,
    );
    assert_eq!(got, r#"<r xmlns="http://d"><c><x:y xmlns:x="http://x"></x:y></c></r>"#);
}

#[test]
fn c14n_undeclares_default_namespace_only_when_needed() {
    assert_eq!(
        c14n_str(r#"<r xmlns="http://d"><c xmlns=""><e/></c></r>"#),
        r#"<r xmlns="http://d"><c xmlns=""><e></e></c></r>"#
    );
    assert_eq!(c14n_str(r#"<r xmlns=""><e/></r>"#), "<r><e></e></r>");
}

#[test]
fn c14n_escapes_text_and_attributes() {
    let got = c14n_str("<r a=\"&lt;&amp;&quot;&#9;&#10;&#13;'>\" b=\"x&#x20;y\">t&amp;&lt;&gt;&#13;\"'</r>");
    assert_eq!(got, "<r a=\"&lt;&amp;&quot;&#x9;&#xA;&#xD;'>\" b=\"x y\">t&amp;&lt;&gt;&#xD;\"'</r>");
}

#[test]
fn c14n_normalizes_line_ends_and_attribute_whitespace() {
    let got = c14n_str("<r a=\"x\ty\nz\r\nw\">1\r\n2\r3</r>");
    assert_eq!(got, "<r a=\"x y z w\">1\n2\n3</r>");
}

#[test]
fn c14n_cdata_pi_comments() {
    let got = c14n_str(
        "<?xml version=\"1.0\"?>\n<?pi  data ?>\n<!-- c --><r><!--x--><?p2?><![CDATA[<&>]]></r>\n<!-- after --><?end?>",
    );
    assert_eq!(got, "<?pi data ?>\n<r><?p2?>&lt;&amp;&gt;</r>\n<?end?>");
}

#[test]
fn c14n_subset_renders_ancestor_namespaces_it_uses() {
    let doc = r#"<p:root xmlns:p="http://p" xmlns:q="http://q" xmlns="http://d" xml:lang="en"><p:x ID="i1" q:a="1"><y>t</y></p:x></p:root>"#;
    assert_eq!(
        c14n_id(doc, "i1"),
        r#"<p:x xmlns:p="http://p" xmlns:q="http://q" ID="i1" q:a="1"><y xmlns="http://d">t</y></p:x>"#
    );
}

#[test]
fn c14n_enveloped_signature_removed_only_at_apex() {
    let doc = r#"<a ID="z"><i>I<ds:Signature xmlns:ds="http://www.w3.org/2000/09/xmldsig#">inner</ds:Signature></i><ds:Signature xmlns:ds="http://www.w3.org/2000/09/xmldsig#"><ds:X/></ds:Signature><b/></a>"#;
    assert_eq!(
        c14n_id(doc, "z"),
        r#"<a ID="z"><i>I<ds:Signature xmlns:ds="http://www.w3.org/2000/09/xmldsig#">inner</ds:Signature></i><b></b></a>"#
    );
}

#[test]
fn c14n_inclusive_prefix_list() {
    let got = c14n::canonicalize(
        r#"<r xmlns:k="http://k" xmlns:m="http://m"><e/></r>"#,
        &Options { selection: Selection::Document, enveloped: false, inclusive_prefixes: &["k"] },
    )
    .unwrap();
    assert_eq!(String::from_utf8(got).unwrap(), r#"<r xmlns:k="http://k"><e></e></r>"#);
}

#[test]
fn c14n_refuses_bad_documents() {
    let bad = [
        r#"<!DOCTYPE r [<!ENTITY a "aaaa">]><r>&a;</r>"#,
        "<r>&unknown;</r>",
        "<x:r/>",
        "<r a=\"1\" a=\"2\"/>",
        "<r><a></b></r>",
        "<r>",
        "",
        "text",
        "<r/><r/>",
        "<r>&#0;</r>",
        "<r>&#xD800;</r>",
        "<r xmlns:p=\"\"/>",
    ];
    for b in bad {
        assert!(canonicalize_document(b).is_err(), "accepted {b:?}");
    }
    assert_eq!(c14n::canonicalize_enveloped("<r ID=\"a\"><x ID=\"a\"/></r>", "a"), Err(XmlError::Ambiguous));
    assert_eq!(c14n::canonicalize_enveloped("<r ID=\"a\"/>", "b"), Err(XmlError::NotFound));
}

fn raw_sign(key: &SigningKey, msg: &[u8]) -> [u8; 64] {
    let sig: p256::ecdsa::Signature = key.sign(msg);
    sig.to_bytes().into()
}

#[test]
fn dsig_prepare_finish_verify_with_software_key() {
    let key = SigningKey::random(&mut rand_core::OsRng);
    let doc = format!(
        r#"<samlp:Response xmlns:samlp="{SAMLP_NS}" xmlns:saml="{SAML_NS}" xmlns:unused="http://u" ID="_r"><saml:Issuer>i</saml:Issuer><saml:Assertion ID="_a"><saml:Issuer>i</saml:Issuer><saml:Subject>a &amp; b &lt; c</saml:Subject></saml:Assertion></samlp:Response>"#
    );
    let prepared = dsig::prepare(&doc, "_a", b"not really a certificate", SignatureAlgorithm::EcdsaSha256).unwrap();
    let si = String::from_utf8(prepared.signed_info().to_vec()).unwrap();
    assert!(si.starts_with(r#"<ds:SignedInfo xmlns:ds="http://www.w3.org/2000/09/xmldsig#">"#));
    let sig = raw_sign(&key, prepared.signed_info());
    let signed = prepared.finish(&sig);
    // Signature right after the assertion's Issuer.
    assert!(signed.contains("<saml:Issuer>i</saml:Issuer><ds:Signature"));
    assert!(dsig::verify_enveloped(&signed, "_a", key.verifying_key()).unwrap());
    // Digest unchanged by the signature itself; tampering breaks it.
    let tampered = signed.replace("a &amp; b", "a &amp; B");
    assert!(!dsig::verify_enveloped(&tampered, "_a", key.verifying_key()).unwrap());
    // Then the response around it.
    let p2 = dsig::prepare(&signed, "_r", b"cert", SignatureAlgorithm::EcdsaSha256).unwrap();
    let sig2 = raw_sign(&key, p2.signed_info());
    let both = p2.finish(&sig2);
    assert!(dsig::verify_enveloped(&both, "_r", key.verifying_key()).unwrap());
    assert!(dsig::verify_enveloped(&both, "_a", key.verifying_key()).unwrap());
}

#[test]
fn dsig_requires_issuer_first() {
    let doc = r#"<r ID="x"><other/></r>"#;
    assert!(dsig::prepare(doc, "x", b"c", SignatureAlgorithm::EcdsaSha256).is_err());
}

fn sp() -> SamlSpConfig {
    SamlSpConfig {
        entity_id: "https://sp.example/metadata".into(),
        acs_url: "https://sp.example/acs".into(),
        slo_url: Some("https://sp.example/slo".into()),
        attribute_names: BTreeMap::from([(Claim::GivenName, "urn:oid:2.5.4.42".to_string())]),
        requests_signed: false,
        certificate_pem: None,
        sign_response: false,
        default_scopes: vec!["name".into()],
        signature_algorithm: Default::default(),
        name_id_format: Default::default(),
        attribute_name_format: Default::default(),
    }
}

#[test]
fn assertion_has_the_required_elements() {
    let sp = sp();
    let claims = vec![
        (Claim::FamilyName, ClaimValue::Text("O'Brien & <Sons>\r\n".into())),
        (Claim::GivenName, ClaimValue::Text("Jane".into())),
        (Claim::AgeOver18, ClaimValue::Bool(true)),
    ];
    let p = ResponseParams {
        issuer: "https://idp.example/",
        sp: &sp,
        in_response_to: Some("_req1"),
        name_id: "token-123",
        name_id_format: super::NameIdFormat::Persistent,
        session_index: "sess",
        authn_instant: 1_800_000_000,
        now: 1_800_000_010,
        lifetime: Duration::from_secs(300),
        clock_skew: Duration::from_secs(60),
        session_not_on_or_after: Some(1_800_028_810),
        claims: &claims,
    };
    let (xml, id) = assertion_xml(&p);
    let a = parse(&xml).unwrap();
    assert!(a.is(SAML_NS, "Assertion"));
    assert_eq!(a.attr("ID"), Some(id.as_str()));
    assert!(id.starts_with('_') && id.len() == 33);
    assert_eq!(a.child(SAML_NS, "Issuer").unwrap().text, "https://idp.example/saml/metadata");
    let subject = a.child(SAML_NS, "Subject").unwrap();
    let nameid = subject.child(SAML_NS, "NameID").unwrap();
    assert_eq!(nameid.text, "token-123");
    assert_eq!(nameid.attr("Format"), Some(super::NAMEID_PERSISTENT));
    let scd = subject.child(SAML_NS, "SubjectConfirmation").unwrap().child(SAML_NS, "SubjectConfirmationData").unwrap();
    assert_eq!(scd.attr("InResponseTo"), Some("_req1"));
    assert_eq!(scd.attr("Recipient"), Some("https://sp.example/acs"));
    assert_eq!(scd.attr("NotOnOrAfter"), Some("2027-01-15T08:05:10Z"));
    let cond = a.child(SAML_NS, "Conditions").unwrap();
    assert_eq!(cond.attr("NotBefore"), Some("2027-01-15T07:59:10Z"));
    let mut aud = Vec::new();
    cond.descendants(SAML_NS, "Audience", &mut aud);
    assert_eq!(aud[0].text, "https://sp.example/metadata");
    let authn = a.child(SAML_NS, "AuthnStatement").unwrap();
    assert_eq!(authn.attr("AuthnInstant"), Some("2027-01-15T08:00:00Z"));
    assert_eq!(authn.attr("SessionIndex"), Some("sess"));
    assert_eq!(authn.attr("SessionNotOnOrAfter"), Some(saml_time(1_800_028_810).as_str()));
    let attrs: Vec<_> = a
        .child(SAML_NS, "AttributeStatement")
        .unwrap()
        .children_named(SAML_NS, "Attribute")
        .map(|at| (at.attr("Name").unwrap().to_string(), at.child(SAML_NS, "AttributeValue").unwrap().text.clone()))
        .collect();
    assert_eq!(
        attrs,
        vec![
            ("urn:oid:2.5.4.42".to_string(), "Jane".to_string()),
            ("family_name".to_string(), "O'Brien & <Sons>\r\n".to_string()),
            ("age_over_18".to_string(), "true".to_string()),
        ]
    );
}

#[test]
fn config_parses_and_denies_unknown_fields() {
    let good: SamlSpConfig = serde_json::from_value(serde_json::json!({
        "entity_id": "https://sp", "acs_url": "https://sp/acs",
        "attribute_names": {"given_name": "urn:oid:2.5.4.42", "age_over_18": "over18"}
    }))
    .unwrap();
    good.validate().unwrap();
    assert_eq!(good.attribute_name(Claim::AgeOver18).name, "over18");
    assert_eq!(good.attribute_name(Claim::Nationality).name, "nationality");
    assert!(
        serde_json::from_value::<SamlSpConfig>(serde_json::json!({
            "entity_id": "https://sp", "acs_url": "https://sp/acs", "extra": 1
        }))
        .is_err()
    );
    assert!(
        serde_json::from_value::<SamlSpConfig>(serde_json::json!({
            "entity_id": "https://sp", "acs_url": "https://sp/acs",
            "attribute_names": {"shoe_size": "x"}
        }))
        .is_err()
    );
    let mut s = sp();
    s.requests_signed = true;
    assert!(s.validate().is_err());
    s.acs_url = "javascript:alert(1)".into();
    assert!(s.validate().is_err());
    let cfg: SamlConfig = serde_json::from_value(serde_json::json!({
        "enabled": true, "assertion_lifetime": "2m"
    }))
    .unwrap();
    assert_eq!(cfg.assertion_lifetime, Duration::from_secs(120));
    assert_eq!(cfg.subject_cn("https://idp.example:8443/x"), "idp.example");
}

const NOW: i64 = 1_800_000_000;

fn authn_xml(id: &str, issuer: &str, extra: &str) -> String {
    format!(
        r#"<samlp:AuthnRequest xmlns:samlp="{SAMLP_NS}" xmlns:saml="{SAML_NS}" ID="{id}" Version="2.0" IssueInstant="2027-01-15T08:00:00Z" Destination="https://idp.example/saml/sso" AssertionConsumerServiceURL="https://sp.example/acs" ProtocolBinding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST"{extra}><saml:Issuer>{issuer}</saml:Issuer><samlp:NameIDPolicy Format="urn:oasis:names:tc:SAML:2.0:nameid-format:persistent" AllowCreate="true"/></samlp:AuthnRequest>"#
    )
}

fn receive(query: &str, sps: &[SamlSpConfig]) -> Result<(), RequestError> {
    redirect::receive_authn_request(query, sps, "https://idp.example/saml/sso", &SamlConfig::default(), NOW).map(|_| ())
}

#[test]
fn redirect_unsigned_request_round_trip() {
    let xml = authn_xml("_abc", "https://sp.example/metadata", "");
    let q = encode_query("SAMLRequest", &xml, Some("relay 1/2&3"), None, |_| vec![]);
    let sps = vec![sp()];
    let got =
        redirect::receive_authn_request(&q, &sps, "https://idp.example/saml/sso", &SamlConfig::default(), NOW).unwrap();
    assert_eq!(got.request.id, "_abc");
    assert_eq!(got.request.acs_url.as_deref(), Some("https://sp.example/acs"));
    assert_eq!(got.relay_state.as_deref(), Some("relay 1/2&3"));
    assert_eq!(got.sp.entity_id, "https://sp.example/metadata");
}

fn signed_sp(ca: &TestCa) -> SamlSpConfig {
    let mut s = sp();
    s.requests_signed = true;
    s.certificate_pem = Some(crate::trust::testkit::pem("CERTIFICATE", &ca.der));
    s.validate().unwrap();
    s
}

#[test]
fn certificate_pem_paths_must_be_small_regular_files() {
    let ca = TestCa::new(TestKey::Rsa(rsa2048()), "CN=sp file");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sp.pem");
    std::fs::write(&file, crate::trust::testkit::pem("CERTIFICATE", &ca.der)).unwrap();
    let mut s = sp();
    s.requests_signed = true;
    s.certificate_pem = Some(file.display().to_string());
    assert_eq!(s.certificate_der().unwrap().unwrap(), ca.der, "a certificate file is read");
    // /dev/zero was read until memory ran out; a FIFO blocked start-up for ever.
    let fifo = dir.path().join("fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
    let big = dir.path().join("big.pem");
    std::fs::write(&big, vec![b'A'; crate::files::MAX_PEM_BYTES as usize + 1]).unwrap();
    for (path, why) in [
        ("/dev/zero".to_string(), "is not a regular file"),
        (fifo.display().to_string(), "is not a regular file"),
        (dir.path().display().to_string(), "is not a regular file"),
        (big.display().to_string(), "is larger than"),
    ] {
        s.certificate_pem = Some(path.clone());
        let err = s.validate().unwrap_err();
        assert!(err.starts_with("certificate_pem: ") && err.contains(why), "{path}: {err}");
    }
}

#[test]
fn redirect_signatures_rsa_and_ecdsa() {
    let xml = authn_xml("_abc", "https://sp.example/metadata", "");
    let rsa_ca = TestCa::new(TestKey::Rsa(rsa2048()), "CN=sp rsa");
    let ec_key = SigningKey::random(&mut rand_core::OsRng);
    let ec_ca = TestCa::new(TestKey::P256(ec_key.clone()), "CN=sp ec");
    for (ca, alg) in [(&rsa_ca, dsig::ALG_RSA_SHA256), (&ec_ca, dsig::ALG_ECDSA_SHA256)] {
        let sps = vec![signed_sp(ca)];
        let q = encode_query("SAMLRequest", &xml, Some("rs"), Some(alg), |m| {
            let s = ca.key.sign(m);
            if alg == dsig::ALG_ECDSA_SHA256 {
                // XML-DSig 1.1 form: raw r||s.
                p256::ecdsa::Signature::from_der(&s).unwrap().to_bytes().to_vec()
            } else {
                s
            }
        });
        receive(&q, &sps).unwrap();
        // The DER form of an ECDSA signature is accepted too.
        if alg == dsig::ALG_ECDSA_SHA256 {
            let q2 = encode_query("SAMLRequest", &xml, Some("rs"), Some(alg), |m| ca.key.sign(m));
            receive(&q2, &sps).unwrap();
        }
        // Changing any signed byte breaks it.
        let tampered = q.replace("RelayState=rs", "RelayState=rt");
        assert_eq!(receive(&tampered, &sps), Err(RequestError::BadSignature));
        // Unsigned when required.
        let unsigned = encode_query("SAMLRequest", &xml, None, None, |_| vec![]);
        assert_eq!(receive(&unsigned, &sps), Err(RequestError::Unsigned));
        // Signed by someone else.
        let other = encode_query("SAMLRequest", &xml, None, Some(alg), |m| {
            TestKey::P256(SigningKey::random(&mut rand_core::OsRng)).sign(m)
        });
        assert!(receive(&other, &sps).is_err());
    }
    // SHA-1 and unknown algorithms are refused.
    let sps = vec![signed_sp(&rsa_ca)];
    let q = encode_query("SAMLRequest", &xml, None, Some("http://www.w3.org/2000/09/xmldsig#rsa-sha1"), |m| {
        rsa_ca.key.sign(m)
    });
    assert!(matches!(receive(&q, &sps), Err(RequestError::UnsupportedSigAlg(_))));
}

#[test]
fn redirect_refuses_bad_requests() {
    let sps = vec![sp()];
    let good = authn_xml("_abc", "https://sp.example/metadata", "");
    let q = |xml: &str| encode_query("SAMLRequest", xml, None, None, |_| vec![]);
    let cases: Vec<(String, &str)> = vec![
        ("SAMLRequest=%%%".into(), "bad percent"),
        ("SAMLRequest=!!!!".into(), "bad base64"),
        ("SAMLRequest=AAAAAAAA".into(), "bad deflate"),
        ("RelayState=x".into(), "missing"),
        (format!("{}&{}", q(&good), q(&good)), "duplicate"),
        (q("<samlp:AuthnRequest"), "malformed XML"),
        (q("not xml at all"), "not xml"),
        (q(&good.replace("ID=\"_abc\" ", "")), "no ID"),
        (q(&good.replace("_abc", "1abc")), "bad ID"),
        (q(&good.replace("Version=\"2.0\"", "Version=\"1.1\"")), "version"),
        (q(&good.replace("2027-01-15T08:00:00Z", "yesterday")), "bad instant"),
        (q(&good.replace("2027-01-15T08:00:00Z", "2027-01-15T07:00:00Z")), "stale"),
        (q(&good.replace("2027-01-15T08:00:00Z", "2027-01-15T08:30:00Z")), "future"),
        (q(&good.replace("https://sp.example/acs", "https://evil.example/acs")), "acs"),
        (q(&good.replace("https://idp.example/saml/sso", "https://other/sso")), "destination"),
        (q(&authn_xml("_abc", "https://unknown.example", "")), "unknown sp"),
        (q(&authn_xml("_abc", "", "")), "empty issuer"),
        (q(&good.replace("<saml:Issuer>https://sp.example/metadata</saml:Issuer>", "")), "no issuer"),
        (q(&good.replace("HTTP-POST", "HTTP-Artifact")), "binding"),
        (q(&authn_xml("_abc", "https://sp.example/metadata", " Evil=\"1\"")), "unknown attr"),
        (q(&good.replace("AuthnRequest", "LogoutRequest")), "wrong type"),
        (q(&good.replace(SAMLP_NS, "urn:evil")), "wrong namespace"),
        (
            q(&format!(
                "<!DOCTYPE lolz [<!ENTITY lol \"lol\"><!ENTITY lol2 \"&lol;&lol;\">]>{}",
                good.replace("_abc", "&lol2;")
            )),
            "doctype",
        ),
        (
            q(&good.replace(
                "</samlp:AuthnRequest>",
                "<ds:Signature xmlns:ds=\"http://www.w3.org/2000/09/xmldsig#\"/></samlp:AuthnRequest>",
            )),
            "embedded signature",
        ),
        (q(&format!("{}{}", "<a>".repeat(100), "</a>".repeat(100))), "deep"),
        (encode_query("SAMLRequest", &good, Some(&"r".repeat(81)), None, |_| vec![]), "relay too long"),
        (format!("{}&Signature=AAAA", q(&good)), "signature without SigAlg"),
    ];
    for (query, what) in cases {
        assert!(receive(&query, &sps).is_err(), "accepted: {what}");
    }
    // Oversized inflate: 1 MiB of zeros deflates to ~1 KiB.
    let big = vec![b' '; 1024 * 1024];
    let mut doc = good.clone().into_bytes();
    doc.extend_from_slice(&big);
    let q = encode_query("SAMLRequest", std::str::from_utf8(&doc).unwrap(), None, None, |_| vec![]);
    assert!(q.len() < 8 * 1024);
    assert_eq!(receive(&q, &sps), Err(RequestError::TooLarge));
}

/// Deterministic pseudo-random bytes (xorshift), for fuzz-ish inputs.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[test]
fn redirect_never_panics_on_garbage() {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    let sps = vec![sp()];
    let good = authn_xml("_abc", "https://sp.example/metadata", "");
    let deflated = redirect::deflate(good.as_bytes());
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for i in 0..3000 {
        let query = match i % 4 {
            // Random bytes as the deflate stream.
            0 => {
                let n = rng.below(200);
                let bytes: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
                encode_query_raw(&b64.encode(bytes))
            }
            // A valid stream, truncated or with one byte flipped.
            1 => {
                let mut d = deflated.clone();
                let at = rng.below(d.len());
                if rng.next().is_multiple_of(2) {
                    d.truncate(at);
                } else {
                    d[at] ^= 1 << rng.below(8);
                }
                encode_query_raw(&b64.encode(d))
            }
            // Valid deflate of mutated XML.
            2 => {
                let mut x = good.clone().into_bytes();
                for _ in 0..1 + rng.below(4) {
                    let at = rng.below(x.len());
                    x[at] = b"<>&\"'=:/ ax\x00\xff"[rng.below(13)];
                }
                encode_query_raw(&b64.encode(redirect::deflate(&x)))
            }
            // Random query syntax.
            _ => {
                let n = rng.below(120);
                (0..n).map(|_| b"SAMLRequest=&%+RelaySigAlg0aZ/\xc3\xa9"[rng.below(31)] as char).collect()
            }
        };
        let _ = receive(&query, &sps);
        let _ =
            redirect::receive_logout_request(&query, &sps, "https://idp.example/saml/slo", &SamlConfig::default(), NOW);
    }
}

fn encode_query_raw(b64_value: &str) -> String {
    format!("SAMLRequest={}", percent_encoding::utf8_percent_encode(b64_value, percent_encoding::NON_ALPHANUMERIC))
}

#[test]
fn logout_request_parses_and_checks() {
    let xml = format!(
        r#"<samlp:LogoutRequest xmlns:samlp="{SAMLP_NS}" xmlns:saml="{SAML_NS}" ID="_lo1" Version="2.0" IssueInstant="2027-01-15T08:00:00Z" Destination="https://idp.example/saml/slo"><saml:Issuer>https://sp.example/metadata</saml:Issuer><saml:NameID Format="urn:oasis:names:tc:SAML:2.0:nameid-format:persistent">tok</saml:NameID><samlp:SessionIndex>s1</samlp:SessionIndex><samlp:SessionIndex>s2</samlp:SessionIndex></samlp:LogoutRequest>"#
    );
    let sps = vec![sp()];
    let q = encode_query("SAMLRequest", &xml, Some("rs"), None, |_| vec![]);
    let got = redirect::receive_logout_request(&q, &sps, "https://idp.example/saml/slo", &SamlConfig::default(), NOW)
        .unwrap();
    assert_eq!(got.request.name_id, "tok");
    assert_eq!(got.request.session_indexes, vec!["s1", "s2"]);
    assert_eq!(got.slo_url, "https://sp.example/slo");
    let no_nameid = xml
        .replace(r#"<saml:NameID Format="urn:oasis:names:tc:SAML:2.0:nameid-format:persistent">tok</saml:NameID>"#, "");
    assert!(redirect::parse_logout_request(&no_nameid).is_err());
    let mut no_slo = sp();
    no_slo.slo_url = None;
    assert!(
        redirect::receive_logout_request(&q, &[no_slo], "https://idp.example/saml/slo", &SamlConfig::default(), NOW)
            .is_err()
    );
    let resp = redirect::logout_response_xml(
        "https://idp.example",
        "https://sp.example/slo",
        "_lo1",
        super::STATUS_SUCCESS,
        NOW,
    );
    let r = parse(&resp).unwrap();
    assert!(r.is(SAMLP_NS, "LogoutResponse"));
    assert_eq!(r.attr("InResponseTo"), Some("_lo1"));
}

#[test]
fn metadata_lists_every_certificate() {
    let md = super::metadata::idp_metadata("https://idp.example", &[vec![1, 2], vec![3]], false);
    let root = parse(&md).unwrap();
    assert_eq!(root.attr("entityID"), Some("https://idp.example/saml/metadata"));
    let idp = root.child(super::MD_NS, "IDPSSODescriptor").unwrap();
    assert_eq!(idp.children_named(super::MD_NS, "KeyDescriptor").count(), 2);
    assert_eq!(
        idp.child(super::MD_NS, "SingleSignOnService").unwrap().attr("Location"),
        Some("https://idp.example/saml/sso")
    );
    assert_eq!(
        idp.child(super::MD_NS, "SingleLogoutService").unwrap().attr("Location"),
        Some("https://idp.example/saml/slo")
    );
}

#[test]
fn inflate_cap_and_round_trip() {
    let data = b"hello hello hello".repeat(100);
    let d = redirect::deflate(&data);
    assert_eq!(redirect::inflate(&d, 64 * 1024).unwrap(), data);
    assert_eq!(redirect::inflate(&d, 100), Err(RequestError::TooLarge));
    assert_eq!(redirect::inflate(b"\xff\xff\xff", 100), Err(RequestError::Deflate));
}

#[test]
fn config_reads_from_toml() {
    use figment::Figment;
    use figment::providers::{Format, Toml};
    #[derive(serde::Deserialize)]
    struct Wrapper {
        saml: SamlConfig,
        services: Vec<Service>,
    }
    #[derive(serde::Deserialize)]
    struct Service {
        #[allow(dead_code)]
        id: String,
        saml: Option<SamlSpConfig>,
    }
    let toml = r#"
[saml]
enabled = true
certificate_subject = "idp.example.com"
certificate_validity = "5years"
assertion_lifetime = "5m"

[[services]]
id = "wiki"

[services.saml]
entity_id = "https://wiki.example.com/saml/metadata"
acs_url = "https://wiki.example.com/saml/acs"
slo_url = "https://wiki.example.com/saml/slo"
sign_response = true
default_scopes = ["name", "age"]

[services.saml.attribute_names]
given_name = "urn:oid:2.5.4.42"
age_over_18 = "over18"
"#;
    let w: Wrapper = Figment::from(Toml::string(toml)).extract().unwrap();
    assert!(w.saml.enabled);
    assert_eq!(w.saml.certificate_validity.as_secs(), 157_788_000);
    let sp = w.services[0].saml.clone().unwrap();
    sp.validate().unwrap();
    assert_eq!(sp.attribute_name(Claim::AgeOver18).name, "over18");
    let given = sp.attribute_name(Claim::GivenName);
    assert_eq!(
        (given.name, given.format, given.friendly),
        ("urn:oid:2.5.4.42", "urn:oasis:names:tc:SAML:2.0:attrname-format:uri", "given_name")
    );
}

#[test]
fn saml_times() {
    use super::{parse_saml_time, saml_time};
    assert_eq!(saml_time(NOW), "2027-01-15T08:00:00Z");
    for s in ["2027-01-15T08:00:00Z", "2027-01-15T08:00:00.123Z", "2027-01-15T08:00:00", "2027-01-15T10:00:00+02:00"] {
        assert_eq!(parse_saml_time(s), Some(NOW), "{s}");
    }
    for s in ["", "2027-01-15", "yesterday", "2027-13-15T08:00:00Z", "\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}"] {
        assert_eq!(parse_saml_time(s), None, "{s}");
    }
}

// ------------------------------------------- NameID formats, attribute names, async SLO

fn authn_with_policy(id: &str, policy: &str) -> String {
    authn_xml(id, "https://sp.example/metadata", "").replace(
        r#"<samlp:NameIDPolicy Format="urn:oasis:names:tc:SAML:2.0:nameid-format:persistent" AllowCreate="true"/>"#,
        policy,
    )
}

#[test]
fn name_id_policy_picks_the_format_or_marks_it_unsupported() {
    use super::NameIdFormat::{Persistent, Transient};
    let transient_sp = SamlSpConfig { name_id_format: Transient, ..sp() };
    let cases: [(&str, &SamlSpConfig, Result<super::NameIdFormat, String>); 7] = [
        (r#"<samlp:NameIDPolicy Format="urn:oasis:names:tc:SAML:2.0:nameid-format:transient"/>"#, &sp(), Ok(Transient)),
        (
            r#"<samlp:NameIDPolicy Format="urn:oasis:names:tc:SAML:2.0:nameid-format:persistent"/>"#,
            &transient_sp,
            Ok(Persistent),
        ),
        // Unspecified or no policy: the SP's configured default.
        (
            r#"<samlp:NameIDPolicy Format="urn:oasis:names:tc:SAML:1.1:nameid-format:unspecified"/>"#,
            &sp(),
            Ok(Persistent),
        ),
        (r#"<samlp:NameIDPolicy AllowCreate="true"/>"#, &transient_sp, Ok(Transient)),
        ("", &sp(), Ok(Persistent)),
        ("", &transient_sp, Ok(Transient)),
        (
            r#"<samlp:NameIDPolicy Format="urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress"/>"#,
            &sp(),
            Err("urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress".into()),
        ),
    ];
    for (i, (policy, sp, want)) in cases.into_iter().enumerate() {
        let q = encode_query("SAMLRequest", &authn_with_policy(&format!("_n{i}"), policy), None, None, |_| vec![]);
        let sps = vec![sp.clone()];
        let got =
            redirect::receive_authn_request(&q, &sps, "https://idp.example/saml/sso", &SamlConfig::default(), NOW)
                .unwrap();
        assert_eq!(got.name_id_format, want, "case {i}: {policy}");
    }
}

#[test]
fn transient_name_id_is_written_with_its_format() {
    let sp = sp();
    let p = ResponseParams {
        issuer: "https://idp.example",
        sp: &sp,
        in_response_to: None,
        name_id: "_0123",
        name_id_format: super::NameIdFormat::Transient,
        session_index: "s",
        authn_instant: NOW,
        now: NOW,
        lifetime: Duration::from_secs(300),
        clock_skew: Duration::from_secs(60),
        session_not_on_or_after: None,
        claims: &[],
    };
    let (xml, _) = assertion_xml(&p);
    let a = parse(&xml).unwrap();
    let nameid = a.child(SAML_NS, "Subject").unwrap().child(SAML_NS, "NameID").unwrap();
    assert_eq!(nameid.attr("Format"), Some(super::NAMEID_TRANSIENT));
    assert_eq!(nameid.text, "_0123");
}

#[test]
fn uri_attribute_names_use_standard_oids_and_their_value_syntax() {
    let claims = vec![
        (Claim::GivenName, ClaimValue::Text("Jane".into())),
        (Claim::FamilyName, ClaimValue::Text("Doe".into())),
        (Claim::Birthdate, ClaimValue::Text("1990-02-03".into())),
        (Claim::Nationality, ClaimValue::Text("D".into())),
        (Claim::AgeOver18, ClaimValue::Bool(true)),
    ];
    let attrs = |sp: &SamlSpConfig, claims: &[(Claim, ClaimValue)]| -> Vec<(String, String, String, String)> {
        let p = ResponseParams {
            issuer: "https://idp.example",
            sp,
            in_response_to: None,
            name_id: "t",
            name_id_format: super::NameIdFormat::Persistent,
            session_index: "s",
            authn_instant: NOW,
            now: NOW,
            lifetime: Duration::from_secs(300),
            clock_skew: Duration::from_secs(60),
            session_not_on_or_after: None,
            claims,
        };
        let a = parse(&assertion_xml(&p).0).unwrap();
        let mut out = Vec::new();
        a.descendants(SAML_NS, "Attribute", &mut out);
        out.iter()
            .map(|e| {
                let v = e.child(SAML_NS, "AttributeValue").unwrap().text.clone();
                let get = |n: &str| e.attr(n).unwrap().to_string();
                (get("Name"), get("NameFormat").rsplit(':').next().unwrap().to_string(), get("FriendlyName"), v)
            })
            .collect()
    };
    let s = |a: &str, b: &str, c: &str, d: &str| (a.to_string(), b.to_string(), c.to_string(), d.to_string());
    // Default (basic): claim names, values as in identity tokens; given_name renamed by the table.
    let basic = SamlSpConfig { attribute_names: BTreeMap::new(), ..sp() };
    assert_eq!(
        attrs(&basic, &claims),
        vec![
            s("given_name", "basic", "given_name", "Jane"),
            s("family_name", "basic", "family_name", "Doe"),
            s("birthdate", "basic", "birthdate", "1990-02-03"),
            s("age_over_18", "basic", "age_over_18", "true"),
            s("nationality", "basic", "nationality", "D"),
        ]
    );
    // uri: the OIDs where a standard attribute exists, schacDateOfBirth as YYYYMMDD.
    let uri = SamlSpConfig { attribute_name_format: super::AttributeNameFormat::Uri, ..basic.clone() };
    assert_eq!(
        attrs(&uri, &claims),
        vec![
            s("urn:oid:2.5.4.42", "uri", "givenName", "Jane"),
            s("urn:oid:2.5.4.4", "uri", "sn", "Doe"),
            s("urn:oid:1.3.6.1.4.1.25178.1.2.3", "uri", "schacDateOfBirth", "19900203"),
            s("age_over_18", "basic", "age_over_18", "true"),
            s("nationality", "basic", "nationality", "D"),
        ]
    );
    // A partial birthdate cannot be a schacDateOfBirth: it goes out as `birthdate`.
    let partial = vec![(Claim::Birthdate, ClaimValue::Text("1990-02".into()))];
    assert_eq!(attrs(&uri, &partial), vec![s("birthdate", "basic", "birthdate", "1990-02")]);
    // An attribute_names entry wins over the standard name.
    let mut renamed = uri.clone();
    renamed.attribute_names.insert(Claim::FamilyName, "surname".into());
    assert_eq!(attrs(&renamed, &claims)[1], s("surname", "basic", "family_name", "Doe"));
}

#[test]
fn asynchronous_logout_request_is_recognised() {
    let base = |ext: &str| {
        format!(
            r#"<samlp:LogoutRequest xmlns:samlp="{SAMLP_NS}" xmlns:saml="{SAML_NS}" xmlns:aslo="{ns}" ID="_as" Version="2.0" IssueInstant="2027-01-15T08:00:00Z"><saml:Issuer>https://sp.example/metadata</saml:Issuer>{ext}<saml:NameID Format="urn:oasis:names:tc:SAML:2.0:nameid-format:transient">_t</saml:NameID></samlp:LogoutRequest>"#,
            ns = super::ASYNC_SLO_NS
        )
    };
    let asynchronous =
        redirect::parse_logout_request(&base("<samlp:Extensions><aslo:Asynchronous/></samlp:Extensions>"));
    assert!(asynchronous.unwrap().asynchronous);
    assert!(!redirect::parse_logout_request(&base("")).unwrap().asynchronous);
    // Another extension, or an element of that name in another namespace, is not it.
    let other = base(r#"<samlp:Extensions><x:Asynchronous xmlns:x="urn:other"/></samlp:Extensions>"#);
    assert!(!redirect::parse_logout_request(&other).unwrap().asynchronous);
    // A transient NameID is accepted (SPs log out with the NameID they received).
    let email = base("")
        .replace("nameid-format:transient", "nameid-format:emailAddress")
        .replace("SAML:2.0:nameid-format:emailAddress", "SAML:1.1:nameid-format:emailAddress");
    assert!(redirect::parse_logout_request(&email).is_err());
}
