//! Packing one store path for the cache: `nar::dump` → [`HashingWriter`] (NarHash,
//! NarSize) → [`Encoder`] → [`HashingWriter`] (FileHash, FileSize) → memory, or an
//! unnamed temporary file once the compressed NAR passes the spill threshold.
//!
//! The FileHash names the NAR file (`nar/<FileHash base32>.nar.zst`), so it is only
//! known once the whole NAR is compressed; hence a buffer and not a stream to the
//! bucket.

use std::io::{self, Seek, Write};
use std::path::Path;

use fleet_core::narinfo::Sha256Hash;
use fleet_core::stream::{Encoder, HashingWriter};
use fleet_core::{Compression, StorePath};

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
/// before), so it is never reallocated, and with `pledge` it is promised to the codec
/// ([`Encoder::pledge_size`]: zstd then sizes its tables for the NAR, which is most of
/// the cost of a tiny path); packing then fails if the NAR is not that size, and the
/// caller packs again without the pledge to learn what it is.
pub(super) fn pack(
    path: &StorePath,
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
