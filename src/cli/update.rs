//! `imagepipe update` (the lock beside the catalog) and `imagepipe pin`
//! (the consumer file).

use std::collections::BTreeMap;

use serde::Serialize;

use super::{Format, PinArgs, UpdateArgs, output};
use crate::catalog::{self, Checksum, TargetKind};
use crate::env::Environment;
use crate::error::{Error, ExitStatus, Result};
use crate::lock::{self, Entry, Lock};
use crate::settings;
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

pub fn run(args: &UpdateArgs, _env: &Environment) -> Result<ExitStatus> {
    let catalog = catalog::load(&args.common.config)?;
    let old = lock::read(&catalog.path)
        .map_err(Error::Usage)?
        .unwrap_or_else(|| Lock {
            version: lock::LOCK_VERSION,
            sources: BTreeMap::new(),
        });
    let now = crate::oci::rfc3339(crate::provenance::now());
    let mut new = Lock {
        version: lock::LOCK_VERSION,
        sources: BTreeMap::new(),
    };
    let mut rows = Vec::new();
    for (url, checksum) in lock::url_sources(&catalog).map_err(Error::Usage)? {
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
            return Ok(ExitStatus::Failed);
        }
        return Ok(ExitStatus::Success);
    }
    if new != old || !path.exists() {
        lock::write(&catalog.path, &new).map_err(Error::Failed)?;
        tracing::info!("wrote {}", path.display());
    }
    Ok(ExitStatus::Success)
}

/// The consumer file's lines with `pins` (image → reference) written in:
/// a top-level `key: value` line of a pinned image gets the new value (its
/// trailing comment kept), other lines stay as they are, pins not there yet
/// are appended; CRLF files stay CRLF. A pinned key written twice, or with
/// a block value, is refused (a YAML reader would see another value).
fn pinned_text(old: &str, pins: &BTreeMap<String, String>) -> std::result::Result<String, String> {
    let eol = if old.contains("\r\n") { "\r\n" } else { "\n" };
    let mut out = String::new();
    let mut done: Vec<&String> = Vec::new();
    for (n, line) in old.lines().enumerate() {
        let line = line.strip_suffix('\r').unwrap_or(line);
        let top = !line.starts_with([' ', '\t', '#', '-']);
        let parsed = line
            .split_once(':')
            .filter(|_| top)
            .map(|(k, v)| (k.trim().trim_matches(|c| c == '"' || c == '\''), v));
        let Some((k, v)) = parsed.and_then(|(k, v)| pins.get_key_value(k).map(|(k, _)| (k, v)))
        else {
            out.push_str(line);
            out.push_str(eol);
            continue;
        };
        if done.contains(&k) {
            return Err(format!(
                "line {}: `{k}` is written twice: keep one line",
                n + 1
            ));
        }
        let value = v.trim();
        if value.is_empty() || value.starts_with('#') {
            return Err(format!(
                "line {}: `{k}` has a block value; pin writes `{k}: <reference>` lines: write it on one line once",
                n + 1
            ));
        }
        let comment = v.find(" #").map(|i| &v[i..]).unwrap_or("");
        out.push_str(&format!("{k}: {}{comment}{eol}", pins[k]));
        done.push(k);
    }
    for (k, v) in pins.iter().filter(|(k, _)| !done.contains(k)) {
        out.push_str(&format!("{k}: {v}{eol}"));
    }
    Ok(out)
}

pub fn pin(args: &PinArgs, env: &Environment) -> Result<ExitStatus> {
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
                .resolve(&crate::oci::Reference::tag(tag))
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
    let new = pinned_text(&old, &pins)
        .map_err(|e| Error::Usage(format!("{}: {e}", args.file.display())))?;
    if new != old {
        let fail =
            |e: &dyn std::fmt::Display| Error::Failed(format!("{}: {e}", args.file.display()));
        if let Some(dir) = args.file.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| fail(&e))?;
        }
        crate::files::write_atomic(&args.file, new.as_bytes()).map_err(|e| fail(&e))?;
    }
    match args.format {
        Format::Json => {
            output::json(&serde_json::json!({
                "file": args.file.display().to_string(),
                "pins": pins,
            }))?;
        }
        Format::Table => {
            output::text(
                &pins
                    .iter()
                    .map(|(k, v)| format!("{k}: {v}\n"))
                    .collect::<String>(),
            );
        }
    }
    Ok(ExitStatus::Success)
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
        let old = "# pinned\nvm-a : r/vm-a:vm-a-1 # the 2.30 image\nother: keep me\n  vm-b: nested, not ours\n";
        let new = pinned_text(old, &pins).unwrap();
        assert_eq!(
            new,
            "# pinned\nvm-a: r/vm-a:vm-a-2 # the 2.30 image\nother: keep me\n  vm-b: nested, not ours\nvm-b: r/vm-b:vm-b-1\n"
        );
        assert_eq!(pinned_text(&new, &pins).unwrap(), new);
        // CRLF stays CRLF.
        let crlf = pinned_text("a: 1\r\nvm-a: x\r\n", &pins).unwrap();
        assert_eq!(
            crlf,
            "a: 1\r\nvm-a: r/vm-a:vm-a-2\r\nvm-b: r/vm-b:vm-b-1\r\n"
        );
        // What a YAML reader would read otherwise is refused.
        assert!(
            pinned_text("vm-a: x\nvm-a: y\n", &pins)
                .unwrap_err()
                .contains("twice")
        );
        assert!(
            pinned_text("vm-a:\n  ref: x\n", &pins)
                .unwrap_err()
                .contains("block value")
        );
    }
}
