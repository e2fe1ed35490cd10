//! [`FetchError`]: every way fetching a closure can fail, each with a stable
//! [`FetchError::kind`] for the status object and a message naming the store path,
//! the bucket key and the field.
//!
//! Messages are complete on their own (the daemon puts `to_string()` in its status),
//! so the errors they quote are fields, not `source()`s that a printer would repeat.
//! A bucket's errors and the verifier's refusals are turned into these here.

use fleet_core::ErrorKind;
use std::path::{Path, PathBuf};
use std::time::Duration;

use fleet_core::BucketError;
use fleet_core::narinfo::{NarInfoError, Sha256Hash};
use fleet_core::nixcli::NixError;
use fleet_core::{Key, NarInfo, StorePath};

use super::verify::Refusal;

/// Why a closure was not fetched. Nothing was imported when this is returned, except
/// verified paths of earlier waves with [`super::FetchLimits::import_in_waves`], and
/// whatever `nix copy` got through before an [`FetchError::ImportFailed`].
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// Another fetch holds the staging directory.
    #[error(
        "staging directory {dir} is in use by another fetch (lock file {dir}/.lock); wait for it to finish"
    )]
    StagingBusy {
        /// The staging directory.
        dir: PathBuf,
    },
    /// The staging directory cannot be used.
    #[error(
        "staging directory: {action} {path} failed: {error} (check free space and permissions)"
    )]
    Staging {
        /// What was being done.
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        error: std::io::Error,
    },
    /// Writing into the Nix store's directory failed ([`super::ImportVia::Unpack`]).
    #[error("Nix store: {action} {path} failed: {error}")]
    Unpack {
        /// What was being done.
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        error: std::io::Error,
    },
    /// [`super::ImportVia::Unpack`] on a store mounted read-only, not as root.
    #[error(
        "the Nix store {dir} is mounted read-only and the agent is not root, so it cannot remount it writable for itself as Nix does; run the agent as root, or set import-via = \"staging\""
    )]
    StoreReadOnly {
        /// The store's directory.
        dir: PathBuf,
    },
    /// Asking the local Nix store which paths it has failed.
    #[error("asking the Nix store which paths are missing failed: {0}")]
    StoreQuery(Box<NixError>),
    /// The narinfo of a needed path is not in the cache.
    #[error(
        "{key} (narinfo of {path}) does not exist in the bucket: the closure was not fully published; publish it again"
    )]
    NarinfoMissing {
        /// The store path.
        path: String,
        /// The bucket key.
        key: String,
    },
    /// The NAR file a narinfo names is not in the cache.
    #[error(
        "{key} (NAR file of {path}) does not exist in the bucket: the closure was not fully published; publish it again"
    )]
    NarMissing {
        /// The store path.
        path: String,
        /// The bucket key.
        key: String,
    },
    /// The agent's credentials may not read a key (on AWS also: the key is missing,
    /// since the agent may not list).
    #[error(
        "reading {key} (for {path}) was refused: {error}; on AWS this also means the object is missing"
    )]
    AccessDenied {
        /// The store path.
        path: String,
        /// The bucket key.
        key: String,
        /// The bucket's error.
        error: Box<BucketError>,
    },
    /// The bucket could not be reached.
    #[error("reading {key} (for {path}) failed: {error}")]
    Unreachable {
        /// The store path.
        path: String,
        /// The bucket key.
        key: String,
        /// The bucket's error.
        error: Box<BucketError>,
    },
    /// The bucket stopped answering.
    #[error(
        "reading {key} (for {path}) timed out: {what} (limit {limit:?}); the server is stalled or the link too slow"
    )]
    Timeout {
        /// The store path.
        path: String,
        /// The bucket key.
        key: String,
        /// What took too long.
        what: &'static str,
        /// The bound that was hit.
        limit: Duration,
    },
    /// The bucket reported another error.
    #[error("reading {key} (for {path}) failed: {error}")]
    Bucket {
        /// The store path.
        path: String,
        /// The bucket key.
        key: String,
        /// The bucket's error.
        error: Box<BucketError>,
    },
    /// A narinfo larger than the bound.
    #[error(
        "{key} (narinfo of {path}) is {size} bytes, over the {limit}-byte bound; refusing it (a real narinfo is a few KiB)"
    )]
    NarinfoTooLarge {
        /// The store path.
        path: String,
        /// The bucket key.
        key: String,
        /// Its size (at least).
        size: u64,
        /// The bound.
        limit: u64,
    },
    /// A narinfo that does not parse.
    #[error("narinfo of {path}: {error}")]
    NarinfoMalformed {
        /// The store path.
        path: String,
        /// The parser's error (names the key and the field).
        error: Box<NarInfoError>,
    },
    /// A narinfo describing another store path than the one its key names.
    #[error(
        "{key} should describe {expected} but its StorePath is {found}: a narinfo for another path is refused (bucket tampering or a broken publish)"
    )]
    NarinfoWrongPath {
        /// The bucket key.
        key: String,
        /// The path asked for.
        expected: String,
        /// The path the narinfo names.
        found: String,
    },
    /// A narinfo no trusted cache key signed.
    #[error("{error}; check the manifest's cache keys and the agent's trusted keys")]
    NarinfoUntrusted {
        /// The store path.
        path: String,
        /// The verifier's error (names the key, the signers and the trusted keys).
        error: Box<NarInfoError>,
    },
    /// A narinfo claims a size over the bounds.
    #[error(
        "{key} (narinfo of {path}) claims {field} {claimed}, over the bound of {limit} bytes; raise the agent's max-nar-size if this closure is legitimate"
    )]
    NarTooLarge {
        /// The store path.
        path: String,
        /// The narinfo's key.
        key: String,
        /// `NarSize` or `FileSize`.
        field: &'static str,
        /// The claimed size.
        claimed: u64,
        /// The bound.
        limit: u64,
    },
    /// The closure has more paths than allowed.
    #[error(
        "the closure of {root} has more than {limit} store paths to check; raise the agent's max-closure-paths if this is legitimate"
    )]
    TooManyPaths {
        /// The closure's top path.
        root: String,
        /// The bound.
        limit: usize,
    },
    /// The missing paths add up to more NAR bytes than allowed.
    #[error(
        "the missing paths of {root} add up to more than {limit} NAR bytes; raise the agent's max-download-size if this is legitimate"
    )]
    ClosureTooLarge {
        /// The closure's top path.
        root: String,
        /// The bound.
        limit: u64,
    },
    /// The NAR file's size is not its narinfo's `FileSize` (or, without one, over
    /// the bound derived from `NarSize`).
    #[error("{key} (NAR file of {path}): {why}; refused (bucket tampering or a broken publish)")]
    FileSizeMismatch {
        /// The store path.
        path: String,
        /// The NAR file's key.
        key: String,
        /// Sizes involved.
        why: String,
    },
    /// The NAR file's hash is not its narinfo's `FileHash`.
    #[error(
        "{key} (NAR file of {path}) has hash {got}, but its narinfo's FileHash is {expected}; refused (bucket tampering or a broken publish)"
    )]
    FileHashMismatch {
        /// The store path.
        path: String,
        /// The NAR file's key.
        key: String,
        /// `FileHash:`.
        expected: Sha256Hash,
        /// What arrived.
        got: Sha256Hash,
    },
    /// The NAR's size is not the signed `NarSize`.
    #[error("{key} (NAR file of {path}): {why}; refused (bucket tampering or a broken publish)")]
    NarSizeMismatch {
        /// The store path.
        path: String,
        /// The NAR file's key.
        key: String,
        /// Sizes involved.
        why: String,
    },
    /// The NAR's hash is not the signed `NarHash`.
    #[error(
        "{key} (NAR file of {path}) decompresses to a NAR with hash {got}, but the signed NarHash is {expected}; refused (bucket tampering)"
    )]
    NarHashMismatch {
        /// The store path.
        path: String,
        /// The NAR file's key.
        key: String,
        /// Signed `NarHash:`.
        expected: Sha256Hash,
        /// What arrived.
        got: Sha256Hash,
    },
    /// The NAR file or the NAR in it ends early.
    #[error("{key} (NAR file of {path}) is truncated: {why}")]
    NarTruncated {
        /// The store path.
        path: String,
        /// The NAR file's key.
        key: String,
        /// Where it ends.
        why: String,
    },
    /// Not a well-formed, safe NAR (or not decodable).
    #[error("{key} (NAR file of {path}) is refused: {why}")]
    NarMalformed {
        /// The store path.
        path: String,
        /// The NAR file's key.
        key: String,
        /// What is wrong.
        why: String,
    },
    /// `nix copy` from the staging cache (or the registration of unpacked paths)
    /// failed, or left the closure invalid.
    #[error("importing {root} into the Nix store failed: {why}")]
    ImportFailed {
        /// The closure's top path.
        root: String,
        /// Nix's error.
        why: String,
    },
    /// A verification thread could not run.
    #[error("internal error while verifying {path}: {why}")]
    Internal {
        /// The store path.
        path: String,
        /// What happened.
        why: String,
    },
}

