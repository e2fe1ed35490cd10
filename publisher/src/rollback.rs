//! The rollback engine: makes hosts run an earlier closure again, from the bucket
//! alone.
//!
//! A host's history is the audit ([`history`]): the signed chain
//! (`audit/chain/<index>.json`, [`fleet_core::audit_chain`]) and any older unsigned
//! entries (`audit/<time>-<host>-<sequence>.json`, [`fleet_core::audit`]), which
//! record the closure and activation of every manifest written. For each host:
//!
//! 1. read and verify its current manifest (sequence S, closure C);
//! 2. choose the target from its history: with `to_sequence` N the entry of sequence
//!    N (an error if N was never written for that host or is not below S); with
//!    `to_closures` (`--to-release ID`, a halted rollout) the latest entry below S
//!    carrying the host's closure given there; by
//!    default the latest entry below S whose closure is not C (renewals repeat a
//!    closure, so "the one before" skips them);
//! 3. walk the target closure's narinfos in the bucket, each signed by a cache key
//!    the current manifest lists or an extra one ([`fleet_core::cache_walk`]): the
//!    old build need not be in any local store, but must still be complete;
//! 4. re-sign it with sequence S + 1 by compare-and-swap, audit `action: "rollback"`
//!    ([`crate::manifest_write`]). If the manifest changed since step 1 the write
//!    stops, saying so: the history it was chosen from is stale.
//!
//! Held hosts ([`crate::hold`]) and retired ones are left out, with a warning, unless
//! [`RollbackSettings::force`]. Steps 1 to 3 run for every host before step 4 runs for any, so bad input changes
//! nothing in the bucket. Chain entries count only when signed by a trusted
//! publisher key, and older entries are not signed at all, so a target is only
//! re-signed once its closure checks out against trusted cache keys, and the output
//! names it.

use std::collections::BTreeMap;

use anyhow::{Context, bail};
use fleet_core::audit::AuditEntry;
use fleet_core::audit_chain::ChainEntry;
use fleet_core::cache_walk::walk_closure;
use fleet_core::{Activation, Bucket, HostName, Key, PublicKey, SecretKey, StorePath, TrustedKeys};
use jiff::SignedDuration;
use serde::Serialize;

use crate::audit_log;
use crate::hold::skip_held_or_retired;
use crate::manifest_write::{
    DeployOutcome, NextManifest, WriteSettings, read_current, trusted_publishers, write_next,
};

/// How to roll back.
#[derive(Clone, Debug)]
pub struct RollbackSettings {
    /// Roll back to this sequence instead of the one before the current.
    pub to_sequence: Option<u64>,
    /// Roll each host back to this closure (`--to-release`, a halted rollout's
    /// previous closures): the latest earlier sequence that carried it.
    pub to_closures: Option<BTreeMap<HostName, StorePath>>,
    /// Lifetime of the new manifests.
    pub expires_in: SignedDuration,
    /// Other publisher keys accepted on the current manifests.
    pub trusted: Vec<PublicKey>,
    /// Cache keys accepted on the target's narinfos besides the current manifest's.
    pub extra_cache_keys: Vec<PublicKey>,
    /// Compare-and-swap attempts per host.
    pub max_attempts: u32,
    /// Roll back held and retired hosts too; otherwise they are skipped.
    pub force: bool,
}

impl Default for RollbackSettings {
    fn default() -> Self {
        Self {
            to_sequence: None,
            to_closures: None,
            expires_in: crate::deploy::DEFAULT_EXPIRES_IN,
            trusted: Vec::new(),
            extra_cache_keys: Vec::new(),
            max_attempts: crate::deploy::DEFAULT_MAX_ATTEMPTS,
            force: false,
        }
    }
}

