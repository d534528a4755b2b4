//! Layers written in one streaming pass: source → tar → diff_id hasher →
//! compressor → blob hasher → blob file in the layout.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read};
use std::path::Path;

use indicatif::ProgressBar;

use super::compress::{Codec, Encoder, layer_media_type, suffix};
use crate::oci::hash::{CheckedReader, HashWriter, Mismatch};
use crate::oci::{Descriptor, Digest, annotation, media};
use crate::store::layout::{BlobWriter, Layout};

/// A layer in the layout: its descriptor and the digest of its uncompressed tar.
#[derive(Clone, Debug)]
pub struct Layer {
    pub descriptor: Descriptor,
    pub diff_id: Digest,
}

/// The tar stream of a layer. The 1 MiB buffer hands the hasher and the
/// compressor large writes instead of tar's 8 KiB copies.
pub type LayerTar = tar::Builder<BufWriter<HashWriter<Encoder<BlobWriter>>>>;

const IO_BUFFER: usize = 1 << 20;

/// Writes a tar layer whose entries `fill` appends.
pub fn tar_layer(
    layout: &Layout,
    codec: Codec,
    fill: impl FnOnce(&mut LayerTar) -> io::Result<()>,
) -> io::Result<Layer> {
    let encoder = codec.encoder(layout.blob_writer()?)?;
    let mut tar = tar::Builder::new(BufWriter::with_capacity(
        IO_BUFFER,
        HashWriter::new(encoder),
    ));
    tar.mode(tar::HeaderMode::Complete);
    tar.follow_symlinks(false);
    fill(&mut tar)?;
    let (diff_id, _, encoder) = tar
        .into_inner()?
        .into_inner()
        .map_err(io::IntoInnerError::into_error)?
        .finish();
    let (digest, size) = encoder.finish()?.commit(None)?;
    Ok(Layer {
        descriptor: Descriptor::new(layer_media_type(codec.compression), digest, size),
        diff_id,
    })
}

/// A disk file as it is packaged: exactly the `size` bytes the tar header
/// and the descriptor were given, and, where the recipe recorded them, the
/// bytes the recipe was computed from. A file that shrinks (or changes)
/// while it is read fails the build at its end, before anything is tagged.
/// Reads the file at `path` through, checking it against `digest`.
pub fn check_file(path: &Path, digest: &Digest) -> io::Result<()> {
    let file = File::open(path)?;
    let size = file.metadata()?.len();
    io::copy(
        &mut exactly(file, size, Some(digest), path),
        &mut io::sink(),
    )
    .map(|_| ())
}

fn exactly(
    file: File,
    size: u64,
    recorded: Option<&Digest>,
    path: &Path,
) -> CheckedReader<io::Take<File>> {
    let p = path.display().to_string();
    CheckedReader::new(file.take(size), size, recorded, move |m| match m {
        Mismatch::Digest { got, expected } => io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "{p} changed while it was packaged: its bytes hash to {got}, the recipe was computed from {expected} (is a process writing it? run again once it is stable)"
            ),
        ),
        Mismatch::Shorter { len, size } => io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!(
                "{p} changed while it was packaged: it ended after {len} of its {size} bytes (is a process still writing it? let it finish, or copy the file first)"
            ),
        ),
        // Not read: `take(size)` stops at the size.
        Mismatch::Longer { size } => io::Error::other(format!(
            "{p} changed while it was packaged: it grew past its {size} bytes"
        )),
    })
}

/// Ownership and mode of a KubeVirt containerDisk: the `qemu` user (107).
pub const CONTAINERDISK_UID: u64 = 107;
pub const CONTAINERDISK_DIR_MODE: u32 = 0o555;
pub const CONTAINERDISK_FILE_MODE: u32 = 0o440;

/// The containerDisk layer: `disk/` and `disk/<name>`, 107:107, fixed modes
/// and time. `recorded`: the sha256 the recipe has for the disk, if any.
pub fn containerdisk_layer(
    layout: &Layout,
    codec: Codec,
    disk: &Path,
    recorded: Option<&Digest>,
    name: &str,
    mtime: u64,
    progress: &ProgressBar,
) -> io::Result<Layer> {
    let file = File::open(disk)?;
    let size = file.metadata()?.len();
    progress.set_length(size);
    tar_layer(layout, codec, |tar| {
        let mut dir = header(
            tar::EntryType::Directory,
            CONTAINERDISK_DIR_MODE,
            CONTAINERDISK_UID,
            mtime,
            0,
        );
        tar.append_data(&mut dir, "disk/", io::empty())?;
        let mut h = header(
            tar::EntryType::Regular,
            CONTAINERDISK_FILE_MODE,
            CONTAINERDISK_UID,
            mtime,
            size,
        );
        let reader = BufReader::with_capacity(
            IO_BUFFER,
            progress.wrap_read(exactly(file, size, recorded, disk)),
        );
        tar.append_data(&mut h, format!("disk/{name}"), reader)
    })
}

/// A GNU tar header with the given type, mode, owner (uid = gid), time and size; no user names.
pub fn header(kind: tar::EntryType, mode: u32, owner: u64, mtime: u64, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_uid(owner);
    h.set_gid(owner);
    h.set_mtime(mtime);
    h.set_size(size);
    h
}

/// The disk itself as one (optionally compressed) blob, for OCI artifacts.
pub fn artifact_blob(
    layout: &Layout,
    codec: Codec,
    disk: &Path,
    recorded: Option<&Digest>,
    name: &str,
    disk_format: &str,
    progress: &ProgressBar,
) -> io::Result<Descriptor> {
    let file = File::open(disk)?;
    let size = file.metadata()?.len();
    progress.set_length(size);
    let mut encoder = codec.encoder(layout.blob_writer()?)?;
    io::copy(
        &mut BufReader::with_capacity(
            IO_BUFFER,
            progress.wrap_read(exactly(file, size, recorded, disk)),
        ),
        &mut encoder,
    )?;
    let (digest, size) = encoder.finish()?.commit(None)?;
    let mut d = Descriptor::new(
        &format!(
            "application/vnd.imagepipe.disk.{disk_format}{}",
            suffix(codec.compression)
        ),
        digest,
        size,
    );
    d.annotations.insert(annotation::TITLE.into(), name.into());
    Ok(d)
}

/// The empty config of artifacts: `{}`.
pub fn empty_config(layout: &Layout) -> io::Result<Descriptor> {
    let (digest, size) = layout.put_bytes(b"{}")?;
    Ok(Descriptor::new(media::EMPTY, digest, size))
}

/// Writes `data` (already in memory) as a blob.
pub fn json_blob(layout: &Layout, media_type: &str, bytes: &[u8]) -> io::Result<Descriptor> {
    let (digest, size) = layout.put_bytes(bytes)?;
    Ok(Descriptor::new(media_type, digest, size))
}
