//! `fleet-publish hold`: writes a signed hold for each host
//! (`hosts/<host>/hold.json`, [`fleet_core::hold`]; the engine is
//! [`mod@crate::hold`]), so `deploy` and `rollback` skip it until `unhold`. Prints
//! one line per host:
//!
//! ```text
//! web-1: held (disk replacement until Friday)
//! ```

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use fleet_core::{HostName, TrustedKeys};
use serde::{Deserialize, Serialize};

use crate::cmd::resign::HostSelection;
use crate::config::{self, ConfigFile, TrustedKeyOptions};
use crate::hold::set_hold;

/// `hold` and `unhold` options (also config-file keys).
#[derive(Args, Serialize, Deserialize, Debug, Default, Clone)]
#[serde(rename_all = "kebab-case", default)]
pub struct HoldOptions {
    /// The fleet bucket (required).
    #[arg(long, env = "FLEET_BUCKET", value_name = "URL")]
    pub bucket: Option<String>,
    /// Deprecated spelling of `bucket`.
    #[arg(long, env = "FLEET_STORE", value_name = "URL", hide = true)]
    pub store: Option<String>,
    /// Secret key file that signs holds (the publisher key) (required).
    #[arg(long, env = "FLEET_SIGNING_KEY", value_name = "FILE")]
    pub signing_key: Option<PathBuf>,
    /// Trusted publisher keys (to read existing holds).
    #[command(flatten)]
    #[serde(flatten)]
    pub trusted: TrustedKeyOptions,
}

/// `hold` arguments.
#[derive(Args, Debug, Clone)]
pub struct HoldArgs {
    /// Options.
    #[command(flatten)]
    pub options: HoldOptions,
    /// The hosts to hold.
    #[arg(value_name = "HOST", required_unless_present = "all")]
    pub hosts: Vec<String>,
    /// Every host that has a manifest.
    #[arg(long, conflicts_with = "hosts")]
    pub all: bool,
    /// Why (shown with the hold) (required).
    #[arg(long, value_name = "TEXT")]
    pub reason: String,
}

/// The hosts of positional arguments or `--all`.
pub fn selection(hosts: &[String], all: bool) -> anyhow::Result<HostSelection> {
    if all {
        return Ok(HostSelection::All);
    }
    let mut named = hosts
        .iter()
        .map(|h| HostName::new(h).with_context(|| format!("host {h:?}")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    named.sort();
    named.dedup();
    Ok(HostSelection::Named(named))
}

/// Sets (`held`) or releases the holds of the chosen hosts and prints them.
pub async fn hold_or_release(
    o: &HoldOptions,
    selection: HostSelection,
    held: bool,
    reason: &str,
) -> anyhow::Result<()> {
    let url = config::bucket(&o.bucket, &o.store)?;
    let key_file = config::required(&o.signing_key, "signing-key", "FLEET_SIGNING_KEY")?;
    let signing_key = crate::load_secret_key(key_file, "signing key (--signing-key)")?;
    let bucket = crate::open_bucket(url)?;
    let hosts = selection.hosts(&bucket).await?;
    // Fail early on a hold signed by a key this publisher does not trust.
    let trusted = TrustedKeys::new(std::iter::once(signing_key.public()).chain(o.trusted.keys()?));
    let before = crate::hold::held(&bucket, &hosts, &trusted).await?;
    for h in set_hold(&bucket, &signing_key, &hosts, held, reason).await? {
        match (held, before.get(&h.host)) {
            (true, _) => println!("{}: held ({})", h.host, h.reason),
            (false, Some(v)) => println!("{}: released (was held: {})", h.host, v.hold.reason),
            (false, None) => println!("{}: released (was not held)", h.host),
        }
    }
    Ok(())
}

/// `fleet-publish hold`.
pub async fn run(args: HoldArgs, config_file: &ConfigFile) -> anyhow::Result<()> {
    let o = config_file.layer(args.options)?;
    let selection = selection(&args.hosts, args.all)?;
    hold_or_release(&o, selection, true, &args.reason).await
}
