//! The steps of docs/credentials.md §3.3, in order, over a set of candidate CAs ("anchors").
//!
//! The anchors come from the TSLs ([`super::store`]) or from `vds verify --ca` files
//! ([`super::cli`]); the steps are the same, only what each anchor carries differs.

use super::TrustError;
use super::cert::{CaCert, Crl, OID_EKU_VDS_NC_SIGNER, SignerCert};
use super::config::TrustConfig;
use super::lists::ListMeta;
use super::seal::{Credential, Seal, date_passed};
use super::{b64, jcs};
use std::collections::BTreeSet;

/// A list on a credential's path whose freshness is required.
pub(crate) struct PathList<'a> {
    pub label: &'a str,
    pub meta: Option<&'a ListMeta>,
}

/// A CRL the anchor requires, already verified against its CA (`None`: missing or bad).
pub(crate) struct CrlCheck<'a> {
    pub label: &'a str,
    pub crl: Option<&'a Crl>,
}

/// The VRL of the anchor's service.
pub(crate) struct VrlCheck<'a> {
    pub label: &'a str,
    pub meta: Option<&'a ListMeta>,
    pub revoked: &'a BTreeSet<String>,
}

/// A CA that may have issued the signer certificate, with what its trust depends on.
pub(crate) struct Anchor<'a> {
    pub ca: &'a CaCert,
    pub ca_name: &'a str,
    /// TSL territory (`None` for `--ca` files: not compared).
    pub territory: Option<&'a str>,
    /// (scheme's, service's) document types (`None` for `--ca` files: any type).
    pub doc_types: Option<(&'a [String], &'a [String])>,
    pub path: Vec<PathList<'a>>,
    pub crls: Vec<CrlCheck<'a>>,
    pub vrl: Option<VrlCheck<'a>>,
}

/// What the caller's configuration adds to the anchors.
pub(crate) struct Policy<'a> {
    /// Types accepted for enrollment (`None`: any type, `vds verify --ca`).
    pub accepted: Option<&'a [String]>,
    pub config: &'a TrustConfig,
    /// Lists that are missing or stale and could hold a CA: when no anchor matches,
    /// the answer is `unavailable`, not `untrusted`.
    pub unknown_lists: Vec<String>,
}

/// The outcome of a successful verification.
pub(crate) struct Verdict {
    pub anchor: usize,
    pub signer: SignerCert,
}

fn untrusted(d: impl Into<String>) -> TrustError {
    TrustError::Untrusted(d.into())
}

