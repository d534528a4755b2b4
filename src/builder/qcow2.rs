//! Disk images read and written by imagepipe itself, so that converting and
//! growing a disk (`disk:` of an image) gives the same bytes on every
//! machine, whatever QEMU it has.
//!
//! The reader takes raw disks and qcow2 (versions 2 and 3, deflate or zstd
//! compressed clusters, zero clusters). The writer makes a qcow2 v3 image
//! with 64 KiB clusters and 16-bit refcounts whose layout depends only on the
//! guest's bytes: data clusters in guest order (all-zero clusters are left
//! unallocated), each group's L2 table after its data, then the L1 table,
//! the refcount table and its blocks. Raw output is written sparse.
//!
//! Specification: QEMU's `docs/interop/qcow2.txt`.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::Path;

/// The largest virtual size read or written: 16 TiB.
pub const MAX_VIRTUAL_SIZE: u64 = 16 << 40;

/// The most guest data (not holes) read from one qcow2 image: 64 GiB, the
/// cap of a decompressed download.
pub const MAX_DATA: u64 = crate::source::MAX_DECOMPRESSED;

/// Guest bytes of a disk image, read by offset.
pub trait Guest {
    /// The size the guest sees.
    fn size(&self) -> u64;
    /// Fills `buf` with the guest's bytes at `offset` (zeros past the end);
    /// `false` when the range is known to read as zeros (then `buf` is
    /// left as it was).
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<bool>;
    /// The first offset at or after `offset` that may hold data: everything
    /// before it reads as zeros (the guest's size when nothing follows).
    fn next_data(&mut self, offset: u64) -> io::Result<u64> {
        Ok(offset)
    }
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn be64(b: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// Reads exactly `buf.len()` bytes at `at`, or says what the table or
/// cluster `what` points past.
fn read_exact_at(f: &File, at: u64, buf: &mut [u8], what: &str) -> io::Result<()> {
    f.read_exact_at(buf, at).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => invalid(format!(
            "the qcow2 {what} at byte {at} lies past the end of the file (a truncated or damaged image)"
        )),
        _ => e,
    })
}

/// A raw disk: the file's bytes.
pub struct Raw {
    file: File,
    size: u64,
}

impl Raw {
    pub fn open(path: &Path) -> io::Result<Self> {
        let file = File::open(path)?;
        let size = file.metadata()?.len();
        Ok(Self { file, size })
    }
}

impl Guest for Raw {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<bool> {
        if offset >= self.size {
            return Ok(false);
        }
        let n = usize::try_from((self.size - offset).min(buf.len() as u64)).unwrap_or(buf.len());
        self.file.read_exact_at(&mut buf[..n], offset)?;
        buf[n..].fill(0);
        Ok(true)
    }
}

/// Incompatible features: dirty (refcounts may be stale; the mapping is
/// still right), corrupt, external data file, compression type, extended L2.
const INCOMPAT_DIRTY: u64 = 1;
const INCOMPAT_CORRUPT: u64 = 1 << 1;
const INCOMPAT_DATA_FILE: u64 = 1 << 2;
const INCOMPAT_COMPRESSION: u64 = 1 << 3;
const INCOMPAT_EXTENDED_L2: u64 = 1 << 4;
/// Bits 9–55 of L1 and standard L2 entries: a host offset.
const OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;
const COMPRESSED: u64 = 1 << 62;
const COPIED: u64 = 1 << 63;
const ZERO: u64 = 1;
/// The largest L1 table QEMU opens (32 MiB).
const MAX_L1_BYTES: u64 = 32 << 20;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Compression {
    Deflate,
    Zstd,
}

/// A qcow2 image (without backing file or external data file: those are
/// refused before, see `disk::refers_outside`).
pub struct Qcow2 {
    file: File,
    cluster_bits: u32,
    size: u64,
    l1: Vec<u64>,
    compression: Compression,
    version: u32,
    /// The L2 table last read, by its L1 index.
    l2: Option<(u64, Vec<u64>)>,
    /// The guest cluster last decompressed.
    cluster: Option<(u64, Vec<u8>)>,
    file_len: u64,
    /// Guest data read so far, against [`MAX_DATA`].
    data_read: u64,
    /// Host offset → the L1 index (L2 tables) or guest cluster (data) that
    /// names it: in the active image every cluster is named once.
    named: std::collections::HashMap<u64, (bool, u64)>,
}

