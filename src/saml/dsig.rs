//! Enveloped XML-DSig with the HSM: exclusive c14n of the element being signed (after
//! the enveloped-signature transform), SHA-256 digest, `SignedInfo` canonicalized with
//! exclusive c14n, signed in the token: ECDSA-SHA256 by the `saml` key (signature value
//! raw `r||s` in base64, RFC 4051 §3.3.1 / XML-DSig 1.1) or RSA-SHA256 (PKCS#1 v1.5,
//! RFC 6931 §2.3.2) by the `saml-rsa` key, as the SP is configured; `KeyInfo` carrying
//! the certificate. The `Signature` goes right after the element's `Issuer` (SAML core
//! §5.4.1 and the schemas of `Assertion`, `Response`, `LogoutResponse`).

use quick_xml::Reader;
use quick_xml::events::Event;
use sha2::{Digest, Sha256};

use super::c14n::{self, DSIG_NS, Options, Selection, XmlError};
use super::cert::SigningCertificate;
use super::config::SignatureAlgorithm;
use super::xml::XmlWriter;
use super::{SamlError, b64};
use crate::keyring::KeyRing;

pub const ALG_EXC_C14N: &str = "http://www.w3.org/2001/10/xml-exc-c14n#";
pub const ALG_ENVELOPED: &str = "http://www.w3.org/2000/09/xmldsig#enveloped-signature";
pub const ALG_SHA256: &str = "http://www.w3.org/2001/04/xmlenc#sha256";
pub use super::{ALG_ECDSA_SHA256, ALG_RSA_SHA256};

/// A document with a `Signature` whose value is still to be filled in.
#[derive(Debug, Clone)]
pub struct Prepared {
    before: String,
    after: String,
    signed_info: Vec<u8>,
}

impl Prepared {
    /// The canonical `SignedInfo`: the bytes to sign.
    pub fn signed_info(&self) -> &[u8] {
        &self.signed_info
    }

    /// The signed document, given the signature over [`Self::signed_info`] (raw
    /// `r||s` for ECDSA, the PKCS#1 v1.5 octets for RSA).
    pub fn finish(self, signature: &[u8]) -> String {
        let mut s = self.before;
        s.push_str(&b64(signature));
        s.push_str(&self.after);
        s
    }
}

/// Byte offset just after the end of the first child element of the element with
/// `ID="id"`, which must be a `saml:Issuer`.
fn after_issuer(doc: &str, id: &str) -> Result<usize, XmlError> {
    let mut reader = Reader::from_str(doc);
    reader.config_mut().expand_empty_elements = true;
    let mut depth = 0usize;
    let mut target: Option<usize> = None;
    let mut first_child_seen = false;
    loop {
        let ev = reader.read_event().map_err(|e| XmlError::Malformed(e.to_string()))?;
        match ev {
            Event::Start(s) => {
                depth += 1;
                if let Some(t) = target {
                    if depth == t + 1 && !first_child_seen {
                        first_child_seen = true;
                        if s.local_name().as_ref() != b"Issuer" {
                            return Err(XmlError::Malformed("the signed element must start with Issuer".into()));
                        }
                    }
                } else {
                    for a in s.attributes() {
                        let a = a.map_err(|e| XmlError::Malformed(e.to_string()))?;
                        if a.key.as_ref() == b"ID" && c14n::attribute_value(&a.value)? == id {
                            target = Some(depth);
                        }
                    }
                }
            }
            Event::End(_) => {
                if let Some(t) = target
                    && depth == t + 1
                {
                    return usize::try_from(reader.buffer_position()).map_err(|_| XmlError::Malformed("offset".into()));
                }
                depth = depth.saturating_sub(1);
            }
            Event::Eof => return Err(XmlError::NotFound),
            _ => {}
        }
    }
}

