//! RSA keys: the FCM service account's key, brought in from outside and imported once
//! as a sensitive, non-extractable token object; and the RSA-3072 key pairs generated in
//! the token for SAML service providers that cannot verify ECDSA. Both only ever sign
//! RS256 (`CKM_SHA256_RSA_PKCS`) inside the token.

use ::rsa::RsaPrivateKey;
use ::rsa::traits::{PrivateKeyParts, PublicKeyParts};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use zeroize::{Zeroize, Zeroizing};

use super::HsmError;
use super::token::TokenSession;

impl TokenSession {
    /// Imports a two-prime RSA private key under `label`: token object, private,
    /// sensitive, never extractable, usable only to sign. The caller drops (and so
    /// zeroizes) `key` afterwards; the copies made here are wiped before returning.
    pub fn import_rsa_private_key(&mut self, label: &str, key: &RsaPrivateKey) -> Result<(), HsmError> {
        let [p, q] = key.primes() else {
            return Err(HsmError::KeyMaterial("only two-prime RSA keys can be imported"));
        };
        // CRT values are recomputed rather than trusted from the input.
        let one = ::rsa::BigUint::from(1u8);
        let dp = Zeroizing::new((key.d() % (p - &one)).to_bytes_be());
        let dq = Zeroizing::new((key.d() % (q - &one)).to_bytes_be());
        let mut qinv_big = key.crt_coefficient().ok_or(HsmError::KeyMaterial("RSA primes are not coprime"))?;
        let qinv = Zeroizing::new(qinv_big.to_bytes_be());
        qinv_big.zeroize();
        let mut id = [0u8; 16];
        self.session.generate_random_slice(&mut id)?;
        let mut template = vec![Attribute::Class(ObjectClass::PRIVATE_KEY), Attribute::KeyType(KeyType::RSA)];
        template.extend(private_key_attributes(label, &id));
        template.extend([
            Attribute::Modulus(key.n().to_bytes_be()),
            Attribute::PublicExponent(key.e().to_bytes_be()),
            Attribute::PrivateExponent(key.d().to_bytes_be()),
            Attribute::Prime1(p.to_bytes_be()),
            Attribute::Prime2(q.to_bytes_be()),
            Attribute::Exponent1(dp.to_vec()),
            Attribute::Exponent2(dq.to_vec()),
            Attribute::Coefficient(qinv.to_vec()),
        ]);
        let created = self.session.create_object(&template);
        wipe(&mut template);
        created?;
        Ok(())
    }

    /// RS256 (RSASSA-PKCS1-v1_5 with SHA-256, hashed in the token) over `message` with
    /// the RSA private key `label`.
    pub fn sign_rs256(&mut self, label: &str, message: &[u8]) -> Result<Vec<u8>, HsmError> {
        let key = self.find(ObjectClass::PRIVATE_KEY, label)?;
        Ok(self.session.sign(&Mechanism::Sha256RsaPkcs, key, message)?)
    }
}

/// What every RSA private key the server makes or imports is: a token object,
/// private, sensitive, never extractable, usable only to sign.
fn private_key_attributes(label: &str, id: &[u8]) -> [Attribute; 9] {
    [
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Sign(true),
        Attribute::Decrypt(false),
        Attribute::Unwrap(false),
        Attribute::Label(label.as_bytes().to_vec()),
        Attribute::Id(id.to_vec()),
    ]
}

/// Modulus length of the RSA key pairs the server generates (NIST SP 800-57: 128-bit
/// security, like P-256).
pub const RSA_BITS: u64 = 3072;

/// The public half of an RSA key pair: big-endian modulus and public exponent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RsaPublicParts {
    pub n: Vec<u8>,
    pub e: Vec<u8>,
}

impl RsaPublicParts {
    /// The key as an `rsa` crate public key (for certificates and verification).
    pub fn to_public_key(&self) -> Option<::rsa::RsaPublicKey> {
        ::rsa::RsaPublicKey::new(::rsa::BigUint::from_bytes_be(&self.n), ::rsa::BigUint::from_bytes_be(&self.e)).ok()
    }

    /// RFC 7638 thumbprint: b64u(SHA-256 of `{"e":..,"kty":"RSA","n":..}`), leading zero
    /// octets stripped (RFC 7518 §6.3.1).
    pub fn thumbprint(&self) -> String {
        use base64::Engine;
        use base64::engine::general_purpose::URL_SAFE_NO_PAD;
        use sha2::{Digest, Sha256};
        let strip = |v: &[u8]| -> Vec<u8> {
            let i = v.iter().position(|b| *b != 0).unwrap_or(v.len().saturating_sub(1));
            v[i..].to_vec()
        };
        let canonical = format!(
            r#"{{"e":"{}","kty":"RSA","n":"{}"}}"#,
            URL_SAFE_NO_PAD.encode(strip(&self.e)),
            URL_SAFE_NO_PAD.encode(strip(&self.n))
        );
        URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()))
    }
}

impl TokenSession {
    /// Generates an RSA-3072 key pair under `label` (`CKM_RSA_PKCS_KEY_PAIR_GEN`, public
    /// exponent 65537): the private half a token object, private, sensitive, never
    /// extractable, usable only to sign. Returns the private key's handle.
    pub(super) fn generate_rsa_pair(&mut self, label: &str, id: &[u8]) -> Result<ObjectHandle, HsmError> {
        let public = vec![
            Attribute::Token(true),
            Attribute::Private(false),
            Attribute::Verify(true),
            Attribute::ModulusBits(RSA_BITS.into()),
            Attribute::PublicExponent(vec![0x01, 0x00, 0x01]),
            Attribute::Label(label.as_bytes().to_vec()),
            Attribute::Id(id.to_vec()),
        ];
        let private = private_key_attributes(label, id);
        match self.session.generate_key_pair(&Mechanism::RsaPkcsKeyPairGen, &public, &private) {
            Ok((_, private)) => Ok(private),
            Err(cryptoki::error::Error::Pkcs11(cryptoki::error::RvError::MechanismInvalid, _)) => {
                Err(HsmError::Unsupported("CKM_RSA_PKCS_KEY_PAIR_GEN"))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The public half of the RSA key pair `label`.
    pub fn public_rsa(&mut self, label: &str) -> Result<RsaPublicParts, HsmError> {
        let key = self.find(ObjectClass::PUBLIC_KEY, label)?;
        let attrs = self.session.get_attributes(key, &[AttributeType::Modulus, AttributeType::PublicExponent])?;
        let (mut n, mut e) = (None, None);
        for a in attrs {
            match a {
                Attribute::Modulus(v) => n = Some(v),
                Attribute::PublicExponent(v) => e = Some(v),
                _ => {}
            }
        }
        match (n, e) {
            (Some(n), Some(e)) if !n.is_empty() && !e.is_empty() => Ok(RsaPublicParts { n, e }),
            _ => Err(HsmError::Malformed("RSA public key without CKA_MODULUS or CKA_PUBLIC_EXPONENT")),
        }
    }
}

/// Overwrites the private parts of an import template.
fn wipe(template: &mut [Attribute]) {
    for a in template {
        match a {
            Attribute::PrivateExponent(v)
            | Attribute::Prime1(v)
            | Attribute::Prime2(v)
            | Attribute::Exponent1(v)
            | Attribute::Exponent2(v)
            | Attribute::Coefficient(v) => v.zeroize(),
            _ => {}
        }
    }
}
