//! The lock beside the catalog (`images.lock` next to `images.yml`): what
//! `imagepipe update` resolved for every `url` source — the checksum its
//! `checksums_url` listed, the size and whether upstream still serves it —
//! so that a recipe changes only through a reviewed change of the lock.
//! `plan` and `build` read `checksums_url` sources from it, offline.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::catalog::{Catalog, Checksum, FileDigest, Source};
use crate::error::Error;
use crate::source::error::SourceError;
use crate::source::resolve::{DefaultResolver, Resolved, SourceResolver};

/// The lock format version.
pub const LOCK_VERSION: u64 = 1;

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lock {
    pub version: u64,
    /// By source URL.
    pub sources: BTreeMap<String, Entry>,
}

/// What `update` found for one URL.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The checksum file the digest was read from; `None`: pinned in the catalog.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checksums_url: Option<String>,
    /// `sha256` or `sha512`.
    pub algorithm: String,
    pub digest: String,
    /// The size upstream announced (`Content-Length`), when it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// When this digest was first resolved (RFC 3339, UTC).
    pub resolved_at: String,
    /// The URL is a moving pointer (`…/current/…`, `…-latest…`): upstream
    /// replaces its bytes, so its checksum moves.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub moving_pointer: bool,
    /// Upstream no longer served it when last checked (why, and when): the
    /// entry is the last good one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gone: Option<String>,
}

impl Entry {
    /// The checksum, when it is a well-formed one (a lock is edited by hand
    /// too, and its digest names a file of the download cache).
    pub fn digest(&self) -> Option<FileDigest> {
        FileDigest::parse(&self.algorithm, &self.digest)
    }
}

/// `images.yml` → `images.lock`, beside it.
pub fn path_for(catalog: &Path) -> PathBuf {
    catalog.with_extension("lock")
}

/// The lock of `catalog`, if it has one.
pub fn read(catalog: &Path) -> Result<Option<Lock>, String> {
    let path = path_for(catalog);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(format!(
                "{}: {}",
                path.display(),
                crate::io_reason::io_reason(&e)
            ));
        }
    };
    let lock: Lock = serde_json::from_slice(&bytes).map_err(|e| {
        format!(
            "{} is not an imagepipe lock ({e}): run `imagepipe update` to write it again",
            path.display()
        )
    })?;
    if lock.version != LOCK_VERSION {
        return Err(format!(
            "{}: lock version {} is not {LOCK_VERSION}: run `imagepipe update`",
            path.display(),
            lock.version
        ));
    }
    Ok(Some(lock))
}

/// Writes the lock beside `catalog`, atomically.
pub fn write(catalog: &Path, lock: &Lock) -> Result<(), String> {
    let path = path_for(catalog);
    let fail = |e: &dyn std::fmt::Display| format!("{}: {e}", path.display());
    let mut text = serde_json::to_vec_pretty(lock).map_err(|e| fail(&e))?;
    text.push(b'\n');
    crate::files::write_atomic(&path, &text).map_err(|e| fail(&e))
}

/// Resolves `checksums_url` sources from the lock, never from the network.
pub struct Locked<'a> {
    pub lock: &'a Lock,
    pub path: PathBuf,
}

impl SourceResolver for Locked<'_> {
    fn local(&self, path: &Path) -> Result<Resolved, SourceError> {
        DefaultResolver.local(path)
    }

    fn checksum_from_sums(&self, sums_url: &str, url: &str) -> Result<FileDigest, SourceError> {
        let lock = self.path.display();
        let problem = |reason: String| SourceError::Lock {
            url: url.to_owned(),
            reason,
        };
        match self.lock.sources.get(url) {
            None => Err(problem(format!(
                "{lock} has no entry for it: run `imagepipe update` and commit {lock}"
            ))),
            Some(e) if e.checksums_url.as_deref() != Some(sums_url) => Err(problem(format!(
                "{lock} is stale: its entry was read from {}, the catalog now names {sums_url}; run `imagepipe update` and commit {lock}",
                e.checksums_url
                    .as_deref()
                    .unwrap_or("the catalog's pinned checksum")
            ))),
            Some(e) => e.digest().ok_or_else(|| {
                problem(format!(
                    "{lock}: `{}:{}` is not a sha256 or sha512 digest (lowercase hex of 64 or 128 digits); run `imagepipe update`",
                    e.algorithm, e.digest
                ))
            }),
        }
    }
}

