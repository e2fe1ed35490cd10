//! What the reporter makes of each host: the outcome of reading its objects
//! ([`StatusOutcome`], [`ManifestOutcome`]) and the classification built from them
//! ([`HostState`], [`HostRow`]).
//!
//! These are the values [`crate::fleet`] computes and [`crate::snapshot`] caches
//! between refreshes; the API, the metrics and the `summary` command display them.
//! Their serde forms are those of the snapshot format (see [`crate::snapshot`]) and
//! of the JSON API (`HostState`'s kebab-case names).

use std::sync::Arc;

use fleet_core::manifest::Activation;
use fleet_core::narinfo::Sha256Hash;
use fleet_core::status::Generation;
use fleet_core::{HostName, StatusReport, StorePath};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

/// Longest flag message kept (messages quote hostile input, so they are cut).
pub const MAX_FLAG_LEN: usize = 1024;

/// Cuts a flag message to [`MAX_FLAG_LEN`] bytes on a character boundary.
pub fn cut(msg: String) -> String {
    if msg.len() <= MAX_FLAG_LEN {
        return msg;
    }
    let mut end = MAX_FLAG_LEN - 3;
    while !msg.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &msg[..end])
}

/// The facts of a verified manifest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestInfo {
    /// Its sequence number.
    pub sequence: u64,
    /// The closure it asks for.
    pub closure: StorePath,
    /// When it was signed.
    pub issued_at: Timestamp,
    /// When it expires.
    pub expires_at: Timestamp,
    /// How the agent activates it.
    pub activation: Activation,
    /// The publisher key that signed it (shared: a fleet has a few key names and
    /// many manifests).
    pub signed_by: Arc<str>,
    /// SHA-256 of the stored object.
    #[serde(with = "hex_sha256")]
    pub digest: Sha256Hash,
}

/// The snapshot's form of a manifest digest: 64 hex digits (held as 32 bytes: a
/// `String` of them per host was 8 MB at 100,000 hosts).
mod hex_sha256 {
    use fleet_core::narinfo::Sha256Hash;
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(h: &Sha256Hash, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&h.to_hex())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Sha256Hash, D::Error> {
        fleet_core::serde_str::from_str_with(d, "a SHA-256 digest in hex", |s| {
            Sha256Hash::from_hex(s).ok_or("a SHA-256 digest is 64 hex digits")
        })
    }
}

/// What reading a host's `status.json` gave.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub enum StatusOutcome {
    /// It parsed.
    Report(Arc<StatusReport>),
    /// It was refused; why.
    Flagged(String),
}

/// What verifying a host's manifest gave.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub enum ManifestOutcome {
    /// Signature, host and format checked.
    Verified(Arc<ManifestInfo>),
    /// Refused; why.
    Flagged(String),
    /// Listed but not opened: no trusted key is configured.
    NotVerified,
}

/// The dashboard's classification of a host. The order is the severity order used to
/// put failing hosts first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HostState {
    /// A hostile or broken object: unparseable or wrong-host status, unverifiable
    /// manifest.
    Flagged,
    /// The agent reports `failed`.
    Failed,
    /// The agent rolled back to its previous generation.
    RolledBack,
    /// The agent refused the newest manifest or its closure.
    Refused,
    /// No status written for longer than `stale-after`.
    Stale,
    /// Running something other than what it should, and not failing.
    Pending,
    /// A manifest exists but the host never reported.
    NeverSeen,
    /// Running what it should.
    UpToDate,
    /// Retired (`fleet-publish retire`: a tombstone manifest, or the agent reports
    /// `retired`); shown apart and not counted with the fleet.
    Retired,
}