impl FetchError {
    /// Stable machine-readable kind, for `StatusReport.last_error.kind`.
    pub fn kind(&self) -> ErrorKind {
        match self {
            FetchError::StagingBusy { .. } => ErrorKind::StagingBusy,
            FetchError::Staging { error, .. } => {
                local_io_kind(error).unwrap_or(ErrorKind::StagingIo)
            }
            FetchError::Unpack { error, .. } => {
                local_io_kind(error).unwrap_or(ErrorKind::ImportFailed)
            }
            FetchError::StoreReadOnly { .. } => ErrorKind::DiskReadOnly,
            FetchError::StoreQuery(_) => ErrorKind::StoreQueryFailed,
            FetchError::NarinfoMissing { .. } => ErrorKind::NarinfoMissing,
            FetchError::NarMissing { .. } => ErrorKind::NarMissing,
            FetchError::AccessDenied { .. } => ErrorKind::AccessDenied,
            FetchError::Unreachable { .. } => ErrorKind::BucketUnreachable,
            FetchError::Timeout { .. } => ErrorKind::BucketTimeout,
            FetchError::Bucket { .. } => ErrorKind::BucketError,
            FetchError::NarinfoTooLarge { .. } => ErrorKind::NarinfoTooLarge,
            FetchError::NarinfoMalformed { .. } => ErrorKind::NarinfoMalformed,
            FetchError::NarinfoWrongPath { .. } => ErrorKind::NarinfoWrongPath,
            FetchError::NarinfoUntrusted { .. } => ErrorKind::NarinfoUntrusted,
            FetchError::NarTooLarge { .. } => ErrorKind::NarTooLarge,
            FetchError::TooManyPaths { .. } => ErrorKind::TooManyPaths,
            FetchError::ClosureTooLarge { .. } => ErrorKind::ClosureTooLarge,
            FetchError::FileSizeMismatch { .. } => ErrorKind::FileSizeMismatch,
            FetchError::FileHashMismatch { .. } => ErrorKind::FileHashMismatch,
            FetchError::NarSizeMismatch { .. } => ErrorKind::NarSizeMismatch,
            FetchError::NarHashMismatch { .. } => ErrorKind::NarHashMismatch,
            FetchError::NarTruncated { .. } => ErrorKind::NarTruncated,
            FetchError::NarMalformed { .. } => ErrorKind::NarMalformed,
            FetchError::ImportFailed { .. } => ErrorKind::ImportFailed,
            FetchError::Internal { .. } => ErrorKind::Internal,
        }
    }