impl Qcow2 {
    pub fn open(path: &Path) -> io::Result<Self> {
        let file = File::open(path)?;
        let mut h = [0u8; 112];
        let n = file.read_at(&mut h, 0)?;
        if n < 72 || &h[..4] != b"QFI\xfb" {
            return Err(invalid("not a qcow2 image (no qcow2 magic)".into()));
        }
        let version = be32(&h, 4);
        if !(2..=3).contains(&version) {
            return Err(invalid(format!("qcow2 version {version} is not 2 or 3")));
        }
        if be64(&h, 8) != 0 || be32(&h, 16) != 0 {
            return Err(invalid(
                "the qcow2 image has a backing file; a disk image must hold all its data".into(),
            ));
        }
        let cluster_bits = be32(&h, 20);
        if !(9..=21).contains(&cluster_bits) {
            return Err(invalid(format!(
                "qcow2 cluster_bits {cluster_bits} is outside 9–21"
            )));
        }
        let size = be64(&h, 24);
        if size > MAX_VIRTUAL_SIZE {
            return Err(invalid(format!(
                "qcow2 virtual size {size} bytes is over imagepipe's limit of 16 TiB"
            )));
        }
        if be32(&h, 32) != 0 {
            return Err(invalid(
                "the qcow2 image is encrypted: imagepipe cannot read it; decrypt it with `qemu-img convert`".into(),
            ));
        }
        let (mut compression, mut incompatible) = (Compression::Deflate, 0);
        if version == 3 {
            if n < 104 {
                return Err(invalid("the qcow2 v3 header is truncated".into()));
            }
            incompatible = be64(&h, 72);
            let header_len = be32(&h, 100);
            if incompatible & INCOMPAT_COMPRESSION != 0 {
                if header_len < 105 || n < 105 {
                    return Err(invalid(
                        "the qcow2 header sets a compression type but has no field for it".into(),
                    ));
                }
                compression = match h[104] {
                    0 => Compression::Deflate,
                    1 => Compression::Zstd,
                    other => {
                        return Err(invalid(format!("unknown qcow2 compression type {other}")));
                    }
                };
            }
        }
        if incompatible & INCOMPAT_CORRUPT != 0 {
            return Err(invalid(
                "the qcow2 image is marked corrupt: repair it with `qemu-img check -r all` first"
                    .into(),
            ));
        }
        if incompatible & INCOMPAT_EXTENDED_L2 != 0 {
            return Err(invalid(
                "the qcow2 image uses extended L2 entries (subclusters), which imagepipe does not read: convert it with `qemu-img convert -O qcow2`".into(),
            ));
        }
        if incompatible & INCOMPAT_DATA_FILE != 0 {
            return Err(invalid(
                "the qcow2 image keeps its data in an external file; a disk image must hold all its data".into(),
            ));
        }
        let known = INCOMPAT_DIRTY
            | INCOMPAT_CORRUPT
            | INCOMPAT_DATA_FILE
            | INCOMPAT_COMPRESSION
            | INCOMPAT_EXTENDED_L2;
        if incompatible & !known != 0 {
            return Err(invalid(format!(
                "the qcow2 image has incompatible features imagepipe does not know (bits {:#x})",
                incompatible & !known
            )));
        }
        let cluster = 1u64 << cluster_bits;
        let l2_entries = cluster / 8;
        let needed = size.div_ceil(cluster).div_ceil(l2_entries);
        let l1_size = u64::from(be32(&h, 36));
        if l1_size < needed || l1_size * 8 > MAX_L1_BYTES {
            return Err(invalid(format!(
                "the qcow2 L1 table has {l1_size} entries; a {size}-byte disk needs {needed} (at most {})",
                MAX_L1_BYTES / 8
            )));
        }
        let l1_at = be64(&h, 40);
        if l1_at & (cluster - 1) != 0 {
            return Err(invalid(format!(
                "the qcow2 L1 table at byte {l1_at} is not aligned to a cluster (a damaged image)"
            )));
        }
        let mut raw = vec![0u8; usize::try_from(needed * 8).expect("bounded")];
        read_exact_at(&file, l1_at, &mut raw, "L1 table")?;
        let l1 = raw.chunks_exact(8).map(|c| be64(c, 0)).collect();
        let file_len = file.metadata()?.len();
        Ok(Self {
            file_len,
            file,
            cluster_bits,
            size,
            l1,
            compression,
            version,
            l2: None,
            cluster: None,
            data_read: 0,
            named: std::collections::HashMap::new(),
        })
    }

    fn cluster_size(&self) -> u64 {
        1 << self.cluster_bits
    }

