//! SAML configuration: the IdP side (`[saml]`) and one entry per service provider
//! (`[services.saml]`, or wherever the main configuration hangs it).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::ConfigProblem;

/// A claim of docs/protocol.md §7.3 that can become a SAML attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Claim {
    GivenName,
    FamilyName,
    Birthdate,
    #[serde(rename = "age_over_18")]
    AgeOver18,
    #[serde(rename = "age_over_21")]
    AgeOver21,
    Nationality,
    DocumentType,
    DocumentNumber,
    IssuingCountry,
    DocumentExpiry,
}

impl Claim {
    /// Every claim, in the order of the §7.3 table (also the attribute order).
    pub const ALL: [Claim; 10] = [
        Claim::GivenName,
        Claim::FamilyName,
        Claim::Birthdate,
        Claim::AgeOver18,
        Claim::AgeOver21,
        Claim::Nationality,
        Claim::DocumentType,
        Claim::DocumentNumber,
        Claim::IssuingCountry,
        Claim::DocumentExpiry,
    ];

    /// The claim's name in identity tokens.
    pub fn as_str(self) -> &'static str {
        match self {
            Claim::GivenName => "given_name",
            Claim::FamilyName => "family_name",
            Claim::Birthdate => "birthdate",
            Claim::AgeOver18 => "age_over_18",
            Claim::AgeOver21 => "age_over_21",
            Claim::Nationality => "nationality",
            Claim::DocumentType => "document_type",
            Claim::DocumentNumber => "document_number",
            Claim::IssuingCountry => "issuing_country",
            Claim::DocumentExpiry => "document_expiry",
        }
    }

    /// The standard attribute carrying this claim, for `attribute_name_format = "uri"`:
    /// (OID URN, LDAP name used as `FriendlyName`), from X.520 / RFC 4519 and SCHAC
    /// (docs/saml.md "Attribute names"). `None` where no standard attribute has the
    /// claim's meaning and value syntax.
    pub fn standard_attribute(self) -> Option<(&'static str, &'static str)> {
        match self {
            Claim::GivenName => Some(("urn:oid:2.5.4.42", "givenName")),
            Claim::FamilyName => Some(("urn:oid:2.5.4.4", "sn")),
            Claim::Birthdate => Some(("urn:oid:1.3.6.1.4.1.25178.1.2.3", "schacDateOfBirth")),
            _ => None,
        }
    }

    /// The claim named `name` (identity-token spelling).
    pub fn from_name(name: &str) -> Option<Claim> {
        Claim::ALL.into_iter().find(|c| c.as_str() == name)
    }
}

/// How responses to a service provider are signed (docs/saml.md "Signature
/// algorithms"): ECDSA P-256 with the `saml` key (the default), or RSA-3072 PKCS#1
/// v1.5 with the `saml-rsa` key, for SPs (Lasso / mod_auth_mellon, many SaaS) that
/// cannot verify ECDSA.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum SignatureAlgorithm {
    #[default]
    #[serde(rename = "ecdsa-sha256")]
    EcdsaSha256,
    #[serde(rename = "rsa-sha256")]
    RsaSha256,
}

impl SignatureAlgorithm {
    /// The XML-DSig / redirect-binding `SigAlg` URI (RFC 6931 §2.3).
    pub fn uri(self) -> &'static str {
        match self {
            SignatureAlgorithm::EcdsaSha256 => super::ALG_ECDSA_SHA256,
            SignatureAlgorithm::RsaSha256 => super::ALG_RSA_SHA256,
        }
    }

    /// The key purpose whose active key signs.
    pub fn purpose(self) -> crate::keyring::KeyPurpose {
        match self {
            SignatureAlgorithm::EcdsaSha256 => crate::keyring::KeyPurpose::Saml,
            SignatureAlgorithm::RsaSha256 => crate::keyring::KeyPurpose::SamlRsa,
        }
    }
}

