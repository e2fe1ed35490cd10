//! The fetch pipeline: bring the missing store paths of a verified manifest's closure
//! from the bucket's Nix binary cache (`cache/`) into the local Nix store, checking
//! everything on the way.
//!
//! [`fetch_closure`] runs these steps:
//!
//! 1. **Walk.** Breadth-first from the closure's top path over narinfo `References:`,
//!    asking the target store which paths it lacks ([`Nix::invalid_paths`], in
//!    batches). A path the store already has is not walked further: Nix keeps the
//!    closure of every valid path valid, so nothing below it is missing. The top's
//!    narinfo is read while the store is asked about the top (one question to the
//!    store at a time: concurrent `nix-store` runs on a store not yet initialised
//!    trip over each other).
//! 2. **Narinfo.** For each missing path, `GET cache/<hash>.narinfo` under a size
//!    bound; parse it ([`NarInfo::parse`]); refuse it unless its `StorePath:` is the
//!    path asked for (a narinfo for another path is an attack) and a trusted cache key
//!    signed it ([`NarInfo::verify`]: the signature covers the path, `NarHash`,
//!    `NarSize` and `References`).
//! 3. **NAR.** Read `cache/<URL>` ([`Key::nar`] keeps it inside `cache/nar/`),
//!    a few at once: count and hash the file as it is read (`FileSize`/`FileHash`),
//!    decompress, count and hash the NAR (the signed `NarSize`/`NarHash`), and check
//!    it with [`fleet_core::nar::validate`], all in one pass on a blocking thread
//!    while the NAR, decompressed, is written to the staging directory (see
//!    `verify.rs`). A server that sends more than announced, or a file that
//!    decompresses past `NarSize`, is cut off there. Bodies from a remote store
//!    stream through a channel to that thread; on a `file://` bucket the thread
//!    reads the file itself ([`Bucket::open_local_blocking`]).
//! 4. **Import.** `nix copy --no-recursive --from file://<staging>` with the same
//!    trusted keys and `require-sigs`, so Nix checks the signatures and hashes again;
//!    then the staging directory is emptied. The staged narinfos say
//!    `Compression: none`, so Nix does not decompress a second time. By default
//!    everything is imported at the end; with [`FetchLimits::import_in_waves`],
//!    verified paths are imported while later ones still download, in dependency
//!    order, one `nix copy` at a time.
//!
//! **`FileHash` and `FileSize` are optional.** They are not signed, so anyone who can
//! replace a NAR file can rewrite them too: they catch corruption and a server that
//! over-sends early, but the signed `NarHash`/`NarSize` are the integrity check. A
//! narinfo without them (older caches) is accepted, and the file is then bounded by
//! `NarSize` plus the codec's worst-case growth. When present they must match exactly
//! (Nix 2.8 does not check `FileHash`; fleet does).
//!
//! **Bounds.** Narinfo size ([`FetchLimits::max_narinfo_size`]); claimed and actual
//! NAR and file sizes ([`FetchLimits::max_nar_size`]); number of paths walked and
//! total NAR bytes; a timeout on every request, on every gap in a NAR's body, and an
//! overall deadline per NAR that grows with its size (so a server dripping one byte
//! at a time is cut off too; on a `file://` bucket that deadline bounds the whole
//! read). Memory stays flat: each download holds a few chunks in flight (or one read
//! buffer) plus its decoder's window.
//!
//! **Restarts.** Staged files appear by rename only, so after a kill a rerun finds
//! either nothing or a whole file. A staged NAR file is verified again (locally)
//! before it is reused, and downloaded again if that fails.

mod error;
mod staging;
mod verify;

use std::collections::{HashMap, HashSet};
use std::io::{self, BufRead, Read};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Buf, Bytes};
use fleet_core::bucket::BucketError;
use fleet_core::narinfo::{Compression, MAX_NARINFO_SIZE, NarInfoError};
use fleet_core::nixcli::Nix;
use fleet_core::{Bucket, Key, NarInfo, StorePath, TrustedKeys};
use futures::{StreamExt, TryStreamExt};
use tokio::sync::mpsc;
use tokio::time::Instant;

pub use error::FetchError;
use staging::Staging;
use verify::{Expect, Refusal, Verified};

/// How many paths one `nix-store --check-validity` call asks about: each call costs
/// a process start (about 25 ms), and 2,048 paths of about 80 bytes stay far below
/// the kernel's limit on a command line (2 MiB).
const VALIDITY_BATCH: usize = 2048;
/// Batches of a NAR file in flight between the download and its verifier.
const CHUNKS_IN_FLIGHT: usize = 2;
/// Size the download's chunks are gathered to before they go to the verifier:
/// stores hand out small chunks (8 KiB from a `file://` bucket), and one hand-over
/// per chunk would cost more than the hashing.
const BATCH: usize = 256 * 1024;
/// Verified narinfos waiting for their NAR download.
const NARINFOS_IN_FLIGHT: usize = 64;
/// Buffer of the staged copy's writes (the validator hands over up to 256 KiB at once;
/// larger writes bypass it).
const STAGED_WRITE: usize = 256 * 1024;
/// Read buffer when a staged file is verified again.
const STAGED_READ: usize = 256 * 1024;
/// Read buffer when a NAR file of a `file://` bucket is verified in place.
const LOCAL_READ: usize = 256 * 1024;

