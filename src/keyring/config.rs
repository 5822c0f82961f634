//! `[keys]`: how nodes follow the key catalog and the optional rotation schedule.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::KeyPurpose;
use crate::error::ConfigProblem;

/// The key life cycle (docs/keys.md).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KeysConfig {
    /// How often each node re-reads the catalog and the token: a rotation, retirement
    /// or adopted key takes effect on every node within this time.
    #[serde(with = "humantime_serde")]
    pub sync_interval: Duration,
    /// Clock difference tolerated between this server and relying parties; added to
    /// how long a `retiring` key stays published.
    #[serde(with = "humantime_serde")]
    pub clock_skew: Duration,
    /// Automatic rotation, per purpose (`[keys.schedule.jwt]` ...). Absent: manual only.
    pub schedule: BTreeMap<KeyPurpose, RotationSchedule>,
    /// Labels of keys that were imported into the token on purpose (a known-answer
    /// test key, a key moved from another HSM). The token reports
    /// `CKA_ALWAYS_SENSITIVE` or `CKA_NEVER_EXTRACTABLE` false for them, which makes any
    /// other key of our label scheme refused; these are accepted, and `keys list` shows
    /// them as imported.
    pub imported: Vec<String>,
    /// `serve` generates an active key for every purpose that has none at start (as
    /// `symbolon keys init` does). Off by default: a node that finds no keys says so
    /// (`/readyz` 503) rather than making a second set on the wrong token.
    pub init_on_start: bool,
}

impl Default for KeysConfig {
    fn default() -> Self {
        Self {
            sync_interval: Duration::from_secs(10),
            clock_skew: Duration::from_secs(60),
            schedule: BTreeMap::new(),
            imported: Vec::new(),
            init_on_start: false,
        }
    }
}

/// Automatic rotation of one purpose.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RotationSchedule {
    /// The active key is replaced this long after it became active.
    #[serde(with = "humantime_serde")]
    pub period: Duration,
    /// Its successor is generated (as `next`, so published in JWKS and SAML metadata)
    /// this long before the rotation. Must be shorter than `period`.
    #[serde(with = "humantime_serde", default = "default_lead")]
    pub lead: Duration,
}

fn default_lead() -> Duration {
    Duration::from_secs(86_400)
}

impl KeysConfig {
    /// What is wrong with `[keys]`.
    pub fn problems(&self) -> Vec<ConfigProblem> {
        let mut p = Vec::new();
        if self.sync_interval < Duration::from_secs(1) {
            p.push(ConfigProblem::new("keys.sync_interval", "must be at least 1s"));
        }
        for (n, label) in self.imported.iter().enumerate() {
            if KeyPurpose::from_label(label).is_none() {
                p.push(ConfigProblem::new(
                    format!("keys.imported[{n}]"),
                    "must be the label of a key of the label scheme symbolon-<purpose>-<stamp>",
                ));
            }
        }
        for (purpose, s) in &self.schedule {
            let at = format!("keys.schedule.{purpose}");
            if !purpose.rotates() {
                p.push(ConfigProblem::new(at.clone(), never_rotated(*purpose)));
            }
            if s.period < Duration::from_secs(10) {
                p.push(ConfigProblem::new(format!("{at}.period"), "must be at least 10s"));
            }
            if s.lead >= s.period {
                p.push(ConfigProblem::new(format!("{at}.lead"), "must be shorter than the period"));
            }
        }
        p
    }
}

/// Why keys of `purpose` are never rotated (for `keys rotate` and `config check`).
pub fn never_rotated(purpose: KeyPurpose) -> String {
    format!(
        "{purpose} keys are never rotated: every pairwise subject (OIDC `sub`, SAML NameID) is an HMAC under \
         this key, so a new key would give every person a new identity at every relying party"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_lead_must_be_shorter_than_the_period() {
        let mut c = KeysConfig::default();
        assert!(c.problems().is_empty());
        let s = RotationSchedule { period: Duration::from_secs(3600), lead: Duration::from_secs(3600) };
        c.schedule.insert(KeyPurpose::Jwt, s);
        c.sync_interval = Duration::ZERO;
        let paths: Vec<String> = c.problems().into_iter().map(|p| p.path).collect();
        assert_eq!(paths, ["keys.sync_interval", "keys.schedule.jwt.lead"]);
    }

    #[test]
    fn imported_labels_must_be_of_the_label_scheme() {
        let c = KeysConfig {
            imported: vec!["symbolon-otp-20260101T000000Z".into(), "symbolon-fcm-x".into(), "other".into()],
            ..KeysConfig::default()
        };
        let paths: Vec<String> = c.problems().into_iter().map(|p| p.path).collect();
        assert_eq!(paths, ["keys.imported[1]", "keys.imported[2]"]);
    }
}
