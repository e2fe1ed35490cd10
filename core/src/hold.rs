//! Holds: a signed word from an operator that a host must not be changed.
//!
//! Stored at `hosts/<host>/hold.json` ([`crate::layout::Key::hold`]) as a DSSE
//! envelope ([`crate::envelope`]) of payload type [`HOLD_PAYLOAD_TYPE`], signed with
//! a publisher key. The payload:
//!
//! ```json
//! {
//!   "version": 1,
//!   "host": "web-1",
//!   "held": true,
//!   "reason": "disk replacement until Friday",
//!   "time": "2026-11-26T21:25:00Z"
//! }
//! ```
//!
//! `unhold` writes the same object with `"held": false` (publishers may write but not
//! delete), so the last word is always signed. The publisher honours it: `deploy` and
//! `rollback` skip a held host unless `--force`; `renew` renews it anyway (renewing
//! keeps what it runs). Agents never read it: a hold is a rule for publishers, and
//! the manifest stays the only thing a host obeys.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::envelope::{self, EnvelopeError};
use crate::host::HostName;
use crate::keys::{SecretKey, TrustedKeys};

/// DSSE payload type of a hold.
pub const HOLD_PAYLOAD_TYPE: &str = "application/vnd.fleet.hold.v1+json";
/// Largest hold object accepted.
pub const MAX_HOLD_SIZE: u64 = 16 * 1024;
/// Longest reason accepted, in bytes.
pub const MAX_REASON_LEN: usize = 1000;

/// One host's hold (or its release).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hold {
    /// Format version; 1.
    pub version: u32,
    /// The host.
    pub host: HostName,
    /// Whether the host is held (`false`: released by `unhold`).
    pub held: bool,
    /// Why, in the operator's words.
    pub reason: String,
    /// When it was signed.
    pub time: Timestamp,
}

/// Why a hold object cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum HoldError {
    /// Its envelope does not verify.
    #[error("the hold of {host} does not verify: {error}")]
    Envelope {
        /// The host whose key was read.
        host: HostName,
        /// The envelope's error.
        error: EnvelopeError,
    },
    /// Its payload is not a hold.
    #[error("the hold of {host} is malformed: {why}")]
    Malformed {
        /// The host whose key was read.
        host: HostName,
        /// What is wrong.
        why: String,
    },
}

/// A hold that verified.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct VerifiedHold {
    /// The payload.
    pub hold: Hold,
    /// The publisher key that signed it.
    pub signed_by: String,
}

impl Hold {
    /// Serialises and signs the hold; returns the bytes to store.
    pub fn sign(&self, key: &SecretKey) -> Vec<u8> {
        let payload = serde_json::to_vec_pretty(self).expect("hold serialises");
        envelope::seal(HOLD_PAYLOAD_TYPE, &payload, key)
    }

    /// Verifies stored hold bytes read from `host`'s key, signed by a key of `trusted`.
    pub fn verify(
        bytes: &[u8],
        host: &HostName,
        trusted: &TrustedKeys,
    ) -> Result<VerifiedHold, HoldError> {
        let opened =
            envelope::open(bytes, HOLD_PAYLOAD_TYPE, trusted, MAX_HOLD_SIZE).map_err(|error| {
                HoldError::Envelope {
                    host: host.clone(),
                    error,
                }
            })?;
        let malformed = |why: String| HoldError::Malformed {
            host: host.clone(),
            why,
        };
        let hold: Hold = serde_json::from_slice(&opened.payload)
            .map_err(|e| malformed(format!("payload: {e}")))?;
        if hold.version != 1 {
            return Err(malformed(format!("unsupported version {}", hold.version)));
        }
        if &hold.host != host {
            return Err(malformed(format!("it names host {}", hold.host)));
        }
        if hold.reason.len() > MAX_REASON_LEN {
            return Err(malformed(format!(
                "its reason is longer than {MAX_REASON_LEN} bytes"
            )));
        }
        Ok(VerifiedHold {
            hold,
            signed_by: opened.signed_by,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_verify_for_their_host_and_key_only() {
        let key = SecretKey::generate("publisher-1").unwrap();
        let other = SecretKey::generate("publisher-2").unwrap();
        let web = HostName::new("web-1").unwrap();
        let hold = Hold {
            version: 1,
            host: web.clone(),
            held: true,
            reason: "disk swap".into(),
            time: "2026-11-26T21:25:00Z".parse().unwrap(),
        };
        let bytes = hold.sign(&key);
        let trusted = TrustedKeys::new([key.public()]);
        let v = Hold::verify(&bytes, &web, &trusted).unwrap();
        assert_eq!(
            (v.hold, v.signed_by.as_str()),
            (hold.clone(), "publisher-1")
        );
        let db = HostName::new("db-1").unwrap();
        assert!(
            Hold::verify(&bytes, &db, &trusted)
                .unwrap_err()
                .to_string()
                .contains("names host web-1")
        );
        let e = Hold::verify(&bytes, &web, &TrustedKeys::new([other.public()])).unwrap_err();
        assert!(e.to_string().contains("does not verify"), "{e}");
        // A manifest's envelope is not a hold.
        let m = envelope::seal("application/vnd.fleet.manifest.v1+json", b"{}", &key);
        assert!(Hold::verify(&m, &web, &trusted).is_err());
    }
}
