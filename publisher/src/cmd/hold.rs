//! `fleet-publish hold`: writes a signed hold for each host
//! (`hosts/<host>/hold.json`, [`fleet_core::hold`]; the engine is
//! [`mod@crate::hold`]), so `deploy` and `rollback` skip it until `unhold`. Prints
//! one line per host:
//!
//! ```text
//! web-1: held (disk replacement until Friday)
//! ```

use anyhow::Context;
use clap::Args;
use fleet_core::{HostName, TrustedKeys};

use crate::cmd::resign::{HostSelection, SigningOptions};
use crate::config::ConfigFile;
use crate::hold::set_hold;

/// `hold` arguments.
#[derive(Args, Debug, Clone)]
pub struct HoldArgs {
    /// Options (also config-file keys).
    #[command(flatten)]
    pub options: SigningOptions,
    /// Which hosts.
    #[command(flatten)]
    pub hosts: HoldHosts,
    /// Why (shown with the hold) (required).
    #[arg(long, value_name = "TEXT")]
    pub reason: String,
}

/// The hosts of `hold` and `unhold`: named, or `--all`.
#[derive(Args, Debug, Clone)]
pub struct HoldHosts {
    /// The hosts.
    #[arg(value_name = "HOST", required_unless_present = "all")]
    pub hosts: Vec<String>,
    /// Every host that has a manifest.
    #[arg(long, conflicts_with = "hosts")]
    pub all: bool,
}

impl HoldHosts {
    /// The selection.
    pub fn selection(&self) -> anyhow::Result<HostSelection> {
        if self.all {
            return Ok(HostSelection::All);
        }
        let mut named = self
            .hosts
            .iter()
            .map(|h| HostName::new(h).with_context(|| format!("host {h:?}")))
            .collect::<anyhow::Result<Vec<_>>>()?;
        named.sort();
        named.dedup();
        Ok(HostSelection::Named(named))
    }
}

/// Sets (`held`) or releases the holds of the chosen hosts and prints them.
pub async fn hold_or_release(
    o: &SigningOptions,
    selection: HostSelection,
    held: bool,
    reason: &str,
) -> anyhow::Result<()> {
    let (bucket, signing_key, trusted) = o.resolve()?;
    let hosts = selection.hosts(&bucket).await?;
    // Fail early on a hold signed by a key this publisher does not trust.
    let trusted = TrustedKeys::new(std::iter::once(signing_key.public()).chain(trusted));
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
    hold_or_release(&o, args.hosts.selection()?, true, &args.reason).await
}
