//! Parallel gzip in fixed-size blocks, as pigz writes it, with one rule
//! more: a block that deflate cannot shrink is written as stored deflate
//! blocks, so incompressible data (compressed qcow2 clusters, upstream
//! cloud images) costs what copying costs.
//!
//! The output depends only on the input bytes and the level: blocks are
//! [`BLOCK`] bytes wherever the writes fall, each is compressed with the
//! previous block's last 32 KiB as its dictionary and ends byte-aligned
//! (a sync flush), and whether a block is stored is decided from its bytes
//! alone, with integer arithmetic (the same on every machine). The number of
//! threads changes only how fast it goes.
//!
//! Every block, and every probe, gets a compressor of its own, created for
//! it: a compressor carries bytes from one stream to the next. zlib-rs's
//! `reset` keeps the window's old contents, and at levels 1–8 its 4-byte
//! hash of the last dictionary positions reads the byte after the
//! dictionary, which is then the previous stream's; a worker reusing its
//! compressor emitted different matches depending on which block it had
//! compressed before, so the bytes depended on the scheduling of blocks to
//! threads. A new compressor starts from zeroed memory, the same every time.
//!
//! Compression runs on worker threads; the caller's thread only hands
//! blocks over and writes the finished ones, in order, to the inner writer
//! (where the digest is computed and the blob written), so hashing and I/O
//! overlap with compression.

use std::io::{self, Write};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use flate2::{Compress, Compression, FlushCompress, Status};

/// Uncompressed bytes per block.
pub const BLOCK: usize = 128 * 1024;
/// Deflate's window: the dictionary handed to the next block.
const DICT: usize = 32 * 1024;
/// The longest stored deflate block.
const STORED_MAX: usize = 65_535;
/// Before a block is compressed, deflate is asked on samples: this many, of this size,
/// spread over the block, compressed together at level 1 …
const SAMPLES: usize = 4;
const SAMPLE: usize = 2048;
/// … and when together they do not shrink below this many percent, the
/// block is stored (compressed qcow2 clusters, already-compressed files).
const SAMPLE_PERCENT: u64 = 97;

struct Job {
    data: Vec<u8>,
    dict: Arc<Vec<u8>>,
    last: bool,
    done: SyncSender<io::Result<Done>>,
}

struct Done {
    bytes: Vec<u8>,
    crc: crc32fast::Hasher,
    len: usize,
}

/// A gzip writer compressing on `threads` worker threads, with one more
/// thread writing the finished blocks, in order, to the inner writer.
pub struct ParGzip<W: Write + Send + 'static> {
    block: Vec<u8>,
    dict: Arc<Vec<u8>>,
    jobs: Option<SyncSender<Job>>,
    /// Each block's result, in order, to the output thread.
    order: Option<SyncSender<Receiver<io::Result<Done>>>>,
    output: Option<JoinHandle<io::Result<W>>>,
    workers: Vec<JoinHandle<()>>,
}

/// Writes the header, every block in order, and the trailer.
fn output<W: Write>(mut inner: W, order: &Receiver<Receiver<io::Result<Done>>>) -> io::Result<W> {
    // No timestamp, no name, OS "unknown": the header is constant.
    inner.write_all(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff])?;
    let mut crc = crc32fast::Hasher::new();
    let mut size = 0u64;
    for result in order {
        let done = result
            .recv()
            .map_err(|_| io::Error::other("a gzip worker stopped"))??;
        inner.write_all(&done.bytes)?;
        crc.combine(&done.crc);
        size += done.len as u64;
    }
    // ISIZE is the length modulo 2^32, as RFC 1952 says.
    let isize = (size & 0xffff_ffff) as u32;
    inner.write_all(&crc.finalize().to_le_bytes())?;
    inner.write_all(&isize.to_le_bytes())?;
    inner.flush()?;
    Ok(inner)
}

