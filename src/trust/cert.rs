//! X.509 done by hand with `x509-cert`: the checks docs/credentials.md §3.3 needs and nothing more.
//!
//! Generic WebPKI validators reject real state-issued signer certificates (critical
//! ICAO EKU, no KeyUsage, RSA-4096 CAs), so the chain here is exactly one step: a CA
//! pinned in a TSL (or given to `vds verify --ca`) and the signer certificate it issued.

use der::asn1::{AnyRef, PrintableStringRef};
use der::oid::ObjectIdentifier;
use der::{Decode, Encode, Reader, SliceReader, Tag, Tagged};
use sha2::Digest;
use std::collections::BTreeSet;
use x509_cert::Certificate;
use x509_cert::crl::CertificateList;
use x509_cert::ext::pkix::{ExtendedKeyUsage, IssuingDistributionPoint, KeyUsage};
use x509_cert::name::Name;
use x509_cert::spki::{AlgorithmIdentifierOwned, SubjectPublicKeyInfoOwned};

/// Why a certificate or CRL was not accepted. Messages name the rule, not the content.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct CertError(pub String);

/// A list or CRL may be dated at most this far ahead of our clock (docs/credentials.md §3.2).
pub const MAX_CLOCK_AHEAD: i64 = 300;

fn err(msg: impl Into<String>) -> CertError {
    CertError(msg.into())
}

const fn oid(s: &str) -> ObjectIdentifier {
    ObjectIdentifier::new_unwrap(s)
}

/// ICAO DocumentTypeList certificate extension.
pub const OID_DOCUMENT_TYPE_LIST: ObjectIdentifier = oid("2.23.136.1.1.6.2");
/// ICAO VDS-NC signer extended key usage.
pub const OID_EKU_VDS_NC_SIGNER: ObjectIdentifier = oid("2.23.136.1.1.14.2");

const ID_EC_PUBLIC_KEY: ObjectIdentifier = oid("1.2.840.10045.2.1");
const SECP256R1: ObjectIdentifier = oid("1.2.840.10045.3.1.7");
const SECP384R1: ObjectIdentifier = oid("1.3.132.0.34");
const RSA_ENCRYPTION: ObjectIdentifier = oid("1.2.840.113549.1.1.1");
const RSASSA_PSS: ObjectIdentifier = oid("1.2.840.113549.1.1.10");
const MGF1: ObjectIdentifier = oid("1.2.840.113549.1.1.8");
const SHA256_WITH_RSA: ObjectIdentifier = oid("1.2.840.113549.1.1.11");
const SHA384_WITH_RSA: ObjectIdentifier = oid("1.2.840.113549.1.1.12");
const SHA512_WITH_RSA: ObjectIdentifier = oid("1.2.840.113549.1.1.13");
const ECDSA_WITH_SHA256: ObjectIdentifier = oid("1.2.840.10045.4.3.2");
const ECDSA_WITH_SHA384: ObjectIdentifier = oid("1.2.840.10045.4.3.3");
const ECDSA_WITH_SHA512: ObjectIdentifier = oid("1.2.840.10045.4.3.4");
const SHA256: ObjectIdentifier = oid("2.16.840.1.101.3.4.2.1");
const SHA384: ObjectIdentifier = oid("2.16.840.1.101.3.4.2.2");
const SHA512: ObjectIdentifier = oid("2.16.840.1.101.3.4.2.3");

