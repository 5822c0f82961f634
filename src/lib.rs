//! Symbolon: hardware-backed mutual out-of-band authentication server.
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod error;
pub mod trust;
