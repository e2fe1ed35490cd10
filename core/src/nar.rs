//! NAR, the Nix ARchive: serialising a store path from the filesystem, and checking
//! one that arrived from a bucket.
//!
//! The format, as Nix writes it (`nix-store --dump`): every token is a "string", a
//! little-endian u64 length followed by the bytes and zero padding to a multiple of 8.
//!
//! ```text
//! nar       = str("nix-archive-1") node
//! node      = str("(") str("type") body str(")")
//! body      = str("regular") [str("executable") str("")] str("contents") str(<bytes>)
//!           | str("symlink") str("target") str(<target>)
//!           | str("directory") { str("entry") str("(") str("name") str(<name>)
//!                                 str("node") node str(")") }
//! ```
//!
//! Directory entries are sorted by name bytes, each name once. [`dump`] writes this
//! byte for byte as Nix does, streaming file contents so memory stays flat whatever
//! the file sizes.
//!
//! [`validate`] reads a NAR from an untrusted source and refuses anything Nix would
//! refuse, plus what a deploy tool must never pass on: entry names that are empty,
//! `.`, `..`, or hold `/` or NUL; unsorted or duplicate entries; relative symlink
//! targets that climb out of the store path (`../../etc/shadow`); over-long names or
//! targets; nesting deeper than [`MAX_DEPTH`]; padding that is not zero; trailing
//! bytes. Absolute symlink targets are allowed, because real system closures are full
//! of them (`/run/current-system/sw`, other store paths).
//!
//! [`unpack`] does everything [`validate`] does and, in the same pass, writes the
//! archive's tree to a directory the way Nix leaves a store path (see [`unpack`]).
//! Nothing is created under a name before that name passed its checks, so a hostile
//! NAR cannot write outside the destination.

use std::fs;
use std::io::{self, BufRead, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

/// The archive's magic string.
pub const MAGIC: &str = "nix-archive-1";
/// Deepest directory nesting accepted by [`validate`].
pub const MAX_DEPTH: usize = 256;
/// Longest entry name accepted (the usual filesystem limit).
pub const MAX_NAME_LEN: usize = 255;
/// Longest symlink target accepted (Linux `PATH_MAX - 1`).
pub const MAX_TARGET_LEN: usize = 4095;

/// Size of the copy buffer used for file contents by [`dump`], and of the read-ahead
/// buffer of [`validate`].
const BUF: usize = 256 * 1024;

fn write_str(out: &mut impl Write, s: &[u8]) -> io::Result<()> {
    out.write_all(&(s.len() as u64).to_le_bytes())?;
    out.write_all(s)?;
    write_padding(out, s.len() as u64)
}

fn write_padding(out: &mut impl Write, len: u64) -> io::Result<()> {
    let pad = (8 - (len % 8) as usize) % 8;
    out.write_all(&[0u8; 8][..pad])
}

/// Where [`dump_node`] puts the archive: tokens, and the contents of regular files,
/// which each sink copies its own way.
trait Sink {
    /// Writes one string token (length, bytes, padding).
    fn token(&mut self, s: &[u8]) -> io::Result<()>;
    /// Writes the contents token of a regular file: exactly `len` bytes read from
    /// `f` (the file at `path`), failing if the file is not that size.
    fn contents(&mut self, f: fs::File, len: u64, path: &Path) -> io::Result<()>;
}

/// A NAR into any writer, file contents copied through a buffer.
struct ToWriter<'a, W> {
    out: &'a mut W,
    buf: Vec<u8>,
}

impl<W: Write> Sink for ToWriter<'_, W> {
    fn token(&mut self, s: &[u8]) -> io::Result<()> {
        write_str(self.out, s)
    }

    fn contents(&mut self, mut f: fs::File, len: u64, path: &Path) -> io::Result<()> {
        self.out.write_all(&len.to_le_bytes())?;
        let mut left = len;
        while left > 0 {
            let want = self.buf.len().min(left as usize);
            let n = f.read(&mut self.buf[..want])?;
            if n == 0 {
                return Err(shrank(path));
            }
            self.out.write_all(&self.buf[..n])?;
            left -= n as u64;
        }
        if f.read(&mut self.buf[..1])? != 0 {
            return Err(grew(path));
        }
        write_padding(self.out, len)
    }
}

/// A NAR into memory, file contents read straight into it (no copy through a
/// buffer), refusing to grow past `max` bytes.
struct ToVec<'a> {
    out: &'a mut Vec<u8>,
    max: u64,
}