/// What to fetch, from where, into which store.
#[derive(Debug)]
pub struct FetchRequest<'a> {
    /// The bucket whose `cache/` holds the closure.
    pub bucket: &'a Bucket,
    /// The closure's top path, from the verified manifest.
    pub closure: &'a StorePath,
    /// Cache keys trusted for narinfos: the agent's configured keys that the manifest
    /// also names (the caller computes the intersection).
    pub trusted_cache_keys: &'a TrustedKeys,
    /// The store to import into.
    pub nix: &'a Nix,
    /// Where to stage the verified cache; created if missing, locked while in use,
    /// emptied after a successful import. Must not be shared with anything else.
    pub staging_dir: &'a Path,
    /// Bounds on sizes, counts, time and parallelism.
    pub limits: FetchLimits,
}

/// Bounds of one fetch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FetchLimits {
    /// Largest NAR accepted, uncompressed (`NarSize`); files are bounded by this plus
    /// the codec's worst-case growth.
    pub max_nar_size: u64,
    /// Largest narinfo accepted, in bytes (at most fleet-core's `MAX_NARINFO_SIZE`).
    pub max_narinfo_size: u64,
    /// Most store paths the walk may visit (missing ones plus the valid ones it meets).
    pub max_paths: usize,
    /// Most NAR bytes (sum of `NarSize`) of the missing paths: the staging directory's
    /// disk use.
    pub max_total_nar_size: u64,
    /// NAR downloads (and narinfo requests) running at once.
    pub concurrency: usize,
    /// Bound on a narinfo request, and on a NAR request until its body starts.
    pub request_timeout: Duration,
    /// Longest gap between two chunks of a NAR's body.
    pub stall_timeout: Duration,
    /// Slowest average transfer accepted, in bytes per second: a NAR file of `n`
    /// bytes must arrive within `request_timeout + n / min_bytes_per_sec`.
    pub min_bytes_per_sec: u64,
    /// Import verified paths in waves while later ones still download (dependency
    /// order, one `nix copy` at a time), instead of all at once at the end. Faster,
    /// since Nix's import overlaps fleet's downloads and checks; but a refusal of a
    /// later path then leaves the verified paths of earlier waves imported (each of
    /// them passed every check, and the garbage collector removes them).
    pub import_in_waves: bool,
    /// Most paths one `nix copy` is given: its command line must stay below the
    /// kernel's limit (about 2 MiB, some 20,000 store paths). More go in dependency
    /// order, batch by batch.
    pub import_batch: usize,
}

impl Default for FetchLimits {
    fn default() -> Self {
        Self {
            max_nar_size: 16 << 30,
            max_narinfo_size: MAX_NARINFO_SIZE,
            max_paths: 100_000,
            max_total_nar_size: 256 << 30,
            concurrency: 4,
            request_timeout: Duration::from_secs(30),
            stall_timeout: Duration::from_secs(30),
            min_bytes_per_sec: 16 * 1024,
            import_in_waves: false,
            import_batch: 2000,
        }
    }
}

impl FetchLimits {
    fn normalized(&self) -> Self {
        Self {
            max_narinfo_size: self.max_narinfo_size.min(MAX_NARINFO_SIZE),
            concurrency: self.concurrency.max(1),
            import_batch: self.import_batch.max(1),
            min_bytes_per_sec: self.min_bytes_per_sec.max(1),
            ..self.clone()
        }
    }

    /// Most compressed bytes a NAR of `nar_size` bytes may take: the NAR itself when
    /// uncompressed, else the NAR plus generous room for the codec's worst-case growth
    /// (zstd and xz add well under 1/64 on incompressible data).
    fn file_bound(compression: Compression, nar_size: u64) -> u64 {
        match compression {
            Compression::None => nar_size,
            _ => nar_size
                .saturating_add(nar_size / 64)
                .saturating_add(64 * 1024),
        }
    }
}

/// What a successful fetch did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FetchReport {
    /// Paths whose NAR file was downloaded and verified, sorted.
    pub fetched: Vec<StorePath>,
    /// Paths whose NAR file an earlier, interrupted fetch had staged and that verified
    /// again, sorted.
    pub reused: Vec<StorePath>,
    /// Valid paths the walk met (the top, if it was valid, or references of missing
    /// paths); their own closures were not walked.
    pub already_valid: usize,
    /// Narinfos downloaded.
    pub narinfos: usize,
    /// Bytes downloaded: narinfos plus NAR files as stored (compressed).
    pub bytes_downloaded: u64,
    /// Uncompressed NAR bytes verified (downloaded and reused).
    pub nar_bytes: u64,
}

impl FetchReport {
    /// Paths imported into the store (fetched and reused).
    pub fn imported(&self) -> usize {
        self.fetched.len() + self.reused.len()
    }
}

