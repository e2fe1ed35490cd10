//! The root of trust: which keys may sign what in a fleet, itself signed by a
//! threshold of offline root keys and versioned, after TUF's root role.
//!
//! Stored at `trust/<version>.root.json` (every version, written once) and copied to
//! `trust/root.json` (the newest, a hint where to stop walking) as a DSSE envelope
//! (see [`crate::envelope`]) of payload type [`ROOT_PAYLOAD_TYPE`], with one
//! signature per root key that signed it. The payload is JSON with exactly these
//! fields (unknown fields are refused):
//!
//! ```json
//! {
//!   "format": 1,
//!   "version": 2,
//!   "issued_at": "2026-12-02T21:25:00Z",
//!   "expires_at": "2027-12-02T21:25:00Z",
//!   "root_keys": ["root-1:…", "root-2:…"],
//!   "threshold": 2,
//!   "publisher_keys": [
//!     {"key": "publisher-1:…"},
//!     {"key": "web-team-1:…", "scope": {"hosts": ["web-*"], "labels": []}}
//!   ],
//!   "cache_keys": ["cache-1:…"],
//!   "admin_keys": ["admin-1:…"]
//! }
//! ```
//!
//! - `publisher_keys` sign manifests; a key with a `scope` only for the hosts whose
//!   name matches one of `hosts` (`*` matches any run of characters) or that carry
//!   one of `labels` (the agent's `labels` setting); see [`scope`].
//! - `cache_keys` sign narinfos; `admin_keys` are listed for admin-signed objects.
//! - The rule for moving from a trusted version N to N+1 is in [`chain`]: N+1 must be
//!   signed by a threshold of N's root keys *and* by a threshold of its own, its
//!   version is exactly N+1, and a host never goes back.

pub mod chain;
pub mod scope;

#[cfg(test)]
mod tests;

use std::collections::BTreeSet;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::envelope;
use crate::keys::{PublicKey, SecretKey, TrustedKeys};

pub use chain::{CLOCK_TOLERANCE, TrustedRoot};
pub use scope::{HostPattern, Scope};

/// DSSE payload type of a root.
pub const ROOT_PAYLOAD_TYPE: &str = "application/vnd.fleet.root.v1+json";

/// Largest root object accepted, in bytes. A root with a hundred keys is ~20 KiB.
pub const MAX_ROOT_SIZE: u64 = 256 * 1024;

/// The one root payload format this build reads.
pub const ROOT_FORMAT: u32 = 1;

/// One version of the root of trust (the payload).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Root {
    /// Payload format; always [`ROOT_FORMAT`].
    pub format: u32,
    /// The root version, from 1; each next version is exactly one higher.
    pub version: u64,
    /// When it was signed.
    pub issued_at: Timestamp,
    /// After this instant (plus [`CLOCK_TOLERANCE`]) hosts refuse it.
    pub expires_at: Timestamp,
    /// Keys that sign the next root version.
    pub root_keys: Vec<PublicKey>,
    /// How many of `root_keys` must sign a root.
    pub threshold: u32,
    /// Keys that sign manifests, each optionally scoped.
    pub publisher_keys: Vec<ScopedKey>,
    /// Keys that sign narinfos.
    pub cache_keys: Vec<PublicKey>,
    /// Keys of admins.
    pub admin_keys: Vec<PublicKey>,
}

/// A publisher key and the hosts it may sign for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScopedKey {
    /// The key.
    pub key: PublicKey,
    /// Hosts it may sign for; none means every host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<Scope>,
}

