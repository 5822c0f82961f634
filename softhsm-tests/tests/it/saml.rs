//! SAML against software nobody here wrote: xmllint's exclusive c14n, xmlsec1's
//! XML-DSig verification, openssl's certificate and signature checks, and (when
//! installed) pysaml2 as a service provider. The SAML key lives in a SoftHSM2 token
//! made for each test; tests run one per process (cargo nextest).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use der::{Decode, Encode};
use softhsm_tests::TestToken;
use symbolon::keyring::{KeyPurpose, KeyRing, KeyState};
use symbolon::keys::{HsmPin, KeyKind, SessionPool};
use symbolon::saml::c14n::canonicalize_document;
use symbolon::saml::config::{Claim, SamlConfig, SamlSpConfig, SignatureAlgorithm};
use symbolon::saml::response::{ClaimValue, ResponseParams, build_response};
use symbolon::saml::{
    CertificateParams, SigningCertificate, active_certificate, dsig, ensure_certificate, metadata, redirect,
};
use symbolon::store::DatabaseConfig;
use symbolon::store::{DurableStore, SqliteStore};

const NOW: i64 = 1_800_000_000;
const ISSUER: &str = "https://idp.example";

fn run(cmd: &mut Command) -> (bool, String) {
    let out = cmd.output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

fn pem(der: &[u8]) -> String {
    der::pem::encode_string("CERTIFICATE", der::pem::LineEnding::LF, der).unwrap()
}

struct Idp {
    token: TestToken,
    ring: KeyRing,
    _db: tempfile::TempDir,
}

impl Idp {
    /// Orderly teardown: the pool's workers close their sessions and finalize the
    /// module before the token directory goes and before the process exits (a pool
    /// dropped at exit races SoftHSM2's static destructors: SIGSEGV).
    async fn close(self) {
        let Idp { token, ring, _db } = self;
        drop(ring);
        tokio::time::sleep(Duration::from_millis(300)).await;
        drop(token);
    }
}

async fn idp() -> Idp {
    let token = TestToken::new().unwrap();
    token.use_in_process().unwrap();
    let pool = SessionPool::start(
        symbolon::keys::Module::load(&token.module).unwrap(),
        Some(token.label.clone()),
        None,
        HsmPin::resolve(Some(&token.pin_file)).unwrap(),
        2,
        64,
        Duration::from_secs(10),
    )
    .unwrap();
    let label = KeyPurpose::Saml.new_label(NOW);
    let l = label.clone();
    pool.run(move |s| s.generate(KeyKind::EcP256, &l)).await.unwrap();
    let db = tempfile::tempdir().unwrap();
    let store =
        SqliteStore::open(&format!("sqlite://{}/db", db.path().display()), &DatabaseConfig::default()).await.unwrap();
    store.migrate().await.unwrap();
    let ring = KeyRing::open(pool, Arc::new(store), NOW).await.unwrap();
    assert_eq!(ring.active(KeyPurpose::Saml).unwrap().label, label);
    Idp { token, ring, _db: db }
}

fn params() -> CertificateParams {
    CertificateParams { subject_cn: "idp.example".into(), validity: SamlConfig::default().certificate_validity }
}

fn write(dir: &Path, name: &str, content: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, content).unwrap();
    p
}

fn sp(sign_response: bool) -> SamlSpConfig {
    SamlSpConfig {
        entity_id: "https://sp.example/saml2/metadata".into(),
        acs_url: "https://sp.example/saml2/acs".into(),
        slo_url: Some("https://sp.example/saml2/slo".into()),
        attribute_names: [(Claim::GivenName, "urn:oid:2.5.4.42".to_string())].into_iter().collect(),
        requests_signed: false,
        certificate_pem: None,
        sign_response,
        default_scopes: vec![],
        signature_algorithm: Default::default(),
        name_id_format: Default::default(),
        attribute_name_format: Default::default(),
    }
}

fn claims() -> Vec<(Claim, ClaimValue)> {
    vec![
        (Claim::GivenName, ClaimValue::Text("Zoë \"Jo\" <x> & y".into())),
        (Claim::FamilyName, ClaimValue::Text("Mc\tDonald\r\nthe 2nd".into())),
        (Claim::AgeOver18, ClaimValue::Bool(true)),
        (Claim::Nationality, ClaimValue::Text("D".into())),
    ]
}

