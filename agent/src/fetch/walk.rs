//! Step 1 and 2 of a fetch: the breadth-first walk of the closure over narinfo
//! `References:`, asking the store which paths it lacks, and each missing path's
//! narinfo read under its bound, parsed, and checked (right path, trusted
//! signature) before it goes to the downloads.

use std::collections::HashSet;
use std::sync::Arc;

use fleet_core::narinfo::NarInfoError;
use fleet_core::{Key, NarInfo, StorePath};
use futures::{StreamExt, TryStreamExt};
use tokio::sync::mpsc;

use super::error::bucket_error;
use super::{Ctx, FetchError, NARINFOS_AT_ONCE, invalid_paths};

/// What the walk found, for the report.
pub(super) struct Walked {
    pub(super) already_valid: usize,
    pub(super) narinfos: usize,
    pub(super) narinfo_bytes: u64,
}

/// Breadth-first walk over the missing paths; sends each verified narinfo to the NAR
/// downloads as soon as it arrives.
pub(super) struct Walk<'c, 'a> {
    ctx: &'c Ctx<'a>,
    seen: HashSet<StorePath>,
    total_nar: u64,
    pub(super) out: Walked,
}

impl<'c, 'a> Walk<'c, 'a> {
    pub(super) fn new(ctx: &'c Ctx<'a>) -> Self {
        Self {
            ctx,
            seen: HashSet::from([ctx.root.clone()]),
            total_nar: 0,
            out: Walked {
                already_valid: 0,
                narinfos: 0,
                narinfo_bytes: 0,
            },
        }
    }

    /// Accounts for a verified narinfo of `size` bytes against the bounds; returns the
    /// references not met before.
    pub(super) fn take(&mut self, ni: &NarInfo, size: u64) -> Result<Vec<StorePath>, FetchError> {
        let limits = &self.ctx.limits;
        self.out.narinfos += 1;
        self.out.narinfo_bytes += size;
        self.total_nar = self.total_nar.saturating_add(ni.nar_size);
        if self.total_nar > limits.max_total_nar_size {
            return Err(FetchError::ClosureTooLarge {
                root: self.ctx.root.to_string(),
                limit: limits.max_total_nar_size,
            });
        }
        let mut candidates = Vec::new();
        for r in &ni.references {
            if self.seen.insert(r.clone()) {
                if self.seen.len() > limits.max_paths {
                    return Err(FetchError::TooManyPaths {
                        root: self.ctx.root.to_string(),
                        limit: limits.max_paths,
                    });
                }
                candidates.push(r.clone());
            }
        }
        Ok(candidates)
    }

    /// Sends `first` (already taken), then walks on from `level`, the missing paths
    /// found so far.
    ///
    /// Once every missing path is sent, `done` gets their set (the wave importer needs
    /// it before the downloads catch up with the walk).
    pub(super) async fn run(
        mut self,
        tx: mpsc::Sender<Arc<NarInfo>>,
        first: Arc<NarInfo>,
        mut level: Vec<StorePath>,
        done: tokio::sync::oneshot::Sender<HashSet<StorePath>>,
    ) -> Result<Walked, FetchError> {
        let ctx = self.ctx;
        let mut all_missing: HashSet<StorePath> = HashSet::from([ctx.root.clone()]);
        all_missing.extend(level.iter().cloned());
        if tx.send(first).await.is_err() {
            // The downloads stopped on an error, which `try_join!` reports.
            return Ok(self.out);
        }
        while !level.is_empty() {
            let mut candidates = Vec::new();
            let mut infos = futures::stream::iter(level)
                .map(|p| fetch_narinfo(ctx, p))
                .buffer_unordered(ctx.limits.concurrency.max(NARINFOS_AT_ONCE));
            while let Some((ni, size)) = infos.try_next().await? {
                candidates.extend(self.take(&ni, size)?);
                if tx.send(ni).await.is_err() {
                    return Ok(self.out);
                }
            }
            drop(infos);
            let missing = invalid_paths(ctx.nix, &candidates).await?;
            self.out.already_valid += candidates.len() - missing.len();
            level = missing;
            all_missing.extend(level.iter().cloned());
        }
        let _ = done.send(all_missing);
        Ok(self.out)
    }
}

impl Walk<'_, '_> {
    /// [`Walk::run`], keeping every narinfo it sends: the walk as a whole, before
    /// anything is downloaded (the local substituter needs every missing path named
    /// before `nix copy` starts).
    pub(super) async fn run_all(
        self,
        first: Arc<NarInfo>,
        level: Vec<StorePath>,
    ) -> Result<(Walked, Vec<Arc<NarInfo>>), FetchError> {
        let (tx, mut rx) = mpsc::channel(super::NARINFOS_IN_FLIGHT);
        let (done_tx, _done_rx) = tokio::sync::oneshot::channel();
        let collect = async {
            let mut all = Vec::new();
            while let Some(ni) = rx.recv().await {
                all.push(ni);
            }
            all
        };
        let (walked, all) = tokio::join!(self.run(tx, first, level, done_tx), collect);
        Ok((walked?, all))
    }
}

/// Downloads, parses and verifies the narinfo of `path`; returns it and its size.
pub(super) async fn fetch_narinfo(
    ctx: &Ctx<'_>,
    path: StorePath,
) -> Result<(Arc<NarInfo>, u64), FetchError> {
    let key = Key::narinfo(path.hash());
    let limit = ctx.limits.max_narinfo_size;
    let obj = tokio::time::timeout(ctx.limits.request_timeout, ctx.bucket.get(&key, limit))
        .await
        .map_err(|_| FetchError::Timeout {
            path: path.to_string(),
            key: key.to_string(),
            what: "the narinfo did not arrive in time",
            limit: ctx.limits.request_timeout,
        })?
        .map_err(|e| bucket_error(e, &path, &key, true))?;
    let ni = NarInfo::parse(&obj.bytes, key.as_str()).map_err(|e| match e {
        NarInfoError::TooLarge { size, limit, .. } => FetchError::NarinfoTooLarge {
            path: path.to_string(),
            key: key.to_string(),
            size,
            limit,
        },
        e => FetchError::NarinfoMalformed {
            path: path.to_string(),
            error: Box::new(e),
        },
    })?;
    if ni.store_path != path {
        return Err(FetchError::NarinfoWrongPath {
            key: key.to_string(),
            expected: path.to_string(),
            found: ni.store_path.to_string(),
        });
    }
    ni.verify(ctx.trusted, key.as_str())
        .map_err(|e| FetchError::NarinfoUntrusted {
            path: path.to_string(),
            error: Box::new(e),
        })?;
    tracing::debug!(%path, "narinfo verified");
    Ok((Arc::new(ni), obj.bytes.len() as u64))
}
