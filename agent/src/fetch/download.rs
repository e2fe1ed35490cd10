//! Step 3 of a fetch: the NAR downloads, a few at once as the walk sends verified
//! narinfos; each NAR file read from the bucket's stream (`fleet_core::bucket`'s
//! [`Bucket::get_stream`](fleet_core::Bucket::get_stream)) into the verifier
//! (`verify.rs`) and its staged copy, or reused when an earlier fetch staged it.

use std::collections::{HashMap, HashSet};
use std::io::{self, BufRead};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use fleet_core::bucket::{BodyReader, BucketError, FeedError, Op};
use fleet_core::narinfo::{Compression, NarInfoError};
use fleet_core::{Key, NarInfo, StorePath};
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::error::{bucket_error, refusal_error};
use super::unpack::Unpacker;
use super::verify::{self, Expect, Refusal, Verified};
use super::waves::{Waves, dependency_order, import};
use super::{Ctx, FetchError, FetchLimits, SMALL_NAR, SMALL_NARS_AT_ONCE, blocking};

/// Buffer of the staged copy's writes (the validator hands over up to 256 KiB at once;
/// larger writes bypass it).
const STAGED_WRITE: usize = 256 * 1024;
/// Read buffer when a staged file is verified again.
const STAGED_READ: usize = 256 * 1024;

/// How one NAR file got into the staging directory.
pub(super) struct NarOutcome {
    pub(super) verified: Verified,
    /// Found staged by an earlier fetch (and verified again) rather than downloaded.
    pub(super) reused: bool,
    /// With [`super::ImportVia::Unpack`]: made valid by someone else since the walk,
    /// so nothing was downloaded.
    pub(super) valid_meanwhile: bool,
}

/// What [`download_all`] brought in.
pub(super) struct Fetched {
    /// Every missing path and how its NAR file was staged.
    pub(super) nars: Vec<(StorePath, NarOutcome)>,
    /// The paths already imported, in waves ([`FetchLimits::import_in_waves`]).
    pub(super) imported: HashSet<StorePath>,
    /// Each missing path's references, from its verified narinfo.
    pub(super) refs: HashMap<StorePath, Vec<StorePath>>,
}

