//! IdP metadata (SAML metadata §2.4.3): `EntityDescriptor` with `entityID`
//! `{issuer}/saml/metadata`, one signing `KeyDescriptor` per published SAML key, the
//! EC (`saml`) keys then the RSA (`saml-rsa`) ones, each purpose active first, then
//! next and retiring (so SPs trust a new key before it signs),
//! Single Logout and Single Sign-On over HTTP-Redirect, NameID formats persistent and
//! transient.

use super::c14n::DSIG_NS;
use super::cert::{CertificateParams, published_certificates};
use super::xml::XmlWriter;
use super::{BINDING_REDIRECT, MD_NS, NAMEID_PERSISTENT, NAMEID_TRANSIENT, SAMLP_NS, SamlError, b64, entity_id};
use crate::keyring::{KeyPurpose, KeyRing, KeyState};

/// The metadata document for `issuer` with the given signing certificates (DER).
pub fn idp_metadata(issuer: &str, certificates: &[Vec<u8>], want_requests_signed: bool) -> String {
    let base = issuer.trim_end_matches('/');
    let mut w = XmlWriter::new();
    w.start("md:EntityDescriptor", &[("xmlns:md", MD_NS), ("xmlns:ds", DSIG_NS), ("entityID", &entity_id(issuer))]);
    w.start(
        "md:IDPSSODescriptor",
        &[
            ("WantAuthnRequestsSigned", if want_requests_signed { "true" } else { "false" }),
            ("protocolSupportEnumeration", SAMLP_NS),
        ],
    );
    for der in certificates {
        w.start("md:KeyDescriptor", &[("use", "signing")]);
        w.start("ds:KeyInfo", &[]);
        w.start("ds:X509Data", &[]);
        w.leaf("ds:X509Certificate", &[], &b64(der));
        w.end();
        w.end();
        w.end();
    }
    w.leaf("md:SingleLogoutService", &[("Binding", BINDING_REDIRECT), ("Location", &format!("{base}/saml/slo"))], "");
    w.leaf("md:NameIDFormat", &[], NAMEID_PERSISTENT);
    w.leaf("md:NameIDFormat", &[], NAMEID_TRANSIENT);
    w.leaf("md:SingleSignOnService", &[("Binding", BINDING_REDIRECT), ("Location", &format!("{base}/saml/sso"))], "");
    w.finish()
}

/// Metadata with the certificates of every published SAML key (made when missing).
pub async fn idp_metadata_for(
    ring: &KeyRing,
    issuer: &str,
    params: &CertificateParams,
    want_requests_signed: bool,
    now: i64,
) -> Result<String, SamlError> {
    let mut ders: Vec<Vec<u8>> = Vec::new();
    for purpose in [KeyPurpose::Saml, KeyPurpose::SamlRsa] {
        let mut certs = published_certificates(ring, purpose, params, now).await?;
        certs.sort_by_key(|(e, _)| match e.state {
            KeyState::Active => 0,
            KeyState::Next => 1,
            _ => 2,
        });
        ders.extend(certs.into_iter().map(|(_, d)| d));
    }
    Ok(idp_metadata(issuer, &ders, want_requests_signed))
}
