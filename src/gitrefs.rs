//! Git references for retention: which branches count, and the files at
//! their tips, read with gix (no checkout; bare or not; any owner).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use globset::{Glob, GlobSet, GlobSetBuilder};

/// One branch tip's matching files.
#[derive(Clone, Debug)]
pub struct BranchFiles {
    /// The branch as configured (`main`, `release-2.27`), remote prefix removed.
    pub branch: String,
    /// The ref it was read from (`refs/heads/main`, `refs/remotes/origin/main`).
    pub reference: String,
    /// Path → content, for files matching the configured paths.
    pub files: Vec<(String, std::sync::Arc<Vec<u8>>)>,
    /// The catalog as this branch has it ([`Rules::catalog`]), if it has one.
    pub catalog: Option<std::sync::Arc<Vec<u8>>>,
}

/// What was read, and which matching branches fell outside the supported releases.
#[derive(Clone, Debug, Default)]
pub struct Scan {
    /// The default branch, and how it was found.
    pub default_branch: String,
    pub default_from: String,
    pub branches: Vec<BranchFiles>,
    /// Release branches older than the supported ones (not scanned).
    pub unsupported: Vec<String>,
    /// Branches matching `branches` globs that are not release branches:
    /// read (their references keep images) but not ranked as releases.
    pub unranked: Vec<String>,
}

/// What to read.
#[derive(Clone, Debug)]
pub struct Rules<'a> {
    /// Branch names or globs (`main`, `release-*`).
    pub branches: &'a [String],
    /// How many of the newest release branches count.
    pub supported: u64,
    /// File globs scanned for references.
    pub paths: &'a [String],
    /// The default branch as the catalog or the CI names it (with where from).
    pub default_branch: Option<(&'a str, &'a str)>,
    /// Release branch names, `{major}`/`{minor}`/`{patch}` standing for numbers.
    pub release_pattern: &'a str,
    /// Whether the branch `HEAD` names may stand for the default branch
    /// (not on GitHub Actions, whose checkout names the branch being built).
    pub head_fallback: bool,
    /// The catalog's path in the repository, read on every branch too.
    pub catalog: Option<&'a str>,
}

#[derive(Debug, thiserror::Error)]
#[error("git repository {repo}: {message}")]
pub struct GitError {
    pub repo: String,
    pub message: String,
}

fn globset(patterns: &[String]) -> Result<GlobSet, String> {
    let mut b = GlobSetBuilder::new();
    for p in patterns {
        b.add(Glob::new(p).map_err(|e| format!("`{p}`: {e}"))?);
    }
    b.build().map_err(|e| e.to_string())
}

/// The version of a release branch under `pattern`: `release-2.27` → [2, 27];
/// `None` for names the pattern does not describe exactly.
pub fn release_version(pattern: &str, name: &str) -> Option<Vec<u64>> {
    let mut rest = name;
    let mut version = Vec::new();
    let mut pat = pattern;
    while !pat.is_empty() {
        if let Some(after) = ["{major}", "{minor}", "{patch}"]
            .iter()
            .find_map(|p| pat.strip_prefix(p))
        {
            let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
            if digits == 0 || (digits > 1 && rest.starts_with('0')) {
                return None;
            }
            version.push(rest[..digits].parse().ok()?);
            rest = &rest[digits..];
            pat = after;
        } else {
            let c = pat.chars().next()?;
            rest = rest.strip_prefix(c)?;
            pat = &pat[c.len_utf8()..];
        }
    }
    rest.is_empty().then_some(version)
}

