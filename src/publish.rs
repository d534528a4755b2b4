//! Publishing: copy built images from the local store to every target,
//! immutable tags first everywhere, mutable tags only once every target
//! holds the immutable one.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::catalog::{Image, Target, TargetKind};
use crate::oci::{Descriptor, Digest, media};
use crate::plan::{Identity, TagState, TargetState};
use crate::registry::{Client, Repository};
use crate::store::layout::Layout;

/// Where one image lives on one target.
#[derive(Clone, Debug)]
pub enum Dest {
    Layout(PathBuf),
    Registry(Repository),
    /// A cloud region (machine images; see [`crate::cloud`]).
    Cloud {
        provider: String,
        region: String,
    },
}

impl Dest {
    pub fn of(target: &Target, image: &str, base: &Path) -> Self {
        match &target.kind {
            TargetKind::Layout { path } => Self::Layout(base.join(path).join(image)),
            TargetKind::Cloud {
                provider, region, ..
            } => Self::Cloud {
                provider: provider.clone(),
                region: region.clone(),
            },
            TargetKind::Registry {
                registry,
                namespace,
                insecure,
                chunk_size,
            } => Self::Registry(Repository {
                host: registry.clone(),
                path: namespace
                    .as_ref()
                    .map_or_else(|| image.to_owned(), |ns| format!("{ns}/{image}")),
                insecure: *insecure,
                chunk_size: *chunk_size,
            }),
        }
    }

    /// The reference users pull: `host/ns/name` or `oci:<dir>`.
    pub fn reference(&self) -> String {
        match self {
            Self::Layout(p) => format!("oci:{}", crate::store::shown(p)),
            Self::Registry(r) => r.to_string(),
            Self::Cloud { provider, region } => format!("{provider}:{region}"),
        }
    }

    /// The digest `tag` points at here, if any.
    pub fn resolve(&self, client: &Client, tag: &str) -> Result<Option<Digest>, String> {
        match self {
            Self::Layout(p) => match Layout::open_existing(p) {
                None => Ok(None),
                Some(l) => l
                    .resolve_tag(tag)
                    .map(|d| d.map(|d| d.digest))
                    .map_err(|e| e.to_string()),
            },
            Self::Registry(r) => client
                .head_manifest(r, tag)
                .map(|m| m.map(|(d, _, _)| d))
                .map_err(|e| e.to_string()),
            Self::Cloud { .. } => {
                Err("a cloud region holds machine images, not OCI images".to_owned())
            }
        }
    }
}

/// Target state read from the targets themselves (layouts and registries).
#[derive(Debug)]
pub struct LiveState<'a> {
    pub client: &'a Client,
    pub base: &'a Path,
}

