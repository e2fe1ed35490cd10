//! Packing one store path for the cache, in one of two ways:
//!
//! - **whole, in memory** (zstd, NARs up to the spill threshold, the common case):
//!   `nar::dump_to_vec` reads the files straight into a buffer, which is hashed
//!   (NarHash, NarSize) and compressed in one call of a zstd context kept from the
//!   previous NAR into a second buffer, which is hashed (FileHash, FileSize). No
//!   copy through the codec's own input and output buffers, no page faults on
//!   fresh tables or buffers for each NAR, and zstd sees the NAR as one block of
//!   memory rather than a window wrapping around a ring buffer;
//! - **streaming** (larger NARs, xz, no compression, and the retry after a NAR was
//!   not the size Nix registered): `nar::dump` → [`HashingWriter`] (NarHash,
//!   NarSize) → [`Encoder`] → [`HashingWriter`] (FileHash, FileSize) → memory, or an
//!   unnamed temporary file once the compressed NAR passes the spill threshold, so
//!   memory stays bounded whatever the NAR size.
//!
//! The FileHash names the NAR file (`nar/<FileHash base32>.nar.zst`), so it is only
//! known once the whole NAR is compressed; hence a buffer and not a stream to the
//! bucket.

use std::io::{self, Seek, Write};
use std::path::Path;

use fleet_core::narinfo::Sha256Hash;
use fleet_core::stream::{Encoder, HashingWriter, ZstdBulk, zstd_level};
use fleet_core::{Compression, StorePath};
use sha2::{Digest, Sha256};

/// Hashes and sizes of a NAR and of its compressed file.
#[derive(Clone, Copy, Debug)]
pub(super) struct Sums {
    pub(super) nar_hash: Sha256Hash,
    pub(super) nar_size: u64,
    pub(super) file_hash: Sha256Hash,
    pub(super) file_size: u64,
}

/// A compressed NAR ready to upload.
pub(super) struct Packed {
    pub(super) sums: Sums,
    pub(super) data: Data,
}

/// Where a compressed NAR waits for its upload.
pub(super) enum Data {
    Mem(Vec<u8>),
    /// An unnamed temporary file (removed by the OS when closed), rewound.
    File(std::fs::File),
}

/// What one packing job keeps from one NAR to the next: the NAR buffer of the
/// in-memory path and its zstd context (tables and all), so that neither is
/// allocated, and page-faulted in, again for every path.
#[derive(Default)]
pub(super) struct Workspace {
    nar: Vec<u8>,
    zstd: Option<ZstdBulk>,
}

/// The zstd context in `slot` if it is for `level`, else a new one put there.
fn compressor(slot: &mut Option<ZstdBulk>, level: Option<i32>) -> io::Result<&mut ZstdBulk> {
    let level = zstd_level(level);
    let z = match slot.take() {
        Some(z) if z.level() == level => z,
        _ => ZstdBulk::new(Some(level))?,
    };
    Ok(slot.insert(z))
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
/// before), so it is never reallocated. With `pledge` the size is relied on: a zstd
/// NAR of at most `spill_threshold` bytes is packed whole in memory with `ws`, a
/// larger one streams with the size promised to the codec
/// ([`Encoder::pledge_size`]: zstd then sizes its tables for the NAR). Either way
/// packing then fails if the NAR is not that size, and the caller packs again
/// without `pledge` (always streaming) to learn what it is.
#[allow(clippy::too_many_arguments)]
pub(super) fn pack(
    path: &StorePath,
    compression: Compression,
    level: Option<i32>,
    spill_threshold: usize,
    nar_size: u64,
    pledge: bool,
    mem: Vec<u8>,
    ws: &mut Workspace,
) -> io::Result<Packed> {
    let path = Path::new(&path.to_string()).to_owned();
    if pledge && compression == Compression::Zstd && nar_size <= spill_threshold as u64 {
        return pack_whole(&path, level, spill_threshold, nar_size, mem, ws);
    }
    pack_streaming(
        &path,
        compression,
        level,
        spill_threshold,
        nar_size,
        pledge,
        mem,
    )
}

/// The in-memory path: the whole NAR in `ws.nar`, compressed in one call.
fn pack_whole(
    path: &Path,
    level: Option<i32>,
    spill_threshold: usize,
    nar_size: u64,
    mut mem: Vec<u8>,
    ws: &mut Workspace,
) -> io::Result<Packed> {
    ws.nar.clear();
    // Sized once for the NAR (kept for the next ones), never grown piecemeal.
    ws.nar.reserve(nar_size as usize);
    fleet_core::nar::dump_to_vec(path, &mut ws.nar, nar_size)?;
    if ws.nar.len() as u64 != nar_size {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "the NAR of {} is {} bytes, not the {nar_size} registered",
                path.display(),
                ws.nar.len()
            ),
        ));
    }
    let nar_hash = Sha256Hash(Sha256::digest(&ws.nar).into());
    compressor(&mut ws.zstd, level)?.compress_into(&ws.nar, &mut mem)?;
    let file_hash = Sha256Hash(Sha256::digest(&mem).into());
    let file_size = mem.len() as u64;
    // An incompressible NAR just under the threshold comes out a few bytes over it:
    // it goes the way every compressed NAR over the threshold goes.
    let data = if mem.len() > spill_threshold {
        let mut f = tempfile::tempfile()?;
        f.write_all(&mem)?;
        f.rewind()?;
        Data::File(f)
    } else {
        Data::Mem(mem)
    };
    Ok(Packed {
        sums: Sums {
            nar_hash,
            nar_size,
            file_hash,
            file_size,
        },
        data,
    })
}

