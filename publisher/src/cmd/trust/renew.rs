//! `fleet-publish trust renew`: the same keys as a new root version with a new
//! expiry (`--expires-in`), before hosts refuse the current one as expired.

use clap::Args;

use super::TrustOptions;
use crate::config::ConfigFile;

/// `trust renew` arguments.
#[derive(Args, Debug)]
pub struct RenewArgs {
    /// Bucket, root keys, lifetime.
    #[command(flatten)]
    pub options: TrustOptions,
}

/// `fleet-publish trust renew`.
pub async fn run(args: RenewArgs, config_file: &ConfigFile) -> anyhow::Result<()> {
    super::next_version("renew", args.options, config_file, |_| Ok(())).await
}
