//! Symbolon's integration tests: one test binary (`it`) with a module per area, so the
//! crate and the harness link once instead of once per file. Tests are named
//! `<module>::<test>`; run one area with a nextest filter on the module path, e.g.
//! `cargo nextest run -p softhsm-tests -E 'test(/^signin::/)'`. nextest runs every
//! test in its own process (SoftHSM2 reads its configuration once per process).

mod architecture;
mod audit_archive;
mod client_auth;
mod cluster;
mod console;
mod device;
mod enroll;
mod fixtures;
mod hardening;
mod keys;
mod lifecycle;
mod management;
mod management_cli;
mod management_stores;
mod metrics;
mod oidc;
mod oidc_apache;
mod openapi;
mod push;
mod push_e2e;
mod reload;
mod saml;
mod saml_mellon;
mod saml_web;
mod serve;
mod signin;
mod stores;
mod systemd;
