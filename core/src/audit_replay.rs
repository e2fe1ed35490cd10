//! Replaying the audit chain ([`crate::audit_chain`]) from what the bucket holds,
//! with no other input than the trusted keys: what `fleet-publish audit verify`
//! decides, kept free of I/O so it is tested here on hand-made histories.
//!
//! [`replay_chain`] walks the stored entries in index order and reports, as
//! [`Finding`]s:
//!
//! - `gap`: indices missing below the last one (an entry deleted, or never
//!   written);
//! - `unverified`: an entry whose signature does not verify with a trusted key, or
//!   whose payload is not an entry (altered, forged);
//! - `misplaced`: an entry whose payload names another index than its key
//!   (reordered or copied);
//! - `broken-link`: an entry whose `previous_sha256` is not the hash of the stored
//!   entry before it (that one was altered or replaced, or this one belongs to
//!   another chain: a fork);
//! - `truncated`: the head hint names an index past the chain's end (entries deleted
//!   at the end).
//!
//! With a root of trust, [`replay_chain_with`] lets [`crate::audit_trust`] switch
//! the key set along the chain and add `key-not-in-force`, `out-of-scope` and
//! `root-chain` findings.
//!
//! [`explain`] then checks the current objects against the last entry that names
//! each: `unexplained` for an object no entry wrote, one whose bytes differ from what
//! the last entry recorded, or one an entry wrote that is gone; `legacy-only` for a
//! manifest that only an unsigned entry of the older format ([`crate::audit`])
//! explains.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::audit::AuditEntry;
use crate::audit_chain::{ChainEntry, HeadHint, VerifiedEntry, sha256_hex};
use crate::keys::TrustedKeys;
use crate::layout::Key;

/// What kind of problem a finding is; stored as its kebab-case name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FindingKind {
    /// Indices missing below the chain's last one.
    Gap,
    /// An entry that does not verify.
    Unverified,
    /// An entry stored under another index than its own.
    Misplaced,
    /// An entry whose `previous_sha256` does not match the entry before.
    BrokenLink,
    /// The head hint is past the chain's end.
    Truncated,
    /// An object under `audit/chain/` that is not an entry key.
    Stray,
    /// A current object no entry explains.
    Unexplained,
    /// A manifest explained only by an unsigned entry of the older format.
    LegacyOnly,
    /// An entry signed by a key the root of trust in force at that point of the
    /// chain does not list (revoked before, or never listed).
    KeyNotInForce,
    /// An entry by a scoped publisher key that touches hosts outside its scope.
    OutOfScope,
    /// A root of trust version that does not chain by TUF's rule, is missing,
    /// rolled back, or that its trust entry does not match.
    RootChain,
}

/// One problem found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// What kind.
    pub kind: FindingKind,
    /// The key it is about.
    pub key: String,
    /// The entry index it is about, if any.
    pub index: Option<u64>,
    /// What is wrong, for a person.
    pub message: String,
}

/// The result of [`replay_chain`].
#[derive(Clone, Debug, Default)]
pub struct Replay {
    /// The entries that verified and sit at their own index, in index order.
    pub entries: Vec<VerifiedEntry>,
    /// The last index stored, if any.
    pub head: Option<u64>,
    /// What is wrong with the chain itself.
    pub findings: Vec<Finding>,
}

/// What the signature check of one entry in [`replay_chain_with`] decided: the
/// verified entry with any findings about it, or why it does not verify.
pub type Checked = Result<(VerifiedEntry, Vec<(FindingKind, String)>), String>;

/// Replays the stored entries (index from the key, stored bytes) with one fixed key
/// set; see the module docs.
pub fn replay_chain(
    stored: Vec<(u64, Vec<u8>)>,
    trusted: &TrustedKeys,
    hint: Option<HeadHint>,
) -> Replay {
    replay_chain_with(stored, hint, |_, bytes, key| {
        ChainEntry::verify(bytes, key, trusted)
            .map(|v| (v, Vec::new()))
            .map_err(|e| e.to_string())
    })
}

