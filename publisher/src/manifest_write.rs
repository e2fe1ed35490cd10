//! The one writer of `hosts/<host>/manifest.json`, shared by deploy, renew and
//! rollback: read the current manifest and verify it with the publisher key(s)
//! (expiry not checked: an expired manifest is still the sequence to beat), let the
//! caller decide what comes next from it ([`NextManifest`], or nothing), sign that
//! with sequence = current + 1 and write it by compare-and-swap (`put_if_absent`
//! when there was none, else `put_if_match` on the ETag read). When another
//! publisher won the race, start again from the read, at most
//! [`WriteSettings::max_attempts`] times. Then append the signed audit entry
//! ([`crate::audit_log::append`], its `action` naming the command).

use std::time::Duration;

use anyhow::{Context, bail};
use fleet_core::audit_chain::{ActionKind, AuditAction, ManifestChange};
use fleet_core::bucket::BucketError;
use fleet_core::manifest::{MAX_MANIFEST_SIZE, VerifyPolicy};
use fleet_core::{
    Activation, Bucket, HostName, Key, KeyPrefix, Manifest, PublicKey, SecretKey, StorePath,
    TrustedKeys,
};
use jiff::{SignedDuration, Timestamp};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::audit_log;

/// The current manifest of a host as the next write sees it.
#[derive(Clone, Debug)]
pub struct Current {
    etag: Option<String>,
    /// The verified manifest, if there is one that verifies.
    pub manifest: Option<Manifest>,
    digest: Option<String>,
    exists: bool,
}

/// What the next manifest says besides host and sequence.
#[derive(Clone, Debug)]
pub struct NextManifest {
    /// The closure.
    pub closure: StorePath,
    /// How it is activated.
    pub activation: Activation,
    /// Cache keys the host should accept narinfo signatures of.
    pub cache_keys: Vec<PublicKey>,
    /// Lifetime from now.
    pub expires_in: SignedDuration,
    /// The manifest's `activate_after`, if any.
    pub activate_after: Option<Timestamp>,
    /// The manifest's `maintenance_windows`, if any.
    pub maintenance_windows: Option<Vec<String>>,
}

/// How to write.
#[derive(Clone, Copy, Debug)]
pub struct WriteSettings<'a> {
    /// The publisher key that signs.
    pub signing_key: &'a SecretKey,
    /// Other publisher keys accepted on the current manifest.
    pub trusted: &'a [PublicKey],
    /// Write this sequence even if the current manifest does not verify.
    pub force_sequence: Option<u64>,
    /// Compare-and-swap attempts before giving up.
    pub max_attempts: u32,
    /// The audit entry's `action`: `deploy`, `renew`, `rollback`.
    pub action: &'static str,
}

/// What writing one host's manifest did.
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
    /// The closure replaced, if a verified manifest was there.
    pub previous_closure: Option<StorePath>,
    /// SHA-256 (hex) of the manifest written.
    pub manifest_sha256: String,
    /// When it expires.
    pub expires_at: Timestamp,
    /// The audit entry's key.
    pub audit_key: String,
    /// Compare-and-swap attempts it took (1 without contention).
    pub attempts: u32,
}