/// Why a root was refused. Each case names what failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TrustError {
    /// Larger than [`MAX_ROOT_SIZE`].
    #[error("{what} is {size} bytes, larger than the {limit}-byte bound")]
    TooLarge {
        /// Which object.
        what: String,
        /// Its size.
        size: u64,
        /// The bound.
        limit: u64,
    },
    /// Not a well-formed root envelope or payload, or its content breaks a rule
    /// (threshold above the number of root keys, a key name twice, …).
    #[error("{what} is malformed: {why}")]
    Malformed {
        /// Which object.
        what: String,
        /// What is wrong.
        why: String,
    },
    /// Fewer valid signatures than the threshold asks.
    #[error(
        "{what} has valid signatures by {signed:?} only; {needed} of {by} root keys {keys:?} must sign it (signatures present: {keyids:?})"
    )]
    BelowThreshold {
        /// Which object.
        what: String,
        /// Names of the keys whose signature verified.
        signed: Vec<String>,
        /// The threshold.
        needed: u32,
        /// Whose keys: "its own" or "version N's" or "the pinned".
        by: String,
        /// The keys counted.
        keys: Vec<String>,
        /// Every `keyid` in the envelope.
        keyids: Vec<String>,
    },
    /// An older version than one already trusted (rollback).
    #[error(
        "{what} is root version {found}, lower than version {trusted} this host already trusts (a rollback: refused)"
    )]
    Rollback {
        /// Which object.
        what: String,
        /// Its version.
        found: u64,
        /// The version trusted.
        trusted: u64,
    },
    /// Not the version expected at this step of the walk.
    #[error("{what} is root version {found}, but version {expected} was expected there")]
    WrongVersion {
        /// Which object.
        what: String,
        /// The version expected.
        expected: u64,
        /// Its version.
        found: u64,
    },
    /// Past its expiry plus the clock tolerance.
    #[error(
        "root version {version} expired at {expires_at} (now {now}, {tolerance_secs}s clock tolerance); the root key holders must sign a new version (fleet-publish trust renew)"
    )]
    Expired {
        /// The version.
        version: u64,
        /// Its expiry.
        expires_at: Timestamp,
        /// The time of the check.
        now: Timestamp,
        /// The tolerance applied, in seconds.
        tolerance_secs: u64,
    },
    /// A payload format this build does not know.
    #[error(
        "{what} has format {found}; this build reads format {ROOT_FORMAT} only (upgrade fleet)"
    )]
    UnsupportedFormat {
        /// Which object.
        what: String,
        /// Its format.
        found: u32,
    },
}

impl Root {
    /// The root keys as a key set.
    pub fn root_key_set(&self) -> TrustedKeys {
        TrustedKeys::new(self.root_keys.iter().cloned())
    }

    /// Every publisher key, whatever its scope.
    pub fn all_publisher_keys(&self) -> TrustedKeys {
        TrustedKeys::new(self.publisher_keys.iter().map(|k| k.key.clone()))
    }

    /// The cache keys as a key set.
    pub fn cache_key_set(&self) -> TrustedKeys {
        TrustedKeys::new(self.cache_keys.iter().cloned())
    }

    /// Checks the rules a root must follow on its own; `what` names it in errors.
    pub fn validate(&self, what: &str) -> Result<(), TrustError> {
        let bad = |why: String| TrustError::Malformed {
            what: what.to_owned(),
            why,
        };
        if self.format != ROOT_FORMAT {
            return Err(TrustError::UnsupportedFormat {
                what: what.to_owned(),
                found: self.format,
            });
        }
        if self.version == 0 {
            return Err(bad("version 0: versions start at 1".into()));
        }
        if self.expires_at <= self.issued_at {
            return Err(bad(format!(
                "expires_at {} is not after issued_at {}",
                self.expires_at, self.issued_at
            )));
        }
        if self.threshold == 0 || self.threshold as usize > self.root_keys.len() {
            return Err(bad(format!(
                "threshold {} must be between 1 and the number of root keys ({})",
                self.threshold,
                self.root_keys.len()
            )));
        }
        for (list, names) in [
            ("root_keys", names(&self.root_keys)),
            (
                "publisher_keys",
                self.publisher_keys.iter().map(|k| k.key.name()).collect(),
            ),
            ("cache_keys", names(&self.cache_keys)),
            ("admin_keys", names(&self.admin_keys)),
        ] {
            let mut seen = BTreeSet::new();
            for n in names {
                if !seen.insert(n) {
                    return Err(bad(format!("{list} lists key name {n:?} twice")));
                }
            }
        }
        for k in &self.publisher_keys {
            let Some(scope) = &k.scope else { continue };
            if scope.hosts.is_empty() && scope.labels.is_empty() {
                return Err(bad(format!(
                    "publisher key {:?} has a scope with no hosts and no labels (it could sign for no host; leave the scope out for every host)",
                    k.key.name()
                )));
            }
            for l in &scope.labels {
                scope::check_label(l).map_err(bad)?;
            }
        }
        Ok(())
    }

    /// Serialises the root and signs it with every key of `keys`; returns the bytes
    /// to store. The caller checks the threshold rule (see [`TrustedRoot::next`]).
    pub fn sign(&self, keys: &[SecretKey]) -> Vec<u8> {
        let payload = serde_json::to_vec_pretty(self).expect("root serialises");
        envelope::seal_many(ROOT_PAYLOAD_TYPE, &payload, keys)
    }
}

fn names(keys: &[PublicKey]) -> Vec<&str> {
    keys.iter().map(PublicKey::name).collect()
}
