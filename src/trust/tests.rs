//! Chain, list and store tests over a complete software PKI served from `file://`.

use super::testkit::*;
use super::*;
use crate::error::ErrorCode;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};
use std::path::PathBuf;
use x509_cert::ext::pkix::KeyUsages;

struct Fixture {
    dir: tempfile::TempDir,
    gl: ListSigner,
    sl: ListSigner,
    tsl: ListSigner,
    vrl: ListSigner,
    ca: TestCa,
    signer_key: p256::ecdsa::SigningKey,
    signer_cert: Vec<u8>,
}

fn default_signer_spec() -> CertSpec {
    CertSpec::new("CN=AUS VDS Signer 1,O=Test,C=AU", 0x1234)
        .ext(eku(false, &[EKU_VDS]))
        .ext(key_usage(KeyUsages::DigitalSignature))
}

impl Fixture {
    fn new() -> Self {
        Self::with_ca(TestCa::new(TestKey::P256(p256_key()), "CN=AUS VDS CA 2026,O=Test,C=AU"))
    }

    fn with_ca(ca: TestCa) -> Self {
        let signer_key = p256_key();
        let signer_cert = ca.issue(default_signer_spec(), &signer_key);
        let f = Self {
            dir: tempfile::tempdir().unwrap(),
            gl: ListSigner::new("GL signer"),
            sl: ListSigner::new("SL signer"),
            tsl: ListSigner::new("TSL signer"),
            vrl: ListSigner::new("VRL signer"),
            ca,
            signer_key,
            signer_cert,
        };
        std::fs::create_dir_all(f.dir.path().join("web")).unwrap();
        f.publish_gl(1, NOW - 3600, NOW + DAY);
        f.publish_sl(1, NOW - 3600, NOW + DAY);
        f.publish_tsl(1, NOW - 3600, NOW + DAY, vec![f.service()]);
        f.publish_vrl(1, NOW - 3600, NOW + DAY, &[]);
        f.publish_crl(&f.ca.crl(NOW - 3600, Some(NOW + DAY), &[]));
        f
    }

    fn path(&self, file: &str) -> PathBuf {
        self.dir.path().join("web").join(file)
    }

    fn url(&self, file: &str) -> String {
        format!("file://{}", self.path(file).display())
    }

    fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    fn write(&self, file: &str, bytes: &[u8]) {
        std::fs::write(self.path(file), bytes).unwrap();
    }

    fn service(&self) -> Value {
        json!({
            "name": "AUS VDS CA 2026",
            "ca": STANDARD.encode(&self.ca.der),
            "status": "granted",
            "status_since": NOW - 100 * DAY,
            "doc_types": ["symbolon.id"],
            "crl_urls": [self.url("ca.crl")],
            "vrl_url": self.url("vrl.jws"),
            "vrl_signer_sha256": [self.vrl.pin()]
        })
    }

    fn gl_payload(&self, seq: u64, issued: i64, next_update: i64) -> Value {
        json!({"type": "governance", "seq": seq, "issued": issued, "next_update": next_update,
               "schemes": [{"id": "x1280-demo", "url": self.url("scheme.jws"),
                            "signer_sha256": [self.sl.pin()], "doc_types": ["symbolon.id", "icao.vacc"]}]})
    }

    fn publish_gl(&self, seq: u64, issued: i64, next_update: i64) {
        self.write("gl.jws", &self.gl.sign("symbolon-gl+jws", &self.gl_payload(seq, issued, next_update)));
    }

    fn publish_sl(&self, seq: u64, issued: i64, next_update: i64) {
        let p = json!({"type": "scheme", "scheme": "x1280-demo", "seq": seq, "issued": issued, "next_update": next_update,
                       "tsls": [{"territory": "AUS", "url": self.url("aus.jws"), "signer_sha256": [self.tsl.pin()]}]});
        self.write("scheme.jws", &self.sl.sign("symbolon-sl+jws", &p));
    }

    fn tsl_payload(&self, seq: u64, issued: i64, next_update: i64, services: Vec<Value>) -> Value {
        json!({"type": "tsl", "scheme": "x1280-demo", "territory": "AUS", "seq": seq, "issued": issued,
               "next_update": next_update, "services": services})
    }

    fn publish_tsl(&self, seq: u64, issued: i64, next_update: i64, services: Vec<Value>) {
        let p = self.tsl_payload(seq, issued, next_update, services);
        self.write("aus.jws", &self.tsl.sign("symbolon-tsl+jws", &p));
    }

    fn publish_vrl(&self, seq: u64, issued: i64, next_update: i64, tids: &[&str]) {
        let revoked: Vec<Value> =
            tids.iter().map(|t| json!({"tid": t, "revoked_at": NOW - DAY, "reason": "lost"})).collect();
        let p = json!({"type": "vrl", "territory": "AUS", "seq": seq, "issued": issued,
                       "next_update": next_update, "revoked": revoked});
        self.write("vrl.jws", &self.vrl.sign("symbolon-vrl+jws", &p));
    }

    fn publish_crl(&self, der: &[u8]) {
        self.write("ca.crl", der);
    }

    fn config(&self) -> TrustConfig {
        TrustConfig {
            governance_url: self.url("gl.jws"),
            governance_signer_sha256: vec![self.gl.pin()],
            ..TrustConfig::default()
        }
    }

    async fn store(&self) -> TrustStore {
        let store = TrustStore::load(&self.config(), &self.state_dir()).unwrap();
        let report = store.refresh(NOW).await.unwrap();
        assert!(report.failed.is_empty(), "{:?}", report.failed);
        assert!(report.fresh);
        store
    }

    fn vds(&self, data: &Value) -> String {
        b64u(&make_seal(data, &self.signer_cert, &self.signer_key, false))
    }

    fn vds_by(&self, data: &Value, cert: &[u8], key: &p256::ecdsa::SigningKey) -> String {
        b64u(&make_seal(data, cert, key, false))
    }
}

fn code(r: Result<VerifiedCredential, TrustError>) -> ErrorCode {
    crate::error::ApiError::from(r.unwrap_err()).code
}

