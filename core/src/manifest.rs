//! `Manifest` v1: what one host should run, signed by the publisher.
//!
//! Stored at `hosts/<host>/manifest.json` as a DSSE envelope (see
//! [`crate::envelope`]) of payload type [`MANIFEST_PAYLOAD_TYPE`]. The payload is
//! JSON with exactly these fields (unknown fields are refused):
//!
//! ```json
//! {
//!   "version": 1,
//!   "host": "web-1",
//!   "sequence": 7,
//!   "closure": "/nix/store/aql5kla6x8r78rrdfyxr471hbn3himl6-nixos-system-web-1",
//!   "issued_at": "2026-11-26T21:25:00Z",
//!   "expires_at": "2026-12-03T21:25:00Z",
//!   "cache_keys": ["cache-1:1gNt8HOHaiR6hFh4EO+f8kqYbHrgsr3VqnaSTY/M3RI="],
//!   "activation": "switch"
//! }
//! ```
//!
//! Verification ([`Manifest::verify`]) follows The Update Framework's attack list:
//! size bound (endless data), trusted signature (arbitrary software), host name
//! (mix-and-match), sequence never below the highest seen and never reused for other
//! bytes (rollback and equivocation), expiry (freeze). Each failure is its own
//! [`ManifestError`] variant, and nothing of the payload is parsed before the
//! signature verifies.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::envelope::{self, EnvelopeError};
use crate::host::HostName;
use crate::keys::{PublicKey, SecretKey, TrustedKeys};
use crate::store_path::StorePath;

/// DSSE payload type of a manifest.
pub const MANIFEST_PAYLOAD_TYPE: &str = "application/vnd.fleet.manifest.v1+json";

/// Largest manifest object accepted, in bytes. A real one is well under 2 KiB.
pub const MAX_MANIFEST_SIZE: u64 = 64 * 1024;

/// How the agent activates the closure: the argument to `switch-to-configuration`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Activation {
    /// Make it the boot default and switch to it now.
    #[default]
    Switch,
    /// Make it the boot default; it runs after the next reboot.
    Boot,
    /// Switch to it now without making it the boot default.
    Test,
    /// A tombstone (`fleet-publish retire`): the host is retired and applies nothing
    /// from now on; `closure` is the last one it was given. The agent reports
    /// `retired`.
    Retire,
}

impl Activation {
    /// The `switch-to-configuration` argument.
    pub fn as_str(self) -> &'static str {
        match self {
            Activation::Switch => "switch",
            Activation::Boot => "boot",
            Activation::Test => "test",
            Activation::Retire => "retire",
        }
    }
}

impl std::fmt::Display for Activation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Activation {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "switch" => Ok(Activation::Switch),
            "boot" => Ok(Activation::Boot),
            "test" => Ok(Activation::Test),
            "retire" => Ok(Activation::Retire),
            _ => Err(format!(
                "activation mode {s:?} is not one of switch, boot, test, retire"
            )),
        }
    }
}

/// The manifest payload.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Format version; always 1 here.
    pub version: u32,
    /// The one host this manifest is for.
    pub host: HostName,
    /// Monotonic per host; an agent never accepts a lower one.
    pub sequence: u64,
    /// The system closure to run.
    pub closure: StorePath,
    /// When the publisher signed it.
    pub issued_at: Timestamp,
    /// After this instant agents refuse it (freeze-attack bound).
    pub expires_at: Timestamp,
    /// Cache keys whose narinfo signatures are accepted for this closure; the agent
    /// intersects them with its locally configured keys.
    pub cache_keys: Vec<PublicKey>,
    /// How to activate.
    pub activation: Activation,
    /// Not before this instant: the agent fetches the closure at once but activates
    /// it only from then on (fleet-wide scheduled changes). Absent: at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activate_after: Option<Timestamp>,
    /// Maintenance windows for this deploy (`"Mon-Fri 02:00-04:00"`, in the host's
    /// time zone), replacing the host's own `maintenance-windows`. Absent: the
    /// host's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maintenance_windows: Option<Vec<String>>,
}

