//! The retention plan: a pure function from registry state, git references
//! and rules to a keep/delete decision with reasons for every tag.

use std::collections::{BTreeSet, HashMap, HashSet};

use globset::GlobSet;
use serde::Serialize;

use crate::gitrefs::Scan;
use crate::oci::Digest;

/// One tag as listed on a registry.
#[derive(Clone, Debug)]
pub struct TagInfo {
    pub tag: String,
    pub digest: Digest,
    /// Seconds since 1970 (`org.opencontainers.image.created`), if known.
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
}

/// One repository on one target, as listed (or why it could not be).
#[derive(Clone, Debug)]
pub struct Repo {
    pub target: String,
    /// `host/namespace/name`.
    pub repository: String,
    pub image: String,
    /// The image's tag templates: only tags they could have produced are
    /// ours to judge (empty: any tag on one of our manifests).
    pub templates: Vec<crate::template::Template>,
    pub tags: Result<Vec<TagInfo>, String>,
}

#[derive(Clone, Debug)]
pub struct Rules {
    pub keep_last: Option<u64>,
    pub max_age_secs: Option<u64>,
    pub protect: GlobSet,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    Keep,
    Delete,
}

/// How a deletion is carried out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Removal {
    /// Delete the manifest (every tag on it goes).
    DeleteManifest,
    /// Remove only this tag: another, kept tag shares its digest.
    Untag,
}

#[derive(Clone, Debug, Serialize)]
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
    pub removal: Option<Removal>,
    pub created: Option<i64>,
    pub size: Option<u64>,
}

#[derive(Clone, Debug, Default, Serialize)]
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

/// References found in git files: `name:tag` pairs, digests and words.
#[derive(Clone, Debug, Default)]
pub struct References {
    name_tag: HashMap<(String, String), BTreeSet<String>>,
    digests: HashMap<String, BTreeSet<String>>,
    words: HashMap<String, BTreeSet<String>>,
}

fn tag_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')
}

impl References {
    pub fn from_scan(scan: &Scan) -> Self {
        let mut r = Self::default();
        for b in &scan.branches {
            for (path, data) in &b.files {
                r.add_text(
                    &format!("{}:{path}", b.branch),
                    &String::from_utf8_lossy(data),
                );
            }
        }
        r
    }

    /// Records the references in one file's text, found at `location`.
    pub fn add_text(&mut self, location: &str, text: &str) {
        let reference_char = |c: char| tag_char(c) || matches!(c, '/' | ':' | '@');
        for token in text
            .split(|c: char| !reference_char(c))
            .filter(|t| !t.is_empty())
        {
            let (name_part, digest) = match token.split_once('@') {
                Some((n, d)) => (n, Some(d)),
                None => (token, None),
            };
            if let Some(hex) = digest.and_then(|d| d.strip_prefix("sha256:")) {
                let hex: String = hex.chars().take_while(char::is_ascii_hexdigit).collect();
                if hex.len() == 64 {
                    self.digests
                        .entry(hex.to_ascii_lowercase())
                        .or_default()
                        .insert(location.to_owned());
                }
            }
            if let Some(hex) = token.strip_prefix("sha256:")
                && hex.len() == 64
            {
                self.digests
                    .entry(hex.to_ascii_lowercase())
                    .or_default()
                    .insert(location.to_owned());
            }
            // `host/ns/name:tag` and `name:tag`: the last path component.
            let last = name_part.rsplit('/').next().unwrap_or(name_part);
            if let Some((name, tag)) = last.split_once(':')
                && !name.is_empty()
                && !tag.is_empty()
                && tag.chars().all(tag_char)
            {
                self.name_tag
                    .entry((name.to_owned(), tag.to_owned()))
                    .or_default()
                    .insert(location.to_owned());
            }
            for word in token.split(|c: char| !tag_char(c)).filter(|w| w.len() > 1) {
                self.words
                    .entry(word.to_owned())
                    .or_default()
                    .insert(location.to_owned());
            }
        }
    }

