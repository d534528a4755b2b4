//! The facts of one run (release, variables, commit, pipeline, timestamps)
//! and the values tag placeholders render from them. Knows nothing of the
//! catalog: an image is described by its [`ImageFacts`].

use std::collections::BTreeMap;

use crate::release::Release;

/// The timestamp written into images when `SOURCE_DATE_EPOCH` is not set:
/// 1970-01-01T00:00:00Z, so that nothing of the run (commit, clock) reaches the bytes.
pub const DEFAULT_EPOCH: i64 = 0;

/// What tag placeholders know of an image.
#[derive(Clone, Debug)]
pub struct ImageFacts<'a> {
    pub name: &'a str,
    pub distro: &'a str,
    pub version: &'a str,
    /// The architectures of its platforms.
    pub arches: Vec<&'a str>,
}

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

/// The values of tag placeholders for one image in one run.
#[derive(Clone, Debug)]
pub struct TagValues {
    values: BTreeMap<String, Result<String, String>>,
}

impl TagValues {
    pub fn new(image: &ImageFacts<'_>, ctx: &RunContext, hash: &str) -> Self {
        let mut v: BTreeMap<String, Result<String, String>> = BTreeMap::new();
        let mut set = |k: &str, val: Result<String, String>| {
            v.insert(k.to_owned(), val);
        };
        set("name", Ok(image.name.to_owned()));
        set("distro", Ok(image.distro.to_owned()));
        set("version", Ok(image.version.to_owned()));
        let mut arches = image.arches.clone();
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
    pub fn sample(variables: BTreeMap<String, String>, image: &ImageFacts<'_>) -> Self {
        let ctx = RunContext {
            release: Release::parse("v1.34.10-rc.10").ok(),
            variables,
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
    crate::oci::timestamp(epoch).strftime("%Y%m%d").to_string()
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