    /// Whether the bucket's content contradicts what was signed, or is unsafe: the
    /// agent should report the closure as refused (state `refused`) rather than retry
    /// soon. Everything else (network, local disk, Nix, missing objects that a publish
    /// in progress may still write) may succeed on a later try.
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            FetchError::NarinfoTooLarge { .. }
                | FetchError::NarinfoMalformed { .. }
                | FetchError::NarinfoWrongPath { .. }
                | FetchError::NarinfoUntrusted { .. }
                | FetchError::NarTooLarge { .. }
                | FetchError::TooManyPaths { .. }
                | FetchError::ClosureTooLarge { .. }
                | FetchError::FileSizeMismatch { .. }
                | FetchError::FileHashMismatch { .. }
                | FetchError::NarSizeMismatch { .. }
                | FetchError::NarHashMismatch { .. }
                | FetchError::NarTruncated { .. }
                | FetchError::NarMalformed { .. }
        )
    }
}

/// The kind of a local write failure the operator fixes on the host itself: a full
/// filesystem (`ENOSPC`, or a quota: `EDQUOT`) or a read-only one (`EROFS`). `None`
/// for any other error.
pub(crate) fn local_io_kind(e: &std::io::Error) -> Option<ErrorKind> {
    match e.raw_os_error()? {
        libc_errno::ENOSPC | libc_errno::EDQUOT => Some(ErrorKind::DiskFull),
        libc_errno::EROFS => Some(ErrorKind::DiskReadOnly),
        _ => None,
    }
}