/// One host's rollback, planned.
#[derive(Clone, Debug, Serialize)]
pub struct RollbackPlan {
    /// The host.
    pub host: HostName,
    /// Its current sequence.
    pub from_sequence: u64,
    /// Its current closure.
    pub from_closure: StorePath,
    /// The sequence whose closure it goes back to.
    pub to_sequence: u64,
    /// That closure.
    pub to_closure: StorePath,
    /// Its activation then.
    pub activation: Activation,
    /// Cache keys the new manifest lists.
    #[serde(skip)]
    cache_keys: Vec<PublicKey>,
}

/// Every manifest the audit recorded for `hosts`, by host, by sequence: the older
/// unsigned entries, then the signed chain's entries that verify with `trusted`
/// (others are skipped with a warning; `fleet-publish audit verify` says why).
pub async fn history(
    bucket: &Bucket,
    hosts: &[HostName],
    trusted: &TrustedKeys,
) -> anyhow::Result<BTreeMap<HostName, BTreeMap<u64, AuditEntry>>> {
    let mut out: BTreeMap<HostName, BTreeMap<u64, AuditEntry>> = BTreeMap::new();
    let wanted = |name: &str| audit_name_host(name).is_some_and(|(h, _)| hosts.contains(&h));
    let legacy = audit_log::read_legacy(bucket, wanted)
        .await
        .context("reading the hosts' history")?;
    let (chain, _) = audit_log::read_chain(bucket)
        .await
        .context("reading the hosts' history")?;
    let mut rows: Vec<AuditEntry> = legacy;
    for (index, bytes) in chain {
        let key = Key::audit_chain(index);
        match ChainEntry::verify(&bytes, key.as_str(), trusted) {
            Ok(v) => rows.extend(v.entry.manifest_rows()),
            Err(e) => tracing::warn!(
                "skipping audit entry {index} for the history: {e}; run `fleet-publish audit \
                 verify` to see what is wrong"
            ),
        }
    }
    for row in rows.into_iter().filter(|r| hosts.contains(&r.host)) {
        out.entry(row.host.clone())
            .or_default()
            .insert(row.sequence, row);
    }
    Ok(out)
}

/// The host and sequence of an audit entry name `<time>-<host>-<sequence>`.
fn audit_name_host(name: &str) -> Option<(HostName, u64)> {
    let (_, rest) = name.split_once('-')?;
    let (host, seq) = rest.rsplit_once('-')?;
    Some((HostName::new(host).ok()?, seq.parse().ok()?))
}

/// Plans the rollback of every host in `hosts` (steps 1 to 3 of the module docs);
/// writes nothing.
pub async fn plan(
    bucket: &Bucket,
    signing_key: &SecretKey,
    hosts: &[HostName],
    settings: &RollbackSettings,
) -> anyhow::Result<Vec<RollbackPlan>> {
    if hosts.is_empty() {
        bail!("no host to roll back: {} has no manifest", bucket.url());
    }
    let write = write_settings(signing_key, settings);
    let trusted = trusted_publishers(&write);
    let hosts = &skip_held_or_retired(
        bucket,
        hosts.to_vec(),
        &trusted,
        settings.force,
        "rolled back",
    )
    .await?;
    let history = history(bucket, hosts, &trusted).await?;
    let mut plans = Vec::with_capacity(hosts.len());
    for host in hosts {
        let current = read_current(bucket, host, &trusted, false)
            .await
            .with_context(|| format!("host {host}"))?;
        let Some(cur) = current.manifest else {
            bail!(
                "host {host} has no manifest in {}, so there is nothing to roll back; nothing \
                 was written",
                bucket.url()
            );
        };
        let entries = history.get(host);
        let mut earlier = entries
            .into_iter()
            .flat_map(|e| e.range(..cur.sequence))
            .map(|(_, e)| e);
        let target = match (&settings.to_closures, settings.to_sequence) {
            (Some(map), _) => {
                let want = map.get(host).with_context(|| {
                    format!("host {host} has no closure to roll back to; nothing was written")
                })?;
                earlier.rfind(|e| &e.closure == want).with_context(|| {
                    format!(
                        "host {host} never ran {want} before its current sequence {} (per \
                         audit/), so it cannot be rolled back to it; nothing was written",
                        cur.sequence
                    )
                })?
            }
            (None, Some(n)) => {
                let found = entries.and_then(|e| e.get(&n)).filter(|_| n < cur.sequence);
                found.with_context(|| {
                    let known: Vec<String> = entries
                        .into_iter()
                        .flat_map(|e| e.keys())
                        .map(u64::to_string)
                        .collect();
                    format!(
                        "host {host} has no earlier sequence {n} to roll back to (current {}, \
                         audited sequences: {}); nothing was written",
                        cur.sequence,
                        if known.is_empty() {
                            "none".into()
                        } else {
                            known.join(", ")
                        }
                    )
                })?
            }
            (None, None) => earlier
                .rfind(|e| e.closure != cur.closure)
                .with_context(|| {
                    format!(
                        "host {host} has no earlier closure than {} in audit/ to roll back to; \
                         nothing was written",
                        cur.closure
                    )
                })?,
        };
        let mut cache_keys = cur.cache_keys.clone();
        for k in &settings.extra_cache_keys {
            if !cache_keys.contains(k) {
                cache_keys.push(k.clone());
            }
        }
        walk_closure(
            bucket,
            &target.closure,
            &TrustedKeys::new(cache_keys.clone()),
        )
        .await
        .with_context(|| {
            format!(
                "host {host}: the closure of sequence {} ({}) cannot be rolled back to from \
                     {}; nothing was written",
                target.sequence,
                target.closure,
                bucket.url()
            )
        })?;
        plans.push(RollbackPlan {
            host: host.clone(),
            from_sequence: cur.sequence,
            from_closure: cur.closure,
            to_sequence: target.sequence,
            to_closure: target.closure.clone(),
            activation: target.activation,
            cache_keys,
        });
    }
    Ok(plans)
}

