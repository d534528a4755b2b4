//! The OCI image layout: `oci-layout`, `index.json`, `blobs/sha256/…`.
//!
//! One layout directory per image repository (`<store>/<image-name>`), so that
//! tags such as `latest` of different images never collide; each is readable
//! as `oci:<store>/<image-name>:<tag>` by skopeo and umoci.
//!
//! Crash safety: a blob is written to a temporary file in `blobs/sha256/` and
//! renamed to its digest only once complete and verified; `index.json` is
//! replaced by rename, after the blobs it names exist. Concurrent writers
//! serialise index updates with an exclusive lock on `.imagepipe.lock`.
//!
//! Garbage: a `Layout` value that writes holds a shared lock on
//! `.imagepipe-writers.lock` from its first write until it is dropped, and
//! [`Layout::collect_garbage`] removes blobs only while it can hold that lock
//! exclusively, so a blob another run has written (or found already there)
//! but not yet tagged is never collected under it.

use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use super::{StoreError, StreamTarget};
use crate::oci::hash::HashWriter;
use crate::oci::{Descriptor, Digest, Reference, annotation, canonical_json, media};
use crate::registry::StreamedUpload;

const OCI_LAYOUT: &str = r#"{"imageLayoutVersion":"1.0.0"}"#;
const LOCK_FILE: &str = ".imagepipe.lock";
const WRITERS_LOCK: &str = ".imagepipe-writers.lock";
/// Temporary files, outside `blobs/sha256`.
const TEMP_DIR: &str = ".imagepipe-tmp";

#[derive(Debug, Clone)]
pub struct Layout {
    root: PathBuf,
    /// Stores that receive each blob written through [`Layout::blob_writer`]
    /// while it is written (registry targets of a publish).
    mirrors: Vec<Arc<dyn StreamTarget>>,
    /// The shared writers' lock, taken at the first write, shared by clones.
    writing: Arc<std::sync::OnceLock<Option<File>>>,
}

/// What [`Layout::collect_garbage`] removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct Collected {
    /// Referrers (attestations) whose image no tag reaches any more.
    pub referrers: usize,
    pub blobs: usize,
    pub bytes: u64,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Index {
    schema_version: u32,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    media_type: Option<String>,
    #[serde(default)]
    manifests: Vec<Descriptor>,
}

/// Entries in a stable order: by tag (untagged referrers first), then digest.
fn sort_index(index: &mut Index) {
    index.manifests.sort_by(|a, b| {
        (a.annotations.get(annotation::REF_NAME), &a.digest)
            .cmp(&(b.annotations.get(annotation::REF_NAME), &b.digest))
    });
}

impl Layout {
    /// The layout at `root`, whether it exists yet or not: reads of a missing
    /// layout find nothing, and the first write creates it.
    pub fn at(root: &Path) -> Self {
        Self {
            root: root.to_path_buf(),
            mirrors: Vec::new(),
            writing: Arc::default(),
        }
    }

    /// The same layout, with every blob written through
    /// [`Layout::blob_writer`] also streamed to `mirrors` as it is written.
    #[must_use]
    pub fn mirrored(mut self, mirrors: Vec<Arc<dyn StreamTarget>>) -> Self {
        self.mirrors = mirrors;
        self
    }

    /// Whether the directory holds a complete layout.
    pub fn exists(&self) -> bool {
        self.root.join("oci-layout").is_file()
    }

    /// An existing layout, or `None` when the directory holds none.
    pub fn open_existing(root: &Path) -> Option<Self> {
        root.join("oci-layout").is_file().then(|| Self::at(root))
    }

    /// Opens the layout at `root`, creating an empty one if needed.
    pub fn create(root: &Path) -> io::Result<Self> {
        fs::create_dir_all(root.join("blobs").join("sha256"))?;
        fs::create_dir_all(root.join(TEMP_DIR))?;
        let layout = Self::at(root);
        // `oci-layout` is written last: a directory that has it is complete
        // (what `open_existing` relies on while another process creates it).
        if !root.join("index.json").is_file() {
            let _lock = layout.lock()?;
            if !root.join("index.json").is_file() {
                let empty = Index {
                    schema_version: 2,
                    media_type: Some(media::INDEX.into()),
                    manifests: Vec::new(),
                };
                layout.write_atomic(&root.join("index.json"), &canonical_json(&empty))?;
            }
        }
        if !root.join("oci-layout").is_file() {
            layout.write_atomic(&root.join("oci-layout"), OCI_LAYOUT.as_bytes())?;
        }
        {
            let _lock = layout.lock()?;
            let swept = layout.sweep()?;
            if swept > 0 {
                tracing::info!(
                    "{}: removed {swept} temporary file(s) an interrupted run left",
                    root.display()
                );
            }
        }
        Ok(layout)
    }