#[tokio::test]
async fn valid_credential_verifies() {
    let f = Fixture::new();
    let store = f.store().await;
    let v = store.verify_credential(&f.vds(&profile_data("AUS-7Q2M9K4T")), NOW).unwrap();
    assert_eq!(v.credential.token_id, "AUS-7Q2M9K4T");
    assert_eq!(v.doc_type, "symbolon.id");
    assert_eq!(v.territory, "AUS");
    assert_eq!(v.ca_name, "AUS VDS CA 2026");
    assert_eq!(v.ca_sha256, sha256_hex(&f.ca.der));
    assert_eq!(v.signer_serial_hex, "1234");
    assert_eq!(v.credential.claim_names().len(), 8);

    let status = store.status(NOW);
    assert!(status.fresh && status.configured);
    let kinds: Vec<&str> = status.entries.iter().map(|e| e.kind).collect();
    assert_eq!(kinds, vec!["governance", "scheme", "tsl", "vrl", "crl"]);
    assert_eq!(status.age_s, Some(0));
    assert!(serde_json::to_string(&status).is_ok());
}

#[tokio::test]
async fn structure_errors_come_first() {
    let f = Fixture::new();
    let store = f.store().await;
    // Bad tid and a signature that would not verify: still 400.
    let mut data = profile_data("bad tid!");
    let mut seal = make_seal(&data, &f.signer_cert, &f.signer_key, false);
    seal["data"]["msg"]["pid"]["gn"] = json!("TAMPERED");
    assert_eq!(code(store.verify_credential(&b64u(&seal), NOW)), ErrorCode::InvalidRequest);
    data["hdr"]["v"] = json!(2);
    assert_eq!(code(store.verify_credential(&f.vds(&data), NOW)), ErrorCode::InvalidRequest);
    assert_eq!(code(store.verify_credential("%%%", NOW)), ErrorCode::InvalidRequest);
}

#[tokio::test]
async fn step1_signature_failures_are_untrusted() {
    let f = Fixture::new();
    let store = f.store().await;
    let data = profile_data("AUS-7Q2M9K4T");
    let good = make_seal(&data, &f.signer_cert, &f.signer_key, false);

    let mut tampered = good.clone();
    tampered["data"]["msg"]["pid"]["gn"] = json!("JOHN");
    assert_eq!(code(store.verify_credential(&b64u(&tampered), NOW)), ErrorCode::UntrustedCredential);

    let mut alg = good.clone();
    alg["sig"]["alg"] = json!("ES384");
    assert_eq!(code(store.verify_credential(&b64u(&alg), NOW)), ErrorCode::UntrustedCredential);

    let mut cer = good.clone();
    cer["sig"]["cer"] = json!("bm90IGEgY2VydA");
    assert_eq!(code(store.verify_credential(&b64u(&cer), NOW)), ErrorCode::UntrustedCredential);

    let mut sigvl = good.clone();
    sigvl["sig"]["sigvl"] = json!("AAAA");
    assert_eq!(code(store.verify_credential(&b64u(&sigvl), NOW)), ErrorCode::UntrustedCredential);

    // Member order and whitespace do not matter: JCS.
    let reordered = format!(
        r#"{{ "sig": {}, "data": {{ "msg": {}, "hdr": {{"is":"AUS", "v":1, "t":"symbolon.id"}} }} }}"#,
        good["sig"], good["data"]["msg"]
    );
    let vds = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(reordered);
    assert!(store.verify_credential(&vds, NOW).is_ok());

    // A P-384 signer key is not accepted.
    let k384 = p384::ecdsa::SigningKey::random(&mut rand_core::OsRng);
    let c384 = make_cert(default_signer_spec(), TestKey::P384(k384).spki(), &f.ca.name, &f.ca.key);
    let mut wrong_key = good.clone();
    wrong_key["sig"]["cer"] = json!(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(c384));
    assert_eq!(code(store.verify_credential(&b64u(&wrong_key), NOW)), ErrorCode::UntrustedCredential);
}

#[tokio::test]
async fn step2_ca_must_be_granted_and_verify() {
    let f = Fixture::new();
    let store = f.store().await;
    // Same CA name, different key: name matches, signature does not.
    let impostor = TestCa::new(TestKey::P256(p256_key()), "CN=AUS VDS CA 2026,O=Test,C=AU");
    let k = p256_key();
    let cert = impostor.issue(default_signer_spec(), &k);
    let vds = f.vds_by(&profile_data("AUS-7Q2M9K4T"), &cert, &k);
    assert_eq!(code(store.verify_credential(&vds, NOW)), ErrorCode::UntrustedCredential);

    // Withdrawn service.
    let mut svc = f.service();
    svc["status"] = json!("withdrawn");
    f.publish_tsl(2, NOW - 60, NOW + DAY, vec![svc]);
    store.refresh(NOW).await.unwrap();
    assert_eq!(
        code(store.verify_credential(&f.vds(&profile_data("AUS-7Q2M9K4T")), NOW)),
        ErrorCode::UntrustedCredential
    );
}

#[tokio::test]
async fn step2_rollover_same_name_chooses_by_signature() {
    let old = TestCa::new(TestKey::P256(p256_key()), "CN=AUS VDS CA,O=Test,C=AU");
    let new = TestCa::new(TestKey::Rsa(rsa2048()), "CN=AUS VDS CA,O=Test,C=AU");
    let f = Fixture::with_ca(new.clone());
    let mut first = f.service();
    first["name"] = json!("old");
    first["ca"] = json!(STANDARD.encode(&old.der));
    first["crl_urls"] = json!([]);
    let mut second = f.service();
    second["name"] = json!("new");
    f.publish_tsl(1, NOW - 60, NOW + DAY, vec![first, second]);
    let store = f.store().await;
    let v = store.verify_credential(&f.vds(&profile_data("AUS-7Q2M9K4T")), NOW).unwrap();
    assert_eq!(v.ca_name, "new");
}

