//! `[hsm]`: the PKCS#11 token holding every key, and the session pool in front of it.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::uri::Pkcs11Uri;
use crate::error::ConfigProblem;

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
    /// Environment the PKCS#11 module reads when it loads, set by every command (server
    /// and CLI) before the module is loaded, e.g.
    /// `module_env = { SOFTHSM2_CONF = "/var/lib/symbolon/softhsm/softhsm2.conf" }`.
    /// It replaces a value of the same name in the process environment.
    pub module_env: BTreeMap<String, String>,
}

impl Default for HsmConfig {
    fn default() -> Self {
        Self {
            uri: String::new(),
            workers: 0,
            queue_depth: 1024,
            deadline: Duration::from_secs(2),
            module_env: BTreeMap::new(),
        }
    }
}

impl HsmConfig {
    /// Worker count with `0` resolved to the number of cores.
    pub fn worker_count(&self) -> usize {
        if self.workers > 0 { self.workers } else { std::thread::available_parallelism().map_or(2, |n| n.get()) }
    }

    /// What is wrong with `[hsm]`.
    pub fn problems(&self) -> Vec<ConfigProblem> {
        let mut p = Vec::new();
        if self.uri.trim().is_empty() {
            p.push(ConfigProblem::new("hsm.uri", "required: the PKCS#11 URI of the token"));
        } else if let Err(e) = Pkcs11Uri::parse(&self.uri) {
            p.push(ConfigProblem::new("hsm.uri", e.to_string()));
        }
        if self.queue_depth == 0 {
            p.push(ConfigProblem::new("hsm.queue_depth", "must be at least 1"));
        }
        if self.deadline.is_zero() {
            p.push(ConfigProblem::new("hsm.deadline", "must be greater than zero"));
        }
        for (name, value) in &self.module_env {
            let at = format!("hsm.module_env.{name}");
            if name.is_empty() || name.contains(['=', '\0']) {
                p.push(ConfigProblem::new(at, "not a valid environment variable name"));
            } else if value.contains('\0') {
                p.push(ConfigProblem::new(at, "contains a NUL byte"));
            }
        }
        p
    }

    /// Sets `module_env` in the process environment, for the PKCS#11 module to read when
    /// it loads. Call it while the process has a single thread (the CLI does, right after
    /// reading the configuration and before starting the runtime).
    pub fn apply_module_env(&self) {
        for (name, value) in &self.module_env {
            if name.is_empty() || name.contains(['=', '\0']) || value.contains('\0') {
                continue; // refused by problems(); set_var would panic
            }
            // SAFETY: called before any other thread exists (see above), so no thread
            // reads or writes the environment concurrently.
            unsafe { std::env::set_var(name, value) };
        }
    }
}
