//! Signed lists (docs/credentials.md §3.1, §3.4): compact JWS, strict JSON header,
//! `x5c[0]` signer certificate, ES256, and the payload of every kind (governance,
//! scheme, TSL, VRL). Any input must return, never panic.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    symbolon::trust::lists::fuzz_signed_list(data);
});
