//! Image stores: one interface, two backends. The OCI image layout (the
//! embedded default, [`layout`]) and a registry repository ([`remote`])
//! answer the same questions, so copying an image between any two of them
//! is one function ([`copy`]).

pub mod copy;
pub mod layout;
pub mod referrers;
pub mod remote;

use std::io::{self, Read};
use std::path::Path;
use std::sync::Arc;

use crate::catalog::{Target, TargetKind};
use crate::oci::{Descriptor, Digest, Reference};
use crate::registry::{Client, RegistryError, Repository};

pub use crate::registry::Opener;

/// A blob's bytes as they are read; the receiving side verifies the digest.
pub type BlobReader<'a> = Box<dyn Read + Send + 'a>;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error("{store}: {what}: {source}")]
    Io {
        store: String,
        what: String,
        #[source]
        source: io::Error,
    },
    /// Content that is not what it claims to be (bad JSON, wrong digest, …).
    #[error("{store}: {message}")]
    Invalid { store: String, message: String },
    /// An immutable tag that names other bytes than the ones being written.
    #[error("{store}: {message}")]
    TagTaken { store: String, message: String },
}

impl StoreError {
    pub fn io<S: Store + ?Sized>(store: &S, what: impl Into<String>, source: io::Error) -> Self {
        Self::Io {
            store: store.reference(),
            what: what.into(),
            source,
        }
    }

    pub fn tag_taken<S: Store + ?Sized>(store: &S, message: impl Into<String>) -> Self {
        Self::TagTaken {
            store: store.reference(),
            message: message.into(),
        }
    }

    pub fn invalid<S: Store + ?Sized>(store: &S, message: impl Into<String>) -> Self {
        Self::Invalid {
            store: store.reference(),
            message: message.into(),
        }
    }
}

/// One image repository: a layout directory or `host/namespace/name`.
///
/// A [`Reference`] names a manifest by tag or digest; every manifest
/// read is checked against its digest, and every blob written is verified
/// by the receiving side before it becomes visible.
pub trait Store: Send + Sync + std::fmt::Debug {
    /// How users name it: `oci:<dir>` or `host/namespace/name`.
    fn reference(&self) -> String;

    /// Whether it would take a push now (reachable, credentials allowed to
    /// write), checked without writing anything.
    fn check_push(&self) -> Result<(), StoreError> {
        Ok(())
    }

    /// Whether it is on this machine (read with `--offline` too).
    fn is_local(&self) -> bool {
        false
    }

    /// The registry repository behind it, for cross-repository mounts.
    fn registry_repository(&self) -> Option<&Repository> {
        None
    }

    /// The manifest a tag points at (or a digest names), if it exists.
    fn resolve(&self, reference: &Reference) -> Result<Option<Descriptor>, StoreError>;

    /// A manifest and its bytes, by tag or digest.
    fn get_manifest(
        &self,
        reference: &Reference,
    ) -> Result<Option<(Descriptor, Vec<u8>)>, StoreError>;

    /// Stores a manifest (its blobs and children must be there) under a tag or its digest.
    fn put_manifest(
        &self,
        reference: &Reference,
        desc: &Descriptor,
        bytes: &[u8],
    ) -> Result<(), StoreError>;

    fn has_blob(&self, digest: &Digest) -> Result<bool, StoreError>;

    /// A blob's bytes from `offset` on.
    fn open_blob(&self, desc: &Descriptor, offset: u64) -> Result<BlobReader<'_>, StoreError>;

