//! `symbolon keys import-fcm FILE`: moves the FCM service account's RSA private key
//! into the HSM. The key becomes a sensitive, non-extractable token object; the rest of
//! the file is not secret and goes into `[push]` (see [`ImportedServiceAccount`]).

use std::path::Path;

use rsa::RsaPrivateKey;
use rsa::pkcs8::DecodePrivateKey;
use rsa::traits::PublicKeyParts;
use serde::Deserialize;
use zeroize::Zeroizing;

use super::PushError;
use super::config::DEFAULT_TOKEN_URI;
use crate::keys::{HsmError, LABEL_PREFIX, SessionPool};

const MIN_RSA_BITS: usize = 2048;
const MAX_RSA_BITS: usize = 8192;

/// The fields of a Google service-account JSON file that Symbolon uses. Other fields
/// (`client_id`, `auth_uri`, ...) are ignored.
#[derive(Deserialize)]
struct ServiceAccountFile {
    #[serde(rename = "type")]
    kind: String,
    project_id: String,
    #[serde(default)]
    private_key_id: String,
    private_key: String,
    client_email: String,
    #[serde(default)]
    token_uri: Option<String>,
}

/// What was imported, and the non-secret settings `[push]` needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportedServiceAccount {
    /// HSM label of the imported private key (`push.key_label`).
    pub label: String,
    pub project_id: String,
    pub client_email: String,
    pub token_uri: String,
    pub private_key_id: String,
}

impl ImportedServiceAccount {
    /// The `[push]` section to put in `symbolon.toml`.
    pub fn config_snippet(&self) -> String {
        let q = |s: &str| serde_json::Value::String(s.to_owned()).to_string();
        format!(
            "[push]\nprovider = \"fcm\"\nproject_id = {}\nclient_email = {}\ntoken_uri = {}\nprivate_key_id = {}\nkey_label = {}\n",
            q(&self.project_id),
            q(&self.client_email),
            q(&self.token_uri),
            q(&self.private_key_id),
            q(&self.label),
        )
    }
}

/// Reads the service-account JSON at `json_path`, imports its private key into the
/// token as `symbolon-fcm-<UTC timestamp>` (sign only, sensitive, not extractable) and
/// returns the label and the settings to configure. The caller prints
/// [`ImportedServiceAccount::config_snippet`] and may then delete the file.
pub async fn import_service_account(pool: &SessionPool, json_path: &Path) -> Result<ImportedServiceAccount, PushError> {
    let raw = Zeroizing::new(
        std::fs::read_to_string(json_path)
            .map_err(|e| PushError::ServiceAccount(format!("cannot read {}: {e}", json_path.display())))?,
    );
    let (key, imported) = parse_service_account(&raw, crate::ids::now_unix())?;
    drop(raw);
    let base = imported.label.clone();
    let label = pool
        .run_as(crate::metrics::HsmOp::Catalog, move |s| {
            // Two imports within one second get distinct labels.
            let mut label = base.clone();
            let mut n = 1;
            loop {
                match s.find(cryptoki::object::ObjectClass::PRIVATE_KEY, &label) {
                    Err(HsmError::KeyNotFound(_)) => break,
                    Ok(_) | Err(HsmError::DuplicateLabel(_)) => {
                        n += 1;
                        label = format!("{base}-{n}");
                    }
                    Err(e) => return Err(e),
                }
            }
            s.import_rsa_private_key(&label, &key)?;
            Ok(label)
        })
        .await?;
    tracing::info!(%label, client_email = %imported.client_email, "imported the FCM service account key into the HSM");
    Ok(ImportedServiceAccount { label, ..imported })
}

/// Parses the file; the key is returned separately and zeroizes itself when dropped.
fn parse_service_account(raw: &str, now: i64) -> Result<(RsaPrivateKey, ImportedServiceAccount), PushError> {
    let bad = |m: &str| PushError::ServiceAccount(m.to_owned());
    let file: ServiceAccountFile = serde_json::from_str(raw)
        .map_err(|e| PushError::ServiceAccount(format!("not a service-account JSON file: {}", e.classify_name())))?;
    let pem = Zeroizing::new(file.private_key);
    if file.kind != "service_account" {
        return Err(bad("\"type\" is not \"service_account\""));
    }
    if file.project_id.is_empty() || !file.client_email.contains('@') {
        return Err(bad("project_id or client_email is missing"));
    }
    let key =
        RsaPrivateKey::from_pkcs8_pem(&pem).map_err(|_| bad("private_key is not a PKCS#8 PEM RSA private key"))?;
    let bits = key.n().bits();
    if !(MIN_RSA_BITS..=MAX_RSA_BITS).contains(&bits) {
        return Err(PushError::ServiceAccount(format!(
            "the RSA key has {bits} bits; {MIN_RSA_BITS} to {MAX_RSA_BITS} are accepted"
        )));
    }
    key.validate().map_err(|_| bad("the RSA private key is inconsistent"))?;
    Ok((
        key,
        ImportedServiceAccount {
            label: fcm_label(now),
            project_id: file.project_id,
            client_email: file.client_email,
            token_uri: file.token_uri.filter(|u| !u.is_empty()).unwrap_or_else(|| DEFAULT_TOKEN_URI.to_owned()),
            private_key_id: file.private_key_id,
        },
    ))
}

/// `symbolon-fcm-YYYYMMDDTHHMMSSZ`. Not a `KeyPurpose` label: the key ring checks it
/// is sensitive and not extractable but does not catalog it.
fn fcm_label(unix: i64) -> String {
    let ts = time::OffsetDateTime::from_unix_timestamp(unix).unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let fmt = time::macros::format_description!("[year][month][day]T[hour][minute][second]Z");
    let stamp = ts.format(&fmt).unwrap_or_else(|_| unix.to_string());
    format!("{LABEL_PREFIX}fcm-{stamp}")
}

trait ClassifyName {
    fn classify_name(&self) -> &'static str;
}

impl ClassifyName for serde_json::Error {
    /// The error category only: serde's messages can quote the file's content.
    fn classify_name(&self) -> &'static str {
        match self.classify() {
            serde_json::error::Category::Io => "I/O error",
            serde_json::error::Category::Syntax => "invalid JSON",
            serde_json::error::Category::Data => "a required field is missing or has the wrong type",
            serde_json::error::Category::Eof => "truncated JSON",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::KeyPurpose;

    #[test]
    fn label_is_ours_but_not_a_purpose() {
        let l = fcm_label(1_800_000_000);
        assert_eq!(l, "symbolon-fcm-20270115T080000Z");
        assert_eq!(KeyPurpose::from_label(&l), None);
    }

    #[test]
    fn rejects_wrong_files_without_echoing_them() {
        let e = parse_service_account(r#"{"type":"user","private_key":"SECRET"}"#, 0)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(!e.contains("SECRET"), "{e}");
        let e = parse_service_account(
            r#"{"type":"service_account","project_id":"p","client_email":"a@b","private_key":"SECRET"}"#,
            0,
        )
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
        assert!(e.contains("PKCS#8") && !e.contains("SECRET"), "{e}");
    }

    #[test]
    fn snippet_is_toml() {
        let s = ImportedServiceAccount {
            label: "symbolon-fcm-x".into(),
            project_id: "p".into(),
            client_email: "a@b".into(),
            token_uri: DEFAULT_TOKEN_URI.into(),
            private_key_id: "k\"1".into(),
        }
        .config_snippet();
        assert!(s.contains("private_key_id = \"k\\\"1\""), "{s}");
        assert!(s.contains("key_label = \"symbolon-fcm-x\""), "{s}");
    }
}
