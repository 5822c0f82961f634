//! hsm-bench: operations per second of raw cryptoki (one session per thread, no pool)
//! against Symbolon's session pool at equal thread counts, measured in the same run
//! on a fresh SoftHSM2 token. Target: pool ≥ 90 % of raw.
//!
//! Usage: hsm-bench [--seconds S] [--callers C]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use cryptoki::context::Pkcs11;
use cryptoki::mechanism::Mechanism;
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::object::{Attribute, ObjectClass};
use cryptoki::session::UserType;
use sha2::{Digest, Sha256};
use softhsm_tests::TestToken;
use symbolon::keys::{HsmPin, KeyPurpose, SessionPool, initialize_module};

#[derive(Parser)]
struct Args {
    /// Seconds per measurement.
    #[arg(long, default_value_t = 2.0)]
    seconds: f64,
    /// Concurrent async callers feeding the pool.
    #[arg(long, default_value_t = 16)]
    callers: usize,
}

#[derive(Clone, Copy, PartialEq)]
enum Op {
    Es256,
    Hmac,
    AesGcm,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::Es256 => "ES256 sign",
            Op::Hmac => "HMAC-SHA256",
            Op::AesGcm => "AES-256-GCM enc",
        }
    }
    fn purpose(self) -> KeyPurpose {
        match self {
            Op::Es256 => KeyPurpose::Jwt,
            Op::Hmac => KeyPurpose::Otp,
            Op::AesGcm => KeyPurpose::Data,
        }
    }
}

const MSG: &[u8] = b"symbolon-otp-v1\0sessionsessionsessionsessionsession\0AUS-7Q2M9K4T\0\0\0\0\0i\x1f\x00\x00";

fn raw_rate(token: &TestToken, ctx: &Pkcs11, label: &str, op: Op, threads: usize, secs: f64) -> f64 {
    let slot = ctx
        .get_slots_with_token()
        .unwrap_or_default()
        .into_iter()
        .find(|s| ctx.get_token_info(*s).map(|i| i.label().trim() == token.label).unwrap_or(false))
        .expect("token slot");
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let (ctx, stop, count, label, pin) =
                (ctx.clone(), stop.clone(), count.clone(), label.to_string(), token.pin.clone());
            std::thread::spawn(move || {
                let session = ctx.open_rw_session(slot).expect("session");
                let _ = session.login(UserType::User, Some(&cryptoki::types::AuthPin::from(pin)));
                let class = if op == Op::Es256 { ObjectClass::PRIVATE_KEY } else { ObjectClass::SECRET_KEY };
                let key = session
                    .find_objects(&[Attribute::Class(class), Attribute::Label(label.into_bytes())])
                    .expect("find")[0];
                while !stop.load(Ordering::Relaxed) {
                    match op {
                        Op::Es256 => {
                            let digest = Sha256::digest(MSG);
                            session.sign(&Mechanism::Ecdsa, key, &digest).expect("sign");
                        }
                        Op::Hmac => {
                            session.sign(&Mechanism::Sha256Hmac, key, MSG).expect("hmac");
                        }
                        Op::AesGcm => {
                            let mut iv = [0u8; 12];
                            session.generate_random_slice(&mut iv).expect("rng");
                            let params = GcmParams::new(&mut iv, b"row", 128.into()).expect("gcm");
                            session.encrypt(&Mechanism::AesGcm(params), key, MSG).expect("enc");
                        }
                    }
                    count.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs_f64(secs));
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        let _ = h.join();
    }
    count.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
}

async fn pool_rate(pool: &SessionPool, label: &str, op: Op, callers: usize, secs: f64) -> f64 {
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let tasks: Vec<_> = (0..callers)
        .map(|_| {
            let (pool, stop, count, label) = (pool.clone(), stop.clone(), count.clone(), label.to_string());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let l = label.clone();
                    let r = match op {
                        Op::Es256 => pool.run(move |s| s.sign_es256(&l, MSG).map(|_| ())).await,
                        Op::Hmac => pool.run(move |s| s.hmac_sha256(&l, MSG).map(|_| ())).await,
                        Op::AesGcm => pool.run(move |s| s.encrypt_gcm(&l, b"row", MSG).map(|_| ())).await,
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
    for t in tasks {
        let _ = t.await;
    }
    count.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let token = TestToken::new()?;
    token.use_in_process()?;
    let ctx = Pkcs11::new(&token.module)?;
    initialize_module(&ctx)?;
    let mut pools = Vec::new();
    for workers in [1usize, 2] {
        let pin = HsmPin::resolve(Some(&token.pin_file))?;
        pools.push((
            workers,
            SessionPool::start(
                ctx.clone(),
                Some(token.label.clone()),
                None,
                pin,
                workers,
                4096,
                Duration::from_secs(10),
            )?,
        ));
    }
    let mut labels = Vec::new();
    for op in [Op::Es256, Op::Hmac, Op::AesGcm] {
        let label = op.purpose().new_label(1_800_000_000);
        let l = label.clone();
        let purpose = op.purpose();
        pools[0].1.run(move |s| s.generate(purpose, &l)).await?;
        labels.push((op, label));
    }
    println!("hsm-bench: SoftHSM2 token {}, {:.1}s per cell, {} pool callers", token.label, args.seconds, args.callers);
    println!("{:<16} {:>7} {:>12} {:>12} {:>7}", "operation", "threads", "raw ops/s", "pool ops/s", "ratio");
    let mut worst: f64 = f64::MAX;
    for (op, label) in &labels {
        for (workers, pool) in &pools {
            let raw = raw_rate(&token, &ctx, label, *op, *workers, args.seconds);
            let pooled = pool_rate(pool, label, *op, args.callers, args.seconds).await;
            let ratio = pooled / raw;
            worst = worst.min(ratio);
            println!("{:<16} {:>7} {:>12.0} {:>12.0} {:>6.0}%", op.name(), workers, raw, pooled, ratio * 100.0);
        }
    }
    println!("worst pool/raw ratio: {:.0}% (target ≥ 90%)", worst * 100.0);
    for (_, pool) in &pools {
        pool.shutdown();
    }
    Ok(())
}
