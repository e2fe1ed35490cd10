//! How the publisher's options are resolved: flags, `FLEET_*` environment variables
//! and a TOML file, layered with [`fleet_core::config::layer`]
//! (flag > environment > file > built-in default), plus the option group that
//! several subcommands share ([`PushOptions`], taken by `push` and `deploy`).
//!
//! Every subcommand has one options struct (`KeygenOptions`, `PushOptions`, …, each
//! beside its `run` in `cmd/<verb>.rs`) that is both its clap arguments and its part
//! of the file. A key means the same thing in every subcommand that takes it
//! (`bucket`, `cache-key`, …), and the file's schema is the union of all of them
//! (gathered by [`Cli::config_file`](crate::cli::Cli::config_file)), so one file can
//! serve every subcommand; a key no subcommand knows is an error that names it.
//!
//! ```toml
//! # fleet-publish.toml, given with --config FILE or FLEET_CONFIG
//! bucket = "s3://fleet-prod?region=eu-west-1"
//! cache-key = "/run/secrets/fleet-cache-1.secret"
//! signing-key = "/run/secrets/fleet-publisher-1.secret"
//! compression = "zstd"       # zstd (default), xz or none
//! compression-level = 3      # zstd 1-19 (default 3), xz 0-9 (default 6)
//! jobs = 8                   # store paths packed and uploaded at once (default: CPUs)
//! expires-in = "7d"          # manifest lifetime (default 7d)
//! activation = "switch"      # switch (default), boot or test
//! trusted-key-file = ["/etc/fleet/publisher-2.public"]
//! ```
//!
//! Names mean the same in every fleet binary: `bucket` is the fleet bucket's URL (the
//! old spelling `store` still works, with a warning); a public-key option such as
//! `trusted-key` takes key text (`name:base64`) and its `-file` twin a file holding
//! it. Secret keys (`cache-key`, `signing-key`) are only ever files.
//!
//! S3 credentials are not options: they come from the standard AWS environment
//! (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_PROFILE`-less web identity,
//! instance metadata, …), so they never sit on a command line or in this file.
//!
//! Not layered on purpose: the positional store paths of `push`, and
//! `deploy --force-sequence`, an emergency override that must be typed each time and
//! can never be left behind in a file or an environment.

use std::collections::BTreeSet;
use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use fleet_core::Compression;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::push::{DEFAULT_SPILL_THRESHOLD, PushSettings};

/// The TOML file given with `--config` (if any) and the keys it may hold.
#[derive(Clone, Debug, Default)]
pub struct ConfigFile {
    path: Option<PathBuf>,
    known: BTreeSet<String>,
}

impl ConfigFile {
    /// The file at `path` (none: only flags, environment and defaults), whose keys
    /// must all be in `known`.
    pub fn new(path: Option<PathBuf>, known: BTreeSet<String>) -> Self {
        Self { path, known }
    }

    /// Fills what flags and environment left unset in `options` from the file (if
    /// any), after checking that the file holds only known keys.
    pub fn layer<T: Serialize + DeserializeOwned>(&self, options: T) -> anyhow::Result<T> {
        let file = self.path.as_deref();
        if let Some(path) = file {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading config file {}", path.display()))?;
            let table: toml::Table = toml::from_str(&text)
                .map_err(|e| anyhow::anyhow!("config file {} is invalid: {e}", path.display()))?;
            for k in table.keys() {
                if !self.known.contains(k) {
                    bail!(
                        "config file {}: unknown key `{k}`; known keys are {}",
                        path.display(),
                        self.known
                            .iter()
                            .map(String::as_str)
                            .collect::<Vec<_>>()
                            .join(", ")
                    );
                }
            }
        }
        Ok(fleet_core::config::layer(options, file)?)
    }
}

/// The keys of an options struct in the file: its serde field names.
pub(crate) fn keys_of<T: Serialize + Default>() -> Vec<String> {
    match serde_json::to_value(T::default()) {
        Ok(serde_json::Value::Object(m)) => m.keys().cloned().collect(),
        _ => Vec::new(),
    }
}

/// The bucket URL from `bucket`, or from its deprecated spelling `store` (with a
/// warning), or an error saying the three ways to give it.
pub fn bucket<'a>(
    bucket: &'a Option<String>,
    store: &'a Option<String>,
) -> anyhow::Result<&'a str> {
    fleet_core::config::renamed(
        bucket.as_deref(),
        "bucket",
        store.as_deref(),
        "store (--store, FLEET_STORE)",
    )
    .ok_or_else(|| {
        anyhow::anyhow!(
            "no bucket given: pass --bucket URL, set FLEET_BUCKET, or put `bucket = …` in the config file (--config)"
        )
    })
}

