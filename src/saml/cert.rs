//! The SAML signing certificates: X.509 v3, self-signed inside the HSM by the key they
//! carry (the `saml` EC key with ecdsa-with-SHA256, the `saml-rsa` RSA-3072 key with
//! sha256WithRSAEncryption), stored in the token as a `CKO_CERTIFICATE` with the key's
//! label, so every node serves the same certificate. A certificate imported by the
//! operator under the key's label is used as it is.

use std::time::Duration;

use der::asn1::{BitString, GeneralizedTime, OctetString, SetOfVec, UtcTime};
use der::oid::ObjectIdentifier;
use der::{Any, Decode, Encode, Tag};
use rand_core::{OsRng, RngCore};
use sha2::{Digest, Sha256};
use x509_cert::attr::AttributeTypeAndValue;
use x509_cert::certificate::{Certificate, TbsCertificate, Version};
use x509_cert::ext::Extension;
use x509_cert::ext::pkix::{BasicConstraints, KeyUsage, KeyUsages, SubjectKeyIdentifier};
use x509_cert::name::{Name, RdnSequence, RelativeDistinguishedName};
use x509_cert::serial_number::SerialNumber;
use x509_cert::spki::{AlgorithmIdentifierOwned, SubjectPublicKeyInfoOwned};
use x509_cert::time::{Time, Validity};

use super::SamlError;
use super::config::SignatureAlgorithm;
use crate::keyring::{CatalogEntry, KeyPurpose, KeyRing};
use crate::keys::HsmError;

/// ecdsa-with-SHA256 (RFC 5758).
pub const ECDSA_WITH_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.2");
/// sha256WithRSAEncryption (RFC 4055).
pub const SHA256_WITH_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.11");
const CN: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.4.3");
const BASIC_CONSTRAINTS: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.19");
const KEY_USAGE: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.15");
const SKI: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.14");
/// Backdating of `notBefore`, for relying parties whose clocks run slow.
const BACKDATE_S: i64 = 300;

/// What a new self-signed certificate looks like.
#[derive(Debug, Clone)]
pub struct CertificateParams {
    /// Subject (and issuer) common name, e.g. the issuer's host.
    pub subject_cn: String,
    /// From `now` (less 5 minutes) to `notAfter`.
    pub validity: Duration,
}

/// The public key of a SAML key, as its certificate must carry it.
enum PublicKey {
    Ec(crate::keys::EcPublicJwk),
    Rsa(rsa::RsaPublicKey),
}

impl PublicKey {
    async fn of(ring: &KeyRing, label: &str) -> Result<Self, SamlError> {
        if KeyPurpose::from_label(label) == Some(KeyPurpose::SamlRsa) {
            let parts = ring.public_rsa(label).await?;
            let key = parts.to_public_key().ok_or(HsmError::Malformed("RSA public key"))?;
            Ok(PublicKey::Rsa(key))
        } else {
            Ok(PublicKey::Ec(ring.public_jwk(label).await?))
        }
    }

    fn spki_der(&self) -> Result<Vec<u8>, SamlError> {
        let cert_err = |e: String| SamlError::Certificate(e);
        match self {
            PublicKey::Ec(jwk) => {
                use p256::pkcs8::EncodePublicKey;
                let public = jwk.to_public_key().ok_or(HsmError::Malformed("SAML key is not a P-256 key"))?;
                Ok(public.to_public_key_der().map_err(|e| cert_err(e.to_string()))?.as_bytes().to_vec())
            }
            PublicKey::Rsa(key) => {
                use rsa::pkcs8::EncodePublicKey;
                Ok(key.to_public_key_der().map_err(|e| cert_err(e.to_string()))?.as_bytes().to_vec())
            }
        }
    }

    fn algorithm(&self) -> AlgorithmIdentifierOwned {
        match self {
            PublicKey::Ec(_) => AlgorithmIdentifierOwned { oid: ECDSA_WITH_SHA256, parameters: None },
            // RFC 4055 §5: the parameters are NULL for sha256WithRSAEncryption.
            PublicKey::Rsa(_) => AlgorithmIdentifierOwned { oid: SHA256_WITH_RSA, parameters: Some(Any::null()) },
        }
    }
}

