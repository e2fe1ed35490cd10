//! `fleet-publish trust add-admin`: a new root version with one more admin key
//! (it signs admin-signed objects).

use super::AddKeyArgs;
use crate::config::ConfigFile;

/// `fleet-publish trust add-admin`.
pub async fn run(args: AddKeyArgs, config_file: &ConfigFile) -> anyhow::Result<()> {
    super::add_key(args, config_file, "add-admin", "admin key", |root| {
        &mut root.admin_keys
    })
    .await
}
