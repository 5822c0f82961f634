//! Bodies of the operator commands of docs/credentials.md §4. The lead wires the argument structs
//! into the main clap tree; these functions print to stdout.

use super::TrustError;
use super::cert::{CaCert, Crl};
use super::config::{SYMBOLON_ID, TrustConfig};
use super::seal::{Credential, MAX_SEAL_BYTES, Seal, decode_vds};
use super::store::{TrustStore, unix_now};
use super::verify::{Anchor, CrlCheck, Policy, verify_seal};
use anyhow::Context;
use std::io::Write;
use std::path::{Path, PathBuf};

/// `symbolon vds verify FILE [--ca CERT]... [--crl CRL]... [--at TIME]`.
#[derive(Debug, Clone, clap::Args)]
pub struct VdsVerifyArgs {
    /// The seal: its JSON, or that JSON base64/b64u-encoded.
    pub file: PathBuf,
    /// CA certificate (PEM or DER) to verify against instead of the trust lists; any
    /// document type is then accepted.
    #[arg(long = "ca", value_name = "CERT")]
    pub ca: Vec<PathBuf>,
    /// CRL (PEM or DER) of one of the `--ca` CAs.
    #[arg(long = "crl", value_name = "CRL")]
    pub crl: Vec<PathBuf>,
    /// Verify as of this time: RFC 3339 or Unix seconds (default: now).
    #[arg(long, value_name = "TIME")]
    pub at: Option<String>,
}

/// `symbolon trust status`.
#[derive(Debug, Clone, clap::Args)]
pub struct TrustStatusArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// `symbolon trust refresh`.
#[derive(Debug, Clone, clap::Args)]
pub struct TrustRefreshArgs {}

/// Verifies a seal file and prints its header, message and verdict. `Ok(true)` only
/// when valid. Without `--ca` the configured trust lists and types apply (`trust`
/// must then be given, loaded from the state directory's cache).
pub fn vds_verify(args: &VdsVerifyArgs, trust: Option<&TrustStore>) -> anyhow::Result<bool> {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    vds_verify_to(args, trust, &mut out)
}

/// [`vds_verify`] writing to `out`.
pub fn vds_verify_to(args: &VdsVerifyArgs, trust: Option<&TrustStore>, out: &mut dyn Write) -> anyhow::Result<bool> {
    let now = match &args.at {
        Some(t) => parse_time(t)?,
        None => unix_now(),
    };
    let raw = read_capped(&args.file, 1024 * 1024)?;
    let seal = match read_seal(&raw) {
        Ok(seal) => seal,
        Err(e) => {
            writeln!(out, "INVALID ({}): {e}", crate::error::ApiError::from(e.clone()).code)?;
            return Ok(false);
        }
    };
    writeln!(out, "header: {}", serde_json::to_string(&seal.header)?)?;
    writeln!(out, "message: {}", serde_json::to_string_pretty(&seal.msg)?)?;
    let result = if args.ca.is_empty() {
        if !args.crl.is_empty() {
            anyhow::bail!("--crl needs --ca (the configured lists bring their own CRLs)");
        }
        let store = trust.context("no --ca given and no trust lists configured")?;
        store.verify_seal(&seal, now).map(|v| {
            format!(
                "{} signed by {} ({}), signer serial {}",
                v.doc_type,
                v.ca_name,
                v.territory.unwrap_or_default(),
                v.signer_serial_hex
            )
        })
    } else {
        verify_with_files(args, &seal, now, out)?
    };
    match result {
        Ok(summary) => {
            writeln!(out, "VALID: {summary}")?;
            Ok(true)
        }
        Err(e) => {
            writeln!(out, "INVALID ({}): {e}", crate::error::ApiError::from(e.clone()).code)?;
            Ok(false)
        }
    }
}

