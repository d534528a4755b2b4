//! Building images into the local OCI layout store.

pub mod compress;
pub mod disk;
pub mod error;
pub mod layer;
pub mod pgzip;
pub mod qcow2;
pub mod rootfs;

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;
use serde_json::json;

use crate::catalog::{Catalog, Format, Image, Platform};
use crate::oci::{self, Descriptor, Digest, annotation, canonical_json, media};
use crate::plan::Identity;
use crate::recipe::{RunContext, TagValues};
use crate::source::fetch::{BuildEnv, Dirs, Material, fetch};
use crate::store::layout::Layout;
use crate::template::Template;
use compress::Codec;

pub use error::{BuildError, BuildErrorKind};

/// The result of building one image.
#[derive(Clone, Debug, Serialize)]
pub struct Built {
    pub image: String,
    pub tag: String,
    pub mutable_tags: Vec<String>,
    /// The manifest (or index) the immutable tag names.
    #[serde(skip)]
    pub top: Descriptor,
    pub digest: Digest,
}

#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Overwrite an immutable tag that points at other bytes.
    pub force: bool,
    /// Registry targets that receive each layer while it is compressed
    /// (`publish`): the upload overlaps with the build.
    pub streams: Vec<std::sync::Arc<dyn crate::store::StreamTarget>>,
    /// Compression threads (`IMAGEPIPE_THREADS`); 0: every core.
    pub threads: usize,
}

/// Builds `image` into `<store>/<image-name>` and tags it: run for the
/// plan's `build` items only (the plan decides whether the store holds it).
pub fn build_image(
    catalog: &Catalog,
    image: &Image,
    id: &Identity,
    ctx: &RunContext,
    store: &Path,
    opts: Options,
) -> Result<Built, BuildError> {
    let name = image.name.as_str();
    build_inner(catalog, image, id, ctx, store, opts).map_err(|kind| BuildError {
        image: name.to_owned(),
        kind,
    })
}

fn build_inner(
    catalog: &Catalog,
    image: &Image,
    id: &Identity,
    ctx: &RunContext,
    store: &Path,
    opts: Options,
) -> Result<Built, BuildErrorKind> {
    let name = image.name.as_str();
    let io = |p: &Path| {
        let p = p.to_path_buf();
        move |e| BuildErrorKind::io(p, e)
    };
    let dirs = Dirs::new(&catalog.base_dir());
    let env = build_env(image, id, ctx);
    let started_at = crate::provenance::now();
    let mut downloads = Vec::new();
    let mut manifests = Vec::new();
    let mut held: Option<Layout> = None;
    for ps in &image.platforms {
        tracing::info!(
            "{name}: building {} from {} source",
            ps.platform,
            ps.source.kind()
        );
        let material = fetch(
            &ps.source,
            &dirs,
            &env,
            id.recipe.downloads.get(&ps.platform.to_string()),
        )?;
        let mut recorded = recorded_disk_sha(id, ps, &material);
        let material = match (&image.disk, image.format) {
            (Some(change), Format::ContainerDisk | Format::Artifact) => {
                let changed = changed(material, recorded.as_ref(), change, &dirs)?;
                // The bytes packaged are imagepipe's own, just written.
                recorded = None;
                changed
            }
            _ => material,
        };
        if let (crate::catalog::Source::Url { url, .. }, Some(sha)) =
            (&ps.source, &material.source_sha256)
        {
            downloads.push((url.clone(), sha.clone()));
        }
        // The store is created only once there is something to put in it;
        // one value for the whole build, whose first write holds off a
        // cleanup's garbage collection until the build has tagged its image.
        let layout = match &held {
            Some(l) => l.clone(),
            None => held
                .insert(Layout::create(&store.join(name)).map_err(io(store))?)
                .clone(),
        }
        .mirrored(opts.streams.clone());
        let codec = Codec::new(image.compression(&catalog.defaults), opts.threads);
        let desc = package(
            &layout,
            codec,
            recorded.as_ref(),
            image,
            id,
            ctx,
            &ps.platform,
            &material,
        )?;
        manifests.push(desc);
    }
    let layout = match held {
        Some(l) => l,
        None => Layout::create(&store.join(name)).map_err(io(store))?,
    };
    let top = if manifests.len() == 1 {
        manifests.remove(0)
    } else {
        let index = json!({
            "schemaVersion": 2,
            "mediaType": media::INDEX,
            "manifests": manifests,
            "annotations": provenance(image, id, ctx, None),
        });
        let bytes = canonical_json(&index);
        let (digest, size) = layout.put_bytes(&bytes).map_err(io(layout.root()))?;
        Descriptor::new(media::INDEX, digest, size)
    };
    let (tag, mutable_tags) = match &id.tag {
        Some(t) => (t.clone(), id.mutable_tags.clone()),
        None => content_tags(catalog, image, ctx, &top.digest)?,
    };
    if let Some(existing) = layout.resolve_tag(&tag).map_err(io(layout.root()))?
        && existing.digest != top.digest
        && !opts.force
    {
        return Err(BuildErrorKind::NotReproducible {
            tag,
            existing: existing.digest,
            built: top.digest,
        });
    }
    // Build facts go into an attestation next to the image, never into it.
    let facts = crate::provenance::Facts {
        image: name,
        recipe_hash: &id.recipe.hash,
        recipe: &id.recipe.canonical,
        downloads,
        built_at: crate::provenance::build_time(ctx),
        started_at,
    };
    let statement = crate::provenance::statement(&top, &facts, ctx);
    crate::provenance::attach(&layout, &top, &statement, facts.built_at)
        .map_err(BuildErrorKind::Provenance)?;
    layout
        .set_tag(&tag, top.clone())
        .map_err(io(layout.root()))?;
    Ok(Built {
        image: name.into(),
        tag,
        mutable_tags,
        digest: top.digest.clone(),
        top,
    })
}