/// Whether a URL names a moving pointer rather than one upstream build.
pub fn is_moving_pointer(url: &str) -> bool {
    let path = url.split_once("://").map_or(url, |(_, r)| r);
    let path = path.split(['?', '#']).next().unwrap_or(path);
    path.split('/').skip(1).any(|segment| {
        let s = segment.to_ascii_lowercase();
        s == "current"
            || s.starts_with("current-")
            || s == "latest"
            || s.contains("-latest")
            || s.contains("latest.")
    })
}

/// Every `url` source of the catalog: (url, checksum as the catalog writes
/// it). A URL several images name is locked once, from its `checksums_url`
/// when one of them reads it there; two different checksum files for one
/// URL are an error.
pub fn url_sources(catalog: &Catalog) -> Result<Vec<(String, Checksum)>, String> {
    let mut out: Vec<(String, Checksum)> = Vec::new();
    for image in &catalog.images {
        for ps in &image.platforms {
            let Source::Url { url, checksum, .. } = &ps.source else {
                continue;
            };
            match out.iter_mut().find(|(u, _)| u == url) {
                None => out.push((url.clone(), checksum.clone())),
                Some((_, had)) => match (&*had, checksum) {
                    (Checksum::SumsUrl(a), Checksum::SumsUrl(b)) if a != b => {
                        return Err(format!(
                            "{url} is read from two checksum files ({a} and {b}): name one in every image"
                        ));
                    }
                    (Checksum::Pinned(_), Checksum::SumsUrl(_)) => *had = checksum.clone(),
                    _ => {}
                },
            }
        }
    }
    Ok(out)
}

/// What `update` found for one source.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    pub url: String,
    /// `unchanged`, `new`, `changed`, `gone`.
    pub status: &'static str,
    pub digest: String,
    pub previous: Option<String>,
    pub moving_pointer: bool,
    pub note: Option<String>,
}

/// Whether upstream answered that the file is not there (rather than not
/// answering at all).
fn is_gone(why: &str) -> bool {
    why.contains("HTTP 404") || why.contains("HTTP 410") || why.contains("lists no checksum")
}

/// The size upstream announces for `url`, or why it is not there.
fn probe(url: &str) -> std::result::Result<Option<u64>, String> {
    let resp = crate::http::get(url)?;
    if !resp.status().is_success() {
        return Err(format!("HTTP {}", resp.status()));
    }
    Ok(resp
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok()))
}

/// What `update` resolved: the new lock, a row per source, the sources the
/// catalog no longer names, and whether anything moved.
#[derive(Debug)]
pub struct Refreshed {
    pub lock: Lock,
    pub rows: Vec<Row>,
    pub removed: Vec<String>,
    pub moved: bool,
}

