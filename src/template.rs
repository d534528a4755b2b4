//! Tag templates: `{name}-{kubernetes}-{hash:12}` and friends.

use std::fmt;

/// The placeholders every template may use (catalog variables come on top).
pub const PLACEHOLDERS: &[&str] = &[
    "name",
    "distro",
    "version",
    "arch",
    "kubernetes",
    "kubernetes_series",
    "runc",
    "containerd",
    "hash",
    "commit",
    "pipeline",
    "date",
];

/// Placeholders that take a length: `{hash:N}`, `{commit:N}`.
const SLICEABLE: &[(&str, usize)] = &[("hash", 64), ("commit", 40)];

/// Length of `{hash}` and `{commit}` without `:N`.
pub const DEFAULT_HASH_LEN: usize = 12;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Segment {
    Literal(String),
    Placeholder { name: String, len: Option<usize> },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Template {
    pub segments: Vec<Segment>,
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("unclosed `{{` in tag template")]
    Unclosed,
    #[error("stray `}}` in tag template")]
    StrayClose,
    #[error("unknown placeholder `{{{name}}}`")]
    Unknown { name: String },
    #[error("`{{{name}:{len}}}`: {reason}")]
    BadLength {
        name: String,
        len: String,
        reason: String,
    },
}

impl Template {
    /// Parses a template; `extra` names catalog variables usable as placeholders.
    pub fn parse(text: &str, extra: &[&str]) -> Result<Self, TemplateError> {
        let mut segments = Vec::new();
        let mut rest = text;
        while !rest.is_empty() {
            match rest.find(['{', '}']) {
                None => {
                    segments.push(Segment::Literal(rest.to_owned()));
                    break;
                }
                Some(i) if rest.as_bytes()[i] == b'}' => return Err(TemplateError::StrayClose),
                Some(i) => {
                    if i > 0 {
                        segments.push(Segment::Literal(rest[..i].to_owned()));
                    }
                    let close = rest[i..].find('}').ok_or(TemplateError::Unclosed)? + i;
                    let inner = &rest[i + 1..close];
                    if inner.contains('{') {
                        return Err(TemplateError::Unclosed);
                    }
                    segments.push(placeholder(inner, extra)?);
                    rest = &rest[close + 1..];
                }
            }
        }
        Ok(Self { segments })
    }

    pub fn uses(&self, name: &str) -> bool {
        self.segments
            .iter()
            .any(|s| matches!(s, Segment::Placeholder { name: n, .. } if n == name))
    }

    /// A matcher for the tags this template renders for `image`, strict and
    /// linear in the tag's length: literals and `{name}`, `{distro}`,
    /// `{version}`, `{arch}` exactly; `{hash}`/`{hash:N}` and `{commit:N}`
    /// lowercase hex of exactly that length; `{kubernetes}` a release
    /// (`v1.33.6`, `v1.34.0-rc.1`; pre-releases alpha/beta/rc only);
    /// `{kubernetes_series}` `v1.33`; `{date}` eight digits; `{pipeline}`
    /// digits; variables a version (`1.2.6`, `v2.0.4`, `1.7.0-rc.1`).
    pub fn matcher(&self, image: &crate::context::ImageFacts<'_>) -> regex::Regex {
        let mut re = String::from("^");
        let mut arches = image.arches.clone();
        arches.sort_unstable();
        arches.dedup();
        for seg in &self.segments {
            match seg {
                Segment::Literal(l) => re.push_str(&regex::escape(l)),
                Segment::Placeholder { name, len } => {
                    let exact = |v: &str| regex::escape(v);
                    let part = match name.as_str() {
                        "name" => exact(image.name),
                        "distro" => exact(image.distro),
                        "version" => exact(image.version),
                        "arch" => exact(&arches.join("-")),
                        "hash" | "commit" => {
                            format!("[0-9a-f]{{{}}}", len.unwrap_or(DEFAULT_HASH_LEN))
                        }
                        "kubernetes" => {
                            r"v(?:0|[1-9][0-9]*)\.(?:0|[1-9][0-9]*)\.(?:0|[1-9][0-9]*)(?:-(?:alpha|beta|rc)\.(?:0|[1-9][0-9]*))?".to_owned()
                        }
                        "kubernetes_series" => r"v(?:0|[1-9][0-9]*)\.(?:0|[1-9][0-9]*)".to_owned(),
                        "date" => "[0-9]{8}".to_owned(),
                        "pipeline" => "[0-9]+".to_owned(),
                        // Variables are versions: `1.2.6`, `v2.0.4`, `1.7.0-rc.1`.
                        _ => r"v?[0-9]+(?:\.[0-9]+)*(?:-[0-9A-Za-z]+(?:\.[0-9A-Za-z]+)*)?".to_owned(),
                    };
                    re.push_str("(?:");
                    re.push_str(&part);
                    re.push(')');
                }
            }
        }
        re.push('$');
        regex::Regex::new(&re).expect("escaped literals and fixed classes form a valid pattern")
    }

