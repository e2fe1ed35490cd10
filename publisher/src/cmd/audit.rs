//! `fleet-publish audit log` and `audit verify`: read and check the signed audit
//! chain (`audit/chain/`, [`fleet_core::audit_chain`]; the engine is
//! [`crate::audit_verify`]) from the bucket alone, with the trusted publisher keys.
//!
//! `audit log` prints one line per entry (who, what, which hosts, when), oldest
//! first, filtered by `--host` and `--since` (a time, or a duration ago like `7d`):
//!
//! ```text
//! #17 2026-11-26T21:25:00.123Z publisher-1 deploy web-1 sequence 8 /nix/store/…-web-1
//! ```
//!
//! `audit verify` prints each finding and a summary, and exits 1 when there is any:
//!
//! ```text
//! gap audit/chain/00000000000000000004.json: entry 3 is missing before entry 4: …
//! audit: 5 entries (head 5), 3 objects checked, 1 finding
//! ```
//!
//! With `--json` both print one JSON document instead (`log`: an array of entries;
//! `verify`: `{"entries", "head", "objects_checked", "findings": [{"kind", "key",
//! "index", "message"}]}`).

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use fleet_core::HostName;
use fleet_core::audit_chain::VerifiedEntry;
use fleet_core::duration::{Zero, parse_duration};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use std::path::PathBuf;

use fleet_core::audit_trust::RootPin;

use crate::audit_verify::{AuditKeys, entries, trusted_audit_keys, verify};
use crate::config::{self, ConfigFile, TrustedKeyOptions};

/// `audit` arguments.
#[derive(Args, Debug)]
pub struct AuditArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: AuditCommand,
}

/// The `audit` subcommands.
#[derive(Subcommand, Debug)]
pub enum AuditCommand {
    /// Print the audit history: who did what to which hosts, when.
    Log(AuditLogArgs),
    /// Replay the audit from the bucket and check the chain, every signature and
    /// every current manifest and hold; exits 1 on any finding.
    Verify(AuditVerifyArgs),
}

/// Where and with which keys (also config-file keys).
#[derive(Args, Serialize, Deserialize, Debug, Default, Clone)]
#[serde(rename_all = "kebab-case", default)]
pub struct AuditOptions {
    /// The fleet bucket (required).
    #[arg(long, env = "FLEET_BUCKET", value_name = "URL")]
    pub bucket: Option<String>,
    /// Deprecated spelling of `bucket`.
    #[arg(long, env = "FLEET_STORE", value_name = "URL", hide = true)]
    pub store: Option<String>,
    /// Publisher keys trusted to sign audit entries before the first trust entry
    /// (required unless the bucket has a root of trust).
    #[command(flatten)]
    #[serde(flatten)]
    pub trusted: TrustedKeyOptions,
    /// A root key (`name:base64`) from your records the pinned root version was
    /// signed with; repeatable.
    #[arg(
        long,
        env = "FLEET_TRUST_ROOT_KEY",
        value_name = "KEY",
        value_delimiter = ','
    )]
    pub trust_root_key: Vec<String>,
    /// File holding such a root key; repeatable.
    #[arg(
        long,
        env = "FLEET_TRUST_ROOT_KEY_FILE",
        value_name = "FILE",
        value_delimiter = ','
    )]
    pub trust_root_key_file: Vec<PathBuf>,
    /// The root version the root keys pin [default: 1].
    #[arg(long, env = "FLEET_TRUST_ROOT_VERSION", value_name = "N")]
    pub trust_root_version: Option<u64>,
}

/// `audit log` arguments.
#[derive(Args, Debug)]
pub struct AuditLogArgs {
    /// Bucket and keys.
    #[command(flatten)]
    pub options: AuditOptions,
    /// Only entries that affected this host.
    #[arg(long, value_name = "HOST")]
    pub host: Option<String>,
    /// Only entries from this time on: RFC 3339 (`2026-11-26T00:00:00Z`) or a
    /// duration ago (`7d`, `12h`).
    #[arg(long, value_name = "TIME|DURATION")]
    pub since: Option<String>,
    /// Print JSON instead of lines.
    #[arg(long)]
    pub json: bool,
}

