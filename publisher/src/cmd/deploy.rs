//! `fleet-publish deploy`: turns the options into [`DeployTarget`]s and
//! [`DeploySettings`], runs the deploy engine ([`mod@crate::deploy`]: push, then
//! one signed manifest per host by compare-and-swap, then an audit entry), and prints
//! the push summary on standard error and one line per host on standard output:
//!
//! ```text
//! web-1: sequence 8 (was 7) -> /nix/store/…-nixos-system-web-1, expires 2026-01-08T12:00:00Z, audit audit/20260101T120000.000Z-web-1-8.json
//! ```
//!
//! `--dry-run` writes nothing and prints per host what would change
//! ([`mod@crate::dry_run`]; `--json` for JSON):
//!
//! ```text
//! web-1: sequence 7 /nix/store/…-a -> /nix/store/…-b, 12 of 340 paths to download, 40.1 MiB compressed, 120.3 MiB unpacked, activation switch, from the bucket
//! ```
//!
//! `--hosts FILE` deploys many hosts at once: a JSON object mapping host names to
//! closures, `{"web-1": "/nix/store/…", …}`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use fleet_core::duration::{Zero, parse_duration};
use fleet_core::nixcli::Nix;
use fleet_core::{Activation, HostName, TrustedKeys};
use jiff::SignedDuration;
use serde::{Deserialize, Serialize};

use crate::config::{self, ConfigFile, ExtraCacheKeyOptions, PushOptions, TrustedKeyOptions};
use crate::deploy::{
    DEFAULT_EXPIRES_IN, DEFAULT_MAX_ATTEMPTS, DeploySettings, DeployTarget, MAX_EXPIRES_IN,
    cache_keys, deploy,
};
use crate::dry_run::{HostDiff, dry_run};

/// How the agent activates the closure.
#[derive(ValueEnum, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ActivationArg {
    /// Make it the boot default and switch to it now.
    Switch,
    /// Make it the boot default; it runs after the next reboot.
    Boot,
    /// Switch to it now without making it the boot default.
    Test,
}

impl From<ActivationArg> for fleet_core::Activation {
    fn from(a: ActivationArg) -> Self {
        match a {
            ActivationArg::Switch => fleet_core::Activation::Switch,
            ActivationArg::Boot => fleet_core::Activation::Boot,
            ActivationArg::Test => fleet_core::Activation::Test,
        }
    }
}

/// `deploy` options.
#[derive(Args, Serialize, Deserialize, Debug, Default, Clone)]
#[serde(rename_all = "kebab-case", default)]
pub struct DeployOptions {
    /// Push options.
    #[command(flatten)]
    #[serde(flatten)]
    pub push: PushOptions,
    /// Secret key file that signs manifests (the publisher key) (required).
    #[arg(long, env = "FLEET_SIGNING_KEY", value_name = "FILE")]
    pub signing_key: Option<PathBuf>,
    /// The host to deploy (with --closure).
    #[arg(long, env = "FLEET_HOST", value_name = "HOST")]
    pub host: Option<String>,
    /// The host's system closure: a store path or a symlink to one such as ./result.
    #[arg(long, env = "FLEET_CLOSURE", value_name = "PATH")]
    pub closure: Option<String>,
    /// JSON file mapping host names to closures, `{"web-1": "/nix/store/…", …}`, to
    /// deploy many hosts at once (instead of --host/--closure).
    #[arg(long, env = "FLEET_HOSTS", value_name = "FILE", conflicts_with_all = ["host", "closure"])]
    pub hosts: Option<PathBuf>,
    /// How long the manifest stays valid: "7d", "12h", "90m", "P7D" [default: 7d].
    #[arg(long, env = "FLEET_EXPIRES_IN", value_name = "DURATION")]
    pub expires_in: Option<String>,
    /// How the agent activates the closure [default: switch].
    #[arg(long, env = "FLEET_ACTIVATION", value_enum)]
    pub activation: Option<ActivationArg>,
    /// Hosts fetch at once but activate only from this time (RFC 3339,
    /// "2026-12-03T02:00:00Z") [default: at once].
    #[arg(long, env = "FLEET_ACTIVATE_AFTER", value_name = "TIME")]
    pub activate_after: Option<String>,
    /// Maintenance window for this deploy, replacing the hosts' own
    /// ("Mon-Fri 02:00-04:00", in each host's time zone); repeatable [default: the hosts'].
    #[arg(long = "maintenance-window", value_name = "DAYS HH:MM-HH:MM")]
    #[serde(default, rename = "maintenance-window")]
    pub maintenance_windows: Vec<String>,
    /// Trusted publisher keys.
    #[command(flatten)]
    #[serde(flatten)]
    pub trusted: TrustedKeyOptions,
    /// Other cache keys accepted (cache key rotation).
    #[command(flatten)]
    #[serde(flatten)]
    pub extra_cache_keys: ExtraCacheKeyOptions,
}

