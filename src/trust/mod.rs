//! VDS-NC credentials and the signed trust-list chain (vds.md). Placeholder until issue 4 lands.
