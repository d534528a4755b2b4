//! Recipes: the canonical description of everything that determines an
//! image's bytes, and its hash (`{hash}`). The encoding is documented in
//! `docs/identity.md`; changing it changes every tag, so it is versioned.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

use crate::catalog::{Catalog, Checksum, Image, Source};
use crate::release::Release;
use crate::source::resolve::{Resolved, SourceResolver};

/// Version of the recipe encoding below.
pub const RECIPE_VERSION: u64 = 2;
/// Version of the image layout imagepipe writes (tar conventions, config, annotations).
pub const LAYOUT_VERSION: &str = "imagepipe-layout/2";
/// The timestamp written into images when `SOURCE_DATE_EPOCH` is not set:
/// 1970-01-01T00:00:00Z, so that nothing of the run (commit, clock) reaches the bytes.
pub const DEFAULT_EPOCH: i64 = 0;

/// The facts of one run that recipes and tags draw on.
#[derive(Clone, Debug, Default)]
pub struct RunContext {
    pub release: Option<Release>,
    /// Catalog variables after environment overrides.
    pub variables: BTreeMap<String, String>,
    pub commit: Option<String>,
    pub pipeline: Option<String>,
    /// The CI run's web page and the repository's address (provenance only).
    pub pipeline_url: Option<String>,
    pub repository: Option<String>,
    /// `SOURCE_DATE_EPOCH`, when set: the images' timestamp, and part of every recipe.
    pub source_date_epoch: Option<i64>,
    /// Committer time of the catalog's `HEAD`, for `{date}` only (never in image bytes).
    pub commit_time: Option<i64>,
}

impl RunContext {
    /// Seconds since 1970 written into images: `SOURCE_DATE_EPOCH`, else [`DEFAULT_EPOCH`].
    pub fn image_epoch(&self) -> i64 {
        self.source_date_epoch.unwrap_or(DEFAULT_EPOCH)
    }

    /// The time `{date}` renders: `SOURCE_DATE_EPOCH`, else the commit time, else 0.
    pub fn date_epoch(&self) -> i64 {
        self.source_date_epoch.or(self.commit_time).unwrap_or(0)
    }
}

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
}

#[derive(Debug, thiserror::Error)]
#[error("image `{image}`: {message}")]
pub struct RecipeError {
    pub image: String,
    pub message: String,
}

