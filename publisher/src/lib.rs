//! `fleet-publish`: makes closures that CI built deployable.
//!
//! - [`push`](mod@push): uploads store paths with their closures to the bucket's
//!   `cache/`, a Nix binary cache that real `nix copy --from` reads (narinfos signed
//!   with the cache key over Nix's fingerprint, NARs byte-identical to
//!   `nix-store --dump`, compressed);
//! - [`deploy`](mod@deploy): pushes a host's closure, then writes its signed
//!   manifest with the next sequence number by compare-and-swap, and an audit entry;
//! - [`enroll`](mod@enroll): registers a new host in the signed host registry,
//!   makes its scoped credentials over the IAM API ([`iam_api`]) and its bootstrap
//!   bundle;
//! - [`audit_log`]: the signed audit chain every action appends to
//!   ([`audit_log::append`]); [`audit_verify`] reads and checks it (`audit log`,
//!   `audit verify`);
//! - [`rollout`](mod@rollout): signed releases and their rollouts in waves, moved on by
//!   compare-and-swap on a state object in the bucket;
//! - [`show`](cmd::show), [`keygen`](cmd::keygen), [`policy`](cmd::policy).
//! - [`show`](cmd::show), [`keygen`](cmd::keygen), [`policy`](cmd::policy);
//! - [`trust_write`]: the root of trust's next version (`fleet-publish trust …`).
//!
//! The logic lives here so tests can call it in process. The engines ([`mod@push`],
//! [`mod@deploy`]) take settings and know nothing of the command line; each
//! `cmd/<verb>.rs` holds its subcommand's arguments and the `run` that layers them
//! ([`config`]), calls the engine and prints; [`cli`] gathers the subcommands;
//! `main.rs` only dispatches and maps errors to exit codes. Every format comes from
//! `fleet-core`; this crate only orchestrates.

#![warn(missing_docs)]

pub mod audit_log;
pub mod audit_verify;
pub mod cli;
pub mod cmd;
pub mod config;
pub mod deploy;
pub mod dry_run;
pub mod enroll;
pub mod gc;
pub mod hold;
pub mod iam_api;
pub mod manifest_write;
pub mod push;
pub mod renew;
pub mod retire;
pub mod rollback;
pub mod rollout;
pub mod trust_write;

use std::path::Path;

use anyhow::{Context, bail};
use fleet_core::nixcli::Nix;
use fleet_core::{Bucket, BucketOptions, BucketUrl, PublicKey, SecretKey, StorePath};

pub use cmd::show::{Shown, show};
pub use deploy::{DeployOutcome, DeploySettings, DeployTarget, deploy};
pub use push::{PushSettings, PushSummary, push};

/// Opens the bucket at `url` with credentials from the standard AWS environment.
pub fn open_bucket(url: &str) -> anyhow::Result<Bucket> {
    let parsed = BucketUrl::parse(url)?;
    Ok(Bucket::open(&parsed, &BucketOptions::default())?)
}

/// Loads a secret key file; `what` says which key it is ("cache key", "signing key").
pub fn load_secret_key(path: &Path, what: &str) -> anyhow::Result<SecretKey> {
    SecretKey::load(path).with_context(|| format!("loading the {what}"))
}

/// Loads a public key file; `what` says which key it is.
pub fn load_public_key(path: &Path, what: &str) -> anyhow::Result<PublicKey> {
    PublicKey::load(path).with_context(|| format!("loading {what}"))
}

/// Turns user input into a store path: a store path itself, or a symlink to one
/// (`./result` from `nix-build`).
pub fn resolve_store_path(input: &str) -> anyhow::Result<StorePath> {
    if let Ok(p) = StorePath::new(input.trim_end_matches('/')) {
        return Ok(p);
    }
    let not_one = || {
        format!(
            "{input} is not a store path (/nix/store/<hash>-<name>) nor a symlink to one such as ./result"
        )
    };
    let canonical = std::fs::canonicalize(input).with_context(not_one)?;
    let text = canonical.to_str().with_context(not_one)?;
    StorePath::new(text).with_context(not_one)
}

/// Refuses paths that are not valid in the local Nix store, naming them.
pub async fn check_valid(nix: &Nix, paths: &[StorePath]) -> anyhow::Result<()> {
    let invalid = nix
        .invalid_paths(paths)
        .await
        .context("checking the paths against the local Nix store")?;
    if let Some(first) = invalid.first() {
        bail!(
            "{first} is not a valid path in the local Nix store{}: build it first (or copy it here), \
             then run this again",
            if invalid.len() > 1 {
                format!(" (nor are {} others)", invalid.len() - 1)
            } else {
                String::new()
            }
        );
    }
    Ok(())
}

/// The number of CPUs, the default of `--jobs`.
pub fn default_jobs() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}
