//! `fleet-publish trust …`: the root of trust in the bucket
//! (`trust/<version>.root.json`, [`fleet_core::trust`]), one file per subcommand.
//! Every subcommand but `show` signs a new version with the root key files given by
//! `--root-key-file` (repeat it up to the threshold) and needs no other secret; the
//! engine is [`crate::trust_write`]. Each prints the version it wrote:
//!
//! ```text
//! trust/2.root.json: version 2, expires 2027-12-02T21:25:00Z, root keys ["root-1"] (threshold 1), publisher keys ["publisher-2", "web-team-1 (hosts [\"web-*\"], labels [])"], cache keys ["cache-1"], admin keys []
//! ```

pub mod add_admin;
pub mod add_cache_key;
pub mod add_publisher;
pub mod add_root_key;
pub mod init;
pub mod renew;
pub mod revoke;
pub mod set_threshold;
pub mod show;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::bail;
use clap::{Args, Subcommand};
use fleet_core::duration::{Zero, duration_or};
use fleet_core::trust::{Root, TrustedRoot};
use fleet_core::{Bucket, SecretKey};
use serde::{Deserialize, Serialize};

use crate::config::{self, ConfigFile};

/// Lifetime of a root version when `--expires-in` is not given.
pub const DEFAULT_ROOT_EXPIRES_IN: Duration = Duration::from_secs(365 * 24 * 3600);

/// `trust` arguments.
#[derive(Args, Debug)]
pub struct TrustArgs {
    /// The trust subcommand.
    #[command(subcommand)]
    pub command: TrustCommand,
}

/// The trust subcommands.
#[derive(Subcommand, Debug)]
pub enum TrustCommand {
    /// Write root version 1, signed by the root key files given.
    Init(init::InitArgs),
    /// Print the newest root after checking every version from 1.
    Show(show::ShowArgs),
    /// Add (or re-scope) a publisher key in a new root version.
    AddPublisher(add_publisher::AddPublisherArgs),
    /// Add a cache key in a new root version.
    AddCacheKey(AddKeyArgs),
    /// Add an admin key in a new root version.
    AddAdmin(AddKeyArgs),
    /// Add a root key in a new root version.
    AddRootKey(AddKeyArgs),
    /// Remove keys (publisher, cache, admin or root) by name in a new root version.
    Revoke(revoke::RevokeArgs),
    /// Change how many root keys must sign a root, in a new root version.
    SetThreshold(set_threshold::SetThresholdArgs),
    /// Sign the same keys again as a new version with a new expiry.
    Renew(renew::RenewArgs),
}

/// The options every signing trust subcommand takes (also config-file keys).
#[derive(Args, Serialize, Deserialize, Debug, Default, Clone)]
#[serde(rename_all = "kebab-case", default)]
pub struct TrustOptions {
    /// The fleet bucket (required).
    #[arg(long, env = "FLEET_BUCKET", value_name = "URL")]
    pub bucket: Option<String>,
    /// A root secret key file to sign with; repeat it until the threshold is met.
    #[arg(long, value_name = "FILE")]
    pub root_key_file: Vec<PathBuf>,
    /// Lifetime of the version written [default: 365d].
    #[arg(long, env = "FLEET_ROOT_EXPIRES_IN", value_name = "DURATION")]
    pub expires_in: Option<String>,
    /// Secret key file of the publisher or admin key that signs the audit entry
    /// recording the change (required).
    #[arg(long, env = "FLEET_SIGNING_KEY", value_name = "FILE")]
    pub signing_key: Option<PathBuf>,
}

/// [`TrustOptions`] resolved.
pub struct TrustSettings {
    /// The bucket, opened.
    pub bucket: Bucket,
    /// The root keys that sign the version.
    pub root_keys: Vec<SecretKey>,
    /// The lifetime of the version.
    pub expires_in: Duration,
    /// The key that signs the audit entry.
    pub signing_key: SecretKey,
}

