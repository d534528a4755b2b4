//! Cleanup: reading what a store holds, and applying a retention plan
//! safely (re-checked digests, a deletion cap, tag-only removal), through
//! [`Store`]: a registry repository and a layout are cleaned alike.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;

use crate::env::Environment;
use crate::error::Error;
use crate::gitrefs;
use crate::retention::{References, Repo, Rules};
use crate::settings::Settings;

use crate::oci::{Digest, Manifest, Reference, annotation};
use crate::retention::{Item, Plan, TagInfo};
use crate::store::Store;

/// Requests in flight at once while listing or deleting.
pub const CONCURRENCY: usize = crate::registry::client::PARALLEL_REQUESTS;
/// Deletions in flight at once (each is a few small requests; the registry,
/// not the client, is the limit).
pub const DELETE_CONCURRENCY: usize = 16;

/// Every tag of a store with its digest, creation time and provenance.
/// Any failure fails the whole listing: a partial list must not be judged.
///
/// An image's age is the build time its provenance attestation records,
/// read from the referrers tag (`sha256-<hex>`, listed like any tag, so it
/// costs no extra request) or, where the store indexes referrers itself
/// (the referrers API, a layout's `index.json`), from there; images without
/// an attestation fall back to their `created`.
pub fn list(store: &dyn Store) -> Result<Vec<TagInfo>, String> {
    let tags = store.list_tags().map_err(|e| e.to_string())?;
    let mut out = crate::pool::map(&tags, CONCURRENCY, |tag| describe(store, tag))
        .into_iter()
        .collect::<Result<Vec<_>, _>>()?;
    let mut attested: BTreeMap<Digest, i64> = out
        .iter()
        .filter_map(|t| Some((t.subject.clone()?, t.attested?)))
        .collect();
    // Stores with a referrers index keep no referrers tags: ask it, once
    // per image, and stop at the first answer that it is not offered.
    let listed: std::collections::BTreeSet<Digest> =
        out.iter().filter_map(|t| t.subject.clone()).collect();
    let mut unasked: Vec<Digest> = out
        .iter()
        .filter(|t| t.built_by_us.is_some() && !listed.contains(&t.digest))
        .map(|t| t.digest.clone())
        .collect();
    unasked.sort();
    unasked.dedup();
    if let Some(first) = unasked.first()
        && let Some(list) = store.indexed_referrers(first).map_err(|e| e.to_string())?
    {
        if let Some(t) = crate::provenance::built_at(&list) {
            attested.insert(first.clone(), t);
        }
        let rest = crate::pool::map(&unasked[1..], CONCURRENCY, |d| {
            store.indexed_referrers(d).map(|l| (d.clone(), l))
        });
        for r in rest {
            let (d, list) = r.map_err(|e| e.to_string())?;
            if let Some(t) = list.as_deref().and_then(crate::provenance::built_at) {
                attested.insert(d, t);
            }
        }
    }
    for t in &mut out {
        match attested.get(&t.digest) {
            Some(at) => t.created = Some(*at),
            // Our images carry the fixed default timestamp in their bytes:
            // without an attestation their age is unknown, not 1970.
            None if t.built_by_us.is_some() && t.created == Some(crate::recipe::DEFAULT_EPOCH) => {
                t.created = None;
            }
            None => {}
        }
    }
    // Referrers tags whose image no tag or index lists any more: is the
    // image's manifest itself gone (garbage-collected)?
    let listed: std::collections::BTreeSet<Digest> = out
        .iter()
        .flat_map(|t| std::iter::once(t.digest.clone()).chain(t.children.iter().cloned()))
        .collect();
    let orphans: Vec<usize> = out
        .iter()
        .enumerate()
        .filter(|(_, t)| t.subject.as_ref().is_some_and(|s| !listed.contains(s)))
        .map(|(i, _)| i)
        .collect();
    let gone = crate::pool::map(&orphans, CONCURRENCY, |i| {
        let subject = out[*i].subject.clone().expect("filtered on subject");
        store.resolve(&(&subject).into()).map(|m| m.is_none())
    });
    for (i, g) in orphans.iter().zip(gone) {
        out[*i].subject_gone = g.map_err(|e| e.to_string())?;
    }
    out.sort_by(|a, b| a.tag.cmp(&b.tag));
    Ok(out)
}

