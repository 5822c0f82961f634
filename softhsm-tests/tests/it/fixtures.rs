//! The fixture generator's output, checked with OpenSSL and independent parsing.

use std::path::Path;
use std::process::Command;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use der::{Decode as _, Encode as _};
use p256::ecdsa::signature::Verifier as _;
use serde_json::Value;
use softhsm_tests::fixtures::pki::{
    CaAlg, DocumentTypeList, OID_ICAO_DOCUMENT_TYPE_LIST, OID_ICAO_VDS_NC_SIGNER, sha256_hex,
};
use softhsm_tests::fixtures::{FixtureOptions, Manifest, Outcome, generate};
use softhsm_tests::jose;
use x509_cert::Certificate;
use x509_cert::crl::CertificateList;

const NOW: i64 = 1_790_000_000;

fn fast_options() -> FixtureOptions {
    FixtureOptions { now: Some(NOW), ca_alg: CaAlg::P256, state_ca_alg: CaAlg::Rsa2048, ..FixtureOptions::default() }
}

fn fixture(opts: &FixtureOptions) -> (tempfile::TempDir, Manifest) {
    let dir = tempfile::tempdir().unwrap();
    let manifest = generate(dir.path(), opts).unwrap();
    (dir, manifest)
}

fn openssl(dir: &Path, args: &[&str]) -> (bool, String) {
    let output = Command::new("openssl").args(args).current_dir(dir).output().expect("openssl is installed");
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    (output.status.success(), text)
}

fn read_cert(dir: &Path, rel: &str) -> Certificate {
    let pem = std::fs::read_to_string(dir.join(rel)).unwrap();
    <Certificate as der::DecodePem>::from_pem(pem.as_bytes()).unwrap()
}

fn file_of_url(url: &str) -> std::path::PathBuf {
    url.strip_prefix("file://").expect("file:// URL").into()
}

/// Decodes a list, checks its header is exactly {alg, typ, x5c} and its
/// signature verifies with x5c[0]; returns (payload, signer pin).
fn open_list(path: &Path, typ: &str) -> (Value, String) {
    let jws = std::fs::read_to_string(path).unwrap();
    let decoded = jose::decode_compact(&jws).unwrap();
    let header = decoded.header.as_object().unwrap();
    assert_eq!(header.keys().map(String::as_str).collect::<Vec<_>>(), ["alg", "typ", "x5c"]);
    assert_eq!(header["alg"], "ES256");
    assert_eq!(header["typ"], typ);
    let x5c = header["x5c"].as_array().unwrap();
    assert_eq!(x5c.len(), 1);
    let der = STANDARD.decode(x5c[0].as_str().unwrap()).unwrap();
    let cert = Certificate::from_der(&der).unwrap();
    let key = softhsm_tests::fixtures::pki::p256_key_of(&cert).unwrap();
    jose::verify_es256(&jws, &key).unwrap();
    assert!(!jws.contains('='), "compact JWS parts are unpadded");
    (decoded.payload, sha256_hex(&der))
}

