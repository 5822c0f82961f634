//! The VDS-NC seal (docs/credentials.md §1) and the `symbolon.id` profile of its message (§2).
//!
//! Everything here is structure: a failure is `400 invalid_request` (§6 rule 1).
//! Signatures are checked in [`crate::trust::store`].

use super::TrustError;
use super::b64;
use super::json::parse_strict;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::fmt;

/// Largest decoded seal (docs/credentials.md §1).
pub const MAX_SEAL_BYTES: usize = 16 * 1024;
/// Longest base64 text that can decode to [`MAX_SEAL_BYTES`] (padded), checked before
/// decoding so an oversized input is never allocated twice.
const MAX_SEAL_TEXT: usize = MAX_SEAL_BYTES.div_ceil(3) * 4;
const MAX_NAME_CHARS: usize = 128;

/// A parsed seal: header checked, message and `data` kept as parsed JSON.
#[derive(Debug, Clone, PartialEq)]
pub struct Seal {
    pub header: SealHeader,
    /// `data.msg` as parsed (the profile is read from it separately).
    pub msg: Value,
    /// `data` as parsed: JCS of this value is what `sig.sigvl` signs.
    pub data: Value,
    pub sig: SealSignature,
}

/// `data.hdr`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SealHeader {
    /// `hdr.t`, the document type.
    pub doc_type: String,
    /// `hdr.v`, always 1.
    pub version: u64,
    /// `hdr.is`, the issuing state with `<` fillers stripped.
    pub issuing_state: String,
}

/// `sig`, still encoded: decoding `cer`/`sigvl` belongs to step 1 (`untrusted_credential`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealSignature {
    pub alg: String,
    pub cer: String,
    pub sigvl: String,
}

/// The `symbolon.id` profile (docs/credentials.md §2). `Debug` shows the token id only: claim
/// values must not reach logs.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credential {
    pub token_id: String,
    pub given_name: Option<String>,
    pub family_name: Option<String>,
    /// `YYYY-MM-DD`, `YYYY-MM` or `YYYY`, exactly as the seal has it.
    pub birthdate: Option<String>,
    /// ICAO 9303 nationality code, fillers stripped.
    pub nationality: Option<String>,
    pub document_type: Option<String>,
    pub document_number: Option<String>,
    pub issuing_country: Option<String>,
    /// `doc.exp`, `YYYY-MM-DD`.
    pub document_expiry: Option<String>,
    /// `msg.exp`, `YYYY-MM-DD`: the credential's own expiry (not a claim).
    pub expiry: Option<String>,
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credential")
            .field("token_id", &self.token_id)
            .field("claims", &self.claim_names())
            .finish_non_exhaustive()
    }
}

