//! `fleet-publish trust add-cache-key`: a new root version with one more cache key
//! (it signs narinfos).

use std::path::PathBuf;

use clap::Args;

use super::TrustOptions;
use crate::config::ConfigFile;

/// `trust add-cache-key` arguments.
#[derive(Args, Debug)]
pub struct AddCacheKeyArgs {
    /// Bucket, root keys, lifetime.
    #[command(flatten)]
    pub options: TrustOptions,
    /// The cache key's public key file (required).
    #[arg(long, value_name = "FILE")]
    pub key_file: PathBuf,
}

/// `fleet-publish trust add-cache-key`.
pub async fn run(args: AddCacheKeyArgs, config_file: &ConfigFile) -> anyhow::Result<()> {
    let key = crate::load_public_key(&args.key_file, "the cache key (--key-file)")?;
    super::next_version(args.options, config_file, |root| {
        super::add_key(&mut root.cache_keys, key, "cache key")
    })
    .await
}