    /// Creates the layout's files if they are not there yet.
    pub fn ensure(&self) -> io::Result<()> {
        if self.exists() {
            return Ok(());
        }
        Self::create(&self.root).map(|_| ())
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.root.join("blobs").join("sha256").join(digest.hex())
    }

    pub fn has_blob(&self, digest: &Digest) -> bool {
        self.blob_path(digest).is_file()
    }

    /// A writer for a new blob; [`BlobWriter::commit`] names it by its digest.
    pub fn blob_writer(&self) -> io::Result<BlobWriter> {
        self.writer(&self.mirrors)
    }

    fn writer(&self, mirrors: &[Arc<dyn StreamTarget>]) -> io::Result<BlobWriter> {
        self.hold();
        let tmp = self.temp_path("blob");
        // Ctrl-C removes it (a blob being written can be GiBs).
        crate::interrupt::register_dir(&tmp);
        let file = File::create(&tmp)?;
        let streams = mirrors
            .iter()
            .filter_map(|m| match m.start() {
                Ok(s) => Some((
                    crate::progress::stream_bar(&format!("{} (streaming)", m.reference())),
                    m.reference(),
                    s,
                )),
                Err(e) => {
                    tracing::debug!(
                        "{}: no streamed upload ({e}); uploaded after the build",
                        m.reference()
                    );
                    None
                }
            })
            .collect();
        Ok(BlobWriter {
            inner: Some(HashWriter::new(BufWriter::with_capacity(1 << 20, file))),
            tmp,
            layout: self.clone(),
            streams,
        })
    }

    /// Writes a small blob (config, manifest) from memory.
    pub fn put_bytes(&self, bytes: &[u8]) -> io::Result<(Digest, u64)> {
        let digest = Digest::of(bytes);
        self.hold();
        if !self.has_blob(&digest) {
            // Small blobs are not worth a streamed session: copied afterwards.
            let mut w = self.writer(&[])?;
            w.write_all(bytes)?;
            w.commit(Some(&digest))?;
        }
        Ok((digest, bytes.len() as u64))
    }

