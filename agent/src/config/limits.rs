//! The settings that bound a fetch (`max-nar-size`, `max-closure-paths`,
//! `max-download-size`, `fetch-concurrency`, `import-in-waves`, `import-via`) and the reboot
//! schedule (`reboot`, `time-zone`, `maintenance-windows`, `reboot-command`),
//! checked into what the agent uses, each error naming its setting.

use std::time::Duration;

use anyhow::ensure;

use super::Config;
use crate::fetch::{FetchLimits, ImportVia};
use crate::reboot::RebootPolicy;
use crate::window::Windows;

/// The fetch bounds, with `request_timeout` for each request.
pub(super) fn fetch_limits(c: &Config, request_timeout: Duration) -> anyhow::Result<FetchLimits> {
    let defaults = FetchLimits::default();
    let fetch_limits = FetchLimits {
        max_nar_size: c.max_nar_size.unwrap_or(defaults.max_nar_size),
        max_paths: c.max_closure_paths.unwrap_or(defaults.max_paths),
        max_total_nar_size: c.max_download_size.unwrap_or(defaults.max_total_nar_size),
        concurrency: c.fetch_concurrency.unwrap_or(defaults.concurrency),
        import_in_waves: c.import_in_waves.unwrap_or(defaults.import_in_waves),
        import_via: match c.import_via.as_deref() {
            Some("substituter") => ImportVia::Substituter,
            None | Some("unpack") => ImportVia::Unpack,
            Some("staging") => ImportVia::Staging,
            Some(other) => anyhow::bail!(
                "import-via = {other:?} is not a mode; use \"unpack\" (the default), \"staging\" or \"substituter\""
            ),
        },
        request_timeout,
        ..defaults
    };
    ensure!(
        fetch_limits.max_nar_size > 0
            && fetch_limits.max_paths > 0
            && fetch_limits.max_total_nar_size > 0,
        "max-nar-size, max-closure-paths and max-download-size must be at least 1"
    );
    ensure!(
        (1..=64).contains(&fetch_limits.concurrency),
        "fetch-concurrency = {} must be between 1 and 64",
        fetch_limits.concurrency
    );
    Ok(fetch_limits)
}

/// The reboot policy, the maintenance windows and the reboot command.
pub(super) fn schedule(c: &Config) -> anyhow::Result<(RebootPolicy, Windows, Vec<String>)> {
    let reboot = RebootPolicy::parse(c.reboot.as_deref().unwrap_or("never"))?;
    let tz = crate::window::time_zone("time-zone", c.time_zone.as_deref())?;
    let windows = Windows::parse("maintenance-windows", &c.maintenance_windows, tz)?;
    ensure!(
        reboot != RebootPolicy::Window || !windows.windows.is_empty(),
        "reboot = \"window\" needs maintenance-windows: without one the host would never reboot"
    );
    let reboot_command = if c.reboot_command.is_empty() {
        vec!["systemctl".to_owned(), "reboot".to_owned()]
    } else {
        c.reboot_command.clone()
    };
    Ok((reboot, windows, reboot_command))
}
