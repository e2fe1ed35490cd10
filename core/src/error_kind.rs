//! [`ErrorKind`]: the stable, machine-readable `last_error.kind` of a
//! [`StatusReport`](crate::StatusReport), one definition for the agent that writes
//! it, the reporter that shows it and `docs/operations.md` that explains each one
//! (a test checks that every kind has its row there).
//!
//! On the wire a kind is a kebab-case string (`"manifest-expired"`). A kind this
//! version does not know (a newer agent's) is kept as [`ErrorKind::Other`] rather
//! than refused, so an old reporter still shows a new agent's status.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

macro_rules! error_kinds {
    ($( $(#[$doc:meta])* $variant:ident = $wire:literal, )*) => {
        /// Why the agent's last cycle did not end healthy (see the module docs).
        #[derive(Clone, Debug, PartialEq, Eq, Hash)]
        pub enum ErrorKind {
            $( $(#[$doc])* $variant, )*
            /// A kind this version does not know, as it was written.
            Other(String),
        }

        impl ErrorKind {
            /// Every kind this version knows, in the order `docs/operations.md` explains them.
            pub const ALL: &'static [ErrorKind] = &[$( ErrorKind::$variant, )*];

            /// The kind's wire name.
            pub fn as_str(&self) -> &str {
                match self {
                    $( ErrorKind::$variant => $wire, )*
                    ErrorKind::Other(s) => s,
                }
            }
        }

        impl FromStr for ErrorKind {
            type Err = std::convert::Infallible;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Ok(match s {
                    $( $wire => ErrorKind::$variant, )*
                    other => ErrorKind::Other(other.to_owned()),
                })
            }
        }
    };
}

error_kinds! {
    /// The manifest object is larger than the agent accepts.
    ManifestTooLarge = "manifest-too-large",
    /// Not a DSSE envelope, or its payload is not a manifest.
    ManifestMalformed = "manifest-malformed",
    /// Signed by a key the host does not trust.
    ManifestUnknownKey = "manifest-unknown-key",
    /// The signature does not verify.
    ManifestBadSignature = "manifest-bad-signature",
    /// A valid manifest for another host.
    ManifestWrongHost = "manifest-wrong-host",
    /// A sequence lower than the highest this host accepted.
    ManifestRollback = "manifest-rollback",
    /// The accepted sequence again, with other bytes.
    ManifestSequenceReused = "manifest-sequence-reused",
    /// Past its `expires_at`.
    ManifestExpired = "manifest-expired",
    /// A manifest format version this agent does not know.
    ManifestUnsupportedVersion = "manifest-unsupported-version",
    /// None of the manifest's cache keys is trusted by the host.
    ManifestUntrustedCacheKeys = "manifest-untrusted-cache-keys",
    /// No manifest for this host in the bucket.
    ManifestMissing = "manifest-missing",
    /// The bucket answered 403.
    AccessDenied = "access-denied",
    /// The bucket's endpoint could not be reached.
    BucketUnreachable = "bucket-unreachable",
    /// Any other error answer from the bucket.
    BucketError = "bucket-error",
    /// A request to the bucket stalled or ran too slowly.
    BucketTimeout = "bucket-timeout",
    /// No narinfo signature of a trusted cache key.
    NarinfoUntrusted = "narinfo-untrusted",
    /// A narinfo does not parse.
    NarinfoMalformed = "narinfo-malformed",
    /// A narinfo describes another store path than its key.
    NarinfoWrongPath = "narinfo-wrong-path",
    /// A narinfo larger than the agent accepts.
    NarinfoTooLarge = "narinfo-too-large",
    /// A narinfo claims a NAR over `max-nar-size`.
    NarTooLarge = "nar-too-large",
    /// The closure walk passed `max-closure-paths`.
    TooManyPaths = "too-many-paths",
    /// The missing paths add up to more than `max-download-size`.
    ClosureTooLarge = "closure-too-large",
    /// The NAR file's size is not the narinfo's `FileSize`.
    FileSizeMismatch = "file-size-mismatch",
    /// The NAR file's hash is not the narinfo's `FileHash`.
    FileHashMismatch = "file-hash-mismatch",
    /// The NAR's size is not the signed `NarSize`.
    NarSizeMismatch = "nar-size-mismatch",
    /// The NAR's hash is not the signed `NarHash`.
    NarHashMismatch = "nar-hash-mismatch",
    /// The NAR file or the NAR in it ends early.
    NarTruncated = "nar-truncated",
    /// Not a well-formed, safe NAR.
    NarMalformed = "nar-malformed",
    /// A narinfo of the closure is not in the cache.
    NarinfoMissing = "narinfo-missing",
    /// A NAR file of the closure is not in the cache.
    NarMissing = "nar-missing",
    /// Another fetch holds the staging directory's lock.
    StagingBusy = "staging-busy",
    /// The staging directory cannot be written.
    StagingIo = "staging-io",
    /// Asking the local Nix store which paths it has failed.
    StoreQueryFailed = "store-query-failed",
    /// `nix copy` from the verified staging cache into the store failed.
    ImportFailed = "import-failed",
    /// A verification thread could not run.
    Internal = "internal",
    /// Setting the profile or `switch-to-configuration` failed.
    ActivationFailed = "activation-failed",
    /// The agent died while `switch-to-configuration` ran.
    ActivationInterrupted = "activation-interrupted",
    /// A health check did not pass after the switch.
    HealthCheckFailed = "health-check-failed",
    /// Restoring the previous generation failed too.
    RollbackFailed = "rollback-failed",
    /// A local failure of the agent itself (state directory, …).
    AgentError = "agent-error",
    /// A manifest signed by a publisher key whose scope leaves this host out.
    ManifestOutOfScope = "manifest-out-of-scope",
    /// A root of trust version is malformed or not signed by a threshold of root keys.
    TrustRootInvalid = "trust-root-invalid",
    /// The bucket's root of trust is older than the version this host trusts.
    TrustRootRollback = "trust-root-rollback",
    /// The newest root of trust is past its expiry.
    TrustRootExpired = "trust-root-expired",
    /// A root of trust version the walk needs is not in the bucket.
    TrustRootMissing = "trust-root-missing",
    /// After a switch the agent could not reach the bucket (manifest GET and status
    /// PUT) within `connectivity-timeout`, so it rolled back.
    ConnectivityLost = "connectivity-lost",
    /// After the reboot into a `boot` generation the host runs another system.
    BootFailed = "boot-failed",
    /// The agent's `reboot-command` failed.
    RebootFailed = "reboot-failed",
    /// The filesystem of the agent's state or staging directory is full.
    DiskFull = "disk-full",
    /// The agent's state or staging directory is on a read-only filesystem.
    DiskReadOnly = "disk-read-only",
    /// The state file was unreadable (damaged or edited): the agent moved it aside
    /// and started afresh from the running system.
    StateReset = "state-reset",
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Compares with a wire name, so readers of untyped JSON and tests can match on text.
impl PartialEq<str> for ErrorKind {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for ErrorKind {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl Serialize for ErrorKind {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for ErrorKind {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Ok(s.parse().unwrap_or_else(|never| match never {}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_names_round_trip_and_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for k in ErrorKind::ALL {
            assert!(seen.insert(k.as_str()), "{k} twice");
            let json = serde_json::to_string(k).unwrap();
            assert_eq!(serde_json::from_str::<ErrorKind>(&json).unwrap(), *k);
            assert!(
                k.as_str()
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b == b'-'),
                "{k} is not kebab-case"
            );
        }
    }

    #[test]
    fn unknown_kinds_are_kept_as_written() {
        let k: ErrorKind = serde_json::from_str("\"quantum-flux\"").unwrap();
        assert_eq!(k, ErrorKind::Other("quantum-flux".into()));
        assert_eq!(serde_json::to_string(&k).unwrap(), "\"quantum-flux\"");
    }

    /// `docs/operations.md` explains every kind, in a table row that starts with it.
    #[test]
    fn every_kind_is_explained_in_the_operations_guide() {
        let doc = include_str!("../../docs/operations.md");
        for k in ErrorKind::ALL {
            let cell = format!("`{k}`");
            assert!(
                doc.lines().any(|l| l.starts_with('|')
                    && l.split('|').nth(1).is_some_and(|c| c.contains(&cell))),
                "docs/operations.md has no table row for last_error.kind {k}"
            );
        }
    }
}
