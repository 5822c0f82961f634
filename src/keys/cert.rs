//! X.509 certificates kept in the token beside their key pair (same `CKA_ID`, same
//! label): the SAML signing certificate lives here so every node serves the same one.

use cryptoki::object::{Attribute, AttributeType, CertificateType, ObjectClass};
use der::{Decode, Encode};

use super::HsmError;
use super::token::TokenSession;

impl TokenSession {
    /// Stores `der` as a `CKO_CERTIFICATE` / `CKC_X_509` token object labelled `key_label`
    /// under the `CKA_ID` of the private key `key_label`. Replaces an existing
    /// certificate of that label.
    pub fn store_certificate(&mut self, key_label: &str, der: &[u8]) -> Result<(), HsmError> {
        let cert =
            x509_cert::Certificate::from_der(der).map_err(|_| HsmError::Malformed("certificate is not DER X.509"))?;
        let subject = cert.tbs_certificate.subject.to_der().map_err(|_| HsmError::Malformed("certificate subject"))?;
        let issuer = cert.tbs_certificate.issuer.to_der().map_err(|_| HsmError::Malformed("certificate issuer"))?;
        let serial =
            cert.tbs_certificate.serial_number.to_der().map_err(|_| HsmError::Malformed("certificate serial"))?;
        let key = self.find(ObjectClass::PRIVATE_KEY, key_label)?;
        let id = self
            .session
            .get_attributes(key, &[AttributeType::Id])?
            .into_iter()
            .find_map(|a| match a {
                Attribute::Id(id) => Some(id),
                _ => None,
            })
            .ok_or(HsmError::Malformed("private key without CKA_ID"))?;
        for old in self.certificate_handles(key_label)? {
            self.session.destroy_object(old)?;
        }
        self.session.create_object(&[
            Attribute::Class(ObjectClass::CERTIFICATE),
            Attribute::CertificateType(CertificateType::X_509),
            Attribute::Token(true),
            Attribute::Private(false),
            Attribute::Modifiable(true),
            Attribute::Label(key_label.as_bytes().to_vec()),
            Attribute::Id(id),
            Attribute::Subject(subject),
            Attribute::Issuer(issuer),
            Attribute::SerialNumber(serial),
            Attribute::Value(der.to_vec()),
        ])?;
        Ok(())
    }

    /// The DER of the certificate labelled `key_label`, if the token has one.
    pub fn certificate(&mut self, key_label: &str) -> Result<Option<Vec<u8>>, HsmError> {
        let handles = self.certificate_handles(key_label)?;
        let [h] = handles.as_slice() else {
            return match handles.len() {
                0 => Ok(None),
                _ => Err(HsmError::DuplicateLabel(key_label.to_string())),
            };
        };
        let value = self
            .session
            .get_attributes(*h, &[AttributeType::Value])?
            .into_iter()
            .find_map(|a| match a {
                Attribute::Value(v) => Some(v),
                _ => None,
            })
            .ok_or(HsmError::Malformed("certificate without CKA_VALUE"))?;
        Ok(Some(value))
    }

    fn certificate_handles(&mut self, key_label: &str) -> Result<Vec<cryptoki::object::ObjectHandle>, HsmError> {
        Ok(self.session.find_objects(&[
            Attribute::Class(ObjectClass::CERTIFICATE),
            Attribute::CertificateType(CertificateType::X_509),
            Attribute::Label(key_label.as_bytes().to_vec()),
        ])?)
    }
}
