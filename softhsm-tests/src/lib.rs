//! Symbolon test tooling: trust-chain fixtures, the reference device and the
//! end-to-end harness. Never shipped.

pub mod device;
pub mod fixtures;
pub mod jose;
