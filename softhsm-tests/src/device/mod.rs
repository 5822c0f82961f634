//! The reference device (docs/protocol.md §3): a P-256 key standing in for the
//! phone's secure element, and the signed messages it sends.

pub mod client;

use std::path::Path;

use hmac::{Hmac, Mac as _};
use p256::ecdsa::SigningKey;
use rand_core::{OsRng, RngCore as _};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest as _, Sha256};

use crate::jose;

/// `typ` of the enrollment JWS.
pub const TYP_ENROLL: &str = "symbolon-enroll+jws";
/// `typ` of every later device JWS.
pub const TYP_DEVICE: &str = "symbolon-device+jws";

/// Errors of the device key store.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// Reading or writing the key file.
    #[error("key file {path}: {source}")]
    Io {
        /// File.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// The key file is not a P-256 private JWK.
    #[error("key file {0} is not a P-256 private JWK")]
    BadKey(String),
}

/// The device key pair.
#[derive(Clone)]
pub struct Device {
    key: SigningKey,
}

/// Public JWK exactly as the enrollment header carries it: `kty`, `crv`, `x`, `y`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublicJwk {
    /// `EC`.
    pub kty: String,
    /// `P-256`.
    pub crv: String,
    /// b64u of the 32-byte x coordinate.
    pub x: String,
    /// b64u of the 32-byte y coordinate.
    pub y: String,
}

#[derive(Serialize)]
struct EnrollHeader<'a> {
    alg: &'static str,
    typ: &'static str,
    jwk: PublicJwk,
    nonce: &'a str,
}

#[derive(Serialize)]
struct DeviceHeader {
    alg: &'static str,
    typ: &'static str,
    kid: String,
}

/// Push channel registered at enrollment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "provider", rename_all = "lowercase")]
pub enum Push {
    /// Firebase Cloud Messaging.
    Fcm {
        /// FCM registration token.
        token: String,
    },
    /// No push; the device pulls `/v1/device/pending`.
    None,
}

/// Enrollment payload (docs/protocol.md §4.2).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EnrollPayload {
    /// b64u of the VDS seal bytes.
    pub vds: String,
    /// Push channel.
    pub push: Push,
    /// Human-readable device name.
    pub device_name: String,
    /// Issued at, Unix seconds.
    pub iat: i64,
}

/// `/v1/device/pending` payload (docs/protocol.md §5.4).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PendingPayload {
    /// Issued at.
    pub iat: i64,
}

/// Decision on a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    /// Approve and release the identity token.
    Approve,
    /// Reject the session.
    Reject,
}

/// `/v1/auth/verify` payload (docs/protocol.md §5.5).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VerifyPayload {
    /// Session.
    pub session_id: String,
    /// OTP the user saw in the browser.
    pub otp: String,
    /// Approve or reject.
    pub decision: Decision,
    /// Granted scopes; omitted on reject.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scopes: Option<Vec<String>>,
    /// Issued at.
    pub iat: i64,
}

/// Deliberate faults for negative tests of the server's JWS checks (docs/protocol.md §12 rule 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JwsFault {
    /// `alg` `none`, empty signature.
    AlgNone,
    /// `alg` `HS256`, HMAC keyed with the public key bytes (key-confusion attack).
    AlgHs256,
    /// `alg` `RS256` with a 256-byte signature.
    AlgRs256,
    /// `jwk` carries the private `d` (enrollment only).
    JwkWithPrivate,
    /// `jwk` is not a point on P-256 (enrollment only).
    InvalidPoint,
    /// Well-formed but signed by another key.
    OtherKey,
    /// An extra protected header member.
    ExtraHeaderMember,
    /// `typ` `JWT`.
    WrongTyp,
    /// ES256 signature in DER instead of raw `r||s`.
    DerSignature,
    /// An unknown payload member.
    UnknownPayloadField,
    /// `iat` removed from the payload.
    MissingIat,
    /// `iat` moved 600 s into the past (outside the default 120 s window).
    SkewedIat,
}

impl JwsFault {
    /// Every fault, for table-driven tests.
    pub const ALL: [JwsFault; 12] = [
        Self::AlgNone,
        Self::AlgHs256,
        Self::AlgRs256,
        Self::JwkWithPrivate,
        Self::InvalidPoint,
        Self::OtherKey,
        Self::ExtraHeaderMember,
        Self::WrongTyp,
        Self::DerSignature,
        Self::UnknownPayloadField,
        Self::MissingIat,
        Self::SkewedIat,
    ];

