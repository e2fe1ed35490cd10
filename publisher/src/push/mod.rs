//! The push engine: uploads store paths and their closures to the bucket's
//! `cache/`, a Nix binary cache in Nix's own layout that `nix copy --from` reads.
//!
//! What it writes (formats from `fleet_core::narinfo`, `nar`, `stream`):
//!
//! - `cache/nix-cache-info`, if missing;
//! - per missing path, `cache/nar/<FileHash base32>.nar.zst` (or `.nar.xz`, `.nar`):
//!   the path's NAR, byte-identical to `nix-store --dump`, compressed;
//! - then `cache/<hash>.narinfo` with StorePath, URL, Compression, FileHash,
//!   FileSize, NarHash, NarSize, References, Deriver, CA, and a `Sig` by the cache
//!   key over Nix's fingerprint (signatures the local store already holds are kept).
//!
//! How:
//!
//! 1. The closure and what the local store registered about each of its paths come
//!    from one `nix path-info --json --recursive`; one LIST of `cache/`, at the same
//!    time, tells which narinfos are already there (what `gc` condemned counts as
//!    missing, `crate::gc`), and only the missing paths go further. So a no-op
//!    republish costs one Nix process and one listing. Roots that are not valid make
//!    the closure query fail; only then are they looked up
//!    (`nix-store --check-validity`) to name them.
//! 2. Up to `jobs` paths at once, each on a blocking thread (`pack.rs`; a NAR of at
//!    most 64 KiB on the task itself). A zstd NAR of at most
//!    [`PushSettings::spill_threshold`] bytes (by the NarSize Nix registered) is
//!    serialised whole into memory (`nar::dump_to_vec`), hashed (NarHash, NarSize),
//!    compressed in one call of a zstd context each job keeps from one NAR to the
//!    next, and hashed again (FileHash, FileSize). Larger NARs and the other codecs
//!    stream: `nar::dump` → `HashingWriter` (NarHash, NarSize) → `Encoder` →
//!    `HashingWriter` (FileHash, FileSize) → memory, or a temporary file once the
//!    compressed NAR passes the threshold, the NarSize pledged to zstd, which sizes
//!    its tables for it. The FileHash names the NAR, so it is only known after
//!    compression. The computed NarHash and NarSize must equal what the Nix database
//!    registered; a difference means a corrupted local store, and the path is
//!    refused.
//! 3. The NAR is uploaded (`upload.rs`: one PUT from memory; a multipart upload from
//!    the temporary file) unless the listing already holds an object of that name
//!    and size (left by an interrupted push).
//! 4. The narinfo is written only after its own NAR and after the narinfos of all
//!    its references (`order.rs`): a reader never sees a narinfo without its NAR, nor
//!    one whose closure is incomplete. A rerun after an interruption skips every path
//!    whose narinfo made it, and re-uploads no NAR that made it.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::time::Instant;

use anyhow::Context;
use fleet_core::bucket::BucketError;
use fleet_core::narinfo;
use fleet_core::nixcli::Nix;
use fleet_core::{Bucket, Compression, Key, KeyPrefix, SecretKey, StorePath};
use serde::Serialize;

mod order;
mod pack;
mod upload;

/// Compressed NARs up to this size stay in memory and go up in one PUT.
pub const DEFAULT_SPILL_THRESHOLD: usize = 32 * 1024 * 1024;

/// How to push.
#[derive(Clone, Debug)]
pub struct PushSettings {
    /// NAR compression.
    pub compression: Compression,
    /// Codec level; `None` for the codec's default (zstd 3, xz 6).
    pub level: Option<i32>,
    /// Paths packed and uploaded at once.
    pub jobs: usize,
    /// Draw a progress bar on standard error.
    pub progress: bool,
    /// Compressed NARs larger than this go through a temporary file and a multipart
    /// upload instead of memory and one PUT; zstd NARs up to this size are packed
    /// whole in memory (so a job holds at most about twice this).
    pub spill_threshold: usize,
}

impl Default for PushSettings {
    fn default() -> Self {
        Self {
            compression: Compression::Zstd,
            level: None,
            jobs: crate::default_jobs(),
            progress: false,
            spill_threshold: DEFAULT_SPILL_THRESHOLD,
        }
    }
}

/// What a push did.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct PushSummary {
    /// Paths in the closure of the pushed paths.
    pub closure_paths: usize,
    /// Paths whose narinfo was written by this push.
    pub uploaded: usize,
    /// Paths whose narinfo was already in the cache (nothing done).
    pub skipped: usize,
    /// Of `uploaded`, paths whose NAR file was already there (an interrupted push).
    pub nars_reused: usize,
    /// Uncompressed NAR bytes of the uploaded paths.
    pub nar_bytes: u64,
    /// NAR file bytes sent to the bucket.
    pub file_bytes: u64,
    /// Wall time.
    pub seconds: f64,
}