fn describe(store: &dyn Store, tag: &str) -> Result<TagInfo, String> {
    let (desc, bytes) = store
        .get_manifest(&Reference::tag(tag))
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("{}:{tag} vanished while listing", store.reference()))?;
    let m = Manifest::parse(&bytes)
        .map_err(|e| format!("{}:{tag}: manifest is not valid: {e}", store.reference()))?;
    // A referrers tag: the index lists the attestations of its subject.
    let subject = crate::store::referrers::subject_of(tag);
    let attested = subject
        .as_ref()
        .and_then(|_| crate::provenance::built_at(&m.manifests));
    Ok(TagInfo {
        tag: tag.to_owned(),
        digest: desc.digest,
        created: m
            .annotation(annotation::CREATED)
            .and_then(crate::oci::parse_rfc3339),
        built_by_us: m.annotation(annotation::IMAGE).map(str::to_owned),
        children: m.manifests.iter().map(|d| d.digest.clone()).collect(),
        size: m.content_size(),
        subject,
        attested,
        subject_gone: false,
    })
}

/// What became of one planned deletion.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// The manifest was deleted (with every tag on it, all planned).
    Deleted,
    /// Only the tag was removed.
    Untagged,
    /// Not deleted: it moved, is gone, or its image survived.
    Skipped,
    Failed,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Deleted => "deleted",
            Self::Untagged => "untagged",
            Self::Skipped => "skipped",
            Self::Failed => "failed",
        }
    }
}

/// What happened to one planned deletion.
#[derive(Clone, Debug, Serialize, schemars::JsonSchema)]
pub struct Applied {
    pub target: String,
    pub repository: String,
    pub tag: String,
    pub digest: Digest,
    pub result: Outcome,
    pub detail: String,
}

/// The number of deletions a plan asks for: one per tag.
pub fn deletion_count(plan: &Plan) -> usize {
    plan.deletions().count()
}

/// Applies the deletions of a plan, tag by tag, through the stores the
/// plan's repositories name (by [`Store::reference`]): each tag's digest is
/// read again right before (a tag that moved since planning, or is gone, is
/// skipped), then that tag alone is removed; other tags on the same image,
/// including ones the plan never saw, are untouched. A referrers tag is
/// removed only once its image's manifest is gone from the registry. Each
/// store then finishes its deletions (a registry's batched throwaway
/// manifest; a layout's unreferenced referrers and blobs).
pub fn apply(
    stores: &BTreeMap<String, Box<dyn Store>>,
    plan: &Plan,
    audit: &(dyn Fn(&Applied) + Sync),
) -> (Vec<Applied>, Vec<Collected>) {
    let work: Vec<&Item> = plan.deletions().collect();
    let mut out: Vec<(Applied, bool)> =
        crate::pool::map(&work, DELETE_CONCURRENCY, |i| {
            match stores.get(&i.repository) {
                Some(store) => delete_one(store.as_ref(), i),
                None => (applied(i, Outcome::Failed, "repository not listed"), false),
            }
        });
    let mut collected = Vec::new();
    for (name, store) in stores {
        if !out.iter().any(|(a, _)| a.repository == *name) {
            continue;
        }
        let finished = store.finish_deletes();
        if let Ok(f) = &finished
            && let Some(c) = f.collected
        {
            collected.push(Collected {
                repository: name.clone(),
                collected: c,
            });
        }
        // Tags pointed at the throwaway manifest: its one DELETE removed
        // them all, which each is read back to confirm.
        let batched: Vec<usize> = (0..out.len())
            .filter(|&k| out[k].1 && out[k].0.repository == *name)
            .collect();
        let checked = crate::pool::map(&batched, DELETE_CONCURRENCY, |&k| {
            let a = out[k].0.clone();
            match &finished {
                Err(e) => Applied {
                    result: Outcome::Failed,
                    detail: format!(
                        "{}, but the registry did not delete that manifest ({e}): delete it by hand",
                        a.detail
                    ),
                    ..a
                },
                Ok(f) => {
                    let planned = a.digest.clone();
                    let removed: Vec<&Digest> = f.throwaway.iter().chain([&planned]).collect();
                    confirmed(store.as_ref(), a, &removed)
                }
            }
        });
        for (k, a) in batched.into_iter().zip(checked) {
            out[k].0 = a;
        }
    }
    let mut out: Vec<Applied> = out.into_iter().map(|(a, _)| a).collect();
    for a in &out {
        audit(a);
    }
    out.sort_by(|a, b| (&a.repository, &a.tag).cmp(&(&b.repository, &b.tag)));
    (out, collected)
}

