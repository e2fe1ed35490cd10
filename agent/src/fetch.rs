//! The fetch pipeline: bring the missing store paths of a verified manifest's closure
//! from the bucket's Nix binary cache (`cache/`) into the local Nix store, checking
//! everything on the way.
//!
//! [`fetch_closure`] runs these steps:
//!
//! 1. **Walk.** Breadth-first from the closure's top path over narinfo `References:`,
//!    asking the target store which paths it lacks ([`Nix::invalid_paths`], in
//!    batches). A path the store already has is not walked further: Nix keeps the
//!    closure of every valid path valid, so nothing below it is missing.
//! 2. **Narinfo.** For each missing path, `GET cache/<hash>.narinfo` under a size
//!    bound; parse it ([`NarInfo::parse`]); refuse it unless its `StorePath:` is the
//!    path asked for (a narinfo for another path is an attack) and a trusted cache key
//!    signed it ([`NarInfo::verify`]: the signature covers the path, `NarHash`,
//!    `NarSize` and `References`).
//! 3. **NAR.** Stream `cache/<URL>` ([`Key::nar`] keeps it inside `cache/nar/`),
//!    a few at once: count and hash the file as it arrives (`FileSize`/`FileHash`),
//!    decompress, count and hash the NAR (the signed `NarSize`/`NarHash`), and check
//!    it with [`fleet_core::nar::validate`], all in one pass on a blocking thread while
//!    the bytes are written to the staging directory (see `verify.rs`). A server
//!    that sends more than announced, or a file that decompresses past `NarSize`, is
//!    cut off there.
//! 4. **Import.** `nix copy --from file://<staging>` with the same trusted keys and
//!    `require-sigs`, so Nix checks the signatures and hashes again; then the
//!    staging directory is emptied.
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
//! at a time is cut off too). Memory stays flat: each download holds a few chunks in
//! flight plus its decoder's window.
//!
//! **Restarts.** Staged files appear by rename only, so after a kill a rerun finds
//! either nothing or a whole file. A staged NAR file is verified again (locally)
//! before it is reused, and downloaded again if that fails.

mod error;
mod staging;
mod verify;

use std::collections::{HashMap, HashSet};
use std::io::{self, Read};
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

/// How many paths one `nix-store --check-validity` call asks about.
const VALIDITY_BATCH: usize = 256;
/// Batches of a NAR file in flight between the download and its verifier.
const CHUNKS_IN_FLIGHT: usize = 4;
/// Size the download's chunks are gathered to before they go to the verifier:
/// stores hand out small chunks (8 KiB from a `file://` bucket), and one hand-over
/// per chunk would cost more than the hashing.
const BATCH: usize = 256 * 1024;
/// Verified narinfos waiting for their NAR download.
const NARINFOS_IN_FLIGHT: usize = 64;

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
        }
    }
}

