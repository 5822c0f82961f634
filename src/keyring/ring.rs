//! The key ring: the session pool plus the catalog of key states kept in the durable
//! store, so every node agrees which key signs, MACs or encrypts.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use super::{CatalogEntry, KeyError, KeyPurpose, KeyState, key_kind};
use crate::keys::{
    EcPublicJwk, Envelope, HsmError, HsmOp, LABEL_PREFIX, RsaPublicParts, SessionPool, TokenKey, TokenSession,
};
use crate::metrics::METRICS;
use crate::store::audit::kinds::KEY_STATE_CHANGED;
use crate::store::{AuditEvent, DurableStore, StoreError};

/// How long generating a key may take: an RSA-3072 key pair takes seconds on a soft
/// token (more on a busy machine, and on some HSMs), far beyond `hsm.deadline`, which
/// bounds request paths. Generation is an operator or start-up step, never a request's.
pub const KEY_GENERATION_DEADLINE: std::time::Duration = std::time::Duration::from_secs(120);

/// Keys as the server uses them.
#[derive(Clone)]
pub struct KeyRing {
    pool: SessionPool,
    store: Arc<dyn DurableStore>,
    catalog: Arc<RwLock<Vec<CatalogEntry>>>,
    /// Public keys of EC key pairs by label (public, so caching them is harmless).
    public: Arc<RwLock<HashMap<String, EcPublicJwk>>>,
    /// Who the audit trail names for changes made through this ring (`operator` for
    /// the CLI, `node:<host>` for a server).
    actor: Arc<str>,
    /// `keys.imported`: labels accepted although imported.
    imported: Arc<[String]>,
    /// The token's keys of our label scheme as last synced.
    token_keys: Arc<RwLock<Vec<TokenKey>>>,
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRing").field("pool", &self.pool).finish_non_exhaustive()
    }
}

/// Refuses a private or secret key that could leave the token, and one that may have a
/// copy outside it: a key of our purposes must report `CKA_ALWAYS_SENSITIVE` and
/// `CKA_NEVER_EXTRACTABLE` true unless it is of an imported purpose (the FCM key) or
/// named in `keys.imported`.
pub fn check_key_safety(key: &TokenKey, imported: &[String]) -> Result<(), HsmError> {
    if key.class == "public" {
        return Ok(());
    }
    let refuse = |reason| Err(HsmError::UnsafeKey { label: key.label.clone(), reason });
    if key.extractable {
        return refuse("CKA_EXTRACTABLE is true");
    }
    if !key.sensitive {
        return refuse("CKA_SENSITIVE is false");
    }
    if is_imported(key, imported) {
        return Ok(());
    }
    if !key.never_extractable {
        return refuse(
            "CKA_NEVER_EXTRACTABLE is false: the key was extractable or imported once, so a copy may exist \
             outside the token (name it in keys.imported if it was imported on purpose)",
        );
    }
    if !key.always_sensitive {
        return refuse(
            "CKA_ALWAYS_SENSITIVE is false: the key was readable or imported once, so a copy may exist \
             outside the token (name it in keys.imported if it was imported on purpose)",
        );
    }
    Ok(())
}

/// The key is an accepted exception to the made-in-token rule: of an imported purpose
/// (`fcm`) or named in `keys.imported`.
fn is_imported(key: &TokenKey, imported: &[String]) -> bool {
    super::labels::imported_purpose(&key.label).is_some() || imported.contains(&key.label)
}

/// Where a token key came from, for `keys list`: `generated` (the token reports it
/// always sensitive and never extractable) or `imported`.
pub fn origin(key: &TokenKey) -> &'static str {
    if key.made_in_token() { "generated" } else { "imported" }
}

impl KeyRing {
    /// Reads the token's keys, refuses unsafe ones, adopts keys of our label scheme that
    /// the catalog does not know (as `active` when the purpose has none, else `next`)
    /// and loads the catalog.
    pub async fn open(pool: SessionPool, store: Arc<dyn DurableStore>, now: i64) -> Result<Self, KeyError> {
        Self::open_as(pool, store, now, "symbolon").await
    }

    /// As [`Self::open`], recording catalog changes in the audit trail as made by `actor`.
    pub async fn open_as(
        pool: SessionPool,
        store: Arc<dyn DurableStore>,
        now: i64,
        actor: &str,
    ) -> Result<Self, KeyError> {
        Self::open_with(pool, store, now, actor, &[]).await
    }

