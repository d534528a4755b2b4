//! Settings resolution: flags, then the catalog, then the environment, one
//! rule; the flags every catalog command shares are declared here.

use std::collections::BTreeMap;
use std::path::PathBuf;

use clap::Args;

use crate::catalog::{self, Catalog, Image, Target};
use crate::env::Environment;
use crate::error::{Error, Result};
use crate::gitinfo;
use crate::plan::{self, Identity};
use crate::recipe;
use crate::recipe::RunContext;
use crate::release::Release;
use crate::source::resolve::DefaultResolver;

/// Options every catalog command takes.
#[derive(Debug, Args)]
pub struct Common {
    /// The catalog file.
    #[arg(
        short = 'c',
        long = "config",
        default_value = "images.yml",
        global = true
    )]
    pub config: PathBuf,
    /// Only these images (repeatable).
    #[arg(long = "only", value_name = "NAME")]
    pub only: Vec<String>,
    /// Only these targets (repeatable).
    #[arg(long = "target", value_name = "NAME")]
    pub target: Vec<String>,
}

/// Which Kubernetes release a run is for.
#[derive(Debug, Args, Default, Clone)]
pub struct ReleaseArgs {
    /// Kubernetes release tag (`v1.33.6`, `v1.34.0-rc.1`, `v1.33.6/runc-1.2.6`, `v1.33.6-runc-v1.2.9`); default: CI_COMMIT_TAG or GITHUB_REF_NAME in tag pipelines.
    #[arg(long = "release", value_name = "TAG")]
    pub tag: Option<String>,
    /// Not a release, whatever tag the CI environment names.
    #[arg(long, conflicts_with = "tag")]
    pub no_release: bool,
    /// A release tag whose comment contradicts a variable (`runc-1.2.7` with runc 1.2.6) is an error (exit 2), not a warning.
    #[arg(long)]
    pub strict: bool,
}

/// How to reach registries, as skopeo, crane and regctl users type it.
#[derive(Debug, Args, Default)]
pub struct RegistryArgs {
    /// A containers-auth.json / Docker config.json to read credentials from first.
    #[arg(long, value_name = "FILE")]
    pub authfile: Option<PathBuf>,
    /// Credentials for every registry of the run, `USER:PASSWORD` (prefer `--creds-stdin`).
    #[arg(long, value_name = "USER:PASSWORD", conflicts_with = "creds_stdin")]
    pub creds: Option<String>,
    /// Read `USER:PASSWORD` from the first line of standard input.
    #[arg(long)]
    pub creds_stdin: bool,
    /// A directory of `<host[:port]>/*.crt` CA certificates (repeatable; replaces the defaults).
    #[arg(long, value_name = "DIR")]
    pub cert_dir: Vec<PathBuf>,
}

/// What a catalog command runs with, resolved once by one rule — flags,
/// then the catalog, then the environment — before anything else happens.
pub struct Settings {
    pub catalog: Catalog,
    pub ctx: RunContext,
    /// `--only` (empty: every image of the run).
    pub only: Vec<String>,
    /// `--target` (empty: every target), checked against the catalog.
    pub target_names: Vec<String>,
    pub client: std::sync::Arc<crate::registry::Client>,
    /// `--offline`: nothing is fetched to resolve the images' recipes.
    pub offline: bool,
}

impl Settings {
    /// Checks the release first (a bad tag is exit 2 before anything is
    /// read), then loads the catalog, the run's facts and the registry client.
    pub fn resolve(
        common: &Common,
        release_args: &ReleaseArgs,
        env: &Environment,
        registry: Option<&RegistryArgs>,
        policy: Option<crate::registry::retry::Policy>,
    ) -> Result<Self> {
        let (catalog, ctx) = load(&common.config, release_args, env)?;
        select_targets(&catalog, &common.target)?;
        tracing::debug!(
            "{}: {} image(s), {} target(s); release {}",
            common.config.display(),
            catalog.images.len(),
            catalog.targets.len(),
            ctx.release
                .as_ref()
                .map_or_else(|| "none".to_owned(), |r| r.tag.clone())
        );
        Ok(Self {
            catalog,
            ctx,
            only: common.only.clone(),
            target_names: common.target.clone(),
            client: registry_client(env, registry, policy)?,
            offline: false,
        })
    }