/// The NameID format an SP gets when its `AuthnRequest` names none (or
/// `unspecified`); a request naming persistent or transient gets that.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NameIdFormat {
    /// The same NameID at every sign-in (SAML core §8.3.7).
    #[default]
    Persistent,
    /// A fresh opaque NameID per assertion (SAML core §8.3.8).
    Transient,
}

impl NameIdFormat {
    /// The format URI.
    pub fn uri(self) -> &'static str {
        match self {
            NameIdFormat::Persistent => super::NAMEID_PERSISTENT,
            NameIdFormat::Transient => super::NAMEID_TRANSIENT,
        }
    }

    /// The format a request's `NameIDPolicy Format` asks for: `Ok(None)` when it
    /// leaves the choice to the IdP (absent or `unspecified`), `Err` when we cannot
    /// issue it (SAML core §3.4.1.1: answer `InvalidNameIDPolicy`).
    pub fn requested(format: Option<&str>) -> Result<Option<NameIdFormat>, String> {
        match format {
            None | Some(super::NAMEID_UNSPECIFIED) => Ok(None),
            Some(super::NAMEID_PERSISTENT) => Ok(Some(NameIdFormat::Persistent)),
            Some(super::NAMEID_TRANSIENT) => Ok(Some(NameIdFormat::Transient)),
            Some(other) => Err(other.to_string()),
        }
    }
}

/// How attributes are named when `attribute_names` has no entry for a claim.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AttributeNameFormat {
    /// The claim's own name (`given_name`), NameFormat `basic`.
    #[default]
    Basic,
    /// The standard OID URN where one exists (`urn:oid:2.5.4.42` for `given_name`,
    /// see [`Claim::standard_attribute`]), NameFormat `uri`; other claims as `basic`.
    Uri,
}

/// The IdP side of SAML.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SamlConfig {
    /// Serve `/saml/*` (off by default).
    pub enabled: bool,
    /// Common name of the self-signed SAML certificate; empty = the host of
    /// `server.issuer`.
    pub certificate_subject: String,
    /// Validity of a self-signed SAML certificate made for a new key. SPs pin the
    /// certificate from metadata rather than check dates, and the certificate is
    /// replaced with its key at rotation, so the default is long: 5 years.
    #[serde(with = "humantime_serde")]
    pub certificate_validity: Duration,
    /// `NotOnOrAfter` of assertions and of `SubjectConfirmationData`, from issuance.
    #[serde(with = "humantime_serde")]
    pub assertion_lifetime: Duration,
    /// Clock skew allowed when checking `IssueInstant` of SP requests, and subtracted
    /// from `NotBefore`.
    #[serde(with = "humantime_serde")]
    pub clock_skew: Duration,
    /// Oldest `IssueInstant` accepted on an SP request.
    #[serde(with = "humantime_serde")]
    pub request_max_age: Duration,
    /// How long an SP may keep the session an assertion starts: the assertion's
    /// `SessionNotOnOrAfter`, and how long the IdP remembers that SP session for
    /// single logout (docs/protocol.md §8.1).
    #[serde(with = "humantime_serde")]
    pub session_lifetime: Duration,
}

impl Default for SamlConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            certificate_subject: String::new(),
            certificate_validity: Duration::from_secs(5 * 365 * 86_400 + 86_400),
            assertion_lifetime: Duration::from_secs(300),
            clock_skew: Duration::from_secs(60),
            request_max_age: Duration::from_secs(300),
            session_lifetime: Duration::from_secs(8 * 3600),
        }
    }
}

