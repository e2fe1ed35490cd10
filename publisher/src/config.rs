//! The publisher's one configuration schema: flags, `FLEET_*` environment variables
//! and a TOML file, layered with [`fleet_core::config::layer`]
//! (flag > environment > file > built-in default).
//!
//! Every subcommand has one options struct (`KeygenOptions`, `PushOptions`, …) that is
//! both its clap arguments and its part of the file. A key means the same thing in
//! every subcommand that takes it (`store`, `cache-key`, …), and the file's schema is
//! the union of all of them, so one file can serve every subcommand; a key no
//! subcommand knows is an error that names it.
//!
//! ```toml
//! # fleet-publish.toml, given with --config FILE or FLEET_CONFIG
//! store = "s3://fleet-prod?region=eu-west-1"
//! cache-key = "/run/secrets/fleet-cache-1.secret"
//! signing-key = "/run/secrets/fleet-publisher-1.secret"
//! compression = "zstd"       # zstd (default), xz or none
//! compression-level = 3      # zstd 1-19 (default 3), xz 0-9 (default 6)
//! jobs = 8                   # store paths packed and uploaded at once (default: CPUs)
//! expires-in = "7d"          # manifest lifetime (default 7d)
//! activation = "switch"      # switch (default), boot or test
//! trusted-key = ["/etc/fleet/publisher-2.public"]
//! ```
//!
//! S3 credentials are not options: they come from the standard AWS environment
//! (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_PROFILE`-less web identity,
//! instance metadata, …), so they never sit on a command line or in this file.
//!
//! Not layered on purpose: the positional store paths of `push`, and
//! `deploy --force-sequence`, an emergency override that must be typed each time and
//! can never be left behind in a file or an environment.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// `fleet-publish`: the command line.
#[derive(Parser, Debug)]
#[command(
    name = "fleet-publish",
    version,
    about = "Publish Nix closures to a fleet bucket's binary cache and sign per-host manifests",
    after_help = "Every option can also be set with its FLEET_* environment variable or in the \
                  TOML file given by --config (keys are the long option names). S3 credentials \
                  come from the standard AWS environment (AWS_ACCESS_KEY_ID, …)."
)]
pub struct Cli {
    /// TOML configuration file; its keys are the long option names.
    #[arg(long, env = "FLEET_CONFIG", global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// The subcommand.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Make an ed25519 key pair in Nix's format (for the cache key or the publisher key).
    Keygen(KeygenOptions),
    /// Upload store paths and their closures to the bucket's binary cache.
    Push(PushArgs),
    /// Push a host's closure, then sign and write its manifest (sequence + 1).
    Deploy(DeployArgs),
    /// Print a host's current manifest after verifying its signature.
    Show(ShowOptions),
    /// Print the IAM policy JSON of a role.
    Policy(PolicyOptions),
}