impl FetchLimits {
    fn normalized(&self) -> Self {
        Self {
            max_narinfo_size: self.max_narinfo_size.min(MAX_NARINFO_SIZE),
            concurrency: self.concurrency.max(1),
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
/// On a refusal nothing was imported. Only `nix copy` failing part-way
/// ([`FetchError::ImportFailed`]) can leave some paths imported, and those passed
/// every check. Verified files stay staged for the next try.
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

    if invalid_paths(req.nix, std::slice::from_ref(root))
        .await?
        .is_empty()
    {
        tracing::debug!(closure = %root, "closure already valid, nothing to fetch");
        report.already_valid = 1;
        blocking(move || staging.clear()).await??;
        return Ok(report);
    }

    let ctx = Ctx {
        bucket: req.bucket,
        nix: req.nix,
        trusted: req.trusted_cache_keys,
        limits,
        root,
        staging: Arc::new(staging),
        url_locks: Mutex::new(HashMap::new()),
    };
    let (tx, rx) = mpsc::channel(NARINFOS_IN_FLIGHT);
    let (walked, nars) = tokio::try_join!(walk(&ctx, tx), download_all(&ctx, rx))?;
    report.already_valid = walked.already_valid;
    report.narinfos = walked.narinfos;
    report.bytes_downloaded = walked.narinfo_bytes;
    let mut paths = Vec::with_capacity(nars.len());
    for (path, outcome) in nars {
        report.nar_bytes += outcome.verified.nar_size;
        if outcome.reused {
            report.reused.push(path.clone());
        } else {
            report.bytes_downloaded += outcome.verified.file_size;
            report.fetched.push(path.clone());
        }
        paths.push(path);
    }
    report.fetched.sort();
    report.reused.sort();
    paths.sort();

    tracing::info!(closure = %root, paths = paths.len(), "importing verified paths");
    req.nix
        .copy_from(&url, &paths, req.trusted_cache_keys)
        .await
        .map_err(|e| FetchError::ImportFailed {
            root: root.to_string(),
            why: e.to_string(),
        })?;
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
async fn walk(ctx: &Ctx<'_>, tx: mpsc::Sender<Arc<NarInfo>>) -> Result<Walked, FetchError> {
    let mut seen: HashSet<StorePath> = HashSet::from([ctx.root.clone()]);
    let mut level = vec![ctx.root.clone()];
    let mut out = Walked {
        already_valid: 0,
        narinfos: 0,
        narinfo_bytes: 0,
    };
    let mut total_nar = 0u64;
    while !level.is_empty() {
        let mut candidates = Vec::new();
        let mut infos = futures::stream::iter(level)
            .map(|p| fetch_narinfo(ctx, p))
            .buffer_unordered(ctx.limits.concurrency);
        while let Some((ni, size)) = infos.try_next().await? {
            out.narinfos += 1;
            out.narinfo_bytes += size;
            total_nar = total_nar.saturating_add(ni.nar_size);
            if total_nar > ctx.limits.max_total_nar_size {
                return Err(FetchError::ClosureTooLarge {
                    root: ctx.root.to_string(),
                    limit: ctx.limits.max_total_nar_size,
                });
            }
            for r in &ni.references {
                if seen.insert(r.clone()) {
                    if seen.len() > ctx.limits.max_paths {
                        return Err(FetchError::TooManyPaths {
                            root: ctx.root.to_string(),
                            limit: ctx.limits.max_paths,
                        });
                    }
                    candidates.push(r.clone());
                }
            }
            if tx.send(ni).await.is_err() {
                // The downloads stopped on an error, which `try_join!` reports.
                return Ok(out);
            }
        }
        drop(infos);
        let missing = invalid_paths(ctx.nix, &candidates).await?;
        out.already_valid += candidates.len() - missing.len();
        level = missing;
    }
    Ok(out)
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

/// Runs the NAR downloads for the narinfos the walk sends, a few at once.
async fn download_all(
    ctx: &Ctx<'_>,
    mut rx: mpsc::Receiver<Arc<NarInfo>>,
) -> Result<Vec<(StorePath, NarOutcome)>, FetchError> {
    futures::stream::poll_fn(|cx| rx.poll_recv(cx))
        .map(|ni| async move {
            let outcome = fetch_nar(ctx, &ni).await?;
            Ok::<_, FetchError>((ni.store_path.clone(), outcome))
        })
        .buffer_unordered(ctx.limits.concurrency)
        .try_collect()
        .await
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

    let outcome = match reuse_staged(&target, &exp).await? {
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
    let (staging, ni2) = (ctx.staging.clone(), ni.clone());
    blocking(move || staging.write_narinfo(&ni2)).await??;
    Ok(outcome)
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
        match verify::verify(file, &exp, None) {
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

/// Reads chunks a download task sends; an `Err` chunk is the download's failure.
struct ChannelReader {
    rx: mpsc::Receiver<Result<Bytes, io::Error>>,
    current: Bytes,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(b)) => self.current = b,
                Some(Err(e)) => return Err(e),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        self.current.advance(n);
        Ok(n)
    }
}

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
    let timeout = |what, limit| FetchError::Timeout {
        path: path.to_string(),
        key: key.to_string(),
        what,
        limit,
    };
    let limits = &ctx.limits;
    let budget =
        limits.request_timeout + Duration::from_secs(exp.file_limit / limits.min_bytes_per_sec);
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
    // A body announced longer than allowed is refused before any of it is read. A
    // shorter one is read: the stream then tells a truncated file (the NAR ends
    // early) from a wrong FileSize (the NAR is whole).
    if announced > exp.file_limit {
        let why = match exp.file_size {
            Some(fs) => {
                format!(
                    "the bucket announces {announced} bytes, but the narinfo's FileSize is {fs}"
                )
            }
            None => format!(
                "the bucket announces {announced} bytes, more than the {} its NarSize allows (the narinfo has no FileSize)",
                exp.file_limit
            ),
        };
        return Err(FetchError::FileSizeMismatch {
            path: path.to_string(),
            key: key.to_string(),
            why,
        });
    }

    let tmp = ctx.staging.temp_file(&ctx.staging.nar_dir(), target)?;
    let (tx, rx) = mpsc::channel(CHUNKS_IN_FLIGHT);
    let exp2 = exp.clone();
    let verifier = tokio::task::spawn_blocking(move || {
        let mut tmp = tmp;
        let mut out = io::BufWriter::with_capacity(256 * 1024, tmp.as_file_mut());
        let source = ChannelReader {
            rx,
            current: Bytes::new(),
        };
        let result = verify::verify(source, &exp2, Some(&mut out)).and_then(|v| {
            io::Write::flush(&mut out).map_err(Refusal::Sink)?;
            Ok(v)
        });
        drop(out);
        (result, tmp)
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
    let (result, tmp) = verifier.await.map_err(|e| FetchError::Internal {
        path: path.to_string(),
        why: format!("the verifier thread failed: {e}"),
    })?;
    if let Some(f) = failure {
        return Err(f);
    }
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