    /// For commands that span every release (cleanup): no release is read,
    /// not even from the CI's tag variables.
    pub fn resolve_without_release(
        common: &Common,
        env: &Environment,
        registry: &RegistryArgs,
    ) -> Result<Self> {
        let catalog = catalog::load(&common.config)?;
        let ctx = run_context(&catalog, None, env)?;
        select_targets(&catalog, &common.target)?;
        Ok(Self {
            catalog,
            ctx,
            only: common.only.clone(),
            target_names: common.target.clone(),
            client: registry_client(env, Some(registry), None)?,
            offline: false,
        })
    }

    /// The targets this run works on.
    pub fn targets(&self) -> Vec<&Target> {
        select_targets(&self.catalog, &self.target_names).unwrap_or_default()
    }

    /// The images this run works on, with their recipes and tags.
    pub fn identities(&self) -> Result<Vec<(&Image, Identity)>> {
        identities(&self.catalog, &self.only, &self.ctx, self.offline)
    }
}

/// The release of this run: `--release` (which must parse), else the CI
/// tag when it names one, else none. A CI tag is not a release (and the
/// run says so in one line) when `--no-release` is given, when the catalog
/// has no `kubernetes: true` image, when it lacks the catalog's
/// `release.tag_prefix`, or when it does not parse, unless it names a
/// pre-release wrongly (`v1.33.6-rc1`), which is an error.
pub fn release(
    catalog: &Catalog,
    args: &ReleaseArgs,
    env: &Environment,
) -> Result<Option<Release>> {
    let prefix = catalog.release.tag_prefix.as_deref().unwrap_or("");
    if let Some(flag) = &args.tag {
        if !catalog.images.iter().any(|i| i.kubernetes) {
            return Err(Error::Usage(format!(
                "--release {flag}: the catalog has no `kubernetes: true` image, so there is nothing to build per release — drop --release"
            )));
        }
        let tag = flag.strip_prefix(prefix).unwrap_or(flag);
        return Release::parse(tag)
            .map(|r| Some(as_given(r, flag)))
            .map_err(|e| {
                Error::from(crate::release::ReleaseError {
                    tag: flag.escape_debug().to_string(),
                    ..e
                })
            });
    }
    let Some(tag) = env.release_tag().filter(|_| !args.no_release) else {
        return Ok(None);
    };
    let not_a_release = |why: String| {
        tracing::info!(
            "the CI tag `{tag}` is not a release ({why}): running as in a branch pipeline"
        );
        Ok(None)
    };
    if !catalog.images.iter().any(|i| i.kubernetes) {
        return not_a_release("the catalog has no `kubernetes: true` image".into());
    }
    let Some(rest) = tag.strip_prefix(prefix) else {
        return not_a_release(format!(
            "it does not start with the catalog's `release.tag_prefix` `{prefix}`"
        ));
    };
    match Release::parse(rest) {
        Ok(r) => Ok(Some(as_given(r, tag))),
        Err(e) if e.malformed_prerelease => Err(Error::from(e)),
        Err(e) => not_a_release(e.reason),
    }
}

/// The release, named by the git tag as written (its prefix included).
fn as_given(mut r: Release, tag: &str) -> Release {
    tag.clone_into(&mut r.tag);
    r
}

