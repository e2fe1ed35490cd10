//! `fleet-publish trust add-admin`: a new root version with one more admin key
//! (it signs admin-signed objects).

use std::path::PathBuf;

use clap::Args;

use super::TrustOptions;
use crate::config::ConfigFile;

/// `trust add-admin` arguments.
#[derive(Args, Debug)]
pub struct AddAdminArgs {
    /// Bucket, root keys, lifetime.
    #[command(flatten)]
    pub options: TrustOptions,
    /// The admin key's public key file (required).
    #[arg(long, value_name = "FILE")]
    pub key_file: PathBuf,
}

/// `fleet-publish trust add-admin`.
pub async fn run(args: AddAdminArgs, config_file: &ConfigFile) -> anyhow::Result<()> {
    let key = crate::load_public_key(&args.key_file, "the admin key (--key-file)")?;
    super::next_version(args.options, config_file, |root| {
        super::add_key(&mut root.admin_keys, key, "admin key")
    })
    .await
}