#[tokio::test]
async fn step3_document_types_and_extensions() {
    let f = Fixture::new();
    let store = f.store().await;
    let data = profile_data("AUS-7Q2M9K4T");
    let issue = |spec: CertSpec| {
        let k = p256_key();
        let c = f.ca.issue(spec, &k);
        f.vds_by(&data, &c, &k)
    };
    let base = || CertSpec::new("CN=AUS VDS Signer 2,C=AU", 0x22);
    // No EKU, no KU: fine.
    assert!(store.verify_credential(&issue(base()), NOW).is_ok());
    // Critical EKU with the VDS-NC purpose, no KU: fine (state-issued shape).
    assert!(store.verify_credential(&issue(base().ext(eku(true, &[EKU_VDS]))), NOW).is_ok());
    // EKU without the purpose.
    let r = store.verify_credential(&issue(base().ext(eku(false, &["1.3.6.1.5.5.7.3.4"]))), NOW);
    assert_eq!(code(r), ErrorCode::UntrustedCredential);
    // KU without digitalSignature.
    let r = store.verify_credential(&issue(base().ext(key_usage(KeyUsages::KeyEncipherment))), NOW);
    assert_eq!(code(r), ErrorCode::UntrustedCredential);
    // DocumentTypeList with SI, and without.
    assert!(store.verify_credential(&issue(base().ext(dtl(&["NV", "SI"]))), NOW).is_ok());
    let r = store.verify_credential(&issue(base().ext(dtl(&["NV"]))), NOW);
    assert_eq!(code(r), ErrorCode::UntrustedCredential);
    // Unknown critical extension.
    let r = store.verify_credential(&issue(base().ext(ext("1.2.3.4", true, vec![5, 0]))), NOW);
    assert_eq!(code(r), ErrorCode::UntrustedCredential);

    // Type not in the service's doc_types.
    let mut svc = f.service();
    svc["doc_types"] = json!(["icao.vacc"]);
    f.publish_tsl(2, NOW - 60, NOW + DAY, vec![svc]);
    store.refresh(NOW).await.unwrap();
    assert_eq!(code(store.verify_credential(&f.vds(&data), NOW)), ErrorCode::UntrustedCredential);

    // A seal of a type the configuration does not accept (signed, trusted CA).
    let f2 = Fixture::new();
    let store2 = f2.store().await;
    let mut other = profile_data("AUS-7Q2M9K4T");
    other["hdr"]["t"] = json!("icao.vacc");
    assert_eq!(code(store2.verify_credential(&f2.vds(&other), NOW)), ErrorCode::UntrustedCredential);
}

#[tokio::test]
async fn step3_unknown_type_with_dtl_is_untrusted() {
    let f = Fixture::new();
    let mut config = f.config();
    config.accepted_doc_types = vec!["symbolon.id".into(), "x.custom".into()];
    let mut svc = f.service();
    svc["doc_types"] = json!(["symbolon.id", "x.custom"]);
    f.publish_tsl(1, NOW - 60, NOW + DAY, vec![svc]);
    // The scheme must list the type too.
    let store = TrustStore::load(&config, &f.state_dir()).unwrap();
    store.refresh(NOW).await.unwrap();
    let mut data = profile_data("AUS-7Q2M9K4T");
    data["hdr"]["t"] = json!("x.custom");
    let k = p256_key();
    let plain = f.ca.issue(CertSpec::new("CN=S,C=AU", 9), &k);
    // Scheme doc_types lack x.custom.
    assert_eq!(code(store.verify_credential(&f.vds_by(&data, &plain, &k), NOW)), ErrorCode::UntrustedCredential);
    let mut gl = f.gl_payload(2, NOW - 60, NOW + DAY);
    gl["schemes"][0]["doc_types"] = json!(["symbolon.id", "x.custom"]);
    f.write("gl.jws", &f.gl.sign("symbolon-gl+jws", &gl));
    store.refresh(NOW).await.unwrap();
    assert!(store.verify_credential(&f.vds_by(&data, &plain, &k), NOW).is_ok());
    let with_dtl = f.ca.issue(CertSpec::new("CN=S,C=AU", 10).ext(dtl(&["SI"])), &k);
    assert_eq!(code(store.verify_credential(&f.vds_by(&data, &with_dtl, &k), NOW)), ErrorCode::UntrustedCredential);
    config.doc_type_codes.insert("x.custom".into(), "XC".into());
    let store = TrustStore::load(&config, &f.state_dir()).unwrap();
    let with_xc = f.ca.issue(CertSpec::new("CN=S,C=AU", 11).ext(dtl(&["XC"])), &k);
    assert!(store.verify_credential(&f.vds_by(&data, &with_xc, &k), NOW).is_ok());
}

#[tokio::test]
async fn step4_territory_before_validity() {
    let f = Fixture::new();
    let store = f.store().await;
    let k = p256_key();
    let expired = f.ca.issue(default_signer_spec().validity(NOW - 100 * DAY, NOW - DAY), &k);
    let mut data = profile_data("AUS-7Q2M9K4T");
    assert_eq!(code(store.verify_credential(&f.vds_by(&data, &expired, &k), NOW)), ErrorCode::ExpiredCredential);
    data["hdr"]["is"] = json!("NZL");
    assert_eq!(code(store.verify_credential(&f.vds_by(&data, &expired, &k), NOW)), ErrorCode::UntrustedCredential);
    let future = f.ca.issue(default_signer_spec().validity(NOW + DAY, NOW + 100 * DAY), &k);
    let data = profile_data("AUS-7Q2M9K4T");
    assert_eq!(code(store.verify_credential(&f.vds_by(&data, &future, &k), NOW)), ErrorCode::ExpiredCredential);
}

#[tokio::test]
async fn step4_tid_must_carry_the_territory() {
    // docs/credentials.md §6 rule 9: a token id belongs to the territory of hdr.is.
    let f = Fixture::new();
    let store = f.store().await;
    assert!(store.verify_credential(&f.vds(&profile_data("AUS-XY")), NOW).is_ok());
    for tid in ["NZL-7Q2M9K4T", "AUS7Q2M9K4T", "AUSX-7Q2M9K4T", "aus-7Q2M9K4T", "XAUS-7Q2M9K"] {
        let err = store.verify_credential(&f.vds(&profile_data(tid)), NOW).unwrap_err();
        assert_eq!(err, TrustError::Untrusted("msg.tid does not start with hdr.is and a hyphen".into()), "{tid}");
    }
    // Checked with the territory, before validity.
    let k = p256_key();
    let expired = f.ca.issue(default_signer_spec().validity(NOW - 100 * DAY, NOW - DAY), &k);
    let err = store.verify_credential(&f.vds_by(&profile_data("NZL-7Q2M9K4T"), &expired, &k), NOW).unwrap_err();
    assert!(matches!(err, TrustError::Untrusted(_)), "{err:?}");
    assert!(verify::tid_in_territory("D-123456", "D<<"));
    assert!(!verify::tid_in_territory("-123456", ""));
}

