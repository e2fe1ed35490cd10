//! `fleet-publish trust set-threshold`: a new root version in which `--threshold`
//! root keys must sign each later version. The version itself must already be
//! signed by that many of its root keys (and by the old threshold of the old ones).

use clap::Args;

use super::TrustOptions;
use crate::config::ConfigFile;

/// `trust set-threshold` arguments.
#[derive(Args, Debug)]
pub struct SetThresholdArgs {
    /// Bucket, root keys, lifetime.
    #[command(flatten)]
    pub options: TrustOptions,
    /// The new threshold (required).
    #[arg(long, value_name = "N")]
    pub threshold: u32,
}

/// `fleet-publish trust set-threshold`.
pub async fn run(args: SetThresholdArgs, config_file: &ConfigFile) -> anyhow::Result<()> {
    let threshold = args.threshold;
    super::next_version("set-threshold", args.options, config_file, |root| {
        root.threshold = threshold;
        Ok(())
    })
    .await
}
