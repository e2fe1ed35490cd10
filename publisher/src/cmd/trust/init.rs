//! `fleet-publish trust init`: writes root version 1. Its root keys are the public
//! halves of the `--root-key-file`s (all of them sign it), with `--threshold`.

use std::path::PathBuf;

use clap::Args;
use fleet_core::trust::{ROOT_FORMAT, Root, ScopedKey};
use jiff::Timestamp;

use super::TrustOptions;
use crate::config::ConfigFile;

/// `trust init` arguments.
#[derive(Args, Debug)]
pub struct InitArgs {
    /// Bucket, root keys, lifetime.
    #[command(flatten)]
    pub options: TrustOptions,
    /// How many root keys must sign each root [default: 1].
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub threshold: u32,
    /// A publisher public key file (every host in scope; scope keys with
    /// `add-publisher`); repeatable.
    #[arg(long, value_name = "FILE")]
    pub publisher_key_file: Vec<PathBuf>,
    /// A cache public key file; repeatable.
    #[arg(long, value_name = "FILE")]
    pub cache_key_file: Vec<PathBuf>,
    /// An admin public key file; repeatable.
    #[arg(long, value_name = "FILE")]
    pub admin_key_file: Vec<PathBuf>,
}

/// `fleet-publish trust init`.
pub async fn run(args: InitArgs, config_file: &ConfigFile) -> anyhow::Result<()> {
    let o = config_file.layer(args.options)?;
    let s = o.resolve()?;
    let keys = &s.root_keys;
    let load = |files: &[PathBuf], what: &str| {
        files
            .iter()
            .map(|f| crate::load_public_key(f, &format!("{what} {}", f.display())))
            .collect::<anyhow::Result<Vec<_>>>()
    };
    let now = Timestamp::now();
    let root = Root {
        format: ROOT_FORMAT,
        version: 1,
        issued_at: now,
        expires_at: crate::trust_write::expiry(now, s.expires_in)?,
        root_keys: keys.iter().map(|k| k.public()).collect(),
        threshold: args.threshold,
        publisher_keys: load(&args.publisher_key_file, "publisher key")?
            .into_iter()
            .map(|key| ScopedKey { key, scope: None })
            .collect(),
        cache_keys: load(&args.cache_key_file, "cache key")?,
        admin_keys: load(&args.admin_key_file, "admin key")?,
    };
    root.validate("the new root")?;
    let written = crate::trust_write::write_first(&s.bucket, keys, root).await?;
    super::print(&written);
    crate::trust_write::record(&s.bucket, &s.signing_key, &written, "init").await
}