#[tokio::test]
async fn step4_expired_ca() {
    let ca = TestCa::with_validity(TestKey::P256(p256_key()), "CN=Old CA,C=AU", NOW - 900 * DAY, NOW - DAY);
    let f = Fixture::with_ca(ca);
    let store = f.store().await;
    assert_eq!(code(store.verify_credential(&f.vds(&profile_data("AUS-7Q2M9K4T")), NOW)), ErrorCode::ExpiredCredential);
}

#[tokio::test]
async fn step5_crl_and_vrl() {
    let f = Fixture::new();
    let store = f.store().await;
    let vds = f.vds(&profile_data("AUS-7Q2M9K4T"));
    // CRL revokes the signer.
    f.publish_crl(&f.ca.crl(NOW - 60, Some(NOW + DAY), &[&[0x12, 0x34]]));
    let report = store.refresh(NOW).await.unwrap();
    assert_eq!(report.updated, vec!["CRL of AUS VDS CA 2026"]);
    assert_eq!(code(store.verify_credential(&vds, NOW)), ErrorCode::RevokedCredential);
    assert_eq!(
        store.revoked_signers(),
        vec![RevokedSigner {
            ca_sha256: sha256_hex(&f.ca.der),
            ca_name: "AUS VDS CA 2026".into(),
            serial_hex: "1234".into()
        }]
    );
    // CRL past nextUpdate: 503.
    let later = NOW + 2 * DAY;
    let err = store.verify_credential(&vds, later).unwrap_err();
    assert!(matches!(err, TrustError::Unavailable(_)), "{err:?}");
    // CRL clean again; VRL revokes the tid.
    f.publish_crl(&f.ca.crl(NOW, Some(NOW + DAY), &[]));
    f.publish_vrl(2, NOW - 60, NOW + DAY, &["AUS-7Q2M9K4T"]);
    store.refresh(NOW).await.unwrap();
    assert_eq!(code(store.verify_credential(&vds, NOW)), ErrorCode::RevokedCredential);
    let revoked = store.revoked_tokens();
    assert_eq!(revoked.len(), 1);
    assert_eq!((revoked[0].territory.as_str(), revoked[0].ca_sha256.clone()), ("AUS", sha256_hex(&f.ca.der)));
    assert!(revoked[0].token_ids.contains("AUS-7Q2M9K4T"));
    assert!(store.verify_credential(&f.vds(&profile_data("AUS-OTHER1")), NOW).is_ok());
}

#[tokio::test]
async fn step5_badly_signed_crl_fails_closed() {
    let f = Fixture::new();
    let other = TestCa::new(TestKey::P256(p256_key()), "CN=AUS VDS CA 2026,O=Test,C=AU");
    f.publish_crl(&other.crl(NOW - 60, Some(NOW + DAY), &[]));
    let store = TrustStore::load(&f.config(), &f.state_dir()).unwrap();
    let report = store.refresh(NOW).await.unwrap();
    assert_eq!(report.failed.len(), 1);
    assert!(!report.fresh);
    let err = store.verify_credential(&f.vds(&profile_data("AUS-7Q2M9K4T")), NOW).unwrap_err();
    assert_eq!(err, TrustError::Unavailable("CRL of AUS VDS CA 2026 is not current".into()));
    // A CRL without nextUpdate is refused too.
    f.publish_crl(&f.ca.crl(NOW - 60, None, &[]));
    assert_eq!(store.refresh(NOW).await.unwrap().failed.len(), 1);
    // No crl_urls: no CRL check at all.
    let mut svc = f.service();
    svc["crl_urls"] = json!([]);
    f.publish_tsl(2, NOW - 60, NOW + DAY, vec![svc]);
    let report = store.refresh(NOW).await.unwrap();
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    assert!(store.verify_credential(&f.vds(&profile_data("AUS-7Q2M9K4T")), NOW).is_ok());
}

#[tokio::test]
async fn step6_dates_inclusive() {
    let f = Fixture::new();
    let store = f.store().await;
    let mut data = profile_data("AUS-7Q2M9K4T");
    data["msg"]["exp"] = json!("2026-01-01");
    assert!(store.verify_credential(&f.vds(&data), NOW + DAY - 1).is_ok());
    let err = store.verify_credential(&f.vds(&data), NOW + DAY).unwrap_err();
    assert_eq!(crate::error::ApiError::from(err).code, ErrorCode::ExpiredCredential);
    let mut data = profile_data("AUS-7Q2M9K4T");
    data["msg"]["doc"]["exp"] = json!("2025-12-31");
    assert_eq!(code(store.verify_credential(&f.vds(&data), NOW)), ErrorCode::ExpiredCredential);
}

#[tokio::test]
async fn stale_list_fails_closed_and_names_it() {
    let f = Fixture::new();
    f.publish_sl(1, NOW - 3600, NOW - 60);
    let store = TrustStore::load(&f.config(), &f.state_dir()).unwrap();
    let report = store.refresh(NOW).await.unwrap();
    assert!(report.failed.is_empty());
    assert!(!report.fresh);
    let err = store.verify_credential(&f.vds(&profile_data("AUS-7Q2M9K4T")), NOW).unwrap_err();
    assert_eq!(err, TrustError::Unavailable("scheme list x1280-demo is stale or missing".into()));
    let api = crate::error::ApiError::from(err);
    assert_eq!((api.code, api.code.status()), (ErrorCode::Unavailable, 503));
    assert!(!store.status(NOW).fresh);
    // Stale VRL, everything else fresh.
    let f = Fixture::new();
    f.publish_vrl(1, NOW - 3600, NOW - 1, &[]);
    let store = TrustStore::load(&f.config(), &f.state_dir()).unwrap();
    store.refresh(NOW).await.unwrap();
    let err = store.verify_credential(&f.vds(&profile_data("AUS-7Q2M9K4T")), NOW).unwrap_err();
    assert_eq!(err, TrustError::Unavailable("VRL x1280-demo/AUS is stale or missing".into()));
}

