//! The publisher's walk of a closure through the bucket's binary cache: from a top
//! path over narinfo `References:`, each `cache/<hash>.narinfo` read under
//! [`MAX_NARINFO_SIZE`], parsed, checked to describe the path asked for, and
//! checked to carry a signature by a trusted cache key.
//!
//! A closure whose walk succeeds is complete and signed in the bucket, so it can be
//! deployed, renewed or rolled back to without the local Nix store. The walk also
//! gives every path's `NarSize`/`FileSize`, which is what a dry run adds up.
//!
//! The agent has its own walk (`agent/src/fetch/walk.rs`): it stops at paths its
//! store already holds, streams each narinfo to the NAR downloads as it arrives and
//! maps every failure to a typed `ErrorKind` under the host's own bounds; this one
//! always reads the whole closure and hands it back at once. Both check one narinfo
//! with the same calls ([`NarInfo::parse`], its store path, [`NarInfo::verify`]);
//! here they are [`read_verified_narinfo`].

use std::collections::HashSet;

use futures::{StreamExt, TryStreamExt};

use crate::bucket::{Bucket, BucketError};
use crate::keys::TrustedKeys;
use crate::layout::Key;
use crate::narinfo::{MAX_NARINFO_SIZE, NarInfo, NarInfoError};
use crate::store_path::StorePath;

/// Most paths a walk visits before it gives up (a NixOS system has a few thousand).
pub const MAX_WALK_PATHS: usize = 200_000;
/// Narinfos read at once.
pub const WALK_CONCURRENCY: usize = 32;

/// Why a closure cannot be taken from the bucket.
#[derive(Debug, thiserror::Error)]
pub enum CacheWalkError {
    /// A path of the closure has no narinfo.
    #[error(
        "{path} is not in the bucket's cache ({key} is missing), so the closure is incomplete \
         there; push it from a machine that has it in its Nix store"
    )]
    Missing {
        /// The store path.
        path: String,
        /// The narinfo key.
        key: String,
    },
    /// A narinfo is malformed or too large.
    #[error("the narinfo of {path} cannot be used: {error}")]
    Malformed {
        /// The store path.
        path: String,
        /// What is wrong.
        error: NarInfoError,
    },
    /// A narinfo describes another path than the one its key names.
    #[error("{key} describes {found}, not {expected}: the cache has been tampered with")]
    WrongPath {
        /// The narinfo key.
        key: String,
        /// The path asked for.
        expected: String,
        /// The path it describes.
        found: String,
    },
    /// No trusted cache key signed a narinfo.
    #[error("the narinfo of {path} is not signed by a trusted cache key: {error}")]
    Untrusted {
        /// The store path.
        path: String,
        /// The signature check's error.
        error: NarInfoError,
    },
    /// The closure has more paths than [`MAX_WALK_PATHS`].
    #[error("the closure of {root} has more than {limit} paths")]
    TooManyPaths {
        /// The top path.
        root: String,
        /// The bound.
        limit: usize,
    },
    /// The bucket failed.
    #[error("reading {key}: {error}")]
    Bucket {
        /// The key read.
        key: String,
        /// The bucket's error.
        error: BucketError,
    },
}

/// A closure as the bucket's cache holds it.
#[derive(Clone, Debug)]
pub struct BucketClosure {
    /// The top path.
    pub root: StorePath,
    /// Every path's verified narinfo, the top's first, then breadth-first.
    pub narinfos: Vec<NarInfo>,
}

impl BucketClosure {
    /// The store paths of the closure.
    pub fn paths(&self) -> impl Iterator<Item = &StorePath> {
        self.narinfos.iter().map(|n| &n.store_path)
    }
}

/// Reads `cache/<hash>.narinfo` of `path`, checks that it describes `path` and that
/// a key of `trusted` signed it.
pub async fn read_verified_narinfo(
    bucket: &Bucket,
    path: &StorePath,
    trusted: &TrustedKeys,
) -> Result<NarInfo, CacheWalkError> {
    let key = Key::narinfo(path.hash());
    let ni = read_narinfo(bucket, path)
        .await?
        .ok_or_else(|| CacheWalkError::Missing {
            path: path.to_string(),
            key: key.to_string(),
        })?;
    ni.verify(trusted, key.as_str())
        .map_err(|error| CacheWalkError::Untrusted {
            path: path.to_string(),
            error,
        })?;
    Ok(ni)
}