/// The catalog and the run context: the catalog is loaded, then the
/// release (flag or CI tag) is checked, then the run's facts resolved.
pub fn load(
    config: &std::path::Path,
    release_args: &ReleaseArgs,
    env: &Environment,
) -> Result<(Catalog, RunContext)> {
    let catalog = catalog::load(config)?;
    let release = release(&catalog, release_args, env)?;
    let ctx = run_context(&catalog, release, env)?;
    check_named_versions(&catalog, &ctx, release_args.strict)?;
    Ok((catalog, ctx))
}

/// A release tag whose comment names a component version (`runc-1.2.7`)
/// other than the variable's: a warning, an error with `--strict`.
fn check_named_versions(catalog: &Catalog, ctx: &RunContext, strict: bool) -> Result<()> {
    let Some(release) = &ctx.release else {
        return Ok(());
    };
    for (name, named) in release.named_versions() {
        let Some(value) = ctx.variables.get(&name) else {
            continue;
        };
        let bare = value.strip_prefix('v').unwrap_or(value);
        if bare == named {
            continue;
        }
        let from = catalog
            .variables
            .iter()
            .find(|v| v.name.value == name)
            .and_then(|v| v.env.clone())
            .map_or_else(
                || format!("the catalog's `{name}` variable"),
                |e| format!("`{e}` or the catalog's default"),
            );
        let msg = format!(
            "the release tag `{}` names {name} {named}, but {name} is {value} (from {from}): the images get {name} {value}; fix the tag or set the variable",
            release.tag
        );
        if strict {
            return Err(Error::Usage(format!("{msg} (--strict)")));
        }
        tracing::warn!("{msg}");
    }
    Ok(())
}

/// Everything recipes and tags need from the run.
pub fn run_context(
    catalog: &Catalog,
    release: Option<Release>,
    env: &Environment,
) -> Result<RunContext> {
    let variables: BTreeMap<String, String> = catalog
        .variables
        .iter()
        .map(|v| {
            let value = v
                .env
                .as_deref()
                .and_then(|e| env.get(e))
                .unwrap_or(&v.default);
            (v.name.value.clone(), value.to_owned())
        })
        .collect();
    let head = gitinfo::head(&catalog.base_dir());
    let source_date_epoch = env.source_date_epoch().map_err(Error::Usage)?;
    Ok(RunContext {
        release,
        variables,
        commit: env
            .commit()
            .map(str::to_owned)
            .or_else(|| head.as_ref().map(|h| h.commit.clone())),
        pipeline: env.pipeline().map(str::to_owned),
        pipeline_url: env.pipeline_url(),
        repository: env.repository_url(),
        source_date_epoch,
        commit_time: head.map(|h| h.time),
    })
}

/// Resolves only what a catalog pins itself (`url` sources with a checksum,
/// `checksums_url` over the network, `mmdebstrap`): a catalog read from
/// another branch has no checkout of that branch's files.
struct CatalogOnly;

impl crate::source::resolve::SourceResolver for CatalogOnly {
    fn local(
        &self,
        path: &std::path::Path,
    ) -> std::result::Result<crate::source::resolve::Resolved, crate::source::error::SourceError>
    {
        Err(crate::source::error::SourceError::Input {
            pattern: path.display().to_string(),
            reason: "a file of another branch, not checked out here".into(),
        })
    }

    fn checksum_from_sums(
        &self,
        sums_url: &str,
        url: &str,
    ) -> std::result::Result<catalog::FileDigest, crate::source::error::SourceError> {
        DefaultResolver.checksum_from_sums(sums_url, url)
    }
}

/// `(image, tag)` of the images whose tag is known, and `(image, why not)`.
pub type BranchTags = (Vec<(String, String)>, Vec<(String, String)>);

