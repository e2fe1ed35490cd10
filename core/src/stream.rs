//! Streaming pieces for NAR files: the compression codecs a narinfo's `Compression:`
//! names, and readers/writers that hash and count what passes through them.
//!
//! A NAR file is handled as a stream, never as a whole buffer, so memory stays flat
//! whatever the size of the store path: the publisher goes
//! `nar::dump → HashingWriter (NarHash, NarSize) → Encoder → HashingWriter (FileHash,
//! FileSize) → file`, and the agent goes `download → hash and count (FileHash,
//! FileSize) → decoder → hash and count (NarHash, NarSize) → nar::validate`, hashing
//! in place from its buffers (`agent/src/fetch/verify.rs`); [`HashingReader`] is the
//! plain form of those taps.

use std::io::{self, BufRead, Read, Write};

use sha2::{Digest, Sha256};

use crate::narinfo::{Compression, Sha256Hash};

/// Default zstd level: fast to write, and what `nix copy ?compression=zstd` uses.
pub const DEFAULT_ZSTD_LEVEL: i32 = 3;

/// Largest zstd window a decoder accepts, as a power of two: 2^24 = 16 MiB, which
/// covers every level up to 19 (the highest `nix copy` and fleet use without
/// `--ultra`). Anyone who can replace a NAR file can recompress it; without this bound
/// a window of up to 2 GiB would be allocated per download.
pub const ZSTD_WINDOW_LOG_MAX: u32 = 24;

/// Memory an xz decoder may use: enough for presets up to `-8` (32 MiB dictionary;
/// Nix's default is `-6`, 8 MiB), and a bound on what a hostile file can make us
/// allocate.
pub const XZ_MEMORY_LIMIT: u64 = 40 * 1024 * 1024;

/// A compressing writer for one [`Compression`].
pub enum Encoder<W: Write> {
    /// Pass-through.
    None(W),
    /// xz.
    Xz(liblzma::write::XzEncoder<W>),
    /// zstd.
    Zstd(zstd::stream::write::Encoder<'static, W>),
}

impl<W: Write> Encoder<W> {
    /// A compressor writing to `out`; `level` is the codec's level (zstd 1–19,
    /// xz 0–9), `None` for the default.
    pub fn new(compression: Compression, out: W, level: Option<i32>) -> io::Result<Self> {
        Ok(match compression {
            Compression::None => Encoder::None(out),
            Compression::Xz => Encoder::Xz(liblzma::write::XzEncoder::new(
                out,
                level.unwrap_or(6).clamp(0, 9) as u32,
            )),
            Compression::Zstd => {
                let mut e = zstd::stream::write::Encoder::new(out, zstd_level(level))?;
                // Helps a reader allocate exactly; costs nothing.
                e.include_checksum(false)?;
                Encoder::Zstd(e)
            }
        })
    }

    /// Tells the codec exactly how many bytes will be written, before the first
    /// write. zstd sizes its tables for it (a 100-byte NAR then costs a few KiB of
    /// tables instead of the megabyte sized for an unknown input) and records the size
    /// in the frame header; xz and no compression ignore it. Writing a different
    /// number of bytes makes the write or [`Encoder::finish`] fail.
    pub fn pledge_size(&mut self, size: u64) -> io::Result<()> {
        match self {
            Encoder::Zstd(e) => e.set_pledged_src_size(Some(size)),
            Encoder::None(_) | Encoder::Xz(_) => Ok(()),
        }
    }

    /// Flushes the codec's trailer and returns the inner writer.
    pub fn finish(self) -> io::Result<W> {
        match self {
            Encoder::None(w) => Ok(w),
            Encoder::Xz(e) => e.finish(),
            Encoder::Zstd(e) => e.finish(),
        }
    }
}

impl<W: Write> Write for Encoder<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Encoder::None(w) => w.write(buf),
            Encoder::Xz(e) => e.write(buf),
            Encoder::Zstd(e) => e.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Encoder::None(w) => w.flush(),
            Encoder::Xz(e) => e.flush(),
            Encoder::Zstd(e) => e.flush(),
        }
    }
}

/// The zstd level `level` asks for: the default when `None`, clamped to 1–19 as for
/// [`Encoder`].
pub fn zstd_level(level: Option<i32>) -> i32 {
    level.unwrap_or(DEFAULT_ZSTD_LEVEL).clamp(1, 19)
}

/// A zstd context for whole buffers, kept from one buffer to the next: its tables
/// are allocated once, not per NAR, and the input is compressed where it lies
/// (no copy into the codec's ring buffer, no output buffer in between). Frames
/// are the same format as [`Encoder`]'s (no checksum; the content size is in the
/// header), so any zstd reader, Nix included, reads them.
pub struct ZstdBulk {
    level: i32,
    inner: zstd::bulk::Compressor<'static>,
}

impl ZstdBulk {
    /// A context for `level` (`None`: the default; clamped as by [`zstd_level`]).
    pub fn new(level: Option<i32>) -> io::Result<Self> {
        let level = zstd_level(level);
        let mut inner = zstd::bulk::Compressor::new(level)?;
        inner.include_checksum(false)?;
        Ok(Self { level, inner })
    }

    /// The level it compresses at.
    pub fn level(&self) -> i32 {
        self.level
    }

    /// Replaces the contents of `out` with `src` compressed as one frame; `out`
    /// grows to zstd's bound for `src` first, so it is never too small.
    pub fn compress_into(&mut self, src: &[u8], out: &mut Vec<u8>) -> io::Result<()> {
        out.clear();
        out.reserve(zstd::zstd_safe::compress_bound(src.len()));
        self.inner.compress_to_buffer(src, out)?;
        Ok(())
    }
}

