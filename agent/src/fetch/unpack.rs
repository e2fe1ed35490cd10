//! Steps 3 and 4 with [`ImportVia::Unpack`](super::ImportVia): each NAR is streamed
//! from the bucket through every check and unpacked, in the same pass, straight into
//! the Nix store's directory; once every missing path of the closure passed, all of
//! them are registered as valid in one `nix-store --load-db` transaction with the
//! signed `NarHash`, `NarSize` and references ([`Nix::register_valid`]).
//!
//! Nix neither hashes nor reads the files again: fleet's checks (signature, both
//! hashes, both sizes, NAR structure, bounds) are the only ones, and every byte is
//! read, hashed and written once. Until registration the unpacked paths are invalid
//! (Nix treats them as absent, and removes them before writing them itself), so a
//! refusal registers nothing, and the paths already unpacked are removed: every
//! path's lock belongs to the fetch, not to its download, and the removal first
//! waits for the threads still writing (a download stopped because another one was
//! refused ends its thread once its source closes; a `file://` read runs to its end).
//!
//! Working beside Nix on the same store (the daemon, a build, the garbage collector):
//!
//! - **Path locks.** Before a path is written, its lock file `<path>.lock` is taken the
//!   way Nix's `PathLocks` does (`flock`, exclusive, retried when the file was
//!   unlinked under it), and held until the path is registered (or removed), so a
//!   Nix process substituting the same path waits instead of writing beside it. A
//!   path found on disk under its lock is either a leftover (invalid: removed and
//!   written again) or was made valid since the walk (left alone); one
//!   `nix-store --check-validity` tells which.
//! - **Another fleet fetch on the same store** (real hosts run one agent per store;
//!   the load benchmark runs many on one) could hold path locks this one waits for
//!   while waiting for one of its own: an exclusive lock on `fleet-unpack.lock`
//!   beside Nix's `gc.lock`, held from the first write to the registration, lets one
//!   unpacking fetch at a time write. Nix never waits for a path lock while it holds
//!   another (its builds and substitutions try, and come back later), so with it no
//!   cycle of waits can form.
//! - **The garbage collector** deletes every invalid path it finds. A shared lock on
//!   Nix's `gc.lock` (in the store's state directory) is held from the first write
//!   to the registration: the collector takes that lock exclusively for its whole
//!   run, so it waits for the fetch (and a fetch starting during a collection waits
//!   for it to end).
//! - **Read-only stores.** NixOS mounts `/nix/store` read-only, and Nix, run as root,
//!   remounts it writable in a private mount namespace of its own
//!   (`makeStoreWritable`). fleet does the same, per thread: every write into the
//!   store's directory (locks, removals, unpacking) runs on a short-lived thread that
//!   first leaves the agent's mount namespace (`unshare(CLONE_NEWNS)`, which affects
//!   that thread only) and remounts the store's bind mount writable there. The rest
//!   of the agent, the activation it runs included, keeps the read-only view. Not
//!   root on a read-only store: the fetch fails before anything is downloaded.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use fleet_core::nixcli::{Nix, PathInfo};
use fleet_core::{NarInfo, StorePath};
use futures::future::BoxFuture;

use super::{Ctx, FetchError};