/// What an agent remembers of the newest manifest it accepted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeenManifest {
    /// Its sequence number.
    pub sequence: u64,
    /// SHA-256 of its stored bytes, hex.
    pub digest: String,
}

/// What a manifest is checked against.
#[derive(Clone, Debug)]
pub struct VerifyPolicy<'a> {
    /// Publisher keys trusted to sign manifests.
    pub trusted: &'a TrustedKeys,
    /// The host doing the check; the manifest must name it.
    pub host: &'a HostName,
    /// The newest manifest accepted before, if any.
    pub highest_seen: Option<&'a SeenManifest>,
    /// The current time, or `None` to skip the expiry check (a publisher reading the
    /// previous manifest before replacing it).
    pub now: Option<Timestamp>,
}

/// A manifest whose signature and policy checks passed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedManifest {
    /// The payload.
    pub manifest: Manifest,
    /// Name of the publisher key that signed it.
    pub signed_by: String,
    /// SHA-256 of the stored object, hex (what [`SeenManifest::digest`] records).
    pub digest: String,
}

impl VerifiedManifest {
    /// What to remember so that older or conflicting manifests are refused later.
    pub fn seen(&self) -> SeenManifest {
        SeenManifest {
            sequence: self.manifest.sequence,
            digest: self.digest.clone(),
        }
    }
}

/// Why a manifest was refused. Each case is distinct so agents and dashboards can
/// tell an attack from a misconfiguration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    /// Larger than [`MAX_MANIFEST_SIZE`].
    #[error("manifest is {size} bytes, larger than the {limit}-byte bound; refusing to parse it")]
    TooLarge {
        /// Its size.
        size: u64,
        /// The bound.
        limit: u64,
    },
    /// Not a well-formed signed manifest (envelope or, after verification, payload).
    #[error("manifest is malformed: {0}")]
    Malformed(String),
    /// Not signed by any trusted publisher key.
    #[error(
        "manifest is signed by unknown key(s) {names:?}; this host trusts only {trusted:?} (add the publisher's public key to the trusted keys if it is legitimate)"
    )]
    UnknownKey {
        /// Key names in the envelope.
        names: Vec<String>,
        /// Key names trusted here.
        trusted: Vec<String>,
    },
    /// A trusted key's signature does not verify.
    #[error(
        "manifest signature by {key:?} does not verify: it was altered after signing or forged"
    )]
    BadSignature {
        /// The trusted key's name.
        key: String,
    },
    /// Signed for another host.
    #[error("manifest is for host `{found}`, not for this host `{expected}`")]
    WrongHost {
        /// This host.
        expected: HostName,
        /// The host it names.
        found: HostName,
    },
    /// A sequence number below one already accepted (rollback attack).
    #[error(
        "manifest sequence {found} is lower than {highest_seen}, already accepted here (rollback refused)"
    )]
    SequenceRollback {
        /// Its sequence.
        found: u64,
        /// The highest accepted before.
        highest_seen: u64,
    },
    /// The accepted sequence number with different bytes (equivocation).
    #[error(
        "manifest sequence {sequence} was already accepted with different content; a publisher never reuses a sequence number"
    )]
    SequenceReused {
        /// The sequence.
        sequence: u64,
    },
    /// Past its expiry (freeze attack, or the publisher stopped re-signing).
    #[error(
        "manifest expired at {expires_at} (now {now}); the publisher must re-sign it (fleet-publish deploy)"
    )]
    Expired {
        /// Its expiry.
        expires_at: Timestamp,
        /// The time of the check.
        now: Timestamp,
    },
    /// A format version this build does not know.
    #[error(
        "manifest has format version {0}; this build understands version 1 only (upgrade fleet)"
    )]
    UnsupportedVersion(u32),
    /// Signed by a publisher key of the root of trust whose scope leaves this host out.
    #[error(
        "manifest is signed by publisher key {key:?}, whose scope in root version {root_version} ({scope}) does not include host `{host}`; refused even though the bucket let it be written"
    )]
    OutOfScope {
        /// The signing key's name.
        key: String,
        /// This host.
        host: HostName,
        /// The key's scope, as text.
        scope: String,
        /// The root version that says so.
        root_version: u64,
    },
}