/// `audit verify` arguments.
#[derive(Args, Debug)]
pub struct AuditVerifyArgs {
    /// Bucket and keys.
    #[command(flatten)]
    pub options: AuditOptions,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

impl AuditOptions {
    async fn resolve(&self) -> anyhow::Result<(fleet_core::Bucket, AuditKeys)> {
        let url = config::bucket(&self.bucket, &self.store)?;
        let pin = RootPin::from_settings(
            &self.trust_root_key,
            &self.trust_root_key_file,
            self.trust_root_version,
        )
        .map_err(anyhow::Error::msg)?;
        let bucket = crate::open_bucket(url)?;
        let keys = trusted_audit_keys(&bucket, self.trusted.keys()?, pin.as_ref()).await?;
        if keys.walk.start.is_none() && keys.given.is_empty() {
            bail!(
                "no trusted publisher key given and the bucket has no root of trust: pass \
                 --trusted-key-file FILE (each publisher's public key) or --trusted-key \
                 name:base64, set FLEET_TRUSTED_KEY_FILE, or put `trusted-key-file = [\"…\"]` \
                 in the config file"
            );
        }
        if keys.walk.first_use {
            eprintln!(
                "warning: {} was trusted on first use (on its own signatures): compare its root \
                 keys with your records (fleet-publish trust show), and pin them with \
                 --trust-root-key-file FILE and --trust-root-version N",
                fleet_core::Key::trust_root_version(1)
            );
        }
        Ok((bucket, keys))
    }
}

/// `--since`: a timestamp, or a duration before now.
fn parse_since(text: &str, now: Timestamp) -> anyhow::Result<Timestamp> {
    if let Ok(t) = text.parse::<Timestamp>() {
        return Ok(t);
    }
    let ago = parse_duration("since", text, Zero::Allowed)
        .context("--since is neither an RFC 3339 time nor a duration")?;
    let ago = jiff::SignedDuration::try_from(ago).context("--since is too long")?;
    now.checked_sub(ago)
        .context("--since reaches before year -9999")
}

/// One line of `audit log`.
fn line(v: &VerifiedEntry) -> String {
    let e = &v.entry;
    let hosts: Vec<&str> = e.hosts.iter().map(HostName::as_str).collect();
    let mut out = format!(
        "#{} {} {} {} {}",
        e.index,
        e.time,
        e.key_name,
        e.action,
        if hosts.is_empty() {
            "-".into()
        } else {
            hosts.join(",")
        }
    );
    for m in &e.details.manifests {
        out.push_str(&format!(" sequence {} {}", m.sequence, m.closure));
    }
    if let Some(r) = &e.details.reason {
        out.push_str(&format!(" reason {r:?}"));
    }
    out
}

/// `fleet-publish audit log`.
async fn log(args: AuditLogArgs, config_file: &ConfigFile) -> anyhow::Result<()> {
    let o = config_file.layer(args.options)?;
    let host = args
        .host
        .as_deref()
        .map(|h| HostName::new(h).with_context(|| format!("--host {h:?}")))
        .transpose()?;
    let since = args
        .since
        .as_deref()
        .map(|s| parse_since(s, Timestamp::now()))
        .transpose()?;
    let (bucket, trusted) = o.resolve().await?;
    let mut shown = Vec::new();
    let mut unverified = Vec::new();
    for r in entries(&bucket, &trusted).await? {
        match r {
            Ok(v) => {
                let e = &v.entry;
                let host_ok = host.as_ref().is_none_or(|h| e.hosts.contains(h));
                if host_ok && since.is_none_or(|s| e.time >= s) {
                    shown.push(v);
                }
            }
            Err(bad) => unverified.push(bad),
        }
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&shown)?);
    } else {
        for v in &shown {
            println!("{}", line(v));
        }
    }
    if let Some((index, why)) = unverified.first() {
        bail!(
            "{} entr{} not shown because {} not verify (first: entry {index}: {why}); run \
             `fleet-publish audit verify`",
            unverified.len(),
            if unverified.len() == 1 {
                "y is"
            } else {
                "ies are"
            },
            if unverified.len() == 1 {
                "it does"
            } else {
                "they do"
            },
        );
    }
    Ok(())
}

/// `fleet-publish audit verify`.
async fn verify_cmd(args: AuditVerifyArgs, config_file: &ConfigFile) -> anyhow::Result<()> {
    let o = config_file.layer(args.options)?;
    let (bucket, trusted) = o.resolve().await?;
    let report = verify(&bucket, &trusted).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        for f in &report.findings {
            let kind = serde_json::to_value(f.kind)?;
            println!("{} {}: {}", kind.as_str().unwrap_or("?"), f.key, f.message);
        }
        println!(
            "audit: {} entr{} (head {}), {} objects checked, {} finding{}",
            report.entries,
            if report.entries == 1 { "y" } else { "ies" },
            report.head.map_or("none".into(), |h| h.to_string()),
            report.objects_checked,
            report.findings.len(),
            if report.findings.len() == 1 { "" } else { "s" }
        );
    }
    if !report.findings.is_empty() {
        bail!(
            "the audit of {} does not verify: {} finding(s)",
            bucket.url(),
            report.findings.len()
        );
    }
    Ok(())
}

/// `fleet-publish audit`.
pub async fn run(args: AuditArgs, config_file: &ConfigFile) -> anyhow::Result<()> {
    match args.command {
        AuditCommand::Log(a) => log(a, config_file).await,
        AuditCommand::Verify(a) => verify_cmd(a, config_file).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_is_a_time_or_a_duration_ago() {
        let now: Timestamp = "2026-11-27T00:00:00Z".parse().unwrap();
        assert_eq!(
            parse_since("2026-11-26T12:00:00Z", now).unwrap(),
            "2026-11-26T12:00:00Z".parse::<Timestamp>().unwrap()
        );
        assert_eq!(
            parse_since("12h", now).unwrap(),
            "2026-11-26T12:00:00Z".parse::<Timestamp>().unwrap()
        );
        assert!(parse_since("yesterday", now).is_err());
    }
}