/// Where one fetch unpacks: the store's directory, and the locks it holds.
pub(crate) struct Unpacker {
    /// The directory holding the store's paths (`/nix/store`, or a chroot's).
    dir: PathBuf,
    /// Whether the directory is mounted read-only, so that writes need a thread of
    /// their own in a private mount namespace (see the module docs).
    read_only: bool,
    /// `fleet-unpack.lock` (exclusive) and `gc.lock` (shared), held from the first
    /// write to the end of registration (see the module docs). Only ever locked
    /// briefly, so async tasks may look at it.
    store_locks: Mutex<Option<(File, File)>>,
    /// Held by the blocking thread taking the store locks, for as long as that takes
    /// (another fetch may hold them for minutes): the fetch's other paths wait on it
    /// on their blocking threads. Never locked on an async task, whose thread would
    /// then stop the runtime the lock holder may need.
    taking_store_locks: Mutex<()>,
    /// Nix's state directory of the store (`/nix/var/nix`), where both lock files are.
    state_dir: PathBuf,
    /// Every path this fetch took the lock of to write it, with its lock and, once
    /// it was written and passed every check, what to register. The fetch owns the
    /// locks (not the download that took them), so a download stopped part-way
    /// (another one was refused) still leaves its path to [`Unpacker::abandon`].
    paths: Mutex<HashMap<StorePath, (StoreLock, Option<PathInfo>)>>,
    /// Writes under way (see [`Writing`]), which [`Unpacker::abandon`] waits for:
    /// a thread still writing would put back what it removes.
    writers: Arc<(Mutex<usize>, Condvar)>,
    /// The store, and the closure's top path: asked about once the store locks are
    /// held, since another fetch may have brought the closure in meanwhile.
    nix: Nix,
    root: StorePath,
    /// Set when that question found the whole closure valid: nothing is written.
    closure_valid: AtomicBool,
}