/// Publisher public keys trusted to sign manifests, as text and as files: `show`
/// verifies with them, `deploy` accepts the current manifest when one of them (or its
/// own signing key) signed it.
#[derive(Args, Serialize, Deserialize, Debug, Default, Clone)]
#[serde(rename_all = "kebab-case", default)]
pub struct TrustedKeyOptions {
    /// Publisher public key (`name:base64`) trusted to sign manifests; repeatable.
    #[arg(
        long,
        env = "FLEET_TRUSTED_KEY",
        value_name = "KEY",
        value_delimiter = ','
    )]
    pub trusted_key: Vec<String>,
    /// File holding such a key; repeatable.
    #[arg(
        long,
        env = "FLEET_TRUSTED_KEY_FILE",
        value_name = "FILE",
        value_delimiter = ','
    )]
    pub trusted_key_file: Vec<PathBuf>,
}

impl TrustedKeyOptions {
    /// Whether no key was given either way.
    pub fn is_empty(&self) -> bool {
        self.trusted_key.is_empty() && self.trusted_key_file.is_empty()
    }

    /// The keys, parsed and loaded.
    pub fn keys(&self) -> anyhow::Result<Vec<fleet_core::PublicKey>> {
        public_keys("trusted-key", &self.trusted_key, &self.trusted_key_file)
    }
}

/// Cache public keys accepted besides the cache key's own (a cache key rotation:
/// paths pushed before it carry the old key's signature), given as text or files;
/// taken by `deploy`, `renew` and `rollback`.
#[derive(Args, Serialize, Deserialize, Debug, Default, Clone)]
#[serde(rename_all = "kebab-case", default)]
pub struct ExtraCacheKeyOptions {
    /// Public key (`name:base64`) of another cache key whose narinfo signatures are
    /// accepted and listed in the manifests, e.g. the old key while rotating cache
    /// keys; repeatable.
    #[arg(
        long,
        env = "FLEET_EXTRA_CACHE_KEY",
        value_name = "KEY",
        value_delimiter = ','
    )]
    pub extra_cache_key: Vec<String>,
    /// File holding such a key; repeatable.
    #[arg(
        long,
        env = "FLEET_EXTRA_CACHE_KEY_FILE",
        value_name = "FILE",
        value_delimiter = ','
    )]
    pub extra_cache_key_file: Vec<PathBuf>,
}

impl ExtraCacheKeyOptions {
    /// The keys, parsed and loaded.
    pub fn keys(&self) -> anyhow::Result<Vec<fleet_core::PublicKey>> {
        public_keys(
            "extra-cache-key",
            &self.extra_cache_key,
            &self.extra_cache_key_file,
        )
    }
}

/// Public keys given as text (`texts`, the `what` option) and as files (`files`, the
/// `what-file` option). For configs written before the two were told apart, a `what`
/// value that is not key text but names a file is read as a file, with a warning.
pub fn public_keys(
    what: &str,
    texts: &[String],
    files: &[PathBuf],
) -> anyhow::Result<Vec<fleet_core::PublicKey>> {
    let mut keys = Vec::new();
    for (i, t) in texts.iter().enumerate() {
        match fleet_core::PublicKey::parse(t, &format!("{what}[{i}]")) {
            Ok(k) => keys.push(k),
            Err(e) if !t.contains(':') && std::path::Path::new(t).is_file() => {
                tracing::warn!(
                    "--{what} {t} names a file: pass key files with --{what}-file (--{what} takes \
                     the key text, name:base64)"
                );
                let k = crate::load_public_key(std::path::Path::new(t), &format!("--{what}"))
                    .with_context(|| e.to_string())?;
                keys.push(k);
            }
            Err(e) => return Err(e.into()),
        }
    }
    for f in files {
        keys.push(crate::load_public_key(
            f,
            &format!("a key file of --{what}-file"),
        )?);
    }
    Ok(keys)
}

/// The value of a required setting, or an error saying the three ways to give it.
pub fn required<'a, T>(value: &'a Option<T>, key: &str, env: &str) -> anyhow::Result<&'a T> {
    value.as_ref().ok_or_else(|| {
        anyhow::anyhow!(
            "no {key} given: pass --{key}, set {env}, or put `{key} = …` in the config file (--config)"
        )
    })
}