#[test]
fn lists_chain_from_governance_pin_to_every_ca() {
    let (dir, manifest) = fixture(&fast_options());
    let (gov, gov_pin) = open_list(&file_of_url(&manifest.governance.url), "symbolon-gl+jws");
    assert_eq!(manifest.governance.signer_sha256, vec![gov_pin.clone()]);
    assert_eq!(gov["type"], "governance");
    assert_eq!(gov["seq"], 12);
    assert!(gov["issued"].as_i64().unwrap() <= NOW);
    assert!(gov["next_update"].as_i64().unwrap() > NOW);

    let mut cas = Vec::new();
    for scheme in gov["schemes"].as_array().unwrap() {
        let (sl, pin) = open_list(&file_of_url(scheme["url"].as_str().unwrap()), "symbolon-sl+jws");
        assert_eq!(scheme["signer_sha256"][0], pin);
        assert_eq!(sl["type"], "scheme");
        assert_eq!(sl["scheme"], scheme["id"]);
        for tsl_ref in sl["tsls"].as_array().unwrap() {
            let (tsl, pin) = open_list(&file_of_url(tsl_ref["url"].as_str().unwrap()), "symbolon-tsl+jws");
            assert_eq!(tsl_ref["signer_sha256"][0], pin);
            assert_eq!(tsl["territory"], tsl_ref["territory"]);
            for service in tsl["services"].as_array().unwrap() {
                let ca = STANDARD.decode(service["ca"].as_str().unwrap()).unwrap();
                Certificate::from_der(&ca).unwrap();
                let (vrl, pin) = open_list(&file_of_url(service["vrl_url"].as_str().unwrap()), "symbolon-vrl+jws");
                assert_eq!(service["vrl_signer_sha256"][0], pin);
                assert_eq!(vrl["territory"], tsl["territory"]);
                for crl in service["crl_urls"].as_array().unwrap() {
                    assert!(file_of_url(crl.as_str().unwrap()).exists());
                }
                cas.push((tsl["territory"].clone(), service["status"].clone(), sha256_hex(&ca)));
            }
        }
    }
    // Every CA of the manifest that claims a TSL is in it with that status.
    for entry in &manifest.cas {
        let der = std::fs::read(dir.path().join(&entry.cert_der)).unwrap();
        let found = cas.iter().find(|(_, _, pin)| *pin == sha256_hex(&der));
        match (&entry.territory, found) {
            (Some(t), Some((territory, status, _))) => {
                assert_eq!(territory, t.as_str());
                assert_eq!(status, entry.status.as_deref().unwrap());
            }
            (None, None) => {}
            other => panic!("{}: {other:?}", entry.name),
        }
    }
}

#[test]
fn stale_and_next_governance_variants() {
    let (dir, manifest) = fixture(&fast_options());
    let (stale, pin1) = open_list(&dir.path().join("governance-stale.jws"), "symbolon-gl+jws");
    let (next, pin2) = open_list(&dir.path().join("governance-next.jws"), "symbolon-gl+jws");
    assert_eq!(pin1, manifest.governance.signer_sha256[0]);
    assert_eq!(pin2, manifest.governance.signer_sha256[0]);
    assert_eq!(stale["seq"], 13);
    assert!(stale["next_update"].as_i64().unwrap() < NOW);
    assert_eq!(next["seq"], 14);
    assert!(next["next_update"].as_i64().unwrap() > NOW);
    for scenario in &manifest.scenarios {
        for [target, with] in &scenario.replace {
            assert!(dir.path().join(target).exists());
            assert!(dir.path().join(with).exists());
        }
    }
}

#[test]
fn signer_certificates_verify_with_openssl() {
    let (dir, manifest) = fixture(&fast_options());
    let d = dir.path();
    let verify = |ca: &str, cert: &str| openssl(d, &["verify", "-purpose", "any", "-CAfile", ca, cert]);
    for cert in
        ["aus-signer", "aus-signer-revoked", "aus-signer-bad-key-usage", "aus-signer-wrong-eku", "aus-signer-nv-only"]
    {
        let (ok, text) = verify("certs/aus-ca.pem", &format!("certs/{cert}.pem"));
        assert!(ok, "{cert}: {text}");
    }
    assert!(verify("certs/uto-csca.pem", "certs/uto-signer-id.pem").0);
    assert!(verify("certs/uto-csca.pem", "certs/uto-signer-vacc.pem").0);
    assert!(verify("certs/unlisted-ca.pem", "certs/unlisted-signer.pem").0);
    // OpenSSL checks validity against the real clock, not --now: use -attime.
    let at = NOW.to_string();
    let (ok, text) = openssl(
        d,
        &["verify", "-purpose", "any", "-attime", &at, "-CAfile", "certs/aus-ca.pem", "certs/aus-signer-expired.pem"],
    );
    assert!(!ok && text.contains("expired"), "{text}");
    let (ok, text) = openssl(
        d,
        &[
            "verify",
            "-purpose",
            "any",
            "-attime",
            &at,
            "-CAfile",
            "certs/aus-ca.pem",
            "certs/aus-signer-not-yet-valid.pem",
        ],
    );
    assert!(!ok && text.contains("not yet valid"), "{text}");
    // Same name as the AUS CA, other key: OpenSSL must not chain it.
    let (ok, _) = verify("certs/aus-ca.pem", "certs/impostor-signer.pem");
    assert!(!ok);
    // The critical ICAO EKU does not upset OpenSSL 3 even in strict mode.
    let (ok, text) = openssl(
        d,
        &["verify", "-x509_strict", "-purpose", "any", "-CAfile", "certs/aus-ca.pem", "certs/aus-signer.pem"],
    );
    assert!(ok, "{text}");
    assert!(manifest.cas.iter().any(|c| c.name == "uto-csca" && c.alg == CaAlg::Rsa2048));
}