    /// The L2 entry of guest cluster `index`; 0 when unallocated.
    fn l2_entry(&mut self, index: u64) -> io::Result<u64> {
        let l2_entries = self.cluster_size() / 8;
        let l1 = self.l1[usize::try_from(index / l2_entries).expect("bounded")];
        let at = l1 & OFFSET_MASK;
        if at == 0 {
            return Ok(0);
        }
        if at & (self.cluster_size() - 1) != 0 {
            return Err(invalid(format!(
                "the qcow2 L2 table at byte {at} is not aligned to a cluster (a damaged image)"
            )));
        }
        let l1_index = index / l2_entries;
        if self.l2.as_ref().is_none_or(|(i, _)| *i != l1_index) {
            self.claim(at, true, l1_index)?;
            let mut raw = vec![0u8; usize::try_from(self.cluster_size()).expect("bounded")];
            read_exact_at(&self.file, at, &mut raw, "L2 table")?;
            self.l2 = Some((l1_index, raw.chunks_exact(8).map(|c| be64(c, 0)).collect()));
        }
        let (_, table) = self.l2.as_ref().expect("just read");
        Ok(table[usize::try_from(index % l2_entries).expect("bounded")])
    }

    /// The bytes of guest cluster `index` from `within` on, into `out`
    /// (at most to the cluster's end); `false`: they read as zeros.
    fn read_part(&mut self, index: u64, within: usize, out: &mut [u8]) -> io::Result<bool> {
        let entry = self.l2_entry(index)?;
        if entry & COMPRESSED != 0 {
            let cluster = self.decompressed(index, entry)?;
            out.copy_from_slice(&cluster[within..within + out.len()]);
            return Ok(true);
        }
        if entry & ZERO != 0 {
            if self.version < 3 {
                return Err(invalid(
                    "a qcow2 v2 image has a zero-cluster entry, which only v3 knows (a damaged image)"
                        .into(),
                ));
            }
            return Ok(false);
        }
        let at = entry & OFFSET_MASK;
        if at == 0 {
            return Ok(false);
        }
        if at & (self.cluster_size() - 1) != 0 {
            return Err(invalid(format!(
                "the qcow2 data cluster at byte {at} is not aligned to a cluster (a damaged image)"
            )));
        }
        self.claim(at, false, index)?;
        read_exact_at(&self.file, at + within as u64, out, "data cluster")?;
        self.budget(out.len())?;
        Ok(true)
    }

    /// Refuses a host offset that another table entry names already: a
    /// hostile image would make terabytes of data from one cluster.
    fn claim(&mut self, host: u64, is_table: bool, by: u64) -> io::Result<()> {
        match self.named.insert(host, (is_table, by)) {
            Some(prior) if prior != (is_table, by) => Err(invalid(format!(
                "the qcow2 image names the cluster at byte {host} twice (a damaged or hostile image: in an image every cluster holds one thing)"
            ))),
            _ => Ok(()),
        }
    }

    /// Counts guest data read against [`MAX_DATA`]: a small hostile image
    /// whose tables name the same clusters again and again must not make
    /// terabytes of data out of them.
    fn budget(&mut self, n: usize) -> io::Result<()> {
        self.data_read += n as u64;
        if self.data_read > MAX_DATA {
            return Err(invalid(format!(
                "the qcow2 image holds more than {} GiB of data, imagepipe's cap for a disk it converts (are its tables naming the same clusters again and again?)",
                MAX_DATA >> 30
            )));
        }
        Ok(())
    }

