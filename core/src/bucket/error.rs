//! [`BucketError`]: what went wrong talking to a bucket, naming the key, the store
//! and what to do; and how errors of `object_store` and of local reads map to it.
//!
//! `object_store` reports some refusals only as text (SeaweedFS's 403 on a list is a
//! generic error), so the error chain is read for the usual phrasings of "denied"
//! and "unreachable".

use std::fmt;

/// The operation that failed, for messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// Reading an object.
    Read,
    /// Writing an object.
    Write,
    /// Listing a prefix.
    List,
    /// Deleting an object.
    Delete,
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Op::Read => "read",
            Op::Write => "write",
            Op::List => "list",
            Op::Delete => "delete",
        })
    }
}

/// What went wrong talking to the bucket. Every variant names the key and the store.
#[derive(Debug, thiserror::Error)]
pub enum BucketError {
    /// The bucket URL could not be opened.
    #[error("cannot open store {url}: {why}")]
    Open {
        /// The store.
        url: String,
        /// Why.
        why: String,
    },
    /// No object at that key.
    #[error("{key} does not exist in {url}")]
    NotFound {
        /// The store.
        url: String,
        /// The key.
        key: String,
    },
    /// The credentials in use may not do this.
    #[error(
        "access denied for key {key} in {url}: these credentials may not {op} it (check which credentials are in use and the IAM policy from `fleet-publish policy`)"
    )]
    AccessDenied {
        /// The store.
        url: String,
        /// The key or prefix.
        key: String,
        /// The operation.
        op: Op,
    },
    /// A create-only write found an object there.
    #[error("{key} already exists in {url}")]
    AlreadyExists {
        /// The store.
        url: String,
        /// The key.
        key: String,
    },
    /// A compare-and-swap write lost: the object changed since it was read.
    #[error(
        "{key} in {url} changed since it was read (another writer won the compare-and-swap); read it again and retry"
    )]
    Conflict {
        /// The store.
        url: String,
        /// The key.
        key: String,
    },
    /// The object is larger than the caller's bound.
    #[error(
        "{key} in {url} is {size} bytes, larger than the {limit}-byte bound; refusing to read it"
    )]
    TooLarge {
        /// The store.
        url: String,
        /// The key.
        key: String,
        /// Its size (at least).
        size: u64,
        /// The bound.
        limit: u64,
        /// The object's ETag, when the store sent one: lets a caller ask again with
        /// `If-None-Match` instead of downloading the same oversized object.
        etag: Option<String>,
    },
    /// The store could not be reached, or stopped answering.
    #[error(
        "cannot reach {url} to {op} {key}: {why} (check the endpoint, the network and that the server is up)"
    )]
    Unreachable {
        /// The store.
        url: String,
        /// The key.
        key: String,
        /// The operation.
        op: Op,
        /// The underlying error.
        why: String,
    },
    /// Anything else the store reported.
    #[error("{op} {key} in {url} failed: {why}")]
    Other {
        /// The store.
        url: String,
        /// The key.
        key: String,
        /// The operation.
        op: Op,
        /// The underlying error.
        why: String,
    },
}

impl BucketError {
    /// Whether retrying later may help (network trouble), as opposed to a refusal
    /// that will repeat (403, missing object, bad bounds).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            BucketError::Unreachable { .. } | BucketError::Other { .. }
        )
    }
}

pub(super) fn local_io_error(url: &str, op: Op, key: &str, e: std::io::Error) -> BucketError {
    let (url, key) = (url.to_owned(), key.to_owned());
    match e.kind() {
        std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory => {
            BucketError::NotFound { url, key }
        }
        std::io::ErrorKind::PermissionDenied => BucketError::AccessDenied { url, key, op },
        _ => BucketError::Other {
            url,
            key,
            op,
            why: e.to_string(),
        },
    }
}

/// Maps an `object_store` error to a [`BucketError`] that names the key.
pub(super) fn classify(url: &str, op: Op, key: &str, e: object_store::Error) -> BucketError {
    use object_store::Error as E;
    let url = url.to_owned();
    let key = key.to_owned();
    match e {
        E::NotFound { .. } => BucketError::NotFound { url, key },
        E::AlreadyExists { .. } => BucketError::AlreadyExists { url, key },
        E::Precondition { .. } => BucketError::Conflict { url, key },
        E::PermissionDenied { .. } | E::Unauthenticated { .. } => {
            BucketError::AccessDenied { url, key, op }
        }
        other => {
            let why = error_chain(&other);
            if looks_denied(&why) {
                BucketError::AccessDenied { url, key, op }
            } else if looks_unreachable(&why) {
                BucketError::Unreachable { url, key, op, why }
            } else {
                BucketError::Other { url, key, op, why }
            }
        }
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        let t = inner.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        src = inner.source();
    }
    s
}

fn looks_denied(why: &str) -> bool {
    why.contains("403 Forbidden")
        || why.contains("status: 403")
        || why.contains("AccessDenied")
        || why.contains("InvalidAccessKeyId")
        || why.contains("SignatureDoesNotMatch")
}

fn looks_unreachable(why: &str) -> bool {
    let w = why.to_ascii_lowercase();
    w.contains("error sending request")
        || w.contains("connection refused")
        || w.contains("timed out")
        || w.contains("timeout")
        || w.contains("dns error")
        || w.contains("connection reset")
        || w.contains("connect error")
}
