//! The fetch pipeline: bring the missing store paths of a verified manifest's closure
//! from the bucket's Nix binary cache (`cache/`) into the local Nix store, checking
//! everything on the way.
//!
//! [`fetch_closure`] runs these steps (walk and narinfos in `walk.rs`, NARs in
//! `download.rs`, checked by `verify.rs`, imported by `unpack.rs`, or through
//! `staging.rs`'s directory and `waves.rs`, or `serve.rs`; every error in
//! `error.rs`):
//!
//! 1. **Walk.** Breadth-first from the closure's top path over narinfo `References:`,
//!    asking the target store which paths it lacks ([`Nix::invalid_paths`], in
//!    batches). A path the store already has is not walked further: Nix keeps the
//!    closure of every valid path valid, so nothing below it is missing. The top's
//!    narinfo is read first, then one question asks about the top and its
//!    references together (a valid top means nothing to do; one question to the
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
//!    (see `verify.rs`). A server that sends more than announced, or a file that
//!    decompresses past `NarSize`, is cut off there. The bucket hands the body over
//!    ([`Bucket::get_stream`]): from a remote store its chunks go through a channel
//!    to that thread; on a `file://` bucket the thread reads the file itself.
//! 4. **Import**, one of three ways ([`ImportVia`]):
//!    - **unpack** (the default, `unpack.rs`): in the same pass as step 3 the NAR is
//!      unpacked straight into its place in the store's directory, under Nix's
//!      path lock; once every missing path passed, the closure is registered with
//!      `nix-store --load-db` (signed `NarHash`, `NarSize`, references). Nix reads
//!      nothing again. A refusal removes what was unpacked; nothing is registered.
//!    - **staging**: the NAR is written, decompressed, to the staging directory
//!      (`staging.rs`), then `nix copy --no-recursive --from file://<staging>` with
//!      the same trusted keys and `require-sigs` imports it, Nix checking the
//!      signatures and hashes again; then the staging directory is emptied. The
//!      staged narinfos say `Compression: none`, so Nix does not decompress a second
//!      time. Everything is imported at the end, or with
//!      [`FetchLimits::import_in_waves`] in waves while later paths download, in
//!      dependency order, one `nix copy` at a time.
//!    - **substituter**: `serve.rs` serves the verified narinfos to
//!      `nix copy --no-recursive --from http://127.0.0.1:PORT` and streams each NAR
//!      through the checks as Nix asks for it, holding back its last chunk until
//!      every check passed.
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
//! **Restarts.** Unpacked paths are not valid until registered: after a kill a rerun
//! finds them on disk, invalid, removes them and downloads them again. Staged files
//! appear by rename only, so after a kill a rerun finds either nothing or a whole
//! file. A staged NAR file is verified again (locally) before it is reused, and
//! downloaded again if that fails.

mod download;
mod error;
mod serve;
mod staging;
mod unpack;
mod verify;
mod walk;
mod waves;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fleet_core::narinfo::{Compression, MAX_NARINFO_SIZE};
use fleet_core::nixcli::Nix;
use fleet_core::{Bucket, StorePath, TrustedKeys};
use tokio::sync::mpsc;

use download::download_all;
pub use error::FetchError;
pub(crate) use error::local_io_kind;
use staging::Staging;
use unpack::Unpacker;
use walk::{Walk, fetch_narinfo};
use waves::{dependency_order, import};