/// Tags of an unpinned recipe: `{hash}` is the built manifest's digest.
fn content_tags(
    catalog: &Catalog,
    image: &Image,
    ctx: &RunContext,
    digest: &Digest,
) -> Result<(String, Vec<String>), BuildErrorKind> {
    let vars: Vec<&str> = catalog.variables.iter().map(|v| v.name.as_str()).collect();
    let values = TagValues::new(&image.facts(), ctx, digest.hex());
    let mut tags = Vec::new();
    for raw in image.tag_templates(&catalog.defaults) {
        let t = Template::parse(raw, &vars)?;
        tags.push(t.render(|p| values.lookup(p))?);
    }
    let first = tags.remove(0);
    Ok((first, tags))
}

/// Environment and Packer variables handed to builders.
pub fn build_env(image: &Image, id: &Identity, ctx: &RunContext) -> BuildEnv {
    let mut vars = BTreeMap::new();
    let mut packer = BTreeMap::new();
    vars.insert(
        "SOURCE_DATE_EPOCH".to_owned(),
        ctx.image_epoch().to_string(),
    );
    vars.insert("IMAGEPIPE_IMAGE".to_owned(), image.name.value.clone());
    if let Some(tag) = &id.tag {
        vars.insert("IMAGEPIPE_TAG".to_owned(), tag.clone());
        packer.insert("image_tag".to_owned(), tag.clone());
    }
    if let Some(r) = ctx.release.as_ref().filter(|_| image.kubernetes) {
        for (env, var, value) in [
            ("KUBERNETES_SEMVER", "kubernetes_semver", r.kubernetes()),
            ("KUBERNETES_SERIES", "kubernetes_series", r.series()),
            (
                "KUBERNETES_DEB_VERSION",
                "kubernetes_deb_version",
                r.deb_version(),
            ),
        ] {
            vars.insert(env.to_owned(), value.clone());
            packer.insert(var.to_owned(), value);
        }
    }
    for (k, v) in &ctx.variables {
        vars.insert(
            format!("IMAGEPIPE_VAR_{}", k.to_ascii_uppercase()),
            v.clone(),
        );
        packer.insert(format!("{k}_version"), v.clone());
        packer.insert(k.clone(), v.clone());
    }
    for ps in &image.platforms {
        if let crate::catalog::Source::Packer(p) = &ps.source {
            let values = TagValues::new(&image.facts(), ctx, &id.recipe.hash);
            for (k, raw) in &p.vars {
                let rendered = Template::parse(raw, &[])
                    .ok()
                    .and_then(|t| render_loose(&t, &values))
                    .unwrap_or_else(|| raw.clone());
                packer.insert(k.clone(), rendered);
            }
        }
    }
    BuildEnv {
        vars,
        packer_vars: packer,
        epoch: ctx.image_epoch(),
    }
}

/// Renders a Packer variable template; unlike tags, values need not be OCI tags.
fn render_loose(t: &Template, values: &TagValues) -> Option<String> {
    let mut out = String::new();
    for seg in &t.segments {
        match seg {
            crate::template::Segment::Literal(s) => out.push_str(s),
            crate::template::Segment::Placeholder { name, len } => {
                let v = values.lookup(name).ok()?;
                out.push_str(&v[..len.unwrap_or(v.len()).min(v.len())]);
            }
        }
    }
    Some(out)
}

