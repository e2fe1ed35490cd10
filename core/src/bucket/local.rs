//! The `file://` backend fleet reads with itself: whole objects, pruned walks of the
//! folders, and the advisory lock that serialises conditional writes.
//!
//! `object_store`'s local store hops to a blocking thread for every 8 KiB and
//! resolves paths by name; here a read is one blocking task, a walk one `readdir`
//! per folder, and every object is opened without following any symlink below the
//! root. ETags are computed as `object_store` computes them for local files
//! (inode, modification time in microseconds, size), so ETags from reads, listings
//! and writes (which go through `object_store`) stay comparable.

use super::error::local_io_error;
use super::{Bucket, BucketError, Fetched, LOCAL_LOCK_FILE, Object, ObjectInfo, Op, Visit};

impl Bucket {
    /// On `file://`, an exclusive advisory lock held until the guard drops; elsewhere
    /// nothing (the server orders conditional writes).
    pub(super) async fn local_lock(&self) -> Result<Option<std::fs::File>, BucketError> {
        let Some(root) = self.local_root.clone() else {
            return Ok(None);
        };
        let url = self.url_text.clone();
        tokio::task::spawn_blocking(move || {
            let path = root.join(LOCAL_LOCK_FILE);
            let f = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)
                .map_err(|e| BucketError::Other {
                    url: url.clone(),
                    key: LOCAL_LOCK_FILE.into(),
                    op: Op::Write,
                    why: format!("opening lock file {}: {e}", path.display()),
                })?;
            rustix::fs::flock(&f, rustix::fs::FlockOperation::LockExclusive).map_err(|e| {
                BucketError::Other {
                    url,
                    key: LOCAL_LOCK_FILE.into(),
                    op: Op::Write,
                    why: format!("locking {}: {e}", path.display()),
                }
            })?;
            Ok(Some(f))
        })
        .await
        .expect("lock task does not panic")
    }
}

/// The ETag `object_store` gives a local file: inode, modification time in
/// microseconds and size, in hex, quoted.
fn local_etag(meta: &std::fs::Metadata) -> String {
    use std::os::unix::fs::MetadataExt;
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .unwrap_or_default()
        .as_micros();
    format!("\"{:x}-{:x}-{:x}\"", meta.ino(), mtime, meta.len())
}

/// Opens the object at `rel` below a `file://` bucket's `root` for reading.
///
/// Whoever can write the bucket's directory must not be able to make a reader (the
/// agent runs as root) open anything else: no symlink below the root is followed
/// (`openat2` with `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`; on kernels before 5.6, at
/// least not in the last component), and the open does not block on a FIFO or claim
/// a terminal. Callers then refuse anything that is not a regular file.
fn open_local_object(root: &std::path::Path, rel: &str) -> std::io::Result<std::fs::File> {
    open_below(&LocalRoot::open(root)?, rel)
}

/// A folder of a `file://` bucket (its root, or one being listed), held open so that
/// a batch of reads or `stat`s resolves names below it without opening it again.
pub(super) struct LocalRoot(rustix::fd::OwnedFd);

impl LocalRoot {
    /// Opens the folder.
    pub(super) fn open(root: &std::path::Path) -> std::io::Result<Self> {
        use rustix::fs::{Mode, OFlags};
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
        Ok(Self(rustix::fs::open(root, flags, Mode::empty())?))
    }
}

