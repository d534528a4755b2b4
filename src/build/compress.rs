//! Layer compression: none, parallel gzip ([`super::pgzip`]) or
//! multi-threaded zstd.
//!
//! Output bytes depend only on the algorithm, level and library versions
//! (pinned in Cargo.lock), never on the number of threads: gzip compresses
//! fixed-size blocks primed with the previous block's tail, storing those it
//! cannot shrink, and zstd is always run in its multi-threaded mode
//! (workers ≥ 1), whose output differs from single-threaded mode but not
//! between worker counts.

use std::io::{self, Write};

use super::pgzip::ParGzip;
use crate::catalog::Compression;
use crate::oci::media;

/// A compressing writer over `W`.
pub enum Encoder<W: Write + Send + 'static> {
    None(W),
    Gzip(ParGzip<W>),
    Zstd(zstd::Encoder<'static, W>),
}

impl<W: Write + Send + 'static> std::fmt::Debug for Encoder<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::None(_) => "Encoder::None",
            Self::Gzip(..) => "Encoder::Gzip",
            Self::Zstd(_) => "Encoder::Zstd",
        })
    }
}

/// Threads used for compression: every core.
pub fn threads() -> usize {
    std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get)
}

impl<W: Write + Send + 'static> Encoder<W> {
    pub fn new(c: Compression, inner: W, threads: usize) -> io::Result<Self> {
        let threads = threads.max(1);
        Ok(match c {
            Compression::None => Self::None(inner),
            Compression::Gzip { level } => Self::Gzip(ParGzip::new(inner, level, threads)),
            Compression::Zstd { level } => {
                let mut e = zstd::Encoder::new(inner, level)?;
                e.multithread(u32::try_from(threads).unwrap_or(1))?;
                e.include_checksum(false)?;
                Self::Zstd(e)
            }
        })
    }

    /// Flushes the compressed stream's end and returns the inner writer.
    pub fn finish(self) -> io::Result<W> {
        match self {
            Self::None(mut w) => {
                w.flush()?;
                Ok(w)
            }
            Self::Gzip(g) => g.finish(),
            Self::Zstd(z) => z.finish(),
        }
    }
}

impl<W: Write + Send + 'static> Write for Encoder<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Self::None(w) => w.write(buf),
            Self::Gzip(g) => g.write(buf),
            Self::Zstd(z) => z.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Self::None(w) => w.flush(),
            // Blocks end at fixed offsets, whatever callers flush.
            Self::Gzip(g) => g.flush(),
            Self::Zstd(z) => z.flush(),
        }
    }
}

/// The OCI layer media type for a tar layer with this compression.
pub fn layer_media_type(c: Compression) -> &'static str {
    match c {
        Compression::None => media::LAYER_TAR,
        Compression::Gzip { .. } => media::LAYER_GZIP,
        Compression::Zstd { .. } => media::LAYER_ZSTD,
    }
}

/// The `+gzip`/`+zstd` suffix of a compressed non-tar blob's media type.
pub fn suffix(c: Compression) -> &'static str {
    match c {
        Compression::None => "",
        Compression::Gzip { .. } => "+gzip",
        Compression::Zstd { .. } => "+zstd",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compress(c: Compression, threads: usize, data: &[u8]) -> Vec<u8> {
        let mut e = Encoder::new(c, Vec::new(), threads).unwrap();
        for chunk in data.chunks(7919) {
            e.write_all(chunk).unwrap();
            e.flush().unwrap();
        }
        e.finish().unwrap()
    }

    /// A writer that fails like a full disk after `room` bytes.
    struct Full {
        room: usize,
    }

    impl Write for Full {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if buf.len() > self.room {
                return Err(io::Error::from_raw_os_error(28)); // ENOSPC
            }
            self.room -= buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_full_disk_is_an_error_never_a_panic() {
        let data: Vec<u8> = (0..4_000_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 7) as u8)
            .collect();
        for c in [
            Compression::None,
            Compression::Gzip { level: 1 },
            Compression::Gzip { level: 6 },
            Compression::Zstd { level: 3 },
        ] {
            let result = std::panic::catch_unwind(|| {
                let mut e = Encoder::new(c, Full { room: 100_000 }, 2).unwrap();
                let written = data.chunks(65_536).try_for_each(|chunk| e.write_all(chunk));
                written.and_then(|()| e.finish().map(|_| ()))
            });
            let err = result.unwrap_or_else(|_| panic!("{c:?} panicked"));
            assert_eq!(err.unwrap_err().raw_os_error(), Some(28), "{c:?}");
        }
    }

    #[test]
    fn output_does_not_depend_on_thread_count_or_write_pattern() {
        let data: Vec<u8> = (0..3_000_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8 & 0x3f)
            .collect();
        for c in [
            Compression::Gzip { level: 1 },
            Compression::Gzip { level: 6 },
            Compression::Zstd { level: 3 },
        ] {
            let one = compress(c, 1, &data);
            assert_eq!(one, compress(c, 2, &data), "{c:?}");
            assert_eq!(one, compress(c, 4, &data), "{c:?}");
            assert!(one.len() < data.len());
        }
        let gz = compress(Compression::Gzip { level: 6 }, 2, &data);
        let mut out = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::MultiGzDecoder::new(&gz[..]), &mut out)
            .unwrap();
        assert_eq!(out, data);
        let zs = compress(Compression::Zstd { level: 3 }, 2, &data);
        assert_eq!(zstd::decode_all(&zs[..]).unwrap(), data);
    }
}
