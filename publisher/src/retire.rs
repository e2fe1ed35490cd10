//! The retire engine: a host leaves the fleet.
//!
//! [`retire`] writes each host's tombstone through [`crate::manifest_write`]: the
//! next sequence, the closure it was last given, activation
//! [`Activation::Retire`], an audit entry with `action: "retire"`. Its agent
//! accepts it like any manifest, then applies nothing more and reports `retired`
//! (`agent/src/cycle/manifest.rs`); the dashboard lists it apart. Every named host
//! is checked first (it must have a manifest that verifies), so a typo changes
//! nothing. A host already retired is left as it is.
//!
//! [`purge`] then removes the host's objects: everything under `status/<host>/`,
//! then under `hosts/<host>/` with the tombstone last, so an interrupted purge can
//! be run again. Deleting needs the admin role (`fleet-publish policy --role
//! admin`); audit entries are never deleted. Its cache paths become garbage for
//! `fleet-publish gc` once no other root keeps them.

use anyhow::{Context, bail};
use fleet_core::audit_chain::{ActionKind, AuditAction, ObjectChange};
use fleet_core::bucket::BucketError;
use fleet_core::{Activation, Bucket, HostName, Key, KeyPrefix, PublicKey, SecretKey, TrustedKeys};
use jiff::SignedDuration;
use serde::Serialize;

use crate::manifest_write::{
    DeployOutcome, NextManifest, WriteSettings, read_current, trusted_publishers, write_next,
};

/// Default lifetime of a tombstone: a year (the longest `expires-in` allows). It
/// only has to outlive the host: a frozen tombstone still says "retired".
pub const DEFAULT_TOMBSTONE_LIFETIME: SignedDuration = SignedDuration::from_hours(365 * 24);

/// How to retire.
#[derive(Clone, Debug)]
pub struct RetireSettings {
    /// Other publisher keys accepted on the current manifests.
    pub trusted: Vec<PublicKey>,
    /// Lifetime of the tombstone.
    pub expires_in: SignedDuration,
    /// Compare-and-swap attempts per host.
    pub max_attempts: u32,
}

impl Default for RetireSettings {
    fn default() -> Self {
        Self {
            trusted: Vec::new(),
            expires_in: DEFAULT_TOMBSTONE_LIFETIME,
            max_attempts: crate::deploy::DEFAULT_MAX_ATTEMPTS,
        }
    }
}

/// What retiring one host did.
#[derive(Clone, Debug, Serialize)]
pub struct Retired {
    /// The host.
    pub host: HostName,
    /// The tombstone written, or `None` when the host was already retired.
    pub written: Option<DeployOutcome>,
}

/// Writes the tombstones of `hosts`; see the module docs.
pub async fn retire(
    bucket: &Bucket,
    signing_key: &SecretKey,
    hosts: &[HostName],
    settings: &RetireSettings,
) -> anyhow::Result<Vec<Retired>> {
    if hosts.is_empty() {
        bail!("no host given to retire");
    }
    let write = WriteSettings {
        signing_key,
        trusted: &settings.trusted,
        force_sequence: None,
        max_attempts: settings.max_attempts,
        action: "retire",
    };
    let trusted = trusted_publishers(&write);
    for host in hosts {
        require_manifest(bucket, host, &trusted).await?;
    }
    let mut out = Vec::with_capacity(hosts.len());
    for host in hosts {
        let written = write_next(bucket, host, &write, |current| {
            Ok(current
                .manifest
                .as_ref()
                .filter(|m| m.activation != Activation::Retire)
                .map(|m| NextManifest {
                    closure: m.closure.clone(),
                    activation: Activation::Retire,
                    cache_keys: m.cache_keys.clone(),
                    expires_in: settings.expires_in,
                    // A tombstone applies nothing, so it has nothing to schedule.
                    activate_after: None,
                    maintenance_windows: None,
                }))
        })
        .await
        .with_context(|| format!("retiring {host}"))?;
        out.push(Retired {
            host: host.clone(),
            written,
        });
    }
    Ok(out)
}

/// Checks that `host` has a manifest that verifies; the error says nothing changed.
async fn require_manifest(
    bucket: &Bucket,
    host: &HostName,
    trusted: &TrustedKeys,
) -> anyhow::Result<fleet_core::Manifest> {
    let current = read_current(bucket, host, trusted, false)
        .await
        .with_context(|| format!("host {host}; nothing was written or deleted"))?;
    current.manifest.with_context(|| {
        format!(
            "host {host} has no manifest in {} (is the name right? `fleet-publish show` lists \
             what a host has); nothing was written or deleted",
            bucket.url()
        )
    })
}

/// Deletes every object of the retired `hosts` (see the module docs); returns the
/// keys deleted. Each host must be retired already: its manifest a tombstone.
pub async fn purge(
    bucket: &Bucket,
    hosts: &[HostName],
    signing_key: &SecretKey,
    trusted: &TrustedKeys,
) -> anyhow::Result<Vec<String>> {
    for host in hosts {
        let m = require_manifest(bucket, host, trusted).await?;
        if m.activation != Activation::Retire {
            bail!(
                "host {host} is not retired (its manifest, sequence {}, activates {}); run \
                 `fleet-publish retire {host}` first; nothing was deleted",
                m.sequence,
                m.activation
            );
        }
    }
    let mut deleted = Vec::new();
    for host in hosts {
        let mut gone = Vec::new();
        let mut keys = Vec::new();
        for prefix in [KeyPrefix::host_status(host), KeyPrefix::host(host)] {
            let listed = bucket
                .list(&prefix)
                .await
                .with_context(|| format!("listing {prefix}"))?;
            keys.extend(listed.iter().filter_map(|e| prefix.listed(&e.key)));
        }
        // The tombstone last: until it goes, the host still reads as retired.
        let manifest = Key::manifest(host);
        keys.retain(|k| k != &manifest);
        keys.push(manifest);
        for key in keys {
            bucket.delete(&key).await.map_err(|e| match e {
                BucketError::AccessDenied { .. } => anyhow::anyhow!(
                    "{e}: deleting needs the admin role's credentials \
                     (`fleet-publish policy --role admin`); {} object(s) were deleted before this",
                    deleted.len()
                ),
                e => anyhow::Error::new(e).context(format!("deleting {key}")),
            })?;
            deleted.push(key.to_string());
            gone.push(ObjectChange::deleted(&key));
        }
        let action = AuditAction::objects(
            ActionKind::Retire,
            vec![host.clone()],
            gone,
            [("step", serde_json::json!("purge"))],
        );
        crate::audit_log::append(bucket, signing_key, action)
            .await
            .with_context(|| {
                format!(
                    "{host} IS purged, but its audit entry could not be written; record it by hand"
                )
            })?;
    }
    Ok(deleted)
}
