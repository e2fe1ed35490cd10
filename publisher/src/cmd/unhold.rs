//! `fleet-publish unhold`: releases the holds of `fleet-publish hold` by writing a
//! signed hold with `"held": false` for each host (publishers may not delete).
//! Prints one line per host:
//!
//! ```text
//! web-1: released (was held: disk replacement until Friday)
//! ```

use clap::Args;

use crate::cmd::hold::{HoldOptions, hold_or_release, selection};
use crate::config::ConfigFile;

/// `unhold` arguments.
#[derive(Args, Debug, Clone)]
pub struct UnholdArgs {
    /// Options.
    #[command(flatten)]
    pub options: HoldOptions,
    /// The hosts to release.
    #[arg(value_name = "HOST", required_unless_present = "all")]
    pub hosts: Vec<String>,
    /// Every host that has a manifest.
    #[arg(long, conflicts_with = "hosts")]
    pub all: bool,
    /// Why (recorded in the object).
    #[arg(long, value_name = "TEXT", default_value = "")]
    pub reason: String,
}

/// `fleet-publish unhold`.
pub async fn run(args: UnholdArgs, config_file: &ConfigFile) -> anyhow::Result<()> {
    let o = config_file.layer(args.options)?;
    let selection = selection(&args.hosts, args.all)?;
    hold_or_release(&o, selection, false, &args.reason).await
}
