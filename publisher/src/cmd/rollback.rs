//! `fleet-publish rollback`: re-signs an earlier closure of each chosen host (from
//! the audit entries; the engine is [`mod@crate::rollback`]) with a higher
//! sequence, from the bucket alone. Every host is checked before any is written.
//! Prints one line per host on standard output:
//!
//! ```text
//! web-1: sequence 10 (was 9) -> /nix/store/…-nixos-system-web-1 (the closure of sequence 7), expires …
//! ```
//!
//! `--to-release ID` goes back to the closure each host has in that release
//! (`fleet-publish release`). `--dry-run` prints the plan and writes nothing;
//! `--json` prints JSON.

use std::collections::BTreeMap;

use anyhow::bail;
use clap::Args;
use fleet_core::{HostName, StorePath};
use serde::{Deserialize, Serialize};

use crate::cmd::resign::{HostArgs, ResignOptions};
use crate::config::ConfigFile;
use crate::rollback::{RollbackSettings, apply, plan};
use crate::rollout::advance::trusted_keys;
use crate::rollout::store::{read_release, release_id};

/// `rollback` options (also config-file keys).
#[derive(Args, Serialize, Deserialize, Debug, Default, Clone)]
#[serde(rename_all = "kebab-case", default)]
pub struct RollbackOptions {
    /// Bucket, keys, lifetime.
    #[command(flatten)]
    #[serde(flatten)]
    pub resign: ResignOptions,
}

/// `rollback` arguments.
#[derive(Args, Debug, Clone)]
pub struct RollbackArgs {
    /// Options.
    #[command(flatten)]
    pub options: RollbackOptions,
    /// Which hosts.
    #[command(flatten)]
    pub hosts: HostArgs,
    /// Go back to the closure of this sequence [default: the latest earlier sequence
    /// with another closure than the current].
    #[arg(long, value_name = "N")]
    pub to_sequence: Option<u64>,
    /// Go back to the closure each host has in this release (`fleet-publish
    /// release`): the latest earlier sequence that carried it.
    #[arg(long, value_name = "ID", conflicts_with = "to_sequence")]
    pub to_release: Option<String>,
    /// Roll back held (`fleet-publish hold`) and retired hosts too; without it they
    /// are skipped with a warning.
    #[arg(long)]
    pub force: bool,
    /// Print what would be done; write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// The closure release `id` names for each of `hosts`; a host it does not name is
/// an error.
async fn release_closures(
    r: &crate::cmd::resign::Resign,
    id: &str,
    hosts: &[HostName],
) -> anyhow::Result<BTreeMap<HostName, StorePath>> {
    let trusted = trusted_keys(&r.signing_key, &r.trusted);
    let release = read_release(&r.bucket, &release_id(id)?, &trusted)
        .await?
        .release;
    hosts
        .iter()
        .map(|h| match release.hosts.get(h) {
            Some(rh) => Ok((h.clone(), rh.closure.clone())),
            None => bail!("release {id} does not name host {h}; nothing was written"),
        })
        .collect()
}

/// `fleet-publish rollback`.
pub async fn run(args: RollbackArgs, config_file: &ConfigFile) -> anyhow::Result<()> {
    let o = config_file.layer(args.options)?;
    let r = o.resign.resolve()?;
    let hosts = args.hosts.selection("roll back")?.hosts(&r.bucket).await?;
    let to_closures = match &args.to_release {
        Some(id) => Some(release_closures(&r, id, &hosts).await?),
        None => None,
    };
    let settings = RollbackSettings {
        to_sequence: args.to_sequence,
        to_closures,
        expires_in: r.expires_in,
        trusted: r.trusted,
        extra_cache_keys: r.extra_cache_keys,
        force: args.force,
        ..RollbackSettings::default()
    };
    let plans = plan(&r.bucket, &r.signing_key, &hosts, &settings).await?;
    if args.dry_run {
        if args.json {
            println!("{}", serde_json::to_string_pretty(&plans)?);
        } else {
            for p in &plans {
                println!(
                    "{}: would roll back sequence {} ({}) to the closure of sequence {} ({})",
                    p.host, p.from_sequence, p.from_closure, p.to_sequence, p.to_closure
                );
            }
        }
        return Ok(());
    }
    let outcomes = apply(&r.bucket, &r.signing_key, &plans, &settings).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&outcomes)?);
        return Ok(());
    }
    for (o, p) in outcomes.iter().zip(&plans) {
        let prev = o
            .previous_sequence
            .map_or_else(|| "none".to_owned(), |s| s.to_string());
        println!(
            "{}: sequence {} (was {prev}) -> {} (the closure of sequence {}), expires {}, audit {}",
            o.host, o.sequence, o.closure, p.to_sequence, o.expires_at, o.audit_key
        );
    }
    Ok(())
}