#[tokio::test]
async fn not_configured_or_never_fetched_is_unavailable() {
    let dir = tempfile::tempdir().unwrap();
    let store = TrustStore::load(&TrustConfig::default(), dir.path()).unwrap();
    assert_eq!(store.verify_credential("e30", NOW).unwrap_err(), TrustError::NotConfigured);
    assert_eq!(store.refresh(NOW).await.unwrap_err(), TrustError::NotConfigured);
    assert!(!store.status(NOW).fresh);

    let f = Fixture::new();
    std::fs::remove_file(f.path("gl.jws")).unwrap();
    let store = TrustStore::load(&f.config(), &f.state_dir()).unwrap();
    let report = store.refresh(NOW).await.unwrap();
    assert_eq!(report.failed.len(), 1);
    let err = store.verify_credential(&f.vds(&profile_data("AUS-7Q2M9K4T")), NOW).unwrap_err();
    assert_eq!(err, TrustError::Unavailable("governance list is stale or missing".into()));
}

#[tokio::test]
async fn list_acceptance_rules() {
    let f = Fixture::new();
    let store = f.store().await;
    let fails = |r: RefreshReport| r.failed.into_iter().map(|x| (x.list, x.reason)).collect::<Vec<_>>();

    // Rollback of seq.
    f.publish_gl(5, NOW - 60, NOW + DAY);
    assert!(store.refresh(NOW).await.unwrap().failed.is_empty());
    f.publish_gl(4, NOW - 30, NOW + 2 * DAY);
    let r = fails(store.refresh(NOW).await.unwrap());
    assert_eq!(r.len(), 1);
    assert!(r[0].1.contains("older"), "{r:?}");
    assert_eq!(store.status(NOW).entries[0].seq, Some(5));

    // Equal seq, same payload (re-signed): fine. Different payload: refused.
    f.publish_gl(5, NOW - 60, NOW + DAY);
    assert!(store.refresh(NOW).await.unwrap().failed.is_empty());
    f.publish_gl(5, NOW - 60, NOW + 3 * DAY);
    let r = fails(store.refresh(NOW).await.unwrap());
    assert!(r[0].1.contains("different payload"), "{r:?}");

    // Issued too far in the future.
    f.publish_gl(6, NOW + 301, NOW + DAY);
    assert!(fails(store.refresh(NOW).await.unwrap())[0].1.contains("future"));
    f.publish_gl(6, NOW + 300, NOW + DAY);
    assert!(store.refresh(NOW).await.unwrap().failed.is_empty());

    // Unpinned signer, wrong typ, extra header member, wrong type member.
    let rogue = ListSigner::new("rogue");
    f.write("gl.jws", &rogue.sign("symbolon-gl+jws", &f.gl_payload(7, NOW, NOW + DAY)));
    assert!(fails(store.refresh(NOW).await.unwrap())[0].1.contains("not pinned"));
    f.write("gl.jws", &f.gl.sign("symbolon-sl+jws", &f.gl_payload(7, NOW, NOW + DAY)));
    assert!(fails(store.refresh(NOW).await.unwrap())[0].1.contains("typ"));
    let header = json!({"alg": "ES256", "typ": "symbolon-gl+jws", "kid": "x",
                        "x5c": [STANDARD.encode(&f.gl.der)]});
    f.write("gl.jws", &f.gl.sign_with_header(&header, &f.gl_payload(7, NOW, NOW + DAY)));
    assert!(fails(store.refresh(NOW).await.unwrap())[0].1.contains("exactly"));
    let mut p = f.gl_payload(7, NOW, NOW + DAY);
    p["type"] = json!("scheme");
    f.write("gl.jws", &f.gl.sign("symbolon-gl+jws", &p));
    assert!(fails(store.refresh(NOW).await.unwrap())[0].1.contains("type"));
    // A tampered signature.
    let mut good = f.gl.sign("symbolon-gl+jws", &f.gl_payload(7, NOW, NOW + DAY));
    let n = good.len();
    good[n - 5] = if good[n - 5] == b'A' { b'B' } else { b'A' };
    f.write("gl.jws", &good);
    assert!(fails(store.refresh(NOW).await.unwrap())[0].1.contains("signature"));
    // Through all of that the store kept working on seq 6.
    assert_eq!(store.status(NOW).entries[0].seq, Some(6));
    assert!(store.verify_credential(&f.vds(&profile_data("AUS-7Q2M9K4T")), NOW).is_ok());

    // TSL territory must match where it is pinned from.
    f.publish_gl(6, NOW + 300, NOW + DAY);
    let mut p = f.tsl_payload(9, NOW, NOW + DAY, vec![f.service()]);
    p["territory"] = json!("NZL");
    f.write("aus.jws", &f.tsl.sign("symbolon-tsl+jws", &p));
    assert!(fails(store.refresh(NOW).await.unwrap())[0].1.contains("territory"));
    // An expired list signer certificate.
    let f2 = Fixture::new();
    let old = ListSigner::with_validity("GL old", NOW - 100 * DAY, NOW - DAY);
    f2.write("gl.jws", &old.sign("symbolon-gl+jws", &f2.gl_payload(1, NOW, NOW + DAY)));
    let mut c = f2.config();
    c.governance_signer_sha256 = vec![old.pin()];
    let s2 = TrustStore::load(&c, &f2.state_dir()).unwrap();
    assert!(fails(s2.refresh(NOW).await.unwrap())[0].1.contains("validity"));
}

#[tokio::test]
async fn last_good_copy_survives_restart_offline() {
    let f = Fixture::new();
    let store = f.store().await;
    drop(store);
    // The network (here: the files) goes away.
    std::fs::remove_dir_all(f.dir.path().join("web")).unwrap();
    let store = TrustStore::load(&f.config(), &f.state_dir()).unwrap();
    assert!(store.status(NOW).fresh);
    assert!(store.verify_credential(&f.vds(&profile_data("AUS-7Q2M9K4T")), NOW).is_ok());
    let report = store.refresh(NOW + 60).await.unwrap();
    assert_eq!(report.failed.len(), 5);
    assert!(store.verify_credential(&f.vds(&profile_data("AUS-7Q2M9K4T")), NOW + 60).is_ok());
    let status = store.status(NOW + 60);
    assert_eq!(status.age_s, Some(60));
    assert!(status.entries.iter().all(|e| e.error.is_some()));
    // A corrupt cache file is skipped, not fatal.
    let cache = f.state_dir().join("trust");
    std::fs::write(cache.join("junk.json"), b"{not json").unwrap();
    assert!(TrustStore::load(&f.config(), &f.state_dir()).is_ok());
    // No temp files are left behind.
    for e in std::fs::read_dir(&cache).unwrap() {
        let name = e.unwrap().file_name().into_string().unwrap();
        assert!(name.ends_with(".json"), "{name}");
    }
}