/// [`open_local_object`] below an open root.
fn open_below(dir: &LocalRoot, rel: &str) -> std::io::Result<std::fs::File> {
    use rustix::fs::{Mode, OFlags, ResolveFlags};
    use rustix::io::Errno;
    let dir = &dir.0;
    // O_NONBLOCK only matters for the open itself: reads of regular files ignore it.
    let flags = OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOCTTY | OFlags::NONBLOCK;
    let fd = match rustix::fs::openat2(
        dir,
        rel,
        flags,
        Mode::empty(),
        ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
    ) {
        Ok(fd) => fd,
        // No openat2 (old kernel, or a seccomp filter that refuses unknown calls).
        Err(Errno::NOSYS | Errno::PERM) => {
            rustix::fs::openat(dir, rel, flags | OFlags::NOFOLLOW, Mode::empty())?
        }
        Err(Errno::LOOP | Errno::XDEV) => {
            return Err(std::io::Error::other(format!(
                "{rel} is or passes through a symlink below the bucket root; a file:// bucket \
                 holds plain files and directories only, and fleet follows no symlink in it"
            )));
        }
        Err(e) => return Err(e.into()),
    };
    Ok(std::fs::File::from(fd))
}

/// Opens the `file://` object `key` in the calling (blocking) thread, as
/// [`open_local_object`] does, and refuses anything but a regular file (a FIFO, a
/// device or a folder is no object: [`BucketError::NotFound`]).
pub(super) fn open_regular(
    root: &std::path::Path,
    url: &str,
    key: &str,
) -> Result<(std::fs::File, std::fs::Metadata), BucketError> {
    let io_err = |e: std::io::Error| local_io_error(url, Op::Read, key, e);
    let file = open_local_object(root, key).map_err(io_err)?;
    regular(file, url, key)
}

/// Refuses anything but a regular file; gives the file and its metadata.
fn regular(
    file: std::fs::File,
    url: &str,
    key: &str,
) -> Result<(std::fs::File, std::fs::Metadata), BucketError> {
    let io_err = |e: std::io::Error| local_io_error(url, Op::Read, key, e);
    let meta = file.metadata().map_err(io_err)?;
    if !meta.is_file() {
        return Err(BucketError::NotFound {
            url: url.to_owned(),
            key: key.to_owned(),
        });
    }
    Ok((file, meta))
}

/// Reads a `file://` object in the calling (blocking) thread: opens, checks and reads
/// the file. The ETag is computed exactly as `object_store` computes it for local
/// files, so ETags from `get`, `head`, `list` and `put` stay comparable.
pub(super) fn read_local(
    root: &std::path::Path,
    url: &str,
    key: String,
    if_none_match: Option<&str>,
    limit: u64,
) -> Result<Fetched, BucketError> {
    let dir = LocalRoot::open(root).map_err(|e| local_io_error(url, Op::Read, &key, e))?;
    read_below(&dir, url, key, if_none_match, limit)
}

/// [`read_local`] below an open root (a batch of reads opens the root once).
pub(super) fn read_below(
    dir: &LocalRoot,
    url: &str,
    key: String,
    if_none_match: Option<&str>,
    limit: u64,
) -> Result<Fetched, BucketError> {
    use std::io::Read;
    let io_err = |e: std::io::Error| local_io_error(url, Op::Read, &key, e);
    let file = open_below(dir, &key).map_err(io_err)?;
    let (mut file, meta) = regular(file, url, &key)?;
    let etag = local_etag(&meta);
    if if_none_match == Some(etag.as_str()) {
        return Ok(Fetched::NotModified);
    }
    let too_large = |size: u64| BucketError::TooLarge {
        url: url.to_owned(),
        key: key.clone(),
        size,
        limit,
        etag: Some(etag.clone()),
    };
    if meta.len() > limit {
        return Err(too_large(meta.len()));
    }
    // One read of one byte more than the size just taken gets the whole file:
    // `read_to_end` would ask a second time only to be told the end. Anything else
    // (the file grew or shrank meanwhile) reads on to the end, at most limit + 1.
    let size = meta.len() as usize;
    let mut buf = vec![0; size + 1];
    let n = file.read(&mut buf).map_err(io_err)?;
    buf.truncate(n);
    if n != size {
        file.take(limit + 1 - n as u64)
            .read_to_end(&mut buf)
            .map_err(io_err)?;
    }
    if buf.len() as u64 > limit {
        return Err(too_large(buf.len() as u64));
    }
    Ok(Fetched::Object(Object {
        bytes: buf.into(),
        etag: Some(etag),
        last_modified: local_modified(&meta),
    }))
}