/// The certificate of the SAML key `label` (DER): read from the token, or made,
/// self-signed in the HSM and stored there when the token has none.
pub async fn ensure_certificate(
    ring: &KeyRing,
    label: &str,
    params: &CertificateParams,
    now: i64,
) -> Result<Vec<u8>, SamlError> {
    let public = PublicKey::of(ring, label).await?;
    let spki_der = public.spki_der()?;
    let spki = SubjectPublicKeyInfoOwned::from_der(&spki_der).map_err(|e| SamlError::Certificate(e.to_string()))?;
    let algorithm = public.algorithm();
    let rsa = matches!(public, PublicKey::Rsa(_));
    let tbs = tbs_certificate(spki, algorithm.clone(), params, now)?;
    let tbs_der = tbs.to_der().map_err(|e| SamlError::Certificate(e.to_string()))?;
    let l = label.to_string();
    let op = if rsa { crate::keys::HsmOp::SignRs256 } else { crate::keys::HsmOp::SignEs256 };
    let made = ring
        .pool()
        .run_as(op, move |s| {
            if let Some(existing) = s.certificate(&l)? {
                return Ok((existing, false));
            }
            let signature =
                if rsa { s.sign_rs256(&l, &tbs_der)? } else { ecdsa_sig_value(&s.sign_es256(&l, &tbs_der)?)? };
            let cert = Certificate {
                tbs_certificate: tbs.clone(),
                signature_algorithm: algorithm.clone(),
                signature: BitString::from_bytes(&signature)
                    .map_err(|_| HsmError::Malformed("signature bit string"))?,
            };
            let der = cert.to_der().map_err(|_| HsmError::Malformed("certificate encoding"))?;
            s.store_certificate(&l, &der)?;
            Ok((der, true))
        })
        .await?;
    let (der, created) = made;
    if created {
        tracing::info!(label, subject = %params.subject_cn, "made the self-signed SAML certificate");
    }
    check_matches_key(&der, &public, &spki_der)?;
    Ok(der)
}

/// The active SAML key's label and certificate: what signs responses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SigningCertificate {
    pub label: String,
    pub der: Vec<u8>,
    /// How the key signs (its purpose: `saml` or `saml-rsa`).
    pub algorithm: SignatureAlgorithm,
}

/// The certificate of the active key for `algorithm`, made when missing.
pub async fn active_certificate(
    ring: &KeyRing,
    params: &CertificateParams,
    algorithm: SignatureAlgorithm,
    now: i64,
) -> Result<SigningCertificate, SamlError> {
    let entry = ring.active(algorithm.purpose())?;
    let der = ensure_certificate(ring, &entry.label, params, now).await?;
    Ok(SigningCertificate { label: entry.label, der, algorithm })
}

/// Certificates of every published key of `purpose` (`next`, `active`, `retiring`),
/// made when missing, for the metadata.
pub async fn published_certificates(
    ring: &KeyRing,
    purpose: KeyPurpose,
    params: &CertificateParams,
    now: i64,
) -> Result<Vec<(CatalogEntry, Vec<u8>)>, SamlError> {
    let mut out = Vec::new();
    for entry in ring.published(purpose) {
        let der = ensure_certificate(ring, &entry.label, params, now).await?;
        out.push((entry, der));
    }
    Ok(out)
}

/// A certificate (possibly imported by the operator) must carry the key's public key.
fn check_matches_key(der: &[u8], public: &PublicKey, spki_der: &[u8]) -> Result<(), SamlError> {
    let cert = Certificate::from_der(der).map_err(|e| SamlError::Certificate(e.to_string()))?;
    let spki = &cert.tbs_certificate.subject_public_key_info;
    let matches = match public {
        PublicKey::Ec(jwk) => {
            let point = spki
                .subject_public_key
                .as_bytes()
                .ok_or_else(|| SamlError::Certificate("public key bit string".into()))?;
            let in_cert = crate::keys::EcPublicJwk::from_sec1(point);
            in_cert.as_ref().map(|j| (&j.x, &j.y)) == Some((&jwk.x, &jwk.y))
        }
        PublicKey::Rsa(_) => spki.to_der().ok().as_deref() == Some(spki_der),
    };
    if !matches {
        return Err(SamlError::Certificate(
            "the certificate in the token does not carry the SAML key's public key".into(),
        ));
    }
    Ok(())
}

