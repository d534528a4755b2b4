//! Every environment variable imagepipe reads, named in one place.
//!
//! The process environment is read once into [`Environment`]; the rest of the
//! code takes that value, so tests can pass their own.

use std::collections::BTreeMap;

/// GitLab CI: set only in tag pipelines; the release tag.
pub const CI_COMMIT_TAG: &str = "CI_COMMIT_TAG";
/// GitHub Actions: the branch or tag name; a release tag only when `GITHUB_REF_TYPE=tag`.
pub const GITHUB_REF_NAME: &str = "GITHUB_REF_NAME";
/// GitHub Actions: `tag` or `branch`.
pub const GITHUB_REF_TYPE: &str = "GITHUB_REF_TYPE";
/// GitLab CI: the commit being built (`{commit}`).
pub const CI_COMMIT_SHA: &str = "CI_COMMIT_SHA";
/// GitHub Actions: the commit being built (`{commit}`).
pub const GITHUB_SHA: &str = "GITHUB_SHA";
/// GitLab CI: the pipeline id (`{pipeline}`).
pub const CI_PIPELINE_ID: &str = "CI_PIPELINE_ID";
/// GitHub Actions: the workflow run id (`{pipeline}`).
pub const GITHUB_RUN_ID: &str = "GITHUB_RUN_ID";
/// GitLab CI: the pipeline's web page (provenance `invocationId`).
pub const CI_PIPELINE_URL: &str = "CI_PIPELINE_URL";
/// GitLab CI: the project's web page (provenance: the git repository).
pub const CI_PROJECT_URL: &str = "CI_PROJECT_URL";
/// GitHub Actions: `https://github.com` and `owner/name`, for run and repository URLs.
pub const GITHUB_SERVER_URL: &str = "GITHUB_SERVER_URL";
pub const GITHUB_REPOSITORY: &str = "GITHUB_REPOSITORY";
/// GitHub Actions sets it to `true`: HEAD then names the branch being built.
pub const GITHUB_ACTIONS: &str = "GITHUB_ACTIONS";
/// GitLab CI: the project's default branch (cleanup reads references from it).
pub const CI_DEFAULT_BRANCH: &str = "CI_DEFAULT_BRANCH";
/// Reproducible-builds convention: the timestamp written into images.
pub const SOURCE_DATE_EPOCH: &str = "SOURCE_DATE_EPOCH";
/// Conventional overrides of the pinned runc/containerd versions (declared per variable in the catalog).
pub const RUNC_VERSION: &str = "RUNC_VERSION";
pub const CONTAINERD_VERSION: &str = "CONTAINERD_VERSION";
/// Registry credentials: Docker's config directory and the podman/skopeo auth file.
pub const DOCKER_CONFIG: &str = "DOCKER_CONFIG";
pub const REGISTRY_AUTH_FILE: &str = "REGISTRY_AUTH_FILE";
/// Colon-separated directories of `<host[:port]>/*.crt` CA certificates for private
/// registries; default `/etc/containers/certs.d:/etc/docker/certs.d`.
pub const IMAGEPIPE_CERTS_DIR: &str = "IMAGEPIPE_CERTS_DIR";
/// GitHub Actions: file that step outputs are appended to (`plan` writes `matrix`, `images`, `has-work`, `release`).
pub const GITHUB_OUTPUT: &str = "GITHUB_OUTPUT";
/// GitHub Actions: Markdown job summary (`plan`, `publish` and `cleanup` append to it).
pub const GITHUB_STEP_SUMMARY: &str = "GITHUB_STEP_SUMMARY";
/// GitLab CI: registry credentials as the JSON of a Docker `config.json`.
pub const DOCKER_AUTH_CONFIG: &str = "DOCKER_AUTH_CONFIG";
/// The container image the generated GitLab child pipeline's jobs run in.
pub const IMAGEPIPE_CI_IMAGE: &str = "IMAGEPIPE_CI_IMAGE";
/// The QEMU binary `verify` runs (default `qemu-system-x86_64`).
pub const IMAGEPIPE_QEMU: &str = "IMAGEPIPE_QEMU";
/// The UEFI firmware (`OVMF_CODE*.fd`) `verify` boots `firmware: uefi` images with.
pub const IMAGEPIPE_OVMF: &str = "IMAGEPIPE_OVMF";
/// Seconds a transfer may go without receiving (or sending) a byte, and the
/// window over which at least 16 KiB must arrive; default 60.
pub const IMAGEPIPE_READ_TIMEOUT: &str = "IMAGEPIPE_READ_TIMEOUT";
/// Attempts per registry request (default 6): transient failures are retried
/// with capped exponential backoff until then; 1 turns retries off.
pub const IMAGEPIPE_RETRIES: &str = "IMAGEPIPE_RETRIES";
/// The first retry's delay (`200ms` by default, e.g. `50ms`, `2s`); each
/// further retry waits about twice as long, up to 10 s (or this, if longer).
pub const IMAGEPIPE_RETRY_BACKOFF: &str = "IMAGEPIPE_RETRY_BACKOFF";
/// Compression threads of `build` and `publish` (default: every core the
/// process may run on). It changes the speed, never the bytes.
pub const IMAGEPIPE_THREADS: &str = "IMAGEPIPE_THREADS";
/// Log filter for stderr (`info` by default; `debug`, `imagepipe=trace`, ...).
pub const IMAGEPIPE_LOG: &str = "IMAGEPIPE_LOG";
/// Set and not empty: no colour in the log (<https://no-color.org>).
pub const NO_COLOR: &str = "NO_COLOR";