async fn response(ring: &KeyRing, cert: &SigningCertificate, sp: &SamlSpConfig, now: i64) -> String {
    let claims = claims();
    build_response(
        ring,
        cert,
        &ResponseParams {
            issuer: ISSUER,
            sp,
            in_response_to: Some("_req123"),
            name_id: "token-abc",
            name_id_format: symbolon::saml::NameIdFormat::Persistent,
            session_index: "session-1",
            authn_instant: now,
            now,
            lifetime: Duration::from_secs(300),
            clock_skew: Duration::from_secs(60),
            session_not_on_or_after: None,
            claims: &claims,
        },
    )
    .await
    .unwrap()
}

fn xmlsec_verify(dir: &Path, cert_pem: &Path, xml: &str, xpath: Option<&str>) -> (bool, String) {
    let file = write(dir, "doc.xml", xml);
    let mut cmd = Command::new("xmlsec1");
    cmd.args(["--verify", "--pubkey-cert-pem"]).arg(cert_pem).args([
        "--id-attr:ID",
        "urn:oasis:names:tc:SAML:2.0:assertion:Assertion",
        "--id-attr:ID",
        "urn:oasis:names:tc:SAML:2.0:protocol:Response",
    ]);
    if let Some(x) = xpath {
        cmd.args(["--node-xpath", x]);
    }
    cmd.arg(&file);
    run(&mut cmd)
}

// ---------------------------------------------------------------- c14n vs xmllint

const C14N_VECTORS: &[&str] = &[
    r#"<a:e xmlns:b="http://b" xmlns:a="http://a" b:attr="1" z="2" a:attr="3" attr="4"/>"#,
    r#"<r xmlns="http://d" xmlns:u="http://unused"><c xmlns="http://d"><x:y xmlns:x="http://x"/></c></r>"#,
    r#"<r xmlns="http://d"><c xmlns=""><e/></c></r>"#,
    "<r a=\"&lt;&amp;&quot;&#9;&#10;&#13;'>\" b=\"x&#x20;y\">t&amp;&lt;&gt;&#13;\"'</r>",
    "<r a=\"x\ty\nz\r\nw\">1\r\n2\r3</r>",
    "<?xml version=\"1.0\"?>\n<?pi  data ?>\n<!-- c --><r><!--x--><?p2?><![CDATA[<&>]]></r>\n<!-- after --><?end?>",
    r#"<p:root xmlns:p="http://p" xmlns:q="http://q" xmlns="http://d" xml:lang="en"><p:x ID="i1" q:a="1" xml:space="preserve"><y>t</y><q:z xmlns:q="http://q2"/></p:x></p:root>"#,
    "<r>\n  <a   x = 'single \"quoted\"' >  spaced  </a >\n</r>",
    "<r>caf\u{e9} \u{1F600} &#x1F600; &#233;</r>",
    r#"<s:Envelope xmlns:s="urn:s"><s:Body xmlns:s="urn:s" xmlns="urn:d"><e xmlns="urn:d"><f xmlns=""/></e></s:Body></s:Envelope>"#,
];

fn strip_comments(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find("<!--") {
        out.push_str(&rest[..i]);
        rest = rest[i..].split_once("-->").map_or("", |(_, r)| r);
    }
    out.push_str(rest);
    out
}

#[test]
fn c14n_matches_xmllint() {
    let dir = tempfile::tempdir().unwrap();
    for (i, v) in C14N_VECTORS.iter().enumerate() {
        // xmllint's --exc-c14n keeps comments: hand it the document without them.
        let f = write(dir.path(), &format!("v{i}.xml"), &strip_comments(v));
        let out = Command::new("xmllint")
            .arg("--exc-c14n")
            .arg(&f)
            .output()
            .expect("xmllint (apt-get install libxml2-utils)");
        assert!(out.status.success(), "xmllint failed on vector {i}");
        let ours = canonicalize_document(v).unwrap();
        assert_eq!(String::from_utf8_lossy(&ours), String::from_utf8_lossy(&out.stdout), "vector {i}: {v}");
    }
}

// ------------------------------------------------- dsig with a software key vs xmlsec1

