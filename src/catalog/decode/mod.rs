//! Typed decoding of the YAML tree into the catalog model: the document and
//! the scalar helpers here, one module per catalog section below.
//!
//! Every problem is recorded with its location and decoding goes on, so one
//! run reports all of them. The key lists here are also what the JSON Schema
//! is checked against.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::diag::{Diagnostics, Span, suggestion};
use super::model::{
    Catalog, Check, Checksum, Command, Compression, DEFAULT_LAYOUT, DEFAULT_MAX_DELETE,
    DEFAULT_RELEASE_PATTERN, DEFAULT_TAGS, DEFAULT_TARGET, DEFAULT_VERIFY_MEMORY_MIB,
    DEFAULT_VERIFY_TIMEOUT, Defaults, DiskChange, DiskFormat, Firmware, Format, GitRetention,
    Image, Mmdebstrap, Os, Packer, Platform, PlatformSource, ReleaseSettings, Resize, Retention,
    RuntimeConfig, Source, Spanned, Target, TargetKind, Variable, Verify,
};
use super::yaml::{Node, NodeKind, plain_bool};

mod images;
mod retention;
mod sources;
mod targets;
mod variables;

use images::{defaults, image};
use retention::retention;
use sources::source;
use targets::target;
use variables::variables;

pub const TOP_KEYS: &[&str] = &[
    "version",
    "variables",
    "targets",
    "defaults",
    "images",
    "retention",
    "release",
];
pub const VARIABLE_KEYS: &[&str] = &["default", "env"];
pub const TARGET_KEYS: &[&str] = &[
    "name",
    "layout",
    "registry",
    "namespace",
    "insecure",
    "chunk_size",
    "cloud",
    "region",
    "env",
    "exists",
];
pub const DEFAULTS_KEYS: &[&str] = &["tags", "prerelease_tags", "compression", "verify"];
pub const VERIFY_KEYS: &[&str] = &["required", "timeout", "memory", "firmware", "checks"];
pub const CHECK_KEYS: &[&str] = &["run", "expect"];
pub const IMAGE_KEYS: &[&str] = &[
    "name",
    "os",
    "source",
    "platform",
    "platforms",
    "format",
    "kubernetes",
    "tags",
    "prerelease_tags",
    "compression",
    "targets",
    "config",
    "verify",
    "labels",
    "disk",
];
pub const DISK_KEYS: &[&str] = &["format", "resize"];
pub const RELEASE_KEYS: &[&str] = &["tag_prefix"];
pub const CONFIG_KEYS: &[&str] = &["env", "entrypoint", "cmd", "working_dir", "user"];
pub const OS_KEYS: &[&str] = &["distro", "version"];
pub const PLATFORM_KEYS: &[&str] = &["platform", "source"];
pub const SOURCE_KEYS: &[&str] = &[
    "file",
    "url",
    "sha256",
    "sha512",
    "checksums_url",
    "size",
    "mmdebstrap",
    "packer",
    "command",
];
pub const MMDEBSTRAP_KEYS: &[&str] = &["suite", "variant", "packages", "components", "mirror"];
pub const PACKER_KEYS: &[&str] = &[
    "template",
    "vars",
    "inputs",
    "artifact",
    "var_files",
    "working_dir",
    "name_var",
    "runtime_vars",
];
pub const COMMAND_KEYS: &[&str] = &["run", "inputs", "artifact"];
pub const RETENTION_KEYS: &[&str] = &["keep_last", "max_age", "protect", "max_delete", "git"];
pub const GIT_KEYS: &[&str] = &[
    "repo",
    "branches",
    "supported_releases",
    "paths",
    "default_branch",
    "release_pattern",
];

/// The catalog format version this build understands.
pub const CATALOG_VERSION: u64 = 1;

