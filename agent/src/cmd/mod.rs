//! The subcommands, one file each, and what they share (logging set-up).
//!
//! | command | does | exit code |
//! |---|---|---|
//! | `run` | the daemon: cycles forever, heartbeats, backoff, systemd notifications | 0 on SIGTERM/SIGINT, 1 on a start-up error |
//! | `once` | one cycle, then status.json; prints the status report on stdout | [`crate::Outcome::exit_code`]; 1 on a start-up error |
//! | `state` | prints the local state file | 0, or 1 if it is unreadable |

pub mod once;
pub mod run;
pub mod state;

use crate::config::LogFormat;

/// Sets up `tracing` on stderr: `RUST_LOG` filters (default `info`), `format` picks
/// human lines or one JSON object per line.
pub fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    // A second initialisation (tests calling commands in one process) is harmless.
    let _ = match format {
        LogFormat::Human => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}
