//! VDS-NC credentials and the signed trust-list chain (docs/credentials.md).
//!
//! The module verifies; it never signs. Layout:
//! - [`json`]: strict JSON (duplicate keys, trailing data, bad UTF-8 rejected);
//! - [`jcs`]: RFC 8785 canonical form, the bytes a seal's signature covers;
//! - [`seal`]: the VDS-NC seal and the `symbolon.id` profile ([`Credential`]);
//! - [`cert`]: X.509 checks done by hand (signature algorithms, ICAO extensions, CRLs);
//! - [`lists`]: the signed lists (governance, scheme, TSL, VRL) as compact JWS;
//! - [`store`]: [`TrustStore`], fetching, the on-disk last-good cache and verification
//!   of a credential at enrollment (docs/credentials.md §3.3);
//! - [`cli`]: bodies of `symbolon trust status|refresh` and `symbolon vds verify`.
//!
//! # Spec ambiguities and how they are resolved
//! - **Where the staleness check sits in §3.3.** The path of a credential (governance
//!   list, scheme list, TSL) is only known once step 2 has found the CA, so freshness of
//!   those lists is checked right after step 2, before step 3. If no CA is found while a
//!   list is missing or stale, the answer is `unavailable` (we cannot tell "untrusted"
//!   from "not yet known"). CRL and VRL currency are checked in step 5, where they are
//!   consulted: CRL first, then VRL.
//! - **"Passed" `next_update`** means `now > next_update`; likewise `nextUpdate` of a CRL.
//!   A CRL without `nextUpdate` is not current. A list whose `x5c[0]` is outside its
//!   validity at `now` is treated like a stale list.
//! - **Several `crl_urls`** are all required to be current and all are consulted.
//! - **CRL replacement** is monotonic like lists: a fetched CRL replaces the cached one
//!   only if its `thisUpdate` is not older and `thisUpdate` ≤ now + 5 min.
//! - **Several granted services whose CA verifies the signer** (the same CA listed twice):
//!   the first one (list order) whose document types and territory fit is used, else the
//!   first one.
//! - **Accepted types other than `symbolon.id`**: a type listed in
//!   `trust.accepted_doc_types` is an *enrollment* type and must carry the `symbolon.id`
//!   profile of docs/credentials.md §2 (enrollment needs a `tid`). `vds verify` parses the profile only
//!   for `symbolon.id`.
//! - **`<` fillers** (ICAO 9303) are stripped from the right end only, for `pid.nat`,
//!   `doc.is`, `hdr.is` and TSL territories; a `<` elsewhere is malformed.
//! - **`doc.t`, `doc.no`** have no rule in §2 besides being strings; they are capped at
//!   128 characters like names so a seal cannot store unbounded claim values.
//!   `doc.is` follows the nationality rule (it is an ICAO state code).
//! - **`hdr.is`** is required for every document type (1–3 upper-case letters).
//! - **Signer certificate extensions**: a critical extension the module does not know is
//!   rejected (RFC 5280 §4.2); known ones are KeyUsage, EKU, BasicConstraints, SKI, AKI,
//!   SAN, IAN, certificate policies, CRL distribution points, AIA, private key usage
//!   period and the ICAO DocumentTypeList. Issuer names match when their DER is equal or
//!   when they are equal after case folding and whitespace collapsing of string values;
//!   the signature decides between CAs of the same name.
//! - **CRL extensions**: delta CRLs, indirect CRLs and CRLs scoped to CA or attribute
//!   certificates or to some reasons are not supported and count as a bad CRL (503).
//! - **List payloads** ignore unknown members (issuers add fields over time); the JWS
//!   protected header must have exactly `alg`, `typ`, `x5c`.
//! - **`status_since`** is informational; only `status == "granted"` matters.

pub mod cert;
pub mod cli;
pub mod config;
pub mod jcs;
pub mod json;
pub mod lists;
pub mod seal;
pub mod store;

mod b64;
mod fetch;
mod verify;

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod fetch_tests;
#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
pub(crate) mod testkit;
#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests;

pub use config::TrustConfig;
pub use seal::{Credential, Seal, SealHeader, SealSignature, parse_seal_for_fuzz};
pub use store::{
    RefreshFailure, RefreshReport, RevokedSigner, RevokedTokens, TrustEntryStatus, TrustStatus, TrustStore,
    VerifiedCredential, VerifiedSeal,
};

use crate::error::{ApiError, ErrorCode};

/// Everything that can go wrong in this module. Details never carry claim values.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum TrustError {
    /// The seal does not parse or breaks a structural rule (docs/credentials.md §6 rule 1).
    #[error("malformed credential: {0}")]
    Malformed(String),
    /// Signature, chain, document type or territory check failed.
    #[error("untrusted credential: {0}")]
    Untrusted(String),
    /// The signer certificate is on its CA's CRL or the token id is on the VRL.
    #[error("revoked credential: {0}")]
    Revoked(String),
    /// A certificate is outside its validity, or `exp` / `doc.exp` has passed.
    #[error("expired credential: {0}")]
    Expired(String),
    /// A list, CRL or VRL on the credential's path is stale, missing or badly signed.
    #[error("trust data unavailable: {0}")]
    Unavailable(String),
    /// `trust.governance_url` is empty.
    #[error("trust lists are not configured")]
    NotConfigured,
    /// The on-disk cache could not be read or written.
    #[error("trust cache: {0}")]
    Cache(String),
}

impl From<TrustError> for ApiError {
    fn from(e: TrustError) -> Self {
        match e {
            TrustError::Malformed(d) => ApiError::new(ErrorCode::InvalidRequest, d),
            TrustError::Untrusted(d) => ApiError::new(ErrorCode::UntrustedCredential, d),
            TrustError::Revoked(d) => ApiError::new(ErrorCode::RevokedCredential, d),
            TrustError::Expired(d) => ApiError::new(ErrorCode::ExpiredCredential, d),
            TrustError::Unavailable(d) => ApiError::new(ErrorCode::Unavailable, d),
            TrustError::NotConfigured => ApiError::new(ErrorCode::Unavailable, "trust lists are not configured"),
            TrustError::Cache(_) => ApiError::internal(),
        }
    }
}

/// Lower-case hex of bytes (pins, serial numbers).
pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 0x0f)] as char);
    }
    s
}

/// SHA-256 of bytes as lower-case hex: how a list signer or a CA is pinned.
pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex(&sha2::Sha256::digest(bytes))
}
