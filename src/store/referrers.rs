//! Referrers (OCI 1.1): manifests whose `subject` is another manifest, such
//! as provenance attestations. Where a registry offers no referrers API they
//! are listed by the referrers tag schema: an index under the tag
//! `sha256-<hex of the subject>`. (Layouts list them untagged in
//! `index.json` instead; see [`super::layout::Layout::add_referrer`].)

use serde_json::json;

use super::{Store, StoreError};
use crate::oci::{Descriptor, Digest, Reference, canonical_json, media};

/// The tag that lists the referrers of `subject` where no API does.
pub fn tag_for(subject: &Digest) -> String {
    format!("sha256-{}", subject.hex())
}

/// The subject a referrers tag lists referrers for, if `tag` is one.
pub fn subject_of(tag: &str) -> Option<Digest> {
    Digest::from_hex(tag.strip_prefix("sha256-")?).ok()
}

/// The referrers listed under the referrers tag of `subject`.
pub fn from_tag<S: Store + ?Sized>(
    store: &S,
    subject: &Digest,
) -> Result<Vec<Descriptor>, StoreError> {
    let Some((_, bytes)) = store.get_manifest(&Reference::tag(&tag_for(subject)))? else {
        return Ok(Vec::new());
    };
    parse_index(store, &bytes)
}

/// The descriptors of an index's `manifests`.
pub fn parse_index<S: Store + ?Sized>(
    store: &S,
    bytes: &[u8],
) -> Result<Vec<Descriptor>, StoreError> {
    #[derive(serde::Deserialize)]
    struct Index {
        #[serde(default)]
        manifests: Vec<Descriptor>,
    }
    serde_json::from_slice::<Index>(bytes)
        .map(|i| i.manifests)
        .map_err(|e| StoreError::invalid(store, format!("an index that is not valid: {e}")))
}

/// Adds `desc` to the referrers tag of `subject` (nothing when listed already).
pub fn add_to_tag<S: Store + ?Sized>(
    store: &S,
    subject: &Digest,
    desc: &Descriptor,
) -> Result<(), StoreError> {
    let mut list = from_tag(store, subject)?;
    if list.iter().any(|d| d.digest == desc.digest) {
        return Ok(());
    }
    list.push(desc.clone());
    list.sort_by(|a, b| a.digest.cmp(&b.digest));
    let index = json!({ "schemaVersion": 2, "mediaType": media::INDEX, "manifests": list });
    let bytes = canonical_json(&index);
    let index_desc = Descriptor::new(media::INDEX, Digest::of(&bytes), bytes.len() as u64);
    store.put_manifest(&Reference::tag(&tag_for(subject)), &index_desc, &bytes)
}