#[test]
fn crls_verify_with_openssl_and_revoke_the_right_serial() {
    let (dir, _) = fixture(&fast_options());
    let d = dir.path();
    for (crl, ca) in [
        ("crl/aus-ca.crl", "certs/aus-ca.pem"),
        ("crl/aus-ca-stale.crl", "certs/aus-ca.pem"),
        ("crl/uto-csca.crl", "certs/uto-csca.pem"),
    ] {
        let (ok, text) = openssl(d, &["crl", "-inform", "DER", "-in", crl, "-CAfile", ca, "-noout"]);
        assert!(ok && text.contains("verify OK"), "{crl}: {text}");
    }
    // `openssl crl` exits 0 on a bad signature; it only prints the failure.
    let (_, text) =
        openssl(d, &["crl", "-inform", "DER", "-in", "crl/aus-ca.crl", "-CAfile", "certs/impostor-ca.pem", "-noout"]);
    assert!(text.contains("verify failure"), "{text}");

    let revoked = read_cert(d, "certs/aus-signer-revoked.pem");
    let crl = CertificateList::from_der(&std::fs::read(d.join("crl/aus-ca.crl")).unwrap()).unwrap();
    let serials: Vec<_> =
        crl.tbs_cert_list.revoked_certificates.unwrap().into_iter().map(|r| r.serial_number).collect();
    assert_eq!(serials, vec![revoked.tbs_certificate.serial_number]);
    let next = crl.tbs_cert_list.next_update.unwrap().to_unix_duration().as_secs() as i64;
    assert!(next > NOW);
    let stale = CertificateList::from_der(&std::fs::read(d.join("crl/aus-ca-stale.crl")).unwrap()).unwrap();
    let next = stale.tbs_cert_list.next_update.unwrap().to_unix_duration().as_secs() as i64;
    assert!(next < NOW);
}

