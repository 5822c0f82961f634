//! Redis session store: shared by every node of a cluster (docs/architecture.md §Stores).
//!
//! Keys (all under `session_store.key_prefix`, `P`):
//! - `P s:<id>`: a session, a hash with format version `v`, the session JSON as created
//!   and the fields that change (`status`, `failures`, `ended_at`, `id_token_sealed`); it
//!   expires when the session stops being readable.
//! - `P tp:<token id>`: sorted set of the token's pending session ids, scored by `expires_at`.
//! - `P idx:sessions`: every session's listing position `<created_at, 20 digits>:<id>`,
//!   all scored 0 so they sort by position (management API); bounded to
//!   `SESSION_INDEX_MAX` entries, the oldest dropped first; entries whose session
//!   expired are removed when a listing meets them.
//! - `P n:<nonce>`, `P l:<key>`, `P v:<key>`: nonces, locks and single-use values,
//!   plain TTL keys.
//! - `P w:<key>`, `P u:<key>`: sliding windows, sorted sets scored by Redis time in ms.
//! - `P m:<key>` and `P mv:<key>`: a bounded set, its members scored by their expiry
//!   (unix seconds) and their values in a hash; both expire with the last member.
//!
//! Every state change is one Lua script, so no read-modify-write race exists between
//! nodes. A session's end is published on `P events`; each process holds one
//! subscription and fans messages out to per-session broadcast channels. Enrollment
//! changes go out on the same channel as `enrollments:<token ids, one per line>`.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt;
use redis::aio::ConnectionManager;
use redis::{AsyncCommands, Client, IntoConnectionInfo, RedisError, Script};

use super::config::SessionStoreConfig;
use super::{
    AuthSession, EnrollmentChange, EventHub, Member, SESSION_INDEX_MAX, SessionEnd, SessionEvents, SessionStatus,
    SessionStore, SessionStoreError, session_position, session_position_since,
};

/// Version of the session hash layout; a node refuses sessions of a version it does not know.
const FORMAT_VERSION: &str = "1";

const CREATE: &str = r#"
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[1])
if redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[2]) then return 0 end
redis.call('HSET', KEYS[1], 'v', ARGV[8], 'session', ARGV[5], 'status', 'pending', 'failures', '0',
    'expires_at', ARGV[3], 'token_id', ARGV[6])
redis.call('EXPIRE', KEYS[1], ARGV[4])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[7])
if redis.call('TTL', KEYS[2]) < tonumber(ARGV[4]) then redis.call('EXPIRE', KEYS[2], ARGV[4]) end
redis.call('ZADD', KEYS[3], 0, ARGV[9])
local n = redis.call('ZCARD', KEYS[3])
if n > tonumber(ARGV[10]) then redis.call('ZREMRANGEBYRANK', KEYS[3], 0, n - tonumber(ARGV[10]) - 1) end
return 1
"#;

/// ARGV: now, status, sealed id_token ('' for none), prefix, events channel, session id.
const END: &str = r#"
local f = redis.call('HMGET', KEYS[1], 'status', 'expires_at', 'token_id')
if not f[1] then return false end
local won = 0
if f[1] == 'pending' and tonumber(ARGV[1]) < tonumber(f[2]) then
    redis.call('HSET', KEYS[1], 'status', ARGV[2], 'ended_at', ARGV[1])
    if ARGV[3] ~= '' then redis.call('HSET', KEYS[1], 'id_token_sealed', ARGV[3]) end
    redis.call('ZREM', ARGV[4] .. 'tp:' .. f[3], ARGV[6])
    redis.call('PUBLISH', ARGV[5], ARGV[6])
    won = 1
end
return {won, redis.call('HGETALL', KEYS[1])}
"#;

/// ARGV: now, lock_at, prefix, events channel, session id.
const COUNT_FAILURE: &str = r#"
local f = redis.call('HMGET', KEYS[1], 'status', 'expires_at', 'token_id')
if not f[1] then return false end
if f[1] == 'pending' and tonumber(ARGV[1]) < tonumber(f[2]) then
    local n = redis.call('HINCRBY', KEYS[1], 'failures', 1)
    if n >= tonumber(ARGV[2]) then
        redis.call('HSET', KEYS[1], 'status', 'locked', 'ended_at', ARGV[1])
        redis.call('ZREM', ARGV[3] .. 'tp:' .. f[3], ARGV[5])
        redis.call('PUBLISH', ARGV[4], ARGV[5])
    end
