//! Layer compression: none, parallel gzip ([`super::pgzip`]) or
//! multi-threaded zstd.
//!
//! Output bytes depend only on the input, the algorithm, the level and the
//! library versions (pinned in Cargo.lock), never on the number of threads,
//! on which thread takes a block, or on how callers split their writes:
//! gzip compresses fixed-size blocks primed with the previous block's tail,
//! each with a compressor of its own, storing those it cannot shrink; zstd
//! is always run in its multi-threaded mode (workers ≥ 1), whose jobs have a
//! size fixed by the level, so its output differs from single-threaded mode
//! but not between worker counts. `flush` never ends a block or a job
//! early. Tests pin both on real files at 1 to 8 threads.

use std::io::{self, Write};

use super::pgzip::ParGzip;
use crate::catalog::Compression;
use crate::oci::media;

/// How a blob is compressed: the recipe's compression, and how many threads
/// run it (which changes the speed, never the bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Codec {
    pub compression: Compression,
    pub threads: usize,
}

impl Codec {
    /// `threads` 0 means every core ([`default_threads`]).
    pub fn new(compression: Compression, threads: usize) -> Self {
        let threads = if threads == 0 {
            default_threads()
        } else {
            threads
        };
        Self {
            compression,
            threads,
        }
    }

    pub fn encoder<W: Write + Send + 'static>(self, inner: W) -> io::Result<Encoder<W>> {
        Encoder::new(self.compression, inner, self.threads)
    }
}

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

