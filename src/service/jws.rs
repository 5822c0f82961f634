//! Device messages: compact JWS, ES256 only (docs/protocol.md §3, §12 rule 2).
//!
//! Check order: the compact form and the protected header parse (400), `alg` is
//! `ES256` (401 `invalid_signature`), the header has exactly the members of its kind
//! and the right `typ` (400), the key is a P-256 public key without `d` (400), the
//! signature verifies (401), the payload is a JSON object of the specified members
//! (400), `iat` is present (400) and within the window (401 `clock_skew`).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use p256::elliptic_curve::sec1::ToEncodedPoint;
use ring::signature::{ECDSA_P256_SHA256_FIXED, UnparsedPublicKey};
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::error::{ApiError, ErrorCode};
use crate::keys::EcPublicJwk;
use crate::trust::json::parse_strict;

/// A JSON body parsed as strictly as a device payload (no duplicate member names,
/// nothing after the value); `None` unless it is one JSON object.
pub fn strict_json_object(bytes: &[u8]) -> Option<Value> {
    parse_strict(bytes).ok().filter(Value::is_object)
}

/// `typ` of the enrollment JWS.
pub const TYP_ENROLL: &str = "symbolon-enroll+jws";
/// `typ` of every later device JWS.
pub const TYP_DEVICE: &str = "symbolon-device+jws";

/// A compact JWS split and its protected header checked, signature not yet verified.
#[derive(Debug)]
pub struct ParsedJws {
    header: Map<String, Value>,
    signing_input: Vec<u8>,
    payload: Vec<u8>,
    signature: Vec<u8>,
}

fn bad(detail: &str) -> ApiError {
    ApiError::new(ErrorCode::InvalidRequest, detail)
}

fn bad_signature() -> ApiError {
    ApiError::new(ErrorCode::InvalidSignature, "the signature does not verify")
}

fn b64u(part: &str, what: &str) -> Result<Vec<u8>, ApiError> {
    URL_SAFE_NO_PAD.decode(part).map_err(|_| bad(&format!("{what} is not base64url without padding")))
}

impl ParsedJws {
    /// Splits `body`, decodes the parts and checks `alg`, the header members and `typ`.
    pub fn parse(body: &[u8], typ: &str) -> Result<Self, ApiError> {
        let text = std::str::from_utf8(body).map_err(|_| bad("the body is not a compact JWS"))?;
        let text = text.trim_end_matches(['\r', '\n']);
        let mut parts = text.split('.');
        let (Some(h), Some(p), Some(s), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
            return Err(bad("the body is not a compact JWS (three dot-separated parts)"));
        };
        let header_bytes = b64u(h, "the protected header")?;
        let header = match parse_strict(&header_bytes) {
            Ok(Value::Object(m)) => m,
            _ => return Err(bad("the protected header is not a JSON object")),
        };
        if header.get("alg").and_then(Value::as_str) != Some("ES256") {
            return Err(ApiError::new(ErrorCode::InvalidSignature, "only alg ES256 is accepted"));
        }
        let expected: &[&str] =
            if typ == TYP_ENROLL { &["alg", "typ", "jwk", "nonce"] } else { &["alg", "typ", "kid"] };
        if header.len() != expected.len() || !expected.iter().all(|k| header.contains_key(*k)) {
            return Err(bad(&format!("the protected header must have exactly the members {expected:?}")));
        }
        if header.get("typ").and_then(Value::as_str) != Some(typ) {
            return Err(bad(&format!("typ must be {typ}")));
        }
        let payload = b64u(p, "the payload")?;
        let signature = b64u(s, "the signature")?;
        Ok(Self { header, signing_input: format!("{h}.{p}").into_bytes(), payload, signature })
    }

    /// A string member of the header.
    pub fn header_str(&self, name: &str) -> Option<&str> {
        self.header.get(name).and_then(Value::as_str)
    }

    /// The `jwk` of an enrollment header, checked to be a P-256 public key without `d`.
    pub fn header_jwk(&self) -> Result<(EcPublicJwk, p256::PublicKey), ApiError> {
        let Some(Value::Object(jwk)) = self.header.get("jwk") else {
            return Err(bad("jwk must be a JSON object"));
        };
        if jwk.contains_key("d") {
            return Err(bad("jwk must be a public key (it carries d)"));
        }
        let allowed = ["kty", "crv", "x", "y", "kid", "use", "alg", "key_ops"];
        if let Some(extra) = jwk.keys().find(|k| !allowed.contains(&k.as_str())) {
            return Err(bad(&format!("jwk has an unexpected member {extra:?}")));
        }
        let field = |n: &str| jwk.get(n).and_then(Value::as_str).map(str::to_string);
        let (Some(kty), Some(crv), Some(x), Some(y)) = (field("kty"), field("crv"), field("x"), field("y")) else {
            return Err(bad("jwk needs kty, crv, x and y strings"));
        };
        let jwk = EcPublicJwk { kty, crv, x, y };
        let key = jwk.to_public_key().ok_or_else(|| bad("jwk is not a valid P-256 public key"))?;
        Ok((jwk, key))
    }

