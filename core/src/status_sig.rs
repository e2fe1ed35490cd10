//! Signed status reports: an agent signs what it reports with its host's identity
//! key, so a reader can tell the host's own word from a status written by anyone
//! else who can write to the bucket.
//!
//! The signature travels inside `status.json` itself, as its last field (the file
//! stays the readable report of [`crate::status`]):
//!
//! ```json
//! "signature": {"keyid": "web-1-identity", "sig": "<base64 of 64 bytes>"}
//! ```
//!
//! It is ed25519 over DSSE's pre-authentication encoding
//! (`crate::envelope`) of payload type [`STATUS_PAYLOAD_TYPE`] and a payload that is
//! the report *without* its `signature` field, serialised by `serde_json` as compact
//! JSON in the struct's field order. A reader re-encodes the report it parsed the
//! same way: both sides use fleet-core's one [`StatusReport`] type, and parsing is
//! strict (unknown fields refused), so the bytes re-made are the bytes signed.
//!
//! The key that must have signed comes from the host's entry in the signed host
//! registry (`crate::registry`); events under `status/<host>/events/` carry a
//! signature the same way.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;

use crate::envelope::pae;
use crate::keys::{PublicKey, SecretKey, Signature};
use crate::status::{StatusReport, StatusSignature};

/// DSSE payload type bound into a status signature.
pub const STATUS_PAYLOAD_TYPE: &str = "application/vnd.fleet.status.v1+json";

/// Why a report's signature is not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StatusSigError {
    /// The report carries no signature although its host is enrolled.
    #[error(
        "the status is not signed, but the host is enrolled with identity key {expected:?}: it was written by something other than the host's agent (or by an agent started without its identity key)"
    )]
    Unsigned {
        /// The enrolled key's name.
        expected: String,
    },
    /// Signed by a key other than the enrolled one.
    #[error(
        "the status is signed by key {found:?}, not by the host's enrolled identity key {expected:?}"
    )]
    WrongKey {
        /// The key name in the signature.
        found: String,
        /// The enrolled key's name.
        expected: String,
    },
    /// The signature does not verify.
    #[error(
        "the status signature by {name:?} does not verify: the report was changed after the host signed it, or the signature was forged"
    )]
    BadSignature {
        /// The key name.
        name: String,
    },
}

/// The bytes a status signature covers.
fn message(report: &StatusReport) -> Vec<u8> {
    let mut unsigned = report.clone();
    unsigned.signature = None;
    let payload = serde_json::to_vec(&unsigned).expect("status serialises");
    pae(STATUS_PAYLOAD_TYPE, &payload)
}

/// Signs `report` with the identity `key`, replacing any signature it had.
pub fn sign(report: &mut StatusReport, key: &SecretKey) {
    let sig = key.sign(&message(report));
    report.signature = Some(Box::new(StatusSignature {
        keyid: sig.key_name,
        sig: B64.encode(sig.bytes),
    }));
}

/// Checks that `report` is signed by `identity`, the host's enrolled key.
pub fn verify(report: &StatusReport, identity: &PublicKey) -> Result<(), StatusSigError> {
    let Some(s) = &report.signature else {
        return Err(StatusSigError::Unsigned {
            expected: identity.name().to_owned(),
        });
    };
    if s.keyid != identity.name() {
        return Err(StatusSigError::WrongKey {
            found: s.keyid.chars().take(128).collect(),
            expected: identity.name().to_owned(),
        });
    }
    let ok = B64
        .decode(&s.sig)
        .ok()
        .and_then(|b| <[u8; 64]>::try_from(b).ok())
        .is_some_and(|bytes| {
            identity.verify(
                &message(report),
                &Signature {
                    key_name: s.keyid.clone(),
                    bytes,
                },
            )
        });
    if ok {
        Ok(())
    } else {
        Err(StatusSigError::BadSignature {
            name: s.keyid.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::HostName;
    use crate::status::{AgentState, Facts};

    fn report() -> StatusReport {
        StatusReport {
            version: 1,
            host: HostName::new("web-1").unwrap(),
            agent_version: "0.1.0".into(),
            state: AgentState::Healthy,
            desired: None,
            current: None,
            last_error: None,
            facts: Facts::default(),
            time: "2026-11-26T21:25:00.123456789Z".parse().unwrap(),
            signature: None,
            pause: None,
        }
    }

    #[test]
    fn a_signed_report_verifies_after_a_round_trip_through_its_bytes() {
        let k = SecretKey::generate("web-1-identity").unwrap();
        let mut r = report();
        sign(&mut r, &k);
        let host = HostName::new("web-1").unwrap();
        let back = StatusReport::parse(&r.to_bytes(), "status/web-1/status.json", &host).unwrap();
        verify(&back, &k.public()).unwrap();
    }

    #[test]
    fn unsigned_other_key_and_changed_reports_are_refused() {
        let k = SecretKey::generate("web-1-identity").unwrap();
        assert!(matches!(
            verify(&report(), &k.public()),
            Err(StatusSigError::Unsigned { .. })
        ));
        // Another key, even under the enrolled key's name.
        let other = SecretKey::generate("web-1-identity").unwrap();
        let mut r = report();
        sign(&mut r, &other);
        assert!(matches!(
            verify(&r, &k.public()),
            Err(StatusSigError::BadSignature { .. })
        ));
        let mut r = report();
        sign(&mut r, &SecretKey::generate("attacker").unwrap());
        assert!(matches!(
            verify(&r, &k.public()),
            Err(StatusSigError::WrongKey { .. })
        ));
        // The host's own signature, on a report changed afterwards.
        let mut r = report();
        sign(&mut r, &k);
        r.state = AgentState::Failed;
        assert!(matches!(
            verify(&r, &k.public()),
            Err(StatusSigError::BadSignature { .. })
        ));
    }
}