impl ToVec<'_> {
    /// Fails unless `more` bytes still fit under the limit.
    fn room(&self, more: u64) -> io::Result<()> {
        if (self.out.len() as u64).saturating_add(more) > self.max {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("the NAR is larger than the {} bytes expected", self.max),
            ));
        }
        Ok(())
    }
}

impl Sink for ToVec<'_> {
    fn token(&mut self, s: &[u8]) -> io::Result<()> {
        self.room(8 + padded(s.len() as u64))?;
        write_str(self.out, s)
    }

    fn contents(&mut self, f: fs::File, len: u64, path: &Path) -> io::Result<()> {
        // The length, the contents and the padding must all fit.
        self.room(8u64.saturating_add(padded(len)))?;
        self.out.extend_from_slice(&len.to_le_bytes());
        let end = self.out.len() + len as usize;
        // Room for the contents and the padding: the read after the last byte then
        // has spare capacity to show whether the file grew.
        self.out.reserve(len as usize + 8);
        loop {
            // Straight into the spare capacity, which `spare_capacity` marks as
            // filled by what the read returned: no zeroing, no copy.
            match rustix::io::read(&f, rustix::buffer::spare_capacity(self.out)) {
                Ok(0) if self.out.len() < end => return Err(shrank(path)),
                Ok(0) => break,
                Ok(_) if self.out.len() > end => {
                    self.out.truncate(end);
                    return Err(grew(path));
                }
                Ok(_) => {}
                Err(rustix::io::Errno::INTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
        write_padding(self.out, len)
    }
}

/// `len` rounded up to a multiple of 8: a token's bytes and padding.
fn padded(len: u64) -> u64 {
    len.saturating_add(7) & !7
}

fn shrank(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        format!("{} shrank while it was being read", path.display()),
    )
}

fn grew(path: &Path) -> io::Error {
    io::Error::other(format!("{} grew while it was being read", path.display()))
}

/// Serialises the file, symlink or directory at `path` as a NAR into `out`.
///
/// Byte-identical to `nix-store --dump`. Fails if a file changes size while it is
/// being read, or on file types a NAR cannot hold (sockets, devices, FIFOs).
pub fn dump(path: &Path, out: &mut impl Write) -> io::Result<()> {
    let mut sink = ToWriter {
        out,
        buf: vec![0u8; BUF],
    };
    sink.token(MAGIC.as_bytes())?;
    dump_node(path, &mut sink)
}

/// Appends the NAR of `path` to `out`, as [`dump`] writes it, reading file contents
/// straight into `out` (one copy fewer than through a writer). Fails with
/// [`io::ErrorKind::InvalidData`], before reading on, once the NAR would make `out`
/// longer than `max` bytes, so a store path that grew cannot exhaust memory.
pub fn dump_to_vec(path: &Path, out: &mut Vec<u8>, max: u64) -> io::Result<()> {
    let mut sink = ToVec { out, max };
    sink.token(MAGIC.as_bytes())?;
    dump_node(path, &mut sink)
}

fn dump_node(path: &Path, out: &mut impl Sink) -> io::Result<()> {
    let meta = fs::symlink_metadata(path)?;
    out.token(b"(")?;
    out.token(b"type")?;
    let ft = meta.file_type();
    if ft.is_symlink() {
        out.token(b"symlink")?;
        out.token(b"target")?;
        out.token(fs::read_link(path)?.as_os_str().as_bytes())?;
    } else if ft.is_file() {
        out.token(b"regular")?;
        if meta.permissions().mode() & 0o100 != 0 {
            out.token(b"executable")?;
            out.token(b"")?;
        }
        out.token(b"contents")?;
        out.contents(fs::File::open(path)?, meta.len(), path)?;
    } else if ft.is_dir() {
        out.token(b"directory")?;
        let mut names: Vec<_> = fs::read_dir(path)?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<io::Result<_>>()?;
        names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        for name in names {
            out.token(b"entry")?;
            out.token(b"(")?;
            out.token(b"name")?;
            out.token(name.as_bytes())?;
            out.token(b"node")?;
            dump_node(&path.join(&name), out)?;
            out.token(b")")?;
        }
    } else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{} is neither a regular file, a directory nor a symlink; a NAR cannot hold it",
                path.display()
            ),
        ));
    }
    out.token(b")")
}