    /// Renders with `lookup` giving each placeholder's full value (or why it has none).
    pub fn render(
        &self,
        lookup: impl Fn(&str) -> Result<String, String>,
    ) -> Result<String, RenderError> {
        let out = self.render_text(lookup)?;
        if !is_valid_tag(&out) {
            return Err(RenderError::InvalidTag { tag: out });
        }
        Ok(out)
    }

    /// Renders any text (not only a tag): verification checks' `expect`.
    pub fn render_text(
        &self,
        lookup: impl Fn(&str) -> Result<String, String>,
    ) -> Result<String, RenderError> {
        let mut out = String::new();
        for seg in &self.segments {
            match seg {
                Segment::Literal(s) => out.push_str(s),
                Segment::Placeholder { name, len } => {
                    let value = lookup(name).map_err(|why| RenderError::Missing {
                        name: name.clone(),
                        why,
                    })?;
                    let len = len.or_else(|| {
                        SLICEABLE
                            .iter()
                            .any(|(n, _)| n == name)
                            .then_some(DEFAULT_HASH_LEN)
                    });
                    match len {
                        Some(n) => out.push_str(&value[..n.min(value.len())]),
                        None => out.push_str(&value),
                    }
                }
            }
        }
        Ok(out)
    }
}

fn placeholder(inner: &str, extra: &[&str]) -> Result<Segment, TemplateError> {
    let (name, len) = match inner.split_once(':') {
        Some((n, l)) => (n, Some(l)),
        None => (inner, None),
    };
    if !PLACEHOLDERS.contains(&name) && !extra.contains(&name) {
        return Err(TemplateError::Unknown {
            name: name.to_owned(),
        });
    }
    let len = match len {
        None => None,
        Some(l) => {
            let bad = |reason: String| TemplateError::BadLength {
                name: name.to_owned(),
                len: l.to_owned(),
                reason,
            };
            let Some(&(_, max)) = SLICEABLE.iter().find(|(n, _)| *n == name) else {
                return Err(bad("only {hash:N} and {commit:N} take a length".into()));
            };
            match l.parse::<usize>() {
                Ok(n) if (1..=max).contains(&n) => Some(n),
                _ => return Err(bad(format!("the length must be a number from 1 to {max}"))),
            }
        }
    };
    Ok(Segment::Placeholder {
        name: name.to_owned(),
        len,
    })
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    #[error("`{{{name}}}` has no value: {why}")]
    Missing { name: String, why: String },
    #[error(
        "`{tag}` is not a valid OCI tag (allowed: letters, digits, `_`, `.`, `-`; must not start with `.` or `-`; at most 128 characters)"
    )]
    InvalidTag { tag: String },
}

/// `[A-Za-z0-9_][A-Za-z0-9._-]{0,127}`, the OCI distribution tag grammar.
pub fn is_valid_tag(tag: &str) -> bool {
    let b = tag.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || b"._-".contains(c))
}

/// One path component of an OCI repository name: `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`.
pub fn is_valid_repo_component(s: &str) -> bool {
    let b = s.as_bytes();
    if b.is_empty() || !is_alnum(b[0]) || !is_alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if is_alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !is_alnum(b[i]) {
            i += 1;
        }
        let sep = &s[start..i];
        if !(sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|c| c == b'-')) {
            return false;
        }
    }
    true
}

/// A repository path: components separated by `/`.
pub fn is_valid_repo_path(s: &str) -> bool {
    s.split('/').all(is_valid_repo_component)
}

fn is_alnum(c: u8) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit()
}

