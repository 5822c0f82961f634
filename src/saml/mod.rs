//! SAML 2.0 identity provider building blocks (docs/protocol.md §8): the SAML signing
//! certificate kept in the token, exclusive XML canonicalization and enveloped
//! XML-DSig computed by the `saml` key inside the HSM, `Response` / `LogoutResponse`
//! building, IdP metadata, and the HTTP-Redirect binding (inflate with a cap, strict
//! `AuthnRequest` / `LogoutRequest` parsing, query-string signature verification).
//!
//! Why not samael: its IdP signing only works with an in-memory private key through
//! libxmlsec1 (the key would have to leave the HSM); version 0.0.22 depends on the
//! `openssl` / `openssl-sys` crates even with default features off (a system OpenSSL
//! link the rest of Symbolon does without), its default `xmlsec` feature links libxml2
//! and libxmlsec1, and its redirect-binding verifier panics on some inputs. We need
//! two request types and two response types, so we parse them strictly with
//! quick-xml, write documents with a small deterministic writer and canonicalize our
//! own output with the exc-c14n implementation in [`c14n`], which the interop tests
//! check against xmlsec1 and xmllint.
//!
//! Nothing here knows HTTP: the routes (`/saml/metadata`, `/saml/sso`, `/saml/slo`)
//! call these functions.

pub mod c14n;
pub mod cert;
pub mod config;
pub mod dsig;
pub mod logout;
pub mod metadata;
pub mod redirect;
pub mod response;
pub mod xml;

pub use cert::{CertificateParams, SigningCertificate, active_certificate, ensure_certificate, published_certificates};
pub use config::{AttributeNameFormat, Claim, NameIdFormat, SamlConfig, SamlSpConfig, SignatureAlgorithm};
pub use redirect::{AuthnRequest, LogoutRequest, RedirectMessage, RequestError};
pub use response::{ClaimValue, ResponseParams, build_response};

use crate::keyring::KeyError;
use crate::keys::HsmError;

/// SAML protocol namespace.
pub const SAMLP_NS: &str = "urn:oasis:names:tc:SAML:2.0:protocol";
/// SAML assertion namespace.
pub const SAML_NS: &str = "urn:oasis:names:tc:SAML:2.0:assertion";
/// SAML metadata namespace.
pub const MD_NS: &str = "urn:oasis:names:tc:SAML:2.0:metadata";
/// Persistent NameID format.
pub const NAMEID_PERSISTENT: &str = "urn:oasis:names:tc:SAML:2.0:nameid-format:persistent";
/// Transient NameID format.
pub const NAMEID_TRANSIENT: &str = "urn:oasis:names:tc:SAML:2.0:nameid-format:transient";
/// Unspecified NameID format (SAML 1.1 URI, as SAML 2.0 core §8.3.1 names it).
pub const NAMEID_UNSPECIFIED: &str = "urn:oasis:names:tc:SAML:1.1:nameid-format:unspecified";
/// HTTP-Redirect binding.
pub const BINDING_REDIRECT: &str = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect";
/// HTTP-POST binding.
pub const BINDING_POST: &str = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST";
/// Signature algorithms (RFC 6931 §2.3): XML-DSig `SignatureMethod` and redirect-binding
/// `SigAlg`.
pub const ALG_ECDSA_SHA256: &str = "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha256";
pub const ALG_RSA_SHA256: &str = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256";
/// Top-level status codes.
pub const STATUS_SUCCESS: &str = "urn:oasis:names:tc:SAML:2.0:status:Success";
pub const STATUS_REQUESTER: &str = "urn:oasis:names:tc:SAML:2.0:status:Requester";
/// Second-level status: the requested NameID format cannot be issued (core §3.2.2.2).
pub const STATUS_INVALID_NAMEID_POLICY: &str = "urn:oasis:names:tc:SAML:2.0:status:InvalidNameIDPolicy";
/// The Asynchronous Single Logout protocol extension (OASIS SAML V2.0 Asynchronous
/// Single Logout Protocol Extension): its `Asynchronous` element in a
/// `LogoutRequest`'s `Extensions` means "send no `LogoutResponse`".
pub const ASYNC_SLO_NS: &str = "urn:oasis:names:tc:SAML:2.0:protocol:ext:async-slo";
/// Top-level status: the request failed on the IdP's side (SAML core §3.2.2.2).
pub const STATUS_RESPONDER: &str = "urn:oasis:names:tc:SAML:2.0:status:Responder";
/// Second-level status: the principal was not authenticated (SAML core §3.2.2.2).
pub const STATUS_AUTHN_FAILED: &str = "urn:oasis:names:tc:SAML:2.0:status:AuthnFailed";

/// Failures while producing SAML documents (input problems of SP requests are
/// [`RequestError`]s).
#[derive(Debug, thiserror::Error)]
pub enum SamlError {
    #[error(transparent)]
    Hsm(#[from] HsmError),
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error("XML: {0}")]
    Xml(#[from] c14n::XmlError),
    #[error("certificate: {0}")]
    Certificate(String),
    #[error("the active SAML key changed while signing; retry")]
    KeyChanged,
    #[error("configuration: {0}")]
    Config(String),
}

/// The IdP entity id for an issuer URL: `{issuer}/saml/metadata`.
pub fn entity_id(issuer: &str) -> String {
    format!("{}/saml/metadata", issuer.trim_end_matches('/'))
}

/// A fresh SAML ID: `_` and 32 hex digits (128 random bits; an NCName).
pub fn new_saml_id() -> String {
    use rand_core::{OsRng, RngCore};
    let mut b = [0u8; 16];
    OsRng.fill_bytes(&mut b);
    let mut s = String::with_capacity(33);
    s.push('_');
    for x in b {
        s.push_str(&format!("{x:02x}"));
    }
    s
}

/// `xs:dateTime` in UTC with a `Z`, seconds precision (SAML core §1.3.3).
pub fn saml_time(unix: i64) -> String {
    use time::macros::format_description;
    let fmt = format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| t.format(fmt).ok())
        .unwrap_or_else(|| "1970-01-01T00:00:00Z".to_string())
}

/// Parses an `xs:dateTime` (UTC `Z` or an offset, optional fractional seconds).
/// A value without a zone (some SPs omit the `Z`) is read as UTC.
pub fn parse_saml_time(s: &str) -> Option<i64> {
    use time::format_description::well_known::Rfc3339;
    let s = s.trim();
    let has_zone = s.ends_with('Z')
        || s.ends_with('z')
        || s.get(s.len().saturating_sub(6)..)
            .is_some_and(|t| t.starts_with(['+', '-']) && t.as_bytes().get(3) == Some(&b':'));
    let parsed = if has_zone {
        time::OffsetDateTime::parse(s, &Rfc3339)
    } else {
        time::OffsetDateTime::parse(&format!("{s}Z"), &Rfc3339)
    };
    parsed.ok().map(|t| t.unix_timestamp())
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests;
