//! `fleet-publish unhold`: releases the holds of `fleet-publish hold` by writing a
//! signed hold with `"held": false` for each host (publishers may not delete).
//! Prints one line per host:
//!
//! ```text
//! web-1: released (was held: disk replacement until Friday)
//! ```

use clap::Args;

use crate::cmd::hold::{HoldHosts, hold_or_release};
use crate::cmd::resign::SigningOptions;
use crate::config::ConfigFile;

/// `unhold` arguments.
#[derive(Args, Debug, Clone)]
pub struct UnholdArgs {
    /// Options (also config-file keys).
    #[command(flatten)]
    pub options: SigningOptions,
    /// Which hosts.
    #[command(flatten)]
    pub hosts: HoldHosts,
    /// Why (recorded in the object).
    #[arg(long, value_name = "TEXT", default_value = "")]
    pub reason: String,
}

/// `fleet-publish unhold`.
pub async fn run(args: UnholdArgs, config_file: &ConfigFile) -> anyhow::Result<()> {
    let o = config_file.layer(args.options)?;
    hold_or_release(&o, args.hosts.selection()?, false, &args.reason).await
}
