//! `fleet-publish push`: uploads store paths and their closures to the bucket's
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
//! 1. The closure comes from the local store (`nix-store --query --requisites`); one
//!    LIST of `cache/` tells which narinfos are already there, and only the missing
//!    paths go further. `nix path-info` is asked about those only, so a no-op
//!    republish costs a validity check of the roots, the closure query and one
//!    listing, whatever the closure size; the three run at once (as do `nix path-info`
//!    and writing `nix-cache-info`).
//! 2. Up to `jobs` paths at once, each on a blocking thread: `nar::dump` →
//!    [`HashingWriter`] (NarHash, NarSize) → [`Encoder`] → [`HashingWriter`]
//!    (FileHash, FileSize) → memory, or a temporary file once the compressed NAR
//!    passes [`PushSettings::spill_threshold`]. The FileHash names the NAR, so it is
//!    only known after compression. The computed NarHash and NarSize must equal what
//!    the Nix database registered; a difference means a corrupted local store, and the
//!    path is refused.
//! 3. The NAR is uploaded (one PUT from memory; a multipart upload from the temporary
//!    file) unless the listing already holds an object of that name and size (left by
//!    an interrupted push).
//! 4. The narinfo is written only after its own NAR and after the narinfos of all
//!    its references: a reader never sees a narinfo without its NAR, nor one whose
//!    closure is incomplete. A rerun after an interruption skips every path whose
//!    narinfo made it, and re-uploads no NAR that made it.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::io::{self, Seek, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, bail};
use bytes::{Bytes, BytesMut};
use fleet_core::bucket::BucketError;
use fleet_core::narinfo::{self, Sha256Hash};
use fleet_core::nixcli::{Nix, PathInfo};
use fleet_core::stream::{Encoder, HashingWriter};
use fleet_core::{Bucket, Compression, Key, KeyPrefix, NarInfo, SecretKey, Signature, StorePath};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;
use tokio::io::AsyncReadExt;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

use crate::config::{self, PushArgs};

/// Compressed NARs up to this size stay in memory and go up in one PUT.
pub const DEFAULT_SPILL_THRESHOLD: usize = 32 * 1024 * 1024;

/// Bytes read from a temporary file per part of a multipart upload.
const UPLOAD_CHUNK: usize = 8 * 1024 * 1024;

/// `nix path-info` is asked about this many paths per call: each call costs a process
/// start, and 2,000 paths of about 80 bytes stay far below the kernel's limit on a
/// command line (2 MiB).
const PATH_INFO_BATCH: usize = 2000;

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
    /// upload instead of memory and one PUT.
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
}

