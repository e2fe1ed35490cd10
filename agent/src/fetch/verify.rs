//! Checking one NAR file against its signed narinfo, as one streaming pass on a
//! blocking thread.
//!
//! The pipeline (bounded memory whatever the NAR's size):
//!
//! ```text
//! source (BufRead) ─► FileTap (FileHash, FileSize; cut off past the bound)
//!   ─► decoder (Compression) ─► NarTap (NarHash, NarSize; cut off past the signed
//!   NarSize; copies the NAR to the staged file) ─► nar::validate
//! ```
//!
//! The staged copy is the *decompressed* NAR: Nix then imports it without
//! decompressing it a second time (the staged narinfo says `Compression: none`).
//! Bytes are hashed where they are consumed, straight from the source's buffers, so
//! the compressed file is copied once (into the decoder) and the NAR once (into the
//! validator's read-ahead buffer, from which the staged copy is written).
//!
//! After the NAR ends, the rest of the file is read too: compressed bytes after the end
//! of the compressed stream are refused, and every byte is counted into FileHash and
//! FileSize. When the NAR check fails part-way, the file is still read to its end
//! (bounded by the same limit), so that a file that is simply not the one the narinfo
//! describes is reported as a `FileHash`/`FileSize` mismatch rather than as whatever
//! the decoder tripped over first.
//!
//! An uncompressed file *is* its NAR, byte for byte, so it is hashed once: the file's
//! hash stands for the NAR's (they can only differ when the NAR check failed or bytes
//! follow it, and both are refused before the NAR hash is looked at).

use std::io::{self, BufRead, Read, Write};
use std::path::Path;

use fleet_core::nar::{self, NarError};
use fleet_core::narinfo::{Compression, Sha256Hash};
use fleet_core::stream::decoder;
use sha2::{Digest, Sha256};

/// What the narinfo says the file and the NAR are, and how many bytes may be read.
#[derive(Clone, Debug)]
pub(crate) struct Expect {
    /// How the file is compressed.
    pub compression: Compression,
    /// `FileSize:`, if given.
    pub file_size: Option<u64>,
    /// `FileHash:`, if given.
    pub file_hash: Option<Sha256Hash>,
    /// Most compressed bytes read before the source is cut off (`FileSize`, or a bound
    /// derived from `NarSize` when the narinfo has no `FileSize`).
    pub file_limit: u64,
    /// The signed `NarSize:`.
    pub nar_size: u64,
    /// The signed `NarHash:`.
    pub nar_hash: Sha256Hash,
}

impl Expect {
    /// What a staged file must be: the uncompressed NAR, nothing more.
    pub(crate) fn staged(nar_size: u64, nar_hash: Sha256Hash) -> Self {
        Self {
            compression: Compression::None,
            file_size: Some(nar_size),
            file_hash: Some(nar_hash),
            file_limit: nar_size,
            nar_size,
            nar_hash,
        }
    }
}

/// Sizes of a file that passed every check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Verified {
    /// Compressed bytes.
    pub file_size: u64,
    /// NAR bytes.
    pub nar_size: u64,
}

/// Why a file was refused (the caller adds the store path and key).
#[derive(Debug)]
pub(crate) enum Refusal {
    /// More compressed bytes than `FileSize` (or the derived bound) allows.
    FileTooLong { limit: u64, announced: bool },
    /// The whole file has another size than `FileSize`.
    FileSize { expected: u64, got: u64 },
    /// The whole file has another hash than `FileHash`.
    FileHash {
        expected: Sha256Hash,
        got: Sha256Hash,
    },
    /// The file or the NAR in it ends early.
    Truncated(String),
    /// Decompresses to more than the signed `NarSize`.
    NarTooLong { limit: u64 },
    /// The NAR has another size than the signed `NarSize`.
    NarSize { expected: u64, got: u64 },
    /// The NAR has another hash than the signed `NarHash`.
    NarHash {
        expected: Sha256Hash,
        got: Sha256Hash,
    },
    /// Not a well-formed, safe NAR, or not decodable.
    Malformed(String),
    /// Reading the source failed (the download or the staged file).
    Source(io::Error),
    /// Writing the staged copy (or the unpacked tree) failed.
    Sink(io::Error),
}

