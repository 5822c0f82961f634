//! Operations on one logged-in PKCS#11 session. Everything here blocks and runs on a
//! pool worker thread (see `pool.rs`); object handles are looked up per session and
//! forgotten when the session is replaced.

use std::collections::HashMap;

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use sha2::{Digest, Sha256};

use super::HsmError;
use super::jwk::EcPublicJwk;
use super::pin::HsmPin;

/// DER of the P-256 curve OID (1.2.840.10045.3.1.7), the `CKA_EC_PARAMS` of our EC keys.
const P256_PARAMS: [u8; 10] = [0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
const GCM_IV_LEN: usize = 12;
const GCM_TAG_BITS: u64 = 128;

/// The kinds of key the server makes in the token, each with the usage its mechanism
/// needs (the key ring maps purposes to these).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// EC P-256 key pair, `CKM_ECDSA`.
    EcP256,
    /// 256-bit `CKK_GENERIC_SECRET`, `CKM_SHA256_HMAC`.
    HmacSecret,
    /// AES-256, `CKM_AES_GCM`.
    Aes256,
    /// RSA-3072 key pair, `CKM_SHA256_RSA_PKCS`.
    Rsa3072,
}

/// How the token was found and what it offers.
#[derive(Debug, Clone)]
pub struct TokenInfo {
    pub slot: Slot,
    pub label: String,
    pub serial: String,
    pub manufacturer: String,
    pub model: String,
    /// The token implements `CKM_ECDSA_SHA256` (hash in the token).
    pub has_ecdsa_sha256: bool,
}

/// A key object seen on the token (private, secret or public key with our label scheme).
#[derive(Debug, Clone)]
pub struct TokenKey {
    pub label: String,
    pub class: &'static str,
    pub key_type: &'static str,
    pub sensitive: bool,
    pub extractable: bool,
    /// `CKA_ALWAYS_SENSITIVE`: sensitive since it was made (false for imported keys).
    pub always_sensitive: bool,
    /// `CKA_NEVER_EXTRACTABLE`: never extractable since it was made (false for imported keys).
    pub never_extractable: bool,
}

impl TokenKey {
    /// The token reports that the key was made inside it and has never been readable or
    /// extractable: no copy of it can exist outside the token. Keys created from a known
    /// value (`C_CreateObject`, `C_UnwrapKey`) report false.
    pub fn made_in_token(&self) -> bool {
        self.always_sensitive && self.never_extractable
    }
}

/// A session plus the handles found through it.
pub struct TokenSession {
    pub(crate) session: Session,
    info: TokenInfo,
    /// Per object class (see [`class_slot`]), by label.
    handles: [HashMap<String, ObjectHandle>; 3],
}

impl TokenSession {
    /// Opens a read/write session on the token and logs the user in.
    pub fn open(ctx: &Pkcs11, info: &TokenInfo, pin: &HsmPin) -> Result<Self, HsmError> {
        let session = ctx.open_rw_session(info.slot)?;
        match session.login(UserType::User, Some(&pin.auth_pin())) {
            Ok(()) => {}
            Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {}
            Err(CkError::Pkcs11(RvError::PinIncorrect | RvError::PinLenRange, _)) => {
                return Err(HsmError::WrongPin);
            }
            Err(CkError::Pkcs11(RvError::PinLocked, _)) => return Err(HsmError::PinLocked),
            Err(e) => return Err(e.into()),
        }
        Ok(Self { session, info: info.clone(), handles: Default::default() })
    }

    /// Token details (label, serial, mechanisms).
    pub fn info(&self) -> &TokenInfo {
        &self.info
    }

    /// A cheap round trip to the token.
    pub fn ping(&self) -> Result<(), HsmError> {
        self.session.get_session_info()?;
        Ok(())
    }

    /// The handle of the object `label` of `class`, found once per session.
    pub(crate) fn find(&mut self, class: ObjectClass, label: &str) -> Result<ObjectHandle, HsmError> {
        let slot = class_slot(class);
        if let Some(h) = self.handles[slot].get(label) {
            return Ok(*h);
        }
        let found =
            self.session.find_objects(&[Attribute::Class(class), Attribute::Label(label.as_bytes().to_vec())])?;
        match found.as_slice() {
            [h] => {
                self.handles[slot].insert(label.to_string(), *h);
                Ok(*h)
            }
            [] => Err(HsmError::KeyNotFound(label.to_string())),
            _ => Err(HsmError::DuplicateLabel(label.to_string())),
        }
    }