    /// Compressed guest cluster `index`, decompressed (the last one is kept).
    fn decompressed(&mut self, index: u64, entry: u64) -> io::Result<&[u8]> {
        if self.cluster.as_ref().is_some_and(|(i, _)| *i == index) {
            return Ok(&self.cluster.as_ref().expect("just checked").1);
        }
        let x = 62 - (self.cluster_bits - 8);
        let at = entry & ((1u64 << x) - 1);
        self.claim(at, false, index)?;
        let sectors = ((entry & !COMPRESSED & !COPIED) >> x) + 1;
        let len = (sectors * 512).saturating_sub(at & 511);
        let file_len = self.file_len;
        if at >= file_len {
            return Err(invalid(format!(
                "the qcow2 compressed cluster at byte {at} lies past the end of the file (a truncated or damaged image)"
            )));
        }
        let mut input = vec![0u8; usize::try_from(len.min(file_len - at)).expect("bounded")];
        self.file.read_exact_at(&mut input, at)?;
        let failed = |e: io::Error| {
            invalid(format!(
                "the qcow2 compressed cluster at byte {at} does not decompress: {e}"
            ))
        };
        let mut out = self.cluster.take().map(|(_, v)| v).unwrap_or_default();
        out.resize(usize::try_from(self.cluster_size()).expect("bounded"), 0);
        match self.compression {
            Compression::Deflate => flate2::read::DeflateDecoder::new(&input[..])
                .read_exact(&mut out)
                .map_err(failed)?,
            Compression::Zstd => {
                let mut d = zstd::stream::read::Decoder::with_buffer(&input[..]).map_err(failed)?;
                // No window larger than a cluster needs.
                d.window_log_max((self.cluster_bits + 1).max(10))
                    .map_err(failed)?;
                d.read_exact(&mut out).map_err(failed)?;
            }
        }
        self.budget(out.len())?;
        self.cluster = Some((index, out));
        Ok(&self.cluster.as_ref().expect("just stored").1)
    }

    /// The first guest offset at or after `offset` whose L1 entry is set
    /// (everything before it reads as zeros).
    fn next_mapped(&self, offset: u64) -> u64 {
        let span = self.cluster_size() * (self.cluster_size() / 8);
        let mut i = offset / span;
        while usize::try_from(i).is_ok_and(|i| i < self.l1.len())
            && self.l1[usize::try_from(i).expect("checked")] & OFFSET_MASK == 0
        {
            i += 1;
        }
        (i * span).max(offset).min(self.size)
    }
}

impl Guest for Qcow2 {
    fn size(&self) -> u64 {
        self.size
    }

    fn next_data(&mut self, offset: u64) -> io::Result<u64> {
        Ok(self.next_mapped(offset))
    }

    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<bool> {
        let cs = self.cluster_size();
        let mut any = false;
        let mut done = 0usize;
        while done < buf.len() {
            let at = offset + done as u64;
            let within = usize::try_from(at % cs).expect("bounded");
            let n = (usize::try_from(cs).expect("bounded") - within).min(buf.len() - done);
            let data =
                at < self.size && self.read_part(at / cs, within, &mut buf[done..done + n])?;
            if data {
                if !any {
                    buf[..done].fill(0);
                    any = true;
                }
            } else if any {
                buf[done..done + n].fill(0);
            }
            done += n;
        }
        Ok(any)
    }
}

/// Opens a disk image as the guest sees it.
pub fn open(path: &Path, format: &str) -> io::Result<Box<dyn Guest>> {
    Ok(match format {
        "qcow2" => Box::new(Qcow2::open(path)?),
        _ => Box::new(Raw::open(path)?),
    })
}

/// The output cluster: 64 KiB, QEMU's default.
const CLUSTER_BITS: u32 = 16;
const CLUSTER: u64 = 1 << CLUSTER_BITS;
/// L2 entries per table, and refcounts (16 bits) per block.
const L2_ENTRIES: u64 = CLUSTER / 8;
const REFCOUNTS_PER_BLOCK: u64 = CLUSTER / 2;

/// Writes `guest`, `size` bytes long (the guest's own size or more; bytes
/// past the guest's end read as zeros), as a sparse raw file at `out`.
pub fn write_raw(guest: &mut dyn Guest, size: u64, out: &Path) -> io::Result<()> {
    let file = File::create(out)?;
    let mut buf = vec![0u8; usize::try_from(CLUSTER).expect("small")];
    let end = guest.size().min(size);
    let mut at = 0;
    while at < end {
        // Skip what reads as zeros, a whole cluster at a time.
        let next = guest.next_data(at)?.min(end);
        let aligned = next - next % CLUSTER;
        if aligned > at || next == end {
            at = if next == end { end } else { aligned };
            continue;
        }
        let n = usize::try_from((end - at).min(CLUSTER)).expect("small");
        let chunk = &mut buf[..n];
        if guest.read_at(at, chunk)? && chunk.iter().any(|&b| b != 0) {
            file.write_all_at(chunk, at)?;
        }
        at += n as u64;
    }
    // Not synced: a scratch file, read at once by the packaging.
    file.set_len(size)
}

