//! What the commands that re-sign manifests from the bucket alone (`renew`,
//! `rollback`; `hold` and `unhold` take [`SigningOptions`]) share: their options
//! ([`ResignOptions`]: bucket, publisher key, lifetime, trusted keys; also
//! config-file keys) and the choice of hosts
//! ([`HostArgs`]: `--host H` (repeatable), `--hosts FILE` or `--all`; command line
//! only, so a config file never widens a command to more hosts).
//!
//! `--hosts FILE` is one host name per line (blank lines and `#` comments skipped),
//! or a JSON object whose keys are host names (the file `deploy --hosts` takes).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::Args;
use fleet_core::{Bucket, HostName, PublicKey, SecretKey};
use jiff::SignedDuration;
use serde::{Deserialize, Serialize};

use crate::config::{self, ExtraCacheKeyOptions, TrustedKeyOptions};
use crate::manifest_write::manifest_hosts;

/// Where and with which publisher key: the options of every command that signs
/// from the bucket alone (`renew`, `rollback`, `hold`, `unhold`).
#[derive(Args, Serialize, Deserialize, Debug, Default, Clone)]
#[serde(rename_all = "kebab-case", default)]
pub struct SigningOptions {
    /// The fleet bucket (required).
    #[arg(long, env = "FLEET_BUCKET", value_name = "URL")]
    pub bucket: Option<String>,
    /// Deprecated spelling of `bucket`.
    #[arg(long, env = "FLEET_STORE", value_name = "URL", hide = true)]
    pub store: Option<String>,
    /// Secret key file of the publisher key, which signs (required).
    #[arg(long, env = "FLEET_SIGNING_KEY", value_name = "FILE")]
    pub signing_key: Option<PathBuf>,
    /// Trusted publisher keys (for what is already in the bucket).
    #[command(flatten)]
    #[serde(flatten)]
    pub trusted: TrustedKeyOptions,
}

impl SigningOptions {
    /// The bucket, opened; the publisher key, loaded; the publisher keys trusted on
    /// what is in the bucket (its own public half first).
    pub fn resolve(&self) -> anyhow::Result<(Bucket, SecretKey, Vec<PublicKey>)> {
        let url = config::bucket(&self.bucket, &self.store)?;
        let key_file = config::required(&self.signing_key, "signing-key", "FLEET_SIGNING_KEY")?;
        let key = crate::load_secret_key(key_file, "signing key (--signing-key)")?;
        Ok((crate::open_bucket(url)?, key, self.trusted.keys()?))
    }
}

/// Options of the commands that re-sign manifests.
#[derive(Args, Serialize, Deserialize, Debug, Default, Clone)]
#[serde(rename_all = "kebab-case", default)]
pub struct ResignOptions {
    /// Bucket and keys.
    #[command(flatten)]
    #[serde(flatten)]
    pub signing: SigningOptions,
    /// How long the new manifests stay valid: "7d", "12h", "P7D" [default: 7d].
    #[arg(long, env = "FLEET_EXPIRES_IN", value_name = "DURATION")]
    pub expires_in: Option<String>,
    /// Other cache keys accepted (cache key rotation).
    #[command(flatten)]
    #[serde(flatten)]
    pub extra_cache_keys: ExtraCacheKeyOptions,
}

/// [`ResignOptions`] resolved.
pub struct Resign {
    /// The bucket, opened.
    pub bucket: Bucket,
    /// The publisher key.
    pub signing_key: SecretKey,
    /// Lifetime of the new manifests.
    pub expires_in: SignedDuration,
    /// Other trusted publisher keys.
    pub trusted: Vec<PublicKey>,
    /// Extra cache keys.
    pub extra_cache_keys: Vec<PublicKey>,
}

