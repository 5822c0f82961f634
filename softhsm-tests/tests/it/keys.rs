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
use softhsm_tests::TokenKind;
use symbolon::keyring::{KEY_GENERATION_DEADLINE, KeyPurpose, key_kind};
use symbolon::keys::{HsmError, HsmOp, HsmPin, KeyKind, Module, SessionPool};

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
    let module = Module::load(&token.module).unwrap();
    let pin = HsmPin::resolve(Some(&token.pin_file)).unwrap();
    Pool(
        SessionPool::start(module, Some(token.label.clone()), None, pin, workers, queue, Duration::from_secs(10))
            .unwrap(),
    )
}

async fn generate(pool: &SessionPool, purpose: KeyPurpose) -> String {
    let label = purpose.new_label(1_800_000_000);
    let l = label.clone();
    pool.run_within(HsmOp::Catalog, KEY_GENERATION_DEADLINE, move |s| s.generate(key_kind(purpose), &l)).await.unwrap();
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
    // The secret part: CKA_VALUE, or CKA_PRIVATE_EXPONENT for an RSA key.
    let rsa = session.get_attributes(handle, &[AttributeType::KeyType]).unwrap()
        == [Attribute::KeyType(cryptoki::object::KeyType::RSA)];
    let secret = if rsa { AttributeType::PrivateExponent } else { AttributeType::Value };
    let attrs =
        session.get_attributes(handle, &[AttributeType::Sensitive, AttributeType::Extractable, secret]).unwrap();
    assert!(attrs.contains(&Attribute::Sensitive(true)), "{attrs:?}");
    assert!(attrs.contains(&Attribute::Extractable(false)), "{attrs:?}");
    assert!(
        !attrs.iter().any(|a| matches!(a, Attribute::Value(_) | Attribute::PrivateExponent(_))),
        "{secret:?} must not be readable: {attrs:?}"
    );
    // Asking for it alone must fail with CKR_ATTRIBUTE_SENSITIVE.
    let info = session.get_attribute_info(handle, &[secret]).unwrap();
    assert!(
        matches!(info.as_slice(), [cryptoki::object::AttributeInfo::Sensitive]),
        "C_GetAttributeValue({secret:?}) must answer CKR_ATTRIBUTE_SENSITIVE: {info:?}"
    );
    // Wrapping it under an AES key must fail: the key is not extractable.
    let wrapper = TestToken::session_aes_key(&session, &[Attribute::Wrap(true)]).unwrap();
    // The wrapping key and mechanism work: an extractable session key wraps.
    let extractable = TestToken::session_aes_key(&session, &[Attribute::Extractable(true)]).unwrap();
    session.wrap_key(&token.wrap_mechanism(), wrapper, extractable).unwrap();
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
                // Kryoptic has no CKM_AES_KEY_WRAP_PAD (only CKM_AES_KEY_WRAP_KWP), and
                // openCryptoki's soft token no AES key wrap at all (CKM_AES_CBC_PAD wraps).
                let r = session.wrap_key(&token.wrap_mechanism(), wrapper, handle);
                assert!(
                    matches!(r, Err(cryptoki::error::Error::Pkcs11(rv, _)) if rv == token.unextractable_rv(class)),
                    "{label}: wrapping a non-extractable key: {r:?}, want {:?}",
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
    // Made in the token: it reports them always sensitive and never extractable.
    assert!(keys.iter().all(|k| k.always_sensitive && k.never_extractable && k.made_in_token()), "{keys:?}");
}

/// A key imported from a known value is sensitive and not extractable, but the token
/// reports CKA_ALWAYS_SENSITIVE and CKA_NEVER_EXTRACTABLE false: the key ring refuses
/// it, naming the label and the attribute, unless `keys.imported` names it. HMAC keys
/// only, so it runs on every tested token (docs/keys.md "Tested tokens"); openCryptoki
/// reports both attributes true for the imported key, which the test asserts.
#[tokio::test]
async fn imported_keys_are_refused_unless_named_in_keys_imported() {
    use symbolon::keyring::KeyRing;
    use symbolon::store::{DatabaseConfig, DurableStore, SqliteStore};
    const NOW: i64 = 1_800_000_000;
    let token = TestToken::new().unwrap();
    let pool = pool_for(&token, 1, 16);
    let made = generate(&pool, KeyPurpose::Otp).await;
    let imported = "symbolon-otp-20260101T000000Z";
    pool.run(move |s| s.import_secret(KeyKind::HmacSecret, imported, &[7u8; 32])).await.unwrap();
    let keys = pool.run(|s| s.list_keys("symbolon-")).await.unwrap();
    let key = |l: &str| keys.iter().find(|k| k.label == l).cloned().unwrap();
    assert!(key(&made).made_in_token(), "{:?}", key(&made));
    let imp = key(imported);
    assert!(imp.sensitive && !imp.extractable, "{imp:?}");
    if token.kind == TokenKind::OpenCryptoki {
        // openCryptoki 3.8.1 reports an object made with C_CreateObject as always
        // sensitive and never extractable when its template says sensitive and not
        // extractable: there the rule cannot tell an imported key (docs/keys.md).
        assert!(imp.always_sensitive && imp.never_extractable, "{imp:?}");
        return;
    }
    assert!(!imp.always_sensitive && !imp.never_extractable && !imp.made_in_token(), "{imp:?}");

    let db = tempfile::tempdir().unwrap();
    let sqlite =
        SqliteStore::open(&format!("sqlite://{}/db", db.path().display()), &DatabaseConfig::default()).await.unwrap();
    sqlite.migrate().await.unwrap();
    let store: Arc<dyn DurableStore> = Arc::new(sqlite);
    let err = KeyRing::open(pool.0.clone(), store.clone(), NOW).await.unwrap_err().to_string();
    assert!(err.contains(imported) && err.contains("CKA_NEVER_EXTRACTABLE is false"), "{err}");
    assert!(err.contains("keys.imported"), "the error says how to accept it: {err}");
    assert!(store.list_keys().await.unwrap().is_empty(), "nothing adopted from a refused token");

    let ring = KeyRing::open_with(pool.0.clone(), store.clone(), NOW, "test", &[imported.to_string()]).await.unwrap();
    let origins: Vec<(String, &str)> =
        ring.token_keys().iter().map(|k| (k.label.clone(), symbolon::keyring::origin(k))).collect();
    assert_eq!(origins, [(imported.to_string(), "imported"), (made.clone(), "generated")], "sorted by label");
    assert_eq!(ring.entries().len(), 2, "both adopted into the catalog");
    // Both MAC in the token.
    let mac = |l: String| pool.run(move |s| s.hmac_sha256(&l, b"m"));
    assert_ne!(mac(made).await.unwrap(), mac(imported.to_string()).await.unwrap());
}

/// Token discovery reads CK_TOKEN_INFO with Symbolon's tolerant reader
/// (src/keys/module.rs): the label and serial come out trimmed on every token, also on
/// openCryptoki, where cryptoki's own parser fails on the clock field.
#[test]
fn token_discovery_tolerates_the_token_info_of_every_tested_token() {
    let token = TestToken::new().unwrap();
    token.use_in_process().unwrap();
    let module = Module::load(&token.module).unwrap();
    let info = module.find_token(Some(&token.label), None).unwrap();
    assert_eq!(info.label, token.label);
    assert!(!info.serial.is_empty() && info.serial.trim() == info.serial, "{info:?}");
    let by_serial = module.find_token(None, Some(&info.serial)).unwrap();
    assert_eq!(by_serial.label, token.label);
    let described = module.token_description(info.slot).unwrap();
    assert_eq!((described.label.as_str(), described.serial.as_str()), (token.label.as_str(), info.serial.as_str()));
    let strict = module.context().get_token_info(info.slot);
    match token.kind {
        // CKF_CLOCK_ON_TOKEN with utcTime "HH:MM:SS": the quirk this reader exists for.
        TokenKind::OpenCryptoki => {
            let err = strict.unwrap_err();
            assert!(!matches!(err, cryptoki::error::Error::Pkcs11(..)), "a parse error, not the module's: {err:?}");
        }
        TokenKind::SoftHsm2 | TokenKind::Kryoptic => {
            assert_eq!(strict.unwrap().label().trim(), token.label);
        }
    }
}

/// The mechanism table of docs/keys.md ("Tested tokens"), checked against the token's
/// own mechanism list, so the documented differences are facts of each run.
#[test]
fn mechanisms_match_the_tested_tokens_table() {
    use cryptoki::mechanism::MechanismType as M;
    let token = TestToken::new().unwrap();
    token.use_in_process().unwrap();
    let module = Module::load(&token.module).unwrap();
    let slot = module.find_token(Some(&token.label), None).unwrap().slot;
    let have = module.context().get_mechanism_list(slot).unwrap();
    // (mechanism, SoftHSM2, Kryoptic, openCryptoki)
    let table = [
        ("CKM_GENERIC_SECRET_KEY_GEN", M::GENERIC_SECRET_KEY_GEN, [true, true, true]),
        ("CKM_SHA256_HMAC", M::SHA256_HMAC, [true, true, true]),
        ("CKM_EC_KEY_PAIR_GEN", M::ECC_KEY_PAIR_GEN, [true, true, false]),
        ("CKM_ECDSA", M::ECDSA, [true, true, false]),
        ("CKM_ECDSA_SHA256", M::ECDSA_SHA256, [false, true, false]),
        ("CKM_AES_KEY_GEN", M::AES_KEY_GEN, [true, true, true]),
        ("CKM_AES_GCM", M::AES_GCM, [true, true, false]),
        ("CKM_AES_KEY_WRAP", M::AES_KEY_WRAP, [true, true, false]),
        ("CKM_AES_KEY_WRAP_PAD", M::AES_KEY_WRAP_PAD, [true, false, false]),
        ("CKM_AES_CBC_PAD", M::AES_CBC_PAD, [true, true, true]),
        ("CKM_SHA256_RSA_PKCS", M::SHA256_RSA_PKCS, [true, true, false]),
        ("CKM_RSA_PKCS_KEY_PAIR_GEN", M::RSA_PKCS_KEY_PAIR_GEN, [true, true, true]),
    ];
    let column = match token.kind {
        TokenKind::SoftHsm2 => 0,
        TokenKind::Kryoptic => 1,
        TokenKind::OpenCryptoki => 2,
    };
    let wrong: Vec<String> = table
        .iter()
        .filter(|(_, m, want)| have.contains(m) != want[column])
        .map(|(name, _, want)| format!("{name}: table says {}", want[column]))
        .collect();
    assert!(wrong.is_empty(), "{:?} differs from docs/keys.md: {wrong:?}", token.kind);
}

/// A key the token cannot make is refused with the mechanism it lacks, and nothing is
/// left behind. On SoftHSM2 and Kryoptic every purpose's key is made.
#[tokio::test]
async fn generating_a_key_names_the_mechanism_the_token_lacks() {
    let token = TestToken::new().unwrap();
    let pool = pool_for(&token, 1, 16);
    for purpose in KeyPurpose::ALL {
        let label = purpose.new_label(1_800_000_000);
        let l = label.clone();
        let made =
            pool.run_within(HsmOp::Catalog, KEY_GENERATION_DEADLINE, move |s| s.generate(key_kind(purpose), &l)).await;
        match (token.kind, key_kind(purpose)) {
            (TokenKind::OpenCryptoki, KeyKind::EcP256) => {
                assert!(matches!(made, Err(HsmError::Unsupported("CKM_EC_KEY_PAIR_GEN"))), "{purpose}: {made:?}");
                assert!(made.unwrap_err().to_string().contains("does not implement CKM_EC_KEY_PAIR_GEN"));
            }
            (TokenKind::OpenCryptoki, KeyKind::Aes256) => {
                // AES keys are made, but there is no AES-GCM to use them with.
                made.unwrap();
                let r = pool.run(move |s| s.encrypt_gcm(&label, b"aad", b"x")).await;
                assert!(
                    matches!(r, Err(HsmError::Pkcs11(symbolon::keys::Rv(cryptoki::error::RvError::MechanismInvalid)))),
                    "{r:?}"
                );
            }
            _ => made.unwrap(),
        }
    }
    let left = pool.run(|s| s.list_keys("symbolon-")).await.unwrap();
    let expected = match token.kind {
        // otp, pairwise, data, and the saml-rsa pair (made, though this token cannot
        // sign with it: no CKM_SHA256_RSA_PKCS).
        TokenKind::OpenCryptoki => 5,
        _ => KeyPurpose::ALL.len() + KeyPurpose::ALL.iter().filter(|p| p.is_key_pair()).count(),
    };
    assert_eq!(left.len(), expected, "{left:?}");
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
    let ctx = Module::load(&token.module).unwrap();
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
