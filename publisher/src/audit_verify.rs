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
//! Which keys are trusted is decided in one place, [`trusted_audit_keys`]: the
//! publisher keys given, then, from the first `trust` entry on, the keys of the
//! root version in force ([`fleet_core::audit_trust`]); every root version in the
//! bucket must chain by TUF's rule and be explained by its trust entry.

use std::collections::BTreeMap;

use anyhow::Context;
use fleet_core::audit_chain::{ChainEntry, VerifiedEntry, sha256_hex};
use fleet_core::audit_replay::{Finding, FindingKind, explain};
use fleet_core::audit_trust::{RootPin, RootWalk, read_roots, replay_with_roots, walk_roots};
use fleet_core::bucket::BucketError;
use fleet_core::manifest::MAX_MANIFEST_SIZE;
use fleet_core::registry::MAX_HOST_ENTRY_SIZE;
use fleet_core::release::MAX_RELEASE_SIZE;
use fleet_core::rollout::MAX_ROLLOUT_SIZE;
use fleet_core::{Bucket, Key, KeyPrefix, PublicKey, TrustedKeys};
use serde::Serialize;

use crate::audit_log::{read_chain, read_hint, read_legacy};

/// The keys audit entries are checked with: the publisher keys the operator gives
/// (a set-up from before the root of trust) and every root version in the bucket,
/// walked from `pin` or, without one, from version 1 trusted on first use.
#[derive(Clone, Debug)]
pub struct AuditKeys {
    /// The keys given on the command line.
    pub given: TrustedKeys,
    /// The root versions walked.
    pub walk: RootWalk,
}

impl AuditKeys {
    /// Every key that may have signed an entry, whichever was in force when.
    pub fn any(&self) -> TrustedKeys {
        let mut keys = self.given.keys().to_vec();
        for k in self.walk.all_signing_keys() {
            if !keys.contains(&k) {
                keys.push(k);
            }
        }
        TrustedKeys::new(keys)
    }
}

/// Reads and walks the root of trust of `bucket` (nothing when it has none) and
/// returns it with `given`. The one place that decides which keys audit entries are
/// checked with.
pub async fn trusted_audit_keys(
    bucket: &Bucket,
    given: Vec<PublicKey>,
    pin: Option<&RootPin>,
) -> anyhow::Result<AuditKeys> {
    let (stored, pointer) = match read_roots(bucket).await {
        Ok(r) => r,
        Err(e @ BucketError::AccessDenied { .. }) => {
            tracing::warn!(
                "these credentials may not read trust/, so the root of trust is not checked and \
                 only the keys given verify entries: {e}"
            );
            Default::default()
        }
        Err(e) => return Err(e).context("reading the root of trust (trust/)"),
    };
    Ok(AuditKeys {
        given: TrustedKeys::new(given),
        walk: walk_roots(&stored, pointer.as_deref(), pin),
    })
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
/// manifests and holds, releases and their rollout states, host registry entries,
/// root of trust versions and `trust/root.json`.
fn watched(key: &str) -> bool {
    let hosts = key.starts_with("hosts/")
        && (key.ends_with("/manifest.json") || key.ends_with("/hold.json"));
    let releases = key.strip_prefix("releases/").is_some_and(|rest| {
        rest.ends_with("/rollout.json") || (rest.ends_with(".json") && !rest.contains('/'))
    });
    let registry = key.starts_with("registry/hosts/") && key.ends_with(".json");
    let trust = key == Key::trust_root().as_str() || Key::trust_root_version_of(key).is_some();
    hosts || releases || registry || trust
}

/// Replays the whole audit of `bucket` with `trusted`; see the module docs.
pub async fn verify(bucket: &Bucket, keys: &AuditKeys) -> anyhow::Result<VerifyReport> {
    let (stored, stray) = read_chain(bucket).await?;
    let entries = stored.len();
    let replay = replay_with_roots(stored, read_hint(bucket).await, &keys.given, &keys.walk);
    let mut findings = replay.findings.clone();
    findings.extend(stray.into_iter().map(|key| Finding {
        kind: FindingKind::Stray,
        key,
        index: None,
        message: "it is under audit/chain/ but not an entry key (20 digits, .json)".into(),
    }));
    let mut current = current_objects(bucket).await?;
    // Root versions are explained by the trust entries that wrote them; without a
    // root stored (or readable) there is nothing to explain.
    if keys.walk.start.is_some() {
        let (roots, pointer) = read_roots(bucket).await.context("reading trust/")?;
        for (v, bytes) in &roots {
            current.insert(Key::trust_root_version(*v).to_string(), sha256_hex(bytes));
        }
        if let Some(p) = pointer {
            current.insert(Key::trust_root().to_string(), sha256_hex(&p));
        }
    }
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
    keys: &AuditKeys,
) -> anyhow::Result<Vec<Result<VerifiedEntry, (u64, String)>>> {
    let trusted = &keys.any();
    let (stored, _) = read_chain(bucket).await?;
    Ok(stored
        .into_iter()
        .map(|(index, bytes)| {
            ChainEntry::verify(&bytes, Key::audit_chain(index).as_str(), trusted)
                .map_err(|e| (index, e.to_string()))
        })
        .collect())
}
