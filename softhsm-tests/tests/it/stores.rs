//! The store contracts, run against every backend: the durable store on SQLite and
//! PostgreSQL, the session store in memory and on Redis. For the shared backends a
//! second, independent store instance plays a second node.

use std::sync::Arc;
use std::time::Duration;

use softhsm_tests::backends::{PgDatabase, RedisPrefix};
use softhsm_tests::records::{active_enrollment, pending_session};
use symbolon::store::audit::{GENESIS_HASH, chain_hash};
use symbolon::store::{
    AuditCheckpoint, AuditEvent, CatalogEntry, DurableStore, EnrollmentStatus, KeyPurpose, KeyState, KeyTransition,
    MemorySessionStore, PostgresStore, RedisSessionStore, SEALED_COLUMNS, SessionEnd, SessionStatus, SessionStore,
    SqliteStore, StoreError,
};
use symbolon::store::{DatabaseConfig, DatabaseTls, EnrollmentStore, SessionStoreConfig};

fn now() -> i64 {
    symbolon::ids::now_unix()
}

// ---------------------------------------------------------------- session store

/// `a` and `b` are two handles on one store (two nodes of a cluster, or the same
/// in-process store twice).
async fn session_store_contract(a: Arc<dyn SessionStore>, b: Arc<dyn SessionStore>) {
    a.ping().await.unwrap();
    let t = now();

    // Nonces: single use across nodes, expiring.
    a.put_nonce("n1", Duration::from_secs(60)).await.unwrap();
    assert!(b.take_nonce("n1").await.unwrap());
    assert!(!a.take_nonce("n1").await.unwrap());
    a.put_nonce("n2", Duration::from_millis(50)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(120)).await;
    assert!(!b.take_nonce("n2").await.unwrap());
    assert!(!b.take_nonce("never").await.unwrap());
    // Concurrent takes of one nonce: exactly one wins.
    a.put_nonce("n3", Duration::from_secs(60)).await.unwrap();
    let takes: Vec<_> = (0..10)
        .map(|i| {
            let s = if i % 2 == 0 { a.clone() } else { b.clone() };
            tokio::spawn(async move { s.take_nonce("n3").await.unwrap() })
        })
        .collect();
    let mut won = 0;
    for t in takes {
        won += usize::from(t.await.unwrap());
    }
    assert_eq!(won, 1);

    // Single-use values: replaced by a later put, taken once, expiring.
    a.put_value("v1", "first", Duration::from_secs(60)).await.unwrap();
    b.put_value("v1", "second", Duration::from_secs(60)).await.unwrap();
    assert_eq!(b.take_value("v1").await.unwrap().as_deref(), Some("second"));
    assert_eq!(a.take_value("v1").await.unwrap(), None);
    a.put_value("v2", "x", Duration::from_millis(50)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(120)).await;
    assert_eq!(b.take_value("v2").await.unwrap(), None);
    // Values read in place (OIDC access tokens) until taken or expired.
    a.put_value("v3", "kept", Duration::from_secs(60)).await.unwrap();
    assert_eq!(b.get_value("v3").await.unwrap().as_deref(), Some("kept"));
    assert_eq!(a.get_value("v3").await.unwrap().as_deref(), Some("kept"));
    assert_eq!(b.take_value("v3").await.unwrap().as_deref(), Some("kept"));
    assert_eq!(a.get_value("v3").await.unwrap(), None);
    a.put_value("v4", "x", Duration::from_millis(50)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(120)).await;
    assert_eq!(b.get_value("v4").await.unwrap(), None);

    // Bounded sets (the SAML SP sessions of a person): written on one node, read and
    // taken on the other; expired members are never listed; past the bound the member
    // that expires first is dropped; concurrent adds from both nodes keep the bound.
    let n = now();
    a.put_member("set", "m1", "v1", n + 100, 3).await.unwrap();
    b.put_member("set", "m2", "v2", n + 300, 3).await.unwrap();
    a.put_member("set", "old", "v0", n - 5, 3).await.unwrap();
    let names = |m: Vec<symbolon::store::Member>| m.into_iter().map(|m| m.member).collect::<Vec<_>>();
    assert_eq!(names(b.members("set", n).await.unwrap()), ["m1", "m2"]);
    b.put_member("set", "m3", "v3", n + 200, 3).await.unwrap();
    a.put_member("set", "m4", "v4", n + 400, 3).await.unwrap();
    let live = b.members("set", n).await.unwrap();
    assert_eq!(names(live.clone()), ["m3", "m2", "m4"], "m1 expired first and was dropped");
    assert_eq!((live[0].value.as_str(), live[0].expires_at), ("v3", n + 200));
    assert_eq!(names(a.members("set", n + 250).await.unwrap()), ["m2", "m4"]);
    assert_eq!(a.take_member("set", "m2", n).await.unwrap().as_deref(), Some("v2"));
    assert_eq!(b.take_member("set", "m2", n).await.unwrap(), None, "taken once across nodes");
    assert_eq!(b.take_member("set", "m3", n + 250).await.unwrap(), None, "expired: not returned");
    let adds: Vec<_> = (0..10)
        .map(|i| {
            let s = if i % 2 == 0 { a.clone() } else { b.clone() };
            tokio::spawn(async move { s.put_member("burst", &format!("x{i}"), "v", n + 100 + i, 4).await.unwrap() })
        })
        .collect();
    for x in adds {
        x.await.unwrap();
    }
    assert_eq!(names(a.members("burst", n).await.unwrap()), ["x6", "x7", "x8", "x9"]);

    // Sliding window shared by both nodes.
    for i in 0..3 {
        let s = if i % 2 == 0 { &a } else { &b };
        assert!(s.hit("k", 3, Duration::from_secs(60)).await.unwrap().is_ok());
    }
    let wait = b.hit("k", 3, Duration::from_secs(60)).await.unwrap().unwrap_err();
    assert!(wait <= Duration::from_secs(60) && wait > Duration::from_secs(50), "{wait:?}");
    assert!(a.hit("other", 3, Duration::from_secs(60)).await.unwrap().is_ok());
    for _ in 0..2 {
        assert!(a.hit("short", 2, Duration::from_millis(100)).await.unwrap().is_ok());
    }
    assert!(a.hit("short", 2, Duration::from_millis(100)).await.unwrap().is_err());
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert!(b.hit("short", 2, Duration::from_millis(100)).await.unwrap().is_ok());

    // Weighted window and locks.
    assert_eq!(a.add_units("u", 2, Duration::from_secs(60)).await.unwrap(), 2);
    assert_eq!(b.add_units("u", 2, Duration::from_secs(60)).await.unwrap(), 4);
    assert_eq!(a.add_units("u2", 3, Duration::from_millis(100)).await.unwrap(), 3);
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(a.add_units("u2", 3, Duration::from_millis(100)).await.unwrap(), 3);
    assert_eq!(a.lock_remaining("l").await.unwrap(), None);
    a.lock("l", Duration::from_secs(30)).await.unwrap();
    let left = b.lock_remaining("l").await.unwrap().unwrap();
    assert!(left > Duration::from_secs(28) && left <= Duration::from_secs(30));

    // Sessions: the pending cap counts pending sessions only.
    let s1 = pending_session("tok-aaaaaa", t, 120);
    let mut s2 = pending_session("tok-aaaaaa", t + 1, 120);
    s2.scopes = vec!["name".into(), "age".into()];
    let s3 = pending_session("tok-aaaaaa", t + 2, 120);
    let keep = t + 180;
    assert!(a.create_session(&s1, 3, t, keep).await.unwrap());
    assert!(b.create_session(&s2, 3, t, keep).await.unwrap());
    assert!(a.create_session(&s3, 3, t, keep).await.unwrap());
    assert!(!b.create_session(&pending_session("tok-aaaaaa", t, 120), 3, t, keep).await.unwrap());
    assert_eq!(b.get_session(&s2.id).await.unwrap().unwrap(), s2);
    assert_eq!(a.get_session("nope").await.unwrap(), None);
    let pending = b.pending_sessions("tok-aaaaaa", t).await.unwrap();
    assert_eq!(pending.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(), [&s1.id, &s2.id, &s3.id]);
    assert!(a.pending_sessions("tok-other", t).await.unwrap().is_empty());

    // Ending: one winner; the loser sees the ended session; a node's subscriber hears it.
    let mut events = a.subscribe(&s1.id).await.unwrap();
    let ended = b.end_session(&s1.id, SessionEnd::Approved { id_token_sealed: "jwt".into() }, t).await.unwrap();
    let ended = ended.unwrap().unwrap();
    assert_eq!(ended.status, SessionStatus::Approved);
    assert_eq!(ended.id_token_sealed.as_deref(), Some("jwt"));
    assert_eq!(ended.ended_at, Some(t));
    tokio::time::timeout(Duration::from_secs(3), events.recv()).await.expect("end event").unwrap();
    let lost = a.end_session(&s1.id, SessionEnd::Rejected, t).await.unwrap().unwrap().unwrap_err();
    assert_eq!(lost.status, SessionStatus::Approved);
    assert_eq!(a.get_session(&s1.id).await.unwrap().unwrap(), ended);
    assert!(a.end_session("nope", SessionEnd::Rejected, t).await.unwrap().is_none());
    // An ended session frees its place under the cap.
    assert_eq!(a.pending_sessions("tok-aaaaaa", t).await.unwrap().len(), 2);
    let s4 = pending_session("tok-aaaaaa", t + 3, 120);
    assert!(b.create_session(&s4, 3, t, keep).await.unwrap());
    // Past its expiry a session cannot end, only be read.
    let late = b.end_session(&s2.id, SessionEnd::Rejected, s2.expires_at).await.unwrap().unwrap().unwrap_err();
    assert_eq!(late.status, SessionStatus::Pending);
    assert!(!late.is_pending(s2.expires_at));
    assert_eq!(a.pending_sessions("tok-aaaaaa", s4.expires_at).await.unwrap().len(), 0);

    // Failures lock at the limit, once; after that the session is unchanged.
    let mut lock_events = b.subscribe(&s3.id).await.unwrap();
    for n in 1..=4u32 {
        let s = if n % 2 == 0 { &a } else { &b };
        let after = s.count_failure(&s3.id, 5, t).await.unwrap().unwrap();
        assert_eq!((after.failures, after.status), (n, SessionStatus::Pending));
    }
    let locked = a.count_failure(&s3.id, 5, t).await.unwrap().unwrap();
    assert_eq!((locked.failures, locked.status, locked.ended_at), (5, SessionStatus::Locked, Some(t)));
    tokio::time::timeout(Duration::from_secs(3), lock_events.recv()).await.expect("lock event").unwrap();
    assert_eq!(b.count_failure(&s3.id, 5, t).await.unwrap().unwrap(), locked);
    assert!(a.count_failure("nope", 5, t).await.unwrap().is_none());
    assert!(matches!(b.end_session(&s3.id, SessionEnd::Rejected, t).await.unwrap(), Some(Err(_))));

    // Races across nodes: exactly one end wins; the cap holds under concurrent creates;
    // concurrent failures stop at the limit.
    let race = pending_session("tok-race00", t, 120);
    assert!(a.create_session(&race, 3, t, keep).await.unwrap());
    let ends: Vec<_> = (0..16)
        .map(|i| {
            let s = if i % 2 == 0 { a.clone() } else { b.clone() };
            let id = race.id.clone();
            tokio::spawn(async move {
                s.end_session(&id, SessionEnd::Approved { id_token_sealed: format!("t{i}") }, t).await
            })
        })
        .collect();
    let mut winners = 0;
    for e in ends {
        winners += usize::from(matches!(e.await.unwrap().unwrap(), Some(Ok(_))));
    }
    assert_eq!(winners, 1);
    let creates: Vec<_> = (0..12)
        .map(|i| {
            let s = if i % 2 == 0 { a.clone() } else { b.clone() };
            tokio::spawn(
                async move { s.create_session(&pending_session("tok-cap000", t, 120), 3, t, keep).await.unwrap() },
            )
        })
        .collect();
    let mut created = 0;
    for c in creates {
        created += usize::from(c.await.unwrap());
    }
    assert_eq!(created, 3);
    let f = pending_session("tok-fail00", t, 120);
    assert!(a.create_session(&f, 3, t, keep).await.unwrap());
    let fails: Vec<_> = (0..12)
        .map(|i| {
            let s = if i % 2 == 0 { a.clone() } else { b.clone() };
            let id = f.id.clone();
            tokio::spawn(async move { s.count_failure(&id, 5, t).await.unwrap() })
        })
        .collect();
    for x in fails {
        x.await.unwrap();
    }
    let after = a.get_session(&f.id).await.unwrap().unwrap();
    assert_eq!((after.failures, after.status), (5, SessionStatus::Locked));

    // Records are kept until `keep_until`, then gone.
    let short = pending_session("tok-short0", t, 1);
    assert!(a.create_session(&short, 3, t, t + 1).await.unwrap());
    assert!(b.get_session(&short.id).await.unwrap().is_some());
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert!(b.get_session(&short.id).await.unwrap().is_none());
}