/// How many paths one `nix-store --check-validity` call asks about: each call costs
/// a process start (about 25 ms), and 2,048 paths of about 80 bytes stay far below
/// the kernel's limit on a command line (2 MiB).
const VALIDITY_BATCH: usize = 2048;
/// Verified narinfos waiting for their NAR download.
const NARINFOS_IN_FLIGHT: usize = 64;
/// Narinfo requests the walk keeps in flight (at least [`FetchLimits::concurrency`]).
/// A narinfo is under a kilobyte: its request costs a round trip and next to no
/// bandwidth or memory, so over a WAN the walk of a closure of many small paths is
/// bound by round trips per request in flight (1,000 paths at 20 ms: 5 s with 4 in
/// flight, under 1 s with 32).
const NARINFOS_AT_ONCE: usize = 32;
/// A NAR of at most this many bytes (its signed `NarSize`) is small: its download
/// writes at most that much decompressed and reads a file bounded by it (plus the
/// codec's slack), so its memory is its buffers, and small downloads may run beyond
/// [`FetchLimits::concurrency`].
const SMALL_NAR: u64 = 64 * 1024;
/// Small NAR downloads running at once on top of [`FetchLimits::concurrency`]: a
/// closure of many small paths is bound by round trips per download in flight, not
/// by bandwidth, as the walk is.
const SMALL_NARS_AT_ONCE: usize = 32;

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
    /// Most NAR bytes (sum of `NarSize`) of the missing paths: about the disk the
    /// unpacked paths (or the staging directory) take.
    pub max_total_nar_size: u64,
    /// NAR downloads running at once. Narinfo requests, and downloads of small NARs
    /// (`NarSize` 64 KiB or less), run up to 32 more at once: they cost round trips,
    /// not bandwidth or memory.
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
    /// How verified NARs reach Nix.
    pub import_via: ImportVia,
}