/// `deploy` arguments.
#[derive(Args, Debug, Clone)]
pub struct DeployArgs {
    /// Options (also from environment and file).
    #[command(flatten)]
    pub options: DeployOptions,
    /// Emergency override: write this sequence number even if the current manifest
    /// cannot be verified (lost or rotated publisher key). It must be higher than any
    /// sequence the host has accepted. Command line only.
    #[arg(long, value_name = "N")]
    pub force_sequence: Option<u64>,
    /// Deploy held hosts (`fleet-publish hold`) and retired ones (`retire`: this
    /// brings them back) too; without it they are skipped with a warning. Command
    /// line only.
    #[arg(long)]
    pub force: bool,
    /// Print per host what the deploy would change (current -> new closure, paths
    /// and bytes to download) and write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// With --dry-run: print JSON.
    #[arg(long, requires = "dry_run")]
    pub json: bool,
}

/// Parses a manifest lifetime ([`fleet_core::duration`]: "7d", "12h", "P7D", …),
/// refusing zero and anything over a year.
pub fn parse_expires_in(text: &str) -> anyhow::Result<SignedDuration> {
    let d = parse_duration("expires-in", text, Zero::Refused)?;
    let d = SignedDuration::try_from(d)
        .map_err(|e| anyhow::anyhow!("expires-in = {text:?} is out of range ({e})"))?;
    if d > MAX_EXPIRES_IN {
        bail!(
            "expires-in = {text:?} is longer than a year, which would make the freeze-attack \
             bound meaningless; give at most 365d"
        );
    }
    Ok(d)
}

/// Reads `--hosts FILE`: a JSON object mapping host names to closures.
pub fn read_hosts_file(path: &Path) -> anyhow::Result<Vec<DeployTarget>> {
    let text =
        std::fs::read(path).with_context(|| format!("reading hosts file {}", path.display()))?;
    let map: BTreeMap<String, String> = serde_json::from_slice(&text).with_context(|| {
        format!(
            "hosts file {} is not a JSON object mapping host names to closures, like \
             {{\"web-1\": \"/nix/store/…-nixos-system-web-1\"}}",
            path.display()
        )
    })?;
    if map.is_empty() {
        bail!("hosts file {} names no host", path.display());
    }
    map.into_iter()
        .map(|(h, c)| {
            let host = HostName::new(&h)
                .with_context(|| format!("hosts file {}: key {h:?}", path.display()))?;
            let closure = crate::resolve_store_path(&c)
                .with_context(|| format!("hosts file {}: closure of {h}", path.display()))?;
            Ok(DeployTarget { host, closure })
        })
        .collect()
}

/// `fleet-publish deploy`.
pub async fn run(args: DeployArgs, config_file: &ConfigFile) -> anyhow::Result<()> {
    let o = config_file.layer(args.options)?;
    let store = config::bucket(&o.push.bucket, &o.push.store)?;
    let cache_key_file = config::required(&o.push.cache_key, "cache-key", "FLEET_CACHE_KEY")?;
    let signing_key_file = config::required(&o.signing_key, "signing-key", "FLEET_SIGNING_KEY")?;
    let targets = match (&o.hosts, &o.host, &o.closure) {
        (Some(f), None, None) => read_hosts_file(f)?,
        (Some(_), _, _) => bail!("give either --hosts FILE or --host with --closure, not both"),
        (None, Some(h), Some(c)) => vec![DeployTarget {
            host: HostName::new(h).context("--host")?,
            closure: crate::resolve_store_path(c).context("--closure")?,
        }],
        (None, Some(_), None) => bail!(
            "no closure given for --host: pass --closure PATH (or FLEET_CLOSURE / `closure` in the config file)"
        ),
        (None, None, _) => bail!(
            "no host given: pass --host HOST with --closure PATH, or --hosts FILE for many hosts"
        ),
    };
    let settings = DeploySettings {
        push: o.push.settings()?,
        expires_in: match &o.expires_in {
            Some(t) => parse_expires_in(t)?,
            None => DEFAULT_EXPIRES_IN,
        },
        activation: o.activation.map_or(Activation::Switch, Into::into),
        trusted: o.trusted.keys()?,
        force_sequence: args.force_sequence,
        force: args.force,
        max_attempts: DEFAULT_MAX_ATTEMPTS,
        extra_cache_keys: o.extra_cache_keys.keys()?,
        activate_after: o
            .activate_after
            .as_deref()
            .map(|t| {
                t.parse::<jiff::Timestamp>().map_err(|e| {
                    anyhow::anyhow!(
                        "--activate-after {t:?} is not an RFC 3339 time like \"2026-12-03T02:00:00Z\": {e}"
                    )
                })
            })
            .transpose()?,
        maintenance_windows: o.maintenance_windows.clone(),
    };
    if settings.force_sequence.is_some() && targets.len() > 1 {
        bail!("--force-sequence applies to one host; use --host/--closure, not --hosts");
    }
    let cache_key = crate::load_secret_key(cache_key_file, "cache key (--cache-key)")?;
    let signing_key = crate::load_secret_key(signing_key_file, "signing key (--signing-key)")?;
    let bucket = crate::open_bucket(store)?;
    if args.dry_run {
        let publishers = TrustedKeys::new(
            std::iter::once(signing_key.public()).chain(settings.trusted.iter().cloned()),
        );
        let caches = TrustedKeys::new(cache_keys(&cache_key, &settings.extra_cache_keys));
        let diffs = dry_run(
            &bucket,
            &Nix::default_store(),
            &targets,
            &publishers,
            &caches,
            settings.activation,
        )
        .await?;
        if args.json {
            println!("{}", serde_json::to_string_pretty(&diffs)?);
        } else {
            for d in &diffs {
                println!("{}", describe(d));
            }
        }
        return Ok(());
    }
    let (summary, outcomes) = deploy(
        &bucket,
        &Nix::default_store(),
        &cache_key,
        &signing_key,
        &targets,
        &settings,
    )
    .await?;
    eprintln!("pushed to {store}: {summary}");
    for o in &outcomes {
        let prev = o
            .previous_sequence
            .map_or_else(|| "none".to_owned(), |s| s.to_string());
        println!(
            "{}: sequence {} (was {prev}) -> {}, expires {}, audit {}",
            o.host, o.sequence, o.closure, o.expires_at, o.audit_key
        );
    }
    Ok(())
}

