//! VDS-NC credentials and the signed trust-list chain (vds.md). Placeholder until issue 4 lands.

/// Trust configuration (replaced by the full module of issue 4).
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrustConfig {}

impl TrustConfig {
    pub fn validate(&self) -> Vec<(String, String)> {
        Vec::new()
    }
}
