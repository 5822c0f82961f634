//! `symbolon keys ...`: the key catalog and life cycle from the command line. Every
//! command works on the configured durable store (SQLite or PostgreSQL) and token;
//! every state change is recorded in the audit trail (actor `operator`), and running
//! servers pick it up within `keys.sync_interval`.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Subcommand;

use super::lifecycle::{Lifecycle, fmt_time, short_time};
use super::{KeyLifetimes, KeysConfig};
use super::{KeyPurpose, KeyRing, KeyState};
use crate::keys::{HsmConfig, open_pool};
use crate::store::{DatabaseConfig, open_durable};

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// List the key catalog and the rotation schedule.
    ///
    /// One line per key (at most 100 columns): purpose, label, state, since when (UTC),
    /// stored ciphertexts per data key and when a retiring key may retire. --json
    /// prints the full records (kid, mechanism, every date as Unix seconds).
    List {
        /// Print the full records as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Generate a key in the HSM (active when the purpose has none, else next).
    Generate {
        /// The key purpose.
        #[arg(long, value_enum)]
        purpose: KeyPurpose,
    },
    /// Generate an active key for every purpose that has none (first installation).
    ///
    /// The RSA SAML key (saml-rsa) is made only when [saml] is enabled.
    Init,
    /// Add a key made with vendor tooling to the catalog now.
    ///
    /// The key (hsm/gen-key, pkcs11-tool) carries a label
    /// symbolon-<purpose>-<UTC timestamp>; it becomes next, or active when its purpose
    /// has none. Running servers adopt such keys by themselves within
    /// keys.sync_interval. Extractable or non-sensitive keys are refused.
    Adopt {
        /// The key's CKA_LABEL.
        label: String,
    },
    /// Rotate a purpose: next -> active, active -> retiring.
    ///
    /// The pairwise key is never rotated (refused): pairwise subjects would change.
    ///
    /// Both changes and their audit events are one transaction. Afterwards a new next
    /// key is generated, so that the following rotation activates a key published in
    /// advance. Without a next key, one is generated and activated at once. Servers
    /// switch within keys.sync_interval.
    Rotate {
        /// The key purpose.
        #[arg(long, value_enum)]
        purpose: KeyPurpose,
        /// Do not generate a new next key after the rotation.
        #[arg(long)]
        no_next: bool,
    },
    /// Retire a retiring (or never used next) key.
    ///
    /// Refused while tokens, sessions or assertions it made may still be in use (see
    /// `keys list` for when), and for a data key while a stored ciphertext names it.
    /// The key stays in the token.
    Retire {
        /// The key's label (see `symbolon keys list`).
        label: String,
    },
    /// Re-encrypt stored data under the active data key.
    ///
    /// Needed before an old data key can retire. Resumable: each row is replaced on
    /// its own, and a run only visits ciphertexts not yet under the active key, so an
    /// interrupted run is finished by running it again.
    Rewrap,
    /// Import a Firebase service account's private key into the HSM (non-extractable)
    /// and print the [push] configuration to use. Delete the JSON file afterwards.
    ImportFcm {
        /// The service-account JSON downloaded from the Firebase console.
        file: PathBuf,
    },
}

/// What the `keys` commands need from the configuration.
#[derive(Debug, Clone, Copy)]
pub struct KeysSetup<'a> {
    /// Where the default SQLite database lies.
    pub state_dir: &'a Path,
    pub database: &'a DatabaseConfig,
    pub hsm: &'a HsmConfig,
    pub keys: &'a KeysConfig,
    pub lifetimes: KeyLifetimes,
    /// The purposes `keys init` makes keys for (`Config::key_purposes_to_init`).
    pub init_purposes: &'a [KeyPurpose],
}

/// Runs a `keys` command against the configured store and token.
pub async fn run(setup: KeysSetup<'_>, cmd: KeysCommand) -> anyhow::Result<()> {
    let state_dir = setup.state_dir;
    std::fs::create_dir_all(state_dir)
        .with_context(|| format!("cannot create state directory {}", state_dir.display()))?;
    let store = open_durable(setup.database, state_dir).await?;
    // With auto_migrate = false the schema is the owner's business (`symbolon migrate`
    // as the owner role); the runtime role may not create tables.
    if setup.database.auto_migrate {
        store.migrate().await?;
    }
    let mut hsm = setup.hsm.clone();
    hsm.workers = 1;
    let pool = tokio::task::spawn_blocking(move || open_pool(&hsm)).await??;
    let now = crate::ids::now_unix();
    let result = match KeyRing::open_with(pool.clone(), store, now, "operator", &setup.keys.imported).await {
        Ok(ring) => subcommand(&Lifecycle::new(ring, setup.keys, setup.lifetimes), cmd, setup.init_purposes, now).await,
        Err(e) => Err(e.into()),
    };
    // SoftHSM2 must not see open sessions in its exit handlers.
    tokio::task::spawn_blocking(move || pool.shutdown()).await?;
    result
}

