//! Identity claims as stored (sealed in the HSM) and released per scope.

use serde::{Deserialize, Serialize};

use crate::trust::Credential;

/// The credential claims kept for a token id (docs/protocol.md §7.3 sources). Missing
/// claims stay missing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoredClaims {
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub given_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub family_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub birthdate: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub nationality: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub document_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub document_number: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub issuing_country: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub document_expiry: Option<String>,
}

impl From<&Credential> for StoredClaims {
    fn from(c: &Credential) -> Self {
        Self {
            given_name: c.given_name.clone(),
            family_name: c.family_name.clone(),
            birthdate: c.birthdate.clone(),
            nationality: c.nationality.clone(),
            document_type: c.document_type.clone(),
            document_number: c.document_number.clone(),
            issuing_country: c.issuing_country.clone(),
            document_expiry: c.document_expiry.clone(),
        }
    }
}