impl fmt::Display for PushSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
        write!(
            f,
            "{} paths in the closure: {} uploaded, {} already in the cache",
            self.closure_paths, self.uploaded, self.skipped
        )?;
        if self.nars_reused > 0 {
            write!(
                f,
                " ({} of the uploaded had their NAR there already)",
                self.nars_reused
            )?;
        }
        write!(
            f,
            "; {:.1} MiB of NAR, {:.1} MiB sent; {:.2} s",
            mib(self.nar_bytes),
            mib(self.file_bytes),
            self.seconds
        )
    }
}

/// What one LIST of `cache/` says.
#[derive(Debug, Default)]
pub struct CacheListing {
    /// Hash parts of the store paths that have a narinfo.
    pub narinfos: HashSet<String>,
    /// NAR files (`cache/nar/…` keys) and their sizes.
    pub nars: HashMap<String, u64>,
    /// Whether `cache/nix-cache-info` exists.
    pub has_cache_info: bool,
    /// Whether `cache/gc-condemned.json` exists.
    pub has_condemned: bool,
}

impl CacheListing {
    /// Lists `cache/` once: what is there.
    pub async fn read(bucket: &Bucket) -> anyhow::Result<Self> {
        let mut out = CacheListing::default();
        let entries = bucket
            .list(&KeyPrefix::cache())
            .await
            .context("listing the binary cache to see what is already there")?;
        let info_key = Key::cache_info();
        let condemned_key = Key::gc_condemned();
        for e in entries {
            if e.key == condemned_key.as_str() {
                out.has_condemned = true;
            } else if e.key == info_key.as_str() {
                out.has_cache_info = true;
            } else if let Some(name) = e.key.strip_prefix("cache/nar/") {
                if !name.contains('/') {
                    out.nars.insert(e.key.clone(), e.size);
                }
            } else if let Some(hash) = e
                .key
                .strip_prefix("cache/")
                .and_then(|k| k.strip_suffix(".narinfo"))
            {
                out.narinfos.insert(hash.to_owned());
            }
        }
        Ok(out)
    }

    /// What a push may skip: the listing without what `fleet-publish gc` has
    /// condemned (`cache/gc-condemned.json`), which is uploaded again so the gc
    /// keeps it (see [`crate::gc`]).
    pub async fn without_condemned(mut self, bucket: &Bucket) -> anyhow::Result<Self> {
        if !self.has_condemned {
            return Ok(self);
        }
        if let Some(c) = crate::gc::condemned::read(bucket).await? {
            for k in &c.keys {
                self.nars.remove(k);
                if let Some(hash) = k
                    .strip_prefix("cache/")
                    .and_then(|k| k.strip_suffix(".narinfo"))
                {
                    self.narinfos.remove(hash);
                }
            }
        }
        Ok(self)
    }

    /// The paths of `paths` that have no narinfo.
    pub fn missing<'a>(&self, paths: &'a [StorePath]) -> Vec<&'a StorePath> {
        paths.iter().filter(|p| self.is_missing(p)).collect()
    }

    /// Whether `path` has no narinfo.
    pub fn is_missing(&self, path: &StorePath) -> bool {
        !self.narinfos.contains(path.hash().as_str())
    }
}

/// Pushes the closures of `roots` to the bucket's binary cache; see the module docs.
pub async fn push(
    bucket: &Bucket,
    nix: &Nix,
    cache_key: &SecretKey,
    roots: &[StorePath],
    settings: &PushSettings,
) -> anyhow::Result<PushSummary> {
    let start = Instant::now();
    // The two questions are independent: ask them at once. The closure and its
    // metadata come from one Nix process (`nix path-info --recursive`): on a closure
    // of tiny paths a second process was a sixth of the push. The query fails on a
    // root that is not valid; only then is the store asked which roots those are, as
    // that says best what is wrong.
    let (closure, listing) = tokio::join!(nix.closure_info(roots), async {
        CacheListing::read(bucket)
            .await?
            .without_condemned(bucket)
            .await
    });
    let closure = match closure {
        Ok(c) => c,
        Err(e) => {
            crate::check_valid(nix, roots).await?;
            return Err(e).context("reading the closure from the local Nix store");
        }
    };
    let listing = listing?;
    if !listing.has_cache_info {
        match bucket
            .put_if_absent(&Key::cache_info(), narinfo::nix_cache_info())
            .await
        {
            Ok(_) | Err(BucketError::AlreadyExists { .. }) => {}
            Err(e) => return Err(e).context("writing the binary cache's nix-cache-info"),
        }
    }
    let closure_paths = closure.len();
    let infos: Vec<_> = closure
        .into_iter()
        .filter(|i| listing.is_missing(&i.path))
        .collect();
    let mut summary = PushSummary {
        closure_paths,
        skipped: closure_paths - infos.len(),
        ..Default::default()
    };
    if !infos.is_empty() {
        upload::upload_all(
            bucket,
            cache_key,
            infos,
            listing.nars,
            settings,
            &mut summary,
        )
        .await?;
    }
    summary.seconds = start.elapsed().as_secs_f64();
    Ok(summary)
}