    /// The docs/protocol.md §10 code the server must answer with.
    pub fn expected_code(self) -> &'static str {
        match self {
            Self::AlgNone | Self::AlgHs256 | Self::AlgRs256 | Self::OtherKey => "invalid_signature",
            // A DER signature is not 64 bytes: it does not verify.
            Self::DerSignature => "invalid_signature",
            Self::JwkWithPrivate
            | Self::InvalidPoint
            | Self::ExtraHeaderMember
            | Self::WrongTyp
            | Self::UnknownPayloadField
            | Self::MissingIat => "invalid_request",
            Self::SkewedIat => "clock_skew",
        }
    }
}

/// Current Unix time.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

impl Device {
    /// A fresh key.
    pub fn generate() -> Self {
        Self { key: SigningKey::random(&mut OsRng) }
    }

    /// Loads the key from a private JWK file.
    pub fn load(path: &Path) -> Result<Self, DeviceError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| DeviceError::Io { path: path.display().to_string(), source })?;
        let secret =
            p256::SecretKey::from_jwk_str(&text).map_err(|_| DeviceError::BadKey(path.display().to_string()))?;
        Ok(Self { key: SigningKey::from(secret) })
    }

    /// Loads the key, creating and saving a fresh one when the file does not exist.
    pub fn load_or_create(path: &Path) -> Result<Self, DeviceError> {
        if path.exists() {
            return Self::load(path);
        }
        let device = Self::generate();
        device.save(path)?;
        Ok(device)
    }

    /// Writes the key as a private JWK, mode 0600.
    pub fn save(&self, path: &Path) -> Result<(), DeviceError> {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        let io = |source| DeviceError::Io { path: path.display().to_string(), source };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let jwk = p256::SecretKey::from(&self.key).to_jwk_string();
        let mut file =
            std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path).map_err(io)?;
        file.write_all(jwk.as_bytes()).map_err(io)
    }

    /// The public key as a JWK.
    pub fn public_jwk(&self) -> PublicJwk {
        let point = self.key.verifying_key().to_encoded_point(false);
        let coordinate = |c: Option<&p256::FieldBytes>| c.map(|c| jose::b64u(c)).unwrap_or_default();
        PublicJwk { kty: "EC".into(), crv: "P-256".into(), x: coordinate(point.x()), y: coordinate(point.y()) }
    }

    /// The verifying key.
    pub fn verifying_key(&self) -> &p256::ecdsa::VerifyingKey {
        self.key.verifying_key()
    }

    /// `device_id`: RFC 7638 thumbprint, SHA-256, b64u.
    pub fn device_id(&self) -> String {
        jwk_thumbprint(&self.public_jwk())
    }

    /// The enrollment JWS (docs/protocol.md §3, §4.2).
    pub fn enrollment_jws(&self, nonce: &str, payload: &EnrollPayload) -> String {
        let header = self.enroll_header(nonce);
        sign_structs(&self.key, &header, payload)
    }

    /// A later device JWS (`/v1/device/pending`, `/v1/auth/verify`).
    pub fn device_jws<P: Serialize>(&self, payload: &P) -> String {
        sign_structs(&self.key, &self.device_header(), payload)
    }

    /// An enrollment JWS with a deliberate fault.
    pub fn enrollment_jws_with(&self, nonce: &str, payload: &EnrollPayload, fault: JwsFault) -> String {
        self.faulty(to_value(&self.enroll_header(nonce)), to_value(payload), fault)
    }

    /// A device JWS with a deliberate fault (`JwkWithPrivate` and `InvalidPoint`
    /// add a `jwk` member, which is an extra member here).
    pub fn device_jws_with<P: Serialize>(&self, payload: &P, fault: JwsFault) -> String {
        self.faulty(to_value(&self.device_header()), to_value(payload), fault)
    }

    fn enroll_header<'a>(&self, nonce: &'a str) -> EnrollHeader<'a> {
        EnrollHeader { alg: "ES256", typ: TYP_ENROLL, jwk: self.public_jwk(), nonce }
    }

    fn device_header(&self) -> DeviceHeader {
        DeviceHeader { alg: "ES256", typ: TYP_DEVICE, kid: self.device_id() }
    }

    fn faulty(&self, mut header: Value, mut payload: Value, fault: JwsFault) -> String {
        let mut signer = self.key.clone();
        match fault {
            JwsFault::AlgNone => header["alg"] = "none".into(),
            JwsFault::AlgHs256 => header["alg"] = "HS256".into(),
            JwsFault::AlgRs256 => header["alg"] = "RS256".into(),
            JwsFault::JwkWithPrivate => {
                let mut jwk = to_value(&self.public_jwk());
                jwk["d"] = jose::b64u(&self.key.to_bytes()).into();
                header["jwk"] = jwk;
            }
            JwsFault::InvalidPoint => {
                let mut jwk = self.public_jwk();
                let mut y = jose::b64u_decode(&jwk.y).unwrap_or_default();
                if let Some(last) = y.last_mut() {
                    *last ^= 1;
                }
                jwk.y = jose::b64u(&y);
                header["jwk"] = to_value(&jwk);
            }
            JwsFault::OtherKey => signer = SigningKey::random(&mut OsRng),
            JwsFault::ExtraHeaderMember => header["x5u"] = "https://example.invalid/key".into(),
            JwsFault::WrongTyp => header["typ"] = "JWT".into(),
            JwsFault::DerSignature => {}
            JwsFault::UnknownPayloadField => payload["unexpected"] = true.into(),
            JwsFault::MissingIat => {
                if let Some(object) = payload.as_object_mut() {
                    object.remove("iat");
                }
            }
            JwsFault::SkewedIat => {
                let iat = payload["iat"].as_i64().unwrap_or_else(unix_now);
                payload["iat"] = (iat - 600).into();
            }
        }
        let signing_input =
            format!("{}.{}", jose::b64u(header.to_string().as_bytes()), jose::b64u(payload.to_string().as_bytes()));
        let signature: Vec<u8> = match fault {
            JwsFault::AlgNone => Vec::new(),
            JwsFault::AlgHs256 => {
                let public = self.key.verifying_key().to_encoded_point(false);
                match Hmac::<Sha256>::new_from_slice(public.as_bytes()) {
                    Ok(mut mac) => {
                        mac.update(signing_input.as_bytes());
                        mac.finalize().into_bytes().to_vec()
                    }
                    Err(_) => Vec::new(),
                }
            }
            JwsFault::AlgRs256 => {
                let mut bytes = vec![0u8; 256];
                OsRng.fill_bytes(&mut bytes);
                bytes
            }
            JwsFault::DerSignature => {
                let signature: p256::ecdsa::Signature =
                    p256::ecdsa::signature::Signer::sign(&signer, signing_input.as_bytes());
                signature.to_der().as_bytes().to_vec()
            }
            _ => jose::es256_sign(&signer, signing_input.as_bytes()).to_vec(),
        };
        format!("{signing_input}.{}", jose::b64u(&signature))
    }
}

