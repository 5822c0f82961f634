//! Base64 decoders for the encodings docs/credentials.md allows: b64u or standard, padding optional.

use base64::Engine;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};

const LENIENT: GeneralPurposeConfig =
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
const URL_LENIENT: GeneralPurpose = GeneralPurpose::new(&alphabet::URL_SAFE, LENIENT);
const STD_LENIENT: GeneralPurpose = GeneralPurpose::new(&alphabet::STANDARD, LENIENT);
const URL_NO_PAD: GeneralPurpose = GeneralPurpose::new(
    &alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::RequireNone),
);

/// Decodes b64u or standard base64, with or without `=` padding. A string mixing the
/// two alphabets is rejected.
pub(crate) fn decode_any(s: &str) -> Option<Vec<u8>> {
    let url = s.contains(['-', '_']);
    let std = s.contains(['+', '/']);
    match (url, std) {
        (true, true) => None,
        (false, true) => STD_LENIENT.decode(s).ok(),
        _ => URL_LENIENT.decode(s).ok(),
    }
}

/// Decodes standard base64 with or without padding (JWS `x5c`, TSL `ca`).
pub(crate) fn decode_std(s: &str) -> Option<Vec<u8>> {
    STD_LENIENT.decode(s).ok()
}

/// Decodes one segment of a compact JWS: b64u without padding (RFC 7515 §2).
pub(crate) fn decode_jws_segment(s: &str) -> Option<Vec<u8>> {
    URL_NO_PAD.decode(s).ok()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn variants_decode_to_the_same_bytes() {
        let bytes = [0xfbu8, 0xff, 0xbf, 0x01];
        for s in ["-_-_AQ", "-_-_AQ==", "+/+/AQ", "+/+/AQ=="] {
            assert_eq!(decode_any(s).as_deref(), Some(&bytes[..]), "{s}");
        }
        assert_eq!(decode_any("").as_deref(), Some(&[][..]));
    }

    #[test]
    fn rejects_mixed_alphabets_and_garbage() {
        assert_eq!(decode_any("-/AQ"), None);
        assert_eq!(decode_any("A"), None);
        assert_eq!(decode_any("AQ=A"), None);
        assert_eq!(decode_any("AQ==="), None);
        assert_eq!(decode_any("A Q=="), None);
        assert_eq!(decode_any("AQ\n"), None);
        assert_eq!(decode_jws_segment("AQ=="), None);
        assert_eq!(decode_jws_segment("AQ").as_deref(), Some(&[1u8][..]));
        assert_eq!(decode_std("-_AQ"), None);
    }
}
