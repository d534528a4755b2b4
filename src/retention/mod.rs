//! The retention plan: a pure function from registry state, git references
//! and rules to a keep/delete decision with reasons for every tag. A
//! decision is about a tag, never a manifest: deleting removes that tag
//! alone (see [`crate::cleanup`]).

pub mod references;

use std::collections::{HashMap, HashSet};

use globset::GlobSet;
use serde::Serialize;

use crate::oci::Digest;
pub use references::References;

/// One tag as listed on a registry.
#[derive(Clone, Debug)]
pub struct TagInfo {
    pub tag: String,
    pub digest: Digest,
    /// Seconds since 1970: the build time of its provenance attestation,
    /// else `org.opencontainers.image.created`, if known.
    pub created: Option<i64>,
    /// `io.imagepipe.image` of the manifest: set on images imagepipe built.
    pub built_by_us: Option<String>,
    /// Manifests an index points at.
    pub children: Vec<Digest>,
    /// Bytes of the manifest's blobs, when known.
    pub size: Option<u64>,
    /// For a referrers tag (`sha256-<hex>`): the image whose attestations it lists.
    pub subject: Option<Digest>,
    /// For a referrers tag: the build time its attestations record.
    pub attested: Option<i64>,
    /// For a referrers tag: its image's manifest is gone from the registry
    /// (a `HEAD` by digest said so while listing).
    pub subject_gone: bool,
}

/// One repository on one target, as listed (or why it could not be).
#[derive(Clone, Debug)]
pub struct Repo {
    pub target: String,
    /// `host/namespace/name`.
    pub repository: String,
    /// `namespace/name`: what references are matched on.
    pub path: String,
    pub image: String,
    /// Matchers of the image's tag templates: a tag is ours to judge only if
    /// one of them matches it exactly (and our annotation is on its manifest).
    pub templates: Vec<regex::Regex>,
    /// The immutable tags the catalog builds now for this image: as checked
    /// out, and as each kept branch has it.
    pub current: Vec<String>,
    pub tags: Result<Vec<TagInfo>, String>,
}

#[derive(Clone, Debug)]
pub struct Rules {
    pub keep_last: Option<u64>,
    pub max_age_secs: Option<u64>,
    pub protect: GlobSet,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    Keep,
    Delete,
}

#[derive(Clone, Debug, Serialize, schemars::JsonSchema)]
pub struct Item {
    pub target: String,
    pub repository: String,
    pub image: String,
    pub tag: String,
    pub digest: Digest,
    pub decision: Decision,
    pub reasons: Vec<String>,
    /// `branch:path` of every file that references this tag or its digest.
    pub referenced_by: Vec<String>,
    /// For a referrers tag: the image it lists attestations of.
    pub subject: Option<Digest>,
    /// When the image was built (RFC 3339): its provenance attestation's
    /// time, else its `created`.
    #[serde(serialize_with = "rfc3339")]
    #[schemars(with = "Option<String>")]
    pub created: Option<i64>,
    pub size: Option<u64>,
}

fn rfc3339<S: serde::Serializer>(t: &Option<i64>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => s.serialize_str(&crate::oci::rfc3339(*t)),
        None => s.serialize_none(),
    }
}

#[derive(Clone, Debug, Default, Serialize, schemars::JsonSchema)]
pub struct Plan {
    pub items: Vec<Item>,
    /// Problems that made the plan keep things it could not judge (fail closed).
    pub errors: Vec<String>,
    /// Release branches past the supported ones (their references do not count).
    pub unsupported_branches: Vec<String>,
}

impl Plan {
    pub fn deletions(&self) -> impl Iterator<Item = &Item> {
        self.items.iter().filter(|i| i.decision == Decision::Delete)
    }
}

/// Decides every tag. `now` is seconds since 1970.
pub fn plan(
    repos: &[Repo],
    refs: &References,
    rules: &Rules,
    now: i64,
    git_error: Option<&str>,
    unsupported: &[String],
) -> Plan {
    let mut out = Plan {
        unsupported_branches: unsupported.to_vec(),
        ..Plan::default()
    };
    if let Some(e) = git_error {
        // Most git errors already end by saying so.
        out.errors.push(if e.ends_with("nothing is deleted") {
            e.to_owned()
        } else {
            format!("{e}: nothing is deleted")
        });
    }
    for repo in repos {
        let tags = match &repo.tags {
            Ok(t) => t,
            Err(e) => {
                out.errors.push(format!(
                    "{} ({}): {e}: nothing in it is deleted",
                    repo.repository, repo.target
                ));
                continue;
            }
        };
        out.items
            .extend(plan_repo(repo, tags, refs, rules, now, git_error.is_some()));
    }
    out
}

