//! VDS-NC seals: base64 variants, strict JSON, the symbolon.id profile, JCS and the
//! signer certificate parser. Any input must return, never panic.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    symbolon::trust::seal::parse_seal_for_fuzz(data);
});