/// One line of `--dry-run` output.
pub fn describe(d: &HostDiff) -> String {
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    let current = match (&d.current_sequence, &d.current_closure) {
        (Some(s), Some(c)) => format!("sequence {s} {c}"),
        _ => "no manifest".to_owned(),
    };
    let mut line = format!("{}: {current} -> {}", d.host, d.new_closure);
    if d.unchanged {
        line.push_str(" (unchanged: only a new sequence and expiry)");
    } else {
        line.push_str(&format!(
            ", {} of {} paths to download, {}{:.1} MiB unpacked{}",
            d.paths_to_download,
            d.closure_paths,
            d.download_bytes
                .map_or_else(String::new, |b| format!("{:.1} MiB compressed, ", mib(b))),
            mib(d.nar_bytes),
            if d.current_unknown {
                " (the current closure is not in the cache: counted as nothing in common)"
            } else {
                ""
            }
        ));
    }
    line.push_str(&format!(
        ", activation {}, from the {}",
        d.activation, d.source
    ));
    if let Some(r) = &d.held {
        line.push_str(&format!("; HELD ({r}): skipped unless --force"));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_in_friendly_and_iso_forms() {
        assert_eq!(
            parse_expires_in("7d").unwrap(),
            SignedDuration::from_hours(168)
        );
        assert_eq!(
            parse_expires_in("12h").unwrap(),
            SignedDuration::from_hours(12)
        );
        assert_eq!(
            parse_expires_in("1w").unwrap(),
            SignedDuration::from_hours(168)
        );
        assert_eq!(
            parse_expires_in("P2D").unwrap(),
            SignedDuration::from_hours(48)
        );
        assert_eq!(
            parse_expires_in("90m").unwrap(),
            SignedDuration::from_mins(90)
        );
        for bad in ["", "soon", "0s", "-1d", "400d"] {
            let e = parse_expires_in(bad).unwrap_err().to_string();
            assert!(e.contains("expires-in"), "{bad}: {e}");
        }
    }

    #[test]
    fn hosts_files_are_checked() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("hosts.json");
        std::fs::write(
            &f,
            r#"{"Web_1": "/nix/store/aql5kla6x8r78rrdfyxr471hbn3himl6-top"}"#,
        )
        .unwrap();
        let e = format!("{:#}", read_hosts_file(&f).unwrap_err());
        assert!(e.contains("Web_1") && e.contains("hosts.json"), "{e}");
        std::fs::write(&f, r#"{"web-1": "/etc/passwd"}"#).unwrap();
        let e = format!("{:#}", read_hosts_file(&f).unwrap_err());
        assert!(e.contains("not a store path") && e.contains("web-1"), "{e}");
        std::fs::write(&f, r#"["web-1"]"#).unwrap();
        assert!(read_hosts_file(&f).is_err());
        std::fs::write(
            &f,
            r#"{"web-2": "/nix/store/aql5kla6x8r78rrdfyxr471hbn3himl6-b", "web-1": "/nix/store/aql5kla6x8r78rrdfyxr471hbn3himl6-a"}"#,
        )
        .unwrap();
        let t = read_hosts_file(&f).unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(t[0].host.as_str(), "web-1");
    }
}