/// Writes `guest`, `size` bytes long (the guest's own size or more; bytes
/// past the guest's end read as zeros), as a qcow2 v3 image at `out`. The
/// bytes depend only on the guest's bytes and `size`.
pub fn write_qcow2(guest: &mut dyn Guest, size: u64, out: &Path) -> io::Result<()> {
    if size > MAX_VIRTUAL_SIZE {
        return Err(invalid(format!(
            "a virtual size of {size} bytes is over imagepipe's limit of 16 TiB"
        )));
    }
    let file = File::create(out)?;
    let clusters = size.div_ceil(CLUSTER);
    let l1_size = clusters.div_ceil(L2_ENTRIES);
    let mut l1 = vec![0u64; usize::try_from(l1_size).expect("bounded by the size limit")];
    let mut buf = vec![0u8; usize::try_from(CLUSTER).expect("small")];
    // Host cluster 0 is the header.
    let mut next = 1u64;
    let end = guest.size().min(size);
    for (group, l1_entry) in l1.iter_mut().enumerate() {
        let first = group as u64 * L2_ENTRIES;
        if first * CLUSTER >= end {
            break;
        }
        // A group the guest has no data in is skipped whole.
        if guest.next_data(first * CLUSTER)? >= ((first + L2_ENTRIES) * CLUSTER).min(end) {
            continue;
        }
        let mut l2 = vec![0u64; usize::try_from(L2_ENTRIES).expect("small")];
        let mut any = false;
        for (i, entry) in l2.iter_mut().enumerate() {
            let at = (first + i as u64) * CLUSTER;
            if at >= end {
                break;
            }
            let n = usize::try_from((end - at).min(CLUSTER)).expect("small");
            if !guest.read_at(at, &mut buf[..n])? {
                continue;
            }
            // Past the guest's end, in the last cluster: zeros.
            buf[n..].fill(0);
            if buf.iter().all(|&b| b == 0) {
                continue;
            }
            file.write_all_at(&buf, next * CLUSTER)?;
            *entry = (next * CLUSTER) | COPIED;
            next += 1;
            any = true;
        }
        if any {
            let table: Vec<u8> = l2.iter().flat_map(|e| e.to_be_bytes()).collect();
            file.write_all_at(&table, next * CLUSTER)?;
            *l1_entry = (next * CLUSTER) | COPIED;
            next += 1;
        }
    }
    let l1_at = next * CLUSTER;
    let l1_bytes: Vec<u8> = l1.iter().flat_map(|e| e.to_be_bytes()).collect();
    if !l1_bytes.is_empty() {
        file.write_all_at(&l1_bytes, l1_at)?;
    }
    next += (l1_size * 8).div_ceil(CLUSTER).max(1);
    // The refcount table and blocks count themselves too.
    let (mut blocks, mut table) = (1u64, 1u64);
    loop {
        let total = next + table + blocks;
        let b = total.div_ceil(REFCOUNTS_PER_BLOCK);
        let t = (b * 8).div_ceil(CLUSTER);
        if (b, t) == (blocks, table) {
            break;
        }
        (blocks, table) = (b, t);
    }
    let table_at = next * CLUSTER;
    let blocks_at = table_at + table * CLUSTER;
    let total = next + table + blocks;
    let entries: Vec<u8> = (0..blocks)
        .flat_map(|b| (blocks_at + b * CLUSTER).to_be_bytes())
        .collect();
    file.write_all_at(&entries, table_at)?;
    let mut block = vec![0u8; usize::try_from(CLUSTER).expect("small")];
    for b in 0..blocks {
        block.fill(0);
        let first = b * REFCOUNTS_PER_BLOCK;
        let used = total.saturating_sub(first).min(REFCOUNTS_PER_BLOCK);
        for i in 0..usize::try_from(used).expect("small") {
            block[i * 2..i * 2 + 2].copy_from_slice(&1u16.to_be_bytes());
        }
        file.write_all_at(&block, blocks_at + b * CLUSTER)?;
    }
    let mut h = vec![0u8; 112];
    h[..4].copy_from_slice(b"QFI\xfb");
    h[4..8].copy_from_slice(&3u32.to_be_bytes());
    h[20..24].copy_from_slice(&CLUSTER_BITS.to_be_bytes());
    h[24..32].copy_from_slice(&size.to_be_bytes());
    h[36..40].copy_from_slice(&u32::try_from(l1_size).expect("bounded").to_be_bytes());
    h[40..48].copy_from_slice(&l1_at.to_be_bytes());
    h[48..56].copy_from_slice(&table_at.to_be_bytes());
    h[56..60].copy_from_slice(&u32::try_from(table).expect("bounded").to_be_bytes());
    h[96..100].copy_from_slice(&4u32.to_be_bytes());
    h[100..104].copy_from_slice(&104u32.to_be_bytes());
    // Bytes 104–111: the end of the header extensions (type 0, length 0).
    file.write_all_at(&h, 0)?;
    // Not synced: a scratch file, read at once by the packaging.
    file.set_len(total * CLUSTER)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A guest of given bytes.
    struct Bytes(Vec<u8>);

    impl Guest for Bytes {
        fn size(&self) -> u64 {
            self.0.len() as u64
        }
        fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<bool> {
            let start = usize::try_from(offset).unwrap().min(self.0.len());
            let n = (self.0.len() - start).min(buf.len());
            buf[..n].copy_from_slice(&self.0[start..start + n]);
            buf[n..].fill(0);
            Ok(true)
        }
    }

    fn sample(len: usize) -> Vec<u8> {
        let mut v = vec![0u8; len];
        // Data in some clusters, zeros in others, a partial last cluster.
        for (i, b) in v.iter_mut().enumerate() {
            let cluster = i / CLUSTER as usize;
            if cluster % 3 != 1 {
                *b = (i % 251) as u8 ^ (cluster as u8);
            }
        }
        v
    }

    #[test]
    fn qcow2_written_reads_back_as_the_guest_and_grown_reads_zeros() {
        let dir = tempfile::tempdir().unwrap();
        let data = sample(5 * CLUSTER as usize + 1536);
        let out = dir.path().join("d.qcow2");
        let size = data.len() as u64 + (1 << 30);
        write_qcow2(&mut Bytes(data.clone()), size, &out).unwrap();
        let mut back = Qcow2::open(&out).unwrap();
        assert_eq!(back.size(), size);
        let mut got = vec![0u8; data.len()];
        assert!(back.read_at(0, &mut got).unwrap());
        assert_eq!(got, data);
        let mut tail = vec![7u8; 4096];
        assert!(!back.read_at(size - 4096, &mut tail).unwrap());
        // Two writes, the same bytes.
        let again = dir.path().join("e.qcow2");
        write_qcow2(&mut Bytes(data), size, &again).unwrap();
        assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&again).unwrap());
    }

    #[test]
    fn zero_clusters_take_no_space() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("z.qcow2");
        write_qcow2(
            &mut Bytes(vec![0; 40 * CLUSTER as usize]),
            40 * CLUSTER,
            &out,
        )
        .unwrap();
        // Header, L1, refcount table and block: no data, no L2.
        assert_eq!(std::fs::metadata(&out).unwrap().len(), 4 * CLUSTER);
    }

    #[test]
    fn hostile_headers_are_refused_with_their_reason() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("g.qcow2");
        write_qcow2(&mut Bytes(sample(CLUSTER as usize)), CLUSTER, &good).unwrap();
        let bytes = std::fs::read(&good).unwrap();
        let cases: &[(usize, &[u8], &str)] = &[
            (20, &40u32.to_be_bytes(), "cluster_bits"),
            (24, &(1u64 << 50).to_be_bytes(), "16 TiB"),
            (32, &1u32.to_be_bytes(), "encrypted"),
            (36, &0u32.to_be_bytes(), "L1 table"),
            (40, &(1u64 << 40).to_be_bytes(), "past the end"),
            (72, &2u64.to_be_bytes(), "corrupt"),
            (72, &16u64.to_be_bytes(), "extended L2"),
            (72, &(1u64 << 20).to_be_bytes(), "does not know"),
        ];
        for (at, value, says) in cases {
            let mut b = bytes.clone();
            b[*at..*at + value.len()].copy_from_slice(value);
            let p = dir.path().join("h.qcow2");
            std::fs::write(&p, &b).unwrap();
            let err = Qcow2::open(&p).err().expect("refused").to_string();
            assert!(err.contains(says), "{at}: {err}");
        }
    }
}