impl<W: Write + Send + 'static> ParGzip<W> {
    pub fn new(inner: W, level: u32, threads: usize) -> Self {
        let threads = threads.max(1);
        let (tx, rx) = sync_channel::<Job>(threads);
        let rx = Arc::new(Mutex::new(rx));
        let workers = (0..threads)
            .map(|_| {
                let rx = rx.clone();
                std::thread::spawn(move || worker(&rx, level))
            })
            .collect();
        // Blocks in flight: enough to keep every worker busy, and bounded.
        let (order_tx, order_rx) = sync_channel(2 * threads + 1);
        let output = std::thread::spawn(move || output(inner, &order_rx));
        Self {
            block: Vec::with_capacity(BLOCK),
            dict: Arc::new(Vec::new()),
            jobs: Some(tx),
            order: Some(order_tx),
            output: Some(output),
            workers,
        }
    }

    /// The output thread's error (it stopped early), or a generic one.
    fn output_error(&mut self) -> io::Error {
        self.order = None;
        match self.output.take().map(JoinHandle::join) {
            Some(Ok(Err(e))) => e,
            _ => io::Error::other("the gzip output stopped"),
        }
    }

    fn submit(&mut self, last: bool) -> io::Result<()> {
        let data = std::mem::replace(&mut self.block, Vec::with_capacity(BLOCK));
        let tail = data.len().saturating_sub(DICT);
        let next_dict = Arc::new(data[tail..].to_vec());
        let (done, result) = sync_channel(1);
        let job = Job {
            data,
            dict: std::mem::replace(&mut self.dict, next_dict),
            last,
            done,
        };
        let sent = self.order.as_ref().map(|o| o.send(result));
        match sent {
            Some(Ok(())) => {}
            Some(Err(_)) => return Err(self.output_error()),
            None => return Err(io::Error::other("gzip stream already finished")),
        }
        self.jobs
            .as_ref()
            .ok_or_else(|| io::Error::other("gzip stream already finished"))?
            .send(job)
            .map_err(|_| io::Error::other("a gzip worker stopped"))
    }

    /// Ends the stream (the last block, the trailer) and returns the inner writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.submit(true)?;
        self.order = None;
        let output = self.output.take();
        self.stop();
        match output.map(JoinHandle::join) {
            Some(Ok(r)) => r,
            _ => Err(io::Error::other("the gzip output stopped")),
        }
    }

    fn stop(&mut self) {
        self.order = None;
        self.jobs = None;
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

impl<W: Write + Send + 'static> Drop for ParGzip<W> {
    fn drop(&mut self) {
        self.stop();
        if let Some(o) = self.output.take() {
            let _ = o.join();
        }
    }
}

impl<W: Write + Send + 'static> Write for ParGzip<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let room = BLOCK - self.block.len();
        let n = room.min(buf.len());
        self.block.extend_from_slice(&buf[..n]);
        if self.block.len() == BLOCK {
            self.submit(false)?;
        }
        Ok(n)
    }

    /// Blocks end only at [`BLOCK`] boundaries, so that the bytes never
    /// depend on when callers flush; `finish` writes the rest.
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn worker(rx: &Mutex<Receiver<Job>>, level: u32) {
    loop {
        let job = {
            let Ok(rx) = rx.lock() else { return };
            match rx.recv() {
                Ok(j) => j,
                Err(_) => return,
            }
        };
        let mut crc = crc32fast::Hasher::new();
        crc.update(&job.data);
        let bytes = if shrinks(&job.data) {
            block(level, &job.data, &job.dict, job.last)
        } else {
            Ok(stored(&job.data, job.last))
        };
        let _ = job.done.send(bytes.map(|bytes| Done {
            bytes,
            crc,
            len: job.data.len(),
        }));
    }
}

/// Whether deflate is worth running on a full block: not when level 1
/// cannot shrink samples of it (random or already-compressed bytes).
/// Decided from the bytes alone, so the output stays the same on every
/// machine.
fn shrinks(data: &[u8]) -> bool {
    if data.len() < BLOCK {
        // The last, short block: deflate decides (see `block`).
        return true;
    }
    let mut samples = Vec::with_capacity(SAMPLES * SAMPLE);
    for i in 0..SAMPLES {
        let at = i * (data.len() - SAMPLE) / (SAMPLES - 1);
        samples.extend_from_slice(&data[at..at + SAMPLE]);
    }
    // Room for deflate's worst case, so that the stream ends in one call.
    let mut out = Vec::with_capacity(2 * samples.len() + 1024);
    let mut probe = Compress::new(Compression::new(1), false);
    if probe
        .compress_vec(&samples, &mut out, FlushCompress::Finish)
        .is_err()
    {
        return true;
    }
    (out.len() as u64) * 100 < (samples.len() as u64) * SAMPLE_PERCENT
}

/// One block's deflate bytes: compressed, or stored when that is not smaller.
fn block(level: u32, data: &[u8], dict: &[u8], last: bool) -> io::Result<Vec<u8>> {
    // A new compressor for every block (see the module's documentation).
    let mut c = Compress::new(Compression::new(level), false);
    if !dict.is_empty() {
        c.set_dictionary(dict).map_err(io::Error::other)?;
    }
    let flush = if last {
        FlushCompress::Finish
    } else {
        FlushCompress::Sync
    };
    let mut out = Vec::with_capacity(data.len() / 2 + 1024);
    loop {
        if out.len() == out.capacity() {
            out.reserve(out.capacity().max(64 * 1024));
        }
        let consumed = usize::try_from(c.total_in()).unwrap_or(usize::MAX);
        let status = c
            .compress_vec(&data[consumed..], &mut out, flush)
            .map_err(io::Error::other)?;
        let all_in = usize::try_from(c.total_in()).unwrap_or(usize::MAX) == data.len();
        match status {
            Status::StreamEnd => break,
            // A sync flush is complete when it did not fill the output.
            _ if !last && all_in && out.len() < out.capacity() => break,
            _ => {}
        }
        if out.len() > data.len() + data.len() / 64 + 1024 {
            // Far larger than storing: stop wasting time.
            return Ok(stored(data, last));
        }
    }
    if out.len() >= data.len() + 5 * data.len().div_ceil(STORED_MAX).max(1) {
        return Ok(stored(data, last));
    }
    Ok(out)
}