    pub fn read_blob(&self, digest: &Digest) -> io::Result<Vec<u8>> {
        let bytes = fs::read(self.blob_path(digest))?;
        if Digest::of(&bytes) != *digest {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("blob {digest} does not match its digest"),
            ));
        }
        Ok(bytes)
    }

    /// The descriptor a tag points at, if the layout has that tag (without
    /// the index's own `ref.name` annotation).
    pub fn resolve_tag(&self, tag: &str) -> io::Result<Option<Descriptor>> {
        if !self.exists() {
            return Ok(None);
        }
        let index = self.read_index()?;
        Ok(index
            .manifests
            .into_iter()
            .find(|m| m.annotations.get(annotation::REF_NAME).map(String::as_str) == Some(tag))
            .map(|mut d| {
                d.annotations.remove(annotation::REF_NAME);
                d.annotations.remove(annotation::CONTAINERD_NAME);
                d
            }))
    }

    /// Every tag in `index.json`, sorted.
    pub fn tags(&self) -> io::Result<Vec<String>> {
        if !self.exists() {
            return Ok(Vec::new());
        }
        let mut tags: Vec<String> = self
            .read_index()?
            .manifests
            .into_iter()
            .filter_map(|m| m.annotations.get(annotation::REF_NAME).cloned())
            .collect();
        tags.sort();
        Ok(tags)
    }

    /// Removes a tag from `index.json` (its blobs stay).
    pub fn remove_tag(&self, tag: &str) -> io::Result<()> {
        if !self.exists() {
            return Ok(());
        }
        let _lock = self.lock()?;
        let mut index = self.read_index()?;
        index
            .manifests
            .retain(|m| m.annotations.get(annotation::REF_NAME).map(String::as_str) != Some(tag));
        self.write_atomic(&self.root.join("index.json"), &canonical_json(&index))
    }

    /// Points `tag` at `desc` (whose blobs must already be in the layout).
    pub fn set_tag(&self, tag: &str, mut desc: Descriptor) -> io::Result<()> {
        if !self.has_blob(&desc.digest) {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("tagging {tag}: blob {} is missing", desc.digest),
            ));
        }
        desc.annotations
            .insert(annotation::REF_NAME.into(), tag.into());
        // containerd's `ctr images import` names images after this one.
        if let Some(name) = self.containerd_name() {
            desc.annotations
                .insert(annotation::CONTAINERD_NAME.into(), format!("{name}:{tag}"));
        }
        let _lock = self.lock()?;
        let mut index = self.read_index()?;
        index
            .manifests
            .retain(|m| m.annotations.get(annotation::REF_NAME).map(String::as_str) != Some(tag));
        index.manifests.push(desc);
        sort_index(&mut index);
        self.write_atomic(&self.root.join("index.json"), &canonical_json(&index))
    }

    /// Lists `desc` (a manifest whose `subject` is `subject`) in `index.json`
    /// without a tag: where OCI layout readers look for referrers, and what
    /// tools importing tagged images (`ctr images import`, skopeo) pass over.
    pub fn add_referrer(&self, subject: &Digest, mut desc: Descriptor) -> io::Result<()> {
        desc.annotations
            .insert(annotation::SUBJECT.into(), subject.to_string());
        let _lock = self.lock()?;
        let mut index = self.read_index()?;
        if index.manifests.iter().any(|m| m.digest == desc.digest) {
            return Ok(());
        }
        index.manifests.push(desc);
        sort_index(&mut index);
        self.write_atomic(&self.root.join("index.json"), &canonical_json(&index))
    }

    /// The untagged referrers of `subject` in `index.json`.
    pub fn referrers_of(&self, subject: &Digest) -> io::Result<Vec<Descriptor>> {
        if !self.exists() {
            return Ok(Vec::new());
        }
        let want = subject.to_string();
        Ok(self
            .read_index()?
            .manifests
            .into_iter()
            .filter(|m| !m.annotations.contains_key(annotation::REF_NAME))
            .filter(|m| m.annotations.get(annotation::SUBJECT) == Some(&want))
            .map(|mut m| {
                m.annotations.remove(annotation::SUBJECT);
                m
            })
            .collect())
    }

    /// Takes the shared writers' lock (once per value and its clones): from
    /// now until this value is dropped, no garbage collection runs here.
    fn hold(&self) {
        self.writing.get_or_init(|| {
            fs::create_dir_all(&self.root).ok()?;
            let f = File::options()
                .create(true)
                .truncate(false)
                .write(true)
                .open(self.root.join(WRITERS_LOCK))
                .ok()?;
            f.lock_shared().ok()?;
            Some(f)
        });
    }

    /// Removes what no tag reaches any more: untagged referrers whose image
    /// no tag reaches (attestations go with their image, never left
    /// orphaned), then every blob no remaining entry reaches. `None`, with
    /// nothing removed, while another run writes to this layout.
    pub fn collect_garbage(&self) -> io::Result<Option<Collected>> {
        if !self.exists() {
            return Ok(Some(Collected::default()));
        }
        let writers = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(self.root.join(WRITERS_LOCK))?;
        match writers.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => return Ok(None),
            Err(fs::TryLockError::Error(e)) => return Err(e),
        }
        let _lock = self.lock()?;
        let mut index = self.read_index()?;
        let mut reachable = std::collections::BTreeSet::new();
        let is_referrer = |m: &Descriptor| {
            !m.annotations.contains_key(annotation::REF_NAME)
                && m.annotations.contains_key(annotation::SUBJECT)
        };
        for m in index.manifests.iter().filter(|m| !is_referrer(m)) {
            self.reach(&m.digest, &mut reachable);
        }
        // Referrers of referrers (a signature of an attestation): until nothing changes.
        let mut kept: Vec<bool> = index.manifests.iter().map(|m| !is_referrer(m)).collect();
        loop {
            let mut changed = false;
            for (m, k) in index.manifests.iter().zip(kept.iter_mut()) {
                let subject = m
                    .annotations
                    .get(annotation::SUBJECT)
                    .and_then(|s| s.parse::<Digest>().ok());
                if !*k && subject.is_some_and(|s| reachable.contains(&s)) {
                    *k = true;
                    changed = true;
                    self.reach(&m.digest, &mut reachable);
                }
            }
            if !changed {
                break;
            }
        }
        let mut out = Collected::default();
        if kept.contains(&false) {
            let mut keep = kept.iter();
            index.manifests.retain(|_| *keep.next().unwrap_or(&true));
            out.referrers = kept.iter().filter(|k| !**k).count();
            self.write_atomic(&self.root.join("index.json"), &canonical_json(&index))?;
        }
        for e in fs::read_dir(self.root.join("blobs").join("sha256"))?.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Ok(digest) = format!("sha256:{name}").parse::<Digest>() else {
                continue;
            };
            if reachable.contains(&digest) {
                continue;
            }
            let size = e.metadata().map_or(0, |m| m.len());
            fs::remove_file(e.path())?;
            out.blobs += 1;
            out.bytes += size;
        }
        Ok(Some(out))
    }

    /// Adds `digest` and everything its manifest or index names to `seen`.
    fn reach(&self, digest: &Digest, seen: &mut std::collections::BTreeSet<Digest>) {
        if !seen.insert(digest.clone()) {
            return;
        }
        let Ok(bytes) = self.read_blob(digest) else {
            return;
        };
        let Ok(m) = serde_json::from_slice::<crate::oci::Manifest>(&bytes) else {
            return;
        };
        for d in m.references() {
            self.reach(d, seen);
        }
    }

    /// `<image>` as containerd should name it: the layout directory's name.
    fn containerd_name(&self) -> Option<String> {
        self.root
            .file_name()
            .map(|n| format!("imagepipe.local/{}", n.to_string_lossy()))
    }

    fn read_index(&self) -> io::Result<Index> {
        let bytes = fs::read(self.root.join("index.json"))?;
        serde_json::from_slice(&bytes).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: {e}", self.root.join("index.json").display()),
            )
        })
    }

    /// An exclusive lock on the layout, held until the guard drops.
    pub fn lock(&self) -> io::Result<File> {
        let f = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(self.root.join(LOCK_FILE))?;
        f.lock()?;
        Ok(f)
    }

    /// Where a blob or metadata file is written before it is renamed into
    /// place: `<layout>/.imagepipe-tmp/`, outside `blobs/sha256` (where OCI
    /// tools expect only digests), named after the writing process.
    fn temp_path(&self, what: &str) -> PathBuf {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let _ = fs::create_dir_all(self.root.join(TEMP_DIR));
        self.root
            .join(TEMP_DIR)
            .join(format!("{what}-{}-{n}", std::process::id()))
    }

    /// Removes temporary files left by processes that no longer run (a
    /// build killed with SIGKILL, a full disk); a live writer's are kept.
    pub fn sweep(&self) -> io::Result<usize> {
        let Ok(entries) = fs::read_dir(self.root.join(TEMP_DIR)) else {
            return Ok(0);
        };
        let mut removed = 0;
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let pid: Option<u32> = name.split('-').nth(1).and_then(|p| p.parse().ok());
            let alive = pid.is_some_and(crate::interrupt::running);
            if !alive && fs::remove_file(e.path()).is_ok() {
                removed += 1;
            }
        }
        // Left-overs of earlier versions, which wrote inside blobs/sha256.
        if let Ok(entries) = fs::read_dir(self.root.join("blobs").join("sha256")) {
            for e in entries.flatten() {
                if e.file_name().to_string_lossy().starts_with(".tmp-")
                    && fs::remove_file(e.path()).is_ok()
                {
                    removed += 1;
                }
            }
        }
        Ok(removed)
    }

    fn write_atomic(&self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        let tmp = self.temp_path("meta");
        let result = (|| {
            let mut f = File::create(&tmp)?;
            f.write_all(bytes)?;
            f.sync_all()?;
            fs::rename(&tmp, path)
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result
    }
}

/// A blob being written; dropped without [`commit`](Self::commit), it leaves nothing behind.
#[derive(Debug)]
pub struct BlobWriter {
    inner: Option<HashWriter<BufWriter<File>>>,
    tmp: PathBuf,
    layout: Layout,
    /// Streamed uploads fed with the same bytes, by the store they go to.
    streams: Vec<(indicatif::ProgressBar, String, StreamedUpload)>,
}

impl BlobWriter {
    /// Syncs the blob and names it by its digest; with `expected`, a mismatch is an error.
    pub fn commit(mut self, expected: Option<&Digest>) -> io::Result<(Digest, u64)> {
        let (digest, size, buf) = self.inner.take().expect("not committed twice").finish();
        let file = buf.into_inner().map_err(io::IntoInnerError::into_error)?;
        file.sync_all()?;
        if let Some(e) = expected
            && *e != digest
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("blob digest {digest} does not match the expected {e}"),
            ));
        }
        fs::rename(&self.tmp, self.layout.blob_path(&digest))?;
        crate::interrupt::unregister_dir(&self.tmp);
        // Close the uploads that streamed alongside. One that failed is not an
        // error: the copy after the build finds the blob missing and uploads it.
        for (pb, to, s) in self.streams.drain(..) {
            let shown = !pb.is_hidden();
            pb.finish_and_clear();
            match s.finish(&digest) {
                Ok(()) if shown => {
                    tracing::debug!("{to}: blob {digest} uploaded while it was written")
                }
                Ok(()) => tracing::info!("{to}: blob {digest} uploaded while it was written"),
                Err(e) => tracing::warn!(
                    "{to}: streaming blob {digest} failed ({e}); it is uploaded from the store"
                ),
            }
        }
        Ok((digest, size))
    }
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.as_mut().expect("open").write(buf)?;
        // A stream that stopped is dropped: its blob is uploaded afterwards.
        self.streams.retain_mut(|(pb, _, s)| {
            pb.inc(n as u64);
            let alive = s.write(&buf[..n]);
            if !alive {
                pb.finish_and_clear();
            }
            alive
        });
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.as_mut().expect("open").flush()
    }
}

