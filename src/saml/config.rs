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

    /// The claim named `name` (identity-token spelling).
    pub fn from_name(name: &str) -> Option<Claim> {
        Claim::ALL.into_iter().find(|c| c.as_str() == name)
    }
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
    /// Where `LogoutResponse`s go (HTTP-Redirect); no SLO without it.
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

    /// The attribute name and NameFormat for a claim.
    pub fn attribute_name(&self, claim: Claim) -> (&str, &'static str) {
        let name = self.attribute_names.get(&claim).map_or(claim.as_str(), String::as_str);
        let format = if name.contains(':') {
            "urn:oasis:names:tc:SAML:2.0:attrname-format:uri"
        } else {
            "urn:oasis:names:tc:SAML:2.0:attrname-format:basic"
        };
        (name, format)
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