impl Credential {
    /// Names of the claims present (docs/protocol.md §12 rule 9), in §7.3 order.
    pub fn claim_names(&self) -> Vec<&'static str> {
        [
            ("given_name", &self.given_name),
            ("family_name", &self.family_name),
            ("birthdate", &self.birthdate),
            ("nationality", &self.nationality),
            ("document_type", &self.document_type),
            ("document_number", &self.document_number),
            ("issuing_country", &self.issuing_country),
            ("document_expiry", &self.document_expiry),
        ]
        .into_iter()
        .filter_map(|(name, v)| v.as_ref().map(|_| name))
        .collect()
    }

    /// Reads the profile from `data.msg`. Unknown members are ignored.
    pub fn from_msg(msg: &Value) -> Result<Self, TrustError> {
        let msg = msg.as_object().ok_or_else(|| malformed("msg must be an object"))?;
        let token_id = match msg.get("tid") {
            Some(Value::String(t)) if is_token_id(t) => t.clone(),
            Some(_) => {
                return Err(malformed("msg.tid must be 6..64 characters of [A-Za-z0-9._-]"));
            }
            None => return Err(malformed("msg.tid is missing")),
        };
        let pid = optional_object(msg, "pid")?;
        let doc = optional_object(msg, "doc")?;
        let name = |obj: Option<&Map<String, Value>>, key: &str, path: &str| {
            optional_string(obj, key, path)?.map(|s| capped(s, path)).transpose()
        };
        let given_name = name(pid, "gn", "msg.pid.gn")?;
        let family_name = name(pid, "fn", "msg.pid.fn")?;
        let birthdate = optional_string(pid, "dob", "msg.pid.dob")?
            .map(|d| {
                if is_full_date(d) || is_partial_date(d) {
                    Ok(d.to_owned())
                } else {
                    Err(malformed("msg.pid.dob must be YYYY-MM-DD, YYYY-MM or YYYY"))
                }
            })
            .transpose()?;
        let nationality =
            optional_string(pid, "nat", "msg.pid.nat")?.map(|n| icao_code(n, "msg.pid.nat")).transpose()?;
        let document_type = name(doc, "t", "msg.doc.t")?;
        let document_number = name(doc, "no", "msg.doc.no")?;
        let issuing_country =
            optional_string(doc, "is", "msg.doc.is")?.map(|n| icao_code(n, "msg.doc.is")).transpose()?;
        let document_expiry = optional_full_date(doc, "exp", "msg.doc.exp")?;
        let expiry = optional_full_date(Some(msg), "exp", "msg.exp")?;
        Ok(Self {
            token_id,
            given_name,
            family_name,
            birthdate,
            nationality,
            document_type,
            document_number,
            issuing_country,
            document_expiry,
            expiry,
        })
    }
}

/// Decodes the enrollment `vds` member: b64u or standard base64, with or without
/// padding, at most 16 KiB decoded.
pub fn decode_vds(vds: &str) -> Result<Vec<u8>, TrustError> {
    if vds.len() > MAX_SEAL_TEXT {
        return Err(malformed("vds exceeds 16 KiB"));
    }
    let bytes = b64::decode_any(vds).ok_or_else(|| malformed("vds is not base64"))?;
    if bytes.len() > MAX_SEAL_BYTES {
        return Err(malformed("vds exceeds 16 KiB"));
    }
    Ok(bytes)
}

/// Decodes and parses the enrollment `vds` member.
pub fn parse_vds(vds: &str) -> Result<Seal, TrustError> {
    Seal::parse(&decode_vds(vds)?)
}

/// Fuzzing entry point: every parser that takes seal bytes, on any input, never panics.
pub fn parse_seal_for_fuzz(bytes: &[u8]) {
    if let Ok(text) = std::str::from_utf8(bytes) {
        let _ = parse_vds(text);
    }
    if let Ok(seal) = Seal::parse(bytes) {
        let _ = Credential::from_msg(&seal.msg);
        let _ = super::jcs::canonicalize(&seal.data);
        if let Some(cer) = b64::decode_any(&seal.sig.cer) {
            let _ = super::cert::SignerCert::parse(&cer);
        }
    }
    let _ = super::cert::Crl::parse(bytes);
    let _ = super::cert::CaCert::parse(bytes);
    let _ = super::lists::parse_compact_jws(bytes);
}