impl Drop for BlobWriter {
    fn drop(&mut self) {
        if self.inner.is_some() || self.tmp.exists() {
            let _ = fs::remove_file(&self.tmp);
        }
        crate::interrupt::unregister_dir(&self.tmp);
    }
}

impl super::Store for Layout {
    fn reference(&self) -> String {
        format!("oci:{}", super::shown(&self.root))
    }

    fn is_local(&self) -> bool {
        true
    }

    /// The layout, or the nearest directory above it that exists (it is
    /// created on the first write), must be writable.
    fn check_push(&self) -> Result<(), StoreError> {
        let mut dir = self.root.as_path();
        while !dir.exists() {
            match dir.parent() {
                Some(p) if !p.as_os_str().is_empty() => dir = p,
                _ => {
                    dir = Path::new(".");
                    break;
                }
            }
        }
        rustix::fs::access(dir, rustix::fs::Access::WRITE_OK).map_err(|e| {
            StoreError::io(
                self,
                format!("{} is not writable", dir.display()),
                io::Error::from(e),
            )
        })
    }

    fn resolve(&self, reference: &Reference) -> Result<Option<Descriptor>, StoreError> {
        match reference {
            Reference::Digest(_) => Ok(self.get_manifest(reference)?.map(|(d, _)| d)),
            Reference::Tag(tag) => self
                .resolve_tag(tag)
                .map_err(|e| StoreError::io(self, format!("reading {tag}"), e)),
        }
    }