/// Runs steps 1–6 of docs/credentials.md §3.3; the first failure wins.
pub(crate) fn verify_seal(
    seal: &Seal,
    credential: Option<&Credential>,
    anchors: &[Anchor<'_>],
    policy: &Policy<'_>,
    now: i64,
) -> Result<Verdict, TrustError> {
    // Step 1: the seal's own signature.
    if seal.sig.alg != "ES256" {
        return Err(untrusted("sig.alg is not ES256"));
    }
    let cer = b64::decode_any(&seal.sig.cer).ok_or_else(|| untrusted("sig.cer is not base64url"))?;
    let signer = SignerCert::parse(&cer).map_err(|e| untrusted(format!("sig.cer: {e}")))?;
    let sigvl = b64::decode_any(&seal.sig.sigvl).ok_or_else(|| untrusted("sig.sigvl is not base64url"))?;
    let sig = p256::ecdsa::Signature::from_slice(&sigvl)
        .map_err(|_| untrusted("sig.sigvl is not a 64-byte r||s signature"))?;
    let signed = jcs::canonicalize(&seal.data).map_err(|_| untrusted("data has no canonical form"))?;
    use p256::ecdsa::signature::Verifier;
    signer.key.verify(&signed, &sig).map_err(|_| untrusted("seal signature does not verify"))?;

    // Step 2: the issuing CA among the anchors, by name and signature.
    let matching: Vec<usize> =
        anchors.iter().enumerate().filter(|(_, a)| a.ca.issued(&signer)).map(|(i, _)| i).collect();
    let t = seal.header.doc_type.as_str();
    let fits = |a: &Anchor<'_>| {
        a.doc_types.is_none_or(|(scheme, service)| scheme.iter().any(|x| x == t) && service.iter().any(|x| x == t))
            && a.territory.is_none_or(|terr| territory_eq(terr, &seal.header.issuing_state))
    };
    let Some(index) = matching.iter().copied().find(|&i| fits(&anchors[i])).or(matching.first().copied()) else {
        if let Some(label) = policy.unknown_lists.first() {
            return Err(TrustError::Unavailable(format!("{label} is stale or missing")));
        }
        return Err(untrusted("no granted CA issued the signer certificate"));
    };
    let anchor = &anchors[index];
    for list in &anchor.path {
        if !list.meta.is_some_and(|m| m.fresh_at(now)) {
            return Err(TrustError::Unavailable(format!("{} is stale or missing", list.label)));
        }
    }

    // Step 3: document type, ICAO DocumentTypeList, EKU, KeyUsage.
    if let Some((scheme, service)) = anchor.doc_types {
        if !service.iter().any(|x| x == t) {
            return Err(untrusted("document type is not allowed for the CA's service"));
        }
        if !scheme.iter().any(|x| x == t) {
            return Err(untrusted("document type is not allowed for the CA's scheme"));
        }
    }
    if let Some(accepted) = policy.accepted
        && !accepted.iter().any(|x| x == t)
    {
        return Err(untrusted("document type is not accepted for enrollment"));
    }
    let ext = signer.extensions().map_err(|e| untrusted(format!("signer certificate: {e}")))?;
    if let Some(codes) = &ext.doc_type_codes {
        match policy.config.doc_type_code(t) {
            None => {
                return Err(untrusted("document type has no ICAO code and the signer certificate restricts types"));
            }
            Some(code) if !codes.iter().any(|c| c == code) => {
                return Err(untrusted("signer certificate's DocumentTypeList excludes the document type"));
            }
            Some(_) => {}
        }
    }
    if let Some(eku) = &ext.eku
        && !eku.contains(&OID_EKU_VDS_NC_SIGNER)
    {
        return Err(untrusted("signer certificate's extended key usage lacks the VDS-NC signer purpose"));
    }
    if ext.digital_signature == Some(false) {
        return Err(untrusted("signer certificate's key usage lacks digitalSignature"));
    }

    // Step 4: territory and the token id's territory prefix, then validity.
    if let Some(territory) = anchor.territory
        && !territory_eq(territory, &seal.header.issuing_state)
    {
        return Err(untrusted("hdr.is does not match the TSL territory"));
    }
    // Token ids belong to a territory (docs/credentials.md §6 rule 9), so a list signer
    // of one territory cannot issue, or take over, a token id of another.
    if let Some(c) = credential
        && !tid_in_territory(&c.token_id, &seal.header.issuing_state)
    {
        return Err(untrusted("msg.tid does not start with hdr.is and a hyphen"));
    }
    if !signer.valid_at(now) {
        return Err(TrustError::Expired("signer certificate is not within its validity".into()));
    }
    if !anchor.ca.valid_at(now) {
        return Err(TrustError::Expired("CA certificate is not within its validity".into()));
    }

    // Step 5: CRL, then VRL.
    for check in &anchor.crls {
        match check.crl {
            Some(crl) if crl.current_at(now) => {
                if crl.is_revoked(signer.serial()) {
                    return Err(TrustError::Revoked("signer certificate is revoked".into()));
                }
            }
            _ => {
                return Err(TrustError::Unavailable(format!("{} is not current", check.label)));
            }
        }
    }
    if let Some(vrl) = &anchor.vrl {
        if !vrl.meta.is_some_and(|m| m.fresh_at(now)) {
            return Err(TrustError::Unavailable(format!("{} is stale or missing", vrl.label)));
        }
        if let Some(c) = credential
            && vrl.revoked.contains(&c.token_id)
        {
            return Err(TrustError::Revoked("token id is revoked".into()));
        }
    }

    // Step 6: the credential's own dates.
    if let Some(c) = credential {
        if c.expiry.as_deref().is_some_and(|d| date_passed(d, now)) {
            return Err(TrustError::Expired("credential has expired".into()));
        }
        if c.document_expiry.as_deref().is_some_and(|d| date_passed(d, now)) {
            return Err(TrustError::Expired("identity document has expired".into()));
        }
    }
    Ok(Verdict { anchor: index, signer })
}

/// Territories compare as ICAO codes (trailing `<` fillers ignored).
fn territory_eq(territory: &str, issuing_state: &str) -> bool {
    territory.trim_end_matches('<') == issuing_state.trim_end_matches('<')
}

/// Whether a token id starts with the issuing state's code and a hyphen (`AUS-…`).
pub(crate) fn tid_in_territory(token_id: &str, issuing_state: &str) -> bool {
    let state = issuing_state.trim_end_matches('<');
    !state.is_empty() && token_id.strip_prefix(state).is_some_and(|rest| rest.starts_with('-'))
}
