//! The signed lists of docs/credentials.md §3.1 and §3.4: compact JWS, ES256, `x5c[0]` pinned by
//! the SHA-256 of its DER.

use super::json::parse_strict;
use super::{b64, cert};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// Lists share the CRLs' tolerance for being dated ahead of our clock.
pub use super::cert::MAX_CLOCK_AHEAD;
/// Largest list accepted.
pub const MAX_LIST_BYTES: usize = 1024 * 1024;

/// Why a list was not accepted. Messages name the rule, never list content.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ListError(pub String);

fn err(msg: impl Into<String>) -> ListError {
    ListError(msg.into())
}

/// The four kinds of signed list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ListKind {
    Governance,
    Scheme,
    Tsl,
    Vrl,
}

impl ListKind {
    /// The JWS `typ` of the kind.
    pub fn typ(self) -> &'static str {
        match self {
            Self::Governance => "symbolon-gl+jws",
            Self::Scheme => "symbolon-sl+jws",
            Self::Tsl => "symbolon-tsl+jws",
            Self::Vrl => "symbolon-vrl+jws",
        }
    }

    /// The payload's `type` member.
    pub fn type_name(self) -> &'static str {
        match self {
            Self::Governance => "governance",
            Self::Scheme => "scheme",
            Self::Tsl => "tsl",
            Self::Vrl => "vrl",
        }
    }
}

/// Governance list payload.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct GovernanceList {
    pub schemes: Vec<SchemeRef>,
}

/// One scheme in the governance list.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct SchemeRef {
    pub id: String,
    pub url: String,
    pub signer_sha256: Vec<String>,
    pub doc_types: Vec<String>,
}

/// Scheme list payload.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct SchemeList {
    pub scheme: String,
    pub tsls: Vec<TslRef>,
}

/// One TSL in a scheme list.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct TslRef {
    pub territory: String,
    pub url: String,
    pub signer_sha256: Vec<String>,
}

/// Trusted service list payload.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct TrustedServiceList {
    pub scheme: String,
    pub territory: String,
    pub services: Vec<TrustedService>,
}

/// One service (a CA) in a TSL.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct TrustedService {
    pub name: String,
    /// Standard base64 of the CA certificate DER.
    pub ca: String,
    pub status: String,
    #[serde(default)]
    pub status_since: Option<i64>,
    pub doc_types: Vec<String>,
    #[serde(default)]
    pub crl_urls: Vec<String>,
    #[serde(default)]
    pub vrl_url: Option<String>,
    #[serde(default)]
    pub vrl_signer_sha256: Vec<String>,
}

/// Token revocation list payload.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct RevocationList {
    pub territory: String,
    pub revoked: Vec<RevokedToken>,
}

/// One revoked token id.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct RevokedToken {
    pub tid: String,
    #[serde(default)]
    pub revoked_at: Option<i64>,
    #[serde(default)]
    pub reason: Option<String>,
}

/// The members every list has.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
struct Common {
    #[serde(rename = "type")]
    kind: String,
    seq: u64,
    issued: i64,
    next_update: i64,
}

/// A list's payload by kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListPayload {
    Governance(GovernanceList),
    Scheme(SchemeList),
    Tsl(TrustedServiceList),
    Vrl(RevocationList),
}

/// Sequence, dates and signer of an accepted list.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ListMeta {
    pub seq: u64,
    pub issued: i64,
    pub next_update: i64,
    pub signer_sha256: String,
    pub signer_not_before: i64,
    pub signer_not_after: i64,
}

impl ListMeta {
    /// Fresh: `next_update` not passed and the signer certificate valid at `now`.
    pub fn fresh_at(&self, now: i64) -> bool {
        now <= self.next_update && self.signer_not_before <= now && now <= self.signer_not_after
    }
}

/// Where a list is pinned from: what its signature and members must match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListContext {
    pub kind: ListKind,
    /// Accepted signer pins (SHA-256 hex of `x5c[0]` DER).
    pub pins: Vec<String>,
    /// `scheme` a scheme list or TSL must carry.
    pub scheme: Option<String>,
    /// `territory` a TSL or VRL must carry.
    pub territory: Option<String>,
}

/// A list whose signature and context verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedList {
    pub meta: ListMeta,
    /// The decoded payload bytes (an equal `seq` must repeat them exactly).
    pub payload_bytes: Vec<u8>,
    pub payload: ListPayload,
}

/// A compact JWS split and decoded, not verified.
#[derive(Debug, Clone)]
pub struct CompactJws {
    pub header: Value,
    pub payload: Vec<u8>,
    pub signature: Vec<u8>,
    signing_input: Vec<u8>,
}

/// Splits and decodes a compact JWS (three b64u segments, strict JSON header).
pub fn parse_compact_jws(bytes: &[u8]) -> Result<CompactJws, ListError> {
    if bytes.len() > MAX_LIST_BYTES {
        return Err(err("list too large"));
    }
    let text = std::str::from_utf8(bytes).map_err(|_| err("list is not UTF-8"))?;
    let text = text.trim_end_matches(['\n', '\r']);
    let mut parts = text.split('.');
    let (Some(h), Some(p), Some(s), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err(err("not a compact JWS"));
    };
    let header_bytes = b64::decode_jws_segment(h).ok_or_else(|| err("JWS header is not b64u"))?;
    let payload = b64::decode_jws_segment(p).ok_or_else(|| err("JWS payload is not b64u"))?;
    let signature = b64::decode_jws_segment(s).ok_or_else(|| err("JWS signature is not b64u"))?;
    let header = parse_strict(&header_bytes).map_err(|e| err(format!("JWS header: {e}")))?;
    let mut signing_input = Vec::with_capacity(h.len() + p.len() + 1);
    signing_input.extend_from_slice(h.as_bytes());
    signing_input.push(b'.');
    signing_input.extend_from_slice(p.as_bytes());
    Ok(CompactJws { header, payload, signature, signing_input })
}

