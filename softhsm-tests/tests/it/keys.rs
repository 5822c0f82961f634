//! The key layer against a real SoftHSM2 token made for each test.

use std::sync::Arc;
use std::time::Duration;

use cryptoki::context::Pkcs11;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, ObjectClass};
use hmac::{Hmac, Mac};
use p256::ecdsa::signature::Verifier;
use p256::ecdsa::{Signature, VerifyingKey};
use sha2::Sha256;
use softhsm_tests::TestToken;
use symbolon::keyring::{KeyPurpose, key_kind};
use symbolon::keys::{HsmError, HsmPin, KeyKind, SessionPool};

/// A pool that is shut down when the test ends (SoftHSM2 must not see the process
/// exit with sessions open on worker threads).
struct Pool(SessionPool);

impl std::ops::Deref for Pool {
    type Target = SessionPool;
    fn deref(&self) -> &SessionPool {
        &self.0
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.0.shutdown();
    }
}

fn pool_for(token: &TestToken, workers: usize, queue: usize) -> Pool {
    token.use_in_process().unwrap();
    let ctx = Pkcs11::new(&token.module).unwrap();
    let pin = HsmPin::resolve(Some(&token.pin_file)).unwrap();
    Pool(
        SessionPool::start(ctx, Some(token.label.clone()), None, pin, workers, queue, Duration::from_secs(10)).unwrap(),
    )
}

async fn generate(pool: &SessionPool, purpose: KeyPurpose) -> String {
    let label = purpose.new_label(1_800_000_000);
    let l = label.clone();
    pool.run(move |s| s.generate(key_kind(purpose), &l)).await.unwrap();
    label
}

#[tokio::test]
async fn es256_signature_verifies_with_exported_public_key() {
    let token = TestToken::new().unwrap();
    let pool = pool_for(&token, 2, 16);
    let label = generate(&pool, KeyPurpose::Jwt).await;
    let l = label.clone();
    let jwk = pool.run(move |s| s.public_jwk(&l)).await.unwrap();
    let key = VerifyingKey::from(jwk.to_public_key().unwrap());
    let msg = b"header.payload".to_vec();
    let l = label.clone();
    let m = msg.clone();
    let sig = pool.run(move |s| s.sign_es256(&l, &m)).await.unwrap();
    let sig = Signature::from_slice(&sig).unwrap();
    key.verify(&msg, &sig).unwrap();
    assert!(key.verify(b"other", &sig).is_err());
    // The kid is the RFC 7638 thumbprint: 43 b64u characters.
    assert_eq!(jwk.thumbprint().len(), 43);
}

#[tokio::test]
async fn hmac_matches_software_on_imported_known_key() {
    let token = TestToken::new().unwrap();
    let pool = pool_for(&token, 1, 16);
    let value: Vec<u8> = (0u8..32).collect();
    let v = value.clone();
    pool.run(move |s| s.import_secret(KeyKind::HmacSecret, "symbolon-otp-known", &v)).await.unwrap();
    let msg = b"symbolon-otp-v1\0session\0token\0\0\0\0\0\0\0\0\x01".to_vec();
    let m = msg.clone();
    let got = pool.run(move |s| s.hmac_sha256("symbolon-otp-known", &m)).await.unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(&value).unwrap();
    mac.update(&msg);
    assert_eq!(&got[..], &mac.finalize().into_bytes()[..]);
    // Imported, then sensitive: the value cannot be read back.
    assert_value_unreadable(&token, pool.context(), "symbolon-otp-known", ObjectClass::SECRET_KEY);
}

#[tokio::test]
async fn aes_gcm_round_trip_tamper_and_wrong_aad() {
    let token = TestToken::new().unwrap();
    let pool = pool_for(&token, 2, 16);
    let label = generate(&pool, KeyPurpose::Data).await;
    let l = label.clone();
    let sealed = pool.run(move |s| s.encrypt_gcm(&l, b"row-1", b"secret claims")).await.unwrap();
    assert_eq!(sealed.len(), 12 + 13 + 16);
    let (l, c) = (label.clone(), sealed.clone());
    assert_eq!(pool.run(move |s| s.decrypt_gcm(&l, b"row-1", &c)).await.unwrap(), b"secret claims");
    // A fresh IV each time.
    let l = label.clone();
    let again = pool.run(move |s| s.encrypt_gcm(&l, b"row-1", b"secret claims")).await.unwrap();
    assert_ne!(again[..12], sealed[..12]);
    for i in [0, 12, sealed.len() - 1] {
        let mut bad = sealed.clone();
        bad[i] ^= 1;
        let l = label.clone();
        let r = pool.run(move |s| s.decrypt_gcm(&l, b"row-1", &bad)).await;
        assert!(matches!(r, Err(HsmError::DecryptFailed)), "tampered byte {i}: {r:?}");
    }
    let (l, c) = (label.clone(), sealed.clone());
    let r = pool.run(move |s| s.decrypt_gcm(&l, b"row-2", &c)).await;
    assert!(matches!(r, Err(HsmError::DecryptFailed)), "wrong AAD: {r:?}");
    let l = label.clone();
    let r = pool.run(move |s| s.decrypt_gcm(&l, b"row-1", &[0u8; 10])).await;
    assert!(matches!(r, Err(HsmError::DecryptFailed)), "short input: {r:?}");
}

