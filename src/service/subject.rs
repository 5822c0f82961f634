//! The subject a relying party sees for a person (docs/protocol.md §13): the token id
//! (`public`), or a pairwise subject made in the HSM so that relying parties of
//! different sectors cannot correlate people by `sub`.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use super::Services;
use super::config::{ServiceConfig, SubjectType};
use crate::error::ApiError;
use crate::keyring::KeyPurpose;

/// Domain separation of the pairwise MAC input (docs/protocol.md §13).
const PAIRWISE_LABEL: &[u8] = b"symbolon-pairwise-v1";

/// The MAC input of a pairwise subject: `"symbolon-pairwise-v1" 0 sector 0 token_id`.
/// Neither part may contain NUL (sectors are host names, token ids `[A-Za-z0-9._-]`),
/// so the encoding is unambiguous.
pub fn pairwise_message(sector: &str, token_id: &str) -> Vec<u8> {
    let mut m = Vec::with_capacity(PAIRWISE_LABEL.len() + sector.len() + token_id.len() + 2);
    m.extend_from_slice(PAIRWISE_LABEL);
    m.push(0);
    m.extend_from_slice(sector.as_bytes());
    m.push(0);
    m.extend_from_slice(token_id.as_bytes());
    m
}

impl Services {
    /// The pairwise subject of `token_id` in `sector`: b64u of HMAC-SHA256 under the
    /// pairwise key, computed in the HSM. Stable for as long as that key exists (it is
    /// never rotated), whatever happens to the keys of other purposes.
    pub(super) async fn pairwise_subject(&self, sector: &str, token_id: &str) -> Result<String, ApiError> {
        let key = self.keys.active(KeyPurpose::Pairwise)?;
        let mac = self.keys.hmac(&key.label, pairwise_message(sector, token_id)).await?;
        Ok(URL_SAFE_NO_PAD.encode(mac))
    }

    /// The subject `service` receives for `token_id`, by its subject type.
    pub(super) async fn subject_for(&self, service: &ServiceConfig, token_id: &str) -> Result<String, ApiError> {
        match service.subject_type() {
            SubjectType::Public => Ok(token_id.to_string()),
            SubjectType::Pairwise => {
                // `config check` refuses a pairwise service without a sector.
                let sector = service.sector().map_err(|e| {
                    tracing::error!(service_id = %service.id, reason = %e, "pairwise service without a sector");
                    ApiError::internal()
                })?;
                self.pairwise_subject(&sector, token_id).await
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_is_label_sector_token_separated_by_nul() {
        assert_eq!(pairwise_message("rp.example", "AUS-1"), b"symbolon-pairwise-v1\0rp.example\0AUS-1".to_vec());
    }
}
