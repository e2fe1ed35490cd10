//! The signed audit chain: one DSSE envelope per admin action, each naming the
//! SHA-256 of the entry before it, so the history cannot be edited, reordered or
//! cut in the middle without a verifier noticing.
//!
//! Entry `N` is stored at `audit/chain/<N, 20 digits>.json`
//! ([`crate::layout::Key::audit_chain`]), created only if absent (`If-None-Match`),
//! as a DSSE envelope ([`crate::envelope`]) of payload type [`AUDIT_PAYLOAD_TYPE`]
//! signed with the acting publisher key. The first entry has index 1 and
//! `previous_sha256: null`; every later one carries the SHA-256 (hex) of the *stored
//! bytes* (the whole envelope) of the entry before. The payload:
//!
//! ```json
//! {
//!   "version": 1,
//!   "index": 17,
//!   "previous_sha256": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
//!   "time": "2026-11-26T21:25:00.123Z",
//!   "key_name": "publisher-1",
//!   "action": "deploy",
//!   "hosts": ["web-1"],
//!   "details": {
//!     "manifests": [{
//!       "host": "web-1", "sequence": 8, "previous_sequence": 7,
//!       "closure": "/nix/store/aql5kla6x8r78rrdfyxr471hbn3himl6-nixos-system-web-1",
//!       "activation": "switch", "expires_at": "2026-12-03T21:25:00Z",
//!       "previous_manifest_sha256": "60303a…", "manifest_sha256": "b5bb9d…"
//!     }]
//!   },
//!   "publisher_version": "0.1.0"
//! }
//! ```
//!
//! `action` names what was done ([`ActionKind`]); `details` is one general shape for
//! every action ([`AuditDetails`]): the manifests written, other objects written or
//! deleted (holds, releases, trust versions), a reason, and action-specific fields.
//! Readers ignore fields they do not know, so a newer publisher's entries still
//! verify with an older `audit verify`.
//!
//! `audit/head.json` holds `{"index": N}`, a hint where the chain ends that writers
//! refresh now and then; it is only an optimisation and never trusted.
//!
//! The replay that checks a whole chain is [`crate::audit_replay`]; the older unsigned
//! entries are [`crate::audit`].

use std::collections::BTreeMap;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::audit::AuditEntry;
use crate::envelope::{self, EnvelopeError};
use crate::host::HostName;
use crate::keys::{SecretKey, TrustedKeys};
use crate::layout::Key;
use crate::manifest::Activation;
use crate::store_path::StorePath;

/// DSSE payload type of an audit chain entry.
pub const AUDIT_PAYLOAD_TYPE: &str = "application/vnd.fleet.audit.v1+json";
/// Largest audit chain entry accepted.
pub const MAX_AUDIT_ENTRY_SIZE: u64 = 1 << 20;

/// What an entry records; stored as its kebab-case name (`"rollout-step"`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ActionKind {
    /// `fleet-publish deploy` wrote a manifest.
    Deploy,
    /// `fleet-publish renew` re-signed a manifest.
    Renew,
    /// `fleet-publish rollback` re-signed an earlier closure.
    Rollback,
    /// `fleet-publish hold`.
    Hold,
    /// `fleet-publish unhold`.
    Unhold,
    /// A release was signed.
    Release,
    /// A rollout wave wrote a host's manifest.
    Rollout,
    /// A rollout's state changed (wave started, settled, halted, paused, …).
    RolloutStep,
    /// A host was retired.
    Retire,
    /// Garbage collection deleted objects.
    Gc,
    /// A host was enrolled.
    Enroll,
    /// The root of trust changed.
    Trust,
    /// A name this version does not know (written by a newer publisher).
    Other(String),
}

impl ActionKind {
    /// The stored name.
    pub fn as_str(&self) -> &str {
        match self {
            ActionKind::Deploy => "deploy",
            ActionKind::Renew => "renew",
            ActionKind::Rollback => "rollback",
            ActionKind::Hold => "hold",
            ActionKind::Unhold => "unhold",
            ActionKind::Release => "release",
            ActionKind::Rollout => "rollout",
            ActionKind::RolloutStep => "rollout-step",
            ActionKind::Retire => "retire",
            ActionKind::Gc => "gc",
            ActionKind::Enroll => "enroll",
            ActionKind::Trust => "trust",
            ActionKind::Other(s) => s,
        }
    }