impl Seal {
    /// Parses the seal's JSON bytes (strict JSON, ≤ 16 KiB, `hdr` rules of docs/credentials.md §1).
    pub fn parse(bytes: &[u8]) -> Result<Self, TrustError> {
        if bytes.len() > MAX_SEAL_BYTES {
            return Err(malformed("seal exceeds 16 KiB"));
        }
        let root = parse_strict(bytes).map_err(|e| malformed(&format!("seal is not strict JSON: {e}")))?;
        let root = root.as_object().ok_or_else(|| malformed("seal must be a JSON object"))?;
        let data = root.get("data").ok_or_else(|| malformed("data is missing"))?;
        let data_obj = data.as_object().ok_or_else(|| malformed("data must be an object"))?;
        let hdr = match data_obj.get("hdr") {
            Some(Value::Object(h)) => h,
            Some(_) => return Err(malformed("data.hdr must be an object")),
            None => return Err(malformed("data.hdr is missing")),
        };
        let msg = match data_obj.get("msg") {
            Some(m @ Value::Object(_)) => m.clone(),
            Some(_) => return Err(malformed("data.msg must be an object")),
            None => return Err(malformed("data.msg is missing")),
        };
        let doc_type = match hdr.get("t") {
            Some(Value::String(t)) if !t.is_empty() && t.len() <= 64 => t.clone(),
            Some(_) => return Err(malformed("hdr.t must be a string of 1..64 characters")),
            None => return Err(malformed("hdr.t is missing")),
        };
        match hdr.get("v") {
            Some(Value::Number(n)) if n.as_u64() == Some(1) => {}
            Some(_) => return Err(malformed("hdr.v must be the integer 1")),
            None => return Err(malformed("hdr.v is missing")),
        }
        let issuing_state = match hdr.get("is") {
            Some(Value::String(s)) => icao_code(s, "hdr.is")?,
            Some(_) => return Err(malformed("hdr.is must be a string")),
            None => return Err(malformed("hdr.is is missing")),
        };
        let sig = match root.get("sig") {
            Some(Value::Object(s)) => s,
            Some(_) => return Err(malformed("sig must be an object")),
            None => return Err(malformed("sig is missing")),
        };
        let field = |key: &str| match sig.get(key) {
            Some(Value::String(s)) => Ok(s.clone()),
            Some(_) => Err(malformed(&format!("sig.{key} must be a string"))),
            None => Err(malformed(&format!("sig.{key} is missing"))),
        };
        let sig = SealSignature { alg: field("alg")?, cer: field("cer")?, sigvl: field("sigvl")? };
        Ok(Self { header: SealHeader { doc_type, version: 1, issuing_state }, msg, data: data.clone(), sig })
    }
}

fn malformed(detail: &str) -> TrustError {
    TrustError::Malformed(detail.to_owned())
}

fn is_token_id(t: &str) -> bool {
    (6..=64).contains(&t.len()) && t.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

fn capped(s: &str, path: &str) -> Result<String, TrustError> {
    if s.chars().count() > MAX_NAME_CHARS {
        return Err(malformed(&format!("{path} exceeds {MAX_NAME_CHARS} characters")));
    }
    Ok(s.to_owned())
}

/// An ICAO 9303 state or nationality code: 1–3 upper-case letters after stripping
/// `<` fillers from the right (`D<<` → `D`).
pub(crate) fn icao_code(raw: &str, path: &str) -> Result<String, TrustError> {
    let code = raw.trim_end_matches('<');
    if raw.len() <= 3 && (1..=3).contains(&code.len()) && code.bytes().all(|b| b.is_ascii_uppercase()) {
        Ok(code.to_owned())
    } else {
        Err(malformed(&format!("{path} must be 1..3 upper-case letters (ICAO 9303)")))
    }
}

fn optional_object<'a>(msg: &'a Map<String, Value>, key: &str) -> Result<Option<&'a Map<String, Value>>, TrustError> {
    match msg.get(key) {
        None => Ok(None),
        Some(Value::Object(o)) => Ok(Some(o)),
        Some(_) => Err(malformed(&format!("msg.{key} must be an object"))),
    }
}

fn optional_string<'a>(
    obj: Option<&'a Map<String, Value>>,
    key: &str,
    path: &str,
) -> Result<Option<&'a str>, TrustError> {
    match obj.and_then(|o| o.get(key)) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(malformed(&format!("{path} must be a string"))),
    }
}

fn optional_full_date(obj: Option<&Map<String, Value>>, key: &str, path: &str) -> Result<Option<String>, TrustError> {
    optional_string(obj, key, path)?
        .map(|d| {
            if is_full_date(d) {
                Ok(d.to_owned())
            } else {
                Err(malformed(&format!("{path} must be a date YYYY-MM-DD")))
            }
        })
        .transpose()
}

fn digits(s: &str) -> Option<u32> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Parses `YYYY-MM-DD` into a calendar date (leap years honoured).
pub(crate) fn parse_full_date(s: &str) -> Option<time::Date> {
    let b = s.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let year = i32::try_from(digits(s.get(0..4)?)?).ok()?;
    let month = u8::try_from(digits(s.get(5..7)?)?).ok()?;
    let day = u8::try_from(digits(s.get(8..10)?)?).ok()?;
    let month = time::Month::try_from(month).ok()?;
    time::Date::from_calendar_date(year, month, day).ok()
}

