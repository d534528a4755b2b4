//! Cleanup: reading what registries hold, and applying a retention plan
//! safely (re-checked digests, a deletion cap, tag-only removal).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};

use serde::Serialize;
use serde_json::Value;

use crate::oci::{Digest, annotation};
use crate::registry::{Client, Repository};
use crate::retention::{Item, Plan, TagInfo};

/// Requests in flight at once while listing or deleting.
pub const CONCURRENCY: usize = crate::registry::client::PARALLEL_REQUESTS;
/// Deletions in flight at once (each is a few small requests; the registry,
/// not the client, is the limit).
pub const DELETE_CONCURRENCY: usize = 16;

/// Every tag of a repository with its digest, creation time and provenance.
/// Any failure fails the whole listing: a partial list must not be judged.
///
/// An image's age is the build time its provenance attestation records,
/// read from the referrers tag (`sha256-<hex>`, listed like any tag, so it
/// costs no extra request) or, where the registry offers it, the referrers
/// API; images without an attestation fall back to their `created`.
pub fn list(client: &Client, repo: &Repository) -> Result<Vec<TagInfo>, String> {
    let tags = client.list_tags(repo).map_err(|e| e.to_string())?;
    let mut out = crate::pool::map(&tags, CONCURRENCY, |tag| describe(client, repo, tag))
        .into_iter()
        .collect::<Result<Vec<_>, _>>()?;
    let mut attested: BTreeMap<Digest, i64> = out
        .iter()
        .filter_map(|t| Some((t.subject.clone()?, t.attested?)))
        .collect();
    // Registries with a referrers API keep no referrers tags: ask it, once
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
        && let Some(list) = client.referrers(repo, first).map_err(|e| e.to_string())?
    {
        if let Some(t) = crate::provenance::built_at(&list) {
            attested.insert(first.clone(), t);
        }
        let rest = crate::pool::map(&unasked[1..], CONCURRENCY, |d| {
            client.referrers(repo, d).map(|l| (d.clone(), l))
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
        client
            .head_manifest(repo, &subject.to_string())
            .map(|m| m.is_none())
    });
    for (i, g) in orphans.iter().zip(gone) {
        out[*i].subject_gone = g.map_err(|e| e.to_string())?;
    }
    out.sort_by(|a, b| a.tag.cmp(&b.tag));
    Ok(out)
}

fn describe(client: &Client, repo: &Repository, tag: &str) -> Result<TagInfo, String> {
    let m = client
        .get_manifest(repo, tag)
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("{repo}:{tag} vanished while listing"))?;
    let v: Value = serde_json::from_slice(&m.bytes)
        .map_err(|e| format!("{repo}:{tag}: manifest is not JSON: {e}"))?;
    let ann = &v["annotations"];
    let created = ann[annotation::CREATED]
        .as_str()
        .and_then(crate::oci::parse_rfc3339);
    let children: Vec<Digest> = v["manifests"]
        .as_array()
        .map(|ms| {
            ms.iter()
                .filter_map(|d| d["digest"].as_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    let size = v["layers"].as_array().map(|ls| {
        ls.iter().filter_map(|l| l["size"].as_u64()).sum::<u64>()
            + v["config"]["size"].as_u64().unwrap_or(0)
    });
    // A referrers tag: the index lists the attestations of its subject.
    let subject = crate::store::referrers::subject_of(tag);
    let attested = subject.as_ref().and_then(|_| {
        let list: Vec<crate::oci::Descriptor> = v["manifests"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|d| serde_json::from_value(d.clone()).ok())
            .collect();
        crate::provenance::built_at(&list)
    });
    Ok(TagInfo {
        tag: tag.to_owned(),
        digest: m.digest,
        created,
        built_by_us: ann[annotation::IMAGE].as_str().map(str::to_owned),
        children,
        size,
        subject,
        attested,
        subject_gone: false,
    })
}

/// What became of one planned deletion.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
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
#[derive(Clone, Debug, Serialize)]
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

/// What is known of one repository while deleting: whether it accepts a
/// tag `DELETE` (OCI distribution 1.1), and whether the empty blob the
/// throwaway-manifest fallback needs is there.
#[derive(Debug, Default)]
struct RepoState {
    /// 0 unknown, 1 tag DELETE works, 2 it does not (use the fallback).
    tag_delete: AtomicU8,
    /// 0 unknown, 1 manifests can be deleted (the fallback works), 2 not.
    manifest_delete: AtomicU8,
    empty_blob: AtomicBool,
    /// Serialises the first probes of a repository.
    probing: std::sync::Mutex<()>,
    /// This run's throwaway manifest (bytes, digest), once needed.
    throwaway: std::sync::OnceLock<(Vec<u8>, Digest)>,
    /// Some tag points at the throwaway manifest: delete it at the end.
    batched: AtomicBool,
}

/// Applies the deletions of a plan, tag by tag: each tag's digest is read
/// again right before (a tag that moved since planning, or is gone, is
/// skipped), then that tag alone is removed; other tags on the same image,
/// including ones the plan never saw, are untouched. A referrers tag is
/// removed only once its image's manifest is gone from the registry.
pub fn apply(
    client: &Client,
    repos: &BTreeMap<String, Repository>,
    plan: &Plan,
    audit: &(dyn Fn(&Applied) + Sync),
) -> Vec<Applied> {
    let states: BTreeMap<&str, RepoState> = repos
        .keys()
        .map(|k| (k.as_str(), RepoState::default()))
        .collect();
    let work: Vec<&Item> = plan.deletions().collect();
    let mut out: Vec<Applied> = crate::pool::map(&work, DELETE_CONCURRENCY, |i| {
        match (repos.get(&i.repository), states.get(i.repository.as_str())) {
            (Some(repo), Some(state)) => delete_one(client, repo, state, i),
            _ => applied(i, Outcome::Failed, "repository not listed"),
        }
    });
    // Repositories whose tags were pointed at the throwaway manifest: one
    // DELETE of it removes them all.
    for (name, state) in &states {
        if !state.batched.load(Ordering::Relaxed) {
            continue;
        }
        let (Some(repo), Some((_, digest))) = (repos.get(*name), state.throwaway.get()) else {
            continue;
        };
        let deleted = client.delete_manifest(repo, digest);
        let batched: Vec<usize> = (0..out.len())
            .filter(|&k| {
                let a = &out[k];
                a.repository == *name
                    && a.result == Outcome::Untagged
                    && a.detail.contains("deleted with it")
            })
            .collect();
        let checked = crate::pool::map(&batched, DELETE_CONCURRENCY, |&k| {
            let a = out[k].clone();
            match &deleted {
                Err(e) => Applied {
                    result: Outcome::Failed,
                    detail: format!(
                        "the tag points at the throwaway manifest {digest}, which the registry did not delete ({e}): delete that manifest by hand"
                    ),
                    ..a
                },
                Ok(()) => {
                    let planned = a.digest.clone();
                    confirmed(client, repo, a, &[digest, &planned])
                }
            }
        });
        for (k, a) in batched.into_iter().zip(checked) {
            out[k] = a;
        }
    }
    for a in &out {
        audit(a);
    }
    out.sort_by(|a, b| (&a.repository, &a.tag).cmp(&(&b.repository, &b.tag)));
    out
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

fn delete_one(client: &Client, repo: &Repository, state: &RepoState, i: &Item) -> Applied {
    match client.head_manifest(repo, &i.tag) {
        Ok(Some((d, _, _))) if d == i.digest => {}
        Ok(Some((d, _, _))) => {
            return applied(i, Outcome::Skipped, format!("moved to {d} since planning"));
        }
        Ok(None) => return applied(i, Outcome::Skipped, "already gone"),
        Err(e) => return applied(i, Outcome::Failed, e.to_string()),
    }
    if let Some(subject) = &i.subject {
        match client.head_manifest(repo, &subject.to_string()) {
            Ok(None) => {}
            Ok(Some(_)) => {
                return applied(
                    i,
                    Outcome::Skipped,
                    "its image is still on the registry (until garbage collection)",
                );
            }
            Err(e) => return applied(i, Outcome::Failed, e.to_string()),
        }
    }
    match untag(client, repo, state, &i.tag) {
        // A batched tag is confirmed once the throwaway manifest is deleted.
        Ok(how) if how.contains("deleted with it") => applied(i, Outcome::Untagged, how),
        Ok(how) => confirmed(
            client,
            repo,
            applied(i, Outcome::Untagged, how),
            &[&i.digest],
        ),
        Err(e) => applied(i, Outcome::Failed, e.to_string()),
    }
}

/// `a` after reading its tag back: gone, or naming another image (pushed
/// again since), is removed; still naming one of `removed` means the
/// registry said yes and did nothing, and the deletion failed.
fn confirmed(
    client: &Client,
    repo: &Repository,
    mut a: Applied,
    removed: &[&crate::oci::Digest],
) -> Applied {
    match client.head_manifest(repo, &a.tag) {
        Ok(None) => {}
        Ok(Some((d, _, _))) if removed.contains(&&d) => {
            a.result = Outcome::Failed;
            a.detail = format!(
                "the registry answered the deletion with success but still serves {} → {d}: the tag was not removed",
                a.tag
            );
        }
        Ok(Some((d, _, _))) => {
            a.detail = format!("{}; the tag was pushed again since and names {d}", a.detail);
        }
        Err(e) => {
            a.result = Outcome::Failed;
            a.detail = format!("{}, but reading the tag back failed: {e}", a.detail);
        }
    }
    a
}

/// Removes one tag and nothing else: the registry's tag `DELETE` where it
/// has one, else a unique throwaway manifest is put on the tag and deleted
/// by digest (see [`crate::store::remote::untag`]); what the registry
/// supports is learnt once per repository.
fn untag(
    client: &Client,
    repo: &Repository,
    state: &RepoState,
    tag: &str,
) -> Result<String, crate::store::StoreError> {
    if state.tag_delete.load(Ordering::Relaxed) != 2 {
        if client.delete_tag(repo, tag)? {
            state.tag_delete.store(1, Ordering::Relaxed);
            return Ok("tag deleted".into());
        }
        state.tag_delete.store(2, Ordering::Relaxed);
    }
    if state.manifest_delete.load(Ordering::Relaxed) == 0 {
        let _probe = state
            .probing
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if state.manifest_delete.load(Ordering::Relaxed) == 0 {
            let ok = crate::store::remote::can_delete_manifests(client, repo)?;
            state.empty_blob.store(true, Ordering::Relaxed);
            state
                .manifest_delete
                .store(if ok { 1 } else { 2 }, Ordering::Relaxed);
        }
    }
    if state.manifest_delete.load(Ordering::Relaxed) == 2 {
        return Err(crate::store::StoreError::Invalid {
            store: repo.to_string(),
            message: format!(
                "{tag} not removed: the registry has no tag DELETE and refuses manifest deletes (CNCF Distribution: set `storage.delete.enabled: true`); no tag was touched"
            ),
        });
    }
    // One throwaway manifest per repository and run: every tag to remove is
    // pointed at it, and one DELETE of it (after all of them) removes them
    // all — two requests per tag instead of three.
    let (bytes, digest) = state.throwaway.get_or_init(|| {
        let (bytes, digest) = crate::store::remote::throwaway_manifest(&format!(
            "cleanup {} {}",
            std::process::id(),
            crate::provenance::now()
        ));
        (bytes, digest)
    });
    client.put_manifest(repo, tag, crate::oci::media::MANIFEST, bytes)?;
    state.batched.store(true, Ordering::Relaxed);
    Ok(format!(
        "tag moved to throwaway manifest {digest}, deleted with it"
    ))
}
