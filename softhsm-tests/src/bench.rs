//! Measuring loops shared by the benchmarks (`hsm-bench`, `symbolon-bench`): HSM
//! operations through raw cryptoki (one session per thread, no pool) and through
//! Symbolon's [`SessionPool`], with the process CPU time they cost.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use cryptoki::context::Pkcs11;
use cryptoki::mechanism::Mechanism;
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::object::{Attribute, ObjectClass};
use cryptoki::session::UserType;
use sha2::{Digest, Sha256};
use symbolon::keyring::KeyPurpose;
use symbolon::keys::SessionPool;

use crate::TestToken;

/// CPU seconds (user + system) this process has used, all threads.
pub fn self_cpu() -> f64 {
    nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF)
        .map(|u| {
            let t = |tv: nix::sys::time::TimeVal| tv.tv_sec() as f64 + tv.tv_usec() as f64 / 1e6;
            t(u.user_time()) + t(u.system_time())
        })
        .unwrap_or(0.0)
}

/// An HSM operation as the server performs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HsmOp {
    /// ES256 over a JWT-sized signing input (SHA-256 in software, `CKM_ECDSA`).
    Es256,
    /// `CKM_SHA256_HMAC` over an OTP input.
    Hmac,
    /// AES-256-GCM encryption of a claims-sized record with a fresh token IV.
    AesGcm,
    /// No token call: [`BUSY`] of CPU work. Run on raw threads and through the pool,
    /// it shows what handing work to a worker thread and back costs on this machine,
    /// apart from anything the token does.
    Busy,
}

/// How long a [`HsmOp::Busy`] operation keeps its thread busy: about an HMAC on
/// SoftHSM2.
pub const BUSY: Duration = Duration::from_micros(20);

fn busy() {
    let start = Instant::now();
    while start.elapsed() < BUSY {
        std::hint::spin_loop();
    }
}

/// A JWT signing input is about this long.
const JWT_INPUT: [u8; 420] = [b'e'; 420];
/// The OTP derivation input (otp.rs) is about this long.
const OTP_INPUT: &[u8] =
    b"symbolon-otp-v1\0sessionsessionsessionsessionsessionsess\0AUS-7Q2M9K4T\0\0\0\0\0i\x1f\x00\x00";
/// Sealed claims are about this long.
const RECORD: [u8; 200] = [b'c'; 200];

impl HsmOp {
    /// The operations on keys, then the calibration.
    pub const ALL: [HsmOp; 4] = [HsmOp::Es256, HsmOp::Hmac, HsmOp::AesGcm, HsmOp::Busy];

    pub fn name(self) -> &'static str {
        match self {
            HsmOp::Es256 => "ES256 sign",
            HsmOp::Hmac => "HMAC-SHA256",
            HsmOp::AesGcm => "AES-256-GCM enc",
            HsmOp::Busy => "busy 20 µs",
        }
    }

    /// The purpose of the key the operation needs (none for [`HsmOp::Busy`]).
    pub fn purpose(self) -> Option<KeyPurpose> {
        match self {
            HsmOp::Es256 => Some(KeyPurpose::Jwt),
            HsmOp::Hmac => Some(KeyPurpose::Otp),
            HsmOp::AesGcm => Some(KeyPurpose::Data),
            HsmOp::Busy => None,
        }
    }
}

/// Throughput and cost of one measurement.
#[derive(Debug, Clone, Copy, Default)]
pub struct Rate {
    /// Operations per second (wall clock).
    pub per_second: f64,
    /// CPU seconds of this process per operation (all its threads).
    pub cpu_per_op: f64,
}

fn rate(count: u64, start: Instant, cpu0: f64) -> Rate {
    let n = count as f64;
    Rate { per_second: n / start.elapsed().as_secs_f64(), cpu_per_op: (self_cpu() - cpu0) / n.max(1.0) }
}