fn assert_value_unreadable(token: &TestToken, ctx: &Pkcs11, label: &str, class: ObjectClass) {
    let session = token.user_session(ctx).unwrap();
    let handle =
        session.find_objects(&[Attribute::Class(class), Attribute::Label(label.as_bytes().to_vec())]).unwrap()[0];
    let attrs = session
        .get_attributes(handle, &[AttributeType::Sensitive, AttributeType::Extractable, AttributeType::Value])
        .unwrap();
    assert!(attrs.contains(&Attribute::Sensitive(true)), "{attrs:?}");
    assert!(attrs.contains(&Attribute::Extractable(false)), "{attrs:?}");
    assert!(!attrs.iter().any(|a| matches!(a, Attribute::Value(_))), "CKA_VALUE must not be readable: {attrs:?}");
    // Asking for CKA_VALUE alone must fail with CKR_ATTRIBUTE_SENSITIVE.
    let info = session.get_attribute_info(handle, &[AttributeType::Value]).unwrap();
    assert!(
        matches!(info.as_slice(), [cryptoki::object::AttributeInfo::Sensitive]),
        "C_GetAttributeValue(CKA_VALUE) must answer CKR_ATTRIBUTE_SENSITIVE: {info:?}"
    );
    // Wrapping it under an AES key must fail: the key is not extractable.
    let wrapper = TestToken::session_aes_key(&session, &[Attribute::Wrap(true)]).unwrap();
    // The wrapping key and mechanism work: an extractable session key wraps.
    let extractable = TestToken::session_aes_key(&session, &[Attribute::Extractable(true)]).unwrap();
    session.wrap_key(&Mechanism::AesKeyWrap, wrapper, extractable).unwrap();
    let wrapped = session.wrap_key(&Mechanism::AesKeyWrapPad, wrapper, handle);
    match wrapped {
        Err(cryptoki::error::Error::Pkcs11(rv, _)) => {
            assert!(
                rv == token.unextractable_rv(class)
                    || matches!(
                        rv,
                        cryptoki::error::RvError::KeyNotWrappable | cryptoki::error::RvError::MechanismInvalid
                    ),
                "{label}: unexpected wrap error {rv:?}"
            );
            if rv == cryptoki::error::RvError::MechanismInvalid {
                // Kryoptic has no CKM_AES_KEY_WRAP_PAD (only CKM_AES_KEY_WRAP_KWP).
                let r = session.wrap_key(&Mechanism::AesKeyWrap, wrapper, handle);
                assert!(
                    matches!(r, Err(cryptoki::error::Error::Pkcs11(rv, _)) if rv == token.unextractable_rv(class)),
                    "{label}: CKM_AES_KEY_WRAP of a non-extractable key: {r:?}, want {:?}",
                    token.unextractable_rv(class)
                );
            }
        }
        other => panic!("wrapping a non-extractable key must fail, got {other:?}"),
    }
}