/// Against QEMU's own reading and writing (`qemu-img` from qemu-utils).
#[cfg(test)]
mod against_qemu {
    use super::*;
    use std::process::Command;

    fn qemu_img(args: &[&str]) -> String {
        let out = Command::new("qemu-img")
            .args(args)
            .output()
            .expect("qemu-img (qemu-utils) runs");
        assert!(
            out.status.success(),
            "qemu-img {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// A raw disk of real bytes: this crate's sources and the test binary
    /// (text and ELF) in separate runs, with holes between them.
    fn real_raw(path: &Path) -> Vec<u8> {
        let mut disk = vec![0u8; 6 << 20];
        let exe = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        let src = std::fs::read(file!()).unwrap();
        let mut at = 4096 + 17;
        for chunk in [
            &exe[..exe.len().min(2 << 20)],
            &src[..],
            &exe[exe.len() / 2..][..1 << 20],
        ] {
            disk[at..at + chunk.len()].copy_from_slice(chunk);
            at += chunk.len() + (300 << 10);
        }
        std::fs::write(path, &disk).unwrap();
        disk
    }

    fn read_all(g: &mut dyn Guest) -> Vec<u8> {
        let mut v = vec![0u8; usize::try_from(g.size()).unwrap()];
        for (i, c) in v.chunks_mut(100_000).enumerate() {
            if !g.read_at(i as u64 * 100_000, c).unwrap() {
                c.fill(0);
            }
        }
        v
    }

    #[test]
    fn reads_what_qemu_writes_compressed_or_not_in_every_cluster_size() {
        let dir = tempfile::tempdir().unwrap();
        let raw = dir.path().join("d.raw");
        let data = real_raw(&raw);
        let raw_s = raw.to_str().unwrap();
        for opts in [
            "compat=0.10,cluster_size=65536",
            "cluster_size=512",
            "cluster_size=2097152",
            "compression_type=zlib",
            "compression_type=zstd",
        ] {
            for compressed in [false, true] {
                let q = dir.path().join("q.qcow2");
                let q_s = q.to_str().unwrap();
                let mut args = vec!["convert", "-f", "raw", "-O", "qcow2", "-o", opts];
                if compressed {
                    args.push("-c");
                }
                args.extend([raw_s, q_s]);
                qemu_img(&args);
                let mut g = Qcow2::open(&q).unwrap();
                assert_eq!(read_all(&mut g), data, "{opts} compressed={compressed}");
            }
        }
    }

    #[test]
    fn qemu_reads_what_is_written_and_finds_it_clean() {
        let dir = tempfile::tempdir().unwrap();
        let raw = dir.path().join("d.raw");
        let data = real_raw(&raw);
        let grown = data.len() as u64 + (8 << 30);
        let out = dir.path().join("o.qcow2");
        write_qcow2(&mut Raw::open(&raw).unwrap(), grown, &out).unwrap();
        let o = out.to_str().unwrap();
        qemu_img(&["check", "-f", "qcow2", o]);
        let info: serde_json::Value =
            serde_json::from_str(&qemu_img(&["info", "--output=json", "-f", "qcow2", o])).unwrap();
        assert_eq!(info["virtual-size"], grown);
        // The guest's bytes, then zeros to the new end.
        let back = dir.path().join("back.raw");
        qemu_img(&[
            "convert",
            "-f",
            "qcow2",
            "-O",
            "raw",
            o,
            back.to_str().unwrap(),
        ]);
        let b = std::fs::File::open(&back).unwrap();
        assert_eq!(b.metadata().unwrap().len(), grown);
        let mut head = vec![0u8; data.len()];
        b.read_exact_at(&mut head, 0).unwrap();
        assert_eq!(head, data);
        let mut tail = vec![1u8; 1 << 20];
        b.read_exact_at(&mut tail, grown - (1 << 20)).unwrap();
        assert!(tail.iter().all(|&x| x == 0));
        // A raw written sparse: only the data is allocated.
        let sparse = dir.path().join("s.raw");
        write_raw(&mut Raw::open(&raw).unwrap(), grown, &sparse).unwrap();
        let meta = std::fs::metadata(&sparse).unwrap();
        assert_eq!(meta.len(), grown);
        use std::os::unix::fs::MetadataExt;
        assert!(
            meta.blocks() * 512 < 8 << 20,
            "{} bytes allocated",
            meta.blocks() * 512
        );
        qemu_img(&[
            "compare",
            "-f",
            "raw",
            "-F",
            "qcow2",
            sparse.to_str().unwrap(),
            o,
        ]);
    }
}

#[cfg(test)]
mod hostile {
    use super::*;

    /// A qcow2 v3 image, 64 KiB clusters: the L1 table from cluster 1,
    /// then one L2 table that every L1 entry names when `l2` has entries.
    fn image(size: u64, l2: &[(usize, u64)], extra: &[(u64, Vec<u8>)]) -> Vec<u8> {
        let cs = CLUSTER as usize;
        let l1_size = size.div_ceil(CLUSTER).div_ceil(L2_ENTRIES);
        let l1_clusters = usize::try_from((l1_size * 8).div_ceil(CLUSTER)).unwrap();
        let l2_at = (1 + l1_clusters) * cs;
        let mut f = vec![0u8; l2_at + cs];
        f[..4].copy_from_slice(b"QFI\xfb");
        f[4..8].copy_from_slice(&3u32.to_be_bytes());
        f[20..24].copy_from_slice(&16u32.to_be_bytes());
        f[24..32].copy_from_slice(&size.to_be_bytes());
        f[36..40].copy_from_slice(&u32::try_from(l1_size).unwrap().to_be_bytes());
        f[40..48].copy_from_slice(&CLUSTER.to_be_bytes());
        f[100..104].copy_from_slice(&104u32.to_be_bytes());
        if !l2.is_empty() {
            for i in 0..usize::try_from(l1_size).unwrap() {
                f[cs + i * 8..cs + i * 8 + 8]
                    .copy_from_slice(&(l2_at as u64 | COPIED).to_be_bytes());
            }
        }
        for (i, e) in l2 {
            f[l2_at + i * 8..l2_at + i * 8 + 8].copy_from_slice(&e.to_be_bytes());
        }
        for (at, bytes) in extra {
            let at = usize::try_from(*at).unwrap();
            if f.len() < at + bytes.len() {
                f.resize(at + bytes.len(), 0);
            }
            f[at..at + bytes.len()].copy_from_slice(bytes);
        }
        f
    }

    #[test]
    fn a_huge_empty_disk_is_written_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("h.qcow2");
        std::fs::write(&p, image(MAX_VIRTUAL_SIZE, &[], &[])).unwrap();
        let started = std::time::Instant::now();
        let out = dir.path().join("o.qcow2");
        write_qcow2(&mut Qcow2::open(&p).unwrap(), MAX_VIRTUAL_SIZE, &out).unwrap();
        // (ext4 files end below 16 TiB.)
        write_raw(
            &mut Qcow2::open(&p).unwrap(),
            8 << 40,
            &dir.path().join("o.raw"),
        )
        .unwrap();
        // Not a timing assertion of speed, a bound on pathological work: a
        // per-cluster walk of 16 TiB would take hours.
        assert!(started.elapsed() < std::time::Duration::from_secs(120));
        assert!(std::fs::metadata(&out).unwrap().len() < 8 << 20);
    }

    #[test]
    fn tables_that_name_one_cluster_again_and_again_are_stopped() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("h.qcow2");
        // 1 TiB whose every L2 entry names cluster 3; and, apart, every L1
        // entry naming one L2 table.
        let entries: Vec<(usize, u64)> = (0..8192).map(|i| (i, (3 * CLUSTER) | COPIED)).collect();
        std::fs::write(
            &p,
            image(1 << 40, &entries, &[(3 * CLUSTER, vec![0xab; 65536])]),
        )
        .unwrap();
        let out = dir.path().join("o");
        let err = write_qcow2(&mut Qcow2::open(&p).unwrap(), 1 << 40, &out)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("names the cluster at byte 196608 twice"),
            "{err}"
        );
        assert!(std::fs::metadata(&out).unwrap().len() < 1 << 20);
        let one: Vec<(usize, u64)> = vec![(0, (3 * CLUSTER) | COPIED)];
        std::fs::write(
            &p,
            image(1 << 40, &one, &[(3 * CLUSTER, vec![0xab; 65536])]),
        )
        .unwrap();
        let err = write_qcow2(&mut Qcow2::open(&p).unwrap(), 1 << 40, &out)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("names the cluster at byte 131072 twice"),
            "{err}"
        );
    }

    #[test]
    fn misaligned_tables_and_v2_zero_flags_are_damage() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("h.qcow2");
        let mut f = image(CLUSTER, &[(0, (3 * CLUSTER + 512) | COPIED)], &[]);
        let l2_at = 2 * CLUSTER as usize;
        std::fs::write(&p, &f).unwrap();
        let mut buf = vec![0u8; 4096];
        let err = Qcow2::open(&p)
            .unwrap()
            .read_at(0, &mut buf)
            .unwrap_err()
            .to_string();
        assert!(err.contains("not aligned"), "{err}");
        f[4..8].copy_from_slice(&2u32.to_be_bytes());
        f[l2_at..l2_at + 8].copy_from_slice(&ZERO.to_be_bytes());
        std::fs::write(&p, &f).unwrap();
        let err = Qcow2::open(&p)
            .unwrap()
            .read_at(0, &mut buf)
            .unwrap_err()
            .to_string();
        assert!(err.contains("only v3 knows"), "{err}");
    }
}