impl TargetState for LiveState<'_> {
    fn tag_state(&self, target: &Target, image: &str, tag: &str) -> TagState {
        if target.kind.is_cloud() {
            return crate::cloud::exists(target, tag, self.base);
        }
        match Dest::of(target, image, self.base).resolve(self.client, tag) {
            Ok(Some(_)) => TagState::Present,
            Ok(None) => TagState::Absent,
            Err(e) => {
                tracing::warn!("{}: cannot read {tag}: {e}", target.name.value);
                TagState::Unknown
            }
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// The immutable tag was pushed.
    Pushed,
    /// The target already had it with the same digest.
    Present,
    Failed,
}

/// What happened to one image on one target.
#[derive(Clone, Debug, Serialize)]
pub struct Item {
    pub image: String,
    pub target: String,
    pub reference: String,
    pub tag: String,
    pub digest: Option<Digest>,
    pub outcome: Outcome,
    /// Mutable tags moved on this target.
    pub moved: Vec<String>,
    pub error: Option<String>,
}

#[derive(Clone, Copy, Debug, Default)]
pub struct Options {
    /// Overwrite an immutable tag that holds other bytes.
    pub force: bool,
}

/// Phase 1: the immutable tag of `top` (in `src`) onto one target.
pub fn push_immutable(
    client: &Client,
    src: &Layout,
    top: &Descriptor,
    dest: &Dest,
    tag: &str,
    mount_from: Option<&str>,
    opts: Options,
) -> Result<Outcome, String> {
    match dest.resolve(client, tag)? {
        Some(d) if d == top.digest => return Ok(Outcome::Present),
        Some(d) if !opts.force => {
            return Err(format!(
                "the immutable tag {tag} already holds {d}, not {}; immutable tags are never overwritten (pass --force to replace it)",
                top.digest
            ));
        }
        _ => {}
    }
    match dest {
        Dest::Cloud { .. } => Err("a cloud region holds machine images, not OCI images".to_owned()),
        Dest::Layout(dir) => copy_to_layout(src, top, dir, tag),
        Dest::Registry(repo) => {
            push_tree(client, src, top, repo, mount_from, true)?;
            let bytes = src.read_blob(&top.digest).map_err(|e| e.to_string())?;
            client
                .put_manifest(repo, tag, &top.media_type, &bytes)
                .map_err(|e| e.to_string())?;
            Ok(())
        }
    }?;
    Ok(Outcome::Pushed)
}

/// Phase 2: point a mutable tag at the manifest the immutable tag holds here.
pub fn move_tag(
    client: &Client,
    top: &Descriptor,
    bytes: &[u8],
    dest: &Dest,
    tag: &str,
) -> Result<(), String> {
    match dest {
        Dest::Cloud { .. } => Err("a cloud region holds machine images, not OCI images".to_owned()),
        Dest::Layout(dir) => {
            let l = Layout::create(dir).map_err(|e| e.to_string())?;
            l.set_tag(tag, top.clone()).map_err(|e| e.to_string())
        }
        Dest::Registry(repo) => client
            .put_manifest(repo, tag, &top.media_type, bytes)
            .map(|_| ())
            .map_err(|e| e.to_string()),
    }
}

/// The manifest an immutable tag holds on a target: descriptor and bytes.
pub fn fetch_manifest(
    client: &Client,
    dest: &Dest,
    tag: &str,
) -> Result<Option<(Descriptor, Vec<u8>)>, String> {
    match dest {
        Dest::Cloud { .. } => Ok(None),
        Dest::Layout(dir) => {
            let Some(l) = Layout::open_existing(dir) else {
                return Ok(None);
            };
            let Some(d) = l.resolve_tag(tag).map_err(|e| e.to_string())? else {
                return Ok(None);
            };
            let bytes = l.read_blob(&d.digest).map_err(|e| e.to_string())?;
            Ok(Some((
                Descriptor::new(&d.media_type, d.digest, d.size),
                bytes,
            )))
        }
        Dest::Registry(repo) => Ok(client
            .get_manifest(repo, tag)
            .map_err(|e| e.to_string())?
            .map(|m| {
                let size = m.bytes.len() as u64;
                (Descriptor::new(&m.media_type, m.digest, size), m.bytes)
            })),
    }
}

/// The descriptors a manifest or index refers to (children first for indexes).
fn children(src: &Layout, desc: &Descriptor) -> Result<(Vec<Descriptor>, Vec<Descriptor>), String> {
    let bytes = src.read_blob(&desc.digest).map_err(|e| e.to_string())?;
    let v: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}", desc.digest))?;
    let parse = |v: &serde_json::Value| {
        serde_json::from_value::<Descriptor>(v.clone()).map_err(|e| e.to_string())
    };
    if desc.media_type == media::INDEX {
        let manifests = v["manifests"]
            .as_array()
            .into_iter()
            .flatten()
            .map(parse)
            .collect::<Result<_, _>>()?;
        Ok((manifests, Vec::new()))
    } else {
        let mut blobs = vec![parse(&v["config"])?];
        for l in v["layers"].as_array().into_iter().flatten() {
            blobs.push(parse(l)?);
        }
        Ok((Vec::new(), blobs))
    }
}