impl ResignOptions {
    /// Checks and loads everything.
    pub fn resolve(&self) -> anyhow::Result<Resign> {
        let expires_in = match &self.expires_in {
            Some(t) => crate::cmd::deploy::parse_expires_in(t)?,
            None => crate::deploy::DEFAULT_EXPIRES_IN,
        };
        let (bucket, signing_key, trusted) = self.signing.resolve()?;
        Ok(Resign {
            bucket,
            signing_key,
            expires_in,
            trusted,
            extra_cache_keys: self.extra_cache_keys.keys()?,
        })
    }
}

/// Which hosts a command acts on (command line only).
#[derive(Args, Debug, Default, Clone)]
pub struct HostArgs {
    /// A host; repeatable.
    #[arg(long = "host", value_name = "HOST")]
    pub host: Vec<String>,
    /// File naming hosts: one per line, or a JSON object whose keys are host names.
    #[arg(long, value_name = "FILE", conflicts_with = "all")]
    pub hosts: Option<PathBuf>,
    /// Every host that has a manifest in the bucket.
    #[arg(long, conflicts_with = "host")]
    pub all: bool,
}

/// The hosts chosen, before the bucket is asked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostSelection {
    /// Every host with a manifest.
    All,
    /// These hosts; each must have a manifest.
    Named(Vec<HostName>),
}

impl HostArgs {
    /// The selection; `verb` names the command in the error when none is given.
    pub fn selection(&self, verb: &str) -> anyhow::Result<HostSelection> {
        if self.all {
            return Ok(HostSelection::All);
        }
        let mut hosts = self
            .host
            .iter()
            .map(|h| HostName::new(h).with_context(|| format!("--host {h:?}")))
            .collect::<anyhow::Result<Vec<_>>>()?;
        if let Some(f) = &self.hosts {
            hosts.extend(read_host_list(f)?);
        }
        if hosts.is_empty() {
            bail!("no host given to {verb}: pass --host HOST (repeatable), --hosts FILE or --all");
        }
        hosts.sort();
        hosts.dedup();
        Ok(HostSelection::Named(hosts))
    }
}

impl HostSelection {
    /// The hosts: the named ones, or every host with a manifest in `bucket`.
    pub async fn hosts(&self, bucket: &Bucket) -> anyhow::Result<Vec<HostName>> {
        match self {
            HostSelection::All => manifest_hosts(bucket).await,
            HostSelection::Named(h) => Ok(h.clone()),
        }
    }
}

/// Reads a `--hosts FILE` of host names; see the module docs.
pub fn read_host_list(path: &Path) -> anyhow::Result<Vec<HostName>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading hosts file {}", path.display()))?;
    let names: Vec<String> = if text.trim_start().starts_with('{') {
        let map: BTreeMap<String, serde_json::Value> = serde_json::from_str(&text)
            .with_context(|| format!("hosts file {} is not a JSON object", path.display()))?;
        map.into_keys().collect()
    } else {
        text.lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(str::to_owned)
            .collect()
    };
    if names.is_empty() {
        bail!("hosts file {} names no host", path.display());
    }
    names
        .iter()
        .map(|h| HostName::new(h).with_context(|| format!("hosts file {}: {h:?}", path.display())))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_files_are_lines_or_a_json_object() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("hosts");
        std::fs::write(&f, "# canaries\nweb-2\n\nweb-1\n").unwrap();
        let names: Vec<String> = read_host_list(&f)
            .unwrap()
            .iter()
            .map(|h| h.to_string())
            .collect();
        assert_eq!(names, ["web-2", "web-1"]);
        std::fs::write(&f, r#"{"db-1": "/nix/store/x"}"#).unwrap();
        assert_eq!(read_host_list(&f).unwrap()[0].as_str(), "db-1");
        std::fs::write(&f, "Bad_Host\n").unwrap();
        assert!(format!("{:#}", read_host_list(&f).unwrap_err()).contains("Bad_Host"));
        std::fs::write(&f, "# nothing\n").unwrap();
        assert!(read_host_list(&f).is_err());
        let none = HostArgs::default().selection("renew").unwrap_err();
        assert!(none.to_string().contains("--all"), "{none}");
    }
}