fn provenance(
    image: &Image,
    id: &Identity,
    ctx: &RunContext,
    source_sha256: Option<&str>,
) -> BTreeMap<String, String> {
    // The user's labels; imagepipe's keys are reserved (validate refuses them).
    let mut a = image.labels.clone();
    a.insert(
        annotation::CREATED.to_owned(),
        oci::rfc3339(ctx.image_epoch()),
    );
    a.insert(annotation::IMAGE.to_owned(), image.name.value.clone());
    a.insert(annotation::RECIPE.to_owned(), id.recipe.hash.clone());
    a.insert(
        annotation::VERSION.to_owned(),
        format!("{} {}", image.os.distro, image.os.version),
    );
    if let Some(r) = ctx.release.as_ref().filter(|_| image.kubernetes) {
        a.insert(annotation::KUBERNETES.to_owned(), r.kubernetes());
        for (name, key) in [
            ("runc", annotation::RUNC),
            ("containerd", annotation::CONTAINERD),
        ] {
            if let Some(v) = ctx.variables.get(name) {
                a.insert(key.to_owned(), v.clone());
            }
        }
    }
    if let Some(s) = source_sha256 {
        a.insert(annotation::SOURCE_SHA256.to_owned(), s.to_owned());
    }
    a
}

/// The sha256 the recipe was computed from for the disk file that is
/// packaged as it is: a `file` source that is a file, or a download kept as
/// downloaded. Packaging checks the bytes it reads against it.
fn recorded_disk_sha(
    id: &Identity,
    ps: &crate::catalog::PlatformSource,
    m: &Material,
) -> Option<Digest> {
    let sha = match &ps.source {
        crate::catalog::Source::File { .. } => id.recipe.files.get(&ps.platform.to_string())?,
        crate::catalog::Source::Url { url, .. }
            if crate::source::download_name(url).1.is_none() =>
        {
            m.source_sha256.as_ref()?
        }
        _ => return None,
    };
    Digest::from_hex(sha).ok()
}

/// The disk `change` makes of `m`, in scratch space of its own; `m` is
/// checked first, and against the sha256 the recipe has for it if any.
fn changed(
    m: Material,
    recorded: Option<&Digest>,
    change: &crate::catalog::DiskChange,
    dirs: &Dirs,
) -> Result<Material, BuildErrorKind> {
    let source = checked_disk(&m.path)?;
    if let Some(d) = recorded {
        layer::check_file(&m.path, d).map_err(|e| BuildErrorKind::io(&m.path, e))?;
    }
    let work = dirs.scratch()?;
    let out = work.path().join("disk");
    let started = std::time::Instant::now();
    let (format, size) = disk::apply(&m.path, &source, change, &out)?;
    tracing::info!(
        "{}: written as {} of {} bytes in {:.1}s",
        m.name,
        format.as_str(),
        size,
        started.elapsed().as_secs_f64()
    );
    Ok(Material {
        path: out,
        name: disk::renamed(&m.name, format),
        source_sha256: m.source_sha256.clone(),
        _work: Some(work),
    })
}

/// The disk image at `path`, checked; a directory is refused.
fn checked_disk(path: &Path) -> Result<disk::Disk, BuildErrorKind> {
    if path.is_dir() {
        return Err(BuildErrorKind::Unusable(format!(
            "{} is a directory; a containerdisk needs a disk image (qcow2 or raw)",
            path.display()
        )));
    }
    disk::check(path)
}

