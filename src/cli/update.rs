//! `imagepipe update` (the lock beside the catalog) and `imagepipe pin`
//! (the consumer file).

use std::collections::BTreeMap;

use serde::Serialize;

use super::{Format, PinArgs, UpdateArgs, output, settings};
use crate::catalog::{self, Checksum, TargetKind};
use crate::env::Environment;
use crate::error::{EXIT_FAILED, Error, Result};
use crate::lock::{self, Entry, Lock};
use crate::source::resolve::{DefaultResolver, SourceResolver};

/// What `update` found for one source.
#[derive(Clone, Debug, Serialize)]
struct Row {
    url: String,
    /// `unchanged`, `new`, `changed`, `gone`.
    status: &'static str,
    digest: String,
    previous: Option<String>,
    moving_pointer: bool,
    note: Option<String>,
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

pub fn run(args: &UpdateArgs, _env: &Environment) -> Result<u8> {
    let catalog = catalog::load(&args.common.config)?;
    let old = lock::read(&catalog.path)
        .map_err(Error::Usage)?
        .unwrap_or_else(|| Lock {
            version: lock::LOCK_VERSION,
            sources: BTreeMap::new(),
        });
    let now = crate::oci::rfc3339(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(0)),
    );
    let mut new = Lock {
        version: lock::LOCK_VERSION,
        sources: BTreeMap::new(),
    };
    let mut rows = Vec::new();
    for (url, checksum) in lock::url_sources(&catalog) {
        let previous = old.sources.get(&url);
        let moving_pointer = lock::is_moving_pointer(&url);
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
            // Upstream lost it: the last good entry stays, marked.
            (Err(why), Some(prev)) => {
                let mut entry = prev.clone();
                entry.gone = Some(format!("{why} (checked {now})"));
                let status = if prev.gone.is_some() {
                    "unchanged"
                } else {
                    "gone"
                };
                (entry, status, Some(why))
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
    let dropped: Vec<&String> = old
        .sources
        .keys()
        .filter(|u| !new.sources.contains_key(*u))
        .collect();
    let moved = rows.iter().any(|r| r.status != "unchanged") || !dropped.is_empty();
    let path = lock::path_for(&catalog.path);
    match args.format {
        Format::Json => {
            output::json(&serde_json::json!({
                "lock": path.display().to_string(),
                "sources": rows,
                "removed": dropped,
                "moved": moved,
            }))?;
        }
        Format::Table => {
            let table: Vec<Vec<String>> = rows
                .iter()
                .map(|r| {
                    vec![
                        r.status.to_owned(),
                        r.url.clone(),
                        r.previous
                            .as_ref()
                            .map_or_else(|| r.digest.clone(), |p| format!("{p} → {}", r.digest)),
                    ]
                })
                .chain(
                    dropped
                        .iter()
                        .map(|u| vec!["removed".into(), (*u).clone(), String::new()]),
                )
                .collect();
            output::table(&["STATUS", "URL", "CHECKSUM"], &table);
        }
    }
    if args.check {
        if moved {
            tracing::error!(
                "upstream moved: run `imagepipe update` and commit {}",
                path.display()
            );
            return Ok(EXIT_FAILED);
        }
        return Ok(0);
    }
    if new != old || !path.exists() {
        lock::write(&catalog.path, &new).map_err(Error::Failed)?;
        tracing::info!("wrote {}", path.display());
    }
    Ok(0)
}

/// The consumer file's lines with `pins` (image → reference) written in:
/// a `key: value` line of a pinned image gets the new value, other lines
/// stay as they are, pins not there yet are appended.
fn pinned_text(old: &str, pins: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    let mut done = Vec::new();
    for line in old.lines() {
        let key = line
            .split_once(':')
            .map(|(k, _)| k.trim_matches(|c| c == '"' || c == '\''))
            .filter(|_| !line.starts_with([' ', '\t', '#', '-']));
        match key.and_then(|k| pins.get_key_value(k)) {
            Some((k, v)) => {
                out.push_str(&format!("{k}: {v}\n"));
                done.push(k.clone());
            }
            None => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    for (k, v) in pins.iter().filter(|(k, _)| !done.contains(k)) {
        out.push_str(&format!("{k}: {v}\n"));
    }
    out
}

pub fn pin(args: &PinArgs, env: &Environment) -> Result<u8> {
    let s =
        settings::Settings::resolve(&args.common, &args.release, env, Some(&args.registry), None)?;
    let (catalog, client) = (&s.catalog, &s.client);
    let targets = s.targets();
    let identities = s.identities()?;
    let base = catalog.base_dir();
    let mut pins = BTreeMap::new();
    for (image, id) in &identities {
        let Some(tag) = &id.tag else {
            tracing::warn!(
                "{}: its tag comes from the built content; publish it, then pin the tag it got",
                image.name.value
            );
            continue;
        };
        // The first registry target the image goes to (or the one named),
        // else its first other target.
        let mine = || targets.iter().filter(|t| image.goes_to(t));
        let Some(target) = mine()
            .find(|t| matches!(t.kind, TargetKind::Registry { .. }))
            .or_else(|| mine().next())
        else {
            return Err(Error::Usage(format!(
                "{}: none of the selected targets receives it — name one with --target",
                image.name.value
            )));
        };
        if target.kind.is_cloud() {
            // A machine image is pinned by its name, the same in every region.
            pins.insert(image.name.value.clone(), tag.clone());
            continue;
        }
        let mut reference = format!("{}:{tag}", target.repository(&image.name));
        if args.digest {
            let store = crate::store::open(target, &image.name, &base, client)
                .ok_or_else(|| Error::Failed(format!("{}: not an OCI store", target.name.value)))?;
            let found = store
                .resolve(tag)
                .map_err(|e| Error::Failed(format!("{reference}: {e}")))?
                .ok_or_else(|| {
                    Error::Failed(format!(
                        "{reference} is not there: publish it before pinning its digest"
                    ))
                })?;
            reference = format!("{reference}@{}", found.digest);
        }
        pins.insert(image.name.value.clone(), reference);
    }
    let old = match std::fs::read_to_string(&args.file) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => format!(
            "# Immutable image references, written by `imagepipe pin {}`.\n",
            args.file.display()
        ),
        Err(e) => {
            return Err(Error::Failed(format!(
                "{}: {}",
                args.file.display(),
                crate::io_reason::io_reason(&e)
            )));
        }
    };
    let new = pinned_text(&old, &pins);
    if new != old {
        let fail =
            |e: &dyn std::fmt::Display| Error::Failed(format!("{}: {e}", args.file.display()));
        if let Some(dir) = args.file.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| fail(&e))?;
        }
        crate::files::write_atomic(&args.file, new.as_bytes()).map_err(|e| fail(&e))?;
    }
    for (k, v) in &pins {
        output::text(&format!("{k}: {v}"));
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_replace_their_lines_and_keep_the_rest() {
        let pins: BTreeMap<String, String> = [
            ("vm-a".to_owned(), "r/vm-a:vm-a-2".to_owned()),
            ("vm-b".to_owned(), "r/vm-b:vm-b-1".to_owned()),
        ]
        .into();
        let old = "# pinned\nvm-a: r/vm-a:vm-a-1\nother: keep me\n  vm-b: nested, not ours\n";
        assert_eq!(
            pinned_text(old, &pins),
            "# pinned\nvm-a: r/vm-a:vm-a-2\nother: keep me\n  vm-b: nested, not ours\nvm-b: r/vm-b:vm-b-1\n"
        );
        assert_eq!(
            pinned_text(&pinned_text(old, &pins), &pins),
            pinned_text(old, &pins)
        );
    }
}