impl TrustOptions {
    /// The bucket, the root keys, the lifetime and the audit signing key.
    pub fn resolve(&self) -> anyhow::Result<TrustSettings> {
        let bucket = crate::open_bucket(config::bucket(&self.bucket, &None)?)?;
        if self.root_key_file.is_empty() {
            bail!(
                "no root key given: pass --root-key-file FILE (repeat it for a threshold above 1)"
            );
        }
        let keys = self
            .root_key_file
            .iter()
            .map(|f| crate::load_secret_key(f, &format!("root key {}", f.display())))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let expires_in = duration_or(
            "expires-in",
            self.expires_in.as_deref(),
            Zero::Refused,
            DEFAULT_ROOT_EXPIRES_IN,
        )?;
        let key_file = config::required(&self.signing_key, "signing-key", "FLEET_SIGNING_KEY")?;
        let signing_key =
            crate::load_secret_key(key_file, "signing key of the audit entry (--signing-key)")?;
        Ok(TrustSettings {
            bucket,
            root_keys: keys,
            expires_in,
            signing_key,
        })
    }
}

/// Layers `options`, writes the next version changed by `change`, records it in
/// the audit chain as the subcommand `name`, prints it.
pub async fn next_version(
    name: &str,
    options: TrustOptions,
    config_file: &ConfigFile,
    change: impl FnOnce(&mut Root) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let o = config_file.layer(options)?;
    let s = o.resolve()?;
    let written =
        crate::trust_write::write_next(&s.bucket, &s.root_keys, s.expires_in, change).await?;
    print(&written);
    crate::trust_write::record(&s.bucket, &s.signing_key, &written, name).await
}

/// Prints the line for a version written.
pub fn print(root: &TrustedRoot) {
    println!("{}", crate::trust_write::describe(root.root()));
}

/// `fleet-publish trust …`.
pub async fn run(args: TrustArgs, config_file: &ConfigFile) -> anyhow::Result<()> {
    match args.command {
        TrustCommand::Init(a) => init::run(a, config_file).await,
        TrustCommand::Show(a) => show::run(a, config_file).await,
        TrustCommand::AddPublisher(a) => add_publisher::run(a, config_file).await,
        TrustCommand::AddCacheKey(a) => add_cache_key::run(a, config_file).await,
        TrustCommand::AddAdmin(a) => add_admin::run(a, config_file).await,
        TrustCommand::AddRootKey(a) => add_root_key::run(a, config_file).await,
        TrustCommand::Revoke(a) => revoke::run(a, config_file).await,
        TrustCommand::SetThreshold(a) => set_threshold::run(a, config_file).await,
        TrustCommand::Renew(a) => renew::run(a, config_file).await,
    }
}

/// Arguments of the subcommands that add one plain key (`add-cache-key`,
/// `add-admin`, `add-root-key`).
#[derive(Args, Debug)]
pub struct AddKeyArgs {
    /// Bucket, root keys, lifetime.
    #[command(flatten)]
    pub options: TrustOptions,
    /// The key's public key file (required).
    #[arg(long, value_name = "FILE")]
    pub key_file: PathBuf,
}

/// Writes a new version with the key of `args` added to the list `list` picks,
/// refusing a second key of the same name; `name` is the subcommand, `what` names
/// the kind of key.
pub async fn add_key(
    args: AddKeyArgs,
    config_file: &ConfigFile,
    name: &str,
    what: &str,
    list: fn(&mut Root) -> &mut Vec<fleet_core::PublicKey>,
) -> anyhow::Result<()> {
    let key = crate::load_public_key(&args.key_file, &format!("the {what} (--key-file)"))?;
    next_version(name, args.options, config_file, |root| {
        let list = list(root);
        if list.iter().any(|k| k.name() == key.name()) {
            bail!(
                "the root already lists a {what} named {:?}; revoke it first to replace it",
                key.name()
            );
        }
        list.push(key);
        Ok(())
    })
    .await
}