const EXT_KEY_USAGE: ObjectIdentifier = oid("2.5.29.15");
const EXT_EKU: ObjectIdentifier = oid("2.5.29.37");
/// Extensions a signer certificate may mark critical without being rejected.
const KNOWN_EXTENSIONS: &[ObjectIdentifier] = &[
    EXT_KEY_USAGE,
    EXT_EKU,
    OID_DOCUMENT_TYPE_LIST,
    oid("2.5.29.19"),         // basicConstraints
    oid("2.5.29.14"),         // subjectKeyIdentifier
    oid("2.5.29.35"),         // authorityKeyIdentifier
    oid("2.5.29.17"),         // subjectAltName
    oid("2.5.29.18"),         // issuerAltName
    oid("2.5.29.32"),         // certificatePolicies
    oid("2.5.29.31"),         // cRLDistributionPoints
    oid("2.5.29.16"),         // privateKeyUsagePeriod
    oid("1.3.6.1.5.5.7.1.1"), // authorityInfoAccess
];
const CRL_NUMBER: ObjectIdentifier = oid("2.5.29.20");
const DELTA_CRL_INDICATOR: ObjectIdentifier = oid("2.5.29.27");
const ISSUING_DISTRIBUTION_POINT: ObjectIdentifier = oid("2.5.29.28");
const CERTIFICATE_ISSUER: ObjectIdentifier = oid("2.5.29.29");
const AUTHORITY_KEY_IDENTIFIER: ObjectIdentifier = oid("2.5.29.35");

/// Largest RSA modulus accepted (state CAs use up to 4096; leave room).
const MAX_RSA_BITS: usize = 8192;
/// Largest CRL accepted, DER or PEM.
pub const MAX_CRL_BYTES: usize = 8 * 1024 * 1024;

/// A public key that can verify certificate and CRL signatures.
#[derive(Debug, Clone)]
pub(crate) enum PublicKey {
    P256(p256::ecdsa::VerifyingKey),
    P384(p384::ecdsa::VerifyingKey),
    Rsa(rsa::RsaPublicKey),
}

impl PublicKey {
    fn from_spki(spki: &SubjectPublicKeyInfoOwned) -> Result<Self, CertError> {
        let bits = spki.subject_public_key.as_bytes().ok_or_else(|| err("public key bit string has unused bits"))?;
        let alg = &spki.algorithm;
        if alg.oid == ID_EC_PUBLIC_KEY {
            let curve = alg
                .parameters
                .as_ref()
                .and_then(|p| p.decode_as::<ObjectIdentifier>().ok())
                .ok_or_else(|| err("EC key without a named curve"))?;
            if curve == SECP256R1 {
                p256::ecdsa::VerifyingKey::from_sec1_bytes(bits)
                    .map(Self::P256)
                    .map_err(|_| err("invalid P-256 public key"))
            } else if curve == SECP384R1 {
                p384::ecdsa::VerifyingKey::from_sec1_bytes(bits)
                    .map(Self::P384)
                    .map_err(|_| err("invalid P-384 public key"))
            } else {
                Err(err("unsupported EC curve"))
            }
        } else if alg.oid == RSA_ENCRYPTION {
            let key = rsa::pkcs1::RsaPublicKey::from_der(bits).map_err(|_| err("invalid RSA public key"))?;
            let n = rsa::BigUint::from_bytes_be(key.modulus.as_bytes());
            let e = rsa::BigUint::from_bytes_be(key.public_exponent.as_bytes());
            rsa::RsaPublicKey::new_with_max_size(n, e, MAX_RSA_BITS)
                .map(Self::Rsa)
                .map_err(|_| err("unsupported RSA public key"))
        } else {
            Err(err("unsupported public key algorithm"))
        }
    }