fn tbs_certificate(
    spki: SubjectPublicKeyInfoOwned,
    algorithm: AlgorithmIdentifierOwned,
    params: &CertificateParams,
    now: i64,
) -> Result<TbsCertificate, SamlError> {
    let cert_err = |e: der::Error| SamlError::Certificate(e.to_string());
    let mut serial = [0u8; 16];
    OsRng.fill_bytes(&mut serial);
    serial[0] &= 0x7f;
    serial[0] |= 0x01;
    let name = common_name(&params.subject_cn)?;
    let not_after = now.saturating_add(i64::try_from(params.validity.as_secs()).unwrap_or(i64::MAX / 2));
    let spki_bits = spki.subject_public_key.raw_bytes().to_vec();
    let ski = Sha256::digest(&spki_bits)[..20].to_vec();
    let extensions = vec![
        Extension {
            extn_id: BASIC_CONSTRAINTS,
            critical: true,
            extn_value: OctetString::new(
                BasicConstraints { ca: false, path_len_constraint: None }.to_der().map_err(cert_err)?,
            )
            .map_err(cert_err)?,
        },
        Extension {
            extn_id: KEY_USAGE,
            critical: true,
            extn_value: OctetString::new(KeyUsage(KeyUsages::DigitalSignature.into()).to_der().map_err(cert_err)?)
                .map_err(cert_err)?,
        },
        Extension {
            extn_id: SKI,
            critical: false,
            extn_value: OctetString::new(
                SubjectKeyIdentifier(OctetString::new(ski).map_err(cert_err)?).to_der().map_err(cert_err)?,
            )
            .map_err(cert_err)?,
        },
    ];
    Ok(TbsCertificate {
        version: Version::V3,
        serial_number: SerialNumber::new(&serial).map_err(cert_err)?,
        signature: algorithm,
        issuer: name.clone(),
        validity: Validity { not_before: x509_time(now - BACKDATE_S)?, not_after: x509_time(not_after)? },
        subject: name,
        subject_public_key_info: spki,
        issuer_unique_id: None,
        subject_unique_id: None,
        extensions: Some(extensions),
    })
}

/// `CN=<cn>` as a UTF8String (any characters, no DN-string escaping involved).
fn common_name(cn: &str) -> Result<Name, SamlError> {
    let cert_err = |e: der::Error| SamlError::Certificate(e.to_string());
    if cn.is_empty() || cn.chars().count() > 64 {
        return Err(SamlError::Certificate("certificate subject CN must have 1 to 64 characters".into()));
    }
    let atv = AttributeTypeAndValue { oid: CN, value: Any::new(Tag::Utf8String, cn.as_bytes()).map_err(cert_err)? };
    let rdn = RelativeDistinguishedName(SetOfVec::try_from(vec![atv]).map_err(cert_err)?);
    Ok(RdnSequence(vec![rdn]))
}

/// UTCTime through 2049, GeneralizedTime from 2050 (RFC 5280 §4.1.2.5).
fn x509_time(t: i64) -> Result<Time, SamlError> {
    let d = Duration::from_secs(u64::try_from(t).map_err(|_| SamlError::Certificate("time before 1970".into()))?);
    let cert_err = |e: der::Error| SamlError::Certificate(e.to_string());
    Ok(if t < 2_524_608_000 {
        Time::UtcTime(UtcTime::from_unix_duration(d).map_err(cert_err)?)
    } else {
        Time::GeneralTime(GeneralizedTime::from_unix_duration(d).map_err(cert_err)?)
    })
}

/// DER `ECDSA-Sig-Value ::= SEQUENCE { r INTEGER, s INTEGER }` from raw `r||s`.
pub fn ecdsa_sig_value(raw: &[u8; 64]) -> Result<Vec<u8>, HsmError> {
    let sig =
        p256::ecdsa::Signature::from_slice(raw).map_err(|_| HsmError::Malformed("ECDSA signature out of range"))?;
    Ok(sig.to_der().as_bytes().to_vec())
}