#[test]
fn enveloped_signatures_on_tricky_documents_verify_with_xmlsec1() {
    let dir = tempfile::tempdir().unwrap();
    let key_pem = dir.path().join("k.pem");
    let cert_pem = dir.path().join("c.pem");
    let (ok, text) = run(Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-subj",
            "/CN=test",
            "-days",
            "2",
            "-keyout",
        ])
        .arg(&key_pem)
        .arg("-out")
        .arg(&cert_pem));
    assert!(ok, "{text}");
    use p256::pkcs8::DecodePrivateKey;
    let key = p256::ecdsa::SigningKey::from_pkcs8_pem(&std::fs::read_to_string(&key_pem).unwrap()).unwrap();
    let cert_der = x509_cert::Certificate::from_der(
        &der::pem::decode_vec(std::fs::read(&cert_pem).unwrap().as_slice()).unwrap().1,
    )
    .unwrap()
    .to_der()
    .unwrap();
    let a = "urn:oasis:names:tc:SAML:2.0:assertion";
    let docs = [
        // Assertion nested under ancestors declaring used, unused and default namespaces.
        format!(
            r#"<wrap xmlns="http://default" xmlns:unused="http://u" xmlns:saml="{a}" xml:lang="de"><saml:Assertion ID="_x1" Version="2.0"><saml:Issuer>idp</saml:Issuer><saml:Subject>a&amp;b &lt;c&gt; "q" &#13;</saml:Subject><plain attr="t&#9;a&#10;b&quot;" b="2" a="1">default ns</plain><saml:Empty/></saml:Assertion></wrap>"#
        ),
        // Prefix redeclared to another URI inside, default undeclared.
        format!(
            r#"<saml:Assertion xmlns:saml="{a}" xmlns:p="http://one" ID="_x2"><saml:Issuer>idp</saml:Issuer><p:e xmlns:p="http://two" p:k="v"><f xmlns="">x</f></p:e></saml:Assertion>"#
        ),
        // Whitespace, comments and CR characters in content.
        format!(
            "<saml:Assertion xmlns:saml=\"{a}\" ID=\"_x3\">\n  <saml:Issuer>idp</saml:Issuer>\n  <!-- comment -->\n  <saml:A>line1\r\nline2</saml:A>\n</saml:Assertion>"
        ),
    ];
    for (i, doc) in docs.iter().enumerate() {
        let id = format!("_x{}", i + 1);
        let prepared = dsig::prepare(doc, &id, &cert_der, SignatureAlgorithm::EcdsaSha256).unwrap();
        let sig: p256::ecdsa::Signature = p256::ecdsa::signature::Signer::sign(&key, prepared.signed_info());
        let signed = prepared.finish(&sig.to_bytes());
        let (ok, text) = xmlsec_verify(dir.path(), &cert_pem, &signed, None);
        assert!(ok, "doc {i} did not verify:\n{text}\n{signed}");
        let tampered = signed.replace(">idp<", ">idq<");
        let (ok, _) = xmlsec_verify(dir.path(), &cert_pem, &tampered, None);
        assert!(!ok, "tampered doc {i} verified");
    }
}

// ------------------------------------------------------------- HSM: certificate

