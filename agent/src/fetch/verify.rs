//! Checking one NAR file against its signed narinfo, as one streaming pass on a
//! blocking thread.
//!
//! The pipeline (bounded memory whatever the NAR's size):
//!
//! ```text
//! source ─► tee (staged copy) ─► HashingReader (FileHash, FileSize; cut off past the
//! bound) ─► decoder (Compression) ─► HashingReader (NarHash, NarSize; cut off past
//! the signed NarSize) ─► nar::validate
//! ```
//!
//! After the NAR ends, the rest of the file is read too: compressed bytes after the end
//! of the compressed stream are refused, and every byte is counted into FileHash and
//! FileSize. When the NAR check fails part-way, the file is still read to its end
//! (bounded by the same limit), so that a file that is simply not the one the narinfo
//! describes is reported as a `FileHash`/`FileSize` mismatch rather than as whatever
//! the decoder tripped over first.

use std::io::{self, BufRead, BufReader, Read, Write};

use fleet_core::nar::{self, NarError};
use fleet_core::narinfo::{Compression, Sha256Hash};
use fleet_core::stream::{HashingReader, decoder};

/// Copy buffer between the compressed source and the decoder.
const BUF: usize = 64 * 1024;

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
    /// Writing the staged copy failed.
    Sink(io::Error),
}

/// Copies what it reads into `sink` and remembers which side failed.
struct Tee<'a, R> {
    inner: R,
    sink: Option<&'a mut dyn Write>,
    /// Kind and text of the source's error (the error itself travels up the chain).
    source_err: Option<(io::ErrorKind, String)>,
    sink_err: Option<io::Error>,
}

impl<R: Read> Read for Tee<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = match self.inner.read(buf) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Err(e),
            Err(e) => {
                self.source_err = Some((e.kind(), e.to_string()));
                return Err(e);
            }
        };
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
    hash: Sha256Hash,
}

fn nar_stage(input: &mut BufReader<impl Read>, exp: &Expect) -> NarStage {
    let dec = match decoder(exp.compression, &mut *input) {
        Ok(d) => d,
        Err(e) => {
            return NarStage {
                result: Err(NarError::Io(e)),
                count: 0,
                hash: Sha256Hash([0; 32]),
            };
        }
    };
    let mut hashed = HashingReader::new(dec, exp.nar_size);
    let result = nar::validate(&mut hashed).map(drop);
    let (_, hash, count) = hashed.finish();
    NarStage {
        result,
        count,
        hash,
    }
}

/// Streams `source` through every check of `exp`, copying what it reads to `sink`.
pub(crate) fn verify(
    source: impl Read,
    exp: &Expect,
    sink: Option<&mut dyn Write>,
) -> Result<Verified, Refusal> {
    let tee = Tee {
        inner: source,
        sink,
        source_err: None,
        sink_err: None,
    };
    let mut file = HashingReader::new(tee, exp.file_limit);
    let (nar, trailing, drain_err) = {
        let mut buffered = BufReader::with_capacity(BUF, &mut file);
        let nar = nar_stage(&mut buffered, exp);
        // Whatever follows the compressed stream (or the rest of a file the NAR check
        // gave up on) is read too, so FileHash and FileSize cover the whole file.
        let (trailing, drain_err) = drain(&mut buffered);
        (nar, trailing, drain_err)
    };
    let (tee, file_hash, file_count) = file.finish();

    if let Some(e) = tee.sink_err {
        return Err(Refusal::Sink(e));
    }
    if let Some((kind, text)) = tee.source_err {
        return Err(Refusal::Source(io::Error::new(kind, text)));
    }
    if file_count > exp.file_limit {
        return Err(Refusal::FileTooLong {
            limit: exp.file_limit,
            announced: exp.file_size.is_some(),
        });
    }
    if let Some(e) = drain_err {
        // Neither side of the tee failed and the limit held: only an OS error of the
        // source reaches here.
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
    if nar.hash != exp.nar_hash {
        return Err(Refusal::NarHash {
            expected: exp.nar_hash,
            got: nar.hash,
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
            let (file, exp) = encode(&sample_nar(), c);
            let mut copy = Vec::new();
            let v = verify(&file[..], &exp, Some(&mut copy)).unwrap();
            assert_eq!(v.file_size, file.len() as u64, "{c}");
            assert_eq!(copy, file, "{c}");
            // Without FileHash/FileSize, the signed NAR fields still decide.
            let loose = Expect {
                file_size: None,
                file_hash: None,
                file_limit: file.len() as u64 + 100,
                ..exp
            };
            verify(&file[..], &loose, None).unwrap();
        }
    }

    #[test]
    fn each_mismatch_has_its_own_refusal() {
        for c in ALL {
            let (file, exp) = encode(&sample_nar(), c);
            let r = verify(&file[..file.len() / 2], &exp, None);
            assert!(matches!(r, Err(Refusal::Truncated(_))), "{c}: {r:?}");

            let mut e = exp.clone();
            e.file_size = Some(file.len() as u64 + 1);
            e.file_limit = file.len() as u64 + 1;
            let r = verify(&file[..], &e, None);
            assert!(matches!(r, Err(Refusal::FileSize { .. })), "{c}: {r:?}");

            let mut e = exp.clone();
            e.file_limit = file.len() as u64 - 1;
            let r = verify(&file[..], &e, None);
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
            let r = verify(&file[..], &e, None);
            assert!(matches!(r, Err(Refusal::FileHash { .. })), "{c}: {r:?}");

            let mut e = exp.clone();
            e.nar_hash = Sha256Hash([7; 32]);
            let r = verify(&file[..], &e, None);
            assert!(matches!(r, Err(Refusal::NarHash { .. })), "{c}: {r:?}");

            let mut e = exp.clone();
            e.nar_size -= 8;
            let r = verify(&file[..], &e, None);
            assert!(matches!(r, Err(Refusal::NarTooLong { .. })), "{c}: {r:?}");

            let mut e = exp.clone();
            e.nar_size += 8;
            let r = verify(&file[..], &e, None);
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
            let r = verify(&file[..], &exp, None);
            assert!(matches!(r, Err(Refusal::Malformed(_))), "{c}: {r:?}");
        }
        for c in [Compression::Zstd, Compression::Xz] {
            let (mut file, mut exp) = encode(&sample_nar(), c);
            file.extend_from_slice(b"junk");
            exp.file_size = Some(file.len() as u64);
            exp.file_limit = file.len() as u64;
            exp.file_hash = None;
            let r = verify(&file[..], &exp, None);
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
        let r = verify(&file[..], &exp, None);
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
        let r = verify(Failing, &exp, None);
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
        let r = verify(&file[..], &exp, Some(&mut Full));
        assert!(matches!(r, Err(Refusal::Sink(_))), "{r:?}");
    }
}
