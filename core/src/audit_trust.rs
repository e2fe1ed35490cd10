//! The audit chain read against the root of trust: which keys may sign an audit
//! entry at each point of the chain, and whether every root version in the bucket
//! is one the audited `fleet-publish trust …` commands wrote.
//!
//! Every change of the root is recorded as an audit entry of action `trust`
//! ([`trust_action`]), which names the new version, the SHA-256 of its stored
//! bytes, and the two objects written (`trust/<version>.root.json` and
//! `trust/root.json`):
//!
//! ```json
//! "action": "trust",
//! "details": {
//!   "objects": [{"key": "trust/3.root.json", "sha256": "…"}, {"key": "trust/root.json", "sha256": "…"}],
//!   "extra": {"change": "revoke", "root_version": 3, "root_sha256": "…"}
//! }
//! ```
//!
//! A verifier ([`replay_with_roots`]):
//!
//! 1. walks every root version stored ([`walk_roots`]) from the pinned one (root
//!    keys and a version the operator gives) or, without a pin, from version 1
//!    taken on its own signatures (trusted on first use), each next version by
//!    TUF's rule ([`crate::trust::chain`]); `trust/root.json` must be the newest;
//! 2. replays the chain in order. Before the first trust entry the keys in force
//!    are the ones given on the command line (a fleet set up with static keys);
//!    a trust entry whose version and digest match a walked version puts that
//!    version's publisher and admin keys in force. A trust entry itself may be
//!    signed by a key in force before it or by one its new version lists (a
//!    publisher revoking its own key records that with the key it revokes).
//!    An entry signed by a key not in force is `key-not-in-force`; an entry of a
//!    scoped publisher key naming a host whose name its scope's host patterns do
//!    not match is `out-of-scope` (a scope with labels cannot be checked from the
//!    bucket, which does not hold hosts' labels, so such hosts are not reported).
//!
//! Trust entries naming versions below the pinned one are not checked (the walk
//! starts at the pin); their keys never come into force.

use std::collections::BTreeMap;

use serde_json::json;

use crate::audit_chain::{
    ActionKind, AuditAction, ChainEntry, HeadHint, ObjectChange, VerifiedEntry,
};
use crate::audit_replay::{Checked, Finding, FindingKind, Replay, replay_chain_with};
use crate::bucket::{Bucket, BucketError};
use crate::keys::{PublicKey, TrustedKeys};
use crate::layout::{Key, KeyPrefix};
use crate::trust::{MAX_ROOT_SIZE, TrustedRoot};

/// The `extra` field of a trust entry naming the version written.
pub const ROOT_VERSION_FIELD: &str = "root_version";
/// The `extra` field of a trust entry naming the SHA-256 of the version's bytes.
pub const ROOT_SHA256_FIELD: &str = "root_sha256";

/// The audit action recording that `root` was written by the trust subcommand
/// `change` (`init`, `add-publisher`, `revoke`, …).
pub fn trust_action(root: &TrustedRoot, change: &str) -> AuditAction {
    AuditAction::objects(
        ActionKind::Trust,
        Vec::new(),
        vec![
            ObjectChange::written(&Key::trust_root_version(root.version()), root.bytes()),
            ObjectChange::written(&Key::trust_root(), root.bytes()),
        ],
        [
            ("change", json!(change)),
            (ROOT_VERSION_FIELD, json!(root.version())),
            (ROOT_SHA256_FIELD, json!(root.digest())),
        ],
    )
}

/// The root version and digest a trust entry records, or `None` when `entry` is
/// not a trust entry or lacks them.
pub fn trust_entry_root(entry: &ChainEntry) -> Option<(u64, String)> {
    if entry.action != ActionKind::Trust {
        return None;
    }
    let version = entry.details.extra.get(ROOT_VERSION_FIELD)?.as_u64()?;
    let sha = entry.details.extra.get(ROOT_SHA256_FIELD)?.as_str()?;
    Some((version, sha.to_owned()))
}

/// The root keys and version an operator pins (`--trust-root-key[-file]`,
/// `--trust-root-version`).
#[derive(Clone, Debug)]
pub struct RootPin {
    /// Root keys taken from the operator's records.
    pub keys: TrustedKeys,
    /// The version they signed.
    pub version: u64,
}