    /// As [`Self::open_as`], accepting the imported keys named in `imported`
    /// (`keys.imported`).
    pub async fn open_with(
        pool: SessionPool,
        store: Arc<dyn DurableStore>,
        now: i64,
        actor: &str,
        imported: &[String],
    ) -> Result<Self, KeyError> {
        let ring = Self {
            pool,
            store,
            catalog: Arc::new(RwLock::new(Vec::new())),
            public: Arc::new(RwLock::new(HashMap::new())),
            actor: Arc::from(actor),
            imported: Arc::from(imported),
            token_keys: Arc::new(RwLock::new(Vec::new())),
        };
        ring.sync(now).await?;
        Ok(ring)
    }

    /// The pool underneath.
    pub fn pool(&self) -> &SessionPool {
        &self.pool
    }

    /// The durable store holding the catalog.
    pub fn store(&self) -> &Arc<dyn DurableStore> {
        &self.store
    }

    /// Who the audit trail names for changes made through this ring.
    pub fn actor(&self) -> &str {
        &self.actor
    }

    /// A `key.state_changed` audit event (identifiers only, never key material).
    pub(crate) fn state_event(
        &self,
        entry: &CatalogEntry,
        from: Option<KeyState>,
        to: KeyState,
        reason: &str,
        at: i64,
    ) -> AuditEvent {
        AuditEvent::new(
            at,
            KEY_STATE_CHANGED,
            self.actor.to_string(),
            entry.label.clone(),
            serde_json::json!({
                "purpose": entry.purpose.as_str(),
                "kid": entry.kid,
                "from": from.map(KeyState::as_str),
                "to": to.as_str(),
                "reason": reason,
            }),
        )
    }

    /// Records a key found on (or just made in) the token: `active` when its purpose
    /// has no active key, else `next`, with its audit event. Another node adopting the
    /// same key, or activating another one first, is not an error.
    async fn record_new_key(&self, label: &str, purpose: KeyPurpose, now: i64, reason: &str) -> Result<(), KeyError> {
        let kid = self.kid_of(purpose, label).await?;
        let known = self.store.list_keys().await.map_err(catalog_err)?;
        let has_active = known.iter().any(|e| e.purpose == purpose && e.state == KeyState::Active);
        let mut entry = CatalogEntry {
            label: label.to_string(),
            purpose,
            kid,
            state: if has_active { KeyState::Next } else { KeyState::Active },
            created_at: now,
            activated_at: (!has_active).then_some(now),
            retiring_at: None,
            retired_at: None,
        };
        let inserted = match self
            .store
            .insert_key_audited(&entry, &self.state_event(&entry, None, entry.state, reason, now))
            .await
        {
            Err(StoreError::KeyStateChanged(_)) if entry.state == KeyState::Active => {
                entry.state = KeyState::Next;
                entry.activated_at = None;
                let event = self.state_event(&entry, None, entry.state, reason, now);
                self.store.insert_key_audited(&entry, &event).await
            }
            other => other,
        }
        .map_err(catalog_err)?;
        if inserted.is_some() {
            tracing::info!(label = %entry.label, purpose = %purpose, state = entry.state.as_str(), reason, "key added to the catalog");
        }
        Ok(())
    }

    /// Runs `f` in the pool and records its latency and outcome (metrics: atomics only).
    async fn run<R, F>(&self, op: HsmOp, purpose: Option<KeyPurpose>, f: F) -> Result<R, HsmError>
    where
        R: Send + 'static,
        F: FnMut(&mut TokenSession) -> Result<R, HsmError> + Send + 'static,
    {
        self.run_within(op, purpose, self.pool.deadline(), f).await
    }

    /// As [`Self::run`] with its own deadline.
    async fn run_within<R, F>(
        &self,
        op: HsmOp,
        purpose: Option<KeyPurpose>,
        limit: std::time::Duration,
        f: F,
    ) -> Result<R, HsmError>
    where
        R: Send + 'static,
        F: FnMut(&mut TokenSession) -> Result<R, HsmError> + Send + 'static,
    {
        let start = std::time::Instant::now();
        let result = self.pool.run_within(op, limit, f).await;
        METRICS.hsm.record(op, purpose, start.elapsed(), result.as_ref().err());
        result
    }

