//! Symbolon test tooling: trust-chain fixtures, the reference device and the
//! end-to-end harness. Never shipped.

#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod device;
pub mod fixtures;
pub mod jose;