/// Writes the planned rollbacks (step 4 of the module docs), one host after the
/// other; the first failure stops the run, naming the hosts already rolled back.
pub async fn apply(
    bucket: &Bucket,
    signing_key: &SecretKey,
    plans: &[RollbackPlan],
    settings: &RollbackSettings,
) -> anyhow::Result<Vec<DeployOutcome>> {
    let write = write_settings(signing_key, settings);
    let mut outcomes: Vec<DeployOutcome> = Vec::with_capacity(plans.len());
    for p in plans {
        let written = write_next(bucket, &p.host, &write, |cur| {
            let seq = cur.manifest.as_ref().map(|m| m.sequence);
            if seq != Some(p.from_sequence) {
                bail!(
                    "the manifest of {} changed while rolling back (sequence {} is now {seq:?}); \
                     run the rollback again",
                    p.host,
                    p.from_sequence
                );
            }
            Ok(Some(NextManifest {
                closure: p.to_closure.clone(),
                activation: p.activation,
                cache_keys: p.cache_keys.clone(),
                expires_in: settings.expires_in,
                // A rollback is applied at once.
                activate_after: None,
                maintenance_windows: None,
            }))
        })
        .await;
        match written {
            Ok(o) => outcomes.extend(o),
            Err(e) => {
                let done: Vec<&str> = outcomes.iter().map(|o| o.host.as_str()).collect();
                return Err(e.context(format!(
                    "rolling back host {} (hosts already rolled back: {})",
                    p.host,
                    if done.is_empty() {
                        "none".into()
                    } else {
                        done.join(", ")
                    }
                )));
            }
        }
    }
    Ok(outcomes)
}

fn write_settings<'a>(
    signing_key: &'a SecretKey,
    settings: &'a RollbackSettings,
) -> WriteSettings<'a> {
    WriteSettings {
        signing_key,
        trusted: &settings.trusted,
        force_sequence: None,
        max_attempts: settings.max_attempts,
        action: "rollback",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audit_names_give_host_and_sequence() {
        let (h, s) = audit_name_host("20261126T212500.123Z-web-eu-1-8").unwrap();
        assert_eq!((h.as_str(), s), ("web-eu-1", 8));
        assert!(audit_name_host("garbage").is_none());
    }
}