/// Runs an operation in a tight loop on `threads` threads for `secs` seconds. Each
/// thread first calls `setup` (outside the measured time) for its own operation,
/// which returns `Ok(true)` when one operation succeeded.
pub fn threads_rate<S, F>(threads: usize, secs: f64, setup: S) -> anyhow::Result<Rate>
where
    S: Fn() -> anyhow::Result<F> + Send + Sync + 'static,
    F: FnMut() -> anyhow::Result<bool>,
{
    let setup = Arc::new(setup);
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let ready = Arc::new(std::sync::Barrier::new(threads + 1));
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let (setup, stop, count, ready) = (setup.clone(), stop.clone(), count.clone(), ready.clone());
            std::thread::spawn(move || -> anyhow::Result<()> {
                let op = setup();
                // Every thread is set up before the clock starts, failed or not.
                ready.wait();
                let mut op = op?;
                while !stop.load(Ordering::Relaxed) {
                    if op()? {
                        count.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Ok(())
            })
        })
        .collect();
    ready.wait();
    let (start, cpu0) = (Instant::now(), self_cpu());
    std::thread::sleep(Duration::from_secs_f64(secs));
    stop.store(true, Ordering::Relaxed);
    let measured = rate(count.load(Ordering::Relaxed), start, cpu0);
    for h in handles {
        h.join().map_err(|_| anyhow::anyhow!("measuring thread panicked"))??;
    }
    Ok(measured)
}

/// `op` with the key `label` on `threads` threads, each with its own logged-in session
/// and no pool: the baseline the pool is compared with.
pub fn raw_rate(
    token: &TestToken,
    ctx: &Pkcs11,
    label: &str,
    op: HsmOp,
    threads: usize,
    secs: f64,
) -> anyhow::Result<Rate> {
    if op == HsmOp::Busy {
        return threads_rate(threads, secs, || {
            Ok(|| {
                busy();
                Ok(true)
            })
        });
    }
    let slot = ctx
        .get_slots_with_token()?
        .into_iter()
        .find(|s| ctx.get_token_info(*s).map(|i| i.label().trim() == token.label).unwrap_or(false))
        .context("token slot")?;
    let (ctx, label, pin) = (ctx.clone(), label.to_string(), token.pin.clone());
    threads_rate(threads, secs, move || {
        let session = ctx.open_rw_session(slot)?;
        let _ = session.login(UserType::User, Some(&cryptoki::types::AuthPin::from(pin.clone())));
        let class = if op == HsmOp::Es256 { ObjectClass::PRIVATE_KEY } else { ObjectClass::SECRET_KEY };
        let key = *session
            .find_objects(&[Attribute::Class(class), Attribute::Label(label.clone().into_bytes())])?
            .first()
            .context("key not found")?;
        Ok(move || -> anyhow::Result<bool> {
            match op {
                HsmOp::Es256 => {
                    session.sign(&Mechanism::Ecdsa, key, &Sha256::digest(JWT_INPUT))?;
                }
                HsmOp::Hmac => {
                    session.sign(&Mechanism::Sha256Hmac, key, OTP_INPUT)?;
                }
                HsmOp::AesGcm => {
                    let mut iv = [0u8; 12];
                    session.generate_random_slice(&mut iv)?;
                    let params = GcmParams::new(&mut iv, b"row-id", 128.into())?;
                    session.encrypt(&Mechanism::AesGcm(params), key, &RECORD)?;
                }
                HsmOp::Busy => unreachable!("measured without a session above"),
            }
            Ok(true)
        })
    })
}

/// `op` with the key `label` through `pool`, fed by `callers` async tasks (as many
/// requests in flight as a loaded server has).
pub async fn pool_rate(pool: &SessionPool, label: &str, op: HsmOp, callers: usize, secs: f64) -> Rate {
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let (start, cpu0) = (Instant::now(), self_cpu());
    let tasks: Vec<_> = (0..callers)
        .map(|_| {
            let (pool, stop, count, label) = (pool.clone(), stop.clone(), count.clone(), label.to_string());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let l = label.clone();
                    let r = match op {
                        HsmOp::Es256 => pool.run(move |s| s.sign_es256(&l, &JWT_INPUT).map(|_| ())).await,
                        HsmOp::Hmac => pool.run(move |s| s.hmac_sha256(&l, OTP_INPUT).map(|_| ())).await,
                        HsmOp::AesGcm => pool.run(move |s| s.encrypt_gcm(&l, b"row-id", &RECORD).map(|_| ())).await,
                        HsmOp::Busy => {
                            pool.run(|_| {
                                busy();
                                Ok(())
                            })
                            .await
                        }
                    };
                    if r.is_ok() {
                        count.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
    stop.store(true, Ordering::Relaxed);
    let measured = rate(count.load(Ordering::Relaxed), start, cpu0);
    for t in tasks {
        let _ = t.await;
    }
    measured
}

/// The median of `values` (0 when empty).
pub fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => 0.0,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}