/// NAR compression, as the narinfo `Compression:` field names it.
#[derive(ValueEnum, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum CompressionArg {
    /// zstd (`.nar.zst`), the default.
    Zstd,
    /// xz (`.nar.xz`).
    Xz,
    /// Uncompressed (`.nar`).
    None,
}

impl From<CompressionArg> for Compression {
    fn from(c: CompressionArg) -> Self {
        match c {
            CompressionArg::Zstd => Compression::Zstd,
            CompressionArg::Xz => Compression::Xz,
            CompressionArg::None => Compression::None,
        }
    }
}

/// Options shared by `push` and `deploy` (everything pushing needs).
#[derive(Args, Serialize, Deserialize, Debug, Default, Clone)]
#[serde(rename_all = "kebab-case", default)]
pub struct PushOptions {
    /// The fleet bucket: `s3://BUCKET[/PREFIX][?endpoint=URL&region=R]` or `file:///PATH` (required).
    #[arg(long, env = "FLEET_BUCKET", value_name = "URL")]
    pub bucket: Option<String>,
    /// Deprecated spelling of `bucket`.
    #[arg(long, env = "FLEET_STORE", value_name = "URL", hide = true)]
    pub store: Option<String>,
    /// Secret key file that signs narinfos (the cache key) (required).
    #[arg(long, env = "FLEET_CACHE_KEY", value_name = "FILE")]
    pub cache_key: Option<PathBuf>,
    /// NAR compression [default: zstd].
    #[arg(long, env = "FLEET_COMPRESSION", value_enum)]
    pub compression: Option<CompressionArg>,
    /// Compression level: zstd 1-19 [default: 3], xz 0-9 [default: 6].
    #[arg(long, env = "FLEET_COMPRESSION_LEVEL", value_name = "N")]
    pub compression_level: Option<i32>,
    /// Store paths packed and uploaded at once [default: number of CPUs].
    #[arg(long, env = "FLEET_JOBS", value_name = "N")]
    pub jobs: Option<usize>,
}

impl PushOptions {
    /// Push settings from the layered options, with defaults and range checks.
    pub fn settings(&self) -> anyhow::Result<PushSettings> {
        use std::io::IsTerminal;
        let compression: Compression = self.compression.map_or(Compression::Zstd, Into::into);
        if let Some(l) = self.compression_level {
            let range = match compression {
                Compression::Zstd => 1..=19,
                Compression::Xz => 0..=9,
                Compression::None => {
                    bail!("compression-level = {l} makes no sense with compression none; drop it")
                }
            };
            if !range.contains(&l) {
                bail!(
                    "compression-level = {l} is out of range for {compression}: give {} to {}",
                    range.start(),
                    range.end()
                );
            }
        }
        let jobs = self.jobs.unwrap_or_else(crate::default_jobs);
        if !(1..=256).contains(&jobs) {
            bail!("jobs = {jobs} is out of range: give 1 to 256");
        }
        Ok(PushSettings {
            compression,
            level: self.compression_level,
            jobs,
            progress: std::io::stderr().is_terminal(),
            spill_threshold: DEFAULT_SPILL_THRESHOLD,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_are_range_checked() {
        let mut o = PushOptions {
            compression_level: Some(25),
            ..Default::default()
        };
        assert!(o.settings().unwrap_err().to_string().contains("1 to 19"));
        o.compression = Some(CompressionArg::None);
        o.compression_level = Some(1);
        assert!(o.settings().is_err());
        o.compression_level = None;
        o.jobs = Some(0);
        assert!(o.settings().unwrap_err().to_string().contains("jobs"));
        o.jobs = Some(4);
        let s = o.settings().unwrap();
        assert_eq!((s.compression, s.jobs), (Compression::None, 4));
    }

    #[test]
    fn required_settings_say_how_to_give_them() {
        let e = required::<String>(&None, "host", "FLEET_HOST")
            .unwrap_err()
            .to_string();
        assert!(e.contains("--host") && e.contains("FLEET_HOST"), "{e}");
        let e = bucket(&None, &None).unwrap_err().to_string();
        assert!(e.contains("--bucket") && e.contains("FLEET_BUCKET"), "{e}");
        let old = Some("file:///old".to_owned());
        assert_eq!(bucket(&None, &old).unwrap(), "file:///old");
        let new = Some("file:///new".to_owned());
        assert_eq!(bucket(&new, &old).unwrap(), "file:///new");
    }
}