/// Why a NAR was refused.
#[derive(Debug, thiserror::Error)]
pub enum NarError {
    /// Reading failed (including decompression or the network underneath).
    #[error("reading the NAR failed: {0}")]
    Io(#[from] io::Error),
    /// The stream ended in the middle of the archive.
    #[error("the NAR is truncated (it ended inside {0})")]
    Truncated(&'static str),
    /// A token other than the one the format requires.
    #[error("the NAR is malformed at byte {offset}: expected {expected}, found {found:?}")]
    Unexpected {
        /// Byte offset of the token.
        offset: u64,
        /// What the format requires.
        expected: &'static str,
        /// What was there (truncated).
        found: String,
    },
    /// An entry name that could address something outside its directory.
    #[error(
        "the NAR has an entry named {name:?} at {path:?}; names may not be empty, `.`, `..`, or contain `/` or NUL"
    )]
    BadName {
        /// Path of the directory holding it, inside the store path.
        path: String,
        /// The name (lossy).
        name: String,
    },
    /// Entries out of order or repeated.
    #[error("the NAR's directory {path:?} lists {name:?} out of order or twice")]
    Unsorted {
        /// The directory.
        path: String,
        /// The entry.
        name: String,
    },
    /// A relative symlink whose target climbs out of the store path.
    #[error("the NAR has a symlink {path:?} -> {target:?} that escapes its store path")]
    EscapingSymlink {
        /// The symlink, inside the store path.
        path: String,
        /// Its target (lossy).
        target: String,
    },
    /// A string longer than its bound.
    #[error("the NAR has a {what} of {len} bytes at byte {offset}, over the {limit}-byte bound")]
    TooLong {
        /// What kind of string.
        what: &'static str,
        /// Its length.
        len: u64,
        /// The bound.
        limit: u64,
        /// Where.
        offset: u64,
    },
    /// Nesting deeper than [`MAX_DEPTH`].
    #[error("the NAR nests directories deeper than {MAX_DEPTH}")]
    TooDeep,
    /// Bytes after the end of the archive.
    #[error("the NAR has data after its end")]
    TrailingData,
    /// [`unpack`] could not write the tree (a local failure, not the NAR's fault).
    #[error("writing {} failed: {error} (check free space and permissions)", path.display())]
    Unpack {
        /// The file, directory or symlink being written.
        path: PathBuf,
        /// The OS error.
        error: io::Error,
    },
}

/// What [`validate`] learned about a NAR.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NarSummary {
    /// Regular files.
    pub files: u64,
    /// Directories.
    pub directories: u64,
    /// Symlinks.
    pub symlinks: u64,
}

/// The validator's view of its input: one read-ahead buffer serves both the small
/// tokens (a decoder or hasher underneath is called once per buffer, not once per
/// 8-byte token) and file contents (skipped in place, without a second copy).
struct Reader<R> {
    inner: io::BufReader<R>,
    offset: u64,
    buf: Vec<u8>,
}