/// The immutable tag of every image the catalog `text` (read from a
/// branch, as if at `path`) builds, as `(image, tag)`; images whose recipe
/// needs that branch's files are left out, with why.
pub fn branch_tags(
    path: &std::path::Path,
    text: &str,
    env: &Environment,
) -> std::result::Result<BranchTags, String> {
    let catalog = catalog::load_text(path, text)
        .map_err(|e| format!("it does not validate ({} problem(s))", e.diagnostics.len()))?;
    let ctx = run_context(&catalog, None, env).map_err(|e| e.to_string())?;
    let mut tags = Vec::new();
    let mut left_out = Vec::new();
    for image in select_images(&catalog, &[], false).map_err(|e| e.to_string())? {
        let identity = recipe::recipe(&catalog, image, &ctx, &CatalogOnly)
            .map_err(|e| e.to_string())
            .and_then(|r| plan::identity(&catalog, image, &ctx, r).map_err(|e| e.to_string()));
        match identity {
            Ok(id) => tags.extend(id.tag.map(|t| (image.name.value.clone(), t))),
            Err(e) => left_out.push((image.name.value.clone(), e)),
        }
    }
    Ok((tags, left_out))
}

/// The images a run works on: release runs take the `kubernetes: true`
/// images, other runs the rest; `--only` narrows further.
pub fn select_images<'c>(
    catalog: &'c Catalog,
    only: &[String],
    release: bool,
) -> Result<Vec<&'c Image>> {
    let names: Vec<&str> = catalog.images.iter().map(|i| i.name.as_str()).collect();
    for name in only {
        match catalog.image(name) {
            None => {
                return Err(Error::Usage(format!(
                    "--only {name}: the catalog has no such image — {}",
                    catalog::diag::suggestion(name, &names)
                )));
            }
            Some(i) if i.kubernetes && !release => {
                return Err(Error::Usage(format!(
                    "--only {name}: this image is built per Kubernetes release — pass `--release vX.Y.Z`"
                )));
            }
            Some(i) if !i.kubernetes && release => {
                return Err(Error::Usage(format!(
                    "--only {name}: this image is not part of a release (it has no `kubernetes: true`) — drop `--release`"
                )));
            }
            Some(_) => {}
        }
    }
    Ok(catalog
        .images
        .iter()
        .filter(|i| i.kubernetes == release)
        .filter(|i| only.is_empty() || only.iter().any(|o| *o == *i.name))
        .collect())
}

pub fn select_targets<'c>(catalog: &'c Catalog, wanted: &[String]) -> Result<Vec<&'c Target>> {
    let names: Vec<&str> = catalog.targets.iter().map(|t| t.name.as_str()).collect();
    for name in wanted {
        if catalog.target(name).is_none() {
            return Err(Error::Usage(format!(
                "--target {name}: the catalog has no such target — {}",
                catalog::diag::suggestion(name, &names)
            )));
        }
    }
    Ok(catalog
        .targets
        .iter()
        .filter(|t| wanted.is_empty() || wanted.iter().any(|w| *w == *t.name))
        .collect())
}

/// The selected images with their recipes and rendered tags.
pub fn identities<'c>(
    catalog: &'c Catalog,
    only: &[String],
    ctx: &RunContext,
    offline: bool,
) -> Result<Vec<(&'c Image, Identity)>> {
    let images = select_images(catalog, only, ctx.release.is_some())?;
    // With a lock beside the catalog, `checksums_url` sources come from it.
    let lock = crate::lock::read(&catalog.path).map_err(Error::Usage)?;
    let locked = lock.as_ref().map(|l| crate::lock::Locked {
        lock: l,
        path: crate::lock::path_for(&catalog.path),
    });
    // The lock never fetches; without one, `--offline` fetches nothing either.
    let offline_resolver = crate::source::resolve::Offline(&DefaultResolver);
    let resolver: &dyn crate::source::resolve::SourceResolver = match &locked {
        Some(l) => l,
        None if offline => &offline_resolver,
        None => &DefaultResolver,
    };
    let mut out = Vec::with_capacity(images.len());
    for image in images {
        let r = recipe::recipe(catalog, image, ctx, resolver).map_err(|e| match &e.source {
            crate::source::error::SourceError::Lock { .. } => Error::Usage(e.to_string()),
            _ => Error::Failed(e.to_string()),
        })?;
        out.push((
            image,
            plan::identity(catalog, image, ctx, r).map_err(|e| Error::Usage(e.to_string()))?,
        ));
    }
    Ok(out)
}

