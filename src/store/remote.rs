//! A registry repository as a [`Store`]: the Distribution API client below,
//! nothing registry-specific above.

use std::sync::Arc;

use serde_json::json;

use super::{BlobReader, Opener, Store, StoreError, bytes_opener, referrers};
use crate::oci::{Descriptor, Digest, canonical_json, media};
use crate::registry::{Client, Repository};

#[derive(Debug, Clone)]
pub struct Remote {
    client: Arc<Client>,
    repo: Repository,
}

impl super::StreamTarget for Remote {
    fn reference(&self) -> String {
        self.repo.to_string()
    }

    fn start(&self) -> Result<crate::registry::StreamedUpload, StoreError> {
        Ok(self.client.start_streamed_upload(&self.repo)?)
    }
}

impl Remote {
    pub fn new(client: Arc<Client>, repo: Repository) -> Self {
        Self { client, repo }
    }

    pub fn repository(&self) -> &Repository {
        &self.repo
    }

    /// Removes one tag and nothing else (see [`untag`]).
    pub fn untag(&self, tag: &str) -> Result<String, StoreError> {
        untag(&self.client, &self.repo, tag)
    }
}

/// Removes one tag and nothing else: the registry's tag DELETE where it has
/// one, otherwise a unique throwaway manifest is put on the tag and deleted
/// by digest (other tags of the old digest are untouched).
pub fn untag(client: &Client, repo: &Repository, tag: &str) -> Result<String, StoreError> {
    if client.delete_tag(repo, tag)? {
        return Ok("tag deleted".into());
    }
    untag_by_throwaway(client, repo, tag, false)
}

/// Whether the throwaway-manifest fallback can work here: a throwaway put by
/// digest (under no tag) must be deletable. Asked once per repository, so a
/// registry that refuses manifest deletes never gets tags pointed at junk.
pub fn can_delete_manifests(client: &Client, repo: &Repository) -> Result<bool, StoreError> {
    let empty_bytes = b"{}";
    let empty = Descriptor::new(media::EMPTY, Digest::of(empty_bytes), 2);
    if !client.blob_exists(repo, &empty.digest)? {
        client.upload_blob(repo, &empty.digest, 2, &bytes_opener(empty_bytes))?;
    }
    let probe = json!({
        "schemaVersion": 2,
        "mediaType": media::MANIFEST,
        "config": empty,
        "layers": [empty],
        "annotations": { "io.imagepipe.untag": format!("probe {}", std::process::id()) },
    });
    let bytes = canonical_json(&probe);
    let d = client.put_manifest(
        repo,
        &Digest::of(&bytes).to_string(),
        media::MANIFEST,
        &bytes,
    )?;
    Ok(client.delete_manifest(repo, &d).is_ok())
}

/// A throwaway manifest (the empty config and layer, a unique annotation):
/// its bytes and digest.
pub fn throwaway_manifest(note: &str) -> (Vec<u8>, Digest) {
    let empty = Descriptor::new(media::EMPTY, Digest::of(b"{}"), 2);
    let m = json!({
        "schemaVersion": 2,
        "mediaType": media::MANIFEST,
        "config": empty,
        "layers": [empty],
        "annotations": { "io.imagepipe.untag": note },
    });
    let bytes = canonical_json(&m);
    let digest = Digest::of(&bytes);
    (bytes, digest)
}

/// The fallback for registries without a tag `DELETE` (CNCF Distribution
/// answers 400): point the tag at a unique throwaway manifest and delete
/// that by digest. `have_empty`: the empty blob is known to be there.
pub fn untag_by_throwaway(
    client: &Client,
    repo: &Repository,
    tag: &str,
    have_empty: bool,
) -> Result<String, StoreError> {
    {
        let empty_bytes = b"{}";
        let empty = Descriptor::new(media::EMPTY, Digest::of(empty_bytes), 2);
        if !have_empty && !client.blob_exists(repo, &empty.digest)? {
            client.upload_blob(repo, &empty.digest, 2, &bytes_opener(empty_bytes))?;
        }
        let nonce = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let throwaway = json!({
            "schemaVersion": 2,
            "mediaType": media::MANIFEST,
            "config": empty,
            "layers": [empty],
            "annotations": { "io.imagepipe.untag": format!("{tag} {nonce}") },
        });
        let bytes = canonical_json(&throwaway);
        let d = client.put_manifest(repo, tag, media::MANIFEST, &bytes)?;
        client.delete_manifest(repo, &d)?;
        Ok(format!("tag moved to throwaway manifest {d}, deleted"))
    }
}