impl<R: Read> Reader<R> {
    /// Bytes buffered (at least one), reading more if none are; `Truncated` at the end.
    fn fill(&mut self, ctx: &'static str) -> Result<usize, NarError> {
        loop {
            match self.inner.fill_buf() {
                Ok([]) => return Err(NarError::Truncated(ctx)),
                Ok(b) => return Ok(b.len()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(NarError::Io(e)),
            }
        }
    }

    fn exact(&mut self, n: usize, ctx: &'static str) -> Result<(), NarError> {
        self.buf.clear();
        while self.buf.len() < n {
            let k = (n - self.buf.len()).min(self.fill(ctx)?);
            self.buf.extend_from_slice(&self.inner.buffer()[..k]);
            self.inner.consume(k);
        }
        self.offset += n as u64;
        Ok(())
    }

    fn u64(&mut self, ctx: &'static str) -> Result<u64, NarError> {
        self.exact(8, ctx)?;
        Ok(u64::from_le_bytes(
            self.buf[..8].try_into().expect("8 bytes"),
        ))
    }

    fn padding(&mut self, len: u64, ctx: &'static str) -> Result<(), NarError> {
        let pad = ((8 - len % 8) % 8) as usize;
        if pad > 0 {
            let at = self.offset;
            self.exact(pad, ctx)?;
            if self.buf[..pad].iter().any(|&b| b != 0) {
                return Err(NarError::Unexpected {
                    offset: at,
                    expected: "zero padding",
                    found: format!("{:?}", &self.buf[..pad]),
                });
            }
        }
        Ok(())
    }

    /// Reads a string of at most `limit` bytes into `self.buf`.
    fn string(&mut self, what: &'static str, limit: u64) -> Result<&[u8], NarError> {
        let at = self.offset;
        let len = self.u64(what)?;
        if len > limit {
            return Err(NarError::TooLong {
                what,
                len,
                limit,
                offset: at,
            });
        }
        self.exact(len as usize, what)?;
        let s = std::mem::take(&mut self.buf);
        self.padding(len, what)?;
        self.buf = s;
        Ok(&self.buf[..len as usize])
    }

    fn expect(&mut self, token: &'static str) -> Result<(), NarError> {
        let at = self.offset;
        let got = self.string(token, 64)?;
        if got != token.as_bytes() {
            return Err(NarError::Unexpected {
                offset: at,
                expected: token,
                found: String::from_utf8_lossy(got).chars().take(64).collect(),
            });
        }
        Ok(())
    }

    /// Reads a file's contents, streaming them through to `out` (straight from the
    /// read-ahead buffer) or skipping them.
    fn contents(&mut self, mut out: Option<(&mut fs::File, &Path)>) -> Result<(), NarError> {
        let len = self.u64("file contents")?;
        let mut left = len;
        while left > 0 {
            let n = self
                .fill("file contents")?
                .min(usize::try_from(left).unwrap_or(usize::MAX));
            if let Some((f, path)) = out.as_mut() {
                f.write_all(&self.inner.buffer()[..n])
                    .map_err(unpack_err(path))?;
            }
            self.inner.consume(n);
            left -= n as u64;
            self.offset += n as u64;
        }
        self.padding(len, "file contents")
    }
}

/// Reads and checks a whole NAR from `input`, which must end where the NAR ends.
pub fn validate(input: impl Read) -> Result<NarSummary, NarError> {
    check(input, None)
}

/// Modification time Nix gives everything in the store (1 s after the epoch).
const STORE_MTIME: Duration = Duration::from_secs(1);

/// Reads and checks a whole NAR from `input` as [`validate`] does, writing the tree it
/// holds at `dest`, which must not exist yet, in the form Nix gives a store path
/// (`canonicalisePathMetaData`): regular files mode 0444, or 0555 when executable;
/// directories 0555, set once their entries are written; modification time 1 s after
/// the epoch on every file, directory and symlink; owned by the caller.
///
/// On an error the tree is left as far as it got: the caller removes `dest`. A check
/// fails before anything is created under the name it concerns, so whatever the NAR
/// holds, nothing is written outside `dest` and no symlink is followed.
pub fn unpack(input: impl Read, dest: &Path) -> Result<NarSummary, NarError> {
    check(input, Some(&mut dest.to_owned()))
}

fn check(input: impl Read, out: Option<&mut PathBuf>) -> Result<NarSummary, NarError> {
    let mut r = Reader {
        inner: io::BufReader::with_capacity(BUF, input),
        offset: 0,
        buf: Vec::with_capacity(256),
    };
    r.expect(MAGIC)?;
    let mut summary = NarSummary::default();
    let mut path = Vec::new();
    validate_node(&mut r, &mut path, 0, &mut summary, out)?;
    let mut one = [0u8; 1];
    loop {
        match r.inner.read(&mut one) {
            Ok(0) => return Ok(summary),
            Ok(_) => return Err(NarError::TrailingData),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(NarError::Io(e)),
        }
    }
}

fn lossy(path: &[Vec<u8>]) -> String {
    let mut s = String::from("/");
    for (i, seg) in path.iter().enumerate() {
        if i > 0 {
            s.push('/');
        }
        s.push_str(&String::from_utf8_lossy(seg));
    }
    s
}

/// Whether a relative symlink target stays inside the store path, given the depth of
/// the directory holding the symlink.
fn target_stays_inside(target: &[u8], dir_depth: usize) -> bool {
    let mut depth = dir_depth as i64;
    for seg in target.split(|&b| b == b'/') {
        match seg {
            b"" | b"." => {}
            b".." => {
                depth -= 1;
                if depth < 0 {
                    return false;
                }
            }
            _ => depth += 1,
        }
    }
    true
}

fn unpack_err(path: &Path) -> impl FnOnce(io::Error) -> NarError + use<> {
    let path = path.to_owned();
    move |error| NarError::Unpack { path, error }
}

/// Sets `path`'s modification time to Nix's, leaving its access time; does not
/// follow a symlink.
fn set_store_mtime(path: &Path) -> Result<(), NarError> {
    use rustix::fs::{AtFlags, CWD, Timespec, Timestamps, UTIME_OMIT, utimensat};
    let times = Timestamps {
        last_access: Timespec {
            tv_sec: 0,
            tv_nsec: UTIME_OMIT,
        },
        last_modification: Timespec {
            tv_sec: STORE_MTIME.as_secs() as _,
            tv_nsec: 0,
        },
    };
    utimensat(CWD, path, &times, AtFlags::SYMLINK_NOFOLLOW).map_err(|e| unpack_err(path)(e.into()))
}

/// Creates the regular file `dest`, fills it with the contents that follow in `r`,
/// and gives it Nix's mode and modification time.
fn unpack_file<R: Read>(r: &mut Reader<R>, dest: &Path, executable: bool) -> Result<(), NarError> {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(dest)
        .map_err(unpack_err(dest))?;
    r.contents(Some((&mut f, dest)))?;
    let mode = if executable { 0o555 } else { 0o444 };
    // Explicit, so that the process's umask does not decide.
    f.set_permissions(fs::Permissions::from_mode(mode))
        .and_then(|()| f.set_times(fs::FileTimes::new().set_modified(UNIX_EPOCH + STORE_MTIME)))
        .map_err(unpack_err(dest))
}

fn validate_node<R: Read>(
    r: &mut Reader<R>,
    path: &mut Vec<Vec<u8>>,
    depth: usize,
    summary: &mut NarSummary,
    mut out: Option<&mut PathBuf>,
) -> Result<(), NarError> {
    if depth > MAX_DEPTH {
        return Err(NarError::TooDeep);
    }
    r.expect("(")?;
    r.expect("type")?;
    let at = r.offset;
    let kind = r.string("node type", 64)?.to_vec();
    match &kind[..] {
        b"regular" => {
            summary.files += 1;
            let at = r.offset;
            let tag = r.string("regular file tag", 64)?.to_vec();
            let executable = tag == b"executable";
            let tag = if executable {
                r.expect("")?;
                r.string("regular file tag", 64)?.to_vec()
            } else {
                tag
            };
            if tag != b"contents" {
                return Err(NarError::Unexpected {
                    offset: at,
                    expected: "contents",
                    found: String::from_utf8_lossy(&tag).into(),
                });
            }
            match out {
                Some(dest) => unpack_file(r, dest, executable)?,
                None => r.contents(None)?,
            }
            r.expect(")")
        }
        b"symlink" => {
            summary.symlinks += 1;
            r.expect("target")?;
            let target = r.string("symlink target", MAX_TARGET_LEN as u64)?.to_vec();
            if target.is_empty() || target.contains(&0) {
                return Err(NarError::EscapingSymlink {
                    path: lossy(path),
                    target: String::from_utf8_lossy(&target).into(),
                });
            }
            // The symlink lives in the directory one level up from its own entry.
            let dir_depth = path.len().saturating_sub(1);
            if target[0] != b'/' && (path.is_empty() || !target_stays_inside(&target, dir_depth)) {
                return Err(NarError::EscapingSymlink {
                    path: lossy(path),
                    target: String::from_utf8_lossy(&target).into(),
                });
            }
            if let Some(dest) = out {
                std::os::unix::fs::symlink(std::ffi::OsStr::from_bytes(&target), &*dest)
                    .map_err(unpack_err(dest))?;
                set_store_mtime(dest)?;
            }
            r.expect(")")
        }
        b"directory" => {
            summary.directories += 1;
            if let Some(dest) = out.as_deref() {
                fs::create_dir(dest).map_err(unpack_err(dest))?;
            }
            let mut prev: Option<Vec<u8>> = None;
            loop {
                let at = r.offset;
                let tok = r.string("directory entry", 64)?.to_vec();
                match &tok[..] {
                    b")" => {
                        if let Some(dest) = out.as_deref() {
                            // Last, once no entry will be added (that would change
                            // the modification time again).
                            fs::set_permissions(dest, fs::Permissions::from_mode(0o555))
                                .map_err(unpack_err(dest))?;
                            set_store_mtime(dest)?;
                        }
                        return Ok(());
                    }
                    b"entry" => {}
                    other => {
                        return Err(NarError::Unexpected {
                            offset: at,
                            expected: "entry or )",
                            found: String::from_utf8_lossy(other).into(),
                        });
                    }
                }
                r.expect("(")?;
                r.expect("name")?;
                let name = r.string("entry name", MAX_NAME_LEN as u64)?.to_vec();
                if name.is_empty()
                    || name == b"."
                    || name == b".."
                    || name.contains(&b'/')
                    || name.contains(&0)
                {
                    return Err(NarError::BadName {
                        path: lossy(path),
                        name: String::from_utf8_lossy(&name).into(),
                    });
                }
                if prev.as_ref().is_some_and(|p| p >= &name) {
                    return Err(NarError::Unsorted {
                        path: lossy(path),
                        name: String::from_utf8_lossy(&name).into(),
                    });
                }
                r.expect("node")?;
                if let Some(dest) = out.as_deref_mut() {
                    dest.push(std::ffi::OsStr::from_bytes(&name));
                }
                path.push(name.clone());
                validate_node(r, path, depth + 1, summary, out.as_deref_mut())?;
                path.pop();
                if let Some(dest) = out.as_deref_mut() {
                    dest.pop();
                }
                r.expect(")")?;
                prev = Some(name);
            }
        }
        other => Err(NarError::Unexpected {
            offset: at,
            expected: "regular, symlink or directory",
            found: String::from_utf8_lossy(other).into(),
        }),
    }
}

/// Builds NARs in memory from a description, for tests of readers (hostile NARs
/// included); real NARs come from [`dump`].
pub mod build {
    use super::write_str;