#[tokio::test]
async fn session_store_memory() {
    let s: Arc<dyn SessionStore> = Arc::new(MemorySessionStore::new());
    session_store_contract(s.clone(), s).await;
}

#[tokio::test]
async fn session_store_redis_two_nodes() {
    let prefix = RedisPrefix::new();
    let a: Arc<dyn SessionStore> = Arc::new(RedisSessionStore::open(&prefix.session_store_config()).unwrap());
    let b: Arc<dyn SessionStore> = Arc::new(RedisSessionStore::open(&prefix.session_store_config()).unwrap());
    // Let both event subscriptions come up (an event published before would only be
    // noticed at the session's expiry).
    tokio::time::sleep(Duration::from_millis(300)).await;
    session_store_contract(a, b).await;
    assert!(prefix.key_count().unwrap() > 0);
}

#[tokio::test]
async fn redis_session_format_is_versioned() {
    let prefix = RedisPrefix::new();
    let store = RedisSessionStore::open(&prefix.session_store_config()).unwrap();
    let t = now();
    let s = pending_session("tok-format", t, 120);
    assert!(store.create_session(&s, 3, t, t + 180).await.unwrap());
    let client = redis::Client::open(prefix.url.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let key = format!("{}s:{}", prefix.prefix, s.id);
    let v: String = redis::cmd("HGET").arg(&key).arg("v").query_async(&mut conn).await.unwrap();
    assert_eq!(v, "1");
    // A record of an unknown version is refused, not misread.
    redis::cmd("HSET").arg(&key).arg("v").arg("99").query_async::<()>(&mut conn).await.unwrap();
    assert!(store.get_session(&s.id).await.is_err());
}

// ---------------------------------------------------------------- durable store

fn event(kind: &str, subject: &str, t: i64) -> AuditEvent {
    AuditEvent {
        at: t,
        kind: kind.into(),
        actor: "system".into(),
        subject: subject.into(),
        detail: serde_json::json!({"n": 1, "reason": "test"}),
    }
}

async fn durable_store_contract(a: Arc<dyn DurableStore>, b: Arc<dyn DurableStore>) {
    a.migrate().await.unwrap();
    b.migrate().await.unwrap(); // idempotent
    a.ping().await.unwrap();
    let t = now();

    // Key catalog, one active key per purpose.
    let key = |label: &str, state| CatalogEntry {
        label: label.into(),
        purpose: KeyPurpose::Jwt,
        kid: format!("kid-{label}"),
        state,
        created_at: t,
        activated_at: None,
        retiring_at: None,
        retired_at: None,
    };
    assert!(a.insert_key(&key("symbolon-jwt-1", KeyState::Active)).await.unwrap());
    assert!(!b.insert_key(&key("symbolon-jwt-1", KeyState::Active)).await.unwrap());
    assert!(b.insert_key(&key("symbolon-jwt-2", KeyState::Retiring)).await.unwrap());
    assert!(a.insert_key(&key("symbolon-jwt-3", KeyState::Active)).await.is_err());
    b.set_key_state("symbolon-jwt-2", KeyState::Retired, t + 5).await.unwrap();
    let keys = a.list_keys().await.unwrap();
    assert_eq!(keys.len(), 2);
    let k2 = keys.iter().find(|k| k.label == "symbolon-jwt-2").unwrap();
    assert_eq!((k2.state, k2.retired_at), (KeyState::Retired, Some(t + 5)));

    // Enrollments: one active device per token id, device keys unique.
    let e1 = active_enrollment("tok-111111", "dev-1", t);
    a.insert_enrollment(&e1).await.unwrap();
    assert!(matches!(
        b.insert_enrollment(&active_enrollment("tok-111111", "dev-2", t)).await,
        Err(StoreError::AlreadyEnrolled)
    ));
    assert!(matches!(
        b.insert_enrollment(&active_enrollment("tok-222222", "dev-1", t)).await,
        Err(StoreError::AlreadyEnrolled)
    ));
    assert_eq!(b.enrollment_by_device("dev-1").await.unwrap().unwrap(), e1);
    assert_eq!(b.active_enrollment("tok-111111").await.unwrap().unwrap(), e1);
    assert!(a.active_enrollment("tok-none00").await.unwrap().is_none());
    let e3 = active_enrollment("tok-333333", "dev-3", t);
    b.insert_enrollment(&e3).await.unwrap();
    // A VRL suspends only in its scope: the enrollment's territory and its CA's service.
    let ids: Vec<String> = vec!["tok-111111".into(), "tok-none00".into()];
    assert!(a.suspend_token_ids("AUS", "ca", &ids, "vrl", t + 1).await.unwrap().is_empty());
    assert!(a.suspend_token_ids("tok", "other-ca", &ids, "vrl", t + 1).await.unwrap().is_empty());
    let changed = a.suspend_token_ids("tok", "ca", &ids, "vrl", t + 1).await.unwrap();
    assert_eq!(changed, ["tok-111111"]);
    let s = b.enrollment_by_device("dev-1").await.unwrap().unwrap();
    assert_eq!((s.status, s.status_reason.as_deref(), s.updated_at), (EnrollmentStatus::Suspended, Some("vrl"), t + 1));
    assert_eq!(b.suspend_signer("ca", "01", "crl", t + 2).await.unwrap(), ["tok-333333"]);
    assert!(a.suspend_signer("ca", "01", "crl", t + 2).await.unwrap().is_empty());
    // A suspended enrollment holds its token id; only revoking (or deleting) it frees it.
    assert!(matches!(
        a.insert_enrollment(&active_enrollment("tok-111111", "dev-4", t)).await,
        Err(StoreError::AlreadyEnrolled)
    ));
    assert!(matches!(
        b.insert_enrollment_audited(&active_enrollment("tok-111111", "dev-4", t), &event("x", "tok-111111", t)).await,
        Err(StoreError::AlreadyEnrolled)
    ));
    assert!(
        b.set_enrollment_status("dev-1", EnrollmentStatus::Suspended, EnrollmentStatus::Revoked, None, t + 3)
            .await
            .unwrap()
    );
    a.insert_enrollment(&active_enrollment("tok-111111", "dev-4", t)).await.unwrap();
    assert_eq!(b.count_enrollments().await.unwrap(), 3);

    // Audit: a chain appended from both nodes, concurrently.
    assert!(a.audit_head().await.unwrap().is_none());
    let appends: Vec<_> = (0..20)
        .map(|i| {
            let s = if i % 2 == 0 { a.clone() } else { b.clone() };
            tokio::spawn(async move { s.append_audit(&event("test.event", &format!("s{i}"), t)).await.unwrap() })
        })
        .collect();
    for x in appends {
        x.await.unwrap();
    }
    // The enrollment and its event commit together, or neither does.
    let e5 = active_enrollment("tok-555555", "dev-5", t);
    let rec = b.insert_enrollment_audited(&e5, &event("enrollment.created", "tok-555555", t)).await.unwrap();
    assert_eq!(rec.seq, 21);
    let dup = active_enrollment("tok-555555", "dev-6", t);
    assert!(matches!(
        a.insert_enrollment_audited(&dup, &event("enrollment.created", "tok-555555", t)).await,
        Err(StoreError::AlreadyEnrolled)
    ));
    let (head_seq, head_hash) = a.audit_head().await.unwrap().unwrap();
    assert_eq!((head_seq, head_hash.as_str()), (21, rec.hash.as_str()));
    let all = b.audit_page(0, 0, 1000).await.unwrap();
    assert_eq!(all.len(), 21);
    let mut prev = GENESIS_HASH.to_string();
    for (i, r) in all.iter().enumerate() {
        assert_eq!(r.seq, i as i64 + 1);
        assert_eq!(r.prev_hash, prev);
        assert_eq!(chain_hash(&r.prev_hash, r.seq, &r.event()).unwrap(), r.hash);
        prev = r.hash.clone();
    }
    assert_eq!(all[20].kind, "enrollment.created");
    assert_eq!(all[0].detail, serde_json::json!({"n": 1, "reason": "test"}));
    let page = a.audit_page(5, 0, 3).await.unwrap();
    assert_eq!(page.iter().map(|r| r.seq).collect::<Vec<_>>(), [6, 7, 8]);
    assert!(a.audit_page(0, t + 1, 10).await.unwrap().is_empty());

    // Checkpoints: one per seq.
    let cp = AuditCheckpoint { seq: 21, hash: rec.hash.clone(), at: t, key_label: "k".into(), signature: "s".into() };
    assert!(a.insert_checkpoint(&cp).await.unwrap());
    assert!(!b.insert_checkpoint(&cp).await.unwrap());
    assert_eq!(b.checkpoints().await.unwrap(), [cp]);

    // Key life cycle: inserts and transitions commit with their audit events; a
    // transition is a compare-and-set on the state; never two active keys.
    let changed = |label: &str| event("key.state_changed", label, t);
    let head = a.audit_head().await.unwrap().unwrap().0;
    let added = a.insert_key_audited(&key("symbolon-jwt-4", KeyState::Next), &changed("symbolon-jwt-4")).await;
    assert_eq!(added.unwrap().unwrap().seq, head + 1);
    assert!(b.insert_key_audited(&key("symbolon-jwt-4", KeyState::Next), &changed("x")).await.unwrap().is_none());
    assert!(matches!(
        b.insert_key_audited(&key("symbolon-jwt-5", KeyState::Active), &changed("x")).await,
        Err(StoreError::KeyStateChanged(l)) if l == "symbolon-jwt-5"
    ));
    let rotate = [
        KeyTransition { label: "symbolon-jwt-1".into(), from: KeyState::Active, to: KeyState::Retiring, at: t + 10 },
        KeyTransition { label: "symbolon-jwt-4".into(), from: KeyState::Next, to: KeyState::Active, at: t + 10 },
    ];
    let reversed = [rotate[1].clone(), rotate[0].clone()];
    assert!(matches!(
        a.transition_keys(&reversed, &[changed("x")]).await,
        Err(StoreError::KeyStateChanged(l)) if l == "symbolon-jwt-4"
    ));
    let records = a.transition_keys(&rotate, &[changed("symbolon-jwt-1"), changed("symbolon-jwt-4")]).await.unwrap();
    assert_eq!(records.iter().map(|r| r.seq).collect::<Vec<_>>(), [head + 2, head + 3]);
    // The same rotation from a second node finds the keys moved and changes nothing.
    assert!(matches!(b.transition_keys(&rotate, &[changed("x")]).await, Err(StoreError::KeyStateChanged(_))));
    assert_eq!(a.audit_head().await.unwrap().unwrap().0, head + 3);
    let keys = b.list_keys().await.unwrap();
    let state = |l: &str| keys.iter().find(|k| k.label == l).map(|k| (k.state, k.activated_at, k.retiring_at)).unwrap();
    assert_eq!(state("symbolon-jwt-1"), (KeyState::Retiring, None, Some(t + 10)));
    assert_eq!(state("symbolon-jwt-4"), (KeyState::Active, Some(t + 10), None));

    // Stored envelopes: counted per key (LIKE wildcards in labels are literal), walked
    // by row id, replaced only while unchanged.
    let mut e = active_enrollment("tok-666666", "dev-7", t);
    e.claims_sealed = "v1.symbolon-data-1.AAAA".into();
    e.push_token_sealed = Some("v1.symbolon-data-1.BBBB".into());
    a.insert_enrollment(&e).await.unwrap();
    let mut e = active_enrollment("tok-777777", "dev-8", t);
    e.claims_sealed = "v1.symbolon-dataX2.CCCC".into();
    a.insert_enrollment(&e).await.unwrap();
    assert_eq!(b.count_sealed("symbolon-data-1").await.unwrap(), 2);
    assert_eq!(b.count_sealed("symbolon-data_2").await.unwrap(), 0);
    assert_eq!(b.count_sealed("symbolon-dataX2").await.unwrap(), 1);
    let claims = &SEALED_COLUMNS[0];
    let others = b.sealed_page(claims, "symbolon-data-1", "", 100).await.unwrap();
    assert_eq!(others.len() as i64, b.count_enrollments().await.unwrap() - 1);
    assert!(others.windows(2).all(|w| w[0].id < w[1].id));
    let first = b.sealed_page(claims, "symbolon-data-1", "", 1).await.unwrap();
    let rest = b.sealed_page(claims, "symbolon-data-1", &first[0].id, 100).await.unwrap();
    assert_eq!(rest.len(), others.len() - 1);
    assert!(a.replace_sealed(&first[0], "v1.symbolon-data-1.NEW").await.unwrap());
    assert!(!b.replace_sealed(&first[0], "v1.symbolon-data-1.NEWER").await.unwrap());
    assert_eq!(b.count_sealed("symbolon-data-1").await.unwrap(), 3);

    // Leases: one holder until it expires; the holder renews.
    assert!(a.try_lease("keys.schedule", "node-a", t, t + 30).await.unwrap());
    assert!(!b.try_lease("keys.schedule", "node-b", t + 1, t + 31).await.unwrap());
    assert!(a.try_lease("keys.schedule", "node-a", t + 1, t + 31).await.unwrap());
    assert!(b.try_lease("keys.schedule", "node-b", t + 31, t + 61).await.unwrap());
    assert!(!a.try_lease("keys.schedule", "node-a", t + 32, t + 62).await.unwrap());
}

#[tokio::test]
async fn durable_store_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = softhsm_tests::backends::sqlite_nodes(dir.path()).await.unwrap();
    durable_store_contract(a, b).await;
}