    /// Where `image:tag` or `digest` is referenced. A bare tag counts only
    /// when it names the image itself (`ubuntu-2204-3f1c…`), so generic
    /// tags such as `v1` elsewhere in a file do not keep anything.
    pub fn find(&self, image: &str, tag: &str, digest: &Digest) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        if let Some(l) = self.name_tag.get(&(image.to_owned(), tag.to_owned())) {
            out.extend(l.iter().cloned());
        }
        if let Some(l) = self.digests.get(digest.hex()) {
            out.extend(l.iter().cloned());
        }
        if tag.contains(image)
            && let Some(l) = self.words.get(tag)
        {
            out.extend(l.iter().cloned());
        }
        out
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
        out.errors.push(format!("{e}: nothing is deleted"));
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
        t.built_by_us.as_deref() == Some(repo.image.as_str())
            && (repo.templates.is_empty() || repo.templates.iter().any(|tpl| tpl.matches(&t.tag)))
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
    let mut items: Vec<Item> = tags
        .iter()
        .map(|t| {
            let mut reasons = Vec::new();
            if t.subject.is_some() {
                // A referrers tag goes only with its image (below).
                reasons.push("attestation".to_owned());
            } else if !managed(t) {
                reasons.push("unmanaged".to_owned());
            }
            if rules.protect.is_match(&t.tag) {
                reasons.push("protected".to_owned());
            }
            let referenced_by: Vec<String> = refs
                .find(&repo.image, &t.tag, &t.digest)
                .into_iter()
                .collect();
            if !referenced_by.is_empty() {
                reasons.push("referenced".to_owned());
            }
            if recent.contains(&t.digest) {
                reasons.push("recent".to_owned());
            }
            if let (Some(max), Some(created)) = (rules.max_age_secs, t.created)
                && now.saturating_sub(created) < i64::try_from(max).unwrap_or(i64::MAX)
            {
                reasons.push("young".to_owned());
            }
            if git_failed {
                reasons.push("git-unreadable".to_owned());
            }
            let decision = if reasons.is_empty() {
                Decision::Delete
            } else {
                Decision::Keep
            };
            if decision == Decision::Delete {
                reasons.push("expired".to_owned());
            }
            Item {
                target: repo.target.clone(),
                repository: repo.repository.clone(),
                image: repo.image.clone(),
                tag: t.tag.clone(),
                digest: t.digest.clone(),
                decision,
                reasons,
                referenced_by,
                removal: None,
                created: t.created,
                size: t.size,
            }
        })
        .collect();
    // A digest any kept tag (or a kept index) points at is never deleted.
    let mut kept: HashSet<Digest> = items
        .iter()
        .filter(|i| i.decision == Decision::Keep)
        .map(|i| i.digest.clone())
        .collect();
    let children: HashMap<&Digest, &Vec<Digest>> =
        tags.iter().map(|t| (&t.digest, &t.children)).collect();
    let mut stack: Vec<Digest> = kept.iter().cloned().collect();
    while let Some(d) = stack.pop() {
        for c in children.get(&d).map(|v| v.as_slice()).unwrap_or_default() {
            if kept.insert(c.clone()) {
                stack.push(c.clone());
            }
        }
    }
    for item in items.iter_mut().filter(|i| i.decision == Decision::Delete) {
        if kept.contains(&item.digest) {
            item.removal = Some(Removal::Untag);
            item.reasons.push("shares-digest-with-kept".to_owned());
        } else {
            item.removal = Some(Removal::DeleteManifest);
        }
    }
    // An image's attestations go with it, and only with it: its referrers
    // tag is deleted when the image's manifest is (the executor checks that
    // the image is really gone first).
    let deleted: HashSet<Digest> = items
        .iter()
        .filter(|i| i.removal == Some(Removal::DeleteManifest))
        .map(|i| i.digest.clone())
        .collect();
    for (item, t) in items.iter_mut().zip(tags) {
        if let Some(s) = &t.subject
            && deleted.contains(s)
            && !kept.contains(s)
            && item.reasons == ["attestation"]
        {
            item.decision = Decision::Delete;
            item.reasons = vec!["subject-deleted".to_owned()];
            item.removal = Some(Removal::DeleteManifest);
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
        Repo {
            target: "t".into(),
            repository: "r.example.com/ns/img".into(),
            image: "img".into(),
            templates: Vec::new(),
            tags: Ok(tags),
        }
    }

    #[test]
    fn reasons_and_shared_digests() {
        let tags = vec![
            info("img-old", 1, 0, true),
            info("img-new", 2, 900, true),
            info("latest", 2, 900, true),
            info("img-mid", 3, 500, true),
            info("foreign", 4, 0, false),
            info("img-alias", 2, 900, true),
        ];
        let mut refs = References::default();
        refs.add_text("release-2.27:ci.yml", "image: registry/ns/img:img-mid\n");
        let p = plan(
            &[repo(tags)],
            &refs,
            &rules(Some(1), &["latest"]),
            1000,
            None,
            &[],
        );
        let get = |t: &str| p.items.iter().find(|i| i.tag == t).unwrap();
        assert_eq!(get("img-old").decision, Decision::Delete);
        assert_eq!(get("img-old").removal, Some(Removal::DeleteManifest));
        assert_eq!(get("img-new").reasons, ["recent", "young"]);
        assert_eq!(get("latest").reasons, ["protected", "recent", "young"]);
        assert_eq!(get("img-mid").reasons, ["referenced"]);
        assert_eq!(get("img-mid").referenced_by, ["release-2.27:ci.yml"]);
        assert_eq!(get("foreign").reasons, ["unmanaged"]);
    }

    #[test]
    fn failures_keep_everything() {
        let p = plan(
            &[repo(vec![info("img-old", 1, 0, true)])],
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
    fn references_by_digest_and_bare_tag() {
        let mut refs = References::default();
        let d = digest(9);
        refs.add_text(
            "main:a.yml",
            &format!("x: quay.io/ns/other@{d}\ny: img-3f1c2a\nz: v1\n"),
        );
        assert_eq!(refs.find("img", "zzz", &d).len(), 1);
        assert_eq!(refs.find("img", "img-3f1c2a", &digest(1)).len(), 1);
        assert!(
            refs.find("img", "v1", &digest(1)).is_empty(),
            "a generic word does not keep a tag"
        );
    }

    proptest! {
        /// Whatever the tags and rules: no kept tag loses its digest, and
        /// planning again after applying deletes nothing more.
        #[test]
        fn kept_digests_are_never_deleted(
            tags in proptest::collection::vec((0u8..6, 0i64..1000, any::<bool>(), any::<bool>()), 0..24),
            keep_last in proptest::option::of(0u64..4),
            protect_latest in any::<bool>(),
        ) {
            let infos: Vec<TagInfo> = tags.iter().enumerate().map(|(i, (d, created, ours, latest))| {
                let name = if *latest && i == 0 { "latest".to_owned() } else { format!("img-{i}") };
                info(&name, *d, *created, *ours)
            }).collect();
            let r = rules(keep_last, if protect_latest { &["latest"] } else { &[] });
            let p = plan(&[repo(infos.clone())], &References::default(), &r, 1000, None, &[]);
            let kept: HashSet<&Digest> = p.items.iter().filter(|i| i.decision == Decision::Keep).map(|i| &i.digest).collect();
            for i in p.deletions() {
                if i.removal == Some(Removal::DeleteManifest) {
                    prop_assert!(!kept.contains(&i.digest));
                }
            }
            // Apply: deleted manifests take all their tags; untagged tags go alone.
            let gone: HashSet<Digest> = p.deletions().filter(|i| i.removal == Some(Removal::DeleteManifest)).map(|i| i.digest.clone()).collect();
            let untagged: HashSet<&str> = p.deletions().filter(|i| i.removal == Some(Removal::Untag)).map(|i| i.tag.as_str()).collect();
            let left: Vec<TagInfo> = infos.into_iter().filter(|t| !gone.contains(&t.digest) && !untagged.contains(t.tag.as_str())).collect();
            let again = plan(&[repo(left)], &References::default(), &r, 1000, None, &[]);
            prop_assert_eq!(again.deletions().count(), 0);
        }
    }
}
