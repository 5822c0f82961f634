//! Operator bearer tokens of the management API: the `Authorization` header, the JWS
//! header, the provider's JWKS document, signature and claim validation, scopes. Input:
//! JWKS JSON, a newline, the header value. Any input must return, never panic.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    symbolon::http::operator::fuzz_operator_token(data);
});
