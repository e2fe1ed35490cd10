//! `fleet-publish rollout pause|resume|abort ID --reason TEXT`: phase changes of a
//! rollout ([`crate::rollout::control`]), logged in its state with the reason.
//! Prints the new phase:
//!
//! ```text
//! rollout 2026-12-02-a: paused
//! ```

use clap::Args;

use crate::cmd::resign::SigningOptions;
use crate::config::ConfigFile;
use crate::rollout::control::{Control, control};
use crate::rollout::store::release_id;

/// `rollout pause|resume|abort` arguments.
#[derive(Args, Debug, Clone)]
pub struct ControlArgs {
    /// Bucket and publisher key (also config-file keys).
    #[command(flatten)]
    pub options: SigningOptions,
    /// The release id.
    #[arg(value_name = "ID")]
    pub id: String,
    /// Why (kept in the rollout's log).
    #[arg(long, value_name = "TEXT", default_value = "by an operator")]
    pub reason: String,
}

/// `fleet-publish rollout pause|resume|abort`.
pub async fn run(args: ControlArgs, what: Control, config_file: &ConfigFile) -> anyhow::Result<()> {
    let o = config_file.layer(args.options)?;
    let (bucket, signing_key, trusted) = o.resolve()?;
    let id = release_id(&args.id)?;
    let s = control(&bucket, &signing_key, &trusted, &id, what, &args.reason).await?;
    println!("rollout {id}: {}", s.phase);
    Ok(())
}