    /// Re-reads token and catalog (start-up, `keys` commands, periodic refresh):
    /// refuses unsafe keys, adopts keys of our label scheme the catalog does not know
    /// and reports catalog keys missing from the token.
    pub async fn sync(&self, now: i64) -> Result<(), KeyError> {
        let token_keys = self.run(HsmOp::Catalog, None, |s| s.list_keys(LABEL_PREFIX)).await?;
        for key in &token_keys {
            check_key_safety(key, &self.imported)?;
        }
        if let Ok(mut t) = self.token_keys.write() {
            *t = token_keys.clone();
        }
        let known: Vec<CatalogEntry> = self.store.list_keys().await.map_err(catalog_err)?;
        let mut labels: Vec<&TokenKey> = token_keys.iter().filter(|k| k.class != "public").collect();
        labels.sort_by(|a, b| a.label.cmp(&b.label));
        let mut adopted = false;
        for key in labels {
            let Some(purpose) = KeyPurpose::from_label(&key.label) else {
                continue;
            };
            if known.iter().any(|e| e.label == key.label) {
                continue;
            }
            self.record_new_key(&key.label, purpose, now, "adopted").await?;
            adopted = true;
        }
        let known = if adopted { self.store.list_keys().await.map_err(catalog_err)? } else { known };
        // Keys of the catalog that vanished from the token are reported, not silently dropped.
        for e in &known {
            if e.state != KeyState::Retired && !token_keys.iter().any(|k| k.label == e.label) {
                tracing::error!(label = %e.label, "key in the catalog is missing from the token");
            }
        }
        if let Ok(mut c) = self.catalog.write() {
            *c = known;
        }
        Ok(())
    }

    async fn kid_of(&self, purpose: KeyPurpose, label: &str) -> Result<String, KeyError> {
        if purpose == KeyPurpose::SamlRsa {
            return Ok(self.public_rsa(label).await?.thumbprint());
        }
        if !purpose.is_key_pair() {
            return Ok(String::new());
        }
        Ok(self.public_jwk(label).await?.thumbprint())
    }

    /// Generates a key for `purpose` in the token and records it (`active` when the
    /// purpose has no active key, else `next`).
    pub async fn generate(&self, purpose: KeyPurpose, now: i64) -> Result<CatalogEntry, KeyError> {
        let mut label = purpose.new_label(now);
        // Two keys made within one second get distinct labels.
        let existing = self.run(HsmOp::Catalog, None, |s| s.list_keys(LABEL_PREFIX)).await?;
        let mut n = 1;
        while existing.iter().any(|k| k.label == label) {
            label = format!("{}-{n}", purpose.new_label(now));
            n += 1;
        }
        let l = label.clone();
        let limit = self.pool.deadline().max(KEY_GENERATION_DEADLINE);
        self.run_within(HsmOp::Catalog, Some(purpose), limit, move |s| s.generate(key_kind(purpose), &l)).await?;
        self.record_new_key(&label, purpose, now, "generated").await?;
        self.sync(now).await?;
        self.entries()
            .into_iter()
            .find(|e| e.label == label)
            .ok_or_else(|| KeyError::Catalog(format!("generated key {label} not in the catalog")))
    }

    /// The token's private and secret keys of our label scheme as last synced (with
    /// [`origin`] for `keys list`).
    pub fn token_keys(&self) -> Vec<TokenKey> {
        self.token_keys.read().map(|t| t.iter().filter(|k| k.class != "public").cloned().collect()).unwrap_or_default()
    }

    /// Generates an active key for every purpose of `purposes` that has none (`symbolon
    /// keys init`, `keys.init_on_start`); returns the keys made.
    pub async fn generate_missing(&self, purposes: &[KeyPurpose], now: i64) -> Result<Vec<CatalogEntry>, KeyError> {
        let mut made = Vec::new();
        for &purpose in purposes {
            if self.active(purpose).is_err() {
                made.push(self.generate(purpose, now).await?);
            }
        }
        Ok(made)
    }

    /// The catalog as last synced.
    pub fn entries(&self) -> Vec<CatalogEntry> {
        self.catalog.read().map(|c| c.clone()).unwrap_or_default()
    }

    /// The active key of a purpose.
    pub fn active(&self, purpose: KeyPurpose) -> Result<CatalogEntry, KeyError> {
        self.entries()
            .into_iter()
            .find(|e| e.purpose == purpose && e.state == KeyState::Active)
            .ok_or(KeyError::NoActiveKey(purpose))
    }

    /// Keys of a purpose that are published (JWKS, metadata): next, active, retiring.
    pub fn published(&self, purpose: KeyPurpose) -> Vec<CatalogEntry> {
        self.entries()
            .into_iter()
            .filter(|e| {
                e.purpose == purpose && matches!(e.state, KeyState::Next | KeyState::Active | KeyState::Retiring)
            })
            .collect()
    }

    /// The public JWK of an EC key pair (cached: public keys never change).
    pub async fn public_jwk(&self, label: &str) -> Result<EcPublicJwk, KeyError> {
        if let Some(jwk) = self.public.read().ok().and_then(|m| m.get(label).cloned()) {
            return Ok(jwk);
        }
        let l = label.to_string();
        let jwk = self.run(HsmOp::PublicKey, KeyPurpose::from_label(label), move |s| s.public_jwk(&l)).await?;
        if let Ok(mut m) = self.public.write() {
            m.insert(label.to_string(), jwk.clone());
        }
        Ok(jwk)
    }

