//! The deploy engine: makes hosts run a closure.
//!
//! For each [`DeployTarget`] (the command line gives one with `--host/--closure`,
//! many with `--hosts FILE`):
//!
//! 1. push every closure the local Nix store holds ([`mod@crate::push`], one run for
//!    all hosts, shared paths once); a closure the local store lacks must already be
//!    complete in the bucket, every narinfo signed by a trusted cache key (the cache
//!    key's public half or an `--extra-cache-key`): its narinfos are walked
//!    ([`fleet_core::cache_walk`]) instead, so an old build can be deployed again
//!    from any machine;
//! 2. confirm with a fresh LIST of `cache/` that every path of each pushed closure
//!    has its narinfo (a narinfo is only ever written after its NAR), so no manifest
//!    can point at a closure that is not fully uploaded;
//! 3. read `hosts/<host>/manifest.json` and verify it with the publisher's own public
//!    key (and any `--trusted-key`), without the expiry check: an expired manifest
//!    is still the sequence to beat. A manifest that does not verify stops the deploy
//!    with an error saying so; `--force-sequence N` is the escape hatch for a lost or
//!    rotated key;
//! 4. sign a new manifest (`fleet_core::Manifest`) with sequence = current + 1 and
//!    write it by compare-and-swap: `put_if_absent` when there was none, else
//!    `put_if_match` on the ETag that was read. When another publisher won the race
//!    (`Conflict`/`AlreadyExists`) start again from 3, at most
//!    [`DeploySettings::max_attempts`] times. Two racing publishers therefore get
//!    distinct sequence numbers and neither update is lost;
//! 5. append an audit entry (`fleet_core::audit`) create-only.
//!
//! Steps 3 to 5 are [`crate::manifest_write`], which renew and rollback share.
//! Before all that, held hosts ([`crate::hold`]) and retired ones (their manifest a
//! tombstone) are dropped from the targets with a warning, unless
//! [`DeploySettings::force`].

use anyhow::{Context, bail};
use fleet_core::cache_walk::{BucketClosure, walk_closure};
use fleet_core::nixcli::Nix;
use fleet_core::{Activation, Bucket, HostName, PublicKey, SecretKey, StorePath, TrustedKeys};
use jiff::SignedDuration;

use crate::hold::skip_held_or_retired;
pub use crate::manifest_write::DeployOutcome;
use crate::manifest_write::{NextManifest, WriteSettings, trusted_publishers, write_next};
use crate::push::{CacheListing, PushSettings, PushSummary, push};

/// Default manifest lifetime.
pub const DEFAULT_EXPIRES_IN: SignedDuration = SignedDuration::from_hours(7 * 24);
/// Longest manifest lifetime accepted: a year. Longer ones defeat the freeze bound.
pub const MAX_EXPIRES_IN: SignedDuration = SignedDuration::from_hours(366 * 24);
/// Default compare-and-swap attempts per host.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 10;

/// One host to deploy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeployTarget {
    /// The host.
    pub host: HostName,
    /// Its system closure.
    pub closure: StorePath,
}

/// How to deploy.
#[derive(Clone, Debug)]
pub struct DeploySettings {
    /// How to push the closures.
    pub push: PushSettings,
    /// Manifest lifetime.
    pub expires_in: SignedDuration,
    /// Activation mode written into the manifests.
    pub activation: Activation,
    /// Other publisher keys accepted on the current manifest (the signing key's own
    /// public key always is).
    pub trusted: Vec<PublicKey>,
    /// Write this sequence even if the current manifest does not verify.
    pub force_sequence: Option<u64>,
    /// Compare-and-swap attempts per host before giving up.
    pub max_attempts: u32,
    /// Cache public keys listed in the manifests besides the cache key's own (key
    /// rotation: narinfos pushed before the rotation carry the old key's signature).
    pub extra_cache_keys: Vec<PublicKey>,
    /// Deploy held and retired hosts too (`fleet_core::hold`, `retire`); otherwise
    /// they are skipped.
    pub force: bool,
    /// Written as the manifests' `activate_after`.
    pub activate_after: Option<jiff::Timestamp>,
    /// Written as the manifests' `maintenance_windows` (empty: none).
    pub maintenance_windows: Vec<String>,
}

impl Default for DeploySettings {
    fn default() -> Self {
        Self {
            push: PushSettings::default(),
            expires_in: DEFAULT_EXPIRES_IN,
            activation: Activation::Switch,
            trusted: Vec::new(),
            force_sequence: None,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            extra_cache_keys: Vec::new(),
            force: false,
            activate_after: None,
            maintenance_windows: Vec::new(),
        }
    }
}

