//! hsm-bench: operations per second of raw cryptoki (one session per thread, no pool)
//! against Symbolon's session pool at equal thread counts, measured in the same run
//! on a fresh SoftHSM2 token. Target: pool ≥ 90 % of raw.
//!
//! The machine is shared and noisy, so each cell alternates short raw and pool
//! measurements (`--rounds`) and reports the median of the per-round ratios: load that
//! comes and goes hits both sides of a round alike. CPU per operation (this process,
//! all threads) is printed beside it: it shows what the pool itself costs, whatever
//! else the machine is doing.
//!
//! The last row runs no token call at all, only [`BUSY`](softhsm_tests::bench::BUSY)
//! of CPU work, on raw threads and through the pool: the cost of handing work to a
//! worker thread and back on this machine; the rows above cannot do better than it.
//!
//! Usage: hsm-bench [--seconds S] [--rounds R] [--callers C] [--op es256|hmac|aes-gcm|busy ...]

use std::time::Duration;

use clap::Parser;
use softhsm_tests::TestToken;
use softhsm_tests::bench::{HsmOp, Rate, median, pool_rate, raw_rate};
use symbolon::keyring::key_kind;
use symbolon::keys::{HsmPin, SessionPool, initialize_module};

#[derive(Parser)]
struct Args {
    /// Seconds per cell (raw and pool each get half, split over the rounds).
    #[arg(long, default_value_t = 4.0)]
    seconds: f64,
    /// Alternating raw/pool rounds per cell.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Concurrent async callers feeding the pool.
    #[arg(long, default_value_t = 16)]
    callers: usize,
    /// Only these rows (repeatable): es256, hmac, aes-gcm, busy.
    #[arg(long = "op", value_parser = parse_op)]
    ops: Vec<HsmOp>,
}

fn parse_op(name: &str) -> Result<HsmOp, String> {
    match name {
        "es256" => Ok(HsmOp::Es256),
        "hmac" => Ok(HsmOp::Hmac),
        "aes-gcm" => Ok(HsmOp::AesGcm),
        "busy" => Ok(HsmOp::Busy),
        _ => Err("one of es256, hmac, aes-gcm, busy".into()),
    }
}

/// Sums of the rounds of one cell.
#[derive(Default)]
struct Cell {
    raw: Vec<Rate>,
    pool: Vec<Rate>,
}

impl Cell {
    fn mean(rates: &[Rate], f: impl Fn(&Rate) -> f64) -> f64 {
        rates.iter().map(f).sum::<f64>() / rates.len().max(1) as f64
    }
    fn ratio(&self) -> f64 {
        let mut r: Vec<f64> = self.raw.iter().zip(&self.pool).map(|(r, p)| p.per_second / r.per_second).collect();
        median(&mut r)
    }
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let rounds = args.rounds.max(1);
    let slice = args.seconds / 2.0 / rounds as f64;
    let token = TestToken::new()?;
    token.use_in_process()?;
    let module = symbolon::keys::Module::load(&token.module)?;
    initialize_module(module.context())?;
    let mut pools = Vec::new();
    for workers in [1usize, 2] {
        let pin = HsmPin::resolve(Some(&token.pin_file))?;
        let pool = SessionPool::start(
            module.clone(),
            Some(token.label.clone()),
            None,
            pin,
            workers,
            4096,
            Duration::from_secs(10),
        )?;
        pools.push((workers, pool));
    }
    let mut labels = Vec::new();
    for op in HsmOp::ALL.into_iter().filter(|op| args.ops.is_empty() || args.ops.contains(op)) {
        let label = match op.purpose() {
            Some(purpose) => {
                let label = purpose.new_label(1_800_000_000);
                let l = label.clone();
                pools[0].1.run(move |s| s.generate(key_kind(purpose), &l)).await?;
                label
            }
            None => String::new(),
        };
        labels.push((op, label));
    }
    println!(
        "hsm-bench: SoftHSM2 token {}, {} cores, {rounds} alternating rounds of {slice:.2} s per side, {} pool callers",
        token.label,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        args.callers
    );
    println!(
        "{:<16} {:>7} {:>11} {:>11} {:>13} {:>12} {:>12}",
        "operation", "threads", "raw ops/s", "pool ops/s", "pool/raw (med)", "raw µs CPU", "pool µs CPU"
    );
    let mut worst: Option<f64> = None;
    for (op, label) in &labels {
        for (workers, pool) in &pools {
            let mut cell = Cell::default();
            for _ in 0..rounds {
                cell.raw.push(raw_rate(&token, module.context(), label, *op, *workers, slice)?);
                cell.pool.push(pool_rate(pool, label, *op, args.callers, slice).await);
            }
            let ratio = cell.ratio();
            if op.purpose().is_some() {
                worst = Some(worst.map_or(ratio, |w| w.min(ratio)));
            }
            println!(
                "{:<16} {:>7} {:>11.0} {:>11.0} {:>13.0}% {:>12.1} {:>12.1}",
                op.name(),
                workers,
                Cell::mean(&cell.raw, |r| r.per_second),
                Cell::mean(&cell.pool, |r| r.per_second),
                ratio * 100.0,
                Cell::mean(&cell.raw, |r| r.cpu_per_op) * 1e6,
                Cell::mean(&cell.pool, |r| r.cpu_per_op) * 1e6,
            );
        }
    }
    if let Some(worst) = worst {
        println!("worst pool/raw ratio of the token rows: {:.0}% (target ≥ 90%)", worst * 100.0);
    }
    if labels.iter().any(|(op, _)| *op == HsmOp::Busy) {
        println!("\"{}\" calls no token: it measures only the hand-off to a worker and back", HsmOp::Busy.name());
    }
    for (_, pool) in &pools {
        pool.shutdown();
    }
    Ok(())
}
