//! References found in git files: `repository:tag`, `…@sha256:<digest>`, and
//! bare tags that name an image. Scanning errs towards keeping: a token is
//! tried as written and without trailing punctuation, a repository matches
//! on its full path with any host in front, and a digest matches whether it
//! names an image or one of an index's children.

use std::collections::{BTreeSet, HashMap};

use crate::gitrefs::Scan;
use crate::oci::Digest;

#[derive(Clone, Debug, Default)]
pub struct References {
    /// tag → (repository path as written, location).
    by_tag: HashMap<String, Vec<(String, String)>>,
    digests: HashMap<String, BTreeSet<String>>,
    words: HashMap<String, BTreeSet<String>>,
}

fn tag_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')
}

fn reference_char(c: char) -> bool {
    tag_char(c) || matches!(c, '/' | ':' | '@')
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
    /// Quotes, brackets, commas and white space end a token; a token is also
    /// tried without trailing `.`, `:` and `-` (prose, YAML keys, Markdown).
    pub fn add_text(&mut self, location: &str, text: &str) {
        for raw in text.split(|c: char| !reference_char(c)) {
            let trimmed = raw.trim_end_matches(['.', ':', '-']);
            for token in [raw, trimmed] {
                if !token.is_empty() {
                    self.add_token(location, token);
                }
                if raw == trimmed {
                    break;
                }
            }
        }
    }

    fn add_token(&mut self, location: &str, token: &str) {
        let (name_part, digest) = match token.split_once('@') {
            Some((n, d)) => (n, Some(d)),
            None => (token, None),
        };
        for candidate in [digest, Some(token)].into_iter().flatten() {
            if let Some(hex) = candidate.strip_prefix("sha256:") {
                let hex: String = hex.chars().take_while(char::is_ascii_hexdigit).collect();
                if hex.len() == 64 {
                    self.digests
                        .entry(hex.to_ascii_lowercase())
                        .or_default()
                        .insert(location.to_owned());
                }
            }
        }
        // `host[:port]/ns/name:tag`: the tag follows the last `:` after the last `/`.
        let last_slash = name_part.rfind('/').map_or(0, |i| i + 1);
        if let Some(colon) = name_part[last_slash..].rfind(':') {
            let (path, tag) = (
                &name_part[..last_slash + colon],
                &name_part[last_slash + colon + 1..],
            );
            if !path.is_empty() && !tag.is_empty() && tag.chars().all(tag_char) {
                self.by_tag
                    .entry(tag.to_owned())
                    .or_default()
                    .push((path.to_owned(), location.to_owned()));
            }
        }
        for word in token.split(|c: char| !tag_char(c)).filter(|w| w.len() > 1) {
            self.words
                .entry(word.to_owned())
                .or_default()
                .insert(location.to_owned());
        }
    }

    /// Where `tag` of the repository `path` (`namespace/name`, the image
    /// name `name` may itself hold `/`) or any of `digests` is referenced.
    /// A reference's repository matches when it is the full path or the
    /// image name, with or without a host (or mirror) in front; a bare word
    /// counts when it is the tag and the tag contains the image's name.
    pub fn find(
        &self,
        path: &str,
        image: &str,
        tag: &str,
        digests: &[&Digest],
    ) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        let repo_matches = |p: &str| {
            [path, image].iter().any(|want| {
                p == *want || p.strip_suffix(want).is_some_and(|host| host.ends_with('/'))
            })
        };
        for (p, location) in self.by_tag.get(tag).into_iter().flatten() {
            if repo_matches(p) {
                out.insert(location.clone());
            }
        }
        for d in digests {
            if let Some(l) = self.digests.get(d.hex()) {
                out.extend(l.iter().cloned());
            }
        }
        let short = image.rsplit('/').next().unwrap_or(image);
        if tag.contains(short)
            && let Some(l) = self.words.get(tag)
        {
            out.extend(l.iter().cloned());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refs(text: &str) -> References {
        let mut r = References::default();
        r.add_text("main:ci.yml", text);
        r
    }

    #[test]
    fn full_paths_hosts_and_prose() {
        let d = Digest::of(b"x");
        let tag = "disk-b2481c3d5e6f";
        for text in [
            format!("image: registry.example.com/ci/tools/disk:{tag}"),
            format!("image: \"127.0.0.1:5000/ci/tools/disk:{tag}\""),
            format!("The known good disk is registry/ci/tools/disk:{tag}."),
            format!("- [disk](ci/tools/disk:{tag})"),
            format!("IMG=quay.io/mirror/ci/tools/disk:{tag};"),
            format!("{{\"image\": \"tools/disk:{tag}\"}}"),
        ] {
            assert_eq!(
                refs(&text)
                    .find("ci/tools/disk", "tools/disk", tag, &[&d])
                    .len(),
                1,
                "{text}"
            );
        }
        // Another repository that merely ends alike does not count (with a
        // tag that is not the image's own name, which counts anywhere).
        for other in [
            "registry/ci/other-disk:v1.2",
            "registry/ci/xtools/disk:v1.2",
        ] {
            assert!(
                refs(&format!("x: {other}"))
                    .find("ci/tools/disk", "tools/disk", "v1.2", &[&d])
                    .is_empty(),
                "{other}"
            );
        }
        assert_eq!(
            refs("x: registry/ci/tools/disk:v1.2")
                .find("ci/tools/disk", "tools/disk", "v1.2", &[&d])
                .len(),
            1
        );
    }

    #[test]
    fn digests_and_bare_tags() {
        let d = Digest::of(b"child");
        let r = refs(&format!("x: quay.io/ns/other@{d}.\ny: img-3f1c2a\nz: v1\n"));
        assert_eq!(
            r.find("ns/img", "img", "zzz", &[&Digest::of(b"a"), &d])
                .len(),
            1
        );
        assert_eq!(r.find("ns/img", "img", "img-3f1c2a", &[]).len(), 1);
        assert!(
            r.find("ns/img", "img", "v1", &[]).is_empty(),
            "a generic word does not keep a tag"
        );
    }
}
