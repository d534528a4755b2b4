//! A registry repository as a [`Store`]: the Distribution API client below,
//! nothing registry-specific above.

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use serde_json::json;

use super::{BlobReader, Finished, Opener, Store, StoreError, Untagged, bytes_opener, referrers};
use crate::oci::{Descriptor, Digest, Reference, canonical_json, media};
use crate::registry::{Client, Repository};

#[derive(Debug, Clone)]
pub struct Remote {
    client: Arc<Client>,
    repo: Repository,
    /// What deleting tags here has learnt, shared by clones.
    deletes: Arc<Deletes>,
}

/// What is known of a repository while deleting tags: whether it accepts a
/// tag `DELETE` (OCI distribution 1.1), whether manifests can be deleted
/// (the throwaway-manifest fallback needs it), and this value's throwaway.
#[derive(Debug, Default)]
struct Deletes {
    /// 0 unknown, 1 tag DELETE works, 2 it does not (use the fallback).
    tag_delete: AtomicU8,
    /// 0 unknown, 1 manifests can be deleted (the fallback works), 2 not.
    manifest_delete: AtomicU8,
    /// Serialises the first probe.
    probing: Mutex<()>,
    /// The throwaway manifest (bytes, digest), once needed.
    throwaway: OnceLock<(Vec<u8>, Digest)>,
    /// Some tag points at the throwaway manifest: delete it at the end.
    batched: AtomicBool,
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
        Self {
            client,
            repo,
            deletes: Arc::default(),
        }
    }

    pub fn repository(&self) -> &Repository {
        &self.repo
    }

    /// Whether the throwaway-manifest fallback can work here, asked once:
    /// a throwaway put by digest (under no tag) must be deletable, so a
    /// registry that refuses manifest deletes never gets tags pointed at junk.
    fn can_delete_manifests(&self) -> Result<bool, StoreError> {
        let d = &self.deletes;
        if d.manifest_delete.load(Ordering::Relaxed) == 0 {
            let _probe = d.probing.lock().unwrap_or_else(PoisonError::into_inner);
            if d.manifest_delete.load(Ordering::Relaxed) == 0 {
                let (client, repo) = (&self.client, &self.repo);
                let empty = Descriptor::new(media::EMPTY, Digest::of(EMPTY), 2);
                if !client.blob_exists(repo, &empty.digest)? {
                    client.upload_blob(repo, &empty.digest, 2, &bytes_opener(EMPTY))?;
                }
                let (bytes, probe) = throwaway_manifest(&format!("probe {}", std::process::id()));
                client.put_manifest(repo, &probe.to_string(), media::MANIFEST, &bytes)?;
                let ok = client.delete_manifest(repo, &probe).is_ok();
                d.manifest_delete
                    .store(if ok { 1 } else { 2 }, Ordering::Relaxed);
            }
        }
        Ok(d.manifest_delete.load(Ordering::Relaxed) == 1)
    }
}

const EMPTY: &[u8] = b"{}";

/// A throwaway manifest (the empty config and layer, a unique annotation):
/// its bytes and digest.
fn throwaway_manifest(note: &str) -> (Vec<u8>, Digest) {
    let empty = Descriptor::new(media::EMPTY, Digest::of(EMPTY), 2);
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

impl Store for Remote {
    fn reference(&self) -> String {
        self.repo.to_string()
    }

    fn registry_repository(&self) -> Option<&Repository> {
        Some(&self.repo)
    }

    fn resolve(&self, reference: &Reference) -> Result<Option<Descriptor>, StoreError> {
        Ok(self
            .client
            .head_manifest(&self.repo, &reference.to_string())?
            .map(|(digest, media_type, size)| Descriptor::new(&media_type, digest, size)))
    }

    fn get_manifest(
        &self,
        reference: &Reference,
    ) -> Result<Option<(Descriptor, Vec<u8>)>, StoreError> {
        Ok(self
            .client
            .get_manifest(&self.repo, &reference.to_string())?
            .map(|m| {
                let size = m.bytes.len() as u64;
                (Descriptor::new(&m.media_type, m.digest, size), m.bytes)
            }))
    }

    fn put_manifest(
        &self,
        reference: &Reference,
        desc: &Descriptor,
        bytes: &[u8],
    ) -> Result<(), StoreError> {
        let digest = self.client.put_manifest(
            &self.repo,
            &reference.to_string(),
            &desc.media_type,
            bytes,
        )?;
        if digest != desc.digest {
            return Err(StoreError::invalid(
                self,
                format!("manifest bytes are {digest}, not {}", desc.digest),
            ));
        }
        Ok(())
    }

    fn check_push(&self) -> Result<(), StoreError> {
        Ok(self.client.check_push(&self.repo)?)
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

    /// The registry's tag `DELETE` where it has one; otherwise (CNCF
    /// Distribution answers 400) the tag is pointed at this run's throwaway
    /// manifest, which [`Store::finish_deletes`] deletes by digest: other
    /// tags of the old image are untouched, and a tag costs two requests.
    fn delete_tag(&self, tag: &str) -> Result<Untagged, StoreError> {
        let d = &self.deletes;
        if d.tag_delete.load(Ordering::Relaxed) != 2 {
            if self.client.delete_tag(&self.repo, tag)? {
                d.tag_delete.store(1, Ordering::Relaxed);
                return Ok(Untagged {
                    how: "tag deleted".into(),
                    batched: false,
                });
            }
            d.tag_delete.store(2, Ordering::Relaxed);
        }
        if !self.can_delete_manifests()? {
            return Err(StoreError::invalid(
                self,
                format!(
                    "{tag} not removed: the registry has no tag DELETE and refuses manifest deletes (CNCF Distribution: set `storage.delete.enabled: true`); no tag was touched"
                ),
            ));
        }
        let (bytes, digest) = d.throwaway.get_or_init(|| {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos());
            throwaway_manifest(&format!("cleanup {} {nanos}", std::process::id()))
        });
        self.client
            .put_manifest(&self.repo, tag, media::MANIFEST, bytes)?;
        d.batched.store(true, Ordering::Relaxed);
        Ok(Untagged {
            how: format!("tag moved to throwaway manifest {digest}, deleted with it"),
            batched: true,
        })
    }

    fn finish_deletes(&self) -> Result<Finished, StoreError> {
        let d = &self.deletes;
        match d.throwaway.get() {
            Some((_, digest)) if d.batched.swap(false, Ordering::Relaxed) => {
                self.client.delete_manifest(&self.repo, digest)?;
                Ok(Finished {
                    throwaway: Some(digest.clone()),
                    collected: None,
                })
            }
            _ => Ok(Finished::default()),
        }
    }

    fn indexed_referrers(&self, subject: &Digest) -> Result<Option<Vec<Descriptor>>, StoreError> {
        Ok(self.client.referrers(&self.repo, subject)?)
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