#[tokio::test]
async fn ca_key_types() {
    for key in [
        TestKey::P384(p384::ecdsa::SigningKey::random(&mut rand_core::OsRng)),
        TestKey::Rsa(rsa2048()),
        TestKey::RsaPss(rsa2048()),
    ] {
        let ca = TestCa::new(key, "CN=Typed CA,C=AU");
        let f = Fixture::with_ca(ca);
        let store = f.store().await;
        assert!(store.verify_credential(&f.vds(&profile_data("AUS-7Q2M9K4T")), NOW).is_ok());
    }
}

/// A seal shaped like a state-issued one: RSA-4096 CA (sha256WithRSAEncryption),
/// signer certificate with a critical VDS-NC EKU and no KeyUsage, padded base64url,
/// names with double spaces, `hdr.v` integer, type `icao.vacc`.
#[test]
fn state_shaped_seal_with_vds_verify_cli() {
    let ca = TestCa::new(TestKey::Rsa(rsa4096()), "CN=Utopia CSCA,O=Ministry of Health,C=UT");
    let k = p256_key();
    let cert = ca.issue(
        CertSpec::new("CN=Utopia VDS-NC Signer,C=UT", 0x7f01).ext(eku(true, &[EKU_VDS])).ext(dtl(&["NV", "NT"])),
        &k,
    );
    let data = json!({
        "hdr": {"t": "icao.vacc", "v": 1, "is": "UTO"},
        "msg": {"uvci": "U32870", "pid": {"n": "Smith  Bill", "dob": "1990-01-02", "sex": "M"},
                "ve": [{"des": "XM68M6", "nam": "Comirnaty", "dis": "RA01.0",
                        "vd": [{"dvc": "2021-03-03", "seq": 1, "ctr": "UTO", "adm": "RIVM", "lot": "VC35679", "dvn": "2021-03-24"}]}]}
    });
    let seal = make_seal(&data, &cert, &k, true);
    assert!(seal["sig"]["cer"].as_str().unwrap().ends_with('='));
    let dir = tempfile::tempdir().unwrap();
    let seal_file = dir.path().join("seal.json");
    std::fs::write(&seal_file, serde_json::to_vec_pretty(&seal).unwrap()).unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, pem("CERTIFICATE", &ca.der)).unwrap();
    let crl_file = dir.path().join("ca.crl");
    std::fs::write(&crl_file, pem("X509 CRL", &ca.crl(NOW - DAY, Some(NOW + DAY), &[&[0x01]]))).unwrap();

    let run = |file: &PathBuf, crl: bool, at: &str| {
        let args = cli::VdsVerifyArgs {
            file: file.clone(),
            ca: vec![ca_file.clone()],
            crl: if crl { vec![crl_file.clone()] } else { vec![] },
            at: Some(at.into()),
        };
        let mut out = Vec::new();
        let ok = cli::vds_verify_to(&args, None, &mut out).unwrap();
        (ok, String::from_utf8(out).unwrap())
    };
    let (ok, out) = run(&seal_file, true, "2026-01-01T00:00:00Z");
    assert!(ok, "{out}");
    assert!(out.contains("Smith  Bill") && out.contains("icao.vacc") && out.contains("VALID"), "{out}");
    // The b64u form of the file works too, and unix seconds for --at.
    let b64_file = dir.path().join("seal.b64");
    std::fs::write(&b64_file, format!("{}\n", b64u(&seal))).unwrap();
    let (ok, out) = run(&b64_file, false, &NOW.to_string());
    assert!(ok && out.contains("no CRL given"), "{out}");
    // Past the CRL's nextUpdate: not valid.
    let (ok, out) = run(&seal_file, true, &(NOW + 2 * DAY).to_string());
    assert!(!ok && out.contains("unavailable"), "{out}");
    // Tampered: not valid.
    let mut bad = seal.clone();
    bad["data"]["msg"]["pid"]["n"] = json!("Smith Bill");
    std::fs::write(&seal_file, serde_json::to_vec(&bad).unwrap()).unwrap();
    let (ok, out) = run(&seal_file, false, "2026-01-01T00:00:00Z");
    assert!(!ok && out.contains("untrusted_credential"), "{out}");
    // Without --ca and without trust configured: an error, not a verdict.
    let args = cli::VdsVerifyArgs { file: b64_file, ca: vec![], crl: vec![], at: None };
    assert!(cli::vds_verify_to(&args, None, &mut Vec::new()).is_err());
}

#[tokio::test]
async fn vds_verify_without_ca_uses_the_store() {
    let f = Fixture::new();
    let store = f.store().await;
    let file = f.dir.path().join("seal.b64");
    std::fs::write(&file, f.vds(&profile_data("AUS-7Q2M9K4T"))).unwrap();
    let args = cli::VdsVerifyArgs { file: file.clone(), ca: vec![], crl: vec![], at: Some(NOW.to_string()) };
    let mut out = Vec::new();
    assert!(cli::vds_verify_to(&args, Some(&store), &mut out).unwrap(), "{}", String::from_utf8_lossy(&out));
    // icao.vacc is not an accepted type by default.
    let mut data = profile_data("AUS-7Q2M9K4T");
    data["hdr"]["t"] = json!("icao.vacc");
    std::fs::write(&file, f.vds(&data)).unwrap();
    assert!(!cli::vds_verify_to(&args, Some(&store), &mut Vec::new()).unwrap());
}

