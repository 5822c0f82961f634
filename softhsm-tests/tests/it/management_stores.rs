//! What the management API needs from the stores, on every backend: listing sessions
//! (memory and Redis, the latter with its bounded index) and reading, changing and
//! deleting enrollments by token id and device id (SQLite and PostgreSQL).

use std::sync::Arc;
use std::time::Duration;

use softhsm_tests::backends::{PgDatabase, RedisPrefix};
use softhsm_tests::records::{active_enrollment, pending_session};
use symbolon::store::SessionStoreConfig;
use symbolon::store::{
    AuthSession, DurableStore, Enrollment, EnrollmentStatus, MemorySessionStore, RedisSessionStore, SessionEnd,
    SessionStatus, SessionStore, StoreError, session_position,
};

fn now() -> i64 {
    symbolon::ids::now_unix()
}

/// `a` and `b` are two handles on one store.
async fn session_listing_contract(a: Arc<dyn SessionStore>, b: Arc<dyn SessionStore>) {
    let t = now();
    // Five sessions over three seconds, created through either node.
    let mut made = Vec::new();
    for (i, offset) in [-3, -2, -2, -1, 0].into_iter().enumerate() {
        let s = pending_session(&format!("tok-list-{i}"), t + offset, 120);
        let node = if i % 2 == 0 { &a } else { &b };
        assert!(node.create_session(&s, 3, t, t + 300).await.unwrap());
        made.push(s);
    }
    made.sort_by_key(|s| session_position(s.created_at, &s.id));
    let ids = |v: &[AuthSession]| v.iter().map(|s| s.id.clone()).collect::<Vec<_>>();

    let all = b.list_sessions(0, None, 100).await.unwrap();
    assert_eq!(ids(&all), ids(&made), "every session, in (created_at, id) order");
    // Paging with the position of the last session seen.
    let first = a.list_sessions(0, None, 2).await.unwrap();
    assert_eq!(ids(&first), ids(&made[..2]));
    let after = session_position(first[1].created_at, &first[1].id);
    let rest = b.list_sessions(0, Some(&after), 100).await.unwrap();
    assert_eq!(ids(&rest), ids(&made[2..]));
    // `since` skips older sessions; a cursor before `since` does not reach back.
    let recent = a.list_sessions(t - 1, None, 100).await.unwrap();
    assert_eq!(ids(&recent), ids(&made[3..]));
    let early = session_position(made[0].created_at, &made[0].id);
    assert_eq!(ids(&a.list_sessions(t - 1, Some(&early), 100).await.unwrap()), ids(&made[3..]));
    // The listing shows state changes.
    a.end_session(&made[4].id, SessionEnd::Rejected, t).await.unwrap().unwrap().unwrap();
    let last = b.list_sessions(t, None, 10).await.unwrap();
    assert_eq!(last.len(), 1);
    assert_eq!(last[0].status, SessionStatus::Rejected);

    // Sessions past their keep time leave the listing.
    let short = pending_session("tok-list-short", t + 1, 120);
    assert!(a.create_session(&short, 3, t, t + 1).await.unwrap());
    assert!(b.list_sessions(t + 1, None, 10).await.unwrap().iter().any(|s| s.id == short.id));
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert!(b.list_sessions(t + 1, None, 10).await.unwrap().iter().all(|s| s.id != short.id));
    assert_eq!(a.list_sessions(0, None, 100).await.unwrap().len(), 5);
}

#[tokio::test]
async fn session_listing_memory() {
    let s: Arc<dyn SessionStore> = Arc::new(MemorySessionStore::new());
    session_listing_contract(s.clone(), s).await;
}

#[tokio::test]
async fn session_listing_redis_two_nodes() {
    let prefix = RedisPrefix::new();
    let config = prefix.session_store_config();
    let a: Arc<dyn SessionStore> = Arc::new(RedisSessionStore::open(&config).unwrap());
    let b: Arc<dyn SessionStore> = Arc::new(RedisSessionStore::open(&config).unwrap());
    session_listing_contract(a, b).await;
}

