//! `fake-fcm`: a local FCM HTTP v1 + OAuth token endpoint for the demo. Writes a
//! throwaway service-account JSON whose `token_uri` points here (or reuses one written
//! earlier, if it names this address), prints the URLs to configure, then prints every
//! push it receives until Ctrl-C.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Parser;
use softhsm_tests::fake_fcm::{FakeFcm, ServiceAccountFixture};

#[derive(Parser)]
#[command(about = "A local FCM-compatible server (OAuth JWT-bearer token endpoint + messages:send)")]
struct Args {
    /// Address to listen on (port 0 = any free port). Use a fixed port to reuse the
    /// service account across restarts.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// FCM project id of a generated service account.
    #[arg(long, default_value = "symbolon-demo")]
    project_id: String,
    /// Service-account JSON (contains a private key): reused if it exists and its
    /// token_uri is this server's, else generated and written here (mode 0600).
    #[arg(long, default_value = "fcm-service-account.json")]
    service_account: PathBuf,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let fake = FakeFcm::start_on(args.listen, true).await?;
    let existing = match std::fs::read_to_string(&args.service_account) {
        Ok(json) => Some(
            ServiceAccountFixture::from_json(&json)
                .with_context(|| format!("reading {}", args.service_account.display()))?,
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => bail!("reading {}: {e}", args.service_account.display()),
    };
    let (account, reused) = match existing {
        Some(a) if a.token_uri == fake.token_uri() => {
            fake.trust(&a);
            (a, true)
        }
        _ => {
            let a = fake.new_service_account(&args.project_id).context("generating the service account")?;
            a.write_to(&args.service_account)?;
            (a, false)
        }
    };
    // key=value lines first, for scripts.
    println!("fcm_base_url={}", fake.base_url());
    println!("token_uri={}", fake.token_uri());
    println!("project_id={}", account.project_id);
    println!("service_account={}", args.service_account.display());
    if reused {
        eprintln!("\nfake FCM ready, trusting the existing service account. Ctrl-C to stop.");
    } else {
        eprintln!(
            "\nfake FCM ready with a new service account. Import its key into the HSM:\n  \
             symbolon keys import-fcm {}\nand add fcm_base_url = \"{}\" to the [push] \
             section it prints. Ctrl-C to stop.",
            args.service_account.display(),
            fake.base_url()
        );
    }
    tokio::signal::ctrl_c().await?;
    drop(fake);
    Ok(())
}
