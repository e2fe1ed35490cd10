//! The renew engine: keeps manifests from expiring without a new build.
//!
//! Manifests expire (freeze protection), so a host whose publisher stays quiet would
//! refuse its own manifest after a week. `renew` re-signs every chosen manifest that
//! expires within [`RenewSettings::within`] with the same closure, activation and
//! cache keys, the next sequence and a new expiry, by compare-and-swap with an audit
//! entry (`action: "renew"`), through [`crate::manifest_write`]. It reads no store
//! and no narinfo: the closure was complete when it was first deployed.
//!
//! First every chosen host's manifest is read and verified (many at once); a named
//! host without one, or with one that does not verify, stops the run before
//! anything is written. Then the renewals are written
//! [`RenewSettings::concurrency`] at a time. An agent that receives a renewal of the
//! closure it runs records the new sequence and does not switch
//! (`agent/src/cycle/manifest.rs`, `already_running`).

use anyhow::{Context, bail};
use fleet_core::{Bucket, HostName, PublicKey, SecretKey, TrustedKeys};
use futures::{StreamExt, TryStreamExt};
use jiff::{SignedDuration, Timestamp};
use serde::Serialize;

use crate::manifest_write::{
    DeployOutcome, NextManifest, WriteSettings, read_current, trusted_publishers, write_next,
};

/// Default window: manifests expiring within two days are renewed.
pub const DEFAULT_WITHIN: SignedDuration = SignedDuration::from_hours(48);
/// Default hosts renewed at once.
pub const DEFAULT_CONCURRENCY: usize = 32;

/// How to renew.
#[derive(Clone, Debug)]
pub struct RenewSettings {
    /// Renew manifests that expire before now + this.
    pub within: SignedDuration,
    /// Lifetime of the new manifests.
    pub expires_in: SignedDuration,
    /// Other publisher keys accepted on the current manifests.
    pub trusted: Vec<PublicKey>,
    /// Compare-and-swap attempts per host.
    pub max_attempts: u32,
    /// Hosts read and written at once.
    pub concurrency: usize,
}

impl Default for RenewSettings {
    fn default() -> Self {
        Self {
            within: DEFAULT_WITHIN,
            expires_in: crate::deploy::DEFAULT_EXPIRES_IN,
            trusted: Vec::new(),
            max_attempts: crate::deploy::DEFAULT_MAX_ATTEMPTS,
            concurrency: DEFAULT_CONCURRENCY,
        }
    }
}

/// What a renew run did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct RenewReport {
    /// The manifests re-signed.
    pub renewed: Vec<DeployOutcome>,
    /// Hosts whose manifest does not expire within the window, with its expiry.
    pub not_due: Vec<(HostName, Timestamp)>,
    /// Hosts whose renewal failed, with the error.
    pub failed: Vec<(HostName, String)>,
}

/// Renews the manifests of `hosts` that expire soon; see the module docs.
pub async fn renew(
    bucket: &Bucket,
    signing_key: &SecretKey,
    hosts: &[HostName],
    settings: &RenewSettings,
) -> anyhow::Result<RenewReport> {
    if hosts.is_empty() {
        bail!("no host to renew: {} has no manifest", bucket.url());
    }
    let write = WriteSettings {
        signing_key,
        trusted: &settings.trusted,
        force_sequence: None,
        max_attempts: settings.max_attempts,
        action: "renew",
    };
    let trusted: TrustedKeys = trusted_publishers(&write);
    let concurrency = settings.concurrency.max(1);
    let deadline = Timestamp::now()
        .checked_add(settings.within)
        .context("the renew window is out of range")?;

    // Check everything before writing anything.
    let currents: Vec<(HostName, Timestamp)> = futures::stream::iter(hosts)
        .map(|h| {
            let trusted = &trusted;
            async move {
                let cur = read_current(bucket, h, trusted, false)
                    .await
                    .with_context(|| format!("host {h}"))?;
                match cur.manifest {
                    Some(m) => anyhow::Ok((h.clone(), m.expires_at)),
                    None => bail!(
                        "host {h} has no manifest to renew in {} (deploy it first); nothing was \
                         renewed",
                        bucket.url()
                    ),
                }
            }
        })
        .buffered(concurrency)
        .try_collect()
        .await?;

    let mut report = RenewReport::default();
    let due: Vec<&HostName> = currents
        .iter()
        .filter_map(|(h, exp)| {
            if *exp < deadline {
                Some(h)
            } else {
                report.not_due.push((h.clone(), *exp));
                None
            }
        })
        .collect();
    let results: Vec<(HostName, anyhow::Result<Option<DeployOutcome>>)> =
        futures::stream::iter(due)
            .map(|h| {
                let write = &write;
                async move {
                    let r = write_next(bucket, h, write, |cur| {
                        let Some(m) = &cur.manifest else {
                            bail!("the manifest of {h} disappeared while renewing");
                        };
                        // A deploy between the check and the write may have renewed it.
                        if m.expires_at >= deadline {
                            return Ok(None);
                        }
                        Ok(Some(NextManifest {
                            closure: m.closure.clone(),
                            activation: m.activation,
                            cache_keys: m.cache_keys.clone(),
                            expires_in: settings.expires_in,
                            // Renewing keeps the deploy's schedule.
                            activate_after: m.activate_after,
                            maintenance_windows: m.maintenance_windows.clone(),
                        }))
                    })
                    .await;
                    (h.clone(), r)
                }
            })
            .buffer_unordered(concurrency)
            .collect()
            .await;
    for (h, r) in results {
        match r {
            Ok(Some(o)) => report.renewed.push(o),
            Ok(None) => report.not_due.push((h, deadline)),
            Err(e) => report.failed.push((h, format!("{e:#}"))),
        }
    }
    report.renewed.sort_by(|a, b| a.host.cmp(&b.host));
    report.not_due.sort();
    report.failed.sort();
    Ok(report)
}