/// Pushes every target's closure, then writes each host's manifest; see the module
/// docs. Hosts are written one after the other; the first failure stops the run
/// (hosts already written stay written, and say so in the error).
pub async fn deploy(
    bucket: &Bucket,
    nix: &Nix,
    cache_key: &SecretKey,
    signing_key: &SecretKey,
    targets: &[DeployTarget],
    settings: &DeploySettings,
) -> anyhow::Result<(PushSummary, Vec<DeployOutcome>)> {
    if targets.is_empty() {
        bail!("no host to deploy");
    }
    let write = WriteSettings {
        signing_key,
        trusted: &settings.trusted,
        force_sequence: settings.force_sequence,
        max_attempts: settings.max_attempts,
        action: "deploy",
    };
    let hosts: Vec<HostName> = targets.iter().map(|t| t.host.clone()).collect();
    let trusted = trusted_publishers(&write);
    let hosts = skip_held_or_retired(bucket, hosts, &trusted, settings.force, "deployed").await?;
    let targets: Vec<DeployTarget> = targets
        .iter()
        .filter(|t| hosts.contains(&t.host))
        .cloned()
        .collect();
    let targets = &targets[..];
    let trusted_cache = TrustedKeys::new(cache_keys(cache_key, &settings.extra_cache_keys));
    let (summary, _) =
        publish_closures(bucket, nix, cache_key, targets, settings, &trusted_cache).await?;
    let next = |t: &DeployTarget| NextManifest {
        closure: t.closure.clone(),
        activation: settings.activation,
        cache_keys: cache_keys(cache_key, &settings.extra_cache_keys),
        expires_in: settings.expires_in,
        activate_after: settings.activate_after,
        maintenance_windows: (!settings.maintenance_windows.is_empty())
            .then(|| settings.maintenance_windows.clone()),
    };
    let mut outcomes = Vec::with_capacity(targets.len());
    for t in targets {
        let written = write_next(bucket, &t.host, &write, |_| Ok(Some(next(t)))).await;
        match written {
            Ok(o) => outcomes.extend(o),
            Err(e) if !outcomes.is_empty() => {
                let done: Vec<String> = outcomes.iter().map(|o| o.host.to_string()).collect();
                return Err(e.context(format!(
                    "deploying host {} failed after hosts {} were deployed",
                    t.host,
                    done.join(", ")
                )));
            }
            Err(e) => return Err(e.context(format!("deploying host {}", t.host))),
        }
    }
    Ok((summary, outcomes))
}

/// The cache keys a manifest lists: the cache key's public half, then the extra ones.
pub fn cache_keys(cache_key: &SecretKey, extra: &[PublicKey]) -> Vec<PublicKey> {
    std::iter::once(cache_key.public())
        .chain(extra.iter().filter(|k| **k != cache_key.public()).cloned())
        .collect()
}

/// Makes every target's closure complete in the bucket: the closures valid in the
/// local store are pushed and then checked against a fresh LIST of `cache/`; the
/// others must already be there, complete and signed by a trusted cache key (their
/// narinfos are walked, [`fleet_core::cache_walk`]). Returns the push summary and
/// the closures taken from the bucket alone.
pub async fn publish_closures(
    bucket: &Bucket,
    nix: &Nix,
    cache_key: &SecretKey,
    targets: &[DeployTarget],
    settings: &DeploySettings,
    trusted_cache: &TrustedKeys,
) -> anyhow::Result<(PushSummary, Vec<BucketClosure>)> {
    let mut roots: Vec<StorePath> = targets.iter().map(|t| t.closure.clone()).collect();
    roots.sort();
    roots.dedup();
    let not_local = nix
        .invalid_paths(&roots)
        .await
        .context("checking the closures against the local Nix store")?;
    let local: Vec<StorePath> = roots
        .iter()
        .filter(|r| !not_local.contains(r))
        .cloned()
        .collect();
    let mut from_bucket = Vec::with_capacity(not_local.len());
    for root in &not_local {
        let walked = walk_closure(bucket, root, trusted_cache)
            .await
            .with_context(|| {
                format!(
                    "{root} is not in the local Nix store, and cannot be deployed from {} alone; \
                 no manifest was written",
                    bucket.url()
                )
            })?;
        from_bucket.push(walked);
    }
    if local.is_empty() {
        return Ok((PushSummary::default(), from_bucket));
    }
    let summary = push(bucket, nix, cache_key, &local, &settings.push)
        .await
        .context("pushing the closures (no manifest was written)")?;

    // Independent of what the push believes: every path of every closure must have
    // its narinfo in the bucket now.
    let listing = CacheListing::read(bucket).await?;
    for root in &local {
        let closure = nix
            .closure(std::slice::from_ref(root))
            .await
            .context("listing the closure in the local Nix store")?;
        let missing = listing.missing(&closure);
        if let Some(first) = missing.first() {
            bail!(
                "{} of the closure of {root} have no narinfo in {} after the push, e.g. {first}; \
                 no manifest was written. Run the deploy again; if it persists, check that \
                 nothing deletes from cache/",
                missing.len(),
                bucket.url()
            );
        }
    }
    Ok((summary, from_bucket))
}
