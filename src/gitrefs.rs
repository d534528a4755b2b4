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
}

/// What was read, and which matching branches fell outside the supported releases.
#[derive(Clone, Debug, Default)]
pub struct Scan {
    pub branches: Vec<BranchFiles>,
    /// Release branches older than the supported ones (not scanned).
    pub unsupported: Vec<String>,
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

/// The version numbers in a branch name, for ordering: `release-2.27` → [2, 27].
pub fn version_key(name: &str) -> Option<Vec<u64>> {
    let start = name.find(|c: char| c.is_ascii_digit())?;
    let v: Vec<u64> = name[start..]
        .split(|c: char| !c.is_ascii_digit())
        .take_while(|s| !s.is_empty())
        .filter_map(|s| s.parse().ok())
        .collect();
    (!v.is_empty()).then_some(v)
}

/// Reads the default branch and the branches matching `branches` (local and
/// remote-tracking), keeps the newest `supported` release branches (those
/// with a version in their name), and returns the files matching `paths` at
/// each tip. Any failure to read is an error: callers fail closed.
pub fn scan(
    repo_path: &Path,
    branches: &[String],
    supported: u64,
    paths: &[String],
) -> Result<Scan, GitError> {
    let err = |message: String| GitError {
        repo: repo_path.display().to_string(),
        message,
    };
    let mut opts = gix::open::Options::isolated();
    opts.permissions.config.git_binary = false;
    let repo = gix::open_opts(repo_path, opts.with(gix::sec::Trust::Full))
        .map_err(|e| err(e.to_string()))?;
    let branch_globs = globset(branches).map_err(err)?;
    let path_globs = globset(paths).map_err(err)?;

    let default = default_branch(&repo);
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
            if Some(&name) == default.as_ref() || branch_globs.is_match(&name) {
                candidates.entry(name).or_default().push(full);
            }
        }
    }
    // Release branches: matching branches with a version, newest `supported` kept.
    let mut releases: Vec<(&String, Vec<u64>)> = candidates
        .keys()
        .filter(|n| Some(*n) != default.as_ref())
        .filter_map(|n| version_key(n).map(|v| (n, v)))
        .collect();
    releases.sort_by(|a, b| b.1.cmp(&a.1));
    let unsupported: Vec<String> = releases
        .iter()
        .skip(usize::try_from(supported).unwrap_or(usize::MAX))
        .map(|(n, _)| (*n).clone())
        .collect();

    let mut blobs: HashMap<gix::ObjectId, std::sync::Arc<Vec<u8>>> = HashMap::new();
    let mut out = Scan {
        branches: Vec::new(),
        unsupported: unsupported.clone(),
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
            for e in entries {
                if !e.mode.is_blob() {
                    continue;
                }
                let path = e.filepath.to_string();
                if !path_globs.is_match(&path) {
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
            out.branches.push(BranchFiles {
                branch: name.clone(),
                reference: full.clone(),
                files,
            });
        }
    }
    Ok(out)
}

/// The default branch: `origin/HEAD`'s target, else `HEAD`'s branch.
fn default_branch(repo: &gix::Repository) -> Option<String> {
    if let Ok(Some(r)) = repo.try_find_reference("refs/remotes/origin/HEAD")
        && let Some(target) = r.target().try_name()
    {
        return target
            .shorten()
            .to_string()
            .split_once('/')
            .map(|(_, b)| b.to_owned());
    }
    repo.head_name()
        .ok()
        .flatten()
        .map(|n| n.shorten().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn release_versions_order_numerically() {
        let mut v = vec!["release-2.9", "release-2.27", "release-2.10"];
        v.sort_by_key(|n| std::cmp::Reverse(version_key(n)));
        assert_eq!(v, ["release-2.27", "release-2.10", "release-2.9"]);
        assert_eq!(version_key("main"), None);
    }
}