/// Resolves an image's sources and encodes its recipe.
pub fn recipe(
    catalog: &Catalog,
    image: &Image,
    ctx: &RunContext,
    resolver: &dyn SourceResolver,
) -> Result<Recipe, RecipeError> {
    let base = catalog.base_dir();
    let err = |message: String| RecipeError {
        image: image.name.value.clone(),
        message,
    };
    let mut platforms = Vec::new();
    let mut unpinned = None;
    let mut uses_builder = false;
    for ps in &image.platforms {
        let source = source_identity(&ps.source, &base, resolver).map_err(err)?;
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
    let canonical = doc.to_string();
    let hash = sha256_hex(canonical.as_bytes());
    Ok(Recipe {
        canonical,
        hash,
        unpinned,
    })
}

fn source_identity(
    source: &Source,
    base: &Path,
    resolver: &dyn SourceResolver,
) -> Result<Value, String> {
    Ok(match source {
        Source::File { path } => {
            let full = base.join(path);
            let Resolved { sha256, kind } = resolver.local(&full)?;
            json!({ "kind": "file", "name": file_name(path), "entry": kind, "sha256": sha256 })
        }
        Source::Url { url, checksum } => {
            let sha256 = match checksum {
                Checksum::Sha256(hex) => hex.clone(),
                Checksum::SumsUrl(sums) => resolver.checksum_from_sums(sums, url)?,
            };
            let (name, decompress) = crate::source::download_name(url);
            json!({ "kind": "url", "name": name, "decompress": decompress, "sha256": sha256 })
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
        Source::Packer(p) => json!({
            "kind": "packer",
            "template": input_file(base, &p.template, resolver)?,
            "vars": p.vars.iter().cloned().collect::<BTreeMap<_, _>>(),
            "inputs": inputs(base, &p.inputs, resolver)?,
            "artifact": p.artifact,
        }),
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
    })
}

fn input_file(base: &Path, rel: &Path, resolver: &dyn SourceResolver) -> Result<Value, String> {
    let r = resolver.local(&base.join(rel))?;
    Ok(json!({ "path": slash_path(rel), "sha256": r.sha256 }))
}

fn inputs(base: &Path, globs: &[String], resolver: &dyn SourceResolver) -> Result<Value, String> {
    let mut files: BTreeMap<String, String> = BTreeMap::new();
    for pattern in globs {
        let matched = crate::source::resolve::expand_glob(base, pattern)?;
        if matched.is_empty() {
            return Err(format!(
                "input `{pattern}` matches no file under {}",
                base.display()
            ));
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

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// The values of tag placeholders for one image in one run.
#[derive(Clone, Debug)]
pub struct TagValues {
    values: BTreeMap<String, Result<String, String>>,
}

impl TagValues {
    pub fn new(image: &Image, ctx: &RunContext, hash: &str) -> Self {
        let mut v: BTreeMap<String, Result<String, String>> = BTreeMap::new();
        let mut set = |k: &str, val: Result<String, String>| {
            v.insert(k.to_owned(), val);
        };
        set("name", Ok(image.name.value.clone()));
        set("distro", Ok(image.os.distro.clone()));
        set("version", Ok(image.os.version.clone()));
        let mut arches: Vec<&str> = image
            .platforms
            .iter()
            .map(|p| p.platform.arch.as_str())
            .collect();
        arches.sort_unstable();
        arches.dedup();
        set("arch", Ok(arches.join("-")));
        let no_release =
            || Err("no release: pass `--release vX.Y.Z` or run in a tag pipeline".to_owned());
        set(
            "kubernetes",
            ctx.release
                .as_ref()
                .map(Release::kubernetes)
                .map_or_else(no_release, Ok),
        );
        set(
            "kubernetes_series",
            ctx.release
                .as_ref()
                .map(Release::series)
                .map_or_else(no_release, Ok),
        );
        for name in ["runc", "containerd"] {
            set(name, Err(format!("the catalog has no `{name}` variable")));
        }
        for (k, val) in &ctx.variables {
            set(k, Ok(val.clone()));
        }
        set("hash", Ok(hash.to_owned()));
        set(
            "commit",
            ctx.commit.clone().ok_or_else(|| {
                "no commit: run inside a git repository or set CI_COMMIT_SHA / GITHUB_SHA"
                    .to_owned()
            }),
        );
        set(
            "pipeline",
            ctx.pipeline
                .clone()
                .ok_or_else(|| "no pipeline id: set CI_PIPELINE_ID or GITHUB_RUN_ID".to_owned()),
        );
        set("date", Ok(date_yyyymmdd(ctx.date_epoch())));
        Self { values: v }
    }

    /// Representative values, to check at validation time that templates render.
    pub fn sample(catalog: &Catalog, image: &Image) -> Self {
        let ctx = RunContext {
            release: Release::parse("v1.34.10-rc.10").ok(),
            variables: catalog
                .variables
                .iter()
                .map(|v| (v.name.value.clone(), v.default.clone()))
                .collect(),
            commit: Some("0123456789abcdef0123456789abcdef01234567".into()),
            pipeline: Some("1234567890".into()),
            pipeline_url: None,
            repository: None,
            source_date_epoch: None,
            commit_time: None,
        };
        Self::new(image, &ctx, &"0123456789abcdef".repeat(4))
    }

    pub fn lookup(&self, name: &str) -> Result<String, String> {
        self.values
            .get(name)
            .cloned()
            .unwrap_or_else(|| Err(format!("unknown placeholder `{name}`")))
    }
}

/// `YYYYMMDD` (UTC) of a Unix time, for `{date}`.
pub fn date_yyyymmdd(epoch: i64) -> String {
    // Civil-from-days, Howard Hinnant's algorithm.
    let days = epoch.div_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!("{y:04}{m:02}{d:02}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(date_yyyymmdd(0), "19700101");
        assert_eq!(date_yyyymmdd(1_700_000_000), "20231114");
        assert_eq!(date_yyyymmdd(951_782_400), "20000229");
    }
}
