//! `imagepipe pin`: immutable references of the images a catalog builds,
//! written into a consumer's file in place.

use std::collections::BTreeMap;

use crate::catalog::TargetKind;
use crate::error::Error;
use crate::settings::Settings;

/// Image → its immutable reference (`repository:tag`, with `@digest` when
/// `digest`), on the first registry target it goes to (or the one named),
/// else its first other target; a machine image by its name.
pub fn references(s: &Settings, digest: bool) -> Result<BTreeMap<String, String>, Error> {
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
        if digest {
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
    Ok(pins)
}

/// The consumer file's lines with `pins` (image → reference) written in:
/// a top-level `key: value` line of a pinned image gets the new value (its
/// trailing comment kept), other lines stay as they are, pins not there yet
/// are appended; CRLF files stay CRLF. A pinned key written twice, or with
/// a block value, is refused (a YAML reader would see another value).
pub fn pinned_text(
    old: &str,
    pins: &BTreeMap<String, String>,
) -> std::result::Result<String, String> {
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