    /// Verifies `sig` over `msg` under the X.509 signature algorithm `alg`.
    pub(crate) fn verify(&self, alg: &AlgorithmIdentifierOwned, msg: &[u8], sig: &[u8]) -> Result<(), CertError> {
        use rsa::signature::Verifier;
        let bad = || err("signature does not verify");
        let ecdsa_hash = if alg.oid == ECDSA_WITH_SHA256 {
            Some(Hash::Sha256)
        } else if alg.oid == ECDSA_WITH_SHA384 {
            Some(Hash::Sha384)
        } else if alg.oid == ECDSA_WITH_SHA512 {
            Some(Hash::Sha512)
        } else {
            None
        };
        if let Some(hash) = ecdsa_hash {
            if alg.parameters.is_some() {
                return Err(err("ECDSA algorithm identifier with parameters"));
            }
            use p256::ecdsa::signature::hazmat::PrehashVerifier;
            let digest = hash.digest(msg);
            return match self {
                Self::P256(k) => {
                    let s = p256::ecdsa::Signature::from_der(sig).map_err(|_| bad())?;
                    k.verify_prehash(&digest, &s).map_err(|_| bad())
                }
                Self::P384(k) => {
                    let s = p384::ecdsa::Signature::from_der(sig).map_err(|_| bad())?;
                    k.verify_prehash(&digest, &s).map_err(|_| bad())
                }
                Self::Rsa(_) => Err(err("ECDSA signature with an RSA key")),
            };
        }
        let Self::Rsa(key) = self else {
            return Err(err("unsupported signature algorithm for an EC key"));
        };
        if alg.oid == RSASSA_PSS {
            let (hash, salt_len) = pss_params(alg)?;
            let s = rsa::pss::Signature::try_from(sig).map_err(|_| bad())?;
            let key = key.clone();
            return match hash {
                Hash::Sha256 => {
                    rsa::pss::VerifyingKey::<sha2::Sha256>::new_with_salt_len(key, salt_len).verify(msg, &s)
                }
                Hash::Sha384 => {
                    rsa::pss::VerifyingKey::<sha2::Sha384>::new_with_salt_len(key, salt_len).verify(msg, &s)
                }
                Hash::Sha512 => {
                    rsa::pss::VerifyingKey::<sha2::Sha512>::new_with_salt_len(key, salt_len).verify(msg, &s)
                }
            }
            .map_err(|_| bad());
        }
        // PKCS#1 v1.5: parameters must be absent or NULL (RFC 4055 §5).
        if let Some(p) = &alg.parameters
            && p.tag() != Tag::Null
        {
            return Err(err("RSA algorithm identifier with parameters"));
        }
        let s = rsa::pkcs1v15::Signature::try_from(sig).map_err(|_| bad())?;
        let key = key.clone();
        if alg.oid == SHA256_WITH_RSA {
            rsa::pkcs1v15::VerifyingKey::<sha2::Sha256>::new(key).verify(msg, &s)
        } else if alg.oid == SHA384_WITH_RSA {
            rsa::pkcs1v15::VerifyingKey::<sha2::Sha384>::new(key).verify(msg, &s)
        } else if alg.oid == SHA512_WITH_RSA {
            rsa::pkcs1v15::VerifyingKey::<sha2::Sha512>::new(key).verify(msg, &s)
        } else {
            return Err(err("unsupported signature algorithm"));
        }
        .map_err(|_| bad())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hash {
    Sha256,
    Sha384,
    Sha512,
}

impl Hash {
    fn from_oid(o: &ObjectIdentifier) -> Option<Self> {
        if *o == SHA256 {
            Some(Self::Sha256)
        } else if *o == SHA384 {
            Some(Self::Sha384)
        } else if *o == SHA512 {
            Some(Self::Sha512)
        } else {
            None
        }
    }

    fn digest(self, msg: &[u8]) -> Vec<u8> {
        match self {
            Self::Sha256 => sha2::Sha256::digest(msg).to_vec(),
            Self::Sha384 => sha2::Sha384::digest(msg).to_vec(),
            Self::Sha512 => sha2::Sha512::digest(msg).to_vec(),
        }
    }
}

/// RSASSA-PSS parameters: SHA-2 hash, MGF1 with the same hash, trailer 1.
fn pss_params(alg: &AlgorithmIdentifierOwned) -> Result<(Hash, usize), CertError> {
    let unsupported = || err("unsupported RSASSA-PSS parameters");
    let der = alg.parameters.as_ref().ok_or_else(unsupported)?.to_der().map_err(|_| unsupported())?;
    let params = rsa::pkcs1::RsaPssParams::from_der(&der).map_err(|_| unsupported())?;
    let hash = Hash::from_oid(&params.hash.oid).ok_or_else(unsupported)?;
    let mgf_hash = params.mask_gen.parameters.as_ref().map(|p| p.oid).ok_or_else(unsupported)?;
    if params.mask_gen.oid != MGF1 || Hash::from_oid(&mgf_hash) != Some(hash) {
        return Err(unsupported());
    }
    Ok((hash, usize::from(params.salt_len)))
}

/// The raw `tbs` TLV of a signed X.509 structure: signatures are over these exact
/// bytes, not over a re-encoding.
fn tbs_bytes(der: &[u8]) -> Result<&[u8], CertError> {
    let parse = || -> der::Result<&[u8]> {
        let mut r = SliceReader::new(der)?;
        let tbs = r.sequence(|r| {
            let tbs = r.tlv_bytes()?;
            r.tlv_bytes()?;
            r.tlv_bytes()?;
            Ok(tbs)
        })?;
        r.finish(tbs)
    };
    parse().map_err(|_| err("not a signed DER structure"))
}

fn unix(t: x509_cert::time::Time) -> i64 {
    i64::try_from(t.to_unix_duration().as_secs()).unwrap_or(i64::MAX)
}

/// Whether two names are the same: equal DER, or equal after case folding and
/// whitespace collapsing of string attribute values (RFC 5280 §7.1, simplified).
pub(crate) fn names_match(a: &Name, b: &Name) -> bool {
    if let (Ok(x), Ok(y)) = (a.to_der(), b.to_der())
        && x == y
    {
        return true;
    }
    normalized_name(a) == normalized_name(b)
}

fn normalized_name(n: &Name) -> Vec<Vec<(String, Vec<u8>)>> {
    n.0.iter()
        .map(|rdn| {
            let mut atvs: Vec<(String, Vec<u8>)> = rdn
                .0
                .iter()
                .map(|atv| {
                    let value = match atv.value.tag() {
                        Tag::PrintableString | Tag::Utf8String | Tag::Ia5String | Tag::TeletexString => {
                            String::from_utf8_lossy(atv.value.value())
                                .split_whitespace()
                                .collect::<Vec<_>>()
                                .join(" ")
                                .to_lowercase()
                                .into_bytes()
                        }
                        _ => atv.value.value().to_vec(),
                    };
                    (atv.oid.to_string(), value)
                })
                .collect();
            atvs.sort();
            atvs
        })
        .collect()
}

/// A CA certificate from a TSL service or a `--ca` file.
#[derive(Debug, Clone)]
pub struct CaCert {
    pub(crate) cert: Certificate,
    pub(crate) key: PublicKey,
    /// SHA-256 of the DER, lower-case hex: how revoked signers are attributed to a CA.
    pub sha256: String,
    pub not_before: i64,
    pub not_after: i64,
}

impl CaCert {
    /// Parses a DER CA certificate whose key is RSA, P-256 or P-384.
    pub fn parse(der: &[u8]) -> Result<Self, CertError> {
        let cert = Certificate::from_der(der).map_err(|_| err("CA certificate is not DER X.509"))?;
        let key = PublicKey::from_spki(&cert.tbs_certificate.subject_public_key_info)?;
        let v = &cert.tbs_certificate.validity;
        let (not_before, not_after) = (unix(v.not_before), unix(v.not_after));
        Ok(Self { key, sha256: super::sha256_hex(der), not_before, not_after, cert })
    }

    /// Parses one or more CA certificates from PEM (`CERTIFICATE` blocks) or one DER.
    pub fn parse_file(bytes: &[u8]) -> Result<Vec<Self>, CertError> {
        if !looks_like_pem(bytes) {
            return Self::parse(bytes).map(|c| vec![c]);
        }
        let text = std::str::from_utf8(bytes).map_err(|_| err("PEM is not UTF-8"))?;
        let mut out = Vec::new();
        for block in pem_blocks(text) {
            let (label, der) = der::pem::decode_vec(block.as_bytes()).map_err(|_| err("bad PEM"))?;
            if label == "CERTIFICATE" {
                out.push(Self::parse(&der)?);
            }
        }
        if out.is_empty() {
            return Err(err("no CERTIFICATE in PEM"));
        }
        Ok(out)
    }

    /// Subject common name or the whole subject, for messages.
    pub fn subject(&self) -> String {
        self.cert.tbs_certificate.subject.to_string()
    }

    /// Whether this CA issued `signer`: issuer name matches and the signature verifies.
    pub(crate) fn issued(&self, signer: &SignerCert) -> bool {
        names_match(&signer.cert.tbs_certificate.issuer, &self.cert.tbs_certificate.subject)
            && self.key.verify(&signer.cert.signature_algorithm, &signer.tbs, &signer.signature).is_ok()
    }

    /// Whether `t` is within the CA's validity.
    pub fn valid_at(&self, t: i64) -> bool {
        self.not_before <= t && t <= self.not_after
    }
}

/// A VDS signer certificate (`sig.cer`): X.509 v3 with an EC P-256 key.
#[derive(Debug, Clone)]
pub struct SignerCert {
    pub(crate) cert: Certificate,
    tbs: Vec<u8>,
    signature: Vec<u8>,
    pub(crate) key: p256::ecdsa::VerifyingKey,
    /// Serial number bytes as encoded (two's complement, big endian), lower-case hex.
    pub serial_hex: String,
    pub not_before: i64,
    pub not_after: i64,
}

impl SignerCert {
    /// Parses the DER signer certificate: version 3 and a P-256 key are required.
    pub fn parse(der: &[u8]) -> Result<Self, CertError> {
        let cert = Certificate::from_der(der).map_err(|_| err("signer certificate is not DER X.509"))?;
        if cert.tbs_certificate.version != x509_cert::certificate::Version::V3 {
            return Err(err("signer certificate is not X.509 v3"));
        }
        let key = match PublicKey::from_spki(&cert.tbs_certificate.subject_public_key_info)? {
            PublicKey::P256(k) => k,
            _ => return Err(err("signer key is not EC P-256")),
        };
        let tbs = tbs_bytes(der)?.to_vec();
        let signature = cert.signature.as_bytes().ok_or_else(|| err("signature bit string has unused bits"))?.to_vec();
        let v = &cert.tbs_certificate.validity;
        let (not_before, not_after) = (unix(v.not_before), unix(v.not_after));
        let serial_hex = super::hex(cert.tbs_certificate.serial_number.as_bytes());
        Ok(Self { cert, tbs, signature, key, serial_hex, not_before, not_after })
    }

    /// Raw serial number bytes, as CRLs carry them.
    pub(crate) fn serial(&self) -> &[u8] {
        self.cert.tbs_certificate.serial_number.as_bytes()
    }

    /// Whether `t` is within the certificate's validity.
    pub fn valid_at(&self, t: i64) -> bool {
        self.not_before <= t && t <= self.not_after
    }

    /// The extensions step 3 reads.
    pub fn extensions(&self) -> Result<SignerExtensions, CertError> {
        SignerExtensions::read(&self.cert)
    }
}

/// What step 3 of docs/credentials.md §3.3 needs from the signer certificate's extensions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SignerExtensions {
    /// ICAO DocumentTypeList codes, when the extension is present.
    pub doc_type_codes: Option<Vec<String>>,
    /// Extended key usage purposes, when the extension is present.
    pub eku: Option<Vec<ObjectIdentifier>>,
    /// `digitalSignature` of KeyUsage, when the extension is present.
    pub digital_signature: Option<bool>,
}

impl SignerExtensions {
    fn read(cert: &Certificate) -> Result<Self, CertError> {
        let mut out = Self::default();
        let mut seen = BTreeSet::new();
        for ext in cert.tbs_certificate.extensions.iter().flatten() {
            if !seen.insert(ext.extn_id.to_string()) {
                return Err(err("duplicate certificate extension"));
            }
            let value = ext.extn_value.as_bytes();
            if ext.extn_id == OID_DOCUMENT_TYPE_LIST {
                out.doc_type_codes = Some(parse_document_type_list(value)?);
            } else if ext.extn_id == EXT_EKU {
                let eku = ExtendedKeyUsage::from_der(value).map_err(|_| err("malformed extended key usage"))?;
                out.eku = Some(eku.0);
            } else if ext.extn_id == EXT_KEY_USAGE {
                let ku = KeyUsage::from_der(value).map_err(|_| err("malformed key usage"))?;
                out.digital_signature = Some(ku.digital_signature());
            } else if ext.critical && !KNOWN_EXTENSIONS.contains(&ext.extn_id) {
                return Err(err(format!("unknown critical extension {}", ext.extn_id)));
            }
        }
        Ok(out)
    }
}

/// Parses the ICAO DocumentTypeList extension value:
/// `SEQUENCE { version INTEGER (0), docTypeList SET OF PrintableString }`.
pub fn parse_document_type_list(value: &[u8]) -> Result<Vec<String>, CertError> {
    let parse = || -> der::Result<(u8, Vec<String>)> {
        let mut r = SliceReader::new(value)?;
        let out = r.sequence(|r| {
            let version: u8 = r.decode()?;
            let set: AnyRef<'_> = r.decode()?;
            set.tag().assert_eq(Tag::Set)?;
            let mut inner = SliceReader::new(set.value())?;
            let mut codes = Vec::new();
            while !inner.is_finished() {
                let code: PrintableStringRef<'_> = inner.decode()?;
                codes.push(code.as_str().to_owned());
            }
            Ok((version, codes))
        })?;
        r.finish(out)
    };
    match parse() {
        Ok((0, codes)) => Ok(codes),
        Ok(_) => Err(err("unsupported DocumentTypeList version")),
        Err(_) => Err(err("malformed DocumentTypeList")),
    }
}

/// A CRL (DER or PEM), parsed but not yet verified against a CA.
#[derive(Debug, Clone)]
pub struct Crl {
    list: CertificateList,
    tbs: Vec<u8>,
    signature: Vec<u8>,
    pub this_update: i64,
    /// `None` when the CRL has no `nextUpdate` (then it is never current).
    pub next_update: Option<i64>,
    revoked: BTreeSet<Vec<u8>>,
}

impl Crl {
    /// Parses a CRL from DER or PEM (`X509 CRL`). Delta and indirect CRLs, and CRLs
    /// scoped to CA/attribute certificates or reasons, are refused.
    pub fn parse(bytes: &[u8]) -> Result<Self, CertError> {
        if bytes.len() > MAX_CRL_BYTES {
            return Err(err("CRL too large"));
        }
        let der = if looks_like_pem(bytes) {
            let (label, der) = der::pem::decode_vec(bytes).map_err(|_| err("bad PEM CRL"))?;
            if label != "X509 CRL" {
                return Err(err("PEM block is not an X509 CRL"));
            }
            der
        } else {
            bytes.to_vec()
        };
        let list = CertificateList::from_der(&der).map_err(|_| err("CRL is not DER"))?;
        let tbs = tbs_bytes(&der)?.to_vec();
        let signature = list.signature.as_bytes().ok_or_else(|| err("CRL signature has unused bits"))?.to_vec();
        let t = &list.tbs_cert_list;
        for ext in t.crl_extensions.iter().flatten() {
            if ext.extn_id == ISSUING_DISTRIBUTION_POINT {
                let idp = IssuingDistributionPoint::from_der(ext.extn_value.as_bytes())
                    .map_err(|_| err("malformed issuing distribution point"))?;
                if idp.indirect_crl {
                    return Err(err("indirect CRLs are not supported"));
                }
                if idp.only_contains_ca_certs || idp.only_contains_attribute_certs || idp.only_some_reasons.is_some() {
                    return Err(err("partitioned CRLs are not supported"));
                }
            } else if ext.extn_id == DELTA_CRL_INDICATOR {
                return Err(err("delta CRLs are not supported"));
            } else if ext.critical && ext.extn_id != CRL_NUMBER && ext.extn_id != AUTHORITY_KEY_IDENTIFIER {
                return Err(err(format!("unknown critical CRL extension {}", ext.extn_id)));
            }
        }
        let mut revoked = BTreeSet::new();
        for entry in t.revoked_certificates.iter().flatten() {
            for ext in entry.crl_entry_extensions.iter().flatten() {
                if ext.extn_id == CERTIFICATE_ISSUER {
                    return Err(err("indirect CRLs are not supported"));
                }
                if ext.critical {
                    return Err(err("unknown critical CRL entry extension"));
                }
            }
            revoked.insert(entry.serial_number.as_bytes().to_vec());
        }
        Ok(Self {
            this_update: unix(t.this_update),
            next_update: t.next_update.map(unix),
            list,
            tbs,
            signature,
            revoked,
        })
    }