#[tokio::test]
async fn generated_keys_are_sensitive_and_not_extractable() {
    let token = TestToken::new().unwrap();
    let pool = pool_for(&token, 1, 16);
    for purpose in KeyPurpose::ALL {
        let label = generate(&pool, purpose).await;
        let class = if purpose.is_key_pair() { ObjectClass::PRIVATE_KEY } else { ObjectClass::SECRET_KEY };
        assert_value_unreadable(&token, pool.context(), &label, class);
    }
    let keys = pool.run(|s| s.list_keys("symbolon-")).await.unwrap();
    // One private or secret key per purpose, and the public halves of the key pairs.
    let pairs = KeyPurpose::ALL.iter().filter(|p| p.is_key_pair()).count();
    assert_eq!(keys.len(), KeyPurpose::ALL.len() + pairs, "{keys:?}");
    assert!(keys.iter().all(|k| k.sensitive && !k.extractable));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixty_four_concurrent_callers_on_two_workers() {
    let token = TestToken::new().unwrap();
    let pool = pool_for(&token, 2, 128);
    let jwt = generate(&pool, KeyPurpose::Jwt).await;
    let l = jwt.clone();
    let key = VerifyingKey::from(pool.run(move |s| s.public_jwk(&l)).await.unwrap().to_public_key().unwrap());
    let key = Arc::new(key);
    let mut tasks = Vec::new();
    for i in 0..64u32 {
        let (pool, label, key) = (pool.clone(), jwt.clone(), key.clone());
        tasks.push(tokio::spawn(async move {
            let msg = format!("message {i}").into_bytes();
            let m = msg.clone();
            let sig = pool.run(move |s| s.sign_es256(&label, &m)).await.unwrap();
            key.verify(&msg, &Signature::from_slice(&sig).unwrap()).unwrap();
            i
        }));
    }
    let mut done: Vec<u32> = Vec::new();
    for t in tasks {
        done.push(t.await.unwrap());
    }
    done.sort();
    assert_eq!(done, (0..64).collect::<Vec<_>>());
}

#[tokio::test]
async fn queue_full_is_overloaded() {
    let token = TestToken::new().unwrap();
    let pool = pool_for(&token, 1, 1);
    // Park the only worker, fill the one queue slot, and the next caller is refused.
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let rx = Arc::new(std::sync::Mutex::new(rx));
    let p = pool.clone();
    let parked = tokio::spawn(async move {
        p.run(move |_s| {
            let _ = rx.lock().unwrap().recv_timeout(Duration::from_secs(5));
            Ok(())
        })
        .await
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let p = pool.clone();
    let queued = tokio::spawn(async move { p.run(|s| s.ping()).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let refused = pool.run(|s| s.ping()).await;
    assert!(matches!(refused, Err(HsmError::Overloaded)), "{refused:?}");
    tx.send(()).unwrap();
    parked.await.unwrap().unwrap();
    queued.await.unwrap().unwrap();
}

#[tokio::test]
async fn pool_recovers_after_finalize_and_reinitialize_from_outside() {
    let token = TestToken::new().unwrap();
    let pool = pool_for(&token, 2, 16);
    let label = generate(&pool, KeyPurpose::Otp).await;
    let l = label.clone();
    let before = pool.run(move |s| s.hmac_sha256(&l, b"x")).await.unwrap();
    // Simulate a token restart: finalize the module under the pool, then initialize it again.
    pool.context().clone().finalize().unwrap();
    symbolon::keys::initialize_module(pool.context()).unwrap();
    for _ in 0..4 {
        let l = label.clone();
        let after = pool.run(move |s| s.hmac_sha256(&l, b"x")).await.unwrap();
        assert_eq!(before, after);
    }
    assert!(pool.sessions_reopened() >= 1, "a worker reopened its session");
    // And when the module is finalized and nobody re-initializes it, the pool does.
    pool.context().clone().finalize().unwrap();
    let l = label.clone();
    assert_eq!(pool.run(move |s| s.hmac_sha256(&l, b"x")).await.unwrap(), before);
}

#[test]
fn wrong_pin_missing_token_and_unreadable_pin_file() {
    let token = TestToken::new().unwrap();
    token.use_in_process().unwrap();
    let ctx = Pkcs11::new(&token.module).unwrap();
    let wrong = token.dir.path().join("wrong-pin");
    std::fs::write(&wrong, "00000000").unwrap();
    let pin = HsmPin::resolve(Some(&wrong)).unwrap();
    let r = SessionPool::start(ctx.clone(), Some(token.label.clone()), None, pin, 2, 4, Duration::from_secs(1));
    let err = r.unwrap_err();
    assert!(matches!(err, HsmError::WrongPin), "{err:?}");
    assert!(err.to_string().contains("wrong PIN"), "{err}");

    let pin = HsmPin::resolve(Some(&token.pin_file)).unwrap();
    let err = SessionPool::start(ctx.clone(), Some("no-such-token".into()), None, pin, 1, 4, Duration::from_secs(1))
        .unwrap_err();
    match &err {
        HsmError::TokenNotFound { wanted, seen } => {
            assert_eq!(wanted, "no-such-token");
            assert!(seen.contains(&token.label), "{seen:?}");
        }
        other => panic!("expected TokenNotFound, got {other:?}"),
    }

    let missing = token.dir.path().join("absent-pin");
    let err = HsmPin::resolve(Some(&missing)).unwrap_err();
    assert!(err.to_string().contains("absent-pin"), "{err}");
    let dir_as_file = token.dir.path().to_path_buf();
    assert!(HsmPin::resolve(Some(&dir_as_file)).is_err());
    let empty = token.dir.path().join("empty-pin");
    std::fs::write(&empty, "\n").unwrap();
    assert!(HsmPin::resolve(Some(&empty)).unwrap_err().to_string().contains("empty"));
    // The PIN never shows in Debug.
    let pin = HsmPin::resolve(Some(&token.pin_file)).unwrap();
    assert!(!format!("{pin:?}").contains(&token.pin));
}
