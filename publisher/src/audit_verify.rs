//! The engine of `fleet-publish audit verify` and `audit log`: reads the audit chain
//! and the current objects from the bucket alone and hands them to the replay of
//! [`fleet_core::audit_replay`].
//!
//! [`verify`] reports every finding of the chain (gaps, unverified, misplaced and
//! unlinked entries, a cut end, stray objects under `audit/chain/`) and of the
//! current objects it explains: every manifest and hold under `hosts/`, every
//! release and rollout state under `releases/` and every host registry entry must
//! hold the bytes the last entry naming it recorded. [`entries`] verifies each entry for
//! `audit log`.
//!
//! Which keys are trusted is decided in one place, [`trusted_audit_keys`].

use std::collections::BTreeMap;

use anyhow::Context;
use fleet_core::audit_chain::{ChainEntry, VerifiedEntry, sha256_hex};
use fleet_core::audit_replay::{Finding, FindingKind, explain, replay_chain};
use fleet_core::bucket::BucketError;
use fleet_core::manifest::MAX_MANIFEST_SIZE;
use fleet_core::registry::MAX_HOST_ENTRY_SIZE;
use fleet_core::release::MAX_RELEASE_SIZE;
use fleet_core::rollout::MAX_ROLLOUT_SIZE;
use fleet_core::{Bucket, Key, KeyPrefix, PublicKey, TrustedKeys};
use serde::Serialize;

use crate::audit_log::{read_chain, read_hint, read_legacy};

/// The keys audit entries are checked with. Today the publisher keys the operator
/// gives; this is the one place to read them from the root of trust's versions
/// instead.
pub async fn trusted_audit_keys(
    _bucket: &Bucket,
    given: Vec<PublicKey>,
) -> anyhow::Result<TrustedKeys> {
    Ok(TrustedKeys::new(given))
}

/// What `audit verify` found.
#[derive(Clone, Debug, Serialize)]
pub struct VerifyReport {
    /// Entries stored in the chain.
    pub entries: usize,
    /// The last index stored.
    pub head: Option<u64>,
    /// Current objects checked against the chain (manifests, holds, releases,
    /// rollout states, registry entries).
    pub objects_checked: usize,
    /// Every problem; none means the history verifies.
    pub findings: Vec<Finding>,
}

/// Whether `audit verify` checks that the current object at `key` is explained:
/// manifests and holds, releases and their rollout states, host registry entries.
fn watched(key: &str) -> bool {
    let hosts = key.starts_with("hosts/")
        && (key.ends_with("/manifest.json") || key.ends_with("/hold.json"));
    let releases = key.strip_prefix("releases/").is_some_and(|rest| {
        rest.ends_with("/rollout.json") || (rest.ends_with(".json") && !rest.contains('/'))
    });
    let registry = key.starts_with("registry/hosts/") && key.ends_with(".json");
    hosts || releases || registry
}

/// Replays the whole audit of `bucket` with `trusted`; see the module docs.
pub async fn verify(bucket: &Bucket, trusted: &TrustedKeys) -> anyhow::Result<VerifyReport> {
    let (stored, stray) = read_chain(bucket).await?;
    let entries = stored.len();
    let replay = replay_chain(stored, trusted, read_hint(bucket).await);
    let mut findings = replay.findings.clone();
    findings.extend(stray.into_iter().map(|key| Finding {
        kind: FindingKind::Stray,
        key,
        index: None,
        message: "it is under audit/chain/ but not an entry key (20 digits, .json)".into(),
    }));
    let current = current_objects(bucket).await?;
    let mut explained = explain(&replay, &current, &[], watched);
    // The older entries are read only when some object has no entry at all.
    if explained
        .iter()
        .any(|f| f.kind == FindingKind::Unexplained && f.index.is_none())
    {
        let legacy = read_legacy(bucket, |_| true).await?;
        explained = explain(&replay, &current, &legacy, watched);
    }
    findings.extend(explained);
    Ok(VerifyReport {
        entries,
        head: replay.head,
        objects_checked: current.len(),
        findings,
    })
}

/// Every watched object ([`watched`]), key → SHA-256 of its bytes. The registry
/// is skipped when these credentials may not list it (the publisher role may not;
/// the admin's may).
async fn current_objects(bucket: &Bucket) -> anyhow::Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for (prefix, max) in [
        (KeyPrefix::hosts(), MAX_MANIFEST_SIZE),
        (
            KeyPrefix::releases(),
            MAX_ROLLOUT_SIZE.max(MAX_RELEASE_SIZE),
        ),
        (KeyPrefix::registry_hosts(), MAX_HOST_ENTRY_SIZE),
    ] {
        let listed = match bucket.list(&prefix).await {
            Ok(l) => l,
            Err(BucketError::AccessDenied { .. }) if prefix == KeyPrefix::registry_hosts() => {
                tracing::warn!(
                    "these credentials may not list {prefix}; its entries are not checked"
                );
                continue;
            }
            Err(e) => return Err(e).with_context(|| format!("listing {prefix}")),
        };
        let keys: Vec<Key> = listed
            .iter()
            .filter(|o| watched(&o.key))
            .filter_map(|o| prefix.listed(&o.key))
            .collect();
        for (key, obj) in keys.iter().zip(bucket.get_many(&keys, max).await) {
            let obj = obj.with_context(|| format!("reading {key}"))?;
            out.insert(key.to_string(), sha256_hex(&obj.bytes));
        }
    }
    Ok(out)
}

/// Every stored entry, verified with `trusted`: the entry, or the error that says
/// why it does not verify (with its index).
pub async fn entries(
    bucket: &Bucket,
    trusted: &TrustedKeys,
) -> anyhow::Result<Vec<Result<VerifiedEntry, (u64, String)>>> {
    let (stored, _) = read_chain(bucket).await?;
    Ok(stored
        .into_iter()
        .map(|(index, bytes)| {
            ChainEntry::verify(&bytes, Key::audit_chain(index).as_str(), trusted)
                .map_err(|e| (index, e.to_string()))
        })
        .collect())
}