#[test]
fn parsers_reject_truncated_and_garbage_input() {
    let ca = TestCa::new(TestKey::P256(p256_key()), "CN=CA,C=AU");
    let k = p256_key();
    let signer = ca.issue(default_signer_spec(), &k);
    let crl = ca.crl(NOW, Some(NOW + DAY), &[&[1, 2, 3]]);
    let signer_list = ListSigner::new("L");
    let jws = signer_list.sign("symbolon-gl+jws", &json!({"type": "governance"}));
    assert!(cert::SignerCert::parse(&signer).is_ok());
    assert!(cert::Crl::parse(&crl).is_ok());
    assert!(cert::CaCert::parse(&ca.der).is_ok());
    for cut in (0..signer.len()).step_by(7) {
        assert!(cert::SignerCert::parse(&signer[..cut]).is_err());
        assert!(cert::CaCert::parse(&ca.der[..cut.min(ca.der.len() - 1)]).is_err());
    }
    for cut in 0..crl.len() {
        assert!(cert::Crl::parse(&crl[..cut]).is_err());
    }
    let mut trailing = signer.clone();
    trailing.push(0);
    assert!(cert::SignerCert::parse(&trailing).is_err());
    assert!(cert::Crl::parse(&vec![0x30; cert::MAX_CRL_BYTES + 1]).is_err());
    assert!(cert::Crl::parse(b"-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n").is_err());
    assert!(cert::Crl::parse(pem("CERTIFICATE", &crl).as_bytes()).is_err());
    let ctx = lists::ListContext {
        kind: lists::ListKind::Governance,
        pins: vec![signer_list.pin()],
        scheme: None,
        territory: None,
    };
    assert!(lists::verify_list(&jws, &ctx).is_err()); // payload lacks seq etc.
    for cut in 0..jws.len() {
        assert!(lists::verify_list(&jws[..cut], &ctx).is_err());
    }
    for bad in [&b""[..], b"a.b", b"a.b.c.d", b"..", b"\xff.\xff.\xff", b"e30.e30.e30"] {
        assert!(lists::verify_list(bad, &ctx).is_err());
    }
    assert!(lists::verify_list(&vec![b'A'; lists::MAX_LIST_BYTES + 1], &ctx).is_err());
    // v1 signer certificate is refused.
    let mut spec = CertSpec::new("CN=v1,C=AU", 3);
    spec.version = x509_cert::certificate::Version::V1;
    assert!(cert::SignerCert::parse(&ca.issue(spec, &k)).is_err());
}

#[test]
fn extension_parsing() {
    assert_eq!(cert::parse_document_type_list(&dtl_value(0, &["NV", "SI"])).unwrap(), vec!["NV", "SI"]);
    assert_eq!(cert::parse_document_type_list(&dtl_value(0, &[])).unwrap(), Vec::<String>::new());
    assert!(cert::parse_document_type_list(&dtl_value(1, &["NV"])).is_err());
    let good = dtl_value(0, &["NV"]);
    for cut in 0..good.len() {
        assert!(cert::parse_document_type_list(&good[..cut]).is_err());
    }
    let mut trailing = good.clone();
    trailing.push(0);
    assert!(cert::parse_document_type_list(&trailing).is_err());
    // UTF8String instead of PrintableString; SEQUENCE instead of SET.
    let mut utf8 = good.clone();
    let pos = utf8.iter().position(|&b| b == 0x13).unwrap();
    utf8[pos] = 0x0c;
    assert!(cert::parse_document_type_list(&utf8).is_err());
    let mut seq = good.clone();
    let pos = seq.iter().position(|&b| b == 0x31).unwrap();
    seq[pos] = 0x30;
    assert!(cert::parse_document_type_list(&seq).is_err());

    let ca = TestCa::new(TestKey::P256(p256_key()), "CN=CA,C=AU");
    let k = p256_key();
    let read = |spec: CertSpec| cert::SignerCert::parse(&ca.issue(spec, &k)).unwrap().extensions();
    let e = read(CertSpec::new("CN=a", 1)).unwrap();
    assert_eq!(e, cert::SignerExtensions::default());
    let e = read(
        CertSpec::new("CN=a", 1)
            .ext(eku(true, &[EKU_VDS]))
            .ext(key_usage(KeyUsages::DigitalSignature))
            .ext(dtl(&["SI"])),
    )
    .unwrap();
    assert_eq!(e.eku, Some(vec![cert::OID_EKU_VDS_NC_SIGNER]));
    assert_eq!(e.digital_signature, Some(true));
    assert_eq!(e.doc_type_codes, Some(vec!["SI".to_owned()]));
    assert!(read(CertSpec::new("CN=a", 1).ext(eku(false, &[EKU_VDS])).ext(eku(false, &[EKU_VDS]))).is_err());
    assert!(read(CertSpec::new("CN=a", 1).ext(ext("2.5.29.37", false, vec![0x30, 0x03, 0x06]))).is_err());
    assert!(read(CertSpec::new("CN=a", 1).ext(ext("2.23.136.1.1.6.2", false, vec![0x30, 0x00]))).is_err());
}

#[test]
fn names_match_case_and_space_insensitively() {
    let a = name("CN=AUS  VDS CA,O=Test,C=AU");
    let b = name("CN=aus vds ca,O=TEST,C=AU");
    assert!(cert::names_match(&a, &b));
    assert!(!cert::names_match(&a, &name("CN=AUS VDS CA 2,O=Test,C=AU")));
}

#[tokio::test]
async fn shared_vrl_is_fetched_once() {
    let f = Fixture::new();
    let mut second = f.service();
    second["name"] = json!("AUS VDS CA 2026 (copy)");
    f.publish_tsl(1, NOW - 60, NOW + DAY, vec![f.service(), second]);
    let store = TrustStore::load(&f.config(), &f.state_dir()).unwrap();
    let report = store.refresh(NOW).await.unwrap();
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    // gl, scheme, tsl, one VRL, one CRL (same CA, same URL).
    assert_eq!(report.updated.len(), 5, "{:?}", report.updated);
    assert!(store.verify_credential(&f.vds(&profile_data("AUS-7Q2M9K4T")), NOW).is_ok());
}

#[test]
fn error_mapping() {
    use crate::error::ApiError;
    let cases = [
        (TrustError::Malformed("x".into()), ErrorCode::InvalidRequest, 400),
        (TrustError::Untrusted("x".into()), ErrorCode::UntrustedCredential, 422),
        (TrustError::Revoked("x".into()), ErrorCode::RevokedCredential, 422),
        (TrustError::Expired("x".into()), ErrorCode::ExpiredCredential, 422),
        (TrustError::Unavailable("TSL a/B is stale".into()), ErrorCode::Unavailable, 503),
        (TrustError::NotConfigured, ErrorCode::Unavailable, 503),
        (TrustError::Cache("disk".into()), ErrorCode::Internal, 500),
    ];
    for (e, code, status) in cases {
        let api = ApiError::from(e);
        assert_eq!((api.code, api.code.status()), (code, status));
    }
    let api = ApiError::from(TrustError::Unavailable("TSL a/B is stale".into()));
    assert_eq!(api.detail, "TSL a/B is stale");
    assert!(api.retry_after.is_some());
}