#[tokio::test]
async fn durable_store_postgres_two_nodes() {
    let db = PgDatabase::create().unwrap();
    let (a, b) = softhsm_tests::backends::postgres_nodes(&db).unwrap();
    durable_store_contract(a, b).await;
    // The database itself refuses to change the audit trail, even for its owner.
    for sql in ["UPDATE audit SET kind = 'x' WHERE seq = 1", "DELETE FROM audit WHERE seq = 1", "TRUNCATE audit"] {
        let err = db.sql(sql).unwrap_err().to_string();
        assert!(err.contains("append-only"), "{sql}: {err}");
    }
    assert!(db.sql("DELETE FROM audit_checkpoints").is_err());
    assert_eq!(db.sql("SELECT count(*) FROM audit").unwrap().trim(), "24");
}

#[tokio::test]
async fn postgres_unreachable_is_unavailable_fast() {
    // Nothing listens on this port: every call fails within the bounded time.
    let port = softhsm_tests::free_port().unwrap();
    let config = DatabaseConfig {
        acquire_timeout: Duration::from_millis(500),
        ..softhsm_tests::backends::test_database_config()
    };
    let store = PostgresStore::open(&format!("postgres://postgres@127.0.0.1:{port}/x"), &config).unwrap();
    let start = std::time::Instant::now();
    assert!(matches!(store.ping().await, Err(StoreError::Unavailable(_))));
    assert!(matches!(store.active_enrollment("tok-111111").await, Err(StoreError::Unavailable(_))));
    assert!(start.elapsed() < Duration::from_secs(3), "{:?}", start.elapsed());
}