fn store_err(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> FetchError + use<> {
    let path = path.to_owned();
    move |error| FetchError::Unpack {
        action,
        path,
        error,
    }
}

impl Unpacker {
    /// Checks that the store's directory can be written, before anything is
    /// downloaded.
    pub(crate) fn open(nix: &Nix, root: &StorePath) -> Result<Self, FetchError> {
        let dir = nix.real_store_dir().ok_or_else(|| FetchError::Unpack {
            action: "finding the directory of",
            path: PathBuf::from(nix.store.clone().unwrap_or_default()),
            error: io::Error::new(
                io::ErrorKind::Unsupported,
                "import-via = \"unpack\" (the default) writes store paths itself and needs the default store or a local chroot store given as a path; set import-via = \"staging\" for other stores",
            ),
        })?;
        // A chroot store that Nix has not opened yet has no directory: its nearest
        // existing ancestor tells whether it will be writable (the walk's first
        // question to the store creates it, before anything is unpacked).
        let existing = dir
            .ancestors()
            .find(|d| d.exists())
            .unwrap_or(Path::new("/"));
        let stat = rustix::fs::statvfs(existing)
            .map_err(|e| store_err("inspecting", existing)(e.into()))?;
        let read_only = stat.f_flag.contains(rustix::fs::StatVfsMountFlags::RDONLY);
        if read_only && !rustix::process::geteuid().is_root() {
            return Err(FetchError::StoreReadOnly { dir });
        }
        // `<root>/nix/store` -> `<root>/nix/var/nix`.
        let state_dir = dir.parent().unwrap_or(Path::new("/")).join("var/nix");
        Ok(Self {
            dir,
            read_only,
            store_locks: Mutex::new(None),
            taking_store_locks: Mutex::new(()),
            state_dir,
            paths: Mutex::new(HashMap::new()),
            writers: Arc::new((Mutex::new(0), Condvar::new())),
            nix: nix.clone(),
            root: root.clone(),
            closure_valid: AtomicBool::new(false),
        })
    }

    /// Starts `f`, which writes into the store's directory, on a thread that can: a
    /// blocking thread of the runtime when the store is writable, else a thread of its
    /// own that first remounts the store writable in a private mount namespace.
    /// Started at once; the future returns what `f` returned.
    pub(crate) fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> BoxFuture<'static, Result<T, FetchError>> {
        let failed = |why: String| FetchError::Internal {
            path: String::new(),
            why,
        };
        if !self.read_only {
            let h = tokio::task::spawn_blocking(f);
            return Box::pin(async move {
                h.await
                    .map_err(|e| failed(format!("a thread writing into the store failed: {e}")))
            });
        }
        let dir = self.dir.clone();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let started = std::thread::Builder::new()
            .name("fleet-unpack".into())
            .spawn({
                let dir = dir.clone();
                move || {
                    let _ = tx.send(writable_namespace(&dir).map(|()| f()));
                }
            });
        Box::pin(async move {
            started.map_err(store_err("starting a thread to write into", &dir))?;
            rx.await
                .map_err(|_| failed("a thread writing into the store panicked".into()))?
        })
    }

    /// Where `path` lives on this machine.
    pub(crate) fn target(&self, path: &StorePath) -> PathBuf {
        self.dir.join(path.base_name())
    }

    /// Takes `fleet-unpack.lock` and then the shared lock on Nix's `gc.lock`, if not
    /// held yet (blocking while another fleet fetch unpacks into this store, or a
    /// collection runs). If either lock had to be waited for, the store is then asked
    /// once whether the closure became valid meanwhile (another agent on the same
    /// store brought it in), so that its paths are not each asked about. Without a
    /// wait that question is left out, a `nix-store` start per fetch (about a twelfth
    /// of a 1,000-path fetch): a path made valid since the walk is still found, by the
    /// per-path check under its lock. Runs on a blocking thread; `rt` runs the
    /// question.
    fn hold_store_locks(&self, rt: &tokio::runtime::Handle) -> Result<(), FetchError> {
        use rustix::fs::{FlockOperation, flock};
        let _taking = self
            .taking_store_locks
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if self.holds_store_locks() {
            return Ok(());
        }
        let dir = &self.state_dir;
        fs::create_dir_all(dir).map_err(store_err("creating", dir))?;
        // The lock, and whether it was held by someone else when asked for.
        let lock = |name: &str, now: FlockOperation, wait: FlockOperation| {
            let p = dir.join(name);
            let f = open_lock_file(&p)?;
            let waited = match flock(&f, now) {
                Ok(()) => false,
                Err(rustix::io::Errno::WOULDBLOCK) => {
                    flock(&f, wait).map_err(|e| store_err("locking", &p)(e.into()))?;
                    true
                }
                Err(e) => return Err(store_err("locking", &p)(e.into())),
            };
            Ok::<_, FetchError>((f, waited))
        };
        let (fleet, waited_fleet) = lock(
            "fleet-unpack.lock",
            FlockOperation::NonBlockingLockExclusive,
            FlockOperation::LockExclusive,
        )?;
        let (gc, waited_gc) = lock(
            "gc.lock",
            FlockOperation::NonBlockingLockShared,
            FlockOperation::LockShared,
        )?;
        if waited_fleet || waited_gc {
            // Asked while still taking the locks, so the fetch's other paths wait for
            // the answer.
            let invalid = rt
                .block_on(self.nix.invalid_paths(std::slice::from_ref(&self.root)))
                .map_err(|e| FetchError::StoreQuery(Box::new(e)))?;
            if invalid.is_empty() {
                tracing::debug!(closure = %self.root, "made valid by someone else while waiting for the store lock");
                self.closure_valid.store(true, Ordering::SeqCst);
            }
        }
        *self.store_locks.lock().unwrap_or_else(|p| p.into_inner()) = Some((fleet, gc));
        Ok(())
    }

    /// Whether this fetch holds the store locks (a quick look, fine on an async task).
    fn holds_store_locks(&self) -> bool {
        self.store_locks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
    }

    /// Locks `path` and clears the way for it: `false` if it became valid since the
    /// walk (nothing to write), else `true`, the lock held by the fetch and nothing
    /// left at the target.
    pub(crate) async fn prepare(
        self: &Arc<Self>,
        ctx: &Ctx<'_>,
        path: &StorePath,
    ) -> Result<bool, FetchError> {
        let lock = self.lock_and_clear(ctx, path).await?;
        let write = lock.is_some();
        if let Some(lock) = lock {
            let mut paths = self.paths.lock().unwrap_or_else(|p| p.into_inner());
            paths.insert(path.clone(), (lock, None));
        }
        Ok(write)
    }

    /// [`Unpacker::prepare`], handing the lock back.
    async fn lock_and_clear(
        self: &Arc<Self>,
        ctx: &Ctx<'_>,
        path: &StorePath,
    ) -> Result<Option<StoreLock>, FetchError> {
        if self.closure_valid.load(Ordering::SeqCst) {
            return Ok(None);
        }
        let target = self.target(path);
        let locked = |lock: StoreLock, target: &Path| match fs::symlink_metadata(target) {
            Ok(_) => Ok((lock, true)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok((lock, false)),
            Err(e) => Err(store_err("inspecting", target)(e)),
        };
        // Usually nothing holds the path's lock, and taking it is a few quick system
        // calls: done here rather than on another thread, which costs more on a
        // closure of many small paths. Not on a read-only store (the lock file is
        // created in it), nor before the store locks are held (they may wait).
        let fast = !self.read_only && self.holds_store_locks();
        let now = match fast {
            true => StoreLock::try_acquire(&target)?,
            false => None,
        };
        let (lock, exists) = match now {
            Some(lock) => locked(lock, &target)?,
            // Both locks may wait (for a collection, for Nix writing the same path).
            None => {
                let (me, target) = (self.clone(), target.clone());
                let rt = tokio::runtime::Handle::current();
                let taken = self
                    .run(move || {
                        me.hold_store_locks(&rt)?;
                        if me.closure_valid.load(Ordering::SeqCst) {
                            return Ok(None);
                        }
                        locked(StoreLock::acquire(&target)?, &target).map(Some)
                    })
                    .await??;
                match taken {
                    Some(t) => t,
                    None => return Ok(None),
                }
            }
        };
        if !exists {
            return Ok(Some(lock));
        }
        // On disk already: a leftover to clear, or made valid since the walk.
        let cleared = async {
            let invalid = ctx
                .nix
                .invalid_paths(std::slice::from_ref(path))
                .await
                .map_err(|e| FetchError::StoreQuery(Box::new(e)))?;
            if invalid.is_empty() {
                tracing::debug!(%path, "made valid by someone else since the walk");
                return Ok(false);
            }
            tracing::info!(%path, "removing an unregistered copy left in the store");
            self.run(move || remove_tree(&target)).await??;
            Ok(true)
        }
        .await;
        match cleared {
            Ok(true) => Ok(Some(lock)),
            other => {
                self.release(vec![lock]).await;
                other.map(|_| None)
            }
        }
    }

    /// Releases `locks` where their files can be unlinked.
    async fn release(&self, locks: Vec<StoreLock>) {
        if locks.is_empty() {
            return;
        }
        if let Err(e) = self.run(move || drop(locks)).await {
            tracing::warn!(error = %e, "could not release store path locks");
        }
    }

    /// Counts a write into the store as under way until the value is dropped: made
    /// before the writing thread is started, moved into it.
    pub(crate) fn writing(&self) -> Writing {
        let (count, _) = &*self.writers;
        *count.lock().unwrap_or_else(|p| p.into_inner()) += 1;
        Writing(self.writers.clone())
    }

    /// Records that `ni`'s path was written and passed every check, to be registered
    /// with `ni`'s fields.
    pub(crate) fn written(&self, ni: &NarInfo) {
        let deriver = ni
            .deriver
            .as_deref()
            .and_then(|d| StorePath::from_base_name(d).ok());
        let info = PathInfo {
            path: ni.store_path.clone(),
            nar_hash: ni.nar_hash,
            nar_size: ni.nar_size,
            references: ni.references.clone(),
            deriver,
            signatures: Vec::new(),
            ca: None,
        };
        let mut paths = self.paths.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(entry) = paths.get_mut(&ni.store_path) {
            entry.1 = Some(info);
        }
    }

    /// Registers every written path as valid, then releases the locks. Called once
    /// every download succeeded, so every path locked was written and checked.
    pub(crate) async fn register(&self, ctx: &Ctx<'_>) -> Result<usize, FetchError> {
        let paths = std::mem::take(&mut *self.paths.lock().unwrap_or_else(|p| p.into_inner()));
        let mut locks = Vec::with_capacity(paths.len());
        let mut infos = Vec::with_capacity(paths.len());
        let mut unchecked = None;
        for (path, (lock, info)) in paths {
            locks.push(lock);
            match info {
                Some(i) => infos.push(i),
                None => unchecked = Some(path),
            }
        }
        // Every file is still there (`gc.lock` kept the collector out).
        let missing = infos
            .iter()
            .map(|i| self.target(&i.path))
            .find_map(|t| fs::symlink_metadata(&t).err().map(|e| (t, e)));
        let result = match (unchecked, missing) {
            (Some(path), _) => Err(FetchError::Internal {
                path: path.to_string(),
                why: "the path was locked for unpacking but never checked".into(),
            }),
            (None, Some((t, e))) => Err(store_err("checking before registration", &t)(e)),
            (None, None) => {
                ctx.nix
                    .register_valid(&infos)
                    .await
                    .map_err(|e| FetchError::ImportFailed {
                        root: ctx.root.to_string(),
                        why: format!(
                            "registering the unpacked paths (nix-store --load-db) failed: {e}"
                        ),
                    })
            }
        };
        if result.is_err() {
            let targets: Vec<PathBuf> = infos.iter().map(|i| self.target(&i.path)).collect();
            self.remove_and_release(targets, locks).await;
        } else {
            self.release(locks).await;
        }
        self.release_store_locks();
        result.map(|()| infos.len())
    }

    /// After a failure: once no thread writes any more, removes every path this fetch
    /// locked (written or half written, none registered) and releases the locks.
    /// Best effort: a leftover is invalid, and Nix or the next fetch removes it.
    pub(crate) async fn abandon(&self) {
        let paths = std::mem::take(&mut *self.paths.lock().unwrap_or_else(|p| p.into_inner()));
        let (targets, locks): (Vec<PathBuf>, Vec<StoreLock>) = paths
            .into_iter()
            .map(|(path, (lock, _))| (self.target(&path), lock))
            .unzip();
        self.remove_and_release(targets, locks).await;
        self.release_store_locks();
    }

    /// Waits for the writing threads to end, removes `targets`, releases `locks`.
    async fn remove_and_release(&self, targets: Vec<PathBuf>, locks: Vec<StoreLock>) {
        let writers = self.writers.clone();
        let done = self
            .run(move || {
                let (count, ended) = &*writers;
                let mut n = count.lock().unwrap_or_else(|p| p.into_inner());
                while *n > 0 {
                    n = ended.wait(n).unwrap_or_else(|p| p.into_inner());
                }
                drop(n);
                for t in &targets {
                    if let Err(e) = remove_tree(t) {
                        tracing::warn!(path = %t.display(), error = %e, "could not remove an unregistered path");
                    }
                }
                drop(locks);
            })
            .await;
        if let Err(e) = done {
            tracing::warn!(error = %e, "could not remove the unregistered paths");
        }
    }

    fn release_store_locks(&self) {
        *self.store_locks.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }
}

/// Leaves the agent's mount namespace, on this thread only, for a private copy in
/// which the store's mount is writable: what Nix's `makeStoreWritable` does.
fn writable_namespace(dir: &Path) -> Result<(), FetchError> {
    use rustix::thread::{UnshareFlags, unshare_unsafe};
    // SAFETY: NEWNS (with the FS it implies) gives this thread its own mount namespace,
    // root, working directory and umask, none of which another thread relies on. The
    // file descriptor table stays shared (FILES is not unshared), which is the case
    // `unshare_unsafe` warns about.
    unsafe { unshare_unsafe(UnshareFlags::NEWNS) }.map_err(|e| {
        store_err("leaving the agent's mount namespace to write into", dir)(e.into())
    })?;
    rustix::mount::mount_remount(dir, rustix::mount::MountFlags::BIND, "").map_err(|e| {
        store_err(
            "remounting writable in a private mount namespace (as Nix does)",
            dir,
        )(e.into())
    })
}

/// A write into the store under way ([`Unpacker::writing`]); ends when dropped.
pub(crate) struct Writing(Arc<(Mutex<usize>, Condvar)>);

impl Drop for Writing {
    fn drop(&mut self) {
        let (count, ended) = &*self.0;
        let mut n = count.lock().unwrap_or_else(|p| p.into_inner());
        *n = n.saturating_sub(1);
        ended.notify_all();
    }
}

/// Removes the file or tree at `path` (store directories are read-only), if any.
pub(crate) fn remove_tree(path: &Path) -> Result<(), FetchError> {
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(store_err("inspecting", path)(e)),
    };
    if !meta.is_dir() {
        return fs::remove_file(path).map_err(store_err("removing", path));
    }
    make_writable(path)?;
    fs::remove_dir_all(path).map_err(store_err("removing", path))
}

