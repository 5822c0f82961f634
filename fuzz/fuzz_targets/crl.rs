//! CRLs in DER or PEM (refusing delta, indirect and partitioned CRLs), CA certificates
//! (PEM bundles or DER), and a CRL's signature against CAs: see
//! `symbolon::trust::cert::fuzz_crl` for the input layout. Any input must return.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    symbolon::trust::cert::fuzz_crl(data);
});
