//! `symbolon-fixtures`: writes a complete trust-chain fixture set (docs/credentials.md §5).

use std::path::PathBuf;

use clap::Parser;
use softhsm_tests::fixtures::{self, FixtureOptions, pki::CaAlg};

/// Generate governance/scheme/TSL lists, CAs, CRLs, VRLs and seals with fresh keys.
#[derive(Parser)]
#[command(name = "symbolon-fixtures", version)]
struct Args {
    /// Output directory (created if missing; files are overwritten).
    #[arg(long)]
    out: PathBuf,
    /// "Now" as Unix seconds (default: the system clock).
    #[arg(long)]
    now: Option<i64>,
    /// Algorithm of the main (AUS) CA: p256, p384, rsa2048, rsa4096.
    #[arg(long, default_value = "p256")]
    ca_alg: CaAlg,
    /// Algorithm of the state-shaped (UTO) CA.
    #[arg(long, default_value = "rsa4096")]
    state_ca_alg: CaAlg,
    /// Base URL for list URLs (default: file:// + the absolute output directory).
    #[arg(long)]
    base_url: Option<String>,
    /// Directory to cache RSA keys in between runs (RSA-4096 keygen is slow).
    #[arg(long, env = "SYMBOLON_FIXTURES_RSA_CACHE")]
    rsa_key_cache: Option<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let manifest = fixtures::generate(
        &args.out,
        &FixtureOptions {
            now: args.now,
            ca_alg: args.ca_alg,
            state_ca_alg: args.state_ca_alg,
            base_url: args.base_url,
            rsa_key_cache: args.rsa_key_cache,
            bulk_ids: 0,
        },
    )?;
    println!("wrote {} files and {} seals to {}", manifest.files.len(), manifest.seals.len(), args.out.display());
    println!("governance url: {}", manifest.governance.url);
    println!("governance signer sha256: {}", manifest.governance.signer_sha256.join(","));
    Ok(())
}
