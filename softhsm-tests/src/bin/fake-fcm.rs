//! `fake-fcm`: a local FCM HTTP v1 + OAuth token endpoint for the demo. Writes a
//! throwaway service-account JSON whose `token_uri` points here, prints the URLs to
//! configure, then prints every push it receives until Ctrl-C.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use softhsm_tests::fake_fcm::FakeFcm;

#[derive(Parser)]
#[command(
    about = "A local FCM-compatible server (OAuth JWT-bearer token endpoint + messages:send)"
)]
struct Args {
    /// Address to listen on (port 0 = any free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// FCM project id of the generated service account.
    #[arg(long, default_value = "symbolon-demo")]
    project_id: String,
    /// Where to write the generated service-account JSON (contains a private key).
    #[arg(long, default_value = "fcm-service-account.json")]
    service_account_out: PathBuf,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let fake = FakeFcm::start_on(args.listen, true).await?;
    let account = fake
        .new_service_account(&args.project_id)
        .context("generating the service account")?;
    account.write_to(&args.service_account_out)?;
    // key=value lines first, for scripts.
    println!("fcm_base_url={}", fake.base_url());
    println!("token_uri={}", fake.token_uri());
    println!("project_id={}", account.project_id);
    println!("service_account={}", args.service_account_out.display());
    eprintln!(
        "\nfake FCM ready. Import the key into the HSM and configure Symbolon:\n  \
         symbolon keys import-fcm {}\n  then set in [push]: fcm_base_url = \"{}\" \
         (the rest is printed by import-fcm)\nCtrl-C to stop.",
        args.service_account_out.display(),
        fake.base_url()
    );
    tokio::signal::ctrl_c().await?;
    drop(fake);
    Ok(())
}
