//! The subcommands, one file each. Logging is set up by `main.rs` with
//! [`fleet_core::logging`], so every fleet binary logs the same way.
//!
//! | command | does | exit code |
//! |---|---|---|
//! | `run` | the daemon: cycles forever, heartbeats, backoff, systemd notifications | 0 on SIGTERM/SIGINT, 1 on a start-up error |
//! | `once` | one cycle, then status.json; prints the status report on stdout | [`crate::Outcome::exit_code`]; 1 on a start-up error |
//! | `state` | prints the local state file | 0, or 1 if it is unreadable |
//! | `pause` | writes `<state-dir>/pause.json`: deploys stop until `resume` or `--until` | 0, or 1 if it cannot be written |
//! | `resume` | removes the pause file | 0, or 1 if it cannot be removed |
//! | `init` | creates the identity key and prints an enrollment request; with `--bundle`, installs a bootstrap bundle | 0, or 1 on any error |

pub mod init;
pub mod once;
pub mod pause;
pub mod resume;
pub mod run;
pub mod state;