fn too_many(limit: u64) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("more than the expected {limit} bytes"),
    )
}

/// The file side: hashes (when `hasher` is set) and counts what the decoder consumes
/// from `inner`, offers nothing past `limit + 1` bytes, and remembers the source's own
/// errors (a failed download is not the file's fault).
struct FileTap<R> {
    inner: R,
    hasher: Option<Sha256>,
    count: u64,
    limit: u64,
    /// Kind and text of the source's error (the error itself travels up the chain).
    source_err: Option<(io::ErrorKind, String)>,
}

impl<R: BufRead> BufRead for FileTap<R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        if self.count > self.limit {
            return Err(too_many(self.limit));
        }
        // One byte past the limit is offered, so that going over it is seen.
        let allowed = usize::try_from(self.limit - self.count)
            .unwrap_or(usize::MAX)
            .saturating_add(1);
        match self.inner.fill_buf() {
            Ok(b) => Ok(&b[..b.len().min(allowed)]),
            Err(e) => {
                if e.kind() != io::ErrorKind::Interrupted {
                    self.source_err = Some((e.kind(), e.to_string()));
                }
                Err(e)
            }
        }
    }

    fn consume(&mut self, n: usize) {
        if n == 0 {
            return;
        }
        if let Some(h) = &mut self.hasher {
            // The bytes are still buffered (fill_buf just returned them), so this
            // reads nothing.
            if let Ok(b) = self.inner.fill_buf() {
                h.update(&b[..n.min(b.len())]);
            }
        }
        self.inner.consume(n);
        self.count += n as u64;
    }
}

impl<R: BufRead> Read for FileTap<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let avail = self.fill_buf()?;
        let n = avail.len().min(buf.len());
        buf[..n].copy_from_slice(&avail[..n]);
        self.consume(n);
        Ok(n)
    }
}

/// The NAR side: hashes (when `hasher` is set) and counts the decoder's output, fails
/// once more than `limit` bytes arrive, and copies everything to `sink`.
struct NarTap<'a, R> {
    inner: R,
    hasher: Option<Sha256>,
    count: u64,
    limit: u64,
    sink: Option<&'a mut dyn Write>,
    sink_err: Option<io::Error>,
}

impl<R: Read> Read for NarTap<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count += n as u64;
        if self.count > self.limit {
            return Err(too_many(self.limit));
        }
        if let Some(h) = &mut self.hasher {
            h.update(&buf[..n]);
        }
        if let Some(sink) = self.sink.as_deref_mut()
            && let Err(e) = sink.write_all(&buf[..n])
        {
            let msg = format!("writing the staged copy failed: {e}");
            self.sink_err = Some(e);
            return Err(io::Error::other(msg));
        }
        Ok(n)
    }
}

/// Reads `r` to its end; returns the bytes read, or the error that stopped it.
fn drain(r: &mut impl BufRead) -> (u64, Option<io::Error>) {
    let mut total = 0u64;
    loop {
        let n = match r.fill_buf() {
            Ok([]) => return (total, None),
            Ok(b) => b.len(),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return (total, Some(e)),
        };
        r.consume(n);
        total += n as u64;
    }
}

/// What the NAR stage ended with.
struct NarStage {
    /// `Err` if decoding or validation failed.
    result: Result<(), NarError>,
    /// NAR bytes read (past the limit when it was cut off).
    count: u64,
    /// `None` when the file's hash stands for it (uncompressed files).
    hash: Option<Sha256Hash>,
    sink_err: Option<io::Error>,
}

