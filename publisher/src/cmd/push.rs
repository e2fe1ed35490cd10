//! `fleet-publish push`: uploads store paths and their closures to the bucket's
//! binary cache with the push engine ([`mod@crate::push`]), then prints one line
//! saying what it did:
//!
//! ```text
//! pushed to s3://fleet-prod: 812 paths in the closure: 3 uploaded, 809 already in the cache; 41.2 MiB of NAR, 12.0 MiB sent; 3.10 s
//! ```

use clap::Args;
use fleet_core::nixcli::Nix;

use crate::config::{self, ConfigFile, PushOptions};
use crate::push::push;

/// `push` arguments.
#[derive(Args, Debug, Clone)]
pub struct PushArgs {
    /// Options (also from environment and file).
    #[command(flatten)]
    pub options: PushOptions,
    /// Store paths (or symlinks to them, such as ./result) whose closures to upload.
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<String>,
}

/// `fleet-publish push`.
pub async fn run(args: PushArgs, config_file: &ConfigFile) -> anyhow::Result<()> {
    let o = config_file.layer(args.options)?;
    let store = config::bucket(&o.bucket, &o.store)?;
    let key_file = config::required(&o.cache_key, "cache-key", "FLEET_CACHE_KEY")?;
    let settings = o.settings()?;
    let key = crate::load_secret_key(key_file, "cache key (--cache-key)")?;
    let roots = args
        .paths
        .iter()
        .map(|p| crate::resolve_store_path(p))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let bucket = crate::open_bucket(store)?;
    let summary = push(&bucket, &Nix::default_store(), &key, &roots, &settings).await?;
    println!("pushed to {store}: {summary}");
    Ok(())
}