/// The registry client: credentials and CA certificates from the environment.
pub fn registry_client(
    env: &Environment,
    flags: Option<&RegistryArgs>,
    policy: Option<crate::registry::retry::Policy>,
) -> Result<std::sync::Arc<crate::registry::Client>> {
    let mut keychain = crate::registry::auth::Keychain::from_env(env);
    if let Some(f) = flags {
        if let Some(file) = &f.authfile {
            let why = match std::fs::metadata(file) {
                Ok(m) if m.is_file() => None,
                Ok(m) if m.is_dir() => {
                    Some("is a directory: give the auth file itself (auth.json or config.json)")
                }
                Ok(_) => Some(
                    "is not a regular file (a FIFO or device is never read as credentials): give the auth file itself",
                ),
                Err(_) => Some("no such file"),
            };
            if let Some(why) = why {
                return Err(Error::Usage(format!(
                    "--authfile {}: {why}",
                    file.display()
                )));
            }
            keychain = keychain.with_first_file(file.clone());
        }
        let creds = match (&f.creds, f.creds_stdin) {
            (Some(c), _) => Some(c.clone()),
            (None, true) => {
                let mut line = String::new();
                std::io::stdin()
                    .read_line(&mut line)
                    .map_err(|e| Error::Usage(format!("--creds-stdin: {e}")))?;
                Some(line.trim_end_matches(['\r', '\n']).to_owned())
            }
            (None, false) => None,
        };
        if let Some(c) = creds {
            let (user, password) = c
                .split_once(':')
                .ok_or_else(|| Error::Usage("--creds: write `USER:PASSWORD`".into()))?;
            keychain = keychain.with_override(crate::registry::auth::Credential::Basic {
                username: user.to_owned(),
                password: crate::registry::auth::Secret::new(password),
            });
        }
    }
    let mut policy = policy.unwrap_or_default();
    if let Some(v) = env.get(crate::env::IMAGEPIPE_RETRIES) {
        policy.attempts = v
            .trim()
            .parse::<u32>()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| {
                Error::Usage(format!(
                    "{}={v}: write a number of attempts, 1 or more (1 turns retries off)",
                    crate::env::IMAGEPIPE_RETRIES
                ))
            })?;
    }
    if let Some(v) = env.get(crate::env::IMAGEPIPE_RETRY_BACKOFF) {
        policy.base = parse_delay(v).ok_or_else(|| {
            Error::Usage(format!(
                "{}={v}: write the first retry's delay as milliseconds or seconds, e.g. `50ms` or `2s`",
                crate::env::IMAGEPIPE_RETRY_BACKOFF
            ))
        })?;
        policy.cap = policy.cap.max(policy.base);
    }
    let client = crate::registry::Client::with_policy(keychain, policy);
    let flag_dirs = flags.map(|f| f.cert_dir.clone()).unwrap_or_default();
    Ok(std::sync::Arc::new(if !flag_dirs.is_empty() {
        client.with_cert_dirs(flag_dirs)
    } else {
        match env.get(crate::env::IMAGEPIPE_CERTS_DIR) {
            Some(dirs) => client.with_cert_dirs(
                dirs.split(':')
                    .filter(|d| !d.is_empty())
                    .map(std::path::PathBuf::from)
                    .collect(),
            ),
            None => client,
        }
    }))
}

/// `250ms` or `2s`.
fn parse_delay(v: &str) -> Option<std::time::Duration> {
    let v = v.trim();
    if let Some(ms) = v.strip_suffix("ms") {
        return ms.parse().ok().map(std::time::Duration::from_millis);
    }
    v.strip_suffix('s')?
        .parse()
        .ok()
        .map(std::time::Duration::from_secs)
}
