//! The disk inside an image, written to a scratch file for QEMU: the
//! `disk/<file>` of a containerDisk's layer, or an artifact's disk blob,
//! decompressed while it streams from the store.

use std::io::{self, Read};
use std::path::{Path, PathBuf};

use crate::oci::{Descriptor, media};
use crate::store::Store;

/// The one platform `verify` boots.
const ARCH: &str = "amd64";

fn read_json(store: &dyn Store, desc: &Descriptor) -> Result<serde_json::Value, String> {
    let Some((_, bytes)) = store
        .get_manifest(&desc.digest.to_string())
        .map_err(|e| e.to_string())?
    else {
        return Err(format!("manifest {} is missing", desc.digest));
    };
    serde_json::from_slice(&bytes).map_err(|e| format!("manifest {}: {e}", desc.digest))
}

/// The linux/amd64 image manifest of `top` (itself, or an index entry).
pub fn amd64_manifest(store: &dyn Store, top: &Descriptor) -> Result<serde_json::Value, String> {
    let v = read_json(store, top)?;
    if top.media_type != media::INDEX && v["mediaType"] != media::INDEX {
        return Ok(v);
    }
    let entry = v["manifests"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|m| m["platform"]["os"] == "linux" && m["platform"]["architecture"] == ARCH)
        .ok_or("no linux/amd64 manifest: verify boots x86_64 guests only")?;
    let desc: Descriptor =
        serde_json::from_value(entry.clone()).map_err(|e| format!("index entry: {e}"))?;
    read_json(store, &desc)
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
pub fn extract(
    store: &dyn Store,
    manifest: &serde_json::Value,
    dir: &Path,
) -> Result<PathBuf, String> {
    let layer: Descriptor = manifest["layers"]
        .as_array()
        .and_then(|l| l.first())
        .and_then(|l| serde_json::from_value(l.clone()).ok())
        .ok_or("the manifest has no layer")?;
    // Hashed while it is read, and read to its end below: a store serving
    // other bytes under the layer's digest fails, and nothing boots.
    let blob = crate::oci::hash::CheckedReader::blob(
        store.open_blob(&layer, 0).map_err(|e| e.to_string())?,
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