fn openssl(dir: &std::path::Path, args: &[&str]) {
    let out = std::process::Command::new("openssl").args(args).current_dir(dir).output().unwrap();
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

#[tokio::test]
async fn redis_over_tls_with_a_private_ca() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("san.ext"), "subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\n").unwrap();
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];
    openssl(
        d,
        &[&["req", "-x509"][..], &ec, &["-keyout", "ca.key", "-out", "ca.pem", "-subj", "/CN=test-ca", "-days", "1"]]
            .concat(),
    );
    openssl(d, &[&["req"][..], &ec, &["-keyout", "srv.key", "-out", "srv.csr", "-subj", "/CN=localhost"]].concat());
    openssl(
        d,
        &[
            "x509",
            "-req",
            "-in",
            "srv.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "srv.pem",
            "-days",
            "1",
            "-extfile",
            "san.ext",
        ],
    );
    let redis = softhsm_tests::backends::PrivateRedis::start_tls(&d.join("srv.pem"), &d.join("srv.key")).unwrap();
    let prefix = RedisPrefix::on(&redis.url());
    // Trusting the private CA: works.
    let config = SessionStoreConfig { ca_file: Some(d.join("ca.pem")), ..prefix.session_store_config() };
    let store = RedisSessionStore::open(&config).unwrap();
    // Ready once the event subscription is up too.
    let start = std::time::Instant::now();
    while store.ping().await.is_err() {
        assert!(start.elapsed() < Duration::from_secs(5), "{:?}", store.ping().await);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    store.put_nonce("tls", Duration::from_secs(10)).await.unwrap();
    assert!(store.take_nonce("tls").await.unwrap());
    // With the system roots only, the server is not trusted.
    let untrusted = RedisSessionStore::open(&prefix.session_store_config()).unwrap();
    assert!(untrusted.ping().await.is_err());
}