/// Runs the NAR downloads for the narinfos the walk sends, a few at once; with
/// [`FetchLimits::import_in_waves`], imports what is verified meanwhile.
pub(super) async fn download_all(
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
    // Downloads of NARs larger than SMALL_NAR (by NarSize) under way: at most
    // `concurrency`. Small ones run beside them, up to SMALL_NARS_AT_ONCE more (round
    // trips, not bytes, bound a closure of many small paths). A narinfo is taken only
    // while a large download could start, so whatever arrives can start at once.
    let mut large = 0usize;
    let limit = ctx.limits.concurrency;
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
            ni = rx.recv(), if receiving && large < limit && downloads.len() < limit + SMALL_NARS_AT_ONCE => match ni {
                Some(ni) => {
                    refs.insert(ni.store_path.clone(), ni.references.clone());
                    if waves_wanted {
                        match &mut waves {
                            Some(w) => w.arrived(&ni.store_path, &ni.references),
                            None => early_refs.push((ni.store_path.clone(), ni.references.clone())),
                        }
                    }
                    let is_large = ni.nar_size > SMALL_NAR;
                    large += usize::from(is_large);
                    downloads.push(async move {
                        let outcome = fetch_nar(ctx, &ni).await;
                        (ni.store_path.clone(), outcome, is_large)
                    });
                }
                None => receiving = false,
            },
            Some((path, outcome, was_large)) = downloads.next(), if !downloads.is_empty() => match outcome {
                Ok(o) => {
                    large -= usize::from(was_large);
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
pub(super) fn expectations(ni: &NarInfo, limits: &FetchLimits) -> Result<Expect, FetchError> {
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

/// The bucket key of the NAR file of `ni` (its `URL:`, which must stay inside
/// `cache/nar/`).
pub(super) fn nar_key(ni: &NarInfo) -> Result<Key, FetchError> {
    Key::nar(&ni.url).map_err(|e| FetchError::NarinfoMalformed {
        path: ni.store_path.to_string(),
        error: Box::new(NarInfoError::Malformed {
            key: Key::narinfo(ni.store_path.hash()).to_string(),
            why: format!("field URL: {e}"),
        }),
    })
}

/// Brings the NAR file of `ni` into the staging directory, verified, and stages `ni`.
async fn fetch_nar(ctx: &Ctx<'_>, ni: &Arc<NarInfo>) -> Result<NarOutcome, FetchError> {
    let key = nar_key(ni)?;
    let exp = expectations(ni, &ctx.limits)?;
    if let Some(u) = &ctx.unpacker {
        return unpack_nar(ctx, u, ni, &key, &exp).await;
    }
    let lock = ctx.url_lock(&ni.url);
    let _guard = lock.lock().await;
    let target = ctx.staging.nar_path(&ni.url);

    let outcome = match reuse_staged(&target, &Expect::staged(ni.nar_size, ni.nar_hash)).await? {
        Some(verified) => {
            tracing::debug!(path = %ni.store_path, "reusing staged NAR file");
            NarOutcome {
                verified,
                reused: true,
                valid_meanwhile: false,
            }
        }
        None => NarOutcome {
            verified: download(ctx, ni, &key, &exp, &target).await?,
            reused: false,
            valid_meanwhile: false,
        },
    };
    let (staging, staged) = (ctx.staging.clone(), staged_narinfo(ni));
    blocking(move || staging.write_narinfo(&staged)).await??;
    Ok(outcome)
}

/// Streams the NAR file of `ni` through every check into its place in the store
/// (`unpack.rs`), under the path's lock; the path is registered later, with the rest.
async fn unpack_nar(
    ctx: &Ctx<'_>,
    u: &Arc<Unpacker>,
    ni: &Arc<NarInfo>,
    key: &Key,
    exp: &Expect,
) -> Result<NarOutcome, FetchError> {
    if !u.prepare(ctx, &ni.store_path).await? {
        return Ok(NarOutcome {
            verified: Verified {
                file_size: 0,
                nar_size: 0,
            },
            reused: false,
            valid_meanwhile: true,
        });
    }
    let target = u.target(&ni.store_path);
    let dest = target.clone();
    // Counted from before the thread starts to after it ends, whatever stops the
    // download: a refusal elsewhere then waits for this write before it removes
    // what was unpacked.
    let writing = u.writing();
    let checked = verify_stream(ctx, ni, key, exp, move |source, exp| {
        let r = verify::verify(source, exp, verify::Output::Unpack(&dest));
        drop(writing);
        (r, ())
    })
    .await;
    // On failure the path stays locked by the fetch, which removes it (with every
    // other unregistered path) once the writes have ended.
    match checked {
        Ok((Ok(verified), ())) => {
            u.written(ni);
            tracing::debug!(path = %ni.store_path, bytes = verified.file_size, "NAR file verified and unpacked");
            Ok(NarOutcome {
                verified,
                reused: false,
                valid_meanwhile: false,
            })
        }
        Ok((Err(Refusal::Sink(error)), ())) => Err(FetchError::Unpack {
            action: "writing",
            path: target,
            error,
        }),
        Ok((Err(r), ())) => Err(refusal_error(r, ni, key, &target)),
        Err(e) => Err(e),
    }
}

/// The narinfo Nix reads from the staging directory: the verified one, describing the
/// staged file, which is the NAR uncompressed (`FileHash`/`FileSize` are then the
/// `NarHash`/`NarSize`). The signature covers neither field, so it still verifies.
pub(super) fn staged_narinfo(ni: &NarInfo) -> NarInfo {
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
        match verify::verify(
            io::BufReader::with_capacity(STAGED_READ, file),
            &exp,
            verify::Output::Check,
        ) {
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
/// it on a blocking thread as it is read; renames it to `target` once it verified.
async fn download(
    ctx: &Ctx<'_>,
    ni: &NarInfo,
    key: &Key,
    exp: &Expect,
    target: &Path,
) -> Result<Verified, FetchError> {
    let path = &ni.store_path;
    let tmp = ctx.staging.temp_file(&ctx.staging.nar_dir(), target)?;
    let (result, tmp) = verify_stream(ctx, ni, key, exp, move |source, exp| {
        verify_into(source, exp, tmp)
    })
    .await?;
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

/// Reads the NAR file at `key` from the bucket and runs `check` (which calls
/// [`verify::verify`]) on it on a blocking thread, under the fetch's bounds; returns
/// what `check` returned. The bucket's failures and timeouts are errors here; the
/// file's refusals are left in `check`'s result, except a failed read of the source,
/// which is the bucket's.
///
/// One path for every store: the bucket's streamed body is the verifier's source.
/// On a `file://` bucket the verifier reads the file itself, and the deadline
/// (`budget`) bounds that whole read (a hung network filesystem); from an object
/// store the body is fed to it chunk by chunk, each gap bounded by the stall timeout
/// and the whole by the deadline.
pub(super) async fn verify_stream<S: Send + 'static>(
    ctx: &Ctx<'_>,
    ni: &NarInfo,
    key: &Key,
    exp: &Expect,
    check: impl FnOnce(BodyReader, &Expect) -> (Result<Verified, Refusal>, S) + Send + 'static,
) -> Result<(Result<Verified, Refusal>, S), FetchError> {
    let path = &ni.store_path;
    let limits = &ctx.limits;
    let timeout = |what, limit| FetchError::Timeout {
        path: path.to_string(),
        key: key.to_string(),
        what,
        limit,
    };
    let budget =
        limits.request_timeout + Duration::from_secs(exp.file_limit / limits.min_bytes_per_sec);
    let deadline = Instant::now() + budget;
    let body = tokio::time::timeout(limits.request_timeout, ctx.bucket.get_stream(key))
        .await
        .map_err(|_| {
            timeout(
                "the NAR request got no answer in time",
                limits.request_timeout,
            )
        })?
        .map_err(|e| bucket_error(e, path, key, false))?;
    if let Some(why) = announced_too_long(exp, body.size()) {
        return Err(FetchError::FileSizeMismatch {
            path: path.to_string(),
            key: key.to_string(),
            why,
        });
    }

    let (source, feed) = body.into_reader();
    let exp2 = exp.clone();
    // Unpacking writes into the store, which may need a thread of its own.
    let verifier: futures::future::BoxFuture<'static, Result<_, FetchError>> = match &ctx.unpacker {
        Some(u) => u.run(move || check(source, &exp2)),
        None => {
            let h = tokio::task::spawn_blocking(move || check(source, &exp2));
            let path = path.to_string();
            Box::pin(async move {
                h.await.map_err(|e| FetchError::Internal {
                    path,
                    why: format!("the verifier thread failed: {e}"),
                })
            })
        }
    };
    let (result, sink) = match feed {
        None => tokio::time::timeout_at(deadline, verifier)
            .await
            .map_err(|_| {
                timeout(
                    "the NAR file was not read before its deadline (request timeout plus size over the minimum transfer rate)",
                    budget,
                )
            })??,
        Some(feed) => {
            let fed = feed.run(limits.stall_timeout, deadline).await;
            let checked = verifier.await?;
            fed.map_err(|e| match e {
                FeedError::Deadline => timeout(
                    "the NAR file did not arrive before its deadline (request timeout plus size over the minimum transfer rate)",
                    budget,
                ),
                FeedError::Stalled => timeout("the NAR body stalled", limits.stall_timeout),
                FeedError::Bucket(e) => bucket_error(e, path, key, false),
            })?;
            checked
        }
    };
    match result {
        // The source is the bucket's body (a failed feed was reported above): its read
        // errors are the bucket's.
        Err(Refusal::Source(e)) => {
            let e = BucketError::Other {
                url: ctx.bucket.url().to_string(),
                key: key.to_string(),
                op: Op::Read,
                why: e.to_string(),
            };
            Err(bucket_error(e, path, key, false))
        }
        r => Ok((r, sink)),
    }
}

/// Runs [`verify::verify`] on `source`, writing the NAR to `tmp`.
fn verify_into(source: impl BufRead, exp: &Expect, mut tmp: tempfile::NamedTempFile) -> Checked {
    let mut out = io::BufWriter::with_capacity(STAGED_WRITE, tmp.as_file_mut());
    let result = verify::verify(source, exp, verify::Output::Copy(&mut out)).and_then(|v| {
        io::Write::flush(&mut out).map_err(Refusal::Sink)?;
        Ok(v)
    });
    drop(out);
    (result, tmp)
}