impl Store for Remote {
    fn reference(&self) -> String {
        self.repo.to_string()
    }

    fn registry_repository(&self) -> Option<&Repository> {
        Some(&self.repo)
    }

    fn resolve(&self, tag: &str) -> Result<Option<Descriptor>, StoreError> {
        Ok(self
            .client
            .head_manifest(&self.repo, tag)?
            .map(|(digest, media_type, size)| Descriptor::new(&media_type, digest, size)))
    }

    fn get_manifest(&self, reference: &str) -> Result<Option<(Descriptor, Vec<u8>)>, StoreError> {
        Ok(self.client.get_manifest(&self.repo, reference)?.map(|m| {
            let size = m.bytes.len() as u64;
            (Descriptor::new(&m.media_type, m.digest, size), m.bytes)
        }))
    }

    fn put_manifest(
        &self,
        reference: &str,
        desc: &Descriptor,
        bytes: &[u8],
    ) -> Result<(), StoreError> {
        let digest = self
            .client
            .put_manifest(&self.repo, reference, &desc.media_type, bytes)?;
        if digest != desc.digest {
            return Err(StoreError::invalid(
                self,
                format!("manifest bytes are {digest}, not {}", desc.digest),
            ));
        }
        Ok(())
    }

    fn has_blob(&self, digest: &Digest) -> Result<bool, StoreError> {
        Ok(self.client.blob_exists(&self.repo, digest)?)
    }

    fn open_blob(&self, desc: &Descriptor, offset: u64) -> Result<BlobReader<'_>, StoreError> {
        Ok(self.client.get_blob(&self.repo, &desc.digest, offset)?)
    }

    fn put_blob(&self, desc: &Descriptor, open: &Opener<'_>) -> Result<(), StoreError> {
        Ok(self
            .client
            .upload_blob(&self.repo, &desc.digest, desc.size, open)?)
    }

    fn stream_target(&self) -> Option<Arc<dyn super::StreamTarget>> {
        Some(Arc::new(self.clone()))
    }

    fn mount_blob(&self, desc: &Descriptor, from: &dyn Store) -> Result<bool, StoreError> {
        match from.registry_repository() {
            Some(r)
                if r.host == self.repo.host
                    && r.insecure == self.repo.insecure
                    && r.path != self.repo.path =>
            {
                Ok(self.client.mount_blob(&self.repo, &desc.digest, &r.path)?)
            }
            _ => Ok(false),
        }
    }

    fn list_tags(&self) -> Result<Vec<String>, StoreError> {
        Ok(self.client.list_tags(&self.repo)?)
    }

    fn delete_tag(&self, tag: &str) -> Result<(), StoreError> {
        self.untag(tag).map(|_| ())
    }

    fn referrers(&self, subject: &Digest) -> Result<Vec<Descriptor>, StoreError> {
        match self.client.referrers(&self.repo, subject)? {
            Some(list) => Ok(list),
            None => referrers::from_tag(self, subject),
        }
    }

    fn put_referrer(
        &self,
        subject: &Digest,
        desc: &Descriptor,
        bytes: &[u8],
    ) -> Result<(), StoreError> {
        let indexed =
            self.client
                .put_referrer_manifest(&self.repo, &desc.digest, &desc.media_type, bytes)?;
        if indexed {
            Ok(())
        } else {
            referrers::add_to_tag(self, subject, desc)
        }
    }
}