    /// The kind stored as `name`.
    pub fn parse(name: &str) -> Self {
        [
            ActionKind::Deploy,
            ActionKind::Renew,
            ActionKind::Rollback,
            ActionKind::Hold,
            ActionKind::Unhold,
            ActionKind::Release,
            ActionKind::Rollout,
            ActionKind::RolloutStep,
            ActionKind::Retire,
            ActionKind::Gc,
            ActionKind::Enroll,
            ActionKind::Trust,
        ]
        .into_iter()
        .find(|k| k.as_str() == name)
        .unwrap_or_else(|| ActionKind::Other(name.to_owned()))
    }
}

impl Serialize for ActionKind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for ActionKind {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(ActionKind::parse(&String::deserialize(d)?))
    }
}

impl std::fmt::Display for ActionKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One manifest an action wrote.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestChange {
    /// The host.
    pub host: HostName,
    /// The new manifest's sequence.
    pub sequence: u64,
    /// The replaced manifest's sequence, if one verified.
    pub previous_sequence: Option<u64>,
    /// The closure the host should now run.
    pub closure: StorePath,
    /// How it is activated.
    pub activation: Activation,
    /// The new manifest's expiry.
    pub expires_at: Timestamp,
    /// SHA-256 (hex) of the replaced manifest object, if any.
    pub previous_manifest_sha256: Option<String>,
    /// SHA-256 (hex) of the new manifest object.
    pub manifest_sha256: String,
}

/// Another object an action wrote (`sha256` of its bytes) or deleted (`null`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectChange {
    /// Its key, relative to the bucket's root prefix.
    pub key: String,
    /// SHA-256 (hex) of the bytes written; `None` when it was deleted.
    pub sha256: Option<String>,
}

impl ObjectChange {
    /// `key` now holds `bytes`.
    pub fn written(key: &Key, bytes: &[u8]) -> Self {
        Self {
            key: key.to_string(),
            sha256: Some(sha256_hex(bytes)),
        }
    }

    /// `key` was deleted.
    pub fn deleted(key: &Key) -> Self {
        Self {
            key: key.to_string(),
            sha256: None,
        }
    }
}

/// What an action did, in one shape for every action; empty parts are left out of
/// the stored JSON.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditDetails {
    /// Manifests written (deploy, renew, rollback, rollout steps).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub manifests: Vec<ManifestChange>,
    /// Other objects written or deleted (holds, releases, trust versions, gc).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub objects: Vec<ObjectChange>,
    /// The operator's reason, if one was given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Anything else the action wants on record (release id, rollout step, counts).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub extra: BTreeMap<String, serde_json::Value>,
}

/// What a caller asks to record: the action, the hosts it affected, its details.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditAction {
    /// What was done.
    pub kind: ActionKind,
    /// The hosts affected (may be empty, e.g. a trust change).
    pub hosts: Vec<HostName>,
    /// What exactly.
    pub details: AuditDetails,
}

impl AuditAction {
    /// An action that wrote or deleted `objects` (not manifests), with `extra`
    /// fields on record.
    pub fn objects<'a>(
        kind: ActionKind,
        hosts: Vec<HostName>,
        objects: Vec<ObjectChange>,
        extra: impl IntoIterator<Item = (&'a str, serde_json::Value)>,
    ) -> Self {
        Self {
            kind,
            hosts,
            details: AuditDetails {
                objects,
                extra: extra.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
                ..AuditDetails::default()
            },
        }
    }

    /// A manifest write (`deploy`, `renew`, `rollback`) of one host.
    pub fn manifest(kind: ActionKind, change: ManifestChange) -> Self {
        Self {
            kind,
            hosts: vec![change.host.clone()],
            details: AuditDetails {
                manifests: vec![change],
                ..AuditDetails::default()
            },
        }
    }
}

/// One entry of the chain (the signed payload).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainEntry {
    /// Format version; 1.
    pub version: u32,
    /// Position in the chain, from 1; equals the index in its key.
    pub index: u64,
    /// SHA-256 (hex) of the stored bytes of entry `index - 1`; `None` only for 1.
    pub previous_sha256: Option<String>,
    /// When the action was recorded.
    pub time: Timestamp,
    /// Name of the key that signed the entry (who).
    pub key_name: String,
    /// What was done.
    pub action: ActionKind,
    /// The hosts affected.
    pub hosts: Vec<HostName>,
    /// What exactly.
    pub details: AuditDetails,
    /// Version of fleet-publish that wrote it.
    pub publisher_version: String,
}

