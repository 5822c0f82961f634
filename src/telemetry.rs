//! Logging: journald with structured fields under systemd (`JOURNAL_STREAM` set),
//! JSON lines otherwise, pretty on a terminal. `SYMBOLON_LOG` overrides the filter.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use serde::{Deserialize, Serialize};

use crate::error::ConfigProblem;

/// Log output.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    /// `tracing` filter directive, e.g. `info` or `symbolon=debug,info`.
    /// `SYMBOLON_LOG` overrides it.
    pub level: String,
    /// `auto` (journald under systemd, pretty on a terminal, JSON otherwise),
    /// `journald`, `json` or `pretty`.
    pub format: LogFormat,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self { level: "info".into(), format: LogFormat::Auto }
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Auto,
    Journald,
    Json,
    Pretty,
}

impl TelemetryConfig {
    /// What is wrong with `[telemetry]`.
    pub fn problems(&self) -> Vec<ConfigProblem> {
        match EnvFilter::try_new(&self.level) {
            Ok(_) => Vec::new(),
            Err(e) => vec![ConfigProblem::new("telemetry.level", e.to_string())],
        }
    }
}

/// Installs the global subscriber. Safe to call once per process.
pub fn init(config: &TelemetryConfig) -> anyhow::Result<()> {
    let directive = std::env::var("SYMBOLON_LOG").unwrap_or_else(|_| config.level.clone());
    let filter = EnvFilter::try_new(&directive)?;
    let format = match config.format {
        LogFormat::Auto if std::env::var_os("JOURNAL_STREAM").is_some() => LogFormat::Journald,
        LogFormat::Auto if std::io::stderr().is_terminal() => LogFormat::Pretty,
        LogFormat::Auto => LogFormat::Json,
        other => other,
    };
    let registry = tracing_subscriber::registry().with(filter);
    match format {
        LogFormat::Journald => {
            let layer = tracing_journald::layer()?.with_syslog_identifier("symbolon".into());
            registry.with(layer).try_init()?;
        }
        LogFormat::Pretty => {
            // Colours only for a terminal, not for `scripts/demo > file` or a pager.
            let ansi = std::io::stderr().is_terminal();
            registry.with(tracing_subscriber::fmt::layer().with_ansi(ansi).with_writer(std::io::stderr)).try_init()?;
        }
        LogFormat::Json | LogFormat::Auto => {
            let layer = tracing_subscriber::fmt::layer()
                .json()
                .flatten_event(true)
                .with_current_span(true)
                .with_span_list(false)
                .with_writer(std::io::stderr);
            registry.with(layer).try_init()?;
        }
    }
    Ok(())
}

/// A quiet logger for one-shot CLI commands: warnings and errors to stderr.
pub fn init_cli() {
    let filter = EnvFilter::try_new(std::env::var("SYMBOLON_LOG").unwrap_or_else(|_| "warn".into()))
        .unwrap_or_else(|_| EnvFilter::new("warn"));
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(
            tracing_subscriber::fmt::layer()
                .with_ansi(std::io::stderr().is_terminal())
                .with_writer(std::io::stderr)
                .without_time(),
        )
        .try_init();
}
