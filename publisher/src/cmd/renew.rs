//! `fleet-publish renew`: re-signs the manifests that expire soon with the same
//! closure, a higher sequence and a new expiry (the engine is [`mod@crate::renew`]).
//! Meant to run on a schedule (docs/operations.md shows a CI cron job and a systemd
//! timer). Prints one line per host renewed on standard output:
//!
//! ```text
//! web-1: renewed sequence 9 (was 8) -> /nix/store/…-nixos-system-web-1, expires 2026-01-15T12:00:00Z
//! ```
//!
//! and a summary on standard error; `--json` prints the whole report as JSON
//! instead. Exit code 1 when any host failed.

use anyhow::bail;
use clap::Args;
use fleet_core::duration::{Zero, parse_duration};
use jiff::SignedDuration;
use serde::{Deserialize, Serialize};

use crate::cmd::resign::{HostArgs, ResignOptions};
use crate::config::ConfigFile;
use crate::renew::{DEFAULT_CONCURRENCY, DEFAULT_WITHIN, RenewSettings, renew};

/// `renew` options (also config-file keys).
#[derive(Args, Serialize, Deserialize, Debug, Default, Clone)]
#[serde(rename_all = "kebab-case", default)]
pub struct RenewOptions {
    /// Bucket, keys, lifetime.
    #[command(flatten)]
    #[serde(flatten)]
    pub resign: ResignOptions,
    /// Renew manifests that expire within this window: "2d", "36h" [default: 2d].
    #[arg(long, env = "FLEET_RENEW_WITHIN", value_name = "DURATION")]
    pub within: Option<String>,
    /// Hosts renewed at once [default: 32].
    #[arg(long, env = "FLEET_RENEW_CONCURRENCY", value_name = "N")]
    pub renew_concurrency: Option<usize>,
}

/// `renew` arguments.
#[derive(Args, Debug, Clone)]
pub struct RenewArgs {
    /// Options.
    #[command(flatten)]
    pub options: RenewOptions,
    /// Which hosts [default: --all].
    #[command(flatten)]
    pub hosts: HostArgs,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `fleet-publish renew`.
pub async fn run(args: RenewArgs, config_file: &ConfigFile) -> anyhow::Result<()> {
    let o = config_file.layer(args.options)?;
    let r = o.resign.resolve()?;
    let within = match &o.within {
        Some(t) => SignedDuration::try_from(parse_duration("within", t, Zero::Allowed)?)?,
        None => DEFAULT_WITHIN,
    };
    let concurrency = o.renew_concurrency.unwrap_or(DEFAULT_CONCURRENCY);
    if !(1..=1024).contains(&concurrency) {
        bail!("renew-concurrency = {concurrency} is out of range: give 1 to 1024");
    }
    let nothing_named = args.hosts.host.is_empty() && args.hosts.hosts.is_none();
    let selection = if nothing_named {
        crate::cmd::resign::HostSelection::All
    } else {
        args.hosts.selection("renew")?
    };
    let hosts = selection.hosts(&r.bucket).await?;
    let settings = RenewSettings {
        within,
        expires_in: r.expires_in,
        trusted: r.trusted,
        concurrency,
        ..RenewSettings::default()
    };
    let report = renew(&r.bucket, &r.signing_key, &hosts, &settings).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        for o in &report.renewed {
            let prev = o
                .previous_sequence
                .map_or_else(|| "none".to_owned(), |s| s.to_string());
            println!(
                "{}: renewed sequence {} (was {prev}) -> {}, expires {}",
                o.host, o.sequence, o.closure, o.expires_at
            );
        }
        for (h, e) in &report.failed {
            eprintln!("{h}: renew failed: {e}");
        }
        eprintln!(
            "renewed {}, not due {}, failed {}",
            report.renewed.len(),
            report.not_due.len(),
            report.failed.len()
        );
    }
    if !report.failed.is_empty() {
        bail!(
            "{} host(s) could not be renewed: {}",
            report.failed.len(),
            report
                .failed
                .iter()
                .map(|(h, _)| h.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(())
}
