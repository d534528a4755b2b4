//! The disk inside an image, written to a scratch file for QEMU: the
//! `disk/<file>` of a containerDisk's layer, or an artifact's disk blob,
//! decompressed while it streams from the store.

use std::io::{self, Read};
use std::path::{Path, PathBuf};

use crate::oci::{Descriptor, Manifest, media};
use crate::store::Store;

/// The one platform `verify` boots.
const ARCH: &str = "amd64";

fn read(store: &dyn Store, desc: &Descriptor) -> Result<Manifest, String> {
    let Some((_, bytes)) = store
        .get_manifest(&(&desc.digest).into())
        .map_err(|e| e.to_string())?
    else {
        return Err(format!("manifest {} is missing", desc.digest));
    };
    Manifest::parse(&bytes).map_err(|e| format!("manifest {}: {e}", desc.digest))
}

/// The linux/amd64 image manifest of `top` (itself, or an index entry).
pub fn amd64_manifest(store: &dyn Store, top: &Descriptor) -> Result<Manifest, String> {
    let m = read(store, top)?;
    if top.media_type != media::INDEX && !m.is_index() {
        return Ok(m);
    }
    let entry = m
        .manifests
        .iter()
        .find(|d| {
            d.platform
                .as_ref()
                .is_some_and(|p| p.os == "linux" && p.architecture == ARCH)
        })
        .ok_or("no linux/amd64 manifest: verify boots x86_64 guests only")?;
    read(store, entry)
}

fn decompress<'a>(media_type: &str, r: Box<dyn Read + 'a>) -> io::Result<Box<dyn Read + 'a>> {
    Ok(if media_type.ends_with("+gzip") {
        Box::new(flate2::read::MultiGzDecoder::new(io::BufReader::new(r)))
    } else if media_type.ends_with("+zstd") {
        Box::new(zstd::Decoder::new(r)?)
    } else {
        r
    })
}

/// Writes the disk of `manifest` into `dir`; returns its path.
pub fn extract(store: &dyn Store, manifest: &Manifest, dir: &Path) -> Result<PathBuf, String> {
    let layer = manifest.layers.first().ok_or("the manifest has no layer")?;
    // Hashed while it is read, and read to its end below: a store serving
    // other bytes under the layer's digest fails, and nothing boots.
    let blob = crate::oci::hash::CheckedReader::blob(
        store.open_blob(layer, 0).map_err(|e| e.to_string())?,
        &layer.digest,
        layer.size,
    );
    let reader = decompress(&layer.media_type, Box::new(blob)).map_err(|e| e.to_string())?;
    let out = dir.join("disk");
    let io_err = |e: io::Error| {
        format!(
            "extracting the disk of layer {} into {}: {e}",
            layer.digest,
            out.display()
        )
    };
    if layer
        .media_type
        .starts_with("application/vnd.imagepipe.disk.")
    {
        let mut reader = reader;
        let mut f = std::fs::File::create(&out).map_err(io_err)?;
        io::copy(&mut reader, &mut f).map_err(io_err)?;
        drain(reader).map_err(io_err)?;
        return Ok(out);
    }
    let mut archive = tar::Archive::new(reader);
    for entry in archive.entries().map_err(io_err)? {
        let mut entry = entry.map_err(io_err)?;
        let path = entry.path().map_err(io_err)?.into_owned();
        // `disk/x` or `./disk/x`.
        let first = path
            .components()
            .find(|c| matches!(c, std::path::Component::Normal(_)));
        if entry.header().entry_type().is_file()
            && first == Some(std::path::Component::Normal("disk".as_ref()))
        {
            let mut f = std::fs::File::create(&out).map_err(io_err)?;
            io::copy(&mut entry, &mut f).map_err(io_err)?;
            drop(entry);
            drain(archive.into_inner()).map_err(io_err)?;
            return Ok(out);
        }
    }
    Err("the layer holds no file under disk/ (not a containerDisk)".into())
}

/// Reads the rest of a layer, so that its digest is checked.
fn drain(mut r: impl Read) -> io::Result<()> {
    io::copy(&mut r, &mut io::sink()).map(|_| ())
}