impl CacheListing {
    /// Lists `cache/` once.
    pub async fn read(bucket: &Bucket) -> anyhow::Result<Self> {
        let mut out = CacheListing::default();
        let entries = bucket
            .list(&KeyPrefix::cache())
            .await
            .context("listing the binary cache to see what is already there")?;
        let info_key = Key::cache_info();
        for e in entries {
            if e.key == info_key.as_str() {
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

    /// The paths of `paths` that have no narinfo.
    pub fn missing<'a>(&self, paths: &'a [StorePath]) -> Vec<&'a StorePath> {
        paths
            .iter()
            .filter(|p| !self.narinfos.contains(p.hash().as_str()))
            .collect()
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
    // The three questions are independent: ask them at once. The validity check's
    // answer is looked at first, as it says best what is wrong with an unbuilt root.
    let (valid, closure, listing) = tokio::join!(
        crate::check_valid(nix, roots),
        nix.closure(roots),
        CacheListing::read(bucket)
    );
    valid?;
    let closure = closure.context("listing the closure in the local Nix store")?;
    let listing = listing?;
    let write_cache_info = async {
        if listing.has_cache_info {
            return Ok(());
        }
        match bucket
            .put_if_absent(&Key::cache_info(), narinfo::nix_cache_info())
            .await
        {
            Ok(_) | Err(BucketError::AlreadyExists { .. }) => Ok(()),
            Err(e) => Err(e).context("writing the binary cache's nix-cache-info"),
        }
    };
    let missing: Vec<StorePath> = listing.missing(&closure).into_iter().cloned().collect();
    let read_infos = async {
        let mut infos = Vec::with_capacity(missing.len());
        for batch in missing.chunks(PATH_INFO_BATCH) {
            infos.extend(
                nix.path_info(batch)
                    .await
                    .context("reading path info from the local Nix store")?,
            );
        }
        anyhow::Ok(infos)
    };
    let (wrote, infos) = tokio::join!(write_cache_info, read_infos);
    wrote?;
    let infos = infos?;
    let mut summary = PushSummary {
        closure_paths: closure.len(),
        skipped: closure.len() - missing.len(),
        ..Default::default()
    };
    if !missing.is_empty() {
        upload_all(
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

/// Whether a path's narinfo has been written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Pending,
    Done,
    Failed,
}

/// What one path's upload did.
struct Uploaded {
    nar_size: u64,
    file_size: u64,
    nar_reused: bool,
}

/// Shared by the per-path tasks.
struct Ctx {
    bucket: Bucket,
    key: SecretKey,
    settings: PushSettings,
    existing_nars: HashMap<String, u64>,
    jobs: Semaphore,
    progress: ProgressBar,
    /// Buffers of compressed NARs already uploaded, for the next ones: a fresh
    /// buffer per NAR costs a page fault per 4 KiB written to it.
    buffers: std::sync::Mutex<Vec<Vec<u8>>>,
}

impl Ctx {
    fn take_buffer(&self) -> Vec<u8> {
        let mut pool = self.buffers.lock().unwrap_or_else(|p| p.into_inner());
        pool.pop().unwrap_or_default()
    }

    fn give_back(&self, mut buf: Vec<u8>) {
        buf.clear();
        let mut pool = self.buffers.lock().unwrap_or_else(|p| p.into_inner());
        // At most one per job is ever in use at once.
        if pool.len() < self.settings.jobs {
            pool.push(buf);
        }
    }
}

/// Orders `infos` so every path comes after the paths it references.
fn topological_order(infos: &[PathInfo]) -> anyhow::Result<Vec<usize>> {
    let index: HashMap<&StorePath, usize> = infos
        .iter()
        .enumerate()
        .map(|(i, p)| (&p.path, i))
        .collect();
    let mut pending_refs = vec![0usize; infos.len()];
    let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); infos.len()];
    for (i, info) in infos.iter().enumerate() {
        for r in &info.references {
            if r == &info.path {
                continue;
            }
            if let Some(&j) = index.get(r) {
                pending_refs[i] += 1;
                dependents[j].push(i);
            }
        }
    }
    let mut ready: Vec<usize> = (0..infos.len()).filter(|&i| pending_refs[i] == 0).collect();
    ready.reverse();
    let mut order = Vec::with_capacity(infos.len());
    while let Some(i) = ready.pop() {
        order.push(i);
        for &d in &dependents[i] {
            pending_refs[d] -= 1;
            if pending_refs[d] == 0 {
                ready.push(d);
            }
        }
    }
    if order.len() != infos.len() {
        bail!(
            "the store paths to push reference each other in a cycle, which a Nix store never \
             holds: check the local store (nix-store --verify --check-contents)"
        );
    }
    Ok(order)
}

async fn upload_all(
    bucket: &Bucket,
    key: &SecretKey,
    infos: Vec<PathInfo>,
    existing_nars: HashMap<String, u64>,
    settings: &PushSettings,
    summary: &mut PushSummary,
) -> anyhow::Result<()> {
    let order = topological_order(&infos)?;
    let total: u64 = infos.iter().map(|i| i.nar_size).sum();
    let progress = if settings.progress {
        let pb = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
        pb.set_style(
            ProgressStyle::with_template(
                "{spinner} {elapsed_precise} [{bar:30}] {bytes}/{total_bytes} NAR, {bytes_per_sec} {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        pb.set_message(format!("0/{} paths", infos.len()));
        pb
    } else {
        ProgressBar::hidden()
    };
    let ctx = Arc::new(Ctx {
        bucket: bucket.clone(),
        key: key.clone(),
        settings: settings.clone(),
        existing_nars,
        jobs: Semaphore::new(settings.jobs.max(1)),
        progress: progress.clone(),
        buffers: std::sync::Mutex::new(Vec::new()),
    });
    let index: HashMap<StorePath, usize> = infos
        .iter()
        .enumerate()
        .map(|(i, p)| (p.path.clone(), i))
        .collect();
    let (senders, receivers): (Vec<_>, Vec<_>) = (0..infos.len())
        .map(|_| watch::channel(State::Pending))
        .unzip();
    let mut senders: Vec<Option<watch::Sender<State>>> = senders.into_iter().map(Some).collect();
    let n = infos.len();
    let mut infos: Vec<Option<PathInfo>> = infos.into_iter().map(Some).collect();
    let mut tasks = JoinSet::new();
    // Spawned in topological order; the semaphore is fair, so packing follows it and
    // narinfos can be written as early as possible.
    for i in order {
        let Some(info) = infos[i].take() else {
            continue;
        };
        let Some(tx) = senders[i].take() else {
            continue;
        };
        let deps: Vec<(StorePath, watch::Receiver<State>)> = info
            .references
            .iter()
            .filter(|r| **r != info.path)
            .filter_map(|r| index.get(r).map(|&j| (r.clone(), receivers[j].clone())))
            .collect();
        let ctx = ctx.clone();
        tasks.spawn(async move {
            let result = upload_one(&ctx, &info, deps).await;
            let _ = tx.send(if result.is_ok() {
                State::Done
            } else {
                State::Failed
            });
            result
        });
    }
    let mut done = 0usize;
    while let Some(joined) = tasks.join_next().await {
        let outcome = match joined {
            Ok(Ok(o)) => o,
            Ok(Err(e)) => {
                progress.abandon();
                tasks.abort_all();
                return Err(e);
            }
            Err(e) => {
                progress.abandon();
                tasks.abort_all();
                bail!("an upload task stopped unexpectedly: {e}");
            }
        };
        done += 1;
        summary.uploaded += 1;
        summary.nar_bytes += outcome.nar_size;
        if outcome.nar_reused {
            summary.nars_reused += 1;
        } else {
            summary.file_bytes += outcome.file_size;
        }
        progress.set_message(format!("{done}/{n} paths"));
    }
    progress.finish_and_clear();
    Ok(())
}

async fn upload_one(
    ctx: &Ctx,
    info: &PathInfo,
    deps: Vec<(StorePath, watch::Receiver<State>)>,
) -> anyhow::Result<Uploaded> {
    let path = &info.path;
    let s = &ctx.settings;
    let (sums, nar_key, nar_reused) = {
        let _permit = ctx
            .jobs
            .acquire()
            .await
            .context("the upload queue closed")?;
        let (p, compression, level, spill, hint) = (
            path.clone(),
            s.compression,
            s.level,
            s.spill_threshold,
            info.nar_size,
        );
        let buf = ctx.take_buffer();
        let packed =
            tokio::task::spawn_blocking(move || pack(&p, compression, level, spill, hint, buf))
                .await
                .context("the packing thread stopped unexpectedly")?
                .with_context(|| format!("serialising and compressing {path}"))?;
        let Packed { sums, data } = packed;
        if sums.nar_hash != info.nar_hash || sums.nar_size != info.nar_size {
            bail!(
                "{path} in the local store does not match what the Nix database registered for it: \
                 its contents hash to {} ({} bytes) but Nix recorded {} ({} bytes). The store is \
                 corrupted or the path was modified; repair it (nix-store --verify --check-contents \
                 --repair) before pushing. Nothing of it was uploaded.",
                sums.nar_hash,
                sums.nar_size,
                info.nar_hash,
                info.nar_size
            );
        }
        let url = format!(
            "nar/{}.nar{}",
            sums.file_hash.to_base32(),
            s.compression.extension()
        );
        let nar_key = Key::nar(&url).context("making the NAR file name")?;
        let reused = ctx.existing_nars.get(nar_key.as_str()) == Some(&sums.file_size);
        let spare = if reused {
            match data {
                Data::Mem(v) => Some(v),
                Data::File(_) => None,
            }
        } else {
            upload_nar(&ctx.bucket, &nar_key, data)
                .await
                .with_context(|| format!("uploading the NAR of {path}"))?
        };
        if let Some(buf) = spare {
            ctx.give_back(buf);
        }
        (sums, nar_key, reused)
    };

    // The narinfo waits for its references' narinfos: a reader that finds it can
    // fetch the whole closure.
    for (r, mut rx) in deps {
        let state = *rx
            .wait_for(|st| *st != State::Pending)
            .await
            .map_err(|_| anyhow::anyhow!("the upload of {r} was cancelled"))?;
        if state == State::Failed {
            bail!("not writing the narinfo of {path}: its reference {r} failed to upload");
        }
    }

    let mut references = info.references.clone();
    references.sort();
    let mut ni = NarInfo {
        store_path: path.clone(),
        url: nar_key
            .as_str()
            .strip_prefix("cache/")
            .unwrap_or(nar_key.as_str())
            .to_owned(),
        compression: s.compression,
        file_hash: Some(sums.file_hash),
        file_size: Some(sums.file_size),
        nar_hash: sums.nar_hash,
        nar_size: sums.nar_size,
        references,
        deriver: info.deriver.as_ref().map(StorePath::base_name),
        // Signatures the local store holds (an upstream cache's) stay valid: same
        // fingerprint.
        sigs: info
            .signatures
            .iter()
            .filter_map(|s| Signature::parse(s).ok())
            .collect(),
        ca: info.ca.clone(),
    };
    ni.sign(&ctx.key);
    let ni_key = Key::narinfo(path.hash());
    ctx.bucket
        .put(&ni_key, ni.to_text())
        .await
        .with_context(|| format!("writing the narinfo of {path}"))?;
    tracing::debug!(%path, key = %ni_key, nar_reused, "uploaded");
    ctx.progress.inc(sums.nar_size);
    Ok(Uploaded {
        nar_size: sums.nar_size,
        file_size: sums.file_size,
        nar_reused,
    })
}

/// Hashes and sizes of a NAR and of its compressed file.
#[derive(Clone, Copy, Debug)]
struct Sums {
    nar_hash: Sha256Hash,
    nar_size: u64,
    file_hash: Sha256Hash,
    file_size: u64,
}

/// A compressed NAR ready to upload.
struct Packed {
    sums: Sums,
    data: Data,
}

/// Where a compressed NAR waits for its upload.
enum Data {
    Mem(Vec<u8>),
    /// An unnamed temporary file (removed by the OS when closed), rewound.
    File(std::fs::File),
}

/// Memory until `threshold` bytes, then an unnamed temporary file.
struct Spill {
    threshold: usize,
    mem: Vec<u8>,
    file: Option<io::BufWriter<std::fs::File>>,
}

impl Write for Spill {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if let Some(f) = &mut self.file {
            return f.write(buf);
        }
        if self.mem.len() + buf.len() > self.threshold {
            let mut f = io::BufWriter::with_capacity(1024 * 1024, tempfile::tempfile()?);
            f.write_all(&self.mem)?;
            self.mem = Vec::new();
            f.write_all(buf)?;
            self.file = Some(f);
            return Ok(buf.len());
        }
        self.mem.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        match &mut self.file {
            Some(f) => f.flush(),
            None => Ok(()),
        }
    }
}

impl Spill {
    fn finish(self) -> io::Result<Data> {
        match self.file {
            None => Ok(Data::Mem(self.mem)),
            Some(w) => {
                let mut f = w.into_inner().map_err(|e| e.into_error())?;
                f.rewind()?;
                Ok(Data::File(f))
            }
        }
    }
}

/// Serialises `path` as a NAR and compresses it, hashing both; see the module docs.
/// `nar_size` (what Nix registered) sizes the buffer `mem` (empty, possibly used
/// before), so it is never reallocated.
fn pack(
    path: &StorePath,
    compression: Compression,
    level: Option<i32>,
    spill_threshold: usize,
    nar_size: u64,
    mut mem: Vec<u8>,
) -> io::Result<Packed> {
    // zstd's and xz's worst case is the input plus a small fraction.
    let bound = nar_size.saturating_add(nar_size / 128).saturating_add(4096);
    mem.clear();
    mem.reserve(bound.min(spill_threshold as u64 + 1) as usize);
    let sink = HashingWriter::new(Spill {
        threshold: spill_threshold,
        mem,
        file: None,
    });
    let encoder = Encoder::new(compression, sink, level)?;
    // nar::dump writes many small tokens; batch them before hashing and compressing.
    let mut nar = io::BufWriter::with_capacity(256 * 1024, HashingWriter::new(encoder));
    fleet_core::nar::dump(Path::new(&path.to_string()), &mut nar)?;
    let nar = nar.into_inner().map_err(|e| e.into_error())?;
    let (encoder, nar_hash, nar_size) = nar.finish();
    let sink = encoder.finish()?;
    let (spill, file_hash, file_size) = sink.finish();
    Ok(Packed {
        sums: Sums {
            nar_hash,
            nar_size,
            file_hash,
            file_size,
        },
        data: spill.finish()?,
    })
}

/// Uploads a compressed NAR; returns its memory buffer, when it had one and the
/// upload let go of it, for reuse.
async fn upload_nar(bucket: &Bucket, key: &Key, data: Data) -> anyhow::Result<Option<Vec<u8>>> {
    match data {
        Data::Mem(v) => {
            let bytes = Bytes::from(v);
            bucket.put(key, bytes.clone()).await?;
            return Ok(bytes.try_into_mut().ok().map(Vec::from));
        }
        Data::File(f) => {
            let mut f = tokio::fs::File::from_std(f);
            let mut w = bucket.writer(key);
            let result: anyhow::Result<()> = async {
                loop {
                    let mut buf = BytesMut::with_capacity(UPLOAD_CHUNK);
                    while buf.len() < UPLOAD_CHUNK {
                        if f.read_buf(&mut buf)
                            .await
                            .context("reading the temporary NAR file")?
                            == 0
                        {
                            break;
                        }
                    }
                    if buf.is_empty() {
                        break;
                    }
                    w.put(buf.freeze())
                        .await
                        .map_err(|e| anyhow::anyhow!("multipart upload to {key}: {e}"))?;
                }
                tokio::io::AsyncWriteExt::shutdown(&mut w)
                    .await
                    .map_err(|e| {
                        anyhow::anyhow!("completing the multipart upload to {key}: {e}")
                    })?;
                Ok(())
            }
            .await;
            if let Err(e) = result {
                // Best effort: a dangling multipart upload only costs storage until a
                // lifecycle rule removes it.
                let _ = w.abort().await;
                return Err(e);
            }
        }
    }
    Ok(None)
}

/// `fleet-publish push`.
pub async fn run(args: PushArgs, config_file: Option<&Path>) -> anyhow::Result<()> {
    let o = config::layer(args.options, config_file)?;
    let store = config::required(&o.store, "store", "FLEET_STORE")?;
    let key_file = config::required(&o.cache_key, "cache-key", "FLEET_CACHE_KEY")?;
    let settings = settings_from(&o)?;
    let key = crate::load_secret_key(key_file, "cache key (--cache-key)")?;
    let roots = args
        .paths
        .iter()
        .map(|p| crate::resolve_store_path(p))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let bucket = crate::open_bucket(store)?;
    let summary = push(&bucket, &Nix::default_store(), &key, &roots, &settings).await?;
    println!("pushed to {store}: {summary}");
    Ok(())
}

/// Push settings from the layered options, with defaults and range checks.
pub fn settings_from(o: &config::PushOptions) -> anyhow::Result<PushSettings> {
    use std::io::IsTerminal;
    let compression: Compression = o.compression.map_or(Compression::Zstd, Into::into);
    if let Some(l) = o.compression_level {
        let range = match compression {
            Compression::Zstd => 1..=19,
            Compression::Xz => 0..=9,
            Compression::None => {
                bail!("compression-level = {l} makes no sense with compression none; drop it")
            }
        };
        if !range.contains(&l) {
            bail!(
                "compression-level = {l} is out of range for {compression}: give {} to {}",
                range.start(),
                range.end()
            );
        }
    }
    let jobs = o.jobs.unwrap_or_else(crate::default_jobs);
    if !(1..=256).contains(&jobs) {
        bail!("jobs = {jobs} is out of range: give 1 to 256");
    }
    Ok(PushSettings {
        compression,
        level: o.compression_level,
        jobs,
        progress: std::io::stderr().is_terminal(),
        spill_threshold: DEFAULT_SPILL_THRESHOLD,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sp(name: &str, i: u8) -> StorePath {
        let c = (b'a' + i) as char;
        StorePath::new(&format!("/nix/store/{}-{name}", c.to_string().repeat(32))).unwrap()
    }

    fn info(p: &StorePath, refs: &[&StorePath]) -> PathInfo {
        PathInfo {
            path: p.clone(),
            nar_hash: Sha256Hash([0; 32]),
            nar_size: 0,
            references: refs.iter().map(|r| (*r).clone()).collect(),
            deriver: None,
            signatures: vec![],
            ca: None,
        }
    }

    #[test]
    fn references_come_first_and_self_references_are_ignored() {
        let (a, b, c, d) = (sp("a", 0), sp("b", 1), sp("c", 2), sp("d", 3));
        // d -> b, c; b -> a; c -> a, c (self); a outside the set is fine too.
        let infos = vec![
            info(&d, &[&b, &c, &d]),
            info(&c, &[&a, &c]),
            info(&b, &[&a]),
            info(&a, &[]),
        ];
        let order = topological_order(&infos).unwrap();
        let pos = |p: &StorePath| order.iter().position(|&i| &infos[i].path == p).unwrap();
        assert!(pos(&a) < pos(&b) && pos(&a) < pos(&c));
        assert!(pos(&b) < pos(&d) && pos(&c) < pos(&d));
        let cyclic = vec![info(&a, &[&b]), info(&b, &[&a])];
        assert!(topological_order(&cyclic).is_err());
    }

    #[test]
    fn spill_moves_to_a_file_past_the_threshold() {
        use std::io::Read;
        let mut s = Spill {
            threshold: 10,
            mem: Vec::new(),
            file: None,
        };
        s.write_all(b"12345").unwrap();
        assert!(s.file.is_none());
        s.write_all(b"6789abcdef").unwrap();
        match s.finish().unwrap() {
            Data::File(mut f) => {
                let mut out = String::new();
                f.read_to_string(&mut out).unwrap();
                assert_eq!(out, "123456789abcdef");
            }
            Data::Mem(_) => panic!("should have spilled"),
        }
    }

    #[test]
    fn pack_hashes_what_nar_dump_writes() {
        use sha2::{Digest, Sha256};
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("out");
        std::fs::create_dir(&root).unwrap();
        std::fs::write(root.join("f"), vec![7u8; 100_000]).unwrap();
        let mut nar = Vec::new();
        fleet_core::nar::dump(&root, &mut nar).unwrap();
        // pack() takes a StorePath; exercise the same pipeline on a temp dir through
        // the pieces it is made of.
        for (compression, spill) in [(Compression::Zstd, 1 << 20), (Compression::Xz, 100)] {
            let sink = HashingWriter::new(Spill {
                threshold: spill,
                mem: Vec::new(),
                file: None,
            });
            let enc = Encoder::new(compression, sink, None).unwrap();
            let mut w = io::BufWriter::new(HashingWriter::new(enc));
            fleet_core::nar::dump(&root, &mut w).unwrap();
            let (enc, nh, ns) = w.into_inner().ok().unwrap().finish();
            let (_, fh, fs) = enc.finish().unwrap().finish();
            assert_eq!(ns, nar.len() as u64);
            assert_eq!(nh.0, <[u8; 32]>::from(Sha256::digest(&nar)));
            assert!(fs < ns, "{compression}: compressed");
            assert_ne!(fh, nh);
        }
    }

    #[test]
    fn settings_are_range_checked() {
        let mut o = config::PushOptions {
            compression_level: Some(25),
            ..Default::default()
        };
        assert!(
            settings_from(&o)
                .unwrap_err()
                .to_string()
                .contains("1 to 19")
        );
        o.compression = Some(config::CompressionArg::None);
        o.compression_level = Some(1);
        assert!(settings_from(&o).is_err());
        o.compression_level = None;
        o.jobs = Some(0);
        assert!(settings_from(&o).unwrap_err().to_string().contains("jobs"));
        o.jobs = Some(4);
        let s = settings_from(&o).unwrap();
        assert_eq!((s.compression, s.jobs), (Compression::None, 4));
    }
}