    /// A node to serialise.
    #[derive(Clone, Debug)]
    pub enum Node {
        /// A regular file.
        File {
            /// Whether it is executable.
            executable: bool,
            /// Its contents.
            contents: Vec<u8>,
        },
        /// A symlink.
        Symlink(Vec<u8>),
        /// A directory, entries written in the order given (sorted or not).
        Dir(Vec<(Vec<u8>, Node)>),
    }

    /// Serialises `node` as a NAR, exactly as given (no sorting, no checks).
    pub fn nar(node: &Node) -> Vec<u8> {
        let mut out = Vec::new();
        write_str(&mut out, super::MAGIC.as_bytes()).expect("vec write");
        write_node(&mut out, node);
        out
    }

    fn write_node(out: &mut Vec<u8>, node: &Node) {
        let w = |out: &mut Vec<u8>, s: &[u8]| write_str(out, s).expect("vec write");
        w(out, b"(");
        w(out, b"type");
        match node {
            Node::File {
                executable,
                contents,
            } => {
                w(out, b"regular");
                if *executable {
                    w(out, b"executable");
                    w(out, b"");
                }
                w(out, b"contents");
                w(out, contents);
            }
            Node::Symlink(t) => {
                w(out, b"symlink");
                w(out, b"target");
                w(out, t);
            }
            Node::Dir(entries) => {
                w(out, b"directory");
                for (name, child) in entries {
                    w(out, b"entry");
                    w(out, b"(");
                    w(out, b"name");
                    w(out, name);
                    w(out, b"node");
                    write_node(out, child);
                    w(out, b")");
                }
            }
        }
        w(out, b")");
    }
}

#[cfg(test)]
mod tests {
    use super::build::{Node, nar};
    use super::*;

