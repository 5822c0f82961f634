//! Test-only PKI: software keys, hand-built certificates, CRLs, signed lists and seals
//! in the real formats. The server itself never signs anything; only tests do.

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE, URL_SAFE_NO_PAD};
use der::asn1::{BitString, GeneralizedTime, OctetString, UtcTime};
use der::oid::ObjectIdentifier;
use der::{Any, Decode, Encode};
use serde_json::{Value, json};
use std::str::FromStr;
use std::sync::OnceLock;
use std::time::Duration;
use x509_cert::Certificate;
use x509_cert::TbsCertificate;
use x509_cert::certificate::Version;
use x509_cert::crl::{CertificateList, RevokedCert, TbsCertList};
use x509_cert::ext::Extension;
use x509_cert::ext::pkix::{BasicConstraints, ExtendedKeyUsage, KeyUsage, KeyUsages};
use x509_cert::name::Name;
use x509_cert::serial_number::SerialNumber;
use x509_cert::spki::{AlgorithmIdentifierOwned, SubjectPublicKeyInfoOwned};
use x509_cert::time::{Time, Validity};

pub const EKU_VDS: &str = "2.23.136.1.1.14.2";
pub const DAY: i64 = 86_400;
/// 2026-01-01T00:00:00Z: "now" in most tests.
pub const NOW: i64 = 1_767_225_600;

fn oid(s: &str) -> ObjectIdentifier {
    ObjectIdentifier::new(s).unwrap()
}

/// A software signing key of any type a CA may have.
#[derive(Clone)]
pub enum TestKey {
    P256(p256::ecdsa::SigningKey),
    P384(p384::ecdsa::SigningKey),
    Rsa(rsa::RsaPrivateKey),
    RsaPss(rsa::RsaPrivateKey),
}

pub fn p256_key() -> p256::ecdsa::SigningKey {
    p256::ecdsa::SigningKey::random(&mut rand_core::OsRng)
}

/// The pre-generated RSA-4096 test key (keygen is too slow in debug builds).
pub fn rsa4096() -> rsa::RsaPrivateKey {
    static KEY: OnceLock<rsa::RsaPrivateKey> = OnceLock::new();
    KEY.get_or_init(|| {
        use rsa::pkcs8::DecodePrivateKey;
        rsa::RsaPrivateKey::from_pkcs8_pem(include_str!("testdata/rsa4096-test-only.pem")).unwrap()
    })
    .clone()
}

pub fn rsa2048() -> rsa::RsaPrivateKey {
    use rsa::pkcs8::DecodePrivateKey;
    rsa::RsaPrivateKey::from_pkcs8_pem(include_str!("testdata/rsa2048-test-only.pem")).unwrap()
}

fn ec_spki(curve: &str, point: &[u8]) -> SubjectPublicKeyInfoOwned {
    SubjectPublicKeyInfoOwned {
        algorithm: AlgorithmIdentifierOwned { oid: oid("1.2.840.10045.2.1"), parameters: Some(Any::from(&oid(curve))) },
        subject_public_key: BitString::from_bytes(point).unwrap(),
    }
}

pub fn p256_spki(key: &p256::ecdsa::SigningKey) -> SubjectPublicKeyInfoOwned {
    ec_spki("1.2.840.10045.3.1.7", key.verifying_key().to_encoded_point(false).as_bytes())
}

impl TestKey {
    pub fn spki(&self) -> SubjectPublicKeyInfoOwned {
        match self {
            Self::P256(k) => p256_spki(k),
            Self::P384(k) => ec_spki("1.3.132.0.34", k.verifying_key().to_encoded_point(false).as_bytes()),
            Self::Rsa(k) | Self::RsaPss(k) => {
                use rsa::pkcs8::EncodePublicKey;
                let der = k.to_public_key().to_public_key_der().unwrap();
                SubjectPublicKeyInfoOwned::from_der(der.as_bytes()).unwrap()
            }
        }
    }

    pub fn alg(&self) -> AlgorithmIdentifierOwned {
        match self {
            Self::P256(_) => AlgorithmIdentifierOwned { oid: oid("1.2.840.10045.4.3.2"), parameters: None },
            Self::P384(_) => AlgorithmIdentifierOwned { oid: oid("1.2.840.10045.4.3.3"), parameters: None },
            Self::Rsa(_) => {
                AlgorithmIdentifierOwned { oid: oid("1.2.840.113549.1.1.11"), parameters: Some(Any::null()) }
            }
            Self::RsaPss(_) => {
                let params = rsa::pkcs1::RsaPssParams::new::<sha2::Sha256>(32).to_der().unwrap();
                AlgorithmIdentifierOwned {
                    oid: oid("1.2.840.113549.1.1.10"),
                    parameters: Some(Any::from_der(&params).unwrap()),
                }
            }
        }
    }