impl Manifest {
    /// Serialises and signs the manifest; returns the bytes to store.
    pub fn sign(&self, key: &SecretKey) -> Vec<u8> {
        let payload = serde_json::to_vec_pretty(self).expect("manifest serialises");
        envelope::seal(MANIFEST_PAYLOAD_TYPE, &payload, key)
    }

    /// Verifies stored manifest bytes against `policy`.
    pub fn verify(
        bytes: &[u8],
        policy: &VerifyPolicy<'_>,
    ) -> Result<VerifiedManifest, ManifestError> {
        let opened = envelope::open(
            bytes,
            MANIFEST_PAYLOAD_TYPE,
            policy.trusted,
            MAX_MANIFEST_SIZE,
        );
        Self::check_opened(bytes, opened, policy)
    }

    /// [`Manifest::verify`] for many manifests at once, with the same answers; the
    /// signatures are checked in one batch when every policy trusts the same key set
    /// ([`envelope::open_many`]). For a reader of a whole fleet's manifests.
    pub fn verify_many(
        items: &[(&[u8], VerifyPolicy<'_>)],
    ) -> Vec<Result<VerifiedManifest, ManifestError>> {
        let Some((_, first)) = items.first() else {
            return Vec::new();
        };
        if items.iter().any(|(_, p)| p.trusted != first.trusted) {
            return items.iter().map(|(b, p)| Self::verify(b, p)).collect();
        }
        let objects: Vec<&[u8]> = items.iter().map(|(b, _)| *b).collect();
        let opened = envelope::open_many(
            &objects,
            MANIFEST_PAYLOAD_TYPE,
            first.trusted,
            MAX_MANIFEST_SIZE,
        );
        items
            .iter()
            .zip(opened)
            .map(|((b, p), o)| Self::check_opened(b, o, p))
            .collect()
    }

    /// The checks after the signature's: payload, host, sequence, expiry.
    fn check_opened(
        bytes: &[u8],
        opened: Result<envelope::Opened, EnvelopeError>,
        policy: &VerifyPolicy<'_>,
    ) -> Result<VerifiedManifest, ManifestError> {
        let opened = opened.map_err(|e| match e {
            EnvelopeError::TooLarge { size, limit } => ManifestError::TooLarge { size, limit },
            EnvelopeError::Malformed(why) => ManifestError::Malformed(why),
            EnvelopeError::WrongType { found, .. } => ManifestError::Malformed(format!(
                "payload type is {found:?}, not {MANIFEST_PAYLOAD_TYPE:?}"
            )),
            EnvelopeError::UnknownKey { names } => ManifestError::UnknownKey {
                names,
                trusted: policy
                    .trusted
                    .keys()
                    .iter()
                    .map(|k| k.name().to_owned())
                    .collect(),
            },
            EnvelopeError::BadSignature { name } => ManifestError::BadSignature { key: name },
        })?;

        // Only now, with a verified signature, is the payload looked at.
        #[derive(Deserialize)]
        struct VersionOnly {
            version: u32,
        }
        let v: VersionOnly = serde_json::from_slice(&opened.payload)
            .map_err(|e| ManifestError::Malformed(format!("payload: {e}")))?;
        if v.version != 1 {
            return Err(ManifestError::UnsupportedVersion(v.version));
        }
        let manifest: Manifest = serde_json::from_slice(&opened.payload)
            .map_err(|e| ManifestError::Malformed(format!("payload: {e}")))?;
        if manifest.expires_at <= manifest.issued_at {
            return Err(ManifestError::Malformed(format!(
                "expires_at {} is not after issued_at {}",
                manifest.expires_at, manifest.issued_at
            )));
        }
        if &manifest.host != policy.host {
            return Err(ManifestError::WrongHost {
                expected: policy.host.clone(),
                found: manifest.host,
            });
        }
        let digest = hex::encode(Sha256::digest(bytes));
        if let Some(seen) = policy.highest_seen {
            if manifest.sequence < seen.sequence {
                return Err(ManifestError::SequenceRollback {
                    found: manifest.sequence,
                    highest_seen: seen.sequence,
                });
            }
            if manifest.sequence == seen.sequence && digest != seen.digest {
                return Err(ManifestError::SequenceReused {
                    sequence: manifest.sequence,
                });
            }
        }
        if let Some(now) = policy.now
            && now >= manifest.expires_at
        {
            return Err(ManifestError::Expired {
                expires_at: manifest.expires_at,
                now,
            });
        }
        Ok(VerifiedManifest {
            manifest,
            signed_by: opened.signed_by,
            digest,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fx {
        publisher: SecretKey,
        trusted: TrustedKeys,
        host: HostName,
        now: Timestamp,
    }

    fn fx() -> Fx {
        let publisher = SecretKey::generate("publisher-1").unwrap();
        Fx {
            trusted: TrustedKeys::new([publisher.public()]),
            publisher,
            host: HostName::new("web-1").unwrap(),
            now: "2026-11-26T12:00:00Z".parse().unwrap(),
        }
    }

    fn manifest(f: &Fx, seq: u64) -> Manifest {
        Manifest {
            version: 1,
            host: f.host.clone(),
            sequence: seq,
            closure: StorePath::new("/nix/store/aql5kla6x8r78rrdfyxr471hbn3himl6-top").unwrap(),
            issued_at: "2026-11-26T11:00:00Z".parse().unwrap(),
            expires_at: "2026-11-27T11:00:00Z".parse().unwrap(),
            cache_keys: vec![SecretKey::generate("cache-1").unwrap().public()],
            activation: Activation::Switch,
            activate_after: None,
            maintenance_windows: None,
        }
    }

    fn policy<'a>(f: &'a Fx, seen: Option<&'a SeenManifest>) -> VerifyPolicy<'a> {
        VerifyPolicy {
            trusted: &f.trusted,
            host: &f.host,
            highest_seen: seen,
            now: Some(f.now),
        }
    }

    #[test]
    fn a_good_manifest_verifies() {
        let f = fx();
        let m = manifest(&f, 3);
        let v = Manifest::verify(&m.sign(&f.publisher), &policy(&f, None)).unwrap();
        assert_eq!(v.manifest, m);
        assert_eq!(v.signed_by, "publisher-1");
        // The same bytes again are fine (a re-poll).
        let bytes = m.sign(&f.publisher);
        let v = Manifest::verify(&bytes, &policy(&f, None)).unwrap();
        Manifest::verify(&bytes, &policy(&f, Some(&v.seen()))).unwrap();
    }

    #[test]
    fn unknown_key() {
        let f = fx();
        let other = SecretKey::generate("mallory-1").unwrap();
        let err = Manifest::verify(&manifest(&f, 1).sign(&other), &policy(&f, None)).unwrap_err();
        assert!(matches!(&err, ManifestError::UnknownKey { names, .. } if names == &["mallory-1"]));
        assert!(err.to_string().contains("publisher-1"), "{err}");
    }

    #[test]
    fn bad_signature_from_a_key_reusing_a_trusted_name() {
        let f = fx();
        let impostor = SecretKey::generate("publisher-1").unwrap();
        let err =
            Manifest::verify(&manifest(&f, 1).sign(&impostor), &policy(&f, None)).unwrap_err();
        assert_eq!(
            err,
            ManifestError::BadSignature {
                key: "publisher-1".into()
            }
        );
    }

    #[test]
    fn bad_signature_after_payload_tampering() {
        use base64::Engine;
        let f = fx();
        let bytes = manifest(&f, 1).sign(&f.publisher);
        let mut env: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        let b64 = base64::engine::general_purpose::STANDARD;
        let payload = b64.decode(env["payload"].as_str().unwrap()).unwrap();
        let evil = String::from_utf8(payload)
            .unwrap()
            .replace("\"sequence\": 1", "\"sequence\": 9");
        env["payload"] = b64.encode(evil).into();
        let err =
            Manifest::verify(&serde_json::to_vec(&env).unwrap(), &policy(&f, None)).unwrap_err();
        assert!(matches!(err, ManifestError::BadSignature { .. }), "{err}");
    }

    #[test]
    fn wrong_host() {
        let f = fx();
        let mut m = manifest(&f, 1);
        m.host = HostName::new("web-2").unwrap();
        let err = Manifest::verify(&m.sign(&f.publisher), &policy(&f, None)).unwrap_err();
        assert!(matches!(err, ManifestError::WrongHost { .. }), "{err}");
        assert!(err.to_string().contains("web-2"));
    }

    #[test]
    fn lower_sequence_is_a_rollback() {
        let f = fx();
        let seen = SeenManifest {
            sequence: 5,
            digest: "x".into(),
        };
        let err = Manifest::verify(
            &manifest(&f, 4).sign(&f.publisher),
            &policy(&f, Some(&seen)),
        )
        .unwrap_err();
        assert_eq!(
            err,
            ManifestError::SequenceRollback {
                found: 4,
                highest_seen: 5
            }
        );
        // Higher is fine.
        Manifest::verify(
            &manifest(&f, 6).sign(&f.publisher),
            &policy(&f, Some(&seen)),
        )
        .unwrap();
    }

    #[test]
    fn same_sequence_other_content_is_refused() {
        let f = fx();
        let first =
            Manifest::verify(&manifest(&f, 5).sign(&f.publisher), &policy(&f, None)).unwrap();
        let mut m = manifest(&f, 5);
        m.activation = Activation::Boot;
        let seen = first.seen();
        let err = Manifest::verify(&m.sign(&f.publisher), &policy(&f, Some(&seen))).unwrap_err();
        assert_eq!(err, ManifestError::SequenceReused { sequence: 5 });
    }

    #[test]
    fn expired() {
        let mut f = fx();
        f.now = "2026-11-27T11:00:00Z".parse().unwrap();
        let err =
            Manifest::verify(&manifest(&f, 1).sign(&f.publisher), &policy(&f, None)).unwrap_err();
        assert!(matches!(err, ManifestError::Expired { .. }), "{err}");
        // A publisher reading the previous manifest skips the expiry check.
        let mut p = policy(&f, None);
        p.now = None;
        Manifest::verify(&manifest(&f, 1).sign(&f.publisher), &p).unwrap();
    }

    #[test]
    fn malformed_envelope_and_payload() {
        let f = fx();
        for junk in [&b"not json"[..], b"{}", b"{\"payloadType\":1}", b""] {
            let err = Manifest::verify(junk, &policy(&f, None)).unwrap_err();
            assert!(matches!(err, ManifestError::Malformed(_)), "{err}");
        }
        // A validly signed payload with an unknown field is refused, after the signature.
        let payload =
            serde_json::to_string(&manifest(&f, 1))
                .unwrap()
                .replacen('{', "{\"extra\":true,", 1);
        let bytes = envelope::seal(MANIFEST_PAYLOAD_TYPE, payload.as_bytes(), &f.publisher);
        let err = Manifest::verify(&bytes, &policy(&f, None)).unwrap_err();
        assert!(
            matches!(&err, ManifestError::Malformed(w) if w.contains("extra")),
            "{err}"
        );
        // A hostile host name inside a signed payload is still refused by parsing.
        let payload = serde_json::to_string(&manifest(&f, 1))
            .unwrap()
            .replace("\"web-1\"", "\"../web-1\"");
        let bytes = envelope::seal(MANIFEST_PAYLOAD_TYPE, payload.as_bytes(), &f.publisher);
        assert!(matches!(
            Manifest::verify(&bytes, &policy(&f, None)),
            Err(ManifestError::Malformed(_))
        ));
    }

    #[test]
    fn unsigned_payload_is_never_parsed() {
        // An envelope by an unknown key whose payload is garbage reports the key,
        // proving the payload was not looked at first.
        let f = fx();
        let other = SecretKey::generate("mallory-1").unwrap();
        let bytes = envelope::seal(MANIFEST_PAYLOAD_TYPE, b"\xff garbage", &other);
        assert!(matches!(
            Manifest::verify(&bytes, &policy(&f, None)),
            Err(ManifestError::UnknownKey { .. })
        ));
    }

    #[test]
    fn too_large() {
        let f = fx();
        let big = vec![b' '; MAX_MANIFEST_SIZE as usize + 1];
        assert_eq!(
            Manifest::verify(&big, &policy(&f, None)).unwrap_err(),
            ManifestError::TooLarge {
                size: MAX_MANIFEST_SIZE + 1,
                limit: MAX_MANIFEST_SIZE
            }
        );
    }

    #[test]
    fn unsupported_version() {
        let f = fx();
        let payload = serde_json::to_string(&manifest(&f, 1))
            .unwrap()
            .replace("\"version\":1", "\"version\":2");
        let bytes = envelope::seal(MANIFEST_PAYLOAD_TYPE, payload.as_bytes(), &f.publisher);
        assert_eq!(
            Manifest::verify(&bytes, &policy(&f, None)).unwrap_err(),
            ManifestError::UnsupportedVersion(2)
        );
    }

    #[test]
    fn release_envelopes_cannot_pose_as_manifests() {
        let f = fx();
        let payload = serde_json::to_vec(&manifest(&f, 1)).unwrap();
        let bytes = envelope::seal(
            "application/vnd.fleet.release.v1+json",
            &payload,
            &f.publisher,
        );
        assert!(matches!(
            Manifest::verify(&bytes, &policy(&f, None)),
            Err(ManifestError::Malformed(w)) if w.contains("payload type")
        ));
    }

    #[test]
    fn verify_many_answers_as_verify_does_for_each() {
        let f = fx();
        let other = fx();
        let mut objects: Vec<Vec<u8>> = (1..=20)
            .map(|i| manifest(&f, i).sign(&f.publisher))
            .collect();
        // Another host's manifest, a foreign key's, an expired one, a tampered one.
        let mut m = manifest(&f, 30);
        m.host = HostName::new("web-2").unwrap();
        objects.push(m.sign(&f.publisher));
        objects.push(manifest(&f, 31).sign(&other.publisher));
        let mut m = manifest(&f, 32);
        m.expires_at = "2026-11-26T11:30:00Z".parse().unwrap();
        objects.push(m.sign(&f.publisher));
        let tampered = String::from_utf8(objects[0].clone()).unwrap().replacen(
            "\"payload\":\"",
            "\"payload\":\"IA",
            1,
        );
        objects.push(tampered.into_bytes());
        let seen = SeenManifest {
            sequence: 5,
            digest: "00".repeat(32),
        };
        for policies in [
            // One trusted set for all (one batch), and two sets (one by one).
            objects
                .iter()
                .map(|_| policy(&f, Some(&seen)))
                .collect::<Vec<_>>(),
            objects
                .iter()
                .enumerate()
                .map(|(i, _)| {
                    if i == 7 {
                        policy(&other, None)
                    } else {
                        policy(&f, None)
                    }
                })
                .collect(),
        ] {
            let items: Vec<(&[u8], VerifyPolicy<'_>)> =
                objects.iter().map(Vec::as_slice).zip(policies).collect();
            let many = Manifest::verify_many(&items);
            assert_eq!(many.len(), items.len());
            for ((b, p), m) in items.iter().zip(&many) {
                assert_eq!(&Manifest::verify(b, p), m);
            }
            assert!(many.iter().filter(|m| m.is_ok()).count() >= 14, "{many:?}");
        }
        assert!(Manifest::verify_many(&[]).is_empty());
    }
}