    fn file(s: &str) -> Node {
        Node::File {
            executable: false,
            contents: s.as_bytes().to_vec(),
        }
    }

    fn dir(entries: Vec<(&str, Node)>) -> Node {
        Node::Dir(
            entries
                .into_iter()
                .map(|(n, c)| (n.as_bytes().to_vec(), c))
                .collect(),
        )
    }

    #[test]
    fn dump_round_trips_through_validate() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("out");
        fs::create_dir_all(root.join("a/b")).unwrap();
        fs::write(root.join("a/b/f"), "hi\n").unwrap();
        fs::write(root.join("empty"), "").unwrap();
        fs::write(root.join("run"), "#!/bin/sh\n").unwrap();
        fs::set_permissions(root.join("run"), fs::Permissions::from_mode(0o555)).unwrap();
        std::os::unix::fs::symlink("a/b/f", root.join("link")).unwrap();
        std::os::unix::fs::symlink("/nix/store/x", root.join("abs")).unwrap();
        let mut out = Vec::new();
        dump(&root, &mut out).unwrap();
        assert_eq!(out.len() % 8, 0);
        let s = validate(&out[..]).unwrap();
        assert_eq!(
            s,
            NarSummary {
                files: 3,
                directories: 3,
                symlinks: 2
            }
        );
    }

