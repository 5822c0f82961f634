//! RP-initiated logout (OpenID Connect RP-Initiated Logout 1.0): the `id_token_hint`
//! check. The hint must be an id_token we signed (one of our published `jwt` keys,
//! ES256) for our issuer; its expiry is ignored, as the specification allows.

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};

/// One of our public signing keys: `kid` and the P-256 point's b64u `x`, `y`.
#[derive(Debug, Clone)]
pub struct OurKey {
    pub kid: String,
    pub x: String,
    pub y: String,
}

/// The claims of an `id_token_hint` signed by one of `keys` for `issuer` (expired or
/// not), or why it is refused.
pub fn verify_id_token_hint(jwt: &str, keys: &[OurKey], issuer: &str) -> Result<Map<String, Value>, &'static str> {
    let header = jsonwebtoken::decode_header(jwt).map_err(|_| "not a JWT")?;
    if header.alg != Algorithm::ES256 {
        return Err("not ES256");
    }
    let kid = header.kid.ok_or("no kid")?;
    let key = keys.iter().find(|k| k.kid == kid).ok_or("not signed by a key of ours")?;
    let decoding = DecodingKey::from_ec_components(&key.x, &key.y).map_err(|_| "bad key")?;
    let mut v = Validation::new(Algorithm::ES256);
    v.validate_exp = false;
    v.validate_aud = false;
    v.set_required_spec_claims::<&str>(&[]);
    v.set_issuer(&[issuer]);
    let data = jsonwebtoken::decode::<Map<String, Value>>(jwt, &decoding, &v).map_err(|_| "bad signature or issuer")?;
    Ok(data.claims)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_hints_are_refused() {
        let keys = vec![OurKey { kid: "k".into(), x: "AA".into(), y: "AA".into() }];
        for h in ["", "x", "a.b.c", "eyJhbGciOiJub25lIn0.e30."] {
            assert!(verify_id_token_hint(h, &keys, "https://idp.example").is_err(), "{h}");
        }
    }
}