/// A decompressing reader over `input` for one [`Compression`].
///
/// Decoders stop at the end of the compressed stream and read no further, so the
/// caller can check that nothing follows it.
pub fn decoder<'a, R: BufRead + 'a>(
    compression: Compression,
    input: R,
) -> io::Result<Box<dyn Read + 'a>> {
    Ok(match compression {
        Compression::None => Box::new(input),
        Compression::Xz => {
            let stream = liblzma::stream::Stream::new_stream_decoder(XZ_MEMORY_LIMIT, 0)
                .map_err(io::Error::other)?;
            Box::new(liblzma::bufread::XzDecoder::new_stream(input, stream))
        }
        Compression::Zstd => {
            let mut d = zstd::stream::read::Decoder::with_buffer(input)?.single_frame();
            d.window_log_max(ZSTD_WINDOW_LOG_MAX)?;
            Box::new(d)
        }
    })
}

/// A writer that hashes (SHA-256) and counts the bytes written through it.
pub struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    count: u64,
}

impl<W: Write> HashingWriter<W> {
    /// Wraps `inner`.
    pub fn new(inner: W) -> Self {
        Self {
            inner,
            hasher: Sha256::new(),
            count: 0,
        }
    }

    /// The inner writer, the hash and the count.
    pub fn finish(self) -> (W, Sha256Hash, u64) {
        (
            self.inner,
            Sha256Hash(self.hasher.finalize().into()),
            self.count,
        )
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A reader that hashes (SHA-256) and counts the bytes read through it, and fails
/// once more than `limit` bytes arrive (a server that sends more than it announced).
pub struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    count: u64,
    limit: u64,
}

impl<R: Read> HashingReader<R> {
    /// Wraps `inner`; reading more than `limit` bytes fails with `InvalidData`.
    pub fn new(inner: R, limit: u64) -> Self {
        Self {
            inner,
            hasher: Sha256::new(),
            count: 0,
            limit,
        }
    }

    /// Bytes read so far.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The hash and count of everything read.
    pub fn finish(self) -> (R, Sha256Hash, u64) {
        (
            self.inner,
            Sha256Hash(self.hasher.finalize().into()),
            self.count,
        )
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        if self.count > self.limit {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("more than the expected {} bytes", self.limit),
            ));
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_codec_round_trips() {
        let data: Vec<u8> = (0..200_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        for c in [Compression::None, Compression::Xz, Compression::Zstd] {
            let mut e = Encoder::new(c, HashingWriter::new(Vec::new()), None).unwrap();
            e.write_all(&data).unwrap();
            let (file, _, file_size) = e.finish().unwrap().finish();
            assert_eq!(file.len() as u64, file_size);
            let mut out = Vec::new();
            decoder(c, &file[..])
                .unwrap()
                .read_to_end(&mut out)
                .unwrap();
            assert_eq!(out, data, "{c}");
        }
    }

    #[test]
    fn a_pledged_size_must_be_kept() {
        let data = vec![5u8; 10_000];
        let mut e = Encoder::new(Compression::Zstd, Vec::new(), None).unwrap();
        e.pledge_size(data.len() as u64).unwrap();
        e.write_all(&data).unwrap();
        let file = e.finish().unwrap();
        let mut out = Vec::new();
        decoder(Compression::Zstd, &file[..])
            .unwrap()
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, data);
        // Fewer bytes than pledged: finishing fails instead of writing a bad frame.
        let mut e = Encoder::new(Compression::Zstd, Vec::new(), None).unwrap();
        e.pledge_size(data.len() as u64 + 1).unwrap();
        e.write_all(&data).unwrap();
        assert!(e.finish().is_err());
    }

    #[test]
    fn decoders_refuse_memory_bombs() {
        let data = vec![7u8; 1 << 20];
        // A zstd frame declaring a 128 MiB window.
        let mut enc = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
        enc.set_parameter(zstd::stream::raw::CParameter::WindowLog(27))
            .unwrap();
        enc.long_distance_matching(true).unwrap();
        enc.write_all(&data).unwrap();
        let file = enc.finish().unwrap();
        let mut out = Vec::new();
        assert!(
            decoder(Compression::Zstd, &file[..])
                .unwrap()
                .read_to_end(&mut out)
                .is_err()
        );
        // xz -9e needs a 64 MiB dictionary.
        let mut enc =
            liblzma::write::XzEncoder::new(Vec::new(), 9 | liblzma::stream::PRESET_EXTREME);
        enc.write_all(&data).unwrap();
        let file = enc.finish().unwrap();
        assert!(
            decoder(Compression::Xz, &file[..])
                .unwrap()
                .read_to_end(&mut out)
                .is_err()
        );
    }

    #[test]
    fn hashing_reader_enforces_its_limit() {
        let mut r = HashingReader::new(&b"0123456789"[..], 5);
        let mut out = Vec::new();
        assert_eq!(
            r.read_to_end(&mut out).unwrap_err().kind(),
            io::ErrorKind::InvalidData
        );
        let mut r = HashingReader::new(&b""[..], 0);
        r.read_to_end(&mut out).unwrap();
        let (_, h, n) = r.finish();
        assert_eq!(n, 0);
        assert_eq!(
            h.to_string(),
            "sha256:0mdqa9w1p6cmli6976v4wi0sw9r4p5prkj7lzfd1877wk11c9c73"
        );
    }
}