/// How the verified NARs reach Nix ([`FetchLimits::import_via`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ImportVia {
    /// A verifying substituter on `127.0.0.1` streams each NAR to
    /// `nix copy --from http://…` as it is checked, holding back its last chunk until
    /// every check passed (`serve.rs`): Nix's import overlaps the download and the
    /// checks, and nothing is written twice. [`FetchLimits::import_in_waves`] does not
    /// apply, and nothing is staged. Opt-in: measured slower than [`Self::Staging`]
    /// (decision 27).
    Substituter,
    /// Each NAR is verified into the staging directory, then imported with
    /// `nix copy --from file://…` (at the end, or in waves); a restart reuses what was
    /// staged. For stores fleet cannot write itself.
    Staging,
    /// Each NAR is unpacked straight into the store's directory as it is checked
    /// (`unpack.rs`), and the closure's paths are registered with
    /// `nix-store --load-db` once all passed: one pass over the bytes, and Nix does
    /// not hash them again (decision 30). Needs the default store or a local chroot
    /// store, and root when the store is mounted read-only;
    /// [`FetchLimits::import_in_waves`] does not apply, and nothing is staged. The
    /// default.
    #[default]
    Unpack,
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
            import_via: ImportVia::default(),
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
            import_in_waves: self.import_in_waves && self.import_via == ImportVia::Staging,
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
/// On a refusal nothing was imported: unpacked paths are removed, unregistered.
/// Exceptions, each leaving only paths that passed every check: the waves imported
/// before the refusal with [`FetchLimits::import_in_waves`], the paths Nix already
/// received whole through the substituter, and whatever `nix copy` got through
/// before failing part-way ([`FetchError::ImportFailed`]). Staged files stay for the
/// next try.
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

    let unpacker = match limits.import_via {
        ImportVia::Unpack => Some(Arc::new(Unpacker::open(req.nix, req.closure)?)),
        _ => None,
    };
    let ctx = Ctx {
        bucket: req.bucket,
        nix: req.nix,
        trusted: req.trusted_cache_keys,
        limits,
        root,
        staging: Arc::new(staging),
        url_locks: Mutex::new(HashMap::new()),
        unpacker,
    };
    let nothing_to_do = |mut report: FetchReport| async {
        tracing::debug!(closure = %root, "closure already valid, nothing to fetch");
        report.already_valid = 1;
        ctx.clear_staging().await?;
        Ok(report)
    };
    // The root's narinfo is read first; then one question to the store covers the
    // root and its references (the walk's first level): one `nix-store` start fewer
    // than asking about the root while its narinfo is read, which on a closure of
    // tiny paths is about a twelfth of the fetch. A valid root makes the fetch a
    // no-op; then whatever was wrong with its narinfo does not matter, so a narinfo
    // that cannot be read sends the question about the root alone.
    let (root_ni, root_size) = match fetch_narinfo(&ctx, root.clone()).await {
        Ok(first) => first,
        Err(e) => {
            if invalid_paths(req.nix, std::slice::from_ref(root))
                .await?
                .is_empty()
            {
                return nothing_to_do(report).await;
            }
            return Err(e);
        }
    };
    let mut asked: Vec<StorePath> = root_ni.references.clone();
    asked.push(root.clone());
    asked.sort();
    asked.dedup();
    let invalid: HashSet<StorePath> = invalid_paths(req.nix, &asked).await?.into_iter().collect();
    if !invalid.contains(root) {
        return nothing_to_do(report).await;
    }
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

    if ctx.limits.import_via == ImportVia::Substituter {
        let (walked, narinfos) = walk.run_all(root_ni, level).await?;
        report.already_valid = walked.already_valid;
        report.narinfos = walked.narinfos;
        report.bytes_downloaded = walked.narinfo_bytes;
        let refs: HashMap<StorePath, Vec<StorePath>> = narinfos
            .iter()
            .map(|ni| (ni.store_path.clone(), ni.references.clone()))
            .collect();
        let mut missing: Vec<StorePath> = refs.keys().cloned().collect();
        missing.sort();
        let order = dependency_order(&missing, &refs);
        tracing::info!(closure = %root, paths = order.len(), "importing through the verifying substituter");
        for (path, v) in serve::import_served(&ctx, narinfos, &order).await? {
            report.nar_bytes += v.nar_size;
            report.bytes_downloaded += v.file_size;
            report.fetched.push(path);
        }
        report.fetched.sort();
        return finish(&ctx, report).await;
    }

    let (tx, rx) = mpsc::channel(NARINFOS_IN_FLIGHT);
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    let walking = walk.run(tx, root_ni, level, done_tx);
    let downloading = download_all(&ctx, rx, done_rx, &url);
    let mut walking = std::pin::pin!(walking);
    let mut downloading = std::pin::pin!(downloading);
    let fetched: Result<_, FetchError> = async {
        Ok(tokio::select! {
            w = &mut walking => match w {
                Ok(w) => (w, downloading.await?),
                Err(e) => {
                    // The walk's channel is closed: the downloads take nothing new,
                    // and a wave's `nix copy` under way is let finish rather than
                    // killed in the middle of writing a path (what it imports passed
                    // every check).
                    let _ = downloading.await;
                    return Err(e);
                }
            },
            // A refused download ends the fetch at once (the walk has nothing to
            // finish).
            d = &mut downloading => {
                let d = d?;
                (walking.await?, d)
            }
        })
    }
    .await;
    let (walked, fetched) = match fetched {
        Ok(f) => f,
        Err(e) => {
            if let Some(u) = &ctx.unpacker {
                u.abandon().await;
            }
            return Err(e);
        }
    };
    report.already_valid = walked.already_valid;
    report.narinfos = walked.narinfos;
    report.bytes_downloaded = walked.narinfo_bytes;
    let mut rest = Vec::with_capacity(fetched.nars.len());
    for (path, outcome) in fetched.nars {
        if outcome.valid_meanwhile {
            report.already_valid += 1;
            continue;
        }
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

    if let Some(u) = &ctx.unpacker {
        tracing::info!(closure = %root, paths = rest.len(), "registering unpacked paths");
        u.register(&ctx).await?;
        // `nix-store --load-db` registered every missing path in one transaction,
        // each reference being valid or among them: the closure is valid, and asking
        // the store again would cost a process start.
        ctx.clear_staging().await?;
        return Ok(report);
    }
    tracing::info!(closure = %root, paths = rest.len(), "importing verified paths");
    import(&ctx, &url, &dependency_order(&rest, &fetched.refs)).await?;
    finish(&ctx, report).await
}

/// After the import: checks that the closure is now valid, and empties the staging
/// directory.
async fn finish(ctx: &Ctx<'_>, report: FetchReport) -> Result<FetchReport, FetchError> {
    let root = ctx.root;
    let still = invalid_paths(ctx.nix, std::slice::from_ref(root)).await?;
    if !still.is_empty() {
        return Err(FetchError::ImportFailed {
            root: root.to_string(),
            why: "nix copy succeeded but the closure is still not valid in the store".into(),
        });
    }
    ctx.clear_staging().await?;
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
    /// With [`ImportVia::Unpack`]: the store directory the NARs are unpacked into.
    unpacker: Option<Arc<Unpacker>>,
}

impl Ctx<'_> {
    /// Empties the staging directory (keeping it and its lock).
    async fn clear_staging(&self) -> Result<(), FetchError> {
        let staging = self.staging.clone();
        blocking(move || staging.clear()).await?
    }

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