#[tokio::test]
async fn postgres_tls_require() {
    let db = PgDatabase::create().unwrap();
    let server_ssl = db.sql("SHOW ssl").unwrap().trim() == "on";
    let config = DatabaseConfig { tls: DatabaseTls::Require, ..softhsm_tests::backends::test_database_config() };
    let store = PostgresStore::open(&db.url(), &config).unwrap();
    // `require` connects only over TLS: it works exactly when the server offers TLS.
    assert_eq!(store.ping().await.is_ok(), server_ssl);
}

/// The ACL of docs/cluster.md: the session store works as a Redis user limited to its
/// key prefix, its channel and the commands it needs (user and password in the URL).
#[tokio::test]
async fn redis_acl_user_from_the_docs() {
    let redis = softhsm_tests::backends::PrivateRedis::start().unwrap();
    let client = redis::Client::open(redis.url().as_str()).unwrap();
    let mut admin = client.get_multiplexed_async_connection().await.unwrap();
    let acl = "on >acl-pw ~symbolon:* &symbolon:events -@all +@connection +psetex +get +getdel +pttl +hgetall \
               +hset +hmget +hincrby +expire +pexpire +ttl +zadd +zrem +zcard +zrange +zrangebyscore \
               +zremrangebyscore +time +zrangebylex +zremrangebyrank +eval +evalsha +script|load +publish \
               +subscribe";
    redis::cmd("ACL")
        .arg("SETUSER")
        .arg("symbolon")
        .arg(acl.split_whitespace().collect::<Vec<_>>())
        .query_async::<()>(&mut admin)
        .await
        .unwrap();
    let url = format!("redis://symbolon:acl-pw@127.0.0.1:{}", redis.port);
    let config = |prefix: &str| SessionStoreConfig {
        url: url.clone(),
        key_prefix: prefix.to_string(),
        timeout: Duration::from_secs(2),
        ..SessionStoreConfig::default()
    };
    let a: Arc<dyn SessionStore> = Arc::new(RedisSessionStore::open(&config("symbolon:")).unwrap());
    let b: Arc<dyn SessionStore> = Arc::new(RedisSessionStore::open(&config("symbolon:")).unwrap());
    tokio::time::sleep(Duration::from_millis(300)).await;
    session_store_contract(a, b).await;
    // The password may come from a file instead of the URL.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pw"), "acl-pw\n").unwrap();
    let from_file = SessionStoreConfig {
        url: format!("redis://symbolon@127.0.0.1:{}", redis.port),
        password_file: Some(dir.path().join("pw")),
        ..config("symbolon:")
    };
    let store = RedisSessionStore::open(&from_file).unwrap();
    store.put_nonce("pw", Duration::from_secs(5)).await.unwrap();
    assert!(store.take_nonce("pw").await.unwrap());
    // Outside its prefix the user may do nothing.
    let other = RedisSessionStore::open(&config("other:")).unwrap();
    assert!(other.put_nonce("x", Duration::from_secs(5)).await.is_err());
}