#[test]
fn signer_extensions_are_shaped_like_state_signers() {
    let (dir, _) = fixture(&fast_options());
    let cert = read_cert(dir.path(), "certs/aus-signer.pem");
    let exts = cert.tbs_certificate.extensions.unwrap();
    let dtl = exts.iter().find(|e| e.extn_id == OID_ICAO_DOCUMENT_TYPE_LIST).unwrap();
    assert!(!dtl.critical);
    // Re-encode the expected value independently and compare bytes.
    let expected = DocumentTypeList::new(&["SI"]).unwrap().to_der().unwrap();
    assert_eq!(dtl.extn_value.as_bytes(), expected.as_slice());
    // SEQUENCE { INTEGER 0, SET { PrintableString "SI" } }
    assert_eq!(dtl.extn_value.as_bytes(), [0x30, 0x09, 0x02, 0x01, 0x00, 0x31, 0x04, 0x13, 0x02, b'S', b'I']);
    let eku = exts.iter().find(|e| e.extn_id.to_string() == "2.5.29.37").unwrap();
    assert!(eku.critical);
    let purposes = x509_cert::ext::pkix::ExtendedKeyUsage::from_der(eku.extn_value.as_bytes()).unwrap();
    assert_eq!(purposes.0, vec![OID_ICAO_VDS_NC_SIGNER]);
    assert!(!exts.iter().any(|e| e.extn_id.to_string() == "2.5.29.15"), "no KeyUsage");

    let bad = read_cert(dir.path(), "certs/aus-signer-bad-key-usage.pem");
    let exts = bad.tbs_certificate.extensions.unwrap();
    let ku = exts.iter().find(|e| e.extn_id.to_string() == "2.5.29.15").unwrap();
    let ku = x509_cert::ext::pkix::KeyUsage::from_der(ku.extn_value.as_bytes()).unwrap();
    assert!(!ku.digital_signature());
    assert!(ku.key_agreement());
}

#[test]
fn seals_verify_and_match_the_manifest() {
    let (dir, manifest) = fixture(&fast_options());
    assert!(manifest.seals.len() >= 20);
    for seal in &manifest.seals {
        let bytes = std::fs::read(dir.path().join(&seal.file)).unwrap();
        assert_eq!(jose::b64u(&bytes), seal.vds, "{}", seal.name);
        assert!(!seal.vds.contains('='));
        let value: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(value["data"]["hdr"]["t"], seal.doc_type.as_str());
        assert_eq!(value["data"]["hdr"]["is"], seal.issuing_state.as_str());
        assert_eq!(value["data"]["msg"]["tid"].as_str(), seal.tid.as_deref());
        let cer = value["sig"]["cer"].as_str().unwrap();
        let sigvl = value["sig"]["sigvl"].as_str().unwrap();
        assert_eq!(cer.ends_with('=') || sigvl.ends_with('='), seal.padded, "{}", seal.name);
        let cert_der = jose::b64u_decode(cer).unwrap();
        let signer = read_cert(dir.path(), &seal.signer_cert);
        assert_eq!(cert_der, signer.to_der().unwrap(), "{}", seal.name);
        let raw = jose::b64u_decode(sigvl).unwrap();
        assert_eq!(raw.len(), 64);
        let key = p256::ecdsa::VerifyingKey::from_sec1_bytes(
            signer.tbs_certificate.subject_public_key_info.subject_public_key.raw_bytes(),
        )
        .unwrap();
        let signature = p256::ecdsa::Signature::from_slice(&raw).unwrap();
        let canonical = serde_json_canonicalizer::to_vec(&value["data"]).unwrap();
        let verified = key.verify(&canonical, &signature).is_ok();
        assert_eq!(verified, seal.name != "tampered", "{}", seal.name);
    }
    let outcome = |name: &str| manifest.seal(name).unwrap().expected;
    assert_eq!(outcome("valid_full"), Outcome::Ok);
    assert_eq!(outcome("valid_state_rsa_chain"), Outcome::Ok);
    assert_eq!(outcome("revoked_by_crl"), Outcome::RevokedCredential);
    assert_eq!(outcome("revoked_by_vrl"), Outcome::RevokedCredential);
    assert_eq!(outcome("expired_credential"), Outcome::ExpiredCredential);
    assert_eq!(outcome("tampered"), Outcome::UntrustedCredential);
    assert_eq!(
        manifest.seal("valid_full").unwrap().claims,
        [
            "given_name",
            "family_name",
            "birthdate",
            "nationality",
            "document_type",
            "document_number",
            "issuing_country",
            "document_expiry"
        ]
    );
    let ok_tids: std::collections::HashSet<_> =
        manifest.seals.iter().filter(|s| s.expected == Outcome::Ok).map(|s| s.tid.clone().unwrap()).collect();
    assert!(ok_tids.len() >= 6, "distinct tids for valid seals");
    // The VRL-revoked tid is the one on the VRL.
    let (vrl, _) = open_list(&dir.path().join("vrl/aus.jws"), "symbolon-vrl+jws");
    assert_eq!(vrl["revoked"][0]["tid"].as_str(), manifest.seal("revoked_by_vrl").unwrap().tid.as_deref());
    // The state seal is not in canonical form: a verifier must apply JCS.
    let state = std::fs::read(dir.path().join("seals/valid_state_rsa_chain.json")).unwrap();
    let value: Value = serde_json::from_slice(&state).unwrap();
    assert_ne!(serde_json::to_vec(&value["data"]).unwrap(), state);
    assert!(String::from_utf8(state).unwrap().contains("\"t\": \"symbolon.id\",\n      \"v\": 1,"));
}

