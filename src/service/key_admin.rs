//! Key life-cycle changes by an operator, from the management API and the console
//! (docs/protocol.md §11, scope `management.keys.write`): the same `keyring::Lifecycle`
//! calls as `symbolon keys generate | rotate | retire` (docs/keys.md). The catalog
//! change is audited by the key ring (`key.state_changed`); the call itself is audited here
//! with the operator, as every management call.

use super::Services;
use super::management::OperatorCall;
use crate::error::{ApiError, ErrorCode};
pub use crate::keyring::KeyPurpose;
use crate::keyring::{CatalogEntry, KeyError};

/// A key after an operator's change.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct ChangedKey {
    pub label: String,
    /// `otp`, `jwt`, `saml`, `data`, `audit` or `pairwise`.
    pub purpose: String,
    /// `next`, `active`, `retiring` or `retired`.
    pub state: String,
}

impl From<&CatalogEntry> for ChangedKey {
    fn from(e: &CatalogEntry) -> Self {
        ChangedKey { label: e.label.clone(), purpose: e.purpose.as_str().into(), state: e.state.as_str().into() }
    }
}

/// The purpose named `name` (`otp`, `jwt`, ...), else `400 invalid_request`.
pub fn parse_purpose(name: &str) -> Result<KeyPurpose, ApiError> {
    KeyPurpose::ALL
        .into_iter()
        .find(|p| p.as_str() == name)
        .ok_or_else(|| ApiError::invalid_request(format!("unknown key purpose {name:?}")))
}

/// A step the life-cycle rules refuse now is `409 invalid_state` with the rule's
/// message; anything else is the HSM or catalog failing.
fn key_error(e: KeyError) -> ApiError {
    match e {
        KeyError::Refused(why) => ApiError::new(ErrorCode::InvalidState, why),
        KeyError::StateChanged(_) => ApiError::new(ErrorCode::InvalidState, e.to_string()),
        other => other.into(),
    }
}

impl Services {
    /// Runs `change` once the reason passes and audits the call (`keys.<action>` on
    /// `subject`) with its outcome.
    async fn key_change(
        &self,
        by: &OperatorCall<'_>,
        action: &str,
        subject: &str,
        change: impl std::future::Future<Output = Result<Vec<ChangedKey>, KeyError>>,
    ) -> Result<Vec<ChangedKey>, ApiError> {
        let name = format!("keys.{action}");
        if let Err(e) = by.check_reason() {
            return self.management().refused(by, subject, &name, e).await;
        }
        match change.await {
            Ok(keys) => {
                self.management().record(by.actor, subject, by.detail(&name, 200, &[])).await?;
                tracing::warn!(action = %name, subject, actor = by.actor, "key changed by an operator");
                Ok(keys)
            }
            Err(e) => self.management().refused(by, subject, &name, key_error(e)).await,
        }
    }

    /// Generates a key of `purpose` (`active` when the purpose has none, else `next`).
    pub async fn management_generate_key(
        &self,
        purpose: KeyPurpose,
        by: &OperatorCall<'_>,
        now: i64,
    ) -> Result<Vec<ChangedKey>, ApiError> {
        let change = async { self.key_rules.generate(purpose, now).await.map(|e| vec![ChangedKey::from(&e)]) };
        self.key_change(by, "generate", purpose.as_str(), change).await
    }

    /// Rotates `purpose` (`next` → `active`, `active` → `retiring`) and generates the
    /// following `next` key; returns the keys whose state changed or that were made.
    pub async fn management_rotate_key(
        &self,
        purpose: KeyPurpose,
        by: &OperatorCall<'_>,
        now: i64,
    ) -> Result<Vec<ChangedKey>, ApiError> {
        let change = async {
            self.key_rules.rotate(purpose, now, true).await.map(|r| {
                std::iter::once(&r.activated).chain(&r.retiring).chain(&r.next).map(ChangedKey::from).collect()
            })
        };
        self.key_change(by, "rotate", purpose.as_str(), change).await
    }

    /// Retires the key `label` when the rules allow it now (else `409 invalid_state`
    /// saying when).
    pub async fn management_retire_key(
        &self,
        label: &str,
        by: &OperatorCall<'_>,
        now: i64,
    ) -> Result<Vec<ChangedKey>, ApiError> {
        let change = async { self.key_rules.retire(label, now).await.map(|e| vec![ChangedKey::from(&e)]) };
        self.key_change(by, "retire", label, change).await
    }
}