// ---------------------------------------------------------------- migrations

/// A copy of `migrations/<db>/` holding only the migrations up to `last` (file name
/// prefix), to build a database as an older release left it.
fn migrations_until(db: &str, last: &str) -> tempfile::TempDir {
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../migrations").join(db);
    let out = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(src).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        if name.split('_').next().unwrap_or_default() <= last {
            std::fs::copy(&path, out.path().join(name)).unwrap();
        }
    }
    out
}

/// Token ids of enrollments made before migration 0005 and the territory it derives.
const LEGACY_ROWS: &[(&str, &str)] = &[
    ("AUS-7Q2M9K4T", "AUS"),
    ("NZL-ABCDEF", "NZL"),
    ("D-123456", "D"),
    ("tok-111111", ""),
    ("ABCD-123456", ""),
    ("AUS7Q2M9K4T", ""),
];

/// An enrollment row as migrations 0001-0004 define it; `P` is the placeholder prefix.
fn legacy_insert(p: char) -> String {
    format!(
        "INSERT INTO enrollments (id, token_id, device_id, device_jwk, status, push_provider,
            claims_sealed, claim_names, ca_sha256, signer_serial, created_at, updated_at)
         VALUES ({p}1, {p}2, {p}3, '{{}}', 'active', 'none', 'v1.x.y', '', 'ca', '01', 0, 0)"
    )
}