/// An entry whose signature verified.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct VerifiedEntry {
    /// The payload.
    pub entry: ChainEntry,
    /// The trusted key whose signature verified.
    pub signed_by: String,
    /// SHA-256 (hex) of the stored bytes (what the next entry names).
    pub sha256: String,
}

/// Why a stored entry cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ChainEntryError {
    /// Its envelope does not verify (altered, forged, or signed by an unknown key).
    #[error("{key} does not verify: {error}")]
    Envelope {
        /// The key read.
        key: String,
        /// The envelope's error.
        error: EnvelopeError,
    },
    /// Its payload is not an audit entry.
    #[error("{key} is malformed: {why}")]
    Malformed {
        /// The key read.
        key: String,
        /// What is wrong.
        why: String,
    },
}

/// SHA-256 (hex) of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

impl ChainEntry {
    /// A new entry `index` after the entry whose stored bytes hash to `previous`,
    /// signed now by `key_name`.
    pub fn new(
        index: u64,
        previous_sha256: Option<String>,
        key_name: &str,
        action: AuditAction,
    ) -> Self {
        Self {
            version: 1,
            index,
            previous_sha256,
            time: Timestamp::now(),
            key_name: key_name.to_owned(),
            action: action.kind,
            hosts: action.hosts,
            details: action.details,
            publisher_version: crate::VERSION.to_owned(),
        }
    }

    /// Its key, `audit/chain/<index>.json`.
    pub fn key(&self) -> Key {
        Key::audit_chain(self.index)
    }

    /// Serialises and signs the entry; returns the bytes to store.
    pub fn sign(&self, key: &SecretKey) -> Vec<u8> {
        let payload = serde_json::to_vec_pretty(self).expect("audit entry serialises");
        envelope::seal(AUDIT_PAYLOAD_TYPE, &payload, key)
    }

    /// Verifies stored bytes read from `key` with `trusted`: the signature, the
    /// version, and that the signer is the key the entry names.
    pub fn verify(
        bytes: &[u8],
        key: &str,
        trusted: &TrustedKeys,
    ) -> Result<VerifiedEntry, ChainEntryError> {
        let opened = envelope::open(bytes, AUDIT_PAYLOAD_TYPE, trusted, MAX_AUDIT_ENTRY_SIZE)
            .map_err(|error| ChainEntryError::Envelope {
                key: key.to_owned(),
                error,
            })?;
        let malformed = |why: String| ChainEntryError::Malformed {
            key: key.to_owned(),
            why,
        };
        let entry: ChainEntry = serde_json::from_slice(&opened.payload)
            .map_err(|e| malformed(format!("payload: {e}")))?;
        if entry.version != 1 {
            return Err(malformed(format!("unsupported version {}", entry.version)));
        }
        if entry.key_name != opened.signed_by {
            return Err(malformed(format!(
                "it names key {:?} but is signed by {:?}",
                entry.key_name, opened.signed_by
            )));
        }
        Ok(VerifiedEntry {
            entry,
            signed_by: opened.signed_by,
            sha256: sha256_hex(bytes),
        })
    }

    /// Its manifest changes in the shape of the older unsigned entries (the rows
    /// rollback reads as a host's history).
    pub fn manifest_rows(&self) -> Vec<AuditEntry> {
        self.details
            .manifests
            .iter()
            .map(|m| AuditEntry {
                version: 1,
                action: self.action.to_string(),
                time: self.time,
                key_name: self.key_name.clone(),
                host: m.host.clone(),
                sequence: m.sequence,
                previous_sequence: m.previous_sequence,
                closure: m.closure.clone(),
                activation: m.activation,
                expires_at: m.expires_at,
                previous_manifest_sha256: m.previous_manifest_sha256.clone(),
                new_manifest_sha256: m.manifest_sha256.clone(),
                publisher_version: self.publisher_version.clone(),
            })
            .collect()
    }

    /// The objects it says it left behind, key → SHA-256 (`None`: deleted):
    /// its manifests and its other objects.
    pub fn object_states(&self) -> Vec<(String, Option<String>)> {
        let manifests = self.details.manifests.iter().map(|m| {
            (
                Key::manifest(&m.host).to_string(),
                Some(m.manifest_sha256.clone()),
            )
        });
        let others = self
            .details
            .objects
            .iter()
            .map(|o| (o.key.clone(), o.sha256.clone()));
        manifests.chain(others).collect()
    }
}

/// The head hint `audit/head.json`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeadHint {
    /// An index the chain reached when the hint was written.
    pub index: u64,
}

#[cfg(test)]
mod tests;
