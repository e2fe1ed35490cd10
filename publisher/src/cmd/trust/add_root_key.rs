//! `fleet-publish trust add-root-key`: a new root version with one more root key
//! (it signs the next root versions).

use super::AddKeyArgs;
use crate::config::ConfigFile;

/// `fleet-publish trust add-root-key`.
pub async fn run(args: AddKeyArgs, config_file: &ConfigFile) -> anyhow::Result<()> {
    super::add_key(args, config_file, "add-root-key", "root key", |root| {
        &mut root.root_keys
    })
    .await
}