/// Fetches the missing paths of `req.closure`, verifies them and imports them into
/// `req.nix`'s store.
///
/// On a refusal nothing was imported, unless [`FetchLimits::import_in_waves`] is set:
/// then the paths of waves imported before the refusal stay (each passed every
/// check). Otherwise only `nix copy` failing part-way ([`FetchError::ImportFailed`])
/// can leave some paths imported, and those passed every check too. Verified files
/// stay staged for the next try.
pub async fn fetch_closure(req: FetchRequest<'_>) -> Result<FetchReport, FetchError> {
    let limits = req.limits.normalized();
    let staging = {
        let dir = req.staging_dir.to_owned();
        blocking(move || Staging::open(&dir)).await??
    };
    // Checked before anything is downloaded: the import needs it.
    let url = staging.nix_url()?;
    let root = req.closure;
    let mut report = FetchReport::default();

    let ctx = Ctx {
        bucket: req.bucket,
        nix: req.nix,
        trusted: req.trusted_cache_keys,
        limits,
        root,
        staging: Arc::new(staging),
        url_locks: Mutex::new(HashMap::new()),
    };
    let nothing_to_do = |mut report: FetchReport| async {
        tracing::debug!(closure = %root, "closure already valid, nothing to fetch");
        report.already_valid = 1;
        let staging = ctx.staging.clone();
        blocking(move || staging.clear()).await??;
        Ok(report)
    };
    // The root's narinfo is read while the store is asked whether the root is valid.
    // When it is, that read was for nothing (it is not reported) and whatever was
    // wrong with the narinfo does not matter. The store is asked one question at a
    // time: two `nix-store` processes starting at once on a store not yet
    // initialised trip over each other.
    let (root_invalid, first) = tokio::join!(
        invalid_paths(req.nix, std::slice::from_ref(root)),
        fetch_narinfo(&ctx, root.clone())
    );
    if root_invalid?.is_empty() {
        return nothing_to_do(report).await;
    }
    let (root_ni, root_size) = first?;
    let mut refs: Vec<StorePath> = root_ni
        .references
        .iter()
        .filter(|r| *r != root)
        .cloned()
        .collect();
    refs.sort();
    refs.dedup();
    let invalid: HashSet<StorePath> = invalid_paths(req.nix, &refs).await?.into_iter().collect();
    let mut walk = Walk::new(&ctx);
    let candidates = walk.take(&root_ni, root_size)?;
    let level: Vec<StorePath> = candidates
        .into_iter()
        .filter(|p| {
            let missing = invalid.contains(p);
            walk.out.already_valid += usize::from(!missing);
            missing
        })
        .collect();

    let (tx, rx) = mpsc::channel(NARINFOS_IN_FLIGHT);
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    let walking = walk.run(tx, root_ni, level, done_tx);
    let downloading = download_all(&ctx, rx, done_rx, &url);
    let mut walking = std::pin::pin!(walking);
    let mut downloading = std::pin::pin!(downloading);
    let (walked, fetched) = tokio::select! {
        w = &mut walking => match w {
            Ok(w) => (w, downloading.await?),
            Err(e) => {
                // The walk's channel is closed: the downloads take nothing new, and a
                // wave's `nix copy` under way is let finish rather than killed in the
                // middle of writing a path (what it imports passed every check).
                let _ = downloading.await;
                return Err(e);
            }
        },
        // A refused download ends the fetch at once (the walk has nothing to finish).
        d = &mut downloading => {
            let d = d?;
            (walking.await?, d)
        }
    };
    report.already_valid = walked.already_valid;
    report.narinfos = walked.narinfos;
    report.bytes_downloaded = walked.narinfo_bytes;
    let mut rest = Vec::with_capacity(fetched.nars.len());
    for (path, outcome) in fetched.nars {
        report.nar_bytes += outcome.verified.nar_size;
        if outcome.reused {
            report.reused.push(path.clone());
        } else {
            report.bytes_downloaded += outcome.verified.file_size;
            report.fetched.push(path.clone());
        }
        if !fetched.imported.contains(&path) {
            rest.push(path);
        }
    }
    report.fetched.sort();
    report.reused.sort();
    rest.sort();

    tracing::info!(closure = %root, paths = rest.len(), "importing verified paths");
    import(&ctx, &url, &dependency_order(&rest, &fetched.refs)).await?;
    let still = invalid_paths(req.nix, std::slice::from_ref(root)).await?;
    if !still.is_empty() {
        return Err(FetchError::ImportFailed {
            root: root.to_string(),
            why: "nix copy succeeded but the closure is still not valid in the store".into(),
        });
    }
    let staging = ctx.staging.clone();
    blocking(move || staging.clear()).await??;
    Ok(report)
}

/// Shared state of one fetch.
struct Ctx<'a> {
    bucket: &'a Bucket,
    nix: &'a Nix,
    trusted: &'a TrustedKeys,
    limits: FetchLimits,
    root: &'a StorePath,
    staging: Arc<Staging>,
    /// One lock per NAR file name: two paths with identical NARs share a file, and
    /// the second must find it staged rather than race the first.
    url_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl Ctx<'_> {
    fn url_lock(&self, url: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut m = self.url_locks.lock().unwrap_or_else(|p| p.into_inner());
        m.entry(url.to_owned()).or_default().clone()
    }
}

/// Runs `f` on a blocking thread.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, FetchError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| FetchError::Internal {
            path: String::new(),
            why: format!("a blocking task failed: {e}"),
        })
}

/// Which of `paths` the store lacks, asked in batches.
async fn invalid_paths(nix: &Nix, paths: &[StorePath]) -> Result<Vec<StorePath>, FetchError> {
    let mut out = Vec::new();
    for chunk in paths.chunks(VALIDITY_BATCH) {
        out.extend(
            nix.invalid_paths(chunk)
                .await
                .map_err(|e| FetchError::StoreQuery(Box::new(e)))?,
        );
    }
    Ok(out)
}

struct Walked {
    already_valid: usize,
    narinfos: usize,
    narinfo_bytes: u64,
}

/// Breadth-first walk over the missing paths; sends each verified narinfo to the NAR
/// downloads as soon as it arrives.
struct Walk<'c, 'a> {
    ctx: &'c Ctx<'a>,
    seen: HashSet<StorePath>,
    total_nar: u64,
    out: Walked,
}

