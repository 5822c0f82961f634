//! The push dispatcher: each push is a task that sends, and on a retryable failure
//! waits (1 s, doubling, or the server's `Retry-After` if longer) and sends again,
//! until delivery, a permanent refusal, the end of the session or its expiry.
//! Pushes waiting or retrying are bounded; HTTP requests in flight are bounded.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::{Semaphore, watch};

use super::config::{PushConfig, PushProvider};
use super::fcm::FcmClient;
use super::{AssertionSigner, AuthPush, PushError};
use crate::metrics::METRICS;

/// The first retry waits this long (docs/protocol.md §12 rule 10).
pub const DEFAULT_INITIAL_BACKOFF: Duration = Duration::from_secs(1);
/// Backoff stops doubling here.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// A failed push attempt, as reported to the audit hook. Carries no push token (only
/// its short hash) and no OTP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushFailure {
    pub session_id: String,
    /// 1 for the first send; 0 when the push was never attempted (queue full).
    pub attempt: u32,
    /// HTTP status from FCM or the token endpoint, if any.
    pub status: Option<u16>,
    /// What went wrong, e.g. `FCM answered 404 (UNREGISTERED)`.
    pub reason: String,
    /// First 8 hex digits of SHA-256 of the device's push token.
    pub token_hash: String,
    /// No further attempt will be made.
    pub gave_up: bool,
}

/// Receives every failed attempt (e.g. to write an audit event). Called on the push
/// task; it must not block.
pub type FailureHook = Arc<dyn Fn(PushFailure) + Send + Sync>;

struct Inner {
    client: Option<Arc<FcmClient>>,
    in_flight: Semaphore,
    queued: AtomicUsize,
    max_queued: usize,
    initial_backoff: Duration,
    on_failure: FailureHook,
    shutdown: watch::Sender<bool>,
}

/// Fire-and-forget push delivery. Cheap to clone.
#[derive(Clone)]
pub struct PushQueue {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for PushQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PushQueue")
            .field("client", &self.inner.client)
            .field("queued", &self.queued())
            .finish_non_exhaustive()
    }
}

impl PushQueue {
    /// The queue for the `[push]` configuration: with `provider = "none"` every push is
    /// skipped (the device pulls); with `fcm`, an [`FcmClient`] signing with `signer`.
    pub fn from_config(
        config: &PushConfig,
        signer: Arc<dyn AssertionSigner>,
        on_failure: FailureHook,
    ) -> Result<Self, PushError> {
        let client = match config.provider {
            PushProvider::None => None,
            PushProvider::Fcm => Some(Arc::new(FcmClient::new(config, signer)?)),
        };
        Ok(Self::new(client, config, on_failure, DEFAULT_INITIAL_BACKOFF))
    }

    /// A queue around `client` (`None`: pushes are skipped). `initial_backoff` is
    /// [`DEFAULT_INITIAL_BACKOFF`] outside tests.
    pub fn new(
        client: Option<Arc<FcmClient>>,
        config: &PushConfig,
        on_failure: FailureHook,
        initial_backoff: Duration,
    ) -> Self {
        let (shutdown, _) = watch::channel(false);
        Self {
            inner: Arc::new(Inner {
                client,
                in_flight: Semaphore::new(config.max_in_flight.max(1)),
                queued: AtomicUsize::new(0),
                max_queued: config.max_queued.max(1),
                initial_backoff,
                on_failure,
                shutdown,
            }),
        }
    }

    /// Whether pushes are actually sent (`provider = "fcm"`).
    pub fn is_enabled(&self) -> bool {
        self.inner.client.is_some()
    }

    /// The FCM client, if push is enabled.
    pub fn client(&self) -> Option<&Arc<FcmClient>> {
        self.inner.client.as_ref()
    }

    /// Pushes currently waiting, sending or retrying.
    pub fn queued(&self) -> usize {
        self.inner.queued.load(Ordering::Relaxed)
    }

    /// Stops every push task at its next wait; later pushes are skipped.
    pub fn shutdown(&self) {
        self.inner.shutdown.send_replace(true);
    }

