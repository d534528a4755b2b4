//! Recipes: the canonical description of everything that determines an
//! image's bytes, and its hash (`{hash}`). The encoding is documented in
//! `docs/identity.md`; changing it changes every tag, so it is versioned.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{Value, json};

use crate::catalog::{Catalog, Checksum, Image, Source};
pub use crate::context::{DEFAULT_EPOCH, RunContext, TagValues, date_yyyymmdd};
pub use crate::oci::hash::{hex, sha256_hex};
use crate::source::error::SourceError;
use crate::source::resolve::{Resolved, SourceResolver};

/// Version of the recipe encoding below.
pub const RECIPE_VERSION: u64 = 2;
/// Version of the image layout imagepipe writes (tar conventions, config, annotations).
pub const LAYOUT_VERSION: &str = "imagepipe-layout/4";

/// An image's recipe and its identity.
#[derive(Clone, Debug)]
pub struct Recipe {
    /// The canonical JSON whose sha256 is the hash.
    pub canonical: String,
    /// sha256 of `canonical`, lowercase hex.
    pub hash: String,
    /// The recipe does not pin its inputs (e.g. mmdebstrap from a moving mirror):
    /// the same recipe can give other bytes tomorrow.
    pub unpinned: Option<String>,
    /// The sha256 of each platform's `file` source that is a file (by
    /// platform): the bytes packaging must read.
    pub files: BTreeMap<String, String>,
    /// The checksum each platform's `url` source was resolved to (pinned,
    /// read from the lock, or from `checksums_url`): the download must
    /// match it. Resolved once, here; the build never resolves again.
    pub downloads: BTreeMap<String, crate::catalog::FileDigest>,
}

#[derive(Debug, thiserror::Error)]
#[error("image `{image}`: {source}")]
pub struct RecipeError {
    pub image: String,
    #[source]
    pub source: SourceError,
}

/// Resolves an image's sources and encodes its recipe.
pub fn recipe(
    catalog: &Catalog,
    image: &Image,
    ctx: &RunContext,
    resolver: &dyn SourceResolver,
) -> Result<Recipe, RecipeError> {
    let base = catalog.base_dir();
    let err = |source: SourceError| RecipeError {
        image: image.name.value.clone(),
        source,
    };
    let mut platforms = Vec::new();
    let mut unpinned = None;
    let mut uses_builder = false;
    let mut files = BTreeMap::new();
    let mut downloads = BTreeMap::new();
    for ps in &image.platforms {
        let (source, file, download) = source_identity(&ps.source, &base, resolver).map_err(err)?;
        if let Some(d) = download {
            downloads.insert(ps.platform.to_string(), d);
        }
        if let Some(sha256) = file {
            files.insert(ps.platform.to_string(), sha256);
        }
        if let Source::Mmdebstrap(m) = &ps.source
            && !m.is_pinned()
        {
            unpinned = Some("mmdebstrap mirror is not a snapshot mirror: packages move, so it is rebuilt every run".to_owned());
        }
        uses_builder |= matches!(ps.source, Source::Packer(_) | Source::Command(_));
        platforms.push(json!({ "platform": ps.platform.to_string(), "source": source }));
    }
    platforms.sort_by(|a, b| a["platform"].as_str().cmp(&b["platform"].as_str()));
    let kubernetes = match (&ctx.release, image.kubernetes) {
        (Some(r), true) => json!({ "version": r.kubernetes(), "deb": r.deb_version() }),
        _ => Value::Null,
    };
    let variables = if uses_builder {
        json!(ctx.variables)
    } else {
        Value::Null
    };
    let doc = json!({
        "recipe": RECIPE_VERSION,
        "layout": LAYOUT_VERSION,
        "name": image.name.value,
        "os": { "distro": image.os.distro, "version": image.os.version },
        "format": image.format.as_str(),
        "compression": image.compression(&catalog.defaults).canonical(),
        "kubernetes": kubernetes,
        "variables": variables,
        "platforms": platforms,
        "source_date_epoch": ctx.source_date_epoch,
    });
    // serde_json's default map is sorted by key, and `to_string` is compact:
    // that is the canonical form.
    let mut doc = doc;
    // Only present when set, so that images without it keep their hash.
    if let Some(c) = &image.config {
        doc["config"] = c.to_json();
    }
    if !image.labels.is_empty() {
        doc["labels"] = json!(image.labels);
    }
    if let Some(c) = &image.disk {
        doc["disk"] = json!({
            "format": c.format.map(|f| f.as_str()),
            "resize": c.resize.map(|r| r.canonical()),
            "writer": crate::builder::disk::WRITER,
        });
    }
    let canonical = doc.to_string();
    let hash = sha256_hex(canonical.as_bytes());
    Ok(Recipe {
        canonical,
        hash,
        unpinned,
        files,
        downloads,
    })
}

