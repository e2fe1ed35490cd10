//! The one logging set-up of every fleet binary: `tracing` to stderr, filtered by
//! `FLEET_LOG` (or, when that is unset, the Rust-wide `RUST_LOG`), in human lines or
//! one JSON object per line.
//!
//! The filter syntax is `tracing_subscriber`'s `EnvFilter`: `info`, `warn`,
//! `info,fleet_agent=debug`, … Each binary passes its own default level: the daemons
//! (`fleet-agent`, `fleet-reporter`) log `info`, the interactive `fleet-publish` only
//! `warn`, since its results go to stdout.

use std::io::IsTerminal;

/// The environment variable that filters logs in every fleet binary.
pub const LOG_ENV: &str = "FLEET_LOG";

/// How log lines are written.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    clap::ValueEnum,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines (coloured when stderr is a terminal).
    #[default]
    Human,
    /// One JSON object per line, for journald or a log shipper.
    Json,
}

/// Sets up `tracing` on stderr. `default_filter` applies when neither `FLEET_LOG` nor
/// `RUST_LOG` is set (or holds a filter that does not parse). Calling it again in the
/// same process (tests running commands in process) changes nothing.
pub fn init_logging(default_filter: &str, format: LogFormat) {
    let from = |var: &str| {
        std::env::var(var)
            .ok()
            .filter(|v| !v.trim().is_empty())
            .and_then(|v| tracing_subscriber::EnvFilter::try_new(v).ok())
    };
    let filter = from(LOG_ENV)
        .or_else(|| from("RUST_LOG"))
        .unwrap_or_else(|| tracing_subscriber::EnvFilter::new(default_filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Human => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}
