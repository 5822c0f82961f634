//! What this node still lacks before it can sign someone in: an active key for every
//! purpose the configuration uses, and trust lists when they are configured. The probes
//! (`/readyz`, `/health`) add the store, session store and HSM round trips.

use serde::Serialize;

use super::Services;
use super::config::SubjectType;
use crate::store::KeyPurpose;

/// One missing piece, with the command or setting that supplies it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Missing {
    /// What is checked: `keys.otp`, `trust`, `database`, ...
    pub check: String,
    /// What is wrong, for an operator.
    pub problem: String,
    /// What fixes it.
    pub fix: String,
}

/// How to make missing keys (also in the start-up log).
pub const KEYS_FIX: &str = "run `symbolon keys init` (or set keys.init_on_start = true)";

impl Services {
    /// The key purposes the configuration uses now: OTPs, identity tokens, sealed
    /// enrollment data and audit checkpoints always; SAML assertions when `[saml]` is
    /// enabled (the RSA key too when a service provider uses `rsa-sha256`); pairwise
    /// subjects when a relying party asks for them.
    pub fn needed_key_purposes(&self) -> Vec<KeyPurpose> {
        let mut needed = vec![KeyPurpose::Otp, KeyPurpose::Jwt, KeyPurpose::Data, KeyPurpose::Audit];
        if self.settings.saml.enabled {
            needed.push(KeyPurpose::Saml);
            let rsa = crate::saml::config::SignatureAlgorithm::RsaSha256;
            if self.relying_parties.saml_sps().iter().any(|(_, sp)| sp.signature_algorithm == rsa) {
                needed.push(KeyPurpose::SamlRsa);
            }
        }
        if self.relying_parties.snapshot().iter().any(|s| s.subject_type() == SubjectType::Pairwise) {
            needed.push(KeyPurpose::Pairwise);
        }
        needed
    }

    /// What keeps this node from signing someone in, apart from failed round trips.
    /// Trust lists that are configured but were never loaded make enrollment impossible;
    /// stale lists only degrade (docs/protocol.md §12 rule 11).
    pub fn missing(&self, now: i64) -> Vec<Missing> {
        let mut out: Vec<Missing> = self
            .needed_key_purposes()
            .into_iter()
            .filter(|p| self.keys.active(*p).is_err())
            .map(|p| Missing {
                check: format!("keys.{p}"),
                problem: format!("no active {p} key on token {}", self.keys.pool().token().label),
                fix: KEYS_FIX.into(),
            })
            .collect();
        let trust = self.trust.status(now);
        let loaded = trust.entries.iter().any(|e| e.kind == "governance" && e.issued.is_some());
        if trust.configured && !loaded {
            out.push(Missing {
                check: "trust".into(),
                problem: "no trust lists loaded (the governance list was never fetched)".into(),
                fix: "check trust.governance_url and run `symbolon trust refresh`".into(),
            });
        }
        out
    }
}
