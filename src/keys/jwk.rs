//! EC P-256 public keys as JWK (RFC 7517) with RFC 7638 thumbprints.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// A P-256 public key in JWK form.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EcPublicJwk {
    pub kty: String,
    pub crv: String,
    pub x: String,
    pub y: String,
}

impl EcPublicJwk {
    /// From an uncompressed SEC1 point (`04 || x || y`).
    pub fn from_sec1(point: &[u8]) -> Option<Self> {
        if point.len() != 65 || point[0] != 4 {
            return None;
        }
        let key = p256::PublicKey::from_sec1_bytes(point).ok()?;
        Some(Self::from_public_key(&key))
    }

    /// From a parsed key.
    pub fn from_public_key(key: &p256::PublicKey) -> Self {
        use p256::elliptic_curve::sec1::ToEncodedPoint;
        let point = key.to_encoded_point(false);
        let (x, y) = (point.x().map(|x| &x[..]), point.y().map(|y| &y[..]));
        Self {
            kty: "EC".into(),
            crv: "P-256".into(),
            x: URL_SAFE_NO_PAD.encode(x.unwrap_or_default()),
            y: URL_SAFE_NO_PAD.encode(y.unwrap_or_default()),
        }
    }

    /// The key, when the JWK names a valid P-256 point.
    pub fn to_public_key(&self) -> Option<p256::PublicKey> {
        if self.kty != "EC" || self.crv != "P-256" {
            return None;
        }
        let x = URL_SAFE_NO_PAD.decode(&self.x).ok()?;
        let y = URL_SAFE_NO_PAD.decode(&self.y).ok()?;
        if x.len() != 32 || y.len() != 32 {
            return None;
        }
        let mut sec1 = Vec::with_capacity(65);
        sec1.push(4);
        sec1.extend_from_slice(&x);
        sec1.extend_from_slice(&y);
        p256::PublicKey::from_sec1_bytes(&sec1).ok()
    }

    /// RFC 7638 thumbprint: b64u(SHA-256 of `{"crv":..,"kty":..,"x":..,"y":..}`).
    pub fn thumbprint(&self) -> String {
        let canonical = format!(r#"{{"crv":"{}","kty":"{}","x":"{}","y":"{}"}}"#, self.crv, self.kty, self.x, self.y);
        URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()))
    }
}