/// Replays the stored entries, checking each one's signature with `check` (called
/// in index order with the index, the stored bytes and the key), which may keep
/// state across entries: the key set in force can change along the chain
/// ([`crate::audit_trust`]).
pub fn replay_chain_with(
    mut stored: Vec<(u64, Vec<u8>)>,
    hint: Option<HeadHint>,
    mut check: impl FnMut(u64, &[u8], &str) -> Checked,
) -> Replay {
    stored.sort_by_key(|(i, _)| *i);
    let mut out = Replay::default();
    let mut expected = 1u64;
    // The hash of the stored entry just before the current index, when it was read.
    let mut previous: Option<String> = None;
    for (index, bytes) in stored {
        let key = Key::audit_chain(index).to_string();
        let mut finding = |kind, message: String| {
            out.findings.push(Finding {
                kind,
                key: key.clone(),
                index: Some(index),
                message,
            })
        };
        if index > expected {
            let what = if index - expected == 1 {
                format!("entry {expected} is missing")
            } else {
                format!("entries {expected} to {} are missing", index - 1)
            };
            finding(
                FindingKind::Gap,
                format!("{what} before entry {index}: deleted, or never written"),
            );
            previous = None;
        }
        let sha256 = sha256_hex(&bytes);
        match check(index, &bytes, &key) {
            Err(e) => finding(
                FindingKind::Unverified,
                format!("{e}: the entry was altered or forged"),
            ),
            Ok((v, _)) if v.entry.index != index => finding(
                FindingKind::Misplaced,
                format!(
                    "it holds entry {} (signed by {}): entries were reordered or copied",
                    v.entry.index, v.signed_by
                ),
            ),
            Ok((v, extra)) => {
                for (kind, message) in extra {
                    finding(kind, message);
                }
                let link_ok = match (index, &previous) {
                    (1, _) => v.entry.previous_sha256.is_none(),
                    (_, Some(p)) => v.entry.previous_sha256.as_ref() == Some(p),
                    // The entry before is missing: the gap is already reported.
                    (_, None) => true,
                };
                if !link_ok {
                    finding(
                        FindingKind::BrokenLink,
                        format!(
                            "it names previous entry hash {} but entry {} hashes to {}: that \
                             entry was altered or replaced, or this one forks the chain",
                            v.entry.previous_sha256.as_deref().unwrap_or("null"),
                            index.saturating_sub(1),
                            previous.as_deref().unwrap_or("nothing (it is the first)")
                        ),
                    );
                }
                out.entries.push(v);
            }
        }
        previous = Some(sha256);
        expected = index.saturating_add(1);
        out.head = Some(index);
    }
    if let Some(h) = hint.filter(|h| Some(h.index) > out.head) {
        out.findings.push(Finding {
            kind: FindingKind::Truncated,
            key: Key::audit_head().to_string(),
            index: Some(h.index),
            message: format!(
                "the head hint says the chain reached entry {} but it ends at {}: entries \
                 were deleted at the end",
                h.index,
                out.head.map_or("nothing".into(), |h| h.to_string())
            ),
        });
    }
    out
}

/// Checks `current` (key → SHA-256 of the bytes now stored) against the last entry
/// of `replay` naming each key. Keys an entry names but `current` lacks are
/// reported only where `watched` says `current` covers them. `legacy` are the older
/// unsigned entries, which can only downgrade a manifest to `legacy-only`.
pub fn explain(
    replay: &Replay,
    current: &BTreeMap<String, String>,
    legacy: &[AuditEntry],
    watched: impl Fn(&str) -> bool,
) -> Vec<Finding> {
    let mut last: BTreeMap<String, (Option<String>, u64)> = BTreeMap::new();
    for v in &replay.entries {
        for (key, sha) in v.entry.object_states() {
            last.insert(key, (sha, v.entry.index));
        }
    }
    let mut out = Vec::new();
    for (key, sha) in current {
        let message = match last.get(key) {
            Some((Some(s), _)) if s == sha => continue,
            Some((recorded, index)) => format!(
                "it holds bytes with SHA-256 {sha}, but the last entry naming it (entry \
                 {index}) recorded {}: it was changed outside the audited commands",
                recorded.as_deref().unwrap_or("its deletion")
            ),
            None if legacy.iter().any(|e| {
                Key::manifest(&e.host).as_str() == key && &e.new_manifest_sha256 == sha
            }) =>
            {
                out.push(Finding {
                    kind: FindingKind::LegacyOnly,
                    key: key.clone(),
                    index: None,
                    message: "only an unsigned audit entry of the older format explains it; \
                              the next deploy, renew or rollback of the host records it in \
                              the signed chain"
                        .into(),
                });
                continue;
            }
            None => "no audit entry names it: it was written outside the audited commands".into(),
        };
        out.push(Finding {
            kind: FindingKind::Unexplained,
            key: key.clone(),
            index: last.get(key).map(|(_, i)| *i),
            message,
        });
    }
    for (key, (sha, index)) in &last {
        if sha.is_some() && watched(key) && !current.contains_key(key) {
            out.push(Finding {
                kind: FindingKind::Unexplained,
                key: key.clone(),
                index: Some(*index),
                message: format!(
                    "entry {index} wrote it, but it is gone: deleted outside the audited commands"
                ),
            });
        }
    }
    out
}
