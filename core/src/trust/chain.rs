//! TUF's root rule: how a host comes to trust a root version, and moves on.
//!
//! - **First version** ([`TrustedRoot::bootstrap`]): the host pins root key(s) and a
//!   version N. Root N is trusted when at least its threshold of valid signatures
//!   are by keys that are both pinned and among its own root keys.
//! - **Next version** ([`TrustedRoot::next`]): from a trusted version N, version
//!   N+1 is trusted when a threshold of N's root keys (N's threshold) signed it,
//!   a threshold of its own root keys (its threshold) signed it, and its version
//!   is exactly N+1. Anything lower is a rollback; a host walks every version in
//!   between, never skipping one, so a key removed at N+1 can never sign N+2.
//! - **Freshness** ([`TrustedRoot::check_fresh`]): the newest trusted version must
//!   not be past `expires_at` by more than [`CLOCK_TOLERANCE`] (a freeze attack,
//!   or the root key holders forgot to renew). Versions walked through on the way
//!   may be expired: only the newest one speaks for now.
//!
//! The signatures are checked before anything of the payload is acted on; the
//! payload is parsed strictly ([`super::Root`], unknown fields refused) and
//! checked by [`super::Root::validate`].

use std::collections::BTreeSet;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use jiff::Timestamp;
use sha2::{Digest, Sha256};

use super::{MAX_ROOT_SIZE, ROOT_PAYLOAD_TYPE, Root, TrustError};
use crate::envelope::{self, EnvelopeError, Signed};
use crate::host::HostName;
use crate::keys::TrustedKeys;
use crate::manifest::{
    MANIFEST_PAYLOAD_TYPE, MAX_MANIFEST_SIZE, Manifest, ManifestError, SeenManifest,
    VerifiedManifest, VerifyPolicy,
};

/// How far past `expires_at` a root is still accepted: hosts' clocks drift, and a
/// root that expires a few seconds early on one host should not stop its deploys.
/// Five minutes is far below any sensible root lifetime (months).
pub const CLOCK_TOLERANCE: Duration = Duration::from_secs(300);

/// A root version whose signatures passed the rule of this module.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrustedRoot {
    root: Root,
    bytes: Vec<u8>,
}

fn envelope_error(what: &str, e: EnvelopeError) -> TrustError {
    match e {
        EnvelopeError::TooLarge { size, limit } => TrustError::TooLarge {
            what: what.to_owned(),
            size,
            limit,
        },
        other => TrustError::Malformed {
            what: what.to_owned(),
            why: other.to_string(),
        },
    }
}

fn signed_by(bytes: &[u8], what: &str, keys: &TrustedKeys) -> Result<Signed, TrustError> {
    envelope::signers(bytes, ROOT_PAYLOAD_TYPE, keys, MAX_ROOT_SIZE)
        .map_err(|e| envelope_error(what, e))
}

/// Refuses unless `threshold` of `keys` are among `signed.signers`.
fn enough(
    signed: &Signed,
    keys: &TrustedKeys,
    threshold: u32,
    by: &str,
    what: &str,
) -> Result<(), TrustError> {
    let counted: Vec<String> = signed
        .signers
        .iter()
        .filter(|n| keys.knows(n))
        .cloned()
        .collect();
    if counted.len() < threshold as usize {
        return Err(TrustError::BelowThreshold {
            what: what.to_owned(),
            signed: counted,
            needed: threshold,
            by: by.to_owned(),
            keys: keys.keys().iter().map(|k| k.name().to_owned()).collect(),
            keyids: signed.keyids.clone(),
        });
    }
    Ok(())
}

fn parse(payload: &[u8], what: &str) -> Result<Root, TrustError> {
    #[derive(serde::Deserialize)]
    struct FormatOnly {
        format: u32,
    }
    let bad = |e: serde_json::Error| TrustError::Malformed {
        what: what.to_owned(),
        why: format!("payload: {e}"),
    };
    let f: FormatOnly = serde_json::from_slice(payload).map_err(bad)?;
    if f.format != super::ROOT_FORMAT {
        return Err(TrustError::UnsupportedFormat {
            what: what.to_owned(),
            found: f.format,
        });
    }
    let root: Root = serde_json::from_slice(payload).map_err(bad)?;
    root.validate(what)?;
    Ok(root)
}

impl TrustedRoot {
    /// Trusts root `bytes` of version `version` on the strength of the pinned
    /// `pinned` keys (see the module docs); `what` names the object in errors.
    pub fn bootstrap(
        bytes: &[u8],
        what: &str,
        pinned: &TrustedKeys,
        version: u64,
    ) -> Result<Self, TrustError> {
        let by_pinned = signed_by(bytes, what, pinned)?;
        // Without one valid pinned signature nothing of the payload is looked at.
        if by_pinned.signers.is_empty() {
            return Err(TrustError::BelowThreshold {
                what: what.to_owned(),
                signed: Vec::new(),
                needed: 1,
                by: "the pinned".into(),
                keys: pinned.keys().iter().map(|k| k.name().to_owned()).collect(),
                keyids: by_pinned.keyids,
            });
        }
        let root = parse(&by_pinned.payload, what)?;
        if root.version != version {
            return Err(TrustError::WrongVersion {
                what: what.to_owned(),
                expected: version,
                found: root.version,
            });
        }
        // Only keys both pinned and the root's own count.
        let both = TrustedKeys::new(
            pinned
                .keys()
                .iter()
                .filter(|k| root.root_keys.contains(k))
                .cloned(),
        );
        enough(&by_pinned, &both, root.threshold, "the pinned", what)?;
        Ok(Self {
            root,
            bytes: bytes.to_vec(),
        })
    }

