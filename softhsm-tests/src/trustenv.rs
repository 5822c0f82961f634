//! A fixture trust chain plus a server configured to trust it.

use std::path::PathBuf;

use crate::fixtures::{FixtureOptions, Manifest, generate};

/// A generated fixture directory and its manifest.
pub struct FixtureChain {
    pub dir: tempfile::TempDir,
    pub manifest: Manifest,
}

/// RSA keys are slow to make in debug builds; the generator may reuse them across runs
/// (every list, certificate and seal is still fresh).
fn rsa_cache() -> PathBuf {
    std::env::var_os("SYMBOLON_FIXTURES_RSA_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("symbolon-fixture-rsa-cache"))
}

impl FixtureChain {
    /// Generates a fresh chain.
    pub fn new() -> anyhow::Result<Self> {
        Self::with_bulk_ids(0)
    }

    /// A fresh chain with `n` more valid seals (`bulk_000001`, …) for benchmarks.
    pub fn with_bulk_ids(n: usize) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new().prefix("symbolon-fx-").tempdir()?;
        let cache = rsa_cache();
        std::fs::create_dir_all(&cache)?;
        let manifest =
            generate(dir.path(), &FixtureOptions { rsa_key_cache: Some(cache), bulk_ids: n, ..Default::default() })?;
        Ok(Self { dir, manifest })
    }

    /// The `[trust]` TOML section trusting this chain.
    pub fn trust_toml(&self, refresh: &str) -> String {
        let pins: Vec<String> = self.manifest.governance.signer_sha256.iter().map(|p| format!("\"{p}\"")).collect();
        format!(
            "[trust]\ngovernance_url = \"{}\"\ngovernance_signer_sha256 = [{}]\nrefresh = \"{refresh}\"\nfetch_timeout = \"1s\"\n",
            self.manifest.governance.url,
            pins.join(", ")
        )
    }

    /// Replaces `target` by `with` (paths relative to the fixture directory), atomically.
    pub fn swap(&self, target: &str, with: &str) -> anyhow::Result<()> {
        let tmp = self.dir.path().join(format!("{target}.swap"));
        std::fs::copy(self.dir.path().join(with), &tmp)?;
        std::fs::rename(tmp, self.dir.path().join(target))?;
        Ok(())
    }
}
