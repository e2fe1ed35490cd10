//! The signed host registry: which identity key speaks for which host.
//!
//! One object per enrolled host at `registry/hosts/<host>.json`
//! ([`crate::layout::Key::registry_host`]), written by `fleet-publish enroll` as a
//! DSSE envelope ([`crate::envelope`]) of payload type [`HOST_ENTRY_PAYLOAD_TYPE`],
//! signed by an admin (publisher) key. The payload:
//!
//! ```json
//! {
//!   "version": 1,
//!   "host": "web-1",
//!   "identity_key": "web-1-identity:<base64 of 32 bytes>",
//!   "labels": {"role": "web"},
//!   "enrolled_at": "2026-11-26T21:25:00Z"
//! }
//! ```
//!
//! The reporter reads it to check that a host's status is signed by that host's
//! identity key (`crate::status_sig`); a host without an entry (a set-up from before
//! enrollment) is shown as unverified, not as an error. Agents never read it.

use std::collections::BTreeMap;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::envelope::{self, EnvelopeError};
use crate::host::HostName;
use crate::keys::{PublicKey, SecretKey, TrustedKeys};

/// DSSE payload type of a registry entry.
pub const HOST_ENTRY_PAYLOAD_TYPE: &str = "application/vnd.fleet.host.v1+json";
/// Largest registry entry accepted.
pub const MAX_HOST_ENTRY_SIZE: u64 = 16 * 1024;
/// Most labels a host may carry.
pub const MAX_LABELS: usize = 32;
/// Longest label name.
pub const MAX_LABEL_NAME_LEN: usize = 63;
/// Longest label value.
pub const MAX_LABEL_VALUE_LEN: usize = 256;

/// Labels of a host (`role = web`, `site = fra1`): facts an admin can select hosts by.
pub type Labels = BTreeMap<String, String>;

/// Checks labels against the bounds: at most [`MAX_LABELS`]; names of 1 to 63
/// characters of `A-Z a-z 0-9 . _ - /`; values of at most 256 printable characters.
pub fn check_labels(labels: &Labels) -> Result<(), String> {
    if labels.len() > MAX_LABELS {
        return Err(format!("{} labels, more than {MAX_LABELS}", labels.len()));
    }
    for (k, v) in labels {
        let name_ok = !k.is_empty()
            && k.len() <= MAX_LABEL_NAME_LEN
            && k.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'/'));
        if !name_ok {
            return Err(format!(
                "label name {:?} is not 1 to {MAX_LABEL_NAME_LEN} characters of A-Z a-z 0-9 . _ - /",
                k.chars().take(80).collect::<String>()
            ));
        }
        if v.len() > MAX_LABEL_VALUE_LEN || v.chars().any(char::is_control) {
            return Err(format!(
                "label {k}'s value is longer than {MAX_LABEL_VALUE_LEN} bytes or holds control characters"
            ));
        }
    }
    Ok(())
}

/// One host's registry entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostEntry {
    /// Format version; 1.
    pub version: u32,
    /// The host.
    pub host: HostName,
    /// The host's identity key: it signs the host's status reports.
    pub identity_key: PublicKey,
    /// The host's labels.
    pub labels: Labels,
    /// When the host was enrolled.
    pub enrolled_at: Timestamp,
}

/// A registry entry that verified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedHostEntry {
    /// The payload.
    pub entry: HostEntry,
    /// The admin key that signed it.
    pub signed_by: String,
}

/// Why a registry entry cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    /// Its envelope does not verify.
    #[error("the registry entry of {host} does not verify: {error}")]
    Envelope {
        /// The host whose key was read.
        host: HostName,
        /// The envelope's error.
        error: EnvelopeError,
    },
    /// Its payload is not a registry entry for that host.
    #[error("the registry entry of {host} is malformed: {why}")]
    Malformed {
        /// The host whose key was read.
        host: HostName,
        /// What is wrong.
        why: String,
    },
}

impl HostEntry {
    /// Signs the entry with an admin key; returns the stored bytes.
    pub fn sign(&self, key: &SecretKey) -> Vec<u8> {
        let payload = serde_json::to_vec_pretty(self).expect("registry entry serialises");
        envelope::seal(HOST_ENTRY_PAYLOAD_TYPE, &payload, key)
    }

    /// Verifies the entry read from `host`'s key against the `trusted` admin keys.
    pub fn verify(
        bytes: &[u8],
        host: &HostName,
        trusted: &TrustedKeys,
    ) -> Result<VerifiedHostEntry, RegistryError> {
        let opened = envelope::open(bytes, HOST_ENTRY_PAYLOAD_TYPE, trusted, MAX_HOST_ENTRY_SIZE)
            .map_err(|error| RegistryError::Envelope {
            host: host.clone(),
            error,
        })?;
        let malformed = |why: String| RegistryError::Malformed {
            host: host.clone(),
            why,
        };
        let entry: HostEntry =
            serde_json::from_slice(&opened.payload).map_err(|e| malformed(e.to_string()))?;
        if entry.version != 1 {
            return Err(malformed(format!(
                "format version {} is not 1 (upgrade fleet)",
                entry.version
            )));
        }
        if &entry.host != host {
            return Err(malformed(format!(
                "it names host {}, not the host whose key it was read from",
                entry.host
            )));
        }
        check_labels(&entry.labels).map_err(malformed)?;
        Ok(VerifiedHostEntry {
            entry,
            signed_by: opened.signed_by,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> HostEntry {
        HostEntry {
            version: 1,
            host: HostName::new("web-1").unwrap(),
            identity_key: SecretKey::generate("web-1-identity").unwrap().public(),
            labels: Labels::from([("role".into(), "web".into())]),
            enrolled_at: "2026-11-26T21:25:00Z".parse().unwrap(),
        }
    }

    #[test]
    fn signed_entries_verify_for_their_host_only() {
        let admin = SecretKey::generate("admin-1").unwrap();
        let trusted = TrustedKeys::new([admin.public()]);
        let bytes = entry().sign(&admin);
        let v = HostEntry::verify(&bytes, &HostName::new("web-1").unwrap(), &trusted).unwrap();
        assert_eq!(v.entry, entry_with_key(&v.entry.identity_key));
        assert_eq!(v.signed_by, "admin-1");
        assert!(matches!(
            HostEntry::verify(&bytes, &HostName::new("web-2").unwrap(), &trusted),
            Err(RegistryError::Malformed { .. })
        ));
        let stranger = TrustedKeys::new([SecretKey::generate("x").unwrap().public()]);
        assert!(matches!(
            HostEntry::verify(&bytes, &HostName::new("web-1").unwrap(), &stranger),
            Err(RegistryError::Envelope { .. })
        ));
    }

    fn entry_with_key(k: &PublicKey) -> HostEntry {
        HostEntry {
            identity_key: k.clone(),
            ..entry()
        }
    }

    #[test]
    fn labels_are_bounded() {
        assert!(check_labels(&Labels::from([("a/b.c".into(), "x y".into())])).is_ok());
        for (k, v) in [("", "x"), ("a b", "x"), ("a", "x\ny")] {
            assert!(check_labels(&Labels::from([(k.into(), v.into())])).is_err());
        }
        let many: Labels = (0..=MAX_LABELS)
            .map(|i| (format!("l{i}"), String::new()))
            .collect();
        assert!(check_labels(&many).is_err());
    }
}