/// Packages one platform's material as a manifest in the layout.
#[allow(clippy::too_many_arguments)]
fn package(
    layout: &Layout,
    codec: Codec,
    recorded: Option<&Digest>,
    image: &Image,
    id: &Identity,
    ctx: &RunContext,
    platform: &Platform,
    m: &Material,
) -> Result<Descriptor, BuildErrorKind> {
    let io = |e| BuildErrorKind::io(layout.root(), e);
    let mtime = u64::try_from(ctx.image_epoch()).unwrap_or(0);
    let pb = crate::progress::bar(&image.name, 0);
    let started = std::time::Instant::now();
    let (config, layers, artifact_type) = match image.format {
        Format::ContainerDisk => {
            checked_disk(&m.path)?;
            let layer =
                layer::containerdisk_layer(layout, codec, &m.path, recorded, &m.name, mtime, &pb)
                    .map_err(|e| BuildErrorKind::io(&m.path, e))?;
            (
                image_config(layout, platform, ctx, &[&layer], None, &image.labels)?,
                vec![layer.descriptor],
                None,
            )
        }
        Format::Rootfs => {
            let layer = layer::tar_layer(layout, codec, |tar| {
                if m.path.is_dir() {
                    rootfs::append_dir(tar, &m.path, mtime)
                } else {
                    let plain = plain_tarball(&m.path)?;
                    rootfs::append_tarball(tar, plain.as_ref().map_or(&m.path, |p| p.path()), mtime)
                }
            })
            .map_err(|e| BuildErrorKind::io(&m.path, e))?;
            let runtime = image.config.as_ref().map(|c| c.to_json());
            (
                image_config(layout, platform, ctx, &[&layer], runtime, &image.labels)?,
                vec![layer.descriptor],
                None,
            )
        }
        Format::MachineImage => {
            return Err(BuildErrorKind::Unusable(
                "machine images are built in each cloud region by `publish`, not into the local store".into(),
            ));
        }
        Format::Artifact => {
            let fmt = disk::check(&m.path)?.format;
            let blob = layer::artifact_blob(layout, codec, &m.path, recorded, &m.name, &fmt, &pb)
                .map_err(|e| BuildErrorKind::io(&m.path, e))?;
            (
                layer::empty_config(layout).map_err(io)?,
                vec![blob],
                Some(media::DISK_ARTIFACT),
            )
        }
    };
    pb.finish_and_clear();
    let mut manifest = json!({
        "schemaVersion": 2,
        "mediaType": media::MANIFEST,
        "config": config,
        "layers": layers,
        "annotations": provenance(image, id, ctx, m.source_sha256.as_deref()),
    });
    if let Some(t) = artifact_type {
        manifest["artifactType"] = json!(t);
    }
    let bytes = canonical_json(&manifest);
    let mut desc = layer::json_blob(layout, media::MANIFEST, &bytes).map_err(io)?;
    desc.platform = Some(oci::Platform {
        architecture: platform.arch.clone(),
        os: platform.os.clone(),
        variant: platform.variant.clone(),
    });
    if let Some(t) = artifact_type {
        desc.artifact_type = Some(t.to_owned());
    }
    tracing::info!(
        "{}: {} packaged in {:.1}s",
        image.name.value,
        platform,
        started.elapsed().as_secs_f64()
    );
    Ok(desc)
}

fn image_config(
    layout: &Layout,
    platform: &Platform,
    ctx: &RunContext,
    layers: &[&layer::Layer],
    runtime: Option<serde_json::Value>,
    labels: &BTreeMap<String, String>,
) -> Result<Descriptor, BuildErrorKind> {
    let created = oci::rfc3339(ctx.image_epoch());
    let mut runtime = runtime.unwrap_or_else(|| json!({}));
    if !labels.is_empty() {
        runtime["Labels"] = json!(labels);
    }
    let mut config = json!({
        "architecture": platform.arch,
        "os": platform.os,
        "created": created,
        "config": runtime,
        "rootfs": { "type": "layers", "diff_ids": layers.iter().map(|l| l.diff_id.to_string()).collect::<Vec<_>>() },
        "history": [{ "created": created, "created_by": "imagepipe" }],
    });
    if let Some(v) = &platform.variant {
        config["variant"] = json!(v);
    }
    layer::json_blob(layout, media::CONFIG, &canonical_json(&config))
        .map_err(|e| BuildErrorKind::io(layout.root(), e))
}

/// A compressed tarball decompressed into a temporary file; `None` when already plain.
fn plain_tarball(path: &Path) -> std::io::Result<Option<tempfile::NamedTempFile>> {
    use std::io::Read;
    let mut magic = [0u8; 6];
    let n = std::fs::File::open(path)?.read(&mut magic)?;
    let magic = &magic[..n];
    let file = std::io::BufReader::new(std::fs::File::open(path)?);
    let mut reader: Box<dyn Read> = if magic.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::read::MultiGzDecoder::new(file))
    } else if magic.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        Box::new(liblzma::read::XzDecoder::new_multi_decoder(file))
    } else if magic.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Box::new(zstd::Decoder::new(file)?)
    } else {
        return Ok(None);
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .prefix(".rootfs-")
        .tempfile_in(std::env::temp_dir())
        .or_else(|_| tempfile::NamedTempFile::new_in(dir))?;
    std::io::copy(&mut reader, tmp.as_file_mut())?;
    Ok(Some(tmp))
}