/// Decodes the root node. Returns `None` only when nothing useful could be read;
/// check the diagnostics for problems either way.
pub fn catalog(path: &Path, root: &Node, d: &mut Diagnostics) -> Option<Catalog> {
    let f = Fields::of(root, "the catalog", TOP_KEYS, d)?;
    let version = match f.get("version") {
        None => {
            d.error(
                root.span,
                "missing key `version`",
                "add `version: 1` at the top of the catalog",
            );
            CATALOG_VERSION
        }
        Some(n) => match uint(n, d) {
            Some(v) if v == CATALOG_VERSION => v,
            Some(v) => {
                d.error(
                    n.span,
                    format!("unsupported catalog version {v}"),
                    "this imagepipe reads `version: 1`",
                );
                v
            }
            None => CATALOG_VERSION,
        },
    };
    let variables = f
        .get("variables")
        .map(|n| variables(n, d))
        .unwrap_or_default();
    let mut targets = f
        .get("targets")
        .map(|n| list(n, d, target))
        .unwrap_or_default();
    if f.get("targets").is_none() {
        targets.push(Target {
            name: Spanned::new(DEFAULT_TARGET.to_owned(), root.span),
            kind: TargetKind::Layout {
                path: PathBuf::from(DEFAULT_LAYOUT),
            },
            span: root.span,
        });
    }
    let defaults = defaults(f.get("defaults"), d);
    let images = match f.get("images") {
        Some(n) => list(n, d, image),
        None => {
            d.error(
                root.span,
                "missing key `images`",
                "list the images to build under `images:`",
            );
            Vec::new()
        }
    };
    let retention = f.get("retention").and_then(|n| retention(n, d));
    let release = f
        .get("release")
        .and_then(|n| release_settings(n, d))
        .unwrap_or_default();
    Some(Catalog {
        path: path.to_path_buf(),
        version,
        variables,
        targets,
        defaults,
        images,
        retention,
        release,
    })
}

/// `release: { tag_prefix }`: which CI tags name a Kubernetes release.
fn release_settings(node: &Node, d: &mut Diagnostics) -> Option<ReleaseSettings> {
    let f = Fields::of(node, "`release`", RELEASE_KEYS, d)?;
    let tag_prefix = f.get("tag_prefix").and_then(|n| {
        let s = string(n, d)?;
        let ok = !s.value.is_empty()
            && !s.value.ends_with('v')
            && s.value
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-/".contains(&b));
        if !ok {
            d.error(
                s.span,
                format!("`{}` is not a tag prefix", s.value),
                "use letters, digits, `.`, `_`, `-` or `/`, ending before the version's `v`: `k8s-` for tags such as `k8s-v1.33.6`",
            );
            return None;
        }
        Some(s.value.clone())
    });
    Some(ReleaseSettings { tag_prefix })
}

/// The entries of a mapping, checked against the keys allowed there.
struct Fields<'n> {
    entries: Vec<(&'n str, &'n Node)>,
    span: Span,
}

impl<'n> Fields<'n> {
    fn of(node: &'n Node, what: &str, allowed: &[&str], d: &mut Diagnostics) -> Option<Self> {
        let NodeKind::Map(entries) = &node.kind else {
            d.error(
                node.span,
                format!("{what} must be a mapping, found {}", node.describe()),
                "write `key: value` lines",
            );
            return None;
        };
        let mut out = Vec::new();
        for (k, v) in entries {
            match k.scalar() {
                Some(key) if allowed.contains(&key) => out.push((key, v)),
                Some(key) => d.error(
                    k.span,
                    format!("unknown key `{key}` in {what}"),
                    suggestion(key, allowed),
                ),
                None => d.error(
                    k.span,
                    format!("keys of {what} must be plain words"),
                    suggestion("", allowed),
                ),
            }
        }
        Some(Self {
            entries: out,
            span: node.span,
        })
    }

    fn get(&self, key: &str) -> Option<&'n Node> {
        self.entries
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| *v)
    }

    fn required(&self, key: &str, what: &str, d: &mut Diagnostics, help: &str) -> Option<&'n Node> {
        let found = self.get(key);
        if found.is_none() {
            d.error(self.span, format!("{what} is missing key `{key}`"), help);
        }
        found
    }

    /// A required key whose value must be a string.
    fn required_string(
        &self,
        key: &str,
        what: &str,
        d: &mut Diagnostics,
        help: &str,
    ) -> Option<Spanned<String>> {
        self.required(key, what, d, help).and_then(|n| string(n, d))
    }
}

fn string(node: &Node, d: &mut Diagnostics) -> Option<Spanned<String>> {
    match &node.kind {
        NodeKind::Scalar { value, .. } if !node.is_null() => {
            Some(Spanned::new(value.clone(), node.span))
        }
        _ => {
            d.error(
                node.span,
                format!("expected a string, found {}", node.describe()),
                "write a single value, quoted if in doubt",
            );
            None
        }
    }
}