    /// Verifies the CRL was issued and signed by `ca`.
    pub fn verify(&self, ca: &CaCert) -> Result<(), CertError> {
        if !names_match(&self.list.tbs_cert_list.issuer, &ca.cert.tbs_certificate.subject) {
            return Err(err("CRL issuer is not the CA"));
        }
        ca.key.verify(&self.list.signature_algorithm, &self.tbs, &self.signature)
    }

    /// Whether the CRL is current at `now`: issued, and `nextUpdate` not passed.
    pub fn current_at(&self, now: i64) -> bool {
        self.next_update.is_some_and(|n| now <= n) && self.this_update <= now + MAX_CLOCK_AHEAD
    }

    /// Whether the serial number (raw bytes) is listed.
    pub fn is_revoked(&self, serial: &[u8]) -> bool {
        self.revoked.contains(serial)
    }

    /// Listed serial numbers as lower-case hex.
    pub fn revoked_serials_hex(&self) -> impl Iterator<Item = String> + '_ {
        self.revoked.iter().map(|s| super::hex(s))
    }
}

/// Fuzzing entry (`fuzz/fuzz_targets/crl.rs`): the whole input as a CRL (DER or PEM)
/// and as CA certificates; then, split as `u16 big-endian length || CA certificate(s)
/// || CRL`, the CRL's signature checked against those CAs, so the issuer comparison and
/// the signature parsers run. Any input must return, never panic.
#[doc(hidden)]
pub fn fuzz_crl(data: &[u8]) {
    let use_crl = |crl: &Crl| {
        let _ = crl.current_at(0);
        let _ = crl.current_at(i64::MAX);
        let _ = crl.current_at(i64::MIN);
        let _ = crl.is_revoked(&[1]);
        let _ = crl.revoked_serials_hex().count();
    };
    if let Ok(crl) = Crl::parse(data) {
        use_crl(&crl);
    }
    let _ = CaCert::parse_file(data);
    if let [a, b, rest @ ..] = data {
        let (ca, crl) = rest.split_at(usize::from(u16::from_be_bytes([*a, *b])).min(rest.len()));
        if let (Ok(cas), Ok(crl)) = (CaCert::parse_file(ca), Crl::parse(crl)) {
            use_crl(&crl);
            for ca in &cas {
                let _ = crl.verify(ca);
            }
        }
    }
}