/// What a layout's garbage collection removed after its tags went.
#[derive(Clone, Debug, Serialize, schemars::JsonSchema)]
pub struct Collected {
    pub repository: String,
    /// `None`: another run was writing to the layout; collected next time.
    pub collected: Option<crate::store::layout::Collected>,
}

fn applied(i: &Item, result: Outcome, detail: impl Into<String>) -> Applied {
    Applied {
        target: i.target.clone(),
        repository: i.repository.clone(),
        tag: i.tag.clone(),
        digest: i.digest.clone(),
        result,
        detail: detail.into(),
    }
}

/// One deletion, and whether it waits for the store's `finish_deletes`.
fn delete_one(store: &dyn Store, i: &Item) -> (Applied, bool) {
    let done = |result, detail: String| (applied(i, result, detail), false);
    match store.resolve(&Reference::tag(&i.tag)) {
        Ok(Some(d)) if d.digest == i.digest => {}
        Ok(Some(d)) => {
            return done(
                Outcome::Skipped,
                format!("moved to {} since planning", d.digest),
            );
        }
        Ok(None) => return done(Outcome::Skipped, "already gone".into()),
        Err(e) => return done(Outcome::Failed, e.to_string()),
    }
    if let Some(subject) = &i.subject {
        match store.resolve(&subject.into()) {
            Ok(None) => {}
            Ok(Some(_)) => {
                return done(
                    Outcome::Skipped,
                    "its image is still on the registry (until garbage collection)".into(),
                );
            }
            Err(e) => return done(Outcome::Failed, e.to_string()),
        }
    }
    match store.delete_tag(&i.tag) {
        Ok(u) if u.batched => (applied(i, Outcome::Untagged, u.how), true),
        Ok(u) => (
            confirmed(store, applied(i, Outcome::Untagged, u.how), &[&i.digest]),
            false,
        ),
        Err(e) => done(Outcome::Failed, e.to_string()),
    }
}

/// `a` after reading its tag back: gone, or naming another image (pushed
/// again since), is removed; still naming one of `removed` means the
/// store said yes and did nothing, and the deletion failed.
fn confirmed(store: &dyn Store, mut a: Applied, removed: &[&Digest]) -> Applied {
    match store.resolve(&Reference::tag(&a.tag)) {
        Ok(None) => {}
        Ok(Some(d)) if removed.contains(&&d.digest) => {
            a.result = Outcome::Failed;
            a.detail = format!(
                "the registry answered the deletion with success but still serves {} → {}: the tag was not removed",
                a.tag, d.digest
            );
        }
        Ok(Some(d)) => {
            a.detail = format!(
                "{}; the tag was pushed again since and names {}",
                a.detail, d.digest
            );
        }
        Err(e) => {
            a.result = Outcome::Failed;
            a.detail = format!("{}, but reading the tag back failed: {e}", a.detail);
        }
    }
    a
}

/// What `cleanup` works from: the retention plan over every managed
/// repository, the stores it was listed from (by their reference), and
/// the deletion cap.
pub struct Prepared {
    pub plan: Plan,
    pub stores: BTreeMap<String, Box<dyn Store>>,
    pub max_delete: u64,
}