fn plan_repo(
    repo: &Repo,
    tags: &[TagInfo],
    refs: &References,
    rules: &Rules,
    now: i64,
    git_failed: bool,
) -> Vec<Item> {
    let managed = |t: &TagInfo| {
        t.subject.is_none()
            && t.built_by_us.as_deref() == Some(repo.image.as_str())
            && repo.templates.iter().any(|m| m.is_match(&t.tag))
    };
    // The newest `keep_last` images (distinct digests) among the managed tags;
    // a digest's time is the newest any of its tags reports.
    let mut newest: HashMap<&Digest, Option<i64>> = HashMap::new();
    for t in tags.iter().filter(|t| managed(t)) {
        let e = newest.entry(&t.digest).or_insert(t.created);
        *e = (*e).max(t.created);
    }
    let mut by_age: Vec<(Option<i64>, &Digest)> = newest.into_iter().map(|(d, c)| (c, d)).collect();
    by_age.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(b.1)));
    let recent: HashSet<&Digest> = by_age
        .iter()
        .take(
            rules
                .keep_last
                .map_or(0, |n| usize::try_from(n).unwrap_or(usize::MAX)),
        )
        .map(|(_, d)| *d)
        .collect();
    // Mutable tags (`latest`, series tags: the templates after the first)
    // are pointers imagepipe moves, never expired; the images they and
    // protected tags name keep their immutable tags, even when older than
    // `keep_last` allows (a revert moves `latest` back to an old image).
    let mutable = |t: &TagInfo| {
        managed(t)
            && !repo.templates.first().is_some_and(|m| m.is_match(&t.tag))
            && repo.templates.iter().skip(1).any(|m| m.is_match(&t.tag))
    };
    let pointer =
        |t: &TagInfo| t.subject.is_none() && (mutable(t) || rules.protect.is_match(&t.tag));
    let pointed: HashSet<&Digest> = tags
        .iter()
        .filter(|t| pointer(t))
        .map(|t| &t.digest)
        .collect();
    let mut items: Vec<Item> = tags
        .iter()
        .map(|t| {
            let mut reasons = Vec::new();
            if t.subject.is_some() {
                reasons.push("attestation".to_owned());
            } else if !managed(t) {
                reasons.push("unmanaged".to_owned());
            }
            if rules.protect.is_match(&t.tag) {
                reasons.push("protected".to_owned());
            }
            if mutable(t) {
                reasons.push("mutable".to_owned());
            }
            if t.subject.is_none() && repo.current.contains(&t.tag) {
                reasons.push("current".to_owned());
            }
            if !pointer(t) && t.subject.is_none() && pointed.contains(&t.digest) {
                reasons.push("pointed".to_owned());
            }
            let digests: Vec<&Digest> = std::iter::once(&t.digest).chain(&t.children).collect();
            let referenced_by: Vec<String> = refs
                .find(&repo.path, &repo.image, &t.tag, &digests)
                .into_iter()
                .collect();
            if !referenced_by.is_empty() {
                reasons.push("referenced".to_owned());
            }
            if recent.contains(&t.digest) {
                reasons.push("recent".to_owned());
            }
            match (rules.max_age_secs, t.created) {
                (Some(max), Some(created))
                    if now.saturating_sub(created) < i64::try_from(max).unwrap_or(i64::MAX) =>
                {
                    reasons.push("young".to_owned());
                }
                // No build time known: it may be young, so it stays.
                (Some(_), None) if t.subject.is_none() => reasons.push("age-unknown".to_owned()),
                _ => {}
            }
            if git_failed {
                reasons.push("git-unreadable".to_owned());
            }
            Item {
                target: repo.target.clone(),
                repository: repo.repository.clone(),
                image: repo.image.clone(),
                tag: t.tag.clone(),
                digest: t.digest.clone(),
                decision: Decision::Keep,
                reasons,
                referenced_by,
                subject: t.subject.clone(),
                created: t.created,
                size: t.size,
            }
        })
        .collect();
    // A kept index keeps what it lists: the manifests under a kept tag's
    // digest, all the way down, and every tag on them. (An index listing a
    // referenced child is kept by the reference itself, above.)
    let children: HashMap<&Digest, &Vec<Digest>> =
        tags.iter().map(|t| (&t.digest, &t.children)).collect();
    let mut stack: Vec<&Digest> = items
        .iter()
        .filter(|i| !i.reasons.is_empty() && i.subject.is_none())
        .map(|i| &i.digest)
        .collect();
    let mut below: HashSet<&Digest> = HashSet::new();
    while let Some(d) = stack.pop() {
        for c in children.get(d).map(|v| v.iter()).into_iter().flatten() {
            if below.insert(c) {
                stack.push(c);
            }
        }
    }
    for item in &mut items {
        if item.subject.is_none() && item.reasons.is_empty() && below.contains(&item.digest) {
            item.reasons.push("in-kept-index".to_owned());
        }
    }
    // A referrers tag goes only once its image's manifest is gone from the
    // registry (after its garbage collection); the executor checks again.
    for (item, t) in items.iter_mut().zip(tags) {
        // A just-copied image whose manifest is not there yet must not lose
        // its attestation: only one older than `max_age` goes.
        let old_enough = match (rules.max_age_secs, t.attested) {
            (Some(max), Some(at)) => {
                now.saturating_sub(at) >= i64::try_from(max).unwrap_or(i64::MAX)
            }
            _ => true,
        };
        if item.subject.is_some()
            && item.reasons == ["attestation"]
            && t.subject_gone
            && old_enough
            && !git_failed
        {
            item.reasons = vec!["orphan-attestation".to_owned()];
            item.decision = Decision::Delete;
        }
    }
    for item in items.iter_mut().filter(|i| i.subject.is_none()) {
        if item.reasons.is_empty() {
            item.decision = Decision::Delete;
            item.reasons.push("expired".to_owned());
        }
    }
    items
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn digest(n: u8) -> Digest {
        Digest::of(&[n])
    }

    fn info(tag: &str, d: u8, created: i64, ours: bool) -> TagInfo {
        TagInfo {
            tag: tag.into(),
            digest: digest(d),
            created: Some(created),
            built_by_us: ours.then(|| "img".into()),
            children: Vec::new(),
            size: None,
            subject: None,
            attested: None,
            subject_gone: false,
        }
    }

    fn rules(keep_last: Option<u64>, protect: &[&str]) -> Rules {
        let mut b = globset::GlobSetBuilder::new();
        for p in protect {
            b.add(globset::Glob::new(p).unwrap());
        }
        Rules {
            keep_last,
            max_age_secs: Some(150),
            protect: b.build().unwrap(),
        }
    }

    fn repo(tags: Vec<TagInfo>) -> Repo {
        let facts = crate::context::ImageFacts {
            name: "img",
            distro: "x",
            version: "1",
            arches: vec!["amd64"],
        };
        Repo {
            target: "t".into(),
            repository: "r.example.com/ns/img".into(),
            path: "ns/img".into(),
            image: "img".into(),
            templates: ["{name}-{hash:6}", "latest"]
                .iter()
                .map(|t| {
                    crate::template::Template::parse(t, &[])
                        .unwrap()
                        .matcher(&facts)
                })
                .collect(),
            current: Vec::new(),
            tags: Ok(tags),
        }
    }

    #[test]
    fn reasons() {
        let tags = vec![
            info("img-0000aa", 1, 0, true),
            info("img-0000bb", 2, 900, true),
            info("latest", 2, 900, true),
            info("img-0000cc", 3, 500, true),
            info("foreign", 4, 0, false),
            info("img-backup1", 5, 0, true),
        ];
        let mut refs = References::default();
        refs.add_text("release-2.27:ci.yml", "image: registry/ns/img:img-0000cc\n");
        let p = plan(
            &[repo(tags)],
            &refs,
            &rules(Some(1), &["latest"]),
            1000,
            None,
            &[],
        );
        let get = |t: &str| p.items.iter().find(|i| i.tag == t).unwrap();
        assert_eq!(get("img-0000aa").decision, Decision::Delete);
        assert_eq!(get("img-0000aa").reasons, ["expired"]);
        assert_eq!(get("img-0000bb").reasons, ["pointed", "recent", "young"]);
        assert_eq!(
            get("latest").reasons,
            ["protected", "mutable", "recent", "young"]
        );
        assert_eq!(get("img-0000cc").reasons, ["referenced"]);
        assert_eq!(get("img-0000cc").referenced_by, ["release-2.27:ci.yml"]);
        assert_eq!(get("foreign").reasons, ["unmanaged"]);
        // Our annotation, but no template renders this name exactly.
        assert_eq!(get("img-backup1").reasons, ["unmanaged"]);
    }

    #[test]
    fn after_a_revert_the_current_tag_and_what_latest_names_stay() {
        // Recipe 1 (aa) built first, then bb and cc; the catalog is back at
        // recipe 1 and `latest` with it; dd is what `latest` named before.
        let tags = vec![
            info("img-0000aa", 1, 100, true),
            info("img-0000dd", 4, 150, true),
            info("img-0000bb", 2, 200, true),
            info("img-0000cc", 3, 300, true),
            info("latest", 1, 100, true),
        ];
        let r = Repo {
            current: vec!["img-0000dd".into()],
            ..repo(tags)
        };
        let p = plan(
            &[r],
            &References::default(),
            &rules(Some(1), &[]),
            1000,
            None,
            &[],
        );
        let get = |t: &str| p.items.iter().find(|i| i.tag == t).unwrap();
        assert_eq!(get("img-0000aa").reasons, ["pointed"]);
        assert_eq!(get("latest").reasons, ["mutable"]);
        assert_eq!(get("img-0000dd").reasons, ["current"]);
        assert_eq!(get("img-0000cc").reasons, ["recent"]);
        assert_eq!(get("img-0000bb").reasons, ["expired"]);
    }

    #[test]
    fn an_unknown_age_is_never_taken_for_old() {
        let mut t = info("img-0000aa", 1, 0, true);
        t.created = None;
        let p = plan(
            &[repo(vec![t])],
            &References::default(),
            &rules(None, &[]),
            1000,
            None,
            &[],
        );
        assert_eq!(p.items[0].reasons, ["age-unknown"]);
    }

    #[test]
    fn failures_keep_everything() {
        let p = plan(
            &[repo(vec![info("img-0000aa", 1, 0, true)])],
            &References::default(),
            &rules(None, &[]),
            1000,
            Some("git unreadable"),
            &[],
        );
        assert_eq!(p.deletions().count(), 0);
        assert!(!p.errors.is_empty());
        let r = Repo {
            tags: Err("listing failed".into()),
            ..repo(Vec::new())
        };
        let p = plan(
            &[r],
            &References::default(),
            &rules(None, &[]),
            1000,
            None,
            &[],
        );
        assert!(p.items.is_empty() && p.errors.len() == 1);
    }

    #[test]
    fn a_referenced_child_keeps_its_index_and_a_kept_index_its_children() {
        let mut index = info("img-0000aa", 1, 0, true);
        index.children = vec![digest(7), digest(8)];
        let child_tag = info("img-0000bb", 8, 0, true);
        let mut refs = References::default();
        refs.add_text(
            "main:ci.yml",
            &format!("vm: registry/ns/img@{}\n", digest(7)),
        );
        let p = plan(
            &[repo(vec![index, child_tag])],
            &refs,
            &rules(None, &[]),
            1000,
            None,
            &[],
        );
        let get = |t: &str| p.items.iter().find(|i| i.tag == t).unwrap();
        assert_eq!(get("img-0000aa").reasons, ["referenced"]);
        assert_eq!(get("img-0000bb").reasons, ["in-kept-index"]);
    }

    #[test]
    fn referrers_tags_go_only_when_their_image_is_gone() {
        let mut att = info("sha256-x", 9, 0, false);
        att.subject = Some(digest(1));
        let mut orphan = info("sha256-y", 10, 0, false);
        orphan.subject = Some(digest(3));
        orphan.subject_gone = true;
        let p = plan(
            &[repo(vec![info("img-0000aa", 1, 0, true), att, orphan])],
            &References::default(),
            &rules(None, &[]),
            1000,
            None,
            &[],
        );
        let get = |t: &str| p.items.iter().find(|i| i.tag == t).unwrap();
        assert_eq!(get("img-0000aa").decision, Decision::Delete);
        assert_eq!(
            get("sha256-x").reasons,
            ["attestation"],
            "its image is still listed"
        );
        assert_eq!(get("sha256-y").decision, Decision::Delete);
        assert_eq!(get("sha256-y").reasons, ["orphan-attestation"]);
    }

    /// 100,000 tags, each referenced or not, in one repository: every step
    /// is linear or n log n (a quadratic one would not finish here).
    #[test]
    fn a_hundred_thousand_tags() {
        let tags: Vec<TagInfo> = (0..100_000u32)
            .map(|i| {
                let mut t = info(&format!("img-{i:06x}"), 0, i64::from(i % 1000), true);
                t.digest = Digest::of(&i.to_le_bytes());
                t
            })
            .collect();
        let mut refs = References::default();
        let text: String = (0..100_000u32)
            .step_by(7)
            .map(|i| format!("- registry/ns/img:img-{i:06x}\n"))
            .collect();
        refs.add_text("main:ci.yml", &text);
        let p = plan(&[repo(tags)], &refs, &rules(Some(3), &[]), 1000, None, &[]);
        assert_eq!(p.items.len(), 100_000);
        let referenced = p
            .items
            .iter()
            .filter(|i| i.reasons.contains(&"referenced".to_owned()))
            .count();
        assert_eq!(referenced, 100_000usize.div_ceil(7));
    }

    proptest! {
        /// A model of a registry and a git repository. Whatever the tags,
        /// indexes, references and rules, applying a plan never removes a
        /// tag that is protected, referenced (itself, its digest or a child
        /// digest), unmanaged, recent, young, or pointing at an image a kept
        /// tag holds; a tag the plan never saw survives; and planning again
        /// on what is left deletes nothing more.
        #[test]
        fn nothing_kept_ever_disappears(
            tags in proptest::collection::vec((0u8..8, 0i64..1000, any::<bool>(), 0u8..4), 0..30),
            children in proptest::collection::vec((0u8..8, 0u8..8), 0..6),
            referenced in proptest::collection::vec(0u8..10, 0..3),
            keep_last in proptest::option::of(0u64..4),
            protect_latest in any::<bool>(),
            hidden in proptest::collection::vec(0usize..30, 0..3),
        ) {
            let mut infos: Vec<TagInfo> = tags.iter().enumerate().map(|(i, (d, created, ours, kind))| {
                let name = match kind {
                    0 if i == 0 => "latest".to_owned(),
                    1 => format!("release-2.{i}-backup"),
                    _ => format!("img-{i:06x}"),
                };
                info(&name, *d, *created, *ours)
            }).collect();
            for (parent, child) in &children {
                for t in infos.iter_mut().filter(|t| t.digest == digest(*parent)) {
                    t.children.push(digest(*child));
                }
            }
            let mut refs = References::default();
            for r in &referenced {
                refs.add_text("main:ci.yml", &format!("x: registry/ns/img@{}\n", digest(*r)));
            }
            // Tags the listing did not show (a proxy hid them).
            let seen: Vec<TagInfo> = infos.iter().enumerate().filter(|(i, _)| !hidden.contains(i)).map(|(_, t)| t.clone()).collect();
            let r = rules(keep_last, if protect_latest { &["latest"] } else { &[] });
            let p = plan(&[repo(seen.clone())], &refs, &r, 1000, None, &[]);
            let deleted: HashSet<&str> = p.deletions().map(|i| i.tag.as_str()).collect();
            for t in &infos {
                if !deleted.contains(t.tag.as_str()) {
                    continue;
                }
                let item = p.items.iter().find(|i| i.tag == t.tag).unwrap();
                prop_assert_eq!(&item.reasons, &vec!["expired".to_owned()]);
                prop_assert!(t.built_by_us.is_some());
                prop_assert!(!(protect_latest && t.tag == "latest"));
                prop_assert!(!t.tag.contains("backup"), "hand-made names are never ours");
                for c in std::iter::once(&t.digest).chain(&t.children) {
                    prop_assert!(!referenced.iter().any(|r| digest(*r) == *c), "referenced");
                }
                prop_assert!(!now_young(t));
                prop_assert!(seen.iter().any(|s| s.tag == t.tag), "a hidden tag is never judged");
            }
            // Apply: only the deleted tags go; hidden ones stay.
            let left: Vec<TagInfo> = seen.into_iter().filter(|t| !deleted.contains(t.tag.as_str())).collect();
            let again = plan(&[repo(left)], &refs, &r, 1000, None, &[]);
            prop_assert_eq!(again.deletions().count(), 0);
        }
    }

    fn now_young(t: &TagInfo) -> bool {
        t.created.is_some_and(|c| 1000 - c < 150)
    }
}