/// The streaming path: NAR → hash → codec → hash → memory or a temporary file.
fn pack_streaming(
    path: &Path,
    compression: Compression,
    level: Option<i32>,
    spill_threshold: usize,
    nar_size: u64,
    pledge: bool,
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
    let mut encoder = Encoder::new(compression, sink, level)?;
    if pledge {
        encoder.pledge_size(nar_size)?;
    }
    // nar::dump writes many small tokens; batch them before hashing and compressing.
    let mut nar = io::BufWriter::with_capacity(256 * 1024, HashingWriter::new(encoder));
    fleet_core::nar::dump(path, &mut nar)?;
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

#[cfg(test)]
mod tests {
    use super::*;

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

    /// A tree with every kind of node, its NAR, and its NAR's SHA-256.
    fn tree() -> (tempfile::TempDir, std::path::PathBuf, Vec<u8>) {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("out");
        std::fs::create_dir_all(root.join("d/e")).unwrap();
        std::fs::write(root.join("d/text"), "hello world\n".repeat(50_000)).unwrap();
        std::fs::write(root.join("empty"), "").unwrap();
        std::os::unix::fs::symlink("d/text", root.join("l")).unwrap();
        let mut nar = Vec::new();
        fleet_core::nar::dump(&root, &mut nar).unwrap();
        (d, root, nar)
    }

    fn contents(data: Data) -> Vec<u8> {
        use std::io::Read;
        match data {
            Data::Mem(v) => v,
            Data::File(mut f) => {
                let mut v = Vec::new();
                f.read_to_end(&mut v).unwrap();
                v
            }
        }
    }

    /// What fleet's own zstd reader makes of a NAR file.
    fn unzstd(file: &[u8]) -> Vec<u8> {
        use std::io::Read;
        let mut out = Vec::new();
        fleet_core::stream::decoder(Compression::Zstd, file)
            .unwrap()
            .read_to_end(&mut out)
            .unwrap();
        out
    }

    #[test]
    fn whole_and_streaming_packs_agree_on_the_nar() {
        use sha2::{Digest, Sha256};
        let (_d, root, nar) = tree();
        let size = nar.len() as u64;
        let mut ws = Workspace::default();
        // Twice with one workspace (its buffer and context reused), at two levels.
        for level in [None, None, Some(9)] {
            let whole = pack_whole(&root, level, 1 << 20, size, Vec::new(), &mut ws).unwrap();
            let streamed = pack_streaming(
                &root,
                Compression::Zstd,
                level,
                1 << 20,
                size,
                true,
                Vec::new(),
            )
            .unwrap();
            assert_eq!(whole.sums.nar_hash, streamed.sums.nar_hash);
            assert_eq!(
                whole.sums.nar_hash.0,
                <[u8; 32]>::from(Sha256::digest(&nar))
            );
            assert_eq!(whole.sums.nar_size, size);
            let file = contents(whole.data);
            assert_eq!(whole.sums.file_size, file.len() as u64);
            assert_eq!(
                whole.sums.file_hash.0,
                <[u8; 32]>::from(Sha256::digest(&file))
            );
            assert!(file.len() * 10 < nar.len(), "compressed: {}", file.len());
            // What any zstd reader makes of it: the NAR.
            let back = unzstd(&file);
            assert!(back == nar, "decompresses to the NAR");
        }
    }

    #[test]
    fn whole_pack_refuses_a_nar_of_another_size() {
        let (_d, root, nar) = tree();
        let mut ws = Workspace::default();
        for size in [nar.len() as u64 - 8, nar.len() as u64 + 8] {
            let err = pack_whole(&root, None, 1 << 20, size, Vec::new(), &mut ws)
                .err()
                .expect("refused");
            assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
        }
    }

    #[test]
    fn whole_pack_over_the_threshold_goes_to_a_file() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("random");
        // Incompressible: the frame is a little larger than the NAR.
        let data: Vec<u8> = {
            use sha2::{Digest, Sha256};
            (0..8_000u32)
                .flat_map(|i| Sha256::digest(i.to_le_bytes()).to_vec())
                .collect()
        };
        std::fs::write(&f, &data).unwrap();
        let mut nar = Vec::new();
        fleet_core::nar::dump(&f, &mut nar).unwrap();
        let threshold = nar.len();
        let packed = pack_whole(
            &f,
            None,
            threshold,
            nar.len() as u64,
            Vec::new(),
            &mut Workspace::default(),
        )
        .unwrap();
        assert!(packed.sums.file_size > threshold as u64);
        assert!(matches!(packed.data, Data::File(_)));
        let file = contents(packed.data);
        assert_eq!(file.len() as u64, packed.sums.file_size);
        assert!(unzstd(&file) == nar);
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
}
