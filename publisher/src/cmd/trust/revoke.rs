//! `fleet-publish trust revoke`: a new root version without the named keys
//! (publisher, cache, admin or root keys). Hosts refuse manifests signed by a
//! revoked publisher key, and narinfos signed only by a revoked cache key, from
//! the poll that reads the new version on.

use anyhow::bail;
use clap::Args;

use super::TrustOptions;
use crate::config::ConfigFile;

/// `trust revoke` arguments.
#[derive(Args, Debug)]
pub struct RevokeArgs {
    /// Bucket, root keys, lifetime.
    #[command(flatten)]
    pub options: TrustOptions,
    /// Name of a key to remove; repeatable.
    #[arg(long = "key", value_name = "NAME", required = true)]
    pub keys: Vec<String>,
}

/// `fleet-publish trust revoke`.
pub async fn run(args: RevokeArgs, config_file: &ConfigFile) -> anyhow::Result<()> {
    let names = args.keys.clone();
    super::next_version("revoke", args.options, config_file, |root| {
        for name in &names {
            let before = root.publisher_keys.len()
                + root.cache_keys.len()
                + root.admin_keys.len()
                + root.root_keys.len();
            root.publisher_keys.retain(|k| k.key.name() != name);
            root.cache_keys.retain(|k| k.name() != name);
            root.admin_keys.retain(|k| k.name() != name);
            root.root_keys.retain(|k| k.name() != name);
            let after = root.publisher_keys.len()
                + root.cache_keys.len()
                + root.admin_keys.len()
                + root.root_keys.len();
            if before == after {
                bail!("the root lists no key named {name:?} (fleet-publish trust show)");
            }
        }
        Ok(())
    })
    .await
}
