//! Uploading the missing paths: up to `jobs` at once, each packed on a blocking
//! thread (`pack.rs`), its NAR uploaded (one PUT from memory, or a
//! multipart upload from the temporary file) unless an interrupted push left it,
//! then its narinfo, signed with the cache key, once the narinfos of all its
//! references are written. A progress bar on standard error counts NAR bytes.

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::{Context, bail};
use bytes::{Bytes, BytesMut};
use fleet_core::nixcli::PathInfo;
use fleet_core::{Bucket, Key, NarInfo, SecretKey, Signature, StorePath};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::io::AsyncReadExt;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

use super::order::topological_order;
use super::pack::{Data, Packed, Workspace, pack};
use super::{PushSettings, PushSummary};

/// Bytes read from a temporary file per part of a multipart upload.
const UPLOAD_CHUNK: usize = 8 * 1024 * 1024;

/// NARs up to this size are packed on the task itself rather than on a blocking
/// thread: reading and compressing a few KiB takes microseconds, less than handing
/// the work to another thread and back, which dominated the CPU time of a closure of
/// tiny paths.
const INLINE_PACK_MAX: u64 = 64 * 1024;

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
    /// Packing workspaces (NAR buffer, zstd context) of finished packs, for the
    /// next ones: at most one per job is in use at once.
    workspaces: std::sync::Mutex<Vec<Workspace>>,
}

impl Ctx {
    /// A spare buffer from an earlier NAR, or a new one.
    fn take_buffer(&self) -> Vec<u8> {
        let mut pool = self.buffers.lock().unwrap_or_else(|p| p.into_inner());
        pool.pop().unwrap_or_default()
    }

    /// A spare packing workspace, or a new one.
    fn take_workspace(&self) -> Workspace {
        let mut pool = self.workspaces.lock().unwrap_or_else(|p| p.into_inner());
        pool.pop().unwrap_or_default()
    }

    /// Keeps `ws` for the next NAR.
    fn give_back_workspace(&self, ws: Workspace) {
        let mut pool = self.workspaces.lock().unwrap_or_else(|p| p.into_inner());
        if pool.len() < self.settings.jobs {
            pool.push(ws);
        }
    }

    /// Keeps `buf` for the next NAR.
    fn give_back(&self, mut buf: Vec<u8>) {
        buf.clear();
        let mut pool = self.buffers.lock().unwrap_or_else(|p| p.into_inner());
        // At most one per job is ever in use at once.
        if pool.len() < self.settings.jobs {
            pool.push(buf);
        }
    }
}

/// Uploads every path of `infos` (the paths missing from the cache), adding what it
/// did to `summary`; the first failure stops the others.
pub(super) async fn upload_all(
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
        workspaces: std::sync::Mutex::new(Vec::new()),
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

/// Packs and uploads one path, then writes its narinfo after its references'.
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
        let pack_with = |pledge: bool, buf: Vec<u8>| {
            let p = p.clone();
            let mut ws = ctx.take_workspace();
            async move {
                if hint <= INLINE_PACK_MAX {
                    let packed = pack(&p, compression, level, spill, hint, pledge, buf, &mut ws);
                    ctx.give_back_workspace(ws);
                    return packed;
                }
                let (packed, ws) = tokio::task::spawn_blocking(move || {
                    let packed = pack(&p, compression, level, spill, hint, pledge, buf, &mut ws);
                    (packed, ws)
                })
                .await
                .map_err(|e| {
                    std::io::Error::other(format!("the packing thread stopped unexpectedly: {e}"))
                })?;
                ctx.give_back_workspace(ws);
                packed
            }
        };
        // The size Nix registered is pledged to the codec; if packing fails, it is
        // tried again without: a NAR of another size then packs, and the check below
        // says what is wrong with the local store.
        let packed = match pack_with(true, ctx.take_buffer()).await {
            Ok(packed) => packed,
            Err(_) => pack_with(false, ctx.take_buffer())
                .await
                .with_context(|| format!("serialising and compressing {path}"))?,
        };
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