impl SamlConfig {
    /// What is wrong with `[saml]` itself (its service providers are checked with the
    /// `[[services]]` they belong to).
    pub fn problems(&self) -> Vec<ConfigProblem> {
        let mut p = Vec::new();
        if self.assertion_lifetime < Duration::from_secs(10) {
            p.push(ConfigProblem::new("saml.assertion_lifetime", "must be at least 10s"));
        }
        if self.request_max_age < Duration::from_secs(10) {
            p.push(ConfigProblem::new("saml.request_max_age", "must be at least 10s"));
        }
        if self.session_lifetime < Duration::from_secs(10) || self.session_lifetime > Duration::from_secs(30 * 86_400) {
            p.push(ConfigProblem::new("saml.session_lifetime", "must be between 10s and 30d"));
        }
        if self.certificate_validity < Duration::from_secs(86_400) {
            p.push(ConfigProblem::new("saml.certificate_validity", "must be at least 1 day"));
        }
        if self.certificate_subject.chars().count() > 64 {
            p.push(ConfigProblem::new("saml.certificate_subject", "at most 64 characters"));
        }
        p
    }

    /// The certificate CN: `certificate_subject`, else the host of `issuer`.
    pub fn subject_cn(&self, issuer: &str) -> String {
        if !self.certificate_subject.is_empty() {
            return self.certificate_subject.clone();
        }
        url::Url::parse(issuer)
            .ok()
            .and_then(|u| u.host_str().map(str::to_string))
            .unwrap_or_else(|| "symbolon".to_string())
    }
}

/// One SAML service provider.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SamlSpConfig {
    /// The SP's entity id (the `Issuer` of its requests, our `Audience`).
    pub entity_id: String,
    /// The one Assertion Consumer Service URL (HTTP-POST) responses go to.
    pub acs_url: String,
    /// The SP's SingleLogoutService (HTTP-Redirect): where `LogoutResponse`s go, and
    /// the `LogoutRequest`s of a logout started elsewhere; no SLO without it.
    #[serde(default)]
    pub slo_url: Option<String>,
    /// Attribute name per claim. A granted claim without an entry is sent under its
    /// own name (`given_name`, ...). Names containing `:` are sent with NameFormat
    /// `uri`, others with `basic`.
    #[serde(default)]
    pub attribute_names: BTreeMap<Claim, String>,
    /// The SP signs its redirect-binding requests; unsigned ones are refused.
    #[serde(default)]
    pub requests_signed: bool,
    /// The SP's signing certificate: inline PEM (a value starting with
    /// `-----BEGIN CERTIFICATE-----`) or the path of a PEM file. Public data, so
    /// inline is fine. Required when `requests_signed`.
    #[serde(default)]
    pub certificate_pem: Option<String>,
    /// Sign the `Response` as well as the `Assertion`.
    #[serde(default)]
    pub sign_response: bool,
    /// Scopes (docs/protocol.md §7.3) asked for when the request names none.
    #[serde(default)]
    pub default_scopes: Vec<String>,
    /// `ecdsa-sha256` (default) or `rsa-sha256`: the algorithm and key of the
    /// signatures this SP receives (assertions, responses, redirect-binding messages).
    #[serde(default)]
    pub signature_algorithm: SignatureAlgorithm,
    /// The NameID format when the request leaves it open: `persistent` (default) or
    /// `transient`.
    #[serde(default)]
    pub name_id_format: NameIdFormat,
    /// `basic` (default: claim names) or `uri` (standard OID URNs where they exist).
    /// An `attribute_names` entry wins over either.
    #[serde(default)]
    pub attribute_name_format: AttributeNameFormat,
}

impl SamlSpConfig {
    /// Checks URLs, scopes and the certificate; the message names the bad field.
    /// What is wrong with this service provider entry, reported at `at` (its path).
    pub fn problems(&self, at: &str) -> Vec<ConfigProblem> {
        self.validate().err().map(|e| ConfigProblem::new(at, e)).into_iter().collect()
    }