/// After the migration: each row's territory, and a VRL suspends only in its territory.
async fn legacy_rows_are_attributed(store: &dyn DurableStore) {
    for (i, (tid, territory)) in LEGACY_ROWS.iter().enumerate() {
        let e = store.enrollment_by_device(&format!("dev-{i}")).await.unwrap().unwrap();
        assert_eq!((e.token_id.as_str(), e.territory.as_str()), (*tid, *territory));
    }
    let aus = vec!["AUS-7Q2M9K4T".to_string()];
    assert!(store.suspend_token_ids("NZL", "ca", &aus, "vrl", now()).await.unwrap().is_empty());
    assert_eq!(store.suspend_token_ids("AUS", "ca", &aus, "vrl", now()).await.unwrap(), aus);
    // A row without an ICAO-code prefix is suspended by no VRL (a VRL's territory is a code).
    let bare = vec!["tok-111111".to_string()];
    assert!(store.suspend_token_ids("tok", "ca", &bare, "vrl", now()).await.unwrap().is_empty());
}

#[tokio::test]
async fn migration_0005_attributes_existing_enrollments_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("t.db").display());
    {
        let options =
            <sqlx::sqlite::SqliteConnectOptions as std::str::FromStr>::from_str(&url).unwrap().create_if_missing(true);
        let pool = sqlx::SqlitePool::connect_with(options).await.unwrap();
        let old = migrations_until("sqlite", "0004");
        sqlx::migrate::Migrator::new(old.path()).await.unwrap().run(&pool).await.unwrap();
        for (i, (tid, _)) in LEGACY_ROWS.iter().enumerate() {
            sqlx::query(&legacy_insert('?'))
                .bind(i.to_string())
                .bind(tid)
                .bind(format!("dev-{i}"))
                .execute(&pool)
                .await
                .unwrap();
        }
        pool.close().await;
    }
    let store = SqliteStore::open(&url, &softhsm_tests::backends::test_database_config()).await.unwrap();
    store.migrate().await.unwrap();
    legacy_rows_are_attributed(&store).await;
}

