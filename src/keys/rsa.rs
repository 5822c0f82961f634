//! RSA private keys brought in from outside (the FCM service account's key): imported
//! once as a sensitive, non-extractable token object, then used only to sign RS256
//! (`CKM_SHA256_RSA_PKCS`) inside the token.

use ::rsa::RsaPrivateKey;
use ::rsa::traits::{PrivateKeyParts, PublicKeyParts};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, KeyType, ObjectClass};
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
        let mut template = vec![
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::KeyType(KeyType::RSA),
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Sign(true),
            Attribute::Decrypt(false),
            Attribute::Unwrap(false),
            Attribute::Label(label.as_bytes().to_vec()),
            Attribute::Id(id.to_vec()),
            Attribute::Modulus(key.n().to_bytes_be()),
            Attribute::PublicExponent(key.e().to_bytes_be()),
            Attribute::PrivateExponent(key.d().to_bytes_be()),
            Attribute::Prime1(p.to_bytes_be()),
            Attribute::Prime2(q.to_bytes_be()),
            Attribute::Exponent1(dp.to_vec()),
            Attribute::Exponent2(dq.to_vec()),
            Attribute::Coefficient(qinv.to_vec()),
        ];
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