    fn get_manifest(
        &self,
        reference: &Reference,
    ) -> Result<Option<(Descriptor, Vec<u8>)>, StoreError> {
        let desc = match reference {
            Reference::Digest(digest) => {
                if !self.has_blob(digest) {
                    return Ok(None);
                }
                let bytes = self
                    .read_blob(digest)
                    .map_err(|e| StoreError::io(self, format!("reading {digest}"), e))?;
                let media_type = crate::oci::Manifest::parse(&bytes)
                    .ok()
                    .and_then(|m| m.media_type)
                    .unwrap_or_else(|| media::MANIFEST.to_owned());
                let size = bytes.len() as u64;
                return Ok(Some((
                    Descriptor::new(&media_type, digest.clone(), size),
                    bytes,
                )));
            }
            Reference::Tag(tag) => match self
                .resolve_tag(tag)
                .map_err(|e| StoreError::io(self, format!("reading {tag}"), e))?
            {
                Some(d) => d,
                None => return Ok(None),
            },
        };
        let bytes = self
            .read_blob(&desc.digest)
            .map_err(|e| StoreError::io(self, format!("reading {reference}"), e))?;
        Ok(Some((desc, bytes)))
    }

    fn put_manifest(
        &self,
        reference: &Reference,
        desc: &Descriptor,
        bytes: &[u8],
    ) -> Result<(), StoreError> {
        self.ensure()
            .map_err(|e| StoreError::io(self, "creating the layout", e))?;
        let (digest, _) = self
            .put_bytes(bytes)
            .map_err(|e| StoreError::io(self, format!("writing {reference}"), e))?;
        if digest != desc.digest {
            return Err(StoreError::invalid(
                self,
                format!("manifest bytes are {digest}, not {}", desc.digest),
            ));
        }
        if let Reference::Tag(tag) = reference {
            self.set_tag(tag, desc.clone())
                .map_err(|e| StoreError::io(self, format!("tagging {tag}"), e))?;
        }
        Ok(())
    }

