//! Per-session event channels of one process: the browser channels waiting for their
//! session to end. Both session stores fan a session's end out through an [`EventHub`].
//!
//! A channel exists only while someone listens: the last [`SessionEvents`] dropped
//! removes it, and the hub holds at most `max` channels, so the map is as large as the
//! number of open (authenticated) browser channels and never more.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::broadcast;

use super::SessionStoreError;

/// A change to enrollments announced by a node (docs/architecture.md, "Enrollment
/// cache"): what each process's enrollment cache must forget.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnrollmentChange {
    /// The enrollments of these token ids changed (enrolled, suspended, activated,
    /// revoked or deleted).
    TokenIds(Vec<String>),
    /// Changes may have been missed (the subscription went down or came up): forget all.
    All,
}

/// Changes heard at most, queued, before a slow listener lags (and then forgets all).
pub const ENROLLMENT_CHANGES_QUEUE: usize = 1024;

/// Channels a process holds at most unless told otherwise (the default of
/// `limits.websocket_max_open`, which bounds the browser channels).
pub const DEFAULT_MAX_CHANNELS: usize = 20_000;

/// Channels of this process, keyed by session id.
#[derive(Debug)]
pub struct EventHub {
    channels: Mutex<HashMap<String, broadcast::Sender<()>>>,
    max: usize,
}

impl EventHub {
    /// A hub holding at most `max` channels.
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(Self { channels: Mutex::new(HashMap::new()), max: max.max(1) })
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, HashMap<String, broadcast::Sender<()>>>, SessionStoreError> {
        self.channels.lock().map_err(|_| SessionStoreError::Unavailable("poisoned lock".into()))
    }

    /// Listens for the ends of session `id`; `Full` when `max` other sessions have
    /// listeners already.
    pub fn subscribe(self: &Arc<Self>, id: &str) -> Result<SessionEvents, SessionStoreError> {
        let mut channels = self.lock()?;
        let rx = match channels.get(id) {
            Some(tx) => tx.subscribe(),
            None if channels.len() >= self.max => return Err(SessionStoreError::Full),
            None => {
                let (tx, rx) = broadcast::channel(4);
                channels.insert(id.to_string(), tx);
                rx
            }
        };
        Ok(SessionEvents { rx: Some(rx), id: id.to_string(), hub: self.clone() })
    }

    /// Wakes the listeners of session `id`, if any.
    pub fn notify(&self, id: &str) {
        if let Ok(channels) = self.channels.lock()
            && let Some(tx) = channels.get(id)
        {
            let _ = tx.send(());
        }
    }

    /// Wakes every listener (events may have been missed: each re-reads its session).
    pub fn notify_all(&self) {
        if let Ok(channels) = self.channels.lock() {
            for tx in channels.values() {
                let _ = tx.send(());
            }
        }
    }

    /// Channels held now (the `symbolon_session_event_channels` gauge).
    pub fn len(&self) -> usize {
        self.channels.lock().map_or(0, |c| c.len())
    }

    /// No channel is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A listener on one session's channel. Dropping the last listener of a session
/// removes its channel.
#[derive(Debug)]
pub struct SessionEvents {
    rx: Option<broadcast::Receiver<()>>,
    id: String,
    hub: Arc<EventHub>,
}

impl SessionEvents {
    /// Waits for the next event: `Ok` when the session may have changed (lagging
    /// counts as a change); `Closed` when the channel is gone.
    pub async fn recv(&mut self) -> Result<(), broadcast::error::RecvError> {
        let Some(rx) = self.rx.as_mut() else { return Err(broadcast::error::RecvError::Closed) };
        match rx.recv().await {
            Ok(()) | Err(broadcast::error::RecvError::Lagged(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

impl Drop for SessionEvents {
    fn drop(&mut self) {
        // Our receiver goes first, so the count below no longer includes it.
        drop(self.rx.take());
        if let Ok(mut channels) = self.hub.channels.lock()
            && channels.get(&self.id).is_some_and(|tx| tx.receiver_count() == 0)
        {
            channels.remove(&self.id);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_last_listener_removes_the_channel() {
        let hub = EventHub::new(10);
        let a = hub.subscribe("s1").unwrap();
        let mut b = hub.subscribe("s1").unwrap();
        let c = hub.subscribe("s2").unwrap();
        assert_eq!(hub.len(), 2);
        drop(a);
        assert_eq!(hub.len(), 2, "s1 still has a listener");
        hub.notify("s1");
        b.recv().await.unwrap();
        drop(b);
        drop(c);
        assert!(hub.is_empty());
    }

    #[test]
    fn the_hub_holds_at_most_max_channels() {
        let hub = EventHub::new(2);
        let _a = hub.subscribe("s1").unwrap();
        let b = hub.subscribe("s2").unwrap();
        assert!(matches!(hub.subscribe("s3"), Err(SessionStoreError::Full)));
        // A second listener of a session already listened to needs no new channel.
        let _a2 = hub.subscribe("s1").unwrap();
        drop(b);
        let _c = hub.subscribe("s3").unwrap();
        assert_eq!(hub.len(), 2);
    }
}