async fn subcommand(life: &Lifecycle, cmd: KeysCommand, init: &[KeyPurpose], now: i64) -> anyhow::Result<()> {
    let ring = life.ring();
    match cmd {
        KeysCommand::List { json: false } => list(life, now).await?,
        KeysCommand::List { json: true } => list_json(life).await?,
        KeysCommand::Generate { purpose } => {
            let e = life.generate(purpose, now).await?;
            println!("generated {} ({}, {})", e.label, e.purpose, e.state.as_str());
        }
        KeysCommand::Init => {
            for e in ring.generate_missing(init, now).await? {
                println!("generated {} ({}, {})", e.label, e.purpose, e.state.as_str());
            }
        }
        KeysCommand::Adopt { label } => {
            if KeyPurpose::from_label(&label).is_none() {
                anyhow::bail!(
                    "label {label:?} does not follow the scheme symbolon-<purpose>-<UTC timestamp> \
                     (purposes: otp, jwt, saml, data, audit, pairwise, saml-rsa); generate keys with hsm/gen-key"
                );
            }
            // KeyRing::open_as has synced: every key of the scheme on the token is in the
            // catalog now, unless it was refused (then opening failed with the reason).
            match ring.entries().into_iter().find(|e| e.label == label) {
                Some(e) => println!("{} is in the catalog as {} ({})", e.label, e.state.as_str(), e.purpose),
                None => {
                    anyhow::bail!("no private or secret key labelled {label:?} on token {}", ring.pool().token().label)
                }
            }
        }
        KeysCommand::Rotate { purpose, no_next } => {
            let r = life.rotate(purpose, now, !no_next).await?;
            if !r.was_next && purpose.is_key_pair() {
                eprintln!(
                    "warning: no next {purpose} key was published in advance; relying parties that cache \
                     JWKS or SAML metadata may not know {} yet",
                    r.activated.label
                );
            }
            println!("active:   {}", r.activated.label);
            if let Some(old) = &r.retiring {
                let after = life.retire_after(old).map_or_else(|| "-".into(), fmt_time);
                println!("retiring: {} (may retire from {after})", old.label);
            }
            if let Some(next) = &r.next {
                println!("next:     {}", next.label);
            }
            if purpose == KeyPurpose::Data && r.retiring.is_some() {
                println!("run `symbolon keys rewrap` to re-encrypt stored data under the new key");
            }
        }
        KeysCommand::Retire { label } => {
            let e = life.retire(&label, now).await?;
            println!("retired {} ({})", e.label, e.purpose);
        }
        KeysCommand::Rewrap => {
            let terminal = std::io::stderr().is_terminal();
            let mut progress = |done: u64, total: u64| {
                if terminal && (done.is_multiple_of(50) || done == total) {
                    eprint!("\rrewrapping: {done}/{total}");
                }
            };
            let report = super::rewrap(ring, now, &mut progress).await?;
            if terminal {
                eprintln!();
            }
            println!(
                "rewrapped {} stored ciphertext(s) under {} ({} changed meanwhile, {} failed)",
                report.rewrapped,
                report.key_label,
                report.skipped,
                report.failed.len()
            );
            for (column, id, reason) in &report.failed {
                eprintln!("failed: {column} row {id}: {reason}");
            }
            if !report.failed.is_empty() {
                anyhow::bail!("{} stored ciphertext(s) could not be re-encrypted", report.failed.len());
            }
        }
        KeysCommand::ImportFcm { file } => {
            let imported = crate::push::cli::import_service_account(ring.pool(), &file).await?;
            println!("imported the service account key as {}", imported.label);
            println!("\nAdd to the configuration:\n\n{}", imported.config_snippet());
            println!("The JSON file still holds the private key: delete it now ({}).", file.display());
        }
    }
    Ok(())
}

