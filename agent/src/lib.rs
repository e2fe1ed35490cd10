//! `fleet-agent`: the daemon on each host. It follows the host's signed manifest in the
//! fleet bucket, runs exactly the prebuilt closure signed for it (it never evaluates
//! or builds), and reports back.
//!
//! - [`cycle`]: the poll → verify → fetch → activate → health → commit | roll back
//!   state machine, with the restart rules that make `kill -9` at any step safe;
//! - [`fetch`]: downloading, verifying and importing the missing store paths;
//! - [`activate`]: profile switch and the closure's `switch-to-configuration`;
//! - [`health`]: health checks (systemd units, commands, HTTP);
//! - [`childenv`]: the allow-listed environment of switch and health checks;
//! - [`credentials`]: S3 credentials from `$CREDENTIALS_DIRECTORY`;
//! - [`identity`]: the host's identity key, which signs its status reports;
//! - [`state`]: the state file, written atomically;
//! - [`trust`]: the root of trust the host walks and the version it keeps;
//! - [`pause`]: the operator's local pause file;
//! - [`reboot`]: the reboot policy and command for `boot` deploys;
//! - [`window`]: maintenance windows;
//! - [`metrics`]: Prometheus text for node-exporter's textfile collector;
//! - [`report`]: status objects and queued events in the bucket;
//! - [`change_marker`]: the change-feed marker written beside each status;
//! - [`facts`]: host facts for the status;
//! - [`schedule`]: poll interval, jitter, backoff;
//! - [`notify`]: systemd readiness and watchdog;
//! - [`config`]: the one configuration schema (flags, environment, TOML);
//! - [`cmd`]: the subcommands (`run`, `once`, `state`, `pause`, `resume`, `init`).

#![warn(missing_docs)]

pub mod activate;
pub mod change_marker;
pub mod childenv;
pub mod cmd;
pub mod config;
pub mod credentials;
pub mod cycle;
pub mod facts;
pub mod fetch;
pub mod health;
pub mod identity;
pub mod metrics;
pub mod notify;
pub mod pause;
pub mod reboot;
pub mod report;
pub mod schedule;
pub mod state;
pub mod trust;
pub mod window;

pub use cycle::{Agent, Outcome};