impl<'c, 'a> Walk<'c, 'a> {
    fn new(ctx: &'c Ctx<'a>) -> Self {
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
    fn take(&mut self, ni: &NarInfo, size: u64) -> Result<Vec<StorePath>, FetchError> {
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
    async fn run(
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
                .buffer_unordered(ctx.limits.concurrency);
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

/// Maps a bucket error on `key` (for `path`) to a fetch error.
fn bucket_error(e: BucketError, path: &StorePath, key: &Key, narinfo: bool) -> FetchError {
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

/// Downloads, parses and verifies the narinfo of `path`; returns it and its size.
async fn fetch_narinfo(ctx: &Ctx<'_>, path: StorePath) -> Result<(Arc<NarInfo>, u64), FetchError> {
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

/// How one NAR file got into the staging directory.
struct NarOutcome {
    verified: Verified,
    /// Found staged by an earlier fetch (and verified again) rather than downloaded.
    reused: bool,
}

/// `nix copy` of `paths` (in dependency order: see [`dependency_order`]) from the
/// staging directory at `url`, in batches of [`FetchLimits::import_batch`]: each
/// batch's references are valid already, in an earlier batch or in the same one.
async fn import(ctx: &Ctx<'_>, url: &str, paths: &[StorePath]) -> Result<(), FetchError> {
    for batch in paths.chunks(ctx.limits.import_batch) {
        ctx.nix
            .copy_from(url, batch, ctx.trusted)
            .await
            .map_err(|e| FetchError::ImportFailed {
                root: ctx.root.to_string(),
                why: e.to_string(),
            })?;
    }
    Ok(())
}

/// `paths` ordered so that every path comes after those of its references that are
/// among `paths` (`refs` maps a path to its narinfo's `References`). Self-references
/// are ignored, and a cycle (which Nix never makes) cannot loop: each path is placed
/// once.
fn dependency_order(
    paths: &[StorePath],
    refs: &HashMap<StorePath, Vec<StorePath>>,
) -> Vec<StorePath> {
    let wanted: HashSet<&StorePath> = paths.iter().collect();
    let mut placed: HashSet<&StorePath> = HashSet::with_capacity(paths.len());
    let mut order = Vec::with_capacity(paths.len());
    // Depth-first, without recursion (closures can be deep chains): a path is placed
    // once the references on its stack frame are all placed.
    for start in paths {
        if placed.contains(start) {
            continue;
        }
        let mut stack: Vec<(&StorePath, usize)> = vec![(start, 0)];
        let mut on_stack: HashSet<&StorePath> = HashSet::from([start]);
        while let Some((p, i)) = stack.last_mut() {
            let p: &StorePath = p;
            let deps = refs.get(p).map(Vec::as_slice).unwrap_or_default();
            if let Some(d) = deps.get(*i) {
                *i += 1;
                if d != p && wanted.contains(d) && !placed.contains(d) && on_stack.insert(d) {
                    stack.push((d, 0));
                }
            } else {
                stack.pop();
                placed.insert(p);
                order.push(p.clone());
            }
        }
    }
    order
}

/// What [`download_all`] brought in.
struct Fetched {
    /// Every missing path and how its NAR file was staged.
    nars: Vec<(StorePath, NarOutcome)>,
    /// The paths already imported, in waves ([`FetchLimits::import_in_waves`]).
    imported: HashSet<StorePath>,
    /// Each missing path's references, from its verified narinfo.
    refs: HashMap<StorePath, Vec<StorePath>>,
}

/// Which staged paths may be imported. Once the walk has named every missing path,
/// a staged path waits only for its missing references to be placed in a wave (the
/// same one or an earlier one: `nix copy` orders a wave itself).
struct Waves {
    /// Every missing path, from the walk.
    missing: HashSet<StorePath>,
    /// Paths placed in a wave.
    waved: HashSet<StorePath>,
    /// Missing references not yet placed in a wave, per path whose narinfo arrived.
    blocking: HashMap<StorePath, usize>,
    /// The paths waiting for each missing path.
    dependents: HashMap<StorePath, Vec<StorePath>>,
    /// Staged paths still blocked.
    staged: HashSet<StorePath>,
    /// Staged and unblocked: the start of the next wave.
    ready: Vec<StorePath>,
}

impl Waves {
    fn new(missing: HashSet<StorePath>) -> Self {
        Waves {
            missing,
            waved: HashSet::new(),
            blocking: HashMap::new(),
            dependents: HashMap::new(),
            staged: HashSet::new(),
            ready: Vec::new(),
        }
    }

    /// The narinfo of `p`, with these references, arrived.
    fn arrived(&mut self, p: &StorePath, refs: &[StorePath]) {
        let mut n = 0;
        for r in refs {
            if r != p && self.missing.contains(r) && !self.waved.contains(r) {
                n += 1;
                self.dependents
                    .entry(r.clone())
                    .or_default()
                    .push(p.clone());
            }
        }
        self.blocking.insert(p.clone(), n);
        if n == 0 && self.staged.remove(p) {
            self.ready.push(p.clone());
        }
    }

    /// `p` was staged (its narinfo arrived before).
    fn staged(&mut self, p: StorePath) {
        if self.blocking.get(&p) == Some(&0) {
            self.ready.push(p);
        } else {
            self.staged.insert(p);
        }
    }

    /// Whether to start a wave now. Every `nix copy` costs a process start and a
    /// database open (tens of milliseconds), so a wave waits until a quarter of the
    /// paths not yet imported are ready, or until nothing else will arrive (`all_in`):
    /// a few large waves, not one per path.
    fn worth_a_wave(&self, all_in: bool) -> bool {
        let left = self.missing.len().saturating_sub(self.waved.len());
        !self.ready.is_empty() && (all_in || self.ready.len() * 4 >= left)
    }

    /// The next wave: the ready paths and the staged paths they unblock, transitively.
    fn next(&mut self) -> Vec<StorePath> {
        let mut wave = std::mem::take(&mut self.ready);
        let mut i = 0;
        while i < wave.len() {
            let p = wave[i].clone();
            self.blocking.remove(&p);
            for d in self.dependents.remove(&p).unwrap_or_default() {
                if let Some(n) = self.blocking.get_mut(&d) {
                    *n -= 1;
                    if *n == 0 && self.staged.remove(&d) {
                        wave.push(d);
                    }
                }
            }
            self.waved.insert(p);
            i += 1;
        }
        wave.sort();
        wave
    }
}

/// Runs the NAR downloads for the narinfos the walk sends, a few at once; with
/// [`FetchLimits::import_in_waves`], imports what is verified meanwhile.
async fn download_all(
    ctx: &Ctx<'_>,
    mut rx: mpsc::Receiver<Arc<NarInfo>>,
    mut walk_done: tokio::sync::oneshot::Receiver<HashSet<StorePath>>,
    url: &str,
) -> Result<Fetched, FetchError> {
    let waves_wanted = ctx.limits.import_in_waves;
    let mut downloads = futures::stream::FuturesUnordered::new();
    let mut nars = Vec::new();
    let mut imported = HashSet::new();
    let mut refs: HashMap<StorePath, Vec<StorePath>> = HashMap::new();
    let mut receiving = true;
    let mut walking = waves_wanted;
    // What arrived before the walk named every missing path (when `waves` starts).
    let mut early_refs: Vec<(StorePath, Vec<StorePath>)> = Vec::new();
    let mut early_staged: Vec<StorePath> = Vec::new();
    let mut waves: Option<Waves> = None;
    let mut importing: Option<(Vec<StorePath>, futures::future::BoxFuture<'_, _>)> = None;
    let failure = loop {
        let all_in = !receiving && downloads.is_empty();
        if waves_wanted
            && importing.is_none()
            && let Some(w) = &mut waves
            && w.worth_a_wave(all_in)
        {
            let wave = dependency_order(&w.next(), &refs);
            if !wave.is_empty() {
                tracing::debug!(paths = wave.len(), "importing a wave of verified paths");
                let fut = Box::pin({
                    let wave = wave.clone();
                    async move { import(ctx, url, &wave).await }
                });
                importing = Some((wave, fut));
            }
        }
        if !receiving && downloads.is_empty() && importing.is_none() {
            break None;
        }
        tokio::select! {
            missing = &mut walk_done, if walking => {
                walking = false;
                // A walk that stopped early sends nothing; its error ends the fetch.
                if let Ok(missing) = missing {
                    let mut w = Waves::new(missing);
                    for (p, refs) in early_refs.drain(..) {
                        w.arrived(&p, &refs);
                    }
                    for p in early_staged.drain(..) {
                        w.staged(p);
                    }
                    waves = Some(w);
                }
            },
            ni = rx.recv(), if receiving && downloads.len() < ctx.limits.concurrency => match ni {
                Some(ni) => {
                    refs.insert(ni.store_path.clone(), ni.references.clone());
                    if waves_wanted {
                        match &mut waves {
                            Some(w) => w.arrived(&ni.store_path, &ni.references),
                            None => early_refs.push((ni.store_path.clone(), ni.references.clone())),
                        }
                    }
                    downloads.push(async move {
                        let outcome = fetch_nar(ctx, &ni).await;
                        (ni.store_path.clone(), outcome)
                    });
                }
                None => receiving = false,
            },
            Some((path, outcome)) = downloads.next(), if !downloads.is_empty() => match outcome {
                Ok(o) => {
                    if waves_wanted {
                        match &mut waves {
                            Some(w) => w.staged(path.clone()),
                            None => early_staged.push(path.clone()),
                        }
                    }
                    nars.push((path, o));
                }
                Err(e) => break Some(e),
            },
            done = async { importing.as_mut().expect("guarded").1.as_mut().await }, if importing.is_some() => {
                let (wave, _) = importing.take().expect("guarded");
                match done {
                    Ok(()) => imported.extend(wave),
                    Err(e) => break Some(e),
                }
            }
        }
    };
    if let Some(e) = failure {
        // A `nix copy` under way is let finish rather than killed in the middle of
        // writing a path: what it imports passed every check.
        if let Some((_, fut)) = importing {
            let _ = fut.await;
        }
        return Err(e);
    }
    Ok(Fetched {
        nars,
        imported,
        refs,
    })
}

/// What the narinfo promises about its file, after checking the claims against the
/// bounds.
fn expectations(ni: &NarInfo, limits: &FetchLimits) -> Result<Expect, FetchError> {
    let too_large = |field, claimed, limit| FetchError::NarTooLarge {
        path: ni.store_path.to_string(),
        key: Key::narinfo(ni.store_path.hash()).to_string(),
        field,
        claimed,
        limit,
    };
    if ni.nar_size > limits.max_nar_size {
        return Err(too_large("NarSize", ni.nar_size, limits.max_nar_size));
    }
    let bound = FetchLimits::file_bound(ni.compression, ni.nar_size);
    if let Some(fs) = ni.file_size
        && fs > bound
    {
        return Err(too_large("FileSize", fs, bound));
    }
    Ok(Expect {
        compression: ni.compression,
        file_size: ni.file_size,
        file_hash: ni.file_hash,
        file_limit: ni.file_size.unwrap_or(bound),
        nar_size: ni.nar_size,
        nar_hash: ni.nar_hash,
    })
}

/// Turns a verifier's refusal into the error naming the path and key.
fn refusal_error(r: Refusal, ni: &NarInfo, key: &Key, staged: &Path) -> FetchError {
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

/// Brings the NAR file of `ni` into the staging directory, verified, and stages `ni`.
async fn fetch_nar(ctx: &Ctx<'_>, ni: &Arc<NarInfo>) -> Result<NarOutcome, FetchError> {
    let key = Key::nar(&ni.url).map_err(|e| FetchError::NarinfoMalformed {
        path: ni.store_path.to_string(),
        error: Box::new(NarInfoError::Malformed {
            key: Key::narinfo(ni.store_path.hash()).to_string(),
            why: format!("field URL: {e}"),
        }),
    })?;
    let exp = expectations(ni, &ctx.limits)?;
    let lock = ctx.url_lock(&ni.url);
    let _guard = lock.lock().await;
    let target = ctx.staging.nar_path(&ni.url);

    let outcome = match reuse_staged(&target, &Expect::staged(ni.nar_size, ni.nar_hash)).await? {
        Some(verified) => {
            tracing::debug!(path = %ni.store_path, "reusing staged NAR file");
            NarOutcome {
                verified,
                reused: true,
            }
        }
        None => NarOutcome {
            verified: download(ctx, ni, &key, &exp, &target).await?,
            reused: false,
        },
    };
    let (staging, staged) = (ctx.staging.clone(), staged_narinfo(ni));
    blocking(move || staging.write_narinfo(&staged)).await??;
    Ok(outcome)
}

/// The narinfo Nix reads from the staging directory: the verified one, describing the
/// staged file, which is the NAR uncompressed (`FileHash`/`FileSize` are then the
/// `NarHash`/`NarSize`). The signature covers neither field, so it still verifies.
fn staged_narinfo(ni: &NarInfo) -> NarInfo {
    NarInfo {
        compression: Compression::None,
        file_hash: Some(ni.nar_hash),
        file_size: Some(ni.nar_size),
        ..ni.clone()
    }
}

/// Verifies a NAR file an earlier fetch staged at `target`; removes it if it does not
/// verify. `None` when there is none (or it was removed).
async fn reuse_staged(target: &Path, exp: &Expect) -> Result<Option<Verified>, FetchError> {
    let (target, exp) = (target.to_owned(), exp.clone());
    blocking(move || {
        let file = match std::fs::File::open(&target) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(FetchError::Staging {
                    action: "opening",
                    path: target,
                    error: source,
                });
            }
        };
        match verify::verify(io::BufReader::with_capacity(STAGED_READ, file), &exp, None) {
            Ok(v) => Ok(Some(v)),
            Err(r) => {
                tracing::info!(file = %target.display(), refusal = ?r, "staged NAR file does not verify; downloading it again");
                match std::fs::remove_file(&target) {
                    Ok(()) => Ok(None),
                    Err(source) => Err(FetchError::Staging {
                        action: "removing",
                        path: target,
                        error: source,
                    }),
                }
            }
        }
    })
    .await?
}

/// Reads chunks a download task sends, handing them out in place (no copy); an `Err`
/// chunk is the download's failure.
struct ChannelReader {
    rx: mpsc::Receiver<Result<Bytes, io::Error>>,
    current: Bytes,
}

impl BufRead for ChannelReader {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(b)) => self.current = b,
                Some(Err(e)) => return Err(e),
                None => break,
            }
        }
        Ok(&self.current)
    }

    fn consume(&mut self, n: usize) {
        self.current.advance(n.min(self.current.len()));
    }
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let avail = self.fill_buf()?;
        let n = buf.len().min(avail.len());
        buf[..n].copy_from_slice(&avail[..n]);
        self.consume(n);
        Ok(n)
    }
}

/// Why a body announced as `announced` bytes is refused before any of it is read, if
/// it is longer than allowed. A shorter one is read: the stream then tells a
/// truncated file (the NAR ends early) from a wrong FileSize (the NAR is whole).
fn announced_too_long(exp: &Expect, announced: u64) -> Option<String> {
    if announced <= exp.file_limit {
        return None;
    }
    Some(match exp.file_size {
        Some(fs) => {
            format!("the bucket announces {announced} bytes, but the narinfo's FileSize is {fs}")
        }
        None => format!(
            "the bucket announces {announced} bytes, more than the {} its NarSize allows (the narinfo has no FileSize)",
            exp.file_limit
        ),
    })
}

/// How a NAR file was verified into its temporary staged copy.
type Checked = (Result<Verified, Refusal>, tempfile::NamedTempFile);

/// Downloads the NAR file at `key` into a temporary file next to `target`, verifying
/// it on a blocking thread as it arrives; renames it to `target` once it verified.
async fn download(
    ctx: &Ctx<'_>,
    ni: &NarInfo,
    key: &Key,
    exp: &Expect,
    target: &Path,
) -> Result<Verified, FetchError> {
    let path = &ni.store_path;
    let limits = &ctx.limits;
    let budget =
        limits.request_timeout + Duration::from_secs(exp.file_limit / limits.min_bytes_per_sec);
    let tmp = ctx.staging.temp_file(&ctx.staging.nar_dir(), target)?;
    let (result, tmp) = match download_local(ctx, ni, key, exp, tmp, budget).await? {
        Ok(checked) => checked,
        Err(tmp) => download_stream(ctx, ni, key, exp, tmp, budget).await?,
    };
    let verified = result.map_err(|r| refusal_error(r, ni, key, tmp.path()))?;
    let target = target.to_owned();
    blocking(move || {
        tmp.persist(&target).map_err(|e| FetchError::Staging {
            action: "renaming into place",
            path: target,
            error: e.error,
        })
    })
    .await??;
    tracing::debug!(%path, bytes = verified.file_size, "NAR file verified and staged");
    Ok(verified)
}

/// Verifies a NAR file of a `file://` bucket straight from the file, on one blocking
/// thread: no chunks handed between threads, no copies but the decoder's. The whole
/// read is bounded by `budget` (a hung network filesystem); the stall timeout is for
/// streamed bodies. `Err(tmp)` when the bucket is not local.
async fn download_local(
    ctx: &Ctx<'_>,
    ni: &NarInfo,
    key: &Key,
    exp: &Expect,
    tmp: tempfile::NamedTempFile,
    budget: Duration,
) -> Result<Result<Checked, tempfile::NamedTempFile>, FetchError> {
    enum Local {
        Remote(tempfile::NamedTempFile),
        Open(BucketError),
        TooLong(String),
        Checked(Checked),
    }
    let path = &ni.store_path;
    let (bucket, key2, exp2) = (ctx.bucket.clone(), key.clone(), exp.clone());
    let task = tokio::task::spawn_blocking(move || {
        let (announced, file) = match bucket.open_local_blocking(&key2) {
            None => return Local::Remote(tmp),
            Some(Err(e)) => return Local::Open(e),
            Some(Ok(opened)) => opened,
        };
        if let Some(why) = announced_too_long(&exp2, announced) {
            return Local::TooLong(why);
        }
        let source = io::BufReader::with_capacity(LOCAL_READ, file);
        match verify_into(source, &exp2, tmp) {
            // The source is the bucket's own file: its read errors are the bucket's.
            (Err(Refusal::Source(e)), _) => Local::Open(BucketError::Other {
                url: bucket.url().to_string(),
                key: key2.to_string(),
                op: fleet_core::bucket::Op::Read,
                why: e.to_string(),
            }),
            checked => Local::Checked(checked),
        }
    });
    let done = tokio::time::timeout(budget, task)
        .await
        .map_err(|_| FetchError::Timeout {
            path: path.to_string(),
            key: key.to_string(),
            what: "the NAR file was not read before its deadline (request timeout plus size over the minimum transfer rate)",
            limit: budget,
        })?
        .map_err(|e| FetchError::Internal {
            path: path.to_string(),
            why: format!("the verifier thread failed: {e}"),
        })?;
    match done {
        Local::Remote(tmp) => Ok(Err(tmp)),
        Local::Open(e) => Err(bucket_error(e, path, key, false)),
        Local::TooLong(why) => Err(FetchError::FileSizeMismatch {
            path: path.to_string(),
            key: key.to_string(),
            why,
        }),
        Local::Checked(checked) => Ok(Ok(checked)),
    }
}

/// Runs [`verify::verify`] on `source`, writing the NAR to `tmp`.
fn verify_into(source: impl BufRead, exp: &Expect, mut tmp: tempfile::NamedTempFile) -> Checked {
    let mut out = io::BufWriter::with_capacity(STAGED_WRITE, tmp.as_file_mut());
    let result = verify::verify(source, exp, Some(&mut out)).and_then(|v| {
        io::Write::flush(&mut out).map_err(Refusal::Sink)?;
        Ok(v)
    });
    drop(out);
    (result, tmp)
}

/// Streams the NAR file at `key` from the bucket into a verifier on a blocking
/// thread, bounded in time (request timeout, stall timeout, overall `budget`).
async fn download_stream(
    ctx: &Ctx<'_>,
    ni: &NarInfo,
    key: &Key,
    exp: &Expect,
    tmp: tempfile::NamedTempFile,
    budget: Duration,
) -> Result<Checked, FetchError> {
    let path = &ni.store_path;
    let timeout = |what, limit| FetchError::Timeout {
        path: path.to_string(),
        key: key.to_string(),
        what,
        limit,
    };
    let limits = &ctx.limits;
    let deadline = Instant::now() + budget;
    let (announced, mut body) =
        tokio::time::timeout(limits.request_timeout, ctx.bucket.get_stream(key))
            .await
            .map_err(|_| {
                timeout(
                    "the NAR request got no answer in time",
                    limits.request_timeout,
                )
            })?
            .map_err(|e| bucket_error(e, path, key, false))?;
    if let Some(why) = announced_too_long(exp, announced) {
        return Err(FetchError::FileSizeMismatch {
            path: path.to_string(),
            key: key.to_string(),
            why,
        });
    }

    let (tx, rx) = mpsc::channel(CHUNKS_IN_FLIGHT);
    let exp2 = exp.clone();
    let verifier = tokio::task::spawn_blocking(move || {
        let source = ChannelReader {
            rx,
            current: Bytes::new(),
        };
        verify_into(source, &exp2, tmp)
    });

    // Pump the body into the verifier, bounded in time.
    let mut failure = None;
    let mut batch = bytes::BytesMut::new();
    loop {
        let now = Instant::now();
        let wait_until = deadline.min(now + limits.stall_timeout);
        let next = match tokio::time::timeout_at(wait_until, body.next()).await {
            Ok(n) => n,
            Err(_) => {
                failure = Some(if Instant::now() >= deadline {
                    timeout(
                        "the NAR file did not arrive before its deadline (request timeout plus size over the minimum transfer rate)",
                        budget,
                    )
                } else {
                    timeout("the NAR body stalled", limits.stall_timeout)
                });
                break;
            }
        };
        match next {
            Some(Ok(chunk)) => {
                let ready = if batch.is_empty() && chunk.len() >= BATCH {
                    chunk
                } else {
                    batch.extend_from_slice(&chunk);
                    if batch.len() < BATCH {
                        continue;
                    }
                    batch.split().freeze()
                };
                if tx.send(Ok(ready)).await.is_err() {
                    // The verifier stopped: it has its answer.
                    break;
                }
            }
            Some(Err(e)) => {
                failure = Some(bucket_error(e, path, key, false));
                break;
            }
            None => {
                if !batch.is_empty() {
                    let _ = tx.send(Ok(batch.split().freeze())).await;
                }
                break;
            }
        }
    }
    if failure.is_some() {
        // Tell the verifier the stream failed, so it does not mistake it for an end.
        let _ = tx
            .send(Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "download failed",
            )))
            .await;
    }
    drop(tx);
    drop(body);
    let checked = verifier.await.map_err(|e| FetchError::Internal {
        path: path.to_string(),
        why: format!("the verifier thread failed: {e}"),
    })?;
    if let Some(f) = failure {
        return Err(f);
    }
    Ok(checked)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sp(name: &str) -> StorePath {
        let c = name.as_bytes()[0] as char;
        StorePath::new(&format!("/nix/store/{}-{name}", c.to_string().repeat(32))).unwrap()
    }

    #[test]
    fn dependency_order_puts_references_first() {
        // d -> b, c, d (itself), x (not among the paths); b -> a; c -> a, b; a -> v.
        let (a, b, c, d, v, x) = (sp("a"), sp("b"), sp("c"), sp("d"), sp("v"), sp("x"));
        let refs = HashMap::from([
            (d.clone(), vec![b.clone(), c.clone(), d.clone(), x.clone()]),
            (b.clone(), vec![a.clone()]),
            (c.clone(), vec![a.clone(), b.clone()]),
            (a.clone(), vec![v.clone()]),
        ]);
        for paths in [
            vec![d.clone(), c.clone(), b.clone(), a.clone()],
            vec![a.clone(), b.clone(), c.clone(), d.clone()],
            vec![c.clone(), a.clone(), d.clone(), b.clone()],
        ] {
            let order = dependency_order(&paths, &refs);
            assert_eq!(order.len(), 4, "{order:?}");
            let at = |p: &StorePath| order.iter().position(|q| q == p).unwrap();
            assert!(
                at(&a) < at(&b) && at(&b) < at(&c) && at(&c) < at(&d),
                "{order:?}"
            );
        }
        // A cycle (Nix never makes one) still places every path once.
        let cyclic = HashMap::from([(a.clone(), vec![b.clone()]), (b.clone(), vec![a.clone()])]);
        let order = dependency_order(&[a.clone(), b.clone()], &cyclic);
        assert_eq!(order.len(), 2);
    }

    #[test]
    fn waves_follow_dependency_order_and_wait_for_staging() {
        // d -> b, c (and itself); b -> a; c -> a; a -> v, which the store has.
        let (a, b, c, d, v) = (sp("a"), sp("b"), sp("c"), sp("d"), sp("v"));
        let mut w = Waves::new(HashSet::from([a.clone(), b.clone(), c.clone(), d.clone()]));
        w.arrived(&d, &[b.clone(), c.clone(), d.clone()]);
        w.arrived(&b, std::slice::from_ref(&a));
        w.arrived(&c, std::slice::from_ref(&a));
        w.arrived(&a, std::slice::from_ref(&v));
        w.staged(d.clone());
        w.staged(b.clone());
        // Nothing is ready: d and b wait for missing references.
        assert!(!w.worth_a_wave(true));
        assert!(w.next().is_empty());
        w.staged(a.clone());
        // a unblocks b in the same wave; c is not staged, so d waits.
        assert!(w.worth_a_wave(true));
        assert_eq!(w.next(), {
            let mut v = vec![a.clone(), b.clone()];
            v.sort();
            v
        });
        w.staged(c.clone());
        assert_eq!(w.next(), {
            let mut v = vec![c.clone(), d.clone()];
            v.sort();
            v
        });
        assert!(w.next().is_empty());
    }

    #[test]
    fn small_waves_wait_unless_nothing_else_comes() {
        let paths: Vec<StorePath> = ["a", "b", "c", "d", "f", "g", "h", "i"]
            .iter()
            .map(|n| sp(n))
            .collect();
        let mut w = Waves::new(paths.iter().cloned().collect());
        for p in &paths {
            w.arrived(p, &[]);
        }
        w.staged(paths[0].clone());
        // One ready path of eight left: not worth a `nix copy` yet...
        assert!(!w.worth_a_wave(false));
        // ...unless every download is over.
        assert!(w.worth_a_wave(true));
        w.staged(paths[1].clone());
        assert!(w.worth_a_wave(false));
        assert_eq!(w.next().len(), 2);
        // Paths that arrive after their references were imported are not blocked.
        let late = sp("z");
        let mut w = Waves::new(HashSet::from([paths[0].clone(), late.clone()]));
        w.arrived(&paths[0], &[]);
        w.staged(paths[0].clone());
        assert_eq!(w.next().len(), 1);
        w.arrived(&late, &[paths[0].clone()]);
        w.staged(late.clone());
        assert_eq!(w.next(), vec![late]);
    }
}