/// A second granted service in the AUS TSL with its own CA and these CRL URLs.
fn hostile_service(f: &Fixture, name: &str, crl_urls: Vec<String>) -> (Value, TestCa) {
    let ca = TestCa::new(TestKey::P256(p256_key()), &format!("CN={name},O=Test,C=AU"));
    let mut svc = f.service();
    svc["name"] = json!(name);
    svc["ca"] = json!(STANDARD.encode(&ca.der));
    svc["crl_urls"] = json!(crl_urls);
    (svc, ca)
}

#[tokio::test]
async fn hostile_crl_urls_fail_closed_for_their_ca_only() {
    // The crash loop of the review: `file:///dev/zero` was read until the process died,
    // at start, before serving; a FIFO blocked the refresh for ever.
    let f = Fixture::new();
    nix::unistd::mkfifo(&f.path("fifo.crl"), nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    std::fs::write(f.path("huge.crl"), vec![0x30; cert::MAX_CRL_BYTES + 1]).unwrap();
    let (zero, zero_ca) = hostile_service(&f, "Zero CA", vec!["file:///dev/zero".into()]);
    let (fifo, fifo_ca) = hostile_service(&f, "Fifo CA", vec![f.url("fifo.crl")]);
    let (huge, huge_ca) = hostile_service(&f, "Huge CA", vec![f.url("huge.crl")]);
    let (http, http_ca) = hostile_service(&f, "Http CA", vec!["http://127.0.0.1:9/ca.crl".into()]);
    f.publish_tsl(1, NOW - 60, NOW + DAY, vec![f.service(), zero, fifo, huge, http]);
    let store = TrustStore::load(&f.config(), &f.state_dir()).unwrap();
    let report = tokio::time::timeout(std::time::Duration::from_secs(60), store.refresh(NOW))
        .await
        .expect("the refresh ends by itself")
        .unwrap();
    let mut failed: Vec<(String, String)> = report.failed.iter().map(|x| (x.list.clone(), x.reason.clone())).collect();
    failed.sort();
    assert_eq!(
        failed,
        vec![
            ("CRL of Fifo CA".into(), "not a regular file".into()),
            ("CRL of Http CA".into(), "URLs inside lists must be https://".into()),
            ("CRL of Huge CA".into(), "document too large".into()),
            ("CRL of Zero CA".into(), "file:// URL is outside the governance list's directory".into()),
        ]
    );
    // The honest CA goes on; each hostile one fails closed (docs/credentials.md §6 rule 5).
    assert!(store.verify_credential(&f.vds(&profile_data("AUS-7Q2M9K4T")), NOW).is_ok());
    for (ca, label) in [(zero_ca, "Zero CA"), (fifo_ca, "Fifo CA"), (huge_ca, "Huge CA"), (http_ca, "Http CA")] {
        let k = p256_key();
        let cert = ca.issue(default_signer_spec(), &k);
        let err = store.verify_credential(&f.vds_by(&profile_data("AUS-7Q2M9K4T"), &cert, &k), NOW).unwrap_err();
        assert_eq!(err, TrustError::Unavailable(format!("CRL of {label} is not current")));
    }
    let status = store.status(NOW);
    let zero = status.entries.iter().find(|e| e.name == "CRL of Zero CA").unwrap();
    assert_eq!(zero.error.as_deref(), Some("file:// URL is outside the governance list's directory"));
}

#[tokio::test]
async fn a_slow_source_blocks_neither_readers_nor_another_refresh() {
    // The first connection to this server hangs (until the fetch timeout); later ones
    // are closed at once.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (reached, hanging) = tokio::sync::oneshot::channel();
    let server = tokio::spawn(async move {
        let (first, _) = listener.accept().await.unwrap();
        let _ = reached.send(());
        loop {
            let Ok((later, _)) = listener.accept().await else { break };
            drop(later);
        }
        drop(first);
    });
    let f = Fixture::new();
    let (slow, _) = hostile_service(&f, "Slow CA", vec![format!("https://127.0.0.1:{port}/ca.crl")]);
    f.publish_tsl(1, NOW - 60, NOW + DAY, vec![f.service(), slow]);
    let config =
        TrustConfig { allow_private_networks: true, fetch_timeout: std::time::Duration::from_secs(10), ..f.config() };
    let store = TrustStore::load(&config, &f.state_dir()).unwrap();
    let first = tokio::spawn({
        let store = store.clone();
        async move { store.refresh(NOW).await }
    });
    hanging.await.unwrap();
    let second = store.refresh(NOW).await.unwrap();
    assert!(!first.is_finished(), "the second refresh had to wait for the first one");
    assert!(store.verify_credential(&f.vds(&profile_data("AUS-7Q2M9K4T")), NOW).is_ok());
    assert_eq!(second.failed.len(), 1, "{:?}", second.failed);
    let first = first.await.unwrap().unwrap();
    assert_eq!(first.failed.len(), 1, "{:?}", first.failed);
    server.abort();
}

#[tokio::test]
async fn a_crl_revokes_only_signers_of_the_ca_that_signed_it() {
    // docs/credentials.md §6 rule 10: another CA's CRL listing our signer's serial
    // (0x1234) revokes nothing of ours, neither at enrollment nor for enrolled devices.
    let f = Fixture::new();
    let (mut other, other_ca) = hostile_service(&f, "Other CA", vec![f.url("other.crl")]);
    other["vrl_url"] = json!(f.url("vrl.jws"));
    f.write("other.crl", &other_ca.crl(NOW - 60, Some(NOW + DAY), &[&[0x12, 0x34]]));
    f.publish_tsl(1, NOW - 60, NOW + DAY, vec![f.service(), other]);
    let store = f.store().await;
    assert!(store.verify_credential(&f.vds(&profile_data("AUS-7Q2M9K4T")), NOW).is_ok());
    assert_eq!(
        store.revoked_signers(),
        vec![RevokedSigner {
            ca_sha256: sha256_hex(&other_ca.der),
            ca_name: "Other CA".into(),
            serial_hex: "1234".into()
        }]
    );
    // A CRL signed by another key than its CA's is refused, so it lists nothing.
    f.write("other.crl", &f.ca.crl(NOW, Some(NOW + DAY), &[&[0x12, 0x34]]));
    let report = store.refresh(NOW).await.unwrap();
    assert_eq!(report.failed.len(), 1, "{:?}", report.failed);
    assert!(store.verify_credential(&f.vds(&profile_data("AUS-7Q2M9K4T")), NOW).is_ok());
}