/// Verifies a list against where it is pinned from: header exactly
/// `{alg: ES256, typ, x5c}`, `x5c[0]` pinned, ES256 signature, payload `type` and
/// `scheme`/`territory` as the context says. Time is not checked here.
pub fn verify_list(bytes: &[u8], ctx: &ListContext) -> Result<VerifiedList, ListError> {
    let jws = parse_compact_jws(bytes)?;
    let header = jws.header.as_object().ok_or_else(|| err("JWS header is not an object"))?;
    if header.len() != 3 {
        return Err(err("JWS header must have exactly alg, typ and x5c"));
    }
    if header.get("alg").and_then(Value::as_str) != Some("ES256") {
        return Err(err("JWS alg must be ES256"));
    }
    if header.get("typ").and_then(Value::as_str) != Some(ctx.kind.typ()) {
        return Err(err(format!("JWS typ must be {}", ctx.kind.typ())));
    }
    let x5c0 = match header.get("x5c") {
        Some(Value::Array(certs)) => certs.first().and_then(Value::as_str),
        _ => None,
    }
    .ok_or_else(|| err("JWS x5c must be a non-empty array of strings"))?;
    let der = b64::decode_std(x5c0).ok_or_else(|| err("x5c[0] is not base64"))?;
    let signer_sha256 = super::sha256_hex(&der);
    if !ctx.pins.iter().any(|p| p.eq_ignore_ascii_case(&signer_sha256)) {
        return Err(err("list signer is not pinned"));
    }
    let (key, signer_not_before, signer_not_after) = cert::list_signer(&der).map_err(|e| err(e.to_string()))?;
    let sig = p256::ecdsa::Signature::from_slice(&jws.signature)
        .map_err(|_| err("JWS signature is not a 64-byte ES256 signature"))?;
    use p256::ecdsa::signature::Verifier;
    key.verify(&jws.signing_input, &sig).map_err(|_| err("JWS signature does not verify"))?;

    let (common, payload) = parse_payload(&jws.payload, ctx)?;
    Ok(VerifiedList {
        meta: ListMeta {
            seq: common.seq,
            issued: common.issued,
            next_update: common.next_update,
            signer_sha256,
            signer_not_before,
            signer_not_after,
        },
        payload_bytes: jws.payload,
        payload,
    })
}

/// The payload of a list whose signature verified: strict JSON, its `type`, and the
/// members of its kind, `scheme`/`territory` as the context says.
fn parse_payload(bytes: &[u8], ctx: &ListContext) -> Result<(Common, ListPayload), ListError> {
    let value = parse_strict(bytes).map_err(|e| err(format!("payload: {e}")))?;
    let common: Common = from_value(&value)?;
    if common.kind != ctx.kind.type_name() {
        return Err(err(format!("payload type must be {}", ctx.kind.type_name())));
    }
    let payload = match ctx.kind {
        ListKind::Governance => ListPayload::Governance(from_value(&value)?),
        ListKind::Scheme => {
            let l: SchemeList = from_value(&value)?;
            expect_eq(&ctx.scheme, &l.scheme, "scheme")?;
            ListPayload::Scheme(l)
        }
        ListKind::Tsl => {
            let l: TrustedServiceList = from_value(&value)?;
            expect_eq(&ctx.scheme, &l.scheme, "scheme")?;
            expect_eq(&ctx.territory, &l.territory, "territory")?;
            ListPayload::Tsl(l)
        }
        ListKind::Vrl => {
            let l: RevocationList = from_value(&value)?;
            expect_eq(&ctx.territory, &l.territory, "territory")?;
            ListPayload::Vrl(l)
        }
    };
    Ok((common, payload))
}

/// Fuzzing entry (`fuzz/fuzz_targets/signed_list.rs`): a signed list of every kind.
/// The input's own `x5c[0]` is pinned, so the signer certificate parser and the ES256
/// check are reached; the payload (the JWS payload, and the input itself as JSON) is
/// parsed as every kind as if its signature had verified, since a fuzzer cannot sign.
/// Any input must return, never panic.
#[doc(hidden)]
pub fn fuzz_signed_list(data: &[u8]) {
    const KINDS: [ListKind; 4] = [ListKind::Governance, ListKind::Scheme, ListKind::Tsl, ListKind::Vrl];
    let ctx = |kind, pins: Vec<String>| ListContext {
        kind,
        pins,
        scheme: Some("symbolon-test".into()),
        territory: Some("UTO".into()),
    };
    if let Ok(jws) = parse_compact_jws(data) {
        let pin = match jws.header.get("x5c") {
            Some(Value::Array(certs)) => certs.first().and_then(Value::as_str).and_then(b64::decode_std),
            _ => None,
        }
        .map(|der| super::sha256_hex(&der));
        for kind in KINDS {
            let _ = verify_list(data, &ctx(kind, pin.iter().cloned().collect()));
            let _ = parse_payload(&jws.payload, &ctx(kind, Vec::new()));
        }
    }
    for kind in KINDS {
        let _ = parse_payload(data, &ctx(kind, Vec::new()));
    }
}

fn from_value<T: DeserializeOwned>(v: &Value) -> Result<T, ListError> {
    T::deserialize(v).map_err(|e| err(format!("payload: {e}")))
}

fn expect_eq(pinned: &Option<String>, actual: &str, what: &str) -> Result<(), ListError> {
    match pinned {
        Some(p) if p != actual => Err(err(format!("{what} does not match where the list is pinned from"))),
        _ => Ok(()),
    }
}