    /// Starts delivering `message` in the background and returns at once. Before each
    /// attempt `still_pending` is asked whether the session is still waiting for the
    /// device; when it answers `false` the push stops quietly.
    pub fn push<F, Fut>(&self, message: AuthPush, still_pending: F)
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = bool> + Send + 'static,
    {
        let Some(client) = self.inner.client.clone() else {
            return;
        };
        if *self.inner.shutdown.borrow() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::error!(session_id = %message.session_id, "push dropped: no async runtime");
            return;
        };
        let taken = self
            .inner
            .queued
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < self.inner.max_queued).then_some(n + 1));
        if taken.is_err() {
            tracing::error!(
                session_id = %message.session_id,
                token_hash = %message.token_hash(),
                max_queued = self.inner.max_queued,
                "push dropped: the push queue is full"
            );
            (self.inner.on_failure)(PushFailure {
                session_id: message.session_id.clone(),
                attempt: 0,
                status: None,
                reason: "the push queue is full".into(),
                token_hash: message.token_hash(),
                gave_up: true,
            });
            return;
        }
        let slot = QueueSlot(self.inner.clone());
        runtime.spawn(async move {
            deliver(&slot.0, &client, message, still_pending).await;
            drop(slot);
        });
    }
}

/// Frees a queue place when its task ends, however it ends.
struct QueueSlot(Arc<Inner>);

impl Drop for QueueSlot {
    fn drop(&mut self) {
        self.0.queued.fetch_sub(1, Ordering::AcqRel);
    }
}

async fn deliver<F, Fut>(inner: &Inner, client: &FcmClient, message: AuthPush, still_pending: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = bool>,
{
    let mut shutdown = inner.shutdown.subscribe();
    let token_hash = message.token_hash();
    let session_id = message.session_id.as_str();
    let mut backoff = inner.initial_backoff;
    let mut attempt: u32 = 0;
    loop {
        if *shutdown.borrow() {
            tracing::debug!(session_id, attempt, "push stopped: shutting down");
            return;
        }
        if !still_pending().await {
            tracing::debug!(session_id, attempt, "push stopped: the session is no longer pending");
            return;
        }
        attempt += 1;
        METRICS.push_attempts.fetch_add(1, Ordering::Relaxed);
        let result = {
            let Ok(_permit) = inner.in_flight.acquire().await else {
                return;
            };
            client.send(&message).await
        };
        let error = match result {
            Ok(name) => {
                tracing::info!(session_id, attempt, %token_hash, fcm_message = %name, "push delivered");
                return;
            }
            Err(e) => e,
        };
        METRICS.push_failures.fetch_add(1, Ordering::Relaxed);
        let wait = backoff.max(error.retry_after().unwrap_or_default());
        let expired = time_left(message.expires_at) <= wait;
        let gave_up = error.is_permanent() || expired;
        let reason = if gave_up && !error.is_permanent() {
            format!("{error}; the session expires before the next retry")
        } else {
            error.to_string()
        };
        if gave_up {
            METRICS.push_gave_up.fetch_add(1, Ordering::Relaxed);
            tracing::error!(session_id, attempt, %token_hash, status = ?error.status(), %reason, "push failed; giving up");
        } else {
            tracing::warn!(session_id, attempt, %token_hash, status = ?error.status(), %reason, retry_in_ms = wait.as_millis() as u64, "push failed; will retry");
        }
        (inner.on_failure)(PushFailure {
            session_id: session_id.to_owned(),
            attempt,
            status: error.status(),
            reason,
            token_hash: token_hash.clone(),
            gave_up,
        });
        if gave_up {
            return;
        }
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Time from now until `expires_at` (Unix seconds); zero when past.
fn time_left(expires_at: i64) -> Duration {
    let Ok(at) = u64::try_from(expires_at) else {
        return Duration::ZERO;
    };
    let Some(at) = UNIX_EPOCH.checked_add(Duration::from_secs(at)) else {
        return Duration::ZERO;
    };
    at.duration_since(SystemTime::now()).unwrap_or(Duration::ZERO)
}