    pub fn sign(&self, msg: &[u8]) -> Vec<u8> {
        use rsa::signature::{RandomizedSigner, SignatureEncoding, Signer};
        match self {
            Self::P256(k) => {
                let s: p256::ecdsa::Signature = k.sign(msg);
                s.to_der().as_bytes().to_vec()
            }
            Self::P384(k) => {
                let s: p384::ecdsa::Signature = k.sign(msg);
                s.to_der().as_bytes().to_vec()
            }
            Self::Rsa(k) => rsa::pkcs1v15::SigningKey::<sha2::Sha256>::new(k.clone()).sign(msg).to_vec(),
            Self::RsaPss(k) => rsa::pss::BlindedSigningKey::<sha2::Sha256>::new(k.clone())
                .sign_with_rng(&mut rand_core::OsRng, msg)
                .to_vec(),
        }
    }
}

pub fn name(s: &str) -> Name {
    Name::from_str(s).unwrap()
}

pub fn time(t: i64) -> Time {
    let d = Duration::from_secs(u64::try_from(t).unwrap());
    if t < 2_524_608_000 {
        Time::UtcTime(UtcTime::from_unix_duration(d).unwrap())
    } else {
        Time::GeneralTime(GeneralizedTime::from_unix_duration(d).unwrap())
    }
}

pub fn ext(id: &str, critical: bool, value: Vec<u8>) -> Extension {
    Extension { extn_id: oid(id), critical, extn_value: OctetString::new(value).unwrap() }
}

pub fn eku(critical: bool, purposes: &[&str]) -> Extension {
    let v = ExtendedKeyUsage(purposes.iter().map(|p| oid(p)).collect()).to_der().unwrap();
    ext("2.5.29.37", critical, v)
}

pub fn key_usage(flags: impl Into<der::flagset::FlagSet<KeyUsages>>) -> Extension {
    ext("2.5.29.15", true, KeyUsage(flags.into()).to_der().unwrap())
}

pub fn ca_constraints() -> Extension {
    ext("2.5.29.19", true, BasicConstraints { ca: true, path_len_constraint: Some(0) }.to_der().unwrap())
}

fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    if content.len() < 128 {
        out.push(content.len() as u8);
    } else {
        out.push(0x82);
        out.extend_from_slice(&(content.len() as u16).to_be_bytes());
    }
    out.extend_from_slice(content);
    out
}

/// DER of the ICAO DocumentTypeList extension value.
pub fn dtl_value(version: u8, codes: &[&str]) -> Vec<u8> {
    let mut set = Vec::new();
    let mut sorted: Vec<Vec<u8>> = codes.iter().map(|c| tlv(0x13, c.as_bytes())).collect();
    sorted.sort();
    for c in sorted {
        set.extend(c);
    }
    let mut seq = tlv(0x02, &[version]);
    seq.extend(tlv(0x31, &set));
    tlv(0x30, &seq)
}

pub fn dtl(codes: &[&str]) -> Extension {
    ext("2.23.136.1.1.6.2", false, dtl_value(0, codes))
}

/// What goes into a certificate.
pub struct CertSpec {
    pub serial: Vec<u8>,
    pub subject: Name,
    pub not_before: i64,
    pub not_after: i64,
    pub extensions: Vec<Extension>,
    pub version: Version,
}

impl CertSpec {
    pub fn new(subject: &str, serial: u32) -> Self {
        Self {
            serial: serial.to_be_bytes().to_vec(),
            subject: name(subject),
            not_before: NOW - 365 * DAY,
            not_after: NOW + 365 * DAY,
            extensions: Vec::new(),
            version: Version::V3,
        }
    }

    pub fn validity(mut self, not_before: i64, not_after: i64) -> Self {
        self.not_before = not_before;
        self.not_after = not_after;
        self
    }

    pub fn ext(mut self, e: Extension) -> Self {
        self.extensions.push(e);
        self
    }
}

/// Builds and signs a certificate for `spki` issued by `issuer` (name + key).
pub fn make_cert(spec: CertSpec, spki: SubjectPublicKeyInfoOwned, issuer: &Name, issuer_key: &TestKey) -> Vec<u8> {
    let alg = issuer_key.alg();
    let tbs = TbsCertificate {
        version: spec.version,
        serial_number: SerialNumber::new(&spec.serial).unwrap(),
        signature: alg.clone(),
        issuer: issuer.clone(),
        validity: Validity { not_before: time(spec.not_before), not_after: time(spec.not_after) },
        subject: spec.subject,
        subject_public_key_info: spki,
        issuer_unique_id: None,
        subject_unique_id: None,
        extensions: if spec.extensions.is_empty() { None } else { Some(spec.extensions) },
    };
    let sig = issuer_key.sign(&tbs.to_der().unwrap());
    Certificate { tbs_certificate: tbs, signature_algorithm: alg, signature: BitString::from_bytes(&sig).unwrap() }
        .to_der()
        .unwrap()
}

/// A CA: its key, name and self-signed certificate.
#[derive(Clone)]
pub struct TestCa {
    pub key: TestKey,
    pub name: Name,
    pub der: Vec<u8>,
}

