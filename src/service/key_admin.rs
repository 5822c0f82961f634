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
    /// `otp`, `jwt`, `saml`, `saml-rsa`, `data`, `audit` or `pairwise`.
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

/// An operator's change to the key catalog: `generate` and `rotate` name a purpose,
/// `retire` a key's label.
#[derive(Debug, Clone, Copy)]
pub enum KeyChange<'a> {
    /// A new key of the purpose (`active` when the purpose has none, else `next`).
    Generate(KeyPurpose),
    /// `next` → `active`, `active` → `retiring`, and the following `next` key made.
    Rotate(KeyPurpose),
    /// The key retired, when the rules allow it now (else `409 invalid_state` saying when).
    Retire(&'a str),
}

impl<'a> KeyChange<'a> {
    /// The change `action` (`generate`, `rotate`, `retire`) on `target` (a purpose, or
    /// a label for `retire`), as the console's and the management API's paths name it.
    pub fn parse(action: &str, target: &'a str) -> Result<Self, ApiError> {
        match action {
            "generate" => parse_purpose(target).map(KeyChange::Generate),
            "rotate" => parse_purpose(target).map(KeyChange::Rotate),
            "retire" => Ok(KeyChange::Retire(target)),
            other => Err(ApiError::invalid_request(format!("unknown key action {other:?}"))),
        }
    }

    /// `generate`, `rotate` or `retire`.
    pub fn action(&self) -> &'static str {
        match self {
            KeyChange::Generate(_) => "generate",
            KeyChange::Rotate(_) => "rotate",
            KeyChange::Retire(_) => "retire",
        }
    }

    /// The purpose or the label acted on.
    pub fn target(&self) -> &'a str {
        match self {
            KeyChange::Generate(p) | KeyChange::Rotate(p) => p.as_str(),
            KeyChange::Retire(label) => label,
        }
    }
}

impl Services {
    /// Applies `change` with the life-cycle rules of `symbolon keys` and audits the
    /// call (`keys.<action>` on the purpose or label) with its outcome, refusals
    /// included; returns the keys whose state changed or that were made.
    pub async fn change_key(
        &self,
        change: KeyChange<'_>,
        by: &OperatorCall<'_>,
        now: i64,
    ) -> Result<Vec<ChangedKey>, ApiError> {
        let (name, subject) = (format!("keys.{}", change.action()), change.target());
        if let Err(e) = by.check_reason() {
            return self.management().refused(by, subject, &name, e).await;
        }
        let result = match change {
            KeyChange::Generate(purpose) => {
                self.key_rules.generate(purpose, now).await.map(|e| vec![ChangedKey::from(&e)])
            }
            KeyChange::Rotate(purpose) => self.key_rules.rotate(purpose, now, true).await.map(|r| {
                std::iter::once(&r.activated).chain(&r.retiring).chain(&r.next).map(ChangedKey::from).collect()
            }),
            KeyChange::Retire(label) => self.key_rules.retire(label, now).await.map(|e| vec![ChangedKey::from(&e)]),
        };
        match result {
            Ok(keys) => {
                self.management().record(by.actor, subject, by.detail(&name, 200, &[])).await?;
                tracing::warn!(action = %name, subject, actor = by.actor, "key changed by an operator");
                Ok(keys)
            }
            Err(e) => self.management().refused(by, subject, &name, key_error(e)).await,
        }
    }
}