/// Inserts a `Signature` template into `doc` for the element `ID="id"` and computes
/// the canonical `SignedInfo`.
pub fn prepare(doc: &str, id: &str, cert_der: &[u8], algorithm: SignatureAlgorithm) -> Result<Prepared, SamlError> {
    let canonical = c14n::canonicalize_enveloped(doc, id)?;
    let digest = Sha256::digest(&canonical);
    let at = after_issuer(doc, id)?;
    let (head, tail) = doc.split_at(at);
    let reference = format!("#{id}");
    let mut w = XmlWriter::new();
    w.start("ds:Signature", &[("xmlns:ds", DSIG_NS)]);
    w.start("ds:SignedInfo", &[]);
    w.leaf("ds:CanonicalizationMethod", &[("Algorithm", ALG_EXC_C14N)], "");
    w.leaf("ds:SignatureMethod", &[("Algorithm", algorithm.uri())], "");
    w.start("ds:Reference", &[("URI", &reference)]);
    w.start("ds:Transforms", &[]);
    w.leaf("ds:Transform", &[("Algorithm", ALG_ENVELOPED)], "");
    w.leaf("ds:Transform", &[("Algorithm", ALG_EXC_C14N)], "");
    w.end();
    w.leaf("ds:DigestMethod", &[("Algorithm", ALG_SHA256)], "");
    w.leaf("ds:DigestValue", &[], &b64(&digest));
    w.end(); // Reference
    w.end(); // SignedInfo
    w.start("ds:SignatureValue", &[]);
    let sig_head = w.partial();
    let mut w = XmlWriter::new();
    w.start("ds:KeyInfo", &[]);
    w.start("ds:X509Data", &[]);
    w.leaf("ds:X509Certificate", &[], &b64(cert_der));
    let sig_tail = format!("</ds:SignatureValue>{}</ds:Signature>", w.finish());
    debug_assert!(sig_head.ends_with("<ds:SignatureValue>"));
    let before = format!("{head}{sig_head}");
    let after = format!("{sig_tail}{tail}");
    let with_template = format!("{before}{after}");
    let select = c14n::signed_info_of(id);
    let signed_info = c14n::canonicalize(
        &with_template,
        &Options { selection: Selection::Element(&select), enveloped: false, inclusive_prefixes: &[] },
    )?;
    Ok(Prepared { before, after, signed_info })
}

/// Signs the element `ID="id"` of `doc` (enveloped, after its `Issuer`) with the
/// active key of `cert`'s algorithm in the HSM. Fails with [`SamlError::KeyChanged`]
/// when the active key is no longer the one `cert` belongs to (a rotation in between:
/// fetch the active certificate again and retry).
pub async fn sign_enveloped(
    ring: &KeyRing,
    doc: &str,
    id: &str,
    cert: &SigningCertificate,
) -> Result<String, SamlError> {
    let prepared = prepare(doc, id, &cert.der, cert.algorithm)?;
    let (label, sig) = sign_active(ring, cert.algorithm, prepared.signed_info().to_vec()).await?;
    if label != cert.label {
        return Err(SamlError::KeyChanged);
    }
    Ok(prepared.finish(&sig))
}

/// Signs `message` with the active key of `algorithm` in the HSM: (the key's label,
/// the signature as XML-DSig and the redirect binding carry it).
pub async fn sign_active(
    ring: &KeyRing,
    algorithm: SignatureAlgorithm,
    message: Vec<u8>,
) -> Result<(String, Vec<u8>), SamlError> {
    Ok(match algorithm {
        SignatureAlgorithm::EcdsaSha256 => {
            let (key, sig) = ring.sign_active(algorithm.purpose(), message).await?;
            (key.label, sig.to_vec())
        }
        SignatureAlgorithm::RsaSha256 => {
            let (key, sig) = ring.sign_active_rs256(algorithm.purpose(), message).await?;
            (key.label, sig)
        }
    })
}

/// Verifies an enveloped ECDSA-SHA256 signature made by [`prepare`] on the element
/// `ID="id"` with `key` (self-check and tests; SP responses are not verified here).
pub fn verify_enveloped(doc: &str, id: &str, key: &p256::ecdsa::VerifyingKey) -> Result<bool, SamlError> {
    use p256::ecdsa::signature::Verifier;
    let select = c14n::signed_info_of(id);
    let signed_info = c14n::canonicalize(
        doc,
        &Options { selection: Selection::Element(&select), enveloped: false, inclusive_prefixes: &[] },
    )?;
    let si = String::from_utf8_lossy(&signed_info).into_owned();
    let Some(digest_b64) = between(&si, "<ds:DigestValue>", "</ds:DigestValue>") else {
        return Ok(false);
    };
    if !si.contains(&format!("URI=\"#{id}\"")) || !si.contains(ALG_ECDSA_SHA256) {
        return Ok(false);
    }
    let canonical = c14n::canonicalize_enveloped(doc, id)?;
    if b64(&Sha256::digest(&canonical)) != digest_b64 {
        return Ok(false);
    }
    // The SignatureValue of the Signature that is a child of the element.
    let at = after_issuer(doc, id)?;
    let Some(value) = doc.get(at..).and_then(|rest| between(rest, "<ds:SignatureValue>", "</ds:SignatureValue>"))
    else {
        return Ok(false);
    };
    use base64::Engine;
    let Ok(raw) = base64::engine::general_purpose::STANDARD.decode(value) else {
        return Ok(false);
    };
    let Ok(sig) = p256::ecdsa::Signature::from_slice(&raw) else {
        return Ok(false);
    };
    Ok(key.verify(&signed_info, &sig).is_ok())
}

fn between<'a>(s: &'a str, open: &str, close: &str) -> Option<&'a str> {
    let i = s.find(open)? + open.len();
    let j = s[i..].find(close)? + i;
    Some(&s[i..j])
}