/// RFC 7638 thumbprint of an EC JWK: SHA-256 over `{"crv","kty","x","y"}` in
/// that order without whitespace, b64u.
pub fn jwk_thumbprint(jwk: &PublicJwk) -> String {
    let canonical = format!(r#"{{"crv":"{}","kty":"{}","x":"{}","y":"{}"}}"#, jwk.crv, jwk.kty, jwk.x, jwk.y);
    jose::b64u(&Sha256::digest(canonical.as_bytes()))
}

fn sign_structs<H: Serialize, P: Serialize>(key: &SigningKey, header: &H, payload: &P) -> String {
    // Serialising plain structs of strings and integers cannot fail.
    let header = serde_json::to_vec(header).unwrap_or_default();
    let payload = serde_json::to_vec(payload).unwrap_or_default();
    jose::compact_es256_raw(key, &header, &payload)
}

fn to_value<T: Serialize>(value: &T) -> Value {
    serde_json::to_value(value).unwrap_or(Value::Null)
}

/// Reads a `--vds` file holding either the seal JSON or its b64u / base64 text,
/// and returns the b64u (no padding) the enrollment payload carries.
pub fn vds_from_file_contents(contents: &[u8]) -> anyhow::Result<String> {
    use base64::Engine as _;
    let text = std::str::from_utf8(contents)?.trim();
    if text.starts_with('{') {
        serde_json::from_str::<Value>(text)?;
        return Ok(jose::b64u(text.as_bytes()));
    }
    let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    let bytes = match jose::b64u_decode(&compact) {
        Ok(bytes) => bytes,
        Err(_) => base64::engine::general_purpose::STANDARD.decode(&compact)?,
    };
    serde_json::from_slice::<Value>(&bytes).map_err(|e| anyhow::anyhow!("decoded --vds is not a JSON seal: {e}"))?;
    Ok(jose::b64u(&bytes))
}