fn looks_like_pem(bytes: &[u8]) -> bool {
    let start = bytes.iter().position(|b| !b.is_ascii_whitespace()).unwrap_or(bytes.len());
    bytes[start..].starts_with(b"-----BEGIN ")
}

/// Splits a PEM text into its `-----BEGIN`…`-----END …-----` blocks.
fn pem_blocks(text: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with("-----BEGIN ") {
            current = Some(String::new());
        }
        if let Some(block) = current.as_mut() {
            block.push_str(line);
            block.push('\n');
            if line.starts_with("-----END ") {
                blocks.extend(current.take());
            }
        }
    }
    blocks
}

/// The P-256 key and validity of a JWS `x5c[0]` list signer certificate.
pub(crate) fn list_signer(der: &[u8]) -> Result<(p256::ecdsa::VerifyingKey, i64, i64), CertError> {
    let cert = Certificate::from_der(der).map_err(|_| err("x5c[0] is not DER X.509"))?;
    let key = match PublicKey::from_spki(&cert.tbs_certificate.subject_public_key_info)? {
        PublicKey::P256(k) => k,
        _ => return Err(err("x5c[0] key is not EC P-256")),
    };
    let v = &cert.tbs_certificate.validity;
    Ok((key, unix(v.not_before), unix(v.not_after)))
}
