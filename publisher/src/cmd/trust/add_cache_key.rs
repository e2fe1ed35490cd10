//! `fleet-publish trust add-cache-key`: a new root version with one more cache key
//! (it signs narinfos).

use super::AddKeyArgs;
use crate::config::ConfigFile;

/// `fleet-publish trust add-cache-key`.
pub async fn run(args: AddKeyArgs, config_file: &ConfigFile) -> anyhow::Result<()> {
    super::add_key(args, config_file, "add-cache-key", "cache key", |root| {
        &mut root.cache_keys
    })
    .await
}
