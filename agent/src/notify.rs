//! systemd notifications (`sd_notify`): `READY=1` once the agent is up, `STATUS=` with
//! the last outcome, `WATCHDOG=1` from the main loop, `STOPPING=1` on the way out.
//!
//! Uses the `sd-notify` crate (MIT OR Apache-2.0, no dependencies, maintained by a
//! rust-analyzer maintainer): it sends one datagram to `$NOTIFY_SOCKET` (abstract
//! sockets included) and does nothing when the variable is unset, so the same binary
//! runs unchanged outside systemd. The watchdog interval comes from `$WATCHDOG_USEC`
//! (honouring `$WATCHDOG_PID`); the loop pings at half of it. Child processes
//! (`switch-to-configuration`, health checks) get none of these variables.
//!
//! The pings come from the task that runs the cycles, between its steps' awaits: a
//! stuck runtime or a step blocking the thread stops them and systemd restarts the
//! agent. Each step has its own timeout (requests, `switch-to-configuration`, health
//! checks), so `WatchdogSec` should exceed `request-timeout` × 3.

use std::time::Duration;

use sd_notify::NotifyState;

fn send(states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!("sd_notify failed: {e}");
    }
}

/// `READY=1`.
pub fn ready() {
    send(&[NotifyState::Ready]);
}

/// `STATUS=<text>`.
pub fn status(text: &str) {
    send(&[NotifyState::Status(text)]);
}

/// `WATCHDOG=1`.
pub fn watchdog() {
    send(&[NotifyState::Watchdog]);
}

/// `STOPPING=1`.
pub fn stopping() {
    send(&[NotifyState::Stopping]);
}

/// How often to ping the watchdog, if systemd asked for pings.
pub fn watchdog_interval() -> Option<Duration> {
    sd_notify::watchdog_enabled().map(|d| (d / 2).max(Duration::from_millis(100)))
}
