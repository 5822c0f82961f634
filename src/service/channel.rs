//! The browser's WebSocket channel (docs/protocol.md §5.2), its domain side: who may open
//! one (id shape, per-IP rate, the node's capacity, origin), and authentication by the
//! hello's browser token before the node holds anything for the session.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::Services;
use super::auth::BrowserView;
use crate::error::{ApiError, ErrorCode};
use crate::store::SessionEvents;

/// Browser WebSockets open on this node, at most `max`.
#[derive(Debug)]
pub struct OpenChannels {
    open: AtomicUsize,
    max: usize,
}

impl OpenChannels {
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(Self { open: AtomicUsize::new(0), max: max.max(1) })
    }

    /// A place for one more socket, unless `max` are open.
    fn try_open(self: &Arc<Self>) -> Option<ChannelPermit> {
        self.open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < self.max).then_some(n + 1))
            .ok()
            .map(|_| ChannelPermit(self.clone()))
    }

    /// Sockets open now (the `symbolon_websockets_open` gauge).
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }
}

/// One open socket's place; freed when dropped (the socket task ended or the upgrade
/// never completed).
#[derive(Debug)]
pub struct ChannelPermit(Arc<OpenChannels>);

impl Drop for ChannelPermit {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// An authenticated browser channel: what to send first, and the session's events.
#[derive(Debug)]
pub struct AttachedChannel {
    pub view: BrowserView,
    pub expires_at: i64,
    pub events: SessionChanges,
}

/// A session's change notifications, for as long as the channel is open.
#[derive(Debug)]
pub struct SessionChanges(SessionEvents);

impl SessionChanges {
    /// Waits until the session may have changed; `false` once the notifications ended
    /// (the store dropped the channel).
    pub async fn changed(&mut self) -> bool {
        self.0.recv().await.is_ok()
    }
}

fn no_such_session() -> ApiError {
    ApiError::new(ErrorCode::NotFound, "no such session")
}

impl Services {
    /// Before a WebSocket upgrade: a path id that cannot be a session id is refused
    /// (`404 not_found`; its shape is public, so this is no session oracle), then the
    /// per-IP rate (`429 rate_limited`), the node's capacity (`503 overloaded`) and
    /// the `Origin` of a known session (§12 rule 3). A well-formed unknown id still
    /// upgrades (§12 rule 7). The permit is held for the socket's life.
    pub async fn admit_browser_channel(
        &self,
        id: &str,
        origin: Option<&str>,
        ip: IpAddr,
    ) -> Result<ChannelPermit, ApiError> {
        if !crate::ids::is_id(id) {
            return Err(no_such_session());
        }
        self.rate_limit(&format!("ip-ws:{ip}"), self.settings.limits.websocket_per_ip_per_minute).await?;
        let permit = self
            .browser_channels
            .try_open()
            .ok_or_else(|| ApiError::new(ErrorCode::Overloaded, "too many browser channels are open, retry shortly"))?;
        if let Some(o) = origin
            && let Some(session) = self.sessions.get_session(id).await?
            && let Some(service) = self.service(&session.service_id)
        {
            self.check_origin(&service, Some(o))?;
        }
        Ok(permit)
    }

    /// After the hello: the session must exist and `browser_token` be its token
    /// (compared in constant time) before the node listens for the session's events,
    /// so an unauthenticated socket holds no channel. `404 not_found` otherwise.
    pub async fn attach_browser_channel(
        &self,
        id: &str,
        browser_token: &str,
        now: i64,
    ) -> Result<AttachedChannel, ApiError> {
        self.browser_session(id, browser_token, now).await?;
        let events = self.sessions.subscribe(id).await?;
        // Read again after subscribing, so an end in between is not missed.
        let session = self.sessions.get_session(id).await?.ok_or_else(no_such_session)?;
        let view = self.browser_view(&session, now).await?;
        Ok(AttachedChannel { view, expires_at: session.expires_at, events: SessionChanges(events) })
    }

    /// What the browser sees of a session now (re-read after an event).
    pub async fn browser_update(&self, id: &str, now: i64) -> Result<BrowserView, ApiError> {
        let session = self.sessions.get_session(id).await?.ok_or_else(no_such_session)?;
        self.browser_view(&session, now).await
    }
}