/// Reads git (fail closed: an unreadable branch deletes nothing) and every
/// managed repository of the run's targets, and plans what retention keeps.
pub fn prepare(
    s: &Settings,
    config: &Path,
    env: &Environment,
    now: i64,
) -> Result<Prepared, Error> {
    let (catalog, client) = (&s.catalog, &s.client);
    let Some(ret) = &catalog.retention else {
        return Err(Error::Usage(format!(
            "{}: no `retention:` section, so nothing can be cleaned up — see docs/cleanup.md",
            config.display()
        )));
    };
    let targets = s.targets();
    let names: Vec<String> = s.only.clone();
    for n in &names {
        if catalog.image(n).is_none() {
            return Err(Error::Usage(format!(
                "--only {n}: the catalog has no such image"
            )));
        }
    }
    let base = catalog.base_dir();

    // Git references (fail closed: an unreadable branch deletes nothing),
    // and the immutable tags each kept branch's catalog builds.
    let mut branch_built = BTreeMap::new();
    let (refs, git_error, unsupported) = match &ret.git {
        None => (References::default(), None, Vec::new()),
        Some(g) => {
            let repo_dir = base.join(&g.repo);
            let in_repo = std::path::absolute(config)
                .ok()
                .and_then(|p| p.canonicalize().ok())
                .zip(repo_dir.canonicalize().ok())
                .and_then(|(cfg, repo)| {
                    cfg.strip_prefix(repo)
                        .ok()
                        .map(|r| r.to_string_lossy().into_owned())
                });
            let branches: Vec<String> = g.branches.iter().map(|b| b.value.clone()).collect();
            let paths: Vec<String> = g.paths.iter().map(|p| p.value.clone()).collect();
            let default_branch = match (&g.default_branch, env.get(crate::env::CI_DEFAULT_BRANCH)) {
                (Some(b), _) => Some((b.as_str(), "retention.git.default_branch")),
                (None, Some(b)) => Some((b, crate::env::CI_DEFAULT_BRANCH)),
                (None, None) => None,
            };
            let rules = gitrefs::Rules {
                branches: &branches,
                supported: g.supported_releases,
                paths: &paths,
                default_branch,
                release_pattern: &g.release_pattern,
                head_fallback: env.get(crate::env::GITHUB_ACTIONS) != Some("true"),
                catalog: in_repo.as_deref(),
            };
            match gitrefs::scan(&repo_dir, &rules) {
                Ok(scan) => {
                    tracing::info!(
                        "git: default branch {} ({})",
                        scan.default_branch,
                        scan.default_from
                    );
                    for b in &scan.branches {
                        tracing::info!(
                            "git: {} ({}): {} file(s) scanned",
                            b.branch,
                            b.reference,
                            b.files.len()
                        );
                    }
                    branch_built = branch_tags(&scan, config, env);
                    (References::from_scan(&scan), None, scan.unsupported)
                }
                Err(e) => (References::default(), Some(e.to_string()), Vec::new()),
            }
        }
    };

    // The immutable tag each image builds now is never expired (a revert
    // brings an old recipe back, and `latest` with it).
    let current = |name: &str| -> Vec<String> {
        let mut tags = branch_built.get(name).cloned().unwrap_or_default();
        match crate::settings::identities(catalog, &[name.to_owned()], &s.ctx, false) {
            Ok(ids) => tags.extend(ids.into_iter().filter_map(|(_, id)| id.tag)),
            Err(e) => {
                tracing::warn!(
                    "{name}: cannot tell which tag the catalog builds now ({e}); its tags are judged by the other rules"
                );
            }
        }
        tags.sort();
        tags.dedup();
        tags
    };

    // What each store holds, per managed repository: registries and layouts alike.
    let mut repos = Vec::new();
    let mut stores: BTreeMap<String, Box<dyn Store>> = BTreeMap::new();
    for image in catalog
        .images
        .iter()
        .filter(|i| names.is_empty() || names.contains(&i.name.value))
    {
        let now_built = current(&image.name.value);
        for t in targets.iter().filter(|t| image.goes_to(t)) {
            let Some(store) = crate::store::open(t, &image.name, &base, client) else {
                continue;
            };
            let reference = store.reference();
            tracing::info!("listing {reference}");
            let vars: Vec<&str> = catalog.variables.iter().map(|v| v.name.as_str()).collect();
            let templates = image
                .tag_templates(&catalog.defaults)
                .iter()
                .filter_map(|t| crate::template::Template::parse(t, &vars).ok())
                .map(|t| t.matcher(&image.facts()))
                .collect();
            repos.push(Repo {
                target: t.name.value.clone(),
                repository: reference.clone(),
                // What references name: `namespace/name` on a registry; a
                // layout's images by their name.
                path: store
                    .registry_repository()
                    .map_or_else(|| image.name.value.clone(), |r| r.path.clone()),
                image: image.name.value.clone(),
                templates,
                current: now_built.clone(),
                tags: list(store.as_ref()),
            });
            stores.insert(reference, store);
        }
    }
    let mut protect = globset::GlobSetBuilder::new();
    for p in &ret.protect {
        protect.add(globset::Glob::new(p).map_err(|e| Error::Usage(e.to_string()))?);
    }
    let rules = Rules {
        keep_last: ret.keep_last,
        max_age_secs: ret.max_age.as_ref().map(|d| d.value.as_secs()),
        protect: protect.build().map_err(|e| Error::Usage(e.to_string()))?,
    };
    let plan = crate::retention::plan(
        &repos,
        &refs,
        &rules,
        now,
        git_error.as_deref(),
        &unsupported,
    );
    Ok(Prepared {
        plan,
        stores,
        max_delete: ret.max_delete,
    })
}