/// Walks the closure of `root` through the bucket's cache; see the module docs.
pub async fn walk_closure(
    bucket: &Bucket,
    root: &StorePath,
    trusted: &TrustedKeys,
) -> Result<BucketClosure, CacheWalkError> {
    let mut seen: HashSet<StorePath> = HashSet::from([root.clone()]);
    let mut level = vec![root.clone()];
    let mut narinfos = Vec::new();
    while !level.is_empty() {
        let found: Vec<NarInfo> = futures::stream::iter(level)
            .map(|p| async move { read_verified_narinfo(bucket, &p, trusted).await })
            .buffered(WALK_CONCURRENCY)
            .try_collect()
            .await?;
        let mut next = Vec::new();
        for ni in &found {
            for r in &ni.references {
                if seen.insert(r.clone()) {
                    if seen.len() > MAX_WALK_PATHS {
                        return Err(CacheWalkError::TooManyPaths {
                            root: root.to_string(),
                            limit: MAX_WALK_PATHS,
                        });
                    }
                    next.push(r.clone());
                }
            }
        }
        narinfos.extend(found);
        level = next;
    }
    Ok(BucketClosure {
        root: root.clone(),
        narinfos,
    })
}

/// Every path reachable from `roots` over the narinfos the bucket holds, by hash
/// part, with its narinfo: what garbage collection must keep.
///
/// Unlike [`walk_closure`] a path with no narinfo is no error (it is simply not
/// there to keep, say a root whose push never finished) and signatures are not
/// checked: this walk only ever widens what is kept. A narinfo that does not parse,
/// or describes another path, is an error, because its references are unknown.
pub async fn reachable(
    bucket: &Bucket,
    roots: impl IntoIterator<Item = StorePath>,
    present: &HashSet<String>,
) -> Result<std::collections::HashMap<String, NarInfo>, CacheWalkError> {
    let mut seen: HashSet<StorePath> = HashSet::new();
    let mut level: Vec<StorePath> = roots
        .into_iter()
        .filter(|r| seen.insert(r.clone()))
        .collect();
    let mut out = std::collections::HashMap::new();
    while !level.is_empty() {
        let found: Vec<NarInfo> = futures::stream::iter(
            level
                .into_iter()
                .filter(|p| present.contains(p.hash().as_str())),
        )
        .map(|p| async move { read_narinfo(bucket, &p).await })
        .buffered(WALK_CONCURRENCY)
        .try_collect::<Vec<Option<NarInfo>>>()
        .await?
        .into_iter()
        .flatten()
        .collect();
        let mut next = Vec::new();
        for ni in found {
            for r in &ni.references {
                if seen.len() >= MAX_WALK_PATHS {
                    return Err(CacheWalkError::TooManyPaths {
                        root: ni.store_path.to_string(),
                        limit: MAX_WALK_PATHS,
                    });
                }
                if seen.insert(r.clone()) {
                    next.push(r.clone());
                }
            }
            out.insert(ni.store_path.hash().as_str().to_owned(), ni);
        }
        level = next;
    }
    Ok(out)
}

/// Reads and parses the narinfo of `path`, checking only that it describes `path`
/// (not its signature); `None` when there is none.
async fn read_narinfo(
    bucket: &Bucket,
    path: &StorePath,
) -> Result<Option<NarInfo>, CacheWalkError> {
    let key = Key::narinfo(path.hash());
    let obj = match bucket.get(&key, MAX_NARINFO_SIZE).await {
        Ok(o) => o,
        Err(BucketError::NotFound { .. }) => return Ok(None),
        Err(error) => {
            return Err(CacheWalkError::Bucket {
                key: key.to_string(),
                error,
            });
        }
    };
    let ni =
        NarInfo::parse(&obj.bytes, key.as_str()).map_err(|error| CacheWalkError::Malformed {
            path: path.to_string(),
            error,
        })?;
    if &ni.store_path != path {
        return Err(CacheWalkError::WrongPath {
            key: key.to_string(),
            expected: path.to_string(),
            found: ni.store_path.to_string(),
        });
    }
    Ok(Some(ni))
}