#[tokio::test]
async fn migration_0005_attributes_existing_enrollments_postgres() {
    let db = PgDatabase::create().unwrap();
    {
        let pool = sqlx::PgPool::connect(&db.url()).await.unwrap();
        let old = migrations_until("postgres", "0004");
        sqlx::migrate::Migrator::new(old.path()).await.unwrap().run(&pool).await.unwrap();
        for (i, (tid, _)) in LEGACY_ROWS.iter().enumerate() {
            sqlx::query(&legacy_insert('$'))
                .bind(i.to_string())
                .bind(tid)
                .bind(format!("dev-{i}"))
                .execute(&pool)
                .await
                .unwrap();
        }
        pool.close().await;
    }
    let store = PostgresStore::open(&db.url(), &softhsm_tests::backends::test_database_config()).unwrap();
    store.migrate().await.unwrap();
    legacy_rows_are_attributed(&store).await;
}

/// Migration 0008 converts a PostgreSQL audit table that already holds records (with
/// a signed checkpoint) into monthly partitions: every record kept byte for byte in
/// its month's partition, the chain and the checkpoint still matching, the runtime
/// role's grants carried over, partitions for the current and the next three months,
/// and new appends continuing the chain.
#[tokio::test]
async fn migration_0008_partitions_the_audit_table_keeping_the_chain() {
    use symbolon::store::AuditStore;
    let db = PgDatabase::create().unwrap();
    {
        let pool = sqlx::PgPool::connect(&db.url()).await.unwrap();
        let old = migrations_until("postgres", "0007");
        sqlx::migrate::Migrator::new(old.path()).await.unwrap().run(&pool).await.unwrap();
        pool.close().await;
    }
    let store = PostgresStore::open(&db.url(), &softhsm_tests::backends::test_database_config()).unwrap();
    // Two records in March 2025, one in January 2026, one now.
    for at in [1_741_000_000, 1_741_100_000, 1_767_300_000, now()] {
        store
            .append_audit(&AuditEvent::new(at, "test.event", "system", "s", serde_json::json!({"at": at})))
            .await
            .unwrap();
    }
    let (seq, hash) = store.audit_head().await.unwrap().unwrap();
    let checkpoint =
        AuditCheckpoint { seq, hash: hash.clone(), at: now(), key_label: "k".into(), signature: "sig".into() };
    assert!(store.insert_checkpoint(&checkpoint).await.unwrap());
    db.sql("GRANT SELECT, INSERT ON audit TO PUBLIC").unwrap();
    let before = db.sql(
        "SELECT string_agg(seq::text || at::text || kind || detail || prev_hash || hash, ',' ORDER BY seq) FROM audit",
    );
    let before = before.unwrap();

    store.migrate().await.unwrap();
    let after = db.sql(
        "SELECT string_agg(seq::text || at::text || kind || detail || prev_hash || hash, ',' ORDER BY seq) FROM audit",
    );
    assert_eq!(after.unwrap(), before, "every record kept as it was");
    assert_eq!(db.sql("SELECT relkind FROM pg_class WHERE relname = 'audit'").unwrap().trim(), "p");
    let placed = db.sql("SELECT string_agg(tableoid::regclass || ':' || seq, ' ' ORDER BY seq) FROM audit").unwrap();
    let t = time::OffsetDateTime::now_utc();
    let current = format!("audit_y{:04}m{:02}", t.year(), u8::from(t.month()));
    assert_eq!(placed.trim(), format!("audit_y2025m03:1 audit_y2025m03:2 audit_y2026m01:3 {current}:4"));
    let partitions = db.sql("SELECT count(*) FROM pg_inherits WHERE inhparent = 'audit'::regclass").unwrap();
    // March 2025, January 2026, the current and the next three months (the current may
    // be January 2026 only on a clock set back), and the default partition.
    assert!(partitions.trim().parse::<i64>().unwrap() >= 6, "{partitions}");
    assert_eq!(db.sql("SELECT count(*) FROM audit_default").unwrap().trim(), "0");
    assert!(db.sql("SELECT has_table_privilege('public', 'audit', 'INSERT')").is_ok());
    let acl = db.sql("SELECT relacl::text FROM pg_class WHERE relname = 'audit'").unwrap();
    assert!(acl.contains("=ar/"), "the PUBLIC grant carried over: {acl}");
    // The chain: each record's hash from its content and the one before; the checkpoint.
    let page = store.audit_page(0, i64::MIN, 100).await.unwrap();
    let mut prev = GENESIS_HASH.to_string();
    for r in &page {
        assert_eq!(r.prev_hash, prev);
        assert_eq!(chain_hash(&r.prev_hash, r.seq, &r.event()).unwrap(), r.hash);
        prev = r.hash.clone();
    }
    assert_eq!(store.checkpoints().await.unwrap(), vec![checkpoint]);
    let next = store.append_audit(&AuditEvent::new(now(), "test.event", "system", "s", serde_json::json!({}))).await;
    let next = next.unwrap();
    assert_eq!((next.seq, next.prev_hash.as_str()), (seq + 1, hash.as_str()));
    // Append-only as before, on the table and on each partition.
    assert!(db.sql("UPDATE audit SET kind = 'x'").is_err());
    assert!(db.sql("DELETE FROM audit WHERE seq = 1").is_err());
    assert!(db.sql("TRUNCATE audit_y2025m03").is_err());
    assert!(db.sql("TRUNCATE audit").is_err());
}
