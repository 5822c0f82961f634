//! SAML HTTP-Redirect binding: query parsing, base64, raw DEFLATE with a size cap,
//! strict AuthnRequest / LogoutRequest XML.
#![no_main]
use symbolon::saml::redirect;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = redirect::decode(text, "SAMLRequest");
        let _ = redirect::parse_authn_request(text);
        let _ = redirect::parse_logout_request(text);
    }
    let _ = redirect::inflate(data, 64 * 1024);
});
