//! Audit entries: one append-only JSON object per manifest a publisher wrote.
//!
//! Stored at `audit/<time>-<host>-<sequence>.json` (`<time>` is UTC like
//! `20261126T212500.123Z`, so names sort by time), written create-only
//! (`put_if_absent`) after the manifest's compare-and-swap succeeded, so an entry
//! exists only for manifests that really became current:
//!
//! ```json
//! {
//!   "version": 1,
//!   "action": "deploy",
//!   "time": "2026-11-26T21:25:00.123Z",
//!   "key_name": "publisher-1",
//!   "host": "web-1",
//!   "sequence": 8,
//!   "previous_sequence": 7,
//!   "closure": "/nix/store/aql5kla6x8r78rrdfyxr471hbn3himl6-nixos-system-web-1",
//!   "activation": "switch",
//!   "expires_at": "2026-12-03T21:25:00Z",
//!   "previous_manifest_sha256": "9f86d0…",
//!   "new_manifest_sha256": "60303a…",
//!   "publisher_version": "0.1.0"
//! }
//! ```
//!
//! `action` names the command that wrote the manifest: `deploy`, `renew`,
//! `rollback` or `rollout` (a wave of `fleet-publish rollout advance`). Rollback
//! reads these entries as each host's history.
//!
//! The entry is not signed itself: `new_manifest_sha256` ties it to the manifest,
//! which is.

use crate::host::HostName;
use crate::layout::{Key, ObjectName};
use crate::manifest::Activation;
use crate::store_path::StorePath;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

/// One audit entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditEntry {
    /// Format version; 1.
    pub version: u32,
    /// What wrote the manifest: `deploy`, `renew`, `rollback` or `rollout`.
    pub action: String,
    /// When the manifest was signed.
    pub time: Timestamp,
    /// Name of the publisher key that signed the manifest (who).
    pub key_name: String,
    /// The host.
    pub host: HostName,
    /// The new manifest's sequence.
    pub sequence: u64,
    /// The replaced manifest's sequence, if there was one that verified.
    pub previous_sequence: Option<u64>,
    /// The closure the host now should run.
    pub closure: StorePath,
    /// How it is activated.
    pub activation: Activation,
    /// The new manifest's expiry.
    pub expires_at: Timestamp,
    /// SHA-256 (hex) of the replaced manifest object, if any.
    pub previous_manifest_sha256: Option<String>,
    /// SHA-256 (hex) of the new manifest object.
    pub new_manifest_sha256: String,
    /// Version of fleet-publish that wrote it.
    pub publisher_version: String,
}

impl AuditEntry {
    /// The entry's key: `audit/<time>-<host>-<sequence>.json`.
    pub fn key(&self) -> Key {
        Key::audit(&ObjectName::audit_entry(
            self.time,
            &self.host,
            self.sequence,
        ))
    }

    /// The stored bytes (pretty JSON, newline-terminated).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).expect("audit entry serialises");
        v.push(b'\n');
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_sorts_by_time_and_names_host_and_sequence() {
        let e = AuditEntry {
            version: 1,
            action: "deploy".into(),
            time: "2026-11-26T21:25:00.123456Z".parse().unwrap(),
            key_name: "publisher-1".into(),
            host: HostName::new("web-1").unwrap(),
            sequence: 8,
            previous_sequence: Some(7),
            closure: StorePath::new("/nix/store/aql5kla6x8r78rrdfyxr471hbn3himl6-top").unwrap(),
            activation: Activation::Switch,
            expires_at: "2026-12-03T21:25:00Z".parse().unwrap(),
            previous_manifest_sha256: None,
            new_manifest_sha256: "00".into(),
            publisher_version: "0.1.0".into(),
        };
        assert_eq!(e.key().as_str(), "audit/20261126T212500.123Z-web-1-8.json");
        let back: AuditEntry = serde_json::from_slice(&e.to_bytes()).unwrap();
        assert_eq!(back, e);
    }
}