#[tokio::test]
async fn certificate_is_self_signed_in_the_hsm_and_stored_with_the_key_id() {
    let idp = idp().await;
    let dir = tempfile::tempdir().unwrap();
    let label = idp.ring.active(KeyPurpose::Saml).unwrap().label;
    let der = ensure_certificate(&idp.ring, &label, &params(), NOW).await.unwrap();
    // Made once, then read back from the token.
    let again = ensure_certificate(&idp.ring, &label, &params(), NOW + 100).await.unwrap();
    assert_eq!(der, again);
    let cert_pem = write(dir.path(), "cert.pem", &pem(&der));
    let (ok, text) = run(Command::new("openssl")
        .args(["verify", "-attime", &(NOW + 60).to_string(), "-CAfile"])
        .arg(&cert_pem)
        .arg(&cert_pem));
    assert!(ok, "openssl verify: {text}");
    let (ok, text) = run(Command::new("openssl").args(["x509", "-noout", "-text", "-in"]).arg(&cert_pem));
    assert!(ok);
    assert!(text.contains("Subject: CN = idp.example"), "{text}");
    assert!(text.contains("ecdsa-with-SHA256"), "{text}");
    assert!(text.contains("Digital Signature"), "{text}");
    assert!(text.contains("CA:FALSE"), "{text}");
    // Validity: now (less 5 min) to 5 years and a day on.
    let cert = x509_cert::Certificate::from_der(&der).unwrap();
    let v = &cert.tbs_certificate.validity;
    assert_eq!(v.not_before.to_unix_duration().as_secs() as i64, NOW - 300);
    assert_eq!(v.not_after.to_unix_duration().as_secs() as i64, NOW + 1826 * 86_400);
    // The token holds the certificate under the private key's CKA_ID.
    let out = Command::new("pkcs11-tool")
        .env(idp.token.conf_var, &idp.token.conf)
        .arg("--module")
        .arg(&idp.token.module)
        .args(["--token-label", &idp.token.label, "--login", "--pin", &idp.token.pin])
        .arg("--list-objects")
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&out.stdout).to_string();
    let ids = |kind: &str| -> Vec<String> {
        listing
            .split("\n")
            .collect::<Vec<_>>()
            .join("\n")
            .split(kind)
            .skip(1)
            .filter_map(|block| {
                block
                    .lines()
                    .take_while(|l| !l.contains("Object;"))
                    .find_map(|l| l.trim().strip_prefix("ID:").map(|s| s.trim().to_string()))
            })
            .collect()
    };
    let cert_ids = ids("Certificate Object");
    let key_ids = ids("Private Key Object");
    assert_eq!(cert_ids.len(), 1, "{listing}");
    assert_eq!(cert_ids, key_ids, "{listing}");
    idp.close().await;
}

// ------------------------------------------------------ HSM: responses vs xmlsec1

#[tokio::test]
async fn signed_response_verifies_with_xmlsec1_and_tampering_fails() {
    let idp = idp().await;
    let now = symbolon::ids::now_unix();
    let dir = tempfile::tempdir().unwrap();
    let cert = active_certificate(&idp.ring, &params(), SignatureAlgorithm::EcdsaSha256, now).await.unwrap();
    let cert_pem = write(dir.path(), "cert.pem", &pem(&cert.der));
    let sp = sp(false);
    let xml = response(&idp.ring, &cert, &sp, now).await;
    write(dir.path(), "response.xml", &xml);
    let (ok, text) = xmlsec_verify(dir.path(), &cert_pem, &xml, None);
    assert!(ok, "xmlsec1 rejected the response:\n{text}\n{xml}");
    assert!(text.contains("OK"), "{text}");
    for (from, to) in [
        ("token-abc", "token-abd"),
        ("https://sp.example/saml2/metadata</saml:Audience>", "https://evil.example</saml:Audience>"),
        ("true</saml:AttributeValue>", "false</saml:AttributeValue>"),
    ] {
        assert!(xml.contains(from), "{from}");
        let tampered = xml.replacen(from, to, 1);
        let (ok, text) = xmlsec_verify(dir.path(), &cert_pem, &tampered, None);
        assert!(!ok, "tampered ({from}) verified: {text}");
    }
    // A different key's certificate does not verify it.
    let other = idp.ring.generate(KeyPurpose::Saml, now + 1).await.unwrap();
    assert_eq!(other.state, KeyState::Next);
    let other_der = ensure_certificate(&idp.ring, &other.label, &params(), now).await.unwrap();
    let other_pem = write(dir.path(), "other.pem", &pem(&other_der));
    let (ok, _) = xmlsec_verify(dir.path(), &other_pem, &xml, None);
    assert!(!ok);
    idp.close().await;
}