/// Reads the default branch and the branches matching `branches` (local and
/// remote-tracking), keeps the newest `supported` release branches, and
/// returns the files matching `paths` at each tip. Fails closed: the default
/// branch must be known and present, every branch read, and every `paths`
/// glob must match a file on every branch read.
pub fn scan(repo_path: &Path, rules: &Rules<'_>) -> Result<Scan, GitError> {
    let err = |message: String| GitError {
        repo: repo_path.display().to_string(),
        message,
    };
    let mut opts = gix::open::Options::isolated();
    opts.permissions.config.git_binary = false;
    let repo = gix::open_opts(repo_path, opts.with(gix::sec::Trust::Full))
        .map_err(|e| err(e.to_string()))?;
    let branch_globs = globset(rules.branches).map_err(err)?;
    let path_globs: Vec<(String, globset::GlobMatcher)> = rules
        .paths
        .iter()
        .map(|p| {
            Glob::new(p)
                .map(|g| (p.clone(), g.compile_matcher()))
                .map_err(|e| err(format!("path `{p}`: {e}")))
        })
        .collect::<Result<_, _>>()?;
    if path_globs.is_empty() {
        return Err(err(
            "`retention.git.paths` is empty: no file would be scanned for references; list the files that name images, e.g. [\"**/*.yml\"]".into(),
        ));
    }
    if repo.is_shallow().map_err(|e| err(e.to_string()))? {
        return Err(err(
            "the clone is shallow: branches and their history may be missing, so references could go unseen; fetch every branch in full (`git fetch --unshallow origin '+refs/heads/*:refs/remotes/origin/*'`, or `fetch-depth: 0`); nothing is deleted".into(),
        ));
    }
    let (default, default_from) = match rules.default_branch {
        Some((b, from)) => (b.to_owned(), from.to_owned()),
        None => default_branch(&repo, rules.head_fallback).ok_or_else(|| {
            err("cannot tell the default branch: there is no origin/HEAD, and HEAD is detached (or, on GitHub Actions, names the branch being built). Set `retention.git.default_branch`, or CI_DEFAULT_BRANCH (GitLab sets it; on GitHub Actions pass `${{ github.event.repository.default_branch }}`), or run `git remote set-head origin --auto`; nothing is deleted".into())
        })?,
    };
    // name → candidate refs (local and remote-tracking).
    let mut candidates: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let refs = repo.references().map_err(|e| err(e.to_string()))?;
    for (iter, remote) in [
        (refs.local_branches(), false),
        (refs.remote_branches(), true),
    ] {
        for r in iter.map_err(|e| err(e.to_string()))? {
            let r = r.map_err(|e| err(e.to_string()))?;
            let full = r.name().as_bstr().to_string();
            let short = r.name().shorten().to_string();
            let name = if remote {
                short
                    .split_once('/')
                    .map_or(short.clone(), |(_, b)| b.to_owned())
            } else {
                short
            };
            if name == "HEAD" {
                continue;
            }
            if name == default || branch_globs.is_match(&name) {
                candidates.entry(name).or_default().push(full);
            }
        }
    }
    // Every branch named in `branches` must be there, and every glob must
    // match one: a branch missing from the clone would hide its references.
    for b in rules.branches {
        let is_glob = b.contains(['*', '?', '[', '{']);
        let found = if is_glob {
            Glob::new(b)
                .map(|g| g.compile_matcher())
                .is_ok_and(|m| candidates.keys().any(|n| m.is_match(n)))
        } else {
            candidates.contains_key(b)
        };
        if !found {
            return Err(err(format!(
                "`branches` entry `{b}` matches no local or remote-tracking branch: fetch every branch (`git fetch origin '+refs/heads/*:refs/remotes/origin/*'`), or remove the entry if the repository has no such branch; nothing is deleted"
            )));
        }
    }
    if !candidates.contains_key(&default) {
        return Err(err(format!(
            "the default branch `{default}` ({default_from}) is neither a local branch nor a remote-tracking one: fetch it (`git fetch origin '+refs/heads/*:refs/remotes/origin/*'`); nothing is deleted"
        )));
    }
    // Release branches: those the pattern describes, newest `supported`
    // kept. Other matching branches are read but not ranked, so a stray
    // `release-2027-cleanup-test` cannot push a real release out.
    let literal = |n: &str| rules.branches.iter().any(|b| b == n);
    let mut releases: Vec<(&String, Vec<u64>)> = Vec::new();
    let mut unranked = Vec::new();
    for n in candidates.keys().filter(|n| **n != default) {
        match release_version(rules.release_pattern, n) {
            Some(v) => releases.push((n, v)),
            None if literal(n) => {}
            None => unranked.push(n.clone()),
        }
    }
    for n in &unranked {
        tracing::warn!(
            "git: branch `{n}` matches `branches` but not the release pattern `{}`: its references count, but it is not ranked as a release (ignored for supported_releases)",
            rules.release_pattern
        );
    }
    releases.sort_by(|a, b| b.1.cmp(&a.1));
    let unsupported: Vec<String> = releases
        .iter()
        .skip(usize::try_from(rules.supported).unwrap_or(usize::MAX))
        .map(|(n, _)| (*n).clone())
        .collect();

    let mut blobs: HashMap<gix::ObjectId, std::sync::Arc<Vec<u8>>> = HashMap::new();
    let mut out = Scan {
        default_branch: default.clone(),
        default_from,
        branches: Vec::new(),
        unsupported: unsupported.clone(),
        unranked,
    };
    for (name, full_names) in &candidates {
        if unsupported.contains(name) {
            continue;
        }
        for full in full_names {
            let mut reference = repo
                .find_reference(full.as_str())
                .map_err(|e| err(format!("{full}: {e}")))?;
            let commit = reference
                .peel_to_commit()
                .map_err(|e| err(format!("{full}: {e}")))?;
            let tree = commit.tree().map_err(|e| err(format!("{full}: {e}")))?;
            let entries = tree
                .traverse()
                .breadthfirst
                .files()
                .map_err(|e| err(format!("{full}: {e}")))?;
            let mut files = Vec::new();
            let mut catalog = None;
            let mut matched = vec![false; path_globs.len()];
            // A symbolic link a glob matches: (glob index, path, target).
            let mut links: Vec<(usize, String, String)> = Vec::new();
            for e in entries {
                if e.mode.is_link() {
                    let path = e.filepath.to_string();
                    if let Some(i) = path_globs.iter().position(|(_, g)| g.is_match(&path)) {
                        let target = repo
                            .find_object(e.oid)
                            .map(|o| String::from_utf8_lossy(&o.data).into_owned())
                            .unwrap_or_default();
                        links.push((i, path, target));
                    }
                    continue;
                }
                if !e.mode.is_blob() {
                    continue;
                }
                let path = e.filepath.to_string();
                if rules.catalog == Some(path.as_str()) {
                    catalog = repo
                        .find_object(e.oid)
                        .ok()
                        .map(|o| std::sync::Arc::new(o.data.clone()));
                }
                let mut any = false;
                for (i, (_, g)) in path_globs.iter().enumerate() {
                    if g.is_match(&path) {
                        matched[i] = true;
                        any = true;
                    }
                }
                if !any {
                    continue;
                }
                let data = match blobs.get(&e.oid) {
                    Some(d) => d.clone(),
                    None => {
                        let obj = repo
                            .find_object(e.oid)
                            .map_err(|x| err(format!("{full}:{path}: {x}")))?;
                        let d = std::sync::Arc::new(obj.data.clone());
                        blobs.insert(e.oid, d.clone());
                        d
                    }
                };
                files.push((path, data));
            }
            if let Some((i, (glob, _))) = path_globs
                .iter()
                .enumerate()
                .zip(&matched)
                .find(|(_, m)| !**m)
                .map(|(g, _)| g)
            {
                if let Some((_, path, target)) = links.iter().find(|(l, _, _)| *l == i) {
                    return Err(err(format!(
                        "`paths` glob `{glob}` matches only symbolic links on {full} ({path} → {target}): references are read from regular files only, so they would go unseen; point `retention.git.paths` at the files the links name; nothing is deleted"
                    )));
                }
                return Err(err(format!(
                    "`paths` glob `{glob}` matches no file on {full}: references there would go unseen; fix `retention.git.paths` (or the branch); nothing is deleted"
                )));
            }
            out.branches.push(BranchFiles {
                branch: name.clone(),
                reference: full.clone(),
                files,
                catalog,
            });
        }
    }
    Ok(out)
}