/// The ACL of docs/cluster.md (as in it/stores.rs) allows listing.
#[tokio::test]
async fn session_listing_with_the_documented_acl() {
    let redis = softhsm_tests::backends::PrivateRedis::start().unwrap();
    let client = redis::Client::open(redis.url().as_str()).unwrap();
    let mut admin = client.get_multiplexed_async_connection().await.unwrap();
    // The ACL of docs/cluster.md, which must allow what listing sessions needs.
    let acl = softhsm_tests::backends::documented_redis_acl("acl-pw").unwrap();
    redis::cmd("ACL").arg("SETUSER").arg("symbolon").arg(acl).query_async::<()>(&mut admin).await.unwrap();
    let config = SessionStoreConfig {
        url: format!("redis://symbolon:acl-pw@127.0.0.1:{}", redis.port),
        key_prefix: "symbolon:".into(),
        timeout: Duration::from_secs(2),
        ..SessionStoreConfig::default()
    };
    let a: Arc<dyn SessionStore> = Arc::new(RedisSessionStore::open(&config).unwrap());
    let b: Arc<dyn SessionStore> = Arc::new(RedisSessionStore::open(&config).unwrap());
    session_listing_contract(a, b).await;
}

async fn enrollment_management_contract(a: Arc<dyn DurableStore>, b: Arc<dyn DurableStore>) {
    a.migrate().await.unwrap();
    let t = now();
    use EnrollmentStatus::{Active, Revoked, Suspended};
    for (tid, dev, status) in [
        ("TID-C", "dev-c1", Active),
        ("TID-A", "dev-a1", Revoked),
        ("TID-A", "dev-a2", Active),
        ("TID-B", "dev-b1", Active),
        ("TID-D", "dev-d1", Active),
    ] {
        a.insert_enrollment(&Enrollment { status, ..active_enrollment(tid, dev, t) }).await.unwrap();
    }
    // Pages of token ids, each with all of its devices.
    let page = b.enrollments_page("", 2).await.unwrap();
    let pairs: Vec<(&str, &str)> = page.iter().map(|e| (e.token_id.as_str(), e.device_id.as_str())).collect();
    assert_eq!(pairs, [("TID-A", "dev-a1"), ("TID-A", "dev-a2"), ("TID-B", "dev-b1")]);
    let page = b.enrollments_page("TID-B", 2).await.unwrap();
    assert_eq!(page.iter().map(|e| e.token_id.as_str()).collect::<Vec<_>>(), ["TID-C", "TID-D"]);
    assert!(b.enrollments_page("TID-D", 2).await.unwrap().is_empty());
    assert_eq!(a.enrollments_of("TID-A").await.unwrap().len(), 2);
    assert!(a.enrollments_of("TID-Z").await.unwrap().is_empty());

    // Compare and set of the status.
    assert!(a.set_enrollment_status("dev-c1", Active, Suspended, Some("by operator"), t + 1).await.unwrap());
    assert!(!b.set_enrollment_status("dev-c1", Active, Revoked, None, t + 2).await.unwrap(), "not active any more");
    let e = b.enrollment_by_device("dev-c1").await.unwrap().unwrap();
    assert_eq!((e.status, e.status_reason.as_deref(), e.updated_at), (Suspended, Some("by operator"), t + 1));
    assert!(a.active_enrollment("TID-C").await.unwrap().is_none());
    assert!(b.set_enrollment_status("dev-c1", Suspended, Active, None, t + 3).await.unwrap());
    assert_eq!(a.active_enrollment("TID-C").await.unwrap().unwrap().device_id, "dev-c1");
    // A second active device for one token id is refused by the database.
    let err = a.set_enrollment_status("dev-a1", Revoked, Active, None, t).await.unwrap_err();
    assert!(matches!(err, StoreError::AlreadyEnrolled), "{err:?}");

    // Deleting a user removes every device of it and nothing else.
    assert_eq!(b.delete_enrollments("TID-A").await.unwrap(), 2);
    assert!(a.enrollment_by_device("dev-a2").await.unwrap().is_none());
    assert_eq!(a.delete_enrollments("TID-A").await.unwrap(), 0);
    assert_eq!(a.count_enrollments().await.unwrap(), 3);
}

#[tokio::test]
async fn enrollment_management_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = softhsm_tests::backends::sqlite_nodes(dir.path()).await.unwrap();
    enrollment_management_contract(a, b).await;
}

#[tokio::test]
async fn enrollment_management_postgres_two_nodes() {
    let db = PgDatabase::create().unwrap();
    let (a, b) = softhsm_tests::backends::postgres_nodes(&db).unwrap();
    enrollment_management_contract(a, b).await;
}