/// Pushes every blob and child manifest under `desc` (not `desc` itself when `top`).
fn push_tree(
    client: &Client,
    src: &Layout,
    desc: &Descriptor,
    repo: &Repository,
    mount_from: Option<&str>,
    top: bool,
) -> Result<(), String> {
    let (manifests, blobs) = children(src, desc)?;
    for m in &manifests {
        push_tree(client, src, m, repo, mount_from, false)?;
    }
    // Several blobs in flight at once.
    let results: Vec<Result<(), String>> = std::thread::scope(|s| {
        let handles: Vec<_> = blobs
            .iter()
            .map(|b| s.spawn(move || ensure_blob(client, src, b, repo, mount_from)))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err("upload thread panicked".into()))
            })
            .collect()
    });
    results.into_iter().collect::<Result<Vec<()>, String>>()?;
    if !top {
        let bytes = src.read_blob(&desc.digest).map_err(|e| e.to_string())?;
        client
            .put_manifest(repo, &desc.digest.to_string(), &desc.media_type, &bytes)
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

fn ensure_blob(
    client: &Client,
    src: &Layout,
    blob: &Descriptor,
    repo: &Repository,
    mount_from: Option<&str>,
) -> Result<(), String> {
    if client
        .blob_exists(repo, &blob.digest)
        .map_err(|e| e.to_string())?
    {
        return Ok(());
    }
    if let Some(from) = mount_from.filter(|f| *f != repo.path)
        && client
            .mount_blob(repo, &blob.digest, from)
            .map_err(|e| e.to_string())?
    {
        return Ok(());
    }
    tracing::info!("{repo}: uploading {} ({} bytes)", blob.digest, blob.size);
    client
        .upload_blob(repo, &blob.digest, blob.size, &src.blob_path(&blob.digest))
        .map_err(|e| e.to_string())
}

fn copy_to_layout(src: &Layout, top: &Descriptor, dir: &Path, tag: &str) -> Result<(), String> {
    let dst = Layout::create(dir).map_err(|e| e.to_string())?;
    let mut stack = vec![top.clone()];
    while let Some(d) = stack.pop() {
        let (manifests, blobs) = children(src, &d)?;
        for b in blobs.iter().chain(std::iter::once(&d)) {
            if !dst.has_blob(&b.digest) {
                let mut w = dst.blob_writer().map_err(|e| e.to_string())?;
                std::io::copy(
                    &mut std::fs::File::open(src.blob_path(&b.digest))
                        .map_err(|e| e.to_string())?,
                    &mut w,
                )
                .map_err(|e| e.to_string())?;
                w.commit(Some(&b.digest)).map_err(|e| e.to_string())?;
            }
        }
        stack.extend(manifests);
    }
    dst.set_tag(tag, top.clone()).map_err(|e| e.to_string())
}

/// Publishes one built image to its targets, in two phases. With
/// `tags_only`, phase 1 only checks that every target already holds the
/// immutable tag (the fan-out's final job), and `src` is not needed.
pub fn publish_image(
    client: &Client,
    image: &Image,
    id: &Identity,
    tag: &str,
    src: Option<&Layout>,
    targets: &[(&Target, Dest)],
    opts: Options,
) -> Vec<Item> {
    let top = match src {
        Some(src) => match src.resolve_tag(tag) {
            Ok(Some(d)) => src
                .read_blob(&d.digest)
                .map(|b| (Descriptor::new(&d.media_type, d.digest, d.size), b))
                .map_err(|e| e.to_string()),
            Ok(None) => Err(format!("the local store has no {tag}: build it first")),
            Err(e) => Err(e.to_string()),
        },
        // The manifest as the first target holding it has it.
        None => targets
            .iter()
            .find_map(|(_, d)| fetch_manifest(client, d, tag).ok().flatten())
            .ok_or_else(|| format!("no target holds {tag} yet: publish it first")),
    };
    let (top, bytes) = match top {
        Ok(t) => t,
        Err(e) => return fail_all(image, tag, targets, e),
    };
    let mut items = Vec::new();
    // Mount sources: a repository on the same host that already has the blobs.
    let mut mounted: HashMap<String, String> = HashMap::new();
    for (target, dest) in targets {
        let mount_from = match dest {
            Dest::Registry(r) => mounted.get(&r.host).cloned(),
            Dest::Layout(_) | Dest::Cloud { .. } => None,
        };
        let result = match src {
            Some(src) => push_immutable(client, src, &top, dest, tag, mount_from.as_deref(), opts),
            None => match dest.resolve(client, tag) {
                Ok(Some(d)) if d == top.digest => Ok(Outcome::Present),
                Ok(Some(d)) => Err(format!("{tag} holds {d} here, not {}", top.digest)),
                Ok(None) => Err(format!("{tag} is not on this target yet: publish it first")),
                Err(e) => Err(e),
            },
        };
        if let (Ok(_), Dest::Registry(r)) = (&result, dest) {
            mounted
                .entry(r.host.clone())
                .or_insert_with(|| r.path.clone());
        }
        let (outcome, error) = match result {
            Ok(o) => (o, None),
            Err(e) => (Outcome::Failed, Some(e)),
        };
        items.push(Item {
            image: image.name.value.clone(),
            target: target.name.value.clone(),
            reference: format!("{}:{tag}", dest.reference()),
            tag: tag.to_owned(),
            digest: (outcome != Outcome::Failed).then(|| top.digest.clone()),
            outcome,
            moved: Vec::new(),
            error,
        });
    }
    // Phase 2, only when every target holds the immutable tag.
    if items.iter().all(|i| i.outcome != Outcome::Failed) {
        for (item, (_, dest)) in items.iter_mut().zip(targets) {
            for t in &id.mutable_tags {
                match move_tag(client, &top, &bytes, dest, t) {
                    Ok(()) => item.moved.push(t.clone()),
                    Err(e) => {
                        item.outcome = Outcome::Failed;
                        item.error = Some(format!("moving {t}: {e}"));
                    }
                }
            }
        }
    } else if !id.mutable_tags.is_empty() {
        let failed: Vec<&str> = items
            .iter()
            .filter(|i| i.outcome == Outcome::Failed)
            .map(|i| i.target.as_str())
            .collect();
        tracing::warn!(
            "{}: mutable tags ({}) not moved: {} failed",
            image.name.value,
            id.mutable_tags.join(", "),
            failed.join(", ")
        );
    }
    items
}

fn fail_all(image: &Image, tag: &str, targets: &[(&Target, Dest)], error: String) -> Vec<Item> {
    targets
        .iter()
        .map(|(t, d)| Item {
            image: image.name.value.clone(),
            target: t.name.value.clone(),
            reference: format!("{}:{tag}", d.reference()),
            tag: tag.to_owned(),
            digest: None,
            outcome: Outcome::Failed,
            moved: Vec::new(),
            error: Some(error.clone()),
        })
        .collect()
}
