//! Strict JSON (duplicate keys, trailing data) and RFC 8785 canonicalization: a
//! canonical form must parse back to the same value and be a fixed point.
#![no_main]
use symbolon::trust::{jcs, json};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(value) = json::parse_strict(data)
        && let Ok(canonical) = jcs::canonicalize(&value)
    {
        let again = json::parse_strict(&canonical).expect("canonical JSON parses");
        assert_eq!(jcs::canonicalize(&again).expect("canonicalizes"), canonical, "JCS is a fixed point");
    }
});