    fn has_blob(&self, digest: &Digest) -> Result<bool, StoreError> {
        Ok(self.blob_path(digest).is_file())
    }

    fn open_blob(
        &self,
        desc: &Descriptor,
        offset: u64,
    ) -> Result<super::BlobReader<'_>, StoreError> {
        use std::io::{Seek, SeekFrom};
        let what = || format!("reading blob {}", desc.digest);
        let mut f = File::open(self.blob_path(&desc.digest))
            .map_err(|e| StoreError::io(self, what(), e))?;
        f.seek(SeekFrom::Start(offset))
            .map_err(|e| StoreError::io(self, what(), e))?;
        Ok(Box::new(io::BufReader::with_capacity(1 << 20, f)))
    }

    fn put_blob(&self, desc: &Descriptor, open: &super::Opener<'_>) -> Result<(), StoreError> {
        self.hold();
        if self.blob_path(&desc.digest).is_file() {
            return Ok(());
        }
        self.ensure()
            .map_err(|e| StoreError::io(self, "creating the layout", e))?;
        let what = || format!("writing blob {}", desc.digest);
        let mut reader = open(0).map_err(|e| StoreError::io(self, what(), e))?;
        let mut w = self
            .blob_writer()
            .map_err(|e| StoreError::io(self, what(), e))?;
        io::copy(&mut reader, &mut w).map_err(|e| StoreError::io(self, what(), e))?;
        let (_, size) = w
            .commit(Some(&desc.digest))
            .map_err(|e| StoreError::io(self, what(), e))?;
        if size != desc.size {
            let _ = fs::remove_file(self.blob_path(&desc.digest));
            return Err(StoreError::invalid(
                self,
                format!("blob {} has {size} bytes, not {}", desc.digest, desc.size),
            ));
        }
        Ok(())
    }

    fn list_tags(&self) -> Result<Vec<String>, StoreError> {
        self.tags()
            .map_err(|e| StoreError::io(self, "listing tags", e))
    }

    fn delete_tag(&self, tag: &str) -> Result<super::Untagged, StoreError> {
        self.remove_tag(tag)
            .map_err(|e| StoreError::io(self, format!("removing {tag}"), e))?;
        Ok(super::Untagged {
            how: "tag removed from index.json".into(),
            batched: false,
        })
    }

    fn finish_deletes(&self) -> Result<super::Finished, StoreError> {
        let collected = self
            .collect_garbage()
            .map_err(|e| StoreError::io(self, "collecting unreferenced blobs", e))?;
        Ok(super::Finished {
            throwaway: None,
            collected: Some(collected),
        })
    }

    fn indexed_referrers(&self, subject: &Digest) -> Result<Option<Vec<Descriptor>>, StoreError> {
        self.referrers_of(subject)
            .map(Some)
            .map_err(|e| StoreError::io(self, format!("reading referrers of {subject}"), e))
    }

    fn put_referrer(
        &self,
        subject: &Digest,
        desc: &Descriptor,
        bytes: &[u8],
    ) -> Result<(), StoreError> {
        self.put_manifest(&(&desc.digest).into(), desc, bytes)?;
        self.add_referrer(subject, desc.clone())
            .map_err(|e| StoreError::io(self, format!("listing referrer {}", desc.digest), e))
    }
}