end
return redis.call('HGETALL', KEYS[1])
"#;

/// ARGV: now, prefix.
const PENDING: &str = r#"
local out = {}
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. ARGV[1], '+inf')) do
    local h = redis.call('HGETALL', ARGV[2] .. 's:' .. id)
    if #h > 0 then table.insert(out, h) end
end
return out
"#;

/// Redis time in ms: one clock for every node's windows.
const NOW_MS: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"#;

/// ARGV: window ms, limit, unique member. Returns {allowed, ms to wait}.
const HIT: &str = r#"
local w = tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - w)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then
    local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
    return {0, tonumber(first[2]) + w - now}
end
redis.call('ZADD', KEYS[1], now, ARGV[3])
redis.call('PEXPIRE', KEYS[1], w)
return {1, 0}
"#;

/// ARGV: window ms, units, unique member. Returns the window's total.
const ADD_UNITS: &str = r#"
local w = tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - w)
redis.call('ZADD', KEYS[1], now, ARGV[3] .. ':' .. ARGV[2])
redis.call('PEXPIRE', KEYS[1], w)
local total = 0
for _, m in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
    total = total + tonumber(string.match(m, ':(%d+)$'))
end
return total
"#;

/// ARGV: now, member, value, expires_at, max. KEYS: the set's zset, its values hash.
const PUT_MEMBER: &str = r#"
local gone = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if #gone > 0 then
    redis.call('ZREM', KEYS[1], unpack(gone))
    redis.call('HDEL', KEYS[2], unpack(gone))
end
redis.call('ZADD', KEYS[1], ARGV[4], ARGV[2])
redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
local n = redis.call('ZCARD', KEYS[1])
local max = tonumber(ARGV[5])
if n > max then
    local drop = redis.call('ZRANGE', KEYS[1], 0, n - max - 1)
    redis.call('ZREM', KEYS[1], unpack(drop))
    redis.call('HDEL', KEYS[2], unpack(drop))
end
local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
local ttl = 1
if #last == 2 then ttl = math.max(1, tonumber(last[2]) - tonumber(ARGV[1])) end
redis.call('EXPIRE', KEYS[1], ttl)
redis.call('EXPIRE', KEYS[2], ttl)
return n
"#;

/// ARGV: now. Returns {member, value, expires_at, ...} of the live members.
const MEMBERS: &str = r#"
local out = {}
for _, m in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. ARGV[1], '+inf', 'WITHSCORES')) do
    table.insert(out, m)
end
local res = {}
for i = 1, #out, 2 do
    local v = redis.call('HGET', KEYS[2], out[i])
    if v then
        table.insert(res, out[i])
        table.insert(res, v)
        table.insert(res, out[i + 1])
    end
end
return res
"#;

/// ARGV: now, member. Returns the value if the member was live.
const TAKE_MEMBER: &str = r#"
local score = redis.call('ZSCORE', KEYS[1], ARGV[2])
local v = redis.call('HGET', KEYS[2], ARGV[2])
redis.call('ZREM', KEYS[1], ARGV[2])
redis.call('HDEL', KEYS[2], ARGV[2])
if score and v and tonumber(score) > tonumber(ARGV[1]) then return v end
return false
"#;

/// Whether the one subscription of this process is up (readiness: without it browsers
/// hear of a verify on another node only when their session expires).
#[derive(Debug, Default)]
struct Subscribed(std::sync::atomic::AtomicBool);

/// Aborts the subscription task when the store goes away.
#[derive(Debug)]
struct TaskGuard(tokio::task::JoinHandle<()>);