    /// ES256 signature (raw `r||s`, 64 bytes) over `message` with the private key `label`.
    pub fn sign_es256(&mut self, label: &str, message: &[u8]) -> Result<[u8; 64], HsmError> {
        let key = self.find(ObjectClass::PRIVATE_KEY, label)?;
        let sig = if self.info.has_ecdsa_sha256 {
            self.session.sign(&Mechanism::EcdsaSha256, key, message)?
        } else {
            let digest = Sha256::digest(message);
            self.session.sign(&Mechanism::Ecdsa, key, &digest)?
        };
        sig.as_slice().try_into().map_err(|_| HsmError::Malformed("ECDSA signature length"))
    }

    /// HMAC-SHA256 (`CKM_SHA256_HMAC`) of `message` with the secret key `label`.
    pub fn hmac_sha256(&mut self, label: &str, message: &[u8]) -> Result<[u8; 32], HsmError> {
        let key = self.find(ObjectClass::SECRET_KEY, label)?;
        let mac = self.session.sign(&Mechanism::Sha256Hmac, key, message)?;
        mac.as_slice().try_into().map_err(|_| HsmError::Malformed("HMAC length"))
    }

    /// AES-256-GCM with a fresh 12-byte IV from the token: returns `iv || ciphertext || tag`.
    pub fn encrypt_gcm(&mut self, label: &str, aad: &[u8], plain: &[u8]) -> Result<Vec<u8>, HsmError> {
        let key = self.find(ObjectClass::SECRET_KEY, label)?;
        let mut iv = [0u8; GCM_IV_LEN];
        self.session.generate_random_slice(&mut iv)?;
        let mut iv_param = iv;
        let params = GcmParams::new(&mut iv_param, aad, GCM_TAG_BITS.into())?;
        let sealed = self.session.encrypt(&Mechanism::AesGcm(params), key, plain)?;
        let mut out = Vec::with_capacity(GCM_IV_LEN + sealed.len());
        out.extend_from_slice(&iv);
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    /// Opens `iv || ciphertext || tag` sealed by [`Self::encrypt_gcm`].
    pub fn decrypt_gcm(&mut self, label: &str, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, HsmError> {
        if sealed.len() < GCM_IV_LEN + 16 {
            return Err(HsmError::DecryptFailed);
        }
        let key = self.find(ObjectClass::SECRET_KEY, label)?;
        let mut iv = [0u8; GCM_IV_LEN];
        iv.copy_from_slice(&sealed[..GCM_IV_LEN]);
        let params = GcmParams::new(&mut iv, aad, GCM_TAG_BITS.into())?;
        match self.session.decrypt(&Mechanism::AesGcm(params), key, &sealed[GCM_IV_LEN..]) {
            Ok(p) => Ok(p),
            // SoftHSM2 reports a GCM tag mismatch as CKR_GENERAL_ERROR; others use
            // CKR_ENCRYPTED_DATA_INVALID or CKR_AEAD_DECRYPT_FAILED (PKCS#11 3.2).
            Err(CkError::Pkcs11(
                RvError::EncryptedDataInvalid
                | RvError::EncryptedDataLenRange
                | RvError::DataInvalid
                | RvError::GeneralError,
                _,
            )) => Err(HsmError::DecryptFailed),
            Err(e) => Err(e.into()),
        }
    }

    /// The public key of the EC key pair `label` as a JWK.
    pub fn public_jwk(&mut self, label: &str) -> Result<EcPublicJwk, HsmError> {
        let key = self.find(ObjectClass::PUBLIC_KEY, label)?;
        let attrs = self.session.get_attributes(key, &[AttributeType::EcPoint])?;
        let point = attrs
            .into_iter()
            .find_map(|a| match a {
                Attribute::EcPoint(p) => Some(p),
                _ => None,
            })
            .ok_or(HsmError::Malformed("CKA_EC_POINT missing"))?;
        let sec1 = unwrap_ec_point(&point).ok_or(HsmError::Malformed("CKA_EC_POINT"))?;
        EcPublicJwk::from_sec1(sec1).ok_or(HsmError::Malformed("CKA_EC_POINT is not a P-256 point"))
    }

    /// Generates a key of `kind` under `label`: token object, private, sensitive,
    /// never extractable.
    pub fn generate(&mut self, kind: KeyKind, label: &str) -> Result<(), HsmError> {
        let mut id = [0u8; 16];
        self.session.generate_random_slice(&mut id)?;
        let common = |extra: Vec<Attribute>| {
            let mut t = vec![
                Attribute::Token(true),
                Attribute::Private(true),
                Attribute::Sensitive(true),
                Attribute::Extractable(false),
                Attribute::Label(label.as_bytes().to_vec()),
                Attribute::Id(id.to_vec()),
            ];
            t.extend(extra);
            t
        };
        let unsupported = |mechanism: &'static str| {
            move |e: CkError| match e {
                CkError::Pkcs11(RvError::MechanismInvalid, _) => HsmError::Unsupported(mechanism),
                other => other.into(),
            }
        };
        let made = match kind {
            KeyKind::HmacSecret => self
                .session
                .generate_key(
                    &Mechanism::GenericSecretKeyGen,
                    &common(vec![
                        Attribute::Class(ObjectClass::SECRET_KEY),
                        Attribute::KeyType(KeyType::GENERIC_SECRET),
                        Attribute::ValueLen(32.into()),
                        Attribute::Sign(true),
                        Attribute::Verify(true),
                    ]),
                )
                .map_err(unsupported("CKM_GENERIC_SECRET_KEY_GEN"))?,
            KeyKind::Aes256 => self
                .session
                .generate_key(
                    &Mechanism::AesKeyGen,
                    &common(vec![
                        Attribute::Class(ObjectClass::SECRET_KEY),
                        Attribute::KeyType(KeyType::AES),
                        Attribute::ValueLen(32.into()),
                        Attribute::Encrypt(true),
                        Attribute::Decrypt(true),
                    ]),
                )
                .map_err(unsupported("CKM_AES_KEY_GEN"))?,
            KeyKind::EcP256 => {
                let public = vec![
                    Attribute::Token(true),
                    Attribute::Private(false),
                    Attribute::Verify(true),
                    Attribute::EcParams(P256_PARAMS.to_vec()),
                    Attribute::Label(label.as_bytes().to_vec()),
                    Attribute::Id(id.to_vec()),
                ];
                self.session
                    .generate_key_pair(&Mechanism::EccKeyPairGen, &public, &common(vec![Attribute::Sign(true)]))
                    .map_err(unsupported("CKM_EC_KEY_PAIR_GEN"))?
                    .1
            }
            KeyKind::Rsa3072 => self.generate_rsa_pair(label, &id)?,
        };
        self.check_made_in_token(made, label)
    }

    /// A key the server just generated must report `CKA_ALWAYS_SENSITIVE` and
    /// `CKA_NEVER_EXTRACTABLE` true (it was made sensitive and not extractable, so a
    /// token saying otherwise is not keeping its key in). Otherwise the key is deleted
    /// again (with the public half of a pair) and refused.
    fn check_made_in_token(&mut self, key: ObjectHandle, label: &str) -> Result<(), HsmError> {
        let attrs =
            self.session.get_attributes(key, &[AttributeType::AlwaysSensitive, AttributeType::NeverExtractable])?;
        let (mut always_sensitive, mut never_extractable) = (false, false);
        for a in attrs {
            match a {
                Attribute::AlwaysSensitive(v) => always_sensitive = v,
                Attribute::NeverExtractable(v) => never_extractable = v,
                _ => {}
            }
        }
        if always_sensitive && never_extractable {
            return Ok(());
        }
        for class in [ObjectClass::PRIVATE_KEY, ObjectClass::SECRET_KEY, ObjectClass::PUBLIC_KEY] {
            for h in
                self.session.find_objects(&[Attribute::Class(class), Attribute::Label(label.as_bytes().to_vec())])?
            {
                self.session.destroy_object(h)?;
            }
        }
        Err(HsmError::UnsafeKey {
            label: label.to_string(),
            reason: if always_sensitive {
                "the token reports CKA_NEVER_EXTRACTABLE false for a key it just generated (deleted again)"
            } else {
                "the token reports CKA_ALWAYS_SENSITIVE false for a key it just generated (deleted again)"
            },
        })
    }

    /// Imports a secret key with a known value (HMAC or AES), then sensitive and not
    /// extractable like every other key. For known-answer tests and operator migration.
    pub fn import_secret(&mut self, kind: KeyKind, label: &str, value: &[u8]) -> Result<(), HsmError> {
        let (key_type, usage) = match kind {
            KeyKind::HmacSecret => (KeyType::GENERIC_SECRET, [Attribute::Sign(true), Attribute::Verify(true)]),
            KeyKind::Aes256 => (KeyType::AES, [Attribute::Encrypt(true), Attribute::Decrypt(true)]),
            KeyKind::EcP256 | KeyKind::Rsa3072 => {
                return Err(HsmError::Malformed("only otp and data keys can be imported"));
            }
        };
        let mut template = vec![
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(key_type),
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Label(label.as_bytes().to_vec()),
            Attribute::Value(value.to_vec()),
        ];
        template.extend(usage);
        self.session.create_object(&template)?;
        Ok(())
    }

    /// Every private, secret and public key whose label starts with `prefix`.
    pub fn list_keys(&mut self, prefix: &str) -> Result<Vec<TokenKey>, HsmError> {
        let mut out = Vec::new();
        for class in [ObjectClass::PRIVATE_KEY, ObjectClass::SECRET_KEY, ObjectClass::PUBLIC_KEY] {
            for h in self.session.find_objects(&[Attribute::Class(class)])? {
                let attrs = self.session.get_attributes(
                    h,
                    &[
                        AttributeType::Label,
                        AttributeType::KeyType,
                        AttributeType::Sensitive,
                        AttributeType::Extractable,
                        AttributeType::AlwaysSensitive,
                        AttributeType::NeverExtractable,
                    ],
                )?;
                let mut key = TokenKey {
                    label: String::new(),
                    class: class_name(class),
                    key_type: "other",
                    sensitive: false,
                    extractable: true,
                    always_sensitive: false,
                    never_extractable: false,
                };
                for a in attrs {
                    match a {
                        Attribute::Label(l) => key.label = String::from_utf8_lossy(&l).into_owned(),
                        Attribute::KeyType(t) if t == KeyType::EC => key.key_type = "ec",
                        Attribute::KeyType(t) if t == KeyType::AES => key.key_type = "aes",
                        Attribute::KeyType(t) if t == KeyType::GENERIC_SECRET => key.key_type = "generic-secret",
                        Attribute::KeyType(t) if t == KeyType::RSA => key.key_type = "rsa",
                        Attribute::Sensitive(s) => key.sensitive = s,
                        Attribute::Extractable(e) => key.extractable = e,
                        Attribute::AlwaysSensitive(s) => key.always_sensitive = s,
                        Attribute::NeverExtractable(e) => key.never_extractable = e,
                        _ => {}
                    }
                }
                if class == ObjectClass::PUBLIC_KEY {
                    // Public keys are neither sensitive nor secret.
                    key.sensitive = true;
                    key.extractable = false;
                    key.always_sensitive = true;
                    key.never_extractable = true;
                }
                if key.label.starts_with(prefix) {
                    out.push(key);
                }
            }
        }
        out.sort_by(|a, b| a.label.cmp(&b.label).then(a.class.cmp(b.class)));
        Ok(out)
    }
}

/// `CKA_EC_POINT` is a DER OCTET STRING around the SEC1 point (PKCS#11 §2.3.3);
/// some tokens return the bare point. Accept both.
fn unwrap_ec_point(raw: &[u8]) -> Option<&[u8]> {
    match raw {
        [0x04, 0x41, rest @ ..] if rest.len() == 65 => Some(rest),
        [0x04, ..] if raw.len() == 65 => Some(raw),
        _ => None,
    }
}

fn class_id(class: ObjectClass) -> u64 {
    if class == ObjectClass::PRIVATE_KEY {
        3
    } else if class == ObjectClass::SECRET_KEY {
        4
    } else {
        2
    }
}

/// Index of a class in [`TokenSession::handles`].
fn class_slot(class: ObjectClass) -> usize {
    (class_id(class) - 2) as usize
}

fn class_name(class: ObjectClass) -> &'static str {
    match class_id(class) {
        3 => "private",
        4 => "secret",
        _ => "public",
    }
}

/// `C_Initialize`, tolerating `CKR_CRYPTOKI_ALREADY_INITIALIZED`.
pub fn initialize(ctx: &Pkcs11) -> Result<(), HsmError> {
    match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => Ok(()),
        Err(e) => Err(e.into()),
    }
}
