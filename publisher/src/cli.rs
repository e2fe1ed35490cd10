//! The `fleet-publish` command line: the top-level [`Cli`], its subcommands
//! ([`Command`], each with its arguments beside its `run` in `cmd/<verb>.rs`), and
//! the configuration file's schema, the union of every subcommand's keys.

use std::collections::BTreeSet;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::cmd::audit::{AuditArgs, AuditOptions};
use crate::cmd::deploy::{DeployArgs, DeployOptions};
use crate::cmd::enroll::{EnrollArgs, EnrollOptions};
use crate::cmd::gc::{GcArgs, GcOptions};
use crate::cmd::hold::HoldArgs;
use crate::cmd::keygen::KeygenOptions;
use crate::cmd::policy::PolicyOptions;
use crate::cmd::push::PushArgs;
use crate::cmd::release::ReleaseArgs;
use crate::cmd::renew::{RenewArgs, RenewOptions};
use crate::cmd::resign::SigningOptions;
use crate::cmd::retire::RetireArgs;
use crate::cmd::rollback::{RollbackArgs, RollbackOptions};
use crate::cmd::rollout::RolloutArgs;
use crate::cmd::show::ShowOptions;
use crate::cmd::trust::{TrustArgs, TrustOptions};
use crate::cmd::unhold::UnholdArgs;
use crate::config::{ConfigFile, keys_of};

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
    Deploy(Box<DeployArgs>),
    /// Print a host's current manifest after verifying its signature.
    Show(ShowOptions),
    /// Re-sign the manifests that expire soon: same closure, higher sequence.
    Renew(Box<RenewArgs>),
    /// Re-sign an earlier closure of hosts (from audit/) with a higher sequence.
    Rollback(Box<RollbackArgs>),
    /// Hold hosts: deploy and rollback skip them until `unhold` (signed, with a reason).
    Hold(Box<HoldArgs>),
    /// Release the holds of `hold`.
    Unhold(Box<UnholdArgs>),
    /// Print the IAM policy JSON of a role.
    Policy(PolicyOptions),
    /// Register a new host from its enrollment request (`fleet-agent init`), make its
    /// credentials and write its bootstrap bundle (admin).
    Enroll(Box<EnrollArgs>),
    /// Read (`log`) or check (`verify`) the signed audit chain.
    Audit(AuditArgs),
    /// The root of trust in the bucket: publisher, cache, admin and root keys.
    Trust(TrustArgs),
    /// Retire hosts: a signed tombstone makes each agent apply nothing more
    /// (`--purge` then deletes their objects; admin role).
    Retire(Box<RetireArgs>),
    /// Delete cache objects no manifest, hold or recent generation needs (dry run
    /// unless --apply; admin role).
    Gc(Box<GcArgs>),
    /// Make a signed release (per-host closures and a plan of waves) to roll out.
    Release(Box<ReleaseArgs>),
    /// Move a release's rollout on, show it, pause, resume, abort or roll it back.
    Rollout(Box<RolloutArgs>),
}

impl Cli {
    /// The `--config` file, checked against the keys of every subcommand.
    pub fn config_file(&self) -> ConfigFile {
        ConfigFile::new(self.config.clone(), known_keys())
    }
}

/// Keys every subcommand's options know: the file's schema. `DeployOptions` holds
/// the push keys too.
fn known_keys() -> BTreeSet<String> {
    let mut all = BTreeSet::new();
    all.extend(keys_of::<KeygenOptions>());
    all.extend(keys_of::<DeployOptions>());
    all.extend(keys_of::<ShowOptions>());
    all.extend(keys_of::<PolicyOptions>());
    all.extend(keys_of::<RenewOptions>());
    all.extend(keys_of::<RollbackOptions>());
    all.extend(keys_of::<SigningOptions>());
    all.extend(keys_of::<EnrollOptions>());
    all.extend(keys_of::<AuditOptions>());
    all.extend(keys_of::<TrustOptions>());
    all.extend(keys_of::<GcOptions>());
    all
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::{CompressionArg, PushOptions};
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
        let file = ConfigFile::new(Some(f.clone()), known_keys());
        let cli =
            Cli::try_parse_from(["fleet-publish", "push", "--jobs", "5", "/nix/store/x"]).unwrap();
        let Command::Push(p) = cli.command else {
            panic!("push")
        };
        let o = file.layer(p.options).unwrap();
        assert_eq!(o.store.as_deref(), Some("file:///x"));
        assert_eq!(o.jobs, Some(5));
        assert_eq!(o.compression, Some(CompressionArg::Xz));

        // Deploy reads the push keys of the same file through its flattened options.
        let cli = Cli::try_parse_from(["fleet-publish", "deploy", "--host", "a"]).unwrap();
        let Command::Deploy(dargs) = cli.command else {
            panic!("deploy")
        };
        let o = file.layer(dargs.options).unwrap();
        assert_eq!(o.push.store.as_deref(), Some("file:///x"));
        assert_eq!(o.signing_key.as_deref(), Some(Path::new("/k")));
        assert_eq!(o.host.as_deref(), Some("a"));

        std::fs::write(&f, "stroe = \"x\"\n").unwrap();
        let e = file.layer(PushOptions::default()).unwrap_err().to_string();
        assert!(e.contains("stroe") && e.contains("p.toml"), "{e}");
        std::fs::write(&f, "jobs = \"many\"\n").unwrap();
        let e = format!("{:#}", file.layer(PushOptions::default()).unwrap_err());
        assert!(e.contains("jobs") && e.contains("p.toml"), "{e}");
    }

    #[test]
    fn force_sequence_is_not_a_file_key() {
        assert!(!known_keys().contains("force-sequence"));
        assert!(known_keys().contains("cache-key"));
        assert!(known_keys().contains("expires-in"));
    }

    #[test]
    fn config_file_comes_from_the_global_flag() {
        let cli = Cli::try_parse_from(["fleet-publish", "show", "--config", "/c.toml"]).unwrap();
        let e = cli.config_file().layer(PushOptions::default()).unwrap_err();
        assert!(format!("{e:#}").contains("/c.toml"), "{e:#}");
    }
}