impl Drop for TaskGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The Redis session store.
pub struct RedisSessionStore {
    conn: ConnectionManager,
    prefix: String,
    channel: String,
    enrollment_changes: tokio::sync::broadcast::Sender<EnrollmentChange>,
    timeout: Duration,
    hub: Arc<EventHub>,
    subscribed: Arc<Subscribed>,
    _events: TaskGuard,
    scripts: Scripts,
}

struct Scripts {
    create: Script,
    end: Script,
    count_failure: Script,
    pending: Script,
    hit: Script,
    add_units: Script,
    put_member: Script,
    members: Script,
    take_member: Script,
}

impl std::fmt::Debug for RedisSessionStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisSessionStore").field("prefix", &self.prefix).finish_non_exhaustive()
    }
}

fn unavailable(e: impl std::fmt::Display) -> SessionStoreError {
    SessionStoreError::Unavailable(e.to_string())
}

fn redis_err(e: RedisError) -> SessionStoreError {
    unavailable(format!("redis: {e}"))
}

impl RedisSessionStore {
    /// A store for `config.url`. Connects lazily and reconnects by itself; spawns the
    /// event subscription task (call inside the Tokio runtime).
    pub fn open(config: &SessionStoreConfig) -> Result<Self, SessionStoreError> {
        Self::open_with_max_channels(config, super::events::DEFAULT_MAX_CHANNELS)
    }

    /// As [`Self::open`], this process holding at most `max_channels` session channels.
    pub fn open_with_max_channels(config: &SessionStoreConfig, max_channels: usize) -> Result<Self, SessionStoreError> {
        let mut info = config.url.as_str().into_connection_info().map_err(redis_err)?;
        if let Some(file) = &config.password_file {
            let password = crate::files::read_bounded_string(file, crate::files::MAX_SECRET_BYTES)
                .map_err(|e| unavailable(e.to_string()))?;
            let settings = info.redis_settings().clone().set_password(password.trim_end_matches(['\r', '\n']));
            info = info.set_redis_settings(settings);
        }
        let client = match &config.ca_file {
            Some(ca) => {
                let root_cert = crate::files::read_bounded(ca, crate::files::MAX_PEM_BYTES)
                    .map_err(|e| unavailable(e.to_string()))?;
                Client::build_with_tls(info, redis::TlsCertificates { client_tls: None, root_cert: Some(root_cert) })
                    .map_err(redis_err)?
            }
            None => Client::open(info).map_err(redis_err)?,
        };
        let manager_config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(config.timeout))
            .set_response_timeout(Some(config.timeout))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_millis(500));
        let conn = ConnectionManager::new_lazy_with_config(client.clone(), manager_config).map_err(redis_err)?;
        let hub = EventHub::new(max_channels);
        let subscribed = Arc::new(Subscribed::default());
        let channel = format!("{}events", config.key_prefix);
        let (enrollment_changes, _) = tokio::sync::broadcast::channel(super::ENROLLMENT_CHANGES_QUEUE);
        let task = tokio::spawn(run_subscription(
            client,
            channel.clone(),
            hub.clone(),
            enrollment_changes.clone(),
            subscribed.clone(),
            config.timeout,
        ));
        let with_clock = |body: &str| Script::new(&format!("{NOW_MS}{body}"));
        Ok(Self {
            conn,
            prefix: config.key_prefix.clone(),
            channel,
            enrollment_changes,
            timeout: config.timeout,
            hub,
            subscribed,
            _events: TaskGuard(task),
            scripts: Scripts {
                create: Script::new(CREATE),
                end: Script::new(END),
                count_failure: Script::new(COUNT_FAILURE),
                pending: Script::new(PENDING),
                hit: with_clock(HIT),
                add_units: with_clock(ADD_UNITS),
                put_member: Script::new(PUT_MEMBER),
                members: Script::new(MEMBERS),
                take_member: Script::new(TAKE_MEMBER),
            },
        })
    }

    fn key(&self, kind: &str, name: &str) -> String {
        format!("{}{kind}:{name}", self.prefix)
    }

    /// Runs one Redis call within the configured timeout: an unreachable Redis makes
    /// requests fail fast with `unavailable`, never hang.
    async fn bounded<T>(&self, f: impl Future<Output = Result<T, RedisError>>) -> Result<T, SessionStoreError> {
        match tokio::time::timeout(self.timeout, f).await {
            Ok(r) => r.map_err(redis_err),
            Err(_) => Err(unavailable("redis call timed out")),
        }
    }
}