    /// The first problem, as `field: reason`.
    pub(super) fn validate(&self) -> Result<(), String> {
        if self.entity_id.trim().is_empty() {
            return Err("entity_id: empty".into());
        }
        check_url("acs_url", &self.acs_url)?;
        if let Some(u) = &self.slo_url {
            check_url("slo_url", u)?;
        }
        for s in &self.default_scopes {
            if !matches!(s.as_str(), "name" | "birthdate" | "age" | "nationality" | "document") {
                return Err(format!("default_scopes: unknown scope {s:?}"));
            }
        }
        for (claim, name) in &self.attribute_names {
            if name.trim().is_empty() {
                return Err(format!("attribute_names.{}: empty", claim.as_str()));
            }
        }
        if self.requests_signed && self.certificate_pem.is_none() {
            return Err("certificate_pem: required when requests_signed = true".into());
        }
        if self.certificate_pem.is_some() {
            self.certificate_der().map_err(|e| format!("certificate_pem: {e}"))?;
        }
        Ok(())
    }

    /// The DER of the SP's certificate (`None` when not configured).
    pub fn certificate_der(&self) -> Result<Option<Vec<u8>>, String> {
        let Some(v) = &self.certificate_pem else {
            return Ok(None);
        };
        let pem = if v.trim_start().starts_with("-----BEGIN") {
            v.clone()
        } else {
            // A path: a regular file of bounded size (src/files.rs), never a device or FIFO.
            crate::files::read_bounded_string(std::path::Path::new(v), crate::files::MAX_PEM_BYTES)
                .map_err(|e| e.to_string())?
        };
        use der::DecodePem;
        let cert = x509_cert::Certificate::from_pem(pem.trim().as_bytes())
            .map_err(|e| format!("not a PEM X.509 certificate: {e}"))?;
        use der::Encode;
        cert.to_der().map(Some).map_err(|e| e.to_string())
    }

    /// How the SP receives a claim: (`Name`, `NameFormat`, `FriendlyName`), and
    /// whether the value takes the standard attribute's syntax (`schacDateOfBirth`
    /// is `YYYYMMDD`).
    pub fn attribute_name(&self, claim: Claim) -> AttributeName<'_> {
        let standard = (self.attribute_name_format == AttributeNameFormat::Uri)
            .then(|| claim.standard_attribute())
            .flatten()
            .filter(|_| !self.attribute_names.contains_key(&claim));
        let (name, friendly) = match standard {
            Some((oid, friendly)) => (oid, friendly),
            None => (self.attribute_names.get(&claim).map_or(claim.as_str(), String::as_str), claim.as_str()),
        };
        let format = if name.contains(':') { ATTRNAME_FORMAT_URI } else { ATTRNAME_FORMAT_BASIC };
        AttributeName { name, format, friendly, standard_syntax: standard.is_some() }
    }
}

/// `NameFormat` of attributes named by a URI.
pub const ATTRNAME_FORMAT_URI: &str = "urn:oasis:names:tc:SAML:2.0:attrname-format:uri";
/// `NameFormat` of attributes named by a plain word.
pub const ATTRNAME_FORMAT_BASIC: &str = "urn:oasis:names:tc:SAML:2.0:attrname-format:basic";

/// How one claim is named for one SP ([`SamlSpConfig::attribute_name`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttributeName<'a> {
    pub name: &'a str,
    pub format: &'static str,
    pub friendly: &'a str,
    /// The value is written in the standard attribute's syntax.
    pub standard_syntax: bool,
}

impl AttributeName<'static> {
    /// The claim under its own name, NameFormat `basic`.
    pub fn basic(claim: Claim) -> Self {
        AttributeName {
            name: claim.as_str(),
            format: ATTRNAME_FORMAT_BASIC,
            friendly: claim.as_str(),
            standard_syntax: false,
        }
    }
}

fn check_url(field: &str, u: &str) -> Result<(), String> {
    let url = url::Url::parse(u).map_err(|e| format!("{field}: {e}"))?;
    if !matches!(url.scheme(), "https" | "http") {
        return Err(format!("{field}: must be an http(s) URL"));
    }
    if url.fragment().is_some() {
        return Err(format!("{field}: must not have a fragment"));
    }
    Ok(())
}