impl RootPin {
    /// The pin from settings `trust-root-key` (key texts, `name:base64`),
    /// `trust-root-key-file` and `trust-root-version`: `None` when no key is given.
    /// A version without keys is refused (it would pin nothing).
    pub fn from_settings(
        texts: &[String],
        files: &[std::path::PathBuf],
        version: Option<u64>,
    ) -> Result<Option<Self>, String> {
        let mut keys = Vec::new();
        for (i, t) in texts.iter().enumerate() {
            keys.push(
                PublicKey::parse(t, &format!("trust-root-key #{}", i + 1))
                    .map_err(|e| e.to_string())?,
            );
        }
        for f in files {
            keys.push(
                PublicKey::load(f)
                    .map_err(|e| format!("trust-root-key-file {}: {e}", f.display()))?,
            );
        }
        if keys.is_empty() {
            return match version {
                Some(_) => Err("trust-root-version is set but no trust-root-key (or trust-root-key-file) is: give the root keys that version was signed with".into()),
                None => Ok(None),
            };
        }
        let version = version.unwrap_or(1);
        if version == 0 {
            return Err("trust-root-version starts at 1".into());
        }
        Ok(Some(Self {
            keys: TrustedKeys::new(keys),
            version,
        }))
    }
}

/// The stored root versions (version → bytes) and the bytes of `trust/root.json`,
/// read from `bucket` (what [`walk_roots`] takes).
pub async fn read_roots(
    bucket: &Bucket,
) -> Result<(BTreeMap<u64, Vec<u8>>, Option<Vec<u8>>), BucketError> {
    let prefix = KeyPrefix::trust();
    let listed = bucket.list(&prefix).await?;
    let versions: Vec<(u64, Key)> = listed
        .iter()
        .filter_map(|o| Some((Key::trust_root_version_of(&o.key)?, prefix.listed(&o.key)?)))
        .collect();
    let keys: Vec<Key> = versions.iter().map(|(_, k)| k.clone()).collect();
    let mut stored = BTreeMap::new();
    for ((v, _), got) in versions
        .iter()
        .zip(bucket.get_many(&keys, MAX_ROOT_SIZE).await)
    {
        match got {
            Ok(o) => {
                stored.insert(*v, o.bytes.to_vec());
            }
            // Deleted between the listing and the read: the walk reports the gap.
            Err(BucketError::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    let pointer = match bucket.get(&Key::trust_root(), MAX_ROOT_SIZE).await {
        Ok(o) => Some(o.bytes.to_vec()),
        Err(BucketError::NotFound { .. }) => None,
        Err(e) => return Err(e),
    };
    Ok((stored, pointer))
}

/// Every root version that chained, from the pinned (or first) one.
#[derive(Clone, Debug, Default)]
pub struct RootWalk {
    /// The versions that verified, by version.
    pub roots: BTreeMap<u64, TrustedRoot>,
    /// The version the walk started at, if it started.
    pub start: Option<u64>,
    /// Whether the first version was taken on its own signatures (no pin given).
    pub first_use: bool,
    /// What is wrong with the stored versions.
    pub findings: Vec<Finding>,
}

impl RootWalk {
    /// Every publisher and admin key any walked version lists, for reading the
    /// chain when which one is in force does not matter (`audit log`).
    pub fn all_signing_keys(&self) -> Vec<PublicKey> {
        let mut out: Vec<PublicKey> = Vec::new();
        for r in self.roots.values() {
            for k in signing_keys(r).keys() {
                if !out.contains(k) {
                    out.push(k.clone());
                }
            }
        }
        out
    }
}

fn root_finding(key: &Key, message: String) -> Finding {
    Finding {
        kind: FindingKind::RootChain,
        key: key.to_string(),
        index: None,
        message,
    }
}

/// Walks the stored versions (version → bytes of `trust/<version>.root.json`) and
/// checks `pointer` (the bytes of `trust/root.json`); see the module docs.
pub fn walk_roots(
    stored: &BTreeMap<u64, Vec<u8>>,
    pointer: Option<&[u8]>,
    pin: Option<&RootPin>,
) -> RootWalk {
    let mut out = RootWalk::default();
    let Some(&newest) = stored.keys().next_back() else {
        if pointer.is_some() {
            out.findings.push(root_finding(
                &Key::trust_root(),
                "it exists but no trust/<version>.root.json does: the versions were deleted, \
                 or it was written outside fleet-publish trust"
                    .into(),
            ));
        }
        return out;
    };
    let start = pin.map_or(1, |p| p.version);
    out.start = Some(start);
    out.first_use = pin.is_none();
    let first_key = Key::trust_root_version(start);
    let Some(first) = stored.get(&start) else {
        out.findings.push(root_finding(
            &first_key,
            format!(
                "it is missing, so no root version can be checked (versions stored: {:?})",
                stored.keys().collect::<Vec<_>>()
            ),
        ));
        return out;
    };
    let first = match pin {
        Some(p) => TrustedRoot::bootstrap(first, first_key.as_str(), &p.keys, start),
        None => TrustedRoot::reload(first, first_key.as_str()),
    };
    let mut current = match first {
        Ok(r) => r,
        Err(e) => {
            out.findings.push(root_finding(
                &first_key,
                format!("{e}; no later version can be trusted"),
            ));
            return out;
        }
    };
    out.roots.insert(start, current.clone());
    for v in start + 1..=newest {
        let key = Key::trust_root_version(v);
        let Some(bytes) = stored.get(&v) else {
            out.findings.push(root_finding(
                &key,
                format!(
                    "it is missing though version {newest} exists: the walk stops at version {}",
                    v - 1
                ),
            ));
            break;
        };
        match current.next(bytes, key.as_str()) {
            Ok(next) => {
                out.roots.insert(v, next.clone());
                current = next;
            }
            Err(e) => {
                out.findings.push(root_finding(
                    &key,
                    format!("{e}; versions from {v} on are not trusted"),
                ));
                break;
            }
        }
    }
    match pointer {
        None => out.findings.push(root_finding(
            &Key::trust_root(),
            format!("it is missing, but root versions up to {newest} exist"),
        )),
        Some(p) if Some(p) != stored.get(&newest).map(Vec::as_slice) => {
            let claimed = crate::trust::chain::claimed_version(p)
                .map_or("no readable version".to_owned(), |v| format!("version {v}"));
            out.findings.push(root_finding(
                &Key::trust_root(),
                format!(
                    "it holds {claimed}, not the bytes of the newest version {newest}: a rollback \
                     or a version written around the audited commands"
                ),
            ));
        }
        Some(_) => {}
    }
    out
}

/// The keys a root puts in force for audit entries: its publisher and admin keys.
fn signing_keys(root: &TrustedRoot) -> TrustedKeys {
    let r = root.root();
    TrustedKeys::new(
        r.publisher_keys
            .iter()
            .map(|k| k.key.clone())
            .chain(r.admin_keys.iter().cloned()),
    )
}

/// Which keys are in force along the chain.
struct InForce<'a> {
    given: &'a TrustedKeys,
    walk: &'a RootWalk,
    /// Every key that could have signed: given and every walked version's.
    any: TrustedKeys,
    current: Option<u64>,
}

impl InForce<'_> {
    fn keys(&self) -> TrustedKeys {
        match self.current.and_then(|v| self.walk.roots.get(&v)) {
            Some(r) => signing_keys(r),
            None => self.given.clone(),
        }
    }

    fn describe(&self) -> String {
        match self.current {
            Some(v) => format!("root version {v}, in force at this point,"),
            None => "the keys given on the command line (no trust entry comes before it)".into(),
        }
    }

    fn check(&mut self, bytes: &[u8], key: &str) -> Checked {
        let v = ChainEntry::verify(bytes, key, &self.any).map_err(|e| e.to_string())?;
        let mut findings = Vec::new();
        let recorded = trust_entry_root(&v.entry);
        // The version a trust entry brings, when it is one the walk trusts.
        let brought = recorded
            .as_ref()
            .and_then(|(ver, _)| self.walk.roots.get(ver).map(|r| (*ver, r)));
        let in_force = ChainEntry::verify(bytes, key, &self.keys()).is_ok()
            || brought
                .is_some_and(|(_, r)| ChainEntry::verify(bytes, key, &signing_keys(r)).is_ok());
        if !in_force {
            findings.push((
                FindingKind::KeyNotInForce,
                format!(
                    "it is signed by {}, which {} does not list{}",
                    v.signed_by,
                    self.describe(),
                    self.history_of(&v)
                ),
            ));
        } else {
            findings.extend(self.scope_findings(&v));
        }
        if v.entry.action == ActionKind::Trust {
            findings.extend(self.advance(recorded));
        }
        Ok((v, findings))
    }

    /// Where else the signer's key is listed, to tell a revoked key from a stranger.
    fn history_of(&self, v: &VerifiedEntry) -> String {
        let listed: Vec<u64> = self
            .walk
            .roots
            .iter()
            .filter(|(_, r)| signing_keys(r).knows(&v.signed_by))
            .map(|(ver, _)| *ver)
            .collect();
        match (listed.last(), self.current) {
            (Some(last), Some(cur)) if *last < cur => format!(
                " (root versions {listed:?} list it: it was removed at version {})",
                last + 1
            ),
            (Some(_), _) => format!(" (root versions {listed:?} list it)"),
            (None, _) => " (no walked root version lists it)".into(),
        }
    }

    fn scope_findings(&self, v: &VerifiedEntry) -> Vec<(FindingKind, String)> {
        let Some(root) = self.current.and_then(|c| self.walk.roots.get(&c)) else {
            return Vec::new();
        };
        let r = root.root();
        if r.admin_keys.iter().any(|k| k.name() == v.signed_by) {
            return Vec::new();
        }
        let Some(scope) = r
            .publisher_keys
            .iter()
            .find(|k| k.key.name() == v.signed_by)
            .and_then(|k| k.scope.as_ref())
        else {
            return Vec::new();
        };
        if !scope.labels.is_empty() {
            return Vec::new();
        }
        let mut hosts: Vec<_> = v.entry.hosts.iter().collect();
        hosts.extend(v.entry.details.manifests.iter().map(|m| &m.host));
        hosts.sort();
        hosts.dedup();
        let outside: Vec<&str> = hosts
            .into_iter()
            .filter(|h| !scope.admits(h, &[]))
            .map(|h| h.as_str())
            .collect();
        if outside.is_empty() {
            return Vec::new();
        }
        vec![(
            FindingKind::OutOfScope,
            format!(
                "it is signed by {}, scoped to {scope} in root version {}, but touches hosts \
                 {outside:?} outside that scope",
                v.signed_by, r.version
            ),
        )]
    }

    /// A trust entry's effect: the version it records comes into force when the walk
    /// trusts that version with the same digest.
    fn advance(&mut self, recorded: Option<(u64, String)>) -> Vec<(FindingKind, String)> {
        let Some((version, sha)) = recorded else {
            return vec![(
                FindingKind::RootChain,
                format!(
                    "it is a trust entry without {ROOT_VERSION_FIELD} and {ROOT_SHA256_FIELD}: \
                     which root version it wrote cannot be told"
                ),
            )];
        };
        if self.walk.start.is_none_or(|s| version < s) {
            // Below the pin (or no root stored at all: the walk reports that).
            return Vec::new();
        }
        let Some(root) = self.walk.roots.get(&version) else {
            return vec![(
                FindingKind::RootChain,
                format!(
                    "it records root version {version}, which is not stored or does not chain \
                     from the trusted versions"
                ),
            )];
        };
        if root.digest() != sha {
            return vec![(
                FindingKind::RootChain,
                format!(
                    "it records root version {version} with SHA-256 {sha}, but {} hashes to {}: \
                     the version was replaced after it was written",
                    Key::trust_root_version(version),
                    root.digest()
                ),
            )];
        }
        if let Some(cur) = self.current.filter(|c| version <= *c) {
            return vec![(
                FindingKind::RootChain,
                format!(
                    "it records root version {version} after version {cur} was in force: a \
                     version may only move forward"
                ),
            )];
        }
        self.current = Some(version);
        Vec::new()
    }
}

/// Replays the stored chain entries with the keys in force along it; see the
/// module docs. `given` are the keys of a set-up from before the first trust entry.
pub fn replay_with_roots(
    stored: Vec<(u64, Vec<u8>)>,
    hint: Option<HeadHint>,
    given: &TrustedKeys,
    walk: &RootWalk,
) -> Replay {
    let mut any: Vec<PublicKey> = given.keys().to_vec();
    for k in walk.all_signing_keys() {
        if !any.contains(&k) {
            any.push(k);
        }
    }
    let mut state = InForce {
        given,
        walk,
        any: TrustedKeys::new(any),
        current: None,
    };
    let mut replay = replay_chain_with(stored, hint, |_, bytes, key| state.check(bytes, key));
    replay.findings.extend(walk.findings.iter().cloned());
    replay
}

#[cfg(test)]
mod tests;