fn is_full_date(s: &str) -> bool {
    parse_full_date(s).is_some()
}

fn is_partial_date(s: &str) -> bool {
    match s.len() {
        4 => digits(s).is_some(),
        7 => {
            s.as_bytes()[4] == b'-'
                && s.get(0..4).and_then(digits).is_some()
                && s.get(5..7).and_then(digits).is_some_and(|m| (1..=12).contains(&m))
        }
        _ => false,
    }
}

/// Whether a `YYYY-MM-DD` date has passed at `now`: dates are valid through the end
/// of that day, UTC (docs/credentials.md §6 rule 4). An unparseable date counts as passed.
pub(crate) fn date_passed(date: &str, now: i64) -> bool {
    match parse_full_date(date).and_then(|d| d.next_day()) {
        Some(next) => now >= next.midnight().assume_utc().unix_timestamp(),
        None => true,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use serde_json::json;

    fn seal_json(msg: Value) -> Value {
        json!({
            "data": {"hdr": {"t": "symbolon.id", "v": 1, "is": "AUS"}, "msg": msg},
            "sig": {"alg": "ES256", "cer": "AA", "sigvl": "AA"}
        })
    }

    fn good_msg() -> Value {
        json!({
            "tid": "AUS-7Q2M9K4T",
            "pid": {"gn": "JANE", "fn": "CITIZEN", "dob": "1990-04-01", "nat": "AUS"},
            "doc": {"t": "P", "no": "PA1234567", "is": "AUS", "exp": "2031-04-01"},
            "exp": "2030-01-01"
        })
    }

    fn parse_msg(msg: Value) -> Result<Credential, TrustError> {
        let bytes = serde_json::to_vec(&seal_json(msg)).unwrap();
        let seal = Seal::parse(&bytes)?;
        Credential::from_msg(&seal.msg)
    }

    #[test]
    fn parses_the_spec_example() {
        let c = parse_msg(good_msg()).unwrap();
        assert_eq!(c.token_id, "AUS-7Q2M9K4T");
        assert_eq!(c.given_name.as_deref(), Some("JANE"));
        assert_eq!(c.birthdate.as_deref(), Some("1990-04-01"));
        assert_eq!(c.issuing_country.as_deref(), Some("AUS"));
        assert_eq!(c.expiry.as_deref(), Some("2030-01-01"));
        assert_eq!(
            c.claim_names(),
            vec![
                "given_name",
                "family_name",
                "birthdate",
                "nationality",
                "document_type",
                "document_number",
                "issuing_country",
                "document_expiry"
            ]
        );
        let dbg = format!("{c:?}");
        assert!(!dbg.contains("JANE") && !dbg.contains("1990"), "{dbg}");
    }

    #[test]
    fn minimal_profile_and_unknown_fields() {
        let c = parse_msg(json!({"tid": "abc.DEF_1-2", "future": {"x": 1}})).unwrap();
        assert!(c.claim_names().is_empty());
        let c = parse_msg(json!({"tid": "abcdef", "pid": {"gn": "MARY  ANN", "extra": 1}})).unwrap();
        assert_eq!(c.given_name.as_deref(), Some("MARY  ANN"));
        assert_eq!(c.claim_names(), vec!["given_name"]);
    }

    #[test]
    fn token_id_rules() {
        for ok in ["abcdef", &"a".repeat(64), "A.B_C-9"] {
            let ok = if ok.len() < 6 { format!("{ok}xxxxx") } else { ok.to_owned() };
            assert!(parse_msg(json!({"tid": ok})).is_ok(), "{ok}");
        }
        for bad in [
            json!("abcde"),
            json!("a".repeat(65)),
            json!("abc def"),
            json!("abcdé1"),
            json!("abc/def"),
            json!(123456),
            json!(null),
        ] {
            assert!(matches!(parse_msg(json!({"tid": bad})), Err(TrustError::Malformed(_))));
        }
        assert!(matches!(parse_msg(json!({"pid": {}})), Err(TrustError::Malformed(_))));
    }

    #[test]
    fn date_rules() {
        for dob in ["1990-04-01", "2000-02-29", "1990-04", "1990", "0001-01-01"] {
            assert!(parse_msg(json!({"tid": "abcdef", "pid": {"dob": dob}})).is_ok(), "{dob}");
        }
        for dob in [
            "1990-4-01",
            "1990-02-30",
            "1900-02-29",
            "1990-13",
            "1990-00",
            "199",
            "1990-04-01T00:00:00Z",
            "+990-01-01",
            "1990/04/01",
            "",
            "19900401",
        ] {
            assert!(parse_msg(json!({"tid": "abcdef", "pid": {"dob": dob}})).is_err(), "{dob}");
        }
        // exp and doc.exp are full dates only.
        assert!(parse_msg(json!({"tid": "abcdef", "exp": "2030-01"})).is_err());
        assert!(parse_msg(json!({"tid": "abcdef", "doc": {"exp": "2030"}})).is_err());
        assert!(parse_msg(json!({"tid": "abcdef", "exp": "2024-02-29"})).is_ok());
        assert!(parse_msg(json!({"tid": "abcdef", "exp": "2023-02-29"})).is_err());
    }

    #[test]
    fn date_passed_is_inclusive_through_the_day() {
        // 2030-01-01T00:00:00Z = 1893456000
        assert!(!date_passed("2030-01-01", 1_893_456_000));
        assert!(!date_passed("2030-01-01", 1_893_456_000 + 86_399));
        assert!(date_passed("2030-01-01", 1_893_456_000 + 86_400));
        assert!(date_passed("garbage", 0));
    }

    #[test]
    fn nationality_rules() {
        for (raw, code) in [("AUS", "AUS"), ("D<<", "D"), ("D", "D"), ("XXA", "XXA"), ("GB<", "GB")] {
            let c = parse_msg(json!({"tid": "abcdef", "pid": {"nat": raw}})).unwrap();
            assert_eq!(c.nationality.as_deref(), Some(code));
        }
        for bad in ["aus", "AUSX", "<<<", "", "<DE", "D<E", "AU1", "D<<<"] {
            assert!(parse_msg(json!({"tid": "abcdef", "pid": {"nat": bad}})).is_err(), "{bad}");
        }
    }

    #[test]
    fn length_caps_and_types() {
        let long = "Ä".repeat(128);
        assert!(parse_msg(json!({"tid": "abcdef", "pid": {"fn": long}})).is_ok());
        let longer = "Ä".repeat(129);
        assert!(parse_msg(json!({"tid": "abcdef", "pid": {"fn": longer}})).is_err());
        assert!(parse_msg(json!({"tid": "abcdef", "doc": {"no": "9".repeat(129)}})).is_err());
        assert!(parse_msg(json!({"tid": "abcdef", "pid": {"gn": 5}})).is_err());
        assert!(parse_msg(json!({"tid": "abcdef", "pid": {"gn": null}})).is_err());
        assert!(parse_msg(json!({"tid": "abcdef", "pid": "x"})).is_err());
        assert!(parse_msg(json!({"tid": "abcdef", "doc": []})).is_err());
    }

    #[test]
    fn header_rules() {
        let mut v = seal_json(good_msg());
        v["data"]["hdr"]["v"] = json!(1.0);
        assert!(Seal::parse(&serde_json::to_vec(&v).unwrap()).is_err());
        v["data"]["hdr"]["v"] = json!("1");
        assert!(Seal::parse(&serde_json::to_vec(&v).unwrap()).is_err());
        v["data"]["hdr"]["v"] = json!(2);
        assert!(Seal::parse(&serde_json::to_vec(&v).unwrap()).is_err());
        v["data"]["hdr"]["v"] = json!(1);
        v["data"]["hdr"]["is"] = json!("D<<");
        let s = Seal::parse(&serde_json::to_vec(&v).unwrap()).unwrap();
        assert_eq!(s.header.issuing_state, "D");
        for (path, bad) in [("t", json!(1)), ("t", json!("")), ("is", json!("aus")), ("is", json!(null))] {
            let mut w = seal_json(good_msg());
            w["data"]["hdr"][path] = bad;
            assert!(Seal::parse(&serde_json::to_vec(&w).unwrap()).is_err(), "{path}");
        }
        let mut w = seal_json(good_msg());
        w["sig"]["cer"] = json!(5);
        assert!(Seal::parse(&serde_json::to_vec(&w).unwrap()).is_err());
        let mut w = seal_json(good_msg());
        w["data"]["msg"] = json!([]);
        assert!(Seal::parse(&serde_json::to_vec(&w).unwrap()).is_err());
    }

    #[test]
    fn non_profile_types_parse_without_profile() {
        let v = json!({
            "data": {"hdr": {"t": "icao.vacc", "v": 1, "is": "UTO"}, "msg": {"uvci": "U32870", "pid": {"n": "Smith Bill", "dob": "1990-01-02"}}},
            "sig": {"alg": "ES256", "cer": "AA==", "sigvl": "AA=="}
        });
        let s = Seal::parse(&serde_json::to_vec(&v).unwrap()).unwrap();
        assert_eq!(s.header.doc_type, "icao.vacc");
        assert!(Credential::from_msg(&s.msg).is_err());
    }

    #[test]
    fn vds_encodings_and_limits() {
        let bytes = serde_json::to_vec(&seal_json(good_msg())).unwrap();
        use base64::Engine;
        let e = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&bytes);
        let p = base64::engine::general_purpose::URL_SAFE.encode(&bytes);
        let s = base64::engine::general_purpose::STANDARD.encode(&bytes);
        for enc in [e, p, s] {
            assert!(parse_vds(&enc).is_ok());
        }
        assert!(matches!(parse_vds("not base64!"), Err(TrustError::Malformed(_))));
        let huge = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(vec![b' '; MAX_SEAL_BYTES + 1]);
        assert!(matches!(parse_vds(&huge), Err(TrustError::Malformed(_))));
        assert!(parse_vds(&"A".repeat(10 * 1024 * 1024)).is_err());
        // Exactly 16 KiB of whitespace around a valid seal is still accepted.
        let mut padded = bytes.clone();
        padded.resize(MAX_SEAL_BYTES, b' ');
        let enc = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&padded);
        assert!(parse_vds(&enc).is_ok());
    }

    #[test]
    fn strictness_and_truncation() {
        let bytes = serde_json::to_vec(&seal_json(good_msg())).unwrap();
        for cut in 0..bytes.len() {
            assert!(Seal::parse(&bytes[..cut]).is_err());
        }
        let mut trailing = bytes.clone();
        trailing.extend_from_slice(b"{}");
        assert!(Seal::parse(&trailing).is_err());
        let dup = br#"{"data":{"hdr":{"t":"symbolon.id","v":1,"v":1,"is":"AUS"},"msg":{"tid":"abcdef"}},"sig":{"alg":"ES256","cer":"","sigvl":""}}"#;
        assert!(Seal::parse(dup).is_err());
        assert!(Seal::parse(b"\xff\xfe").is_err());
        assert!(Seal::parse(b"[]").is_err());
        assert!(Seal::parse(b"null").is_err());
    }

    #[test]
    fn fuzz_entry_point_survives_garbage() {
        let mut seed = 0x1234_5678_u32;
        for len in 0..300 {
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 17;
                    seed ^= seed << 5;
                    (seed & 0xff) as u8
                })
                .collect();
            parse_seal_for_fuzz(&bytes);
        }
        parse_seal_for_fuzz(&serde_json::to_vec(&seal_json(good_msg())).unwrap());
        parse_seal_for_fuzz(b"-----BEGIN X509 CRL-----\n-----END X509 CRL-----\n");
        parse_seal_for_fuzz(b"a.b.c");
    }
}
