//! What the probes and the metrics scrape read (docs/protocol.md §11): readiness of the
//! database, the session store and the HSM, the trust lists' freshness, the gauges.

use std::time::{Duration, Instant};

use super::Services;
use crate::metrics::ScrapeGauges;

/// Bound on each readiness probe so `/readyz` never hangs.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// The outcome of one readiness check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    Ok {
        latency_ms: u64,
    },
    /// The check answered with an error (logged, never shown).
    Failed,
    TimedOut,
}

impl Probe {
    pub fn ok(&self) -> bool {
        matches!(self, Probe::Ok { .. })
    }
}

/// The readiness checks, run together.
#[derive(Debug, Clone, Copy)]
pub struct Readiness {
    pub database: Probe,
    pub session_store: Probe,
    pub hsm: Probe,
}

impl Readiness {
    /// Every check answered.
    pub fn ok(&self) -> bool {
        self.database.ok() && self.session_store.ok() && self.hsm.ok()
    }
}

/// The trust lists' freshness as the health endpoint reports it.
#[derive(Debug, Clone)]
pub struct TrustHealth {
    pub configured: bool,
    /// Every list, CRL and VRL present and fresh.
    pub fresh: bool,
    /// Seconds since the oldest document was last fetched successfully.
    pub age_s: Option<i64>,
    /// (name, fresh) of each list, CRL and VRL.
    pub lists: Vec<(String, bool)>,
}

async fn timed<F, E>(f: F) -> Probe
where
    F: std::future::Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    let start = Instant::now();
    match tokio::time::timeout(CHECK_TIMEOUT, f).await {
        Ok(Ok(())) => Probe::Ok { latency_ms: start.elapsed().as_millis() as u64 },
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "health check failed");
            Probe::Failed
        }
        Err(_) => Probe::TimedOut,
    }
}

impl Services {
    /// Pings the database, the session store and the HSM (a round trip), each bounded.
    pub async fn readiness(&self) -> Readiness {
        let (database, session_store, hsm) =
            tokio::join!(timed(self.store.ping()), timed(self.sessions.ping()), timed(self.keys.ping()));
        Readiness { database, session_store, hsm }
    }

    /// The trust lists' freshness at `now`.
    pub fn trust_health(&self, now: i64) -> TrustHealth {
        let status = self.trust.status(now);
        TrustHealth {
            configured: status.configured,
            fresh: status.fresh,
            age_s: status.age_s,
            lists: status.entries.into_iter().map(|e| (e.name, e.fresh)).collect(),
        }
    }

    /// The gauges a metrics scrape reports at `now`.
    pub fn scrape_gauges(&self, now: i64) -> ScrapeGauges {
        let pool = self.keys.pool();
        let trust = self.trust.status(now);
        let mut next_update: Vec<(&'static str, i64)> = Vec::new();
        for e in &trust.entries {
            let Some(at) = e.next_update else { continue };
            match next_update.iter_mut().find(|(k, _)| *k == e.kind) {
                Some((_, earliest)) => *earliest = (*earliest).min(at),
                None => next_update.push((e.kind, at)),
            }
        }
        ScrapeGauges {
            websockets_open: self.browser_channels.open(),
            session_event_channels: self.sessions.event_channels(),
            hsm_queue_depth: pool.queue_depth(),
            hsm_workers: pool.workers(),
            hsm_sessions_reopened: pool.sessions_reopened(),
            hsm_operations: pool.operations(),
            trust_configured: trust.configured,
            trust_fresh: trust.fresh,
            trust_age_s: trust.age_s,
            // Ids, not names: label values without spaces.
            trust_lists: trust.entries.iter().map(|e| (e.id.clone(), e.fresh)).collect(),
            trust_next_update: next_update,
            pending_sessions: crate::metrics::METRICS.pending_sessions.pending(now),
        }
    }
}
