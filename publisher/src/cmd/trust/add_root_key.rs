//! `fleet-publish trust add-root-key`: a new root version with one more root key
//! (it signs the next root versions).

use std::path::PathBuf;

use clap::Args;

use super::TrustOptions;
use crate::config::ConfigFile;

/// `trust add-root-key` arguments.
#[derive(Args, Debug)]
pub struct AddRootKeyArgs {
    /// Bucket, root keys, lifetime.
    #[command(flatten)]
    pub options: TrustOptions,
    /// The root key's public key file (required).
    #[arg(long, value_name = "FILE")]
    pub key_file: PathBuf,
}

/// `fleet-publish trust add-root-key`.
pub async fn run(args: AddRootKeyArgs, config_file: &ConfigFile) -> anyhow::Result<()> {
    let key = crate::load_public_key(&args.key_file, "the root key (--key-file)")?;
    super::next_version(args.options, config_file, |root| {
        super::add_key(&mut root.root_keys, key, "root key")
    })
    .await
}
