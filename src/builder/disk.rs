//! Checking that a file is a disk image before packaging it.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::Path;
use std::process::Command;

use super::error::BuildErrorKind;
use super::qcow2;
use crate::catalog::{DiskChange, DiskFormat, Resize};

/// Disk formats KubeVirt boots from a containerDisk.
pub const SUPPORTED: &[&str] = &["qcow2", "raw"];

/// A disk image that may be packaged and booted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Disk {
    /// `qcow2` or `raw`.
    pub format: String,
    /// The size the guest sees, in bytes.
    pub virtual_size: u64,
}

/// The disk's format as `qemu-img info` reads it (`qcow2` or `raw`), or why
/// it is refused. A disk that refers to another file (a qcow2 backing file
/// or external data file, a `json:` name) is refused from its own header,
/// before any QEMU tool opens it.
pub fn check(path: &Path) -> Result<Disk, BuildErrorKind> {
    if let Some(outside) = refers_outside(path).map_err(|e| BuildErrorKind::io(path, e))? {
        return Err(BuildErrorKind::Unusable(outside.message(path)));
    }
    // An absolute path: qemu-img never reads it as a protocol or `json:`.
    let absolute = std::path::absolute(path).map_err(|e| BuildErrorKind::io(path, e))?;
    let out = Command::new("qemu-img")
        .args(["info", "--output=json", "--"])
        .arg(&absolute)
        .output()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => BuildErrorKind::Unusable(
                "qemu-img is not installed: install qemu-utils (it checks disks before packaging)"
                    .to_owned(),
            ),
            _ => BuildErrorKind::io("qemu-img", e),
        })?;
    if !out.status.success() {
        return Err(BuildErrorKind::Unusable(format!(
            "{} is not a disk image: qemu-img: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let info: serde_json::Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| BuildErrorKind::Unusable(format!("unreadable qemu-img output: {e}")))?;
    let format = info["format"].as_str().unwrap_or("unknown").to_owned();
    let size = std::fs::metadata(path)
        .map_err(|e| BuildErrorKind::io(path, e))?
        .len();
    let virtual_size = info["virtual-size"].as_u64().unwrap_or(size);
    if info.get("backing-filename").is_some() || info.get("full-backing-filename").is_some() {
        // The header check above knows every reference qemu-img reports.
        return Err(BuildErrorKind::Unusable(format!(
            "{} refers outside itself: qemu-img reports a backing file; a disk image must hold all its data",
            path.display()
        )));
    }
    let disk = |format: String| Disk {
        format,
        virtual_size,
    };
    match format.as_str() {
        "qcow2" => Ok(disk(format)),
        // qemu-img calls anything it does not recognise raw: a raw disk is at
        // least one sector and a whole number of sectors.
        "raw" if size > 0 && size % 512 == 0 => Ok(disk(format)),
        "raw" => Err(BuildErrorKind::Unusable(format!(
            "{} is not a disk image: {size} bytes is not a whole number of 512-byte sectors (is it a text file or a truncated download?)",
            path.display()
        ))),
        other => Err(BuildErrorKind::Unusable(format!(
            "{} is a {other} disk; a containerDisk holds {}: convert it with `qemu-img convert -O qcow2`",
            path.display(),
            SUPPORTED.join(" or ")
        ))),
    }
}

/// A qcow2 image starts with these bytes.
const QCOW2_MAGIC: &[u8; 4] = b"QFI\xfb";
/// Incompatible feature bit: the guest data lives in an external file.
const INCOMPAT_DATA_FILE: u64 = 1 << 2;
/// Header extension: the name of the external data file.
const EXT_DATA_FILE: u32 = 0x4441_5441;
/// The longest backing file name qemu writes.
const NAME_MAX: u64 = 1023;

/// Why a disk image refers outside itself: QEMU, opening it, would open the
/// host file it names (and show it to the guest).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outside {
    /// qcow2 `backing_file` (a path, or a `json:` block-device description).
    BackingFile(String),
    /// qcow2 `data_file`: the guest's data in another file.
    DataFile(String),
    /// A file name starting with `json:`, which QEMU reads as a description
    /// of block devices rather than as a name.
    JsonName,
}

impl Outside {
    /// The refusal: what the disk names, the key, and the fix.
    pub fn message(&self, path: &Path) -> String {
        let p = path.display();
        let flatten = format!(
            "a disk image must hold all its data: flatten it on a machine you trust with `qemu-img convert -O qcow2 {p} flat.qcow2`"
        );
        match self {
            Self::BackingFile(name) if name.starts_with("json:") => format!(
                "{p} refers outside itself: its qcow2 header names a backing file (key `backing_file`) as a `json:` block-device description `{name}`; {flatten}"
            ),
            Self::BackingFile(name) => format!(
                "{p} refers outside itself: its qcow2 header names the backing file `{name}` (key `backing_file`); {flatten}"
            ),
            Self::DataFile(name) => format!(
                "{p} refers outside itself: its qcow2 header keeps the data in the external file `{name}` (key `data_file`); {flatten}"
            ),
            Self::JsonName => format!(
                "{p}: a disk file name starting with `json:` is read by QEMU as a block-device description, not as a name: rename the file"
            ),
        }
    }
}

/// A name from a header, printable and bounded for messages.
fn shown(bytes: &[u8]) -> String {
    let s: String = String::from_utf8_lossy(bytes).escape_debug().collect();
    if s.chars().count() > 200 {
        format!("{}…", s.chars().take(200).collect::<String>())
    } else {
        s
    }
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn be64(b: &[u8], at: usize) -> u64 {
    (u64::from(be32(b, at)) << 32) | u64::from(be32(b, at + 4))
}

/// Reads `len` bytes at `at`, fewer at the end of the file.
fn read_at(f: &mut File, at: u64, len: u64) -> io::Result<Vec<u8>> {
    f.seek(SeekFrom::Start(at))?;
    let mut buf = Vec::new();
    f.take(len).read_to_end(&mut buf)?;
    Ok(buf)
}

/// Whether the disk image at `path` refers to another file, read from its
/// own header (before any QEMU tool opens it, since they follow the
/// references they find).
pub fn refers_outside(path: &Path) -> io::Result<Option<Outside>> {
    if path
        .file_name()
        .is_some_and(|n| n.to_string_lossy().starts_with("json:"))
    {
        return Ok(Some(Outside::JsonName));
    }
    let mut f = File::open(path)?;
    let header = read_at(&mut f, 0, 104)?;
    if header.len() < 72 || &header[..4] != QCOW2_MAGIC {
        return Ok(None);
    }
    let version = be32(&header, 4);
    let (backing_at, backing_len) = (be64(&header, 8), u64::from(be32(&header, 16)));
    if backing_at != 0 || backing_len != 0 {
        let name = read_at(&mut f, backing_at, backing_len.min(NAME_MAX))?;
        return Ok(Some(Outside::BackingFile(shown(&name))));
    }
    if version < 3 || header.len() < 104 {
        return Ok(None);
    }
    let incompatible = be64(&header, 72);
    let header_len = u64::from(be32(&header, 100));
    // Header extensions follow the header, within the first cluster.
    let cluster = 1u64 << be32(&header, 20).clamp(9, 21);
    let mut data_file = None;
    let mut at = header_len.max(104);
    while at + 8 <= cluster {
        let ext = read_at(&mut f, at, 8)?;
        if ext.len() < 8 {
            break;
        }
        let (kind, len) = (be32(&ext, 0), u64::from(be32(&ext, 4)));
        if kind == 0 {
            break;
        }
        if kind == EXT_DATA_FILE {
            data_file = Some(shown(&read_at(&mut f, at + 8, len.min(NAME_MAX))?));
        }
        at += 8 + len.next_multiple_of(8);
    }
    if incompatible & INCOMPAT_DATA_FILE != 0 || data_file.is_some() {
        return Ok(Some(Outside::DataFile(
            data_file.unwrap_or_else(|| "(unnamed)".to_owned()),
        )));
    }
    Ok(None)
}

/// The version of what `disk:` writes (`qcow2::write_qcow2`, `write_raw`):
/// part of the recipe of every image with `disk:`, changed whenever the
/// bytes written for the same guest change.
pub const WRITER: &str = "imagepipe-disk/1";

/// The virtual size `change` asks for, from the source's; growing only.
pub fn new_size(source: &Disk, resize: Option<Resize>) -> Result<u64, String> {
    let size = match resize {
        None => source.virtual_size,
        Some(Resize::Grow(n)) => source.virtual_size.saturating_add(n),
        Some(Resize::To(n)) if n < source.virtual_size => {
            return Err(format!(
                "`resize: {n}` would shrink the disk from its {} bytes: a disk only grows (shrinking cuts the guest's file systems); write `+<size>` to add space",
                source.virtual_size
            ));
        }
        Some(Resize::To(n)) => n,
    };
    if size > qcow2::MAX_VIRTUAL_SIZE {
        return Err(format!(
            "the grown disk would be {size} bytes, over the 16 TiB imagepipe writes"
        ));
    }
    Ok(size)
}

/// The file name of a disk written as `format`: `noble.img` → `noble.qcow2`.
pub fn renamed(name: &str, format: DiskFormat) -> String {
    let stem = [".qcow2", ".img", ".raw"]
        .iter()
        .find_map(|ext| name.strip_suffix(ext))
        .unwrap_or(name);
    let ext = match format {
        DiskFormat::Qcow2 => "qcow2",
        DiskFormat::Raw => "raw",
    };
    format!("{stem}.{ext}")
}

/// Writes the checked disk at `path` as `change` says to `out`, and says in
/// which format and at which virtual size: the bytes depend only on the
/// guest's bytes, the format and the size.
pub fn apply(
    path: &Path,
    source: &Disk,
    change: &DiskChange,
    out: &Path,
) -> Result<(DiskFormat, u64), BuildErrorKind> {
    let size = new_size(source, change.resize).map_err(BuildErrorKind::Unusable)?;
    let format = change.format.unwrap_or(if source.format == "qcow2" {
        DiskFormat::Qcow2
    } else {
        DiskFormat::Raw
    });
    let unreadable = |e: io::Error| match e.kind() {
        io::ErrorKind::InvalidData => BuildErrorKind::Unusable(format!("{}: {e}", path.display())),
        _ => BuildErrorKind::io(path, e),
    };
    let mut guest = qcow2::open(path, &source.format).map_err(unreadable)?;
    match format {
        DiskFormat::Qcow2 => qcow2::write_qcow2(guest.as_mut(), size, out),
        DiskFormat::Raw => qcow2::write_raw(guest.as_mut(), size, out),
    }
    .map_err(|e| match e.kind() {
        io::ErrorKind::InvalidData => unreadable(e),
        _ => BuildErrorKind::io(out, e),
    })?;
    Ok((format, size))
}