/// Gives every directory under `dir` (itself included) owner write permission, so
/// that its entries can be removed without root's override.
fn make_writable(dir: &Path) -> Result<(), FetchError> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o755))
        .map_err(store_err("making writable", dir))?;
    for entry in fs::read_dir(dir).map_err(store_err("listing", dir))? {
        let entry = entry.map_err(store_err("listing", dir))?;
        if entry
            .file_type()
            .map_err(store_err("inspecting", dir))?
            .is_dir()
        {
            make_writable(&entry.path())?;
        }
    }
    Ok(())
}

fn open_lock_file(p: &Path) -> Result<File, FetchError> {
    use std::os::unix::fs::OpenOptionsExt;
    fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(p)
        .map_err(store_err("opening the lock file", p))
}

/// A store path's lock, as Nix's `PathLocks` takes it: an exclusive `flock` on
/// `<path>.lock`. Released as Nix releases it: the file is unlinked, then marked
/// stale (one byte written) so that a process that opened it before the unlink and
/// then got the lock knows to open it again.
pub(crate) struct StoreLock {
    file: File,
    path: PathBuf,
}

impl StoreLock {
    /// Blocks until the lock on `target`'s lock file is held.
    fn acquire(target: &Path) -> Result<Self, FetchError> {
        Self::lock(target, true).map(|l| l.expect("a blocking lock is always taken"))
    }