fn verify_with_files(
    args: &VdsVerifyArgs,
    seal: &Seal,
    now: i64,
    out: &mut dyn Write,
) -> anyhow::Result<Result<String, TrustError>> {
    let mut cas = Vec::new();
    for path in &args.ca {
        let bytes = read_capped(path, 4 * 1024 * 1024)?;
        let certs = CaCert::parse_file(&bytes).with_context(|| format!("{}", path.display()))?;
        cas.extend(certs);
    }
    let mut crls = Vec::new();
    for path in &args.crl {
        let bytes = read_capped(path, super::cert::MAX_CRL_BYTES)?;
        let crl = Crl::parse(&bytes).with_context(|| format!("{}", path.display()))?;
        let label = format!("CRL {}", path.display());
        if !cas.iter().any(|ca| crl.verify(ca).is_ok()) {
            writeln!(out, "warning: {label} is not signed by any --ca certificate; ignored")?;
        }
        crls.push((label, crl));
    }
    let names: Vec<String> = cas.iter().map(CaCert::subject).collect();
    let anchors: Vec<Anchor<'_>> = cas
        .iter()
        .zip(&names)
        .map(|(ca, name)| Anchor {
            ca,
            ca_name: name,
            territory: None,
            doc_types: None,
            path: Vec::new(),
            crls: crls
                .iter()
                .filter(|(_, crl)| crl.verify(ca).is_ok())
                .map(|(label, crl)| CrlCheck { label, crl: Some(crl) })
                .collect(),
            vrl: None,
        })
        .collect();
    let credential = if seal.header.doc_type == SYMBOLON_ID {
        match Credential::from_msg(&seal.msg) {
            Ok(c) => Some(c),
            Err(e) => return Ok(Err(e)),
        }
    } else {
        None
    };
    let config = TrustConfig::default();
    let policy = Policy { accepted: None, config: &config, unknown_lists: Vec::new() };
    Ok(verify_seal(seal, credential.as_ref(), &anchors, &policy, now).map(|v| {
        let anchor = &anchors[v.anchor];
        let crl_note = if anchor.crls.is_empty() { " (no CRL given for this CA)" } else { "" };
        format!(
            "{} signed by {}, signer serial {}{crl_note}",
            seal.header.doc_type, anchor.ca_name, v.signer.serial_hex
        )
    }))
}

/// Prints every list, CRL and VRL from the state directory's cache. `Ok(true)` when
/// all are fresh.
pub async fn trust_status(args: &TrustStatusArgs, config: &TrustConfig, state_dir: &Path) -> anyhow::Result<bool> {
    let store = TrustStore::load(config, state_dir)?;
    let status = store.status(unix_now());
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    if args.json {
        writeln!(out, "{}", serde_json::to_string_pretty(&status)?)?;
    } else {
        print_status(&status, &mut out)?;
    }
    Ok(status.fresh)
}

/// Fetches everything now and prints what changed and what failed. `Ok(false)` on any
/// failure (the caller exits non-zero).
pub async fn trust_refresh(_args: &TrustRefreshArgs, config: &TrustConfig, state_dir: &Path) -> anyhow::Result<bool> {
    let store = TrustStore::load(config, state_dir)?;
    let report = store.refresh(unix_now()).await?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    for name in &report.updated {
        writeln!(out, "updated: {name}")?;
    }
    for f in &report.failed {
        writeln!(out, "FAILED: {} ({}): {}", f.list, f.url, f.reason)?;
    }
    print_status(&store.status(unix_now()), &mut out)?;
    Ok(report.failed.is_empty() && report.fresh)
}

fn print_status(status: &super::TrustStatus, out: &mut dyn Write) -> std::io::Result<()> {
    print_status_at(status, unix_now(), out)
}

/// The table of `trust status`, dates in UTC to the minute with how far off they are.
fn print_status_at(status: &super::TrustStatus, now: i64, out: &mut dyn Write) -> std::io::Result<()> {
    if !status.configured {
        return writeln!(out, "trust lists are not configured (trust.governance_url is empty)");
    }
    writeln!(
        out,
        "trust: {} (oldest fetch {})",
        if status.fresh { "fresh" } else { "NOT FRESH" },
        status.age_s.map_or("never".into(), |a| format!("{} ago", span(a)))
    )?;
    for e in &status.entries {
        let next = e.next_update.map_or("-".to_owned(), |t| {
            let rel = if t >= now { format!("in {}", span(t - now)) } else { format!("{} ago", span(now - t)) };
            format!("{} ({rel})", human_time(t))
        });
        // Two lines an entry, within 100 columns (the source URL runs as long as it is).
        writeln!(
            out,
            "{:<10} {:<44} {:<5} seq {:<5} issued {:<16}",
            e.kind,
            fit(&e.name, 44),
            if e.fresh { "fresh" } else { "STALE" },
            e.seq.map_or("-".into(), |s| s.to_string()),
            e.issued.map_or("-".into(), human_time),
        )?;
        writeln!(out, "           next update {next}")?;
        writeln!(out, "           from {}", e.source)?;
        if let Some(m) = &e.error {
            writeln!(out, "           error: {m}")?;
        }
    }
    Ok(())
}

