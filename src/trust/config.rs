//! `[trust]` configuration.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

use crate::error::ConfigProblem;

/// The document type enrolled by default and its built-in ICAO codes (docs/credentials.md §3.3 step 3).
pub const SYMBOLON_ID: &str = "symbolon.id";
const BUILTIN_CODES: &[(&str, &str)] = &[("icao.vacc", "NV"), ("icao.test", "NT"), (SYMBOLON_ID, "SI")];

/// Longest time one fetch may take (docs/credentials.md §6 rule 11).
pub const MAX_FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// Trust configuration: where the governance list is and how it is pinned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrustConfig {
    /// `https://` or `file://` URL of the governance list; empty = trust not configured
    /// (enrollment then answers `unavailable`).
    pub governance_url: String,
    /// SHA-256 (lower-case hex) of the DER of each accepted governance list signer.
    pub governance_signer_sha256: Vec<String>,
    /// How often every list, CRL and VRL is fetched (default 1 h).
    #[serde(with = "humantime_serde")]
    pub refresh: Duration,
    /// Timeout of one fetch, connection and body together (default and most: 10 s).
    #[serde(with = "humantime_serde")]
    pub fetch_timeout: Duration,
    /// Lets `https://` list URLs reach loopback, private and link-local addresses
    /// (default false: internal hosts are refused, docs/credentials.md §6 rule 11).
    pub allow_private_networks: bool,
    /// Document types accepted for enrollment (default `["symbolon.id"]`).
    pub accepted_doc_types: Vec<String>,
    /// Extra document type → ICAO DocumentTypeList code mappings, added to the built-ins
    /// `icao.vacc` → `NV`, `icao.test` → `NT`, `symbolon.id` → `SI`.
    pub doc_type_codes: BTreeMap<String, String>,
}

impl Default for TrustConfig {
    fn default() -> Self {
        Self {
            governance_url: String::new(),
            governance_signer_sha256: Vec::new(),
            refresh: Duration::from_secs(3600),
            fetch_timeout: MAX_FETCH_TIMEOUT,
            allow_private_networks: false,
            accepted_doc_types: vec![SYMBOLON_ID.to_owned()],
            doc_type_codes: BTreeMap::new(),
        }
    }
}

impl TrustConfig {
    /// Whether a governance list is configured at all.
    pub fn is_configured(&self) -> bool {
        !self.governance_url.is_empty()
    }

    /// The ICAO DocumentTypeList code of a document type, configured mappings first.
    pub fn doc_type_code(&self, doc_type: &str) -> Option<&str> {
        self.doc_type_codes
            .get(doc_type)
            .map(String::as_str)
            .or_else(|| BUILTIN_CODES.iter().find(|(t, _)| *t == doc_type).map(|(_, c)| *c))
    }

    /// A `file://` governance list that cannot be read (`config check`; `serve` would
    /// start without trust lists).
    pub fn start_problems(&self) -> Vec<ConfigProblem> {
        let Ok(url) = url::Url::parse(&self.governance_url) else { return Vec::new() };
        if url.scheme() != "file" {
            return Vec::new();
        }
        match url.to_file_path() {
            Ok(path) => match std::fs::File::open(&path) {
                Ok(_) => Vec::new(),
                Err(e) => {
                    vec![ConfigProblem::new("trust.governance_url", format!("cannot read {}: {e}", path.display()))]
                }
            },
            Err(()) => vec![ConfigProblem::new("trust.governance_url", "not a local file path")],
        }
    }