impl HostState {
    /// Every state, in severity order.
    pub const ALL: [HostState; 9] = [
        HostState::Flagged,
        HostState::Failed,
        HostState::RolledBack,
        HostState::Refused,
        HostState::Stale,
        HostState::Pending,
        HostState::NeverSeen,
        HostState::UpToDate,
        HostState::Retired,
    ];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            HostState::Flagged => "flagged",
            HostState::Failed => "failed",
            HostState::RolledBack => "rolled-back",
            HostState::Refused => "refused",
            HostState::Stale => "stale",
            HostState::Pending => "pending",
            HostState::NeverSeen => "never-seen",
            HostState::UpToDate => "up-to-date",
            HostState::Retired => "retired",
        }
    }

    /// Whether a host in this state fails a CI gate (`fleet-reporter summary`'s
    /// exit code 3): failed, rolled back, refused, stale or flagged.
    pub fn fails_gate(self) -> bool {
        matches!(
            self,
            HostState::Flagged
                | HostState::Failed
                | HostState::RolledBack
                | HostState::Refused
                | HostState::Stale
        )
    }

    /// Parses a wire name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|h| h.as_str() == s)
    }
}

impl std::fmt::Display for HostState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the reporter knows of a host's manifest.
#[derive(Clone, Debug)]
pub enum ManifestView {
    /// No `hosts/<host>/manifest.json`.
    Missing,
    /// There is one, but no trusted key is configured, so it cannot be opened.
    NotVerified,
    /// Verified against the trusted keys (expiry is checked at classification).
    Verified(Arc<ManifestInfo>),
    /// Refused (bad signature, unknown key, wrong host, too large, expired, …).
    Flagged(String),
}

/// Where the desired generation shown for a host comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DesiredSource {
    /// The verified manifest in the bucket.
    Manifest,
    /// The agent's own report (manifests could not be verified here).
    AgentReport,
    /// Unknown.
    None,
}

/// Whether a host's status is its own word: signed by the identity key its
/// registry entry names (see `fleet/registry.rs`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StatusSignatureView {
    /// No registry entry (a set-up without enrollment), no trusted key to verify the
    /// registry with, or no status: nothing to check, which is no error.
    Unverified,
    /// Signed by the enrolled identity key of this name.
    Verified(String),
    /// Unsigned, signed by another key, or the registry entry does not verify; why.
    Invalid(String),
}

/// A host's hold in force (`fleet-publish hold`, `hosts/<host>/hold.json`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct HoldInfo {
    /// Why, in the operator's words (hostile text: escape when displaying).
    pub reason: String,
    /// When it was signed.
    pub since: Timestamp,
    /// The publisher key that signed it; `None` when no trusted key is configured,
    /// so the hold could not be verified.
    pub signed_by: Option<String>,
}

/// One host, classified.
#[derive(Clone, Debug)]
pub struct HostRow {
    /// The host.
    pub host: HostName,
    /// Its classification.
    pub state: HostState,
    /// The store's last-modified time of its `status.json`.
    pub last_seen: Option<Timestamp>,
    /// Its parsed status, if it parsed.
    pub report: Option<Arc<StatusReport>>,
    /// Its manifest.
    pub manifest: ManifestView,
    /// What it should run.
    pub desired: Option<Generation>,
    /// Where `desired` comes from.
    pub desired_source: DesiredSource,
    /// Why the row is flagged (empty unless `state` is [`HostState::Flagged`]).
    pub flags: Vec<String>,
    /// Remarks that are not problems of the objects (no manifest, …).
    pub notes: Vec<String>,
    /// Whether its status is signed by its enrolled identity key.
    pub status_signature: StatusSignatureView,
    /// Its hold, if one is in force.
    pub hold: Option<HoldInfo>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_round_trip_and_order() {
        for s in HostState::ALL {
            assert_eq!(HostState::parse(s.as_str()), Some(s));
        }
        assert!(HostState::Flagged < HostState::UpToDate);
        assert_eq!(HostState::parse("bogus"), None);
    }

    #[test]
    fn cut_keeps_char_boundaries() {
        let s = cut("é".repeat(MAX_FLAG_LEN));
        assert!(s.len() <= MAX_FLAG_LEN && s.ends_with("..."));
    }
}