    /// Verifies the ES256 signature (raw `r||s`, exactly 64 bytes) with `key`, with
    /// ring's P-256 (about four times the p256 crate's rate; docs/benchmarks.md). `p256`
    /// still parses the key and computes thumbprints.
    pub fn verify(&self, key: &p256::PublicKey) -> Result<(), ApiError> {
        let point = key.to_encoded_point(false);
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, point.as_bytes())
            .verify(&self.signing_input, &self.signature)
            .map_err(|_| bad_signature())
    }

    /// The payload as `T` (strict JSON; unknown members refused by `T`) and its `iat`
    /// checked against `now` within `skew` seconds. The distance is computed without
    /// overflow whatever `iat` says (`i64::MIN` is as far off as it looks).
    pub fn payload<T: DeserializeOwned + HasIat>(&self, now: i64, skew: u64) -> Result<T, ApiError> {
        let value = match parse_strict(&self.payload) {
            Ok(v @ Value::Object(_)) => v,
            _ => return Err(bad("the payload is not a JSON object")),
        };
        let payload: T =
            serde_json::from_value(value).map_err(|e| bad(&format!("the payload is not as specified: {e}")))?;
        let Some(iat) = payload.iat() else {
            return Err(bad("iat is missing"));
        };
        if now.abs_diff(iat) > skew {
            return Err(ApiError::new(
                ErrorCode::ClockSkew,
                format!("iat is more than {skew} s from the server's time"),
            ));
        }
        Ok(payload)
    }
}

/// Payloads that carry `iat`.
pub trait HasIat {
    fn iat(&self) -> Option<i64>;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(v: &Value) -> String {
        URL_SAFE_NO_PAD.encode(v.to_string())
    }

