//! The session pool. PKCS#11 calls block, so a fixed set of worker threads each owns
//! one logged-in session and takes jobs from a bounded queue. Callers await the result
//! with a deadline and get `Overloaded` when the queue is full or the deadline passes.
//! A worker whose session was invalidated (token restart, `C_Finalize` from outside,
//! sessions closed) opens a new one, logs in again and retries the job once.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TryRecvError, TrySendError};
use cryptoki::context::Pkcs11;
use tokio::sync::oneshot;

use super::HsmError;
use super::module::Module;
use super::op::HsmOp;
use super::pin::HsmPin;
use super::token::{TokenInfo, TokenSession, initialize};

/// A queued operation: runs on a worker and returns how to hand its result back.
type Job = Box<dyn FnOnce(&mut Worker) -> Option<Deliver> + Send>;
/// Hands one result to its waiting caller (wakes the caller's task).
type Deliver = Box<dyn FnOnce() + Send>;

/// Results a busy worker holds back to hand over together: waking the callers' tasks
/// one by one costs a futex wake-up and often a context switch per operation, which
/// for a 15 µs HMAC is a large part of its cost. A result waits only while more jobs
/// are queued than results are held (so the callers it releases can queue new work
/// before the queue runs dry), for at most this many results ...
const HOLD_MAX_RESULTS: usize = 16;
/// ... and at most this long. Results are not held at all after an operation that took
/// this long itself, so with a slow (network) HSM nothing waits for a later operation;
/// a fast result can wait for at most one slow operation queued behind it.
const HOLD_MAX: Duration = Duration::from_micros(300);

/// Shared by the pool handle and its workers.
struct Shared {
    module: Module,
    pin: HsmPin,
    label: Option<String>,
    serial: Option<String>,
    /// Set when the token refused the PIN: stop logging in, or the token locks.
    pin_rejected: AtomicBool,
    reopened: AtomicU64,
    /// Bumped whenever a worker finds its session lost. After a module restart, session
    /// and object handle numbers are reused: a worker that kept an old handle could end
    /// up on another worker's new session or on another object. So every worker whose
    /// session predates the current epoch opens a new one before its next job.
    epoch: AtomicU64,
    threads: std::sync::Mutex<Vec<std::thread::JoinHandle<()>>>,
    /// Jobs a worker ran (deadline not passed), by kind of operation.
    ops: [AtomicU64; HsmOp::ALL.len()],
}

/// A pool of logged-in sessions on one token.
#[derive(Clone)]
pub struct SessionPool {
    tx: Sender<Job>,
    shared: Arc<Shared>,
    deadline: Duration,
    info: TokenInfo,
    workers: usize,
}

impl std::fmt::Debug for SessionPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionPool")
            .field("token", &self.info.label)
            .field("workers", &self.workers)
            .finish_non_exhaustive()
    }
}

/// One worker thread's state.
pub struct Worker {
    shared: Arc<Shared>,
    info: TokenInfo,
    session: Option<TokenSession>,
    /// The pool epoch `session` was opened in.
    session_epoch: u64,
    stop: bool,
}

impl Worker {
    fn session(&mut self) -> Result<&mut TokenSession, HsmError> {
        if self.shared.pin_rejected.load(Ordering::Relaxed) {
            return Err(HsmError::WrongPin);
        }
        let epoch = self.shared.epoch.load(Ordering::Acquire);
        if self.session_epoch != epoch {
            self.session = None;
        }
        if self.session.is_none() {
            self.session_epoch = epoch;
            let opened = match TokenSession::open(self.shared.module.context(), &self.info, &self.shared.pin) {
                Err(HsmError::Pkcs11(rv)) if rv.is_not_initialized() => {
                    initialize(self.shared.module.context())?;
                    // The slot list may have changed after a re-initialization.
                    self.info =
                        self.shared.module.find_token(self.shared.label.as_deref(), self.shared.serial.as_deref())?;
                    TokenSession::open(self.shared.module.context(), &self.info, &self.shared.pin)
                }
                other => other,
            };
            match opened {
                Ok(s) => self.session = Some(s),
                Err(e @ (HsmError::WrongPin | HsmError::PinLocked)) => {
                    self.shared.pin_rejected.store(true, Ordering::Relaxed);
                    return Err(e);
                }
                Err(e) => return Err(e),
            }
        }
        self.session.as_mut().ok_or(HsmError::Unavailable)
    }