    #[test]
    fn unpack_writes_what_dump_reads_back_in_nix_store_form() {
        use std::os::unix::fs::MetadataExt;
        let d = tempfile::tempdir().unwrap();
        let nar_bytes = nar(&dir(vec![
            (
                "a",
                dir(vec![
                    ("big", file(&"x".repeat(700_000))),
                    ("empty", dir(vec![])),
                ]),
            ),
            ("abs", Node::Symlink(b"/nix/store/x".to_vec())),
            ("link", Node::Symlink(b"a/big".to_vec())),
            (
                "run",
                Node::File {
                    executable: true,
                    contents: b"#!/bin/sh\n".to_vec(),
                },
            ),
            ("zero", file("")),
        ]));
        let dest = d.path().join("out");
        let s = unpack(&nar_bytes[..], &dest).unwrap();
        assert_eq!(s, validate(&nar_bytes[..]).unwrap());
        let mut again = Vec::new();
        dump(&dest, &mut again).unwrap();
        assert_eq!(again, nar_bytes);
        for (rel, mode) in [
            ("", 0o555),
            ("a", 0o555),
            ("a/empty", 0o555),
            ("a/big", 0o444),
            ("run", 0o555),
            ("zero", 0o444),
        ] {
            let m = fs::symlink_metadata(dest.join(rel)).unwrap();
            assert_eq!(m.mode() & 0o7777, mode, "{rel}");
            assert_eq!(m.mtime(), 1, "{rel}");
        }
        for rel in ["abs", "link"] {
            let m = fs::symlink_metadata(dest.join(rel)).unwrap();
            assert!(m.file_type().is_symlink() && m.mtime() == 1, "{rel}");
        }
        // A single file or symlink as the whole store path.
        let f = d.path().join("f");
        unpack(&nar(&file("hi"))[..], &f).unwrap();
        assert_eq!(fs::read(&f).unwrap(), b"hi");
        let l = d.path().join("l");
        unpack(&nar(&Node::Symlink(b"/etc".to_vec()))[..], &l).unwrap();
        assert_eq!(fs::read_link(&l).unwrap(), Path::new("/etc"));
        // The destination must not exist: nothing is written over.
        let r = unpack(&nar(&file("again"))[..], &f);
        assert!(
            matches!(&r, Err(NarError::Unpack { path, .. }) if path == &f),
            "{r:?}"
        );
        assert_eq!(fs::read(&f).unwrap(), b"hi");
    }

    #[test]
    fn unpack_writes_nothing_outside_its_destination() {
        let d = tempfile::tempdir().unwrap();
        let hostile = [
            nar(&dir(vec![("..", file("x"))])),
            nar(&dir(vec![("a/b", file("x"))])),
            nar(&dir(vec![("b", file("x")), ("a", file("y"))])),
            nar(&dir(vec![("up", Node::Symlink(b"../../etc".to_vec()))])),
            // A symlink named like a later entry cannot be written through: entries
            // are unique, and files are created, never opened.
            nar(&dir(vec![
                ("a", Node::Symlink(b"/tmp".to_vec())),
                ("a", file("x")),
            ])),
        ];
        for (i, bytes) in hostile.iter().enumerate() {
            let dest = d.path().join(format!("out{i}"));
            assert!(unpack(&bytes[..], &dest).is_err(), "case {i}");
        }
        let mut left: Vec<String> = fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        // Each refused archive got at most its own directory (and no entry refused).
        assert!(left.iter().all(|n| n.starts_with("out")), "{left:?}");
        for n in &left {
            for e in fs::read_dir(d.path().join(n)).unwrap() {
                let name = e.unwrap().file_name();
                assert!(
                    ["b", "a"].contains(&name.to_str().unwrap()),
                    "{n}: {name:?}"
                );
            }
        }
    }