    #[test]
    fn structure_errors_are_400_and_alg_errors_401() {
        let cases: Vec<(String, ErrorCode)> = vec![
            ("".into(), ErrorCode::InvalidRequest),
            ("a.b".into(), ErrorCode::InvalidRequest),
            ("a.b.c.d".into(), ErrorCode::InvalidRequest),
            ("!!.e30.AA".into(), ErrorCode::InvalidRequest),
            (format!("{}.e30.AA", URL_SAFE_NO_PAD.encode("[1]")), ErrorCode::InvalidRequest),
            (
                format!("{}.e30.AA", enc(&serde_json::json!({"alg":"none","typ":TYP_DEVICE,"kid":"k"}))),
                ErrorCode::InvalidSignature,
            ),
            (
                format!("{}.e30.AA", enc(&serde_json::json!({"alg":"HS256","typ":TYP_DEVICE,"kid":"k"}))),
                ErrorCode::InvalidSignature,
            ),
            (
                format!("{}.e30.AA", enc(&serde_json::json!({"alg":"ES256","typ":TYP_DEVICE,"kid":"k","x":1}))),
                ErrorCode::InvalidRequest,
            ),
            (
                format!("{}.e30.AA", enc(&serde_json::json!({"alg":"ES256","typ":"JWT","kid":"k"}))),
                ErrorCode::InvalidRequest,
            ),
            (
                format!("{}.e30.A=", enc(&serde_json::json!({"alg":"ES256","typ":TYP_DEVICE,"kid":"k"}))),
                ErrorCode::InvalidRequest,
            ),
        ];
        for (input, code) in cases {
            let err = ParsedJws::parse(input.as_bytes(), TYP_DEVICE).unwrap_err();
            assert_eq!(err.code, code, "{input}");
        }
        // Duplicate header members are not JSON we accept.
        let dup = URL_SAFE_NO_PAD.encode(r#"{"alg":"ES256","alg":"ES256","typ":"symbolon-device+jws","kid":"k"}"#);
        assert_eq!(
            ParsedJws::parse(format!("{dup}.e30.AA").as_bytes(), TYP_DEVICE).unwrap_err().code,
            ErrorCode::InvalidRequest
        );
        assert!(ParsedJws::parse(&[0xff, 0xfe], TYP_DEVICE).is_err());
    }

    /// ring's verify accepts exactly what the p256 crate's did: a valid signature and
    /// its high-S twin; not a tampered input, another key's signature, a DER or short
    /// signature, zero or out-of-range `r` or `s`.
    #[test]
    fn ring_verify_accepts_what_the_p256_crate_accepts() {
        use p256::ecdsa::signature::{Signer, Verifier};
        use p256::ecdsa::{Signature, SigningKey, VerifyingKey};
        let key = SigningKey::random(&mut rand_core::OsRng);
        let public = p256::PublicKey::from(VerifyingKey::from(&key));
        let header = enc(&serde_json::json!({"alg":"ES256","typ":TYP_DEVICE,"kid":"k"}));
        let input = format!("{header}.{}", URL_SAFE_NO_PAD.encode(r#"{"iat":1}"#));
        let sig: Signature = key.sign(input.as_bytes());
        let raw = sig.to_bytes().to_vec();
        // n - s: the same signature with the other S.
        let high_s = {
            let s = -*sig.s();
            Signature::from_scalars(sig.r(), s).unwrap().to_bytes().to_vec()
        };
        let order: Vec<u8> = hex_bytes("ffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551");
        let mut r_is_n = order.clone();
        r_is_n.extend_from_slice(&raw[32..]);
        let mut zero_r = vec![0u8; 32];
        zero_r.extend_from_slice(&raw[32..]);
        let mut flipped = raw.clone();
        flipped[10] ^= 1;
        let other: Signature = SigningKey::random(&mut rand_core::OsRng).sign(input.as_bytes());
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("valid", raw.clone()),
            ("high S", high_s),
            ("flipped bit", flipped),
            ("other key", other.to_bytes().to_vec()),
            ("DER", sig.to_der().as_bytes().to_vec()),
            ("63 bytes", raw[..63].to_vec()),
            ("65 bytes", [raw.as_slice(), &[0]].concat()),
            ("r = n", r_is_n),
            ("r = 0", zero_r),
            ("empty", Vec::new()),
        ];
        let mut accepted = Vec::new();
        for (name, bytes) in cases {
            let jws = format!("{input}.{}", URL_SAFE_NO_PAD.encode(&bytes));
            let parsed = ParsedJws::parse(jws.as_bytes(), TYP_DEVICE).unwrap();
            let by_ring = parsed.verify(&public).is_ok();
            let by_p256 = Signature::from_slice(&bytes)
                .is_ok_and(|s| VerifyingKey::from(&public).verify(input.as_bytes(), &s).is_ok());
            assert_eq!(by_ring, by_p256, "{name}: ring {by_ring}, p256 {by_p256}");
            if by_ring {
                accepted.push(name);
            }
        }
        assert_eq!(accepted, ["valid", "high S"]);
        // The same signature over another payload does not verify.
        let jws = format!("{header}.{}.{}", URL_SAFE_NO_PAD.encode(r#"{"iat":2}"#), URL_SAFE_NO_PAD.encode(&raw));
        let parsed = ParsedJws::parse(jws.as_bytes(), TYP_DEVICE).unwrap();
        assert_eq!(parsed.verify(&public).unwrap_err().code, ErrorCode::InvalidSignature);
    }

    fn hex_bytes(hex: &str) -> Vec<u8> {
        (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap()).collect()
    }

    #[derive(Debug, serde::Deserialize)]
    struct IatOnly {
        iat: Option<i64>,
    }

    impl HasIat for IatOnly {
        fn iat(&self) -> Option<i64> {
            self.iat
        }
    }

    fn with_payload(payload: &str) -> ParsedJws {
        let header = enc(&serde_json::json!({"alg":"ES256","typ":TYP_DEVICE,"kid":"k"}));
        let jws = format!("{header}.{}.AA", URL_SAFE_NO_PAD.encode(payload));
        ParsedJws::parse(jws.as_bytes(), TYP_DEVICE).unwrap()
    }

    /// Extreme `iat` values and skews are refused or accepted by their distance, never
    /// by a wrapped subtraction, and never panic (issue 15 item 6).
    #[test]
    fn iat_skew_arithmetic_cannot_overflow() {
        let now = 1_800_000_000;
        for iat in [i64::MIN, i64::MIN + 1, -1, 0, now - 121, now + 121, i64::MAX - 1, i64::MAX] {
            let err = with_payload(&format!(r#"{{"iat":{iat}}}"#)).payload::<IatOnly>(now, 120).unwrap_err();
            assert_eq!(err.code, ErrorCode::ClockSkew, "iat {iat}");
        }
        for iat in [now - 120, now, now + 120] {
            assert!(with_payload(&format!(r#"{{"iat":{iat}}}"#)).payload::<IatOnly>(now, 120).is_ok(), "iat {iat}");
        }
        // A skew as large as a u64 accepts any iat, at either end of time.
        for (now, iat) in [(i64::MAX, i64::MIN), (i64::MIN, i64::MAX)] {
            assert!(with_payload(&format!(r#"{{"iat":{iat}}}"#)).payload::<IatOnly>(now, u64::MAX).is_ok());
        }
        // Numbers an i64 cannot hold are not an iat at all.
        for iat in ["9223372036854775808", "-9223372036854775809", "1e300", "1.5"] {
            let err = with_payload(&format!(r#"{{"iat":{iat}}}"#)).payload::<IatOnly>(now, 120).unwrap_err();
            assert_eq!(err.code, ErrorCode::InvalidRequest, "iat {iat}");
        }
    }
}
