//! `[hsm]`: the PKCS#11 token holding every key, and the session pool in front of it.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::uri::Pkcs11Uri;

/// The PKCS#11 token holding every key.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HsmConfig {
    /// RFC 7512 URI, e.g.
    /// `pkcs11:token=symbolon?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/run/credentials/symbolon.service/hsm-pin`.
    pub uri: String,
    /// Worker threads, each with its own logged-in session (0 = number of cores).
    pub workers: usize,
    /// Jobs that may wait for a worker before callers get `overloaded`.
    pub queue_depth: usize,
    /// Longest a caller waits for one HSM operation (queueing included).
    #[serde(with = "humantime_serde")]
    pub deadline: Duration,
}

impl Default for HsmConfig {
    fn default() -> Self {
        Self { uri: String::new(), workers: 0, queue_depth: 1024, deadline: Duration::from_secs(2) }
    }
}

impl HsmConfig {
    /// Worker count with `0` resolved to the number of cores.
    pub fn worker_count(&self) -> usize {
        if self.workers > 0 { self.workers } else { std::thread::available_parallelism().map_or(2, |n| n.get()) }
    }

    /// Problems as (field path, message), for `config check`.
    pub fn problems(&self) -> Vec<(String, String)> {
        let mut p = Vec::new();
        if self.uri.trim().is_empty() {
            p.push(("hsm.uri".into(), "required: the PKCS#11 URI of the token".into()));
        } else if let Err(e) = Pkcs11Uri::parse(&self.uri) {
            p.push(("hsm.uri".into(), e.to_string()));
        }
        if self.queue_depth == 0 {
            p.push(("hsm.queue_depth".into(), "must be at least 1".into()));
        }
        if self.deadline.is_zero() {
            p.push(("hsm.deadline".into(), "must be greater than zero".into()));
        }
        p
    }
}