/// `s` cut to `width` characters, the last one an ellipsis when cut.
fn fit(s: &str, width: usize) -> String {
    if s.chars().count() <= width {
        return s.to_string();
    }
    let mut cut: String = s.chars().take(width.saturating_sub(1)).collect();
    cut.push('\u{2026}');
    cut
}

/// `2026-12-06 09:40` (UTC).
fn human_time(unix: i64) -> String {
    let fmt = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]");
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| t.format(&fmt).ok())
        .unwrap_or_else(|| unix.to_string())
}

/// A duration in its largest unit: `45s`, `12min`, `5h`, `6d`.
fn span(seconds: i64) -> String {
    match seconds {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}min", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

/// A seal file: JSON as is, or base64/b64u text (whitespace and line breaks ignored).
fn read_seal(raw: &[u8]) -> Result<Seal, TrustError> {
    let start = raw.iter().position(|b| !b.is_ascii_whitespace()).unwrap_or(raw.len());
    if raw.get(start) == Some(&b'{') {
        return Seal::parse(&raw[start..]);
    }
    let text: String = String::from_utf8_lossy(raw).chars().filter(|c| !c.is_ascii_whitespace()).collect();
    let bytes = decode_vds(&text)?;
    debug_assert!(bytes.len() <= MAX_SEAL_BYTES);
    Seal::parse(&bytes)
}

fn read_capped(path: &Path, max: usize) -> anyhow::Result<Vec<u8>> {
    use std::io::Read as _;
    // Read with a cap whatever the file system reports (`/dev/zero` has size 0).
    let file = std::fs::File::open(path).with_context(|| format!("reading {}", path.display()))?;
    let mut bytes = Vec::new();
    file.take(max as u64 + 1).read_to_end(&mut bytes).with_context(|| format!("reading {}", path.display()))?;
    anyhow::ensure!(bytes.len() <= max, "{} is larger than {max} bytes", path.display());
    Ok(bytes)
}

/// RFC 3339 or Unix seconds.
pub fn parse_time(s: &str) -> anyhow::Result<i64> {
    if let Ok(secs) = s.parse::<i64>() {
        return Ok(secs);
    }
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .with_context(|| format!("--at {s:?} is neither RFC 3339 nor Unix seconds"))?;
    Ok(t.unix_timestamp())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trust::{TrustEntryStatus, TrustStatus};

    #[test]
    fn trust_status_prints_dates_people_read() {
        let now = 1_796_000_000; // 2026-11-30 00:53:20 UTC
        let entry = |kind, next_update: i64, fresh| TrustEntryStatus {
            kind,
            id: "gl".into(),
            name: "governance list".into(),
            source: "https://trust.example/governance.jws".into(),
            seq: Some(7),
            issued: Some(now - 3600),
            next_update: Some(next_update),
            fresh,
            fetched_at: Some(now - 60),
            error: None,
        };
        let status = TrustStatus {
            configured: true,
            fresh: false,
            age_s: Some(60),
            last_refresh: Some(now - 60),
            entries: vec![entry("governance", now + 6 * 86_400, true), entry("crl", now - 7200, false)],
        };
        let mut out = Vec::new();
        print_status_at(&status, now, &mut out).unwrap_or_else(|e| panic!("{e}"));
        let text = String::from_utf8(out).unwrap_or_else(|e| panic!("{e}"));
        assert!(text.contains("issued 2026-11-29 23:53"), "{text}");
        assert!(text.contains("next update 2026-12-06 00:53 (in 6d)"), "{text}");
        assert!(text.contains("2026-11-29 22:53 (2h ago)") && text.contains("STALE"), "{text}");
        assert!(text.contains("oldest fetch 60s ago"), "{text}");
        assert!(!text.contains(&now.to_string()[..6]), "no Unix seconds: {text}");
        assert!(text.lines().all(|l| l.chars().count() <= 100), "100 columns: {text}");
    }
}