/// Reads a session hash; `None` for an empty one (the key does not exist).
fn session_from_hash(h: HashMap<String, String>) -> Result<Option<AuthSession>, SessionStoreError> {
    if h.is_empty() {
        return Ok(None);
    }
    if h.get("v").map(String::as_str) != Some(FORMAT_VERSION) {
        return Err(unavailable(format!("session format version {:?} is not {FORMAT_VERSION}", h.get("v"))));
    }
    let corrupt = |what: &str| unavailable(format!("stored session has a bad {what}"));
    let mut s: AuthSession =
        serde_json::from_str(h.get("session").ok_or_else(|| corrupt("body"))?).map_err(|_| corrupt("body"))?;
    s.status = match h.get("status").map(String::as_str) {
        Some("pending") => SessionStatus::Pending,
        Some("approved") => SessionStatus::Approved,
        Some("rejected") => SessionStatus::Rejected,
        Some("locked") => SessionStatus::Locked,
        _ => return Err(corrupt("status")),
    };
    s.failures = h.get("failures").and_then(|f| f.parse().ok()).ok_or_else(|| corrupt("failure count"))?;
    s.ended_at = h.get("ended_at").map(|t| t.parse().map_err(|_| corrupt("end time"))).transpose()?;
    s.id_token_sealed = h.get("id_token_sealed").cloned();
    Ok(Some(s))
}

