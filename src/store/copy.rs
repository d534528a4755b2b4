//! Copying an image between any two stores: index, manifests, configs,
//! layers and referrers, streamed, with digests verified by the receiver.
//! A blob the destination already has is not sent; one another repository
//! of the same registry holds is mounted rather than uploaded.

use std::io;

use serde::Serialize;

use super::{Store, StoreError};
use crate::oci::{Descriptor, Reference, media};

/// Blob transfers in flight at once.
pub const PARALLEL_BLOBS: usize = 4;

/// What a copy did, blob by blob.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq, schemars::JsonSchema)]
pub struct Copied {
    pub uploaded: usize,
    pub mounted: usize,
    pub present: usize,
    pub bytes_uploaded: u64,
}

impl Copied {
    fn add(&mut self, other: &Self) {
        self.uploaded += other.uploaded;
        self.mounted += other.mounted;
        self.present += other.present;
        self.bytes_uploaded += other.bytes_uploaded;
    }
}

/// An immutable tag to point at a copied image.
#[derive(Clone, Copy, Debug)]
pub struct Claim<'a> {
    pub tag: &'a str,
    /// `--force`: replace whatever the tag names.
    pub replace: bool,
}

/// Copies the image `top` (and its referrers) from `src` to `dst`, then
/// claims the immutable tag for it ([`claim_tag`]). `mount_from` are other
/// repositories known to hold it.
pub fn copy_image(
    src: &dyn Store,
    dst: &dyn Store,
    top: &Descriptor,
    claim: Option<Claim<'_>>,
    mount_from: &[&dyn Store],
) -> Result<Copied, StoreError> {
    let tag = claim.map(|c| c.tag);
    let mut copied = Copied::default();
    let bytes = manifest_bytes(src, top)?;
    // The descriptor comes from the bytes, not from what a HEAD said.
    let top = &described(src, top, &bytes)?;
    copied.add(&copy_tree(src, dst, top, &bytes, mount_from)?);
    // The manifest before its attestation, the tag last: a referrers tag is
    // never seen without its image, nor a tag without its attestation.
    if tag.is_some() {
        dst.put_manifest(&(&top.digest).into(), top, &bytes)?;
    }
    for r in src.referrers(&top.digest)? {
        let rbytes = manifest_bytes(src, &r)?;
        copied.add(&copy_tree(src, dst, &r, &rbytes, mount_from)?);
        dst.put_referrer(&top.digest, &r, &rbytes)?;
    }
    match claim {
        Some(c) => claim_tag(dst, c, top, &bytes)?,
        None => dst.put_manifest(&(&top.digest).into(), top, &bytes)?,
    }
    Ok(copied)
}

/// What two digests under one immutable tag mean, and the fix.
pub const NOT_REPRODUCIBLE: &str = "two runs built one recipe into different bytes: the builder is not bit-reproducible; serialize publishing (a CI concurrency group, see docs/ci.md) or make the build reproducible";

/// Points the immutable tag at `top`. Another run may have taken the tag
/// while this one uploaded: it is checked again right before the write, and
/// read back right after (of two runs writing it at once, the last write
/// stays, and the other run must know). A tag that names other bytes is
/// left as it is: the error says both digests.
pub fn claim_tag(
    dst: &dyn Store,
    claim: Claim<'_>,
    top: &Descriptor,
    bytes: &[u8],
) -> Result<(), StoreError> {
    let tag = claim.tag;
    let reference = Reference::tag(tag);
    let not_reproducible = NOT_REPRODUCIBLE;
    match dst.resolve(&reference)? {
        Some(d) if d.digest == top.digest => return Ok(()),
        Some(d) if !claim.replace => {
            return Err(StoreError::tag_taken(
                dst,
                format!(
                    "the immutable tag {tag} was pushed by another run while this one uploaded: it names {}, this run built {}; it is left as it is ({not_reproducible})",
                    d.digest, top.digest
                ),
            ));
        }
        _ => {}
    }
    dst.put_manifest(&reference, top, bytes)?;
    match dst.resolve(&reference)? {
        Some(d) if d.digest == top.digest => Ok(()),
        found => Err(StoreError::tag_taken(
            dst,
            format!(
                "the immutable tag {tag} names {} right after this run wrote {} to it: another run wrote it at the same moment, and its write is the one that stays (left as it is; {not_reproducible})",
                found.map_or_else(|| "nothing".to_owned(), |d| d.digest.to_string()),
                top.digest
            ),
        )),
    }
}

fn manifest_bytes(src: &dyn Store, desc: &Descriptor) -> Result<Vec<u8>, StoreError> {
    match src.get_manifest(&(&desc.digest).into())? {
        Some((_, bytes)) => Ok(bytes),
        None => Err(StoreError::invalid(
            src,
            format!("manifest {} is missing", desc.digest),
        )),
    }
}

