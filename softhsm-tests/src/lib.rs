//! Symbolon's test harness: a fresh SoftHSM2 token per test, the real server on free
//! ports, fixtures, the reference device and benchmarks. Never shipped in packages.

pub mod server;
pub mod token;

pub use server::{ServerOptions, TestServer, free_port, symbolon_bin, symbolon_cli, write_config};
pub use token::{TestToken, softhsm_module};