fn status_str(end: &SessionEnd) -> (&'static str, &str) {
    match end {
        SessionEnd::Approved { id_token_sealed } => ("approved", id_token_sealed.as_str()),
        SessionEnd::Rejected => ("rejected", ""),
        SessionEnd::Locked => ("locked", ""),
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

/// Prefix of an enrollment change on the events channel (then token ids, one per
/// line). A session id never holds a `:`, so the two kinds of message cannot be taken
/// for each other, and one channel keeps the documented ACL (`&P events`) sufficient.
const ENROLLMENTS_MESSAGE: &str = "enrollments:";

/// The one subscription of this process to the events channel. Reconnects with
/// backoff (also when a heartbeat PING goes unanswered); after each (re)connect and
/// loss every local listener re-reads its session and the enrollment cache forgets
/// everything, so an event published while the subscription was down is not lost.
async fn run_subscription(
    client: Client,
    channel: String,
    hub: Arc<EventHub>,
    enrollment_changes: tokio::sync::broadcast::Sender<EnrollmentChange>,
    subscribed: Arc<Subscribed>,
    timeout: Duration,
) {
    const MIN_BACKOFF: Duration = Duration::from_millis(100);
    const MAX_BACKOFF: Duration = Duration::from_secs(5);
    const HEARTBEAT: Duration = Duration::from_secs(5);
    let mut backoff = MIN_BACKOFF;
    loop {
        let connect = async {
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(&channel).await?;
            Ok::<_, RedisError>(pubsub)
        };
        match tokio::time::timeout(timeout, connect).await {
            Ok(Ok(pubsub)) => {
                tracing::info!(channel = %channel, "redis event subscription up");
                backoff = MIN_BACKOFF;
                subscribed.0.store(true, std::sync::atomic::Ordering::Release);
                hub.notify_all();
                let _ = enrollment_changes.send(EnrollmentChange::All);
                let (mut sink, mut messages) = pubsub.split();
                // A PING now and then notices a connection that died without a FIN.
                let mut heartbeat = tokio::time::interval(HEARTBEAT);
                heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tokio::select! {
                        msg = messages.next() => match msg {
                            Some(msg) => match msg.get_payload::<String>() {
                                Ok(text) => match text.strip_prefix(ENROLLMENTS_MESSAGE) {
                                    Some(ids) => {
                                        let ids = ids.lines().map(str::to_string).collect();
                                        let _ = enrollment_changes.send(EnrollmentChange::TokenIds(ids));
                                    }
                                    None => hub.notify(&text),
                                },
                                // Not text: it may have been a change we cannot read.
                                Err(_) => {
                                    let _ = enrollment_changes.send(EnrollmentChange::All);
                                }
                            },
                            None => break,
                        },
                        _ = heartbeat.tick() => {
                            let ping = tokio::time::timeout(timeout, sink.ping::<redis::Value>()).await;
                            if !matches!(ping, Ok(Ok(_))) {
                                break;
                            }
                        }
                    }
                }
                tracing::warn!(channel = %channel, "redis event subscription lost; reconnecting");
                subscribed.0.store(false, std::sync::atomic::Ordering::Release);
                hub.notify_all();
                let _ = enrollment_changes.send(EnrollmentChange::All);
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "redis event subscription failed; retrying"),
            Err(_) => tracing::warn!("redis event subscription timed out; retrying"),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

#[async_trait]
impl SessionStore for RedisSessionStore {
    /// A round trip, and the event subscription is up.
    async fn ping(&self) -> Result<(), SessionStoreError> {
        let mut conn = self.conn.clone();
        self.bounded(async move { redis::cmd("PING").query_async::<String>(&mut conn).await }).await?;
        if !self.subscribed.0.load(std::sync::atomic::Ordering::Acquire) {
            return Err(unavailable("the redis event subscription is down"));
        }
        Ok(())
    }

    async fn create_session(
        &self,
        session: &AuthSession,
        max_pending: u32,
        now: i64,
        keep_until: i64,
    ) -> Result<bool, SessionStoreError> {
        let json = serde_json::to_string(session).map_err(unavailable)?;
        let ttl = (keep_until - now).max(1);
        let mut conn = self.conn.clone();
        let mut call = self.scripts.create.key(self.key("s", &session.id));
        call.key(self.key("tp", &session.token_id))
            .key(self.key("idx", "sessions"))
            .arg(now)
            .arg(max_pending)
            .arg(session.expires_at)
            .arg(ttl)
            .arg(json)
            .arg(&session.token_id)
            .arg(&session.id)
            .arg(FORMAT_VERSION)
            .arg(session_position(session.created_at, &session.id))
            .arg(SESSION_INDEX_MAX);
        let created: i64 = self.bounded(call.invoke_async(&mut conn)).await?;
        Ok(created == 1)
    }

    async fn list_sessions(
        &self,
        since: i64,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<AuthSession>, SessionStoreError> {
        let index = self.key("idx", "sessions");
        let from = session_position_since(since);
        let start = match after {
            Some(a) if a >= from.as_str() => format!("({a}"),
            _ => format!("[{from}"),
        };
        let mut out = Vec::new();
        let mut start = start;
        // Expired sessions leave their index entries behind: skip (and drop) them and
        // read on until the page is full or the index ends.
        while out.len() < limit {
            let want = limit - out.len();
            let mut conn = self.conn.clone();
            let (key, from) = (index.clone(), start.clone());
            let positions: Vec<String> = self
                .bounded(async move {
                    redis::cmd("ZRANGEBYLEX")
                        .arg(key)
                        .arg(from)
                        .arg("+")
                        .arg("LIMIT")
                        .arg(0)
                        .arg(want)
                        .query_async(&mut conn)
                        .await
                })
                .await?;
            let Some(last) = positions.last() else { break };
            start = format!("({last}");
            let mut pipe = redis::pipe();
            for position in &positions {
                let id = position.split_once(':').map_or("", |(_, id)| id);
                pipe.hgetall(self.key("s", id));
            }
            let mut conn = self.conn.clone();
            let hashes: Vec<HashMap<String, String>> =
                self.bounded(async move { pipe.query_async(&mut conn).await }).await?;
            let mut expired = Vec::new();
            for (position, h) in positions.iter().zip(hashes) {
                match session_from_hash(h)? {
                    Some(session) => out.push(session),
                    None => expired.push(position.clone()),
                }
            }
            if !expired.is_empty() {
                let mut conn = self.conn.clone();
                let key = index.clone();
                let _: i64 = self.bounded(async move { conn.zrem(key, expired).await }).await?;
            }
            if positions.len() < want {
                break;
            }
        }
        Ok(out)
    }

    async fn get_session(&self, id: &str) -> Result<Option<AuthSession>, SessionStoreError> {
        let mut conn = self.conn.clone();
        let key = self.key("s", id);
        let h: HashMap<String, String> = self.bounded(async move { conn.hgetall(key).await }).await?;
        session_from_hash(h)
    }

    async fn pending_sessions(&self, token_id: &str, now: i64) -> Result<Vec<AuthSession>, SessionStoreError> {
        let mut conn = self.conn.clone();
        let mut call = self.scripts.pending.key(self.key("tp", token_id));
        call.arg(now).arg(&self.prefix);
        let hashes: Vec<HashMap<String, String>> = self.bounded(call.invoke_async(&mut conn)).await?;
        let mut out = Vec::new();
        for h in hashes {
            if let Some(s) = session_from_hash(h)?
                && s.is_pending(now)
            {
                out.push(s);
            }
        }
        out.sort_by_key(|s| s.created_at);
        Ok(out)
    }

    async fn end_session(
        &self,
        id: &str,
        end: SessionEnd,
        now: i64,
    ) -> Result<Option<Result<AuthSession, AuthSession>>, SessionStoreError> {
        let (status, id_token) = status_str(&end);
        let mut conn = self.conn.clone();
        let mut call = self.scripts.end.key(self.key("s", id));
        call.arg(now).arg(status).arg(id_token).arg(&self.prefix).arg(&self.channel).arg(id);
        let reply: Option<(i64, HashMap<String, String>)> = self.bounded(call.invoke_async(&mut conn)).await?;
        let Some((won, h)) = reply else { return Ok(None) };
        let Some(session) = session_from_hash(h)? else { return Ok(None) };
        Ok(Some(if won == 1 { Ok(session) } else { Err(session) }))
    }

    async fn count_failure(&self, id: &str, lock_at: u32, now: i64) -> Result<Option<AuthSession>, SessionStoreError> {
        let mut conn = self.conn.clone();
        let mut call = self.scripts.count_failure.key(self.key("s", id));
        call.arg(now).arg(lock_at).arg(&self.prefix).arg(&self.channel).arg(id);
        let reply: Option<HashMap<String, String>> = self.bounded(call.invoke_async(&mut conn)).await?;
        match reply {
            Some(h) => session_from_hash(h),
            None => Ok(None),
        }
    }

    async fn subscribe(&self, id: &str) -> Result<SessionEvents, SessionStoreError> {
        self.hub.subscribe(id)
    }

    async fn publish_enrollment_change(&self, token_ids: &[String]) -> Result<(), SessionStoreError> {
        let mut conn = self.conn.clone();
        let (channel, payload) = (self.channel.clone(), format!("{ENROLLMENTS_MESSAGE}{}", token_ids.join("\n")));
        self.bounded(async move { conn.publish::<_, _, i64>(channel, payload).await }).await.map(drop)
    }

    fn watch_enrollment_changes(&self) -> Option<tokio::sync::broadcast::Receiver<EnrollmentChange>> {
        Some(self.enrollment_changes.subscribe())
    }

    fn hears_enrollment_changes(&self) -> bool {
        self.subscribed.0.load(std::sync::atomic::Ordering::Acquire)
    }

    fn event_channels(&self) -> usize {
        self.hub.len()
    }

    async fn add_units(&self, key: &str, units: u32, window: Duration) -> Result<u32, SessionStoreError> {
        let mut conn = self.conn.clone();
        let mut call = self.scripts.add_units.key(self.key("u", key));
        call.arg(millis(window)).arg(units).arg(crate::ids::new_id());
        let total: i64 = self.bounded(call.invoke_async(&mut conn)).await?;
        Ok(u32::try_from(total).unwrap_or(u32::MAX))
    }

    async fn lock(&self, key: &str, ttl: Duration) -> Result<(), SessionStoreError> {
        let mut conn = self.conn.clone();
        let key = self.key("l", key);
        self.bounded(async move { conn.pset_ex::<_, _, ()>(key, 1, millis(ttl)).await }).await
    }

    async fn lock_remaining(&self, key: &str) -> Result<Option<Duration>, SessionStoreError> {
        let mut conn = self.conn.clone();
        let key = self.key("l", key);
        let ms: i64 = self.bounded(async move { conn.pttl(key).await }).await?;
        Ok((ms > 0).then(|| Duration::from_millis(ms.unsigned_abs())))
    }

    async fn put_nonce(&self, nonce: &str, ttl: Duration) -> Result<(), SessionStoreError> {
        let mut conn = self.conn.clone();
        let key = self.key("n", nonce);
        self.bounded(async move { conn.pset_ex::<_, _, ()>(key, 1, millis(ttl)).await }).await
    }

    async fn take_nonce(&self, nonce: &str) -> Result<bool, SessionStoreError> {
        let mut conn = self.conn.clone();
        let key = self.key("n", nonce);
        let taken: Option<String> = self.bounded(async move { conn.get_del(key).await }).await?;
        Ok(taken.is_some())
    }

    async fn put_value(&self, key: &str, value: &str, ttl: Duration) -> Result<(), SessionStoreError> {
        let mut conn = self.conn.clone();
        let key = self.key("v", key);
        let value = value.to_string();
        self.bounded(async move { conn.pset_ex::<_, _, ()>(key, value, millis(ttl)).await }).await
    }

    async fn take_value(&self, key: &str) -> Result<Option<String>, SessionStoreError> {
        let mut conn = self.conn.clone();
        let key = self.key("v", key);
        self.bounded(async move { conn.get_del(key).await }).await
    }

    async fn get_value(&self, key: &str) -> Result<Option<String>, SessionStoreError> {
        let mut conn = self.conn.clone();
        let key = self.key("v", key);
        self.bounded(async move { conn.get(key).await }).await
    }

    async fn hit(&self, key: &str, limit: u32, window: Duration) -> Result<Result<(), Duration>, SessionStoreError> {
        let mut conn = self.conn.clone();
        let mut call = self.scripts.hit.key(self.key("w", key));
        call.arg(millis(window)).arg(limit).arg(crate::ids::new_id());
        let (allowed, wait_ms): (i64, i64) = self.bounded(call.invoke_async(&mut conn)).await?;
        Ok(if allowed == 1 { Ok(()) } else { Err(Duration::from_millis(wait_ms.max(0).unsigned_abs())) })
    }

    async fn put_member(
        &self,
        key: &str,
        member: &str,
        value: &str,
        expires_at: i64,
        max: usize,
    ) -> Result<(), SessionStoreError> {
        let mut conn = self.conn.clone();
        let mut call = self.scripts.put_member.key(self.key("m", key));
        call.key(self.key("mv", key));
        call.arg(crate::ids::now_unix()).arg(member).arg(value).arg(expires_at).arg(max.max(1));
        let _: i64 = self.bounded(call.invoke_async(&mut conn)).await?;
        Ok(())
    }

    async fn members(&self, key: &str, now: i64) -> Result<Vec<Member>, SessionStoreError> {
        let mut conn = self.conn.clone();
        let mut call = self.scripts.members.key(self.key("m", key));
        call.key(self.key("mv", key));
        call.arg(now);
        let flat: Vec<String> = self.bounded(call.invoke_async(&mut conn)).await?;
        let mut out = Vec::with_capacity(flat.len() / 3);
        for c in flat.chunks_exact(3) {
            let expires_at = c[2].parse::<f64>().map_err(|_| unavailable("bad member score"))? as i64;
            out.push(Member { member: c[0].clone(), value: c[1].clone(), expires_at });
        }
        Ok(out)
    }

    async fn take_member(&self, key: &str, member: &str, now: i64) -> Result<Option<String>, SessionStoreError> {
        let mut conn = self.conn.clone();
        let mut call = self.scripts.take_member.key(self.key("m", key));
        call.key(self.key("mv", key));
        call.arg(now).arg(member);
        self.bounded(call.invoke_async(&mut conn)).await
    }
}