/// Reads and verifies the current manifest of `host`; with `force`, one that does
/// not verify is taken as having no sequence.
pub async fn read_current(
    bucket: &Bucket,
    host: &HostName,
    trusted: &TrustedKeys,
    force: bool,
) -> anyhow::Result<Current> {
    let key = Key::manifest(host);
    let obj = match bucket.get(&key, MAX_MANIFEST_SIZE).await {
        Ok(o) => o,
        Err(BucketError::NotFound { .. }) => {
            return Ok(Current {
                etag: None,
                manifest: None,
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
            manifest: Some(v.manifest),
            digest: Some(v.digest),
            exists: true,
        }),
        Err(e) if force => {
            tracing::warn!(%key, error = %e, "current manifest does not verify; --force-sequence given");
            Ok(Current {
                etag: obj.etag,
                manifest: None,
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

/// The publisher keys a current manifest is checked with: the signing key's own
/// public key and the others given.
pub fn trusted_publishers(settings: &WriteSettings<'_>) -> TrustedKeys {
    TrustedKeys::new(
        std::iter::once(settings.signing_key.public()).chain(settings.trusted.iter().cloned()),
    )
}

/// Writes the next manifest of `host` by compare-and-swap; see the module docs.
/// `plan` sees the current manifest (on every attempt) and says what to write, or
/// `None` for nothing (then `Ok(None)`).
pub async fn write_next(
    bucket: &Bucket,
    host: &HostName,
    settings: &WriteSettings<'_>,
    mut plan: impl FnMut(&Current) -> anyhow::Result<Option<NextManifest>>,
) -> anyhow::Result<Option<DeployOutcome>> {
    let key = Key::manifest(host);
    let trusted = trusted_publishers(settings);
    let attempts = settings.max_attempts.max(1);
    for attempt in 1..=attempts {
        let current =
            read_current(bucket, host, &trusted, settings.force_sequence.is_some()).await?;
        let Some(next) = plan(&current)? else {
            return Ok(None);
        };
        let cur_seq = current.manifest.as_ref().map(|m| m.sequence);
        let sequence = match (settings.force_sequence, cur_seq) {
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
            .checked_add(next.expires_in)
            .context("the expiry is out of range")?;
        let manifest = Manifest {
            version: 1,
            host: host.clone(),
            sequence,
            closure: next.closure.clone(),
            issued_at,
            expires_at,
            cache_keys: next.cache_keys.clone(),
            activation: next.activation,
            activate_after: next.activate_after,
            maintenance_windows: next.maintenance_windows.clone(),
        };
        let bytes = manifest.sign(settings.signing_key);
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
                tracing::info!(%host, sequence, "the manifest write landed though its answer was lost");
            }
            Err(BucketError::Conflict { .. } | BucketError::AlreadyExists { .. }) => {
                if settings.force_sequence.is_some() {
                    bail!(
                        "another publisher wrote {key} while this forced {} ran; \
                         look at it (fleet-publish show) before forcing again",
                        settings.action
                    );
                }
                tracing::info!(%host, attempt, "lost the compare-and-swap; retrying");
                tokio::time::sleep(backoff(attempt)).await;
                continue;
            }
            Err(e) => return Err(e).context("writing the new manifest"),
        }
        let change = ManifestChange {
            host: host.clone(),
            sequence,
            previous_sequence: cur_seq,
            closure: next.closure.clone(),
            activation: next.activation,
            expires_at,
            previous_manifest_sha256: current.digest,
            manifest_sha256: digest.clone(),
        };
        let action = AuditAction::manifest(ActionKind::parse(settings.action), change);
        let appended = audit_log::append(bucket, settings.signing_key, action)
            .await
            .with_context(|| {
                format!(
                    "the manifest of {host} (sequence {sequence}) IS written and live, but its \
                     audit entry could not be written; record it by hand"
                )
            })?;
        let audit_key = appended.key;
        return Ok(Some(DeployOutcome {
            host: host.clone(),
            closure: next.closure,
            sequence,
            previous_sequence: cur_seq,
            previous_closure: current.manifest.map(|m| m.closure),
            manifest_sha256: digest,
            expires_at,
            audit_key: audit_key.to_string(),
            attempts: attempt,
        }));
    }
    bail!(
        "gave up writing {key} after {attempts} attempts: other publishers kept changing it \
         (compare-and-swap lost every time); try again"
    )
}

/// Every host that has a manifest in the bucket, sorted.
pub async fn manifest_hosts(bucket: &Bucket) -> anyhow::Result<Vec<HostName>> {
    let entries = bucket
        .list(&KeyPrefix::hosts())
        .await
        .context("listing hosts/ to find the hosts with a manifest")?;
    let mut hosts: Vec<HostName> = entries
        .iter()
        .filter_map(|e| Key::manifest_host(&e.key))
        .collect();
    hosts.sort();
    hosts.dedup();
    Ok(hosts)
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
