//! Counts the sessions this node created that expired without an answer
//! (`symbolon_auth_sessions_ended_total{outcome="expired"}`): each is looked up in the
//! session store once it expired, so a session that another node ended is not counted
//! twice.

use std::time::Duration;

use super::Services;
use crate::metrics::{METRICS, SessionOutcome};
use crate::store::SessionStatus;

/// How often expired sessions are looked at (well below the default browser grace of
/// 60 s, during which an expired session is still kept).
const SWEEP_EVERY: Duration = Duration::from_secs(5);

impl Services {
    /// Looks at the sessions created here that expired by `now`: those still pending in
    /// the session store (or already gone from it) expired; those that ended on another
    /// node were counted there.
    pub async fn count_expired_sessions(&self, now: i64) {
        for id in METRICS.pending_sessions.take_expired(now) {
            match self.sessions.get_session(&id).await {
                Ok(Some(s)) if s.status != SessionStatus::Pending => {}
                Ok(_) => METRICS.session(SessionOutcome::Expired),
                Err(e) => tracing::debug!(error = %e, "cannot read an expired session for the metrics"),
            }
        }
    }

    /// Runs [`Services::count_expired_sessions`] every few seconds until aborted.
    pub fn spawn_expiry_counter(self: &std::sync::Arc<Self>) -> tokio::task::JoinHandle<()> {
        let services = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(SWEEP_EVERY);
            loop {
                tick.tick().await;
                services.count_expired_sessions(crate::ids::now_unix()).await;
            }
        })
    }
}
