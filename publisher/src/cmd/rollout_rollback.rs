//! `fleet-publish rollout rollback ID`: rolls a halted or aborted rollout's touched
//! hosts back to the closure each had before ([`crate::rollout::revert`], through
//! the rollback engine). Prints one line per host:
//!
//! ```text
//! web-3: sequence 9 -> 10 (/nix/store/…-a)
//! ```

use clap::Args;

use crate::cmd::resign::SigningOptions;
use crate::config::ConfigFile;
use crate::rollout::revert::revert;
use crate::rollout::store::release_id;

/// `rollout rollback` arguments.
#[derive(Args, Debug, Clone)]
pub struct RollbackArgs {
    /// Bucket and publisher key (also config-file keys).
    #[command(flatten)]
    pub options: SigningOptions,
    /// The release id.
    #[arg(value_name = "ID")]
    pub id: String,
}

/// `fleet-publish rollout rollback`.
pub async fn run(args: RollbackArgs, config_file: &ConfigFile) -> anyhow::Result<()> {
    let o = config_file.layer(args.options)?;
    let (bucket, signing_key, trusted) = o.resolve()?;
    let id = release_id(&args.id)?;
    let done = revert(&bucket, &signing_key, &id, trusted).await?;
    if done.is_empty() {
        println!("rollout {id}: no host to roll back");
    }
    for o in &done {
        println!(
            "{}: sequence {} -> {} ({})",
            o.host, o.previous_sequence, o.sequence, o.closure
        );
    }
    Ok(())
}