#[tokio::test]
async fn response_signed_too_verifies_both_signatures() {
    let idp = idp().await;
    let now = symbolon::ids::now_unix();
    let dir = tempfile::tempdir().unwrap();
    let cert = active_certificate(&idp.ring, &params(), SignatureAlgorithm::EcdsaSha256, now).await.unwrap();
    let cert_pem = write(dir.path(), "cert.pem", &pem(&cert.der));
    let xml = response(&idp.ring, &cert, &sp(true), now).await;
    let response_sig = "/*[local-name()='Response']/*[local-name()='Signature']";
    let assertion_sig = "//*[local-name()='Assertion']/*[local-name()='Signature']";
    for xpath in [response_sig, assertion_sig] {
        let (ok, text) = xmlsec_verify(dir.path(), &cert_pem, &xml, Some(xpath));
        assert!(ok, "{xpath}: {text}\n{xml}");
    }
    // Tampering with the Response status breaks the Response signature only.
    let tampered = xml.replacen("status:Success", "status:Requester", 1);
    assert!(!xmlsec_verify(dir.path(), &cert_pem, &tampered, Some(response_sig)).0);
    assert!(xmlsec_verify(dir.path(), &cert_pem, &tampered, Some(assertion_sig)).0);
    // Our own self-check agrees.
    let jwk = idp.ring.public_jwk(&cert.label).await.unwrap().to_public_key().unwrap();
    let vk = p256::ecdsa::VerifyingKey::from(jwk);
    let root = symbolon::saml::xml::parse(&xml).unwrap();
    let rid = root.attr("ID").unwrap();
    assert!(dsig::verify_enveloped(&xml, rid, &vk).unwrap());
    idp.close().await;
}

// ---------------------------------------------------------- HSM: metadata, SLO