    /// The public half of an RSA key pair (read from the token each time: only
    /// certificate making and `kid`s need it).
    pub async fn public_rsa(&self, label: &str) -> Result<RsaPublicParts, KeyError> {
        let l = label.to_string();
        Ok(self.run(HsmOp::PublicKey, KeyPurpose::from_label(label), move |s| s.public_rsa(&l)).await?)
    }

    /// RS256 (`CKM_SHA256_RSA_PKCS`) over `message` with the active key of `purpose`:
    /// (catalog entry, signature).
    pub async fn sign_active_rs256(
        &self,
        purpose: KeyPurpose,
        message: Vec<u8>,
    ) -> Result<(CatalogEntry, Vec<u8>), KeyError> {
        let key = self.active(purpose)?;
        let label = key.label.clone();
        let sig = self.run(HsmOp::SignRs256, Some(purpose), move |s| s.sign_rs256(&label, &message)).await?;
        Ok((key, sig))
    }

    /// ES256 over `message` with the active key of `purpose`: (catalog entry, r||s).
    pub async fn sign_active(
        &self,
        purpose: KeyPurpose,
        message: Vec<u8>,
    ) -> Result<(CatalogEntry, [u8; 64]), KeyError> {
        let key = self.active(purpose)?;
        let label = key.label.clone();
        let sig = self.run(HsmOp::SignEs256, Some(purpose), move |s| s.sign_es256(&label, &message)).await?;
        Ok((key, sig))
    }

    /// ES256 over `message` with the named key pair (its `kid` is already in a header).
    pub async fn sign_with(&self, label: &str, message: Vec<u8>) -> Result<[u8; 64], KeyError> {
        let l = label.to_string();
        Ok(self.run(HsmOp::SignEs256, KeyPurpose::from_label(label), move |s| s.sign_es256(&l, &message)).await?)
    }

    /// HMAC-SHA256 with the named secret key (OTP keys are named on their session).
    pub async fn hmac(&self, label: &str, message: Vec<u8>) -> Result<[u8; 32], KeyError> {
        let l = label.to_string();
        Ok(self.run(HsmOp::HmacSha256, KeyPurpose::from_label(label), move |s| s.hmac_sha256(&l, &message)).await?)
    }

    /// Seals `plain` under the active data key with `aad` (the row id): envelope text.
    pub async fn seal(&self, aad: &str, plain: Vec<u8>) -> Result<String, KeyError> {
        let key = self.active(KeyPurpose::Data)?;
        self.seal_with(&key.label, aad, plain).await
    }

    /// Seals `plain` under the named data key (`keys rewrap` pins the key it started with).
    pub async fn seal_with(&self, key_label: &str, aad: &str, plain: Vec<u8>) -> Result<String, KeyError> {
        let (label, aad_bytes) = (key_label.to_string(), aad.as_bytes().to_vec());
        let sealed = self
            .run(HsmOp::Encrypt, Some(KeyPurpose::Data), move |s| s.encrypt_gcm(&label, &aad_bytes, &plain))
            .await?;
        Ok(Envelope { key_label: key_label.to_string(), sealed }.encode())
    }

    /// Opens an envelope made by [`Self::seal`] with the key it names.
    pub async fn open_sealed(&self, aad: &str, envelope: &str) -> Result<Vec<u8>, KeyError> {
        let env = Envelope::decode(envelope).ok_or(HsmError::DecryptFailed)?;
        if KeyPurpose::from_label(&env.key_label) != Some(KeyPurpose::Data) {
            return Err(HsmError::DecryptFailed.into());
        }
        let aad_bytes = aad.as_bytes().to_vec();
        Ok(self
            .run(HsmOp::Decrypt, Some(KeyPurpose::Data), move |s| {
                s.decrypt_gcm(&env.key_label, &aad_bytes, &env.sealed)
            })
            .await?)
    }