/// `keys list`: one line per key (at most 100 columns), then the schedule.
async fn list(life: &Lifecycle, now: i64) -> anyhow::Result<()> {
    let ring = life.ring();
    let token = ring.pool().token();
    println!("token {} (serial {}, {} {})", token.label, token.serial, token.manufacturer, token.model);
    let entries = ring.entries();
    // ORIGIN: `generated` when the token reports the key always sensitive and never
    // extractable, `imported` for the accepted exceptions (keys.imported, the FCM key).
    let token_keys = ring.token_keys();
    let origin_of = |label: &str| token_keys.iter().find(|k| k.label == label).map_or("missing", super::origin);
    let width = entries.iter().map(|e| e.label.len()).chain(token_keys.iter().map(|k| k.label.len())).max();
    let width = width.unwrap_or(5).clamp(5, 36);
    let row = |cols: [&str; 6]| {
        println!("{:<8} {:<width$} {:<8} {:<10} {:<9} {}", cols[0], cols[1], cols[2], cols[3], cols[4], cols[5]);
    };
    row(["PURPOSE", "LABEL", "STATE", "SINCE", "ORIGIN", "NOTE"]);
    for e in entries {
        let mut note = String::new();
        let sealed = if e.purpose == KeyPurpose::Data && e.state != KeyState::Retired {
            Some(ring.store().count_sealed(&e.label).await?)
        } else {
            None
        };
        if let Some(n) = sealed {
            note = format!("sealed={n}");
        }
        if e.state == KeyState::Retiring {
            note = match (sealed, life.retire_after(&e)) {
                (Some(n), _) if n > 0 => format!("sealed={n}: keys rewrap"),
                (_, Some(after)) if now >= after => "may retire now".into(),
                (_, Some(after)) => format!("retire \u{2265}{}", short_time(after)),
                (_, None) => note,
            };
        }
        let since = e.retired_at.or(e.retiring_at).or(e.activated_at).unwrap_or(e.created_at);
        let day = short_time(since);
        let day = day.split(' ').next().unwrap_or_default();
        row([e.purpose.as_str(), &e.label, e.state.as_str(), day, origin_of(&e.label), &note]);
    }
    // Keys of imported purposes are outside the catalog: listed with their origin.
    for k in &token_keys {
        if let Some((purpose, _)) = super::labels::imported_purpose(&k.label) {
            row([purpose, &k.label, "-", "-", super::origin(k), "not in the catalog"]);
        }
    }
    println!(
        "\nschedule (nodes re-read the catalog every {}):",
        humantime::format_duration(life.config().sync_interval)
    );
    for line in life.schedule_lines() {
        println!("  {line}");
    }
    println!("(dates UTC; `symbolon keys list --json` shows kids, mechanisms and every date)");
    Ok(())
}

/// `keys list --json`: the token, every catalog record in full, and the schedule.
async fn list_json(life: &Lifecycle) -> anyhow::Result<()> {
    let ring = life.ring();
    let token = ring.pool().token();
    let mut keys = Vec::new();
    let token_keys = ring.token_keys();
    let origin_of = |label: &str| token_keys.iter().find(|k| k.label == label).map_or("missing", super::origin);
    for e in ring.entries() {
        let sealed =
            if e.purpose == KeyPurpose::Data { Some(ring.store().count_sealed(&e.label).await?) } else { None };
        let mut record = serde_json::to_value(&e)?;
        record["origin"] = origin_of(&e.label).into();
        record["mechanism"] = e.purpose.mechanism().into();
        record["sealed"] = sealed.into();
        record["retire_after"] = (if e.state == KeyState::Retiring { life.retire_after(&e) } else { None }).into();
        keys.push(record);
    }
    let out = serde_json::json!({
        "token": {"label": token.label, "serial": token.serial, "manufacturer": token.manufacturer, "model": token.model},
        "keys": keys,
        // Keys of imported purposes (the FCM key): in the token, outside the catalog.
        "outside_catalog": token_keys
            .iter()
            .filter_map(|k| super::labels::imported_purpose(&k.label).map(|(purpose, mechanism)| serde_json::json!({
                "purpose": purpose, "label": k.label, "mechanism": mechanism, "origin": super::origin(k),
            })))
            .collect::<Vec<_>>(),
        "schedule": life.schedule_lines().iter().map(|l| l.trim()).collect::<Vec<_>>(),
    });
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}