/// The default branch from the repository: `origin/HEAD`'s target, else
/// the branch `HEAD` names; with where it came from.
fn default_branch(repo: &gix::Repository, head_fallback: bool) -> Option<(String, String)> {
    if let Ok(Some(r)) = repo.try_find_reference("refs/remotes/origin/HEAD")
        && let Some(target) = r.target().try_name()
        && let Some((_, b)) = target.shorten().to_string().split_once('/')
    {
        return Some((b.to_owned(), "origin/HEAD".into()));
    }
    if !head_fallback {
        return None;
    }
    repo.head_name()
        .ok()
        .flatten()
        .map(|n| (n.shorten().to_string(), "the branch HEAD names".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn release_versions_follow_the_pattern_exactly() {
        let p = "release-{major}.{minor}";
        let key = |n| release_version(p, n);
        let mut v = vec!["release-2.9", "release-2.27", "release-2.10"];
        v.sort_by_key(|n| std::cmp::Reverse(key(n)));
        assert_eq!(v, ["release-2.27", "release-2.10", "release-2.9"]);
        for stray in [
            "main",
            "release-2027-cleanup-test",
            "release-2.27-backup",
            "release-2",
            "release-02.1",
            "release-2.x",
        ] {
            assert_eq!(key(stray), None, "{stray}");
        }
        assert_eq!(
            release_version("v{major}.{minor}.{patch}", "v1.33.6"),
            Some(vec![1, 33, 6])
        );
    }
}