fn uint(node: &Node, d: &mut Diagnostics) -> Option<u64> {
    match &node.kind {
        NodeKind::Scalar {
            value,
            quoted: false,
        } => match value.parse::<u64>() {
            Ok(v) => Some(v),
            Err(_) => {
                d.error(
                    node.span,
                    format!("expected a whole number, found `{value}`"),
                    "write a number such as `3`",
                );
                None
            }
        },
        _ => {
            d.error(
                node.span,
                format!("expected a whole number, found {}", node.describe()),
                "write a number such as `3`, without quotes",
            );
            None
        }
    }
}

fn boolean(node: &Node, d: &mut Diagnostics) -> Option<bool> {
    match &node.kind {
        NodeKind::Scalar {
            value,
            quoted: false,
        } if plain_bool(value).is_some() => plain_bool(value),
        _ => {
            d.error(
                node.span,
                "expected `true` or `false`",
                "write `true` or `false` without quotes",
            );
            None
        }
    }
}

fn list<T>(
    node: &Node,
    d: &mut Diagnostics,
    mut item: impl FnMut(&Node, &mut Diagnostics) -> Option<T>,
) -> Vec<T> {
    match &node.kind {
        NodeKind::Seq(items) => items.iter().filter_map(|n| item(n, d)).collect(),
        _ => {
            d.error(
                node.span,
                format!("expected a list, found {}", node.describe()),
                "write one `- item` per line, or `[a, b]`",
            );
            Vec::new()
        }
    }
}

fn strings(node: &Node, d: &mut Diagnostics) -> Vec<Spanned<String>> {
    list(node, d, string)
}

fn plain_strings(node: Option<&Node>, d: &mut Diagnostics) -> Vec<String> {
    node.map(|n| strings(n, d).into_iter().map(|s| s.value).collect())
        .unwrap_or_default()
}

fn string_map(node: &Node, d: &mut Diagnostics) -> Vec<(String, String)> {
    let NodeKind::Map(entries) = &node.kind else {
        d.error(
            node.span,
            format!("expected a mapping, found {}", node.describe()),
            "write `name: value` lines",
        );
        return Vec::new();
    };
    entries
        .iter()
        .filter_map(|(k, v)| Some((string(k, d)?.value, string(v, d)?.value)))
        .collect()
}

/// The smallest upload chunk: ECR refuses parts under 5 MiB.
pub const MIN_CHUNK: u64 = 5 << 20;

/// Parses `16MiB`, `64M`, `1GiB`, `5242880` (binary units; `B` optional).
pub fn parse_size(text: &str) -> Option<u64> {
    let t = text.trim();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let n: u64 = t[..digits].parse().ok()?;
    let unit = match t[digits..]
        .trim()
        .trim_end_matches('B')
        .trim_end_matches('i')
    {
        "" => 1,
        "K" | "k" => 1 << 10,
        "M" | "m" => 1 << 20,
        "G" | "g" => 1 << 30,
        "T" | "t" => 1 << 40,
        _ => return None,
    };
    n.checked_mul(unit)
}

/// Parses `30d`, `12h`, `2w`, `90m`, `45s` and combinations such as `1d12h`.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let mut total: u64 = 0;
    let mut digits = String::new();
    let mut saw_unit = false;
    for c in text.trim().chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            'w' => 604_800,
            _ => return None,
        };
        let n: u64 = digits.parse().ok()?;
        total = total.checked_add(n.checked_mul(unit)?)?;
        digits.clear();
        saw_unit = true;
    }
    (saw_unit && digits.is_empty()).then(|| Duration::from_secs(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("16MiB"), Some(16 << 20));
        assert_eq!(parse_size("64M"), Some(64 << 20));
        assert_eq!(parse_size("1GiB"), Some(1 << 30));
        assert_eq!(parse_size("5242880"), Some(5 << 20));
        assert_eq!(parse_size("5 MB"), Some(5 << 20));
        assert_eq!(parse_size("lots"), None);
        assert_eq!(parse_size("3T"), Some(3 << 40));
        assert_eq!(parse_size("3P"), None);
    }

    #[test]
    fn durations() {
        assert_eq!(
            parse_duration("30d"),
            Some(Duration::from_secs(30 * 86_400))
        );
        assert_eq!(
            parse_duration("1d12h"),
            Some(Duration::from_secs(36 * 3600))
        );
        assert_eq!(parse_duration("30"), None);
        assert_eq!(parse_duration("30x"), None);
        assert_eq!(parse_duration(""), None);
        assert_eq!(parse_duration("d"), None);
    }
}
