//! `fleet-publish trust add-publisher`: a new root version with one more publisher
//! key, scoped with `--scope-host` / `--scope-label` or for every host. A key of the
//! same name already listed is re-scoped (same key bytes only).

use std::path::PathBuf;

use anyhow::bail;
use clap::Args;
use fleet_core::trust::{HostPattern, Scope, ScopedKey};

use super::TrustOptions;
use crate::config::ConfigFile;

/// `trust add-publisher` arguments.
#[derive(Args, Debug)]
pub struct AddPublisherArgs {
    /// Bucket, root keys, lifetime.
    #[command(flatten)]
    pub options: TrustOptions,
    /// The publisher's public key file (required).
    #[arg(long, value_name = "FILE")]
    pub key_file: PathBuf,
    /// Hosts the key may sign for: a host name, `*` matching any run of characters
    /// (`web-*`); repeatable. Without any scope the key signs for every host.
    #[arg(long, value_name = "PATTERN")]
    pub scope_host: Vec<String>,
    /// Hosts carrying this label (agent setting `labels`) are in scope; repeatable.
    #[arg(long, value_name = "LABEL")]
    pub scope_label: Vec<String>,
}

/// `fleet-publish trust add-publisher`.
pub async fn run(args: AddPublisherArgs, config_file: &ConfigFile) -> anyhow::Result<()> {
    let key = crate::load_public_key(&args.key_file, "the publisher key (--key-file)")?;
    let hosts = args
        .scope_host
        .iter()
        .map(|p| HostPattern::new(p).map_err(anyhow::Error::msg))
        .collect::<anyhow::Result<Vec<_>>>()?;
    for l in &args.scope_label {
        fleet_core::trust::scope::check_label(l).map_err(anyhow::Error::msg)?;
    }
    let scope = (!hosts.is_empty() || !args.scope_label.is_empty()).then(|| Scope {
        hosts,
        labels: args.scope_label.clone(),
    });
    super::next_version("add-publisher", args.options, config_file, |root| {
        match root
            .publisher_keys
            .iter_mut()
            .find(|k| k.key.name() == key.name())
        {
            Some(k) if k.key != key => bail!(
                "the root lists another publisher key named {:?}; revoke it first to replace it",
                key.name()
            ),
            Some(k) => k.scope = scope,
            None => root.publisher_keys.push(ScopedKey { key, scope }),
        }
        Ok(())
    })
    .await
}