#[tokio::test]
async fn metadata_lists_active_and_next_certificates() {
    let idp = idp().await;
    let now = symbolon::ids::now_unix();
    let first = active_certificate(&idp.ring, &params(), SignatureAlgorithm::EcdsaSha256, now).await.unwrap();
    let next = idp.ring.generate(KeyPurpose::Saml, now + 1).await.unwrap();
    let md = metadata::idp_metadata_for(&idp.ring, ISSUER, &params(), false, now).await.unwrap();
    let root = symbolon::saml::xml::parse(&md).unwrap();
    assert_eq!(root.attr("entityID"), Some("https://idp.example/saml/metadata"));
    let mut certs = Vec::new();
    root.descendants("http://www.w3.org/2000/09/xmldsig#", "X509Certificate", &mut certs);
    let ders: Vec<Vec<u8>> = certs.iter().map(|c| STANDARD.decode(c.text.as_bytes()).unwrap()).collect();
    assert_eq!(ders.len(), 2);
    assert_eq!(ders[0], first.der, "active first");
    let next_der = ensure_certificate(&idp.ring, &next.label, &params(), now).await.unwrap();
    assert_eq!(ders[1], next_der);
    // xmllint agrees it is well-formed; and the schema-ordered endpoints are there.
    assert!(md.contains("<md:NameIDFormat>urn:oasis:names:tc:SAML:2.0:nameid-format:persistent</md:NameIDFormat>"));
    assert!(md.contains(r#"Location="https://idp.example/saml/sso""#));
    assert!(md.contains(r#"Location="https://idp.example/saml/slo""#));
    idp.close().await;
}

#[tokio::test]
async fn logout_response_redirect_is_signed_by_the_hsm() {
    let idp = idp().await;
    let now = symbolon::ids::now_unix();
    let dir = tempfile::tempdir().unwrap();
    let cert = active_certificate(&idp.ring, &params(), SignatureAlgorithm::EcdsaSha256, now).await.unwrap();
    let sps = vec![sp(false)];
    let req = format!(
        r#"<samlp:LogoutRequest xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol" xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion" ID="_lr1" Version="2.0" IssueInstant="{}"><saml:Issuer>https://sp.example/saml2/metadata</saml:Issuer><saml:NameID>token-abc</saml:NameID></samlp:LogoutRequest>"#,
        symbolon::saml::saml_time(now)
    );
    let q = redirect::encode_query("SAMLRequest", &req, Some("state-1"), None, |_| vec![]);
    let slo = redirect::receive_logout_request(&q, &sps, "https://idp.example/saml/slo", &SamlConfig::default(), now)
        .unwrap();
    let url = redirect::logout_response_redirect(&idp.ring, ISSUER, &slo, now).await.unwrap();
    let (base, query) = url.split_once('?').unwrap();
    assert_eq!(base, "https://sp.example/saml2/slo");
    let msg = redirect::decode(query, "SAMLResponse").unwrap();
    assert_eq!(msg.relay_state.as_deref(), Some("state-1"));
    msg.verify(&cert.der).unwrap();
    assert!(msg.xml.contains(r#"InResponseTo="_lr1""#));
    // openssl agrees: signature over the query up to &Signature, ECDSA-SHA256.
    let (signed, sig) = query.rsplit_once("&Signature=").unwrap();
    let sig = STANDARD.decode(percent_encoding::percent_decode_str(sig).decode_utf8().unwrap().as_bytes()).unwrap();
    let der_sig = p256::ecdsa::Signature::from_slice(&sig).unwrap().to_der();
    let sig_file = dir.path().join("sig.der");
    std::fs::write(&sig_file, der_sig.as_bytes()).unwrap();
    let data_file = write(dir.path(), "data", signed);
    let cert_pem = write(dir.path(), "cert.pem", &pem(&cert.der));
    let (ok, text) = run(Command::new("sh").arg("-c").arg(format!(
        "openssl x509 -in {} -pubkey -noout > {}/pub.pem && openssl dgst -sha256 -verify {}/pub.pem -signature {} {}",
        cert_pem.display(),
        dir.path().display(),
        dir.path().display(),
        sig_file.display(),
        data_file.display()
    )));
    assert!(ok, "{text}");
    // A tampered query does not verify.
    let bad = query.replacen("RelayState=state-1", "RelayState=state-2", 1);
    let msg = redirect::decode(&bad, "SAMLResponse").unwrap();
    assert!(msg.verify(&cert.der).is_err());
    idp.close().await;
}

// ------------------------------------------------------------------ pysaml2

#[tokio::test]
async fn pysaml2_accepts_the_response_and_rejects_a_tampered_one() {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/saml_sp_check.py");
    let Some(python) = softhsm_tests::python::python_or_skip(&["saml2"], "pysaml2 SP") else { return };
    let idp = idp().await;
    let dir = tempfile::tempdir().unwrap();
    let now = symbolon::ids::now_unix();
    let cert = active_certificate(&idp.ring, &params(), SignatureAlgorithm::EcdsaSha256, now).await.unwrap();
    let md = metadata::idp_metadata_for(&idp.ring, ISSUER, &params(), false, now).await.unwrap();
    let md_file = write(dir.path(), "idp.xml", &md);
    for sign_response in [false, true] {
        let xml = response(&idp.ring, &cert, &sp(sign_response), now).await;
        let good = write(dir.path(), "good.xml", &xml);
        let bad = write(dir.path(), "bad.xml", &xml.replacen("token-abc", "token-evil", 1));
        let (ok, text) = run(Command::new(&python).arg(&script).arg(&md_file).arg(&good).arg(&bad).arg(dir.path()));
        eprintln!("pysaml2 (sign_response={sign_response}):\n{text}");
        assert!(ok, "pysaml2 check failed (sign_response={sign_response}):\n{text}");
        assert!(text.contains("ACCEPTED token-abc"), "{text}");
        assert!(text.contains("REJECTED tampered"), "{text}");
    }
    idp.close().await;
}

// ------------------------------------------------- HSM: rsa-sha256 (saml-rsa key)

/// The IdP with an active `saml-rsa` key too, made in the token by the key ring.
async fn idp_with_rsa() -> Idp {
    let idp = idp().await;
    let made = idp.ring.generate(KeyPurpose::SamlRsa, NOW).await.unwrap();
    assert_eq!(made.state, KeyState::Active);
    assert!(made.label.starts_with("symbolon-saml-rsa-"), "{}", made.label);
    idp
}

fn rsa_sp(sign_response: bool) -> SamlSpConfig {
    SamlSpConfig { signature_algorithm: SignatureAlgorithm::RsaSha256, ..sp(sign_response) }
}

#[tokio::test]
async fn rsa_key_is_made_in_the_token_and_its_certificate_self_signed_there() {
    let idp = idp_with_rsa().await;
    let dir = tempfile::tempdir().unwrap();
    let entry = idp.ring.active(KeyPurpose::SamlRsa).unwrap();
    // Sensitive, never extractable, generated in the token (not imported).
    let keys = idp.ring.token_keys();
    let key = keys.iter().find(|k| k.label == entry.label).unwrap();
    assert_eq!((key.class, key.key_type), ("private", "rsa"));
    assert!(key.sensitive && !key.extractable && key.made_in_token(), "{key:?}");
    // The kid is the RFC 7638 thumbprint of the public key, as openssl sees it.
    let public = idp.ring.public_rsa(&entry.label).await.unwrap();
    assert_eq!(public.n.len(), 384, "RSA-3072");
    assert_eq!(entry.kid, public.thumbprint());
    let der = ensure_certificate(&idp.ring, &entry.label, &params(), NOW).await.unwrap();
    assert_eq!(der, ensure_certificate(&idp.ring, &entry.label, &params(), NOW + 5).await.unwrap());
    let cert_pem = write(dir.path(), "cert.pem", &pem(&der));
    let (ok, text) = run(Command::new("openssl")
        .args(["verify", "-attime", &(NOW + 60).to_string(), "-CAfile"])
        .arg(&cert_pem)
        .arg(&cert_pem));
    assert!(ok, "openssl verify: {text}");
    let (ok, text) = run(Command::new("openssl").args(["x509", "-noout", "-text", "-in"]).arg(&cert_pem));
    assert!(ok, "{text}");
    assert!(text.contains("Signature Algorithm: sha256WithRSAEncryption"), "{text}");
    assert!(text.contains("Public-Key: (3072 bit)") && text.contains("Exponent: 65537"), "{text}");
    assert!(text.contains("Subject: CN = idp.example") && text.contains("CA:FALSE"), "{text}");
    // A probe signs with it the way the purpose will (CKM_SHA256_RSA_PKCS).
    idp.ring.probe(&entry).await.unwrap();
    idp.close().await;
}

#[tokio::test]
async fn rsa_signed_response_and_assertion_verify_with_xmlsec1_and_tampering_fails() {
    let idp = idp_with_rsa().await;
    let now = symbolon::ids::now_unix();
    let dir = tempfile::tempdir().unwrap();
    let cert = active_certificate(&idp.ring, &params(), SignatureAlgorithm::RsaSha256, now).await.unwrap();
    assert_eq!(cert.label, idp.ring.active(KeyPurpose::SamlRsa).unwrap().label);
    let cert_pem = write(dir.path(), "cert.pem", &pem(&cert.der));
    let xml = response(&idp.ring, &cert, &rsa_sp(true), now).await;
    assert_eq!(
        xml.matches(r#"<ds:SignatureMethod Algorithm="http://www.w3.org/2001/04/xmldsig-more#rsa-sha256">"#).count(),
        2,
        "{xml}"
    );
    assert!(!xml.contains("ecdsa"), "{xml}");
    let response_sig = "/*[local-name()='Response']/*[local-name()='Signature']";
    let assertion_sig = "//*[local-name()='Assertion']/*[local-name()='Signature']";
    for xpath in [response_sig, assertion_sig] {
        let (ok, text) = xmlsec_verify(dir.path(), &cert_pem, &xml, Some(xpath));
        assert!(ok && text.contains("OK"), "{xpath}: {text}\n{xml}");
    }
    for (from, to) in [("token-abc", "token-abd"), ("true</saml:AttributeValue>", "false</saml:AttributeValue>")] {
        let tampered = xml.replacen(from, to, 1);
        assert_ne!(tampered, xml);
        let (ok, text) = xmlsec_verify(dir.path(), &cert_pem, &tampered, Some(assertion_sig));
        assert!(!ok, "tampered ({from}) verified: {text}");
    }
    // The EC certificate does not verify the RSA signature.
    let ec = active_certificate(&idp.ring, &params(), SignatureAlgorithm::EcdsaSha256, now).await.unwrap();
    let ec_pem = write(dir.path(), "ec.pem", &pem(&ec.der));
    assert!(!xmlsec_verify(dir.path(), &ec_pem, &xml, Some(assertion_sig)).0);
    // An EC SP of the same IdP still gets ECDSA, verified with the EC certificate.
    let ec_xml = response(&idp.ring, &ec, &sp(false), now).await;
    assert!(ec_xml.contains("xmldsig-more#ecdsa-sha256") && !ec_xml.contains("rsa-sha256"));
    let (ok, text) = xmlsec_verify(dir.path(), &ec_pem, &ec_xml, None);
    assert!(ok, "{text}");
    idp.close().await;
}

#[tokio::test]
async fn metadata_carries_the_ec_and_the_rsa_certificates() {
    let idp = idp_with_rsa().await;
    let now = symbolon::ids::now_unix();
    let ec = active_certificate(&idp.ring, &params(), SignatureAlgorithm::EcdsaSha256, now).await.unwrap();
    let rsa = active_certificate(&idp.ring, &params(), SignatureAlgorithm::RsaSha256, now).await.unwrap();
    let md = metadata::idp_metadata_for(&idp.ring, ISSUER, &params(), false, now).await.unwrap();
    assert_eq!(md.matches(r#"<md:KeyDescriptor use="signing">"#).count(), 2, "{md}");
    let root = symbolon::saml::xml::parse(&md).unwrap();
    let mut certs = Vec::new();
    root.descendants("http://www.w3.org/2000/09/xmldsig#", "X509Certificate", &mut certs);
    let ders: Vec<Vec<u8>> = certs.iter().map(|c| STANDARD.decode(c.text.as_bytes()).unwrap()).collect();
    assert_eq!(ders, vec![ec.der.clone(), rsa.der.clone()], "EC first, then RSA");
    // A rotation of saml-rsa publishes the new RSA key beside the old one.
    let next = idp.ring.generate(KeyPurpose::SamlRsa, now + 1).await.unwrap();
    assert_eq!(next.state, KeyState::Next);
    let md = metadata::idp_metadata_for(&idp.ring, ISSUER, &params(), false, now).await.unwrap();
    assert_eq!(md.matches(r#"<md:KeyDescriptor use="signing">"#).count(), 3, "{md}");
    idp.close().await;
}

#[tokio::test]
async fn rsa_logout_response_redirect_verifies_with_openssl() {
    let idp = idp_with_rsa().await;
    let now = symbolon::ids::now_unix();
    let dir = tempfile::tempdir().unwrap();
    let cert = active_certificate(&idp.ring, &params(), SignatureAlgorithm::RsaSha256, now).await.unwrap();
    let sps = vec![rsa_sp(false)];
    let req = format!(
        r#"<samlp:LogoutRequest xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol" xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion" ID="_lr2" Version="2.0" IssueInstant="{}"><saml:Issuer>https://sp.example/saml2/metadata</saml:Issuer><saml:NameID>token-abc</saml:NameID></samlp:LogoutRequest>"#,
        symbolon::saml::saml_time(now)
    );
    let q = redirect::encode_query("SAMLRequest", &req, Some("st"), None, |_| vec![]);
    let slo = redirect::receive_logout_request(&q, &sps, "https://idp.example/saml/slo", &SamlConfig::default(), now)
        .unwrap();
    let url = redirect::logout_response_redirect(&idp.ring, ISSUER, &slo, now).await.unwrap();
    let (_, query) = url.split_once('?').unwrap();
    assert!(query.contains("&SigAlg=http%3A%2F%2Fwww.w3.org%2F2001%2F04%2Fxmldsig-more%23rsa-sha256&"), "{query}");
    let msg = redirect::decode(query, "SAMLResponse").unwrap();
    msg.verify(&cert.der).unwrap();
    let (signed, sig) = query.rsplit_once("&Signature=").unwrap();
    let sig = STANDARD.decode(percent_encoding::percent_decode_str(sig).decode_utf8().unwrap().as_bytes()).unwrap();
    assert_eq!(sig.len(), 384);
    let sig_file = dir.path().join("sig.bin");
    std::fs::write(&sig_file, &sig).unwrap();
    let data_file = write(dir.path(), "data", signed);
    let cert_pem = write(dir.path(), "cert.pem", &pem(&cert.der));
    let pub_pem = dir.path().join("pub.pem");
    let (ok, text) = run(Command::new("openssl").args(["x509", "-pubkey", "-noout", "-in"]).arg(&cert_pem));
    assert!(ok, "{text}");
    std::fs::write(&pub_pem, &text).unwrap();
    let (ok, text) = run(Command::new("openssl")
        .args(["dgst", "-sha256", "-verify"])
        .arg(&pub_pem)
        .arg("-signature")
        .arg(&sig_file)
        .arg(&data_file));
    assert!(ok && text.contains("Verified OK"), "{text}");
    let bad = query.replacen("RelayState=st", "RelayState=su", 1);
    assert!(redirect::decode(&bad, "SAMLResponse").unwrap().verify(&cert.der).is_err());
    idp.close().await;
}