    /// Runs `op` on this worker's session; after a session-level failure, reopens the
    /// session and runs it once more.
    fn call<R>(&mut self, op: &mut dyn FnMut(&mut TokenSession) -> Result<R, HsmError>) -> Result<R, HsmError> {
        let first = op(self.session()?);
        match first {
            Err(HsmError::Pkcs11(rv)) if rv.needs_new_session() => {
                tracing::warn!(error = %rv, "HSM session lost; reopening");
                self.shared.epoch.fetch_add(1, Ordering::AcqRel);
                self.session = None;
                self.shared.reopened.fetch_add(1, Ordering::Relaxed);
                op(self.session()?)
            }
            other => other,
        }
    }
}

/// Takes jobs until the pool stops. While enough work is queued, results are held back
/// (see [`HOLD_MAX_RESULTS`]) and handed over together; a short queue, a full hold or
/// [`HOLD_MAX`] flushes them at once.
fn worker_loop(worker: &mut Worker, rx: &Receiver<Job>) {
    let mut held: Vec<Deliver> = Vec::with_capacity(HOLD_MAX_RESULTS);
    let mut held_since = Instant::now();
    let flush = |held: &mut Vec<Deliver>| held.drain(..).for_each(|deliver| deliver());
    loop {
        let job = if held.is_empty() {
            match rx.recv() {
                Ok(job) => job,
                Err(_) => break,
            }
        } else {
            match rx.try_recv() {
                Ok(job) => job,
                Err(TryRecvError::Empty) => {
                    flush(&mut held);
                    continue;
                }
                Err(TryRecvError::Disconnected) => break,
            }
        };
        let started = Instant::now();
        let deliver = job(worker);
        let finished = Instant::now();
        let slow = finished - started >= HOLD_MAX;
        if let Some(deliver) = deliver {
            if held.is_empty() {
                held_since = finished;
            }
            held.push(deliver);
        }
        if worker.stop
            || slow
            || held.len() >= rx.len()
            || held.len() >= HOLD_MAX_RESULTS
            || held_since.elapsed() >= HOLD_MAX
        {
            flush(&mut held);
        }
        if worker.stop {
            break;
        }
    }
    flush(&mut held);
}

impl SessionPool {
    /// Finds the token and starts `workers` threads. Each opens and logs in its session
    /// now, so a wrong PIN or missing token fails start-up with a clear error instead
    /// of failing every request later.
    pub fn start(
        module: Module,
        label: Option<String>,
        serial: Option<String>,
        pin: HsmPin,
        workers: usize,
        queue_depth: usize,
        deadline: Duration,
    ) -> Result<Self, HsmError> {
        let info = module.find_token(label.as_deref(), serial.as_deref())?;
        let shared = Arc::new(Shared {
            module,
            pin,
            label,
            serial,
            pin_rejected: AtomicBool::new(false),
            reopened: AtomicU64::new(0),
            epoch: AtomicU64::new(0),
            threads: std::sync::Mutex::new(Vec::new()),
            ops: Default::default(),
        });
        let workers = workers.max(1);
        let (tx, rx) = crossbeam_channel::bounded::<Job>(queue_depth.max(1));
        // Log in once before spawning so that a wrong PIN costs one attempt, not N.
        let first = TokenSession::open(shared.module.context(), &info, &shared.pin)?;
        let mut first = Some(first);
        for n in 0..workers {
            let mut worker = Worker {
                shared: shared.clone(),
                info: info.clone(),
                session: first.take(),
                session_epoch: 0,
                stop: false,
            };
            if worker.session.is_none() {
                worker.session = Some(TokenSession::open(shared.module.context(), &info, &shared.pin)?);
            }
            let rx: Receiver<Job> = rx.clone();
            let handle = std::thread::Builder::new()
                .name(format!("hsm-worker-{n}"))
                .spawn(move || {
                    worker_loop(&mut worker, &rx);
                    // Dropping the session closes it (C_CloseSession).
                    drop(worker.session.take());
                })
                .map_err(|e| HsmError::Thread(e.to_string()))?;
            if let Ok(mut threads) = shared.threads.lock() {
                threads.push(handle);
            }
        }
        Ok(Self { tx, shared, deadline, info, workers })
    }