/// `desc` corrected by the manifest's own bytes: size, media type, and a
/// digest that must match.
fn described(store: &dyn Store, desc: &Descriptor, bytes: &[u8]) -> Result<Descriptor, StoreError> {
    let digest = crate::oci::Digest::of(bytes);
    if digest != desc.digest {
        return Err(StoreError::invalid(
            store,
            format!("manifest {} has the digest {digest}", desc.digest),
        ));
    }
    let media_type = crate::oci::Manifest::parse(bytes)
        .ok()
        .and_then(|m| m.media_type)
        .unwrap_or_else(|| desc.media_type.clone());
    Ok(Descriptor {
        media_type,
        size: bytes.len() as u64,
        ..desc.clone()
    })
}

/// The children of a manifest: `(manifests, blobs)`.
pub fn children(
    store: &dyn Store,
    desc: &Descriptor,
    bytes: &[u8],
) -> Result<(Vec<Descriptor>, Vec<Descriptor>), StoreError> {
    let m = crate::oci::Manifest::parse(bytes).map_err(|e| {
        StoreError::invalid(store, format!("manifest {} is not valid: {e}", desc.digest))
    })?;
    if desc.media_type == media::INDEX || !m.manifests.is_empty() {
        return Ok((m.manifests, Vec::new()));
    }
    let mut blobs: Vec<Descriptor> = m.config.into_iter().collect();
    blobs.extend(m.layers);
    Ok((Vec::new(), blobs))
}

/// Every blob and child manifest under `desc` (not `desc` itself).
fn copy_tree(
    src: &dyn Store,
    dst: &dyn Store,
    desc: &Descriptor,
    bytes: &[u8],
    mount_from: &[&dyn Store],
) -> Result<Copied, StoreError> {
    let (manifests, blobs) = children(src, desc, bytes)?;
    let mut copied = Copied::default();
    for m in &manifests {
        let mbytes = manifest_bytes(src, m)?;
        copied.add(&copy_tree(src, dst, m, &mbytes, mount_from)?);
        dst.put_manifest(&(&m.digest).into(), m, &mbytes)?;
    }
    let results = crate::pool::map(&blobs, PARALLEL_BLOBS, |b| {
        ensure_blob(src, dst, b, mount_from)
    });
    for r in results {
        copied.add(&r?);
    }
    Ok(copied)
}

fn ensure_blob(
    src: &dyn Store,
    dst: &dyn Store,
    blob: &Descriptor,
    mount_from: &[&dyn Store],
) -> Result<Copied, StoreError> {
    if dst.has_blob(&blob.digest)? {
        return Ok(Copied {
            present: 1,
            ..Copied::default()
        });
    }
    for from in mount_from.iter().copied().chain(std::iter::once(src)) {
        if dst.mount_blob(blob, from)? {
            tracing::debug!(
                "{}: mounted {} from {}",
                dst.reference(),
                blob.digest,
                from.reference()
            );
            return Ok(Copied {
                mounted: 1,
                ..Copied::default()
            });
        }
    }
    let started = std::time::Instant::now();
    let short = blob.digest.hex().get(..12).unwrap_or_default().to_owned();
    let pb = crate::progress::bar(&format!("{} {short}", dst.reference()), blob.size);
    dst.put_blob(blob, &|offset| {
        // A resumed upload starts the bar where the registry stands.
        pb.set_position(offset);
        let r = src.open_blob(blob, offset).map_err(io::Error::other)?;
        Ok(Box::new(pb.wrap_read(r)) as crate::store::BlobReader<'_>)
    })?;
    // With a bar on screen, the bar was the report; in a log, one line.
    let shown = !pb.is_hidden();
    pb.finish_and_clear();
    let secs = started.elapsed().as_secs_f64();
    let line = format!(
        "{}: blob {} ({}) in {secs:.1}s, {}/s",
        dst.reference(),
        blob.digest,
        indicatif::HumanBytes(blob.size),
        indicatif::HumanBytes((blob.size as f64 / secs.max(0.001)) as u64),
    );
    if shown {
        tracing::debug!("{line}");
    } else {
        tracing::info!("{line}");
    }
    Ok(Copied {
        uploaded: 1,
        bytes_uploaded: blob.size,
        ..Copied::default()
    })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::oci::Digest;

    fn desc(media: &str) -> Descriptor {
        Descriptor::new(media, Digest::of(b"x"), 1)
    }

    proptest! {
        /// Whatever bytes a registry sends as a manifest or index (random, or
        /// JSON of the wrong shape): a named error or a value, never a panic.
        #[test]
        fn any_manifest_bytes_are_read_or_refused(
            bytes in proptest::collection::vec(any::<u8>(), 0..400),
            json in r#"\{"(manifests|layers|config|mediaType)": ?(\[\]|\{\}|null|1|"x"|\[\{"digest":"[a-z0-9:]{0,80}","size":-?[0-9]{1,20}\}\])\}"#,
        ) {
            let store = crate::store::layout::Layout::at(std::path::Path::new("/nonexistent"));
            for media in [media::MANIFEST, media::INDEX] {
                let _ = children(&store, &desc(media), &bytes);
                let _ = children(&store, &desc(media), json.as_bytes());
                let _ = crate::store::referrers::parse_index(&store, json.as_bytes());
                let _ = crate::provenance::built_at(&[]);
            }
        }
    }
}