/// A snapshot of the environment variables imagepipe reads.
#[derive(Clone, Debug, Default)]
pub struct Environment {
    vars: BTreeMap<String, String>,
}

impl Environment {
    pub fn from_process() -> Self {
        Self {
            vars: std::env::vars().collect(),
        }
    }

    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        Self {
            vars: pairs
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
        }
    }

    /// A variable's value when set and non-empty.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.vars
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    /// The release tag CI is building, if this is a tag pipeline.
    pub fn release_tag(&self) -> Option<&str> {
        self.get(CI_COMMIT_TAG).or_else(|| {
            let is_tag = self.get(GITHUB_REF_TYPE) == Some("tag");
            self.get(GITHUB_REF_NAME).filter(|_| is_tag)
        })
    }

    /// The commit CI is building, if CI says so.
    pub fn commit(&self) -> Option<&str> {
        self.get(CI_COMMIT_SHA).or_else(|| self.get(GITHUB_SHA))
    }

    pub fn pipeline(&self) -> Option<&str> {
        self.get(CI_PIPELINE_ID).or_else(|| self.get(GITHUB_RUN_ID))
    }

    /// The web page of this CI run, for provenance.
    pub fn pipeline_url(&self) -> Option<String> {
        self.get(CI_PIPELINE_URL).map(str::to_owned).or_else(|| {
            Some(format!(
                "{}/{}/actions/runs/{}",
                self.get(GITHUB_SERVER_URL)?,
                self.get(GITHUB_REPOSITORY)?,
                self.get(GITHUB_RUN_ID)?
            ))
        })
    }

    /// The web address of the repository being built, for provenance.
    pub fn repository_url(&self) -> Option<String> {
        self.get(CI_PROJECT_URL).map(str::to_owned).or_else(|| {
            Some(format!(
                "{}/{}",
                self.get(GITHUB_SERVER_URL)?,
                self.get(GITHUB_REPOSITORY)?
            ))
        })
    }

    /// `IMAGEPIPE_THREADS`: a positive number, or 0 (unset) for every core.
    pub fn threads(&self) -> Result<usize, String> {
        self.get(IMAGEPIPE_THREADS).map_or(Ok(0), |v| {
            v.trim()
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=1024).contains(n))
                .ok_or_else(|| {
                    format!("{IMAGEPIPE_THREADS}=`{v}` is not a number of threads from 1 to 1024 (unset it to use every core)")
                })
        })
    }

    /// `SOURCE_DATE_EPOCH`, when set; an unparsable value is an error.
    pub fn source_date_epoch(&self) -> Result<Option<i64>, String> {
        self.get(SOURCE_DATE_EPOCH)
            .map(|v| {
                v.trim().parse::<i64>().map_err(|_| {
                    format!("{SOURCE_DATE_EPOCH}=`{v}` is not a number of seconds since 1970")
                })
            })
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn github_ref_name_is_a_release_only_for_tags() {
        let branch =
            Environment::from_pairs([(GITHUB_REF_NAME, "main"), (GITHUB_REF_TYPE, "branch")]);
        assert_eq!(branch.release_tag(), None);
        let tag = Environment::from_pairs([(GITHUB_REF_NAME, "v1.33.6"), (GITHUB_REF_TYPE, "tag")]);
        assert_eq!(tag.release_tag(), Some("v1.33.6"));
        let gitlab = Environment::from_pairs([(CI_COMMIT_TAG, "v1.34.0")]);
        assert_eq!(gitlab.release_tag(), Some("v1.34.0"));
    }
}