    /// The lock if nobody holds it now, else `None`, without waiting.
    fn try_acquire(target: &Path) -> Result<Option<Self>, FetchError> {
        Self::lock(target, false)
    }

    fn lock(target: &Path, wait: bool) -> Result<Option<Self>, FetchError> {
        use rustix::fs::FlockOperation::{LockExclusive, NonBlockingLockExclusive};
        let mut name = target.as_os_str().to_owned();
        name.push(".lock");
        let path = PathBuf::from(name);
        loop {
            let file = open_lock_file(&path)?;
            match rustix::fs::flock(
                &file,
                if wait {
                    LockExclusive
                } else {
                    NonBlockingLockExclusive
                },
            ) {
                Ok(()) => {}
                Err(rustix::io::Errno::WOULDBLOCK) if !wait => return Ok(None),
                Err(e) => return Err(store_err("locking", &path)(e.into())),
            }
            let len = file
                .metadata()
                .map_err(store_err("inspecting", &path))?
                .len();
            if len == 0 {
                return Ok(Some(Self { file, path }));
            }
            // Stale: its holder unlinked it after we opened it.
        }
    }
}

impl Drop for StoreLock {
    fn drop(&mut self) {
        // Marked stale only once unlinked: a file left in place with the mark would
        // send every later locker, Nix included, round its retry loop for ever.
        if fs::remove_file(&self.path).is_ok() {
            let _ = io::Write::write_all(&mut self.file, b"d");
        }
    }
}