/// `keygen` options.
#[derive(Args, Serialize, Deserialize, Debug, Default, Clone)]
#[serde(rename_all = "kebab-case", default)]
pub struct KeygenOptions {
    /// Key name, by convention `<who>-<n>` such as `cache.example.org-1` (required).
    #[arg(long, env = "FLEET_KEY_NAME", value_name = "NAME")]
    pub name: Option<String>,
    /// Where to write the secret key (mode 0600; an existing file is never replaced) (required).
    #[arg(long, env = "FLEET_SECRET_OUT", value_name = "FILE")]
    pub secret_out: Option<PathBuf>,
    /// Where to write the public key (required).
    #[arg(long, env = "FLEET_PUBLIC_OUT", value_name = "FILE")]
    pub public_out: Option<PathBuf>,
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

impl From<CompressionArg> for fleet_core::Compression {
    fn from(c: CompressionArg) -> Self {
        match c {
            CompressionArg::Zstd => fleet_core::Compression::Zstd,
            CompressionArg::Xz => fleet_core::Compression::Xz,
            CompressionArg::None => fleet_core::Compression::None,
        }
    }
}

/// Options shared by `push` and `deploy` (everything pushing needs).
#[derive(Args, Serialize, Deserialize, Debug, Default, Clone)]
#[serde(rename_all = "kebab-case", default)]
pub struct PushOptions {
    /// The fleet bucket: s3://BUCKET[/PREFIX][?endpoint=URL&region=R] or file:///PATH (required).
    #[arg(long, env = "FLEET_STORE", value_name = "URL")]
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

/// `push` arguments.
#[derive(Args, Debug, Clone)]
pub struct PushArgs {
    /// Options (also from environment and file).
    #[command(flatten)]
    pub options: PushOptions,
    /// Store paths (or symlinks to them, such as ./result) whose closures to upload.
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<String>,
}

/// How the agent activates the closure.
#[derive(ValueEnum, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ActivationArg {
    /// Make it the boot default and switch to it now.
    Switch,
    /// Make it the boot default; it runs after the next reboot.
    Boot,
    /// Switch to it now without making it the boot default.
    Test,
}

impl From<ActivationArg> for fleet_core::Activation {
    fn from(a: ActivationArg) -> Self {
        match a {
            ActivationArg::Switch => fleet_core::Activation::Switch,
            ActivationArg::Boot => fleet_core::Activation::Boot,
            ActivationArg::Test => fleet_core::Activation::Test,
        }
    }
}

/// `deploy` options.
#[derive(Args, Serialize, Deserialize, Debug, Default, Clone)]
#[serde(rename_all = "kebab-case", default)]
pub struct DeployOptions {
    /// Push options.
    #[command(flatten)]
    #[serde(flatten)]
    pub push: PushOptions,
    /// Secret key file that signs manifests (the publisher key) (required).
    #[arg(long, env = "FLEET_SIGNING_KEY", value_name = "FILE")]
    pub signing_key: Option<PathBuf>,
    /// The host to deploy (with --closure).
    #[arg(long, env = "FLEET_HOST", value_name = "HOST")]
    pub host: Option<String>,
    /// The host's system closure: a store path or a symlink to one such as ./result.
    #[arg(long, env = "FLEET_CLOSURE", value_name = "PATH")]
    pub closure: Option<String>,
    /// JSON file mapping host names to closures, `{"web-1": "/nix/store/…", …}`, to
    /// deploy many hosts at once (instead of --host/--closure).
    #[arg(long, env = "FLEET_HOSTS", value_name = "FILE", conflicts_with_all = ["host", "closure"])]
    pub hosts: Option<PathBuf>,
    /// How long the manifest stays valid: "7d", "12h", "90m", "P7D" [default: 7d].
    #[arg(long, env = "FLEET_EXPIRES_IN", value_name = "DURATION")]
    pub expires_in: Option<String>,
    /// How the agent activates the closure [default: switch].
    #[arg(long, env = "FLEET_ACTIVATION", value_enum)]
    pub activation: Option<ActivationArg>,
    /// Public key file of another publisher whose signature on the current manifest
    /// is accepted (this publisher's own key always is); repeatable.
    #[arg(
        long,
        env = "FLEET_TRUSTED_KEY",
        value_name = "FILE",
        value_delimiter = ','
    )]
    pub trusted_key: Vec<PathBuf>,
    /// Public key file of another cache key whose narinfo signatures hosts should also
    /// accept for this closure, e.g. the old key while rotating cache keys (paths
    /// already in the cache keep the old key's signature); repeatable.
    #[arg(
        long,
        env = "FLEET_EXTRA_CACHE_KEY",
        value_name = "FILE",
        value_delimiter = ','
    )]
    pub extra_cache_key: Vec<PathBuf>,
}

/// `deploy` arguments.
#[derive(Args, Debug, Clone)]
pub struct DeployArgs {
    /// Options (also from environment and file).
    #[command(flatten)]
    pub options: DeployOptions,
    /// Emergency override: write this sequence number even if the current manifest
    /// cannot be verified (lost or rotated publisher key). It must be higher than any
    /// sequence the host has accepted. Command line only.
    #[arg(long, value_name = "N")]
    pub force_sequence: Option<u64>,
}

/// `show` options.
#[derive(Args, Serialize, Deserialize, Debug, Default, Clone)]
#[serde(rename_all = "kebab-case", default)]
pub struct ShowOptions {
    /// The fleet bucket (required).
    #[arg(long, env = "FLEET_STORE", value_name = "URL")]
    pub store: Option<String>,
    /// The host whose manifest to show (required).
    #[arg(long, env = "FLEET_HOST", value_name = "HOST")]
    pub host: Option<String>,
    /// Publisher public key file trusted to sign manifests; repeatable (at least one).
    #[arg(
        long,
        env = "FLEET_TRUSTED_KEY",
        value_name = "FILE",
        value_delimiter = ','
    )]
    pub trusted_key: Vec<PathBuf>,
}

/// A role that gets an IAM policy.
#[derive(ValueEnum, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum RoleArg {
    /// One host's agent (needs --host).
    Agent,
    /// CI or an admin running fleet-publish.
    Publisher,
    /// The dashboard.
    Reporter,
}

