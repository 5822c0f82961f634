//! Symbolon: hardware-backed mutual out-of-band authentication server.
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod cli;
pub mod cli_docs;
pub mod config;
pub mod error;
pub mod files;
pub mod http;
pub mod ids;
pub mod jwks;
pub mod keyring;
pub mod keys;
pub mod metrics;
pub mod oidc;
pub mod push;
pub mod saml;
pub mod service;
pub mod startup;
pub mod store;
pub mod telemetry;
pub mod trust;
pub mod web;
