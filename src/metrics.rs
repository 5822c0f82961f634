//! Prometheus metrics (docs/protocol.md §11), exposed as text on the admin listener.
//!
//! One process-wide set of counters and histograms made of atomics: recording is a
//! few relaxed atomic adds, so the HSM pool and the request path never take a lock
//! for it. Label values come from fixed sets (operations, key purposes, outcomes,
//! error codes) or from route templates; never a token id, device id or other
//! identifier.

use std::collections::HashMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, RwLock};
use std::time::Duration;

pub use crate::keys::HsmOp;
use crate::store::KeyPurpose;

/// Upper bounds (seconds) of the latency histograms' buckets.
const BUCKETS: [f64; 14] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// A latency histogram of atomics: one count per bucket (not cumulative; summed when
/// encoded), the sum in nanoseconds and the total count.
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; BUCKETS.len()],
    sum_ns: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    /// Records one observation.
    pub fn observe(&self, elapsed: Duration) {
        let secs = elapsed.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|b| secs <= *b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.sum_ns.fetch_add(u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX), Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    fn encode(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0;
        for (bound, n) in BUCKETS.iter().zip(&self.buckets) {
            cumulative += n.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {cumulative}");
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {count}");
        let sum = self.sum_ns.load(Ordering::Relaxed) as f64 / 1e9;
        let _ = writeln!(out, "{name}_sum{{{labels}}} {sum}");
        let _ = writeln!(out, "{name}_count{{{labels}}} {count}");
    }
}

/// Key purposes plus "no key" (ping, catalog), as label values.
const PURPOSES: [&str; 8] = ["otp", "jwt", "saml", "data", "audit", "pairwise", "saml-rsa", "none"];

fn purpose_index(purpose: Option<KeyPurpose>) -> usize {
    match purpose {
        Some(KeyPurpose::Otp) => 0,
        Some(KeyPurpose::Jwt) => 1,
        Some(KeyPurpose::Saml) => 2,
        Some(KeyPurpose::Data) => 3,
        Some(KeyPurpose::Audit) => 4,
        Some(KeyPurpose::Pairwise) => 5,
        Some(KeyPurpose::SamlRsa) => 6,
        None => 7,
    }
}

/// Kinds of HSM failure, as label values.
const HSM_ERRORS: [&str; 3] = ["overloaded", "unavailable", "error"];

/// Per (operation, purpose): latency; per (operation, error kind): failures.
#[derive(Debug, Default)]
pub struct HsmMetrics {
    latency: [[Histogram; PURPOSES.len()]; HsmOp::ALL.len()],
    errors: [[AtomicU64; HSM_ERRORS.len()]; HsmOp::ALL.len()],
}

impl HsmMetrics {
    /// Records one finished operation and, when it failed, its kind of failure.
    pub fn record(
        &self,
        op: HsmOp,
        purpose: Option<KeyPurpose>,
        elapsed: Duration,
        error: Option<&crate::keys::HsmError>,
    ) {
        let i = op as usize;
        self.latency[i][purpose_index(purpose)].observe(elapsed);
        if let Some(e) = error {
            let kind = match e {
                crate::keys::HsmError::Overloaded => 0,
                crate::keys::HsmError::Unavailable => 1,
                _ => 2,
            };
            self.errors[i][kind].fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// How an authentication session ended: each session ends once, counted by the node
/// that saw it end (verify) or, for `Expired`, by the node that created it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionOutcome {
    Approved,
    Rejected,
    Expired,
    Locked,
}

const SESSION_OUTCOMES: [&str; 4] = ["approved", "rejected", "expired", "locked"];

/// Sessions this node created that have not ended here yet, with their expiry: the
/// pending gauge, and the sessions to look at when they expire.
#[derive(Debug, Default)]
pub struct PendingSessions {
    by_id: Mutex<HashMap<String, i64>>,
}

impl PendingSessions {
    /// A session created on this node.
    pub fn created(&self, id: &str, expires_at: i64) {
        if let Ok(mut m) = self.by_id.lock() {
            m.insert(id.to_string(), expires_at);
        }
    }

    /// A session ended on this node (approved, rejected or locked).
    pub fn ended(&self, id: &str) {
        if let Ok(mut m) = self.by_id.lock() {
            m.remove(id);
        }
    }

    /// Sessions not yet expired at `now`.
    pub fn pending(&self, now: i64) -> usize {
        self.by_id.lock().map(|m| m.values().filter(|e| **e > now).count()).unwrap_or(0)
    }

    /// Removes and returns the sessions expired at `now`; the caller checks in the
    /// session store whether each ended elsewhere (another node) or expired.
    pub fn take_expired(&self, now: i64) -> Vec<String> {
        let Ok(mut m) = self.by_id.lock() else { return Vec::new() };
        let expired: Vec<String> = m.iter().filter(|(_, e)| **e <= now).map(|(id, _)| id.clone()).collect();
        for id in &expired {
            m.remove(id);
        }
        expired
    }
}

/// OpenID Connect events (docs/protocol.md §14.8), counted by outcome; never by client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OidcEvent {
    CodeIssued,
    TokenIssued,
    CodeReplayed,
    ClientAuthFailed,
    /// A token request refused for another reason (bad grant, malformed request).
    TokenRefused,
    Cancelled,
}

const OIDC_EVENTS: [&str; 6] =
    ["code_issued", "token_issued", "code_replayed", "client_auth_failed", "token_refused", "cancelled"];

/// Per (listener, method, route template, status): count and latency.
type HttpKey = (&'static str, String, String, u16);

/// Every metric of the process.
#[derive(Debug, Default)]
pub struct Metrics {
    /// HTTP requests. A read lock and a map look-up per request; the write lock only
    /// for the first request of a (route, status) pair, of which there are few.
    http: RwLock<HashMap<HttpKey, Arc<Histogram>>>,
    pub hsm: HsmMetrics,
    /// Authentication sessions created on this node.
    pub sessions_created: AtomicU64,
    sessions: [AtomicU64; SESSION_OUTCOMES.len()],
    oidc: [AtomicU64; OIDC_EVENTS.len()],
    /// Sessions created here and not ended here yet.
    pub pending_sessions: PendingSessions,
    /// Token ids locked out after too many failures.
    pub lockouts: AtomicU64,
    /// Push deliveries tried, and those that failed (each failed attempt counts).
    pub push_attempts: AtomicU64,
    pub push_failures: AtomicU64,
    /// Pushes given up (permanent error or the session expires before a retry).
    pub push_gave_up: AtomicU64,
    /// Enrollments by result: `ok` or the error code.
    enrollments: RwLock<HashMap<&'static str, Arc<AtomicU64>>>,
}

/// The process-wide metrics.
pub static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::default);

impl Metrics {
    /// Records one HTTP request. `route` is the matched route template, never a raw path.
    pub fn http_request(&self, listener: &'static str, method: &str, route: &str, status: u16, elapsed: Duration) {
        let key = (listener, method.to_string(), route.to_string(), status);
        let found = self.http.read().ok().and_then(|m| m.get(&key).cloned());
        let series = match found {
            Some(s) => s,
            None => match self.http.write() {
                Ok(mut m) => m.entry(key).or_default().clone(),
                Err(_) => return,
            },
        };
        series.observe(elapsed);
    }

    /// Counts a session created on this node.
    pub fn session_created(&self, id: &str, expires_at: i64) {
        self.sessions_created.fetch_add(1, Ordering::Relaxed);
        self.pending_sessions.created(id, expires_at);
    }

    /// Counts a session ended (once per session).
    pub fn session(&self, outcome: SessionOutcome) {
        self.sessions[outcome as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts an OpenID Connect event.
    pub fn oidc(&self, event: OidcEvent) {
        self.oidc[event as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts an enrollment by result (`ok` or a stable error code).
    pub fn enrollment(&self, result: &'static str) {
        let found = self.enrollments.read().ok().and_then(|m| m.get(result).cloned());
        let counter = match found {
            Some(c) => c,
            None => match self.enrollments.write() {
                Ok(mut m) => m.entry(result).or_default().clone(),
                Err(_) => return,
            },
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// The Prometheus text exposition (format 0.0.4). `gauges` are values read at
    /// scrape time (queue depth, trust list age, ...).
    pub fn encode(&self, gauges: &ScrapeGauges) -> String {
        let mut out = String::with_capacity(16 * 1024);
        header(&mut out, "symbolon_build_info", "gauge", "Version of the running binary.");
        let _ = writeln!(out, "symbolon_build_info{{version=\"{}\"}} 1", env!("CARGO_PKG_VERSION"));

        header(
            &mut out,
            "symbolon_http_request_duration_seconds",
            "histogram",
            "HTTP requests by listener, method, route template and status.",
        );
        if let Ok(http) = self.http.read() {
            let mut series: Vec<_> = http.iter().collect();
            series.sort_by(|a, b| a.0.cmp(b.0));
            for ((listener, method, route, status), h) in series {
                let labels = format!(
                    "listener=\"{listener}\",method=\"{}\",route=\"{}\",status=\"{status}\"",
                    escape(method),
                    escape(route)
                );
                h.encode(&mut out, "symbolon_http_request_duration_seconds", &labels);
            }
        }

        header(
            &mut out,
            "symbolon_hsm_operation_duration_seconds",
            "histogram",
            "HSM operations by operation, PKCS#11 mechanism and key purpose (failures included).",
        );
        for op in HsmOp::ALL {
            let (name, mechanism) = op.labels();
            for (p, purpose) in PURPOSES.iter().enumerate() {
                let h = &self.hsm.latency[op as usize][p];
                if h.count.load(Ordering::Relaxed) == 0 {
                    continue;
                }
                let labels = format!("operation=\"{name}\",mechanism=\"{mechanism}\",purpose=\"{purpose}\"");
                h.encode(&mut out, "symbolon_hsm_operation_duration_seconds", &labels);
            }
        }
        header(
            &mut out,
            "symbolon_hsm_errors_total",
            "counter",
            "Failed HSM operations by operation and kind (overloaded, unavailable, error).",
        );
        for op in HsmOp::ALL {
            let (name, mechanism) = op.labels();
            for (k, kind) in HSM_ERRORS.iter().enumerate() {
                let n = self.hsm.errors[op as usize][k].load(Ordering::Relaxed);
                let _ = writeln!(
                    out,
                    "symbolon_hsm_errors_total{{operation=\"{name}\",mechanism=\"{mechanism}\",kind=\"{kind}\"}} {n}"
                );
            }
        }
        gauge(
            &mut out,
            "symbolon_websockets_open",
            "Browser WebSockets open on this node (authenticated or waiting for the hello).",
            gauges.websockets_open as f64,
        );
        gauge(
            &mut out,
            "symbolon_session_event_channels",
            "Session event channels this node holds (one per session with an authenticated browser channel).",
            gauges.session_event_channels as f64,
        );
        gauge(&mut out, "symbolon_hsm_queue_depth", "HSM jobs waiting for a worker.", gauges.hsm_queue_depth as f64);
        gauge(
            &mut out,
            "symbolon_hsm_workers",
            "HSM worker threads (one logged-in session each).",
            gauges.hsm_workers as f64,
        );
        header(
            &mut out,
            "symbolon_hsm_sessions_reopened_total",
            "counter",
            "HSM sessions replaced after the token dropped them.",
        );
        let _ = writeln!(out, "symbolon_hsm_sessions_reopened_total {}", gauges.hsm_sessions_reopened);
        header(
            &mut out,
            "symbolon_hsm_operations_total",
            "counter",
            "Operations the HSM session pool's workers ran, by operation and PKCS#11 mechanism.",
        );
        for (op, n) in &gauges.hsm_operations {
            let (name, mechanism) = op.labels();
            let _ =
                writeln!(out, "symbolon_hsm_operations_total{{operation=\"{name}\",mechanism=\"{mechanism}\"}} {n}");
        }

        counter(
            &mut out,
            "symbolon_auth_sessions_created_total",
            "Authentication sessions created on this node.",
            &self.sessions_created,
        );
        header(
            &mut out,
            "symbolon_auth_sessions_ended_total",
            "counter",
            "Authentication sessions ended, by outcome (approved, rejected, expired, locked); each session once.",
        );
        for (i, outcome) in SESSION_OUTCOMES.iter().enumerate() {
            let n = self.sessions[i].load(Ordering::Relaxed);
            let _ = writeln!(out, "symbolon_auth_sessions_ended_total{{outcome=\"{outcome}\"}} {n}");
        }
        header(
            &mut out,
            "symbolon_oidc_events_total",
            "counter",
            "OpenID Connect codes and tokens issued, code replays, client authentication failures and refusals.",
        );
        for (i, event) in OIDC_EVENTS.iter().enumerate() {
            let n = self.oidc[i].load(Ordering::Relaxed);
            let _ = writeln!(out, "symbolon_oidc_events_total{{event=\"{event}\"}} {n}");
        }
        gauge(
            &mut out,
            "symbolon_auth_sessions_pending",
            "Sessions created on this node, not expired and not ended on this node.",
            gauges.pending_sessions as f64,
        );
        counter(&mut out, "symbolon_lockouts_total", "Token ids locked out after repeated failures.", &self.lockouts);
        counter(&mut out, "symbolon_push_attempts_total", "Push deliveries attempted.", &self.push_attempts);
        counter(&mut out, "symbolon_push_failures_total", "Push delivery attempts that failed.", &self.push_failures);
        counter(
            &mut out,
            "symbolon_push_gave_up_total",
            "Pushes abandoned (permanent error or session expiry).",
            &self.push_gave_up,
        );

        header(
            &mut out,
            "symbolon_enrollments_total",
            "counter",
            "Enrollment requests by result (ok or the error code).",
        );
        if let Ok(enrollments) = self.enrollments.read() {
            let mut series: Vec<_> = enrollments.iter().collect();
            series.sort_by(|a, b| a.0.cmp(b.0));
            for (result, n) in series {
                let _ =
                    writeln!(out, "symbolon_enrollments_total{{result=\"{result}\"}} {}", n.load(Ordering::Relaxed));
            }
        }

        gauge(
            &mut out,
            "symbolon_trust_configured",
            "1 when trust lists are configured.",
            f64::from(u8::from(gauges.trust_configured)),
        );
        gauge(
            &mut out,
            "symbolon_trust_fresh",
            "1 when every trust list, CRL and VRL is fresh.",
            f64::from(u8::from(gauges.trust_fresh)),
        );
        if let Some(age) = gauges.trust_age_s {
            gauge(
                &mut out,
                "symbolon_trust_age_seconds",
                "Seconds since the oldest trust document was fetched.",
                age as f64,
            );
        }
        header(
            &mut out,
            "symbolon_trust_list_fresh",
            "gauge",
            "Freshness of each trust document by list id (1 fresh, 0 stale).",
        );
        for (id, fresh) in &gauges.trust_lists {
            let _ = writeln!(out, "symbolon_trust_list_fresh{{list=\"{}\"}} {}", escape(id), u8::from(*fresh));
        }
        header(
            &mut out,
            "symbolon_trust_next_update_timestamp_seconds",
            "gauge",
            "Earliest next_update (Unix time) of the trust documents of each kind (governance, scheme, tsl, vrl, crl).",
        );
        for (kind, at) in &gauges.trust_next_update {
            let _ = writeln!(out, "symbolon_trust_next_update_timestamp_seconds{{kind=\"{kind}\"}} {at}");
        }
        process_metrics(&mut out);
        out
    }
}

/// Values read when scraped.
#[derive(Debug, Default)]
pub struct ScrapeGauges {
    pub websockets_open: usize,
    pub session_event_channels: usize,
    pub hsm_queue_depth: usize,
    pub hsm_workers: usize,
    pub hsm_sessions_reopened: u64,
    /// Operations the pool ran, by kind.
    pub hsm_operations: Vec<(HsmOp, u64)>,
    pub trust_configured: bool,
    pub trust_fresh: bool,
    pub trust_age_s: Option<i64>,
    /// (list id, fresh) of each trust document.
    pub trust_lists: Vec<(String, bool)>,
    /// (kind, earliest next_update) of the trust documents.
    pub trust_next_update: Vec<(&'static str, i64)>,
    /// Sessions created on this node and pending.
    pub pending_sessions: usize,
}

/// The standard `process_*` metrics of this process, read from `/proc/self` (Linux);
/// a value that cannot be read is left out.
fn process_metrics(out: &mut String) {
    let tick = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).ok().flatten().filter(|t| *t > 0);
    let page = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE).ok().flatten().filter(|p| *p > 0);
    // Fields after the command name (which may hold spaces and parentheses).
    let stat = std::fs::read_to_string("/proc/self/stat").ok();
    let fields: Vec<&str> = stat
        .as_deref()
        .and_then(|s| s.rsplit_once(')'))
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    // stat(5): utime is field 14, stime 15, starttime 22, vsize 23, rss 24; `fields[0]` is field 3.
    let field = |n: usize| fields.get(n - 3).and_then(|v| v.parse::<u64>().ok());
    if let (Some(tick), Some(u), Some(s)) = (tick, field(14), field(15)) {
        let cpu = (u + s) as f64 / tick as f64;
        header(out, "process_cpu_seconds_total", "counter", "Total user and system CPU time spent in seconds.");
        let _ = writeln!(out, "process_cpu_seconds_total {cpu}");
    }
    if let (Some(page), Some(rss)) = (page, field(24)) {
        gauge(out, "process_resident_memory_bytes", "Resident memory size in bytes.", (rss * page as u64) as f64);
    }
    if let Some(vsize) = field(23) {
        gauge(out, "process_virtual_memory_bytes", "Virtual memory size in bytes.", vsize as f64);
    }
    let boot = std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("btime ").and_then(|v| v.trim().parse::<u64>().ok())));
    if let (Some(tick), Some(boot), Some(start)) = (tick, boot, field(22)) {
        let at = boot as f64 + start as f64 / tick as f64;
        gauge(out, "process_start_time_seconds", "Start time of the process since the Unix epoch in seconds.", at);
    }
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        gauge(out, "process_open_fds", "Number of open file descriptors.", fds.count() as f64);
    }
    if let Ok((soft, _)) = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE) {
        gauge(out, "process_max_fds", "Maximum number of open file descriptors.", soft as f64);
    }
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn gauge(out: &mut String, name: &str, help: &str, value: f64) {
    header(out, name, "gauge", help);
    let _ = writeln!(out, "{name} {value}");
}

fn counter(out: &mut String, name: &str, help: &str, value: &AtomicU64) {
    header(out, name, "counter", help);
    let _ = writeln!(out, "{name} {}", value.load(Ordering::Relaxed));
}

/// Escapes a label value (backslash, double quote, newline).
fn escape(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_is_cumulative() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(300));
        h.observe(Duration::from_millis(30));
        h.observe(Duration::from_secs(60));
        let mut out = String::new();
        h.encode(&mut out, "x", "a=\"b\"");
        assert!(out.contains("x_bucket{a=\"b\",le=\"0.0005\"} 1\n"), "{out}");
        assert!(out.contains("x_bucket{a=\"b\",le=\"0.05\"} 2\n"), "{out}");
        assert!(out.contains("x_bucket{a=\"b\",le=\"10\"} 2\n"), "{out}");
        assert!(out.contains("x_bucket{a=\"b\",le=\"+Inf\"} 3\n"), "{out}");
        assert!(out.contains("x_count{a=\"b\"} 3\n"), "{out}");
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