/// `policy` options.
#[derive(Args, Serialize, Deserialize, Debug, Default, Clone)]
#[serde(rename_all = "kebab-case", default)]
pub struct PolicyOptions {
    /// The role (required).
    #[arg(long, env = "FLEET_ROLE", value_enum)]
    pub role: Option<RoleArg>,
    /// S3 bucket name (required).
    #[arg(long, env = "FLEET_BUCKET", value_name = "BUCKET")]
    pub bucket: Option<String>,
    /// Root prefix inside the bucket [default: none].
    #[arg(long, env = "FLEET_PREFIX", value_name = "PREFIX")]
    pub prefix: Option<String>,
    /// The agent's host (role agent only).
    #[arg(long, env = "FLEET_HOST", value_name = "HOST")]
    pub host: Option<String>,
}

/// Keys every subcommand's options know: the file's schema.
fn known_keys() -> BTreeSet<String> {
    fn keys<T: Serialize + Default>() -> Vec<String> {
        match serde_json::to_value(T::default()) {
            Ok(serde_json::Value::Object(m)) => m.keys().cloned().collect(),
            _ => Vec::new(),
        }
    }
    let mut all = BTreeSet::new();
    all.extend(keys::<KeygenOptions>());
    all.extend(keys::<DeployOptions>());
    all.extend(keys::<ShowOptions>());
    all.extend(keys::<PolicyOptions>());
    all
}

/// Fills what flags and environment left unset in `options` from the TOML file
/// `file` (if any), after checking that the file holds only known keys.
pub fn layer<T: Serialize + DeserializeOwned>(
    options: T,
    file: Option<&Path>,
) -> anyhow::Result<T> {
    if let Some(path) = file {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading config file {}", path.display()))?;
        let table: toml::Table = toml::from_str(&text)
            .map_err(|e| anyhow::anyhow!("config file {} is invalid: {e}", path.display()))?;
        let known = known_keys();
        for k in table.keys() {
            if !known.contains(k) {
                bail!(
                    "config file {}: unknown key `{k}`; known keys are {}",
                    path.display(),
                    known
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

/// The value of a required setting, or an error saying the three ways to give it.
pub fn required<'a, T>(value: &'a Option<T>, key: &str, env: &str) -> anyhow::Result<&'a T> {
    value.as_ref().ok_or_else(|| {
        anyhow::anyhow!(
            "no {key} given: pass --{key}, set {env}, or put `{key} = …` in the config file (--config)"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn file_fills_what_flags_left_unset_and_unknown_keys_are_named() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("p.toml");
        std::fs::write(
            &f,
            "store = \"file:///x\"\njobs = 3\ncompression = \"xz\"\nsigning-key = \"/k\"\n\
             role = \"agent\"\n",
        )
        .unwrap();
        let cli =
            Cli::try_parse_from(["fleet-publish", "push", "--jobs", "5", "/nix/store/x"]).unwrap();
        let Command::Push(p) = cli.command else {
            panic!("push")
        };
        let o = layer(p.options, Some(&f)).unwrap();
        assert_eq!(o.store.as_deref(), Some("file:///x"));
        assert_eq!(o.jobs, Some(5));
        assert_eq!(o.compression, Some(CompressionArg::Xz));

        // Deploy reads the push keys of the same file through its flattened options.
        let cli = Cli::try_parse_from(["fleet-publish", "deploy", "--host", "a"]).unwrap();
        let Command::Deploy(dargs) = cli.command else {
            panic!("deploy")
        };
        let o = layer(dargs.options, Some(&f)).unwrap();
        assert_eq!(o.push.store.as_deref(), Some("file:///x"));
        assert_eq!(o.signing_key.as_deref(), Some(Path::new("/k")));
        assert_eq!(o.host.as_deref(), Some("a"));

        std::fs::write(&f, "stroe = \"x\"\n").unwrap();
        let e = layer(PushOptions::default(), Some(&f))
            .unwrap_err()
            .to_string();
        assert!(e.contains("stroe") && e.contains("p.toml"), "{e}");
        std::fs::write(&f, "jobs = \"many\"\n").unwrap();
        let e = format!("{:#}", layer(PushOptions::default(), Some(&f)).unwrap_err());
        assert!(e.contains("jobs") && e.contains("p.toml"), "{e}");
    }

    #[test]
    fn force_sequence_is_not_a_file_key() {
        assert!(!known_keys().contains("force-sequence"));
        assert!(known_keys().contains("cache-key"));
        assert!(known_keys().contains("expires-in"));
    }

    #[test]
    fn required_settings_say_how_to_give_them() {
        let e = required::<String>(&None, "store", "FLEET_STORE")
            .unwrap_err()
            .to_string();
        assert!(e.contains("--store") && e.contains("FLEET_STORE"), "{e}");
    }
}
