//! The deploy engine: makes hosts run a closure.
//!
//! For each [`DeployTarget`] (the command line gives one with `--host/--closure`,
//! many with `--hosts FILE`):
//!
//! 1. push every closure ([`mod@crate::push`], one run for all hosts, shared paths
//!    once);
//! 2. confirm with a fresh LIST of `cache/` that every path of each closure has its
//!    narinfo (a narinfo is only ever written after its NAR), so no manifest can
//!    point at a closure that is not fully uploaded;
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

use std::time::Duration;

use anyhow::{Context, bail};
use fleet_core::audit::AuditEntry;
use fleet_core::bucket::BucketError;
use fleet_core::manifest::{MAX_MANIFEST_SIZE, VerifyPolicy};
use fleet_core::nixcli::Nix;
use fleet_core::{
    Activation, Bucket, HostName, Key, Manifest, PublicKey, SecretKey, StorePath, TrustedKeys,
};
use jiff::{SignedDuration, Timestamp};
use serde::Serialize;
use sha2::{Digest, Sha256};

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
        }
    }
}

/// What deploying one host did.
#[derive(Clone, Debug, Serialize)]
pub struct DeployOutcome {
    /// The host.
    pub host: HostName,
    /// Its closure.
    pub closure: StorePath,
    /// The sequence written.
    pub sequence: u64,
    /// The sequence replaced, if a verified manifest was there.
    pub previous_sequence: Option<u64>,
    /// SHA-256 (hex) of the manifest written.
    pub manifest_sha256: String,
    /// When it expires.
    pub expires_at: Timestamp,
    /// The audit entry's key.
    pub audit_key: String,
    /// Compare-and-swap attempts it took (1 without contention).
    pub attempts: u32,
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
    let roots: Vec<StorePath> = targets.iter().map(|t| t.closure.clone()).collect();
    let summary = push(bucket, nix, cache_key, &roots, &settings.push)
        .await
        .context("pushing the closures (no manifest was written)")?;

    // Independent of what the push believes: every path of every closure must have
    // its narinfo in the bucket now.
    let listing = CacheListing::read(bucket).await?;
    for t in targets {
        let closure = nix
            .closure(std::slice::from_ref(&t.closure))
            .await
            .context("listing the closure in the local Nix store")?;
        let missing = listing.missing(&closure);
        if let Some(first) = missing.first() {
            bail!(
                "{} of the closure of {} (host {}) have no narinfo in {} after the push, e.g. {first}; \
                 no manifest was written. Run the deploy again; if it persists, check that \
                 nothing deletes from cache/",
                missing.len(),
                t.closure,
                t.host,
                bucket.url()
            );
        }
    }

