//! Health checks run after each activation.
//!
//! Four kinds, each bounded by its own timeout:
//!
//! - `systemd-unit`: the unit must be `active` (`systemctl is-active`);
//! - `system-running`: the system must be `running`, not `degraded`
//!   (`systemctl is-system-running`); both are in `health/systemctl.rs`. Where systemd
//!   is not the service manager (no `<facts-root>/run/systemd/system`, as in
//!   containers) these two are skipped with a note in the log, not failed;
//! - `command`: the program must exit 0 (run without a shell, stdin closed);
//! - `http`: a GET of the URL must answer 2xx (redirects are not followed).
//!
//! Programs run with only the allow-listed environment of [`crate::childenv`] (no
//! credentials), and are found on its `PATH`.
//!
//! A check is retried every second until it passes or its timeout is spent, because
//! services restarted by `switch-to-configuration` need a moment to come up. With a
//! `grace` shorter than the timeout, a failure after the grace ends the check at once,
//! except a unit or system still settling (`activating`, `starting`, …), which is
//! waited for until the timeout. The first check that fails ends the run; its message
//! names the check and what it saw.

mod systemctl;

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::childenv::ChildEnv;

/// What a check looks at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CheckKind {
    /// A systemd unit that must be active.
    SystemdUnit(String),
    /// `systemctl is-system-running` must say `running`.
    SystemRunning,
    /// A command that must exit 0.
    Command(Vec<String>),
    /// A URL that must answer 2xx.
    Http(String),
}

/// A configured health check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Check {
    /// What it looks at.
    pub kind: CheckKind,
    /// How long it may take to pass.
    pub timeout: Duration,
    /// How long failures are retried; after it, only a unit or system still settling
    /// is. `None`: the whole timeout.
    pub grace: Option<Duration>,
}

impl std::fmt::Display for Check {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.kind {
            CheckKind::SystemdUnit(u) => write!(f, "systemd-unit {u}"),
            CheckKind::SystemRunning => f.write_str("system-running"),
            CheckKind::Command(argv) => write!(f, "command {argv:?}"),
            CheckKind::Http(url) => write!(f, "http {url}"),
        }
    }
}

/// A failed check: which one and why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("health check {check} failed within {timeout:?}: {why}")]
pub struct HealthFailure {
    /// The check, as configured.
    pub check: String,
    /// Its timeout.
    pub timeout: Duration,
    /// What the last attempt saw.
    pub why: String,
}

/// Why one attempt failed, and whether the thing looked at is still on its way.
#[derive(Debug)]
struct Failure {
    why: String,
    settling: bool,
}

impl Failure {
    fn hard(why: String) -> Self {
        Self {
            why,
            settling: false,
        }
    }

    fn settling(why: String) -> Self {
        Self {
            why,
            settling: true,
        }
    }
}

/// Whether systemd is the service manager of the system under `root` (the
/// `sd_booted` test on `<root>/run/systemd/system`).
pub fn systemd_running(root: &Path) -> bool {
    std::fs::symlink_metadata(root.join("run/systemd/system")).is_ok_and(|m| m.is_dir())
}

/// Runs `checks` in order, programs with the environment `env`; the first failure
/// ends the run. systemd checks are skipped unless systemd runs under `root`.
pub async fn run_all(checks: &[Check], env: &ChildEnv, root: &Path) -> Result<(), HealthFailure> {
    let systemd = systemd_running(root);
    let client = http_client();
    for c in checks {
        let asks_systemd = matches!(c.kind, CheckKind::SystemdUnit(_) | CheckKind::SystemRunning);
        if asks_systemd && !systemd {
            tracing::info!(check = %c, "skipping health check: systemd is not running here");
            continue;
        }
        run_one(c, &client, env).await?;
        tracing::info!(check = %c, "health check passed");
    }
    Ok(())
}

fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap_or_default()
}

async fn run_one(c: &Check, client: &reqwest::Client, env: &ChildEnv) -> Result<(), HealthFailure> {
    let start = Instant::now();
    let deadline = start + c.timeout;
    let grace_end = start + c.grace.unwrap_or(c.timeout);
    let mut last = String::from("it did not run");
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        match tokio::time::timeout(left, attempt(c, client, env)).await {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(f)) => {
                last = f.why;
                if !f.settling && Instant::now() >= grace_end {
                    last = format!(
                        "{last} (after the grace of {:?})",
                        c.grace.unwrap_or_default()
                    );
                    break;
                }
            }
            Err(_) => {
                last = format!("{last} (last attempt still running at the deadline)");
                break;
            }
        }
        let pause = Duration::from_secs(1).min(deadline.saturating_duration_since(Instant::now()));
        if pause.is_zero() {
            break;
        }
        tokio::time::sleep(pause).await;
    }
    Err(HealthFailure {
        check: c.to_string(),
        timeout: c.timeout,
        why: last,
    })
}

async fn attempt(c: &Check, client: &reqwest::Client, env: &ChildEnv) -> Result<(), Failure> {
    match &c.kind {
        CheckKind::SystemdUnit(unit) => systemctl::unit_active(unit, env).await,
        CheckKind::SystemRunning => systemctl::system_running(env).await,
        CheckKind::Command(argv) => run_command(argv, env).await.map_err(Failure::hard),
        CheckKind::Http(url) => match client.get(url).send().await {
            Ok(r) if r.status().is_success() => Ok(()),
            Ok(r) => Err(Failure::hard(format!("it answered {}", r.status()))),
            Err(e) => Err(Failure::hard(format!(
                "request failed: {}",
                error_chain(&e)
            ))),
        },
    }
}

async fn run_command(argv: &[String], env: &ChildEnv) -> Result<(), String> {
    let mut cmd = tokio::process::Command::new(&argv[0]);
    env.apply(&mut cmd);
    let out = cmd
        .args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        // A check cut off by its timeout must not linger.
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| format!("cannot start {:?}: {e}", argv[0]))?;
    if out.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stderr = stderr.trim();
    let tail: String = stderr
        .char_indices()
        .rev()
        .nth(300)
        .map(|(i, _)| &stderr[i..])
        .unwrap_or(stderr)
        .to_owned();
    if tail.is_empty() {
        Err(format!("it exited with {}", out.status))
    } else {
        Err(format!("it exited with {}: {tail}", out.status))
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}

#[cfg(test)]
mod tests;
