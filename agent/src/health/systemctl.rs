//! The two checks that ask systemd, through the `systemctl` found on the children's
//! `PATH` (with their allow-listed environment):
//!
//! - a unit: `systemctl is-active -- UNIT` prints the unit's state; `active` passes,
//!   `activating`, `reloading`, `refreshing` and `deactivating` are still settling
//!   (waited for until the timeout), anything else (`failed`, `inactive`, …) fails;
//! - the system: `systemctl is-system-running` prints the manager's state; `running`
//!   passes, `initializing` and `starting` are settling, `degraded` (some unit
//!   failed) and anything else fails.
//!
//! The exit code is not used: the printed state says more, and both commands exit
//! non-zero for every state but the good one.

use std::process::Stdio;

use super::Failure;
use crate::childenv::ChildEnv;

/// Unit states that are on their way somewhere.
const UNIT_SETTLING: &[&str] = &["activating", "reloading", "refreshing", "deactivating"];
/// Manager states on the way to `running`.
const SYSTEM_SETTLING: &[&str] = &["initializing", "starting"];

/// Whether `unit` is active.
pub(super) async fn unit_active(unit: &str, env: &ChildEnv) -> Result<(), Failure> {
    let state = systemctl(&["is-active", "--", unit], env).await?;
    match state.as_str() {
        "active" => Ok(()),
        s if UNIT_SETTLING.contains(&s) => Err(Failure::settling(format!("unit is {s}"))),
        s => Err(Failure::hard(format!("unit is {s}"))),
    }
}

/// Whether the system is `running` (not `degraded`).
pub(super) async fn system_running(env: &ChildEnv) -> Result<(), Failure> {
    let state = systemctl(&["is-system-running"], env).await?;
    match state.as_str() {
        "running" => Ok(()),
        s if SYSTEM_SETTLING.contains(&s) => Err(Failure::settling(format!("the system is {s}"))),
        "degraded" => Err(Failure::hard(
            "the system is degraded: a unit failed (`systemctl --failed` lists them)".into(),
        )),
        s => Err(Failure::hard(format!("the system is {s}"))),
    }
}

/// The first line `systemctl ARGS` prints.
async fn systemctl(args: &[&str], env: &ChildEnv) -> Result<String, Failure> {
    let mut cmd = tokio::process::Command::new("systemctl");
    env.apply(&mut cmd);
    let out = cmd
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| Failure::hard(format!("cannot start systemctl: {e}")))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    match stdout.lines().next().map(str::trim) {
        Some(state) if !state.is_empty() => Ok(state.chars().take(64).collect()),
        _ => Err(Failure::hard(format!(
            "systemctl {} printed no state ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))),
    }
}