#[test]
fn structure_is_deterministic_keys_are_fresh() {
    let (_a, first) = fixture(&fast_options());
    let (_b, second) = fixture(&fast_options());
    let shape = |m: &Manifest| {
        (
            m.files.iter().map(|f| (f.path.clone(), f.purpose.clone())).collect::<Vec<_>>(),
            m.seals.iter().map(|s| (s.name.clone(), s.tid.clone(), s.expected)).collect::<Vec<_>>(),
        )
    };
    assert_eq!(shape(&first), shape(&second));
    assert_ne!(first.governance.signer_sha256, second.governance.signer_sha256);
}

#[test]
fn rsa4096_ca_uses_sha256_with_rsa_and_verifies() {
    let cache = tempfile::tempdir().unwrap();
    let opts = FixtureOptions {
        ca_alg: CaAlg::Rsa4096,
        state_ca_alg: CaAlg::Rsa4096,
        rsa_key_cache: Some(cache.path().to_owned()),
        ..fast_options()
    };
    let (dir, _) = fixture(&opts);
    let (ok, text) = openssl(dir.path(), &["x509", "-in", "certs/aus-signer.pem", "-noout", "-text"]);
    assert!(ok && text.contains("sha256WithRSAEncryption"), "{text}");
    let (ok, text) = openssl(dir.path(), &["x509", "-in", "certs/aus-ca.pem", "-noout", "-text"]);
    assert!(ok && text.contains("(4096 bit)"), "{text}");
    let (ok, text) =
        openssl(dir.path(), &["verify", "-purpose", "any", "-CAfile", "certs/aus-ca.pem", "certs/aus-signer.pem"]);
    assert!(ok, "{text}");
    let (ok, text) = openssl(
        dir.path(),
        &["crl", "-inform", "DER", "-in", "crl/aus-ca.crl", "-CAfile", "certs/aus-ca.pem", "-noout"],
    );
    assert!(ok && text.contains("verify OK"), "{text}");
    // The cache is reused: the second run has the same CA key.
    let (dir2, _) = fixture(&opts);
    let key = |d: &Path| std::fs::read(d.join("keys/aus-ca.key.pem")).unwrap();
    assert_eq!(key(dir.path()), key(dir2.path()));
}

#[test]
fn cli_writes_a_manifest() {
    let dir = tempfile::tempdir().unwrap();
    let status = Command::new(env!("CARGO_BIN_EXE_symbolon-fixtures"))
        .args(["--out", dir.path().to_str().unwrap(), "--now", &NOW.to_string()])
        .args(["--state-ca-alg", "rsa2048", "--base-url", "file:///srv/fixtures/"])
        .status()
        .unwrap();
    assert!(status.success());
    let manifest = Manifest::load(dir.path()).unwrap();
    assert_eq!(manifest.generated_at, NOW);
    assert_eq!(manifest.governance.url, "file:///srv/fixtures/governance.jws");
    assert!(manifest.files.iter().any(|f| f.path == "manifest.json"));
}