impl fmt::Display for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for seg in &self.segments {
            match seg {
                Segment::Literal(s) => f.write_str(s)?,
                Segment::Placeholder { name, len: Some(n) } => write!(f, "{{{name}:{n}}}")?,
                Segment::Placeholder { name, len: None } => write!(f, "{{{name}}}")?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(name: &str) -> Result<String, String> {
        Ok(match name {
            "name" => "ubuntu-2204".into(),
            "hash" => "0123456789abcdef".repeat(4),
            "kubernetes" => "v1.33.6".into(),
            _ => return Err("not set".into()),
        })
    }

    #[test]
    fn renders_placeholders_and_lengths() {
        let t = Template::parse("{name}-{kubernetes}-{hash}", &[]).unwrap();
        assert_eq!(
            t.render(values).unwrap(),
            "ubuntu-2204-v1.33.6-0123456789ab"
        );
        let t = Template::parse("h{hash:4}", &[]).unwrap();
        assert_eq!(t.render(values).unwrap(), "h0123");
        assert_eq!(t.to_string(), "h{hash:4}");
    }

    #[test]
    fn rejects_bad_templates() {
        assert_eq!(
            Template::parse("{nmae}", &[]),
            Err(TemplateError::Unknown {
                name: "nmae".into()
            })
        );
        assert_eq!(Template::parse("{name", &[]), Err(TemplateError::Unclosed));
        assert_eq!(
            Template::parse("name}", &[]),
            Err(TemplateError::StrayClose)
        );
        assert!(matches!(
            Template::parse("{name:3}", &[]),
            Err(TemplateError::BadLength { .. })
        ));
        assert!(matches!(
            Template::parse("{hash:65}", &[]),
            Err(TemplateError::BadLength { .. })
        ));
        assert!(Template::parse("{myvar}", &["myvar"]).is_ok());
    }

    #[test]
    fn rendered_tags_must_be_valid() {
        let t = Template::parse("{name}+{hash}", &[]).unwrap();
        assert!(matches!(
            t.render(values),
            Err(RenderError::InvalidTag { .. })
        ));
        let t = Template::parse("{pipeline}", &[]).unwrap();
        assert!(matches!(t.render(values), Err(RenderError::Missing { .. })));
    }

    #[test]
    fn templates_recognise_exactly_their_tags() {
        let facts = crate::context::ImageFacts {
            name: "vm-ubuntu-2204",
            distro: "ubuntu",
            version: "22.04",
            arches: vec!["amd64"],
        };
        let m = |t: &str| Template::parse(t, &["runc"]).unwrap().matcher(&facts);
        let t = m("{name}-{hash}");
        assert!(t.is_match("vm-ubuntu-2204-0123456789ab"));
        assert!(!t.is_match("vm-ubuntu-2204-0123456789abc"));
        assert!(
            !t.is_match("vm-ubuntu-2204-0123456789AB"),
            "hex is lowercase"
        );
        assert!(!t.is_match("hand-made"));
        assert!(!t.is_match("release-2.27-backup1"));
        assert!(
            !m("{hash}").is_match("backup1"),
            "a bare {{hash}} is twelve hex digits"
        );
        assert!(m("{hash:8}").is_match("0123abcd"));
        let t = m("{kubernetes_series}-latest");
        assert!(t.is_match("v1.33-latest"));
        assert!(!t.is_match("latest") && !t.is_match("vx.y-latest"));
        let t = m("{name}-{kubernetes}-{hash}");
        assert!(t.is_match("vm-ubuntu-2204-v1.34.0-rc.1-0123456789ab"));
        assert!(!t.is_match("vm-ubuntu-2204-v1.34-0123456789ab"));
        assert!(m("{distro}-{version}-{arch}-{date}").is_match("ubuntu-22.04-amd64-20260102"));
        assert!(!m("{distro}-{version}-{arch}-{date}").is_match("debian-22.04-amd64-20260102"));
        assert!(m("runc-{runc}").is_match("runc-1.2.6"));
        assert!(
            !m("{name}-{runc}").is_match("vm-ubuntu-2204-keep-forever"),
            "variables are versions"
        );
        assert!(
            !m("{name}-{kubernetes}").is_match("vm-ubuntu-2204-v1.33.6-backup"),
            "pre-releases are alpha/beta/rc"
        );
        // Six free placeholders against a 120-character near miss: a finite
        // automaton answers at once where backtracking took half a minute.
        let facts = crate::context::ImageFacts {
            name: "n",
            distro: "d",
            version: "v",
            arches: vec![],
        };
        let t = Template::parse("{a}-{b}-{c}-{d}-{e}-{f}x", &["a", "b", "c", "d", "e", "f"])
            .unwrap()
            .matcher(&facts);
        assert!(!t.is_match(&"a-".repeat(60)));
    }

    #[test]
    fn tag_and_repository_grammars() {
        assert!(is_valid_tag("latest"));
        assert!(is_valid_tag("_x"));
        assert!(!is_valid_tag(".x"));
        assert!(!is_valid_tag("-x"));
        assert!(!is_valid_tag(&"a".repeat(129)));
        assert!(is_valid_tag(&"a".repeat(128)));
        assert!(is_valid_repo_path("k8s-images/ubuntu-2204"));
        assert!(is_valid_repo_path("a__b.c--d"));
        assert!(!is_valid_repo_path("Ubuntu"));
        assert!(!is_valid_repo_path("a..b"));
        assert!(!is_valid_repo_path("a___b"));
        assert!(!is_valid_repo_path("-a"));
        assert!(!is_valid_repo_path("a/"));
    }
}
