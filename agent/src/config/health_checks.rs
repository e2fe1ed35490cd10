//! One entry of `health-checks`: the file and command-line form
//! ([`HealthCheckSpec`]) and its check into a [`Check`], refusing bad values with the
//! setting's name (`health-checks[N].grace`, …).

use std::str::FromStr;
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use fleet_core::duration::{Zero, parse_duration};
use serde::{Deserialize, Serialize};

use super::duration_or;
use crate::health::{Check, CheckKind};

/// One health check as written in the file (`{ systemd-unit = "…" }`, `{ command =
/// […] }`, `{ http = "…" }`, each with an optional `timeout`) or on the command line
/// (`KIND=VALUE`).
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, Eq)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct HealthCheckSpec {
    /// A systemd unit that must be active.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub systemd_unit: Option<String>,
    /// A command that must exit 0 (program and arguments).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    /// A URL that must answer 2xx to a GET.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<String>,
    /// `true`: `systemctl is-system-running` must say `running` (`degraded` fails).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_running: Option<bool>,
    /// Bound on this check (default: `health-timeout`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    /// How long failures are retried (default: the whole timeout); after it a failure
    /// is final unless the unit or system is still settling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grace: Option<String>,
}

impl FromStr for HealthCheckSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (kind, value) = s.split_once('=').ok_or_else(|| {
            format!(
                "health check {s:?} is not KIND=VALUE (systemd-unit=UNIT, http=URL or command=PROGRAM ARGS…)"
            )
        })?;
        let mut spec = HealthCheckSpec::default();
        match kind {
            "systemd-unit" => spec.systemd_unit = Some(value.to_owned()),
            "http" => spec.http = Some(value.to_owned()),
            "command" => spec.command = Some(value.split_whitespace().map(str::to_owned).collect()),
            "system-running" => {
                spec.system_running = Some(value.parse().map_err(|_| {
                    format!("health check system-running={value:?}: give system-running=true")
                })?)
            }
            other => {
                return Err(format!(
                    "health check kind {other:?} is not one of systemd-unit, system-running, http, command"
                ));
            }
        }
        Ok(spec)
    }
}

/// Checks `spec`, the `i`th health check, with `default_timeout` when it sets none.
pub(super) fn check(
    i: usize,
    spec: &HealthCheckSpec,
    default_timeout: Duration,
) -> anyhow::Result<Check> {
    let field = format!("health-checks[{i}]");
    let timeout = duration_or(&format!("{field}.timeout"), &spec.timeout, default_timeout)?;
    let grace = match spec.grace.as_deref() {
        Some(g) => Some(parse_duration(&format!("{field}.grace"), g, Zero::Allowed)?),
        None => None,
    };
    if let Some(g) = grace {
        ensure!(
            g <= timeout,
            "{field}.grace = {:?} is longer than the check's timeout ({timeout:?}); it can only shorten the retries",
            spec.grace.as_deref().unwrap_or_default()
        );
    }
    if spec.system_running == Some(false) {
        bail!("{field}.system-running = false: set it to true, or leave the check out");
    }
    let system = spec.system_running == Some(true);
    let kind = match (&spec.systemd_unit, &spec.command, &spec.http) {
        (None, None, None) if system => CheckKind::SystemRunning,
        _ if system => {
            bail!("{field} must have exactly one of systemd-unit, system-running, command, http")
        }
        (Some(unit), None, None) => {
            ensure!(
                !unit.is_empty() && !unit.starts_with('-') && !unit.contains(char::is_whitespace),
                "{field}.systemd-unit = {unit:?} is not a unit name such as \"nginx.service\""
            );
            CheckKind::SystemdUnit(unit.clone())
        }
        (None, Some(argv), None) => {
            ensure!(
                !argv.is_empty() && !argv[0].is_empty(),
                "{field}.command is empty: give the program and its arguments as a list"
            );
            CheckKind::Command(argv.clone())
        }
        (None, None, Some(url)) => {
            let parsed = url::Url::parse(url)
                .with_context(|| format!("{field}.http = {url:?} is not a URL"))?;
            ensure!(
                matches!(parsed.scheme(), "http" | "https"),
                "{field}.http = {url:?} must start with http:// or https://"
            );
            CheckKind::Http(url.clone())
        }
        _ => bail!("{field} must have exactly one of systemd-unit, system-running, command, http"),
    };
    Ok(Check {
        kind,
        timeout,
        grace,
    })
}