fn nar_stage(input: &mut FileTap<impl BufRead>, exp: &Expect, out: Output<'_>) -> NarStage {
    let dec = match decoder(exp.compression, &mut *input) {
        Ok(d) => d,
        Err(e) => {
            return NarStage {
                result: Err(NarError::Io(e)),
                count: 0,
                hash: None,
                sink_err: None,
            };
        }
    };
    let (sink, dest) = match out {
        Output::Check => (None, None),
        Output::Copy(w) => (Some(w), None),
        Output::Unpack(p) => (None, Some(p)),
    };
    let mut tap = NarTap {
        inner: dec,
        hasher: (exp.compression != Compression::None).then(Sha256::new),
        count: 0,
        limit: exp.nar_size,
        sink,
        sink_err: None,
    };
    let result = match dest {
        Some(dest) => nar::unpack(&mut tap, dest).map(drop),
        None => nar::validate(&mut tap).map(drop),
    };
    NarStage {
        result,
        count: tap.count,
        hash: tap.hasher.map(|h| Sha256Hash(h.finalize().into())),
        sink_err: tap.sink_err,
    }
}

/// Where [`verify`] puts the NAR it checks, decompressed.
pub(crate) enum Output<'a> {
    /// Nowhere: only checked.
    Check,
    /// Copied to a writer (the staged file, the substituter's response).
    Copy(&'a mut dyn Write),
    /// Unpacked at this path ([`nar::unpack`]); on a refusal whatever was written
    /// there is left for the caller to remove.
    Unpack(&'a Path),
}

/// Streams `source` through every check of `exp`, putting the NAR it holds where
/// `out` says, in the same pass.
pub(crate) fn verify(
    source: impl BufRead,
    exp: &Expect,
    out: Output<'_>,
) -> Result<Verified, Refusal> {
    let mut file = FileTap {
        inner: source,
        hasher: Some(Sha256::new()),
        count: 0,
        limit: exp.file_limit,
        source_err: None,
    };
    let nar = nar_stage(&mut file, exp, out);
    // Whatever follows the compressed stream (or the rest of a file the NAR check
    // gave up on) is read too, so FileHash and FileSize cover the whole file.
    let (trailing, drain_err) = drain(&mut file);
    let file_count = file.count;
    let file_hash = Sha256Hash(
        file.hasher
            .take()
            .map(|h| h.finalize().into())
            .unwrap_or_default(),
    );

    if let Some(e) = nar.sink_err {
        return Err(Refusal::Sink(e));
    }
    if let Err(NarError::Unpack { path, error }) = &nar.result {
        return Err(Refusal::Sink(io::Error::new(
            error.kind(),
            format!("{}: {error}", path.display()),
        )));
    }
    if let Some((kind, text)) = file.source_err {
        return Err(Refusal::Source(io::Error::new(kind, text)));
    }
    if file_count > exp.file_limit {
        return Err(Refusal::FileTooLong {
            limit: exp.file_limit,
            announced: exp.file_size.is_some(),
        });
    }
    if let Some(e) = drain_err {
        // The source did not fail and the limit held: nothing else should reach
        // here, but an error is never taken for the end of the file.
        return Err(Refusal::Source(e));
    }
    if let Some(expected) = exp.file_size {
        if file_count < expected && nar.result.is_err() {
            return Err(Refusal::Truncated(format!(
                "the NAR file ended after {file_count} of the {expected} bytes its FileSize announces"
            )));
        }
        if file_count != expected {
            return Err(Refusal::FileSize {
                expected,
                got: file_count,
            });
        }
    }
    if let Some(expected) = exp.file_hash
        && file_hash != expected
    {
        return Err(Refusal::FileHash {
            expected,
            got: file_hash,
        });
    }
    if nar.count > exp.nar_size {
        return Err(Refusal::NarTooLong {
            limit: exp.nar_size,
        });
    }
    if let Err(e) = nar.result {
        return Err(match e {
            NarError::Truncated(_) => Refusal::Truncated(e.to_string()),
            NarError::Io(io) if io.kind() == io::ErrorKind::UnexpectedEof => {
                Refusal::Truncated(format!("the {} stream ends early: {io}", exp.compression))
            }
            NarError::Io(io) => Refusal::Malformed(format!(
                "the file does not decompress as {}: {io}",
                exp.compression
            )),
            other => Refusal::Malformed(other.to_string()),
        });
    }
    if trailing > 0 {
        return Err(Refusal::Malformed(format!(
            "{trailing} bytes follow the end of the {} stream",
            exp.compression
        )));
    }
    if nar.count != exp.nar_size {
        return Err(Refusal::NarSize {
            expected: exp.nar_size,
            got: nar.count,
        });
    }
    // Only an uncompressed file leaves the NAR unhashed, and then, with no trailing
    // bytes and the NAR stage passed, the file's bytes are the NAR's.
    let nar_hash = nar.hash.unwrap_or(file_hash);
    if nar_hash != exp.nar_hash {
        return Err(Refusal::NarHash {
            expected: exp.nar_hash,
            got: nar_hash,
        });
    }
    Ok(Verified {
        file_size: file_count,
        nar_size: nar.count,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleet_core::nar::build::{Node, nar};
    use fleet_core::stream::{Encoder, HashingWriter};

    fn sample_nar() -> Vec<u8> {
        nar(&Node::Dir(vec![
            (
                b"bin".to_vec(),
                Node::File {
                    executable: true,
                    contents: b"#!/bin/sh\necho hi\n".repeat(200),
                },
            ),
            (b"link".to_vec(), Node::Symlink(b"bin".to_vec())),
        ]))
    }

    /// Compresses `nar_bytes` and returns the file and what an honest narinfo says.
    fn encode(nar_bytes: &[u8], c: Compression) -> (Vec<u8>, Expect) {
        let mut nar_w = HashingWriter::new(std::io::sink());
        nar_w.write_all(nar_bytes).unwrap();
        let (_, nar_hash, nar_size) = nar_w.finish();
        let mut e = Encoder::new(c, HashingWriter::new(Vec::new()), None).unwrap();
        e.write_all(nar_bytes).unwrap();
        let (file, file_hash, file_size) = e.finish().unwrap().finish();
        let exp = Expect {
            compression: c,
            file_size: Some(file_size),
            file_hash: Some(file_hash),
            file_limit: file_size,
            nar_size,
            nar_hash,
        };
        (file, exp)
    }

    const ALL: [Compression; 3] = [Compression::Zstd, Compression::Xz, Compression::None];

    #[test]
    fn accepts_honest_files_and_copies_them() {
        for c in ALL {
            let nar_bytes = sample_nar();
            let (file, exp) = encode(&nar_bytes, c);
            let mut copy = Vec::new();
            let v = verify(&file[..], &exp, Output::Copy(&mut copy)).unwrap();
            assert_eq!(v.file_size, file.len() as u64, "{c}");
            assert_eq!(v.nar_size, nar_bytes.len() as u64, "{c}");
            // The staged copy is the NAR itself, and verifies as a staged file.
            assert_eq!(copy, nar_bytes, "{c}");
            verify(
                &copy[..],
                &Expect::staged(exp.nar_size, exp.nar_hash),
                Output::Check,
            )
            .unwrap();
            // Without FileHash/FileSize, the signed NAR fields still decide.
            let loose = Expect {
                file_size: None,
                file_hash: None,
                file_limit: file.len() as u64 + 100,
                ..exp
            };
            verify(&file[..], &loose, Output::Check).unwrap();
        }
    }

    #[test]
    fn each_mismatch_has_its_own_refusal() {
        for c in ALL {
            let (file, exp) = encode(&sample_nar(), c);
            let r = verify(&file[..file.len() / 2], &exp, Output::Check);
            assert!(matches!(r, Err(Refusal::Truncated(_))), "{c}: {r:?}");

            let mut e = exp.clone();
            e.file_size = Some(file.len() as u64 + 1);
            e.file_limit = file.len() as u64 + 1;
            let r = verify(&file[..], &e, Output::Check);
            assert!(matches!(r, Err(Refusal::FileSize { .. })), "{c}: {r:?}");

            let mut e = exp.clone();
            e.file_limit = file.len() as u64 - 1;
            let r = verify(&file[..], &e, Output::Check);
            assert!(
                matches!(
                    r,
                    Err(Refusal::FileTooLong {
                        announced: true,
                        ..
                    })
                ),
                "{c}: {r:?}"
            );

            let mut e = exp.clone();
            e.file_hash = Some(Sha256Hash([7; 32]));
            let r = verify(&file[..], &e, Output::Check);
            assert!(matches!(r, Err(Refusal::FileHash { .. })), "{c}: {r:?}");

            let mut e = exp.clone();
            e.nar_hash = Sha256Hash([7; 32]);
            let r = verify(&file[..], &e, Output::Check);
            assert!(matches!(r, Err(Refusal::NarHash { .. })), "{c}: {r:?}");

            let mut e = exp.clone();
            e.nar_size -= 8;
            let r = verify(&file[..], &e, Output::Check);
            assert!(matches!(r, Err(Refusal::NarTooLong { .. })), "{c}: {r:?}");

            let mut e = exp.clone();
            e.nar_size += 8;
            let r = verify(&file[..], &e, Output::Check);
            assert!(matches!(r, Err(Refusal::NarSize { .. })), "{c}: {r:?}");
        }
    }

    #[test]
    fn refuses_unsafe_nars_and_trailing_data() {
        let evil = nar(&Node::Dir(vec![(
            b"..".to_vec(),
            Node::File {
                executable: false,
                contents: b"x".to_vec(),
            },
        )]));
        for c in ALL {
            let (file, exp) = encode(&evil, c);
            let r = verify(&file[..], &exp, Output::Check);
            assert!(matches!(r, Err(Refusal::Malformed(_))), "{c}: {r:?}");
        }
        for c in [Compression::Zstd, Compression::Xz] {
            let (mut file, mut exp) = encode(&sample_nar(), c);
            file.extend_from_slice(b"junk");
            exp.file_size = Some(file.len() as u64);
            exp.file_limit = file.len() as u64;
            exp.file_hash = None;
            let r = verify(&file[..], &exp, Output::Check);
            assert!(
                matches!(&r, Err(Refusal::Malformed(m)) if m.contains("4 bytes follow")),
                "{c}: {r:?}"
            );
        }
    }

    #[test]
    fn a_decompression_bomb_stops_at_nar_size() {
        // A real NAR holding 16 MiB of zeros compresses to a few KiB; reading stops
        // just past the (much smaller) NarSize.
        let big = nar(&Node::File {
            executable: false,
            contents: vec![0u8; 16 << 20],
        });
        let mut e = Encoder::new(Compression::Zstd, Vec::new(), Some(19)).unwrap();
        e.write_all(&big).unwrap();
        let file = e.finish().unwrap();
        let exp = Expect {
            compression: Compression::Zstd,
            file_size: Some(file.len() as u64),
            file_hash: None,
            file_limit: file.len() as u64,
            nar_size: 4096,
            nar_hash: Sha256Hash([0; 32]),
        };
        let r = verify(&file[..], &exp, Output::Check);
        assert!(
            matches!(r, Err(Refusal::NarTooLong { limit: 4096 })),
            "{r:?}"
        );
    }

    #[test]
    fn source_and_sink_failures_are_not_blamed_on_the_file() {
        struct Failing;
        impl Read for Failing {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                Err(io::Error::new(io::ErrorKind::TimedOut, "stalled"))
            }
        }
        let (file, exp) = encode(&sample_nar(), Compression::Zstd);
        let r = verify(io::BufReader::new(Failing), &exp, Output::Check);
        assert!(
            matches!(&r, Err(Refusal::Source(e)) if e.kind() == io::ErrorKind::TimedOut),
            "{r:?}"
        );

        struct Full;
        impl Write for Full {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::Error::new(io::ErrorKind::StorageFull, "disk full"))
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let r = verify(&file[..], &exp, Output::Copy(&mut Full));
        assert!(matches!(r, Err(Refusal::Sink(_))), "{r:?}");
    }
}