/// Resolves every `url` source of the catalog again (its `checksums_url`,
/// and a probe of the file itself) against the lock `old`. Upstream that
/// cannot be reached fails the whole refresh: nothing is known then.
pub fn refresh(catalog: &Catalog, old: &Lock) -> Result<Refreshed, Error> {
    let now = crate::oci::rfc3339(crate::provenance::now());
    let mut new = Lock {
        version: LOCK_VERSION,
        sources: BTreeMap::new(),
    };
    let mut rows = Vec::new();
    for (url, checksum) in url_sources(catalog).map_err(Error::Usage)? {
        let previous = old.sources.get(&url);
        let moving_pointer = is_moving_pointer(&url);
        let (sums, resolved) = match &checksum {
            Checksum::Pinned(d) => (None, Ok(d.clone())),
            Checksum::SumsUrl(s) => (Some(s.clone()), DefaultResolver.checksum_from_sums(s, &url)),
        };
        let found = resolved
            .map_err(|e| e.to_string())
            .and_then(|d| probe(&url).map(|size| (d, size)));
        let (entry, status, note) = match (found, previous) {
            (Ok((digest, size)), prev) => {
                let same = prev.is_some_and(|p| {
                    p.digest == digest.hex
                        && p.algorithm == digest.algorithm.name()
                        && p.checksums_url == sums
                });
                let entry = Entry {
                    checksums_url: sums,
                    algorithm: digest.algorithm.name().to_owned(),
                    digest: digest.hex.clone(),
                    size,
                    resolved_at: prev
                        .filter(|_| same)
                        .map_or_else(|| now.clone(), |p| p.resolved_at.clone()),
                    moving_pointer,
                    gone: None,
                };
                let status = match prev {
                    None => "new",
                    Some(_) if !same => "changed",
                    Some(p) if p.gone.is_some() || p.size != entry.size => "changed",
                    Some(_) => "unchanged",
                };
                (entry, status, None)
            }
            // Upstream cannot be reached: nothing is known, nothing written.
            (Err(why), _) if !is_gone(&why) => {
                return Err(Error::Failed(format!(
                    "{url}: {why}; nothing was written (is upstream reachable from here? run again)"
                )));
            }
            // Upstream lost it: the last good entry stays, marked (once:
            // a file that stays gone does not change the lock again).
            (Err(why), Some(prev)) => {
                let mut entry = prev.clone();
                let status = if prev.gone.is_some() {
                    "unchanged"
                } else {
                    entry.gone = Some(format!("{why} (checked {now})"));
                    "gone"
                };
                (entry, status, Some(why))
            }
            // A pinned source already gone: the catalog has its checksum.
            (Err(why), None) if matches!(checksum, Checksum::Pinned(_)) => {
                let Checksum::Pinned(d) = &checksum else {
                    unreachable!("matched")
                };
                let entry = Entry {
                    checksums_url: None,
                    algorithm: d.algorithm.name().to_owned(),
                    digest: d.hex.clone(),
                    size: None,
                    resolved_at: now.clone(),
                    moving_pointer,
                    gone: Some(format!("{why} (checked {now})")),
                };
                (entry, "gone", Some(why))
            }
            (Err(why), None) => {
                return Err(Error::Failed(format!(
                    "{url}: {why}; nothing was written (the catalog names a source upstream does not serve)"
                )));
            }
        };
        if moving_pointer && status != "unchanged" {
            tracing::warn!(
                "{url} is a moving pointer (upstream replaces its bytes): prefer the dated URL of one build"
            );
        }
        if status == "gone" {
            tracing::warn!(
                "{url}: upstream no longer serves it ({}); the lock keeps the last good checksum, and the download cache keeps the file if it has it",
                note.as_deref().unwrap_or("")
            );
        }
        rows.push(Row {
            url: url.clone(),
            status,
            digest: format!("{}:{}", entry.algorithm, entry.digest),
            previous: previous
                .filter(|p| p.digest != entry.digest)
                .map(|p| format!("{}:{}", p.algorithm, p.digest)),
            moving_pointer,
            note,
        });
        new.sources.insert(url, entry);
    }
    let removed: Vec<String> = old
        .sources
        .keys()
        .filter(|u| !new.sources.contains_key(*u))
        .cloned()
        .collect();
    let moved = rows.iter().any(|r| r.status != "unchanged") || !removed.is_empty();
    Ok(Refreshed {
        lock: new,
        rows,
        removed,
        moved,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moving_pointers_are_told_from_builds() {
        for moving in [
            "https://cloud-images.ubuntu.com/focal/current/focal-server-cloudimg-amd64-disk-kvm.img",
            "https://cdimage.debian.org/cdimage/openstack/current-10/debian-10-openstack-amd64.qcow2",
            "https://repo.almalinux.org/almalinux/9/cloud/x86_64/images/AlmaLinux-9-GenericCloud-latest.x86_64.qcow2",
            "https://dl.rockylinux.org/pub/rocky/9/images/x86_64/Rocky-9-GenericCloud-Base.latest.x86_64.qcow2",
            "https://cloud.debian.org/images/cloud/bookworm/latest/debian-12-generic-amd64.qcow2",
        ] {
            assert!(is_moving_pointer(moving), "{moving}");
        }
        for fixed in [
            "https://cloud-images.ubuntu.com/noble/20260323/noble-server-cloudimg-amd64.img",
            "https://cdimage.debian.org/cdimage/cloud/trixie/20250806-2196/debian-13-generic-amd64-20250806-2196.qcow2",
            "https://current.example.com/images/disk.qcow2",
        ] {
            assert!(!is_moving_pointer(fixed), "{fixed}");
        }
    }
}