impl TestCa {
    pub fn new(key: TestKey, subject: &str) -> Self {
        Self::with_validity(key, subject, NOW - 2 * 365 * DAY, NOW + 5 * 365 * DAY)
    }

    pub fn with_validity(key: TestKey, subject: &str, not_before: i64, not_after: i64) -> Self {
        let n = name(subject);
        let spec = CertSpec::new(subject, 1).validity(not_before, not_after).ext(ca_constraints());
        let der = make_cert(spec, key.spki(), &n, &key);
        Self { key, name: n, der }
    }

    /// Issues a signer certificate for `signer` with the default VDS-NC profile
    /// (EKU VDS-NC signer, KeyUsage digitalSignature) unless `spec` says otherwise.
    pub fn issue(&self, spec: CertSpec, signer: &p256::ecdsa::SigningKey) -> Vec<u8> {
        make_cert(spec, p256_spki(signer), &self.name, &self.key)
    }

    pub fn crl(&self, this_update: i64, next_update: Option<i64>, revoked: &[&[u8]]) -> Vec<u8> {
        let alg = self.key.alg();
        let revoked: Vec<RevokedCert> = revoked
            .iter()
            .map(|s| RevokedCert {
                serial_number: SerialNumber::new(s).unwrap(),
                revocation_date: time(this_update),
                crl_entry_extensions: None,
            })
            .collect();
        let tbs = TbsCertList {
            version: Version::V2,
            signature: alg.clone(),
            issuer: self.name.clone(),
            this_update: time(this_update),
            next_update: next_update.map(time),
            revoked_certificates: if revoked.is_empty() { None } else { Some(revoked) },
            crl_extensions: None,
        };
        let sig = self.key.sign(&tbs.to_der().unwrap());
        CertificateList {
            tbs_cert_list: tbs,
            signature_algorithm: alg,
            signature: BitString::from_bytes(&sig).unwrap(),
        }
        .to_der()
        .unwrap()
    }
}

pub fn pem(label: &str, der: &[u8]) -> String {
    der::pem::encode_string(label, der::pem::LineEnding::LF, der).unwrap()
}

/// A list signer: P-256 key and its (self-signed) certificate.
pub struct ListSigner {
    pub key: p256::ecdsa::SigningKey,
    pub der: Vec<u8>,
}

impl ListSigner {
    pub fn new(cn: &str) -> Self {
        Self::with_validity(cn, NOW - 365 * DAY, NOW + 365 * DAY)
    }

    pub fn with_validity(cn: &str, not_before: i64, not_after: i64) -> Self {
        let key = p256_key();
        let tk = TestKey::P256(key.clone());
        let spec = CertSpec::new(&format!("CN={cn}"), 7).validity(not_before, not_after);
        let der = make_cert(spec, tk.spki(), &name(&format!("CN={cn}")), &tk);
        Self { key, der }
    }

    pub fn pin(&self) -> String {
        super::sha256_hex(&self.der)
    }

    /// A compact JWS of `payload` with header `{alg, typ, x5c}`.
    pub fn sign(&self, typ: &str, payload: &Value) -> Vec<u8> {
        let header = json!({"alg": "ES256", "typ": typ, "x5c": [STANDARD.encode(&self.der)]});
        self.sign_with_header(&header, payload)
    }

    pub fn sign_with_header(&self, header: &Value, payload: &Value) -> Vec<u8> {
        use p256::ecdsa::signature::Signer;
        let h = URL_SAFE_NO_PAD.encode(serde_json::to_vec(header).unwrap());
        let p = URL_SAFE_NO_PAD.encode(serde_json::to_vec(payload).unwrap());
        let input = format!("{h}.{p}");
        let sig: p256::ecdsa::Signature = self.key.sign(input.as_bytes());
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.to_bytes())).into_bytes()
    }
}

/// Builds a seal JSON: `data` signed by `key`, `cer` = `cert`.
pub fn make_seal(data: &Value, cert: &[u8], key: &p256::ecdsa::SigningKey, padded: bool) -> Value {
    use p256::ecdsa::signature::Signer;
    let canonical = super::jcs::canonicalize(data).unwrap();
    let sig: p256::ecdsa::Signature = key.sign(&canonical);
    let enc = |b: &[u8]| {
        if padded { URL_SAFE.encode(b) } else { URL_SAFE_NO_PAD.encode(b) }
    };
    json!({"data": data, "sig": {"alg": "ES256", "cer": enc(cert), "sigvl": enc(&sig.to_bytes())}})
}

pub fn b64u(v: &Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
}

pub fn profile_data(tid: &str) -> Value {
    json!({
        "hdr": {"t": "symbolon.id", "v": 1, "is": "AUS"},
        "msg": {
            "tid": tid,
            "pid": {"gn": "JANE", "fn": "CITIZEN", "dob": "1990-04-01", "nat": "AUS"},
            "doc": {"t": "P", "no": "PA1234567", "is": "AUS", "exp": "2031-04-01"},
            "exp": "2030-01-01"
        }
    })
}