    /// Token details.
    pub fn token(&self) -> &TokenInfo {
        &self.info
    }

    /// Number of worker threads.
    pub fn workers(&self) -> usize {
        self.workers
    }

    /// How many times a worker replaced a lost session.
    pub fn sessions_reopened(&self) -> u64 {
        self.shared.reopened.load(Ordering::Relaxed)
    }

    /// Jobs waiting for a worker now (a gauge read when metrics are scraped).
    pub fn queue_depth(&self) -> usize {
        self.tx.len()
    }

    /// The longest wait for one operation (`hsm.deadline`).
    pub fn deadline(&self) -> Duration {
        self.deadline
    }

    /// The module context, for operator tooling and tests that act on the token from
    /// "outside" the pool (e.g. `C_Finalize` to simulate a token restart).
    pub fn context(&self) -> &Pkcs11 {
        self.shared.module.context()
    }

    /// Operations the workers ran so far, by kind (`symbolon_hsm_operations_total`):
    /// every job counts once whatever its outcome, a job dropped at its deadline not.
    pub fn operations(&self) -> Vec<(HsmOp, u64)> {
        HsmOp::ALL.iter().map(|op| (*op, self.shared.ops[*op as usize].load(Ordering::Relaxed))).collect()
    }

    /// Runs `op` on a worker's session within the pool deadline, counted as [`HsmOp::Other`].
    pub async fn run<R, F>(&self, op: F) -> Result<R, HsmError>
    where
        R: Send + 'static,
        F: FnMut(&mut TokenSession) -> Result<R, HsmError> + Send + 'static,
    {
        self.run_as(HsmOp::Other, op).await
    }

    /// Runs `op`, one operation of kind `kind`, on a worker's session within the pool
    /// deadline.
    pub async fn run_as<R, F>(&self, kind: HsmOp, op: F) -> Result<R, HsmError>
    where
        R: Send + 'static,
        F: FnMut(&mut TokenSession) -> Result<R, HsmError> + Send + 'static,
    {
        self.run_within(kind, self.deadline, op).await
    }

    /// As [`Self::run_as`] with a deadline of its own, for the rare operations that may
    /// take longer than any request should wait (generating an RSA key pair).
    pub async fn run_within<R, F>(&self, kind: HsmOp, limit: Duration, mut op: F) -> Result<R, HsmError>
    where
        R: Send + 'static,
        F: FnMut(&mut TokenSession) -> Result<R, HsmError> + Send + 'static,
    {
        let deadline = Instant::now() + limit;
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |worker: &mut Worker| {
            // A job that waited past its deadline is dropped: its caller already gave up.
            let result = if Instant::now() >= deadline {
                Err(HsmError::Overloaded)
            } else {
                worker.shared.ops[kind as usize].fetch_add(1, Ordering::Relaxed);
                worker.call(&mut op)
            };
            Some(Box::new(move || {
                let _ = tx.send(result);
            }))
        });
        match self.tx.try_send(job) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => return Err(HsmError::Overloaded),
            Err(TrySendError::Disconnected(_)) => return Err(HsmError::Unavailable),
        }
        match tokio::time::timeout_at(deadline.into(), rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(HsmError::Unavailable),
            Err(_) => Err(HsmError::Overloaded),
        }
    }

    /// Stops the workers after the jobs already queued, closes their sessions and
    /// finalizes the module. Modules such as SoftHSM2 can crash in their exit handlers
    /// when a process ends with sessions open on other threads, so every process that
    /// started a pool calls this before exiting.
    pub fn shutdown(&self) {
        let threads = self.shared.threads.lock().map(|mut t| std::mem::take(&mut *t)).unwrap_or_default();
        for _ in 0..threads.len() {
            let _ = self.tx.send(Box::new(|w: &mut Worker| {
                w.stop = true;
                None
            }));
        }
        for t in threads {
            let _ = t.join();
        }
        let _ = self.shared.module.context().clone().finalize();
    }

    /// Runs `op` on the calling thread with a session of its own (CLI commands).
    pub fn run_blocking<R>(&self, mut op: impl FnMut(&mut TokenSession) -> Result<R, HsmError>) -> Result<R, HsmError> {
        let mut session = TokenSession::open(self.shared.module.context(), &self.info, &self.shared.pin)?;
        op(&mut session)
    }
}
