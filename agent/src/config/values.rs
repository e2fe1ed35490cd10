//! Checks of single setting values shared by the agent's settings: durations with
//! a default, absolute paths, the metrics file name and public-key lists, each
//! error naming its setting.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::ensure;
use fleet_core::duration::Zero;
use fleet_core::{PublicKey, TrustedKeys};

/// A duration setting (zero refused), or `default` when unset.
pub(super) fn duration_or(
    field: &str,
    v: &Option<String>,
    default: Duration,
) -> anyhow::Result<Duration> {
    Ok(fleet_core::duration::duration_or(
        field,
        v.as_deref(),
        Zero::Refused,
        default,
    )?)
}

/// An absolute path without `..`.
pub(super) fn absolute(field: &str, p: &Path) -> anyhow::Result<PathBuf> {
    ensure!(
        p.is_absolute(),
        "{field} = {} must be an absolute path",
        p.display()
    );
    ensure!(
        !p.components().any(|c| c == std::path::Component::ParentDir),
        "{field} = {} may not contain `..`",
        p.display()
    );
    Ok(p.to_owned())
}

/// The metrics file: absolute, ending in `.prom`.
pub(super) fn metrics_file(p: &Path) -> anyhow::Result<PathBuf> {
    let p = absolute("metrics-file", p)?;
    ensure!(
        p.extension().is_some_and(|e| e == "prom"),
        "metrics-file = {} must end in .prom: node-exporter's textfile collector reads only *.prom files",
        p.display()
    );
    Ok(p)
}

/// A non-empty list of public keys (`name:base64`).
pub(super) fn keys(field: &str, texts: &[String]) -> anyhow::Result<TrustedKeys> {
    ensure!(
        !texts.is_empty(),
        "{field} is empty: give at least one public key (`name:base64`); without one the agent would refuse everything"
    );
    let keys = texts
        .iter()
        .enumerate()
        .map(|(i, t)| PublicKey::parse(t, &format!("{field}[{i}]")))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(TrustedKeys::new(keys))
}
