//! `fleet-publish rollout plan ID`: what each wave of a release changes, host by
//! host ([`crate::rollout::preview`]), as it stands now; writes nothing.
//!
//! ```text
//! wave 1 (web-1; soak 600s; budget 0 host(s)):
//!   web-1: sequence 7 /nix/store/…-a -> /nix/store/…-b, 12 of 340 paths to download, …, activation switch, from the bucket
//! ```

use clap::Args;
use fleet_core::nixcli::Nix;

use crate::cmd::resign::SigningOptions;
use crate::cmd::rollout::reader;
use crate::config::ConfigFile;
use crate::rollout::preview::{describe, preview};
use crate::rollout::store::{read_release, release_id};

/// `rollout plan` arguments.
#[derive(Args, Debug, Clone)]
pub struct PlanArgs {
    /// Bucket and publisher keys (also config-file keys).
    #[command(flatten)]
    pub options: SigningOptions,
    /// The release id.
    #[arg(value_name = "ID")]
    pub id: String,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// `fleet-publish rollout plan`.
pub async fn run(args: PlanArgs, config_file: &ConfigFile) -> anyhow::Result<()> {
    let o = config_file.layer(args.options)?;
    let (bucket, trusted) = reader(&o)?;
    let id = release_id(&args.id)?;
    let release = read_release(&bucket, &id, &trusted).await?.release;
    let waves = preview(&bucket, &Nix::default_store(), &release, &trusted).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&waves)?);
    } else {
        print!("{}", describe(&waves));
    }
    Ok(())
}
