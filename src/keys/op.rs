//! The kinds of operation the token is asked to do, counted by the pool and named
//! (with their mechanism) in the metrics exposition.

/// What the HSM was asked to do; the PKCS#11 mechanism is named in the exposition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HsmOp {
    /// ECDSA P-256 signature (`CKM_ECDSA` over a SHA-256 digest, or `CKM_ECDSA_SHA256` where
    /// the token offers it; labelled `CKM_ECDSA` either way).
    SignEs256,
    /// `CKM_SHA256_HMAC` (one-time codes).
    HmacSha256,
    /// `CKM_AES_GCM` encryption (sealing stored data).
    Encrypt,
    /// `CKM_AES_GCM` decryption.
    Decrypt,
    /// RSASSA-PKCS1-v1_5 SHA-256 signature (the FCM service account's OAuth assertion).
    SignRs256,
    /// Reading a public key.
    PublicKey,
    /// Listing and generating keys.
    Catalog,
    /// The health round trip.
    Ping,
    /// A job its caller did not name (operator tooling, tests).
    Other,
}

impl HsmOp {
    /// Every kind, in declaration order (`op as usize` indexes this).
    pub const ALL: [HsmOp; 9] = [
        HsmOp::SignEs256,
        HsmOp::HmacSha256,
        HsmOp::Encrypt,
        HsmOp::Decrypt,
        HsmOp::SignRs256,
        HsmOp::PublicKey,
        HsmOp::Catalog,
        HsmOp::Ping,
        HsmOp::Other,
    ];

    /// (operation, PKCS#11 mechanism) label values.
    pub fn labels(self) -> (&'static str, &'static str) {
        match self {
            HsmOp::SignEs256 => ("sign", "CKM_ECDSA"),
            HsmOp::HmacSha256 => ("hmac", "CKM_SHA256_HMAC"),
            HsmOp::Encrypt => ("encrypt", "CKM_AES_GCM"),
            HsmOp::Decrypt => ("decrypt", "CKM_AES_GCM"),
            HsmOp::SignRs256 => ("sign_rs256", "CKM_SHA256_RSA_PKCS"),
            HsmOp::PublicKey => ("public_key", "none"),
            HsmOp::Catalog => ("catalog", "none"),
            HsmOp::Ping => ("ping", "none"),
            HsmOp::Other => ("other", "none"),
        }
    }
}