/// [`Bucket::head`](super::Bucket::head) of the `file://` object `key` below an open
/// root: `None` when there is no regular file there. Follows links, as the listing
/// walk and `object_store` do (reads do not: what is read is checked there).
pub(super) fn head_below(
    dir: &LocalRoot,
    url: &str,
    key: String,
) -> Result<Option<ObjectInfo>, BucketError> {
    let st = rustix::fs::statx(
        &dir.0,
        key.as_str(),
        rustix::fs::AtFlags::empty(),
        rustix::fs::StatxFlags::BASIC_STATS,
    );
    match st {
        Ok(st) if is_regular(&st) => Ok(Some(statx_info(key, &st))),
        Ok(_) | Err(rustix::io::Errno::NOENT | rustix::io::Errno::NOTDIR) => Ok(None),
        Err(e) => Err(local_io_error(url, Op::Read, &key, e.into())),
    }
}

/// Object names `object_store`'s local store leaves out of listings (its in-progress
/// multipart parts, `<name>#<digits>`); left out here too so both listings agree.
fn is_part_file(name: &str) -> bool {
    matches!(name.rsplit_once('#'), Some((_, n)) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// The last segment of a folder key (`status/web-1/` gives `web-1`).
fn name_of(folder: &str) -> &str {
    let f = folder.trim_end_matches('/');
    f.rsplit('/').next().unwrap_or(f)
}

fn is_regular(st: &rustix::fs::Statx) -> bool {
    rustix::fs::FileType::from_raw_mode(st.stx_mode.into()) == rustix::fs::FileType::RegularFile
}

/// [`local_info`] from `statx`: the same ETag (inode, modification time in
/// microseconds, size) and time.
fn statx_info(key: String, st: &rustix::fs::Statx) -> ObjectInfo {
    let (secs, nanos) = (st.stx_mtime.tv_sec, st.stx_mtime.tv_nsec);
    // Before 1970 counts as 0, as `local_etag` has it.
    let micros = u128::try_from(secs).map_or(0, |s| s * 1_000_000 + u128::from(nanos / 1000));
    let last_modified = jiff::Timestamp::new(secs, nanos.try_into().unwrap_or(0))
        .ok()
        .and_then(|t| jiff::Timestamp::from_millisecond(t.as_millisecond()).ok())
        .unwrap_or(jiff::Timestamp::UNIX_EPOCH);
    ObjectInfo {
        key,
        size: st.stx_size,
        etag: Some(format!(
            "\"{:x}-{:x}-{:x}\"",
            st.stx_ino, micros, st.stx_size
        )),
        last_modified,
    }
}

/// A local file's modification time, to the millisecond as `object_store` reports it.
fn local_modified(meta: &std::fs::Metadata) -> jiff::Timestamp {
    meta.modified()
        .ok()
        .and_then(|t| jiff::Timestamp::try_from(t).ok())
        .and_then(|t| jiff::Timestamp::from_millisecond(t.as_millisecond()).ok())
        .unwrap_or(jiff::Timestamp::UNIX_EPOCH)
}

fn local_info(key: String, meta: &std::fs::Metadata) -> ObjectInfo {
    ObjectInfo {
        key,
        size: meta.len(),
        etag: Some(local_etag(meta)),
        last_modified: local_modified(meta),
    }
}

/// Reads one `file://` folder: its objects into `out`, the objects its `Only`
/// sub-folders name into `out`, its `All` sub-folders into `dirs` (as keys ending in
/// `/`). A folder or file that vanished while being read is skipped, as a concurrent
/// delete would make it.
pub(super) fn read_local_dir(
    root: &std::path::Path,
    dir_key: &str,
    visit: &(dyn Fn(&str) -> Visit + Send + Sync),
    url: &str,
    out: &mut Vec<ObjectInfo>,
    dirs: &mut Vec<String>,
) -> Result<(), BucketError> {
    let dir = root.join(dir_key);
    let rd = match std::fs::read_dir(&dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(local_io_error(url, Op::List, dir_key, e)),
    };
    // Opened on the first `Only` sub-folder: its objects are stat'ed relative to this
    // folder, so the kernel resolves two path components, not the whole path.
    let mut dir_fd: Option<LocalRoot> = None;
    for entry in rd {
        let entry = entry.map_err(|e| local_io_error(url, Op::List, dir_key, e))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let key = format!("{dir_key}{name}");
        let ft = match entry.file_type() {
            Ok(ft) => ft,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(local_io_error(url, Op::List, &key, e)),
        };
        if ft.is_dir() {
            let sub = format!("{key}/");
            match visit(&sub) {
                Visit::All => dirs.push(sub),
                Visit::Skip => {}
                Visit::Only(names) => {
                    let fd = match &dir_fd {
                        Some(fd) => &fd.0,
                        None => {
                            let fd = LocalRoot::open(&dir)
                                .map_err(|e| local_io_error(url, Op::List, dir_key, e))?;
                            &dir_fd.insert(fd).0
                        }
                    };
                    for name in names {
                        let only = format!("{sub}{name}");
                        let rel = format!("{}/{name}", name_of(&sub));
                        // Follows links, as the walk and `object_store` do for files.
                        let st = rustix::fs::statx(
                            fd,
                            rel.as_str(),
                            rustix::fs::AtFlags::empty(),
                            rustix::fs::StatxFlags::BASIC_STATS,
                        );
                        match st {
                            Ok(st) if is_regular(&st) && !is_part_file(name) => {
                                out.push(statx_info(only, &st))
                            }
                            Ok(_) => {}
                            Err(rustix::io::Errno::NOENT | rustix::io::Errno::NOTDIR) => {}
                            Err(e) => {
                                return Err(local_io_error(url, Op::List, &only, e.into()));
                            }
                        }
                    }
                }
            }
            continue;
        }
        let meta = if ft.is_symlink() {
            match std::fs::metadata(entry.path()) {
                Ok(m) if m.is_file() => m,
                // Broken links and links to folders are not objects.
                _ => continue,
            }
        } else if ft.is_file() {
            match entry.metadata() {
                Ok(m) => m,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(local_io_error(url, Op::List, &key, e)),
            }
        } else {
            continue;
        };
        if is_part_file(&name) {
            continue;
        }
        out.push(local_info(key, &meta));
    }
    Ok(())
}

/// Walks `<root>/<prefix>` for [`Bucket::list_pruned`]: the top folder on this
/// thread, then its sub-folders shared out to up to 8 threads (each takes the next
/// one and walks it depth-first with an explicit stack).
pub(super) fn walk_local(
    root: &std::path::Path,
    prefix: &str,
    visit: &(dyn Fn(&str) -> Visit + Send + Sync),
    url: &str,
) -> Result<Vec<ObjectInfo>, BucketError> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let mut out = Vec::new();
    let mut top = Vec::new();
    read_local_dir(root, prefix, visit, url, &mut out, &mut top)?;
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, 8)
        .min(top.len().div_ceil(64).max(1));
    let next = AtomicUsize::new(0);
    let work = || -> Result<Vec<ObjectInfo>, BucketError> {
        let mut found = Vec::new();
        let mut stack = Vec::new();
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            let Some(d) = top.get(i) else {
                return Ok(found);
            };
            stack.push(d.clone());
            while let Some(d) = stack.pop() {
                read_local_dir(root, &d, visit, url, &mut found, &mut stack)?;
            }
        }
    };
    if threads == 1 {
        out.extend(work()?);
        return Ok(out);
    }
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads).map(|_| s.spawn(work)).collect();
        for h in handles {
            out.extend(h.join().expect("local list thread does not panic")?);
        }
        Ok(out)
    })
}