    let mut outcomes = Vec::with_capacity(targets.len());
    for t in targets {
        match write_manifest(bucket, cache_key, signing_key, t, settings).await {
            Ok(o) => outcomes.push(o),
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

/// The current manifest of a host as far as the next write needs it.
struct Current {
    etag: Option<String>,
    sequence: Option<u64>,
    digest: Option<String>,
    exists: bool,
}

/// Reads and verifies the current manifest at `key`; with `force`, one that does not
/// verify is taken as having no sequence.
async fn read_current(
    bucket: &Bucket,
    key: &Key,
    host: &HostName,
    trusted: &TrustedKeys,
    force: Option<u64>,
) -> anyhow::Result<Current> {
    let obj = match bucket.get(key, MAX_MANIFEST_SIZE).await {
        Ok(o) => o,
        Err(BucketError::NotFound { .. }) => {
            return Ok(Current {
                etag: None,
                sequence: None,
                digest: None,
                exists: false,
            });
        }
        Err(e) => return Err(e).context("reading the current manifest"),
    };
    let policy = VerifyPolicy {
        trusted,
        host,
        highest_seen: None,
        now: None,
    };
    match Manifest::verify(&obj.bytes, &policy) {
        Ok(v) => Ok(Current {
            etag: obj.etag,
            sequence: Some(v.manifest.sequence),
            digest: Some(v.digest),
            exists: true,
        }),
        Err(e) if force.is_some() => {
            tracing::warn!(%key, error = %e, "current manifest does not verify; --force-sequence given");
            Ok(Current {
                etag: obj.etag,
                sequence: None,
                digest: Some(hex::encode(Sha256::digest(&obj.bytes))),
                exists: true,
            })
        }
        Err(e) => bail!(
            "the current manifest {key} in {} does not verify with the publisher key(s) {:?}: {e}. \
             If another publisher legitimately signed it, pass its public key with --trusted-key; \
             if the bucket was tampered with, investigate before deploying. To replace it anyway \
             (lost or rotated publisher key) pass --force-sequence N with N above any sequence \
             the host has accepted.",
            bucket.url(),
            trusted.keys().iter().map(|k| k.name()).collect::<Vec<_>>()
        ),
    }
}

/// Signs and writes the next manifest of `target` by compare-and-swap, then its
/// audit entry; see the module docs.
async fn write_manifest(
    bucket: &Bucket,
    cache_key: &SecretKey,
    signing_key: &SecretKey,
    target: &DeployTarget,
    settings: &DeploySettings,
) -> anyhow::Result<DeployOutcome> {
    let key = Key::manifest(&target.host);
    let mut trusted = vec![signing_key.public()];
    trusted.extend(settings.trusted.iter().cloned());
    let trusted = TrustedKeys::new(trusted);
    let attempts = settings.max_attempts.max(1);
    for attempt in 1..=attempts {
        let current = read_current(
            bucket,
            &key,
            &target.host,
            &trusted,
            settings.force_sequence,
        )
        .await?;
        let sequence = match (settings.force_sequence, current.sequence) {
            (Some(n), Some(cur)) if n <= cur => bail!(
                "--force-sequence {n} is not above the current manifest's sequence {cur}; \
                 give a higher number (or drop --force-sequence: the current manifest verifies)"
            ),
            (Some(n), _) => n,
            (None, Some(cur)) => cur.checked_add(1).with_context(|| {
                format!("the current manifest's sequence {cur} cannot be incremented")
            })?,
            (None, None) => 1,
        };
        let issued_at = Timestamp::now();
        let expires_at = issued_at
            .checked_add(settings.expires_in)
            .context("the expiry is out of range")?;
        let manifest = Manifest {
            version: 1,
            host: target.host.clone(),
            sequence,
            closure: target.closure.clone(),
            issued_at,
            expires_at,
            cache_keys: std::iter::once(cache_key.public())
                .chain(
                    settings
                        .extra_cache_keys
                        .iter()
                        .filter(|k| **k != cache_key.public())
                        .cloned(),
                )
                .collect(),
            activation: settings.activation,
        };
        let bytes = manifest.sign(signing_key);
        let digest = hex::encode(Sha256::digest(&bytes));
        let written = match (&current.etag, current.exists) {
            (_, false) => bucket.put_if_absent(&key, bytes).await,
            (Some(etag), true) => bucket.put_if_match(&key, bytes, etag).await,
            (None, true) => bail!(
                "{} gave no ETag for {key}, so the manifest cannot be replaced by compare-and-swap; \
                 use a store that returns ETags (S3, MinIO, SeaweedFS, file://)",
                bucket.url()
            ),
        };
        match written {
            Ok(_) => {}
            // The write may have landed with its answer lost (a reset, a timeout): the
            // client's retry then meets our own manifest as a conflict. Ours is live.
            Err(_) if holds(bucket, &key, &digest).await => {
                tracing::info!(host = %target.host, sequence, "the manifest write landed though its answer was lost");
            }
            Err(BucketError::Conflict { .. } | BucketError::AlreadyExists { .. }) => {
                if settings.force_sequence.is_some() {
                    bail!(
                        "another publisher wrote {key} while this forced deploy ran; \
                         look at it (fleet-publish show) before forcing again"
                    );
                }
                tracing::info!(host = %target.host, attempt, "lost the compare-and-swap; retrying");
                tokio::time::sleep(backoff(attempt)).await;
                continue;
            }
            Err(e) => return Err(e).context("writing the new manifest"),
        }
        let entry = AuditEntry {
            version: 1,
            action: "deploy".into(),
            time: issued_at,
            key_name: signing_key.name().to_owned(),
            host: target.host.clone(),
            sequence,
            previous_sequence: current.sequence,
            closure: target.closure.clone(),
            activation: settings.activation,
            expires_at,
            previous_manifest_sha256: current.digest,
            new_manifest_sha256: digest.clone(),
            publisher_version: fleet_core::VERSION.into(),
        };
        let audit_key = entry.key();
        let audit_bytes = entry.to_bytes();
        let audit_digest = hex::encode(Sha256::digest(&audit_bytes));
        let audited = match bucket.put_if_absent(&audit_key, audit_bytes).await {
            // As above: a retried create that meets our own entry was written.
            Err(_) if holds(bucket, &audit_key, &audit_digest).await => Ok(None),
            other => other,
        };
        audited.with_context(|| {
            format!(
                "the manifest of {} (sequence {sequence}) IS written and live, but its audit \
                     entry {audit_key} could not be written; record it by hand",
                target.host
            )
        })?;
        return Ok(DeployOutcome {
            host: target.host.clone(),
            closure: target.closure.clone(),
            sequence,
            previous_sequence: current.sequence,
            manifest_sha256: digest,
            expires_at,
            audit_key: audit_key.to_string(),
            attempts: attempt,
        });
    }
    bail!(
        "gave up writing {key} after {attempts} attempts: other publishers kept changing it \
         (compare-and-swap lost every time); try again"
    )
}

/// Whether `key` now holds exactly the bytes whose SHA-256 is `digest` (hex): how a
/// write whose response was lost is told from one that did not happen.
async fn holds(bucket: &Bucket, key: &Key, digest: &str) -> bool {
    match bucket.get(key, MAX_MANIFEST_SIZE).await {
        Ok(obj) => hex::encode(Sha256::digest(&obj.bytes)) == digest,
        Err(_) => false,
    }
}

/// A growing, jittered pause between compare-and-swap attempts.
fn backoff(attempt: u32) -> Duration {
    let jitter = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos() % 50_000_000);
    Duration::from_millis(20 * u64::from(attempt.min(10))) + Duration::from_nanos(u64::from(jitter))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_stays_bounded() {
        assert!(backoff(1) < Duration::from_millis(80));
        assert!(backoff(10) >= Duration::from_millis(200));
        assert!(backoff(100) < Duration::from_millis(260));
    }
}
