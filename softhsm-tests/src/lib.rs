//! Symbolon's test tooling: a fresh SoftHSM2 (or Kryoptic, or openCryptoki) token per test, the real
//! server on free ports, trust-chain fixtures, the reference device and benchmarks.
//! Never shipped.

#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod apache;
pub mod backends;
pub mod bench;
pub mod device;
pub mod fake_fcm;
pub mod fixtures;
pub mod jose;
pub mod metrics;
pub mod oidc;
pub mod python;
pub mod records;
pub mod server;
pub mod signin;
pub mod token;
pub mod trustenv;

pub use server::{ServerOptions, TestServer, free_port, free_ports, symbolon_bin, symbolon_cli, write_config};
pub use token::{TestToken, TokenKind, kryoptic_module, softhsm_module};
