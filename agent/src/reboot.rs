//! Reboots for `boot` activations: the policy (`reboot`), what the host booted, and
//! running the reboot command.
//!
//! - `reboot = "never"` (default): the agent only reports `reboot-pending`; an
//!   operator reboots. `"when-idle"`: the agent reboots as soon as no user is logged
//!   in (no session file under `<facts-root>/run/systemd/sessions/`, where logind
//!   keeps one per session). `"window"`: only inside a maintenance window
//!   (`maintenance-windows`, which must then be set).
//! - The booted system is the store path `<facts-root>/run/booted-system` points at;
//!   whether a reboot happened is told by `<facts-root>/proc/sys/kernel/random/boot_id`
//!   changing. `facts-root` is `/` on a host; tests point it at a directory they
//!   control.
//! - `reboot-command` (default `systemctl reboot`) runs with the children's clean
//!   environment ([`crate::childenv`]) and a one-minute bound; it is expected to
//!   return while the shutdown begins.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use anyhow::bail;
use fleet_core::StorePath;
use jiff::Timestamp;

use crate::childenv::ChildEnv;
use crate::window::Windows;

/// When the agent may reboot the host for a `boot` activation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RebootPolicy {
    /// Never: report `reboot-pending` and wait for an operator.
    Never,
    /// As soon as no user is logged in.
    WhenIdle,
    /// Inside a maintenance window.
    Window,
}

impl RebootPolicy {
    /// Parses the setting `reboot`.
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        Ok(match text {
            "never" => Self::Never,
            "when-idle" => Self::WhenIdle,
            "window" => Self::Window,
            other => bail!(
                "reboot = {other:?} is not a reboot policy: write \"never\", \"when-idle\" or \"window\""
            ),
        })
    }

    /// Its setting text.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Never => "never",
            Self::WhenIdle => "when-idle",
            Self::Window => "window",
        }
    }

    /// Whether it allows a reboot now; `Err` says why not, for the log.
    pub fn allows(
        self,
        facts_root: &Path,
        windows: &Windows,
        now: Timestamp,
    ) -> Result<(), String> {
        match self {
            Self::Never => Err("reboot = \"never\": reboot the host to run it".into()),
            Self::WhenIdle => match logged_in(facts_root) {
                0 => Ok(()),
                n => Err(format!(
                    "reboot = \"when-idle\": {n} login session(s) open; rebooting when none is"
                )),
            },
            Self::Window if windows.is_open(now) => Ok(()),
            Self::Window => Err(format!(
                "reboot = \"window\": outside the maintenance windows {}",
                windows.describe()
            )),
        }
    }
}

/// The store path `<facts_root>/run/booted-system` points at.
pub fn booted_system(facts_root: &Path) -> Option<StorePath> {
    crate::activate::profile_target(&facts_root.join("run/booted-system"))
}

/// This boot's id, if the kernel tells it.
pub fn boot_id(facts_root: &Path) -> Option<String> {
    crate::facts::gather(facts_root).boot_id
}

/// How many logind sessions are open.
fn logged_in(facts_root: &Path) -> usize {
    std::fs::read_dir(facts_root.join("run/systemd/sessions"))
        .map(|dir| {
            dir.filter_map(Result::ok)
                .filter(|e| {
                    let name = e.file_name();
                    let name = name.to_string_lossy();
                    !name.ends_with(".ref") && e.file_type().is_ok_and(|t| t.is_file())
                })
                .count()
        })
        .unwrap_or(0)
}

/// Runs `command` (program and arguments) to reboot the host.
pub async fn run(command: &[String], env: &ChildEnv) -> Result<(), String> {
    let Some((program, args)) = command.split_first() else {
        return Err("reboot-command is empty".into());
    };
    tracing::warn!(command = ?command, "rebooting the host");
    let mut cmd = tokio::process::Command::new(program);
    env.apply(&mut cmd);
    let child = cmd
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot start reboot-command {program}: {e}"))?;
    match tokio::time::timeout(Duration::from_secs(60), child.wait_with_output()).await {
        Err(_) => Err(format!(
            "reboot-command {program} did not return within 60s"
        )),
        Ok(Err(e)) => Err(format!("reboot-command {program}: {e}")),
        Ok(Ok(out)) if out.status.success() => Ok(()),
        Ok(Ok(out)) => Err(format!(
            "reboot-command {program} exited with {}: {}",
            out.status,
            fleet_core::nixcli::tail(&out.stderr, 500)
        )),
    }
}