    /// Trusts root `bytes` as the version after this one, by TUF's rule.
    pub fn next(&self, bytes: &[u8], what: &str) -> Result<Self, TrustError> {
        let old_keys = self.root.root_key_set();
        let by_old = signed_by(bytes, what, &old_keys)?;
        let by = format!("version {}'s", self.root.version);
        enough(&by_old, &old_keys, self.root.threshold, &by, what)?;
        let root = parse(&by_old.payload, what)?;
        let expected = self.root.version + 1;
        if root.version <= self.root.version {
            return Err(TrustError::Rollback {
                what: what.to_owned(),
                found: root.version,
                trusted: self.root.version,
            });
        }
        if root.version != expected {
            return Err(TrustError::WrongVersion {
                what: what.to_owned(),
                expected,
                found: root.version,
            });
        }
        Self::signed_by_own(root, bytes, what)
    }

    /// `root` (parsed from `bytes`) when a threshold of its own root keys signed it.
    fn signed_by_own(root: Root, bytes: &[u8], what: &str) -> Result<Self, TrustError> {
        let own = root.root_key_set();
        let by_own = signed_by(bytes, what, &own)?;
        enough(&by_own, &own, root.threshold, "its own", what)?;
        Ok(Self {
            root,
            bytes: bytes.to_vec(),
        })
    }

    /// Re-reads a root this host verified before and stored locally: its own
    /// threshold must still sign it (a check against a damaged file, not a trust
    /// decision: the state directory is the host's own).
    pub fn reload(bytes: &[u8], what: &str) -> Result<Self, TrustError> {
        let any = signed_by(bytes, what, &TrustedKeys::default())?;
        let root = parse(&any.payload, what)?;
        Self::signed_by_own(root, bytes, what)
    }

    /// Refuses the root when it is past `expires_at` plus [`CLOCK_TOLERANCE`].
    pub fn check_fresh(&self, now: Timestamp) -> Result<(), TrustError> {
        let tolerance = jiff::SignedDuration::try_from(CLOCK_TOLERANCE).expect("small");
        let limit = self
            .root
            .expires_at
            .checked_add(tolerance)
            .unwrap_or(self.root.expires_at);
        if now > limit {
            return Err(TrustError::Expired {
                version: self.root.version,
                expires_at: self.root.expires_at,
                now,
                tolerance_secs: CLOCK_TOLERANCE.as_secs(),
            });
        }
        Ok(())
    }

    /// The root.
    pub fn root(&self) -> &Root {
        &self.root
    }

    /// Its version.
    pub fn version(&self) -> u64 {
        self.root.version
    }

    /// The stored envelope bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// SHA-256 of the stored bytes, hex.
    pub fn digest(&self) -> String {
        hex::encode(Sha256::digest(&self.bytes))
    }

    /// The publisher keys whose scope admits `host` with `labels`.
    pub fn publisher_keys_for(&self, host: &HostName, labels: &[String]) -> TrustedKeys {
        TrustedKeys::new(
            self.root
                .publisher_keys
                .iter()
                .filter(|k| k.scope.as_ref().is_none_or(|s| s.admits(host, labels)))
                .map(|k| k.key.clone()),
        )
    }

    /// Verifies a manifest for `host` (carrying `labels`) against this root's
    /// publisher keys and their scopes; a valid signature by a key whose scope
    /// leaves `host` out is [`ManifestError::OutOfScope`].
    pub fn verify_manifest(
        &self,
        bytes: &[u8],
        host: &HostName,
        labels: &[String],
        highest_seen: Option<&SeenManifest>,
        now: Option<Timestamp>,
    ) -> Result<VerifiedManifest, ManifestError> {
        let in_scope = self.publisher_keys_for(host, labels);
        let policy = VerifyPolicy {
            trusted: &in_scope,
            host,
            highest_seen,
            now,
        };
        match Manifest::verify(bytes, &policy) {
            Err(ManifestError::UnknownKey { names, .. }) => {
                let all = self.root.all_publisher_keys();
                if let Ok(o) = envelope::open(bytes, MANIFEST_PAYLOAD_TYPE, &all, MAX_MANIFEST_SIZE)
                {
                    let scope = self
                        .root
                        .publisher_keys
                        .iter()
                        .find(|k| k.key.name() == o.signed_by)
                        .and_then(|k| k.scope.as_ref())
                        .map(ToString::to_string)
                        .unwrap_or_default();
                    return Err(ManifestError::OutOfScope {
                        key: o.signed_by,
                        host: host.clone(),
                        scope,
                        root_version: self.root.version,
                    });
                }
                Err(ManifestError::UnknownKey {
                    names,
                    trusted: all.keys().iter().map(|k| k.name().to_owned()).collect(),
                })
            }
            other => other,
        }
    }
}

/// The version a root object says it is, read *without* checking any signature:
/// only a hint of how far to walk (every version walked is verified), or `None`
/// when the object is not even shaped like a root.
pub fn claimed_version(bytes: &[u8]) -> Option<u64> {
    if bytes.len() as u64 > MAX_ROOT_SIZE {
        return None;
    }
    let env: serde_json::Value = serde_json::from_slice(bytes).ok()?;
    let payload = B64.decode(env.get("payload")?.as_str()?).ok()?;
    let v: serde_json::Value = serde_json::from_slice(&payload).ok()?;
    v.get("version")?.as_u64()
}

/// Names of the signers of `bytes` in `keys` (for `trust show`).
pub fn signer_names(bytes: &[u8], keys: &TrustedKeys) -> BTreeSet<String> {
    envelope::signers(bytes, ROOT_PAYLOAD_TYPE, keys, MAX_ROOT_SIZE)
        .map(|s| s.signers)
        .unwrap_or_default()
}