/// What applying a cleanup did.
#[derive(Debug, Default)]
pub struct Executed {
    pub applied: Vec<Applied>,
    pub collected: Vec<Collected>,
    /// A deletion failed, or nothing was applied because the plan has
    /// errors or deletes more than the cap.
    pub failed: bool,
}

/// Applies a prepared plan: nothing when it has errors (fail closed) or
/// deletes more tags than `max_delete` (the flag, else the catalog's);
/// else every deletion, each reported to `audit` as it is done.
pub fn execute(
    p: &Prepared,
    max_delete: Option<u64>,
    audit: &(dyn Fn(&Applied) + Sync),
) -> Executed {
    let limit = max_delete.unwrap_or(p.max_delete);
    let count = deletion_count(&p.plan);
    if count as u64 > limit {
        tracing::error!(
            "the plan deletes {count} tags, more than max_delete {limit}: nothing deleted (raise it with --max-delete {count} after checking the plan)"
        );
        return Executed {
            failed: true,
            ..Executed::default()
        };
    }
    if !p.plan.errors.is_empty() {
        tracing::error!("not applying: the plan has errors (fail closed)");
        return Executed {
            failed: true,
            ..Executed::default()
        };
    }
    let (applied, collected) = apply(&p.stores, &p.plan, audit);
    for c in &collected {
        match &c.collected {
            Some(g) => tracing::info!(
                "{}: {} unreferenced blob(s) removed ({} bytes), {} attestation(s) of removed images",
                c.repository,
                g.blobs,
                g.bytes,
                g.referrers
            ),
            None => tracing::info!(
                "{}: another run is writing to this layout: its unreferenced blobs are removed by the next cleanup",
                c.repository
            ),
        }
    }
    Executed {
        failed: applied.iter().any(|a| a.result == Outcome::Failed),
        applied,
        collected,
    }
}

/// The immutable tags the kept branches' catalogs build, by image. A
/// catalog several branches (or a branch and its remote-tracking ref) share
/// is evaluated once.
fn branch_tags(
    scan: &gitrefs::Scan,
    config: &std::path::Path,
    env: &Environment,
) -> BTreeMap<String, Vec<String>> {
    let mut built: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut seen = std::collections::HashSet::new();
    for b in &scan.branches {
        let Some(text) = b.catalog.as_ref().filter(|t| seen.insert(t.as_slice())) else {
            continue;
        };
        match crate::settings::branch_tags(config, &String::from_utf8_lossy(text), env) {
            Ok((tags, left_out)) => {
                for (image, tag) in tags {
                    built.entry(image).or_default().push(tag);
                }
                for (image, why) in left_out {
                    tracing::info!(
                        "git: {}: which tag {image} builds there is not known here ({why}); the other rules judge its tags",
                        b.branch
                    );
                }
            }
            Err(e) => tracing::warn!(
                "git: {}: its catalog: {e}; the tags it builds are judged by the other rules",
                b.branch
            ),
        }
    }
    built
}
