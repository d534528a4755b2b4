//! Cleanup: reading what registries hold, and applying a retention plan
//! safely (re-checked digests, a deletion cap, tag-only removal).

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

use crate::oci::{Digest, annotation};
use crate::registry::{Client, Repository};
use crate::retention::{Item, Plan, Removal, TagInfo};

/// Requests in flight at once while listing or deleting.
pub const CONCURRENCY: usize = crate::registry::client::PARALLEL_REQUESTS;

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
        if let Some(at) = attested.get(&t.digest) {
            t.created = Some(*at);
        }
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

/// The number of deletions a plan asks for: manifests (once per digest) and tag removals.
pub fn deletion_count(plan: &Plan) -> usize {
    let mut manifests = std::collections::HashSet::new();
    let mut untags = 0;
    for i in plan.deletions() {
        match i.removal {
            Some(Removal::DeleteManifest) => {
                manifests.insert((&i.repository, &i.digest));
            }
            _ => untags += 1,
        }
    }
    manifests.len() + untags
}

/// Applies the deletions of a plan. Each tag's digest is read again first;
/// a tag that moved is skipped, and a manifest is deleted only if every
/// planned tag on it still points there and no protected tag moved onto it.
pub fn apply(
    client: &Client,
    repos: &BTreeMap<String, Repository>,
    plan: &Plan,
    audit: &(dyn Fn(&Applied) + Sync),
) -> Vec<Applied> {
    // Group by repository and digest: one DELETE per manifest.
    let mut groups: BTreeMap<(String, Digest), Vec<&Item>> = BTreeMap::new();
    for i in plan.deletions() {
        groups
            .entry((i.repository.clone(), i.digest.clone()))
            .or_default()
            .push(i);
    }
    let kept_tags: BTreeMap<&str, Vec<&Item>> = plan
        .items
        .iter()
        .filter(|i| i.decision == crate::retention::Decision::Keep)
        .fold(BTreeMap::new(), |mut m, i| {
            m.entry(i.repository.as_str()).or_default().push(i);
            m
        });
    // Images first; the referrers tags of deleted images after them, and
    // only once their image is really gone.
    let (attestations, images): (Vec<_>, Vec<_>) = groups
        .into_iter()
        .partition(|(_, items)| crate::store::referrers::subject_of(&items[0].tag).is_some());
    let run = |work: &[((String, Digest), Vec<&Item>)]| {
        crate::pool::map(work, CONCURRENCY, |((repo_name, digest), items)| {
            let Some(repo) = repos.get(repo_name) else {
                return Vec::new();
            };
            let subject = crate::store::referrers::subject_of(&items[0].tag)
                .map(|s| client.head_manifest(repo, &s.to_string()));
            let kept = kept_tags
                .get(repo_name.as_str())
                .map(Vec::as_slice)
                .unwrap_or_default();
            let done: Vec<Applied> = match subject {
                Some(Ok(Some(_))) => items
                    .iter()
                    .map(|i| applied(i, Outcome::Skipped, "its image is still there"))
                    .collect(),
                Some(Err(e)) => items
                    .iter()
                    .map(|i| applied(i, Outcome::Failed, e.to_string()))
                    .collect(),
                Some(Ok(None)) | None => apply_group(client, repo, digest, items, kept),
            };
            for a in &done {
                audit(a);
            }
            done
        })
    };
    let mut out: Vec<Applied> = run(&images).into_iter().flatten().collect();
    out.extend(run(&attestations).into_iter().flatten());
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

fn apply_group(
    client: &Client,
    repo: &Repository,
    digest: &Digest,
    items: &[&Item],
    kept: &[&Item],
) -> Vec<Applied> {
    let mut out = Vec::new();
    let mut still: Vec<&Item> = Vec::new();
    for i in items {
        match client.head_manifest(repo, &i.tag) {
            Ok(Some((d, _, _))) if d == *digest => still.push(i),
            Ok(Some((d, _, _))) => out.push(applied(
                i,
                Outcome::Skipped,
                format!("moved to {d} since planning"),
            )),
            Ok(None) => out.push(applied(i, Outcome::Skipped, "already gone")),
            Err(e) => out.push(applied(i, Outcome::Failed, e.to_string())),
        }
    }
    let (deletes, untags): (Vec<&Item>, Vec<&Item>) = still
        .into_iter()
        .partition(|i| i.removal == Some(Removal::DeleteManifest));
    if !deletes.is_empty() {
        // A kept tag that now points at this digest (a moved `latest`) saves it.
        let rescued = kept.iter().filter(|k| k.digest != *digest).find_map(|k| {
            match client.head_manifest(repo, &k.tag) {
                Ok(Some((d, _, _))) if d == *digest => Some(k.tag.clone()),
                _ => None,
            }
        });
        match rescued {
            Some(t) => out.extend(deletes.iter().map(|i| {
                applied(
                    i,
                    Outcome::Skipped,
                    format!("kept tag {t} moved onto this digest"),
                )
            })),
            None => {
                match client.delete_manifest(repo, digest) {
                    Ok(()) => out.extend(deletes.iter().map(|i| {
                        applied(i, Outcome::Deleted, format!("manifest {digest} deleted"))
                    })),
                    Err(e) => out.extend(
                        deletes
                            .iter()
                            .map(|i| applied(i, Outcome::Failed, e.to_string())),
                    ),
                }
            }
        }
    }
    for i in untags {
        out.push(match untag(client, repo, &i.tag) {
            Ok(how) => applied(i, Outcome::Untagged, how),
            Err(e) => applied(i, Outcome::Failed, e),
        });
    }
    out
}

/// Removes one tag and nothing else (see [`crate::store::remote::untag`]).
pub fn untag(client: &Client, repo: &Repository, tag: &str) -> Result<String, String> {
    crate::store::remote::untag(client, repo, tag).map_err(|e| e.to_string())
}