/// A source's part of the recipe, the sha256 of the file it packages as it
/// is (a `file` source that is a file), and the checksum a download must have.
fn source_identity(
    source: &Source,
    base: &Path,
    resolver: &dyn SourceResolver,
) -> Result<(Value, Option<String>, Option<crate::catalog::FileDigest>), SourceError> {
    let mut file = None;
    let mut download = None;
    let v = match source {
        Source::File { path } => {
            let Resolved { sha256, kind } = resolver.local(&base.join(path))?;
            if kind == "file" {
                file = Some(sha256.clone());
            }
            json!({ "kind": "file", "name": file_name(path), "entry": kind, "sha256": sha256 })
        }
        Source::Url { url, checksum, .. } => {
            let digest = match checksum {
                Checksum::Pinned(d) => d.clone(),
                Checksum::SumsUrl(sums) => resolver.checksum_from_sums(sums, url)?,
            };
            let (name, decompress) = crate::source::download_name(url);
            // `sha256` or `sha512`: the algorithm upstream publishes.
            let mut v = json!({ "kind": "url", "name": name, "decompress": decompress });
            v[digest.algorithm.name()] = json!(digest.hex);
            download = Some(digest);
            v
        }
        Source::Mmdebstrap(m) => {
            let mut packages = m.packages.clone();
            packages.sort();
            packages.dedup();
            json!({
                "kind": "mmdebstrap", "suite": m.suite, "variant": m.variant, "packages": packages,
                "components": m.components, "mirror": m.mirror, "pinned": m.is_pinned(),
            })
        }
        Source::Packer(p) => {
            let dir = p.dir(base);
            let mut v = json!({
                "kind": "packer",
                "template": input_file(&dir, &p.template, resolver)?,
                "vars": p.vars.iter().cloned().collect::<BTreeMap<_, _>>(),
                "inputs": inputs(&dir, &p.inputs, resolver)?,
                "artifact": p.artifact,
            });
            // Only when used: recipes without them keep their hash. The
            // runtime variables are not part of it.
            if !p.var_files.is_empty() {
                v["var_files"] = Value::Array(
                    p.var_files
                        .iter()
                        .map(|f| input_file(&dir, f, resolver))
                        .collect::<Result<_, _>>()?,
                );
            }
            if let Some(w) = &p.working_dir {
                v["working_dir"] = json!(w.display().to_string());
            }
            if let Some(n) = &p.name_var {
                v["name_var"] = json!(n);
            }
            v
        }
        Source::Command(c) => {
            let program = Path::new(&c.run[0]);
            let script = if c.run[0].contains('/') && base.join(program).is_file() {
                input_file(base, program, resolver)?
            } else {
                Value::Null
            };
            json!({
                "kind": "command", "run": c.run, "script": script,
                "inputs": inputs(base, &c.inputs, resolver)?, "artifact": c.artifact,
            })
        }
    };
    Ok((v, file, download))
}

fn input_file(
    base: &Path,
    rel: &Path,
    resolver: &dyn SourceResolver,
) -> Result<Value, SourceError> {
    let r = resolver.local(&base.join(rel))?;
    Ok(json!({ "path": slash_path(rel), "sha256": r.sha256 }))
}

fn inputs(
    base: &Path,
    globs: &[String],
    resolver: &dyn SourceResolver,
) -> Result<Value, SourceError> {
    let mut files: BTreeMap<String, String> = BTreeMap::new();
    for pattern in globs {
        let matched = crate::source::resolve::expand_glob(base, pattern)?;
        if matched.is_empty() {
            return Err(SourceError::Input {
                pattern: pattern.clone(),
                reason: format!("matches no file under {}", base.display()),
            });
        }
        for rel in matched {
            let r = resolver.local(&base.join(&rel))?;
            files.insert(slash_path(&rel), r.sha256);
        }
    }
    Ok(json!(files))
}

fn slash_path(p: &Path) -> String {
    p.components()
        .filter(|c| !matches!(c, std::path::Component::CurDir))
        .map(|c| c.as_os_str().to_string_lossy())
        .collect::<Vec<_>>()
        .join("/")
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}