/// `data` as stored deflate blocks (the stream is byte-aligned here).
fn stored(data: &[u8], last: bool) -> Vec<u8> {
    let chunks: Vec<&[u8]> = if data.is_empty() {
        vec![&[][..]]
    } else {
        data.chunks(STORED_MAX).collect()
    };
    let mut out = Vec::with_capacity(data.len() + 5 * chunks.len());
    let n = chunks.len();
    for (i, chunk) in chunks.into_iter().enumerate() {
        out.push(u8::from(last && i + 1 == n));
        let len = u16::try_from(chunk.len()).unwrap_or(u16::MAX);
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(chunk);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gzip(data: &[u8], level: u32, threads: usize) -> Vec<u8> {
        let mut g = ParGzip::new(Vec::new(), level, threads);
        for chunk in data.chunks(10_007) {
            g.write_all(chunk).unwrap();
        }
        g.finish().unwrap()
    }

    fn gunzip(gz: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::MultiGzDecoder::new(gz), &mut out).unwrap();
        out
    }

    /// A xorshift stream: incompressible, reproducible.
    fn noise(n: usize, seed: u64) -> Vec<u8> {
        let mut x = seed;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect()
    }

    #[test]
    fn incompressible_blocks_are_stored_and_compressible_ones_compressed() {
        let random = noise(3 * BLOCK + 1234, 7);
        let gz = gzip(&random, 6, 2);
        // Stored: 5 bytes per 64 KiB, plus header and trailer.
        assert!(
            gz.len() <= random.len() + 5 * (random.len() / STORED_MAX + 4) + 18,
            "{}",
            gz.len()
        );
        assert_eq!(gunzip(&gz), random);
        // Half text, half noise: the text halves shrink, the noise is stored.
        let mut mixed = Vec::new();
        for i in 0..8 {
            if i % 2 == 0 {
                mixed.extend(
                    std::iter::repeat_n(b"kubeadm init --config=/etc/kubeadm.yml\n", BLOCK / 40)
                        .flatten(),
                );
            } else {
                mixed.extend(noise(BLOCK, i));
            }
        }
        let gz = gzip(&mixed, 6, 2);
        assert!(
            gz.len() < mixed.len() / 2 + mixed.len() / 50,
            "{}",
            gz.len()
        );
        assert_eq!(gunzip(&gz), mixed);
    }

    #[test]
    fn gnu_gzip_reads_every_shape() {
        for data in [
            Vec::new(),
            b"x".to_vec(),
            noise(BLOCK, 1),
            vec![0u8; 2 * BLOCK],
            noise(BLOCK - 1, 2),
            [noise(BLOCK, 3), vec![b'a'; BLOCK + 17]].concat(),
        ] {
            for level in [1, 6, 9] {
                let gz = gzip(&data, level, 3);
                let dir = tempfile::tempdir().unwrap();
                let f = dir.path().join("x.gz");
                std::fs::write(&f, &gz).unwrap();
                let out = std::process::Command::new("gzip")
                    .args(["-dc"])
                    .arg(&f)
                    .output()
                    .unwrap();
                assert!(
                    out.status.success(),
                    "{}",
                    String::from_utf8_lossy(&out.stderr)
                );
                assert!(out.stdout == data, "len {} level {level}", data.len());
            }
        }
    }

    #[test]
    fn the_bytes_do_not_depend_on_threads_or_writes() {
        let data = [
            noise(BLOCK + 5, 9),
            vec![b'z'; 3 * BLOCK],
            noise(2 * BLOCK, 4),
        ]
        .concat();
        let one = gzip(&data, 6, 1);
        for threads in [2, 4] {
            assert!(one == gzip(&data, 6, threads), "{threads} threads");
        }
        let mut g = ParGzip::new(Vec::new(), 6, 2);
        for chunk in data.chunks(1).take(1000) {
            g.write_all(chunk).unwrap();
        }
        g.write_all(&data[1000..]).unwrap();
        assert!(g.finish().unwrap() == one);
    }
}