    /// Problems with the configuration as (field path, message); empty when valid.
    pub fn problems(&self) -> Vec<ConfigProblem> {
        let mut problems = Vec::new();
        let mut bad = |field: &str, msg: String| problems.push(ConfigProblem::new(format!("trust.{field}"), msg));
        if self.is_configured() {
            match url::Url::parse(&self.governance_url) {
                Ok(u) if u.scheme() == "https" || u.scheme() == "file" => {}
                Ok(_) => bad("governance_url", "must be an https:// or file:// URL".into()),
                Err(e) => bad("governance_url", format!("not a URL: {e}")),
            }
            if self.governance_signer_sha256.is_empty() {
                bad("governance_signer_sha256", "at least one pin is required when governance_url is set".into());
            }
        }
        for (i, pin) in self.governance_signer_sha256.iter().enumerate() {
            if !is_sha256_hex(pin) {
                bad(
                    &format!("governance_signer_sha256[{i}]"),
                    "must be 64 lower-case hex digits (SHA-256 of the signer certificate DER)".into(),
                );
            }
        }
        // Short periods are for tests and file:// lists; production uses minutes or hours.
        if self.refresh < Duration::from_secs(1) {
            bad("refresh", "must be at least 1s".into());
        }
        if self.fetch_timeout.is_zero() {
            bad("fetch_timeout", "must be greater than 0".into());
        } else if self.fetch_timeout > self.refresh {
            bad("fetch_timeout", "must not exceed trust.refresh".into());
        } else if self.fetch_timeout > MAX_FETCH_TIMEOUT {
            bad("fetch_timeout", "must not exceed 10s".into());
        }
        if self.is_configured() && self.accepted_doc_types.is_empty() {
            bad("accepted_doc_types", "must name at least one document type".into());
        }
        for (i, t) in self.accepted_doc_types.iter().enumerate() {
            if t.is_empty() || t.len() > 64 {
                bad(&format!("accepted_doc_types[{i}]"), "must be 1..64 characters".into());
            }
        }
        for (t, code) in &self.doc_type_codes {
            let ok =
                (1..=8).contains(&code.len()) && code.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit());
            if t.is_empty() || !ok {
                bad(&format!("doc_type_codes.{t}"), "codes are 1..8 upper-case letters or digits".into());
            }
        }
        problems
    }
}

/// 64 lower-case hex digits.
pub(crate) fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_humantime() {
        let c: TrustConfig = serde_json::from_str(r#"{"refresh":"15m","fetch_timeout":"5s"}"#).unwrap();
        assert_eq!(c.refresh, Duration::from_secs(900));
        assert_eq!(c.fetch_timeout, Duration::from_secs(5));
        assert_eq!(c.accepted_doc_types, vec!["symbolon.id"]);
        assert!(c.problems().is_empty());
        assert!(!c.is_configured());
        assert!(serde_json::from_str::<TrustConfig>(r#"{"refersh":"1h"}"#).is_err());
    }

    #[test]
    fn codes_builtin_and_configured() {
        let mut c = TrustConfig::default();
        assert_eq!(c.doc_type_code("icao.vacc"), Some("NV"));
        assert_eq!(c.doc_type_code("icao.test"), Some("NT"));
        assert_eq!(c.doc_type_code("symbolon.id"), Some("SI"));
        assert_eq!(c.doc_type_code("x.y"), None);
        c.doc_type_codes.insert("x.y".into(), "XY".into());
        assert_eq!(c.doc_type_code("x.y"), Some("XY"));
    }

    #[test]
    fn validate_names_fields() {
        let c = TrustConfig {
            governance_url: "http://example.invalid/gl.jws".into(),
            governance_signer_sha256: vec!["ABC".into()],
            fetch_timeout: Duration::from_secs(11),
            ..TrustConfig::default()
        };
        let fields: Vec<String> = c.problems().into_iter().map(|p| p.path).collect();
        assert_eq!(fields, vec!["trust.governance_url", "trust.governance_signer_sha256[0]", "trust.fetch_timeout"]);
        let ok = TrustConfig {
            governance_url: "file:///var/lib/symbolon/gl.jws".into(),
            governance_signer_sha256: vec!["a".repeat(64)],
            ..TrustConfig::default()
        };
        assert!(ok.problems().is_empty());
    }
}