    /// Writes a blob from `open`, verifying its digest and size.
    fn put_blob(&self, desc: &Descriptor, open: &Opener<'_>) -> Result<(), StoreError>;

    /// Links a blob another repository of the same registry holds; `false`
    /// when that is not possible (other registry, or the registry declined).
    fn mount_blob(&self, _desc: &Descriptor, _from: &dyn Store) -> Result<bool, StoreError> {
        Ok(false)
    }

    fn list_tags(&self) -> Result<Vec<String>, StoreError>;

    /// Removes a tag, and nothing else: other tags of its image stay. A
    /// registry may batch the removal ([`Untagged::batched`]): it is done by
    /// [`Store::finish_deletes`].
    fn delete_tag(&self, tag: &str) -> Result<Untagged, StoreError>;

    /// Completes this value's deletions: a registry deletes the throwaway
    /// manifest its batched tags point at; a layout removes the referrers
    /// and blobs that no tag reaches any more.
    fn finish_deletes(&self) -> Result<Finished, StoreError> {
        Ok(Finished::default())
    }

    /// Where a blob can be uploaded while it is being written (a registry
    /// repository); `None` for stores that take blobs only whole.
    fn stream_target(&self) -> Option<std::sync::Arc<dyn StreamTarget>> {
        None
    }

    /// Manifests whose `subject` is `subject` (attestations, signatures).
    fn referrers(&self, subject: &Digest) -> Result<Vec<Descriptor>, StoreError> {
        match self.indexed_referrers(subject)? {
            Some(list) => Ok(list),
            None => referrers::from_tag(self, subject),
        }
    }

    /// The referrers of `subject` as the store indexes them itself (the OCI
    /// referrers API, a layout's `index.json`); `None` where it keeps no
    /// such index and referrers are listed under the referrers tag instead.
    fn indexed_referrers(&self, _subject: &Digest) -> Result<Option<Vec<Descriptor>>, StoreError> {
        Ok(None)
    }

    /// Stores a referrer manifest (its blobs must be there) and lists it for its subject.
    fn put_referrer(
        &self,
        subject: &Digest,
        desc: &Descriptor,
        bytes: &[u8],
    ) -> Result<(), StoreError> {
        self.put_manifest(&(&desc.digest).into(), desc, bytes)?;
        referrers::add_to_tag(self, subject, desc)
    }
}

/// How a tag was removed.
#[derive(Clone, Debug)]
pub struct Untagged {
    /// In words, for the audit log.
    pub how: String,
    /// Not removed yet: [`Store::finish_deletes`] removes it with the others.
    pub batched: bool,
}

/// What [`Store::finish_deletes`] did.
#[derive(Clone, Debug, Default)]
pub struct Finished {
    /// The throwaway manifest whose deletion removed the batched tags.
    pub throwaway: Option<Digest>,
    /// What a layout collected (`Some(None)`: another run was writing, so
    /// nothing was collected this time).
    pub collected: Option<Option<layout::Collected>>,
}

/// A store that receives a blob while it is being written: the build hands
/// each layer's bytes to it as they are compressed, so uploading overlaps
/// with compression. Best effort: a failed stream is uploaded afterwards.
pub trait StreamTarget: Send + Sync + std::fmt::Debug {
    fn reference(&self) -> String;
    fn start(&self) -> Result<crate::registry::StreamedUpload, StoreError>;
}

/// The store an image of `target` lives in; `None` for cloud regions, which
/// hold machine images rather than OCI images.
pub fn open(
    target: &Target,
    image: &str,
    base: &Path,
    client: &Arc<Client>,
) -> Option<Box<dyn Store>> {
    match &target.kind {
        TargetKind::Layout { path } => {
            Some(Box::new(layout::Layout::at(&base.join(path).join(image))))
        }
        TargetKind::Registry {
            registry,
            namespace,
            insecure,
            chunk_size,
        } => {
            let repo = Repository {
                host: registry.clone(),
                path: namespace
                    .as_ref()
                    .map_or_else(|| image.to_owned(), |ns| format!("{ns}/{image}")),
                insecure: *insecure,
                chunk_size: *chunk_size,
            };
            Some(Box::new(remote::Remote::new(client.clone(), repo)))
        }
        TargetKind::Cloud { .. } => None,
    }
}

/// A directory as users see it: relative to the working directory when it
/// lies below it (`examples/quickstart/.imagepipe/store/x`), else absolute.
pub fn shown(dir: &Path) -> String {
    std::env::current_dir()
        .ok()
        .and_then(|cwd| dir.strip_prefix(cwd).ok().map(Path::to_path_buf))
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or_else(|| dir.to_path_buf())
        .display()
        .to_string()
}

/// An opener over bytes in memory.
pub fn bytes_opener<'a>(bytes: &'a [u8]) -> impl Fn(u64) -> io::Result<BlobReader<'a>> + Sync + 'a {
    move |offset| {
        let start = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(bytes.len());
        Ok(Box::new(&bytes[start..]) as BlobReader<'_>)
    }
}