    #[test]
    fn dump_to_vec_writes_what_dump_writes_and_stops_at_its_limit() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("out");
        fs::create_dir_all(root.join("a/empty-dir")).unwrap();
        fs::write(root.join("a/f"), vec![9u8; 300_001]).unwrap();
        fs::write(root.join("empty"), "").unwrap();
        fs::write(root.join("x"), "1234567").unwrap();
        fs::set_permissions(root.join("x"), fs::Permissions::from_mode(0o555)).unwrap();
        std::os::unix::fs::symlink("a/f", root.join("link")).unwrap();
        let mut want = Vec::new();
        dump(&root, &mut want).unwrap();
        // Appends after what the vector holds, whatever its spare capacity.
        for start in [
            Vec::new(),
            b"prefix!!".to_vec(),
            Vec::with_capacity(1 << 20),
        ] {
            let mut got = start.clone();
            dump_to_vec(&root, &mut got, (start.len() + want.len()) as u64).unwrap();
            assert_eq!(&got[..start.len()], &start[..]);
            assert!(got[start.len()..] == want[..], "differs from dump");
        }
        // One byte short of the NAR: refused, before the contents are read.
        let mut got = Vec::new();
        let err = dump_to_vec(&root, &mut got, want.len() as u64 - 1).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
        assert!(got.len() < want.len());
        // A single file, and a symlink, as the root.
        for p in [root.join("a/f"), root.join("link"), root.join("empty")] {
            let (mut a, mut b) = (Vec::new(), Vec::new());
            dump(&p, &mut a).unwrap();
            dump_to_vec(&p, &mut b, u64::MAX).unwrap();
            assert!(a == b, "{}", p.display());
        }
    }

    #[test]
    fn dump_matches_the_hand_built_form() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("out");
        fs::create_dir(&root).unwrap();
        fs::write(root.join("b"), "2").unwrap();
        fs::write(root.join("a"), "1").unwrap();
        let mut out = Vec::new();
        dump(&root, &mut out).unwrap();
        assert_eq!(out, nar(&dir(vec![("a", file("1")), ("b", file("2"))])));
    }

    #[test]
    fn refuses_hostile_names() {
        for bad in ["..", ".", "", "a/b", "a\0b", "/etc"] {
            let n = nar(&dir(vec![(bad, file("x"))]));
            assert!(
                matches!(validate(&n[..]), Err(NarError::BadName { .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn refuses_escaping_symlinks_but_allows_absolute_and_inner_ones() {
        let ok = |t: &str| {
            validate(&nar(&dir(vec![("d", dir(vec![("l", Node::Symlink(t.into()))]))]))[..])
        };
        assert!(ok("../x").is_ok());
        assert!(ok("/nix/store/abc-x/bin").is_ok());
        assert!(ok("./y/../z").is_ok());
        assert!(matches!(
            ok("../../x"),
            Err(NarError::EscapingSymlink { .. })
        ));
        assert!(matches!(
            ok("../../../etc/shadow"),
            Err(NarError::EscapingSymlink { .. })
        ));
        assert!(matches!(ok(""), Err(NarError::EscapingSymlink { .. })));
        // A store path that is itself a relative symlink always points outside.
        assert!(matches!(
            validate(&nar(&Node::Symlink(b"../x".to_vec()))[..]),
            Err(NarError::EscapingSymlink { .. })
        ));
        assert!(validate(&nar(&Node::Symlink(b"/nix/store/abc-x".to_vec()))[..]).is_ok());
    }

    #[test]
    fn refuses_unsorted_and_duplicate_entries() {
        for names in [["b", "a"], ["a", "a"]] {
            let n = nar(&dir(vec![(names[0], file("1")), (names[1], file("2"))]));
            assert!(matches!(validate(&n[..]), Err(NarError::Unsorted { .. })));
        }
    }

    #[test]
    fn refuses_truncation_trailing_data_and_bad_padding() {
        let good = nar(&dir(vec![("a", file("hello"))]));
        for cut in [0, 7, 8, 40, good.len() - 1] {
            assert!(
                matches!(validate(&good[..cut]), Err(NarError::Truncated(_))),
                "cut at {cut}"
            );
        }
        let mut long = good.clone();
        long.extend_from_slice(&[0; 8]);
        assert!(matches!(validate(&long[..]), Err(NarError::TrailingData)));
        // "hello" is padded with 3 zero bytes; make one non-zero.
        let pos = good.windows(5).position(|w| w == b"hello").unwrap() + 5;
        let mut bad = good.clone();
        bad[pos] = 1;
        assert!(matches!(
            validate(&bad[..]),
            Err(NarError::Unexpected { .. })
        ));
        let mut magic = good;
        magic[8] = b'X';
        assert!(matches!(
            validate(&magic[..]),
            Err(NarError::Unexpected { .. })
        ));
    }

    #[test]
    fn refuses_huge_lengths_without_allocating_them() {
        let mut n = Vec::new();
        write_str(&mut n, MAGIC.as_bytes()).unwrap();
        n.extend_from_slice(&u64::MAX.to_le_bytes());
        assert!(matches!(validate(&n[..]), Err(NarError::TooLong { .. })));
        let long_name = "x".repeat(MAX_NAME_LEN + 1);
        let n = nar(&dir(vec![(&long_name, file(""))]));
        assert!(matches!(validate(&n[..]), Err(NarError::TooLong { .. })));
    }

    #[test]
    fn refuses_deep_nesting() {
        let mut node = file("");
        for _ in 0..(MAX_DEPTH + 2) {
            node = dir(vec![("d", node)]);
        }
        assert!(matches!(validate(&nar(&node)[..]), Err(NarError::TooDeep)));
    }
}
