//! Device and enrollment JWS: compact form, protected header, JWK, payload.
#![no_main]
use symbolon::service::enroll::EnrollPayload;
use symbolon::service::jws::{ParsedJws, TYP_DEVICE, TYP_ENROLL};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(jws) = ParsedJws::parse(data, TYP_ENROLL) {
        if let Ok((_, key)) = jws.header_jwk() {
            let _ = jws.verify(&key);
        }
        let _ = jws.payload::<EnrollPayload>(1_763_800_000, 120);
    }
    if let Ok(jws) = ParsedJws::parse(data, TYP_DEVICE) {
        let _ = jws.payload::<symbolon::service::auth::VerifyPayload>(1_763_800_000, 120);
    }
});