/// The errno values [`local_io_kind`] knows, from rustix (no libc dependency).
mod libc_errno {
    pub(super) const ENOSPC: i32 = rustix::io::Errno::NOSPC.raw_os_error();
    pub(super) const EDQUOT: i32 = rustix::io::Errno::DQUOT.raw_os_error();
    pub(super) const EROFS: i32 = rustix::io::Errno::ROFS.raw_os_error();
}

/// Maps a bucket error on `key` (for `path`) to a fetch error.
pub(super) fn bucket_error(
    e: BucketError,
    path: &StorePath,
    key: &Key,
    narinfo: bool,
) -> FetchError {
    let (path, key) = (path.to_string(), key.to_string());
    match e {
        BucketError::NotFound { .. } if narinfo => FetchError::NarinfoMissing { path, key },
        BucketError::NotFound { .. } => FetchError::NarMissing { path, key },
        BucketError::TooLarge { size, limit, .. } if narinfo => FetchError::NarinfoTooLarge {
            path,
            key,
            size,
            limit,
        },
        e @ BucketError::AccessDenied { .. } => FetchError::AccessDenied {
            path,
            key,
            error: Box::new(e),
        },
        e @ BucketError::Unreachable { .. } => FetchError::Unreachable {
            path,
            key,
            error: Box::new(e),
        },
        e => FetchError::Bucket {
            path,
            key,
            error: Box::new(e),
        },
    }
}

/// Turns a verifier's refusal into the error naming the path and key.
pub(super) fn refusal_error(r: Refusal, ni: &NarInfo, key: &Key, staged: &Path) -> FetchError {
    let (path, key) = (ni.store_path.to_string(), key.to_string());
    match r {
        Refusal::FileTooLong { limit, announced } => FetchError::FileSizeMismatch {
            path,
            key,
            why: if announced {
                format!("it is longer than the narinfo's FileSize {limit} (cut off there)")
            } else {
                format!(
                    "the narinfo has no FileSize and the file is longer than {limit} bytes, the most its NarSize allows (cut off there)"
                )
            },
        },
        Refusal::FileSize { expected, got } => FetchError::FileSizeMismatch {
            path,
            key,
            why: format!("it is {got} bytes, but the narinfo's FileSize is {expected}"),
        },
        Refusal::FileHash { expected, got } => FetchError::FileHashMismatch {
            path,
            key,
            expected,
            got,
        },
        Refusal::Truncated(why) => FetchError::NarTruncated { path, key, why },
        Refusal::NarTooLong { limit } => FetchError::NarSizeMismatch {
            path,
            key,
            why: format!(
                "it decompresses to more than the signed NarSize of {limit} bytes (cut off there)"
            ),
        },
        Refusal::NarSize { expected, got } => FetchError::NarSizeMismatch {
            path,
            key,
            why: format!("it decompresses to {got} bytes, but the signed NarSize is {expected}"),
        },
        Refusal::NarHash { expected, got } => FetchError::NarHashMismatch {
            path,
            key,
            expected,
            got,
        },
        Refusal::Malformed(why) => FetchError::NarMalformed { path, key, why },
        // Download failures are reported by the download side; this is a local read.
        Refusal::Source(source) => FetchError::Staging {
            action: "reading",
            path: staged.to_owned(),
            error: source,
        },
        Refusal::Sink(source) => FetchError::Staging {
            action: "writing",
            path: staged.to_owned(),
            error: source,
        },
    }
}