    /// Uses the key once the way its purpose will (sign, MAC, encrypt and decrypt) so
    /// that a key missing from the token, or made without the usage it needs (e.g. a
    /// data key without `CKA_ENCRYPT`), is refused before it becomes active.
    pub async fn probe(&self, entry: &CatalogEntry) -> Result<(), KeyError> {
        let label = entry.label.clone();
        let purpose = entry.purpose;
        let probe = b"symbolon key probe".to_vec();
        let result = match purpose {
            KeyPurpose::Jwt | KeyPurpose::Saml | KeyPurpose::Audit => {
                self.public_jwk(&label).await?;
                self.pool.run_as(HsmOp::SignEs256, move |s| s.sign_es256(&label, &probe).map(|_| ())).await
            }
            KeyPurpose::Otp | KeyPurpose::Pairwise => {
                self.pool.run_as(HsmOp::HmacSha256, move |s| s.hmac_sha256(&label, &probe).map(|_| ())).await
            }
            KeyPurpose::SamlRsa => {
                self.public_rsa(&label).await?;
                self.pool.run_as(HsmOp::SignRs256, move |s| s.sign_rs256(&label, &probe).map(|_| ())).await
            }
            KeyPurpose::Data => {
                let (l, p) = (label.clone(), probe.clone());
                let sealed = self.pool.run_as(HsmOp::Encrypt, move |s| s.encrypt_gcm(&l, b"probe", &p)).await;
                match sealed {
                    Ok(sealed) => {
                        let opened =
                            self.pool.run_as(HsmOp::Decrypt, move |s| s.decrypt_gcm(&label, b"probe", &sealed)).await;
                        opened.and_then(|o| if o == probe { Ok(()) } else { Err(HsmError::DecryptFailed) })
                    }
                    Err(e) => Err(e),
                }
            }
        };
        result.map_err(|e| KeyError::Refused(format!("key {} cannot be used as a {purpose} key: {e}", entry.label)))
    }

    /// A round trip to the token.
    pub async fn ping(&self) -> Result<(), KeyError> {
        Ok(self.run(HsmOp::Ping, None, |s| s.ping()).await?)
    }
}

pub(crate) fn catalog_err(e: StoreError) -> KeyError {
    match e {
        StoreError::KeyStateChanged(label) => KeyError::StateChanged(label),
        other => KeyError::Catalog(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(label: &str, class: &'static str, flags: [bool; 4]) -> TokenKey {
        let [sensitive, extractable, always_sensitive, never_extractable] = flags;
        TokenKey {
            label: label.into(),
            class,
            key_type: "other",
            sensitive,
            extractable,
            always_sensitive,
            never_extractable,
        }
    }

    fn refused(k: &TokenKey, imported: &[String]) -> String {
        match check_key_safety(k, imported) {
            Err(HsmError::UnsafeKey { label, reason }) => {
                assert_eq!(label, k.label);
                reason.to_string()
            }
            other => panic!("{} must be refused, got {other:?}", k.label),
        }
    }

    #[test]
    fn keys_made_in_the_token_pass_and_imported_ones_only_as_named_exceptions() {
        let made = key("symbolon-otp-20260101T000000Z", "secret", [true, false, true, true]);
        assert!(check_key_safety(&made, &[]).is_ok());
        assert_eq!(origin(&made), "generated");

        let imported = key("symbolon-otp-20260101T000000Z", "secret", [true, false, false, false]);
        assert!(refused(&imported, &[]).starts_with("CKA_NEVER_EXTRACTABLE is false"));
        let once_readable = key("symbolon-jwt-20260101T000000Z", "private", [true, false, false, true]);
        assert!(refused(&once_readable, &[]).starts_with("CKA_ALWAYS_SENSITIVE is false"));
        // Named in keys.imported: accepted, and listed as imported.
        let named = vec!["symbolon-otp-20260101T000000Z".to_string()];
        assert!(check_key_safety(&imported, &named).is_ok());
        assert_eq!(origin(&imported), "imported");
        assert!(refused(&once_readable, &named).starts_with("CKA_ALWAYS_SENSITIVE"), "only the named label");

        // The FCM key is imported by design (keys import-fcm).
        let fcm = key("symbolon-fcm-20260101T000000Z", "private", [true, false, false, false]);
        assert!(check_key_safety(&fcm, &[]).is_ok());
        // Public halves have nothing to protect.
        assert!(check_key_safety(&key("symbolon-jwt-x", "public", [false, true, false, false]), &[]).is_ok());
    }

    #[test]
    fn no_exception_for_a_key_that_can_leave_the_token_now() {
        let named = vec!["symbolon-otp-20260101T000000Z".to_string(), "symbolon-fcm-x".to_string()];
        for label in ["symbolon-otp-20260101T000000Z", "symbolon-fcm-x"] {
            let extractable = key(label, "secret", [true, true, false, false]);
            assert_eq!(refused(&extractable, &named), "CKA_EXTRACTABLE is true");
            let readable = key(label, "secret", [false, false, false, false]);
            assert_eq!(refused(&readable, &named), "CKA_SENSITIVE is false");
        }
    }
}
