//! `symbolon-device`: the reference device (docs/protocol.md §3–§5) on the command line.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use softhsm_tests::device::client::{ClientError, DeviceClient};
use softhsm_tests::device::{Decision, Device, Push, vds_from_file_contents};

/// Reference Symbolon device with a software P-256 key.
#[derive(Parser)]
#[command(name = "symbolon-device", version)]
struct Args {
    /// Private key file (JWK); created on first use. Default ~/.symbolon-device/key.json.
    #[arg(long, global = true)]
    key: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print this device's device_id (RFC 7638 thumbprint).
    Id,
    /// Enroll this device with a VDS credential.
    Enroll {
        /// Server base URL, e.g. http://127.0.0.1:8080.
        #[arg(long)]
        server: String,
        /// File with the seal JSON or its b64u.
        #[arg(long)]
        vds: PathBuf,
        /// FCM registration token (default: push provider "none").
        #[arg(long)]
        push_token: Option<String>,
        /// Device name shown to operators.
        #[arg(long, default_value = "symbolon-device")]
        device_name: String,
    },
    /// List this device's pending sessions.
    Pending {
        /// Server base URL.
        #[arg(long)]
        server: String,
    },
    /// Approve a session.
    Approve {
        /// Server base URL.
        #[arg(long)]
        server: String,
        /// Session id.
        session: String,
        /// The OTP shown in the browser.
        #[arg(long)]
        otp: String,
        /// Granted scopes, comma-separated (default: all requested, from pending).
        #[arg(long, value_delimiter = ',')]
        scopes: Option<Vec<String>>,
    },
    /// Reject a session.
    Reject {
        /// Server base URL.
        #[arg(long)]
        server: String,
        /// Session id.
        session: String,
        /// The OTP shown in the browser.
        #[arg(long)]
        otp: String,
    },
    /// Poll pending sessions and print each new one as a JSON line.
    Watch {
        /// Server base URL.
        #[arg(long)]
        server: String,
        /// Seconds between polls.
        #[arg(long, default_value_t = 2)]
        interval: u64,
        /// Poll once and exit.
        #[arg(long)]
        once: bool,
    },
}

fn default_key_path() -> PathBuf {
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("."), PathBuf::from);
    home.join(".symbolon-device").join("key.json")
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args = Args::parse();
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            match error.downcast_ref::<ClientError>() {
                Some(ClientError::Problem { body, status, .. }) => {
                    eprintln!("server answered {status}");
                    println!("{body}");
                }
                _ => eprintln!("error: {error:#}"),
            }
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let key_path = args.key.unwrap_or_else(default_key_path);
    let device = Device::load_or_create(&key_path)?;
    match args.command {
        Command::Id => println!("{}", device.device_id()),
        Command::Enroll { server, vds, push_token, device_name } => {
            let contents = std::fs::read(&vds).map_err(|e| anyhow::anyhow!("reading {}: {e}", vds.display()))?;
            let vds = vds_from_file_contents(&contents)?;
            let push = match push_token {
                Some(token) => Push::Fcm { token },
                None => Push::None,
            };
            let client = DeviceClient::new(&server)?;
            let enrolled = client.enroll(&device, &vds, push, &device_name).await?;
            println!("{}", serde_json::to_string_pretty(&enrolled)?);
        }
        Command::Pending { server } => {
            let pending = DeviceClient::new(&server)?.pending(&device).await?;
            println!("{}", serde_json::to_string_pretty(&pending)?);
        }
        Command::Approve { server, session, otp, scopes } => {
            let client = DeviceClient::new(&server)?;
            let scopes = match scopes {
                Some(scopes) => scopes,
                None => client
                    .pending(&device)
                    .await?
                    .sessions
                    .into_iter()
                    .find(|s| s.session_id == session)
                    .map(|s| s.scopes)
                    .ok_or_else(|| anyhow::anyhow!("session {session} is not pending; pass --scopes"))?,
            };
            let result = client.verify(&device, &session, &otp, Decision::Approve, Some(scopes)).await?;
            println!("{}", serde_json::to_string_pretty(&result)?);
        }
        Command::Reject { server, session, otp } => {
            let result = DeviceClient::new(&server)?.verify(&device, &session, &otp, Decision::Reject, None).await?;
            println!("{}", serde_json::to_string_pretty(&result)?);
        }
        Command::Watch { server, interval, once } => {
            let client = DeviceClient::new(&server)?;
            let mut seen = std::collections::HashSet::new();
            loop {
                for session in client.pending(&device).await?.sessions {
                    if seen.insert(session.session_id.clone()) {
                        println!("{}", serde_json::to_string(&session)?);
                    }
                }
                if once {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_secs(interval)).await;
            }
        }
    }
    Ok(())
}
