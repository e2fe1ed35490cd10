//! Enrollment requests: what `fleet-agent init` prints on a new host and
//! `fleet-publish enroll` reads.
//!
//! A request is a DSSE envelope ([`crate::envelope`]) of payload type
//! [`ENROLLMENT_REQUEST_PAYLOAD_TYPE`], signed by the very identity key it carries
//! (self-signed: it proves the host holds the secret half, nothing more; the admin
//! who runs `enroll` decides whether to believe the host is who it says). The
//! payload:
//!
//! ```json
//! {
//!   "version": 1,
//!   "host": "web-1",
//!   "identity_key": "web-1-identity:<base64 of 32 bytes>",
//!   "labels": {"role": "web"},
//!   "facts": {"nixos_version": "24.05", "kernel": "6.6.30", "uptime_seconds": null,
//!             "boot_id": null, "reboot_needed": null},
//!   "time": "2026-11-26T21:25:00Z"
//! }
//! ```
//!
//! The identity key is named [`identity_key_name`] (`<host>-identity`), so the name
//! in a status signature says which host it claims to be.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::envelope::{self, EnvelopeError};
use crate::host::HostName;
use crate::keys::{PublicKey, SecretKey, TrustedKeys};
use crate::registry::{Labels, check_labels};
use crate::status::Facts;

/// DSSE payload type of an enrollment request.
pub const ENROLLMENT_REQUEST_PAYLOAD_TYPE: &str =
    "application/vnd.fleet.enrollment-request.v1+json";
/// Largest request accepted.
pub const MAX_REQUEST_SIZE: u64 = 16 * 1024;

/// The name of `host`'s identity key.
pub fn identity_key_name(host: &HostName) -> String {
    format!("{host}-identity")
}

/// An enrollment request's payload.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrollmentRequest {
    /// Format version; 1.
    pub version: u32,
    /// The host name it asks for.
    pub host: HostName,
    /// The host's identity key (which signed the request).
    pub identity_key: PublicKey,
    /// Labels the host asks to be registered with.
    pub labels: Labels,
    /// Facts about the host when the request was made.
    pub facts: Facts,
    /// When it was made.
    pub time: Timestamp,
}

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnrollmentError {
    /// Not a well-formed request.
    #[error("the enrollment request is malformed: {0}")]
    Malformed(String),
    /// Its signature is not by the key it carries.
    #[error("the enrollment request's signature does not verify with the key it carries: {0}")]
    Envelope(EnvelopeError),
}

impl EnrollmentRequest {
    /// Signs the request with the identity key it carries; returns the envelope.
    pub fn sign(&self, identity: &SecretKey) -> Vec<u8> {
        let payload = serde_json::to_vec_pretty(self).expect("request serialises");
        envelope::seal(ENROLLMENT_REQUEST_PAYLOAD_TYPE, &payload, identity)
    }

    /// Checks size, form and the self-signature, and returns the request.
    pub fn open(bytes: &[u8]) -> Result<Self, EnrollmentError> {
        let bad = |why: String| EnrollmentError::Malformed(why);
        if bytes.len() as u64 > MAX_REQUEST_SIZE {
            return Err(bad(format!(
                "it is {} bytes, larger than {MAX_REQUEST_SIZE}",
                bytes.len()
            )));
        }
        // The key to check the signature with is inside what it signs: read only that
        // field first, then let the envelope check the signature before anything else
        // of the payload is used.
        #[derive(Deserialize)]
        struct Peek {
            payload: String,
        }
        #[derive(Deserialize)]
        struct KeyOnly {
            identity_key: String,
        }
        let peek: Peek = serde_json::from_slice(bytes)
            .map_err(|e| bad(format!("not a signed envelope: {e}")))?;
        let payload = B64
            .decode(peek.payload)
            .map_err(|e| bad(format!("payload is not base64: {e}")))?;
        let claimed: KeyOnly =
            serde_json::from_slice(&payload).map_err(|e| bad(format!("no identity_key: {e}")))?;
        let key = PublicKey::parse(&claimed.identity_key, "identity_key")
            .map_err(|e| bad(e.to_string()))?;
        let opened = envelope::open(
            bytes,
            ENROLLMENT_REQUEST_PAYLOAD_TYPE,
            &TrustedKeys::new([key.clone()]),
            MAX_REQUEST_SIZE,
        )
        .map_err(EnrollmentError::Envelope)?;
        let req: EnrollmentRequest =
            serde_json::from_slice(&opened.payload).map_err(|e| bad(e.to_string()))?;
        if req.version != 1 {
            return Err(bad(format!(
                "format version {} is not 1 (upgrade fleet)",
                req.version
            )));
        }
        if req.identity_key != key {
            return Err(bad("identity_key changed between reads".into()));
        }
        let want = identity_key_name(&req.host);
        if key.name() != want {
            return Err(bad(format!(
                "the identity key is named {:?}; host {}'s must be named {want:?}",
                key.name(),
                req.host
            )));
        }
        check_labels(&req.labels).map_err(bad)?;
        Ok(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(key: &SecretKey) -> EnrollmentRequest {
        EnrollmentRequest {
            version: 1,
            host: HostName::new("web-1").unwrap(),
            identity_key: key.public(),
            labels: Labels::from([("role".into(), "web".into())]),
            facts: Facts::default(),
            time: "2026-11-26T21:25:00Z".parse().unwrap(),
        }
    }

    #[test]
    fn a_self_signed_request_opens() {
        let k = SecretKey::generate("web-1-identity").unwrap();
        let r = request(&k);
        assert_eq!(EnrollmentRequest::open(&r.sign(&k)).unwrap(), r);
    }

    #[test]
    fn a_request_signed_by_another_key_or_misnamed_is_refused() {
        let k = SecretKey::generate("web-1-identity").unwrap();
        let other = SecretKey::generate("web-1-identity").unwrap();
        let e = EnrollmentRequest::open(&request(&k).sign(&other)).unwrap_err();
        assert!(matches!(e, EnrollmentError::Envelope(_)), "{e}");
        let misnamed = SecretKey::generate("web-2-identity").unwrap();
        let e = EnrollmentRequest::open(&request(&misnamed).sign(&misnamed)).unwrap_err();
        assert!(e.to_string().contains("web-1-identity"), "{e}");
        assert!(EnrollmentRequest::open(b"{}").is_err());
    }
}