/// Threads used for compression when not set (`IMAGEPIPE_THREADS`): every
/// core this process may run on.
pub fn default_threads() -> usize {
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
            // Blocks and jobs end at offsets fixed by the input, whatever
            // callers flush: a zstd flush would end a job early.
            Self::Gzip(g) => g.flush(),
            Self::Zstd(_) => Ok(()),
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

    /// Files of this machine under `dir` whose first bytes satisfy `keep`,
    /// concatenated in path order, up to `limit` bytes.
    fn files(dir: &str, keep: &dyn Fn(&[u8]) -> bool, limit: usize) -> Vec<u8> {
        fn walk(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
            let Ok(entries) = std::fs::read_dir(dir) else {
                return;
            };
            let mut entries: Vec<_> = entries.flatten().map(|e| e.path()).collect();
            entries.sort();
            for p in entries {
                let Ok(meta) = std::fs::symlink_metadata(&p) else {
                    continue;
                };
                if meta.is_dir() {
                    walk(&p, out);
                } else if meta.is_file() {
                    out.push(p);
                }
            }
        }
        let mut paths = Vec::new();
        walk(std::path::Path::new(dir), &mut paths);
        let mut data = Vec::new();
        for p in paths {
            if data.len() >= limit {
                break;
            }
            if let Ok(bytes) = std::fs::read(&p)
                && keep(&bytes)
            {
                data.extend_from_slice(&bytes);
            }
        }
        data.truncate(limit);
        assert!(data.len() == limit, "{dir}: only {} bytes", data.len());
        data
    }

    /// The committed real ext4 image (tests/fixtures/real-files.ext4.xz).
    fn ext4() -> Vec<u8> {
        let xz: &[u8] = include_bytes!("../../tests/fixtures/real-files.ext4.xz");
        let mut out = Vec::new();
        std::io::Read::read_to_end(&mut liblzma::read::XzDecoder::new(xz), &mut out).unwrap();
        out
    }

    /// Real data of the shapes disk images hold: text, ELF binaries,
    /// already-compressed files, a real ext4 image, and all of them mixed
    /// with their seams at and off the gzip block boundaries.
    fn real_shapes() -> Vec<(&'static str, Vec<u8>)> {
        const MIB: usize = 1 << 20;
        let b = super::super::pgzip::BLOCK;
        let text = files(
            "/usr/share",
            &|d| {
                !d.is_empty()
                    && !d.starts_with(&[0x1f, 0x8b])
                    && d.iter().take(4096).all(|c| c.is_ascii())
            },
            2 * MIB,
        );
        let elf = files("/usr/bin", &|d| d.starts_with(b"\x7fELF"), 2 * MIB);
        let compressed = files("/usr/share/doc", &|d| d.starts_with(&[0x1f, 0x8b]), MIB);
        let ext4 = ext4();
        let at = [
            &text[..2 * b],
            &elf[..3 * b],
            &compressed[..2 * b],
            &ext4[..3 * b],
            &text[2 * b..4 * b],
        ]
        .concat();
        let off = [
            &text[..2 * b - 1000],
            &elf[..b + 77],
            &compressed[..300_001],
            &ext4[..b / 2 + 3],
            &elf[b..3 * b + 511],
            &text[..b - 1],
        ]
        .concat();
        vec![
            ("text", text),
            ("elf", elf),
            ("compressed", compressed),
            ("ext4", ext4),
            ("mixed at block boundaries", at),
            ("mixed off block boundaries", off),
        ]
    }

    fn every_compression() -> Vec<Compression> {
        let mut all = vec![Compression::None];
        all.extend((1..=9).map(|level| Compression::Gzip { level }));
        all.extend([1, 3, 9].map(|level| Compression::Zstd { level }));
        all
    }

    /// `data` compressed with writes of the sizes `sizes` cycles through.
    fn compress_in(c: Compression, threads: usize, data: &[u8], sizes: &[usize]) -> Vec<u8> {
        let mut e = Encoder::new(c, Vec::new(), threads).unwrap();
        let (mut at, mut i) = (0, 0);
        while at < data.len() {
            let n = sizes[i % sizes.len()].min(data.len() - at);
            e.write_all(&data[at..at + n]).unwrap();
            if i % 3 == 0 {
                e.flush().unwrap();
            }
            at += n;
            i += 1;
        }
        e.finish().unwrap()
    }

    fn decompress(c: Compression, bytes: &[u8]) -> Vec<u8> {
        match c {
            Compression::None => bytes.to_vec(),
            Compression::Gzip { .. } => {
                let mut out = Vec::new();
                std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(bytes), &mut out)
                    .unwrap();
                out
            }
            Compression::Zstd { .. } => zstd::decode_all(bytes).unwrap(),
        }
    }

    #[test]
    fn real_files_give_the_same_bytes_at_every_thread_count_and_write_pattern() {
        let shapes = real_shapes();
        for c in every_compression() {
            for (shape, data) in &shapes {
                let reference = compress_in(c, 1, data, &[1 << 20]);
                for (threads, sizes) in [
                    (2, &[8192][..]),
                    (3, &[7919, 65_536, 1, 300_000][..]),
                    (4, &[1 << 20][..]),
                    (8, &[131_072, 13][..]),
                ] {
                    let got = compress_in(c, threads, data, sizes);
                    assert!(
                        got == reference,
                        "{c:?} on {shape}: {threads} threads give other bytes than 1"
                    );
                }
                assert!(decompress(c, &reference) == *data, "{c:?} on {shape}");
            }
        }
    }

    /// A stretch of generated data: new bytes, or a copy of earlier ones.
    #[derive(Clone, Debug)]
    enum Piece {
        Words(Vec<u16>),
        Bytes(Vec<u8>),
        Copy { back: usize, len: usize },
    }

    /// Compressible data as real files have it: text of a vocabulary of
    /// generated words, copies of earlier stretches (near and far), runs,
    /// and some noise.
    fn compressible() -> impl proptest::strategy::Strategy<Value = Vec<u8>> {
        use proptest::prelude::*;
        let word = proptest::collection::vec(
            prop_oneof![8 => b'a'..=b'z', 1 => Just(b' '), 1 => Just(b'\n'), 1 => any::<u8>()],
            1..12,
        );
        let piece = prop_oneof![
            6 => proptest::collection::vec(any::<u16>(), 1..300).prop_map(Piece::Words),
            2 => (1usize..400_000, 3usize..2000).prop_map(|(back, len)| Piece::Copy { back, len }),
            1 => (any::<u8>(), 1usize..5000).prop_map(|(b, n)| Piece::Bytes(vec![b; n])),
            1 => proptest::collection::vec(any::<u8>(), 1..3000).prop_map(Piece::Bytes),
        ];
        (
            proptest::collection::vec(word, 1..400),
            proptest::collection::vec(piece, 1..600),
        )
            .prop_map(|(words, pieces)| {
                let mut out: Vec<u8> = Vec::new();
                for p in pieces {
                    match p {
                        Piece::Words(w) => {
                            for i in w {
                                out.extend_from_slice(&words[usize::from(i) % words.len()]);
                            }
                        }
                        Piece::Bytes(b) => out.extend_from_slice(&b),
                        Piece::Copy { back, len } if back <= out.len() => {
                            let from = out.len() - back;
                            for i in 0..len {
                                out.push(out[from + i % back]);
                            }
                        }
                        Piece::Copy { .. } => {}
                    }
                }
                out
            })
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(32))]
        #[test]
        fn compressible_data_gives_the_same_bytes_at_every_thread_count(
            data in compressible(),
            level in 1u32..=9,
            threads in 2usize..=8,
        ) {
            let c = Compression::Gzip { level };
            let one = compress_in(c, 1, &data, &[1 << 20]);
            proptest::prop_assert!(one == compress_in(c, threads, &data, &[4099, 65_536]));
            proptest::prop_assert!(decompress(c, &one) == data);
            let z = Compression::Zstd { level: (level % 4) as i32 + 1 };
            proptest::prop_assert!(
                compress_in(z, 1, &data, &[1 << 20]) == compress_in(z, threads, &data, &[4099])
            );
        }
    }
}
